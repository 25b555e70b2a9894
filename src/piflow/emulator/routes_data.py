"""The emulator's data endpoints: system, data servers, points, streams and stream sets, plus admin routes.

Everything is computed on request from the deterministic :class:`~piflow.emulator.model.Model` as of the
virtual clock's now: nothing is stored, so a million points cost nothing until they are read. Recorded values
go through the fast columnar encoder (:mod:`piflow.emulator.serialize`); small answers are plain dicts pruned
by ``selectedFields``. The pure computations (event windows, interpolation, plot, summaries, the name catalog)
come first; the handlers at the end only parse parameters and shape answers.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from piflow import webid as webids
from piflow.emulator.model import (
    _TYPE_CUTS,
    EQUIPMENT,
    K_NUMBER,
    K_SYSTEM,
    POINT_TYPES,
    SITES,
    Events,
    Model,
    PointSpec,
    _mix,
    empty_events,
)
from piflow.emulator.query import (
    QueryArgs,
    Selection,
    is_wildcard_all,
    parse_selected_fields,
    parse_time_ticks,
    prune,
    wildcard,
)
from piflow.emulator.responses import json_response, pi_error, raw_json
from piflow.emulator.serialize import (
    VALUE_FIELDS,
    Buffer,
    StreamFormat,
    ValueColumns,
    encode_arrays,
    good_value_dict,
    value_dicts,
)
from piflow.emulator.state import EmulatorState
from piflow.pitime import TICKS_PER_SECOND, format_ticks, from_ticks, parse_iso_ticks, to_ticks

router = APIRouter()
admin_router = APIRouter()

PRODUCT_VERSION = "1.19.1.31"
NO_DATA = 248  # the system state PI answers when there is no value to give
_WEBID_TYPES = ("Full", "IDOnly", "PathOnly", "LocalIDOnly", "DefaultIDOnly")
_SCAN_SLOTS = 4096  # minimum slots per model call when walking a long window in chunks
_WHOLE_SLOTS = 1 << 18  # slots per model call when the whole window is needed
_MAX_WHOLE_SLOTS = 20_000_000  # beyond this a whole-window computation (plot, summary) is refused
_NEIGHBOURHOOD = 32  # slots around an interpolation time fetched in one go
I64 = npt.NDArray[np.int64]


# =========================================================================================================
# Pure computations
# =========================================================================================================

# ---- events over windows ---------------------------------------------------------------------------------

_EVENT_FIELDS = ("ticks", "kind", "number", "code", "good", "questionable", "substituted", "annotated", "variant")


def _concat_events(p: PointSpec, parts: Sequence[Events]) -> Events:
    parts = [e for e in parts if len(e)]
    if not parts:
        return empty_events(p)
    if len(parts) == 1:
        return parts[0]
    return Events(p, *[np.concatenate([getattr(e, n) for e in parts]) for n in _EVENT_FIELDS])


def collect(model: Model, p: PointSpec, lo: int, hi: int, asof: int, limit: int | None,
            newest_first: bool = False) -> Events:
    """Events with lo <= t <= hi known at ``asof``, oldest (or newest) first, at most ``limit`` of them.

    Long windows are walked in chunks from the requested end, so a small ``limit`` over years of history
    costs about ``limit`` events of work, not the whole window.
    """
    lo, hi = max(lo, model.config.origin_ticks), min(hi, asof)
    if hi < lo or (limit is not None and limit <= 0):
        return empty_events(p)
    if limit is None and (hi - lo) // p.interval_ticks > _MAX_WHOLE_SLOTS:
        raise pi_error(400, f"The time range is too long for the emulator to compute over point '{p.name}' "
                            f"(more than {_MAX_WHOLE_SLOTS} samples); use a shorter range.")
    slots = _WHOLE_SLOTS if limit is None else max(_SCAN_SLOTS, limit + limit // 4 + 16)
    span = min(slots, 1 << 22) * p.interval_ticks
    parts: list[Events] = []
    count = 0
    t = hi if newest_first else lo
    while lo <= t <= hi and (limit is None or count < limit):
        if newest_first:
            ev = model.events(p, max(lo, t - span + 1), t, asof)
            ev = ev.take(slice(None, None, -1))
            t -= span
        else:
            ev = model.events(p, t, min(hi, t + span - 1), asof)
            t += span
        parts.append(ev)
        count += len(ev)
    out = _concat_events(p, parts)
    return out if limit is None or len(out) <= limit else out.take(slice(0, limit))


def event_before(model: Model, p: PointSpec, t: int, asof: int, *, inclusive: bool) -> Events:
    """The last event at (if ``inclusive``) or before ``t`` (the last of several sharing a timestamp)."""
    return collect(model, p, model.config.origin_ticks, t if inclusive else t - 1, asof, 1, newest_first=True)


def event_after(model: Model, p: PointSpec, t: int, asof: int, *, inclusive: bool) -> Events:
    """The first event at (if ``inclusive``) or after ``t``, among those known at ``asof``."""
    return collect(model, p, t if inclusive else t + 1, asof, asof, 1)


# ---- computed values -------------------------------------------------------------------------------------

def take_columns(cols: ValueColumns, idx: I64) -> ValueColumns:
    """Rows ``idx`` of ``cols`` (keeping the encoded strings of the rows that have one)."""
    out = ValueColumns(cols.ticks[idx], cols.kind[idx], cols.number[idx], cols.code[idx], cols.good[idx],
                       cols.questionable[idx], cols.substituted[idx], cols.annotated[idx])
    if cols.extra_rows.size and idx.size:
        pos = np.clip(np.searchsorted(cols.extra_rows, idx), 0, cols.extra_rows.shape[0] - 1)
        hit = cols.extra_rows[pos] == idx
        out.extra_rows = np.flatnonzero(hit).astype(np.int64)
        out.extra_matrix = cols.extra_matrix[pos[hit]]
    return out


def set_system_state(cols: ValueColumns, rows: I64, code: int = NO_DATA) -> None:
    """Turn ``rows`` into a system state (``No Data`` by default), as PI answers where no value exists."""
    if rows.size == 0:
        return
    cols.kind[rows] = K_SYSTEM
    cols.code[rows] = code
    cols.number[rows] = np.nan
    cols.good[rows] = False
    cols.questionable[rows] = cols.substituted[rows] = cols.annotated[rows] = False
    keep = ~np.isin(cols.extra_rows, rows)
    cols.extra_rows, cols.extra_matrix = cols.extra_rows[keep], cols.extra_matrix[keep]


def no_data(times: I64) -> ValueColumns:
    n = times.shape[0]
    cols = ValueColumns(times.astype(np.int64), np.zeros(n, np.int8), np.full(n, np.nan), np.zeros(n, np.int32),
                        np.zeros(n, np.bool_), np.zeros(n, np.bool_), np.zeros(n, np.bool_), np.zeros(n, np.bool_))
    set_system_state(cols, np.arange(n, dtype=np.int64))
    return cols


def _time_groups(times: I64, reach: int) -> list[I64]:
    """Split sorted-or-not times into runs whose neighbourhoods overlap (one model call per run)."""
    order = np.argsort(times, kind="stable")
    st = times[order]
    cuts = np.flatnonzero(np.diff(st) > 2 * reach) + 1
    groups = np.split(order, cuts)
    out: list[I64] = []
    for g in groups:  # keep each model call bounded
        out.extend(np.array_split(g, max(1, (int(times[g[-1]]) - int(times[g[0]])) // (reach * 4096) + 1)))
    return out


def values_at(model: Model, p: PointSpec, times: I64, asof: int, *, linear: bool) -> ValueColumns:
    """The value of ``p`` at each time: the event at that time, else interpolated.

    Float points interpolate linearly between two numeric neighbours; other points (and any neighbour that is
    a state) hold the previous value. After the last known event the last value holds; before the first
    event the answer is the ``No Data`` system state.
    """
    times = times.astype(np.int64)
    out = no_data(times)
    reach = _NEIGHBOURHOOD * p.interval_ticks
    for g in _time_groups(times, reach):
        if g.size == 0:
            continue
        gt = times[g]
        lo, hi = int(gt.min()), int(gt.max())
        ev = _concat_events(p, [event_before(model, p, lo - reach, asof, inclusive=False),
                                collect(model, p, lo - reach, hi + reach, asof, None),
                                event_after(model, p, hi + reach, asof, inclusive=False)])
        _fill_values(out, g, gt, ev, linear and not p.step)
    return out


def _fill_values(out: ValueColumns, rows: I64, times: I64, ev: Events, linear: bool) -> None:
    if len(ev) == 0:
        return
    cols = ValueColumns.from_events(ev)
    i = np.searchsorted(ev.ticks, times, side="right") - 1
    found = i >= 0
    src = take_columns(cols, np.clip(i, 0, None))
    number = src.number.copy()
    if linear:
        j = np.clip(i + 1, 0, len(ev) - 1)
        t0, t1 = ev.ticks[np.clip(i, 0, None)], ev.ticks[j]
        lin = found & (i + 1 < len(ev)) & (t0 != times) & (ev.kind[np.clip(i, 0, None)] == K_NUMBER) \
            & (ev.kind[j] == K_NUMBER) & (t1 > t0)
        frac = np.where(lin, (times - t0) / np.where(t1 > t0, t1 - t0, 1), 0.0)
        number = np.where(lin, src.number + (ev.number[j] - src.number) * frac, src.number)
    sel = np.flatnonzero(found)
    _put_rows(out, rows[sel], take_columns(src, sel), number[sel])


def _put_rows(out: ValueColumns, rows: I64, src: ValueColumns, number: npt.NDArray[np.float64]) -> None:
    """Copy ``src`` into rows ``rows`` of ``out`` (keeping ``out``'s timestamps)."""
    out.kind[rows], out.code[rows], out.number[rows] = src.kind, src.code, number
    out.good[rows], out.questionable[rows] = src.good, src.questionable
    out.substituted[rows], out.annotated[rows] = src.substituted, src.annotated
    keep = ~np.isin(out.extra_rows, rows)
    new_rows = rows[src.extra_rows] if src.extra_rows.size else np.zeros(0, np.int64)
    all_rows = np.concatenate([out.extra_rows[keep], new_rows])
    width = max(out.extra_matrix.shape[1], src.extra_matrix.shape[1])
    mats = [_widened(m, width) for m in (out.extra_matrix[keep], src.extra_matrix)]
    order = np.argsort(all_rows, kind="stable")
    out.extra_rows = all_rows[order].astype(np.int64)
    out.extra_matrix = np.concatenate(mats)[order] if width else np.zeros((all_rows.shape[0], 0), np.uint8)


def interval_times(lo: int, hi: int, step: int) -> I64:
    """lo, lo+step, ... up to hi inclusive (descending when hi < lo, as PI answers reversed ranges)."""
    if hi >= lo:
        return np.arange(lo, hi + 1, step, dtype=np.int64)
    return np.arange(lo, hi - 1, -step, dtype=np.int64)


def plot_rows(ev: Events, lo: int, hi: int, intervals: int) -> I64:
    """Rows of a plot: per interval the first, last, minimum, maximum and first non-numeric event."""
    if len(ev) == 0:
        return np.zeros(0, dtype=np.int64)
    width = max(1, (hi - lo) / intervals)
    bucket = np.clip(((ev.ticks - lo) / width).astype(np.int64), 0, intervals - 1)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(ev)] - 1
    picks = [starts, ends]
    numeric = ev.kind == K_NUMBER
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        seg = np.flatnonzero(numeric[a:b + 1]) + a
        if seg.size:
            vals = ev.number[seg]
            picks.append(np.array([seg[int(np.argmin(vals))], seg[int(np.argmax(vals))]]))
        other = np.flatnonzero(~numeric[a:b + 1])
        if other.size:
            picks.append(np.array([a + int(other[0])]))
    return np.unique(np.concatenate(picks)).astype(np.int64)


