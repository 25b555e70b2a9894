"""``run_view`` against the emulator: every cell equals the interpolated value PI serves for that attribute."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from piflow.client.api import PiClient
from piflow.emulator.server import EmulatorServer
from piflow.errors import ConfigError, NotFoundError, SinkError
from piflow.jobs.af.views import plan_windows
from piflow.jobs.af.views import run_view as _run_view
from piflow.jobs.runs import RunResult
from piflow.sinks.delta import DeltaSink
from tests.af.conftest import T0, rows_of, settings_for

NUMERIC = {"Single", "Double", "Int16", "Int32", "Int64", "Boolean", "Byte"}


def run_view(srv: EmulatorServer, target: Path, **kw: Any) -> RunResult:
    base: dict[str, Any] = {"template": "Pump", "interval": "5m", "start": "*-1d", "end": "*"}
    return asyncio.run(_run_view(settings_for(srv, target), **(base | kw)))


def expected_cell(value: Any, numeric: bool) -> Any:
    if numeric:
        return float(value) if isinstance(value, int | float) else None
    if isinstance(value, dict):
        return value["Name"]
    return value if isinstance(value, str) or value is None else repr(value)


async def interpolated_truth(srv: EmulatorServer, interval: str = "5m") -> dict[tuple[str, datetime, str], Any]:
    """Every (element, time, attribute) cell, read stream by stream with plain GETs (no batch, no stream set)."""
    af = srv.state.af
    pumps = [e for e in af.all_elements("Plant") if e.template_name == "Pump"]
    out: dict[tuple[str, datetime, str], Any] = {}
    async with PiClient(srv.url) as client:
        for e in pumps:
            for a in af.attributes(e.webid) or []:
                try:
                    doc = await client.http.get_json(f"streams/{a.webid}/interpolated",
                                                     [("startTime", "*-1d"), ("endTime", "*"), ("interval", interval)])
                except NotFoundError:  # a PI Point reference to a point that does not exist: no values
                    continue
                for v in doc["Items"]:
                    ts = datetime.fromisoformat(v["Timestamp"].replace("Z", "+00:00"))
                    out[(e.webid, ts, a.name)] = expected_cell(v["Value"], a.type in NUMERIC)
    return out


def assert_cells_equal(rows: list[dict[str, Any]], truth: dict[tuple[str, datetime, str], Any]) -> None:
    """Every cell of the view equals PI's interpolated value, and every value PI has is in a cell."""
    cells = 0
    for r in rows:
        for col, value in r.items():
            if col in ("element_webid", "element", "element_path", "timestamp"):
                continue
            key = (r["element_webid"], r["timestamp"], col)
            assert value == truth.get(key), key  # an attribute this element lacks is null
            cells += key in truth
    assert cells == len(truth) > 0


def test_every_cell_equals_the_interpolated_value(emulator: EmulatorServer, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="piflow.jobs.af.views"):
        result = run_view(emulator, tmp_path)
    # 13 elements x ~11 attributes x 289 intervals: over the emulator's 2,000 items per call, the sub-requests
    # come back 400 inside the batch and the window is split.
    assert "answered 'too many items'" in caplog.text
    assert result.status == "ok", result.message
    truth = asyncio.run(interpolated_truth(emulator))
    rows = rows_of(tmp_path, "pi_view_pump")
    pumps = {e.webid for e in emulator.state.af.all_elements("Plant") if e.template_name == "Pump"}
    assert {r["element_webid"] for r in rows} == pumps
    assert len(rows) == len(pumps) * (24 * 12 + 1)
    assert_cells_equal(rows, truth)
    states = sum(1 for (_, _, col), v in truth.items() if v is None)
    assert result.details["not_numeric"] == states
    assert "attribute LegacyTag could not be read for 1 elements" in result.message
    assert all(r["LegacyTag"] is None for r in rows)
    assert result.requests < 20


