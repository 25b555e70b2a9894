"""PI channels (WebSocket) and stream updates (markers): the push side of the PI Web API.

The only module of piflow that imports ``websockets``. A channel (``streamsets/channel?webId=A&webId=B``) is a
WebSocket on which PI pushes ``{Links, Items: [{WebId, ..., Items: [value...]}]}`` for the streams that changed;
the client sends nothing and there is no resume point, which is why the stream job reads every gap back with
``recorded``. What this module adds to a bare socket:

- the same headers as :class:`~piflow.client.http.PiHttp` (its auth object, user agent), one refresh after a
  401, TLS verification from the same setting;
- handshake answers translated into :mod:`piflow.errors` as for REST calls (transient, auth, not found); a
  server or proxy that answers the upgrade with any other HTTP answer (200, 400, 405, 426, 501, ...) raises
  :class:`ChannelUnavailableError`, so the job can fall back to stream updates or polling;
- dead-socket detection: :meth:`Channel.receive` gives up when neither a message nor a heartbeat arrived for
  ``dead_after_s`` (PI sends an empty message after ``heartbeatRate`` idle polling cycles);
- socket planning: PI (HTTP.sys) and the emulator refuse request lines over about 8 KB, so the number of
  points per socket is bounded by the URL length as well as by a count.

Stream updates (``POST streamsets/updates``, ``GET streamsets/updates?marker=``) are the HTTP fallback when
channels are unavailable; their two calls live here too, on top of :class:`PiHttp`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
)

from piflow import decode
from piflow.client.http import DEFAULT_USER_AGENT, PiHttp, error_for_status, errors_of
from piflow.client.retry import parse_retry_after
from piflow.errors import (
    AuthError,
    BadResponseError,
    ConfigError,
    NetworkError,
    NotFoundError,
    PiApiError,
    TransientError,
)
from piflow.urls import display_url

_log = logging.getLogger(__name__)

CHANNEL_PATH = "streamsets/channel"
DEFAULT_MAX_URL_CHARS = 8000  # HTTP.sys and uvicorn's WebSocket server stop at about 8 KB per request line


class ChannelUnavailableError(PiApiError):
    """The server or a proxy answered the WebSocket handshake with HTTP instead of an upgrade.

    Retrying the same handshake will not help: the caller should fall back (stream updates, polling).
    """


class ChannelClosedError(NetworkError):
    """An open channel ended: closed by the server (``code`` set) or silent for too long (``code`` None)."""

    def __init__(self, message: str, *, code: int | None = None, reason: str = "", url: str | None = None
                 ) -> None:
        self.code = code
        self.reason = reason
        super().__init__(message, url=url)


# ---- pure helpers ------------------------------------------------------------------------------------------
def ws_base(base_url: str) -> str:
    """``https://host/piwebapi`` -> ``wss://host/piwebapi`` (``http`` -> ``ws``)."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ConfigError("url", f"not an http(s) URL: {display_url(base_url)!r}")
    return urlunsplit((scheme, parts.netloc, parts.path, "", ""))


@dataclass(frozen=True)
class ChannelOptions:
    """How channels are opened and watched.

    ``heartbeat_rate``: PI sends an empty message after that many idle polling cycles (0: none).
    ``dead_after_s``: no message or heartbeat for this long means the socket is dead (0: never).
    ``extra_params``: more query parameters (the emulator's ``_pollSeconds`` in tests and benchmarks).
    """

    include_initial_values: bool = False
    heartbeat_rate: int = 5
    dead_after_s: float = 30.0
    open_timeout_s: float = 20.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    max_message_bytes: int | None = 64 * 1024 * 1024
    extra_params: tuple[tuple[str, str], ...] = ()
    verify: bool | str = True


def _query(webids: Sequence[str], opts: ChannelOptions) -> str:
    params = [("webId", w) for w in webids]
    params.append(("includeInitialValues", "true" if opts.include_initial_values else "false"))
    if opts.heartbeat_rate > 0:
        params.append(("heartbeatRate", str(opts.heartbeat_rate)))
    params.extend(opts.extra_params)
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)


def channel_url(base_url: str, webids: Sequence[str], opts: ChannelOptions | None = None) -> str:
    """The ``ws(s)://.../streamsets/channel?webId=...`` URL of one socket."""
    if not webids:
        raise ValueError("a channel needs at least one WebID")
    return f"{ws_base(base_url)}/{CHANNEL_PATH}?{_query(webids, opts or ChannelOptions())}"


def chunk_params(values: Sequence[str], name: str, fixed_chars: int, max_items: int,
                 max_url_chars: int = DEFAULT_MAX_URL_CHARS) -> list[list[str]]:
    """Split repeated query parameters (``webId=``, ``marker=``) into URLs of at most ``max_items`` values
    and ``max_url_chars`` characters, ``fixed_chars`` being the rest of the URL. Order is kept; a value too
    long on its own still gets its own chunk (the server will say whether it accepts it)."""
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    chunks: list[list[str]] = []
    current: list[str] = []
    length = fixed_chars
    for v in values:
        piece = len(name) + 2 + len(quote(v, safe=""))  # "name=value&"
        if current and (len(current) >= max_items or length + piece > max_url_chars):
            chunks.append(current)
            current, length = [], fixed_chars
        current.append(v)
        length += piece
    if current:
        chunks.append(current)
    return chunks