# ---- summaries -------------------------------------------------------------------------------------------

SUMMARY_TYPES = ("Total", "Average", "Minimum", "Maximum", "Range", "StdDev", "PopulationStdDev", "Count",
                 "PercentGood")
_SUMMARY_ALIASES = {"All": SUMMARY_TYPES, "AllForNonNumeric": ("Count", "PercentGood")}


@dataclass(frozen=True)
class SummaryValue:
    """One summary result: a number at a time, or no data (``value`` None)."""

    value: float | int | None
    ticks: int


def summarize(model: Model, p: PointSpec, a: int, b: int, asof: int, types: Sequence[str],
              time_weighted: bool, time_type: str) -> dict[str, SummaryValue]:
    """The requested summaries of ``p`` over [a, b] (see docs/emulator.md for the approximations)."""
    ev = collect(model, p, a, b, asof, None)
    good = ev.kind == K_NUMBER
    numeric = p.point_type in ("Float32", "Float64", "Int32")
    out: dict[str, SummaryValue] = {}
    count = int(good.sum()) if numeric else int(ev.good.sum())
    out["Count"] = SummaryValue(count, a)
    if time_weighted and numeric:
        t, v, w = _time_weighted_series(model, p, a, b, asof, ev)
        good_time = float(w.sum())
        out["PercentGood"] = SummaryValue(100.0 * good_time / max(1, b - a), a)
        stats = _weighted_stats(t, v, w, good_time, a, p.step) if good_time > 0 else None
    else:
        out["PercentGood"] = SummaryValue(100.0 * (count / len(ev)) if len(ev) else 0.0, a)
        stats = _event_stats(ev.ticks[good], ev.number[good]) if numeric and good.any() else None
    for name in SUMMARY_TYPES[:7]:
        out[name] = stats[name] if stats is not None else SummaryValue(None, a)
    return {k: _stamp(out[k], k, a, b, time_type) for k in types}


def _stamp(v: SummaryValue, kind: str, a: int, b: int, time_type: str) -> SummaryValue:
    """PI's timeType: Auto stamps Minimum/Maximum at the extreme and the rest at the interval start."""
    if time_type == "MostRecentTime":
        return SummaryValue(v.value, b)
    if time_type == "EarliestTime" or kind not in ("Minimum", "Maximum") or v.value is None:
        return SummaryValue(v.value, a)
    return v


