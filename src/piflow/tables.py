"""The table registry: every Delta table piflow writes, described once (pure).

A :class:`TableSpec` holds a table's name, its Arrow schema (each column's comment in the field metadata under
``comment``, the key Spark and Databricks read column comments from), key, partition columns, z-order columns,
change data feed and table comment. Everything else derives from :data:`TABLES`: the sink creates and checks
tables with it, ``piflow optimize`` compacts what it lists, Unity Catalog registration takes its comments, the
Spark source and the Lakeflow adapter their schemas and keys, the CLI its table names. ``piflow.schema`` and
``piflow.af_schema`` re-export the schemas under the names the jobs import.

Asset views (``piflow view``) are named by their users and their attribute columns depend on the template, so
they are not in :data:`TABLES`: :data:`VIEW` describes their fixed leading columns, and :func:`is_view` tells a
view table by those columns, which is how ``piflow optimize`` finds views at a target.

Joins: ``pi_af_attributes.point_webid`` = ``pi_points.webid`` = ``pi_values.webid`` (the point's Full WebID);
``pi_af_attributes.element_webid`` = ``pi_af_elements.webid``; ``pi_event_frames.primary_element_webid`` (and
``ref_element_webids``) = ``pi_af_elements.webid``. A Full WebID embeds the object's path, so a renamed or moved
AF object gets a new WebID (the old row is tombstoned); ``id`` (the AF GUID) follows one object through renames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
_NAMES = pa.list_(pa.string())
COMMENT = "comment"  # the field-metadata key of a column comment (Spark's and Delta's convention)


@dataclass(frozen=True)
class TableSpec:
    """One Delta table: what it holds and how it is laid out."""

    name: str
    schema: pa.Schema  # every field carries its comment (field metadata ``comment``)
    key: tuple[str, ...]
    comment: str
    partition_by: tuple[str, ...] = ()
    zorder: tuple[str, ...] = ()  # optimize z-orders on these columns (plain compaction when empty)
    change_feed: bool = False

    def __post_init__(self) -> None:
        for role, columns in (("key", self.key), ("partition", self.partition_by), ("z-order", self.zorder)):
            unknown = [c for c in columns if c not in self.schema.names]
            if unknown:
                raise ValueError(f"{self.name}: {role} column {unknown[0]!r} is not in the schema")
        bare = [f.name for f in self.schema if not column_comment(f)]
        if bare:
            raise ValueError(f"{self.name}: column {bare[0]!r} has no comment")

    @property
    def properties(self) -> dict[str, str]:
        """Delta table properties set when the table is created."""
        return {"delta.enableChangeDataFeed": "true"} if self.change_feed else {}

    def comments(self) -> dict[str, str]:
        """Column name -> comment, in schema order."""
        return {f.name: column_comment(f) for f in self.schema}


def column_comment(f: pa.Field) -> str:
    """A field's comment ('' when it has none)."""
    comment: bytes = (f.metadata or {}).get(COMMENT.encode(), b"")
    return comment.decode()


def col(name: str, type_: pa.DataType, comment: str, *, nullable: bool = True) -> pa.Field:
    """A column with its comment."""
    return pa.field(name, type_, nullable=nullable, metadata={COMMENT: comment})


# Columns several tables share, said once.
_SHARED: Mapping[str, tuple[pa.DataType, str]] = {
    "webid": (pa.string(), "PI Web API WebID 2.0 (Full) of the object; the key"),
    "id": (pa.string(), "the object's AF identifier (GUID); stable across renames"),
    "server": (pa.string(), "PI Data Archive or AF server name"),
    "database": (pa.string(), "AF database name"),
    "name": (pa.string(), "name as PI shows it"),
    "path": (pa.string(), "PI path (\\\\SERVER\\NAME or the AF path)"),
    "description": (pa.string(), "description as configured in AF"),
    "template": (pa.string(), "AF template name"),
    "categories": (_NAMES, "AF category names"),
    "has_children": (pa.bool_(), "whether the object has children in PI"),
    "units": (pa.string(), "engineering units abbreviation (e.g. kW)"),
    "step": (pa.bool_(), "stepped (true) or interpolated (false) values"),
    "is_deleted": (pa.bool_(), "tombstone: the object no longer exists in PI (kept for history and joins)"),
    "first_seen": (TS, "when piflow first saw this object (UTC)"),
    "last_seen": (TS, "when piflow last saw this object change: first read, changed, or vanished (UTC)"),
}
# The value of a PI event without loss; the same columns wherever a PI value is written (schema.VALUE_KINDS).
_VALUE: Mapping[str, tuple[pa.DataType, str]] = {
    "value_kind": (pa.string(), "which column holds the value: number, string, timestamp, digital, system or null"),
    "value_double": (pa.float64(), "numeric value (integers and booleans as numbers)"),
    "value_string": (pa.string(), "string value, or a Timestamp point's value as ISO-8601 text"),
    "state_code": (pa.int32(), "digital or system state code"),
    "state_name": (pa.string(), "digital or system state name (e.g. 'I/O Timeout')"),
}


