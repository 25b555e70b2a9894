"""``piflow stream``: new PI values in ``pi_values`` within seconds, with no gap after a reconnect.

PI channels push changes but cannot resume, so the channel is treated as a *notification with data*, and
``recorded`` stays the authority:

- On every connect and reconnect of a socket, the socket is opened first and then each of its points is read
  back with ``recorded`` from its watermark minus the lookback up to the server's now. Whatever became visible
  before the socket opened is in that read; whatever became visible after it is pushed by the channel.
  Values pushed for a point whose gap read is not committed yet are held back until it is.
- Every ``commit_interval_s`` the values pushed since the last commit are committed through
  :func:`piflow.jobs.sync.commit_diff` (the exactly-once protocol of ``sync``). A pushed value can go in as
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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Container, Coroutine, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piflow import decode, schema
from piflow.client.channels import (
    Channel,
    ChannelClosedError,
    ChannelOptions,
    ChannelUnavailableError,
    chunk_params,
    decode_message,
    open_channel,
    plan_sockets,
    read_updates,
    register_updates,
)
from piflow.client.retry import RetryPolicy
from piflow.errors import (
    AuthError,
    BadRequestError,
    ConfigError,
    NotFoundError,
    PiApiError,
    TransientError,
)
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
from piflow.jobs.sync import commit_diff
from piflow.jobs.watermarks import max_timestamps, read_watermarks
from piflow.pitime import TICKS_PER_SECOND, TICKS_PER_US, from_ticks, parse_interval, to_ticks
from piflow.planner import PointRef, group_for_sync
from piflow.progress import NullProgress, Progress
from piflow.sinks.delta import DeltaSink

if TYPE_CHECKING:
    from piflow.client.api import PiClient
    from piflow.config import PiflowSettings

log = logging.getLogger(__name__)

MODE_CHANNELS = "channels"
MODE_UPDATES = "updates"
MODE_POLL = "poll"
MODES = (MODE_CHANNELS, MODE_UPDATES, MODE_POLL)
_NEVER = -(2**62)
READ_GROUP = 100
_FLUSH_TIMEOUT_S = 60.0  # how long the final commit waits for re-reads still in flight


@dataclass(frozen=True)
class StreamOptions:
    """Settings of ``piflow stream`` that ``PiflowSettings`` does not hold (yet).

    ``modes`` is the order of attempts: channels, then stream updates, then polling ``recorded``; a mode
    is left only when the server shows it is not available. ``gap_lookback_s`` (None: the ``lookback``
    setting) is how far before each watermark a gap read starts, for values that arrive late.
    ``channel_params`` adds query parameters to channel URLs (the emulator's ``_pollSeconds``).
    ``on_status`` is called with the live counters after every commit and status tick (monitoring, tests).
    """

    commit_interval_s: float = 5.0
    points_per_socket: int = 500
    max_url_chars: int = 8000
    heartbeat_rate: int = 5
    dead_after_s: float = 60.0
    reconnect_base_s: float = 0.5
    reconnect_cap_s: float = 30.0
    unavailable_after: int = 3
    modes: tuple[str, ...] = MODES
    updates_interval_s: float = 2.0
    poll_interval_s: float = 30.0
    gap_lookback_s: float | None = None
    status_interval_s: float = 10.0
    channel_params: tuple[tuple[str, str], ...] = ()
    on_status: Callable[[StreamStats], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.commit_interval_s <= 0:
            raise ConfigError("commit_interval", "must be positive")
        if not self.modes or any(m not in MODES for m in self.modes):
            raise ConfigError("stream_modes", f"must be a non-empty sequence of {', '.join(MODES)}")
        if self.points_per_socket < 1:
            raise ConfigError("points_per_socket", "must be at least 1")

    @classmethod
    def from_settings(cls, settings: object, **overrides: Any) -> StreamOptions:
        """Options from settings that may define ``commit_interval`` (an interval such as ``5s``),
        ``points_per_socket``, ``heartbeat_rate``, ``poll_interval`` and ``stream_modes`` (comma-separated);
        ``overrides`` (None values ignored) win. Settings without these fields give the defaults."""
        values: dict[str, Any] = {}
        interval = getattr(settings, "commit_interval", None)
        if interval is not None:
            values["commit_interval_s"] = _seconds_of("commit_interval", interval)
        poll = getattr(settings, "poll_interval", None)
        if poll is not None:
            values["poll_interval_s"] = _seconds_of("poll_interval", poll)
        for name in ("points_per_socket", "heartbeat_rate"):
            if getattr(settings, name, None) is not None:
                values[name] = int(getattr(settings, name))
        modes = getattr(settings, "stream_modes", None)
        if modes:
            values["modes"] = tuple(m.strip().lower() for m in str(modes).split(",") if m.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _seconds_of(setting: str, value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        return parse_interval(str(value)).total_seconds()
    except ValueError as exc:
        raise ConfigError(setting, f"not an interval such as 5s: {value!r}") from exc


@dataclass
class StreamStats:
    """Counters reported in the status line and in the run's details."""

    mode: str = ""
    modes_tried: list[str] = field(default_factory=list)
    sockets: int = 0
    connects: int = 0
    reconnects: int = 0
    dead_sockets: int = 0
    messages: int = 0
    heartbeats: int = 0
    pushed_values: int = 0
    gap_reads: int = 0
    gap_values: int = 0
    reread_points: int = 0
    commits: int = 0
    inserted: int = 0
    updated: int = 0
    waiting: int = 0
    last_lag_s: float | None = None
    commit_delay_p50_s: float | None = None  # pushed value arrived -> its commit done
    commit_delay_p99_s: float | None = None
    missing: list[str] = field(default_factory=list)


# ---- pure logic ----------------------------------------------------------------------------------------------
def classify_news(news: pa.Table, marks: Mapping[str, int]) -> tuple[pa.Table, dict[str, tuple[int, int]]]:
    """Split pushed values into rows safe to commit as they are, and per point a range to re-read.

    A point's pushed rows are safe when every timestamp is newer than its committed watermark (``marks``, in
    microseconds) and no two share a timestamp: then no other event can hold that key and ``seq`` is 0. Any
    other point (late value, edit, events sharing a timestamp, out-of-order messages) is returned with the
    (first, last) microsecond of its pushed rows, to be re-read with ``recorded``.
    """
    if news.num_rows == 0:
        return news, {}
    webids = news.column("webid").to_pylist()
    ts = pc.cast(news.column("timestamp"), pa.int64()).to_numpy(zero_copy_only=False).tolist()
    seen: set[tuple[str, int]] = set()
    unsafe: set[str] = set()
    lo: dict[str, int] = {}
    hi: dict[str, int] = {}
    for w, t in zip(webids, ts, strict=True):
        lo[w] = min(t, lo.get(w, t))
        hi[w] = max(t, hi.get(w, t))
        if t <= marks.get(w, _NEVER) or (w, t) in seen:
            unsafe.add(w)
        seen.add((w, t))
    if not unsafe:
        return news, {}
    keep = pa.array([w not in unsafe for w in webids], pa.bool_())
    return news.filter(keep), {w: (lo[w], hi[w]) for w in unsafe}


def dedupe_latest(table: pa.Table) -> pa.Table:
    """Keep the last row of each (webid, timestamp, seq): gap reads concatenated in order, newest last."""
    n = table.num_rows
    if n < 2:
        return table
    w = pc.dictionary_encode(table.column("webid").combine_chunks()).indices.to_numpy(zero_copy_only=False)
    t = pc.cast(table.column("timestamp"), pa.int64()).to_numpy(zero_copy_only=False)
    s = table.column("seq").to_numpy(zero_copy_only=False)
    order = np.lexsort((np.arange(n), s, t, w))
    ws, ts_, ss = w[order], t[order], s[order]
    last = np.ones(n, dtype=np.bool_)
    last[:-1] = (ws[1:] != ws[:-1]) | (ts_[1:] != ts_[:-1]) | (ss[1:] != ss[:-1])
    if last.all():
        return table
    return table.take(pa.array(np.sort(order[last])))


def status_line(points: int, stats: StreamStats, values_per_s: float) -> str:
    """One human line: mode, points, sockets, rate, lag and reconnects."""
    lag = "-" if stats.last_lag_s is None else f"{stats.last_lag_s:.1f} s"
    sockets = f", {stats.sockets} sockets" if stats.mode == MODE_CHANNELS else ""
    return (f"stream [{stats.mode or 'starting'}] {points} points{sockets}: {values_per_s:.0f} values/s, "
            f"lag {lag}, {stats.reconnects} reconnects, {stats.waiting} values waiting, "
            f"{stats.inserted + stats.updated} committed in {stats.commits} commits")


# ---- pushed values waiting for the next commit ----------------------------------------------------------------
@dataclass
class Pushed:
    """Values of one point from one message, and when they arrived (monotonic seconds)."""

    source: str
    values: list[decode.PiValue]
    units: str | None
    arrived: float


News = dict[str, list[Pushed]]


class NewsBuffer:
    """Values pushed per point since the last commit, in arrival order, with the source they came from."""

    def __init__(self) -> None:
        self._items: News = {}
        self.size = 0

    def add(self, webid: str, values: list[decode.PiValue], units: str | None, source: str,
            arrived: float | None = None) -> None:
        if values:
            at = time.monotonic() if arrived is None else arrived
            self._items.setdefault(webid, []).append(Pushed(source, values, units, at))
            self.size += len(values)

    def points(self) -> list[str]:
        return list(self._items)

    def drain(self, hold: Container[str]) -> News:
        """Everything except the points in ``hold`` (their gap read is not committed yet)."""
        out = {w: v for w, v in self._items.items() if w not in hold}
        self._items = {w: v for w, v in self._items.items() if w in hold}
        self.size = sum(len(p.values) for parts in self._items.values() for p in parts)
        return out


def news_table(news: Mapping[str, list[Pushed]], points: Mapping[str, PointRef]) -> pa.Table:
    """Decode pushed values into pi_values rows (per source, then concatenated)."""
    builders: dict[str, decode.ColumnBuilder] = {}
    for w, parts in news.items():
        ref = points[w]
        for p in parts:
            b = builders.setdefault(p.source, decode.ColumnBuilder(source=p.source))
            b.add(w, p.values, point_type=ref.point_type, default_units=p.units or ref.units,
                  where=f"{ref.name} (pushed)")
    tables = [b.table() for b in builders.values()]
    return pa.concat_tables(tables) if tables else schema.PI_VALUES.empty_table()


class Delays:
    """Seconds from a value's arrival to the end of the commit that took it (the job's own share of the lag)."""

    def __init__(self, keep: int = 50_000) -> None:
        self._samples: deque[float] = deque(maxlen=keep)

    def record(self, news: News, done: float) -> None:
        for parts in news.values():
            for p in parts:
                self._samples.extend([done - p.arrived] * len(p.values))

    def quantile(self, q: float) -> float | None:
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]