def _time_weighted_series(model: Model, p: PointSpec, a: int, b: int, asof: int,
                          ev: Events) -> tuple[I64, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Times, values and good-time weights (seconds) of the piecewise function over [a, b]."""
    edges = values_at(model, p, np.array([a, b], dtype=np.int64), asof, linear=True)
    inside = (ev.ticks > a) & (ev.ticks < b)
    t = np.concatenate([[a], ev.ticks[inside], [b]]).astype(np.int64)
    v = np.concatenate([[edges.number[0]], ev.number[inside], [edges.number[1]]])
    ok = np.concatenate([[edges.kind[0] == K_NUMBER], ev.kind[inside] == K_NUMBER, [edges.kind[1] == K_NUMBER]])
    d = np.diff(t).astype(np.float64) / TICKS_PER_SECOND
    seg_ok = ok[:-1] & (ok[1:] | p.step)
    w = np.where(seg_ok, d, 0.0)
    return t, np.where(ok, v, np.nan), w


def _weighted_stats(t: I64, v: npt.NDArray[np.float64], w: npt.NDArray[np.float64], good_time: float,
                    a: int, step: bool) -> dict[str, SummaryValue]:
    """Integral, average and spread of the piecewise function: steps hold the left value, others are
    trapezoids (a segment towards a bad value holds the left value)."""
    left, right = v[:-1], v[1:]
    mid = left if step else np.where(np.isnan(right), left, (left + right) / 2)
    seg = np.nan_to_num(mid) * w
    integral = float(seg.sum())
    avg = integral / good_time
    var = float((w * (np.nan_to_num(mid) - avg) ** 2).sum()) / good_time
    ok = ~np.isnan(v)
    vmin, vmax = int(np.nanargmin(v)), int(np.nanargmax(v))
    return {
        "Total": SummaryValue(integral / 86400.0, a), "Average": SummaryValue(avg, a),
        "Minimum": SummaryValue(float(v[vmin]), int(t[vmin])), "Maximum": SummaryValue(float(v[vmax]), int(t[vmax])),
        "Range": SummaryValue(float(np.nanmax(v[ok]) - np.nanmin(v[ok])), a),
        "StdDev": SummaryValue(var ** 0.5, a), "PopulationStdDev": SummaryValue(var ** 0.5, a),
    }


def _event_stats(t: I64, v: npt.NDArray[np.float64]) -> dict[str, SummaryValue]:
    a = int(t[0])
    imin, imax = int(np.argmin(v)), int(np.argmax(v))
    return {
        "Total": SummaryValue(float(v.sum()), a), "Average": SummaryValue(float(v.mean()), a),
        "Minimum": SummaryValue(float(v[imin]), int(t[imin])), "Maximum": SummaryValue(float(v[imax]), int(t[imax])),
        "Range": SummaryValue(float(v.max() - v.min()), a),
        "StdDev": SummaryValue(float(v.std(ddof=1)) if v.size > 1 else None, a),
        "PopulationStdDev": SummaryValue(float(v.std(ddof=0)), a),
    }


# ---- the point catalog -----------------------------------------------------------------------------------

_catalog_lock = threading.Lock()
_catalogs: weakref.WeakKeyDictionary[Model, dict[int, list[str]]] = weakref.WeakKeyDictionary()


def point_names(model: Model, server: int) -> list[str]:
    """Every point name of a data server, built on first use (vectorised) and cached.

    The names follow :meth:`Model._make_point`; a sample is checked against the model and any difference falls
    back to asking the model point by point, so the catalog can never disagree with the points themselves.
    """
    with _catalog_lock:
        cached = _catalogs.setdefault(model, {})
        if server not in cached:
            names = _names_fast(model, server)
            n = len(names)
            sample = sorted({*range(min(n, 50)), *range(0, n, max(1, n // 50)), n - 1} - {-1})
            if any(model.point(server, i).name != names[i] for i in sample):
                names = [model.point(server, i).name for i in range(n)]
            cached[server] = names
        return cached[server]


def _names_fast(model: Model, server: int) -> list[str]:
    cfg = model.config
    n = cfg.points
    if n == 0:
        return []
    mask = (1 << 64) - 1
    seed_h = _mix(np.array([cfg.seed & mask], dtype=np.uint64))
    server_h = _mix(seed_h ^ np.uint64(server & mask))
    h = _mix(server_h ^ np.arange(n, dtype=np.uint64))
    ptype = np.searchsorted(np.array(_TYPE_CUTS), (h % np.uint64(100)).astype(np.int64), side="right")
    measures = _measure_table(model, server, ptype)
    out: list[str] = []
    for equipment in range((n + 4) // 5):
        prefix = (f"{SITES[(equipment // 400) % len(SITES)]}.A{(equipment // 40) % 10}."
                  f"{EQUIPMENT[(equipment // 4) % len(EQUIPMENT)]}{equipment:06d}.")
        base = equipment * 5
        out.extend(prefix + measures[int(ptype[i])][i - base] for i in range(base, min(n, base + 5)))
    return out


def _measure_table(model: Model, server: int, ptype: I64) -> list[list[str]]:
    """The measurement word (last name part) per point type and slot, read off one point of each kind."""
    table = [["?"] * 5 for _ in POINT_TYPES]
    slot = np.arange(ptype.shape[0]) % 5
    for t in range(len(POINT_TYPES)):
        for s in range(5):
            hits = np.flatnonzero((ptype == t) & (slot == s))
            if hits.size:
                table[t][s] = model.point(server, int(hits[0])).name.rsplit(".", 1)[-1]
    return table


# ---- points/search queries -------------------------------------------------------------------------------

_TERM_RE = re.compile(r"""([A-Za-z]+)\s*:\s*(=|<>)?\s*("[^"]*"|'[^']*'|\S+)|(\S+)""")
_QUERY_FIELDS: dict[str, Callable[[PointSpec], str]] = {
    "tag": lambda p: p.name, "name": lambda p: p.name, "descriptor": lambda p: p.descriptor,
    "pointtype": lambda p: p.point_type, "engunits": lambda p: p.units, "pointsource": lambda p: "EMU",
    "pointclass": lambda p: "classic", "digitalset": lambda p: p.digital_set or "",
}


def parse_point_query(query: str) -> list[tuple[str, bool, re.Pattern[str]]]:
    """``tag:=BRK* pointtype:=Float32`` -> [(field, negated, pattern)]; bare words filter the name."""
    terms: list[tuple[str, bool, re.Pattern[str]]] = []
    for m in _TERM_RE.finditer(query):
        field, op, value, bare = m.groups()
        if bare is not None:
            if bare.upper() in ("AND", "&&"):
                continue
            field, value = "tag", bare
        key = field.lower()
        if key not in _QUERY_FIELDS:
            raise pi_error(400, f"The query field '{field}' is not supported by the emulator.")
        terms.append((key, op == "<>", wildcard(value.strip("'\""))))
    return terms


def point_matches(p: PointSpec, terms: Sequence[tuple[str, bool, re.Pattern[str]]]) -> bool:
    return all((rx.fullmatch(_QUERY_FIELDS[key](p)) is not None) != neg for key, neg, rx in terms)


# =========================================================================================================
# Request handling
# =========================================================================================================

def _st(request: Request) -> EmulatorState:
    st: EmulatorState = request.app.state.emulator
    return st


def _base(request: Request) -> str:
    return f"{request.base_url}piwebapi/"


def _args(request: Request) -> QueryArgs:
    return QueryArgs(request.query_params.multi_items())


def _webid_type(q: QueryArgs) -> str | None:
    """The requested WebID form (None: not given). IDOnly/LocalIDOnly/DefaultIDOnly are refused."""
    if q.get("webIdType") in (None, ""):
        return None
    form = q.choice("webIdType", "Full", _WEBID_TYPES)
    if form not in ("Full", "PathOnly"):
        raise pi_error(400, f"webIdType '{form}' is not supported by the emulator (use Full or PathOnly).")
    return form


