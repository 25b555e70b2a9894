"""``piflow backfill``: recorded values over [start, end) into ``pi_values``, exactly once, resumable.

The range is cut into windows; each (point group, window) unit is read in full (paging and splitting
included) before any of it is written. Units are committed in batches, and each commit carries, for every
point it advances, ``Transaction(app_id(point), windows_done)`` — in the same atomic Delta commit as the rows.
A re-run (after kill -9 at any moment, or a second run) reads those versions back and skips what the table
already holds, so nothing is lost and nothing is written twice.
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

from piflow.errors import ConfigError
from piflow.jobs.common import (
    RunRecorder,
    RunResult,
    open_client,
    points_to_read,
    resolve_time,
    server_now,
    take_client_counters,
)
from piflow.jobs.reader import RecordedReader
from piflow.jobs.sync import existing_rows, split_new_and_changed
from piflow.jobs.watermarks import advance_watermarks, max_timestamps
from piflow.pitime import TICKS_PER_SECOND, TICKS_PER_US, to_ticks
from piflow.planner import (
    DAY_TICKS,
    AdaptiveConcurrency,
    BackfillPlan,
    PointRef,
    WorkUnit,
    group_size,
    make_plan,
    units_to_do,
)
from piflow.progress import NullProgress, Progress
from piflow.schema import PI_VALUES_KEY
from piflow.sinks.delta import DeltaSink

if TYPE_CHECKING:
    from piflow.config import PiflowSettings

log = logging.getLogger(__name__)

# Half a million rows a commit: writes overlap the reads and the last one, which nothing overlaps, is short
# (13% faster than a million on the 1,000-point benchmark); files stay ~6 MB (`piflow optimize` compacts).
FLUSH_ROWS = 500_000
DEFAULT_GROUP = 50


@dataclass
class _Committer:
    """Buffers finished units and commits them in window order per point, with their transactions."""

    sink: DeltaSink
    plan: BackfillPlan
    committed: dict[str, int]
    flush_rows: int = FLUSH_ROWS
    ready: list[tuple[WorkUnit, pa.Table]] = field(default_factory=list)
    written: int = 0
    watermarks: dict[str, int] = field(default_factory=dict)
    _pending_write: asyncio.Task[None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def add(self, unit: WorkUnit, table: pa.Table) -> None:
        self.ready.append((unit, table))

    def _flushable(self) -> tuple[list[tuple[WorkUnit, pa.Table]], dict[str, int]]:
        tentative = dict(self.committed)
        take: list[tuple[WorkUnit, pa.Table]] = []
        for unit, table in sorted(self.ready, key=lambda ut: ut[0].window):
            if all(tentative.get(p.webid, 0) == unit.window for p in unit.points):
                take.append((unit, table))
                for p in unit.points:
                    tentative[p.webid] = unit.window + 1
        return take, tentative

    async def maybe_flush(self, force: bool = False) -> None:
        """Start a commit of what is flushable once there is enough of it (or ``force``).

        Workers call this concurrently: the lock makes the check-and-start atomic, and a commit only starts
        after the previous one has finished, so commits never race each other.
        """
        async with self._lock:
            take, tentative = self._flushable()
            rows = sum(t.num_rows for _, t in take)
            if not take or (rows < self.flush_rows and not force):
                return
            if self._pending_write is not None:
                await self._pending_write  # one write at a time, in order
                self._pending_write = None
                take, tentative = self._flushable()
            taken = {id(t) for _, t in take}
            self.ready = [(u, t) for u, t in self.ready if id(t) not in taken]
            advanced = {p.webid for u, _ in take for p in u.points}
            txns = sorted((self.plan.app_id(w), tentative[w]) for w in advanced)
            data = pa.concat_tables([t for _, t in take]) if len(take) > 1 else take[0][1]
            self.committed.update({w: tentative[w] for w in advanced})
            for w, ts in max_timestamps(data).items():
                self.watermarks[w] = max(ts, self.watermarks.get(w, ts))
            self.written += data.num_rows
            meta = {"piflow.job": "backfill", "piflow.range": self.plan.range_id}
            self._pending_write = asyncio.create_task(
                asyncio.to_thread(self.sink.append, "pi_values", data, transactions=txns, metadata=meta)
            )

    async def reconcile(self, unit: WorkUnit, table: pa.Table) -> pa.Table:
        """For a unit whose range already holds rows: merge changed rows now, return only the new ones."""
        webids = [p.webid for p in unit.points]
        since_us, until_us = unit.start_ticks // TICKS_PER_US, -(-unit.end_ticks // TICKS_PER_US)
        existing = existing_rows(self.sink, webids, since_us, until_us)
        new_rows, changed = split_new_and_changed(table, existing)
        if changed.num_rows:
            async with self._lock:
                if self._pending_write is not None:
                    await self._pending_write
                    self._pending_write = None
                await asyncio.to_thread(self.sink.upsert, "pi_values", changed, list(PI_VALUES_KEY))
            self.written += changed.num_rows
        return new_rows

    async def drain(self) -> None:
        await self.maybe_flush(force=True)
        async with self._lock:
            if self._pending_write is not None:
                await self._pending_write
                self._pending_write = None


def windows_with_data(sink: DeltaSink, plan: BackfillPlan, points: list[PointRef]) -> set[tuple[str, int]]:
    """(webid, window) pairs of this plan for which the table already holds rows written by something else.

    A sync, a stream or another backfill may have written part of the range; those windows must not be
    blindly appended again. The read is pruned by date partition and file statistics, so a range the table
    does not cover costs almost nothing.
    """
    if not points or sink.table("pi_values") is None:
        return set()
    start_us, end_us = plan.start_ticks // TICKS_PER_US, plan.end_ticks // TICKS_PER_US
    existing = existing_rows(sink, [p.webid for p in points], start_us, end_us, columns=["webid", "timestamp"])
    if existing.num_rows == 0:
        return set()
    ticks = np.asarray(pc.cast(existing.column("timestamp"), pa.int64()).to_numpy()) * TICKS_PER_US
    windows = (ticks - plan.start_ticks) // plan.window_ticks
    return set(zip(existing.column("webid").to_pylist(), windows.tolist(), strict=True))


def committed_windows(sink: DeltaSink, plan: BackfillPlan, points: list[PointRef]) -> dict[str, int]:
    """Windows already in the table per point, read from Delta's transaction identifiers."""
    dt = sink.table("pi_values")
    if dt is None:
        return {}
    out: dict[str, int] = {}
    for p in points:
        v = dt.transaction_version(plan.app_id(p.webid))
        if v:
            out[p.webid] = int(v)
    return out


