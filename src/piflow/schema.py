"""What a PI value is in the tables, and the schemas under the names the jobs import (pure).

The tables themselves (schemas with column comments, keys, partitioning, change feed) are described once, in
:mod:`piflow.tables`; this module names their schemas for the code that builds rows. ``pi_values`` keeps every
PI value without loss: numbers in ``value_double``, strings and timestamp values in ``value_string``, digital
and system states in ``state_code``/``state_name``/``is_system``; ``value_kind`` says which of them holds it.
"""

from __future__ import annotations

import pyarrow as pa

from piflow import tables
from piflow.tables import TS

__all__ = [
    "KIND_DIGITAL", "KIND_NULL", "KIND_NUMBER", "KIND_STRING", "KIND_SYSTEM", "KIND_TIMESTAMP", "PI_INGEST_RUNS",
    "PI_POINTS", "PI_POINTS_KEY", "PI_VALUES", "PI_VALUES_CONTENT", "PI_VALUES_KEY", "PI_VALUES_PARTITION",
    "PI_WATERMARKS", "SOURCE_CHANNEL", "SOURCE_RECORDED", "SOURCE_UPDATE", "TABLES", "TS", "VALUE_KINDS",
]

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

PI_VALUES = tables.PI_VALUES.schema
PI_VALUES_KEY = tables.PI_VALUES.key
PI_VALUES_PARTITION = tables.PI_VALUES.partition_by
# The columns that describe the PI event itself (ground truth compares these; not source/ingested_at).
PI_VALUES_CONTENT = tuple(n for n in PI_VALUES.names if n not in ("source", "ingested_at"))

PI_POINTS = tables.PI_POINTS.schema
PI_POINTS_KEY = tables.PI_POINTS.key
PI_INGEST_RUNS = tables.PI_INGEST_RUNS.schema
PI_WATERMARKS = tables.PI_WATERMARKS.schema

# Every table's schema by name (the registry's, for code that needs the schema alone).
TABLES: dict[str, pa.Schema] = {name: spec.schema for name, spec in tables.TABLES.items()}
