"""Every way a Delta table can refuse piflow, as the one line a user reads (a :class:`SinkError`).

Real tables and real file-system failures, no mocks: a target under /sys (the kernel refuses to create
anything there, even for root), a path through a regular file, a corrupt ``_delta_log`` entry, a data file
deleted or overwritten behind the table's back, a table of piflow's name with another schema, and a second
writer committing between a plan's snapshot and its commit. Each message must name the table and where it
is; what is left on disk is read back with delta-rs.
"""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from piflow import schema as contract
from piflow.errors import SinkError, WriteConflictError
from piflow.sinks.delta import DeltaSink, Snapshot, Write, sink_error

POINTS = contract.TABLES["pi_points"]
RUNS = contract.TABLES["pi_ingest_runs"]
KEY = contract.PI_POINTS_KEY


def rows_of(schema: pa.Schema, n: int, start: int = 0) -> pa.Table:
    """``n`` valid rows of ``schema``: row i holds i (numbers), "<column>-i" (strings), 2026-01-01 + i s."""
    cols: dict[str, pa.Array] = {}
    for f in schema:
        span = range(start, start + n)
        if pa.types.is_string(f.type):
            cols[f.name] = pa.array([f"{f.name}-{i}" for i in span], f.type)
        elif pa.types.is_timestamp(f.type):
            cols[f.name] = pa.array([datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i) for i in span], f.type)
        elif pa.types.is_integer(f.type):
            cols[f.name] = pa.array(list(span), f.type)
        elif pa.types.is_floating(f.type):
            cols[f.name] = pa.array([float(i) for i in span], f.type)
        elif pa.types.is_boolean(f.type):
            cols[f.name] = pa.array([False] * n, f.type)
        else:
            raise TypeError(f"rows_of: no sample value for {f.name}: {f.type}")
    return pa.table(cols, schema=schema)


def points_sink(tmp_path: Path, *batches: int) -> tuple[DeltaSink, str]:
    """A target whose pi_points got one commit per batch size given; returns the sink and the table's path."""
    sink = DeltaSink(str(tmp_path / "lake"))
    start = 0
    for n in batches:
        rows = rows_of(POINTS, n, start)
        sink.commit("pi_points", lambda snap: Write(append=rows, key=KEY))  # noqa: B023 (called right here)
        start += n
    return sink, str(tmp_path / "lake" / "pi_points")


def parquet_files(table_path: str) -> list[Path]:
    return sorted(Path(table_path).glob("*.parquet"))


def webids(table_path: str) -> list[str]:
    return sorted(DeltaTable(table_path).to_pyarrow_table(columns=["webid"]).column("webid").to_pylist())


# ---- where the target is ----------------------------------------------------------------------------------


def test_a_target_where_nothing_may_be_created_says_permission_denied() -> None:
    # sysfs refuses mkdir with EPERM, for root too.
    with pytest.raises(SinkError) as info:
        DeltaSink("/sys/piflow-lake").ensure("pi_points", POINTS)
    assert str(info.value) == ("cannot create the folder for pi_points at /sys/piflow-lake: permission denied; "
                               "let this user write to that folder, or choose another --target")


def test_a_target_folder_that_exists_but_takes_no_table_names_the_table() -> None:
    with pytest.raises(SinkError) as info:
        DeltaSink("/sys").append("pi_ingest_runs", rows_of(RUNS, 1))
    assert str(info.value) == ("cannot create pi_ingest_runs at /sys/pi_ingest_runs: permission denied; "
                               "let this user write to that folder, or choose another --target")


def test_a_target_through_a_regular_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a folder")
    with pytest.raises(SinkError) as info:
        DeltaSink(str(tmp_path / "notes.txt" / "lake")).ensure("pi_points", POINTS)
    assert str(info.value) == (f"cannot create the folder for pi_points at {tmp_path}/notes.txt/lake: the path goes "
                               "through a file, not a folder; choose a folder as --target")


def test_a_table_whose_log_folder_is_a_file_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "lake" / "pi_points").mkdir(parents=True)
    (tmp_path / "lake" / "pi_points" / "_delta_log").write_text("x")
    with pytest.raises(SinkError) as info:
        DeltaSink(str(tmp_path / "lake")).read("pi_points")
    assert str(info.value) == (f"cannot open pi_points at {tmp_path}/lake/pi_points: the path goes through a file, "
                               "not a folder; choose a folder as --target")


