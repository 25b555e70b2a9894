"""Request plumbing shared by the data route modules (discovery, stream values, admin).

The emulator state, query arguments and base URL of a request, the ``webIdType`` it asks for, replies pruned
by ``selectedFields``, and the point lookups that answer 404 as PI does (a deleted point included).
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import Response

from piflow.emulator.model import PointSpec
from piflow.emulator.query import QueryArgs, parse_selected_fields, prune
from piflow.emulator.responses import json_response, pi_error
from piflow.emulator.state import EmulatorState
from piflow.pitime import format_ticks

_WEBID_TYPES = ("Full", "IDOnly", "PathOnly", "LocalIDOnly", "DefaultIDOnly")


def request_state(request: Request) -> EmulatorState:
    st: EmulatorState = request.app.state.emulator
    return st


def api_base(request: Request) -> str:
    return f"{request.base_url}piwebapi/"


def query_args(request: Request) -> QueryArgs:
    return QueryArgs(request.query_params.multi_items())


def webid_type(q: QueryArgs) -> str | None:
    """The requested WebID form (None: not given). IDOnly/LocalIDOnly/DefaultIDOnly are refused."""
    if q.get("webIdType") in (None, ""):
        return None
    form = q.choice("webIdType", "Full", _WEBID_TYPES)
    if form not in ("Full", "PathOnly"):
        raise pi_error(400, f"webIdType '{form}' is not supported by the emulator (use Full or PathOnly).")
    return form


def reply(body: Any, q: QueryArgs, status: int = 200) -> Response:
    return json_response(prune(body, parse_selected_fields(q.get("selectedFields"))), status)


def iso(ticks: int) -> str:
    return format_ticks(ticks)


# ---- lookups ---------------------------------------------------------------------------------------------

def point_webid(p: PointSpec, form: str | None) -> str:
    return p.path_webid if form == "PathOnly" else p.webid


def find_point(st: EmulatorState, webid: str) -> PointSpec:
    p = st.model.point_by_webid(webid)
    if p is None:
        raise pi_error(404, f"The point with WebID '{webid}' was not found or the WebID is not valid.")
    return _alive(st, p, webid)


def _alive(st: EmulatorState, p: PointSpec, ident: str) -> PointSpec:
    if (p.server.index, p.index) in st.deleted_points:
        raise pi_error(404, f"The point '{ident}' was not found (it has been deleted).")
    return p


def find_point_by_path(st: EmulatorState, path: str) -> PointSpec:
    p = st.model.point_by_path(path)
    if p is None:
        raise pi_error(404, f"The point with path '{path}' was not found.")
    return _alive(st, p, path)


def error_message(exc: HTTPException) -> str:
    return str(exc.detail[0]) if isinstance(exc.detail, list) and exc.detail else str(exc.detail)
