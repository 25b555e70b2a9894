"""Where ``piflow stream`` gets pushed values from: channels, then stream updates, then polling ``recorded``.

:class:`StreamSources` runs the first mode the server offers, falls back to the next when it is unavailable,
reconnects sockets with backoff and drops points the server no longer knows. It feeds the job's buffer and
asks the job for gap reads; the reads, commits and run lifecycle stay in :mod:`piflow.jobs.stream.job`, which the
sources see only through :class:`StreamHost`. Separate because the modes are a self-contained state machine
that is read and changed apart from the commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

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
from piflow.client.retry import Backoff, RetryPolicy, wait_unless_halted
from piflow.errors import AuthError, BadRequestError, NotFoundError, PiApiError, TransientError
from piflow.jobs.common import server_now
from piflow.jobs.reader import RecordedReader
from piflow.jobs.stream.options import READ_GROUP
from piflow.jobs.stream.stats import MODE_CHANNELS, MODE_POLL, MODE_UPDATES
from piflow.pitime import to_ticks
from piflow.planner import PointRef

if TYPE_CHECKING:
    from piflow.client.api import PiClient
    from piflow.jobs.stream.news import NewsBuffer
    from piflow.jobs.stream.options import StreamOptions
    from piflow.jobs.stream.stats import StreamStats

log = logging.getLogger(__name__)


class StreamHost(Protocol):
    """What the sources need of the job that runs them (:class:`piflow.jobs.stream.job.StreamJob`), and no more."""

    @property
    def client(self) -> PiClient: ...
    @property
    def options(self) -> StreamOptions: ...
    @property
    def points(self) -> Mapping[str, PointRef]: ...
    @property
    def missing(self) -> set[str]: ...  # points the server no longer knows; the sources add the ones they find
    @property
    def stats(self) -> StreamStats: ...
    @property
    def buffer(self) -> NewsBuffer: ...
    @property
    def read_slots(self) -> asyncio.Semaphore: ...
    @property
    def retry(self) -> RetryPolicy: ...  # reconnects, registrations and gap reads: unbounded, until the halt

    def note(self, message: str) -> None: ...
    def take_message(self, body: bytes, source: str) -> None: ...
    async def read_gap(self, refs: Sequence[PointRef]) -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...


@dataclass
class _Socket:
    refs: list[PointRef]
    backoff: Backoff  # reset by every message: a socket that delivered starts its count again


class _Unavailable(Exception):
    """A streaming mode the server does not offer: move on to the next one."""


class StreamSources:
    """The sources of one stream job: sockets (or a fallback) that feed its buffer until ``halt``.

    ``verify`` is the TLS setting for ``wss://`` (as the HTTP client's).
    """

    def __init__(self, host: StreamHost, verify: bool | str = True) -> None:
        self.host = host
        self.verify = verify
        self.ever_connected = False

    def _backoff(self, halt: asyncio.Event) -> Backoff:
        return Backoff(self.host.retry, sleep=self.host.client.http.sleep, halt=halt)

    # ---- sources: channels, then stream updates, then polling --------------------------------------------------
    async def feed(self, halt: asyncio.Event) -> None:
        modes = self.host.options.modes
        for i, mode in enumerate(modes):
            self.host.stats.mode = mode
            self.host.stats.modes_tried.append(mode)
            try:
                await {MODE_CHANNELS: self._run_channels, MODE_UPDATES: self._run_updates,
                       MODE_POLL: self._run_poll}[mode](halt)
                return
            except _Unavailable as exc:
                if i == len(modes) - 1:
                    raise ChannelUnavailableError(f"no streaming mode is available: {exc}") from exc
                self.host.note(f"stream: {mode} unavailable ({exc}); falling back to {modes[i + 1]}")
                self.host.client.caps.note(f"stream: {mode} unavailable; falling back to {modes[i + 1]}")

    def _live(self, refs: Sequence[PointRef]) -> list[PointRef]:
        return [r for r in refs if r.webid not in self.host.missing]

    async def _run_channels(self, halt: asyncio.Event) -> None:
        host, opts = self.host, self._channel_options()
        plan = plan_sockets(host.client.http.base_url, list(host.points), host.options.points_per_socket,
                            host.options.max_url_chars, opts)
        host.stats.sockets = len(plan)
        host.note(f"stream: channels, {len(host.points)} points on {len(plan)} sockets, "
                  f"commit every {host.options.commit_interval_s:g} s")
        tasks = [asyncio.create_task(self._socket(_Socket([host.points[w] for w in ws], self._backoff(halt)), opts,
                                                  halt))
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
        o = self.host.options
        return ChannelOptions(heartbeat_rate=o.heartbeat_rate, dead_after_s=o.dead_after_s,
                              extra_params=o.channel_params, verify=self.verify)

    async def _socket(self, sock: _Socket, opts: ChannelOptions, halt: asyncio.Event) -> None:
        """Keep one socket open until ``halt``: reconnect with backoff, read each gap, drop unknown points."""
        stats = self.host.stats
        while not halt.is_set() and sock.refs:
            try:
                await self._connection(sock, opts, halt)
                return
            except ChannelUnavailableError as exc:
                raise _Unavailable(str(exc)) from exc
            except ChannelClosedError as exc:
                stats.reconnects += 1
                stats.dead_sockets += exc.code is None
                delay = sock.backoff.next_delay(exc)
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
                delay = sock.backoff.next_delay(exc)
                if not self.ever_connected and sock.backoff.failures >= self.host.options.unavailable_after:
                    raise _Unavailable(f"{sock.backoff.failures} handshakes failed: {exc}") from exc
                log.warning("channel of %d points failed: %s (attempt %d)", len(sock.refs), exc,
                            sock.backoff.failures)
            if delay is None or await sock.backoff.wait(delay):
                return

    async def _connection(self, sock: _Socket, opts: ChannelOptions, halt: asyncio.Event) -> None:
        """One socket's life: open, read the gap while receiving, then receive until it ends or ``halt``."""
        refs = self._live(sock.refs)
        if not refs:
            return
        async with open_channel(self.host.client.http, [r.webid for r in refs], opts) as channel:
            self.host.stats.connects += 1
            self.ever_connected = True
            receiver = asyncio.create_task(self._receive(channel, sock))
            halted = asyncio.create_task(halt.wait())
            try:
                await self.host.read_gap(refs)
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
            sock.backoff.reset()
            self.host.take_message(body, schema.SOURCE_CHANNEL)

    async def _without_missing(self, refs: list[PointRef], exc: PiApiError) -> list[PointRef]:
        """After a 404/400 for a set of points: drop those REST does not know; if none, the route is missing."""
        missing = await self._probe(refs)
        if not missing:
            raise _Unavailable(f"refused for points that recorded knows: {exc}") from exc
        for w in missing:
            if w not in self.host.missing:
                self.host.missing.add(w)
                self.host.stats.missing.append(w)
                log.warning("point %s is unknown to the server (deleted?): no longer streamed",
                            self.host.points[w].name)
        return [r for r in refs if r.webid not in missing]

    async def _probe(self, refs: list[PointRef]) -> set[str]:
        reader = RecordedReader(self.host.client)
        now = to_ticks(await server_now(self.host.client))
        async with self.host.read_slots:
            await reader.read(refs, now, now)
        return set(reader.stats.missing)

    async def _run_updates(self, halt: asyncio.Event) -> None:
        """Stream updates: register markers, read the gap, then read the markers every ``updates_interval_s``."""
        host = self.host
        markers: dict[str, str] = {}
        await self._register(self._live(list(host.points.values())), markers, halt)
        host.note(f"stream: stream updates (markers), {len(markers)} points, read every "
                  f"{host.options.updates_interval_s:g} s, commit every {host.options.commit_interval_s:g} s")
        host.spawn(self._gap_until_read(list(host.points.values()), halt), "gap")
        backoff = self._backoff(halt)
        refused = 0
        ever_read = False
        pause = host.options.updates_interval_s
        while not await backoff.wait(pause):
            try:
                lost = await self._read_markers(markers)
            except TransientError as exc:
                delay = backoff.next_delay(exc)
                if delay is None:
                    return
                log.warning("reading stream updates failed: %s (attempt %d)", exc, backoff.failures)
                pause = delay
                continue
            backoff.reset()
            pause = host.options.updates_interval_s
            if len(lost) < len(markers):
                ever_read = True
            elif not ever_read:
                # Markers refused right after they were issued, again and again: reads are not served here.
                refused += 1
                if refused >= host.options.unavailable_after:
                    raise _Unavailable(f"{refused} reads refused every marker just registered")
            if lost:
                refs = [host.points[w] for w in lost]
                for w in lost:
                    markers.pop(w, None)
                await self._register(refs, markers, halt)
                host.spawn(self._gap_until_read(refs, halt), "gap")

    async def _register(self, refs: list[PointRef], markers: dict[str, str], halt: asyncio.Event) -> None:
        http = self.host.client.http
        fixed = len(http.url_for("streamsets/updates")) + 1

        def warn(exc: TransientError, failures: int) -> None:
            log.warning("stream updates registration failed: %s (attempt %d)", exc, failures)

        for chunk in chunk_params([r.webid for r in refs], "webId", fixed, READ_GROUP, self.host.options.max_url_chars):
            todo = [self.host.points[w] for w in chunk]
            backoff = self._backoff(halt)
            while todo and not halt.is_set():
                try:
                    register = functools.partial(register_updates, http, [r.webid for r in todo])
                    markers.update(await backoff.run(register, warn))
                    break
                except AuthError:
                    raise
                except TransientError:
                    return  # the backoff gives up only when the job halts
                except PiApiError as exc:
                    todo = await self._without_missing(todo, exc)

    async def _read_markers(self, markers: dict[str, str]) -> list[str]:
        host = self.host
        fixed = len(host.client.http.url_for("streamsets/updates")) + 1
        by_marker = {m: w for w, m in markers.items()}
        lost: list[str] = []
        for chunk in chunk_params(list(by_marker), "marker", fixed, READ_GROUP, host.options.max_url_chars):
            got = await read_updates(host.client.http, {by_marker[m]: m for m in chunk})
            for w, values in got.events.items():
                if w not in host.missing:
                    host.buffer.add(w, values, None, schema.SOURCE_UPDATE)
                    host.stats.pushed_values += len(values)
            markers.update(got.markers)
            lost.extend(got.lost)
        host.stats.messages += 1
        return lost

    async def _run_poll(self, halt: asyncio.Event) -> None:
        """Polling: a sync-like read of every point from its watermark minus the lookback, at an interval."""
        host = self.host
        host.note(f"stream: polling recorded values every {host.options.poll_interval_s:g} s "
                  f"({len(host.points)} points)")
        while not halt.is_set():
            await self._gap_until_read(list(host.points.values()), halt)
            await wait_unless_halted(host.options.poll_interval_s, halt, host.client.http.sleep)

    async def _gap_until_read(self, refs: list[PointRef], halt: asyncio.Event) -> None:
        if halt.is_set():
            return

        def warn(exc: TransientError, failures: int) -> None:
            log.warning("gap read of %d points failed: %s (attempt %d)", len(refs), exc, failures)

        with contextlib.suppress(TransientError):  # the backoff gives up only when the job halts
            await self._backoff(halt).run(lambda: self.host.read_gap(self._live(refs)), warn)
