"""Run the emulator app with uvicorn: blocking (the CLI) or in a background thread (loopback tests).

Loopback tests need a real socket (dropped connections, slow bodies, WebSockets) but no fixed port, so
:class:`EmulatorServer` binds 127.0.0.1:0 itself and hands the socket to uvicorn: the port is known before the
server thread starts, and two test runs never collide.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI

from piflow.emulator.app import create_app, state_of
from piflow.emulator.settings import EmulatorSettings
from piflow.emulator.state import EmulatorState

_STARTUP_TIMEOUT_S = 30.0
_GRACEFUL_S = 2  # open channels and keep-alive connections get this long before shutdown forces them


def _config(app: FastAPI, log_level: str, **kw: Any) -> uvicorn.Config:
    """uvicorn settings: "auto" picks uvloop + httptools when installed (speed) and WebSockets (channels).

    uvicorn's own ``Date`` header (the wall clock) is off: the app sends the virtual clock's, or none, as the
    profile says (:class:`piflow.emulator.profile.DateMiddleware`).
    """
    return uvicorn.Config(app, log_level=log_level, lifespan="off", ws="auto", http="auto", loop="auto",
                          access_log=False, timeout_graceful_shutdown=_GRACEFUL_S, date_header=False, **kw)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: ``localhost``, 127.0.0.0/8, ``::1``."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str) -> str | None:
    """One line for stderr when the emulator would listen beyond this machine (None on loopback).

    The admin routes move the clock and delete points without any login, so whoever reaches the port can
    change what every client of this emulator sees.
    """
    if is_loopback(host):
        return None
    return (f"warning: --host {host} exposes the emulator beyond this machine; its admin routes (/_emulator/...) "
            "need no login, so anyone who can reach the port can change its data; bind to 127.0.0.1 unless "
            "that is intended")


def serve(settings: EmulatorSettings, host: str = "127.0.0.1", port: int = 8080,
          log_level: str = "warning") -> None:
    """Serve the emulator until interrupted (Ctrl-C / SIGTERM)."""
    uvicorn.Server(_config(create_app(settings), log_level, host=host, port=port)).run()


class EmulatorServer:
    """The emulator on 127.0.0.1 with an ephemeral port, in a daemon thread, for the duration of a ``with``.

    ``EmulatorServer(settings)`` builds a fresh app; ``EmulatorServer(app=app)`` serves an existing one (for
    a test that already holds the app). ``.state`` is the live :class:`EmulatorState` (clock, counters).
    """

    def __init__(self, settings: EmulatorSettings | None = None, *, app: FastAPI | None = None,
                 log_level: str = "warning", certfile: str | None = None, keyfile: str | None = None) -> None:
        if app is not None and settings is not None:
            raise ValueError("give settings or an app, not both")
        self._scheme = "https" if certfile else "http"
        self.app: FastAPI = app if app is not None else create_app(settings or EmulatorSettings())
        self.state: EmulatorState = state_of(self.app)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        tls = {"ssl_certfile": certfile, "ssl_keyfile": keyfile} if certfile else {}
        self._server = uvicorn.Server(_config(self.app, log_level, **tls))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"piflow-emulator-{self.port}", daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no path; ``https`` when started with a certificate)."""
        return f"{self._scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The PI Web API base as users copy it: ``http://127.0.0.1:PORT/piwebapi``."""
        return f"{self.base_url}/piwebapi"

    @property
    def ws_url(self) -> str:
        """The same base for WebSocket channels: ``ws://127.0.0.1:PORT/piwebapi`` (``wss`` with TLS)."""
        return f"{'wss' if self._scheme == 'https' else 'ws'}://127.0.0.1:{self.port}/piwebapi"

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._server.started

    def start(self) -> EmulatorServer:
        self._thread.start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                self._sock.close()
                raise RuntimeError("the emulator server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the server thread (idempotent)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=_STARTUP_TIMEOUT_S)
        self._sock.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
