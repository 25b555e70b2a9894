"""Fault injection as ASGI middleware: latency, server errors, rate limiting, dropped and slow responses.

A client that survives a real PI Web API behind a proxy must cope with all of these; the emulator makes
them reproducible. Every decision is a hash of (seed, request sequence number), never ``random``, so a
run with the same seed and the same request order sees the same faults. Only the rate limiter uses real
time (a token bucket per client address), because that is what the limit is about.

This middleware is also the emulator's request counter (``stats.requests``): it sits outside the
authentication middleware, so refused requests are counted too. Paths in ``exempt_paths`` and sub-requests
of a ``/batch`` call (header ``X-Emulator-Batch-Child: 1``) are neither faulted nor counted. WebSocket
handshakes are counted but not faulted; channels are cut by ``channel_close_every_s`` in the channel itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from piflow.emulator.responses import error_response
from piflow.emulator.settings import FaultSettings
from piflow.emulator.state import EmulatorState

log = logging.getLogger(__name__)

BATCH_CHILD_HEADER = "x-emulator-batch-child"
SLOW_CHUNK_MAX = 64 * 1024  # a slowed body goes out in pieces of at most this many bytes (and at least 4 pieces)
_BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass(frozen=True)
class FaultPlan:
    """What happens to one request: all of it decided up front from (seed, sequence number)."""

    latency_s: float
    error_status: int | None  # 500, 502 or 503
    drop: bool


def _uniforms(seed: int, seq: int) -> tuple[float, float, float, float]:
    """Four independent numbers in [0, 1) for this request (stable across processes and Python versions)."""
    digest = hashlib.blake2b(f"piflow-faults|{seed}|{seq}".encode(), digest_size=32).digest()
    parts = [int.from_bytes(digest[i:i + 8], "little") / 2.0**64 for i in range(0, 32, 8)]
    return parts[0], parts[1], parts[2], parts[3]


def plan(settings: FaultSettings, seed: int, seq: int) -> FaultPlan:
    """The faults of request number ``seq`` (pure)."""
    u_err, u_kind, u_drop, u_lat = _uniforms(seed, seq)
    latency = max(0.0, settings.latency_ms + settings.latency_jitter_ms * u_lat) / 1000.0
    error = (500, 502, 503)[int(u_kind * 3)] if u_err < settings.error_rate else None
    return FaultPlan(latency, error, u_drop < settings.drop_rate)


class TokenBuckets:
    """Requests per second per client address; over the limit a request must wait ``retry_after`` seconds."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, monotonic time)
        self._lock = threading.Lock()

    def take(self, address: str, rps: float, now: float | None = None) -> int:
        """0 when the request may pass, else the whole seconds to wait (at least 1)."""
        now = time.monotonic() if now is None else now
        capacity = max(1.0, rps)
        with self._lock:
            tokens, last = self._buckets.get(address, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rps)
            if tokens >= 1.0:
                self._buckets[address] = (tokens - 1.0, now)
                return 0
            self._buckets[address] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / rps))


class _Dropped(Exception):
    """Raised from ``send`` to abandon a response half-way; the server then closes the connection."""


def error_reply(status: int) -> Response:
    """What an overloaded server or its proxy answers (a 502 from a proxy is an HTML page, not PI JSON)."""
    if status == 502:
        return Response(_BAD_GATEWAY_HTML, status_code=502, media_type="text/html")
    if status == 503:
        return error_response(503, "The service is unavailable. Please retry later.", headers={"Retry-After": "1"})
    return error_response(status, "An unexpected error occurred on the server.")


def _pieces(body: bytes) -> list[bytes]:
    size = max(1, min(SLOW_CHUNK_MAX, math.ceil(len(body) / 4)))
    return [body[i:i + size] for i in range(0, len(body), size)] or [body]


class FaultMiddleware:
    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state
        self.buckets = TokenBuckets()
        self._seq = 0
        self._lock = threading.Lock()

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _exempt(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        if any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.state.settings.faults.exempt_paths):
            return True
        return Headers(scope=scope).get(BATCH_CHILD_HEADER, "").strip() == "1"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path == "/piwebapi" or path.startswith("/piwebapi/"):
            self.state.stats.add(requests=1)
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self.state.settings.faults
        p = plan(settings, self.state.settings.seed, self._next_seq())
        if p.latency_s > 0:
            await asyncio.sleep(p.latency_s)
        if settings.rate_limit_rps > 0:
            client = scope.get("client")
            wait = self.buckets.take(client[0] if client else "", settings.rate_limit_rps)
            if wait:
                self.state.stats.add(faults=1)
                reply = error_response(429, "Rate limit was reached", headers={"Retry-After": str(wait)})
                await reply(scope, receive, send)
                return
        if p.error_status is not None:
            self.state.stats.add(faults=1)
            await error_reply(p.error_status)(scope, receive, send)
            return
        if not p.drop and settings.slow_body_ms <= 0:
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, self._faulty_send(send, p.drop, settings.slow_body_ms / 1000.0))
        except _Dropped:
            log.info("fault injection: dropped the connection of %s mid-body", scope.get("path"))

    def _faulty_send(self, send: Send, drop: bool, delay_s: float) -> Send:
        """A ``send`` that truncates the body and gives up (drop), and/or trickles it out (slow)."""
        started_body = False

        async def faulty(message: Message) -> None:
            nonlocal started_body
            if message["type"] != "http.response.body":
                await send(message)
                return
            body: bytes = message.get("body", b"")
            more: bool = message.get("more_body", False)
            dropping = drop and len(body) > 0
            if dropping:
                body, more = body[: len(body) // 2], True
            pieces = _pieces(body) if delay_s > 0 else [body]
            for i, piece in enumerate(pieces):
                if delay_s > 0 and started_body:
                    await asyncio.sleep(delay_s)
                started_body = True
                await send({"type": "http.response.body", "body": piece,
                            "more_body": more or i < len(pieces) - 1})
            if dropping:
                self.state.stats.add(faults=1)
                raise _Dropped

        return faulty


def install(app: FastAPI, state: EmulatorState) -> None:
    """Add the middleware (outermost of the emulator's own middleware, see :func:`piflow.emulator.auth.install`)."""
    app.add_middleware(FaultMiddleware, state=state)
