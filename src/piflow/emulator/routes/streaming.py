"""Channels (WebSocket) and stream updates (markers): how the emulator pushes new and edited values.

Both are driven by :mod:`piflow.emulator.changes`: the model has no change log, so "what changed" is the
difference of two snapshots of the data at the previous and the current virtual time. A channel polls the
model every ``poll_s`` of REAL time (``_pollSeconds`` overrides it, for tests) and pushes what changed; a
marker remembers the virtual time it stands for, and reading it returns what changed since.

Markers are forgotten when unused for :data:`MARKER_RETENTION_S` of VIRTUAL time (reading a marker counts
as using it); an unknown or forgotten marker answers 404 with an ``Errors`` body, like a real server that
lost its update cache, and the client must register again and read the gap back with ``recorded``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, WebSocket
from fastapi.responses import Response
from starlette.websockets import WebSocketDisconnect

from piflow import webids
from piflow.emulator.changes import Changes, changes_between, changes_between_many
from piflow.emulator.model import K_NUMBER, K_STRING, K_SYSTEM, K_TIMESTAMP, Events, PointSpec
from piflow.emulator.responses import error_response, json_response, pi_error
from piflow.emulator.state import EmulatorState
from piflow.pitime import TICKS_PER_SECOND, format_ticks

log = logging.getLogger(__name__)
router = APIRouter()

POLL_S = 0.5  # real seconds between two looks at the model by a channel
MIN_POLL_S = 0.01
MARKER_RETENTION_S = 600.0  # virtual seconds a marker survives without being used
MAX_MARKERS = 200_000  # hard cap per emulator (least recently used ones go first)
_INITIAL_LOOKBACK_SLOTS = 64
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008


# ---- values and parameters ---------------------------------------------------------------------------

def _value(ev: Events, i: int) -> Any:
    kind = int(ev.kind[i])
    if kind == K_NUMBER:
        number = float(ev.number[i])
        return int(number) if ev.point.point_type == "Int32" else number
    if kind in (K_STRING, K_TIMESTAMP):
        return ev.string_value(i)
    return {"Name": ev.state_name(i), "Value": int(ev.code[i]), "IsSystem": kind == K_SYSTEM}


def value_dicts(ev: Events, units: str) -> list[dict[str, Any]]:
    """PI's value shape for each event. (A few values per message: clarity over the vectorised REST encoder.)"""
    return [
        {
            "Timestamp": format_ticks(int(ev.ticks[i])),
            "Value": _value(ev, i),
            "UnitsAbbreviation": units,
            "Good": bool(ev.good[i]),
            "Questionable": bool(ev.questionable[i]),
            "Substituted": bool(ev.substituted[i]),
            "Annotated": bool(ev.annotated[i]),
        }
        for i in range(len(ev))
    ]


class Params:
    """Query parameters with case-insensitive names, as PI treats them; repeated names keep their order."""

    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for key, value in items:
            self._values.setdefault(key.lower(), []).append(value)

    def get(self, name: str) -> str | None:
        values = self._values.get(name.lower())
        return values[0].strip() if values else None

    def all(self, name: str) -> list[str]:
        return list(self._values.get(name.lower(), []))

    def flag(self, name: str, default: bool) -> bool:
        raw = (self.get(name) or "").lower()
        if raw in ("", "true", "false"):
            return default if raw == "" else raw == "true"
        raise pi_error(400, f"The value '{raw}' of parameter '{name}' is not a valid boolean.")

    def number(self, name: str, default: float, minimum: float) -> float:
        raw = self.get(name)
        try:
            value = default if not raw else float(raw)
        except ValueError:
            raise pi_error(400, f"The value '{raw}' of parameter '{name}' is not a number.") from None
        if value < minimum:
            raise pi_error(400, f"The value of parameter '{name}' must be at least {minimum:g}.")
        return value


# ---- streams -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stream:
    """A stream a client subscribed to: the WebID it used, how it is described, and the PI point behind it."""

    webid: str
    name: str
    path: str
    units: str
    point: PointSpec


def _emulator(conn: Request | WebSocket) -> EmulatorState:
    st: EmulatorState = conn.app.state.emulator
    return st


def _is_deleted(state: EmulatorState, p: PointSpec) -> bool:
    return (p.server.index, p.index) in state.deleted_points


