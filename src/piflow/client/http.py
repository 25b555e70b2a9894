"""The HTTP boundary: the only module of piflow that imports the HTTP library.

:class:`PiHttp` sends one logical request as many attempts as needed: it retries transient failures (429,
5xx, dropped or truncated connections, timeouts, 2xx bodies that are not PI's JSON) with backoff, refreshes
authentication once after a 401, and translates every failure into :mod:`piflow.errors` (``raise ... from``).
Everything above this module sees bytes or JSON, never an ``httpx2`` object.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import httpcore2
import httpx2
import msgspec
import orjson

from piflow import __version__
from piflow.client.auth import Auth, NoAuth
from piflow.client.retry import Backoff, Clock, RetryPolicy, Sleep, TokenBucket, parse_retry_after
from piflow.errors import (
    AuthError,
    BadRequestError,
    BadResponseError,
    ConfigError,
    ConflictError,
    NetworkError,
    NotFoundError,
    PiApiError,
    RateLimitedError,
    ServerBusyError,
    TooManyItemsError,
    UnreachableError,
)
from piflow.urls import display_url, normalise_base_url

_log = logging.getLogger(__name__)

T = TypeVar("T")
ParamValue = str | int | float | bool
Params = Sequence[tuple[str, ParamValue]]

TOO_MANY_ITEMS = "is greater than the maximum allowed"
_BUSY = {500, 502, 503, 504}
_MAX_TEXT = 500
_RAW = msgspec.json.Decoder(dict[str, msgspec.Raw] | list[msgspec.Raw])

# httpcore reads a body 64 KiB at a time, each read a trip through h11, anyio and the event loop. Recorded
# pages run to megabytes: 256 KiB reads (the most asyncio hands over at once) halve the client's CPU per
# byte (benchmarks/connector.py). A class constant meant for this; it only sets the largest read.
httpcore2.AsyncHTTP11Connection.READ_NUM_BYTES = 256 * 1024


DEFAULT_USER_AGENT = f"piflow/{__version__}"


# ---- pure helpers ------------------------------------------------------------------------------------------
def errors_of(body: bytes) -> list[str]:
    """Messages of an error body: PI's ``Errors``, OAuth's ``error``/``error_description``, or ``Message``."""
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        text = body[:200].decode("utf-8", "replace").strip()
        return [text] if text else []
    if isinstance(doc, dict):
        found = doc.get("Errors")
        if isinstance(found, list):
            return [str(e) for e in found]
        if isinstance(found, str):
            return [found]
        oauth = [str(doc[k]) for k in ("error", "error_description") if doc.get(k)]
        if oauth:
            return oauth
        if doc.get("Message"):
            return [str(doc["Message"])]
    if isinstance(doc, list) and all(isinstance(e, str) for e in doc):
        return list(doc)
    return []


def error_for_status(
    status: int, errors: Sequence[str], *, url: str | None = None, retry_after: float | None = None,
    reason: str = "",
) -> PiApiError:
    """The piflow exception for a non-2xx status (shared by plain responses and batch items)."""
    errs = list(errors)
    message = "; ".join(errs)[:_MAX_TEXT] or reason or "request failed"
    kw: dict[str, Any] = {"status": status, "url": url, "errors": errs}
    if status == 429:
        return RateLimitedError(message, retry_after=retry_after, **kw)
    if status in _BUSY:
        return ServerBusyError(message, retry_after=retry_after, **kw)
    if status in (401, 403):
        return AuthError(message, **kw)
    if status == 404:
        return NotFoundError(message, **kw)
    if status == 409:
        return ConflictError(message, **kw)
    if status == 408:
        return NetworkError(message, **kw)
    if (status == 400 and any(TOO_MANY_ITEMS in e for e in errs)) or status == 414:
        return TooManyItemsError(message, **kw)
    if 300 <= status < 400:
        return PiApiError(f"unexpected redirect ({message}); a login page in front of PI?", **kw)
    if 400 <= status < 500:
        return BadRequestError(message, **kw)
    return PiApiError(message, **kw)


def _web_exception(doc: Mapping[str, Any], status: int, url: str) -> BadResponseError:
    detail = doc.get("WebException")
    errs: list[str] = []
    if isinstance(detail, dict):
        found = detail.get("Errors") or []
        errs = [str(e) for e in found] if isinstance(found, list) else [str(found)]
    return BadResponseError(f"the body carries a WebException: {'; '.join(errs)[:_MAX_TEXT]}",
                            status=status, url=url, errors=errs)


def _not_json(body: bytes, status: int, url: str, content_type: str, why: str) -> BadResponseError:
    kind = "an HTML page" if b"<html" in body[:512].lower() or "html" in content_type else "not JSON"
    return BadResponseError(f"the body is {kind} ({why}; Content-Type {content_type or 'none'}, "
                            f"{len(body)} bytes)", status=status, url=url)


def check_raw(body: bytes, status: int, url: str, content_type: str = "") -> bytes:
    """Validate a 2xx body's JSON structure without building objects (~GB/s) and reject a ``WebException``."""
    try:
        doc = _RAW.decode(body)
    except msgspec.DecodeError as exc:
        raise _not_json(body, status, url, content_type, str(exc)) from exc
    if isinstance(doc, dict) and "WebException" in doc:
        raise _web_exception(orjson.loads(body), status, url)
    return body