def test_same_window_twice_leaves_no_duplicates(emulator: EmulatorServer, tmp_path: Path) -> None:
    run_view(emulator, tmp_path, interval="1h")
    first = rows_of(tmp_path, "pi_view_pump")
    run_view(emulator, tmp_path, interval="1h")
    again = rows_of(tmp_path, "pi_view_pump")
    key = sorted((r["element_webid"], r["timestamp"]) for r in again)
    assert len(key) == len(set(key)) == len(first)


def test_overlapping_reruns_keep_one_row_per_element_and_interval(emulator: EmulatorServer, tmp_path: Path) -> None:
    """Runs whose starts are not on the grid (the clock moved 1.3 h and some seconds between them) write the
    same grid: the overlap is replaced in place, never interleaved with a second grid."""
    run_view(emulator, tmp_path, interval="1m", start="*-2h")
    first = rows_of(tmp_path, "pi_view_pump")
    emulator.state.clock.advance(timedelta(hours=1.3, seconds=13.5))
    run_view(emulator, tmp_path, interval="1m", start="*-2h")
    rows = rows_of(tmp_path, "pi_view_pump")
    keys = [(r["element_webid"], r["timestamp"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert all(r["timestamp"].second == 0 and r["timestamp"].microsecond == 0 for r in rows)
    elements = {r["element_webid"] for r in first}
    # Grid points from the first start (on the grid: T0 - 2h) to the second end (floored to the minute).
    minutes = int((T0 + timedelta(hours=1.3, seconds=13.5) - (T0 - timedelta(hours=2))) / timedelta(minutes=1)) + 1
    assert len(rows) == len(elements) * minutes


@pytest.mark.parametrize("name", ["../../x", "/tmp/elsewhere", "a/b", "pi_points", "PI_VALUES", "pi_watermarks", ""])
def test_a_table_outside_the_target_or_of_piflow_is_refused(emulator: EmulatorServer, tmp_path: Path,
                                                            name: str) -> None:
    with pytest.raises(ConfigError, match=r"'table'.*e\.g\. pi_view_pump"):
        run_view(emulator, tmp_path, interval="1h", table=name)
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere in the target


def test_unknown_template_writes_nothing(emulator: EmulatorServer, tmp_path: Path) -> None:
    result = run_view(emulator, tmp_path, template="Turbine")
    assert "no element uses the template 'Turbine'" in result.message
    assert DeltaSink(str(tmp_path)).table("pi_view_turbine") is None


def test_template_gaining_attributes_stops_with_a_clear_message(emulator: EmulatorServer, tmp_path: Path) -> None:
    run_view(emulator, tmp_path, interval="1h")
    af = emulator.state.af
    columns = set(rows_of(tmp_path, "pi_view_pump")[0])
    tank = next(e for e in af.all_elements("Plant") if e.template_name == "Tank"
                and {a.name for a in af.attributes(e.webid) or []} - columns)
    af.set_template(tank.webid, "Pump")  # this Tank's points have names no Pump has: new columns
    with pytest.raises(SinkError, match="pi_view_pump has no column for"):
        run_view(emulator, tmp_path, interval="1h")
    other = run_view(emulator, tmp_path, interval="1h", table="pi_view_pump_v2")
    assert other.status == "ok"
    assert tank.webid in {r["element_webid"] for r in rows_of(tmp_path, "pi_view_pump_v2")}


def test_bad_interval_is_a_config_error(emulator: EmulatorServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="interval"):
        run_view(emulator, tmp_path, interval="0s")
    with pytest.raises(ConfigError, match="interval"):
        run_view(emulator, tmp_path, interval="soon")


def test_windows_cover_the_grid_once() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(minutes=10)
    windows = plan_windows(start, start + timedelta(hours=2), step, per_call=5)
    grid = [start + i * step for i in range(13)]
    covered = [t for a, b in windows for t in grid if a <= t <= b]
    assert covered == grid
    assert windows[-1][1] == start + timedelta(hours=2)
    assert plan_windows(start, start, step, per_call=5) == [(start, start)]
    assert start == T0
