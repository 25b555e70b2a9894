"""The stream sources' retries, driven through their narrow interface (StreamHost) by a small host instead of a
whole job: a channel handshake is retried for exactly the conditions a plain request is retried for, the
backoff waits go through the client's injected sleep, and a halt ends a backoff wait at once."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from piflow.client import PiClient, RetryPolicy
from piflow.client.channels import ChannelUnavailableError
from piflow.emulator import create_app
from piflow.emulator.server import EmulatorServer
from piflow.jobs.stream.news import NewsBuffer
from piflow.jobs.stream.options import StreamOptions
from piflow.jobs.stream.sources import StreamSources
from piflow.jobs.stream.stats import StreamStats
from piflow.planner import PointRef
from tests.client.conftest import ForeverSleep, RecordingSleep

from .conftest import LoopbackServer, MakeServer

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(120)]

RETRIED = [408, 429, 500, 502, 503, 504]
NOT_RETRIED = [400, 404]
TRIES = 3  # handshakes before channels count as unavailable (StreamOptions.unavailable_after)


@dataclass
class Host:
    """What the sources need of a job, and nothing else: the gap reads and pushed messages are only recorded."""

    client: PiClient
    points: dict[str, PointRef]
    retry: RetryPolicy
    options: StreamOptions = field(default_factory=lambda: StreamOptions(modes=("channels",),
                                                                         unavailable_after=TRIES))
    missing: set[str] = field(default_factory=set)
    stats: StreamStats = field(default_factory=StreamStats)
    buffer: NewsBuffer = field(default_factory=NewsBuffer)
    read_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    notes: list[str] = field(default_factory=list)
    gap_reads: list[list[str]] = field(default_factory=list)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def take_message(self, body: bytes, source: str) -> None:
        pass

    async def read_gap(self, refs: Sequence[PointRef]) -> None:
        self.gap_reads.append([r.webid for r in refs])

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.create_task(coro, name=name)


class Refusing:
    """The emulator for REST; every WebSocket handshake answered with ``status`` (counted)."""

    def __init__(self, srv: EmulatorServer, status: int) -> None:
        self.inner = create_app(srv.state.settings)
        self.status = status
        self.handshakes = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.inner(scope, receive, send)
            return
        self.handshakes += 1
        await send({"type": "websocket.http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "websocket.http.response.body", "body": b'{"Errors": ["refused"]}'})


def refs_of(srv: EmulatorServer, n: int = 3) -> dict[str, PointRef]:
    points = [srv.state.model.point(0, i) for i in range(n)]
    return {p.webid: PointRef(p.webid, p.name, p.point_type, p.units or None) for p in points}


@pytest.fixture
def emulator(server_for: MakeServer) -> EmulatorServer:
    return server_for(points=20)


@pytest.mark.parametrize("status", RETRIED + NOT_RETRIED)
async def test_a_handshake_is_retried_for_exactly_the_retriable_statuses(emulator: EmulatorServer,
                                                                        status: int) -> None:
    app, sleeper = Refusing(emulator, status), RecordingSleep()
    with LoopbackServer(app) as server:
        async with PiClient(server.url, sleep=sleeper) as client:
            host = Host(client, refs_of(emulator), RetryPolicy(max_attempts=1_000_000, base_s=0.01, cap_s=0.1))
            with pytest.raises(ChannelUnavailableError, match="no streaming mode is available"):
                await StreamSources(host).feed(asyncio.Event())
    if status in RETRIED:
        assert app.handshakes == TRIES
        assert len(sleeper.delays) == TRIES - 1  # the backoff waited through the client's sleep
    else:
        assert app.handshakes == 1
        assert sleeper.delays == []
    assert host.missing == set()  # a 404 for points REST knows is a missing route, not missing points


async def test_a_dropped_handshake_is_retried() -> None:
    connections = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sleeper = RecordingSleep()
    async with server, PiClient(f"http://127.0.0.1:{port}/piwebapi", sleep=sleeper) as client:
        points = {"F1DPaaaa": PointRef("F1DPaaaa", "A", "Float32", None)}
        host = Host(client, points, RetryPolicy(max_attempts=1_000_000, base_s=0.01, cap_s=0.1))
        with pytest.raises(ChannelUnavailableError, match="3 handshakes failed"):
            await StreamSources(host).feed(asyncio.Event())
    assert connections == TRIES
    assert len(sleeper.delays) == TRIES - 1


async def test_a_halt_ends_the_reconnect_backoff_at_once(emulator: EmulatorServer) -> None:
    app, sleep = Refusing(emulator, 503), ForeverSleep()
    halt = asyncio.Event()
    with LoopbackServer(app) as server:
        async with PiClient(server.url, sleep=sleep) as client:
            host = Host(client, refs_of(emulator), RetryPolicy(max_attempts=1_000_000, base_s=3600.0, cap_s=3600.0,
                                                               jitter=False),
                        options=StreamOptions(modes=("channels",), unavailable_after=100))
            feed = asyncio.create_task(StreamSources(host).feed(halt))
            await sleep.started.wait()
            halt.set()
            await feed  # a backoff that sat out its hour (a sleep that never ends) would time the test out
    assert (app.handshakes, sleep.delays, sleep.cancelled) == (1, [3600.0], 1)
