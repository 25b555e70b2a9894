"""AF routes: asset servers, databases, elements, attributes, templates, element search and event frames.

Handlers only parse parameters and shape JSON; the model lives in ``af.py`` (with its ``af_*`` parts) and
``eventframes.py``. List answers are ``{"Links": {}, "Items": [...]}`` with PI's paging (``startIndex``,
``maxCount``, silent truncation), or ``Links.Next`` paging under that server profile (:mod:`.profile`), and
every answer honours ``selectedFields``. Links are absolute URLs built from the request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response

from piflow.emulator.af.catalog import PLANT
from piflow.emulator.af.eventframes import (
    DIRECTIONAL_MODES,
    IN_PROGRESS_END,
    SEARCH_MODES,
    SEVERITIES,
    SORT_FIELDS,
    SORT_ORDERS,
    FrameInfo,
    FrameQuery,
    TooManyFrames,
)
from piflow.emulator.af.model import AfModel
from piflow.emulator.af.records import (
    AttributeInfo,
    AttributeTemplateInfo,
    DatabaseInfo,
    ElementInfo,
    ServerInfo,
    TemplateInfo,
)
from piflow.emulator.profile import list_page, page_json
from piflow.emulator.query import QueryArgs, bad_param, parse_selected_fields, prune
from piflow.emulator.responses import json_response, pi_error
from piflow.emulator.serialize import good_value_dict
from piflow.emulator.state import EmulatorState
from piflow.pitime import format_ticks
from piflow.wildcards import wildcard

router = APIRouter()
T = TypeVar("T")


# ---- request plumbing ----------------------------------------------------------------------------------
def _state(request: Request) -> EmulatorState:
    st: EmulatorState = request.app.state.emulator
    return st


def _af(request: Request) -> AfModel:
    return _state(request).af


def _args(request: Request) -> QueryArgs:
    return QueryArgs(request.query_params.multi_items())


def _base(request: Request) -> str:
    return str(request.base_url) + "piwebapi/"


def _reply(request: Request, body: dict[str, Any]) -> Response:
    return json_response(prune(body, parse_selected_fields(_args(request).get("selectedFields"))))


def _not_found(what: str, key: str) -> Exception:
    return pi_error(404, f"The specified {what} '{key}' was not found.")


def _page(request: Request, items: Sequence[T], to_json: Callable[[T], dict[str, Any]], *,
          paged: bool = True) -> Response:
    """A list answer: the ``startIndex``/``maxCount`` page (``paged``) or the whole list (as PI answers its
    short lists), or under links paging a page of ``maxCount`` with ``Links.Next`` (:func:`list_page`)."""
    st = _state(request)
    count = _args(request).integer("maxCount", st.settings.max_count_default, minimum=1) if paged else None
    return _reply(request, page_json(list_page(request, st, count), items, to_json))


def _list(request: Request, items: list[dict[str, Any]]) -> Response:
    return _reply(request, {"Links": {}, "Items": items})


# ---- JSON shapes (pure) --------------------------------------------------------------------------------
def server_json(s: ServerInfo, base: str) -> dict[str, Any]:
    return {
        "WebId": s.webid, "Id": s.id, "Name": s.name, "Description": "piflow emulator asset server", "Path": s.path,
        "IsConnected": True, "ServerVersion": "2.10.11.2717", "ServerTime": None, "ExtendedProperties": {},
        "Links": {"Self": f"{base}assetservers/{s.webid}", "Databases": f"{base}assetservers/{s.webid}/assetdatabases"},
    }


def database_json(d: DatabaseInfo, server: ServerInfo, base: str) -> dict[str, Any]:
    w = d.webid
    return {
        "WebId": w, "Id": d.id, "Name": d.name, "Description": d.description, "Path": d.path,
        "ExtendedProperties": {},
        "Links": {
            "Self": f"{base}assetdatabases/{w}", "Elements": f"{base}assetdatabases/{w}/elements",
            "ElementTemplates": f"{base}assetdatabases/{w}/elementtemplates",
            "EventFrames": f"{base}assetdatabases/{w}/eventframes",
            "AssetServer": f"{base}assetservers/{server.webid}",
        },
    }


def element_json(e: ElementInfo, base: str) -> dict[str, Any]:
    w = e.webid
    links = {"Self": f"{base}elements/{w}", "Elements": f"{base}elements/{w}/elements",
             "Attributes": f"{base}elements/{w}/attributes", "Database": f"{base}assetdatabases/{e.database_webid}",
             "EventFrames": f"{base}elements/{w}/eventframes"}
    if e.parent_webid:
        links["Parent"] = f"{base}elements/{e.parent_webid}"
    if e.template_webid:
        links["Template"] = f"{base}elementtemplates/{e.template_webid}"
    for name, what in (("Value", "value"), ("EndValue", "end"), ("RecordedData", "recorded"),
                       ("InterpolatedData", "interpolated"), ("PlotData", "plot"), ("SummaryData", "summary")):
        links[name] = f"{base}streamsets/{w}/{what}"
    return {
        "WebId": w, "Id": e.id, "Name": e.name, "Description": e.description, "Path": e.path,
        "TemplateName": e.template_name, "HasChildren": e.has_children, "CategoryNames": list(e.category_names),
        "ExtendedProperties": {}, "Links": links,
    }


def attribute_json(a: AttributeInfo, base: str) -> dict[str, Any]:
    w = a.webid
    owner = "eventframes" if a.owner_is_event_frame else "elements"
    links = {"Self": f"{base}attributes/{w}", "Attributes": f"{base}attributes/{w}/attributes",
             "EventFrame" if a.owner_is_event_frame else "Element": f"{base}{owner}/{a.element_webid}"}
    if a.parent_webid:
        links["Parent"] = f"{base}attributes/{a.parent_webid}"
    if a.template_webid:
        links["Template"] = f"{base}attributetemplates/{a.template_webid}"
    if a.point_webid:
        links["Point"] = f"{base}points/{a.point_webid}"
    for name, what in (("Value", "value"), ("EndValue", "end"), ("RecordedData", "recorded"),
                       ("InterpolatedData", "interpolated"), ("PlotData", "plot"), ("SummaryData", "summary")):
        links[name] = f"{base}streams/{w}/{what}"
    return {
        "WebId": w, "Id": a.id, "Name": a.name, "Description": a.description, "Path": a.path, "Type": a.type,
        "TypeQualifier": a.type_qualifier, "DefaultUnitsName": a.default_units_name,
        "DefaultUnitsNameAbbreviation": a.units_abbreviation, "DisplayDigits": -5,
        "DataReferencePlugIn": a.data_reference, "ConfigString": a.config_string,
        "IsConfigurationItem": a.is_configuration_item, "IsExcluded": a.is_excluded, "IsHidden": a.is_hidden,
        "IsManualDataEntry": a.is_manual_data_entry, "HasChildren": a.has_children,
        "CategoryNames": list(a.category_names), "Step": a.step, "TraitName": "", "Links": links,
    }


def template_json(t: TemplateInfo, base: str) -> dict[str, Any]:
    w = t.webid
    return {
        "WebId": w, "Id": t.id, "Name": t.name, "Description": t.description, "Path": t.path,
        "AllowElementToExtend": True, "BaseTemplate": "", "InstanceType": t.instance_type, "NamingPattern": "",
        "CategoryNames": list(t.category_names), "ExtendedProperties": {}, "Severity": "None",
        "CanBeAcknowledged": t.name == "Alarm",
        "Links": {"Self": f"{base}elementtemplates/{w}", "Database": f"{base}assetdatabases/{t.database_webid}",
                  "AttributeTemplates": f"{base}elementtemplates/{w}/attributetemplates"},
    }


def attribute_template_json(at: AttributeTemplateInfo, base: str) -> dict[str, Any]:
    d, w = at.definition, at.webid
    links = {"Self": f"{base}attributetemplates/{w}", "ElementTemplate": f"{base}elementtemplates/{at.template_webid}",
             "AttributeTemplates": f"{base}attributetemplates/{w}/attributetemplates"}
    if at.parent_webid:
        links["Parent"] = f"{base}attributetemplates/{at.parent_webid}"
    return {
        "WebId": w, "Id": at.id, "Name": at.name, "Description": at.description, "Path": at.path,
        "Type": d.type, "TypeQualifier": d.type_qualifier, "DefaultUnitsName": d.units,
        "DefaultValue": None, "DataReferencePlugIn": d.data_reference, "ConfigString": d.config_string,
        "IsConfigurationItem": d.is_configuration_item, "IsExcluded": d.is_excluded, "IsHidden": d.is_hidden,
        "IsManualDataEntry": d.is_manual_data_entry, "HasChildren": d.has_children,
        "CategoryNames": list(d.categories), "Links": links,
    }


def frame_json(f: FrameInfo, base: str, database_webid: str, template_webid: str | None, *,
               links_wanted: bool = True) -> dict[str, Any]:
    """A frame as PI serves it; ``links_wanted=False`` leaves ``Links`` empty when ``selectedFields`` drops
    them anyway (a search page of 1,000 frames spent a fifth of its time formatting unused links)."""
    w = f.webid
    links: dict[str, str] = {}
    if links_wanted:
        links = {"Self": f"{base}eventframes/{w}", "Attributes": f"{base}eventframes/{w}/attributes",
                 "ReferencedElements": f"{base}eventframes/{w}/referencedelements",
                 "Database": f"{base}assetdatabases/{database_webid}", "Value": f"{base}streamsets/{w}/value"}
        if template_webid:
            links["Template"] = f"{base}elementtemplates/{template_webid}"
    return {
        "WebId": w, "Id": f.id, "Name": f.name, "Description": f.description, "Path": f.path,
        "TemplateName": f.template_name, "HasChildren": False, "CategoryNames": list(f.category_names),
        "ExtendedProperties": {}, "StartTime": format_ticks(f.start),
        "EndTime": IN_PROGRESS_END if f.end is None else format_ticks(f.end), "Severity": f.severity,
        "AcknowledgedBy": "", "AcknowledgedDate": "1970-01-01T00:00:00Z", "CanBeAcknowledged": f.can_be_acknowledged,
        "IsAcknowledged": f.is_acknowledged, "IsAnnotated": f.is_annotated, "IsLocked": f.is_locked,
        "AreValuesCaptured": f.are_values_captured, "RefElementWebIds": list(f.ref_element_webids),
        "Security": {}, "Links": links,
    }


def filter_elements(items: list[ElementInfo], name: str | None, template: str | None,
                    category: str | None) -> list[ElementInfo]:
    """PI's element filters: wildcard name, exact template name, category (all case-insensitive)."""
    rx = wildcard(name) if name else None
    t = template.upper() if template else None
    c = category.upper() if category else None
    return [e for e in items
            if (rx is None or rx.fullmatch(e.name)) and (t is None or e.template_name.upper() == t)
            and (c is None or any(x.upper() == c for x in e.category_names))]