async def run_backfill(settings: PiflowSettings, progress: Progress | None = None) -> RunResult:
    progress = progress or NullProgress()
    sink = DeltaSink(settings.target)
    result = RunResult(job="backfill")
    with RunRecorder(sink, result):
        points = await points_to_read(settings, sink, progress)
        async with open_client(settings) as client:
            try:
                now = await server_now(client)
                start = resolve_time("start", settings.start, now)
                end = resolve_time("end", settings.end, now)
                if end <= start:
                    raise ConfigError("end", f"must be after start ({start.isoformat()} .. {end.isoformat()})")
                window = settings.window_delta or timedelta(days=1)
                plan = make_plan(to_ticks(start), to_ticks(end), int(window.total_seconds() * TICKS_PER_SECOND)
                                 or DAY_TICKS)
                result.window_start, result.window_end, result.points = start, end, len(points)
                committed = committed_windows(sink, plan, points)
                group = group_size(len(points), settings.concurrency, settings.points_per_request, DEFAULT_GROUP)
                units = units_to_do(plan, points, committed, group)
                fresh = [p for p in points if committed.get(p.webid, 0) < plan.windows]
                overlaps = windows_with_data(sink, plan, fresh)
                if overlaps:
                    progress.note(f"{len(overlaps)} point-windows already hold data: only missing rows are added")
                if len(units) == 0:
                    progress.note("nothing to do: the table already holds this range")
                progress.start(len(units), f"backfill {len(points)} points")
                committer = _Committer(sink, plan, committed, flush_rows=settings.commit_rows)
                reader = RecordedReader(client)
                gate = await _run_units(units, reader, committer, settings.concurrency, progress,
                                        lambda: client.http.retries, overlaps)
                await committer.drain()
                advance_watermarks(sink, committer.watermarks)
                result.values_written = committer.written
                if reader.stats.missing:
                    result.status = "partial"
                    result.errors += len(reader.stats.missing)
                    result.message = (f"{len(reader.stats.missing)} point(s) unknown to the server, not written: "
                                      + "; ".join(list(reader.stats.missing.values())[:5]))
                result.details = {"units": len(units), "pages": reader.stats.pages, "final_concurrency": gate.limit,
                                  "continuations": reader.stats.continuations, "splits": reader.stats.splits}
            finally:
                take_client_counters(result, client)
        progress.close()
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
            if any((p.webid, unit.window) in overlaps for p in unit.points):
                table = await committer.reconcile(unit, table)
            if reader.stats.missing:
                # A point the server no longer knows is not marked done: the next run tries it again.
                unit = replace(unit, points=tuple(p for p in unit.points if p.webid not in reader.stats.missing))
            committer.add(unit, table)
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
