"""Admin routes (``/_emulator``, outside ``/piwebapi``): counters, the virtual clock, deleting points, limits.

Tests and benchmarks drive the emulator through these; a real PI Web API has nothing like them, which is why
they have their own router, mounted without the API prefix.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from piflow.emulator.plumbing import iso, request_state
from piflow.emulator.responses import json_response, pi_error
from piflow.pitime import from_ticks, parse_iso_ticks

router = APIRouter()


@router.get("/_emulator/stats")
def admin_stats(request: Request) -> Response:
    st = request_state(request)
    now = st.clock.now_ticks()
    return json_response({"requests": st.stats.requests, "values": st.stats.values, "faults": st.stats.faults,
                          "now": iso(now), "frozen": st.clock.frozen, "points": st.model.config.point_count,
                          "deleted_points": len(st.deleted_points)})


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError:
        raise pi_error(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise pi_error(400, "The request body must be a JSON object.")
    return body


@router.post("/_emulator/clock")
async def admin_clock(request: Request) -> Response:
    """Move the virtual clock: ``{"set": iso}``, ``{"advance_s": n}``, ``{"frozen": bool}`` (combinable)."""
    st = request_state(request)
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
    return json_response({"now": iso(st.clock.now_ticks()), "frozen": st.clock.frozen})


@router.post("/_emulator/limits")
async def admin_limits(request: Request) -> Response:
    """Change the server's item limit at run time (a server whose administrator lowers
    ``MaxReturnedItemsPerCall`` while a job runs): ``{"maxReturnedItems": 5000}``; answers the limits now."""
    st = request_state(request)
    body = await _json_body(request)
    limit = body.get("maxReturnedItems")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise pi_error(400, "Give 'maxReturnedItems': a positive whole number.")
    st.settings.max_returned_items = limit
    return json_response({"maxReturnedItems": st.settings.max_returned_items})


@router.post("/_emulator/points/delete")
async def admin_delete_points(request: Request) -> Response:
    """Delete points at run time (they answer 404 from then on): ``{"webIds": [...]}``."""
    st = request_state(request)
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


@router.post("/_emulator/values/delete")
async def admin_delete_values(request: Request) -> Response:
    """Delete recorded events of one point (all events at each time) from the current virtual time on:
    ``{"webId": "...", "times": ["2026-01-01T00:00:00Z", ...]}``; answers how many of the times held one."""
    st = request_state(request)
    body = await _json_body(request)
    webid, times = body.get("webId"), body.get("times")
    if not isinstance(webid, str) or not isinstance(times, list) or not all(isinstance(t, str) for t in times):
        raise pi_error(400, "Give 'webId' (a point WebID) and 'times' (a list of ISO timestamps).")
    p = st.model.point_by_webid(webid)
    if p is None:
        raise pi_error(404, f"The point with WebID '{webid}' was not found.")
    try:
        ticks = [parse_iso_ticks(t) for t in times]
    except ValueError as exc:
        raise pi_error(400, f"Bad time: {exc}") from None
    now = st.clock.now_ticks()
    before = {int(t) for t in st.model.events(p, min(ticks), max(ticks), now).ticks} if ticks else set()
    st.model.delete_events(p, ticks, now)
    return json_response({"deleted": sum(1 for t in set(ticks) if t in before)})