def resolve_stream(state: EmulatorState, web_id: str) -> Stream:
    """A point stream by WebID (Full or PathOnly); 400 when malformed, 404 when unknown or deleted."""
    try:
        webids.parse(web_id)
    except ValueError:
        raise pi_error(400, f"The WebID '{web_id}' is not valid.") from None
    p = state.model.point_by_webid(web_id)
    if p is None or _is_deleted(state, p):
        raise pi_error(404, f"The specified WebID '{web_id}' does not refer to a known stream.")
    return Stream(web_id, p.name, p.path, p.units, p)


def _element_streams(state: EmulatorState, web_id: str) -> list[Stream]:
    """Streams of an element's (or event frame's) PI point attributes; static attributes have no stream."""
    refs = state.af.element_attributes(web_id)
    if refs is None:
        raise pi_error(404, f"The specified WebID '{web_id}' does not refer to a known element.")
    return [Stream(r.webid, r.name, r.path, r.units, r.point) for r in refs
            if r.point is not None and not _is_deleted(state, r.point)]


def stream_item(stream: Stream, values: list[dict[str, Any]]) -> dict[str, Any]:
    return {"WebId": stream.webid, "Name": stream.name, "Path": stream.path,
            "UnitsAbbreviation": stream.units, "Items": values}


def current_value(state: EmulatorState, p: PointSpec, now: int) -> Events:
    """The last event visible at ``now`` (empty when the point has none), searching back in growing steps."""
    origin = state.model.config.origin_ticks
    span = p.interval_ticks * _INITIAL_LOOKBACK_SLOTS
    while True:
        start = max(origin, now - span)
        ev = state.model.events(p, start, now, now)
        if len(ev) or start <= origin:
            return ev.take(slice(len(ev) - 1, len(ev)))
        span *= 8


def changed_items(state: EmulatorState, streams: Sequence[Stream], t0: int, t1: int) -> list[dict[str, Any]]:
    """One message item per stream with new or edited events between virtual times t0 and t1."""
    items = []
    for s, ch in zip(streams, changes_between_many(state.model, [s.point for s in streams], t0, t1), strict=True):
        if len(ch):
            items.append(stream_item(s, value_dicts(ch.events, s.units)))
    return items


# ---- channels ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChannelOptions:
    include_initial: bool
    heartbeat_rate: int  # 0: no heartbeats
    poll_s: float

    @classmethod
    def parse(cls, params: Params) -> ChannelOptions:
        heartbeat = params.number("heartbeatRate", 0, 0)
        if heartbeat != int(heartbeat):
            raise pi_error(400, "The value of parameter 'heartbeatRate' must be a whole number.")
        return cls(params.flag("includeInitialValues", False), int(heartbeat),
                   max(MIN_POLL_S, params.number("_pollSeconds", POLL_S, 0)))


def _message(items: list[dict[str, Any]]) -> str:
    return orjson.dumps({"Links": {}, "Items": items}).decode("utf-8")


async def _reject(ws: WebSocket, exc: HTTPException) -> None:
    """Refuse the handshake: an HTTP answer in PI's error shape when the server can send one, else a close."""
    messages = exc.detail if isinstance(exc.detail, list) else [str(exc.detail)]
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(error_response(exc.status_code, *messages))
    else:
        await ws.close(code=CLOSE_POLICY, reason=str(messages[0])[:120])


async def _until_disconnect(ws: WebSocket) -> None:
    """Drain what the client sends (PI clients send nothing) until it goes away."""
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
    except (WebSocketDisconnect, RuntimeError):
        return


