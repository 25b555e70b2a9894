"""Shared parts for the client tests: fast retry policies, a recording sleep, scripted servers, emulator apps.

The scripted servers exist for the malformed answers the emulator never gives on purpose (HTML pages,
truncated JSON, a wrong Content-Length); everything else runs against the real emulator app.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx2
import pytest

from piflow.client import RetryPolicy
from piflow.emulator import AuthSettings, EmulatorSettings, FaultSettings, create_app

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def fast_retry(max_attempts: int = 6, seed: int = 1) -> RetryPolicy:
    return RetryPolicy(max_attempts=max_attempts, base_s=0.001, cap_s=0.01, rng=random.Random(seed))


class RecordingSleep:
    """An injectable sleep that records each requested delay and only yields to the loop."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


class ForeverSleep:
    """An injectable sleep that never ends by itself (only a cancel ends it); ``started`` is set once something
    waits in it."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.delays: list[float] = []
        self.cancelled = 0

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


@pytest.fixture
def sleeper() -> RecordingSleep:
    return RecordingSleep()


# ---- the emulator ------------------------------------------------------------------------------------------
def emulator_settings(points: int = 50, auth: str = "anonymous", **faults: Any) -> EmulatorSettings:
    return EmulatorSettings(points=points, now=NOW, frozen=True, auth=AuthSettings(mode=auth),  # type: ignore[arg-type]
                            faults=FaultSettings(**faults))


def emulator_transport(settings: EmulatorSettings) -> tuple[Any, httpx2.ASGITransport]:
    app = create_app(settings)
    return app, httpx2.ASGITransport(app=app)


EMU_URL = "http://emulator.test"


# ---- a scripted ASGI app -----------------------------------------------------------------------------------
@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Canned:
    status: int = 200
    body: bytes = b'{"Items": []}'
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    content_length: int | None = None  # a declared length that differs from the body: a truncated answer


class ScriptedApp:
    """ASGI app answering request n with ``script(seen, n)``; it records every request it receives."""

    def __init__(self, script: Callable[[Seen, int], Canned] | list[Canned]) -> None:
        if isinstance(script, list):
            canned = script
            self.script: Callable[[Seen, int], Canned] = lambda _s, n: canned[min(n, len(canned) - 1)]
        else:
            self.script = script
        self.seen: list[Seen] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        seen = Seen(scope["method"], scope["path"], parse_qsl(scope["query_string"].decode()),
                    {k.decode().lower(): v.decode() for k, v in scope["headers"]}, body)
        self.seen.append(seen)
        canned = self.script(seen, len(self.seen) - 1)
        length = canned.content_length if canned.content_length is not None else len(canned.body)
        headers = [(k.lower().encode(), v.encode()) for k, v in canned.headers.items()]
        headers.append((b"content-length", str(length).encode()))
        await send({"type": "http.response.start", "status": canned.status, "headers": headers})
        await send({"type": "http.response.body", "body": canned.body})

    def transport(self) -> httpx2.ASGITransport:
        return httpx2.ASGITransport(app=self)


# ---- a raw TCP server on 127.0.0.1 ---------------------------------------------------------------------------
STALL = "stall"


class RawServer:
    """Real sockets: connection n reads one request and gets ``replies[n]`` (bytes then close, None = close
    at once, STALL = never answer). The last reply repeats."""

    def __init__(self, replies: list[bytes | str | None]) -> None:
        self.replies = replies
        self.connections = 0
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/piwebapi"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reply = self.replies[min(self.connections, len(self.replies) - 1)]
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            if reply == STALL:
                await self.release.wait()
            elif isinstance(reply, bytes):
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        await asyncio.sleep(0.01)  # let handlers finish closing their writers


def http_reply(body: bytes, status: str = "200 OK", declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


@pytest.fixture
def no_spnego(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import spnego`` fail whether or not pyspnego happens to be installed."""
    import sys

    monkeypatch.setitem(sys.modules, "spnego", None)
