"""When channels are not available the job falls back, says so, and still ends equal to ground truth.

A small ASGI proxy in front of the real emulator app answers every WebSocket upgrade with a plain HTTP page
(what a proxy that strips the upgrade does), and optionally refuses stream updates as an older PI Web API
would; everything else reaches the emulator untouched (same state and clock).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from piflow.emulator.responses import error_response

from .conftest import LoopbackServer, MakeServer, RecordingProgress, differences, fast_options, truth, values_of
from .test_stream_job import stream_until

pytestmark = pytest.mark.loopback

App = Any


def without_channels(app: App, *, updates: bool) -> App:
    async def proxy(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/html")]})
            await send({"type": "websocket.http.response.body", "body": b"<html><body>Welcome</body></html>"})
            return
        if not updates and scope["type"] == "http" and "/updates" in scope["path"]:
            await error_response(404, "The requested resource was not found.")(scope, receive, send)
            return
        await app(scope, receive, send)

    return proxy


async def test_falls_back_to_stream_updates(server_for: MakeServer, tmp_path: Path) -> None:
    srv = server_for()
    progress = RecordingProgress()
    with LoopbackServer(without_channels(srv.app, updates=True)) as proxy:
        result, _ = await stream_until(srv, tmp_path, fast_options(), steps=4, url=proxy.url, progress=progress)
    assert result.status == "ok", result.message
    assert result.details["modes_tried"] == ["channels", "updates"]
    assert result.details["mode"] == "updates"
    assert any("channels unavailable" in n and "falling back to updates" in n for n in progress.notes)
    assert differences(values_of(tmp_path), truth(srv.state, tmp_path)) == ""
    assert "update" in set(values_of(tmp_path).column("source").to_pylist())  # values came through markers


async def test_falls_back_to_polling_when_updates_are_refused_too(server_for: MakeServer, tmp_path: Path) -> None:
    srv = server_for()
    progress = RecordingProgress()
    with LoopbackServer(without_channels(srv.app, updates=False)) as proxy:
        result, _ = await stream_until(srv, tmp_path, fast_options(), steps=4, url=proxy.url, progress=progress)
    assert result.status == "ok", result.message
    assert result.details["modes_tried"] == ["channels", "updates", "poll"]
    assert result.details["mode"] == "poll"
    assert any("polling recorded values every 0.3 s" in n for n in progress.notes)
    assert differences(values_of(tmp_path), truth(srv.state, tmp_path)) == ""
    assert set(values_of(tmp_path).column("source").to_pylist()) == {"recorded"}
    assert "mode poll (tried channels -> updates -> poll)" in result.message
