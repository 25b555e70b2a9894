"""The one exception tree of piflow.

Everything piflow raises on purpose derives from :class:`PiflowError`. Whether a failure is worth
retrying is a class distinction (:class:`TransientError`), never a status code checked at the call site::

    PiflowError
    ├── ConfigError                 a setting is missing or invalid (names the setting)
    ├── PiApiError                  the PI Web API (or something in front of it) refused or failed
    │   ├── TransientError          worth retrying with backoff
    │   │   ├── RateLimitedError    429, carries retry_after
    │   │   ├── ServerBusyError     500, 502, 503, 504
    │   │   ├── NetworkError        connect/read failures, dropped connections, truncated bodies
    │   │   └── BadResponseError    a 2xx body that is not the JSON PI sends (HTML proxy page, WebException)
    │   ├── AuthError               401 / 403 (a 401 is retried once after the auth object refreshes)
    │   ├── NotFoundError           404, e.g. an unknown or deleted WebID
    │   ├── TooManyItemsError       400 over MaxReturnedItemsPerCall: split the request and retry
    │   ├── BadRequestError         any other 400
    │   └── ConflictError           409 (e.g. a batch child of a failed parent, an expired marker)
    ├── DecodeError                 a PI value could not be represented in the table contract
    ├── SinkError                   a Delta table could not be read or written
    │   └── WriteConflictError      other writers kept committing first; nothing of this write landed
    └── StateError                  watermarks and table disagree, or a plan does not match its table

Errors about data carry ``point`` and ``window`` so that the message says what and where.
"""

from __future__ import annotations

from datetime import datetime


def _fmt_window(window: tuple[datetime, datetime] | None) -> str:
    if window is None:
        return ""
    return f" window [{window[0].isoformat()}, {window[1].isoformat()}]"


class PiflowError(Exception):
    """Root of every error piflow raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        point: str | None = None,
        window: tuple[datetime, datetime] | None = None,
    ) -> None:
        self.message = message
        self.point = point
        self.window = window
        super().__init__(message)

    def __str__(self) -> str:
        where = ""
        if self.point:
            where += f" point {self.point}"
        where += _fmt_window(self.window)
        return f"{self.message}{' (' + where.strip() + ')' if where else ''}"

    def located(self, *, point: str | None = None, window: tuple[datetime, datetime] | None = None) -> PiflowError:
        """Attach the point and window once the caller knows them; returns self for ``raise e.located(...)``."""
        if point is not None and self.point is None:
            self.point = point
        if window is not None and self.window is None:
            self.window = window
        return self


class ConfigError(PiflowError):
    """A setting is missing or invalid; the message names the setting."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        super().__init__(f"setting '{setting}': {problem}")


class PiApiError(PiflowError):
    """The PI Web API refused or failed a request."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        url: str | None = None,
        errors: list[str] | None = None,
        point: str | None = None,
        window: tuple[datetime, datetime] | None = None,
    ) -> None:
        self.status = status
        self.url = url
        self.errors = list(errors or [])
        detail = message
        if status is not None:
            detail = f"HTTP {status}: {detail}"
        if url:
            detail = f"{detail} [{url}]"
        super().__init__(detail, point=point, window=window)


class TransientError(PiApiError):
    """A failure that a later attempt may not see: retry with backoff."""


class RateLimitedError(TransientError):
    """429 Too Many Requests; ``retry_after`` is the server's hint in seconds, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)  # type: ignore[arg-type]


class ServerBusyError(TransientError):
    """5xx: the server or a proxy in front of it is overloaded or failing."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)  # type: ignore[arg-type]


class NetworkError(TransientError):
    """The connection failed, timed out or was dropped before the whole body arrived."""


class UnreachableError(PiApiError):
    """The server was never reached: connection refused, unknown host, or no TLS where https was asked.

    Not transient: a server that has never answered is a wrong URL or port, not a flaky one, so the first
    attempt fails with its cause instead of eight retries. Once a client has had an answer, the same failures
    are :class:`NetworkError` (a server restarting).
    """


class BadResponseError(TransientError):
    """A success status whose body is not the JSON PI sends (HTML page, truncated JSON, WebException)."""


class AuthError(PiApiError):
    """401 or 403: credentials missing, wrong or expired."""


class NotFoundError(PiApiError):
    """404: unknown WebID or path (for example a point deleted mid-run)."""


class TooManyItemsError(PiApiError):
    """400 over MaxReturnedItemsPerCall: the request must be split into smaller ones."""


class BadRequestError(PiApiError):
    """400 for any other reason: the request itself is wrong and will not succeed on retry."""


class ConflictError(PiApiError):
    """409: a batch child whose parent failed, or a stream-updates marker the server forgot."""


class DecodeError(PiflowError):
    """A PI value could not be represented in the table contract."""


class SinkError(PiflowError):
    """A Delta table could not be read or written."""


class WriteConflictError(SinkError):
    """Other writers committed to the same table first, attempt after attempt; this write did not land."""


class StateError(PiflowError):
    """Watermarks and tables disagree, or a plan does not match the table it resumes."""
