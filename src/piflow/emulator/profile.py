"""The server profile at work: how this emulator departs from a complete PI Web API (``settings.profile``).

Real deployments differ: old versions, endpoints an administrator disabled, gateways that lack routes, other
implementations of the API. A client must find out what the server offers and degrade, and it can only be
tested against a server that really lacks things. Every switch of :class:`ProfileSettings` is applied here:

- route families that are off (``system/status``, ``batch``, ``streamsets/*``, stream updates) answer 404
  exactly as an unknown route does, and channel upgrades are refused with 403 before they are accepted
  (:class:`ProfileMiddleware`, inside authentication: a real server checks credentials first);
- ``selectedFields`` is removed from the query before any route sees it, so every answer is whole;
- the ``Date`` header comes from the virtual clock (:class:`DateMiddleware`, outermost, so that fault and
  authentication answers carry it too), or is absent;
- routes call :func:`recorded_max_count` (the lower cap), :func:`batch_answer` (the partial batch) and
  :func:`list_page` (``startIndex`` or ``Links.Next`` paging).

The profile is read per request, so a test may change ``state.settings.profile`` on a running server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any, TypeVar
from urllib.parse import unquote_plus

from fastapi import FastAPI, Request
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from piflow.emulator.auth import Refusal, refuse_websocket
from piflow.emulator.query import QueryArgs
from piflow.emulator.responses import error_response, pi_error
from piflow.emulator.settings import ProfileSettings
from piflow.emulator.state import EmulatorState

T = TypeVar("T")

CONTINUATION = "continuation"  # the query parameter of a Links.Next URL under links paging
CHANNELS_REFUSED = "WebSocket channels are disabled on this server."
_STATUS = re.compile(r"/piwebapi/system/status/?")
_BATCH = re.compile(r"/piwebapi/batch/?")
_STREAMSETS = re.compile(r"/piwebapi/streamsets(/.*)?")
_UPDATES = re.compile(r"/piwebapi/(streams/updates(/.*)?|streams/[^/]+/updates/?|streamsets/updates/?)")


def profile_of(state: EmulatorState) -> ProfileSettings:
    return state.settings.profile


# ---- route families (pure) -----------------------------------------------------------------------------

def missing_route(profile: ProfileSettings, path: str) -> bool:
    """True when this server has no such route: the request answers 404 as an unknown route would."""
    low = path.lower()
    return ((not profile.system_status and _STATUS.fullmatch(low) is not None)
            or (profile.batch == "off" and _BATCH.fullmatch(low) is not None)
            or (not profile.streamsets and _STREAMSETS.fullmatch(low) is not None)
            or (not profile.stream_updates and _UPDATES.fullmatch(low) is not None))


def without_selected_fields(query_string: bytes) -> bytes:
    """The raw query without its ``selectedFields`` parameters (any spelling); the rest byte for byte."""
    kept = [piece for piece in query_string.split(b"&")
            if piece and unquote_plus(piece.split(b"=", 1)[0].decode("latin-1")).lower() != "selectedfields"]
    return b"&".join(kept)


class ProfileMiddleware:
    """Missing routes, refused channels and an ignored ``selectedFields`` (innermost of the middleware)."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        profile = profile_of(self.state)
        path: str = scope.get("path", "")
        websocket = scope["type"] == "websocket"
        if missing_route(profile, path):
            if websocket:
                await refuse_websocket(scope, receive, send, Refusal(404, "Not Found"))
            else:
                await error_response(404, "Not Found")(scope, receive, send)
            return
        if websocket and not profile.channels and path.lower().startswith("/piwebapi/"):
            await refuse_websocket(scope, receive, send, Refusal(403, CHANNELS_REFUSED))
            return
        if not profile.selected_fields and b"selectedfields" in scope.get("query_string", b"").lower():
            scope = {**scope, "query_string": without_selected_fields(scope["query_string"])}
        await self.app(scope, receive, send)


# ---- the Date header -----------------------------------------------------------------------------------

_STARTS = ("http.response.start", "websocket.accept", "websocket.http.response.start")


class DateMiddleware:
    """``Date`` from the virtual clock on every answer (uvicorn's wall-clock Date is turned off in server.py).

    A client that reads the server's clock from ``Date`` (when ``system/status`` is missing) must see the
    emulator's time, not the machine's. With ``date_header`` off no Date is sent at all. (A refused WebSocket
    handshake is the exception: the websockets library adds a wall-clock Date to it when none is given.)
    """

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not profile_of(self.state).date_header:
            await self.app(scope, receive, send)
            return

        async def dated(message: Message) -> None:
            if message["type"] in _STARTS:
                stamp = format_datetime(self.state.clock.now(), usegmt=True).encode("latin-1")
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                message = {**message, "headers": [*headers, (b"date", stamp)]}
            await send(message)

        await self.app(scope, receive, dated)


def install(app: FastAPI, state: EmulatorState) -> None:
    """Add :class:`DateMiddleware` outermost and :class:`ProfileMiddleware` innermost (call after the fault
    and authentication middleware are installed)."""
    if app.middleware_stack is not None:
        raise RuntimeError("install the profile middleware before the app starts")
    app.add_middleware(DateMiddleware, state=state)
    app.user_middleware.append(Middleware(ProfileMiddleware, state=state))


