"""The emulator's AF asset model: one asset server, databases, an element tree mirroring the point names.

Everything is a pure function of the settings (seed, points, ``af_elements``), so two emulators with equal
settings serve equal trees and equal GUIDs. The tree of element *nodes* is built lazily on first use (a few
tens of milliseconds for 10,000 elements); attributes are never stored but derived per element when asked.

Identity: every element has a stable key (its original path) from which its GUID is hashed, so a renamed or
moved element keeps its ``Id`` while its Full WebID (which embeds the path) changes, as in PI. Old Full and
IDOnly WebIDs still resolve through the GUID. An attribute's GUID starts with the first 8 bytes of its
element's GUID, which is what lets an attribute WebID be resolved without indexing every attribute.

Hierarchy of database ``Plant``: ``Enterprise`` -> site (``BRK``) -> area (``A0``) -> equipment
(``PMP000000``), equipment ``e`` owning points ``5e .. 5e+4`` of data server 0 (see ``model.py``).
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from piflow import webid as webids
from piflow.emulator.model import EQUIPMENT, SITES, PointSpec
from piflow.pitime import TICKS_PER_SECOND, format_ticks, to_ticks

if TYPE_CHECKING:
    from piflow.emulator.state import EmulatorState

AF_SERVER = "PIEMU-AF"
PLANT = "Plant"
SANDBOX = "Sandbox"
ROOT = "Enterprise"

KIND_TEMPLATES: dict[str, str] = {
    "PMP": "Pump", "CMP": "Compressor", "HX": "HeatExchanger", "TK": "Tank",
    "BLR": "Boiler", "FAN": "Fan", "VLV": "Valve", "MTR": "Motor",
}
TEMPLATE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "Enterprise": (), "Site": ("Location",), "Area": ("Location",),
    "Pump": ("Rotating",), "Compressor": ("Rotating", "Utilities"), "HeatExchanger": ("Static",),
    "Tank": ("Static",), "Boiler": ("Static", "Utilities"), "Fan": ("Rotating",), "Valve": ("Static",),
    "Motor": ("Rotating",), "Bench": ("Lab",),
    "Batch": ("Production",), "Downtime": ("Reliability",), "Alarm": ("Alarms",),
}
EVENT_FRAME_TEMPLATES = ("Batch", "Downtime", "Alarm")
UNIT_NAMES: dict[str, str] = {
    "": "", "m3/h": "cubic meter per hour", "bar": "bar", "degC": "degree Celsius", "%": "percent",
    "kW": "kilowatt", "count": "count", "h": "hour", "kg": "kilogram", "min": "minute",
}
POINT_ATTRIBUTE_TYPES: dict[str, str] = {
    "Float32": "Single", "Float64": "Double", "Int32": "Int32", "Digital": "EnumerationValue",
    "String": "String", "Timestamp": "DateTime",
}
_MANUFACTURERS = ("Grundfos", "Siemens", "ABB", "Sulzer", "Atlas Copco", "Alfa Laval", "Emerson", "KSB")
_COUNTRIES = {"BRK": "Germany", "HLD": "Netherlands", "MRS": "France", "TGN": "Spain", "VLC": "Spain",
              "OSL": "Norway", "KRK": "Poland", "LYN": "France"}
_TIMEZONES = {"BRK": "Europe/Berlin", "HLD": "Europe/Amsterdam", "MRS": "Europe/Paris", "TGN": "Europe/Madrid",
              "VLC": "Europe/Madrid", "OSL": "Europe/Oslo", "KRK": "Europe/Warsaw", "LYN": "Europe/Paris"}
_BROKEN_ONE_IN = 200
_INSTALL_BASE = to_ticks(datetime(2000, 1, 1, tzinfo=UTC))
_DAY = 86400 * TICKS_PER_SECOND


@dataclass(frozen=True)
class AttrDef:
    """One attribute of an element or template; ``rel`` is its path below the element (``RatedPower|Minimum``)."""

    rel: str
    type: str
    units: str = ""
    type_qualifier: str = ""
    data_reference: str = ""
    config_string: str = ""
    static_value: object = None
    description: str = ""
    categories: tuple[str, ...] = ()
    is_configuration_item: bool = False
    is_excluded: bool = False
    is_hidden: bool = False
    is_manual_data_entry: bool = False
    has_children: bool = False
    step: bool = False
    templated: bool = False

    @property
    def name(self) -> str:
        return self.rel.rsplit("|", 1)[-1]

    @property
    def parent_rel(self) -> str | None:
        return self.rel.rsplit("|", 1)[0] if "|" in self.rel else None


def _static(rel: str, typ: str, units: str = "", cats: tuple[str, ...] = ("Nameplate",),
            has_children: bool = False) -> AttrDef:
    return AttrDef(rel, typ, units=units, categories=cats, is_configuration_item=True, templated=True,
                   has_children=has_children)


TEMPLATE_ATTRIBUTES: dict[str, tuple[AttrDef, ...]] = {
    "Enterprise": (_static("Owner", "String"),),
    "Site": (_static("Country", "String", cats=("Location",)), _static("TimeZone", "String", cats=("Location",))),
    "Area": (_static("Supervisor", "String", cats=("Location",)),),
    "Bench": (_static("Owner", "String"), _static("Notes", "String")),
    "Batch": (_static("Product", "String", cats=()), _static("Quantity", "Double", "kg", cats=()),
              _static("Operator", "String", cats=())),
    "Downtime": (_static("Reason", "String", cats=()), _static("Duration", "Double", "min", cats=())),
    "Alarm": (_static("Limit", "Double", cats=()), _static("PeakValue", "Double", cats=())),
}
_EQUIPMENT_STATICS = (
    _static("Manufacturer", "String"), _static("Model", "String"), _static("SerialNumber", "String"),
    _static("InstallDate", "DateTime"), _static("RatedPower", "Double", "kW", has_children=True),
    _static("RatedPower|Minimum", "Double", "kW"), _static("RatedPower|Maximum", "Double", "kW"),
)
for _t in KIND_TEMPLATES.values():
    TEMPLATE_ATTRIBUTES[_t] = _EQUIPMENT_STATICS


_M64 = (1 << 64) - 1


def mix_int(*parts: int) -> int:
    """``model.mix1`` in plain integers (same results, no numpy round trip per call)."""
    acc = 0
    for p in parts:
        z = ((acc ^ (p & _M64)) + 0x9E3779B97F4A7C15) & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        acc = z ^ (z >> 31)
    return acc


def stable_guid(seed: int, *parts: str) -> uuid.UUID:
    """A GUID that is a pure function of the seed and the parts (stable across processes)."""
    data = "|".join([str(seed), *parts]).encode("utf-8")
    return uuid.UUID(bytes=hashlib.blake2b(data, digest_size=16).digest())


@lru_cache(maxsize=4096)
def _h8(seed: int, text: str) -> bytes:
    return hashlib.blake2b(f"{seed}|{text}".encode(), digest_size=8).digest()


def child_guid(seed: int, owner: uuid.UUID, rel: str) -> uuid.UUID:
    """GUID of an attribute: the owner's first 8 bytes (to find the owner again) + a hash of its name."""
    return uuid.UUID(bytes=owner.bytes[:8] + _h8(seed, rel.upper()))


