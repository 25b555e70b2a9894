"""The channel client against the emulator over loopback: pushed values, heartbeats, dead and closed sockets,
refused handshakes, auth, and the stream-updates calls. Expected values come from the data model (truth)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest

from piflow import schema
from piflow.client.auth import BasicAuth
from piflow.client.channels import (
    Channel,
    ChannelClosedError,
    ChannelOptions,
    ChannelUnavailableError,
    decode_message,
    open_channel,
    read_updates,
    register_updates,
)
from piflow.client.http import PiHttp
from piflow.emulator import AuthSettings, create_app
from piflow.emulator.model import PointSpec
from piflow.emulator.server import EmulatorServer
from piflow.emulator.truth import recorded_truth
from piflow.errors import AuthError, NetworkError, NotFoundError
from piflow.jobs.stream.news import Pushed, news_table
from piflow.planner import PointRef

from .conftest import FAST_POLL, T0, LoopbackServer, MakeServer

pytestmark = pytest.mark.loopback
TIMEOUT = 20.0  # waiting for a message that must come; never an assertion on time


# The content of a value; seq is left out since a push may hold only some events of a timestamp.
COLS = [c for c in schema.PI_VALUES_CONTENT if c != "seq"]


def by_key(table: pa.Table) -> dict[tuple[Any, Any], list[dict[str, Any]]]:
    """Rows of a table by (webid, timestamp): several events may share a timestamp."""
    out: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for row in table.select(COLS).to_pylist():
        out.setdefault((row["webid"], row["timestamp"]), []).append(row)
    return out


def some_points(srv: EmulatorServer, n: int = 12) -> list[PointSpec]:
    return [srv.state.model.point(0, i) for i in range(n)]


def refs(points: list[PointSpec]) -> dict[str, PointRef]:
    return {p.webid: PointRef(p.webid, p.name, p.point_type, p.units or None) for p in points}


async def first_with_values(channel: Any) -> bytes:
    while True:
        body: bytes = await asyncio.wait_for(channel.receive(), TIMEOUT)
        if decode_message(body).Items:
            return body


async def test_pushed_values_are_what_the_server_recorded(server_for: MakeServer) -> None:
    srv = server_for()
    points = some_points(srv)
    async with PiHttp(srv.url) as http, open_channel(http, [p.webid for p in points],
                                                     ChannelOptions(extra_params=FAST_POLL)) as channel:
        srv.state.clock.advance(timedelta(minutes=10))
        page = decode_message(await first_with_values(channel))
    got = news_table({e.WebId: [Pushed("channel", e.Items, e.UnitsAbbreviation, 0.0)] for e in page.Items
                      if e.WebId}, refs(points))
    expected = recorded_truth(srv.state, points, T0 - timedelta(hours=1), srv.state.clock.now())
    assert got.num_rows > 10
    # Every pushed value is a recorded value (same key and content) that became visible after T0.
    index = by_key(expected)
    for row in got.select(COLS).to_pylist():
        assert row in index[(row["webid"], row["timestamp"])]
    assert set(got.column("source").to_pylist()) == {"channel"}


async def test_heartbeats_keep_an_idle_socket_alive(server_for: MakeServer) -> None:
    srv = server_for()
    opts = ChannelOptions(heartbeat_rate=1, dead_after_s=5.0, extra_params=FAST_POLL)
    async with PiHttp(srv.url) as http, open_channel(http, [some_points(srv)[0].webid], opts) as channel:
        for _ in range(3):  # the clock is frozen: nothing changes, only heartbeats come
            assert decode_message(await channel.receive()).Items == []
        assert channel.messages == 3


async def test_a_silent_socket_is_declared_dead(server_for: MakeServer) -> None:
    srv = server_for()
    opts = ChannelOptions(heartbeat_rate=0, dead_after_s=0.3, extra_params=FAST_POLL)
    async with PiHttp(srv.url) as http, open_channel(http, [some_points(srv)[0].webid], opts) as channel:
        with pytest.raises(ChannelClosedError, match="considered dead") as info:
            await channel.receive()
    assert info.value.code is None


async def test_a_socket_closed_by_the_server_says_so(server_for: MakeServer) -> None:
    srv = server_for(faults={"channel_close_every_s": 0.2})
    opts = ChannelOptions(heartbeat_rate=0, dead_after_s=10.0, extra_params=FAST_POLL)
    async with PiHttp(srv.url) as http, open_channel(http, [some_points(srv)[0].webid], opts) as channel:
        with pytest.raises(ChannelClosedError) as info:
            await asyncio.wait_for(channel.receive(), TIMEOUT)
    assert info.value.code == 1001


async def test_unknown_webid_refuses_the_handshake_with_404(server_for: MakeServer) -> None:
    srv = server_for()
    deleted = some_points(srv)[3]
    srv.state.deleted_points.add((0, deleted.index))
    async with PiHttp(srv.url) as http:
        with pytest.raises(NotFoundError):
            async with open_channel(http, [some_points(srv)[0].webid, deleted.webid]):
                pass


async def test_channel_handshake_uses_the_http_clients_auth(server_for: MakeServer) -> None:
    srv = server_for(auth=AuthSettings(mode="basic", users={"PIDEMO\\piuser": "pipass"}))
    webids = [some_points(srv)[0].webid]
    opts = ChannelOptions(heartbeat_rate=1, extra_params=FAST_POLL)
    async with PiHttp(srv.url, BasicAuth("PIDEMO\\piuser", "pipass")) as http, open_channel(http, webids, opts) as ch:
        assert decode_message(await ch.receive()).Items == []
    async with PiHttp(srv.url, BasicAuth("PIDEMO\\piuser", "wrong-secret")) as http:
        with pytest.raises(AuthError) as info:
            async with open_channel(http, webids, opts):
                pass
    assert info.value.status == 401
    assert "wrong-secret" not in str(info.value)


async def test_a_proxy_answering_http_makes_channels_unavailable(server_for: MakeServer) -> None:
    srv = server_for()
    inner = create_app(srv.state.settings)

    async def proxy(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":  # a proxy that does not do WebSockets answers with a page
            await send({"type": "websocket.http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/html")]})
            await send({"type": "websocket.http.response.body", "body": b"<html>Welcome</html>"})
            return
        await inner(scope, receive, send)

    with LoopbackServer(proxy) as server:
        async with PiHttp(server.url) as http:
            with pytest.raises(ChannelUnavailableError, match="instead of an upgrade") as info:
                async with open_channel(http, [some_points(srv)[0].webid]):
                    pass
    assert info.value.status == 200


async def test_stream_updates_register_read_and_lose_markers(server_for: MakeServer) -> None:
    srv = server_for()
    points = some_points(srv, 6)
    async with PiHttp(srv.url) as http:
        markers = await register_updates(http, [p.webid for p in points])
        assert set(markers) == {p.webid for p in points}
        srv.state.clock.advance(timedelta(minutes=5))
        got = await read_updates(http, markers)
        assert got.lost == []
        assert set(got.markers) == set(markers)
        assert got.markers != markers  # time passed: new markers
        table = news_table({w: [Pushed("update", v, None, 0.0)] for w, v in got.events.items()}, refs(points))
        truth = recorded_truth(srv.state, points, T0 - timedelta(hours=1), srv.state.clock.now())
        index = by_key(truth)
        assert table.num_rows > 0
        for row in table.select(COLS).to_pylist():
            assert row in index[(row["webid"], row["timestamp"])]
        # A marker the server never issued is reported lost, the others still answer.
        mixed = {**got.markers, points[0].webid: "0000_999999"}
        again = await read_updates(http, mixed)
        assert again.lost == [points[0].webid]
        assert set(again.markers) == {p.webid for p in points[1:]}
        everything_lost = await read_updates(http, {points[0].webid: "0000_999999"})
        assert everything_lost.lost == [points[0].webid]


async def test_a_connection_dropped_during_the_handshake_is_transient() -> None:
    """A server that accepts and hangs up without answering: worth a retry, not a fallback."""
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, PiHttp(f"http://127.0.0.1:{port}/piwebapi") as http:
        with pytest.raises(NetworkError, match="got no answer"):
            async with open_channel(http, ["F1DPaaaa"]):
                pass


class InstantConnection:
    """A stand-in for a websockets connection whose next message is always there already."""

    async def recv(self, decode: bool = False) -> bytes:
        await asyncio.sleep(0)  # a real connection hands the message over through the event loop
        return b'{"Items": []}'


@pytest.mark.parametrize("yields", range(6))
async def test_a_cancel_that_meets_an_arriving_message_is_not_swallowed(yields: int) -> None:
    """Python 3.11's ``asyncio.wait_for`` returns the result, and drops the cancel, when the awaited call
    finishes in the same loop turn as the cancel: a job's receive loop then never stopped (a hang at shutdown
    under load). The cancel must win whatever the timing."""
    channel = Channel(InstantConnection(), "wss://pi.test/channel", dead_after_s=5.0)  # type: ignore[arg-type]

    stop = False

    async def receive_until_stopped() -> None:
        while not stop:
            await channel.receive()

    task = asyncio.create_task(receive_until_stopped())
    for _ in range(yields):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    stop = True  # ends the loop should the cancel have been lost, so that the test itself never hangs
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
