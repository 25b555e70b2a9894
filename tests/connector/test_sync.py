"""Sync against the emulator: per-point watermarks, late values, edits, and idempotent re-runs."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from piflow.emulator.server import EmulatorServer
from piflow.emulator.truth import recorded_truth
from piflow.errors import SinkError
from piflow.jobs.backfill import run_backfill
from piflow.jobs.common import selected_points
from piflow.jobs.status import status_rows
from piflow.jobs.sync import run_sync
from piflow.jobs.watermarks import read_watermarks
from piflow.progress import NullProgress
from piflow.sinks.delta import DeltaSink
from tests.rows import assert_same_rows

from .conftest import T0, settings_for, table_of


def truth(srv: EmulatorServer, target: Path, start: datetime, end: datetime):  # type: ignore[no-untyped-def]
    refs = selected_points(DeltaSink(str(target)), settings_for(srv, target).points)
    return recorded_truth(srv.state, [srv.state.model.point_by_webid(r.webid) for r in refs], start, end)  # type: ignore[misc]


@pytest.fixture(params=["whole", "chunked"])
def chunking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """As a sync of a large fleet runs: points compared 13 at a time, differences committed every ~2,000."""
    if request.param == "chunked":
        import piflow.jobs.sync as sync_module

        monkeypatch.setattr(sync_module, "CHUNK_POINTS", 13)
        monkeypatch.setattr(sync_module, "STAGED_ROWS", 2_000)
    return str(request.param)


def test_sync_catches_late_values_and_edits(emulator: EmulatorServer, tmp_path: Path, chunking: str) -> None:
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
        assert result.details["commit_retries"] == 0  # a chunk's commit never conflicts with the run's own
        dt = DeltaSink(str(tmp_path)).table("pi_values")
        assert dt is not None
        commits = [h for h in dt.history() if h.get("piflow.run_id") == result.run_id]
        # whole: the new rows in one commit and the edits in another; chunked: that, every ~2,000 rows
        assert (len(commits) > 2) == (chunking == "chunked"), len(commits)
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


def test_values_deleted_in_pi_inside_the_lookback_are_deleted_here(emulator: EmulatorServer, tmp_path: Path,
                                                                   chunking: str) -> None:
    """An operator removes bad values in PI: the next sync removes them from the table too (within the range
    it re-reads), and only them; a deletion older than the lookback is out of its sight and stays."""
    import httpx2

    start = T0 - timedelta(hours=4)
    s = settings_for(emulator, tmp_path, start=start.isoformat(), end=T0.isoformat(), window="4h",
                     lookback="1h", safety_lag="0s")
    asyncio.run(run_backfill(s))
    emulator.state.clock.advance(timedelta(minutes=10))
    now = emulator.state.clock.now()
    rows = table_of(tmp_path).to_pylist()
    recent = [r for r in rows if r["timestamp"] >= T0 - timedelta(minutes=30)]
    old = [r for r in rows if r["timestamp"] <= T0 - timedelta(hours=3)]
    # Whole milliseconds: the table keeps microseconds of PI's 100 ns ticks, and the delete needs the exact time.
    doomed = [r for r in recent if r["timestamp"].microsecond % 1000 == 0][::97][:6]
    assert len(doomed) >= 3
    old = [r for r in old if r["timestamp"].microsecond % 1000 == 0]
    for r in [*doomed, old[0]]:
        answer = httpx2.post(f"{emulator.base_url}/_emulator/values/delete",
                             json={"webId": r["webid"], "times": [r["timestamp"].isoformat()]}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["deleted"] == 1

    result = asyncio.run(run_sync(s))
    assert result.status == "ok"
    values = table_of(tmp_path)
    keys = {(r["webid"], r["timestamp"]) for r in values.select(["webid", "timestamp"]).to_pylist()}
    assert not any((r["webid"], r["timestamp"]) in keys for r in doomed)
    assert (old[0]["webid"], old[0]["timestamp"]) in keys  # older than the lookback: not re-read, kept
    assert result.details["deleted"] >= len(doomed)  # (several events may share a deleted timestamp)
    # Everything the sync re-read equals the server, row for row.
    hour_ago = pa.scalar(T0 - timedelta(hours=1), values.schema.field("timestamp").type)
    recent_values = values.filter(pc.greater_equal(values.column("timestamp"), hour_ago))
    assert_same_rows(recent_values, truth(emulator, tmp_path, T0 - timedelta(hours=1), now))
    again = asyncio.run(run_sync(s))
    assert again.values_written == 0


def test_a_sync_whose_commit_fails_leaves_the_table_unchanged(emulator: EmulatorServer, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Changed rows and deletions are merged before the new rows are appended: when the merge fails, nothing of
    the sync is left, and the next run does all of it."""
    import piflow.sinks.delta as delta

    start = T0 - timedelta(hours=6)
    s = settings_for(emulator, tmp_path, start=start.isoformat(), end=T0.isoformat(), window="6h",
                     lookback="3h", safety_lag="30s")
    asyncio.run(run_backfill(s))
    emulator.state.clock.advance(timedelta(hours=1))  # new values, and edits of stored ones
    sink = DeltaSink(str(tmp_path))
    version, rows, marks = sink.version("pi_values"), table_of(tmp_path), read_watermarks(sink)
    merges: list[int] = []

    def failing_merge(dt: Any, source: pa.Table, *args: Any) -> Any:
        merges.append(source.num_rows)
        raise SinkError("injected: the disk filled up during the merge")

    with monkeypatch.context() as patched:
        patched.setattr(delta, "_merge", failing_merge)
        with pytest.raises(SinkError, match="injected"):
            asyncio.run(run_sync(s))
    assert merges, "the sync had changed rows to merge (else this test proves nothing)"
    assert sink.version("pi_values") == version
    assert table_of(tmp_path).equals(rows)
    assert read_watermarks(sink) == marks
    failed = [r for r in sink.read("pi_ingest_runs").to_pylist() if r["job"] == "sync"]
    assert [(r["status"], r["values_written"]) for r in failed] == [("failed", 0)]

    result = asyncio.run(run_sync(s))
    assert result.status == "ok"
    assert result.details["inserted"] > 0
    assert result.details["updated"] > 0
    assert_same_rows(table_of(tmp_path), truth(emulator, tmp_path, start, emulator.state.clock.now() - timedelta(
        seconds=30)))


