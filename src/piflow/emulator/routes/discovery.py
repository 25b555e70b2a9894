"""Discovery routes: the API root, ``system``, data servers and points (by WebID or path, lists, search).

Split from the value routes because nothing here reads values: objects are built from the model on request
and answered as plain dicts pruned by ``selectedFields``; point names come from :mod:`.catalog`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from piflow import webids
from piflow.emulator.catalog import parse_point_query, point_matches, point_names
from piflow.emulator.model import PointSpec
from piflow.emulator.plumbing import (
    api_base,
    error_message,
    find_point,
    find_point_by_path,
    iso,
    point_webid,
    query_args,
    reply,
    request_state,
    webid_type,
)
from piflow.emulator.profile import list_page, profile_of
from piflow.emulator.responses import pi_error
from piflow.emulator.settings import ProfileSettings
from piflow.emulator.state import EmulatorState
from piflow.pitime import TICKS_PER_SECOND, to_ticks
from piflow.wildcards import matches_everything, wildcard

router = APIRouter()

PRODUCT_VERSION = ProfileSettings().version  # of a complete server; a profile may report another


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


def _point_object(st: EmulatorState, p: PointSpec, base: str, form: str | None) -> dict[str, Any]:
    wid = point_webid(p, form)
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
    created = iso(st.model.config.origin_ticks)
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


# ---- routes ----------------------------------------------------------------------------------------------

@router.get("")
@router.get("/")
def root(request: Request) -> Response:
    base = api_base(request)
    return reply({"Links": {"Self": base.rstrip("/"), "AssetServers": f"{base}assetservers",
                             "DataServers": f"{base}dataservers", "System": f"{base}system"}}, query_args(request))


@router.get("/system")
def system(request: Request) -> Response:
    base = api_base(request)
    version = profile_of(request_state(request)).version
    return reply({"ProductTitle": "PI Web API", "ProductVersion": version,
                   "Links": {"Self": f"{base}system", "Versions": f"{base}system/versions",
                             "Status": f"{base}system/status"}}, query_args(request))


# The assemblies ``system/versions`` lists, after the AVEVA reference's sample answer (PI Web API 2019 SP1);
# the stream updates plugin only where the server has stream updates.
_ASSEMBLIES = ("OSIsoft.REST.Core", "OSIsoft.REST.Documentation", "OSIsoft.REST.Services", "OSIsoft.Search.SvcLib")
_UPDATES_ASSEMBLY = "OSIsoft.REST.StreamUpdates"


def version_info(version: str) -> dict[str, str]:
    """``{FullVersion, MajorMinorRevision, Build}`` of a four-part version such as ``1.13.0.6298``."""
    head, _, build = version.rpartition(".")
    return {"FullVersion": version, "MajorMinorRevision": head or version, "Build": build if head else ""}


@router.get("/system/versions")
def system_versions(request: Request) -> Response:
    """A dictionary of assembly name -> version information, every assembly at the server's version."""
    profile = profile_of(request_state(request))
    names = sorted((*_ASSEMBLIES, _UPDATES_ASSEMBLY) if profile.stream_updates else _ASSEMBLIES)
    return reply({name: version_info(profile.version) for name in names}, query_args(request))


@router.get("/system/status")
def system_status(request: Request) -> Response:
    st = request_state(request)
    now = st.clock.now_ticks()
    uptime = max(0.0, (now - to_ticks(st.settings.now)) / (60 * TICKS_PER_SECOND))
    return reply({"UpTimeInMinutes": round(uptime, 3), "State": "Running", "CacheInstances": 0,
                   "ServerTime": iso(now)}, query_args(request))


@router.get("/system/userinfo")
def system_userinfo(request: Request) -> Response:
    """The identity a request is served as (the auth middleware already let it in): the Basic user as
    configured, a stand-in name for a token or ticket holder, or the anonymous logon. SIDs are made up but
    stable per name."""
    import hashlib

    from piflow.emulator.auth import _canonical_user, decode_basic

    auth, header = request_state(request).settings.auth, request.headers.get("authorization", "")
    pair = decode_basic(header.partition(" ")[2]) if header.lower().startswith("basic ") else None
    user = next((u for u in auth.users if pair and _canonical_user(u) == _canonical_user(pair[0])), None)
    name = {"basic": user, "bearer": "PIDEMO\\bearer-user", "oidc": "PIDEMO\\oidc-client",
            "kerberos": "PIDEMO\\kerberos-user"}.get(auth.mode)
    if name is None:
        return reply({"IdentityType": "WindowsIdentity", "Name": "NT AUTHORITY\\ANONYMOUS LOGON",
                      "IsAuthenticated": False, "SID": "S-1-5-7", "ImpersonationLevel": "None"}, query_args(request))
    digest = hashlib.blake2b(name.lower().encode(), digest_size=12).digest()
    ids = [int.from_bytes(digest[i:i + 4], "little") for i in (0, 4, 8)]
    return reply({"IdentityType": "WindowsIdentity", "Name": name, "IsAuthenticated": True,
                  "SID": f"S-1-5-21-{ids[0]}-{ids[1]}-{ids[2]}-{1000 + ids[0] % 9000}",
                  "ImpersonationLevel": "Impersonation"}, query_args(request))


