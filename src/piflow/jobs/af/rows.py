"""The AF JSON of one database as ``pi_af_elements`` and ``pi_af_attributes`` rows (pure): parents from paths, PI
point references from config strings and ``Point`` links, static values as text and number. Pure, so it
runs without a server (in tests, in Spark executors).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from piflow.jobs.pi_json import Json, Row, link_webid, stream_error, value_text

if TYPE_CHECKING:
    from datetime import datetime

    from piflow.jobs.af.databases import Database, DatabaseRead


def point_path_hint(config: str | None) -> str | None:
    r"""The ``\\SERVER\TAG`` a PI Point config string names, when it can be read without the server (pure):
    options after ``;`` and a ``?id`` suffix are dropped; substitutions (``%Element%``) give None."""
    if not config:
        return None
    text = config.split(";", 1)[0].split("?", 1)[0].strip()
    if "%" in text or not text.startswith("\\\\"):
        return None
    parts = text[2:].split("\\")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        return None
    return text


@dataclass(frozen=True)
class AttributePoint:
    """The PI point an attribute reads, as far as it could be resolved: its WebID and path, or why not.

    Not :class:`piflow.planner.PointRef`, which is a point the reader asks values of."""

    webid: str | None
    path: str | None
    error: str | None = None


def point_queries(attrs: Iterable[Json]) -> tuple[list[str], list[str]]:
    """What is left to ask the server (pure): the paths of references the server gave no ``Point`` link for
    (dangling ones, to say why), and the linked WebIDs whose path the config string does not spell out."""
    paths: dict[str, str] = {}
    webids: dict[str, str] = {}
    for a in attrs:
        if not is_point_reference(a):
            continue
        hint = point_path_hint(a.get("ConfigString"))
        link = link_webid(a, "Point")
        if link is None and hint is not None:
            paths.setdefault(hint.upper(), hint)
        elif link is not None and hint is None:
            webids.setdefault(link, link)
    return list(paths.values()), list(webids.values())


def is_point_reference(attr: Json) -> bool:
    return str(attr.get("DataReferencePlugIn") or "").strip().upper() == "PI POINT"


def point_of(attr: Json, refs: Mapping[str, AttributePoint]) -> AttributePoint:
    """The point of a PI Point attribute (pure): the server's own resolution (the attribute's ``Point`` link, a
    Full WebID as ``pi_points`` holds it) with the path its config string names, else what ``points/multiple``
    answered for the path or the link."""
    hint = point_path_hint(attr.get("ConfigString"))
    link = link_webid(attr, "Point")
    if link is not None and hint is not None:
        return AttributePoint(link, hint)
    key = link if link is not None else hint.upper() if hint is not None else None
    if key is not None:
        return refs.get(key, AttributePoint(None, hint, f"PI point {hint or link} was not resolved"))
    return AttributePoint(None, None, f"the PI Point reference {attr.get('ConfigString')!r} names no point the server "
                                "could resolve")


def is_static(attr: Json) -> bool:
    return not str(attr.get("DataReferencePlugIn") or "").strip()


def element_rows(read: DatabaseRead, now: datetime) -> list[Row]:
    """``pi_af_elements`` rows of one database; parents from paths (a flat list carries no tree)."""
    db = read.db
    by_path = {str(e.get("Path") or "").upper(): str(e["WebId"]) for e in read.elements}
    prefix = db.path.rstrip("\\") + "\\"
    rows = []
    for e in read.elements:
        path = str(e.get("Path") or "")
        rel = path[len(prefix):] if path.upper().startswith(prefix.upper()) else path.lstrip("\\")
        parent_path = path.rsplit("\\", 1)[0]
        parent = None
        if "\\" in rel:
            parent = by_path.get(parent_path.upper()) or link_webid(e, "Parent")
        rows.append({
            "webid": str(e["WebId"]), "id": e.get("Id"), "server": db.server, "database": db.name,
            "database_webid": db.webid, "name": str(e.get("Name") or ""), "path": path,
            "description": e.get("Description") or None, "parent_webid": parent, "depth": rel.count("\\"),
            "template": e.get("TemplateName") or None, "categories": list(e.get("CategoryNames") or []),
            "has_children": e.get("HasChildren"), "is_deleted": False, "first_seen": now, "last_seen": now,
        })
    return rows


def attribute_rows(read: DatabaseRead, points: Mapping[str, AttributePoint], values: Mapping[str, Json],
                   now: datetime) -> list[Row]:
    """``pi_af_attributes`` rows of one database (parents from paths, points and static values resolved)."""
    rows = []
    for e in read.elements:
        ewebid = str(e["WebId"])
        attrs = read.attributes.get(ewebid, [])
        by_path = {str(a.get("Path") or "").upper(): str(a["WebId"]) for a in attrs}
        epath = str(e.get("Path") or "").upper()
        for a in attrs:
            rows.append(_attribute_row(a, ewebid, epath, by_path, read.db, points, values, now))
    return rows


def _attribute_row(a: Json, ewebid: str, epath: str, by_path: Mapping[str, str], db: Database,
                   points: Mapping[str, AttributePoint], values: Mapping[str, Json], now: datetime) -> Row:
    path = str(a.get("Path") or "")
    head = path.rpartition("|")[0]
    parent = None if head.upper() == epath else (by_path.get(head.upper()) or link_webid(a, "Parent"))
    row: Row = {
        "webid": str(a["WebId"]), "id": a.get("Id"), "element_webid": ewebid, "parent_webid": parent,
        "server": db.server, "database": db.name, "name": str(a.get("Name") or ""), "path": path,
        "description": a.get("Description") or None, "type": a.get("Type") or None,
        "type_qualifier": a.get("TypeQualifier") or None, "units": a.get("DefaultUnitsNameAbbreviation") or None,
        "units_name": a.get("DefaultUnitsName") or None, "data_reference": a.get("DataReferencePlugIn") or None,
        "config_string": a.get("ConfigString") or None, "static_value": None, "static_value_double": None,
        "point_path": None, "point_webid": None, "error": None, "categories": list(a.get("CategoryNames") or []),
        "is_configuration_item": a.get("IsConfigurationItem"), "is_excluded": a.get("IsExcluded"),
        "is_hidden": a.get("IsHidden"), "has_children": a.get("HasChildren"), "step": a.get("Step"),
        "is_deleted": False, "first_seen": now, "last_seen": now,
    }
    if is_point_reference(a):
        ref = point_of(a, points)
        row.update(point_webid=ref.webid, point_path=ref.path, error=ref.error)
    elif is_static(a) and row["webid"] in values:
        item = values[row["webid"]]
        err = stream_error(item)
        value = item.get("Value")
        text, number = value_text(value.get("Value") if isinstance(value, dict) else None)
        row.update(static_value=text, static_value_double=number, error=err)
    return row
