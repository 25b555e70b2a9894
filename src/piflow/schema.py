"""The Delta table contract as Arrow schemas (pure).

One place says what every table holds; the sinks, the Spark data source and the docs read it from here.
All timestamps are UTC microseconds. ``pi_values`` keeps every PI value without loss: numbers in
``value_double``, strings and timestamp values in ``value_string``, digital and system states in
``state_code``/``state_name``/``is_system``; ``value_kind`` says which of them holds the value.
"""

from __future__ import annotations

import pyarrow as pa

from piflow import af_schema

TS = pa.timestamp("us", tz="UTC")

# value_kind: what kind of PI value a row holds.
KIND_NUMBER = "number"  # Float16/32/64 and integer points, booleans as 0/1
KIND_STRING = "string"
KIND_TIMESTAMP = "timestamp"  # a Timestamp point's value, kept as its ISO string in value_string
KIND_DIGITAL = "digital"  # a digital state of the point's state set
KIND_SYSTEM = "system"  # a system state (I/O Timeout, Shutdown, ...), IsSystem true
KIND_NULL = "null"  # PI sent no value (Value null) for the event
VALUE_KINDS = (KIND_NUMBER, KIND_STRING, KIND_TIMESTAMP, KIND_DIGITAL, KIND_SYSTEM, KIND_NULL)

SOURCE_RECORDED = "recorded"
SOURCE_CHANNEL = "channel"
SOURCE_UPDATE = "update"

PI_VALUES = pa.schema(
    [
        pa.field("webid", pa.string(), nullable=False),
        pa.field("timestamp", TS, nullable=False),
        pa.field("seq", pa.int32(), nullable=False),
        pa.field("date", pa.date32(), nullable=False),
        pa.field("value_kind", pa.string(), nullable=False),
        pa.field("value_double", pa.float64()),
        pa.field("value_string", pa.string()),
        pa.field("state_code", pa.int32()),
        pa.field("state_name", pa.string()),
        pa.field("is_system", pa.bool_(), nullable=False),
        pa.field("good", pa.bool_(), nullable=False),
        pa.field("questionable", pa.bool_(), nullable=False),
        pa.field("substituted", pa.bool_(), nullable=False),
        pa.field("annotated", pa.bool_(), nullable=False),
        pa.field("units", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("ingested_at", TS, nullable=False),
    ]
)
PI_VALUES_KEY = ("webid", "timestamp", "seq")
PI_VALUES_PARTITION = ("date",)
# The columns that describe the PI event itself (ground truth compares these; not source/ingested_at).
PI_VALUES_CONTENT = tuple(n for n in PI_VALUES.names if n not in ("source", "ingested_at"))

PI_POINTS = pa.schema(
    [
        pa.field("webid", pa.string(), nullable=False),
        pa.field("id", pa.int64()),
        pa.field("name", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("server", pa.string(), nullable=False),
        pa.field("descriptor", pa.string()),
        pa.field("point_class", pa.string()),
        pa.field("point_type", pa.string()),
        pa.field("digital_set", pa.string()),
        pa.field("engineering_units", pa.string()),
        pa.field("span", pa.float64()),
        pa.field("zero", pa.float64()),
        pa.field("step", pa.bool_()),
        pa.field("future", pa.bool_()),
        pa.field("is_deleted", pa.bool_(), nullable=False),
        pa.field("first_seen", TS, nullable=False),
        pa.field("last_seen", TS, nullable=False),
    ]
)
PI_POINTS_KEY = ("webid",)

PI_INGEST_RUNS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("job", pa.string(), nullable=False),
        pa.field("started_at", TS, nullable=False),
        pa.field("finished_at", TS, nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("points", pa.int64(), nullable=False),
        pa.field("values_written", pa.int64(), nullable=False),
        pa.field("requests", pa.int64(), nullable=False),
        pa.field("retries", pa.int64(), nullable=False),
        pa.field("errors", pa.int64(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("window_start", TS),
        pa.field("window_end", TS),
        pa.field("message", pa.string()),
        pa.field("piflow_version", pa.string(), nullable=False),
    ]
)

PI_WATERMARKS = pa.schema(
    [
        pa.field("webid", pa.string(), nullable=False),
        pa.field("watermark", TS, nullable=False),
        pa.field("updated_at", TS, nullable=False),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "pi_points": PI_POINTS,
    "pi_values": PI_VALUES,
    "pi_ingest_runs": PI_INGEST_RUNS,
    "pi_watermarks": PI_WATERMARKS,
}

# The AF and event-frame tables are described in af_schema; one TABLES lists every table.
TABLES.update(af_schema.TABLES)