def filter_attributes(items: list[AttributeInfo], name: str | None, category: str | None) -> list[AttributeInfo]:
    rx = wildcard(name) if name else None
    c = category.upper() if category else None
    return [a for a in items if (rx is None or rx.fullmatch(a.name))
            and (c is None or any(x.upper() == c for x in a.category_names))]


# ---- servers and databases -----------------------------------------------------------------------------
@router.get("/assetservers")
async def asset_servers(request: Request) -> Response:
    af, base, args = _af(request), _base(request), _args(request)
    path = args.get("path")
    if path is not None:
        if path.lstrip("\\").upper() != af.server.name.upper():
            raise _not_found("asset server", path)
        return _reply(request, server_json(af.server, base))
    return _page(request, [af.server], lambda s: server_json(s, base), paged=False)


@router.get("/assetservers/{web_id}")
async def asset_server(web_id: str, request: Request) -> Response:
    af = _af(request)
    if af.server_by_webid(web_id) is None:
        raise _not_found("asset server", web_id)
    return _reply(request, server_json(af.server, _base(request)))


@router.get("/assetservers/{web_id}/assetdatabases")
async def asset_databases(web_id: str, request: Request) -> Response:
    af = _af(request)
    if af.server_by_webid(web_id) is None:
        raise _not_found("asset server", web_id)
    base = _base(request)
    return _page(request, af.databases(), lambda d: database_json(d, af.server, base), paged=False)