def _reply(body: Any, q: QueryArgs, status: int = 200) -> Response:
    return json_response(prune(body, parse_selected_fields(q.get("selectedFields"))), status)


def _iso(ticks: int) -> str:
    return format_ticks(ticks)


# ---- objects ---------------------------------------------------------------------------------------------

def _server_webid(st: EmulatorState, index: int, form: str | None) -> str:
    s = st.model.servers[index]
    return webids.path_only("DS", s.name) if form == "PathOnly" else s.webid


def _server_object(st: EmulatorState, index: int, base: str, form: str | None) -> dict[str, Any]:
    s = st.model.servers[index]
    wid = _server_webid(st, index, form)
    return {
        "WebId": wid, "Id": str(s.guid), "Name": s.name, "Path": s.path, "IsConnected": True,
        "ServerVersion": "3.4.445.688",
        "Links": {"Self": f"{base}dataservers/{wid}", "Points": f"{base}dataservers/{wid}/points",
                  "EnumerationSets": f"{base}dataservers/{wid}/enumerationsets"},
    }


def _point_webid(p: PointSpec, form: str | None) -> str:
    return p.path_webid if form == "PathOnly" else p.webid


def _point_object(st: EmulatorState, p: PointSpec, base: str, form: str | None) -> dict[str, Any]:
    wid = _point_webid(p, form)
    me = f"{base}points/{wid}"
    stream = f"{base}streams/{wid}"
    return {
        "WebId": wid, "Id": p.point_id, "Name": p.name, "Path": p.path, "Descriptor": p.descriptor,
        "PointClass": "classic", "PointType": p.point_type, "DigitalSetName": p.digital_set or "",
        "EngineeringUnits": p.units, "Span": p.span, "Zero": p.zero, "Step": p.step, "Future": False,
        "DisplayDigits": -5,
        "Links": {
            "Self": me, "DataServer": f"{base}dataservers/{_server_webid(st, p.server.index, form)}",
            "Attributes": f"{me}/attributes", "InterpolatedData": f"{stream}/interpolated",
            "RecordedData": f"{stream}/recorded", "PlotData": f"{stream}/plot", "SummaryData": f"{stream}/summary",
            "Value": f"{stream}/value", "EndValue": f"{stream}/end",
        },
    }


