"""Sync against the emulator: per-point watermarks, late values, edits, and idempotent re-runs."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc

from piflow.emulator.server import EmulatorServer
from piflow.emulator.truth import recorded_truth
from piflow.jobs.backfill import run_backfill
from piflow.jobs.common import selected_points
from piflow.jobs.status import status_rows
from piflow.jobs.sync import run_sync
from piflow.jobs.watermarks import read_watermarks
from piflow.sinks.delta import DeltaSink

from .conftest import T0, assert_same_rows, settings_for, table_of


def truth(srv: EmulatorServer, target: Path, start: datetime, end: datetime):  # type: ignore[no-untyped-def]
    refs = selected_points(DeltaSink(str(target)), settings_for(srv, target).points)
    return recorded_truth(srv.state, [srv.state.model.point_by_webid(r.webid) for r in refs], start, end)  # type: ignore[misc]


def test_sync_catches_late_values_and_edits(emulator: EmulatorServer, tmp_path: Path) -> None:
    start = T0 - timedelta(hours=6)
    lag = timedelta(seconds=30)
    s = settings_for(emulator, tmp_path, start=start.isoformat(), end=T0.isoformat(), window="6h",
                     lookback="3h", safety_lag="30s")
    asyncio.run(run_backfill(s))
    late_or_edited_seen = 0
    for _ in range(3):
        emulator.state.clock.advance(timedelta(hours=1))
        result = asyncio.run(run_sync(s))
        assert result.status == "ok"
        late_or_edited_seen += result.details["updated"]
    now = emulator.state.clock.now()
    values = table_of(tmp_path)
    expected = truth(emulator, tmp_path, start, now - lag)
    assert_same_rows(values, expected)
    # The emulator's edits happened after the backfill: the sync must have replaced rows in place.
    assert late_or_edited_seen > 0
    assert pc.sum(values.column("substituted")).as_py() > 0


def test_sync_twice_changes_nothing_and_quiet_points_keep_watermarks(emulator: EmulatorServer,
                                                                      tmp_path: Path) -> None:
    s = settings_for(emulator, tmp_path, start=(T0 - timedelta(hours=2)).isoformat(), lookback="1h",
                     safety_lag="0s")
    asyncio.run(run_sync(s))
    marks = read_watermarks(DeltaSink(str(tmp_path)))
    before = table_of(tmp_path).num_rows
    again = asyncio.run(run_sync(s))
    assert again.values_written == 0
    assert table_of(tmp_path).num_rows == before
    assert read_watermarks(DeltaSink(str(tmp_path))) == marks  # no new data: every watermark stays
    rows = status_rows(s, now=T0)
    assert len(rows) == len(selected_points(DeltaSink(str(tmp_path)), s.points))
    assert all(r["lag_s"] is not None and r["lag_s"] >= 0 for r in rows)


def test_each_point_has_its_own_watermark(emulator: EmulatorServer, tmp_path: Path) -> None:
    s = settings_for(emulator, tmp_path, start=(T0 - timedelta(hours=1)).isoformat(), safety_lag="0s")
    asyncio.run(run_sync(s))
    marks = read_watermarks(DeltaSink(str(tmp_path)))
    assert len(set(marks.values())) > 10  # not one shared watermark
    newest = table_of(tmp_path).group_by("webid").aggregate([("timestamp", "max")]).to_pylist()
    assert {r["webid"]: int(r["timestamp_max"].timestamp() * 1e6) for r in newest} == marks
