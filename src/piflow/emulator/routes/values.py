"""Value routes: ``streams/{webId}/...`` and ``streamsets/...`` (ad hoc lists of streams, or an AF element's).

Handlers only parse parameters, enforce PI's limits (``maxCount``, the most items one answer may hold) and
shape answers: the values come from :mod:`.values`, and recorded, interpolated and plot answers are encoded
by the fast columnar encoders of :mod:`.streams`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from piflow.emulator.model import Events
from piflow.emulator.plumbing import api_base, iso, query_args, reply, request_state, webid_type
from piflow.emulator.profile import recorded_max_count
from piflow.emulator.query import QueryArgs, parse_selected_fields, parse_time_ticks
from piflow.emulator.responses import pi_error, raw_json
from piflow.emulator.serialize import ValueColumns
from piflow.emulator.state import EmulatorState
from piflow.emulator.streams import (
    Stream,
    Window,
    adhoc_streams,
    element_streams,
    get_stream,
    query_window,
    stream_header,
    stream_values_body,
    streamset_status,
    streamset_values_body,
)
from piflow.emulator.values import (
    I64,
    NO_DATA,
    SUMMARY_ALIASES,
    SUMMARY_TYPES,
    SummaryValue,
    interpolated_columns,
    interval_times,
    plot_columns,
    recorded_columns,
    single_value,
    summarize,
)

router = APIRouter()


def _too_many(n: int, limit: int) -> Exception:
    return pi_error(400, f"The number of items requested ({n}) is greater than the maximum allowed ({limit}). "
                         "Reduce the time range or the number of streams, or ask for fewer values per stream.")


# ---- streams ---------------------------------------------------------------------------------------------

def _no_filter(q: QueryArgs) -> None:
    if (q.get("filterExpression") or "").strip():
        raise pi_error(400, "filterExpression is not supported by the emulator.")


def _recorded_many(st: EmulatorState, q: QueryArgs, streams: Sequence[Stream]) -> list[ValueColumns]:
    _no_filter(q)
    w = query_window(st, q)
    boundary = q.choice("boundaryType", "Inside", ("Inside", "Outside", "Interpolated"))
    max_count = recorded_max_count(st, q.integer("maxCount", st.settings.max_count_default, minimum=1))
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
    w = query_window(st, q)
    step = q.interval_ticks("interval", "1h")
    count = abs(w.end - w.start) // step + 1
    if count * n_streams > st.settings.max_returned_items:
        raise _too_many(count * n_streams, st.settings.max_returned_items)
    return interval_times(w.start, w.end, step)


def _plot_args(st: EmulatorState, q: QueryArgs) -> tuple[Window, int]:
    return query_window(st, q), q.integer("intervals", 24, minimum=1,
                                          maximum=max(1, st.settings.max_returned_items // 5))


def _check_total(st: EmulatorState, cols: Sequence[ValueColumns]) -> None:
    total = sum(len(c) for c in cols)
    if total > st.settings.max_returned_items:
        raise _too_many(total, st.settings.max_returned_items)
    st.stats.add(values=total)


@router.get("/streams/{web_id}/recorded")
def stream_recorded(web_id: str, request: Request) -> Response:
    st, q = request_state(request), query_args(request)
    s = get_stream(st, web_id, api_base(request), webid_type(q))
    cols = _recorded_many(st, q, [s])[0]
    return raw_json(stream_values_body(parse_selected_fields(q.get("selectedFields")), cols, s.fmt))


@router.get("/streams/{web_id}/interpolated")
def stream_interpolated(web_id: str, request: Request) -> Response:
    st, q = request_state(request), query_args(request)
    s = get_stream(st, web_id, api_base(request), webid_type(q))
    cols = interpolated_columns(st, s, _interval_times(st, q, 1))
    _check_total(st, [cols])
    return raw_json(stream_values_body(parse_selected_fields(q.get("selectedFields")), cols, s.fmt))


@router.get("/streams/{web_id}/plot")
def stream_plot(web_id: str, request: Request) -> Response:
    st, q = request_state(request), query_args(request)
    s = get_stream(st, web_id, api_base(request), webid_type(q))
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
    st, q = request_state(request), query_args(request)
    s = get_stream(st, web_id, api_base(request), webid_type(q))
    at = _at(st, q)
    st.stats.add(values=1)
    return reply(single_value(st, s, at, "Interpolated" if at is not None else "AtOrBefore"), q)


@router.get("/streams/{web_id}/end")
def stream_end(web_id: str, request: Request) -> Response:
    st, q = request_state(request), query_args(request)
    s = get_stream(st, web_id, api_base(request), webid_type(q))
    st.stats.add(values=1)
    return reply(single_value(st, s, None, "AtOrBefore"), q)


_RETRIEVAL_MODES = ("Auto", "AtOrBefore", "Before", "AtOrAfter", "After", "Exact")


@router.get("/streams/{web_id}/recordedattime")
def stream_recorded_at_time(web_id: str, request: Request) -> Response:
    st, q = request_state(request), query_args(request)
    s = get_stream(st, web_id, api_base(request), webid_type(q))
    at = _at(st, q)
    if at is None:
        raise pi_error(400, "The 'time' parameter is required.")
    mode = q.choice("retrievalMode", "Auto", _RETRIEVAL_MODES)
    st.stats.add(values=1)
    return reply(single_value(st, s, at, mode), q)


def _summary_args(st: EmulatorState, q: QueryArgs) -> tuple[list[str], list[tuple[int, int]], bool, str]:
    _no_filter(q)
    w = query_window(st, q)
    raw = q.choices("summaryType", ["Total"], [*SUMMARY_TYPES, *SUMMARY_ALIASES])
    types = list(dict.fromkeys(t for r in raw for t in SUMMARY_ALIASES.get(r, (r,))))
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
        return {"Timestamp": iso(v.ticks), "Value": {"Name": "No Data", "Value": NO_DATA, "IsSystem": True},
                "UnitsAbbreviation": units, "Good": False, **flags}
    unit = "%" if kind == "PercentGood" else "" if kind == "Count" else units
    return {"Timestamp": iso(v.ticks), "Value": v.value, "UnitsAbbreviation": unit, "Good": True, **flags}


@router.get("/streams/{web_id}/summary")
def stream_summary(web_id: str, request: Request) -> Response:
    st, q = request_state(request), query_args(request)
    s = get_stream(st, web_id, api_base(request), webid_type(q))
    types, bounds, tw, time_type = _summary_args(st, q)
    return reply({"Links": {}, "Items": summary_items(st, s, types, bounds, tw, time_type)}, q)


# ---- stream sets -----------------------------------------------------------------------------------------

def _set_recorded(request: Request, streams: list[Stream]) -> Response:
    st, q = request_state(request), query_args(request)
    cols = _recorded_many(st, q, streams)
    body = streamset_values_body(parse_selected_fields(q.get("selectedFields")), streams, cols)
    return raw_json(body, streamset_status(streams))


def _each(streams: Sequence[Stream], fn: Callable[[Stream], ValueColumns]) -> list[ValueColumns]:
    return [ValueColumns.empty() if s.error else fn(s) for s in streams]


def _set_interpolated(request: Request, streams: list[Stream]) -> Response:
    st, q = request_state(request), query_args(request)
    times = _interval_times(st, q, len(streams))
    cols = _each(streams, lambda s: interpolated_columns(st, s, times))
    _check_total(st, cols)
    body = streamset_values_body(parse_selected_fields(q.get("selectedFields")), streams, cols)
    return raw_json(body, streamset_status(streams))


def _set_plot(request: Request, streams: list[Stream]) -> Response:
    st, q = request_state(request), query_args(request)
    w, intervals = _plot_args(st, q)
    cols = _each(streams, lambda s: plot_columns(st, s, w, intervals))
    _check_total(st, cols)
    body = streamset_values_body(parse_selected_fields(q.get("selectedFields")), streams, cols)
    return raw_json(body, streamset_status(streams))


def _set_single(request: Request, streams: list[Stream], end: bool) -> Response:
    st, q = request_state(request), query_args(request)
    at = None if end else _at(st, q)
    return _one_value_each(st, q, streams, at, "Interpolated" if at is not None else "AtOrBefore")


def _set_recorded_at_time(request: Request, streams: list[Stream]) -> Response:
    st, q = request_state(request), query_args(request)
    at = _at(st, q)
    if at is None:
        raise pi_error(400, "The 'time' parameter is required.")
    return _one_value_each(st, q, streams, at, q.choice("retrievalMode", "Auto", _RETRIEVAL_MODES))


def _one_value_each(st: EmulatorState, q: QueryArgs, streams: list[Stream], at: int | None, mode: str) -> Response:
    """A streamset answer of one value per stream (``single_value`` at ``at`` by ``mode``); failed streams keep
    their header and error."""
    items = [stream_header(s) if s.error else {**stream_header(s), "Value": single_value(st, s, at, mode)}
             for s in streams]
    st.stats.add(values=sum(1 for s in streams if not s.error))
    return reply({"Links": {}, "Items": items}, q, streamset_status(streams))


def _set_summary(request: Request, streams: list[Stream]) -> Response:
    st, q = request_state(request), query_args(request)
    types, bounds, tw, time_type = _summary_args(st, q)
    if len(bounds) * len(types) * len(streams) > st.settings.max_returned_items:
        raise _too_many(len(bounds) * len(types) * len(streams), st.settings.max_returned_items)
    items = [stream_header(s) if s.error else
             {**stream_header(s), "Items": summary_items(st, s, types, bounds, tw, time_type)} for s in streams]
    return reply({"Links": {}, "Items": items}, q, streamset_status(streams))


_SET_ACTIONS: dict[str, Callable[[Request, list[Stream]], Response]] = {
    "recorded": _set_recorded, "interpolated": _set_interpolated, "plot": _set_plot,
    "value": lambda r, s: _set_single(r, s, end=False), "end": lambda r, s: _set_single(r, s, end=True),
    "recordedattime": _set_recorded_at_time, "summary": _set_summary,
}


def _adhoc(action: str) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        streams = adhoc_streams(request_state(request), query_args(request), api_base(request))
        return _SET_ACTIONS[action](request, streams)

    handler.__name__ = f"streamset_{action}_adhoc"
    return handler


def _of_element(action: str) -> Callable[[str, Request], Response]:
    def handler(web_id: str, request: Request) -> Response:
        q = query_args(request)
        streams = element_streams(request_state(request), web_id, api_base(request), webid_type(q))
        return _SET_ACTIONS[action](request, streams)

    handler.__name__ = f"streamset_{action}"
    return handler


for _action in _SET_ACTIONS:
    router.add_api_route(f"/streamsets/{_action}", _adhoc(_action), methods=["GET"])
    router.add_api_route(f"/streamsets/{{web_id}}/{_action}", _of_element(_action), methods=["GET"])
