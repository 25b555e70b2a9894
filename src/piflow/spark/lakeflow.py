"""``PiLakeflowConnect``: piflow as a Databricks Lakeflow community connector.

It has the interface of the community connectors' ``LakeflowConnect`` (``list_tables``, ``get_table_schema``,
``read_table_metadata``, ``read_table``) and of their partitioned-read mixins (``SupportsPartition`` /
``SupportsPartitionedStream``: ``get_partitions``, ``read_partition``, ``latest_offset``, ``is_partitioned``).
When the connectors' framework (``databricks.labs.community_connector``) is importable the class is
registered as a virtual subclass of its mixin, so the framework's ``isinstance`` checks route ``pi_values``
through the partitioned stream reader; without it (here, in tests) the class stands alone.

Tables: ``pi_values`` is an append table read incrementally and in partitions: its offset holds one position
per point (see :mod:`piflow.spark.plan`) and converges, i.e. ``latest_offset(start)`` returns ``start`` again
once every point has reached the end. The end is fixed when the connector first looks at the clock, so one
pipeline update always finishes; the next update (a new connector) continues from its offset. The other
tables (the point catalog, AF elements and attributes, event frames) are snapshots keyed by WebID. Schemas
and keys are the registry's (:mod:`piflow.tables`). Records are JSON-compatible dicts (timestamps as ISO-8601
UTC strings), as the interface asks.

Connection options are those of the ``pi`` source (``url``, ``auth``, ``username``, ``password``, ...);
table options (``points``, ``start``, ``window``, ``maxBatchWindow``, ``shard``, ...) may be set per table.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from piflow.errors import ConfigError
from piflow.spark.options import SourceOptions
from piflow.spark.source import TABLE_SCHEMAS, PiSource, read_partition, table_schema
from piflow.spark.sparktypes import spark_schema
from piflow.tables import TABLES as REGISTRY

# The tables the ``pi`` source reads; schemas and keys come from the registry (piflow.tables).
TABLES = list(TABLE_SCHEMAS)
STREAMED = "pi_values"  # the one table read incrementally (ingestion "append"); the others are snapshots
CURSOR_FIELDS = {"pi_values": "timestamp", "pi_event_frames": "start_time"}  # the time each table's rows follow


def table_metadata(table: str) -> dict[str, Any]:
    """What ``read_table_metadata`` answers for ``table``: key, cursor and ingestion type."""
    meta: dict[str, Any] = {"primary_keys": list(REGISTRY[table].key)}
    if table in CURSOR_FIELDS:
        meta["cursor_field"] = CURSOR_FIELDS[table]
    meta["ingestion_type"] = "append" if table == STREAMED else "snapshot"
    return meta


def _json_value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat().replace("+00:00", "Z")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, bytes):
        return base64.b64encode(v).decode("ascii")
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    return v


def records(table: pa.Table) -> Iterator[dict[str, Any]]:
    """Rows as JSON-compatible dicts (what the community framework's ``parse_value`` expects)."""
    for batch in table.to_batches(max_chunksize=10_000):
        for row in batch.to_pylist():
            yield {k: _json_value(v) for k, v in row.items()}


class PiLakeflowConnect:
    """The PI System as a Lakeflow community connector (see the module docstring)."""

    def __init__(self, options: dict[str, str]) -> None:
        self._options = SourceOptions.parse({**options, "table": STREAMED})
        self._caps: dict[str, int] = {}  # per table-options: the end fixed at first use
        self._sources: dict[str, PiSource] = {}

    def __repr__(self) -> str:
        return f"PiLakeflowConnect({self._options!r})"

    # ---- the base interface ------------------------------------------------------------------------------
    def list_tables(self) -> list[str]:
        return list(TABLES)

    def get_table_schema(self, table_name: str, table_options: dict[str, str]) -> Any:
        return spark_schema(table_schema(self._table(table_name)), long_ints=True)

    def read_table_metadata(self, table_name: str, table_options: dict[str, str]) -> dict[str, Any]:
        return table_metadata(self._table(table_name))

    def read_table(self, table_name: str, start_offset: dict[str, Any] | None,
                   table_options: dict[str, str]) -> tuple[Iterator[dict[str, Any]], dict[str, Any] | None]:
        """One micro-batch: (records, end offset). Snapshot tables: everything, offset None."""
        table = self._table(table_name)
        if table != STREAMED:
            parts = self.get_partitions(table, table_options)
            return self._chain(table, parts, table_options), None
        end = self.latest_offset(table, table_options, start_offset)
        parts = self.get_partitions(table, table_options, start_offset or {}, end)
        return self._chain(table, parts, table_options), end

    # ---- partitioned reads (SupportsPartition / SupportsPartitionedStream) ----------------------------------
    def is_partitioned(self, table_name: str) -> bool:
        return self._table(table_name) == STREAMED

    def latest_offset(self, table_name: str, table_options: dict[str, str],
                      start_offset: dict[str, Any] | None = None) -> dict[str, Any]:
        source = self._source(table_name, table_options)
        key = self._key(table_name, table_options)
        if key not in self._caps:
            self._caps[key] = source.stream_target()[1]
        return source.latest_offset(start_offset, self._caps[key])

    def get_partitions(self, table_name: str, table_options: dict[str, str],
                       start_offset: dict[str, Any] | None = None,
                       end_offset: dict[str, Any] | None = None) -> Sequence[dict[str, Any]]:
        """Batch (no offsets): the whole table. Stream: the points' ranges between the two offsets."""
        source = self._source(table_name, table_options)
        if end_offset is None:
            return source.batch_partitions()
        if start_offset is not None and dict(start_offset) == dict(end_offset):
            return []
        return source.stream_partitions(start_offset, end_offset)

    def read_partition(self, table_name: str, partition: dict[str, Any],
                       table_options: dict[str, str]) -> Iterator[dict[str, Any]]:
        opts = self._source(table_name, table_options).opts
        return records(read_partition(opts, partition))

    # ---- helpers ------------------------------------------------------------------------------------------
    def _table(self, table_name: str) -> str:
        if table_name not in TABLES:
            raise ConfigError("tableName", f"unknown table {table_name!r}; one of {TABLES}")
        return table_name

    @staticmethod
    def _key(table_name: str, table_options: Mapping[str, str]) -> str:
        return table_name + "|" + "|".join(f"{k}={v}" for k, v in sorted(table_options.items()))

    def _source(self, table_name: str, table_options: Mapping[str, str]) -> PiSource:
        key = self._key(self._table(table_name), table_options)
        if key not in self._sources:
            opts = self._options.with_table({**table_options, "table": table_name})
            self._sources[key] = PiSource(opts)
        return self._sources[key]

    def _chain(self, table: str, parts: Sequence[dict[str, Any]], table_options: dict[str, str]
               ) -> Iterator[dict[str, Any]]:
        for part in parts:
            yield from self.read_partition(table, part, table_options)


def _register_with_framework() -> None:
    """Make ``isinstance(connector, SupportsPartitionedStream)`` true inside the community framework."""
    try:
        from databricks.labs.community_connector.interface import (
            LakeflowConnect,
            SupportsPartitionedStream,
        )
    except ImportError:
        return
    for base in (LakeflowConnect, SupportsPartitionedStream):
        register = getattr(base, "register", None)  # present on ABCs only
        if register is not None:
            register(PiLakeflowConnect)


_register_with_framework()
