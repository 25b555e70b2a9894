"""The Delta tables at a target are the registry's (``piflow.tables``): created as it says, and all compacted.

The real jobs run against the emulator (``af``, ``events`` twice, ``view`` twice into a table the user named),
then ``run_optimize``; delta-rs reads back what landed: each table's partitioning, change data feed, table and
column comments, and after optimize a single file and an OPTIMIZE commit in ``pi_event_frame_attributes`` and
in the view (both were left out of ``piflow optimize`` before), with the same rows; a table of the user's at the
target is not touched.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from piflow.config import PiflowSettings
from piflow.emulator.server import EmulatorServer
from piflow.jobs.af.events import run_events
from piflow.jobs.af.job import run_af
from piflow.jobs.af.views import run_view
from piflow.jobs.optimize import run_optimize
from piflow.jobs.runs import RunResult
from piflow.sinks.delta import DeltaSink
from piflow.tables import TABLES, VIEW, TableSpec, view_schema
from tests.af.conftest import settings_for

VIEW_NAME = "pumps_hourly"  # a name of the user's choosing: optimize must find the view by what it holds


def assert_laid_out(path: Path, spec: TableSpec) -> None:
    """The Delta table at ``path`` has the registry's partitioning, properties and comments."""
    dt = DeltaTable(str(path))
    meta = dt.metadata()
    assert list(meta.partition_columns) == list(spec.partition_by), path
    assert dict(meta.configuration) == spec.properties, path
    assert meta.description == spec.comment, path
    comments = {f.name: f.metadata.get("comment") for f in dt.schema().fields}
    expected = spec.comments()
    assert {n: comments[n] for n in expected} == expected, path
    assert all(comments.values()), path  # a view's attribute columns too