def test_a_server_clock_behind_the_watermarks_deletes_and_reverts_nothing(emulator: EmulatorServer,
                                                                         tmp_path: Path) -> None:
    """The server's clock is set back 20 minutes (edits and late values not 'made' yet, as far as it shows):
    the sync warns with both times and adds only what is new; when the clock is right again, all is right."""
    start = T0 - timedelta(hours=2)
    s = settings_for(emulator, tmp_path, start=start.isoformat(), lookback="3h", safety_lag="0s")
    emulator.state.clock.advance(timedelta(minutes=30))
    asyncio.run(run_sync(s))
    stored = table_of(tmp_path)
    emulator.state.clock.advance(timedelta(minutes=-20))
    notes: list[str] = []

    class Notes(NullProgress):
        def note(self, message: str) -> None:
            notes.append(message)

    result = asyncio.run(run_sync(s, Notes()))
    assert result.status == "ok"
    assert (result.details["updated"], result.details["deleted"]) == (0, 0)
    assert result.details["held_points"] > 0
    assert any("behind" in n and (T0 + timedelta(minutes=10)).isoformat() in n for n in notes), notes
    # Nothing deleted, nothing reverted (the rows added are the lookback's reach before the first start).
    now_table = table_of(tmp_path)
    first_start = pa.scalar(start, now_table.schema.field("timestamp").type)
    assert_same_rows(now_table.filter(pc.greater_equal(now_table.column("timestamp"), first_start)), stored)
    assert now_table.num_rows == stored.num_rows + result.details["inserted"]
    emulator.state.clock.advance(timedelta(minutes=25))
    asyncio.run(run_sync(s))
    final = table_of(tmp_path)
    assert_same_rows(final.filter(pc.greater_equal(final.column("timestamp"), first_start)),
                     truth(emulator, tmp_path, start, emulator.state.clock.now()))