def parse_json(body: bytes, status: int, url: str, content_type: str = "") -> Any:
    """Decode a 2xx body into Python objects; BadResponseError if it is not JSON or is a ``WebException``."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _not_json(body, status, url, content_type, str(exc)) from exc
    if isinstance(doc, dict) and "WebException" in doc:
        raise _web_exception(doc, status, url)
    return doc


def _translate_transport(exc: httpx2.HTTPError, url: str, timeout_s: float, *,
                         plain_http: bool = False, answered: bool = True) -> PiApiError | ConfigError:
    """The piflow error for a failure below HTTP. ``answered``: this client has had an answer from the server
    before, so a refused connection is a server restarting (retry), not a wrong address (fail at once)."""
    name = type(exc).__name__
    if isinstance(exc, httpx2.TimeoutException):
        return NetworkError(f"{name}: no answer within {timeout_s:g} s", url=url)
    if isinstance(exc, httpx2.UnsupportedProtocol):
        return ConfigError("url", f"unsupported URL {url}")
    if isinstance(exc, httpx2.LocalProtocolError):
        return PiApiError(f"{name}: the request could not be sent: {exc}", url=url)
    if isinstance(exc, httpx2.DecodingError):
        return BadResponseError(f"{name}: the body could not be decoded: {exc}", url=url)
    tls = _tls_failure(exc)
    if tls is not None:  # retrying cannot help: say what can
        return _tls_advice(tls, url, plain_http)
    never = None if answered or not isinstance(exc, httpx2.ConnectError) else _never_reached(exc)
    if never is not None:
        return UnreachableError(never, url=url)
    return NetworkError(f"{name}: {exc or 'connection failed'}", url=url)


def _causes(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(out) < 8:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


def _never_reached(exc: BaseException) -> str | None:
    """Why a first connection failed for good (wrong port, unknown host, no TLS on an https URL), or None."""
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            return f"the host name is unknown ({cause.strerror or cause}); check the host in the URL"
        if isinstance(cause, ConnectionRefusedError):
            return "the connection was refused: nothing listens on that port; check the host and port in the URL"
        if isinstance(cause, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(cause):
            return ("the server does not speak TLS on that port (an https:// URL for a plain http server?); "
                    "check the scheme and port in the URL")
    return None


# OpenSSL's verify codes: the issuer is not trusted (self-signed, unknown or missing CA) / the name does not match.
_UNTRUSTED_ISSUER = frozenset({2, 18, 19, 20, 21})
_WRONG_NAME = frozenset({62, 64})


def _tls_advice(err: ssl.SSLCertVerificationError, url: str, plain_http: bool) -> ConfigError:
    reason = str(err.verify_message or err.reason or err)
    if plain_http:
        return ConfigError("url", f"{url} is HTTPS but the base URL is plain http://, so no CA is trusted for it "
                                  f"({reason}); give the https:// base URL")
    if err.verify_code in _UNTRUSTED_ISSUER:
        return ConfigError("ca_bundle", f"the TLS certificate of {url} is signed by a CA this machine does not "
                                        f"trust ({reason}); name that CA (ca_bundle in piflow.toml, or "
                                        "PIFLOW_CA_BUNDLE)")
    if err.verify_code in _WRONG_NAME:
        return ConfigError("url", f"the TLS certificate of {url} was issued for another host name ({reason}); "
                                  "use the name it was issued for")
    return ConfigError("url", f"the TLS certificate of {url} was refused ({reason})")


def _tls_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error somewhere in ``exc``'s causes, if that is what failed."""
    return next((c for c in _causes(exc) if isinstance(c, ssl.SSLCertVerificationError)), None)


