"""Which attributes each AF element has, and their static values: a pure function of the seed and the element.

The generated content of the model (point references, nameplate values, the occasional broken reference);
``af.py`` serves records and keeps caches. Equipment ``e`` references
points ``5e .. 5e+4`` of data server 0 (see ``model.py``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from piflow.emulator.af.catalog import (
    EQUIPMENT_STATICS,
    POINT_ATTRIBUTE_TYPES,
    TEMPLATE_ATTRIBUTES,
    AttrDef,
    equipment_code,
    equipment_place,
)
from piflow.emulator.af.hashing import mix_int
from piflow.pitime import TICKS_PER_SECOND, format_ticks, to_ticks

if TYPE_CHECKING:
    from piflow.emulator.af.tree import ElementNode
    from piflow.emulator.model import Model

_MANUFACTURERS = ("Grundfos", "Siemens", "ABB", "Sulzer", "Atlas Copco", "Alfa Laval", "Emerson", "KSB")
_COUNTRIES = {"BRK": "Germany", "HLD": "Netherlands", "MRS": "France", "TGN": "Spain", "VLC": "Spain",
              "OSL": "Norway", "KRK": "Poland", "LYN": "France"}
_TIMEZONES = {"BRK": "Europe/Berlin", "HLD": "Europe/Amsterdam", "MRS": "Europe/Paris", "TGN": "Europe/Madrid",
              "VLC": "Europe/Madrid", "OSL": "Europe/Oslo", "KRK": "Europe/Warsaw", "LYN": "Europe/Paris"}
_BROKEN_ONE_IN = 200
_INSTALL_BASE = to_ticks(datetime(2000, 1, 1, tzinfo=UTC))
_DAY = 86400 * TICKS_PER_SECOND


def element_attribute_defs(n: ElementNode, seed: int, model: Model, *, point_count: int,
                           af_mode: bool) -> tuple[AttrDef, ...]:
    """Every attribute of element ``n`` (children included), with the static values filled in."""
    if n.kind == "equipment":
        assert isinstance(n.ident, int)
        return equipment_attribute_defs(n.ident, seed, model, point_count=point_count, af_mode=af_mode)
    h = mix_int(seed, 0xAF1, int.from_bytes(n.guid.bytes[:8], "little"))
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


def equipment_attribute_defs(e: int, seed: int, model: Model, *, point_count: int,
                             af_mode: bool) -> tuple[AttrDef, ...]:
    """Equipment ``e``'s point attributes (its five points, wrapped around in ``af_mode``) and nameplate."""
    out: list[AttrDef] = []
    seen: set[str] = set()
    for slot in range(5):
        idx = e * 5 + slot
        if af_mode and point_count > 0:
            idx %= point_count
        elif idx >= point_count:
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
    if is_broken_equipment(seed, e):
        site, area = equipment_place(e)
        tag = f"{site}.A{area}.{equipment_code(e)}.LEGACY"
        out.append(AttrDef("LegacyTag", "Double", data_reference="PI Point",
                           config_string=f"\\\\{model.server(0).name}\\{tag}",
                           description="Tag of a replaced instrument (the PI point no longer exists)",
                           categories=("Process Data",)))
    h = mix_int(seed, 0xA77, e)
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
    out.extend(replace(d, static_value=values[d.rel]) for d in EQUIPMENT_STATICS)
    return tuple(out)


def is_broken_equipment(seed: int, e: int) -> bool:
    """Whether equipment ``e`` carries an attribute referencing a PI point that does not exist."""
    return mix_int(seed, 0xB0, e) % _BROKEN_ONE_IN == 0
