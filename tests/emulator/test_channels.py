"""Channels (WebSocket) over a real uvicorn on 127.0.0.1 with the ``websockets`` client.

The virtual clock is frozen and moved by the tests, so what each message must hold is exactly known: the
expectations are computed here from the data model's own snapshots, not from the code under test.
"""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from piflow import webids
from piflow.emulator import AuthSettings, EmulatorSettings, FaultSettings
from piflow.emulator.model import Events, PointSpec
from piflow.emulator.server import EmulatorServer
from piflow.emulator.state import EmulatorState
from piflow.emulator.truth import pi_value
from piflow.pitime import TICKS_PER_SECOND, format_ticks

pytestmark = pytest.mark.loopback

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FAST = "_pollSeconds=0.05"
TIMEOUT = 10.0  # waiting for a message that must come; never an assertion on time
EMPTY = {"Links": {}, "Items": []}
MakeServer = Callable[..., EmulatorServer]


@pytest.fixture
def server_for() -> Iterator[MakeServer]:
    with ExitStack() as stack:
        def make(mode: str = "anonymous", **faults: object) -> EmulatorServer:
            settings = EmulatorSettings(seed=31, points=60, now=NOW, frozen=True, late_share=0.3, edit_share=0.3,
                                        auth=AuthSettings(mode=mode),  # type: ignore[arg-type]
                                        faults=FaultSettings(**faults))  # type: ignore[arg-type]
            return stack.enter_context(EmulatorServer(settings))

        yield make


# ---- expectations ------------------------------------------------------------------------------------------

def pi_values(ev: Events, idx: list[int]) -> list[dict[str, Any]]:
    return [{"Timestamp": format_ticks(int(ev.ticks[i])), "Value": pi_value(ev, i),
             "UnitsAbbreviation": ev.point.units, "Good": bool(ev.good[i]),
             "Questionable": bool(ev.questionable[i]), "Substituted": bool(ev.substituted[i]),
             "Annotated": bool(ev.annotated[i])} for i in idx]


def current(state: EmulatorState, p: PointSpec, now: int) -> list[dict[str, Any]]:
    ev = state.model.events(p, now - 2 * 86400 * TICKS_PER_SECOND, now, now)
    return pi_values(ev, [len(ev) - 1])


def new_since(state: EmulatorState, p: PointSpec, t0: int, t1: int) -> list[dict[str, Any]]:
    """Values held at t1 that were not held (with that value) at t0, oldest first."""
    start = t0 - 2 * 86400 * TICKS_PER_SECOND
    before = state.model.events(p, start, t0, t0)
    after = state.model.events(p, start, t1, t1)
    held = Counter(zip(before.ticks.tolist(), before.variant.tolist(), strict=True))
    idx = []
    for i in range(len(after)):
        key = (int(after.ticks[i]), int(after.variant[i]))
        if held[key]:
            held[key] -= 1
        else:
            idx.append(i)
    return pi_values(after, idx)


def fast_point(state: EmulatorState) -> PointSpec:
    """A point sampled at least once a minute, so that a few virtual minutes always bring values."""
    return next(p for p in (state.model.point(0, i) for i in range(60)) if p.interval_ticks <= 60 * TICKS_PER_SECOND)


async def recv(ws: ClientConnection) -> Any:
    return orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def drain(ws: ClientConnection) -> None:
    """Read until the server closes the connection."""
    while True:
        await asyncio.wait_for(ws.recv(), TIMEOUT)


# ---- tests -------------------------------------------------------------------------------------------------

async def test_initial_values_are_the_current_values(server_for: MakeServer) -> None:
    srv = server_for()
    a, b = srv.state.model.point(0, 4), srv.state.model.point(0, 17)
    url = f"{srv.ws_url}/streamsets/channel?webId={a.webid}&webId={b.path_webid}&includeInitialValues=true&{FAST}"
    now = srv.state.clock.now_ticks()
    async with connect(url) as ws:
        msg = await recv(ws)
    assert msg == {"Links": {}, "Items": [
        {"WebId": a.webid, "Name": a.name, "Path": a.path, "UnitsAbbreviation": a.units,
         "Items": current(srv.state, a, now)},
        {"WebId": b.path_webid, "Name": b.name, "Path": b.path, "UnitsAbbreviation": b.units,
         "Items": current(srv.state, b, now)},
    ]}


async def test_new_late_and_edited_values_are_pushed(server_for: MakeServer) -> None:
    srv = server_for()
    state = srv.state
    p = fast_point(state)
    t0 = state.clock.now_ticks()
    async with connect(f"{srv.ws_url}/streams/{p.webid}/channel?{FAST}") as ws:
        # The handshake is done, so the channel has taken its starting time: everything after must come.
        state.clock.advance(timedelta(minutes=20))
        t1 = state.clock.now_ticks()
        first = await recv(ws)
        state.clock.advance(timedelta(minutes=20))
        t2 = state.clock.now_ticks()
        second = await recv(ws)
    for msg, (start, end) in ((first, (t0, t1)), (second, (t1, t2))):
        assert len(msg["Items"]) == 1
        item = msg["Items"][0]
        assert (item["WebId"], item["Name"], item["Path"]) == (p.webid, p.name, p.path)
        assert item["Items"] == new_since(state, p, start, end)
    pushed = first["Items"][0]["Items"] + second["Items"][0]["Items"]
    # Late arrivals (timestamped before the channel's previous look) and edits (Substituted) both came.
    assert any(v["Timestamp"] <= format_ticks(t0) and not v["Substituted"] for v in first["Items"][0]["Items"])
    assert any(v["Substituted"] and v["Timestamp"] <= format_ticks(t1) for v in second["Items"][0]["Items"])
    assert len(pushed) > 20


