"""``PiLakeflowConnect`` against the documented contract of the Lakeflow community connectors.

The contract (``LakeflowConnect`` and the ``SupportsPartition`` / ``SupportsPartitionedStream`` mixins, and
the framework's own test suite): unique table names; unknown tables raise; schemas are StructTypes with unique
fields and LongType rather than IntegerType; metadata carries a valid ``ingestion_type`` with primary keys and
cursor field present in the schema; ``read_table`` returns (iterator of dicts, JSON-serialisable offset or None
for snapshots); records parse with the schema and non-nullable fields are set; partition descriptors are
JSON-serialisable dicts; feeding ``latest_offset`` its own answer converges by equality. On top of the shape,
the content is checked against the emulator's ground truth: no value lost or duplicated across partitions and
micro-batches, and every column populated somewhere.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from pyspark.sql import types as T

from piflow import schema
from piflow.emulator.server import EmulatorServer
from piflow.spark.lakeflow import PiLakeflowConnect
from piflow.spark.options import TABLE_ALIASES
from piflow.spark.plan import decode_offset, point_key
from piflow.spark.source import TABLE_SCHEMAS, table_schema
from piflow.spark.sparktypes import spark_schema
from piflow.tables import TABLES
from tests.rows import assert_same_rows

from .conftest import T0, specs, truth

pytestmark = pytest.mark.slow

START = T0 - timedelta(hours=3)
INGESTION_TYPES = {"snapshot", "cdc", "cdc_with_deletes", "append"}


def connector(srv: EmulatorServer) -> PiLakeflowConnect:
    return PiLakeflowConnect({"url": srv.url, "safetyLag": "0"})


def table_options(**extra: str) -> dict[str, str]:
    opts = {"start": START.isoformat(), "end": T0.isoformat(), "window": "1h", "pointsPerPartition": "15",
            "maxBatchWindow": "50m", "pointsRefresh": "0"}
    opts.update(extra)
    return opts


# ---- a strict reading of a JSON record with a StructType (what the framework's parse_value accepts) ----------
def parse(value: Any, t: Any, where: str) -> Any:
    if value is None:
        return None
    if isinstance(t, T.StringType):
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
        return value
    if isinstance(t, T.LongType):
        assert type(value) is int, f"{where}: {value!r} is not an integer"
        return value
    if isinstance(t, T.DoubleType):
        assert type(value) in (int, float), f"{where}: {value!r} not a number"
        return float(value)
    if isinstance(t, T.BooleanType):
        assert isinstance(value, bool), f"{where}: {value!r} is not a boolean"
        return value
    if isinstance(t, T.DateType):
        assert isinstance(value, str), f"{where}: dates travel as ISO strings"
        return date.fromisoformat(value)
    if isinstance(t, T.TimestampType):
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
        assert value.endswith("Z"), f"{where}: {value!r} is not ISO UTC"
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(t, T.ArrayType):
        assert isinstance(value, list), f"{where}: {value!r} is not a list"
        return [parse(v, t.elementType, where) for v in value]
    raise AssertionError(f"{where}: unexpected type {t}")


def parse_record(record: dict[str, Any], struct: Any, table: str) -> dict[str, Any]:
    assert isinstance(record, dict)
    assert set(record) <= set(struct.fieldNames()), f"{table}: unknown fields {set(record) - set(struct.fieldNames())}"
    out = {}
    for f in struct.fields:
        v = parse(record.get(f.name), f.dataType, f"{table}.{f.name}")
        assert v is not None or f.nullable, f"{table}: non-nullable {f.name} is None"
        out[f.name] = v
    return out


def values_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Parsed pi_values records back into the contract's Arrow types (for comparison with ground truth)."""
    return pa.Table.from_pylist(list(rows), schema=schema.PI_VALUES)


def read_all(c: PiLakeflowConnect, table: str, parts: Iterable[dict[str, Any]], opts: dict[str, str]
             ) -> list[dict[str, Any]]:
    struct = c.get_table_schema(table, opts)
    return [parse_record(r, struct, table) for p in parts for r in c.read_partition(table, p, opts)]


# =====================================================================================================================
def test_tables_schemas_and_metadata(emulator: EmulatorServer) -> None:
    c = connector(emulator)
    tables = c.list_tables()
    assert tables
    assert all(isinstance(t, str) for t in tables)
    assert len(set(tables)) == len(tables)
    assert "pi_values" in tables
    for t in tables:
        struct = c.get_table_schema(t, {})
        assert isinstance(struct, T.StructType)
        assert struct.fields
        names = struct.fieldNames()
        assert len(names) == len(set(names))
        assert not any(isinstance(f.dataType, T.IntegerType) for f in struct.fields), f"{t}: use LongType"
        meta = c.read_table_metadata(t, {})
        assert meta["ingestion_type"] in INGESTION_TYPES
        if meta["ingestion_type"] != "append":
            assert meta["primary_keys"]
            assert all(k in names for k in meta["primary_keys"])
        if meta["ingestion_type"] in ("cdc", "cdc_with_deletes"):
            assert meta["cursor_field"] in names
        # deterministic: the same answer twice and from a fresh connector
        assert meta == c.read_table_metadata(t, {}) == connector(emulator).read_table_metadata(t, {})
        assert struct == connector(emulator).get_table_schema(t, {})
    values = c.get_table_schema("pi_values", {})
    assert values.fieldNames() == schema.PI_VALUES.names
    assert c.read_table_metadata("pi_values", {}) == {
        "primary_keys": list(schema.PI_VALUES_KEY), "cursor_field": "timestamp", "ingestion_type": "append"}


