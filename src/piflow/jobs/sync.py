"""``piflow sync``: each point from its own watermark (minus a lookback) to the server's now minus a lag.

Re-reading the lookback window is how late values get in and edited values replace their earlier version; a
large fleet re-reads it less often (``recheck_every``, :class:`Recheck`) and reads from each watermark between.
What was read is compared with what the table holds for that range, on the key (webid, timestamp, seq):
new keys are appended, keys whose content changed are merged, identical rows are left alone. A run that is
killed and re-run, or run twice, therefore leaves the table as one clean run would.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa

from piflow import schema
from piflow.jobs.common import all_or_none, points_to_read, resolve_time, server_now
from piflow.jobs.reader import RecordedReader
from piflow.jobs.runs import RunResult, job_run
from piflow.jobs.value_diff import StagedDiff, commit_staged, existing_rows
from piflow.jobs.watermarks import read_watermarks
from piflow.pitime import TICKS_PER_SECOND, TICKS_PER_US, from_ticks, to_ticks
from piflow.planner import PointRef, group_for_sync
from piflow.progress import Progress
from piflow.sinks.delta import DeltaSink, Snapshot

if TYPE_CHECKING:
    from piflow.config import PiflowSettings

log = logging.getLogger(__name__)
DEFAULT_GROUP = 100
# A sync reads and commits at most this much time at once (or twice the lookback, if longer): a long gap is
# caught up slice by slice, each committed, so memory stays bounded and work done is kept.
SLICE_TICKS = 6 * 3600 * TICKS_PER_SECOND
# Points whose slice is read and compared at once: memory grows with this, not with the fleet (an hour of
# 10,000 points is ~500,000 values).
CHUNK_POINTS = 10_000
# Differences held before they are committed (a catch-up after an outage is mostly new rows).
STAGED_ROWS = 1_000_000


async def run_sync(settings: PiflowSettings, progress: Progress | None = None) -> RunResult:
    async with job_run("sync", settings, progress) as run:
        sink, result, progress = run.sink, run.result, run.progress
        points = await points_to_read(settings, sink, progress)
        now = await server_now(run.client)
        end_ticks = to_ticks(now - settings.safety_lag_delta)
        default_start = to_ticks(resolve_time("start", settings.start, now))
        lookback = int(settings.lookback_delta.total_seconds() * TICKS_PER_SECOND)
        marks = read_watermarks(sink)
        sink.ensure("pi_values", schema.PI_VALUES)
        recheck = plan_recheck(settings, len(points), sink.snapshot("pi_values"), end_ticks)
        if not recheck.full:
            progress.note(f"sync: reading from each point's watermark; the {settings.lookback} lookback is re-read "
                          f"every {recheck.every_text}, next at {from_ticks(recheck.due_ticks).isoformat()}")
        starts = {p.webid: min(end_ticks, recheck.start(marks.get(p.webid), lookback, default_start))
                  for p in points}
        result.points = len(points)
        result.window_start, result.window_end = from_ticks(min(starts.values())), from_ticks(end_ticks)
        group = settings.points_per_request or DEFAULT_GROUP
        # Points whose reads start within ``slack`` of each other share calls (the group starts at the earliest):
        # the lookback when every point re-reads it, a sixth of it when reading from watermarks (which may lie
        # hours apart, and whatever a group reads earlier than a point's watermark is compared for nothing).
        slack = lookback if recheck.full else lookback // 6
        plan = [(s, e, last, group_for_sync(ss, [p for p in points if p.webid in ss], group, slack))
                for s, e, last, ss in sync_slices(starts, end_ticks, max(SLICE_TICKS, 2 * lookback))]
        if len(plan) > 1:
            progress.note(f"sync: {from_ticks(min(starts.values())).isoformat()} .. "
                          f"{from_ticks(end_ticks).isoformat()} in {len(plan)} slices, each committed")
        progress.start(sum(len(g) for *_, g in plan), f"sync {len(points)} points")
        reader = RecordedReader(run.client)
        hold = clock_behind(marks, [p.webid for p in points], now, progress)
        counts = Counts()
        for s, e, last, groups in plan:
            await _sync_slice(sink, reader, groups, (s, e, last), settings.concurrency, progress, hold,
                              {"piflow.job": "sync", "piflow.run_id": result.run_id}, counts,
                              recheck.transactions() if last else ())
            result.values_written = counts.inserted + counts.updated + counts.deleted
        run.unknown_points(reader.stats.missing)
        result.details = {"read": counts.read, "inserted": counts.inserted, "updated": counts.updated,
                          "deleted": counts.deleted, "slices": len(plan), "held_points": len(hold),
                          "lookback_reread": recheck.full, "commit_retries": sink.conflicts}
    return result


@dataclass(frozen=True)
class Recheck:
    """Whether this sync re-reads the lookback, and where each point's read starts (pure but for the plan).

    With ``every`` unset, every sync re-reads the lookback before each watermark. With an interval, syncs in
    between read from each watermark (inclusive) only, and the sync that re-reads starts at the lookback
    before the *earlier* of the watermark and the end of the previous re-read (``last_ticks``): every value is
    then re-read after the edits the lookback allows, as when each sync re-reads. The end of a re-read is
    recorded as a Delta transaction id in the sync's last commit, so a re-read cut short is done again.
    """

    full: bool
    every_ticks: int | None
    last_ticks: int | None
    end_ticks: int
    app_id: str

    @property
    def every_text(self) -> str:
        return str(timedelta(microseconds=(self.every_ticks or 0) // TICKS_PER_US))

    @property
    def due_ticks(self) -> int:
        return (self.last_ticks or 0) + (self.every_ticks or 0)

    def start(self, watermark_us: int | None, lookback: int, default_start: int) -> int:
        if watermark_us is None:
            return default_start
        mark = watermark_us * TICKS_PER_US
        if not self.full:
            return mark
        return min(mark, self.last_ticks if self.last_ticks is not None else mark) - lookback

    def transactions(self) -> tuple[tuple[str, int], ...]:
        """What the sync's last commit records: the end of this re-read (none when every sync re-reads)."""
        if not self.full or self.every_ticks is None:
            return ()
        return ((self.app_id, self.end_ticks // TICKS_PER_US),)


def plan_recheck(settings: PiflowSettings, points: int, snap: Snapshot, end_ticks: int) -> Recheck:
    """Decide from the settings and the end of the last re-read recorded in ``pi_values`` (one per filter)."""
    every = settings.recheck_interval(points)
    digest = hashlib.sha1(settings.points.encode("utf-8"), usedforsecurity=False).hexdigest()[:12]
    app_id = f"piflow-sync-recheck-{digest}"
    if every is None:
        return Recheck(True, None, None, end_ticks, app_id)
    every_ticks = int(every.total_seconds() * TICKS_PER_SECOND)
    last_us = snap.transaction_version(app_id)
    last = None if last_us is None else last_us * TICKS_PER_US
    full = last is None or end_ticks - last >= every_ticks or end_ticks < last
    return Recheck(full, every_ticks, last, end_ticks, app_id)


@dataclass
class Counts:
    """What a sync has read and written so far, over its slices (its run row says it, also when interrupted)."""

    read: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0


def sync_slices(starts: dict[str, int], end_ticks: int, span_ticks: int
                ) -> list[tuple[int, int, bool, dict[str, int]]]:
    """The sync's range cut into slices of at most ``span_ticks`` (pure): (slice start, slice end, last?,
    {webid: where that point's read starts in the slice}). Slices are half-open except the last, which ends at
    ``end_ticks`` inclusive; cuts fall on whole seconds so that table microseconds split cleanly. A sync that
    catches up a long gap thus commits slice by slice (work kept, memory bounded) instead of all at once."""
    first = min(starts.values())
    out = []
    s = first
    while True:
        cut = (s + span_ticks) // TICKS_PER_SECOND * TICKS_PER_SECOND
        last = cut >= end_ticks or cut <= s
        e = end_ticks if last else cut
        ss = {w: max(t, s) for w, t in starts.items() if t < e or (last and t <= e)}
        if ss:
            out.append((s, e, last, ss))
        if last:
            return out
        s = e


async def _sync_slice(sink: DeltaSink, reader: RecordedReader, groups: list[tuple[int, list[PointRef]]],
                      window: tuple[int, int, bool], concurrency: int, progress: Progress, hold: frozenset[str],
                      metadata: dict[str, str], counts: Counts,
                      transactions: tuple[tuple[str, int], ...] = ()) -> None:
    """Read one slice of every point in it and commit its new, changed and deleted rows.

    Points are read and compared a chunk at a time (:data:`CHUNK_POINTS`), keeping only the differences, so
    memory does not grow with the fleet; the differences are committed (:func:`commit_staged`: edits merged,
    then new rows appended) at the end of the slice, or earlier once they reach :data:`STAGED_ROWS`. A crash
    between commits loses nothing: watermarks move only after a batch's commits, and the next run compares
    again.
    """
    _, end, last = window
    until_us = None if last else end // TICKS_PER_US
    # Every chunk is compared with this one snapshot, and the commits are made from it (it moves on with this
    # run's own commits; if another writer commits meanwhile, the differences are compared again).
    snap = sink.snapshot("pi_values")
    staged = StagedDiff()
    for chunk in _chunks(groups, CHUNK_POINTS):
        webids = [p.webid for _, pts in chunk for p in pts]
        since_us = min(s for s, _ in chunk) // TICKS_PER_US  # this chunk's earliest read (never before the slice)
        # What the table holds is read in a thread while the server answers (Arrow and Delta release the GIL).
        existing = asyncio.create_task(asyncio.to_thread(existing_rows, snap, webids, since_us, until_us))
        try:
            fetched = await _read_groups(reader, chunk, end, concurrency, progress, final=last)
        finally:
            held = await asyncio.gather(existing, return_exceptions=True)
        if isinstance(held[0], BaseException):
            raise held[0]
        # Deletions are judged only where a point was read completely: its group's start to the slice's end
        # (exclusive, but for the last slice).
        covered = {p.webid: s for s, pts in chunk for p in pts if p.webid not in reader.stats.missing}
        staged.add(fetched, held[0], (covered, end if last else end - 1), hold)
        counts.read += fetched.num_rows
        del fetched, held
        if staged.rows >= STAGED_ROWS:
            await _commit(sink, snap, staged, metadata, counts)
            staged = StagedDiff()
    await _commit(sink, snap, staged, metadata, counts, transactions)


async def _commit(sink: DeltaSink, snap: Snapshot, staged: StagedDiff, metadata: dict[str, str],
                  counts: Counts, transactions: tuple[tuple[str, int], ...] = ()) -> None:
    inserted, updated, deleted = await asyncio.to_thread(commit_staged, sink, snap, staged, metadata, transactions)
    counts.inserted += inserted
    counts.updated += updated
    counts.deleted += deleted


def _chunks(groups: list[tuple[int, list[PointRef]]], points: int) -> list[list[tuple[int, list[PointRef]]]]:
    """Consecutive request groups of about ``points`` points together (pure)."""
    out: list[list[tuple[int, list[PointRef]]]] = []
    size = 0
    for g in groups:
        if not out or size >= points:
            out.append([])
            size = 0
        out[-1].append(g)
        size += len(g[1])
    return out


def clock_behind(marks: dict[str, int], webids: list[str], now: datetime, progress: Progress) -> frozenset[str]:
    """The points whose stored values are newer than the server's clock, after saying so once.

    A server whose clock is behind (or was set back) shows history as it was earlier: values that arrived
    later are missing and edits not yet made. Taking that for deletions and edits would remove and revert
    good rows, so those points are only added to until the server's clock passes their watermark again.
    """
    now_us = to_ticks(now) // TICKS_PER_US
    ahead = frozenset(w for w in webids if marks.get(w, now_us) > now_us)
    if ahead:
        newest = from_ticks(max(marks[w] for w in ahead) * TICKS_PER_US)
        message = (f"the PI server's clock ({now.isoformat()}) is behind the newest stored value of {len(ahead)} "
                   f"point(s) (up to {newest.isoformat()}): their deletions and edits are skipped this run")
        log.warning("%s", message)
        progress.note(message)
    return ahead


async def _read_groups(reader: RecordedReader, groups: list[tuple[int, list[PointRef]]], end_ticks: int,
                       concurrency: int, progress: Progress, final: bool = True) -> pa.Table:
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(start: int, pts: list[PointRef]) -> pa.Table:
        async with sem:
            table = await reader.read(pts, start, end_ticks, final=final)
        progress.advance(1, table.num_rows)
        return table

    tables = await all_or_none(one(s, pts) for s, pts in groups if s <= end_ticks)
    return pa.concat_tables(tables) if tables else schema.PI_VALUES.empty_table()
