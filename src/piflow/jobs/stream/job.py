"""``piflow stream``: new PI values in ``pi_values`` within seconds, with no gap after a reconnect.

PI channels push changes but cannot resume, so the channel is treated as a *notification with data*, and
``recorded`` stays the authority:

- On every connect and reconnect of a socket, the socket is opened first and then each of its points is read
  back with ``recorded`` from its watermark minus the lookback up to the server's now. Whatever became visible
  before the socket opened is in that read; whatever became visible after it is pushed by the channel.
  Values pushed for a point whose gap read is not committed yet are held back until it is.
- Every ``commit_interval_s`` the values pushed since the last commit are committed through
  :func:`piflow.jobs.value_diff.commit_diff` (the exactly-once protocol of ``sync``). A pushed value can go in as
  it is (source ``channel``) only when its key is certainly right: its timestamp is newer than the point's
  committed watermark and no other pushed value of that point shares it, so ``seq`` is 0 as ``recorded``
  would number it. Otherwise (a late value, an edit, several events at one timestamp, out-of-order messages)
  that point's affected range is re-read with ``recorded`` in the background and the server's rows go in
  with a later commit; its pushed values wait meanwhile.
- A socket that sends neither data nor a heartbeat for ``dead_after_s`` is closed and reopened, with
  exponential backoff and jitter. When channels are unavailable (the handshake is refused, or a proxy
  answers it with plain HTTP) the job falls back to stream updates with markers, then to polling
  ``recorded`` at an interval, and says which mode it uses.
- SIGINT/SIGTERM (or the caller's ``stop`` event) end the job with a final commit. A kill -9 loses nothing
  either: watermarks only move after the values they cover are committed, and the restart reads the gap.

This module runs the job: its lifecycle, gap reads, re-reads and commits. The sources (channels, stream
updates, polling) are in :mod:`piflow.jobs.stream.sources`; the pure pieces are in
:mod:`piflow.jobs.stream.options`, :mod:`piflow.jobs.stream.stats` and :mod:`piflow.jobs.stream.news`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from piflow import schema
from piflow.client.channels import decode_message
from piflow.client.retry import Backoff, RetryPolicy, wait_unless_halted
from piflow.errors import TransientError
from piflow.jobs.common import points_to_read, resolve_time, server_now
from piflow.jobs.reader import RecordedReader
from piflow.jobs.runs import RunResult, job_run, on_stop_signals
from piflow.jobs.stream.news import NewsBuffer, classify_news, dedupe_latest, news_table
from piflow.jobs.stream.options import READ_GROUP, StreamOptions
from piflow.jobs.stream.sources import StreamSources
from piflow.jobs.stream.stats import Delays, StreamStats, status_line, summary_line
from piflow.jobs.value_diff import commit_diff
from piflow.jobs.watermarks import max_timestamps, read_watermarks
from piflow.pitime import TICKS_PER_SECOND, TICKS_PER_US, from_ticks, to_ticks
from piflow.planner import PointRef, group_for_sync
from piflow.progress import Progress
from piflow.sinks.delta import DeltaSink

if TYPE_CHECKING:
    from piflow.client.api import PiClient
    from piflow.config import PiflowSettings

__all__ = ["StreamJob", "run_stream"]

log = logging.getLogger(__name__)

_FLUSH_TIMEOUT_S = 60.0  # how long the final commit waits for re-reads still in flight


@dataclass
class _Gap:
    webids: list[str]
    since_us: int
    table: pa.Table


# ---- the job ----------------------------------------------------------------------------------------------
class StreamJob:
    """One run of ``piflow stream``: sockets (or a fallback) feed a buffer; a committer commits it."""

    def __init__(self, settings: PiflowSettings, options: StreamOptions, sink: DeltaSink, client: PiClient,
                 points: list[PointRef], progress: Progress, result: RunResult) -> None:
        self.settings, self.options, self.sink, self.client = settings, options, sink, client
        self.points = {p.webid: p for p in points}
        self.progress, self.result = progress, result
        self.stats = StreamStats()
        self.buffer = NewsBuffer()
        self.delays = Delays()
        self.marks: dict[str, int] = {}
        self.gaps: list[_Gap] = []
        self.pending: Counter[str] = Counter()  # points with a gap read or re-read not committed yet
        self.gapped: set[str] = set()  # points whose gap read this run has committed
        self.missing: set[str] = set()
        lookback = options.gap_lookback_s
        self.lookback_ticks = int((settings.lookback_delta.total_seconds() if lookback is None else lookback)
                                  * TICKS_PER_SECOND)
        self.default_start = 0
        self.clock_offset = 0.0  # server seconds minus local seconds, for the lag in the status line
        self.retry = RetryPolicy(max_attempts=1_000_000, base_s=options.reconnect_base_s,
                                 cap_s=options.reconnect_cap_s)  # background work retries until the halt
        self.read_slots = asyncio.Semaphore(max(1, settings.concurrency))
        self.commit_lock = asyncio.Lock()
        self._halt = asyncio.Event()  # set when the job winds down (background retries give up)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_status = time.monotonic()
        self._since_status = 0
        self.sources = StreamSources(self, settings.verify)

    # ---- start and stop ---------------------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Server clock, start of points never read, committed watermarks."""
        now = await server_now(self.client)
        self.clock_offset = now.timestamp() - time.time()
        self.default_start = to_ticks(resolve_time("start", self.settings.start, now))
        self.marks = await asyncio.to_thread(read_watermarks, self.sink)

    async def run(self, stop: asyncio.Event) -> None:
        await self.prepare()
        self.progress.start(None, f"stream {len(self.points)} points")
        halt = self._halt
        watcher = asyncio.create_task(stop.wait())
        committer = asyncio.create_task(self._commit_loop(halt))
        feeder = asyncio.create_task(self.sources.feed(halt))
        self.spawn(self._status_loop(halt), "status")
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait({watcher, committer, feeder}, return_when=asyncio.FIRST_COMPLETED)
            failure = next((t.exception() for t in done if t is not watcher and t.exception()), None)
        finally:
            halt.set()
            await self._shutdown(watcher, feeder, committer)
            await self._final_commit(failure)
        if failure is not None:
            raise failure

    async def _shutdown(self, watcher: asyncio.Task[bool], feeder: asyncio.Task[None],
                        committer: asyncio.Task[None]) -> None:
        """Stop the sources (sockets close), let a commit in progress finish (it runs in a thread)."""
        others = [t for t in self._tasks if not t.get_name().startswith("reread")]
        for task in (watcher, feeder, *others):
            task.cancel()
        await asyncio.gather(watcher, feeder, *others, return_exceptions=True)
        await asyncio.gather(committer, return_exceptions=True)

    async def _final_commit(self, failure: BaseException | None) -> None:
        try:
            await self.flush()
        except Exception:
            if failure is None:
                raise
            log.exception("the final commit failed too")
        self._status(force=True)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` in the background; the job cancels it on shutdown (re-reads are waited for)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- pushed values (sources: piflow.jobs.stream.sources) ---------------------------------------------------
    def take_message(self, body: bytes, source: str) -> None:
        """Buffer one channel message (an empty one is a heartbeat)."""
        page = decode_message(body)
        self.stats.messages += 1
        if not page.Items:
            self.stats.heartbeats += 1
        for entry in page.Items:
            w = entry.WebId or ""
            if w in self.points and w not in self.missing:
                self.buffer.add(w, entry.Items, entry.UnitsAbbreviation, source)
                self.stats.pushed_values += len(entry.Items)

    # ---- recorded reads -----------------------------------------------------------------------------------------
    async def read_gap(self, refs: Sequence[PointRef]) -> None:
        """Read ``refs`` back from watermark minus lookback to the server's now; queue it for the next commit."""
        if not refs:
            return
        webids = [r.webid for r in refs]
        self.pending.update(webids)
        queued = False
        try:
            end = to_ticks(await server_now(self.client))
            starts = {w: min(end, self._gap_start(w)) for w in webids}
            table = await self._read_groups(refs, starts, {w: end for w in webids})
            self.gaps.append(_Gap(webids, min(starts.values()) // TICKS_PER_US, table))
            self.stats.gap_reads += 1
            self.stats.gap_values += table.num_rows
            queued = True
        finally:
            if not queued:
                self._release(webids)

    def _gap_start(self, webid: str) -> int:
        mark = self.marks.get(webid)
        return self.default_start if mark is None else mark * TICKS_PER_US - self.lookback_ticks

    def _release(self, webids: Sequence[str]) -> None:
        self.pending.subtract(webids)
        for w in set(webids):
            if self.pending[w] <= 0:
                del self.pending[w]

    async def _read_groups(self, refs: Sequence[PointRef], starts: Mapping[str, int], ends: Mapping[str, int]
                           ) -> pa.Table:
        """Everything recorded for each point from its start to its end, in groups of close starts."""
        groups = group_for_sync(dict(starts), refs, READ_GROUP, self.lookback_ticks)

        async def one(start: int, pts: list[PointRef]) -> pa.Table:
            reader = RecordedReader(self.client)
            async with self.read_slots:
                table = await reader.read(pts, start, max(ends[p.webid] for p in pts), final=True)
            for w in reader.stats.missing:
                if w not in self.missing:
                    self.missing.add(w)
                    self.stats.missing.append(w)
            return table

        tables = await asyncio.gather(*(one(s, pts) for s, pts in groups))
        return pa.concat_tables(tables) if tables else schema.PI_VALUES.empty_table()

    # ---- commits --------------------------------------------------------------------------------------------
    async def _commit_loop(self, halt: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        interval = self.options.commit_interval_s
        next_at = loop.time() + interval
        while not halt.is_set():
            await wait_unless_halted(next_at - loop.time(), halt)
            if halt.is_set():
                return
            await self.commit()
            next_at = max(next_at + interval, loop.time())

    async def _status_loop(self, halt: asyncio.Event) -> None:
        while not halt.is_set():
            await wait_unless_halted(self.options.status_interval_s, halt)
            self._status()

    async def commit(self, *, final: bool = False) -> None:
        """Commit queued gap reads, then the pushed values that can go in as they are.

        Points whose pushed values need a re-read are held and re-read in the background; their rows go in
        with a later commit (so one slow read never delays everyone else's values). ``final`` re-reads inline
        and commits those rows too.
        """
        async with self.commit_lock:
            t0 = time.monotonic()
            committed = self.stats.inserted + self.stats.updated
            newest: list[int] = []
            gaps = await self._commit_gaps(newest)
            news = self.buffer.drain(self._held())
            if news:
                direct, ranges = classify_news(news_table(news, self.points), self.marks)
                if ranges:
                    self.pending.update(list(ranges))  # hold these points until their re-read is committed
                    if final:
                        await self._reread(dict(ranges), None)
                    else:
                        self.spawn(self._reread(dict(ranges), self._halt), "reread")
                if direct.num_rows:
                    since = int(pc.cast(pc.min(direct.column("timestamp")), pa.int64()).as_py())
                    webids = list(dict.fromkeys(direct.column("webid").to_pylist()))
                    await self._commit_table(direct, webids, since, "pushed", newest)
                self.delays.record({w: v for w, v in news.items() if w not in ranges}, time.monotonic())
            if final:
                gaps += await self._commit_gaps(newest)
            self._after_commit(newest)
            log.debug("commit: %d gap reads, %d points with pushed values, %d values written in %.3f s",
                      gaps, len(news), self.stats.inserted + self.stats.updated - committed, time.monotonic() - t0)

    def _held(self) -> set[str]:
        """Points whose pushed values must wait: a read of theirs is in flight, or no gap read of theirs was
        committed yet in this run (until then the table may hold rows past the watermark, from a run that
        died between its commit and its watermark update)."""
        return {w for w in self.buffer.points() if self.pending.get(w) or w not in self.gapped}

    async def flush(self) -> None:
        """Wait for background re-reads, then commit everything that is buffered or queued."""
        rereads = [t for t in self._tasks if t.get_name().startswith("reread")]
        if rereads:
            await asyncio.wait(rereads, timeout=_FLUSH_TIMEOUT_S)
        await self.commit(final=True)

    async def _commit_gaps(self, newest: list[int]) -> int:
        gaps, self.gaps = self.gaps, []
        if gaps:
            table = dedupe_latest(pa.concat_tables([g.table for g in gaps]))
            webids = list(dict.fromkeys(w for g in gaps for w in g.webids))
            await self._commit_table(table, webids, min(g.since_us for g in gaps), "recorded", newest)
            for g in gaps:
                self._release(g.webids)
                self.gapped.update(g.webids)
        return len(gaps)

    def _after_commit(self, newest: list[int]) -> None:
        if newest:
            self.stats.last_lag_s = time.time() + self.clock_offset - max(newest) / 1e6
        self.stats.waiting = self.buffer.size
        self.stats.commit_delay_p50_s = self.delays.quantile(0.5)
        self.stats.commit_delay_p99_s = self.delays.quantile(0.99)
        if self.options.on_status is not None:
            self.options.on_status(self.stats)

    async def _reread(self, ranges: dict[str, tuple[int, int]], halt: asyncio.Event | None) -> None:
        """Queue the server's rows over each point's affected range (seq as ``recorded`` numbers them).

        The points are already held (``pending``); they are released when the rows are committed, or here
        if the read is given up (``halt`` set while retrying; with no ``halt``, the final commit, one attempt):
        their pushed values are then not committed by this run, and a restart reads the gap back from the
        watermark.
        """
        self.stats.reread_points += len(ranges)
        refs = [self.points[w] for w in ranges]
        starts = {w: lo * TICKS_PER_US for w, (lo, _) in ranges.items()}
        ends = {w: hi * TICKS_PER_US + TICKS_PER_US - 1 for w, (_, hi) in ranges.items()}

        async def read() -> None:
            table = await self._read_groups(refs, starts, ends)
            self.gaps.append(_Gap(list(ranges), min(lo for lo, _ in ranges.values()), table))

        def warn(exc: TransientError, failures: int) -> None:
            log.warning("re-read of %d points failed: %s (attempt %d)", len(refs), exc, failures)

        queued = False
        try:
            if halt is None:
                await read()
            else:
                await Backoff(self.retry, sleep=self.client.http.sleep, halt=halt).run(read, warn)
            queued = True
        finally:
            if not queued:
                self._release(list(ranges))

    async def _commit_table(self, table: pa.Table, webids: list[str], since_us: int, what: str,
                            newest: list[int]) -> None:
        if table.num_rows == 0:
            return
        meta = {"piflow.job": "stream", "piflow.run_id": self.result.run_id, "piflow.stream.part": what}
        # No deletions here: a streamed table holds only what changed, not everything in a range.
        inserted, updated, _ = await asyncio.to_thread(commit_diff, self.sink, table, webids, since_us, meta)
        for w, t in max_timestamps(table).items():
            self.marks[w] = max(t, self.marks.get(w, t))
            newest.append(t)
        self.stats.commits += 1
        self.stats.inserted += inserted
        self.stats.updated += updated
        self._since_status += inserted + updated
        self.result.values_written = self.stats.inserted + self.stats.updated
        self.progress.advance(1, inserted + updated)

    # ---- reporting ----------------------------------------------------------------------------------------------
    def note(self, message: str) -> None:
        """Say ``message`` in the log and as a progress note (the mode in use, fallbacks)."""
        log.info("%s", message)
        self.progress.note(message)

    def _status(self, force: bool = False) -> None:
        """The status line (and the observer), at most every ``status_interval_s`` unless forced."""
        self.stats.waiting = self.buffer.size
        elapsed = time.monotonic() - self._last_status
        if force or elapsed >= self.options.status_interval_s * 0.99:
            rate = self._since_status / elapsed if elapsed > 0 else 0.0
            self.progress.note(status_line(len(self.points) - len(self.missing), self.stats, rate))
            self._last_status = time.monotonic()
            self._since_status = 0
        if self.options.on_status is not None:
            self.options.on_status(self.stats)


# ---- entry point ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _signals(stop: asyncio.Event | None) -> Iterator[asyncio.Event]:
    """The caller's stop event, or one set by SIGINT/SIGTERM (handlers only in the main thread)."""
    if stop is not None:
        yield stop
        return
    event = asyncio.Event()
    with on_stop_signals(lambda _: event.set()):
        yield event


async def run_stream(settings: PiflowSettings, progress: Progress | None = None, *,
                     options: StreamOptions | None = None, stop: asyncio.Event | None = None) -> RunResult:
    """Stream until ``stop`` is set (or SIGINT/SIGTERM when ``stop`` is None), then commit and return."""
    options = options or StreamOptions()
    async with job_run("stream", settings, progress) as run:
        result = run.result
        points = await points_to_read(settings, run.sink, run.progress)
        result.points = len(points)
        job = StreamJob(settings, options, run.sink, run.client, points, run.progress, result)
        try:
            with _signals(stop) as stop_event:
                await job.run(stop_event)
        finally:
            result.details = asdict(job.stats)
            result.message = summary_line(job.stats)
            result.window_end = from_ticks(int((time.time() + job.clock_offset) * TICKS_PER_SECOND))
        run.unknown_points({w: job.points[w].name for w in sorted(job.missing) if w in job.points})
    return result

