"""Streams: what a ``streams/{webId}`` or ``streamsets`` request reads, and how its answer is encoded.

A stream is a PI point or an AF attribute (point-backed or static). WebIDs are resolved to streams here, a
failure carried per stream so that a stream set answers 207 with an ``Exception`` per bad item. The time
window of a request and the fast JSON body encoders (columnar values through :mod:`piflow.emulator.serialize`,
pruned by ``selectedFields``) are here too: everything about a stream but its values (:mod:`.values`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import HTTPException

from piflow import webids
from piflow.emulator.model import PointSpec
from piflow.emulator.plumbing import error_message, find_point, point_webid, webid_type
from piflow.emulator.query import QueryArgs, Selection, prune
from piflow.emulator.responses import pi_error
from piflow.emulator.serialize import VALUE_FIELDS, Buffer, StreamFormat, ValueColumns, encode_arrays, value_dicts
from piflow.emulator.state import EmulatorState

# ---- resolving WebIDs ------------------------------------------------------------------------------------

def _af_call(st: EmulatorState, method: str, webid: str) -> Any:
    """Ask the AF model (built by af.py) through its narrow interface; anything missing is a 404."""
    try:
        fn = getattr(st.af, method)
        return fn(webid)
    except Exception:  # the AF model is optional for this module: no model, no such object
        return None


@dataclass(frozen=True)
class Stream:
    """Something that has values: a PI point, or an AF attribute (point-backed or static).

    In a stream set, a stream that cannot be read (unknown WebID, deleted point, attribute without a point)
    carries ``error`` and is answered as an item with ``Exception`` instead of failing the whole call.
    """

    webid: str  # as served
    name: str
    path: str
    units: str
    source: str  # URL of the point or attribute
    point: PointSpec | None = None
    static_json: bytes | None = None
    error: str | None = None

    @property
    def fmt(self) -> StreamFormat:
        p = self.point
        return StreamFormat(self.units, p is not None and p.point_type == "Int32", p.state_names() if p else ())

    @property
    def linear(self) -> bool:
        return self.point is not None and not self.point.step


def _failed(webid: str, message: str) -> Stream:
    return Stream(webid, "", "", "", "", error=message)


def _resolve(st: EmulatorState, webid: str, base: str, form: str | None) -> Stream:
    """A point or AF attribute WebID as a stream; failures are carried in ``error``."""
    if webid[2:4] == "Ab":
        ref = _af_call(st, "resolve_attribute", webid)
        if ref is None:
            return _failed(webid, f"The attribute with WebID '{webid}' was not found.")
        return _attribute_stream(st, ref, webid, base, form)
    try:
        p = find_point(st, webid)
    except HTTPException as exc:
        return _failed(webid, error_message(exc))
    wid = webid if form is None else point_webid(p, form)
    return Stream(wid, p.name, p.path, p.units, f"{base}points/{wid}", p)


def get_stream(st: EmulatorState, webid: str, base: str, form: str | None) -> Stream:
    """One stream for the ``streams/{webId}`` routes: 404 when it cannot be read."""
    s = _resolve(st, webid, base, form)
    if s.error:
        raise pi_error(404, s.error)
    return s


def _attribute_stream(st: EmulatorState, ref: Any, webid: str, base: str, form: str | None) -> Stream:
    wid = webid if form is None else (webids.path_only("Ab", ref.path) if form == "PathOnly" else ref.webid)
    point: PointSpec | None = ref.point
    deleted = point is not None and (point.server.index, point.index) in st.deleted_points
    if deleted or (point is None and ref.static_value is None):
        return _failed(wid, f"PI Point not found for attribute '{ref.path}'.")
    static = None if point is not None else orjson.dumps(ref.static_value, default=str)
    return Stream(wid, ref.name, ref.path, ref.units or "", f"{base}attributes/{wid}", point, static)


def element_streams(st: EmulatorState, webid: str, base: str, form: str | None) -> list[Stream]:
    """The attributes of an AF element or event frame as streams; 404 when the owner is unknown."""
    refs = _af_call(st, "element_attributes", webid)
    if refs is None:
        raise pi_error(404, f"The element or event frame with WebID '{webid}' was not found.")
    return [_attribute_stream(st, ref, ref.webid, base, form) for ref in refs]


def adhoc_streams(st: EmulatorState, q: QueryArgs, base: str) -> list[Stream]:
    ids = q.getlist("webId")
    if not ids:
        raise pi_error(400, "At least one 'webId' parameter is required.")
    form = webid_type(q)
    return [_resolve(st, w, base, form) for w in ids]


def streamset_status(streams: Sequence[Stream]) -> int:
    """207 when some streams of a set could not be read (their items carry ``Exception``)."""
    return 207 if any(s.error for s in streams) else 200


# ---- time windows ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    start: int
    end: int
    now: int

    @property
    def lo(self) -> int:
        return min(self.start, self.end)

    @property
    def hi(self) -> int:
        return max(self.start, self.end)

    @property
    def reversed(self) -> bool:
        return self.end < self.start


def query_window(st: EmulatorState, q: QueryArgs, start_default: str = "*-1d", end_default: str = "*") -> Window:
    now = st.clock.now_ticks()
    tz = q.timezone()
    start = q.time_ticks("startTime", start_default, now, tz)
    end = q.time_ticks("endTime", end_default, now, tz)
    return Window(start, end, now)


# ---- encoding answers ------------------------------------------------------------------------------------

def _obj(pairs: Sequence[tuple[str, Sequence[Buffer]]]) -> list[Buffer]:
    """``{"k": v, ...}`` from already-encoded values."""
    out: list[Buffer] = [b"{"]
    for i, (key, value) in enumerate(pairs):
        out.append((b"," if i else b"") + orjson.dumps(key) + b":")
        out.extend(value)
    out.append(b"}")
    return out


def _value_fields(vsel: Selection | None) -> list[str] | None:
    """Value fields to print for the selection of a value list; None if it reaches deeper (slow path)."""
    if vsel is None:
        return []
    if vsel.everything:
        return list(VALUE_FIELDS)
    if vsel.depth > 1:
        return None
    return [f for f in VALUE_FIELDS if f.lower() in vsel.children]


def stream_values_body(sel: Selection, cols: ValueColumns, fmt: StreamFormat) -> bytes:
    """``{Links, Items, UnitsAbbreviation}`` of one stream (the recorded, interpolated and plot answers)."""
    fields = _value_fields(sel.sub("Items"))
    if fields is None:
        body = {"Links": {}, "Items": value_dicts(cols, fmt), "UnitsAbbreviation": fmt.units}
        return orjson.dumps(prune(body, sel))
    pairs: list[tuple[str, Sequence[Buffer]]] = []
    if sel.includes("Links"):
        pairs.append(("Links", [b"{}"]))
    if sel.includes("Items"):
        pairs.append(("Items", encode_arrays([(cols, fmt)], fields)[0]))
    if sel.includes("UnitsAbbreviation"):
        pairs.append(("UnitsAbbreviation", [orjson.dumps(fmt.units)]))
    return b"".join(_obj(pairs))


def stream_header(s: Stream) -> dict[str, Any]:
    if s.error:
        return {"WebId": s.webid, "Name": "", "Path": "", "UnitsAbbreviation": "", "Links": {},
                "Exception": {"Errors": [s.error]}}
    return {"WebId": s.webid, "Name": s.name, "Path": s.path, "UnitsAbbreviation": s.units,
            "Links": {"Source": s.source}}


def streamset_values_body(sel: Selection, streams: Sequence[Stream], cols: Sequence[ValueColumns]) -> bytes:
    """``{Links, Items: [{WebId, Name, Path, UnitsAbbreviation, Links, Items}]}`` for many streams."""
    fields = _value_fields(sel.path("Items", "Items"))
    if fields is None:
        items = [stream_header(s) if s.error else {**stream_header(s), "Items": value_dicts(c, s.fmt)}
                 for s, c in zip(streams, cols, strict=True)]
        return orjson.dumps(prune({"Links": {}, "Items": items}, sel))
    pairs: list[tuple[str, Sequence[Buffer]]] = []
    if sel.includes("Links"):
        pairs.append(("Links", [b"{}"]))
    item_sel = sel.sub("Items")
    if item_sel is not None:
        pairs.append(("Items", _streamset_items(item_sel, streams, cols, fields)))
    return b"".join(_obj(pairs))


def _streamset_items(item_sel: Selection, streams: Sequence[Stream], cols: Sequence[ValueColumns],
                     fields: list[str]) -> list[Buffer]:
    with_values = item_sel.includes("Items")
    arrays: list[list[Buffer]] = (encode_arrays([(c, s.fmt) for s, c in zip(streams, cols, strict=True)], fields)
                                  if with_values else [])
    parts: list[Buffer] = [b"["]
    for i, s in enumerate(streams):
        head = orjson.dumps(prune(stream_header(s), item_sel))
        parts.append(b"," if i else b"")
        if not with_values or s.error:
            parts.append(head)
            continue
        parts.append(head[:-1] + (b',"Items":' if len(head) > 2 else b'"Items":'))
        parts.extend(arrays[i])
        parts.append(b"}")
    parts.append(b"]")
    return parts