# ---- the client -----------------------------------------------------------------------------------------
def _tls_context(verify: bool | str, *, plain: bool) -> ssl.SSLContext | bool:
    """What the HTTP client verifies TLS with: a CA bundle (a PEM file, or an OpenSSL hashed directory), the
    system's roots, or nothing (off)."""
    if verify is False:
        return False
    if isinstance(verify, str):
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    return _plain_http_context() if plain else True


def _plain_http_context() -> ssl.SSLContext:
    """The TLS context of a client whose server speaks plain HTTP: verification on, no trusted roots.

    Loading the system's CA bundle costs ~50 ms per client, a tenth of a small job; with no roots any HTTPS URL
    reached from an http:// base (a link in a body) fails verification instead of going unchecked.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    return ctx


class PiHttp:
    """Async HTTP access to one PI Web API, with auth, retries, pacing and counters.

    Counters (read by jobs for ``pi_ingest_runs``): ``requests`` attempts sent (retries included), ``retries``
    attempts repeated after a transient failure or a 401, ``errors`` attempts that failed for any reason,
    ``bytes_received`` body bytes as they came over the wire.
    POSTs are retried like GETs: piflow only POSTs reads (``/batch`` of GETs, stream-update registrations).
    """

    def __init__(
        self,
        base_url: str,
        auth: Auth | None = None,
        *,
        verify: bool | str = True,
        timeout_s: float = 60.0,
        max_connections: int = 16,
        retry: RetryPolicy | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        transport: httpx2.AsyncBaseTransport | None = None,
        max_rps: float | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self._base_url = normalise_base_url(base_url)
        self.auth = auth if auth is not None else NoAuth()
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._sleep = sleep
        self._bucket = TokenBucket(max_rps, sleep=sleep, clock=clock) if max_rps else None
        self.requests = 0
        self.retries = 0
        self.errors = 0
        self.bytes_received = 0
        self.answered = False  # any answer at all from the server (then a refused connection is a restart)
        self._date_text: str | None = None
        self._date: datetime | None = None  # the Date header of the server's last answer
        if isinstance(verify, str) and not os.path.exists(verify):
            raise ConfigError("verify", f"CA bundle {verify!r} does not exist")
        if verify is False:
            _log.warning("TLS verification is disabled for %s: the server's identity is not checked",
                         urlsplit(self._base_url).netloc)
        self._client = httpx2.AsyncClient(
            verify=_tls_context(verify, plain=self._base_url.startswith("http://")),
            timeout=httpx2.Timeout(timeout_s, pool=None),
            limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            transport=transport,
            follow_redirects=False,
        )

    @property
    def base_url(self) -> str:
        """The normalised PI Web API root, e.g. ``https://pi.example.com/piwebapi`` (no trailing slash)."""
        return self._base_url

    async def __aenter__(self) -> PiHttp:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def sleep(self, seconds: float) -> None:
        """The client's sleep (injected in tests), for callers that pace their own retries."""
        await self._sleep(seconds)

    def server_date(self) -> datetime | None:
        """The server's clock as the ``Date`` header of its last answer gave it (None: no header yet).

        The header has one-second resolution and PI's clock runs on, so this is at or before the server's time:
        the safe side for a job's "now". Ask something first for a fresh value.
        """
        return self._date

    def _note_date(self, text: str | None) -> None:
        if text is None or text == self._date_text:
            return
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        self._date_text = text
        self._date = when.astimezone(UTC)

    def url_for(self, path_or_url: str) -> str:
        """An absolute URL: links from bodies pass through, paths are joined to the base URL."""
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self._base_url}/{path_or_url.lstrip('/')}"

    # ---- public calls -----------------------------------------------------------------------------------
    async def get_bytes(self, path_or_url: str, params: Params | None = None) -> bytes:
        """The raw JSON body, checked (status, length, JSON syntax, no WebException): the decode fast path."""
        return await self._call("GET", path_or_url, params, None, {}, _raw_or_empty, authenticated=True)

    async def get_decoded(self, path_or_url: str, params: Params | None, decoder: Callable[[bytes], T]) -> T:
        """The body through the caller's typed ``decoder`` (which raises BadResponseError on a bad body).

        The decoder runs inside the attempt: the body is parsed once, not checked then parsed again (a tenth
        of a backfill's CPU), and a body that does not decode is retried like any other bad answer.
        """
        def run(body: bytes, status: int, url: str, content_type: str) -> T:
            try:
                return decoder(body)
            except BadResponseError as exc:
                check_raw(body, status, url, content_type)  # not JSON, or a WebException: say which
                raise BadResponseError(exc.message, status=status, url=url) from exc

        return await self._call("GET", path_or_url, params, None, {}, run, authenticated=True)

    async def get_json(self, path_or_url: str, params: Params | None = None) -> Any:
        return await self._call("GET", path_or_url, params, None, {}, _json_or_none, authenticated=True)

    async def post_json(self, path: str, body: Any, params: Params | None = None) -> Any:
        """POST a JSON body (with ``X-Requested-With``, as PI's CSRF defence demands); decode the answer."""
        headers = {"Content-Type": "application/json"}
        return await self._call("POST", path, params, orjson.dumps(body), headers, _json_or_none,
                                authenticated=True)

    async def fetch_unauthenticated(
        self, method: str, url: str, *, form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """A call without the auth object's headers (OIDC discovery and token requests), same retries."""
        extra = dict(headers or {})
        content = None
        if form is not None:
            content = urlencode(form).encode("ascii")
            extra["Content-Type"] = "application/x-www-form-urlencoded"
        return await self._call(method, url, None, content, extra, _json_or_none, authenticated=False)

    # ---- one logical request -----------------------------------------------------------------------------
    async def _call(
        self, method: str, path_or_url: str, params: Params | None, content: bytes | None,
        extra_headers: Mapping[str, str], decode: Callable[[bytes, int, str, str], T], *, authenticated: bool,
    ) -> T:
        url = self.url_for(path_or_url)
        backoff = Backoff(self.retry, sleep=self._sleep)
        refreshed = False
        while True:
            headers: dict[str, str] = dict(extra_headers)
            if method != "GET":
                headers["X-Requested-With"] = "XMLHttpRequest"
            if authenticated:
                # Outside the retry handling: a token request has its own retries, and a refused client
                # secret must not be tried twice.
                await self.auth.apply(headers, self)
            try:
                return await self._attempt(method, url, params, content, headers, decode)
            except PiApiError as exc:
                self.errors += 1
                delay = backoff.next_delay(exc)  # counts the failed attempt, a 401 too: a refresh uses one up
                if delay is not None:
                    self.retries += 1
                    _log.warning("%s %s: %s (attempt %d of %d), retrying in %.3f s", method, _path(url),
                                 type(exc).__name__, backoff.failures, self.retry.max_attempts, delay)
                    await backoff.wait(delay)
                elif (authenticated and not refreshed and isinstance(exc, AuthError) and exc.status == 401
                      and await self.auth.refresh(headers)):
                    refreshed = True
                    self.retries += 1
                    _log.warning("%s %s: 401, retrying once with refreshed credentials", method, _path(url))
                else:
                    raise

    async def _attempt(
        self, method: str, url: str, params: Params | None, content: bytes | None, headers: dict[str, str],
        decode: Callable[[bytes, int, str, str], T],
    ) -> T:
        if self._bucket is not None:
            await self._bucket.acquire()
        shown = display_url(url)
        self.requests += 1
        t0 = time.perf_counter()
        try:
            # timeout_s bounds the whole request; httpx's own timeout is per read, so a server that trickles
            # its body would never be cut off by it alone.
            async with asyncio.timeout(self.timeout_s):
                resp = await self._client.request(method, url, params=tuple(params) if params else None,
                                                 content=content, headers=headers)
        except TimeoutError as exc:
            _log.debug("%s %s -> no complete answer within %g s", method, _path(url), self.timeout_s)
            raise NetworkError(f"no complete answer within {self.timeout_s:g} s (timeout_s)", url=shown) from exc
        except httpx2.HTTPError as exc:
            _log.debug("%s %s -> %s", method, _path(url), type(exc).__name__)
            raise self._scrubbed(_translate_transport(exc, shown, self.timeout_s,
                                                      plain_http=self._base_url.startswith("http://"),
                                                      answered=self.answered)) from exc
        except httpx2.InvalidURL as exc:
            raise ConfigError("url", f"invalid URL {shown}: {exc}") from exc
        self.answered = True
        self._note_date(resp.headers.get("date"))
        self.bytes_received += resp.num_bytes_downloaded
        _log.debug("%s %s -> %d (%.1f ms, %d bytes)", method, _path(url), resp.status_code,
                   (time.perf_counter() - t0) * 1000.0, resp.num_bytes_downloaded)
        shown = display_url(str(resp.request.url))
        _check_length(resp, shown)
        if not 200 <= resp.status_code < 300:
            raise self._scrubbed(self._status_error(resp, shown))
        try:
            return decode(resp.content, resp.status_code, shown, resp.headers.get("content-type", ""))
        except PiApiError as exc:
            self._scrubbed(exc)
            raise

    def _status_error(self, resp: httpx2.Response, url: str) -> PiApiError:
        retry_after = parse_retry_after(resp.headers.get("retry-after"))
        return error_for_status(resp.status_code, errors_of(resp.content), url=url, retry_after=retry_after,
                                reason=resp.reason_phrase)

    def _scrubbed(self, exc: T) -> T:
        """Remove any secret of the auth object from an exception's texts (servers sometimes echo input)."""
        secrets = [s for s in self.auth.secrets() if s]
        if not secrets or not isinstance(exc, PiApiError):
            return exc

        def clean(text: str) -> str:
            for s in secrets:
                text = text.replace(s, "***")
            return text

        exc.errors = [clean(e) for e in exc.errors]
        exc.message = clean(exc.message)
        exc.args = tuple(clean(a) if isinstance(a, str) else a for a in exc.args)
        return exc


def _path(url: str) -> str:
    return urlsplit(url).path


def _check_length(resp: httpx2.Response, url: str) -> None:
    declared = resp.headers.get("content-length")
    if declared is None or not declared.strip().isdigit() or resp.status_code in (204, 304):
        return
    if int(declared) != resp.num_bytes_downloaded:
        raise NetworkError(f"truncated body: {resp.num_bytes_downloaded} of {int(declared)} bytes arrived",
                           status=resp.status_code, url=url)


def _raw_or_empty(body: bytes, status: int, url: str, content_type: str) -> bytes:
    if not body and status not in (200, 207):
        return body
    return check_raw(body, status, url, content_type)


def _json_or_none(body: bytes, status: int, url: str, content_type: str) -> Any:
    if not body and status not in (200, 207):
        return None
    return parse_json(body, status, url, content_type)