@router.get("/assetdatabases")
async def asset_database_by_path(request: Request) -> Response:
    af = _af(request)
    path = _args(request).get("path")
    if not path:
        raise pi_error(400, "The 'path' parameter is required.")
    d = af.database_by_path(path)
    if d is None:
        raise _not_found("asset database", path)
    return _reply(request, database_json(d, af.server, _base(request)))


def _database(request: Request, web_id: str) -> DatabaseInfo:
    d = _af(request).database(web_id)
    if d is None:
        raise _not_found("asset database", web_id)
    return d


@router.get("/assetdatabases/{web_id}")
async def asset_database(web_id: str, request: Request) -> Response:
    return _reply(request, database_json(_database(request, web_id), _af(request).server, _base(request)))


@router.get("/assetdatabases/{web_id}/elementtemplates")
async def element_templates(web_id: str, request: Request) -> Response:
    _database(request, web_id)
    base = _base(request)
    return _page(request, _af(request).templates(web_id) or [], lambda t: template_json(t, base))


# ---- elements ------------------------------------------------------------------------------------------
def _element_list(request: Request, parent_webid: str) -> Response:
    args = _args(request)
    items = _af(request).child_elements(parent_webid, full_hierarchy=args.flag("searchFullHierarchy", False))
    if items is None:
        raise _not_found("element", parent_webid)
    items = filter_elements(items, args.get("nameFilter"), args.get("templateName"), args.get("categoryName"))
    base = _base(request)
    return _page(request, items, lambda e: element_json(e, base))