@lru_cache(maxsize=512)
def wildcard(pattern: str) -> re.Pattern[str]:
    """PI name filters: ``*`` any run, ``?`` one character, case-insensitive, whole-name match."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(rx, re.IGNORECASE | re.DOTALL)


def equipment_code(e: int) -> str:
    """The original element name of equipment ``e`` (``PMP000000``), as in the point names."""
    return f"{EQUIPMENT[(e // 4) % len(EQUIPMENT)]}{e:06d}"


def equipment_place(e: int) -> tuple[str, int]:
    """(site, area) of equipment ``e``, the same rule ``model.py`` uses for point names."""
    return SITES[(e // 400) % len(SITES)], (e // 40) % 10


# ---- public records ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttributeRef:
    """What the data routes need to serve an attribute's values: a PI point, or a static value."""

    webid: str
    name: str
    path: str
    units: str
    point: PointSpec | None
    static_value: object | None


@dataclass(frozen=True)
class ServerInfo:
    webid: str
    id: str
    name: str
    path: str


@dataclass(frozen=True)
class DatabaseInfo:
    webid: str
    id: str
    name: str
    description: str
    path: str


@dataclass(frozen=True)
class ElementInfo:
    webid: str
    id: str
    name: str
    description: str
    path: str
    template_name: str
    has_children: bool
    category_names: tuple[str, ...]
    parent_webid: str | None
    database_webid: str
    template_webid: str | None


@dataclass(frozen=True)
class AttributeInfo:
    """Every field the attribute endpoints serve; ``element_webid`` is the owning element or event frame."""

    webid: str
    id: str
    name: str
    description: str
    path: str
    type: str
    type_qualifier: str
    default_units_name: str
    units_abbreviation: str
    data_reference: str
    config_string: str
    is_configuration_item: bool
    is_excluded: bool
    is_hidden: bool
    is_manual_data_entry: bool
    has_children: bool
    category_names: tuple[str, ...]
    step: bool
    element_webid: str
    parent_webid: str | None
    template_webid: str | None
    point_webid: str | None
    static_value: object | None
    owner_is_event_frame: bool = False


@dataclass(frozen=True)
class TemplateInfo:
    webid: str
    id: str
    name: str
    description: str
    path: str
    instance_type: str
    category_names: tuple[str, ...]
    database_webid: str


@dataclass(frozen=True)
class AttributeTemplateInfo:
    webid: str
    id: str
    name: str
    description: str
    path: str
    definition: AttrDef
    template_webid: str
    parent_webid: str | None


# ---- internal tree -------------------------------------------------------------------------------------
class _Database:
    def __init__(self, server: ServerInfo, seed: int, name: str, description: str) -> None:
        self.name = name
        self.description = description
        self.path = f"{server.path}\\{name}"
        self.guid = stable_guid(seed, "database", name)
        self.webid = webids.full_object("RD", self.guid, self.path, owner=uuid.UUID(server.id))
        self.roots: list[_Node] = []
        self.removed = False

    def info(self) -> DatabaseInfo:
        return DatabaseInfo(self.webid, str(self.guid), self.name, self.description, self.path)


