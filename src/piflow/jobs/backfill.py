"""``piflow backfill``: recorded values over [start, end) into ``pi_values``, exactly once, resumable.

The range is cut into windows and the points into shards (:func:`piflow.planner.progress_shards`); each
(point group, window) unit is read in full (paging and splitting included) before any of it is written. Units
are committed in batches, each shard's in order, and each commit carries, for every shard it advances,
``Transaction(app_id(shard), position)`` — in the same atomic Delta commit as the rows. A re-run (after kill -9
at any moment, or a second run) reads those positions back and skips what the table already holds, so nothing
is lost and nothing is written twice; the log a commit adds does not grow with the number of points.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piflow.errors import ConfigError, StateError
from piflow.jobs.common import points_to_read, resolve_time, server_now
from piflow.jobs.reader import RecordedReader
from piflow.jobs.runs import RunResult, job_run
from piflow.jobs.value_diff import KEY, existing_rows, split_new_and_changed, values_write
from piflow.jobs.watermarks import advance_watermarks, max_timestamps
from piflow.pitime import TICKS_PER_SECOND, TICKS_PER_US, to_ticks
from piflow.planner import (
    DAY_TICKS,
    AdaptiveConcurrency,
    BackfillPlan,
    PointRef,
    Shard,
    WorkUnit,
    group_size,
    make_plan,
    progress_shards,
    units_to_do,
)
from piflow.progress import Progress
from piflow.schema import PI_VALUES
from piflow.sinks.delta import DeltaSink, Snapshot, Write

if TYPE_CHECKING:
    from piflow.config import PiflowSettings

log = logging.getLogger(__name__)

# Half a million rows a commit: writes overlap the reads and the last one, which nothing overlaps, is short
# (13% faster than a million on the 1,000-point benchmark); files stay ~6 MB (`piflow optimize` compacts).
FLUSH_ROWS = 500_000
DEFAULT_GROUP = 50


@dataclass
class _Committer:
    """Buffers finished units and commits them in order per shard, with the shards' transactions.

    Each commit is planned from ``snap``: the version the run's overlap check read, advanced by the run's own
    commits. While no other writer commits, a batch is a plain append: the check said its range was empty
    (a batch holding a unit whose range already held rows is compared with the table and adds only what it
    lacks). Once another writer has committed (the sink's writer protocol makes the commit plan again from a
    fresh snapshot), every later batch is compared first: a sync or a stream may have written into the range.
    A shard holding a point the server no longer knows stops advancing: its rows are still written, and the
    next run reads it again from where its progress stopped (comparing, so nothing is written twice).
    """

    sink: DeltaSink
    plan: BackfillPlan
    committed: dict[str, int]  # shard key -> position committed
    snap: Snapshot
    run_id: str = ""
    flush_rows: int = FLUSH_ROWS
    ready: list[tuple[WorkUnit, pa.Table]] = field(default_factory=list)
    overlapping: set[int] = field(default_factory=set)  # id() of ready tables whose range already held rows
    stalled: set[str] = field(default_factory=set)  # shards that hold a point the server no longer knows
    written: int = 0
    watermarks: dict[str, int] = field(default_factory=dict)
    foreign: bool = False
    failed: BaseException | None = None  # a commit failed: no other may start (the run stops with this error)
    _pending_write: asyncio.Task[None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def add(self, unit: WorkUnit, table: pa.Table, overlapping: bool = False) -> None:
        """A finished unit; ``overlapping`` when the table held rows in its range as the run started."""
        self.ready.append((unit, table))
        if overlapping:
            self.overlapping.add(id(table))

    def stall(self, shard: str) -> None:
        """Stop advancing ``shard`` in this run (one of its points is unknown to the server)."""
        self.stalled.add(shard)

    def _flushable(self) -> tuple[list[tuple[WorkUnit, pa.Table]], dict[str, int]]:
        tentative = dict(self.committed)
        take: list[tuple[WorkUnit, pa.Table]] = []
        for unit, table in sorted(self.ready, key=lambda ut: (ut[0].shard, ut[0].first)):
            if unit.shard in self.stalled:
                take.append((unit, table))
            elif tentative.get(unit.shard, 0) == unit.first:
                take.append((unit, table))
                tentative[unit.shard] = unit.after
        return take, tentative

    async def maybe_flush(self, force: bool = False) -> None:
        """Start a commit of what is flushable once there is enough of it (or ``force``).

        Workers call this concurrently: the lock makes the check-and-start atomic, and a commit only starts
        after the previous one has finished, so commits never race each other.
        """
        async with self._lock:
            if self.failed is not None:
                raise self.failed
            take, tentative = self._flushable()
            rows = sum(t.num_rows for _, t in take)
            if not take or (rows < self.flush_rows and not force):
                return
            if self._pending_write is not None:
                await self._finish_pending()
                take, tentative = self._flushable()
            taken = {id(t) for _, t in take}
            self.ready = [(u, t) for u, t in self.ready if id(t) not in taken]
            compare = bool(taken & self.overlapping)
            self.overlapping -= taken
            advanced = {u.shard for u, _ in take if u.shard not in self.stalled}
            before = {k: (self.committed.get(k, 0), _names([p for u, _ in take if u.shard == k for p in u.points]))
                      for k in advanced}
            txns = sorted((self.plan.app_id(k), tentative[k]) for k in advanced)
            webids = sorted({p.webid for u, _ in take for p in u.points})
            data = pa.concat_tables([t for _, t in take]) if len(take) > 1 else take[0][1]
            self.committed.update({k: tentative[k] for k in advanced})
            span = (min(u.start_ticks for u, _ in take), max(u.end_ticks for u, _ in take))
            self._pending_write = asyncio.create_task(
                asyncio.to_thread(self._commit, data, txns, before, webids, span, compare))

    def _commit(self, data: pa.Table, txns: list[tuple[str, int]], before: dict[str, tuple[int, str]],
                webids: list[str],
                span: tuple[int, int], compare: bool) -> None:
        """One batch, in one commit (runs in a thread; counts only what landed)."""
        meta = {"piflow.job": "backfill", "piflow.run_id": self.run_id, "piflow.range": self.plan.range_id}
        landed: list[Snapshot] = []

        def plan(snap: Snapshot) -> Write:
            landed[:] = [snap]
            if snap is not self.snap:
                self.foreign = True
            if not (self.foreign or compare):
                return Write(append=data, key=KEY, transactions=txns, metadata=meta)
            self._check_transactions(snap, before)
            existing = existing_rows(snap, webids, span[0] // TICKS_PER_US, -(-span[1] // TICKS_PER_US))
            new_rows, changed = split_new_and_changed(data, existing)
            return replace(values_write(new_rows, changed, None, meta), transactions=txns)

        try:
            write = self.sink.commit("pi_values", plan, first=self.snap)
        except BaseException as exc:
            self.failed = exc
            raise
        self.snap = landed[0]
        self.written += write.rows() if write is not None else 0
        for w, ts in max_timestamps(data).items():
            self.watermarks[w] = max(ts, self.watermarks.get(w, ts))

    def _check_transactions(self, snap: Snapshot, before: dict[str, tuple[int, str]]) -> None:
        """Stop if another backfill of this range committed units of these shards meanwhile."""
        for key, (position, names) in before.items():
            now = snap.transaction_version(self.plan.app_id(key)) or 0
            if now != position:
                raise StateError(
                    f"another backfill of the same range committed values of points {names} while this one ran "
                    f"(their progress in the table is {now}, this run expected {position}); this run stops here "
                    "without writing them: run it again to resume from what the table holds")

    async def _finish_pending(self) -> None:
        """Wait for the commit in flight, even when this task is cancelled meanwhile (the commit runs on in
        its thread regardless; the run's counts must include it), then re-raise the cancellation."""
        pending, self._pending_write = self._pending_write, None
        if pending is None:
            return
        cancelled = False
        while not pending.done():
            try:
                await asyncio.shield(pending)
            except asyncio.CancelledError:
                cancelled = True
        pending.result()
        if cancelled:
            raise asyncio.CancelledError

    async def settle(self) -> None:
        """Wait for the commit in flight, if any, without starting another (also when the run was cancelled)."""
        await self._finish_pending()

    async def drain(self) -> None:
        await self.maybe_flush(force=True)
        async with self._lock:
            await self._finish_pending()


def _names(points: list[PointRef]) -> str:
    """The points of a batch for a message: one name, or the first and last by name and how many."""
    names = sorted(p.name for p in points)
    return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]} ({len(names)} points)"