@router.get("/assetdatabases/{web_id}/elements")
async def database_elements(web_id: str, request: Request) -> Response:
    _database(request, web_id)
    return _element_list(request, web_id)


@router.get("/elements/search")
async def search_elements(request: Request) -> Response:
    args = _args(request)
    db_webid = args.get("databaseWebId")
    if not db_webid:
        raise pi_error(400, "The 'databaseWebId' parameter is required.")
    _database(request, db_webid)
    query = args.text("query")
    try:
        items = _af(request).search_elements(db_webid, query) or []
    except ValueError as exc:
        raise bad_param("query", query, str(exc)) from None
    base = _base(request)
    return _page(request, items, lambda e: element_json(e, base))


@router.get("/elements")
async def element_by_path(request: Request) -> Response:
    path = _args(request).get("path")
    if not path:
        raise pi_error(400, "The 'path' parameter is required.")
    e = _af(request).element_by_path(path)
    if e is None:
        raise _not_found("element", path)
    return _reply(request, element_json(e, _base(request)))


def _element(request: Request, web_id: str) -> ElementInfo:
    e = _af(request).element(web_id)
    if e is None:
        raise _not_found("element", web_id)
    return e


@router.get("/elements/{web_id}")
async def element(web_id: str, request: Request) -> Response:
    return _reply(request, element_json(_element(request, web_id), _base(request)))


@router.get("/elements/{web_id}/elements")
async def element_children(web_id: str, request: Request) -> Response:
    _element(request, web_id)
    return _element_list(request, web_id)


def _attribute_list(request: Request, items: list[AttributeInfo] | None, key: str) -> Response:
    if items is None:
        raise _not_found("object", key)
    args = _args(request)
    items = filter_attributes(items, args.get("nameFilter"), args.get("categoryName"))
    base = _base(request)
    return _page(request, items, lambda a: attribute_json(a, base))


