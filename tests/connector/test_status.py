"""``piflow status`` as a summary: states, lag against the server's clock, the worst points, table sizes.

The tables are written by the real jobs against the emulator, and the expectations are computed here from the
Delta tables read with deltalake directly, not from the status code.
"""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from piflow.cli import app
from piflow.emulator.server import EmulatorServer
from piflow.jobs.discover import run_discover
from piflow.jobs.status import STATES, PointLags, Thresholds, summarise
from piflow.jobs.sync import run_sync
from piflow.wildcards import wildcard

from .conftest import FILTER, T0, settings_for

SYNCED = "BRK.A0.PMP00000*"  # a part of FILTER: the rest is discovered but never read


@pytest.fixture
def lake(emulator: EmulatorServer, tmp_path: Path) -> Path:
    """FILTER discovered; SYNCED read for the last hour; the emulator's clock frozen at T0."""
    asyncio.run(run_discover(settings_for(emulator, tmp_path)))
    asyncio.run(run_sync(settings_for(emulator, tmp_path, points=SYNCED, start=(T0 - timedelta(hours=1)).isoformat(),
                                      safety_lag="0s")))
    return tmp_path


def _status(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(app, ["status", "--json", *args])
    assert result.exit_code == 0, result.output
    report: dict[str, object] = json.loads(result.stdout)
    return report


def _truth(lake: Path, name_filter: str) -> tuple[list[str], dict[str, int]]:
    """(names of the live points matching the filter, {name: watermark in µs}) from the tables themselves."""
    points = DeltaTable(str(lake / "pi_points")).to_pyarrow_table(columns=["webid", "name", "is_deleted"])
    rx = wildcard(name_filter)
    live = {w: n for w, n, d in zip(*(points.column(c).to_pylist() for c in ("webid", "name", "is_deleted")),
                                    strict=True) if not d and rx.fullmatch(n)}
    marks = DeltaTable(str(lake / "pi_watermarks")).to_pyarrow_table(columns=["webid", "watermark"])
    us = pc.cast(marks.column("watermark"), "int64").to_pylist()
    return sorted(live.values()), {live[w]: t for w, t in zip(marks.column("webid").to_pylist(), us, strict=True)
                                   if w in live}


def test_lag_is_measured_against_the_servers_clock(emulator: EmulatorServer, lake: Path) -> None:
    names, marks = _truth(lake, FILTER)
    assert 0 < len(marks) < len(names)  # some points read, some never
    report = _status("--target", str(lake), "--points", FILTER, "--url", emulator.url)
    assert report["clock"] == "the PI server's clock"
    assert report["now"] == "2026-01-01T00:00:00Z"  # the frozen emulator, not this machine's date
    assert report["points"] == len(names)
    states = report["states"]
    assert isinstance(states, dict)
    assert states["never_read"] == len(names) - len(marks)
    t0_us = int(T0.timestamp() * 1_000_000)
    lags = sorted((t0_us - us) / 1e6 for us in marks.values())
    assert states["current"] == sum(1 for lag in lags if lag <= 300)
    assert states["lagging"] == sum(1 for lag in lags if 300 < lag <= 86_400)
    assert states["stale"] == 0
    assert report["lag_s"] == pytest.approx({"max": lags[-1], "p50": float(np.percentile(lags, 50)),
                                             "p90": float(np.percentile(lags, 90)),
                                             "p99": float(np.percentile(lags, 99))}, abs=1e-3)


def test_without_a_url_the_report_says_it_used_this_machines_clock(lake: Path) -> None:
    report = _status("--target", str(lake), "--points", FILTER)
    assert report["clock"] == "this machine's clock (no PI Web API URL is set)"
    states = report["states"]
    assert isinstance(states, dict)
    assert states["stale"] == len(_truth(lake, FILTER)[1])  # data of 2026-01-01 seen from today's date


def test_an_unreachable_server_falls_back_to_this_machines_clock_and_says_why(lake: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    report = _status("--target", str(lake), "--points", FILTER, "--url", f"http://127.0.0.1:{port}/piwebapi")
    assert str(report["clock"]).startswith("this machine's clock (the PI server was not asked: ")
    assert f"127.0.0.1:{port}" in str(report["clock"])


def test_the_worst_points_come_first_and_all_lists_every_point(emulator: EmulatorServer, lake: Path) -> None:
    names, marks = _truth(lake, FILTER)
    report = _status("--target", str(lake), "--points", FILTER, "--url", emulator.url, "--all")
    every = report["all"]
    assert isinstance(every, list)
    assert [p["name"] for p in every] == names
    worst = report["worst"]
    assert isinstance(worst, list)
    assert len(worst) == 20
    never = sorted(n for n in names if n not in marks)
    by_lag = sorted(marks, key=lambda n: (marks[n], n))  # oldest watermark first
    expected = (never + by_lag)[:20]
    assert [p["name"] for p in worst] == expected


def test_the_points_filter_selects_and_the_tables_are_measured(emulator: EmulatorServer, lake: Path) -> None:
    names, marks = _truth(lake, SYNCED)
    report = _status("--target", str(lake), "--points", SYNCED, "--url", emulator.url)
    assert report["points"] == len(names) == len(marks)
    tables = {t["table"]: t for t in report["tables"]}  # type: ignore[attr-defined]
    values = DeltaTable(str(lake / "pi_values"))
    assert tables["pi_values"]["version"] == values.version()
    assert tables["pi_values"]["rows"] == values.to_pyarrow_table(columns=["webid"]).num_rows
    assert tables["pi_values"]["files"] == len(values.file_uris())
    assert {"pi_points", "pi_values", "pi_watermarks", "pi_ingest_runs"} <= set(tables)


def test_the_human_report_is_short_at_any_point_count(emulator: EmulatorServer, lake: Path) -> None:
    result = CliRunner().invoke(app, ["status", "--target", str(lake), "--points", FILTER, "--url", emulator.url])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for section in ("points by state", "the 20 points furthest behind", "pi_values"):
        assert section in out
    names = _truth(lake, FILTER)[0]
    assert sum(1 for n in names if n in out) == 20  # the worst 20, not all of them
    result = CliRunner().invoke(app, ["status", "--target", str(lake), "--points", "NO.SUCH.*"])
    assert result.exit_code == 0
    assert "no points matching 'NO.SUCH.*'" in result.stdout


def test_states_and_order_of_a_hand_made_fleet() -> None:
    lag = np.array([np.nan, 10.0, 300.0, 301.0, 86_400.0, 86_401.0, np.nan])
    lags = PointLags(webids=[f"w{i}" for i in range(7)], names=[f"P{i}" for i in range(7)],
                     watermark_us=np.zeros(7, dtype=np.int64), lag_s=lag)
    summary = summarise(lags, Thresholds(current_s=300, stale_s=86_400), worst=4)
    assert summary["states"] == {"never_read": 2, "current": 2, "lagging": 2, "stale": 1, "error": 0}
    assert [p["name"] for p in summary["worst"]] == ["P0", "P6", "P5", "P4"]
    assert summary["lag_s"]["max"] == 86_401.0
    assert set(summary["states"]) == set(STATES)
    # a point the last run could not read is in error whatever its lag, and first among the worst
    failed = PointLags(webids=lags.webids, names=lags.names, watermark_us=lags.watermark_us, lag_s=lag,
                       error=np.array([False, True, False, False, False, False, False]))
    summary = summarise(failed, Thresholds(current_s=300, stale_s=86_400), worst=3)
    assert summary["states"] == {"never_read": 2, "current": 1, "lagging": 2, "stale": 1, "error": 1}
    assert [p["name"] for p in summary["worst"]] == ["P1", "P0", "P6"]
    assert summary["worst"][0]["error"] == "unknown to the PI server at the last read"


def test_a_point_the_last_run_could_not_read_is_in_error(emulator: EmulatorServer, tmp_path: Path) -> None:
    import httpx2

    from piflow.jobs.backfill import run_backfill
    from piflow.jobs.common import selected_points
    from piflow.jobs.status import status_report
    from piflow.sinks.delta import DeltaSink

    target = tmp_path / "lake"
    s = settings_for(emulator, target, start="*-1h", end="*")
    asyncio.run(run_backfill(s))
    report = status_report(s, emulator.state.clock.now(), "the PI server's clock")
    assert report["states"]["error"] == 0
    gone = selected_points(DeltaSink(str(target)), FILTER)[3]
    answer = httpx2.post(f"{emulator.base_url}/_emulator/points/delete", json={"webIds": [gone.webid]}, timeout=10)
    assert answer.json()["deleted"] == [gone.webid]
    assert asyncio.run(run_backfill(s.model_copy(update={"start": "*-2h", "end": "*-1h"}))).status == "partial"
    report = status_report(s, emulator.state.clock.now(), "the PI server's clock")
    assert report["states"]["error"] == 1
    assert report["worst"][0]["name"] == gone.name
    assert report["worst"][0]["error"] == "unknown to the PI server at the last read"
    result = CliRunner().invoke(app, ["status", "--target", str(target), "--points", FILTER])
    assert result.exit_code == 0, result.output
    assert "error (could not be read)" in result.stdout
