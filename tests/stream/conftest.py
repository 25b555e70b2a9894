"""Fixtures for the stream tests: the emulator on loopback (frozen clock moved by the tests), settings pointing
piflow at it, ground truth from the data model, and a loopback server for apps that refuse channels.

Late values and edits are frequent and short (minutes) here, so that a few minutes of virtual time exercise
them, and the lookback (30 min) covers every one of them: with that, "the table equals ground truth" must
hold exactly, not approximately.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import uvicorn

from piflow import schema
from piflow.config import PiflowSettings
from piflow.emulator import EmulatorSettings, FaultSettings
from piflow.emulator.model import PointSpec
from piflow.emulator.server import EmulatorServer
from piflow.emulator.state import EmulatorState
from piflow.emulator.truth import recorded_truth
from piflow.jobs.common import selected_points
from piflow.jobs.stream.options import StreamOptions
from piflow.jobs.stream.stats import StreamStats
from piflow.sinks.delta import DeltaSink
from tests.rows import duplicate_keys

T0 = datetime(2026, 1, 1, tzinfo=UTC)
START = T0 - timedelta(hours=1)
FILTER = "BRK.A0.CMP*"  # 40 points of all six point types (with seed 7)
FAST_POLL = (("_pollSeconds", "0.05"),)
WAIT_S = 60.0  # upper bound for a condition that must become true; never an assertion on time

MakeServer = Callable[..., EmulatorServer]


def emulator_settings(**kw: Any) -> EmulatorSettings:
    faults = FaultSettings(**kw.pop("faults", {}))
    base: dict[str, Any] = {"points": 1000, "seed": 7, "now": T0, "frozen": True, "late_share": 0.1,
                            "late_max_minutes": 4, "edit_share": 0.1, "edit_min_minutes": 1, "edit_max_minutes": 6}
    base.update(kw)
    return EmulatorSettings(**base, faults=faults)


@pytest.fixture
def server_for() -> Iterator[MakeServer]:
    with ExitStack() as stack:
        def make(**kw: Any) -> EmulatorServer:
            return stack.enter_context(EmulatorServer(emulator_settings(**kw)))

        yield make


def settings_for(url: str, target: Path, **kw: Any) -> PiflowSettings:
    base: dict[str, Any] = {"url": url, "target": str(target), "points": FILTER, "start": START.isoformat(),
                            "lookback": "30m", "retries": 6}
    base.update(kw)
    return PiflowSettings(**base)


def fast_options(**kw: Any) -> StreamOptions:
    base: dict[str, Any] = {"commit_interval_s": 0.3, "channel_params": FAST_POLL, "heartbeat_rate": 2,
                            "dead_after_s": 10.0, "reconnect_base_s": 0.05, "reconnect_cap_s": 0.5,
                            "points_per_socket": 20, "status_interval_s": 0.2, "updates_interval_s": 0.1,
                            "poll_interval_s": 0.3}
    base.update(kw)
    return StreamOptions(**base)


# ---- observing a running job ---------------------------------------------------------------------------------
@dataclass
class Observer:
    """Keeps the live counters and every status note of a job."""

    stats: StreamStats | None = None
    notes: list[str] = field(default_factory=list)

    def __call__(self, stats: StreamStats) -> None:
        self.stats = stats


class RecordingProgress:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.values = 0
        self.closed = False

    def start(self, total: int | None, description: str) -> None:
        self.notes.append(f"start: {description}")

    def advance(self, units: int = 1, values: int = 0) -> None:
        self.values += values

    def note(self, message: str) -> None:
        self.notes.append(message)

    def close(self) -> None:
        self.closed = True


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll ``condition`` (which may read Delta tables: run in a thread) until true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


# ---- ground truth --------------------------------------------------------------------------------------------
def points_of(state: EmulatorState, target: Path, name_filter: str = FILTER) -> list[PointSpec]:
    refs = selected_points(DeltaSink(str(target)), name_filter)
    points = [state.model.point_by_webid(r.webid) for r in refs]
    assert all(p is not None for p in points)
    return points  # type: ignore[return-value]


def truth(state: EmulatorState, target: Path, start: datetime = START) -> pa.Table:
    """Everything the server holds for the streamed points from ``start`` to its (frozen) now."""
    now = state.clock.now()
    return recorded_truth(state, points_of(state, target), start, now, asof=now)


def content(table: pa.Table, start: datetime = START) -> pa.Table:
    """PI-event columns in key order, from ``start`` on (gap reads look back before the first start)."""
    table = table.filter(pc.greater_equal(table.column("timestamp"), pa.scalar(start, schema.TS)))
    keys = [("webid", "ascending"), ("timestamp", "ascending"), ("seq", "ascending")]
    return table.select(list(schema.PI_VALUES_CONTENT)).sort_by(keys)


def values_of(target: Path) -> pa.Table:
    return DeltaSink(str(target)).read("pi_values")


def differences(actual: pa.Table, expected: pa.Table) -> str:
    """'' when equal, else a short description of the first difference."""
    a, e = content(actual), content(expected)
    if duplicate_keys(actual):
        return f"{duplicate_keys(actual)} duplicate keys"
    if a.num_rows != e.num_rows:
        ka = {tuple(r.values()) for r in a.select(list(schema.PI_VALUES_KEY)).to_pylist()}
        ke = {tuple(r.values()) for r in e.select(list(schema.PI_VALUES_KEY)).to_pylist()}
        return (f"{a.num_rows} rows in Delta, {e.num_rows} in ground truth; missing {sorted(ke - ka)[:3]}, "
                f"extra {sorted(ka - ke)[:3]}")
    for name in a.column_names:
        left, right = a.column(name).to_pylist(), e.column(name).to_pylist()
        for i, (x, y) in enumerate(zip(left, right, strict=True)):
            if x != y and not (x != x and y != y):  # NaN equals NaN here
                return f"column {name} differs at row {i}: {a.slice(i, 1).to_pylist()} vs {e.slice(i, 1).to_pylist()}"
    return ""


def equals_truth(state: EmulatorState, target: Path) -> bool:
    if DeltaSink(str(target)).table("pi_values") is None:
        return False
    return differences(values_of(target), truth(state, target)) == ""


# ---- a loopback server for any ASGI app -----------------------------------------------------------------------
class LoopbackServer:
    """uvicorn on 127.0.0.1 (ephemeral port) in a thread, for wrapped emulator apps."""

    def __init__(self, app: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/piwebapi"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert self._thread.is_alive(), "server thread died"
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
