"""The sink's writer protocol on real Delta tables: a plan committed from a stale snapshot is planned again,
the writer says so in one line naming the other writer, and gives up cleanly when others always win."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from piflow import schema
from piflow.errors import WriteConflictError
from piflow.sinks.delta import DeltaSink, Snapshot, Write
from tests.stream.test_stream_units import rows

A, B = "F1DPaaaa", "F1DPbbbb"
KEY = list(schema.PI_VALUES_KEY)


def keys(sink: DeltaSink) -> list[tuple[str, int]]:
    table = sink.read("pi_values", columns=["webid", "timestamp"])
    return sorted((w, int(t.timestamp() * 1e6)) for w, t in zip(table.column("webid").to_pylist(),
                                                                 table.column("timestamp").to_pylist(), strict=True))


def only_new(fresh: pa.Table, meta: dict[str, str]):  # type: ignore[no-untyped-def]
    """A plan that appends the rows of ``fresh`` the snapshot lacks (what sync and stream do, in small)."""
    calls: list[int | None] = []

    def plan(snap: Snapshot) -> Write:
        calls.append(snap.version)
        held = {(r["webid"], r["timestamp"], r["seq"]) for r in snap.read(columns=KEY).to_pylist()}
        new = [i for i, r in enumerate(fresh.select(KEY).to_pylist()) if (r["webid"], r["timestamp"], r["seq"])
               not in held]
        return Write(append=fresh.take(new), key=KEY, metadata=meta)

    return plan, calls


def test_a_plan_from_a_stale_snapshot_is_planned_again_and_says_who_won(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    sink, other = DeltaSink(str(tmp_path)), DeltaSink(str(tmp_path))
    sink.commit("pi_values", lambda _: Write(append=rows((A, 1, 0)), key=KEY))
    stale = sink.snapshot("pi_values")
    # Another writer adds (A, 2) and (B, 1) after that snapshot was taken.
    other.commit("pi_values", lambda _: Write(append=rows((A, 2, 0), (B, 1, 0)), key=KEY,
                                              metadata={"piflow.job": "stream", "piflow.run_id": "r-other"}))
    plan, calls = only_new(rows((A, 2, 0), (B, 1, 0), (B, 2, 0)), {"piflow.job": "sync", "piflow.run_id": "r-me"})
    with caplog.at_level(logging.WARNING, logger="piflow.sinks.delta"):
        landed = sink.commit("pi_values", plan, first=stale)
    assert calls == [1, 2]  # planned from the stale version, then again from the other writer's
    assert landed is not None
    assert landed.rows() == 1  # only (B, 2) was still missing
    assert keys(sink) == sorted([(A, 1_767_225_600_000_001), (A, 1_767_225_600_000_002), (B, 1_767_225_600_000_001),
                                 (B, 1_767_225_600_000_002)])
    assert sink.conflicts == 1
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("pi_values: stream run r-other (version 2) committed after version 1, which this sync "
                           "write was planned from; planning it again (attempt 2 of ")


def test_a_writer_that_always_loses_gives_up_and_writes_nothing(tmp_path: Path) -> None:
    sink, other = DeltaSink(str(tmp_path)), DeltaSink(str(tmp_path))
    sink.commit("pi_values", lambda _: Write(append=rows((A, 1, 0)), key=KEY))
    n = [0]

    def plan(snap: Snapshot) -> Write:
        n[0] += 1  # before this plan can commit, another writer commits again
        other.commit("pi_values", lambda _: Write(append=rows((B, n[0], 0)), key=KEY,
                                                  metadata={"piflow.job": "backfill", "piflow.run_id": "r-fast"}))
        return Write(append=rows((A, 100, 0)), key=KEY)

    with pytest.raises(WriteConflictError, match=r"pi_values: gave up after 3 attempts.*backfill run r-fast"):
        sink.commit("pi_values", plan, first=sink.snapshot("pi_values"), attempts=3)
    assert (A, 1_767_225_600_000_100) not in keys(sink)
    assert n[0] == 3


def test_two_writers_creating_a_table_at_once_both_succeed(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def create() -> None:
        try:
            barrier.wait()
            DeltaSink(str(tmp_path)).ensure("pi_watermarks", schema.PI_WATERMARKS)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # One table (the losers' create attempts add no file: a later version at most, never a second table).
    table = DeltaSink(str(tmp_path)).read("pi_watermarks")
    assert table.num_rows == 0
    assert table.schema.names == schema.PI_WATERMARKS.names


def test_one_write_lands_whole_appended_replaced_and_deleted_rows_together(tmp_path: Path) -> None:
    sink = DeltaSink(str(tmp_path))
    sink.commit("pi_values", lambda _: Write(append=rows((A, 1, 0), (A, 2, 0), (B, 1, 0)), key=KEY))
    before = sink.version("pi_values")
    changed = rows((A, 2, 0)).set_column(5, "value_double", pa.array([-5.0]))
    gone = rows((B, 1, 0)).select(KEY)
    sink.commit("pi_values", lambda _: Write(append=rows((B, 3, 0)), upsert=changed, delete=gone, key=KEY))
    assert sink.version("pi_values") == (before or 0) + 1  # one commit
    table = sink.read("pi_values").sort_by([("webid", "ascending"), ("timestamp", "ascending")])
    got = [(w, int(t.timestamp() * 1e6) % 1000, v) for w, t, v in zip(
        table.column("webid").to_pylist(), table.column("timestamp").to_pylist(),
        table.column("value_double").to_pylist(), strict=True)]
    assert [(w, t) for w, t, _ in got] == [(A, 1), (A, 2), (B, 3)]
    assert got[1][2] == -5.0


def test_an_optimize_whose_files_a_writer_replaced_compacts_again(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """optimize read the table, then a sync's merge rewrote the files it was compacting: its commit fails
    (delta-rs's own rule), it says so in one line, compacts the table as it now is, and no row changes."""

    class FirstLoadIsStale(DeltaSink):
        """The first table load returns a version taken before the merge below (a fake of the race)."""

        stale: object = None

        def table(self, name: str):  # type: ignore[no-untyped-def]
            if self.stale is not None:
                stale, self.stale = self.stale, None
                return stale
            return super().table(name)

    writer = DeltaSink(str(tmp_path))
    for k in range(5):  # five small files
        writer.commit("pi_values", lambda _, k=k: Write(append=rows((A, 10 * k, 0), (B, 10 * k, 0)), key=KEY))
    sink = FirstLoadIsStale(str(tmp_path))
    sink.stale = writer.table("pi_values")
    changed = rows(*((w, 10 * k, 0) for k in range(5) for w in (A, B))).set_column(
        5, "value_double", pa.array([-1.0] * 10))
    writer.commit("pi_values", lambda _: Write(upsert=changed, key=KEY,
                                               metadata={"piflow.job": "sync", "piflow.run_id": "r-merge"}))
    with caplog.at_level(logging.WARNING, logger="piflow.sinks.delta"):
        stats = sink.optimize("pi_values")
    assert sink.conflicts == 1
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("pi_values: sync run r-merge (version 6) replaced files this optimize was compacting")
    assert stats["vacuumed_files"] == 0  # finished: compacted (here: nothing left to compact) and vacuumed
    table = sink.read("pi_values")
    assert table.num_rows == 10
    assert set(table.column("value_double").to_pylist()) == {-1.0}
