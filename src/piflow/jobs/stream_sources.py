"""Where ``piflow stream`` gets pushed values from: channels, then stream updates, then polling ``recorded``.

:class:`StreamSources` runs the first mode the server offers, falls back to the next when it is unavailable,
reconnects sockets with backoff and drops points the server no longer knows. It feeds the job's buffer and
asks the job for gap reads; the reads, commits and run lifecycle stay in :mod:`piflow.jobs.stream`. Separate
because the modes are a self-contained state machine that is read and changed apart from the commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from piflow import schema
from piflow.client.channels import (
    Channel,
    ChannelClosedError,
    ChannelOptions,
    ChannelUnavailableError,
    chunk_params,
    open_channel,
    plan_sockets,
    read_updates,
    register_updates,
)
from piflow.errors import AuthError, BadRequestError, NotFoundError, PiApiError, TransientError
from piflow.jobs.common import server_now
from piflow.jobs.reader import RecordedReader
from piflow.jobs.stream_options import MODE_CHANNELS, MODE_POLL, MODE_UPDATES, READ_GROUP
from piflow.pitime import to_ticks
from piflow.planner import PointRef

if TYPE_CHECKING:
    from piflow.jobs.stream import StreamJob

log = logging.getLogger(__name__)


@dataclass
class _Socket:
    refs: list[PointRef]
    attempt: int = 0
    healthy: bool = False


async def sleep_unless_halted(halt: asyncio.Event, timeout: float) -> None:
    """Sleep up to ``timeout`` seconds, waking early when ``halt`` is set (and never losing a cancel, which
    ``asyncio.wait_for`` can on Python 3.11)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, timeout)):
            await halt.wait()


class _Unavailable(Exception):
    """A streaming mode the server does not offer: move on to the next one."""