def shared(name: str, *, nullable: bool = True, comment: str | None = None) -> pa.Field:
    """A column of :data:`_SHARED` or :data:`_VALUE` (``comment`` when this table says more)."""
    type_, said = _SHARED[name] if name in _SHARED else _VALUE[name]
    return col(name, type_, comment or said, nullable=nullable)


_TOMBSTONED = (shared("is_deleted", nullable=False), shared("first_seen", nullable=False),
               shared("last_seen", nullable=False))

PI_VALUES = TableSpec(
    name="pi_values",
    comment="Recorded PI values, one row per event, exactly once (piflow; key webid, timestamp, seq)",
    key=("webid", "timestamp", "seq"), partition_by=("date",), zorder=("webid", "timestamp"),
    schema=pa.schema([
        col("webid", pa.string(), "WebID of the PI point (joins pi_points.webid)", nullable=False),
        col("timestamp", TS, "event time (UTC, microseconds)", nullable=False),
        col("seq", pa.int32(), "0, 1, ... for events of one point sharing a timestamp, in PI's order",
            nullable=False),
        col("date", pa.date32(), "UTC date of the timestamp (partition column)", nullable=False),
        shared("value_kind", nullable=False), shared("value_double"), shared("value_string"),
        shared("state_code"), shared("state_name"),
        col("is_system", pa.bool_(), "the value is a PI system state", nullable=False),
        col("good", pa.bool_(), "PI quality flag Good", nullable=False),
        col("questionable", pa.bool_(), "PI quality flag Questionable", nullable=False),
        col("substituted", pa.bool_(), "PI quality flag Substituted (the value was edited)", nullable=False),
        col("annotated", pa.bool_(), "PI quality flag Annotated", nullable=False),
        shared("units", comment="engineering units of the value"),
        col("source", pa.string(), "how piflow got the value: recorded, channel or update", nullable=False),
        col("ingested_at", TS, "when piflow read the value (UTC)", nullable=False),
    ]),
)

PI_POINTS = TableSpec(
    name="pi_points",
    comment="PI points of the data servers (piflow; merged on webid, tombstones for deleted points)",
    key=("webid",), change_feed=True,
    schema=pa.schema([
        shared("webid", nullable=False),
        col("id", pa.int64(), "the point's ID on its PI Data Archive; stable across renames"),
        shared("name", nullable=False), shared("path", nullable=False), shared("server", nullable=False),
        col("descriptor", pa.string(), "the point's descriptor"),
        col("point_class", pa.string(), "PI point class (classic, base, ...)"),
        col("point_type", pa.string(), "PI point type: Float32, Float64, Int16, Int32, Digital, String, Timestamp, "
                                       "Blob"),
        col("digital_set", pa.string(), "digital state set of a Digital point"),
        col("engineering_units", pa.string(), "engineering units"),
        col("span", pa.float64(), "configured span"),
        col("zero", pa.float64(), "configured zero"),
        shared("step"),
        col("future", pa.bool_(), "whether the point holds future data"),
        *_TOMBSTONED,
    ]),
)

PI_AF_ELEMENTS = TableSpec(
    name="pi_af_elements",
    comment="AF elements (piflow; merged on webid, tombstones for removed elements)",
    key=("webid",), change_feed=True,
    schema=pa.schema([
        shared("webid", nullable=False), shared("id"), shared("server", nullable=False),
        shared("database", nullable=False),
        col("database_webid", pa.string(), "WebID of the AF database"),
        shared("name", nullable=False), shared("path", nullable=False), shared("description"),
        col("parent_webid", pa.string(), "WebID of the parent element (null at the top)"),
        col("depth", pa.int32(), "depth below the database root (0 at the top)", nullable=False),
        shared("template"), shared("categories"), shared("has_children"),
        *_TOMBSTONED,
    ]),
)