@router.get("/elements/{web_id}/attributes")
async def element_attributes(web_id: str, request: Request) -> Response:
    _element(request, web_id)
    full = _args(request).flag("searchFullHierarchy", False)
    return _attribute_list(request, _af(request).attributes(web_id, full_hierarchy=full), web_id)


# ---- attributes ----------------------------------------------------------------------------------------
@router.get("/attributes")
async def attribute_by_path(request: Request) -> Response:
    path = _args(request).get("path")
    if not path:
        raise pi_error(400, "The 'path' parameter is required.")
    a = _af(request).attribute_by_path(path)
    if a is None:
        raise _not_found("attribute", path)
    return _reply(request, attribute_json(a, _base(request)))


@router.get("/attributes/{web_id}")
async def attribute(web_id: str, request: Request) -> Response:
    a = _af(request).attribute(web_id)
    if a is None:
        raise _not_found("attribute", web_id)
    return _reply(request, attribute_json(a, _base(request)))


@router.get("/attributes/{web_id}/attributes")
async def attribute_children(web_id: str, request: Request) -> Response:
    full = _args(request).flag("searchFullHierarchy", False)
    return _attribute_list(request, _af(request).child_attributes(web_id, full_hierarchy=full), web_id)


# ---- templates -----------------------------------------------------------------------------------------
@router.get("/elementtemplates/{web_id}")
async def element_template(web_id: str, request: Request) -> Response:
    t = _af(request).template(web_id)
    if t is None:
        raise _not_found("element template", web_id)
    return _reply(request, template_json(t, _base(request)))


@router.get("/elementtemplates/{web_id}/attributetemplates")
async def template_attributes(web_id: str, request: Request) -> Response:
    items = _af(request).attribute_templates(web_id, full_hierarchy=_args(request).flag("showDescendants", False))
    if items is None:
        raise _not_found("element template", web_id)
    base = _base(request)
    return _page(request, items, lambda a: attribute_template_json(a, base))


@router.get("/attributetemplates/{web_id}")
async def attribute_template(web_id: str, request: Request) -> Response:
    at = _af(request).attribute_template(web_id)
    if at is None:
        raise _not_found("attribute template", web_id)
    return _reply(request, attribute_template_json(at, _base(request)))


@router.get("/attributetemplates/{web_id}/attributetemplates")
async def attribute_template_children(web_id: str, request: Request) -> Response:
    af = _af(request)
    at = af.attribute_template(web_id)
    if at is None:
        raise _not_found("attribute template", web_id)
    siblings = af.attribute_templates(at.template_webid, full_hierarchy=True) or []
    base = _base(request)
    return _list(request, [attribute_template_json(a, base) for a in siblings if a.parent_webid == at.webid])


# ---- event frames --------------------------------------------------------------------------------------
def frame_query(args: QueryArgs, now: int, default_max: int, equipment: int | None) -> FrameQuery:
    """Parse an event-frame search; every refusal is a 400 in PI's shape."""
    mode = args.choice("searchMode", "Overlapped", SEARCH_MODES)
    tz = args.timezone()
    directional = mode in DIRECTIONAL_MODES
    if directional:
        for name in ("endTime", "sortField", "sortOrder"):
            if args.text(name).strip():
                raise pi_error(400, f"The '{name}' parameter cannot be specified with searchMode {mode}.")
    severities = []
    for raw in args.getlist("severity"):
        canon = next((s for s in SEVERITIES if s.lower() == raw.strip().lower()), None)
        if canon is None:
            raise bad_param("severity", raw, f"expected one of {', '.join(SEVERITIES)}")
        severities.append(canon)
    return FrameQuery(
        mode=mode, start=args.time_ticks("startTime", "*-8h", now, tz),
        end=None if directional else args.time_ticks("endTime", "*", now, tz),
        template=args.get("templateName") or None, category=args.get("categoryName") or None,
        name_filter=args.get("nameFilter") or None,
        ref_name_filter=args.get("referencedElementNameFilter") or None, severities=tuple(severities),
        equipment=equipment, sort_field=args.choice("sortField", "Name", SORT_FIELDS),
        sort_order=args.choice("sortOrder", "Ascending", SORT_ORDERS),
        start_index=args.integer("startIndex", 0, minimum=0),
        max_count=args.integer("maxCount", default_max, minimum=1),
    )