class StreamSources:
    """The sources of one stream job: sockets (or a fallback) that feed its buffer until ``halt``."""

    def __init__(self, job: StreamJob) -> None:
        self.job = job
        self.ever_connected = False

    # ---- sources: channels, then stream updates, then polling --------------------------------------------------
    async def feed(self, halt: asyncio.Event) -> None:
        modes = self.job.options.modes
        for i, mode in enumerate(modes):
            self.job.stats.mode = mode
            self.job.stats.modes_tried.append(mode)
            try:
                await {MODE_CHANNELS: self._run_channels, MODE_UPDATES: self._run_updates,
                       MODE_POLL: self._run_poll}[mode](halt)
                return
            except _Unavailable as exc:
                if i == len(modes) - 1:
                    raise ChannelUnavailableError(f"no streaming mode is available: {exc}") from exc
                self.job.note(f"stream: {mode} unavailable ({exc}); falling back to {modes[i + 1]}")
                self.job.client.caps.note(f"stream: {mode} unavailable; falling back to {modes[i + 1]}")

    def _live(self, refs: Sequence[PointRef]) -> list[PointRef]:
        return [r for r in refs if r.webid not in self.job.missing]

    async def _run_channels(self, halt: asyncio.Event) -> None:
        opts = self._channel_options()
        plan = plan_sockets(self.job.client.http.base_url, list(self.job.points), self.job.options.points_per_socket,
                            self.job.options.max_url_chars, opts)
        self.job.stats.sockets = len(plan)
        self.job.note(f"stream: channels, {len(self.job.points)} points on {len(plan)} sockets, "
                      f"commit every {self.job.options.commit_interval_s:g} s")
        tasks = [asyncio.create_task(self._socket(_Socket([self.job.points[w] for w in ws]), opts, halt))
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
        o = self.job.options
        return ChannelOptions(heartbeat_rate=o.heartbeat_rate, dead_after_s=o.dead_after_s,
                              extra_params=o.channel_params, verify=self.job.settings.verify)

    async def _socket(self, sock: _Socket, opts: ChannelOptions, halt: asyncio.Event) -> None:
        """Keep one socket open until ``halt``: reconnect with backoff, read each gap, drop unknown points."""
        while not halt.is_set() and sock.refs:
            try:
                await self._connection(sock, opts, halt)
                return
            except ChannelUnavailableError as exc:
                raise _Unavailable(str(exc)) from exc
            except ChannelClosedError as exc:
                self.job.stats.reconnects += 1
                self.job.stats.dead_sockets += exc.code is None
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
                if not self.ever_connected and sock.attempt >= self.job.options.unavailable_after:
                    raise _Unavailable(f"{sock.attempt} handshakes failed: {exc}") from exc
                log.warning("channel of %d points failed: %s (attempt %d)", len(sock.refs), exc, sock.attempt)
            sock.healthy = False
            await sleep_unless_halted(halt, self.job.backoff.delay(max(1, sock.attempt)))

    async def _connection(self, sock: _Socket, opts: ChannelOptions, halt: asyncio.Event) -> None:
        """One socket's life: open, read the gap while receiving, then receive until it ends or ``halt``."""
        refs = self._live(sock.refs)
        if not refs:
            return
        async with open_channel(self.job.client.http, [r.webid for r in refs], opts) as channel:
            self.job.stats.connects += 1
            self.ever_connected = True
            receiver = asyncio.create_task(self._receive(channel, sock))
            halted = asyncio.create_task(halt.wait())
            try:
                await self.job.read_gap(refs)
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
            self.job.take_message(body, schema.SOURCE_CHANNEL)

    async def _without_missing(self, refs: list[PointRef], exc: PiApiError) -> list[PointRef]:
        """After a 404/400 for a set of points: drop those REST does not know; if none, the route is missing."""
        missing = await self._probe(refs)
        if not missing:
            raise _Unavailable(f"refused for points that recorded knows: {exc}") from exc
        for w in missing:
            if w not in self.job.missing:
                self.job.missing.add(w)
                self.job.stats.missing.append(w)
                log.warning("point %s is unknown to the server (deleted?): no longer streamed", self.job.points[w].name)
        return [r for r in refs if r.webid not in missing]

    async def _probe(self, refs: list[PointRef]) -> set[str]:
        reader = RecordedReader(self.job.client)
        now = to_ticks(await server_now(self.job.client))
        async with self.job.read_slots:
            await reader.read(refs, now, now)
        return set(reader.stats.missing)

    async def _run_updates(self, halt: asyncio.Event) -> None:
        """Stream updates: register markers, read the gap, then read the markers every ``updates_interval_s``."""
        markers: dict[str, str] = {}
        await self._register(self._live(list(self.job.points.values())), markers, halt)
        self.job.note(f"stream: stream updates (markers), {len(markers)} points, read every "
                      f"{self.job.options.updates_interval_s:g} s, "
                      f"commit every {self.job.options.commit_interval_s:g} s")
        self.job.spawn(self._gap_until_read(list(self.job.points.values()), halt), "gap")
        attempt = refused = 0
        ever_read = False
        while not halt.is_set():
            pause = self.job.options.updates_interval_s if attempt == 0 else self.job.backoff.delay(attempt)
            await sleep_unless_halted(halt, pause)
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
                if refused >= self.job.options.unavailable_after:
                    raise _Unavailable(f"{refused} reads refused every marker just registered")
            if lost:
                refs = [self.job.points[w] for w in lost]
                for w in lost:
                    markers.pop(w, None)
                await self._register(refs, markers, halt)
                self.job.spawn(self._gap_until_read(refs, halt), "gap")

    async def _register(self, refs: list[PointRef], markers: dict[str, str], halt: asyncio.Event) -> None:
        fixed = len(self.job.client.http.url_for("streamsets/updates")) + 1
        for chunk in chunk_params([r.webid for r in refs], "webId", fixed, READ_GROUP, self.job.options.max_url_chars):
            todo = [self.job.points[w] for w in chunk]
            attempt = 0
            while todo and not halt.is_set():
                try:
                    markers.update(await register_updates(self.job.client.http, [r.webid for r in todo]))
                    break
                except AuthError:
                    raise
                except TransientError as exc:
                    attempt += 1
                    log.warning("stream updates registration failed: %s (attempt %d)", exc, attempt)
                    await sleep_unless_halted(halt, self.job.backoff.delay(attempt))
                except PiApiError as exc:
                    todo = await self._without_missing(todo, exc)

    async def _read_markers(self, markers: dict[str, str]) -> list[str]:
        fixed = len(self.job.client.http.url_for("streamsets/updates")) + 1
        by_marker = {m: w for w, m in markers.items()}
        lost: list[str] = []
        for chunk in chunk_params(list(by_marker), "marker", fixed, READ_GROUP, self.job.options.max_url_chars):
            got = await read_updates(self.job.client.http, {by_marker[m]: m for m in chunk})
            for w, values in got.events.items():
                if w not in self.job.missing:
                    self.job.buffer.add(w, values, None, schema.SOURCE_UPDATE)
                    self.job.stats.pushed_values += len(values)
            markers.update(got.markers)
            lost.extend(got.lost)
        self.job.stats.messages += 1
        return lost

    async def _run_poll(self, halt: asyncio.Event) -> None:
        """Polling: a sync-like read of every point from its watermark minus the lookback, at an interval."""
        self.job.note(f"stream: polling recorded values every {self.job.options.poll_interval_s:g} s "
                      f"({len(self.job.points)} points)")
        while not halt.is_set():
            await self._gap_until_read(list(self.job.points.values()), halt)
            await sleep_unless_halted(halt, self.job.options.poll_interval_s)

    async def _gap_until_read(self, refs: list[PointRef], halt: asyncio.Event) -> None:
        attempt = 0
        while not halt.is_set():
            try:
                await self.job.read_gap(self._live(refs))
                return
            except TransientError as exc:
                attempt += 1
                log.warning("gap read of %d points failed: %s (attempt %d)", len(refs), exc, attempt)
                await sleep_unless_halted(halt, self.job.backoff.delay(attempt))
