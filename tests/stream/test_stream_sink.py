"""DeltaSink's filtered reads equal a full read filtered in memory: after appends, after merges (whose files
hold view-typed strings), across partitions, and before the table exists."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from piflow import schema
from piflow.jobs.value_diff import existing_rows
from piflow.jobs.watermarks import advance_watermarks, read_watermarks
from piflow.sinks.delta import DeltaSink, Write

from .test_stream_units import US, rows

A, B, C = "F1DPaaaa", "F1DPbbbb", "F1DPcccc"
DAY_US = 86_400_000_000


def canonical(table: pa.Table) -> list[dict[str, object]]:
    return table.sort_by([("webid", "ascending"), ("timestamp", "ascending"), ("seq", "ascending")]).to_pylist()


def full_then_filter(target: Path, flt: ds.Expression) -> pa.Table:
    """The reference: every row of the table (deltalake's own reader), filtered in memory."""
    dt = DeltaSink(str(target)).table("pi_values")
    assert dt is not None
    return dt.to_pyarrow_dataset().to_table(use_threads=False).select(list(schema.PI_VALUES.names)).filter(flt)


@pytest.fixture
def table_with_merges(tmp_path: Path) -> Path:
    sink = DeltaSink(str(tmp_path))
    for k in range(6):  # six small appends, two of them on the next day
        day = DAY_US if k >= 4 else 0
        sink.append("pi_values", rows((A, day + k * 10, 0), (B, day + k * 10, 0), (C, day + k * 10 + 1, 0)))
    changed = rows((A, 20, 0), (B, 30, 0)).set_column(5, "value_double", pa.array([-1.0, -2.0]))
    sink.commit("pi_values", lambda _: Write(upsert=changed, key=schema.PI_VALUES_KEY))  # string_view columns
    return tmp_path


@pytest.mark.parametrize("webids", [[A], [A, B], [C]])
@pytest.mark.parametrize("since", [0, 15, DAY_US + 45])
def test_filtered_reads_equal_the_reference(table_with_merges: Path, webids: list[str], since: int) -> None:
    sink = DeltaSink(str(table_with_merges))
    got = existing_rows(sink.snapshot("pi_values"), webids, US + since)
    flt = (ds.field("timestamp") >= pa.scalar(US + since, pa.int64()).cast(schema.TS)) & ds.field("webid").isin(webids)
    expected = full_then_filter(table_with_merges, flt).select(got.column_names)
    assert canonical(got) == canonical(expected)
    assert got.schema.field("date").type == pa.date32()


def test_the_merged_values_are_the_ones_read(table_with_merges: Path) -> None:
    got = existing_rows(DeltaSink(str(table_with_merges)).snapshot("pi_values"), [A, B], US)
    values = {(w, t.timestamp()): v for w, t, v in zip(got.column("webid").to_pylist(),
                                                      got.column("timestamp").to_pylist(),
                                                      got.column("value_double").to_pylist(), strict=True)}
    assert values[(A, (US + 20) / 1e6)] == -1.0
    assert values[(B, (US + 30) / 1e6)] == -2.0
    assert len(got) == 12
    assert set(pc.unique(got.column("date")).to_pylist()) == {date(2026, 1, 1), date(2026, 1, 2)}


def test_reads_without_filter_and_of_missing_tables(tmp_path: Path) -> None:
    sink = DeltaSink(str(tmp_path))
    assert existing_rows(sink.snapshot("pi_values"), [A], US).num_rows == 0  # no table yet
    sink.append("pi_values", rows((A, 1, 0)))
    assert sink.read("pi_values").num_rows == 1
    advance_watermarks(sink, {A: US + 1})
    assert read_watermarks(sink) == {A: US + 1}
