"""Backfill against the emulator over real loopback HTTP, compared row for row with its ground truth."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc

from piflow.emulator.server import EmulatorServer
from piflow.emulator.truth import recorded_truth
from piflow.jobs.backfill import run_backfill
from piflow.jobs.common import selected_points
from piflow.sinks.delta import DeltaSink
from tests.rows import assert_same_rows

from .conftest import T0, settings_for, table_of


def truth_for(srv: EmulatorServer, target: Path, start, end):  # type: ignore[no-untyped-def]
    refs = selected_points(DeltaSink(str(target)), settings_for(srv, target).points)
    points = [srv.state.model.point_by_webid(r.webid) for r in refs]
    t = recorded_truth(srv.state, points, start, end)  # type: ignore[arg-type]
    return t.filter(pc.less(t.column("timestamp"), end))  # backfill ranges are half-open


def test_backfill_equals_ground_truth(emulator: EmulatorServer, tmp_path: Path) -> None:
    start, end = T0 - timedelta(days=1), T0
    s = settings_for(emulator, tmp_path, start=start.isoformat(), end=end.isoformat(), window="6h")
    result = asyncio.run(run_backfill(s))
    assert result.status == "ok"
    values = table_of(tmp_path)
    kinds = set(values.column("value_kind").to_pylist())
    assert {"number", "digital", "string", "timestamp", "system"} <= kinds
    assert_same_rows(values, truth_for(emulator, tmp_path, start, end))
    assert result.values_written == values.num_rows
    assert result.requests > 0
    runs = {r["job"]: r for r in table_of(tmp_path, "pi_ingest_runs").to_pylist()}
    assert sorted(runs) == ["backfill", "discover"]  # the backfill discovered the points it needed first
    assert runs["backfill"]["values_written"] == values.num_rows
    assert runs["backfill"]["requests"] == result.requests


def test_second_run_writes_nothing(emulator: EmulatorServer, tmp_path: Path) -> None:
    start, end = T0 - timedelta(hours=12), T0
    s = settings_for(emulator, tmp_path, start=start.isoformat(), end=end.isoformat(), window="4h")
    first = asyncio.run(run_backfill(s))
    version = DeltaSink(str(tmp_path)).version("pi_values")
    second = asyncio.run(run_backfill(s))
    assert first.values_written > 0
    assert second.values_written == 0
    assert DeltaSink(str(tmp_path)).version("pi_values") == version  # not even an empty commit
    assert_same_rows(table_of(tmp_path), truth_for(emulator, tmp_path, start, end))


def test_backfill_over_a_range_sync_already_wrote_adds_only_what_is_missing(emulator: EmulatorServer,
                                                                             tmp_path: Path) -> None:
    from piflow.jobs.sync import run_sync

    start, end = T0 - timedelta(hours=12), T0
    # A sync first: it reads the last 2 hours, which the backfill below covers again.
    asyncio.run(run_sync(settings_for(emulator, tmp_path, start=(T0 - timedelta(hours=2)).isoformat(),
                                      safety_lag="0s")))
    synced = table_of(tmp_path).num_rows
    assert synced > 0
    result = asyncio.run(run_backfill(settings_for(emulator, tmp_path, start=start.isoformat(), end=end.isoformat(),
                                                   window="4h")))
    assert result.status == "ok"
    values = table_of(tmp_path)
    # The sync's inclusive end (T0) is kept; everything else is exactly the truth, with no duplicate keys.
    expected = truth_for(emulator, tmp_path, start, end + timedelta(microseconds=1))
    assert_same_rows(values, expected)
    assert result.values_written == values.num_rows - synced