def test_schemas_and_keys_are_the_registrys(emulator: EmulatorServer) -> None:
    """The adapter and the ``pi`` source serve the tables the ``table`` option names, as the registry says."""
    c = connector(emulator)
    assert c.list_tables() == list(dict.fromkeys(TABLE_ALIASES.values())) == list(TABLE_SCHEMAS)
    assert set(c.list_tables()) <= set(TABLES)
    for t in c.list_tables():
        spec = TABLES[t]
        assert table_schema(t) is spec.schema
        assert c.get_table_schema(t, {}) == spark_schema(spec.schema, long_ints=True)
        struct = spark_schema(spec.schema)
        assert [(f.name, f.nullable) for f in struct.fields] == [(f.name, f.nullable) for f in spec.schema]
        assert c.read_table_metadata(t, {})["primary_keys"] == list(spec.key)


def test_unknown_table_raises_everywhere(emulator: EmulatorServer) -> None:
    c = connector(emulator)
    for call in (lambda: c.get_table_schema("nope", {}), lambda: c.read_table_metadata("nope", {}),
                 lambda: c.read_table("nope", {}, {}), lambda: c.get_partitions("nope", {})):
        with pytest.raises(Exception, match="nope"):
            call()


def test_batch_partitions_are_stable_serialisable_and_cover_the_truth(emulator: EmulatorServer) -> None:
    c, opts = connector(emulator), table_options()
    parts = list(c.get_partitions("pi_values", opts))
    assert len(parts) == 3 * 3  # 40 points in groups of 15, three one-hour windows
    assert all(isinstance(p, dict) for p in parts)
    assert json.loads(json.dumps(parts)) == parts
    assert pickle.loads(pickle.dumps(parts)) == parts  # noqa: S301 - our own bytes
    assert list(connector(emulator).get_partitions("pi_values", opts)) == parts  # stable across connectors
    rows = read_all(c, "pi_values", reversed(parts), opts)  # any order, any executor
    assert_same_rows(values_table(rows), truth(emulator, START, T0 - timedelta(microseconds=1)))


def test_every_column_is_populated_somewhere(emulator: EmulatorServer) -> None:
    c = connector(emulator)
    opts = table_options(start=(T0 - timedelta(days=2)).isoformat())
    for t in c.list_tables():
        struct = c.get_table_schema(t, opts)
        if t == "pi_values":
            parts = c.get_partitions(t, table_options())
            rows = read_all(c, t, parts, opts)
        else:
            iterator, offset = c.read_table(t, {}, opts)
            assert offset is None  # snapshots carry no offset
            rows = [parse_record(r, struct, t) for r in iterator]
        assert rows, f"{t} is empty"
        empty = [f.name for f in struct.fields if all(r[f.name] in (None, []) for r in rows)]
        assert not empty, f"{t}: columns never populated: {empty}"


def test_micro_batches_converge_and_hold_every_value_once(emulator: EmulatorServer) -> None:
    c, opts = connector(emulator), table_options()
    start: dict[str, Any] = {}
    end = c.latest_offset("pi_values", opts)
    assert isinstance(end, dict)
    assert end
    assert json.loads(json.dumps(end)) == end
    rows: list[dict[str, Any]] = []
    steps = 0
    while end != start:
        steps += 1
        assert steps < 20, "offsets did not converge"
        parts = c.get_partitions("pi_values", opts, start_offset=start, end_offset=end)
        assert json.loads(json.dumps(list(parts))) == list(parts)
        # a replay of the same micro-batch by a fresh connector plans the same partitions
        assert list(connector(emulator).get_partitions("pi_values", opts, start_offset=start, end_offset=end)) \
            == list(parts)
        rows += read_all(c, "pi_values", parts, opts)
        start, end = end, c.latest_offset("pi_values", opts, start_offset=end)
    assert steps == 4  # three hours (end of the window is now, lag 0) in steps of at most 50 minutes
    assert c.get_partitions("pi_values", opts, start_offset=start, end_offset=end) == []
    # per-point watermarks live in the offset: every point sits at the end
    final = decode_offset(end)
    assert set(final.at) == {point_key(p.webid) for p in specs(emulator)}
    assert set(final.at.values()) == {int(T0.timestamp()) * 10_000_000}
    assert_same_rows(values_table(rows), truth(emulator, START, T0 - timedelta(microseconds=1)))


def test_read_table_offsets_converge_by_equality(emulator: EmulatorServer) -> None:
    c, opts = connector(emulator), table_options(maxBatchWindow="2h", points="*.FLOW")
    offset: dict[str, Any] | None = {}
    rows: list[dict[str, Any]] = []
    struct = c.get_table_schema("pi_values", opts)
    for _ in range(10):
        iterator, nxt = c.read_table("pi_values", offset, opts)
        assert isinstance(nxt, dict)
        assert json.loads(json.dumps(nxt)) == nxt
        rows += [parse_record(r, struct, "pi_values") for r in iterator]
        if nxt == offset:
            break
        offset = nxt
    else:
        pytest.fail("read_table never returned its start offset")
    flows = [p for p in specs(emulator) if p.name.endswith(".FLOW")]
    assert flows
    assert_same_rows(values_table(rows), truth(emulator, START, T0 - timedelta(microseconds=1), flows))
    again, same = c.read_table("pi_values", offset, opts)
    assert same == offset
    assert list(again) == []