PI_AF_ATTRIBUTES = TableSpec(
    name="pi_af_attributes",
    comment="AF attributes with their PI point references and static values (piflow; merged on webid)",
    key=("webid",), change_feed=True,
    schema=pa.schema([
        shared("webid", nullable=False), shared("id"),
        col("element_webid", pa.string(), "WebID of the owning AF element (joins pi_af_elements.webid)",
            nullable=False),
        col("parent_webid", pa.string(), "WebID of the parent attribute of a child attribute (RatedPower for "
                                         "RatedPower|Minimum)"),
        shared("server", nullable=False), shared("database", nullable=False), shared("name", nullable=False),
        shared("path", nullable=False), shared("description"),
        col("type", pa.string(), "AF value type"),
        col("type_qualifier", pa.string(), "AF type qualifier (e.g. the enumeration set)"),
        shared("units", comment="engineering units abbreviation (e.g. kW), as pi_values.units"),
        col("units_name", pa.string(), "engineering units full name (e.g. kilowatt)"),
        col("data_reference", pa.string(), "data reference plug-in ('PI Point', 'Formula', ...); null for static "
                                           "attributes"),
        col("config_string", pa.string(), "data reference configuration string"),
        col("static_value", pa.string(), "a static attribute's value as text (states by name)"),
        col("static_value_double", pa.float64(), "a static attribute's value when it is a number"),
        col("point_path", pa.string(), "\\\\SERVER\\TAG of the referenced PI point as the PI server resolved it"),
        col("point_webid", pa.string(), "WebID of the referenced PI point (joins pi_points.webid and "
                                        "pi_values.webid)"),
        col("error", pa.string(), "why point_webid or static_value is null although expected"),
        shared("categories"),
        col("is_configuration_item", pa.bool_(), "AF configuration item flag"),
        col("is_excluded", pa.bool_(), "AF excluded flag"),
        col("is_hidden", pa.bool_(), "AF hidden flag"),
        shared("has_children"), shared("step"),
        *_TOMBSTONED,
    ]),
)

PI_EVENT_FRAMES = TableSpec(
    name="pi_event_frames",
    comment="AF event frames (piflow; merged on webid, open frames re-read until they close)",
    key=("webid",), change_feed=True,
    schema=pa.schema([
        shared("webid", nullable=False), shared("id"), shared("server", nullable=False),
        shared("database", nullable=False), shared("name", nullable=False), shared("path"),
        shared("description"), shared("template"), shared("categories"),
        col("severity", pa.string(), "event frame severity"),
        col("start_time", TS, "start of the event (UTC)", nullable=False),
        col("end_time", TS, "end of the event (UTC); null while in progress"),
        col("in_progress", pa.bool_(), "the event has not ended yet", nullable=False),
        col("primary_element_webid", pa.string(), "WebID of the primary referenced element (joins "
                                                  "pi_af_elements.webid)"),
        col("ref_element_webids", _NAMES, "WebIDs of all referenced elements"),
        col("is_acknowledged", pa.bool_(), "acknowledged flag"),
        col("can_be_acknowledged", pa.bool_(), "whether the frame can be acknowledged"),
        col("is_annotated", pa.bool_(), "annotated flag"),
        col("is_locked", pa.bool_(), "locked flag"),
        col("are_values_captured", pa.bool_(), "whether attribute values were captured at the end"),
        *_TOMBSTONED,
    ]),
)

PI_EVENT_FRAME_ATTRIBUTES = TableSpec(
    name="pi_event_frame_attributes",
    comment="Attribute values of AF event frames (piflow; merged on webid, re-read while the frame is open)",
    key=("webid",), change_feed=True,
    schema=pa.schema([
        shared("webid", nullable=False),
        col("frame_webid", pa.string(), "WebID of the event frame (joins pi_event_frames.webid)", nullable=False),
        shared("name", nullable=False), shared("path"), shared("units"),
        col("timestamp", TS, "time of the value (UTC)"),
        shared("value_kind", nullable=False), shared("value_double"), shared("value_string"),
        shared("state_code"), shared("state_name"),
        col("good", pa.bool_(), "PI quality flag Good (null when PI sent none)"),
        col("error", pa.string(), "why the value could not be read (null when it was)"),
        *_TOMBSTONED,
    ]),
)