def test_a_long_gap_is_caught_up_in_committed_slices(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A day of outage, a 1h lookback: the sync commits slice by slice (the 6h default), and the table equals
    the server, with no duplicate at a slice's edge (events sharing a timestamp stay in one slice)."""
    start = T0 - timedelta(hours=2)
    s = settings_for(emulator, tmp_path, start=start.isoformat(), lookback="1h", safety_lag="0s")
    asyncio.run(run_sync(s))
    before = table_of(tmp_path).num_rows
    emulator.state.clock.advance(timedelta(hours=20))
    result = asyncio.run(run_sync(s))
    assert result.status == "ok"
    assert result.details["slices"] == 4  # 21 h from the oldest watermark minus the lookback, 6 h at a time
    dt = DeltaSink(str(tmp_path)).table("pi_values")
    assert dt is not None
    commits = [h["operation"] for h in dt.history() if h.get("piflow.run_id") == result.run_id]
    assert commits.count("WRITE") == 4  # each slice's new rows, appended
    assert 1 <= commits.count("MERGE") <= 4  # the edits of a slice that has some, merged before its new rows
    final = table_of(tmp_path)
    reread = T0 - timedelta(hours=1)  # the first sync's watermark minus the lookback: all of it read again
    expected = truth(emulator, tmp_path, reread, emulator.state.clock.now())
    assert_same_rows(final.filter(pc.greater_equal(final.column("timestamp"),
                                                   pa.scalar(reread, final.schema.field("timestamp").type))), expected)
    assert result.details["inserted"] == final.num_rows - before
    assert result.details["updated"] > 0  # edits of the hour before the outage, caught in the first slice


def test_a_sync_that_rechecks_the_lookback_less_often_still_catches_every_edit_and_deletion(
        emulator: EmulatorServer, tmp_path: Path) -> None:
    """``recheck_every = 30m``: syncs in between read from each watermark only (a deletion is not seen yet); the
    next re-read reaches back past where the previous one ended, so the table then equals PI again."""
    import httpx2

    start = T0 - timedelta(hours=4)
    s = settings_for(emulator, tmp_path, start=start.isoformat(), end=T0.isoformat(), window="4h",
                     lookback="1h", safety_lag="0s", recheck_every="30m")
    asyncio.run(run_backfill(s))
    emulator.state.clock.advance(timedelta(minutes=5))
    first = asyncio.run(run_sync(s))
    assert first.details["lookback_reread"] is True  # none recorded yet: this one re-reads

    emulator.state.clock.advance(timedelta(minutes=10))
    rows = table_of(tmp_path).to_pylist()
    # Older than the next re-read's watermarks minus the lookback (T0 - 45 min): only a re-read that reaches
    # back to where the previous one ended (T0 + 5 min, minus the lookback) sees them go.
    doomed = [r for r in rows if T0 - timedelta(minutes=54) <= r["timestamp"] <= T0 - timedelta(minutes=46)
              and r["timestamp"].microsecond % 1000 == 0][::53][:4]
    assert len(doomed) >= 2
    for r in doomed:
        answer = httpx2.post(f"{emulator.base_url}/_emulator/values/delete",
                             json={"webId": r["webid"], "times": [r["timestamp"].isoformat()]}, timeout=10)
        assert answer.json()["deleted"] == 1
    tail = asyncio.run(run_sync(s))
    assert tail.status == "ok"
    assert tail.details["lookback_reread"] is False
    assert 0 < tail.details["read"] < first.details["read"] / 2  # ten minutes of new values, not the hour again
    keys = {(r["webid"], r["timestamp"]) for r in table_of(tmp_path).select(["webid", "timestamp"]).to_pylist()}
    assert all((r["webid"], r["timestamp"]) in keys for r in doomed)  # not re-read yet

    emulator.state.clock.advance(timedelta(minutes=25))  # 35 minutes since the last re-read ended
    now = emulator.state.clock.now()
    full = asyncio.run(run_sync(s))
    assert full.details["lookback_reread"] is True
    assert full.details["deleted"] >= len(doomed)
    values = table_of(tmp_path)
    keys = {(r["webid"], r["timestamp"]) for r in values.select(["webid", "timestamp"]).to_pylist()}
    assert not any((r["webid"], r["timestamp"]) in keys for r in doomed)
    # From an hour before the first sync's end on, the table equals PI: late values and edits included.
    since = T0 + timedelta(minutes=5) - timedelta(hours=1)
    recent = values.filter(pc.greater_equal(values.column("timestamp"),
                                            pa.scalar(since, values.schema.field("timestamp").type)))
    assert_same_rows(recent, truth(emulator, tmp_path, since, now))