def _point_attributes(st: EmulatorState, p: PointSpec) -> list[tuple[str, Any]]:
    """A plausible set of PI point attributes, derived from the point (classic point class)."""
    created = _iso(st.model.config.origin_ticks)
    numeric = p.point_type in ("Float32", "Float64", "Int32")
    dev = round(p.span * 0.001, 6) if numeric else 0.0
    return [
        ("tag", p.name), ("descriptor", p.descriptor), ("exdesc", ""), ("engunits", p.units),
        ("pointtype", p.point_type), ("pointsource", "EMU"), ("ptclassname", "classic"),
        ("pointid", p.point_id), ("recno", p.point_id), ("digitalset", p.digital_set or ""),
        ("zero", p.zero), ("span", p.span), ("typicalvalue", round(p.base, 3)),
        ("displaydigits", -5), ("step", int(p.step)), ("future", 0), ("scan", 1), ("archiving", 1),
        ("shutdown", 1), ("compressing", 1), ("compdev", dev), ("compdevpercent", 0.1 if numeric else 0.0),
        ("compmin", 0), ("compmax", 28800), ("excdev", dev / 2), ("excdevpercent", 0.05 if numeric else 0.0),
        ("excmin", 0), ("excmax", 600), ("location1", 1), ("location2", 0), ("location3", 0),
        ("location4", int(p.interval_ticks // TICKS_PER_SECOND)), ("location5", 0),
        ("creationdate", created), ("creator", "piadmin"), ("changedate", created), ("changer", "piadmin"),
    ]


# ---- lookups ---------------------------------------------------------------------------------------------

def _server_index(st: EmulatorState, webid: str) -> int:
    try:
        parsed = webids.parse(webid)
    except ValueError:
        raise pi_error(404, f"Unknown or invalid WebID '{webid}'.") from None
    for s in st.model.servers:
        if parsed.marker != "DS" or parsed.path is None or parsed.path.upper() != s.name.upper():
            continue
        if parsed.kind_code == "F" and parsed.guid != s.guid:
            continue
        return s.index
    raise pi_error(404, f"The data server with WebID '{webid}' was not found.")


def _point(st: EmulatorState, webid: str) -> PointSpec:
    p = st.model.point_by_webid(webid)
    if p is None:
        raise pi_error(404, f"The point with WebID '{webid}' was not found or the WebID is not valid.")
    return _alive(st, p, webid)


def _alive(st: EmulatorState, p: PointSpec, ident: str) -> PointSpec:
    if (p.server.index, p.index) in st.deleted_points:
        raise pi_error(404, f"The point '{ident}' was not found (it has been deleted).")
    return p


def _point_by_path(st: EmulatorState, path: str) -> PointSpec:
    p = st.model.point_by_path(path)
    if p is None:
        raise pi_error(404, f"The point with path '{path}' was not found.")
    return _alive(st, p, path)


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
        p = _point(st, webid)
    except HTTPException as exc:
        return _failed(webid, _message(exc))
    wid = webid if form is None else _point_webid(p, form)
    return Stream(wid, p.name, p.path, p.units, f"{base}points/{wid}", p)


def _message(exc: HTTPException) -> str:
    return str(exc.detail[0]) if isinstance(exc.detail, list) and exc.detail else str(exc.detail)


def _stream(st: EmulatorState, webid: str, base: str, form: str | None) -> Stream:
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


def _element_streams(st: EmulatorState, webid: str, base: str, form: str | None) -> list[Stream]:
    """The attributes of an AF element or event frame as streams; 404 when the owner is unknown."""
    refs = _af_call(st, "element_attributes", webid)
    if refs is None:
        raise pi_error(404, f"The element or event frame with WebID '{webid}' was not found.")
    return [_attribute_stream(st, ref, ref.webid, base, form) for ref in refs]


def _adhoc_streams(st: EmulatorState, q: QueryArgs, base: str) -> list[Stream]:
    ids = q.getlist("webId")
    if not ids:
        raise pi_error(400, "At least one 'webId' parameter is required.")
    form = _webid_type(q)
    return [_resolve(st, w, base, form) for w in ids]


def _set_status(streams: Sequence[Stream]) -> int:
    """207 when some streams of a set could not be read (their items carry ``Exception``)."""
    return 207 if any(s.error for s in streams) else 200


# ---- stream values ---------------------------------------------------------------------------------------

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


def _window(st: EmulatorState, q: QueryArgs, start_default: str = "*-1d", end_default: str = "*") -> Window:
    now = st.clock.now_ticks()
    tz = q.timezone()
    start = q.time_ticks("startTime", start_default, now, tz)
    end = q.time_ticks("endTime", end_default, now, tz)
    return Window(start, end, now)


def _too_many(n: int, limit: int) -> Exception:
    return pi_error(400, f"The number of items requested ({n}) is greater than the maximum allowed ({limit}). "
                         "Reduce the time range or the number of streams, or ask for fewer values per stream.")


def _static_columns(s: Stream, lo: int, hi: int, origin: int) -> ValueColumns:
    assert s.static_json is not None
    return ValueColumns.single(origin, s.static_json) if lo <= origin <= hi else ValueColumns.empty()


def _static_at(s: Stream, times: I64, origin: int) -> ValueColumns:
    """A static attribute's value at each time (and No Data before the element existed)."""
    assert s.static_json is not None
    one = ValueColumns.single(origin, s.static_json)
    out = take_columns(one, np.zeros(times.shape[0], dtype=np.int64))
    out.ticks = times.astype(np.int64)
    set_system_state(out, np.flatnonzero(times < origin))
    return out


def recorded_columns(st: EmulatorState, s: Stream, w: Window, max_count: int, boundary: str) -> ValueColumns:
    """Recorded values of one stream in the window, in the window's direction, at most ``max_count``."""
    model, origin = st.model, st.model.config.origin_ticks
    if s.point is None:
        return _static_columns(s, w.lo, w.hi, origin)
    p = s.point
    ev = collect(model, p, w.lo, w.hi, w.now, max_count, newest_first=w.reversed)
    cols = ValueColumns.from_events(ev)
    if boundary == "Inside" or len(cols) >= max_count:
        return cols
    first, last = (w.hi, w.lo) if w.reversed else (w.lo, w.hi)
    if boundary == "Outside":
        before = event_before(model, p, w.lo, w.now, inclusive=False)
        after = event_after(model, p, w.hi, w.now, inclusive=False)
        lead, trail = (after, before) if w.reversed else (before, after)
        parts = [ValueColumns.from_events(lead), cols, ValueColumns.from_events(trail)]
    else:  # Interpolated: values at both ends unless an event sits exactly there
        parts = [cols]
        if not (len(ev) and int(ev.ticks[0]) == first):
            parts.insert(0, values_at(model, p, np.array([first]), w.now, linear=s.linear))
        if not (len(ev) and int(ev.ticks[-1]) == last) and last != first:
            parts.append(values_at(model, p, np.array([last]), w.now, linear=s.linear))
    return head(_cat_columns(parts), max_count)


def _cat_columns(parts: Sequence[ValueColumns]) -> ValueColumns:
    sizes = [len(c) for c in parts]
    offsets = np.cumsum([0, *sizes[:-1]])
    width = max([c.extra_matrix.shape[1] for c in parts] + [0])
    names = ("ticks", "kind", "number", "code", "good", "questionable", "substituted", "annotated")
    out = ValueColumns(*[np.concatenate([getattr(c, n) for c in parts]) for n in names])
    out.extra_rows = np.concatenate([c.extra_rows + o for c, o in zip(parts, offsets, strict=True)]
                                    + [np.zeros(0, np.int64)]).astype(np.int64)
    out.extra_matrix = np.concatenate([_widened(c.extra_matrix, width) for c in parts]
                                      + [np.zeros((0, width), np.uint8)])
    return out


def _widened(matrix: npt.NDArray[np.uint8], width: int) -> npt.NDArray[np.uint8]:
    """A NUL-padded string matrix padded to ``width`` columns."""
    if matrix.shape[0] == 0:
        return np.zeros((0, width), np.uint8)
    return np.pad(matrix, ((0, 0), (0, width - matrix.shape[1])))


def head(cols: ValueColumns, n: int) -> ValueColumns:
    """The first ``n`` rows."""
    return cols if len(cols) <= n else take_columns(cols, np.arange(n, dtype=np.int64))


def interpolated_columns(st: EmulatorState, s: Stream, times: I64) -> ValueColumns:
    if s.point is None:
        return _static_at(s, times, st.model.config.origin_ticks)
    return values_at(st.model, s.point, times, st.clock.now_ticks(), linear=s.linear)


def plot_columns(st: EmulatorState, s: Stream, w: Window, intervals: int) -> ValueColumns:
    origin = st.model.config.origin_ticks
    if s.point is None:
        return _static_columns(s, w.lo, w.hi, origin)
    p = s.point
    ev = collect(st.model, p, w.lo, w.hi, w.now, None)
    rows = plot_rows(ev, w.lo, w.hi, intervals)
    inner = take_columns(ValueColumns.from_events(ev), rows)
    edges = values_at(st.model, p, np.array([w.lo, w.hi]), w.now, linear=s.linear)
    parts = [take_columns(edges, np.array([0]))]
    parts.append(inner)
    if w.hi != w.lo:
        parts.append(take_columns(edges, np.array([1])))
    cols = _cat_columns(parts)
    if w.reversed:
        cols = take_columns(cols, np.arange(len(cols) - 1, -1, -1, dtype=np.int64))
    return cols


def single_value(st: EmulatorState, s: Stream, at: int | None, mode: str = "Interpolated") -> dict[str, Any]:
    """One value dict: at a time (interpolated, or by a recorded-at-time retrieval mode) or the end of stream."""
    now = st.clock.now_ticks()
    origin = st.model.config.origin_ticks
    t = now if at is None else at
    if s.point is None and t >= origin:
        assert s.static_json is not None
        return good_value_dict(t if at is not None and mode == "Interpolated" else origin, s.static_json, s.units)
    if s.point is None:
        cols = _static_at(s, np.array([t]), origin)
        if at is None or mode != "Interpolated":
            cols.ticks[:] = origin if t >= origin else t
    elif mode == "Interpolated":
        cols = values_at(st.model, s.point, np.array([t]), now, linear=s.linear)
    else:
        cols = _recorded_at(st.model, s.point, t, now, mode)
    return value_dicts(cols, s.fmt)[0]


def _recorded_at(model: Model, p: PointSpec, t: int, now: int, mode: str) -> ValueColumns:
    if mode in ("Auto", "AtOrBefore", "Before"):
        ev = event_before(model, p, t, now, inclusive=mode != "Before")
    elif mode in ("AtOrAfter", "After"):
        ev = event_after(model, p, t, now, inclusive=mode == "AtOrAfter")
    else:  # Exact
        ev = collect(model, p, t, t, now, 1)
    return ValueColumns.from_events(ev) if len(ev) else no_data(np.array([t], dtype=np.int64))


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


def _stream_header(s: Stream) -> dict[str, Any]:
    if s.error:
        return {"WebId": s.webid, "Name": "", "Path": "", "UnitsAbbreviation": "", "Links": {},
                "Exception": {"Errors": [s.error]}}
    return {"WebId": s.webid, "Name": s.name, "Path": s.path, "UnitsAbbreviation": s.units,
            "Links": {"Source": s.source}}


def streamset_values_body(sel: Selection, streams: Sequence[Stream], cols: Sequence[ValueColumns]) -> bytes:
    """``{Links, Items: [{WebId, Name, Path, UnitsAbbreviation, Links, Items}]}`` for many streams."""
    fields = _value_fields(sel.path("Items", "Items"))
    if fields is None:
        items = [_stream_header(s) if s.error else {**_stream_header(s), "Items": value_dicts(c, s.fmt)}
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
        head = orjson.dumps(prune(_stream_header(s), item_sel))
        parts.append(b"," if i else b"")
        if not with_values or s.error:
            parts.append(head)
            continue
        parts.append(head[:-1] + (b',"Items":' if len(head) > 2 else b'"Items":'))
        parts.extend(arrays[i])
        parts.append(b"}")
    parts.append(b"]")
    return parts


# =========================================================================================================
# Routes: system and discovery
# =========================================================================================================

@router.get("")
@router.get("/")
def root(request: Request) -> Response:
    base = _base(request)
    return _reply({"Links": {"Self": base.rstrip("/"), "AssetServers": f"{base}assetservers",
                             "DataServers": f"{base}dataservers", "System": f"{base}system"}}, _args(request))


@router.get("/system")
def system(request: Request) -> Response:
    base = _base(request)
    return _reply({"ProductTitle": "PI Web API", "ProductVersion": PRODUCT_VERSION,
                   "Links": {"Self": f"{base}system", "Status": f"{base}system/status"}}, _args(request))


@router.get("/system/status")
def system_status(request: Request) -> Response:
    st = _st(request)
    now = st.clock.now_ticks()
    uptime = max(0.0, (now - to_ticks(st.settings.now)) / (60 * TICKS_PER_SECOND))
    return _reply({"UpTimeInMinutes": round(uptime, 3), "State": "Running", "CacheInstances": 0,
                   "ServerTime": _iso(now)}, _args(request))


@router.get("/dataservers")
def dataservers(request: Request) -> Response:
    st, q, base = _st(request), _args(request), _base(request)
    form = _webid_type(q)
    path = q.get("path")
    if path:
        name = path.lstrip("\\").split("\\")[0]
        srv = st.model.server_by_name(name)
        if srv is None or "\\" in path.lstrip("\\"):
            raise pi_error(404, f"The data server with path '{path}' was not found.")
        return _reply(_server_object(st, srv.index, base, form), q)
    items = [_server_object(st, s.index, base, form) for s in st.model.servers]
    return _reply({"Links": {}, "Items": items}, q)


@router.get("/dataservers/{web_id}")
def dataserver(web_id: str, request: Request) -> Response:
    st, q = _st(request), _args(request)
    return _reply(_server_object(st, _server_index(st, web_id), _base(request), _webid_type(q)), q)


@router.get("/dataservers/{web_id}/points")
def dataserver_points(web_id: str, request: Request) -> Response:
    st, q, base = _st(request), _args(request), _base(request)
    server = _server_index(st, web_id)
    form = _webid_type(q)
    start = q.integer("startIndex", 0, minimum=0)
    count = q.integer("maxCount", st.settings.max_count_default, minimum=0)
    name_filter = q.get("nameFilter")
    rx = wildcard(name_filter)
    n = st.model.config.points
    if is_wildcard_all(name_filter):
        indices: Sequence[int] = range(min(n, start), min(n, start + count))
    else:
        names = point_names(st.model, server)
        indices = [i for i, name in enumerate(names) if rx.fullmatch(name)][start:start + count]
    items = [_point_object(st, st.model.point(server, i), base, form) for i in indices
             if (server, i) not in st.deleted_points]
    return _reply({"Links": {}, "Items": items}, q)


@router.get("/points/search")
def points_search(request: Request) -> Response:
    st, q, base = _st(request), _args(request), _base(request)
    form = _webid_type(q)
    servers = [_server_index(st, w) for w in q.getlist("dataServerWebId")] or [s.index for s in st.model.servers]
    terms = parse_point_query(q.get("query") or "")
    start = q.integer("startIndex", 0, minimum=0)
    count = q.integer("maxCount", st.settings.max_count_default, minimum=0, maximum=1000)
    name_rx = [rx for key, neg, rx in terms if key in ("tag", "name") and not neg]
    found: list[PointSpec] = []
    for server in servers:
        names = point_names(st.model, server)
        for i, name in enumerate(names):
            if (server, i) in st.deleted_points or not all(rx.fullmatch(name) for rx in name_rx):
                continue
            p = st.model.point(server, i)
            if point_matches(p, terms):
                found.append(p)
                if len(found) >= start + count:
                    break
    items = [_point_object(st, p, base, form) for p in found[start:start + count]]
    return _reply({"Links": {}, "Items": items}, q)


@router.get("/points/multiple")
def points_multiple(request: Request) -> Response:
    st, q, base = _st(request), _args(request), _base(request)
    form = _webid_type(q)
    asks = [(w, "WebId") for w in q.getlist("webId")] + [(p, "Path") for p in q.getlist("path")]
    if not asks:
        raise pi_error(400, "At least one 'webId' or 'path' parameter is required.")
    items: list[dict[str, Any]] = []
    failed = False
    for ident, kind in asks:
        try:
            p = _point(st, ident) if kind == "WebId" else _point_by_path(st, ident)
        except HTTPException as exc:
            failed = True
            items.append({"Identifier": ident, "IdentifierType": kind, "Object": None,
                          "Exception": {"Errors": [_message(exc)]}})
            continue
        items.append({"Identifier": ident, "IdentifierType": kind, "Object": _point_object(st, p, base, form),
                      "Exception": None})
    return _reply({"Links": {}, "Items": items}, q, 207 if failed else 200)


@router.get("/points")
def point_by_path(request: Request) -> Response:
    st, q = _st(request), _args(request)
    path = q.get("path")
    if not path:
        raise pi_error(400, "The 'path' parameter is required.")
    return _reply(_point_object(st, _point_by_path(st, path), _base(request), _webid_type(q)), q)


@router.get("/points/{web_id}")
def point(web_id: str, request: Request) -> Response:
    st, q = _st(request), _args(request)
    return _reply(_point_object(st, _point(st, web_id), _base(request), _webid_type(q)), q)


@router.get("/points/{web_id}/attributes")
def point_attributes(web_id: str, request: Request) -> Response:
    st, q, base = _st(request), _args(request), _base(request)
    p = _point(st, web_id)
    names = {n.lower() for n in q.getlist("name")}
    rx = wildcard(q.get("nameFilter"))
    me = f"{base}points/{web_id}"
    items = [{"Name": n, "Value": v, "Links": {"Self": f"{me}/attributes/{n}", "Point": me}}
             for n, v in _point_attributes(st, p) if (not names or n in names) and rx.fullmatch(n)]
    return _reply({"Links": {}, "Items": items}, q)


@router.get("/points/{web_id}/attributes/{name}")
def point_attribute(web_id: str, name: str, request: Request) -> Response:
    st, q, base = _st(request), _args(request), _base(request)
    p = _point(st, web_id)
    for n, v in _point_attributes(st, p):
        if n == name.lower():
            me = f"{base}points/{web_id}"
            return _reply({"Name": n, "Value": v, "Links": {"Self": f"{me}/attributes/{n}", "Point": me}}, q)
    raise pi_error(404, f"The point attribute '{name}' was not found.")


# =========================================================================================================
# Routes: streams
# =========================================================================================================

def _no_filter(q: QueryArgs) -> None:
    if (q.get("filterExpression") or "").strip():
        raise pi_error(400, "filterExpression is not supported by the emulator.")


def _recorded_many(st: EmulatorState, q: QueryArgs, streams: Sequence[Stream]) -> list[ValueColumns]:
    _no_filter(q)
    w = _window(st, q)
    boundary = q.choice("boundaryType", "Inside", ("Inside", "Outside", "Interpolated"))
    max_count = q.integer("maxCount", st.settings.max_count_default, minimum=1)
    limit = st.settings.max_returned_items
    prefetched = _prefetch(st, streams, w, max_count) if boundary == "Inside" else {}
    out: list[ValueColumns] = []
    total = 0
    for s in streams:
        if s.error:
            out.append(ValueColumns.empty())
            continue
        cap = min(max_count, limit - total + 1)
        ev = prefetched.get(id(s))
        if ev is not None:
            cols = ValueColumns.from_events(ev.take(slice(0, cap)))
        else:
            # Never compute more than one item past the limit: a huge window fails fast instead of slowly.
            cols = recorded_columns(st, s, w, cap, boundary)
        total += len(cols)
        if total > limit:
            raise _too_many(total, limit)
        out.append(cols)
    st.stats.add(values=total)
    return out


_PREFETCH_SLOTS = 2_000_000  # slots of all streams together that one batched model call may compute


def _prefetch(st: EmulatorState, streams: Sequence[Stream], w: Window, max_count: int) -> dict[int, Events]:
    """Recorded events of all point streams of a streamset call in one batched model call.

    Only when the whole window of every stream is small enough to compute outright (then it equals what
    :func:`collect` returns, in the window's direction); otherwise nothing, and streams are read one by one.
    """
    model = st.model
    lo, hi = max(w.lo, model.config.origin_ticks), min(w.hi, w.now)
    points = [s.point for s in streams if not s.error and s.point is not None]
    if not points or hi < lo:
        return {}
    slots = sum((hi - lo) // p.interval_ticks + 2 for p in points)
    if slots > _PREFETCH_SLOTS or slots > 4 * max_count * len(points) + 64 * len(points):
        return {}
    events = iter(model.events_many(points, lo, hi, w.now))
    out: dict[int, Events] = {}
    for s in streams:
        if not s.error and s.point is not None:
            ev = next(events)
            out[id(s)] = ev.take(slice(None, None, -1)) if w.reversed else ev
    return out


def _interval_times(st: EmulatorState, q: QueryArgs, n_streams: int) -> I64:
    _no_filter(q)
    w = _window(st, q)
    step = q.interval_ticks("interval", "1h")
    count = abs(w.end - w.start) // step + 1
    if count * n_streams > st.settings.max_returned_items:
        raise _too_many(count * n_streams, st.settings.max_returned_items)
    return interval_times(w.start, w.end, step)


def _plot_args(st: EmulatorState, q: QueryArgs) -> tuple[Window, int]:
    return _window(st, q), q.integer("intervals", 24, minimum=1, maximum=max(1, st.settings.max_returned_items // 5))


def _check_total(st: EmulatorState, cols: Sequence[ValueColumns]) -> None:
    total = sum(len(c) for c in cols)
    if total > st.settings.max_returned_items:
        raise _too_many(total, st.settings.max_returned_items)
    st.stats.add(values=total)


@router.get("/streams/{web_id}/recorded")
def stream_recorded(web_id: str, request: Request) -> Response:
    st, q = _st(request), _args(request)
    s = _stream(st, web_id, _base(request), _webid_type(q))
    cols = _recorded_many(st, q, [s])[0]
    return raw_json(stream_values_body(parse_selected_fields(q.get("selectedFields")), cols, s.fmt))


@router.get("/streams/{web_id}/interpolated")
def stream_interpolated(web_id: str, request: Request) -> Response:
    st, q = _st(request), _args(request)
    s = _stream(st, web_id, _base(request), _webid_type(q))
    cols = interpolated_columns(st, s, _interval_times(st, q, 1))
    _check_total(st, [cols])
    return raw_json(stream_values_body(parse_selected_fields(q.get("selectedFields")), cols, s.fmt))


@router.get("/streams/{web_id}/plot")
def stream_plot(web_id: str, request: Request) -> Response:
    st, q = _st(request), _args(request)
    s = _stream(st, web_id, _base(request), _webid_type(q))
    w, intervals = _plot_args(st, q)
    cols = plot_columns(st, s, w, intervals)
    _check_total(st, [cols])
    return raw_json(stream_values_body(parse_selected_fields(q.get("selectedFields")), cols, s.fmt))


def _at(st: EmulatorState, q: QueryArgs, name: str = "time") -> int | None:
    raw = q.get(name)
    if raw is None or raw.strip() == "":
        return None
    return parse_time_ticks(name, raw, st.clock.now_ticks(), q.timezone())


@router.get("/streams/{web_id}/value")
def stream_value(web_id: str, request: Request) -> Response:
    st, q = _st(request), _args(request)
    s = _stream(st, web_id, _base(request), _webid_type(q))
    at = _at(st, q)
    st.stats.add(values=1)
    return _reply(single_value(st, s, at, "Interpolated" if at is not None else "AtOrBefore"), q)


@router.get("/streams/{web_id}/end")
def stream_end(web_id: str, request: Request) -> Response:
    st, q = _st(request), _args(request)
    s = _stream(st, web_id, _base(request), _webid_type(q))
    st.stats.add(values=1)
    return _reply(single_value(st, s, None, "AtOrBefore"), q)


_RETRIEVAL_MODES = ("Auto", "AtOrBefore", "Before", "AtOrAfter", "After", "Exact")


@router.get("/streams/{web_id}/recordedattime")
def stream_recorded_at_time(web_id: str, request: Request) -> Response:
    st, q = _st(request), _args(request)
    s = _stream(st, web_id, _base(request), _webid_type(q))
    at = _at(st, q)
    if at is None:
        raise pi_error(400, "The 'time' parameter is required.")
    mode = q.choice("retrievalMode", "Auto", _RETRIEVAL_MODES)
    st.stats.add(values=1)
    return _reply(single_value(st, s, at, mode), q)


def _summary_args(st: EmulatorState, q: QueryArgs) -> tuple[list[str], list[tuple[int, int]], bool, str]:
    _no_filter(q)
    w = _window(st, q)
    raw = q.choices("summaryType", ["Total"], [*SUMMARY_TYPES, *_SUMMARY_ALIASES])
    types = list(dict.fromkeys(t for r in raw for t in _SUMMARY_ALIASES.get(r, (r,))))
    basis = q.choice("calculationBasis", "TimeWeighted", ("TimeWeighted", "EventWeighted"))
    time_type = q.choice("timeType", "Auto", ("Auto", "EarliestTime", "MostRecentTime"))
    lo, hi = w.lo, w.hi
    duration = q.get("summaryDuration")
    step = q.interval_ticks("summaryDuration", "1h") if duration else max(1, hi - lo)
    n = max(1, -(-(hi - lo) // step))
    if n * len(types) > st.settings.max_returned_items:
        raise _too_many(n * len(types), st.settings.max_returned_items)
    bounds = [(lo + k * step, min(hi, lo + (k + 1) * step)) for k in range(n)]
    return types, bounds, basis == "TimeWeighted", time_type


def summary_items(st: EmulatorState, s: Stream, types: Sequence[str], bounds: Sequence[tuple[int, int]],
                  time_weighted: bool, time_type: str) -> list[dict[str, Any]]:
    now = st.clock.now_ticks()
    per_interval: list[dict[str, SummaryValue]] = []
    for a, b in bounds:
        if s.point is None:
            per_interval.append({t: SummaryValue(None, a) for t in types})
        else:
            per_interval.append(summarize(st.model, s.point, a, b, now, types, time_weighted, time_type))
    items: list[dict[str, Any]] = []
    for t in types:
        for res in per_interval:
            items.append({"Type": t, "Value": _summary_value(res[t], s.units, t)})
    st.stats.add(values=len(items))
    return items


def _summary_value(v: SummaryValue, units: str, kind: str) -> dict[str, Any]:
    flags = {"Questionable": False, "Substituted": False, "Annotated": False}
    if v.value is None:
        return {"Timestamp": _iso(v.ticks), "Value": {"Name": "No Data", "Value": NO_DATA, "IsSystem": True},
                "UnitsAbbreviation": units, "Good": False, **flags}
    unit = "%" if kind == "PercentGood" else "" if kind == "Count" else units
    return {"Timestamp": _iso(v.ticks), "Value": v.value, "UnitsAbbreviation": unit, "Good": True, **flags}


@router.get("/streams/{web_id}/summary")
def stream_summary(web_id: str, request: Request) -> Response:
    st, q = _st(request), _args(request)
    s = _stream(st, web_id, _base(request), _webid_type(q))
    types, bounds, tw, time_type = _summary_args(st, q)
    return _reply({"Links": {}, "Items": summary_items(st, s, types, bounds, tw, time_type)}, q)


# =========================================================================================================
# Routes: stream sets (ad hoc lists of streams, or an AF element's attributes)
# =========================================================================================================

def _set_recorded(request: Request, streams: list[Stream]) -> Response:
    st, q = _st(request), _args(request)
    cols = _recorded_many(st, q, streams)
    body = streamset_values_body(parse_selected_fields(q.get("selectedFields")), streams, cols)
    return raw_json(body, _set_status(streams))


def _each(streams: Sequence[Stream], fn: Callable[[Stream], ValueColumns]) -> list[ValueColumns]:
    return [ValueColumns.empty() if s.error else fn(s) for s in streams]


def _set_interpolated(request: Request, streams: list[Stream]) -> Response:
    st, q = _st(request), _args(request)
    times = _interval_times(st, q, len(streams))
    cols = _each(streams, lambda s: interpolated_columns(st, s, times))
    _check_total(st, cols)
    body = streamset_values_body(parse_selected_fields(q.get("selectedFields")), streams, cols)
    return raw_json(body, _set_status(streams))


def _set_plot(request: Request, streams: list[Stream]) -> Response:
    st, q = _st(request), _args(request)
    w, intervals = _plot_args(st, q)
    cols = _each(streams, lambda s: plot_columns(st, s, w, intervals))
    _check_total(st, cols)
    body = streamset_values_body(parse_selected_fields(q.get("selectedFields")), streams, cols)
    return raw_json(body, _set_status(streams))


def _set_single(request: Request, streams: list[Stream], end: bool) -> Response:
    st, q = _st(request), _args(request)
    at = None if end else _at(st, q)
    mode = "Interpolated" if at is not None else "AtOrBefore"
    items = [_stream_header(s) if s.error else {**_stream_header(s), "Value": single_value(st, s, at, mode)}
             for s in streams]
    st.stats.add(values=sum(1 for s in streams if not s.error))
    return _reply({"Links": {}, "Items": items}, q, _set_status(streams))


def _set_recorded_at_time(request: Request, streams: list[Stream]) -> Response:
    st, q = _st(request), _args(request)
    at = _at(st, q)
    if at is None:
        raise pi_error(400, "The 'time' parameter is required.")
    mode = q.choice("retrievalMode", "Auto", _RETRIEVAL_MODES)
    items = [_stream_header(s) if s.error else {**_stream_header(s), "Value": single_value(st, s, at, mode)}
             for s in streams]
    st.stats.add(values=sum(1 for s in streams if not s.error))
    return _reply({"Links": {}, "Items": items}, q, _set_status(streams))


def _set_summary(request: Request, streams: list[Stream]) -> Response:
    st, q = _st(request), _args(request)
    types, bounds, tw, time_type = _summary_args(st, q)
    if len(bounds) * len(types) * len(streams) > st.settings.max_returned_items:
        raise _too_many(len(bounds) * len(types) * len(streams), st.settings.max_returned_items)
    items = [_stream_header(s) if s.error else
             {**_stream_header(s), "Items": summary_items(st, s, types, bounds, tw, time_type)} for s in streams]
    return _reply({"Links": {}, "Items": items}, q, _set_status(streams))


_SET_ACTIONS: dict[str, Callable[[Request, list[Stream]], Response]] = {
    "recorded": _set_recorded, "interpolated": _set_interpolated, "plot": _set_plot,
    "value": lambda r, s: _set_single(r, s, end=False), "end": lambda r, s: _set_single(r, s, end=True),
    "recordedattime": _set_recorded_at_time, "summary": _set_summary,
}


def _adhoc(action: str) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        return _SET_ACTIONS[action](request, _adhoc_streams(_st(request), _args(request), _base(request)))

    handler.__name__ = f"streamset_{action}_adhoc"
    return handler


def _of_element(action: str) -> Callable[[str, Request], Response]:
    def handler(web_id: str, request: Request) -> Response:
        q = _args(request)
        streams = _element_streams(_st(request), web_id, _base(request), _webid_type(q))
        return _SET_ACTIONS[action](request, streams)

    handler.__name__ = f"streamset_{action}"
    return handler


for _action in _SET_ACTIONS:
    router.add_api_route(f"/streamsets/{_action}", _adhoc(_action), methods=["GET"])
    router.add_api_route(f"/streamsets/{{web_id}}/{_action}", _of_element(_action), methods=["GET"])


# =========================================================================================================
# Admin routes (/_emulator): counters, the virtual clock, deleting points
# =========================================================================================================

@admin_router.get("/_emulator/stats")
def admin_stats(request: Request) -> Response:
    st = _st(request)
    now = st.clock.now_ticks()
    return json_response({"requests": st.stats.requests, "values": st.stats.values, "faults": st.stats.faults,
                          "now": _iso(now), "frozen": st.clock.frozen, "points": st.model.config.points,
                          "deleted_points": len(st.deleted_points)})


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError:
        raise pi_error(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise pi_error(400, "The request body must be a JSON object.")
    return body


@admin_router.post("/_emulator/clock")
async def admin_clock(request: Request) -> Response:
    """Move the virtual clock: ``{"set": iso}``, ``{"advance_s": n}``, ``{"frozen": bool}`` (combinable)."""
    st = _st(request)
    body = await _json_body(request)
    unknown = set(body) - {"set", "advance_s", "frozen"}
    if unknown or not body:
        raise pi_error(400, "Give one or more of 'set' (ISO time), 'advance_s' (seconds), 'frozen' (bool).")
    try:
        if "frozen" in body:
            st.clock.freeze(bool(body["frozen"]))
        if "set" in body:
            st.clock.set(from_ticks(parse_iso_ticks(str(body["set"]))))
        if "advance_s" in body:
            st.clock.advance(timedelta(seconds=float(body["advance_s"])))
    except (ValueError, TypeError, OverflowError) as exc:
        raise pi_error(400, f"Bad clock request: {exc}") from None
    return json_response({"now": _iso(st.clock.now_ticks()), "frozen": st.clock.frozen})


@admin_router.post("/_emulator/points/delete")
async def admin_delete_points(request: Request) -> Response:
    """Delete points at run time (they answer 404 from then on): ``{"webIds": [...]}``."""
    st = _st(request)
    body = await _json_body(request)
    ids = body.get("webIds")
    if not isinstance(ids, list) or not all(isinstance(w, str) for w in ids):
        raise pi_error(400, "Give 'webIds': a list of point WebIDs.")
    deleted, unknown = [], []
    for w in ids:
        p = st.model.point_by_webid(w)
        if p is None:
            unknown.append(w)
        else:
            st.deleted_points.add((p.server.index, p.index))
            deleted.append(p.webid)
    return json_response({"deleted": deleted, "unknown": unknown})