async def test_only_streams_that_changed_are_in_a_message(server_for: MakeServer) -> None:
    srv = server_for()
    state = srv.state
    t0 = state.clock.now_ticks()
    t1 = t0 + 20 * TICKS_PER_SECOND
    points = [state.model.point(0, i) for i in range(60)]
    busy = next(p for p in points if new_since(state, p, t0, t1))
    quiet = next(p for p in points if not new_since(state, p, t0, t1))
    url = f"{srv.ws_url}/streamsets/channel?webId={quiet.webid}&webId={busy.webid}&{FAST}"
    async with connect(url) as ws:
        state.clock.advance(timedelta(seconds=20))
        msg = await recv(ws)
    assert [(i["WebId"], i["Items"]) for i in msg["Items"]] == [(busy.webid, new_since(state, busy, t0, t1))]


async def test_heartbeats_when_idle(server_for: MakeServer) -> None:
    srv = server_for()
    p = srv.state.model.point(0, 1)
    async with connect(f"{srv.ws_url}/streams/{p.webid}/channel?heartbeatRate=2&{FAST}") as ws:
        beats = [await recv(ws) for _ in range(3)]
    assert beats == [EMPTY, EMPTY, EMPTY]


async def test_server_closes_channels_when_told_to(server_for: MakeServer) -> None:
    srv = server_for(channel_close_every_s=0.3)
    p = srv.state.model.point(0, 2)
    async with connect(f"{srv.ws_url}/streams/{p.webid}/channel?includeInitialValues=true&{FAST}") as ws:
        first = await recv(ws)
        with pytest.raises(ConnectionClosed) as closed:
            await drain(ws)
    assert first["Items"][0]["WebId"] == p.webid
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001
    assert srv.state.stats.faults == 1


async def test_handshakes_are_authenticated(server_for: MakeServer) -> None:
    srv = server_for(mode="basic")
    url = f"{srv.ws_url}/streams/{srv.state.model.point(0, 3).webid}/channel?includeInitialValues=true&{FAST}"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    assert refused.value.response.status_code == 401
    auth = "Basic " + base64.b64encode(b"PIDEMO\\piuser:pipass").decode()
    async with connect(url, additional_headers={"Authorization": auth}) as ws:
        assert (await recv(ws))["Items"]


@pytest.mark.parametrize(("path", "status"), [
    ("/streams/{unknown}/channel", 404),
    ("/streams/not-a-webid/channel", 400),
    ("/streamsets/channel", 400),
    ("/streamsets/channel?webId={good}&webId={unknown}", 404),
    ("/streams/{good}/channel?heartbeatRate=often", 400),
    ("/streamsets/{unknown_element}/channel", 404),
])
async def test_bad_channel_requests_are_refused(server_for: MakeServer, path: str, status: int) -> None:
    srv = server_for()
    ids = {"good": srv.state.model.point(0, 0).webid,
           "unknown": webids.point_path_only(srv.state.model.server(0).name, "NO.SUCH.TAG"),
           "unknown_element": webids.path_only("Em", "\\\\NOSERVER\\NODB\\NOELEMENT")}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(srv.ws_url + path.format(**ids)):
            pass
    assert refused.value.response.status_code == status
    assert orjson.loads(refused.value.response.body)["Errors"]


async def test_element_channel_streams_its_point_attributes(server_for: MakeServer) -> None:
    srv = server_for()
    state = srv.state
    element = next(e for e in state.af.all_elements()
                   if any(r.point is not None for r in state.af.element_attributes(e.webid) or []))
    refs = [r for r in state.af.element_attributes(element.webid) or [] if r.point is not None]
    now = state.clock.now_ticks()
    async with connect(f"{srv.ws_url}/streamsets/{element.webid}/channel?includeInitialValues=true&{FAST}") as ws:
        msg = await recv(ws)
    assert [i["WebId"] for i in msg["Items"]] == [r.webid for r in refs]
    for item, ref in zip(msg["Items"], refs, strict=True):
        assert ref.point is not None
        assert item["Name"] == ref.name
        assert [v["Timestamp"] for v in item["Items"]] == [v["Timestamp"] for v in current(state, ref.point, now)]
        assert [v["Value"] for v in item["Items"]] == [v["Value"] for v in current(state, ref.point, now)]


async def test_values_are_counted(server_for: MakeServer) -> None:
    srv = server_for()
    a, b = srv.state.model.point(0, 5), srv.state.model.point(0, 6)
    async with connect(f"{srv.ws_url}/streamsets/channel?webId={a.webid}&webId={b.webid}"
                       f"&includeInitialValues=true&{FAST}") as ws:
        await recv(ws)
    assert srv.state.stats.values == 2
    assert srv.state.stats.requests == 1
