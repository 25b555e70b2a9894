"""Value arithmetic over the deterministic model: the numbers behind the stream and stream set answers.

Everything is computed on request from :class:`~piflow.emulator.model.Model` as of a given time (nothing is
stored, so a million points cost nothing until they are read): events over windows, interpolation, plot
rows, summaries, and the value columns of one :class:`~piflow.emulator.streams.Stream` (a point, or a
static AF attribute). Kept apart from the routes so the arithmetic can be read and tested on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from piflow.emulator.model import K_NUMBER, K_SYSTEM, Events, Model, PointSpec, empty_events
from piflow.emulator.responses import pi_error
from piflow.emulator.serialize import ValueColumns, good_value_dict, value_dicts
from piflow.emulator.state import EmulatorState
from piflow.emulator.streams import Stream, Window
from piflow.pitime import TICKS_PER_SECOND

NO_DATA = 248  # the system state PI answers when there is no value to give
_SCAN_SLOTS = 4096  # minimum slots per model call when walking a long window in chunks
_WHOLE_SLOTS = 1 << 18  # slots per model call when the whole window is needed
_MAX_WHOLE_SLOTS = 20_000_000  # beyond this a whole-window computation (plot, summary) is refused
_NEIGHBOURHOOD = 32  # slots around an interpolation time fetched in one go
I64 = npt.NDArray[np.int64]


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
SUMMARY_ALIASES = {"All": SUMMARY_TYPES, "AllForNonNumeric": ("Count", "PercentGood")}


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


# ---- stream values ---------------------------------------------------------------------------------------

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
        return good_value_dict(t if at is not None and mode == "Interpolated" else origin, orjson.loads(s.static_json),
                               s.units)
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