@router.get("/dataservers")
def dataservers(request: Request) -> Response:
    st, q, base = request_state(request), query_args(request), api_base(request)
    form = webid_type(q)
    path = q.get("path")
    if path:
        name = path.lstrip("\\").split("\\")[0]
        srv = st.model.server_by_name(name)
        if srv is None or "\\" in path.lstrip("\\"):
            raise pi_error(404, f"The data server with path '{path}' was not found.")
        return reply(_server_object(st, srv.index, base, form), q)
    items = [_server_object(st, s.index, base, form) for s in st.model.servers]
    return reply({"Links": {}, "Items": items}, q)


@router.get("/dataservers/{web_id}")
def dataserver(web_id: str, request: Request) -> Response:
    st, q = request_state(request), query_args(request)
    return reply(_server_object(st, _server_index(st, web_id), api_base(request), webid_type(q)), q)


@router.get("/dataservers/{web_id}/points")
def dataserver_points(web_id: str, request: Request) -> Response:
    st, q, base = request_state(request), query_args(request), api_base(request)
    server = _server_index(st, web_id)
    form = webid_type(q)
    pg = list_page(request, st, q.integer("maxCount", st.settings.max_count_default, minimum=0))
    start, end = pg.start, pg.start + pg.fetch
    name_filter = q.get("nameFilter")
    rx = wildcard(name_filter)
    n = st.model.config.point_count
    if matches_everything(name_filter):
        fetched: Sequence[int] = range(min(n, start), min(n, end))
    else:
        names = point_names(st.model, server)
        fetched = [i for i, name in enumerate(names) if rx.fullmatch(name)][start:end]
    indices, links = pg.finish(fetched)  # page by index: a deleted point leaves a gap, as it always did
    items = [_point_object(st, st.model.point(server, i), base, form) for i in indices
             if (server, i) not in st.deleted_points]
    return reply({"Links": links, "Items": items}, q)


@router.get("/points/search")
def points_search(request: Request) -> Response:
    st, q, base = request_state(request), query_args(request), api_base(request)
    form = webid_type(q)
    servers = [_server_index(st, w) for w in q.getlist("dataServerWebId")] or [s.index for s in st.model.servers]
    terms = parse_point_query(q.get("query") or "")
    pg = list_page(request, st, q.integer("maxCount", st.settings.max_count_default, minimum=0, maximum=1000))
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
                if len(found) >= pg.start + pg.fetch:
                    break
    chosen, links = pg.of(found)
    return reply({"Links": links, "Items": [_point_object(st, p, base, form) for p in chosen]}, q)


@router.get("/points/multiple")
def points_multiple(request: Request) -> Response:
    st, q, base = request_state(request), query_args(request), api_base(request)
    form = webid_type(q)
    asks = [(w, "WebId") for w in q.getlist("webId")] + [(p, "Path") for p in q.getlist("path")]
    if not asks:
        raise pi_error(400, "At least one 'webId' or 'path' parameter is required.")
    items: list[dict[str, Any]] = []
    failed = False
    for ident, kind in asks:
        try:
            p = find_point(st, ident) if kind == "WebId" else find_point_by_path(st, ident)
        except HTTPException as exc:
            failed = True
            items.append({"Identifier": ident, "IdentifierType": kind, "Object": None,
                          "Exception": {"Errors": [error_message(exc)]}})
            continue
        items.append({"Identifier": ident, "IdentifierType": kind, "Object": _point_object(st, p, base, form),
                      "Exception": None})
    return reply({"Links": {}, "Items": items}, q, 207 if failed else 200)


@router.get("/points")
def point_by_path(request: Request) -> Response:
    st, q = request_state(request), query_args(request)
    path = q.get("path")
    if not path:
        raise pi_error(400, "The 'path' parameter is required.")
    return reply(_point_object(st, find_point_by_path(st, path), api_base(request), webid_type(q)), q)


@router.get("/points/{web_id}")
def point(web_id: str, request: Request) -> Response:
    st, q = request_state(request), query_args(request)
    return reply(_point_object(st, find_point(st, web_id), api_base(request), webid_type(q)), q)


@router.get("/points/{web_id}/attributes")
def point_attributes(web_id: str, request: Request) -> Response:
    st, q, base = request_state(request), query_args(request), api_base(request)
    p = find_point(st, web_id)
    names = {n.lower() for n in q.getlist("name")}
    rx = wildcard(q.get("nameFilter"))
    me = f"{base}points/{web_id}"
    items = [{"Name": n, "Value": v, "Links": {"Self": f"{me}/attributes/{n}", "Point": me}}
             for n, v in _point_attributes(st, p) if (not names or n in names) and rx.fullmatch(n)]
    return reply({"Links": {}, "Items": items}, q)


@router.get("/points/{web_id}/attributes/{name}")
def point_attribute(web_id: str, name: str, request: Request) -> Response:
    st, q, base = request_state(request), query_args(request), api_base(request)
    p = find_point(st, web_id)
    for n, v in _point_attributes(st, p):
        if n == name.lower():
            me = f"{base}points/{web_id}"
            return reply({"Name": n, "Value": v, "Links": {"Self": f"{me}/attributes/{n}", "Point": me}}, q)
    raise pi_error(404, f"The point attribute '{name}' was not found.")
