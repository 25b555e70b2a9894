"""AF element and event-frame templates of each database, with their attribute templates.

Templates are fixed (they never change at run time, so their records and WebIDs are cached for good) and need
only the databases, not the element nodes. ``AfModel`` serves them through
:class:`AfTemplates` and uses :meth:`AfTemplates.webid` and :meth:`AfTemplates.attribute_template_webid` to link
elements and attributes to their templates.
"""

from __future__ import annotations

import uuid
from functools import lru_cache

from piflow import webids
from piflow.emulator.af.catalog import (
    EVENT_FRAME_TEMPLATES,
    KIND_TEMPLATES,
    PLANT,
    TEMPLATE_ATTRIBUTES,
    TEMPLATE_CATEGORIES,
    AttrDef,
)
from piflow.emulator.af.hashing import stable_guid
from piflow.emulator.af.records import AttributeTemplateInfo, TemplateInfo
from piflow.emulator.af.tree import DatabaseNode, ElementTree


class AfTemplates:
    """The templates of the databases of one element tree (a removed database's templates 404 with it)."""

    def __init__(self, seed: int, tree: ElementTree) -> None:
        self.seed = seed
        self._tree = tree
        self._by_database: dict[str, list[tuple[TemplateInfo, tuple[AttrDef, ...]]]] = {}
        self._webids: dict[tuple[str, str], str] = {}  # templates never change
        self._name_sets: dict[str, frozenset[str]] = {}

    def path(self, db: DatabaseNode, name: str) -> str:
        return f"{db.path}\\ElementTemplates[{name}]"

    def webid(self, db: DatabaseNode, name: str) -> str:
        key = (db.name, name)
        webid = self._webids.get(key)
        if webid is None:
            webid = self._webids[key] = webids.full_object(
                "ET", stable_guid(self.seed, "template", db.name, name.upper()), self.path(db, name),
                owner=db.guid)
        return webid

    def attribute_template_webid(self, db_name: str, template: str, rel: str) -> str:
        db = self._tree.databases[db_name]
        return _attr_template_webid(self.seed, db.path, db.guid, template, rel)

    def of_database(self, db: DatabaseNode) -> list[tuple[TemplateInfo, tuple[AttrDef, ...]]]:
        cached = self._by_database.get(db.name)
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
                    self.webid(db, name), str(guid), name,
                    f"{name} {'event frames' if ef else 'elements'}", self.path(db, name),
                    "EventFrame" if ef else "Element", TEMPLATE_CATEGORIES.get(name, ()), db.webid,
                ), TEMPLATE_ATTRIBUTES.get(name, ())))
            self._by_database[db.name] = cached
        return cached

    def templates(self, database_webid: str) -> list[TemplateInfo] | None:
        db = self._tree.db(database_webid)
        return [t for t, _ in self.of_database(db)] if db else None

    def template_webid(self, database: str, name: str) -> str | None:
        """WebID of a template of a database (by names), or None if there is no such template."""
        db = self._tree.db(database)
        if db is None or name.upper() not in self.names(db):
            return None
        return self.webid(db, name)

    def names(self, db: DatabaseNode) -> frozenset[str]:
        names = self._name_sets.get(db.name)
        if names is None:
            names = self._name_sets[db.name] = frozenset(t.name.upper() for t, _ in self.of_database(db))
        return names

    def _all(self) -> list[tuple[DatabaseNode, TemplateInfo, tuple[AttrDef, ...]]]:
        return [(db, t, defs) for db in self._tree.databases.values() if not db.removed
                for t, defs in self.of_database(db)]

    def template(self, webid: str) -> TemplateInfo | None:
        found = self._find(webid)
        return found[1] if found else None

    def _find(self, webid: str) -> tuple[DatabaseNode, TemplateInfo, tuple[AttrDef, ...]] | None:
        parsed = webids.parse_marked(webid, "ET")
        if parsed is None:
            return None
        return next(((db, t, defs) for db, t, defs in self._all()
                     if (parsed.guid is not None and str(parsed.guid) == t.id)
                     or (parsed.guid is None and parsed.path == t.path.lstrip("\\").upper())), None)

    def _attribute_template_info(self, db: DatabaseNode, t: TemplateInfo, d: AttrDef) -> AttributeTemplateInfo:
        parent = d.parent_rel
        return AttributeTemplateInfo(
            webid=self.attribute_template_webid(db.name, t.name, d.rel),
            id=str(stable_guid(self.seed, "attrtemplate", db.name, t.name.upper(), d.rel.upper())),
            name=d.name, description=d.description, path=f"{t.path}|{d.rel}", definition=d, template_webid=t.webid,
            parent_webid=self.attribute_template_webid(db.name, t.name, parent) if parent else None,
        )

    def attribute_templates(self, template_webid: str, *, full_hierarchy: bool = False
                            ) -> list[AttributeTemplateInfo] | None:
        found = self._find(template_webid)
        if found is None:
            return None
        db, t, defs = found
        return [self._attribute_template_info(db, t, d) for d in defs if full_hierarchy or d.parent_rel is None]

    def attribute_template(self, webid: str) -> AttributeTemplateInfo | None:
        parsed = webids.parse_marked(webid, "AT")
        if parsed is None:
            return None
        for db, t, defs in self._all():
            for d in defs:
                at = self._attribute_template_info(db, t, d)
                if (parsed.guid is not None and str(parsed.guid) == at.id) or (
                        parsed.guid is None and parsed.path == at.path.lstrip("\\").upper()):
                    return at
        return None


@lru_cache(maxsize=4096)
def _attr_template_webid(seed: int, db_path: str, db_guid: uuid.UUID, template: str, rel: str) -> str:
    guid = stable_guid(seed, "attrtemplate", db_path.rsplit("\\", 1)[-1], template.upper(), rel.upper())
    return webids.full_object("AT", guid, f"{db_path}\\ElementTemplates[{template}]|{rel}", owner=db_guid)