class _Channel:
    """One open channel: pushes initial values, then changes, heartbeats, and a forced close if configured."""

    def __init__(self, ws: WebSocket, state: EmulatorState, streams: list[Stream], opts: ChannelOptions) -> None:
        self.ws, self.state, self.streams, self.opts = ws, state, streams, opts
        self.seen = state.clock.now_ticks()  # read before accepting: a client that connected sees later changes

    async def run(self) -> None:
        await self.ws.accept()
        loop = asyncio.get_running_loop()
        close_after = self.state.settings.faults.channel_close_every_s
        deadline = loop.time() + close_after if close_after > 0 else None
        gone = asyncio.create_task(_until_disconnect(self.ws))
        try:
            if self.opts.include_initial:
                await self._send(await asyncio.to_thread(self._initial_items))
            idle = 0
            while True:
                wait = self.opts.poll_s if deadline is None else max(0.0, min(self.opts.poll_s,
                                                                              deadline - loop.time()))
                done, _ = await asyncio.wait({gone}, timeout=wait)
                if done:
                    return
                if deadline is not None and loop.time() >= deadline:
                    await self._force_close()
                    return
                idle = await self._poll(idle)
        except (WebSocketDisconnect, OSError):
            return
        finally:
            gone.cancel()

    async def _poll(self, idle: int) -> int:
        now = self.state.clock.now_ticks()
        # Off the event loop: a channel over many streams must not stall the server's other requests.
        items = await asyncio.to_thread(changed_items, self.state, self.streams, self.seen, now)
        self.seen = max(self.seen, now)
        if items:
            await self._send(items)
            return 0
        idle += 1
        if self.opts.heartbeat_rate and idle >= self.opts.heartbeat_rate:
            await self._send([])
            return 0
        return idle

    def _initial_items(self) -> list[dict[str, Any]]:
        items = []
        for s in self.streams:
            ev = current_value(self.state, s.point, self.seen)
            if len(ev):
                items.append(stream_item(s, value_dicts(ev, s.units)))
        return items

    async def _send(self, items: list[dict[str, Any]]) -> None:
        await self.ws.send_text(_message(items))
        self.state.stats.add(values=sum(len(it["Items"]) for it in items))

    async def _force_close(self) -> None:
        self.state.stats.add(faults=1)
        log.info("fault injection: closing a channel after %.3g s", self.state.settings.faults.channel_close_every_s)
        await self.ws.close(code=CLOSE_GOING_AWAY, reason="Channel closed by the server")


StreamsOf = Callable[[EmulatorState, Params], list[Stream]]


async def _serve_channel(ws: WebSocket, streams_of: StreamsOf) -> None:
    """Resolve streams and options (refusing the handshake on errors), then run the channel."""
    state = _emulator(ws)
    try:
        params = Params(ws.query_params.multi_items())
        opts = ChannelOptions.parse(params)
        streams: list[Stream] = streams_of(state, params)
    except HTTPException as exc:
        await _reject(ws, exc)
        return
    await _Channel(ws, state, streams, opts).run()


def _web_ids(params: Params) -> list[str]:
    ids = params.all("webId")
    if not ids:
        raise pi_error(400, "At least one 'webId' parameter is required.")
    return ids


@router.websocket("/streams/{web_id}/channel")
async def stream_channel(websocket: WebSocket, web_id: str) -> None:
    await _serve_channel(websocket, lambda st, _p: [resolve_stream(st, web_id)])


@router.websocket("/streamsets/channel")
async def streamset_channel(websocket: WebSocket) -> None:
    await _serve_channel(websocket, lambda st, p: [resolve_stream(st, w) for w in _web_ids(p)])


@router.websocket("/streamsets/{web_id}/channel")
async def element_channel(websocket: WebSocket, web_id: str) -> None:
    await _serve_channel(websocket, lambda st, _p: _element_streams(st, web_id))


# ---- stream updates (markers) ------------------------------------------------------------------------------

@dataclass
class Marker:
    key: str
    stream: Stream
    ticks: int  # the virtual time this marker stands for
    used: int  # virtual time it was issued or last read


