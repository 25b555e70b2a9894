"""The records the AF model serves to the routes: servers, databases, elements, attributes and templates.

Routes, event frames and tests use these frozen shapes without the model that builds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from piflow.emulator.af.catalog import AttrDef
from piflow.emulator.model import PointSpec


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
