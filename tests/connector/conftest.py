"""Fixtures for connector tests: a real emulator on loopback and settings pointing piflow at it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from piflow import schema
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


def content(table: pa.Table) -> pa.Table:
    """The PI-event columns, in a canonical order, for comparison with ground truth."""
    cols = list(schema.PI_VALUES_CONTENT)
    return table.select(cols).sort_by([("webid", "ascending"), ("timestamp", "ascending"), ("seq", "ascending")])


def assert_same_rows(actual: pa.Table, expected: pa.Table) -> None:
    a, e = content(actual), content(expected)
    keys = a.select(list(schema.PI_VALUES_KEY)).to_pylist()
    assert len(keys) == len({tuple(k.values()) for k in keys}), "duplicate keys in the table"
    assert a.num_rows == e.num_rows, f"{a.num_rows} rows in Delta, {e.num_rows} in ground truth"
    for name in a.column_names:
        left, right = a.column(name).to_pylist(), e.column(name).to_pylist()
        if left != right:
            i = next(i for i, (x, y) in enumerate(zip(left, right, strict=True)) if x != y and not (x != x and y != y))
            pytest.fail(f"column {name} differs at row {i}: {a.slice(i, 1).to_pylist()} vs {e.slice(i, 1).to_pylist()}")
