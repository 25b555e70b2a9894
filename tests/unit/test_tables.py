"""The table registry (``piflow.tables``): one description per table, and what derives from it without I/O.

The registry must cover every table the product writes: the code is walked for the table names it hands the
sink, so a job writing a new table without registering it fails here. The Delta side (what the sink creates,
what optimize compacts) is tested against real tables in ``tests/af/test_tables_at_target.py``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pyarrow as pa
import pytest

import piflow
from piflow import af_schema, schema, tables
from piflow.spark import unity
from piflow.tables import TABLES, VIEW, TableSpec, col, column_comment, is_view, spec_of, view_schema

SRC = Path(piflow.__file__).parent
SINK_CALLS = {"commit", "append", "ensure", "snapshot", "read", "table", "optimize", "version", "columns"}


def _is_sink(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "sink") or (isinstance(node, ast.Attribute)
                                                                   and node.attr == "sink")


def tables_named_in_the_code() -> dict[str, set[str]]:
    """Table name -> modules that pass it as a literal to the sink (``sink.commit("pi_values", ...)``,
    ``self.sink.append(...)``) or to ``write_changes(sink, "pi_points", ...)``."""
    found: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            f, arg = node.func, None
            if isinstance(f, ast.Attribute) and f.attr in SINK_CALLS and _is_sink(f.value) and node.args:
                arg = node.args[0]
            elif isinstance(f, ast.Name) and f.id == "write_changes" and len(node.args) > 1:
                arg = node.args[1]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.setdefault(arg.value, set()).add(path.relative_to(SRC).as_posix())
    return found


def test_every_table_the_code_writes_is_registered_and_every_registered_table_is_written() -> None:
    named = tables_named_in_the_code()
    assert {"pi_values", "pi_event_frame_attributes", "pi_ingest_runs"} <= set(named)  # the walk finds them
    assert set(named) == set(TABLES), {t: named.get(t) for t in set(named) ^ set(TABLES)}


def test_the_schema_modules_name_the_registrys_schemas() -> None:
    assert {name: spec.schema for name, spec in TABLES.items()} == schema.TABLES
    assert schema.PI_VALUES is TABLES["pi_values"].schema
    assert schema.PI_VALUES_KEY == TABLES["pi_values"].key == ("webid", "timestamp", "seq")
    assert schema.PI_VALUES_PARTITION == TABLES["pi_values"].partition_by == ("date",)
    assert schema.PI_POINTS is TABLES["pi_points"].schema
    assert schema.PI_WATERMARKS is TABLES["pi_watermarks"].schema
    assert schema.PI_INGEST_RUNS is TABLES["pi_ingest_runs"].schema
    assert af_schema.PI_EVENT_FRAME_ATTRIBUTES is TABLES["pi_event_frame_attributes"].schema
    assert TABLES["pi_af_attributes"].key == af_schema.PI_AF_ATTRIBUTES_KEY
    assert af_schema.VIEW_BASE is VIEW.schema
    assert af_schema.VIEW_KEY == VIEW.key == ("element_webid", "timestamp")
    assert schema.TS == af_schema.TS == tables.TS == pa.timestamp("us", tz="UTC")


@pytest.mark.parametrize("spec", [*TABLES.values(), VIEW], ids=lambda s: s.name)
def test_every_column_says_what_it_holds(spec: TableSpec) -> None:
    assert len(spec.comment) > 20
    comments = spec.comments()
    assert list(comments) == spec.schema.names
    assert all(len(c) > 5 for c in comments.values()), comments
    assert {n: column_comment(spec.schema.field(n)) for n in spec.schema.names} == comments
    assert set(spec.key) <= set(spec.schema.names)


def test_value_kind_comments_name_every_kind() -> None:
    for name in ("pi_values", "pi_event_frame_attributes"):
        comment = TABLES[name].comments()["value_kind"]
        assert all(kind in comment for kind in schema.VALUE_KINDS), comment


def test_a_spec_refuses_an_uncommented_column_or_a_key_it_lacks() -> None:
    good = pa.schema([col("webid", pa.string(), "the key", nullable=False)])
    TableSpec("t", good, key=("webid",), comment="a table")
    with pytest.raises(ValueError, match="'name' has no comment"):
        TableSpec("t", pa.schema([*good, pa.field("name", pa.string())]), key=("webid",), comment="a table")
    with pytest.raises(ValueError, match="key column 'id' is not in the schema"):
        TableSpec("t", good, key=("id",), comment="a table")
    with pytest.raises(ValueError, match="partition column 'date'"):
        TableSpec("t", good, key=("webid",), comment="a table", partition_by=("date",))


def test_layout_facts() -> None:
    """What the sink, optimize and Unity Catalog read from the registry (issue #13: these had drifted apart)."""
    assert {n for n, s in TABLES.items() if s.partition_by} == {"pi_values"}
    assert TABLES["pi_values"].zorder == ("webid", "timestamp")
    feed = {n for n, s in TABLES.items() if s.change_feed}
    assert feed == {"pi_points", "pi_af_elements", "pi_af_attributes", "pi_event_frames", "pi_event_frame_attributes"}
    assert all(TABLES[n].properties == {"delta.enableChangeDataFeed": "true"} for n in feed)
    assert TABLES["pi_values"].properties == {}


def test_views_are_told_by_their_leading_columns() -> None:
    pump = view_schema([("Flow", pa.float64()), ("Status", pa.string())])
    assert pump.names == [*VIEW.schema.names, "Flow", "Status"]
    assert all(column_comment(f) for f in pump)
    assert is_view(pump.names)
    assert spec_of("my_pumps", pump.names) is VIEW
    assert spec_of("pi_values", schema.PI_VALUES.names) is TABLES["pi_values"]
    assert spec_of("users_table", ["element_webid", "value"]) is None
    assert not any(is_view(s.schema.names) for s in TABLES.values())
    with pytest.raises(ValueError, match="collides"):
        view_schema([("Timestamp", pa.string())])


def test_unity_catalog_registers_every_table_with_the_registrys_comments() -> None:
    reg = unity.Registration(catalog="main", schema="pi")
    assert tuple(TABLES) == unity.TABLES
    assert reg.tables == unity.TABLES
    for name, spec in TABLES.items():
        create, comment_on, *alters, tags = unity.table_statements(reg, name)
        columns = re.findall(r"^  `(\w+)` ([A-Z<>]+)( NOT NULL)? COMMENT '((?:[^'\\]|\\.)+)'", create, re.M)
        assert [c[0] for c in columns] == spec.schema.names
        assert ("PARTITIONED BY" in create) == bool(spec.partition_by)
        assert ("'delta.enableChangeDataFeed' = 'true'" in create) == spec.change_feed
        assert comment_on == f"COMMENT ON TABLE `main`.`pi`.`{name}` IS {unity.quote_str(spec.comment)}"
        assert alters == [f"ALTER TABLE `main`.`pi`.`{name}` ALTER COLUMN `{n}` COMMENT {unity.quote_str(c)}"
                          for n, c in spec.comments().items()]
        assert f"'piflow_table' = '{name}'" in tags