class _Node:
    """A mutable element node; ``key`` (the original path) is its identity, ``ident`` what its values hash."""

    __slots__ = ("attached", "categories", "children", "db", "description", "guid", "ident", "key", "kind",
                 "name", "parent", "template")

    def __init__(self, db: _Database, parent: _Node | None, key: str, guid: uuid.UUID, name: str,
                 template: str | None, description: str, kind: str, ident: object) -> None:
        self.db = db
        self.parent = parent
        self.key = key
        self.guid = guid
        self.name = name
        self.template = template
        self.categories = TEMPLATE_CATEGORIES.get(template or "", ())
        self.description = description
        self.kind = kind
        self.ident = ident
        self.children: list[_Node] = []
        self.attached = True


class AfModel:
    """The asset model of one emulator; see the module docstring. Thread-safe for reads and test mutations."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        s = state.settings
        self.seed = s.seed
        self.points = s.points
        self.af_mode = s.af_elements is not None
        self.equipment_count = s.af_elements if s.af_elements is not None else -(-s.points // 5)
        guid = stable_guid(self.seed, "assetserver", AF_SERVER)
        self.server = ServerInfo(webids.full_object("RS", guid, AF_SERVER), str(guid), AF_SERVER, f"\\\\{AF_SERVER}")
        self._dbs = {
            PLANT: _Database(self.server, self.seed, PLANT, "Process plant assets mirroring the PI point names"),
            SANDBOX: _Database(self.server, self.seed, SANDBOX, "A small scratch database"),
        }
        self._lock = threading.RLock()
        self._built = False
        self._by_guid: dict[uuid.UUID, _Node] = {}
        self._by_prefix: dict[bytes, _Node] = {}
        self._by_path: dict[str, _Node] | None = None
        self._equipment: list[_Node] = []
        self._removed_refs: dict[int, tuple[str, str]] = {}
        self._defs: dict[str, tuple[AttrDef, ...]] = {}
        self._points: dict[str, PointSpec | None] = {}
        self._templates: dict[str, list[tuple[TemplateInfo, tuple[AttrDef, ...]]]] = {}
        # Served records are derived once and kept until the model changes (``_changed`` replaces the dicts):
        # the AF benchmark reads every element and attribute once per page and each static value by WebID.
        self._element_infos: dict[_Node, ElementInfo] = {}
        self._attr_infos: dict[_Node, tuple[int, list[tuple[AttrDef, AttributeInfo]]]] = {}
        self._guid_defs: dict[_Node, dict[uuid.UUID, AttrDef]] = {}  # never stale: GUIDs and defs are fixed
        self._template_webids: dict[tuple[str, str], str] = {}  # templates never change either
        self._template_name_sets: dict[str, frozenset[str]] = {}

    # ---- building ---------------------------------------------------------------------------------------
    def _ensure(self) -> None:
        if self._built:
            return
        with self._lock:
            if not self._built:
                self._build_plant()
                self._build_sandbox()
                self._built = True

    def _new(self, db: _Database, parent: _Node | None, name: str, template: str | None, description: str,
             kind: str, ident: object) -> _Node:
        key = (f"{parent.key}\\{name}" if parent else f"{db.path}\\{name}").upper()
        node = _Node(db, parent, key, stable_guid(self.seed, "element", key), name, template, description, kind,
                     ident)
        (parent.children if parent else db.roots).append(node)
        self._by_guid[node.guid] = node
        self._by_prefix[node.guid.bytes[:8]] = node
        return node

    def _build_plant(self) -> None:
        db = self._dbs[PLANT]
        root = self._new(db, None, ROOT, "Enterprise", "The whole enterprise", "enterprise", None)
        sites: dict[str, _Node] = {}
        areas: dict[tuple[str, int], _Node] = {}
        for e in range(self.equipment_count):
            site, area = equipment_place(e)
            site_node = sites.get(site)
            if site_node is None:
                site_node = sites[site] = self._new(db, root, site, "Site", f"Site {site}", "site", site)
            area_node = areas.get((site, area))
            if area_node is None:
                area_node = areas[(site, area)] = self._new(db, site_node, f"A{area}", "Area",
                                                            f"Area {area} at {site}", "area", (site, area))
            code = equipment_code(e)
            template = KIND_TEMPLATES[code[:-6]]
            self._equipment.append(self._new(db, area_node, code, template,
                                             f"{template} {e} in area {area} at {site}", "equipment", e))

    def _build_sandbox(self) -> None:
        db = self._dbs[SANDBOX]
        lab = self._new(db, None, "Lab", None, "Test bench area", "lab", None)
        for i in range(1, 4):
            self._new(db, lab, f"Bench{i:02d}", "Bench", f"Test bench {i}", "bench", i)

    # ---- attribute definitions (pure per node) ----------------------------------------------------------
    def _node_defs(self, n: _Node) -> tuple[AttrDef, ...]:
        defs = self._defs.get(n.key)
        if defs is None:
            defs = self._defs[n.key] = self._make_defs(n)
        return defs

    def _make_defs(self, n: _Node) -> tuple[AttrDef, ...]:
        if n.kind == "equipment":
            assert isinstance(n.ident, int)
            return self._equipment_defs(n.ident)
        h = mix_int(self.seed, 0xAF1, int.from_bytes(n.guid.bytes[:8], "little"))
        values: dict[str, object]
        if n.kind == "site":
            site = str(n.ident)
            values = {"Country": _COUNTRIES.get(site, "Unknown"), "TimeZone": _TIMEZONES.get(site, "UTC")}
            tmpl = "Site"
        elif n.kind == "area":
            values = {"Supervisor": f"Supervisor {h % 1000:03d}"}
            tmpl = "Area"
        elif n.kind == "enterprise":
            values, tmpl = {"Owner": "Piflow Industries"}, "Enterprise"
        elif n.kind == "bench":
            values = {"Owner": f"lab-user-{n.ident}", "Notes": f"Calibrated rig {h % 100:02d}"}
            tmpl = "Bench"
        else:
            return (AttrDef("Location", "String", static_value="Building 7", categories=("Location",),
                            is_configuration_item=True),)
        return tuple(replace(d, static_value=values.get(d.rel)) for d in TEMPLATE_ATTRIBUTES[tmpl])

    def _equipment_defs(self, e: int) -> tuple[AttrDef, ...]:
        model = self.state.model
        out: list[AttrDef] = []
        seen: set[str] = set()
        for slot in range(5):
            idx = e * 5 + slot
            if self.af_mode and self.points > 0:
                idx %= self.points
            elif idx >= self.points:
                break
            p = model.point(0, idx)
            base = name = p.name.rsplit(".", 1)[1]
            dup = 2
            while name.upper() in seen:
                name, dup = f"{base}{dup}", dup + 1
            seen.add(name.upper())
            out.append(AttrDef(name, POINT_ATTRIBUTE_TYPES[p.point_type], units=p.units,
                               type_qualifier=p.digital_set or "", data_reference="PI Point", config_string=p.path,
                               description=p.descriptor, categories=("Process Data",), step=p.step))
        if self.is_broken(e):
            site, area = equipment_place(e)
            tag = f"{site}.A{area}.{equipment_code(e)}.LEGACY"
            out.append(AttrDef("LegacyTag", "Double", data_reference="PI Point",
                               config_string=f"\\\\{model.server(0).name}\\{tag}",
                               description="Tag of a replaced instrument (the PI point no longer exists)",
                               categories=("Process Data",)))
        h = mix_int(self.seed, 0xA77, e)
        rated = round(5.0 + (h >> 12) % 2000 / 4.0, 1)
        values: dict[str, object] = {
            "Manufacturer": _MANUFACTURERS[h % len(_MANUFACTURERS)],
            "Model": f"{equipment_code(e)[:-6]}-{100 + (h >> 8) % 900}",
            "SerialNumber": f"SN{(h >> 20) % 10**8:08d}",
            "InstallDate": format_ticks(_INSTALL_BASE + ((h >> 40) % 7300) * _DAY),
            "RatedPower": rated,
            "RatedPower|Minimum": round(rated * 0.1, 1),
            "RatedPower|Maximum": round(rated * 1.1, 1),
        }
        out.extend(replace(d, static_value=values[d.rel]) for d in _EQUIPMENT_STATICS)
        return tuple(out)

    def is_broken(self, e: int) -> bool:
        """Whether equipment ``e`` carries an attribute referencing a PI point that does not exist."""
        return mix_int(self.seed, 0xB0, e) % _BROKEN_ONE_IN == 0

    # ---- paths and lookups ------------------------------------------------------------------------------
    @staticmethod
    def _path(n: _Node) -> str:
        parts: list[str] = []
        cur: _Node | None = n
        while cur is not None:
            parts.append(cur.name)
            cur = cur.parent
        return n.db.path + "\\" + "\\".join(reversed(parts))

    def _alive(self, n: _Node | None) -> _Node | None:
        return n if n is not None and n.attached and not n.db.removed else None

    def _path_index(self) -> dict[str, _Node]:
        index = self._by_path
        if index is None:
            with self._lock:
                index = {}
                for db in self._dbs.values():
                    for n in self._walk(db.roots):
                        index[self._path(n).lstrip("\\").upper()] = n
                self._by_path = index
        return index

    @staticmethod
    def _walk(nodes: list[_Node]) -> list[_Node]:
        """Depth-first, parents before children, siblings in order."""
        out: list[_Node] = []
        stack = list(reversed(nodes))
        while stack:
            n = stack.pop()
            out.append(n)
            stack.extend(reversed(n.children))
        return out

    def _node(self, webid: str) -> _Node | None:
        try:
            parsed = webids.parse(webid)
        except ValueError:
            return None
        if parsed.marker != "Em":
            return None
        self._ensure()
        if parsed.guid is not None:
            return self._alive(self._by_guid.get(parsed.guid))
        return self._alive(self._path_index().get((parsed.path or "").upper()))

    def _node_by_path(self, path: str) -> _Node | None:
        self._ensure()
        return self._alive(self._path_index().get(path.lstrip("\\").upper()))

    def _db(self, webid_or_name: str) -> _Database | None:
        db = self._dbs.get(webid_or_name)
        if db is None:
            try:
                parsed = webids.parse(webid_or_name)
            except ValueError:
                return None
            if parsed.marker != "RD":
                return None
            db = next((d for d in self._dbs.values() if d.guid == parsed.guid
                       or (parsed.guid is None and d.path.lstrip("\\").upper() == parsed.path)), None)
        return db if db is not None and not db.removed else None

    # ---- servers and databases --------------------------------------------------------------------------
    def server_by_webid(self, webid: str) -> ServerInfo | None:
        try:
            parsed = webids.parse(webid)
        except ValueError:
            return None
        ok = parsed.marker == "RS" and (parsed.guid == uuid.UUID(self.server.id) or parsed.path == AF_SERVER)
        return self.server if ok else None

    def databases(self) -> list[DatabaseInfo]:
        return [d.info() for d in self._dbs.values() if not d.removed]

    def database(self, webid_or_name: str) -> DatabaseInfo | None:
        db = self._db(webid_or_name)
        return db.info() if db else None

    def database_by_path(self, path: str) -> DatabaseInfo | None:
        return next((d for d in self.databases() if d.path.upper() == "\\\\" + path.lstrip("\\").upper()), None)

    # ---- elements ---------------------------------------------------------------------------------------
    def _webid(self, n: _Node, path: str | None = None) -> str:
        return webids.full_object("Em", n.guid, path or self._path(n), owner=n.db.guid)

    def _info(self, n: _Node) -> ElementInfo:
        cache = self._element_infos  # a change replaces the dict: a record computed across it lands in the old one
        info = cache.get(n)
        if info is None:
            info = cache[n] = self._make_info(n)
        return info

    def _make_info(self, n: _Node) -> ElementInfo:
        path = self._path(n)
        known = n.template is not None and n.template.upper() in self._template_names(n.db)
        return ElementInfo(
            webid=self._webid(n, path), id=str(n.guid), name=n.name, description=n.description, path=path,
            template_name=n.template or "", has_children=bool(n.children), category_names=n.categories,
            parent_webid=self._info(n.parent).webid if n.parent else None, database_webid=n.db.webid,
            template_webid=self._template_webid(n.db, n.template) if known and n.template else None,
        )

    def element(self, webid: str) -> ElementInfo | None:
        n = self._node(webid)
        return self._info(n) if n else None

    def element_by_path(self, path: str) -> ElementInfo | None:
        n = self._node_by_path(path)
        return self._info(n) if n else None

    def _children_of(self, parent_webid: str) -> list[_Node] | None:
        self._ensure()
        db = self._db(parent_webid)
        if db is not None:
            return db.roots
        n = self._node(parent_webid)
        return n.children if n else None

    def child_elements(self, parent_webid: str, *, full_hierarchy: bool = False) -> list[ElementInfo] | None:
        """Children of a database or element; with ``full_hierarchy`` all descendants, depth first."""
        nodes = self._children_of(parent_webid)
        if nodes is None:
            return None
        return [self._info(n) for n in (self._walk(nodes) if full_hierarchy else list(nodes))]

    def all_elements(self, database: str = PLANT) -> list[ElementInfo]:
        """Ground truth for tests: every element of the database, depth first (empty if it was removed)."""
        self._ensure()
        db = self._db(database)
        return [self._info(n) for n in self._walk(db.roots)] if db else []

    def search_elements(self, database_webid: str, query: str) -> list[ElementInfo] | None:
        """``elements/search``: AND of ``name:=``, ``template:=``, ``category:=``, ``description:=`` terms."""
        terms = parse_query(query)
        items = self.child_elements(database_webid, full_hierarchy=True) if self._db(database_webid) else None
        if items is None:
            return None
        return [e for e in items if all(_term_matches(e, f, pat) for f, pat in terms)]

    # ---- attributes -------------------------------------------------------------------------------------
    def _attr_info(self, n: _Node, d: AttrDef, elem_webid: str, path: str) -> AttributeInfo:
        point = self._point(d)
        parent = d.parent_rel
        apath = f"{path}|{d.rel}"
        guid = child_guid(self.seed, n.guid, d.rel)
        owner = n.db.guid
        return AttributeInfo(
            webid=webids.full_object("Ab", guid, apath, owner=owner), id=str(guid), name=d.name,
            description=d.description, path=apath, type=d.type, type_qualifier=d.type_qualifier,
            default_units_name=UNIT_NAMES.get(d.units, d.units), units_abbreviation=d.units,
            data_reference=d.data_reference, config_string=d.config_string,
            is_configuration_item=d.is_configuration_item, is_excluded=d.is_excluded, is_hidden=d.is_hidden,
            is_manual_data_entry=d.is_manual_data_entry, has_children=d.has_children, category_names=d.categories,
            step=d.step, element_webid=elem_webid,
            parent_webid=webids.full_object("Ab", child_guid(self.seed, n.guid, parent), f"{path}|{parent}",
                                            owner=owner) if parent else None,
            template_webid=self._attr_template_webid(n.db.name, n.template, d.rel)
            if d.templated and n.template else None,
            point_webid=point.webid if point else None,
            static_value=d.static_value if not d.data_reference else None,
        )

    def _point(self, d: AttrDef) -> PointSpec | None:
        """The referenced PI point, or None for static, broken or deleted references."""
        if d.data_reference != "PI Point":
            return None
        if d.config_string not in self._points:
            self._points[d.config_string] = self.state.model.point_by_path(d.config_string)
        p = self._points[d.config_string]
        if p is None or (p.server.index, p.index) in self.state.deleted_points:
            return None
        return p

    def _all_attr_infos(self, n: _Node) -> list[tuple[AttrDef, AttributeInfo]]:
        """Every attribute of a node with its definition (cached; point links depend on deleted points)."""
        deleted = len(self.state.deleted_points)
        cache = self._attr_infos  # as in _info: a change replaces the dict, so nothing stale can stay
        cached = cache.get(n)
        if cached is not None and cached[0] == deleted:
            return cached[1]
        info = self._info(n)
        infos = [(d, self._attr_info(n, d, info.webid, info.path)) for d in self._node_defs(n)]
        cache[n] = (deleted, infos)
        return infos

    def _attr_of(self, n: _Node, d: AttrDef) -> AttributeInfo:
        return next(a for dd, a in self._all_attr_infos(n) if dd is d)

    def _node_attrs(self, n: _Node, *, parent_rel: str | None = None, full: bool = False) -> list[AttributeInfo]:
        """Direct children of ``parent_rel`` (None: the element), or all of its descendants with ``full``."""
        p = (parent_rel or "").upper()
        out = []
        for d, a in self._all_attr_infos(n):
            dp = (d.parent_rel or "").upper()
            if dp == p or (full and (p == "" or dp.startswith(p + "|"))):
                out.append(a)
        return out

    def attributes(self, element_webid: str, *, full_hierarchy: bool = False) -> list[AttributeInfo] | None:
        """Attributes of an element (top level, or all with ``full_hierarchy``) or of an event frame."""
        n = self._node(element_webid)
        if n is None:
            return self.state.eventframes.attributes(element_webid) if _marker(element_webid) == "Fm" else None
        return self._node_attrs(n, full=full_hierarchy)

    def _find_attr(self, webid: str) -> tuple[_Node, AttrDef] | None:
        try:
            parsed = webids.parse(webid)
        except ValueError:
            return None
        if parsed.marker != "Ab":
            return None
        self._ensure()
        if parsed.guid is not None:
            n = self._alive(self._by_prefix.get(parsed.guid.bytes[:8]))
            if n is None:
                return None
            index = self._guid_defs.get(n)
            if index is None:
                index = self._guid_defs[n] = {child_guid(self.seed, n.guid, d.rel): d for d in self._node_defs(n)}
            d = index.get(parsed.guid)
            return (n, d) if d else None
        return self._find_attr_path(parsed.path or "")

    def _find_attr_path(self, path: str) -> tuple[_Node, AttrDef] | None:
        elem_path, _, rel = path.partition("|")
        n = self._node_by_path(elem_path) if rel else None
        if n is None:
            return None
        d = next((d for d in self._node_defs(n) if d.rel.upper() == rel.upper()), None)
        return (n, d) if d else None

    def attribute(self, webid: str) -> AttributeInfo | None:
        found = self._find_attr(webid)
        if found is None:
            return self.state.eventframes.attribute(webid)
        n, d = found
        return self._attr_of(n, d)

    def attribute_by_path(self, path: str) -> AttributeInfo | None:
        found = self._find_attr_path(path.lstrip("\\"))
        if found is None:
            return self.state.eventframes.attribute_by_path(path)
        n, d = found
        return self._attr_of(n, d)

    def child_attributes(self, attribute_webid: str, *, full_hierarchy: bool = False) -> list[AttributeInfo] | None:
        found = self._find_attr(attribute_webid)
        if found is None:
            return [] if self.state.eventframes.attribute(attribute_webid) else None
        n, d = found
        return self._node_attrs(n, parent_rel=d.rel, full=full_hierarchy)

    def all_attributes(self, database: str = PLANT) -> list[AttributeInfo]:
        """Ground truth for tests: every attribute (children included) of every element, depth first."""
        self._ensure()
        db = self._db(database)
        return [a for n in self._walk(db.roots) for a in self._node_attrs(n, full=True)] if db else []

    def _ref(self, a: AttributeInfo, d: AttrDef) -> AttributeRef:
        return AttributeRef(a.webid, a.name, a.path, d.units, self._point(d), a.static_value)

    def resolve_attribute(self, webid: str) -> AttributeRef | None:
        """The data routes' entry point: an element or event-frame attribute WebID to what to serve."""
        found = self._find_attr(webid)
        if found is None:
            return self.state.eventframes.resolve_attribute(webid)
        n, d = found
        return self._ref(self._attr_of(n, d), d)

    def element_attributes(self, element_webid: str, *, full_hierarchy: bool = False) -> list[AttributeRef] | None:
        """Top-level attributes of an element (all with ``full_hierarchy``) or of an event frame."""
        n = self._node(element_webid)
        if n is None:
            return self.state.eventframes.attribute_refs(element_webid) if _marker(element_webid) == "Fm" else None
        return [self._ref(a, d) for d, a in self._all_attr_infos(n) if full_hierarchy or d.parent_rel is None]

    # ---- templates --------------------------------------------------------------------------------------
    def _template_path(self, db: _Database, name: str) -> str:
        return f"{db.path}\\ElementTemplates[{name}]"

    def _template_webid(self, db: _Database, name: str) -> str:
        key = (db.name, name)
        webid = self._template_webids.get(key)
        if webid is None:
            webid = self._template_webids[key] = webids.full_object(
                "ET", stable_guid(self.seed, "template", db.name, name.upper()), self._template_path(db, name),
                owner=db.guid)
        return webid

    def _attr_template_webid(self, db_name: str, template: str, rel: str) -> str:
        return _attr_template_webid(self.seed, self._dbs[db_name].path, self._dbs[db_name].guid, template, rel)

    def _db_templates(self, db: _Database) -> list[tuple[TemplateInfo, tuple[AttrDef, ...]]]:
        cached = self._templates.get(db.name)
        if cached is None:
            if db.name == PLANT:
                names = ["Enterprise", "Site", "Area", *KIND_TEMPLATES.values(), *EVENT_FRAME_TEMPLATES]
            else:
                names = ["Bench"]
            cached = []
            for name in names:
                ef = name in EVENT_FRAME_TEMPLATES
                guid = stable_guid(self.seed, "template", db.name, name.upper())
                cached.append((TemplateInfo(
                    self._template_webid(db, name), str(guid), name,
                    f"{name} {'event frames' if ef else 'elements'}", self._template_path(db, name),
                    "EventFrame" if ef else "Element", TEMPLATE_CATEGORIES.get(name, ()), db.webid,
                ), TEMPLATE_ATTRIBUTES.get(name, ())))
            self._templates[db.name] = cached
        return cached

    def templates(self, database_webid: str) -> list[TemplateInfo] | None:
        db = self._db(database_webid)
        return [t for t, _ in self._db_templates(db)] if db else None

    def template_webid(self, database: str, name: str) -> str | None:
        """WebID of a template of a database (by names), or None if there is no such template."""
        db = self._db(database)
        if db is None or name.upper() not in self._template_names(db):
            return None
        return self._template_webid(db, name)

    def _template_names(self, db: _Database) -> frozenset[str]:
        names = self._template_name_sets.get(db.name)
        if names is None:
            names = self._template_name_sets[db.name] = frozenset(t.name.upper() for t, _ in self._db_templates(db))
        return names

    def _all_templates(self) -> list[tuple[_Database, TemplateInfo, tuple[AttrDef, ...]]]:
        return [(db, t, defs) for db in self._dbs.values() if not db.removed for t, defs in self._db_templates(db)]

    def template(self, webid: str) -> TemplateInfo | None:
        found = self._find_template(webid)
        return found[1] if found else None

    def _find_template(self, webid: str) -> tuple[_Database, TemplateInfo, tuple[AttrDef, ...]] | None:
        try:
            parsed = webids.parse(webid)
        except ValueError:
            return None
        if parsed.marker != "ET":
            return None
        return next(((db, t, defs) for db, t, defs in self._all_templates()
                     if (parsed.guid is not None and str(parsed.guid) == t.id)
                     or (parsed.guid is None and parsed.path == t.path.lstrip("\\").upper())), None)

    def _at_info(self, db: _Database, t: TemplateInfo, d: AttrDef) -> AttributeTemplateInfo:
        parent = d.parent_rel
        return AttributeTemplateInfo(
            webid=self._attr_template_webid(db.name, t.name, d.rel),
            id=str(stable_guid(self.seed, "attrtemplate", db.name, t.name.upper(), d.rel.upper())),
            name=d.name, description=d.description, path=f"{t.path}|{d.rel}", definition=d, template_webid=t.webid,
            parent_webid=self._attr_template_webid(db.name, t.name, parent) if parent else None,
        )

    def attribute_templates(self, template_webid: str, *, full_hierarchy: bool = False
                            ) -> list[AttributeTemplateInfo] | None:
        found = self._find_template(template_webid)
        if found is None:
            return None
        db, t, defs = found
        return [self._at_info(db, t, d) for d in defs if full_hierarchy or d.parent_rel is None]

    def attribute_template(self, webid: str) -> AttributeTemplateInfo | None:
        try:
            parsed = webids.parse(webid)
        except ValueError:
            return None
        if parsed.marker != "AT":
            return None
        for db, t, defs in self._all_templates():
            for d in defs:
                at = self._at_info(db, t, d)
                if (parsed.guid is not None and str(parsed.guid) == at.id) or (
                        parsed.guid is None and parsed.path == at.path.lstrip("\\").upper()):
                    return at
        return None

    # ---- event-frame support ----------------------------------------------------------------------------
    def equipment_ref(self, e: int) -> tuple[str, str]:
        """(WebID, name) of equipment ``e``'s element; a removed element keeps the WebID it had."""
        self._ensure()
        removed = self._removed_refs.get(e)
        if removed is not None:
            return removed
        info = self._info(self._equipment[e])
        return info.webid, info.name

    def equipment_names(self) -> list[str]:
        """Current names of all equipment elements, by equipment index (for referenced-element filters)."""
        self._ensure()
        return [self._removed_refs[e][1] if e in self._removed_refs else n.name for e, n in enumerate(self._equipment)]

    def plant_database(self) -> DatabaseInfo | None:
        return self.database(PLANT)

    def plant_guid(self) -> uuid.UUID:
        return self._dbs[PLANT].guid

    def equipment_of(self, element_webid: str) -> int | None:
        n = self._node(element_webid)
        return n.ident if n is not None and n.kind == "equipment" and isinstance(n.ident, int) else None

    # ---- run-time changes (tests) -----------------------------------------------------------------------
    def _must(self, webid: str) -> _Node:
        n = self._node(webid)
        if n is None:
            raise KeyError(f"unknown element {webid}")
        return n

    def _changed(self) -> None:
        """Forget everything derived from names, places and templates (call with the lock held)."""
        self._by_path = None
        self._element_infos = {}
        self._attr_infos = {}

    def rename_element(self, webid: str, new_name: str) -> ElementInfo:
        """Rename in place: the Id (GUID) stays, the Path and Full WebID change."""
        if not new_name or any(c in new_name for c in "\\|*?"):
            raise ValueError(f"invalid element name {new_name!r}")
        with self._lock:
            n = self._must(webid)
            siblings = n.parent.children if n.parent else n.db.roots
            if any(s is not n and s.name.upper() == new_name.upper() for s in siblings):
                raise ValueError(f"an element named {new_name!r} already exists there")
            n.name = new_name
            self._changed()
            return self._info(n)

    def move_element(self, webid: str, new_parent_webid: str) -> ElementInfo:
        """Re-parent an element (under another element, or to the root of its database)."""
        with self._lock:
            n = self._must(webid)
            db = self._db(new_parent_webid)
            parent = None if db is not None else self._must(new_parent_webid)
            if (db is not None and db is not n.db) or (parent is not None and parent.db is not n.db):
                raise ValueError("cannot move an element to another database")
            cur = parent
            while cur is not None:
                if cur is n:
                    raise ValueError("cannot move an element below itself")
                cur = cur.parent
            target = parent.children if parent else n.db.roots
            if any(s.name.upper() == n.name.upper() for s in target):
                raise ValueError(f"an element named {n.name!r} already exists there")
            (n.parent.children if n.parent else n.db.roots).remove(n)
            target.append(n)
            n.parent = parent
            self._changed()
            return self._info(n)

    def remove_element(self, webid: str) -> None:
        """Delete an element and its subtree (they then 404); event frames keep listing the old WebID."""
        with self._lock:
            n = self._must(webid)
            for d in self._walk([n]):
                if d.kind == "equipment" and isinstance(d.ident, int):
                    info = self._info(d)
                    self._removed_refs[d.ident] = (info.webid, info.name)
            (n.parent.children if n.parent else n.db.roots).remove(n)
            for d in self._walk([n]):
                d.attached = False
            self._changed()

    def set_template(self, webid: str, template: str | None) -> ElementInfo:
        """Change an element's template (its categories follow the template's)."""
        with self._lock:
            n = self._must(webid)
            n.template = template
            n.categories = TEMPLATE_CATEGORIES.get(template or "", ())
            self._changed()
            return self._info(n)

    def remove_database(self, name: str) -> None:
        """Remove a database: it and all its elements and attributes then 404."""
        with self._lock:
            db = self._dbs.get(name)
            if db is None or db.removed:
                raise KeyError(f"unknown database {name!r}")
            db.removed = True
            self._changed()