def test_an_unknown_storage_scheme_is_not_mistaken_for_no_table_yet() -> None:
    with pytest.raises(SinkError) as info:
        DeltaSink("foo://bucket/pi").version("pi_points")
    assert str(info.value) == ("cannot open pi_points at foo://bucket/pi/pi_points: delta-rs knows no storage scheme "
                               "foo://; choose a folder or an object-store URI such as s3://bucket/pi as --target")


# ---- what is in the table ---------------------------------------------------------------------------------


def test_a_corrupt_log_entry_is_a_sink_error_naming_the_table(tmp_path: Path) -> None:
    sink, path = points_sink(tmp_path, 2)
    log = sorted(Path(path, "_delta_log").glob("*.json"))[-1]
    log.write_text("{not json", encoding="utf-8")
    with pytest.raises(SinkError) as info:
        sink.read("pi_points")
    assert str(info.value).startswith(f"cannot open pi_points at {path}: ")
    assert "Json error" in str(info.value)


def test_a_data_file_deleted_behind_the_tables_back_fails_the_read_naming_it(tmp_path: Path) -> None:
    sink, path = points_sink(tmp_path, 2)
    (gone,) = parquet_files(path)
    gone.unlink()
    with pytest.raises(SinkError) as info:
        sink.read("pi_points")
    assert str(info.value).startswith(f"read of pi_points at {path} failed: ")
    assert gone.name in str(info.value)


def test_a_data_file_that_is_not_parquet_fails_the_read_naming_it(tmp_path: Path) -> None:
    sink, path = points_sink(tmp_path, 2)
    (bad,) = parquet_files(path)
    bad.write_bytes(b"PAR1 but not really")
    with pytest.raises(SinkError) as info:
        sink.read("pi_points")
    assert str(info.value).startswith(f"read of pi_points at {path} failed: ")
    assert bad.name in str(info.value)
    assert "Parquet magic bytes not found" in str(info.value)


def test_a_merge_over_a_missing_data_file_fails_and_commits_nothing(tmp_path: Path) -> None:
    sink, path = points_sink(tmp_path, 3)
    (gone,) = parquet_files(path)
    gone.unlink()
    version = DeltaTable(path).version()
    with pytest.raises(SinkError) as info:
        sink.commit("pi_points", lambda snap: Write(upsert=rows_of(POINTS, 2, 1), key=KEY))
    assert str(info.value).startswith(f"commit to pi_points at {path} failed: ")
    assert gone.stem in str(info.value)
    assert DeltaTable(path).version() == version


def test_an_optimize_over_a_missing_data_file_fails_naming_the_table(tmp_path: Path) -> None:
    sink, path = points_sink(tmp_path, 2, 2)  # two small files: something to compact
    parquet_files(path)[0].unlink()
    version = DeltaTable(path).version()
    with pytest.raises(SinkError) as info:
        sink.optimize("pi_points")
    assert str(info.value).startswith(f"optimize of pi_points at {path} failed: ")
    assert DeltaTable(path).version() == version


def test_a_table_of_piflows_name_without_its_columns_is_refused_untouched(tmp_path: Path) -> None:
    path = str(tmp_path / "lake" / "pi_points")
    write_deltalake(path, pa.table({"tag": ["A"], "reading": [1.5]}))
    with pytest.raises(SinkError) as info:
        DeltaSink(str(tmp_path / "lake")).commit("pi_points", lambda snap: Write(append=rows_of(POINTS, 1), key=KEY))
    assert str(info.value) == (
        f"pi_points at {path} is not a piflow table: it lacks the columns webid, id, name, path and 13 more (it has "
        "tag, reading); piflow does not change a table it did not write: move it out of the target, or choose "
        "another --target")
    assert DeltaTable(path).version() == 0