class MarkerStore:
    """Markers of one emulator. Keys are deterministic (seed and issue number), so runs are reproducible."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._serial = 0
        self._markers: OrderedDict[str, Marker] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self, stream: Stream, now: int) -> str:
        with self._lock:
            self._serial += 1
            digest = hashlib.blake2b(f"{self._seed}|{self._serial}|{stream.webid}|{now}".encode(),
                                     digest_size=16).hexdigest()
            key = f"{digest}_{self._serial}"
            self._markers[key] = Marker(key, stream, now, now)
            while len(self._markers) > MAX_MARKERS:
                self._markers.popitem(last=False)
            return key

    def use(self, key: str, now: int) -> Marker | None:
        """The marker, refreshed as used now; None when unknown or unused for longer than the retention."""
        with self._lock:
            self._forget_expired(now)
            m = self._markers.get(key)
            if m is None:
                return None
            m.used = max(m.used, now)
            self._markers.move_to_end(key)
            return m

    def _forget_expired(self, now: int) -> None:
        limit = now - int(MARKER_RETENTION_S * TICKS_PER_SECOND)
        for key in [k for k, m in self._markers.items() if m.used < limit]:
            del self._markers[key]


_stores: weakref.WeakKeyDictionary[EmulatorState, MarkerStore] = weakref.WeakKeyDictionary()
_stores_lock = threading.Lock()


def marker_store(state: EmulatorState) -> MarkerStore:
    with _stores_lock:
        store = _stores.get(state)
        if store is None:
            store = _stores[state] = MarkerStore(state.settings.seed)
        return store


def _registration(stream: Stream, marker: str) -> dict[str, Any]:
    return {"Source": stream.webid, "SourceName": stream.name, "SourcePath": stream.path,
            "Status": "Succeeded", "LatestMarker": marker}


def _event_dicts(ch: Changes, units: str) -> list[dict[str, Any]]:
    out = []
    for action, value in zip(ch.actions, value_dicts(ch.events, units), strict=True):
        prev = "PreviousEventArchived" if action == "Add" else "None"
        out.append({"Action": action, "PreviousEventAction": prev, **value})
    return out


def read_marker(state: EmulatorState, key: str) -> dict[str, Any]:
    """What changed since the marker's time, and a marker for now; 404 when the marker is not known."""
    store = marker_store(state)
    now = state.clock.now_ticks()
    m = store.use(key, now)
    if m is None:
        raise pi_error(404, f"The marker '{key}' is unknown or has expired; register for updates again.")
    if _is_deleted(state, m.stream.point):
        raise pi_error(404, f"The stream of marker '{key}' no longer exists.")
    ch = changes_between(state.model, m.stream.point, m.ticks, now)
    latest = key if now <= m.ticks else store.issue(m.stream, now)
    state.stats.add(values=len(ch))
    return {"Source": m.stream.webid, "SourceName": m.stream.name, "SourcePath": m.stream.path,
            "RequestedMarker": key, "Status": "Succeeded", "Events": _event_dicts(ch, m.stream.units),
            "LatestMarker": latest}


def _selected(request: Request, body: Any, status_code: int = 200) -> Response:
    """The body, trimmed to ``selectedFields`` when given (``Items.LatestMarker;Items.Events.Value``)."""
    raw = Params(request.query_params.multi_items()).get("selectedFields")
    return json_response(select_fields(body, raw) if raw else body, status_code)


def select_fields(body: Any, selected: str) -> Any:
    """Keep the named dotted paths (case-insensitive); lists are walked through transparently."""
    paths = [[p.lower() for p in raw.strip().split(".") if p] for raw in selected.split(";") if raw.strip()]
    return _keep(body, paths) if paths else body


def _keep(node: Any, paths: list[list[str]]) -> Any:
    if any(not p for p in paths):
        return node
    if isinstance(node, list):
        return [_keep(item, paths) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        below = [p[1:] for p in paths if p[0] == key.lower()]
        if below:
            out[key] = _keep(value, below)
    return out


@router.post("/streams/{web_id}/updates")
async def register_stream_updates(request: Request, web_id: str) -> Response:
    state = _emulator(request)
    stream = resolve_stream(state, web_id)
    return _selected(request, _registration(stream, marker_store(state).issue(stream, state.clock.now_ticks())))


@router.post("/streamsets/updates")
async def register_streamset_updates(request: Request) -> Response:
    state = _emulator(request)
    streams, errors = [], []
    for w in _web_ids(Params(request.query_params.multi_items())):
        try:
            streams.append(resolve_stream(state, w))
        except HTTPException as exc:
            errors.append(str(exc.detail[0] if isinstance(exc.detail, list) else exc.detail))
    if errors:
        raise pi_error(400, *errors)
    now = state.clock.now_ticks()
    store = marker_store(state)
    return _selected(request, {"Items": [_registration(s, store.issue(s, now)) for s in streams]})


@router.get("/streams/updates/{marker}")
async def get_stream_updates(request: Request, marker: str) -> Response:
    return _selected(request, read_marker(_emulator(request), marker))


@router.get("/streamsets/updates")
async def get_streamset_updates(request: Request) -> Response:
    """Every marker's updates; 207 with per-item errors when some markers fail, 404 when all do."""
    state = _emulator(request)
    keys = Params(request.query_params.multi_items()).all("marker")
    if not keys:
        raise pi_error(400, "At least one 'marker' parameter is required.")
    items: list[dict[str, Any]] = []
    failures: list[str] = []
    for key in keys:
        try:
            items.append(read_marker(state, key))
        except HTTPException as exc:
            messages = [str(m) for m in exc.detail] if isinstance(exc.detail, list) else [str(exc.detail)]
            failures.append(messages[0])
            items.append({"RequestedMarker": key, "Status": "Failed", "Errors": messages})
    if len(failures) == len(keys):
        raise pi_error(404, *failures)
    return _selected(request, {"Items": items}, 207 if failures else 200)
