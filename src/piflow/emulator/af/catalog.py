"""The fixed vocabulary of the emulator's AF model: names, templates, categories, units and attribute definitions.

Plain data with no state, shared by the element tree, the templates and the event frames (``eventframes.py``).
Equipment codes and places follow the point-name rule of ``model.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from piflow.emulator.model import EQUIPMENT, SITES

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
EQUIPMENT_STATICS = (
    _static("Manufacturer", "String"), _static("Model", "String"), _static("SerialNumber", "String"),
    _static("InstallDate", "DateTime"), _static("RatedPower", "Double", "kW", has_children=True),
    _static("RatedPower|Minimum", "Double", "kW"), _static("RatedPower|Maximum", "Double", "kW"),
)
for _t in KIND_TEMPLATES.values():
    TEMPLATE_ATTRIBUTES[_t] = EQUIPMENT_STATICS


def equipment_code(e: int) -> str:
    """The original element name of equipment ``e`` (``PMP000000``), as in the point names."""
    return f"{EQUIPMENT[(e // 4) % len(EQUIPMENT)]}{e:06d}"


def equipment_place(e: int) -> tuple[str, int]:
    """(site, area) of equipment ``e``, the same rule ``model.py`` uses for point names."""
    return SITES[(e // 400) % len(SITES)], (e // 40) % 10