def windows_with_data(snap: Snapshot, plan: BackfillPlan, points: list[PointRef]) -> set[tuple[str, int]]:
    """(webid, window) pairs of this plan for which the table already holds rows written by something else.

    A sync, a stream or another backfill may have written part of the range; those windows must not be
    blindly appended again. The read is pruned by date partition and file statistics, so a range the table
    does not cover costs almost nothing.
    """
    if not points or snap.is_empty():
        return set()
    start_us, end_us = plan.start_ticks // TICKS_PER_US, plan.end_ticks // TICKS_PER_US
    existing = existing_rows(snap, [p.webid for p in points], start_us, end_us, columns=["webid", "timestamp"])
    if existing.num_rows == 0:
        return set()
    ticks = np.asarray(pc.cast(existing.column("timestamp"), pa.int64()).to_numpy()) * TICKS_PER_US
    windows = (ticks - plan.start_ticks) // plan.window_ticks
    return set(zip(existing.column("webid").to_pylist(), windows.tolist(), strict=True))


def committed_progress(snap: Snapshot, plan: BackfillPlan, shards: list[Shard]) -> dict[str, int]:
    """Each shard's position already in the table, read from Delta's transaction identifiers (one per shard).

    A table at version 0 (the sink's empty creation commit, which carries none) is not asked."""
    if snap.table is None or snap.version == 0:
        return {}
    out: dict[str, int] = {}
    for shard in shards:
        v = snap.transaction_version(plan.app_id(shard.key))
        if v:
            out[shard.key] = int(v)
    return out


