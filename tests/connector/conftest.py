"""Fixtures for connector tests: a real emulator on loopback and settings pointing piflow at it."""

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
from piflow.sinks.delta import DeltaSink

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FILTER = "BRK.A0.*"  # 200 points of every type


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    # A small item limit forces splitting and paging on every unit.
    with EmulatorServer(EmulatorSettings(points=1000, seed=11, now=T0, frozen=True, max_returned_items=5_000)) as srv:
        yield srv


def settings_for(srv: EmulatorServer, target: Path, **kw: Any) -> PiflowSettings:
    base: dict[str, Any] = {"url": srv.url, "target": str(target), "points": FILTER, "retries": 6}
    base.update(kw)
    return PiflowSettings(**base)


def table_of(target: Path, name: str = "pi_values") -> pa.Table:
    return DeltaSink(str(target)).read(name)


