"""Logging set-up for the CLI (the library only calls ``logging.getLogger(__name__)``, never this).

Human lines or JSON lines on stderr, so stdout stays free for results. A redaction filter on the handler
scrubs secret *values* from every record: the configured password, token and client secret (the CLI
registers them with :func:`register_secrets`), ``Authorization`` header values, bearer/basic credentials,
the password of ``user:password@`` in a URL, and ``password=``/``token=`` style values. Words such as
"password" stay: piflow's own messages name the setting that is missing. Secrets should never reach a log
call, but a log line is the worst place to find out that one did.

A record's traceback is shown only with ``--debug``; otherwise its exception is one line at the end of the
record, so that an expected failure (a table that cannot be written) does not bury the one line that matters.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from base64 import b64encode
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

REDACTED = "***"
_NOISY_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "hpack", "websockets")

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()) | {
    "message", "asctime", "taskName"}

_KEY = r"(?:\w*password|passwd|pwd|\w*token|\w*secret|api_?key)"
# A credential has a digit, a symbol or a lower-to-upper case change; "set", "Basic authentication" have none.
_CREDENTIAL_LIKE = r"(?=[A-Za-z0-9._~+/=-]*(?:[0-9+/=._~-]|[a-z][A-Z]))"
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: <anything up to the end of the value>
    (re.compile(r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\n,;}]+"), r"\1" + REDACTED),
    # the password of user:password@ in a URL
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/?#\s:@]*:)[^/?#\s@]+@"), r"\1" + REDACTED + "@"),
    # key=value (query strings, form bodies, key=value log fields)
    (re.compile(rf"(?i)(\b{_KEY}=)[^\s\"',;&}}]+"), r"\1" + REDACTED),
    # "key": "value" and 'key': 'value' (JSON, dict reprs)
    (re.compile(rf"(?i)([\"']{_KEY}[\"']\s*:\s*[\"'])[^\"'\n]+"), r"\1" + REDACTED),
    # key: value, when the value looks like a credential ("needs a password: set ..." is prose)
    (re.compile(rf"(\b(?i:{_KEY}):\s*){_CREDENTIAL_LIKE}[A-Za-z0-9._~+/=-]{{6,}}"), r"\1" + REDACTED),
    # a bare credential after an auth scheme
    (re.compile(rf"\b(Bearer|Basic|Negotiate)\s+{_CREDENTIAL_LIKE}[A-Za-z0-9._~+/=-]{{6,}}"), r"\1 " + REDACTED),
)

# The secret values of this process's settings (see register_secrets), longest first.
_SECRET_VALUES: list[str] = []
_MIN_SECRET_CHARS = 4  # shorter values would garble ordinary text; the patterns above still apply


def register_secrets(*values: str | None, username: str | None = None) -> None:
    """Values that :func:`redact` removes wherever they appear: the configured password, token and OIDC
    client secret (and, with ``username``, the Basic credential built from them)."""
    for value in values:
        if not value or len(value) < _MIN_SECRET_CHARS:
            continue
        forms = {value, quote(value, safe="")}
        if username:
            forms.add(b64encode(f"{username}:{value}".encode()).decode())
        for form in forms:
            if form not in _SECRET_VALUES:
                _SECRET_VALUES.append(form)
    _SECRET_VALUES.sort(key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with secret values (registered ones, and credential-shaped values) replaced by ``***``."""
    for value in _SECRET_VALUES:
        text = text.replace(value, REDACTED)
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def exception_line(exc: BaseException) -> str:
    """One line for an exception: its type and its message (redacted, whitespace collapsed)."""
    message = " ".join(str(exc).split())
    return redact(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def _exception_text(exc_info: ExcInfo, tracebacks: bool) -> str:
    if exc_info[1] is None:
        return ""
    if tracebacks:
        return redact("".join(traceback.format_exception(*exc_info)).rstrip())
    return exception_line(exc_info[1])


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and string extras) with :func:`redact`; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class HumanFormatter(logging.Formatter):
    """``time level logger: message``; a record's exception as `` (Type: message)`` unless ``tracebacks``."""

    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        exc_info, record.exc_info, record.exc_text = record.exc_info, None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info = exc_info
        if not exc_info or exc_info[1] is None:
            return line
        text = _exception_text(exc_info, self.tracebacks)
        return f"{line}\n{text}" if self.tracebacks else f"{line} ({text})"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, then any ``extra=`` fields (and exc: one line, or
    the traceback with ``tracebacks``)."""

    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in obj:
                obj[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            obj["exc"] = _exception_text(record.exc_info, self.tracebacks)
        return json.dumps(obj, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (test runners and rich swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(level: str | int = "INFO", json: bool = False, tracebacks: bool = False) -> None:
    """Install piflow's single stderr handler on the root logger (idempotent: replaces a previous one).

    ``tracebacks`` (the CLI's ``--debug``) shows the traceback of a record's exception instead of one line.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter(tracebacks) if json else HumanFormatter(tracebacks))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # The HTTP stack logs one INFO line per request; a backfill makes millions. Keep them for DEBUG.
    noisy = logging.getLevelName(root.level) != "DEBUG"
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if noisy else logging.NOTSET)
