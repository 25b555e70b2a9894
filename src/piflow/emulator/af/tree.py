"""The AF element tree: database and element nodes, built lazily from the settings, and the indexes that find them.

Building the hierarchy and finding nodes (by GUID, by the GUID prefix an attribute carries, by path); the records
served to the routes are ``af.py``'s. Nodes are mutable: ``af.py`` renames, moves
and removes them under :attr:`ElementTree.lock` and then calls :meth:`ElementTree.forget_paths`.
"""

from __future__ import annotations

import threading
import uuid

from piflow import webids
from piflow.emulator.af.catalog import (
    KIND_TEMPLATES,
    PLANT,
    ROOT,
    SANDBOX,
    TEMPLATE_CATEGORIES,
    equipment_code,
    equipment_place,
)
from piflow.emulator.af.hashing import stable_guid
from piflow.emulator.af.records import DatabaseInfo, ServerInfo


class DatabaseNode:
    def __init__(self, server: ServerInfo, seed: int, name: str, description: str) -> None:
        self.name = name
        self.description = description
        self.path = f"{server.path}\\{name}"
        self.guid = stable_guid(seed, "database", name)
        self.webid = webids.full_object("RD", self.guid, self.path, owner=uuid.UUID(server.id))
        self.roots: list[ElementNode] = []
        self.removed = False

    def info(self) -> DatabaseInfo:
        return DatabaseInfo(self.webid, str(self.guid), self.name, self.description, self.path)


class ElementNode:
    """A mutable element node; ``key`` (the original path) is its identity, ``ident`` what its values hash."""

    __slots__ = ("attached", "categories", "children", "db", "description", "guid", "ident", "key", "kind",
                 "name", "parent", "template")

    def __init__(self, db: DatabaseNode, parent: ElementNode | None, key: str, guid: uuid.UUID, name: str,
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
        self.children: list[ElementNode] = []
        self.attached = True


def node_path(n: ElementNode) -> str:
    parts: list[str] = []
    cur: ElementNode | None = n
    while cur is not None:
        parts.append(cur.name)
        cur = cur.parent
    return n.db.path + "\\" + "\\".join(reversed(parts))


def walk(nodes: list[ElementNode]) -> list[ElementNode]:
    """Depth-first, parents before children, siblings in order."""
    out: list[ElementNode] = []
    stack = list(reversed(nodes))
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(reversed(n.children))
    return out


def alive(n: ElementNode | None) -> ElementNode | None:
    return n if n is not None and n.attached and not n.db.removed else None


class ElementTree:
    """The databases of the asset server and their element nodes, with lookups by GUID, GUID prefix and path."""

    def __init__(self, seed: int, server: ServerInfo, equipment_count: int) -> None:
        self.seed = seed
        self.equipment_count = equipment_count
        self.databases = {
            PLANT: DatabaseNode(server, seed, PLANT, "Process plant assets mirroring the PI point names"),
            SANDBOX: DatabaseNode(server, seed, SANDBOX, "A small scratch database"),
        }
        self.lock = threading.RLock()
        self._built = False
        self._by_guid: dict[uuid.UUID, ElementNode] = {}
        self._by_prefix: dict[bytes, ElementNode] = {}
        self._by_path: dict[str, ElementNode] | None = None
        self.equipment: list[ElementNode] = []

    # ---- building ---------------------------------------------------------------------------------------
    def ensure(self) -> None:
        if self._built:
            return
        with self.lock:
            if not self._built:
                self._build_plant()
                self._build_sandbox()
                self._built = True

    def _new(self, db: DatabaseNode, parent: ElementNode | None, name: str, template: str | None,
             description: str, kind: str, ident: object) -> ElementNode:
        key = (f"{parent.key}\\{name}" if parent else f"{db.path}\\{name}").upper()
        node = ElementNode(db, parent, key, stable_guid(self.seed, "element", key), name, template, description,
                           kind, ident)
        (parent.children if parent else db.roots).append(node)
        self._by_guid[node.guid] = node
        self._by_prefix[node.guid.bytes[:8]] = node
        return node

    def _build_plant(self) -> None:
        db = self.databases[PLANT]
        root = self._new(db, None, ROOT, "Enterprise", "The whole enterprise", "enterprise", None)
        sites: dict[str, ElementNode] = {}
        areas: dict[tuple[str, int], ElementNode] = {}
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
            self.equipment.append(self._new(db, area_node, code, template,
                                            f"{template} {e} in area {area} at {site}", "equipment", e))

    def _build_sandbox(self) -> None:
        db = self.databases[SANDBOX]
        lab = self._new(db, None, "Lab", None, "Test bench area", "lab", None)
        for i in range(1, 4):
            self._new(db, lab, f"Bench{i:02d}", "Bench", f"Test bench {i}", "bench", i)

    # ---- paths and lookups ------------------------------------------------------------------------------
    def _path_index(self) -> dict[str, ElementNode]:
        index = self._by_path
        if index is None:
            with self.lock:
                index = {}
                for db in self.databases.values():
                    for n in walk(db.roots):
                        index[node_path(n).lstrip("\\").upper()] = n
                self._by_path = index
        return index

    def forget_paths(self) -> None:
        """Drop the path index after a rename, move or removal (call with the lock held)."""
        self._by_path = None

    def node(self, webid: str) -> ElementNode | None:
        parsed = webids.parse_marked(webid, "Em")
        if parsed is None:
            return None
        self.ensure()
        if parsed.guid is not None:
            return alive(self._by_guid.get(parsed.guid))
        return alive(self._path_index().get((parsed.path or "").upper()))

    def node_by_path(self, path: str) -> ElementNode | None:
        self.ensure()
        return alive(self._path_index().get(path.lstrip("\\").upper()))

    def owner_of_attribute(self, attribute_guid: uuid.UUID) -> ElementNode | None:
        """The live element whose GUID starts like the attribute's (see ``hashing.child_guid``)."""
        return alive(self._by_prefix.get(attribute_guid.bytes[:8]))

    def db(self, webid_or_name: str) -> DatabaseNode | None:
        db = self.databases.get(webid_or_name)
        if db is None:
            parsed = webids.parse_marked(webid_or_name, "RD")
            if parsed is None:
                return None
            db = next((d for d in self.databases.values() if d.guid == parsed.guid
                       or (parsed.guid is None and d.path.lstrip("\\").upper() == parsed.path)), None)
        return db if db is not None and not db.removed else None