@dataclass
class _Gap:
    webids: list[str]
    since_us: int
    table: pa.Table


@dataclass
class _Socket:
    refs: list[PointRef]
    attempt: int = 0
    healthy: bool = False


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Sleep up to ``timeout`` seconds, waking early when ``event`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(0.0, timeout))


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
        self.backoff = RetryPolicy(max_attempts=1_000_000, base_s=options.reconnect_base_s,
                                   cap_s=options.reconnect_cap_s)
        self.read_slots = asyncio.Semaphore(max(1, settings.concurrency))
        self.commit_lock = asyncio.Lock()
        self._halt = asyncio.Event()  # set when the job winds down (background retries give up)
        self.ever_connected = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_status = time.monotonic()
        self._since_status = 0

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
        feeder = asyncio.create_task(self._feed(halt))
        self._spawn(self._status_loop(halt), "status")
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

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- sources: channels, then stream updates, then polling --------------------------------------------------
    async def _feed(self, halt: asyncio.Event) -> None:
        modes = self.options.modes
        for i, mode in enumerate(modes):
            self.stats.mode = mode
            self.stats.modes_tried.append(mode)
            try:
                await {MODE_CHANNELS: self._run_channels, MODE_UPDATES: self._run_updates,
                       MODE_POLL: self._run_poll}[mode](halt)
                return
            except _Unavailable as exc:
                if i == len(modes) - 1:
                    raise ChannelUnavailableError(f"no streaming mode is available: {exc}") from exc
                self._note(f"stream: {mode} unavailable ({exc}); falling back to {modes[i + 1]}")

    def _live(self, refs: Sequence[PointRef]) -> list[PointRef]:
        return [r for r in refs if r.webid not in self.missing]

    async def _run_channels(self, halt: asyncio.Event) -> None:
        opts = self._channel_options()
        plan = plan_sockets(self.client.http.base_url, list(self.points), self.options.points_per_socket,
                            self.options.max_url_chars, opts)
        self.stats.sockets = len(plan)
        self._note(f"stream: channels, {len(self.points)} points on {len(plan)} sockets, "
                   f"commit every {self.options.commit_interval_s:g} s")
        tasks = [asyncio.create_task(self._socket(_Socket([self.points[w] for w in ws]), opts, halt))
                 for ws in plan]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _channel_options(self) -> ChannelOptions:
        o = self.options
        return ChannelOptions(heartbeat_rate=o.heartbeat_rate, dead_after_s=o.dead_after_s,
                              extra_params=o.channel_params, verify=self.settings.verify)

    async def _socket(self, sock: _Socket, opts: ChannelOptions, halt: asyncio.Event) -> None:
        """Keep one socket open until ``halt``: reconnect with backoff, read each gap, drop unknown points."""
        while not halt.is_set() and sock.refs:
            try:
                await self._connection(sock, opts, halt)
                return
            except ChannelUnavailableError as exc:
                raise _Unavailable(str(exc)) from exc
            except ChannelClosedError as exc:
                self.stats.reconnects += 1
                self.stats.dead_sockets += exc.code is None
                sock.attempt = 1 if sock.healthy else sock.attempt + 1
                log.info("channel of %d points ended: %s; reconnecting", len(sock.refs), exc)
            except (NotFoundError, BadRequestError) as exc:
                sock.refs = await self._without_missing(sock.refs, exc)
                continue
            except AuthError as exc:
                if exc.status != 403:
                    raise
                # REST works (the job got this far), so a 403 on the upgrade forbids channels, not this client.
                sock.refs = await self._without_missing(sock.refs, exc)
                continue
            except TransientError as exc:
                sock.attempt += 1
                if not self.ever_connected and sock.attempt >= self.options.unavailable_after:
                    raise _Unavailable(f"{sock.attempt} handshakes failed: {exc}") from exc
                log.warning("channel of %d points failed: %s (attempt %d)", len(sock.refs), exc, sock.attempt)
            sock.healthy = False
            await _wait(halt, self.backoff.delay(max(1, sock.attempt)))

    async def _connection(self, sock: _Socket, opts: ChannelOptions, halt: asyncio.Event) -> None:
        """One socket's life: open, read the gap while receiving, then receive until it ends or ``halt``."""
        refs = self._live(sock.refs)
        if not refs:
            return
        async with open_channel(self.client.http, [r.webid for r in refs], opts) as channel:
            self.stats.connects += 1
            self.ever_connected = True
            receiver = asyncio.create_task(self._receive(channel, sock))
            halted = asyncio.create_task(halt.wait())
            try:
                await self.read_gap(refs)
                await asyncio.wait({receiver, halted}, return_when=asyncio.FIRST_COMPLETED)
                if receiver.done():
                    receiver.result()  # raises why the socket ended
            finally:
                receiver.cancel()
                halted.cancel()
                await asyncio.gather(receiver, halted, return_exceptions=True)

    async def _receive(self, channel: Channel, sock: _Socket) -> None:
        while True:
            body = await channel.receive()
            sock.healthy = True
            sock.attempt = 0
            self.take_message(body, schema.SOURCE_CHANNEL)

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

    async def _without_missing(self, refs: list[PointRef], exc: PiApiError) -> list[PointRef]:
        """After a 404/400 for a set of points: drop those REST does not know; if none, the route is missing."""
        missing = await self._probe(refs)
        if not missing:
            raise _Unavailable(f"refused for points that recorded knows: {exc}") from exc
        for w in missing:
            if w not in self.missing:
                self.missing.add(w)
                self.stats.missing.append(w)
                log.warning("point %s is unknown to the server (deleted?): no longer streamed", self.points[w].name)
        return [r for r in refs if r.webid not in missing]

    async def _probe(self, refs: list[PointRef]) -> set[str]:
        reader = RecordedReader(self.client)
        now = to_ticks(await server_now(self.client))
        async with self.read_slots:
            await reader.read(refs, now, now)
        return set(reader.stats.missing)

    async def _run_updates(self, halt: asyncio.Event) -> None:
        """Stream updates: register markers, read the gap, then read the markers every ``updates_interval_s``."""
        markers: dict[str, str] = {}
        await self._register(self._live(list(self.points.values())), markers, halt)
        self._note(f"stream: stream updates (markers), {len(markers)} points, read every "
                   f"{self.options.updates_interval_s:g} s, commit every {self.options.commit_interval_s:g} s")
        self._spawn(self._gap_until_read(list(self.points.values()), halt), "gap")
        attempt = refused = 0
        ever_read = False
        while not halt.is_set():
            await _wait(halt, self.options.updates_interval_s if attempt == 0 else self.backoff.delay(attempt))
            if halt.is_set():
                return
            try:
                lost = await self._read_markers(markers)
                attempt = 0
            except TransientError as exc:
                attempt += 1
                log.warning("reading stream updates failed: %s (attempt %d)", exc, attempt)
                continue
            if len(lost) < len(markers):
                ever_read = True
            elif not ever_read:
                # Markers refused right after they were issued, again and again: reads are not served here.
                refused += 1
                if refused >= self.options.unavailable_after:
                    raise _Unavailable(f"{refused} reads refused every marker just registered")
            if lost:
                refs = [self.points[w] for w in lost]
                for w in lost:
                    markers.pop(w, None)
                await self._register(refs, markers, halt)
                self._spawn(self._gap_until_read(refs, halt), "gap")

    async def _register(self, refs: list[PointRef], markers: dict[str, str], halt: asyncio.Event) -> None:
        fixed = len(self.client.http.url_for("streamsets/updates")) + 1
        for chunk in chunk_params([r.webid for r in refs], "webId", fixed, READ_GROUP, self.options.max_url_chars):
            todo = [self.points[w] for w in chunk]
            attempt = 0
            while todo and not halt.is_set():
                try:
                    markers.update(await register_updates(self.client.http, [r.webid for r in todo]))
                    break
                except AuthError:
                    raise
                except TransientError as exc:
                    attempt += 1
                    log.warning("stream updates registration failed: %s (attempt %d)", exc, attempt)
                    await _wait(halt, self.backoff.delay(attempt))
                except PiApiError as exc:
                    todo = await self._without_missing(todo, exc)

    async def _read_markers(self, markers: dict[str, str]) -> list[str]:
        fixed = len(self.client.http.url_for("streamsets/updates")) + 1
        by_marker = {m: w for w, m in markers.items()}
        lost: list[str] = []
        for chunk in chunk_params(list(by_marker), "marker", fixed, READ_GROUP, self.options.max_url_chars):
            got = await read_updates(self.client.http, {by_marker[m]: m for m in chunk})
            for w, values in got.events.items():
                if w not in self.missing:
                    self.buffer.add(w, values, None, schema.SOURCE_UPDATE)
                    self.stats.pushed_values += len(values)
            markers.update(got.markers)
            lost.extend(got.lost)
        self.stats.messages += 1
        return lost

    async def _run_poll(self, halt: asyncio.Event) -> None:
        """Polling: a sync-like read of every point from its watermark minus the lookback, at an interval."""
        self._note(f"stream: polling recorded values every {self.options.poll_interval_s:g} s "
                   f"({len(self.points)} points)")
        while not halt.is_set():
            await self._gap_until_read(list(self.points.values()), halt)
            await _wait(halt, self.options.poll_interval_s)

    async def _gap_until_read(self, refs: list[PointRef], halt: asyncio.Event) -> None:
        attempt = 0
        while not halt.is_set():
            try:
                await self.read_gap(self._live(refs))
                return
            except TransientError as exc:
                attempt += 1
                log.warning("gap read of %d points failed: %s (attempt %d)", len(refs), exc, attempt)
                await _wait(halt, self.backoff.delay(attempt))

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
            await _wait(halt, next_at - loop.time())
            if halt.is_set():
                return
            await self.commit()
            next_at = max(next_at + interval, loop.time())

    async def _status_loop(self, halt: asyncio.Event) -> None:
        while not halt.is_set():
            await _wait(halt, self.options.status_interval_s)
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
                        self._spawn(self._reread(dict(ranges), self._halt), "reread")
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
        if the read is given up (``halt`` set while retrying): their pushed values are then not committed
        by this run, and a restart reads the gap back from the watermark.
        """
        self.stats.reread_points += len(ranges)
        refs = [self.points[w] for w in ranges]
        starts = {w: lo * TICKS_PER_US for w, (lo, _) in ranges.items()}
        ends = {w: hi * TICKS_PER_US + TICKS_PER_US - 1 for w, (_, hi) in ranges.items()}
        queued = False
        attempt = 0
        try:
            while not queued:
                try:
                    table = await self._read_groups(refs, starts, ends)
                    self.gaps.append(_Gap(list(ranges), min(lo for lo, _ in ranges.values()), table))
                    queued = True
                except TransientError as exc:
                    attempt += 1
                    if halt is None or halt.is_set():
                        raise
                    log.warning("re-read of %d points failed: %s (attempt %d)", len(refs), exc, attempt)
                    await _wait(halt, self.backoff.delay(attempt))
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
    def _note(self, message: str) -> None:
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


class _Unavailable(Exception):
    """A streaming mode the server does not offer: move on to the next one."""


# ---- entry point ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _signals(stop: asyncio.Event | None) -> Iterator[asyncio.Event]:
    """The caller's stop event, or one set by SIGINT/SIGTERM (handlers only in the main thread)."""
    if stop is not None:
        yield stop
        return
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, event.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not on this platform / loop
                pass
    try:
        yield event
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_stream(settings: PiflowSettings, progress: Progress | None = None,
                     options: StreamOptions | None = None, stop: asyncio.Event | None = None) -> RunResult:
    """Stream until ``stop`` is set (or SIGINT/SIGTERM when ``stop`` is None), then commit and return."""
    progress = progress or NullProgress()
    options = options or StreamOptions()
    sink = DeltaSink(settings.target)
    result = RunResult(job="stream")
    with RunRecorder(sink, result):
        points = await points_to_read(settings, sink, progress)
        result.points = len(points)
        async with open_client(settings) as client:
            job = StreamJob(settings, options, sink, client, points, progress, result)
            try:
                with _signals(stop) as stop_event:
                    await job.run(stop_event)
            finally:
                take_client_counters(result, client)
                result.details = asdict(job.stats)
                result.message = _summary(job.stats)
                result.window_end = from_ticks(int((time.time() + job.clock_offset) * TICKS_PER_SECOND))
        progress.close()
    return result


def _summary(stats: StreamStats) -> str:
    tried = " -> ".join(stats.modes_tried) or "-"
    return (f"mode {stats.mode or '-'} (tried {tried}); {stats.connects} connects, {stats.reconnects} reconnects, "
            f"{stats.dead_sockets} dead sockets; {stats.pushed_values} values pushed, {stats.gap_values} read back "
            f"in {stats.gap_reads} gap reads, {stats.reread_points} point ranges re-read; "
            f"{stats.inserted} inserted, {stats.updated} updated in {stats.commits} commits; "
            f"arrival to commit p50 {_seconds(stats.commit_delay_p50_s)}, p99 {_seconds(stats.commit_delay_p99_s)}")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"