async def run_backfill(settings: PiflowSettings, progress: Progress | None = None) -> RunResult:
    async with job_run("backfill", settings, progress) as run:
        sink, result, progress = run.sink, run.result, run.progress
        points = await points_to_read(settings, sink, progress)
        client = run.client
        now = await server_now(client)
        start = resolve_time("start", settings.start, now)
        end = resolve_time("end", settings.end, now)
        if end <= start:
            raise ConfigError("end", f"must be after start ({start.isoformat()} .. {end.isoformat()})")
        if end > now:  # nothing is recorded there yet: asking would only cost requests
            progress.note(f"backfill: the end {end.isoformat()} is after the server's now "
                          f"({now.isoformat()}); reading up to now")
            end = now
            if end <= start:
                raise ConfigError("start", f"{start.isoformat()} is after the server's now "
                                           f"({now.isoformat()}): nothing to read yet")
        window = settings.window_delta or timedelta(days=1)
        plan = make_plan(to_ticks(start), to_ticks(end), int(window.total_seconds() * TICKS_PER_SECOND) or DAY_TICKS)
        result.window_start, result.window_end, result.points = start, end, len(points)
        # The run's own commits are made from this snapshot (created now if missing, so that creating the table
        # does not count as another writer's commit).
        sink.ensure("pi_values", PI_VALUES)
        snap = sink.snapshot("pi_values")
        shards = progress_shards(points)
        committed = committed_progress(snap, plan, shards)
        group = group_size(len(points), settings.concurrency, settings.points_per_request, DEFAULT_GROUP)
        units = units_to_do(plan, shards, committed, group)
        fresh = list({p.webid: p for u in units for p in u.points}.values())
        overlaps = windows_with_data(snap, plan, fresh)
        if overlaps:
            progress.note(f"{len(overlaps)} point-windows already hold data: only missing rows are added")
        if len(units) == 0:
            progress.note("nothing to do: the table already holds this range")
        progress.start(len(units), f"backfill {len(points)} points")
        committer = _Committer(sink, plan, committed, snap, result.run_id, flush_rows=settings.commit_rows)
        reader = RecordedReader(client)
        try:
            gate = await _run_units(units, reader, committer, settings.concurrency, progress,
                                    lambda: client.http.retries, overlaps)
            await committer.drain()
        finally:
            await committer.settle()  # a commit in flight lands (or fails) before the run is recorded
            result.values_written = committer.written
            result.details["commit_retries"] = sink.conflicts
        advance_watermarks(sink, committer.watermarks, {"piflow.job": "backfill", "piflow.run_id": result.run_id})
        run.unknown_points(reader.stats.missing)
        result.details.update({"units": len(units), "pages": reader.stats.pages, "final_concurrency": gate.limit,
                               "continuations": reader.stats.continuations, "splits": reader.stats.splits})
    return result


async def _run_units(units: list[WorkUnit], reader: RecordedReader, committer: _Committer, concurrency: int,
                     progress: Progress, retries: Callable[[], int],
                     overlaps: set[tuple[str, int]] | frozenset[tuple[str, int]] = frozenset()) -> AdaptiveConcurrency:
    """Read units with up to ``concurrency`` in flight, fewer while the server throttles or slows down."""
    queue: asyncio.Queue[WorkUnit] = asyncio.Queue()
    for u in units:
        queue.put_nowait(u)
    gate = AdaptiveConcurrency(concurrency)
    in_flight = 0
    changed = asyncio.Condition()

    def may_start() -> bool:
        return in_flight < gate.limit

    async def worker() -> None:
        nonlocal in_flight
        while True:
            async with changed:
                await changed.wait_for(may_start)
                try:
                    unit = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                in_flight += 1
            t0, r0 = time.monotonic(), retries()
            try:
                # Half-open windows, the last one too: a backfill of [start, end) meets the next one exactly.
                table = await reader.read(list(unit.points), unit.start_ticks, unit.end_ticks, final=False)
            finally:
                async with changed:
                    in_flight -= 1
                    changed.notify_all()
            if retries() > r0:
                gate.on_throttled()
            else:
                gate.on_done(time.monotonic() - t0, table.num_rows)
            if any(p.webid in reader.stats.missing for p in unit.points):
                # A point the server no longer knows is not marked done: the next run tries its shard again.
                committer.stall(unit.shard)
            committer.add(unit, table, overlapping=any((p.webid, unit.window) in overlaps for p in unit.points))
            progress.advance(1, table.num_rows)
            await committer.maybe_flush()

    workers = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    return gate