def test_a_table_of_piflows_name_with_other_column_types_refuses_the_append(tmp_path: Path) -> None:
    # Every column is there, but `points` holds structs: the append fails, and the advice is never to overwrite.
    path = str(tmp_path / "lake" / "pi_ingest_runs")
    struct = pa.struct([("count", pa.int64())])
    write_deltalake(path, pa.table({f.name: pa.array([None], struct) if f.name == "points" else rows_of(RUNS, 1)
                                    .column(f.name) for f in RUNS}))
    with pytest.raises(SinkError) as info:
        DeltaSink(str(tmp_path / "lake")).append("pi_ingest_runs", rows_of(RUNS, 1, 5))
    assert str(info.value) == (
        f"append to pi_ingest_runs at {path}: the table does not have the schema piflow writes (Cannot cast field "
        'points from Int64 to Struct("count": Int64)); piflow does not change a table it did not write: move '
        "pi_ingest_runs out of the target, or choose another --target")
    assert DeltaTable(path).version() == 0


def test_a_plan_with_rows_of_another_schema_fails_the_commit_naming_the_table(tmp_path: Path) -> None:
    sink, path = points_sink(tmp_path, 1)
    stray = pa.table({"webid": ["W9"]})
    for write, verb in ((Write(append=stray, key=KEY), "append to"), (Write(overwrite=stray), "overwrite of")):
        with pytest.raises(SinkError) as info:
            sink.commit("pi_points", lambda snap: write)  # noqa: B023 (called right here)
        assert str(info.value).startswith(f"{verb} pi_points at {path}: the table does not have the schema piflow "
                                          "writes (")
    assert webids(path) == ["webid-0"]


# ---- other writers ------------------------------------------------------------------------------------------


def test_a_writer_that_keeps_losing_gives_up_naming_the_winner_and_lands_nothing(tmp_path: Path) -> None:
    sink, path = points_sink(tmp_path, 1)
    rival = DeltaSink(str(tmp_path / "lake"))
    attempts = 0

    def plan(snap: Snapshot) -> Write:
        # Between this plan's snapshot and its commit, another writer commits: every attempt is stale.
        nonlocal attempts
        attempts += 1
        rival.commit("pi_points", lambda s: Write(append=rows_of(POINTS, 1, 100 + attempts), key=KEY,
                                                  metadata={"piflow.job": "sync", "piflow.run_id": f"r{attempts}"}))
        return Write(append=rows_of(POINTS, 1, 200), key=KEY)

    with pytest.raises(WriteConflictError) as info:
        sink.commit("pi_points", plan, attempts=2)
    assert str(info.value) == ("pi_points: gave up after 2 attempts, other writers kept committing first (last: sync "
                               "run r2 (version 3)); nothing of this write landed")
    assert webids(path) == ["webid-0", "webid-101", "webid-102"]  # the rival's rows, none of this writer's
    assert sink.conflicts == 2


# ---- the translation itself -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "expected"), [
    (errno.EACCES, "permission denied; let this user read that folder, or choose another --target"),
    (errno.EROFS, "the file system is read-only; choose a --target on a writable disk"),
    (errno.ENOSPC, "the disk is full (or over quota); free space and run again, the table keeps its last commit"),
    (errno.EDQUOT, "the disk is full (or over quota); free space and run again, the table keeps its last commit"),
])
def test_each_os_error_becomes_advice_that_never_risks_the_data(code: int, expected: str) -> None:
    exc = OSError(code, os.strerror(code), "/lake/pi_values/part-0.parquet")
    assert str(sink_error("read of", "pi_values", "/lake/pi_values", exc, writing=False)) == (
        f"read of pi_values at /lake/pi_values: {expected}")


def test_delta_rs_advice_to_overwrite_the_table_is_never_passed_on() -> None:
    exc = ValueError("Schema error: Cannot cast schema, number of fields does not match: 1 vs 17. To overwrite "
                     "the schema use schema_mode='overwrite' with mode='overwrite'.")
    message = str(sink_error("append to", "pi_values", "/lake/pi_values", exc))
    assert message == ("append to pi_values at /lake/pi_values: the table does not have the schema piflow writes "
                       "(Schema error: Cannot cast schema, number of fields does not match: 1 vs 17); piflow does "
                       "not change a table it did not write: move pi_values out of the target, or choose another "
                       "--target")
