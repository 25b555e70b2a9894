"""Fixtures for the asset-model, event-frame and view jobs: a real emulator on loopback and a lake folder."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from piflow.config import PiflowSettings
from piflow.emulator import EmulatorSettings
from piflow.emulator.server import EmulatorServer
from piflow.progress import NullProgress
from piflow.sinks.delta import DeltaSink

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EMULATOR: dict[str, Any] = {"points": 500, "seed": 4, "now": T0, "frozen": True, "max_returned_items": 2_000}


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """100 equipment elements (+ sites, areas and the Sandbox database), clock frozen at T0."""
    with EmulatorServer(EmulatorSettings(**EMULATOR)) as srv:
        yield srv


def settings_for(srv: EmulatorServer, target: Path, **kw: Any) -> PiflowSettings:
    base: dict[str, Any] = {"url": srv.url, "target": str(target), "retries": 3}
    base.update(kw)
    return PiflowSettings(**base)


def table_of(target: Path, name: str) -> pa.Table:
    sink = DeltaSink(str(target))
    assert sink.table(name) is not None, f"table {name} was not written"
    return sink.read(name)


def rows_of(target: Path, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = table_of(target, name).to_pylist()
    return rows


def live(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["webid"]: r for r in rows if not r["is_deleted"]}


def version_of(target: Path, name: str) -> int | None:
    return DeltaSink(str(target)).version(name)


class Hook(NullProgress):
    """A progress sink that runs an action when a phase whose description contains ``when`` starts (lets a
    test change the emulator at a precise moment of a job without mocking anything)."""

    def __init__(self, when: str, action: Any) -> None:
        self.when = when
        self.action = action
        self.fired = False
        self.notes: list[str] = []

    def start(self, total: int | None, description: str) -> None:
        if not self.fired and self.when in description:
            self.fired = True
            self.action()

    def note(self, message: str) -> None:
        self.notes.append(message)