def plan_sockets(base_url: str, webids: Sequence[str], max_points: int, max_url_chars: int = DEFAULT_MAX_URL_CHARS,
                 opts: ChannelOptions | None = None) -> list[list[str]]:
    """The points of each socket: at most ``max_points``, and a channel URL under ``max_url_chars``.

    Order is kept, so a restart with the same points plans the same sockets.
    """
    fixed = len(channel_url(base_url, ["x"], opts)) - len("webId=x&")
    return chunk_params(webids, "webId", fixed, max_points, max_url_chars)


def handshake_error(status: int, body: bytes, url: str, retry_after: float | None = None) -> PiApiError:
    """The exception for a handshake answered with HTTP ``status`` instead of 101 Switching Protocols.

    The same exception as a REST call with that answer when it is transient (429, 5xx, 408), an auth error
    (401/403), or a NotFoundError (404: an unknown WebID, or a server that does not route the path: the caller
    tells these apart with REST). Any other answer means the upgrade is not possible here.
    """
    errors = errors_of(body)
    exc = error_for_status(status, errors, url=url, retry_after=retry_after, reason="WebSocket handshake refused")
    if isinstance(exc, TransientError | AuthError | NotFoundError):
        return exc
    detail = "; ".join(errors)[:300] or "no upgrade"
    return ChannelUnavailableError(f"the WebSocket handshake got an HTTP answer instead of an upgrade ({detail})",
                                   status=status, url=url, errors=errors)


def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """TLS for ``wss://`` from the same setting as the HTTP client: True, a CA bundle path, or False."""
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return ssl.create_default_context()


# ---- an open channel ---------------------------------------------------------------------------------------
class Channel:
    """One open socket. :meth:`receive` returns each message's bytes (heartbeats included)."""

    def __init__(self, conn: ClientConnection, url: str, dead_after_s: float) -> None:
        self._conn = conn
        self.url = url
        self.dead_after_s = dead_after_s
        self.messages = 0

    async def receive(self) -> bytes:
        """The next message; ChannelClosedError when the socket closes or stays silent past ``dead_after_s``."""
        timeout = self.dead_after_s if self.dead_after_s > 0 else None
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that arrives as a message
            # does, and the job's receive loop then never ends at shutdown.
            async with asyncio.timeout(timeout):
                data = await self._conn.recv(decode=False)
        except TimeoutError:
            raise ChannelClosedError(
                f"no message or heartbeat for {self.dead_after_s:g} s: the socket is considered dead",
                url=self.url) from None
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            code = rcvd.code if rcvd is not None else None
            reason = rcvd.reason if rcvd is not None else ""
            raise ChannelClosedError(f"the channel was closed (code {code}{', ' + reason if reason else ''})",
                                     code=code, reason=reason, url=self.url) from exc
        self.messages += 1
        return data if isinstance(data, bytes) else bytes(data)

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


async def _connect(http: PiHttp, url: str, shown: str, opts: ChannelOptions) -> ClientConnection:
    headers: dict[str, str] = {}
    await http.auth.apply(headers, http)
    try:
        conn = await connect(
            url, additional_headers=headers, user_agent_header=DEFAULT_USER_AGENT,
            open_timeout=opts.open_timeout_s, ping_interval=opts.ping_interval_s, ping_timeout=opts.ping_timeout_s,
            max_size=opts.max_message_bytes, ssl=ssl_context(opts.verify) if url.startswith("wss:") else None,
        )
    except InvalidStatus as exc:
        resp = exc.response
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        raise _scrub(http, handshake_error(resp.status_code, bytes(resp.body or b""), shown, retry_after)) from exc
    except InvalidURI as exc:
        raise ConfigError("url", f"invalid channel URL {shown}: {exc}") from exc
    except InvalidMessage as exc:  # no (readable) answer at all: the connection dropped during the handshake
        raise NetworkError(f"channel handshake got no answer: {exc}", url=shown) from exc
    except InvalidHandshake as exc:
        raise ChannelUnavailableError(f"the WebSocket handshake failed: {type(exc).__name__}: {exc}",
                                      url=shown) from exc
    except (OSError, TimeoutError) as exc:
        raise NetworkError(f"{type(exc).__name__}: channel connection failed: {exc or 'timed out'}",
                           url=shown) from exc
    return conn


def _scrub(http: PiHttp, exc: PiApiError) -> PiApiError:
    secrets = [s for s in http.auth.secrets() if s]
    for s in secrets:
        exc.message = exc.message.replace(s, "***")
        exc.errors = [e.replace(s, "***") for e in exc.errors]
        exc.args = tuple(a.replace(s, "***") if isinstance(a, str) else a for a in exc.args)
    return exc