def _frames(request: Request, equipment: int | None) -> Response:
    st = _state(request)
    now = st.clock.now_ticks()
    q = frame_query(_args(request), now, st.settings.max_count_default, equipment)
    pg = list_page(request, st, q.max_count)
    q = dataclasses.replace(q, start_index=pg.start, max_count=pg.fetch)
    try:
        frames = st.eventframes.search(q, now, st.settings.max_returned_items)
    except TooManyFrames as exc:
        raise pi_error(400, str(exc)) from None
    chosen, links = pg.finish(frames)
    return _reply(request, {"Links": links, "Items": _frames_json(request, chosen)})


def _frames_json(request: Request, frames: list[FrameInfo], *, listed: bool = True) -> list[dict[str, Any]]:
    af, base = _af(request), _base(request)
    db = af.plant_database()
    if db is None:
        return []
    templates = {f.template_name: af.template_webid(PLANT, f.template_name) for f in frames}
    sel = parse_selected_fields(_args(request).get("selectedFields"))
    links = (sel.path("Items", "Links") if listed else sel.sub("Links")) is not None
    return [frame_json(f, base, db.webid, templates[f.template_name], links_wanted=links) for f in frames]


@router.get("/assetdatabases/{web_id}/eventframes")
async def database_event_frames(web_id: str, request: Request) -> Response:
    d = _database(request, web_id)
    if d.name != PLANT:
        frame_query(_args(request), _state(request).clock.now_ticks(), 1000, None)  # still validate
        return _list(request, [])
    return _frames(request, None)


@router.get("/elements/{web_id}/eventframes")
async def element_event_frames(web_id: str, request: Request) -> Response:
    _element(request, web_id)
    e = _af(request).equipment_of(web_id)
    return _frames(request, -1 if e is None else e)


def _frame(request: Request, web_id: str) -> FrameInfo:
    f = _state(request).eventframes.frame_by_webid(web_id)
    if f is None:
        raise _not_found("event frame", web_id)
    return f


@router.get("/eventframes")
async def event_frame_by_path(request: Request) -> Response:
    path = _args(request).get("path")
    if not path:
        raise pi_error(400, "The 'path' parameter is required.")
    f = _state(request).eventframes.frame_by_path(path)
    if f is None:
        raise _not_found("event frame", path)
    return _reply(request, _frames_json(request, [f], listed=False)[0])


@router.get("/eventframes/{web_id}")
async def event_frame(web_id: str, request: Request) -> Response:
    return _reply(request, _frames_json(request, [_frame(request, web_id)], listed=False)[0])


@router.get("/eventframes/{web_id}/attributes")
async def event_frame_attributes(web_id: str, request: Request) -> Response:
    """A frame's attributes, each with its value inline under ``Value`` (values are static per frame)."""
    f = _frame(request, web_id)
    items = _state(request).eventframes.attributes(web_id) or []
    args, base = _args(request), _base(request)
    items = filter_attributes(items, args.get("nameFilter"), args.get("categoryName"))

    def with_value(a: AttributeInfo) -> dict[str, Any]:
        return {**attribute_json(a, base), "Value": good_value_dict(f.start, a.static_value, a.units_abbreviation)}

    return _page(request, items, with_value)


@router.get("/eventframes/{web_id}/referencedelements")
async def event_frame_elements(web_id: str, request: Request) -> Response:
    f = _frame(request, web_id)
    af, base = _af(request), _base(request)
    found = [af.element(w) for w in f.ref_element_webids]
    return _list(request, [element_json(e, base) for e in found if e is not None])