@lru_cache(maxsize=4096)
def _attr_template_webid(seed: int, db_path: str, db_guid: uuid.UUID, template: str, rel: str) -> str:
    guid = stable_guid(seed, "attrtemplate", db_path.rsplit("\\", 1)[-1], template.upper(), rel.upper())
    return webids.full_object("AT", guid, f"{db_path}\\ElementTemplates[{template}]|{rel}", owner=db_guid)


def _marker(webid: str) -> str:
    return webid[2:4] if len(webid) >= 4 else ""


_QUERY_FIELDS = {"name": "name", "template": "template", "templatename": "template", "category": "category",
                 "categoryname": "category", "description": "description"}
_TERM_RE = re.compile(r"""\s*(?:([A-Za-z]+)\s*:=?\s*)?("[^"]*"|'[^']*'|[^\s"']+)""")


def parse_query(query: str) -> list[tuple[str, re.Pattern[str]]]:
    """Parse the supported AF search subset into (field, wildcard) terms; ValueError on anything else."""
    terms: list[tuple[str, re.Pattern[str]]] = []
    pos = 0
    text = query.strip()
    while pos < len(text):
        m = _TERM_RE.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse query {query!r}")
        field_name, value = m.group(1), m.group(2)
        if value[0] in "\"'":
            value = value[1:-1]
        key = _QUERY_FIELDS.get((field_name or "name").lower())
        if key is None:
            raise ValueError(f"unsupported search field {field_name!r} (supported: name, template, category, "
                             "description)")
        terms.append((key, wildcard(value)))
        pos = m.end()
    return terms


def _term_matches(e: ElementInfo, field_name: str, pattern: re.Pattern[str]) -> bool:
    if field_name == "name":
        return pattern.fullmatch(e.name) is not None
    if field_name == "template":
        return pattern.fullmatch(e.template_name) is not None
    if field_name == "category":
        return any(pattern.fullmatch(c) for c in e.category_names)
    return pattern.fullmatch(e.description) is not None