def sorted_rows(target: Path, name: str, key: tuple[str, ...]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = DeltaSink(str(target)).read(name).to_pylist()
    return sorted(rows, key=lambda r: tuple(str(r[k]) for k in key))


def test_the_sink_creates_every_table_as_the_registry_says(tmp_path: Path) -> None:
    sink = DeltaSink(str(tmp_path))
    for name, spec in TABLES.items():
        sink.ensure(name, spec.schema)
    sink.ensure("my_view", view_schema([("Flow", pa.float64())]))
    assert sink.table_names() == sorted([*TABLES, "my_view"])
    for name, spec in TABLES.items():
        assert_laid_out(tmp_path / name, spec)
    assert_laid_out(tmp_path / "my_view", VIEW)


def test_tables_are_listed_at_a_uri_target_and_a_missing_target_has_none(tmp_path: Path) -> None:
    sink = DeltaSink((tmp_path / "lake").as_uri())
    sink.ensure("pi_watermarks", TABLES["pi_watermarks"].schema)
    sink.ensure("pumps", view_schema([("Flow", pa.float64())]))
    (tmp_path / "lake" / "not_a_table").mkdir()
    assert sink.table_names() == ["pi_watermarks", "pumps"]
    assert sink.columns("pumps") == [*VIEW.schema.names, "Flow"]
    assert sink.columns("absent") is None
    assert DeltaSink(str(tmp_path / "missing")).table_names() == []


def test_optimize_compacts_every_table_including_event_frame_attributes_and_views(
        emulator: EmulatorServer, tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path, start="*-1d")
    asyncio.run(run_af(settings))
    asyncio.run(run_events(settings, template="Downtime"))
    asyncio.run(run_events(settings, template="Alarm"))
    for start, end in (("*-1d", "*-12h"), ("*-11h", "*")):  # two commits, no row in both
        asyncio.run(run_view(settings, template="Pump", interval="1h", start=start, end=end, table=VIEW_NAME))
    notes = tmp_path / "notes"  # the user's own table beside piflow's
    for i in range(2):
        write_deltalake(str(notes), pa.table({"note": [f"n{i}"]}), mode="append")

    sink = DeltaSink(str(tmp_path))
    registered = {"pi_af_elements", "pi_af_attributes", "pi_event_frames", "pi_event_frame_attributes",
                  "pi_ingest_runs"}
    assert set(sink.table_names()) == registered | {VIEW_NAME, "notes"}
    for name in registered:
        assert_laid_out(tmp_path / name, TABLES[name])
    assert_laid_out(tmp_path / VIEW_NAME, VIEW)

    compacted = {"pi_event_frame_attributes": TABLES["pi_event_frame_attributes"].key, VIEW_NAME: VIEW.key}
    files = {name: len(DeltaTable(str(tmp_path / name)).file_uris()) for name in compacted}
    assert all(n >= 2 for n in files.values()), files  # something to compact
    rows = {name: sorted_rows(tmp_path, name, key) for name, key in compacted.items()}
    assert all(rows.values())
    notes_version = DeltaTable(str(notes)).version()

    summary = run_optimize(settings)

    assert set(summary) == registered | {VIEW_NAME}
    for name, key in compacted.items():
        stats = summary[name]
        assert isinstance(stats, dict)
        assert (stats["numFilesRemoved"], stats["numFilesAdded"]) == (files[name], 1), name
        dt = DeltaTable(str(tmp_path / name))
        assert len(dt.file_uris()) == 1
        assert "OPTIMIZE" in [h["operation"] for h in dt.history()]
        assert sorted_rows(tmp_path, name, key) == rows[name]
    for name in registered | {VIEW_NAME}:  # each table ends with a checkpoint at the version optimize left
        last = json.loads((tmp_path / name / "_delta_log" / "_last_checkpoint").read_text())
        assert last["version"] == DeltaTable(str(tmp_path / name)).version() == summary[name]["checkpoint_version"]
    assert DeltaTable(str(notes)).version() == notes_version


def test_optimize_removes_log_entries_older_than_the_log_retention_setting(tmp_path: Path) -> None:
    # The setting becomes each table's delta.logRetentionDuration (as any Delta tool reads it).
    sink = DeltaSink(str(tmp_path))
    for i in range(6):
        sink.append("pi_ingest_runs", RunResult(job="sync", run_id=f"r{i}").row())
    kept = tmp_path / "pi_watermarks"
    sink.ensure("pi_watermarks", TABLES["pi_watermarks"].schema)
    runs = DeltaTable(str(tmp_path / "pi_ingest_runs"))
    before = sorted(runs.to_pyarrow_table(columns=["run_id"]).column("run_id").to_pylist())
    logs_before = sorted(p.name for p in (tmp_path / "pi_ingest_runs" / "_delta_log").glob("*.json"))
    assert len(logs_before) >= 7

    run_optimize(settings_for_target(tmp_path))  # the default, 30 days: every entry is younger, all are kept
    assert sorted(p.name for p in (tmp_path / "pi_ingest_runs" / "_delta_log").glob("*.json"))[:7] == logs_before
    assert "delta.logRetentionDuration" not in DeltaTable(str(kept)).metadata().configuration  # no commit made
    assert (kept / "_delta_log" / "00000000000000000000.json").exists()

    run_optimize(settings_for_target(tmp_path).model_copy(update={"log_retention": "0s"}))
    assert DeltaTable(str(kept)).metadata().configuration["delta.logRetentionDuration"] == "interval 0 seconds"

    logs_after = sorted(p.name for p in (tmp_path / "pi_ingest_runs" / "_delta_log").glob("*.json"))
    version = DeltaTable(str(tmp_path / "pi_ingest_runs")).version()
    assert logs_after == [f"{version:020d}.json"]  # everything before the checkpoint is gone
    reread = DeltaTable(str(tmp_path / "pi_ingest_runs")).to_pyarrow_table(columns=["run_id"])
    assert sorted(reread.column("run_id").to_pylist()) == before
    assert not (kept / "_delta_log" / "00000000000000000000.json").exists()  # every table's old log goes


def settings_for_target(target: Path) -> PiflowSettings:
    return PiflowSettings(target=str(target))
