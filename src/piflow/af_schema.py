"""The asset-model and event-frame tables as Arrow schemas (pure; to be merged into ``schema.TABLES``).

``pi_af_elements`` and ``pi_af_attributes`` hold the AF hierarchy, ``pi_event_frames`` and
``pi_event_frame_attributes`` what happened and the values captured for it; all four are merged on ``webid`` and
keep vanished objects as tombstones (``is_deleted``), so history and joins survive deletions. A Full WebID embeds
the object's path, so a renamed or moved element gets a new WebID (the old row is tombstoned); ``id`` (the AF
GUID) stays the same across renames and is the column to follow one object through time.

Joins: ``pi_af_attributes.point_webid`` = ``pi_points.webid`` = ``pi_values.webid`` (the point's Full WebID);
``pi_af_attributes.element_webid`` = ``pi_af_elements.webid``; ``pi_event_frames.primary_element_webid`` (and the
``ref_element_webids`` list) = ``pi_af_elements.webid``. Asset views (``piflow view``) are wide tables whose
attribute columns depend on the template, so their schema is built by :func:`view_schema`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")  # as in schema.TS; defined here so the two modules do not import each other

_NAMES = pa.list_(pa.string())

PI_AF_ELEMENTS = pa.schema(
    [
        pa.field("webid", pa.string(), nullable=False),
        pa.field("id", pa.string()),
        pa.field("server", pa.string(), nullable=False),
        pa.field("database", pa.string(), nullable=False),
        pa.field("database_webid", pa.string()),
        pa.field("name", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("description", pa.string()),
        pa.field("parent_webid", pa.string()),
        pa.field("depth", pa.int32(), nullable=False),
        pa.field("template", pa.string()),
        pa.field("categories", _NAMES),
        pa.field("has_children", pa.bool_()),
        pa.field("is_deleted", pa.bool_(), nullable=False),
        pa.field("first_seen", TS, nullable=False),
        pa.field("last_seen", TS, nullable=False),
    ]
)
PI_AF_ELEMENTS_KEY = ("webid",)

PI_AF_ATTRIBUTES = pa.schema(
    [
        pa.field("webid", pa.string(), nullable=False),
        pa.field("id", pa.string()),
        pa.field("element_webid", pa.string(), nullable=False),
        pa.field("parent_webid", pa.string()),  # the parent attribute (RatedPower for RatedPower|Minimum)
        pa.field("server", pa.string(), nullable=False),
        pa.field("database", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("description", pa.string()),
        pa.field("type", pa.string()),
        pa.field("type_qualifier", pa.string()),
        pa.field("units", pa.string()),  # abbreviation (kW), as pi_values.units
        pa.field("units_name", pa.string()),  # kilowatt
        pa.field("data_reference", pa.string()),  # "PI Point", "Formula", ... null for a static attribute
        pa.field("config_string", pa.string()),
        pa.field("static_value", pa.string()),  # a static attribute's value as text (states by name)
        pa.field("static_value_double", pa.float64()),  # the same when it is a number
        pa.field("point_path", pa.string()),  # \\SERVER\TAG as the PI server resolved it
        pa.field("point_webid", pa.string()),  # the point's Full WebID: joins pi_points and pi_values
        pa.field("error", pa.string()),  # why point_webid or static_value is null although expected
        pa.field("categories", _NAMES),
        pa.field("is_configuration_item", pa.bool_()),
        pa.field("is_excluded", pa.bool_()),
        pa.field("is_hidden", pa.bool_()),
        pa.field("has_children", pa.bool_()),
        pa.field("step", pa.bool_()),
        pa.field("is_deleted", pa.bool_(), nullable=False),
        pa.field("first_seen", TS, nullable=False),
        pa.field("last_seen", TS, nullable=False),
    ]
)
PI_AF_ATTRIBUTES_KEY = ("webid",)

PI_EVENT_FRAMES = pa.schema(
    [
        pa.field("webid", pa.string(), nullable=False),
        pa.field("id", pa.string()),
        pa.field("server", pa.string(), nullable=False),
        pa.field("database", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("path", pa.string()),
        pa.field("description", pa.string()),
        pa.field("template", pa.string()),
        pa.field("categories", _NAMES),
        pa.field("severity", pa.string()),
        pa.field("start_time", TS, nullable=False),
        pa.field("end_time", TS),  # null while the frame is in progress
        pa.field("in_progress", pa.bool_(), nullable=False),
        pa.field("primary_element_webid", pa.string()),
        pa.field("ref_element_webids", _NAMES),
        pa.field("is_acknowledged", pa.bool_()),
        pa.field("can_be_acknowledged", pa.bool_()),
        pa.field("is_annotated", pa.bool_()),
        pa.field("is_locked", pa.bool_()),
        pa.field("are_values_captured", pa.bool_()),
        pa.field("is_deleted", pa.bool_(), nullable=False),
        pa.field("first_seen", TS, nullable=False),
        pa.field("last_seen", TS, nullable=False),
    ]
)
PI_EVENT_FRAMES_KEY = ("webid",)

PI_EVENT_FRAME_ATTRIBUTES = pa.schema(
    [
        pa.field("webid", pa.string(), nullable=False),
        pa.field("frame_webid", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("path", pa.string()),
        pa.field("units", pa.string()),
        pa.field("timestamp", TS),
        pa.field("value_kind", pa.string(), nullable=False),  # schema.VALUE_KINDS
        pa.field("value_double", pa.float64()),
        pa.field("value_string", pa.string()),
        pa.field("state_code", pa.int32()),
        pa.field("state_name", pa.string()),
        pa.field("good", pa.bool_()),
        pa.field("error", pa.string()),
        pa.field("is_deleted", pa.bool_(), nullable=False),
        pa.field("first_seen", TS, nullable=False),
        pa.field("last_seen", TS, nullable=False),
    ]
)
PI_EVENT_FRAME_ATTRIBUTES_KEY = ("webid",)

# An asset view: one row per element and interval, one column per attribute of the template.
VIEW_BASE = pa.schema(
    [
        pa.field("element_webid", pa.string(), nullable=False),
        pa.field("element", pa.string(), nullable=False),
        pa.field("element_path", pa.string(), nullable=False),
        pa.field("timestamp", TS, nullable=False),
    ]
)
VIEW_KEY = ("element_webid", "timestamp")


def view_schema(columns: Sequence[tuple[str, pa.DataType]]) -> pa.Schema:
    """The fixed columns followed by one nullable column per attribute (float64 or string)."""
    taken = {n.lower() for n in VIEW_BASE.names}
    for name, _ in columns:
        if name.lower() in taken:
            raise ValueError(f"attribute column {name!r} collides with another column of the view")
        taken.add(name.lower())
    return pa.schema([*VIEW_BASE, *(pa.field(n, t) for n, t in columns)])


TABLES: dict[str, pa.Schema] = {
    "pi_af_elements": PI_AF_ELEMENTS,
    "pi_af_attributes": PI_AF_ATTRIBUTES,
    "pi_event_frames": PI_EVENT_FRAMES,
    "pi_event_frame_attributes": PI_EVENT_FRAME_ATTRIBUTES,
}