PI_WATERMARKS = TableSpec(
    name="pi_watermarks",
    comment="Newest stored timestamp per PI point, written with the values; moves forward only (piflow; key webid)",
    key=("webid",),
    schema=pa.schema([
        col("webid", pa.string(), "WebID of the PI point (joins pi_points.webid and pi_values.webid)",
            nullable=False),
        col("watermark", TS, "newest event time of the point stored in pi_values (UTC)", nullable=False),
        col("updated_at", TS, "when piflow last moved the watermark (UTC)", nullable=False),
    ]),
)

PI_INGEST_RUNS = TableSpec(
    name="pi_ingest_runs",
    comment="One row per piflow job run: counts, requests, retries, errors and status (piflow; append, key run_id)",
    key=("run_id",),
    schema=pa.schema([
        col("run_id", pa.string(), "id of the run (piflow.run_id in the metadata of the Delta commits it made)",
            nullable=False),
        col("job", pa.string(), "the job: discover, backfill, sync, stream, af, events, view, ...", nullable=False),
        col("started_at", TS, "when the run started (UTC)", nullable=False),
        col("finished_at", TS, "when the run ended (UTC)", nullable=False),
        col("status", pa.string(), "ok, partial (some points could not be read), failed or interrupted",
            nullable=False),
        col("points", pa.int64(), "points (or AF objects) the run covered", nullable=False),
        col("values_written", pa.int64(), "rows the run wrote", nullable=False),
        col("requests", pa.int64(), "HTTP requests made to the PI Web API", nullable=False),
        col("retries", pa.int64(), "requests repeated after a retriable error", nullable=False),
        col("errors", pa.int64(), "errors that remained after the retries", nullable=False),
        col("duration_s", pa.float64(), "run time in seconds", nullable=False),
        col("window_start", TS, "start of the time window read (UTC); null when the job reads no window"),
        col("window_end", TS, "end of the time window read (UTC); null when the job reads no window"),
        col("message", pa.string(), "what the run has to say: notes, fallbacks used, the error of a failed run"),
        col("piflow_version", pa.string(), "the piflow version that ran", nullable=False),
    ]),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (PI_VALUES, PI_POINTS, PI_AF_ELEMENTS, PI_AF_ATTRIBUTES, PI_EVENT_FRAMES, PI_EVENT_FRAME_ATTRIBUTES,
                 PI_WATERMARKS, PI_INGEST_RUNS)
}

# An asset view: the fixed leading columns; :func:`view_schema` adds one column per attribute of the template.
VIEW = TableSpec(
    name="pi_view_<template>",
    comment="Asset view: one row per AF element of a template and interval, one column per attribute, "
            "interpolated (piflow view; merged on element_webid, timestamp)",
    key=("element_webid", "timestamp"),
    schema=pa.schema([
        col("element_webid", pa.string(), "WebID of the AF element (joins pi_af_elements.webid)", nullable=False),
        col("element", pa.string(), "name of the AF element", nullable=False),
        col("element_path", pa.string(), "AF path of the element", nullable=False),
        col("timestamp", TS, "interval time (UTC), a multiple of the interval since 1970-01-01", nullable=False),
    ]),
)


def view_schema(columns: Sequence[tuple[str, pa.DataType]]) -> pa.Schema:
    """A view's schema: the fixed columns followed by one nullable column per attribute (float64 or string)."""
    taken = {n.lower() for n in VIEW.schema.names}
    for name, _ in columns:
        if name.lower() in taken:
            raise ValueError(f"attribute column {name!r} collides with another column of the view")
        taken.add(name.lower())
    return pa.schema([*VIEW.schema, *(col(n, t, f"interpolated value of the attribute {n} (null where PI had "
                                                   "none, or a state in a numeric column)") for n, t in columns)])


def is_view(columns: Sequence[str]) -> bool:
    """Whether a table with these columns is an asset view (views are named by their users, not by piflow)."""
    fixed: list[str] = VIEW.schema.names
    return list(columns[:len(fixed)]) == fixed


def spec_of(name: str, columns: Sequence[str] = ()) -> TableSpec | None:
    """The spec of a table by name, else :data:`VIEW` when its columns are a view's, else None (not piflow's)."""
    return TABLES.get(name) or (VIEW if is_view(columns) else None)