@asynccontextmanager
async def open_channel(http: PiHttp, webids: Sequence[str], opts: ChannelOptions | None = None
                       ) -> AsyncIterator[Channel]:
    """Open ``streamsets/channel`` for ``webids`` with ``http``'s auth; closes the socket on exit.

    A 401 is retried once after the auth object refreshes (as for REST calls). Raises
    :class:`ChannelUnavailableError`, :class:`~piflow.errors.AuthError`, NotFoundError, or a TransientError.
    """
    opts = opts or ChannelOptions()
    url = channel_url(http.base_url, webids, opts)
    shown = display_url(url.split("?", 1)[0]) + f"?({len(webids)} webIds)"
    try:
        conn = await _connect(http, url, shown, opts)
    except AuthError as exc:
        if exc.status != 401 or not await http.auth.refresh(None):
            raise
        _log.warning("channel handshake: 401, retrying once with refreshed credentials")
        conn = await _connect(http, url, shown, opts)
    channel = Channel(conn, shown, opts.dead_after_s)
    try:
        yield channel
    finally:
        await channel.close()


def decode_message(body: bytes) -> decode.StreamsetPage:
    """A channel message has the streamset shape (``Items`` of streams, each with ``Items`` of values)."""
    return decode.decode_streamset_page(body, what="channel message")


# ---- stream updates (markers): the HTTP fallback ---------------------------------------------------------------
class _Registration(msgspec.Struct):
    Source: str | None = None
    Status: str | None = None
    LatestMarker: str | None = None
    Errors: Any = None


class _Registrations(msgspec.Struct):
    Items: list[_Registration] = msgspec.field(default_factory=list)


class _MarkerUpdates(msgspec.Struct):
    Source: str | None = None
    RequestedMarker: str | None = None
    Status: str | None = None
    LatestMarker: str | None = None
    Events: list[decode.PiValue] = msgspec.field(default_factory=list)
    Errors: Any = None


class _UpdatesPage(msgspec.Struct):
    Items: list[_MarkerUpdates] = msgspec.field(default_factory=list)


@dataclass
class UpdatesRead:
    """What one read of many markers returned: events and the next marker per stream, and lost markers."""

    events: dict[str, list[decode.PiValue]] = field(default_factory=dict)
    markers: dict[str, str] = field(default_factory=dict)  # webid -> marker to use next time
    lost: list[str] = field(default_factory=list)  # webids whose marker the server no longer knows


def _convert(doc: Any, kind: type[Any], what: str) -> Any:
    try:
        return msgspec.convert(doc, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise BadResponseError(f"{what}: unexpected answer shape: {exc}") from exc


async def register_updates(http: PiHttp, webids: Sequence[str]) -> dict[str, str]:
    """``POST streamsets/updates?webId=...``: a marker per stream (the point in time changes are read from)."""
    doc = await http.post_json("streamsets/updates", None, [("webId", w) for w in webids])
    page: _Registrations = _convert(doc, _Registrations, "streamsets/updates registration")
    out: dict[str, str] = {}
    for item in page.Items:
        if item.Source and item.LatestMarker and (item.Status or "Succeeded") == "Succeeded":
            out[item.Source] = item.LatestMarker
    missing = [w for w in webids if w not in out]
    if missing:
        raise BadResponseError(f"stream updates registration returned no marker for {len(missing)} streams")
    return out


async def read_updates(http: PiHttp, markers: dict[str, str]) -> UpdatesRead:
    """``GET streamsets/updates?marker=...``: the events since each marker, and the markers to use next.

    A marker the server forgot (404 for all, or a ``Failed`` item in a 207) is reported in ``lost``: the
    caller registers again and reads that stream's gap back with ``recorded``.
    """
    by_marker = {m: w for w, m in markers.items()}
    out = UpdatesRead()
    try:
        doc = await http.get_json("streamsets/updates", [("marker", m) for m in markers.values()])
    except NotFoundError:
        out.lost = list(markers)
        return out
    page: _UpdatesPage = _convert(doc, _UpdatesPage, "streamsets/updates")
    for item in page.Items:
        webid = by_marker.get(item.RequestedMarker or "") or item.Source or ""
        if webid not in markers:
            continue
        if (item.Status or "Succeeded") != "Succeeded" or not item.LatestMarker:
            out.lost.append(webid)
            continue
        out.markers[webid] = item.LatestMarker
        if item.Events:
            out.events[webid] = list(item.Events)
    answered = set(out.markers) | set(out.lost)
    out.lost.extend(w for w in markers if w not in answered)
    return out


__all__ = [
    "Channel",
    "ChannelClosedError",
    "ChannelOptions",
    "ChannelUnavailableError",
    "UpdatesRead",
    "channel_url",
    "chunk_params",
    "decode_message",
    "handshake_error",
    "open_channel",
    "plan_sockets",
    "read_updates",
    "register_updates",
    "ssl_context",
    "ws_base",
]
