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

This module serves the records the routes ask for and applies the run-time changes of tests; the parts live in
``catalog.py`` (names, templates, attribute definitions), ``hashing.py`` (GUIDs), ``tree.py`` (the
nodes and their indexes), ``attribute_defs.py`` (each element's attributes and static values),
``templates.py``, ``records.py`` (the served records) and ``search.py`` (name and query matching), all in this
package; the event frames are in ``eventframes.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from piflow import webids
from piflow.emulator.af.attribute_defs import element_attribute_defs, is_broken_equipment
from piflow.emulator.af.catalog import AF_SERVER, PLANT, TEMPLATE_CATEGORIES, UNIT_NAMES, AttrDef
from piflow.emulator.af.hashing import child_guid, stable_guid
from piflow.emulator.af.records import (
    AttributeInfo,
    AttributeRef,
    AttributeTemplateInfo,
    DatabaseInfo,
    ElementInfo,
    ServerInfo,
    TemplateInfo,
)
from piflow.emulator.af.search import parse_query, term_matches
from piflow.emulator.af.templates import AfTemplates
from piflow.emulator.af.tree import ElementNode, ElementTree, node_path, walk
from piflow.emulator.model import PointSpec

if TYPE_CHECKING:
    from piflow.emulator.model import Model
    from piflow.emulator.settings import EmulatorSettings


class FrameAttributes(Protocol):
    """What the asset model asks of the event frames: attribute WebIDs and paths that are not an element's may
    be a frame's (the routes look both up through :class:`AfModel`)."""

    def attributes(self, frame_webid: str) -> list[AttributeInfo] | None: ...
    def attribute(self, webid: str) -> AttributeInfo | None: ...
    def attribute_by_path(self, path: str) -> AttributeInfo | None: ...
    def resolve_attribute(self, webid: str) -> AttributeRef | None: ...
    def attribute_refs(self, frame_webid: str) -> list[AttributeRef] | None: ...


class AfModel:
    """The asset model of one emulator; see the module docstring. Thread-safe for reads and test mutations.

    ``deleted_points`` is the emulator's live set of removed points (shared, not copied); ``frames`` gives the
    event frames, built on first use.
    """

    def __init__(self, settings: EmulatorSettings, model: Model, deleted_points: set[tuple[int, int]],
                 frames: Callable[[], FrameAttributes]) -> None:
        self.model = model
        self.deleted_points = deleted_points
        self._frames = frames
        s = settings
        self.seed = s.seed
        self.point_count = s.points
        self.af_mode = s.af_elements is not None
        self.equipment_count = s.af_elements if s.af_elements is not None else -(-s.points // 5)
        guid = stable_guid(self.seed, "assetserver", AF_SERVER)
        self.server = ServerInfo(webids.full_object("RS", guid, AF_SERVER), str(guid), AF_SERVER, f"\\\\{AF_SERVER}")
        self._tree = ElementTree(self.seed, self.server, self.equipment_count)
        self._templates = AfTemplates(self.seed, self._tree)
        self._removed_refs: dict[int, tuple[str, str]] = {}
        self._defs: dict[str, tuple[AttrDef, ...]] = {}
        self._points: dict[str, PointSpec | None] = {}
        # Served records are derived once and kept until the model changes (``_changed`` replaces the dicts):
        # the AF benchmark reads every element and attribute once per page and each static value by WebID.
        self._element_infos: dict[ElementNode, ElementInfo] = {}
        self._attr_infos: dict[ElementNode, tuple[int, list[tuple[AttrDef, AttributeInfo]]]] = {}
        self._guid_defs: dict[ElementNode, dict[uuid.UUID, AttrDef]] = {}  # never stale: GUIDs and defs are fixed

    # ---- attribute definitions (pure per node) ----------------------------------------------------------
    def _node_defs(self, n: ElementNode) -> tuple[AttrDef, ...]:
        defs = self._defs.get(n.key)
        if defs is None:
            defs = self._defs[n.key] = element_attribute_defs(n, self.seed, self.model, point_count=self.point_count,
                                                              af_mode=self.af_mode)
        return defs

    def is_broken(self, e: int) -> bool:
        """Whether equipment ``e`` carries an attribute referencing a PI point that does not exist."""
        return is_broken_equipment(self.seed, e)

    # ---- servers and databases --------------------------------------------------------------------------
    def server_by_webid(self, webid: str) -> ServerInfo | None:
        parsed = webids.parse_marked(webid, "RS")
        ok = parsed is not None and (parsed.guid == uuid.UUID(self.server.id) or parsed.path == AF_SERVER)
        return self.server if ok else None

    def databases(self) -> list[DatabaseInfo]:
        return [d.info() for d in self._tree.databases.values() if not d.removed]

    def database(self, webid_or_name: str) -> DatabaseInfo | None:
        db = self._tree.db(webid_or_name)
        return db.info() if db else None

    def database_by_path(self, path: str) -> DatabaseInfo | None:
        return next((d for d in self.databases() if d.path.upper() == "\\\\" + path.lstrip("\\").upper()), None)

    # ---- elements ---------------------------------------------------------------------------------------
    def _webid(self, n: ElementNode, path: str | None = None) -> str:
        return webids.full_object("Em", n.guid, path or node_path(n), owner=n.db.guid)

    def _info(self, n: ElementNode) -> ElementInfo:
        cache = self._element_infos  # a change replaces the dict: a record computed across it lands in the old one
        info = cache.get(n)
        if info is None:
            info = cache[n] = self._make_info(n)
        return info

    def _make_info(self, n: ElementNode) -> ElementInfo:
        path = node_path(n)
        known = n.template is not None and n.template.upper() in self._templates.names(n.db)
        return ElementInfo(
            webid=self._webid(n, path), id=str(n.guid), name=n.name, description=n.description, path=path,
            template_name=n.template or "", has_children=bool(n.children), category_names=n.categories,
            parent_webid=self._info(n.parent).webid if n.parent else None, database_webid=n.db.webid,
            template_webid=self._templates.webid(n.db, n.template) if known and n.template else None,
        )

    def element(self, webid: str) -> ElementInfo | None:
        n = self._tree.node(webid)
        return self._info(n) if n else None

    def element_by_path(self, path: str) -> ElementInfo | None:
        n = self._tree.node_by_path(path)
        return self._info(n) if n else None

    def _children_of(self, parent_webid: str) -> list[ElementNode] | None:
        self._tree.ensure()
        db = self._tree.db(parent_webid)
        if db is not None:
            return db.roots
        n = self._tree.node(parent_webid)
        return n.children if n else None

    def child_elements(self, parent_webid: str, *, full_hierarchy: bool = False) -> list[ElementInfo] | None:
        """Children of a database or element; with ``full_hierarchy`` all descendants, depth first."""
        nodes = self._children_of(parent_webid)
        if nodes is None:
            return None
        return [self._info(n) for n in (walk(nodes) if full_hierarchy else list(nodes))]

    def all_elements(self, database: str = PLANT) -> list[ElementInfo]:
        """Ground truth for tests: every element of the database, depth first (empty if it was removed)."""
        self._tree.ensure()
        db = self._tree.db(database)
        return [self._info(n) for n in walk(db.roots)] if db else []

    def search_elements(self, database_webid: str, query: str) -> list[ElementInfo] | None:
        """``elements/search``: AND of ``name:=``, ``template:=``, ``category:=``, ``description:=`` terms."""
        terms = parse_query(query)
        items = self.child_elements(database_webid, full_hierarchy=True) if self._tree.db(database_webid) else None
        if items is None:
            return None
        return [e for e in items if all(term_matches(e, f, pat) for f, pat in terms)]

    # ---- attributes -------------------------------------------------------------------------------------
    def _attr_info(self, n: ElementNode, d: AttrDef, elem_webid: str, path: str) -> AttributeInfo:
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
            template_webid=self._templates.attribute_template_webid(n.db.name, n.template, d.rel)
            if d.templated and n.template else None,
            point_webid=point.webid if point else None,
            static_value=d.static_value if not d.data_reference else None,
        )

    def _point(self, d: AttrDef) -> PointSpec | None:
        """The referenced PI point, or None for static, broken or deleted references."""
        if d.data_reference != "PI Point":
            return None
        if d.config_string not in self._points:
            self._points[d.config_string] = self.model.point_by_path(d.config_string)
        p = self._points[d.config_string]
        if p is None or (p.server.index, p.index) in self.deleted_points:
            return None
        return p

    def _all_attr_infos(self, n: ElementNode) -> list[tuple[AttrDef, AttributeInfo]]:
        """Every attribute of a node with its definition (cached; point links depend on deleted points)."""
        deleted = len(self.deleted_points)
        cache = self._attr_infos  # as in _info: a change replaces the dict, so nothing stale can stay
        cached = cache.get(n)
        if cached is not None and cached[0] == deleted:
            return cached[1]
        info = self._info(n)
        infos = [(d, self._attr_info(n, d, info.webid, info.path)) for d in self._node_defs(n)]
        cache[n] = (deleted, infos)
        return infos

    def _attr_of(self, n: ElementNode, d: AttrDef) -> AttributeInfo:
        return next(a for dd, a in self._all_attr_infos(n) if dd is d)

    def _node_attrs(self, n: ElementNode, *, parent_rel: str | None = None,
                    full: bool = False) -> list[AttributeInfo]:
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
        n = self._tree.node(element_webid)
        if n is None:
            return self._frames().attributes(element_webid) if _marker(element_webid) == "Fm" else None
        return self._node_attrs(n, full=full_hierarchy)

    def _find_attr(self, webid: str) -> tuple[ElementNode, AttrDef] | None:
        parsed = webids.parse_marked(webid, "Ab")
        if parsed is None:
            return None
        self._tree.ensure()
        if parsed.guid is not None:
            n = self._tree.owner_of_attribute(parsed.guid)
            if n is None:
                return None
            index = self._guid_defs.get(n)
            if index is None:
                index = self._guid_defs[n] = {child_guid(self.seed, n.guid, d.rel): d for d in self._node_defs(n)}
            d = index.get(parsed.guid)
            return (n, d) if d else None
        return self._find_attr_path(parsed.path or "")

    def _find_attr_path(self, path: str) -> tuple[ElementNode, AttrDef] | None:
        elem_path, _, rel = path.partition("|")
        n = self._tree.node_by_path(elem_path) if rel else None
        if n is None:
            return None
        d = next((d for d in self._node_defs(n) if d.rel.upper() == rel.upper()), None)
        return (n, d) if d else None

    def attribute(self, webid: str) -> AttributeInfo | None:
        found = self._find_attr(webid)
        if found is None:
            return self._frames().attribute(webid)
        n, d = found
        return self._attr_of(n, d)

    def attribute_by_path(self, path: str) -> AttributeInfo | None:
        found = self._find_attr_path(path.lstrip("\\"))
        if found is None:
            return self._frames().attribute_by_path(path)
        n, d = found
        return self._attr_of(n, d)

    def child_attributes(self, attribute_webid: str, *, full_hierarchy: bool = False) -> list[AttributeInfo] | None:
        found = self._find_attr(attribute_webid)
        if found is None:
            return [] if self._frames().attribute(attribute_webid) else None
        n, d = found
        return self._node_attrs(n, parent_rel=d.rel, full=full_hierarchy)

    def all_attributes(self, database: str = PLANT) -> list[AttributeInfo]:
        """Ground truth for tests: every attribute (children included) of every element, depth first."""
        self._tree.ensure()
        db = self._tree.db(database)
        return [a for n in walk(db.roots) for a in self._node_attrs(n, full=True)] if db else []

    def _ref(self, a: AttributeInfo, d: AttrDef) -> AttributeRef:
        return AttributeRef(a.webid, a.name, a.path, d.units, self._point(d), a.static_value)

    def resolve_attribute(self, webid: str) -> AttributeRef | None:
        """The data routes' entry point: an element or event-frame attribute WebID to what to serve."""
        found = self._find_attr(webid)
        if found is None:
            return self._frames().resolve_attribute(webid)
        n, d = found
        return self._ref(self._attr_of(n, d), d)

    def element_attributes(self, element_webid: str, *, full_hierarchy: bool = False) -> list[AttributeRef] | None:
        """Top-level attributes of an element (all with ``full_hierarchy``) or of an event frame."""
        n = self._tree.node(element_webid)
        if n is None:
            return self._frames().attribute_refs(element_webid) if _marker(element_webid) == "Fm" else None
        return [self._ref(a, d) for d, a in self._all_attr_infos(n) if full_hierarchy or d.parent_rel is None]

    # ---- templates --------------------------------------------------------------------------------------
    def templates(self, database_webid: str) -> list[TemplateInfo] | None:
        return self._templates.templates(database_webid)

    def template_webid(self, database: str, name: str) -> str | None:
        """WebID of a template of a database (by names), or None if there is no such template."""
        return self._templates.template_webid(database, name)

    def template(self, webid: str) -> TemplateInfo | None:
        return self._templates.template(webid)

    def attribute_templates(self, template_webid: str, *, full_hierarchy: bool = False
                            ) -> list[AttributeTemplateInfo] | None:
        return self._templates.attribute_templates(template_webid, full_hierarchy=full_hierarchy)

    def attribute_template(self, webid: str) -> AttributeTemplateInfo | None:
        return self._templates.attribute_template(webid)

    # ---- event-frame support ----------------------------------------------------------------------------
    def equipment_ref(self, e: int) -> tuple[str, str]:
        """(WebID, name) of equipment ``e``'s element; a removed element keeps the WebID it had."""
        self._tree.ensure()
        removed = self._removed_refs.get(e)
        if removed is not None:
            return removed
        info = self._info(self._tree.equipment[e])
        return info.webid, info.name

    def equipment_names(self) -> list[str]:
        """Current names of all equipment elements, by equipment index (for referenced-element filters)."""
        self._tree.ensure()
        return [self._removed_refs[e][1] if e in self._removed_refs else n.name
                for e, n in enumerate(self._tree.equipment)]

    def plant_database(self) -> DatabaseInfo | None:
        return self.database(PLANT)

    def plant_guid(self) -> uuid.UUID:
        return self._tree.databases[PLANT].guid

    def equipment_of(self, element_webid: str) -> int | None:
        n = self._tree.node(element_webid)
        return n.ident if n is not None and n.kind == "equipment" and isinstance(n.ident, int) else None

    # ---- run-time changes (tests) -----------------------------------------------------------------------
    def _must(self, webid: str) -> ElementNode:
        n = self._tree.node(webid)
        if n is None:
            raise KeyError(f"unknown element {webid}")
        return n

    def _changed(self) -> None:
        """Forget everything derived from names, places and templates (call with the lock held)."""
        self._tree.forget_paths()
        self._element_infos = {}
        self._attr_infos = {}

    def rename_element(self, webid: str, new_name: str) -> ElementInfo:
        """Rename in place: the Id (GUID) stays, the Path and Full WebID change."""
        if not new_name or any(c in new_name for c in "\\|*?"):
            raise ValueError(f"invalid element name {new_name!r}")
        with self._tree.lock:
            n = self._must(webid)
            siblings = n.parent.children if n.parent else n.db.roots
            if any(s is not n and s.name.upper() == new_name.upper() for s in siblings):
                raise ValueError(f"an element named {new_name!r} already exists there")
            n.name = new_name
            self._changed()
            return self._info(n)

    def move_element(self, webid: str, new_parent_webid: str) -> ElementInfo:
        """Re-parent an element (under another element, or to the root of its database)."""
        with self._tree.lock:
            n = self._must(webid)
            db = self._tree.db(new_parent_webid)
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
        with self._tree.lock:
            n = self._must(webid)
            for d in walk([n]):
                if d.kind == "equipment" and isinstance(d.ident, int):
                    info = self._info(d)
                    self._removed_refs[d.ident] = (info.webid, info.name)
            (n.parent.children if n.parent else n.db.roots).remove(n)
            for d in walk([n]):
                d.attached = False
            self._changed()

    def set_template(self, webid: str, template: str | None) -> ElementInfo:
        """Change an element's template (its categories follow the template's)."""
        with self._tree.lock:
            n = self._must(webid)
            n.template = template
            n.categories = TEMPLATE_CATEGORIES.get(template or "", ())
            self._changed()
            return self._info(n)

    def remove_database(self, name: str) -> None:
        """Remove a database: it and all its elements and attributes then 404."""
        with self._tree.lock:
            db = self._tree.databases.get(name)
            if db is None or db.removed:
                raise KeyError(f"unknown database {name!r}")
            db.removed = True
            self._changed()


def _marker(webid: str) -> str:
    return webid[2:4] if len(webid) >= 4 else ""

