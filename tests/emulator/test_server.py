"""The emulator over real sockets: ``EmulatorServer`` (background thread) and ``serve`` (blocking, subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx2
import pytest
from starlette.websockets import WebSocket
from tests.servers import free_port
from websockets.sync.client import connect

from piflow.emulator import EmulatorSettings, create_app
from piflow.emulator.server import EmulatorServer

pytestmark = pytest.mark.loopback

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def settings() -> EmulatorSettings:
    return EmulatorSettings(points=50, now=NOW, frozen=True)


def test_server_serves_the_api_on_an_ephemeral_port_and_stops() -> None:
    with EmulatorServer(settings()) as srv:
        assert srv.url == f"http://127.0.0.1:{srv.port}/piwebapi"
        assert srv.ws_url == f"ws://127.0.0.1:{srv.port}/piwebapi"
        status = httpx2.get(f"{srv.url}/system/status", timeout=10)
        assert status.status_code == 200
        assert status.json()["ServerTime"] == "2026-01-01T00:00:00Z"
        srv.state.clock.advance(timedelta(minutes=5))  # .state is the live state behind the socket
        assert httpx2.get(f"{srv.url}/system/status", timeout=10).json()["ServerTime"] == "2026-01-01T00:05:00Z"
        p = srv.state.model.point(0, 0)
        body = httpx2.get(f"{srv.url}/streams/{p.webid}/recorded", params={"maxCount": 10}, timeout=10).json()
        assert len(body["Items"]) == 10
        port = srv.port
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"http://127.0.0.1:{port}/piwebapi", timeout=5)


def test_two_servers_side_by_side_with_their_own_state() -> None:
    with EmulatorServer(settings()) as a, EmulatorServer(EmulatorSettings(points=50, seed=99, now=NOW)) as b:
        assert a.port != b.port
        wa = httpx2.get(f"{a.url}/dataservers", timeout=10).json()["Items"][0]["WebId"]
        wb = httpx2.get(f"{b.url}/dataservers", timeout=10).json()["Items"][0]["WebId"]
        assert wa == a.state.model.server(0).webid
        assert wb == b.state.model.server(0).webid
        assert wa != wb


def test_websockets_are_enabled() -> None:
    app = create_app(settings())

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("echo:" + await ws.receive_text())
        await ws.close()

    app.add_api_websocket_route("/_test/echo", echo)
    with EmulatorServer(app=app) as srv, connect(f"ws://127.0.0.1:{srv.port}/_test/echo", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo:hello"
        assert srv.app is app


def test_settings_or_app_not_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        EmulatorServer(settings(), app=create_app(settings()))



def test_serve_blocks_and_answers_until_terminated() -> None:
    port = free_port()
    code = ("from datetime import datetime, UTC\n"
            "from piflow.emulator.server import serve\n"
            "from piflow.emulator.settings import EmulatorSettings\n"
            f"serve(EmulatorSettings(points=20, now=datetime(2026, 1, 1, tzinfo=UTC), frozen=True), port={port})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx2.get(f"http://127.0.0.1:{port}/piwebapi/system/status", timeout=5)
                break
            except httpx2.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline, "serve() did not start listening"
                time.sleep(0.1)
        assert r.json()["ServerTime"] == "2026-01-01T00:00:00Z"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # waits, and closes the stderr pipe
    assert proc.returncode is not None