# ---- recorded values -----------------------------------------------------------------------------------

def recorded_max_count(state: EmulatorState, asked: int) -> int:
    """``maxCount`` as this server applies it: silently no more than its cap (no error, as a lower limit)."""
    cap = profile_of(state).max_count_cap
    return asked if cap is None else min(asked, cap)


# ---- batch ---------------------------------------------------------------------------------------------

def omitted_ids(ids: Sequence[str]) -> set[str]:
    """The ids a partial batch leaves out of its answer: every third in sorted order (the 3rd, 6th, ...), and
    the last one when only two were sent (so that 2+ ids always lose one); none of a single request."""
    ordered = sorted(ids)
    gone = ordered[2::3] or ordered[1:2]
    return set(gone)


def batch_answer(state: EmulatorState, results: Mapping[str, T]) -> dict[str, T]:
    """The 207 body: every answer, or under ``batch="partial"`` all but :func:`omitted_ids` (which still ran:
    the server lost their answers, it did not skip the work)."""
    if profile_of(state).batch != "partial":
        return dict(results)
    gone = omitted_ids(list(results))
    return {rid: answer for rid, answer in results.items() if rid not in gone}


# ---- list paging ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ListPage:
    """Which part of a list one answer holds, and how the client finds the next part.

    Under ``start_index`` paging a page is ``startIndex``/``maxCount`` and says nothing about what follows.
    Under ``links`` paging ``startIndex`` is ignored: the offset travels in an opaque continuation parameter
    of ``Links.Next``, which is present exactly when more items remain.
    """

    start: int
    count: int
    next_url: Callable[[int], str] | None = None  # links paging: the URL of the page starting at an offset

    @property
    def fetch(self) -> int:
        """How many items from ``start`` the route should produce (one more than a page under links paging,
        to tell whether more remain without counting the whole list)."""
        return self.count + 1 if self.next_url is not None and self.count > 0 else self.count

    def finish(self, fetched: Sequence[T]) -> tuple[list[T], dict[str, str]]:
        """The page's items and its ``Links``, from the (up to) :attr:`fetch` items produced from ``start``."""
        items = list(fetched[:self.count])
        if self.next_url is not None and self.count > 0 and len(fetched) > self.count:
            return items, {"Next": self.next_url(self.start + self.count)}
        return items, {}

    def of(self, items: Sequence[T]) -> tuple[list[T], dict[str, str]]:
        """The page of a list that is already whole in memory."""
        return self.finish(items[self.start:self.start + self.fetch])


_NOT_IN_TOKEN = frozenset({"startindex", CONTINUATION, "maxcount", "selectedfields"})


def _query_key(request: Request) -> str:
    """What a continuation belongs to: the route and its filters (not the page size or the fields)."""
    pairs = [f"{k.lower()}={v}" for k, v in request.query_params.multi_items() if k.lower() not in _NOT_IN_TOKEN]
    text = request.url.path.lower() + "?" + "&".join(pairs)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=6).hexdigest()


def _token(offset: int, key: str) -> str:
    return base64.urlsafe_b64encode(f"{offset}.{key}".encode("ascii")).rstrip(b"=").decode("ascii")


def _offset(token: str, key: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        offset, _, owner = text.partition(".")
        if owner == key and offset.isdigit():
            return int(offset)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise pi_error(400, f"The '{CONTINUATION}' parameter value '{token}' is not valid for this request.")


def _next_url(request: Request, key: str) -> Callable[[int], str]:
    raw = request.scope.get("query_string", b"").decode("latin-1")
    kept = [p for p in raw.split("&")
            if p and unquote_plus(p.split("=", 1)[0]).lower() not in ("startindex", CONTINUATION)]

    def url(offset: int) -> str:
        return str(request.url.replace(query="&".join([*kept, f"{CONTINUATION}={_token(offset, key)}"])))

    return url


def list_page(request: Request, state: EmulatorState, count: int | None) -> ListPage:
    """The page a list route answers. ``count`` is the route's ``maxCount`` (already parsed with its limits),
    or None for a list PI answers whole (no ``startIndex``/``maxCount``), which links paging still pages."""
    q = QueryArgs(request.query_params.multi_items())
    if profile_of(state).list_paging == "start_index":
        if count is None:
            return ListPage(0, 2**62)
        return ListPage(q.integer("startIndex", 0, minimum=0), count)
    if count is None:
        count = q.integer("maxCount", state.settings.max_count_default, minimum=1)
    key = _query_key(request)
    token = q.get(CONTINUATION)
    start = _offset(token.strip(), key) if token else 0
    return ListPage(start, count, _next_url(request, key))


def page_json(page: ListPage, items: Sequence[T], to_json: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    """``{"Links", "Items"}`` of the page of an in-memory list."""
    chosen, links = page.of(items)
    return {"Links": links, "Items": [to_json(x) for x in chosen]}
