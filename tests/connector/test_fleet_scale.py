"""100,000 points: backfill and sync equal ground truth, kill -9 leaves no duplicate and no gap, and bad input
gives the same errors as at 200 points.

One emulator of 100,000 points serves the module (frozen clock; each test sets the time it needs). The
``clean`` fixture is one uninterrupted backfill of five minutes of every point; its rows are checked against
the emulator's ground truth for a sample of points of every type, and the other tests compare their tables
with it (all 100,000 points, row for row: ground truth for all of them would take the emulator 45 s).
Every job runs as the CLI in its own process, as a user runs it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx2
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from piflow.emulator import EmulatorSettings
from piflow.emulator.server import EmulatorServer
from piflow.emulator.truth import recorded_truth
from piflow.sinks.delta import DeltaSink
from tests.rows import assert_same_rows, content, duplicate_keys

from .conftest import T0

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

POINTS = 100_000
START, END = T0 - timedelta(minutes=5), T0
# Commits of ~40,000 values: about ten per backfill, so that kills land between commits.
ENV = {"PIFLOW_PROGRESS": "never", "PIFLOW_LOG_LEVEL": "WARNING", "PIFLOW_COMMIT_ROWS": "40000"}
PER_TYPE = 40  # points of each type compared with ground truth


def cli(srv: EmulatorServer, target: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "piflow", *args, "--url", srv.url, "--target", str(target)]


def run_cli(srv: EmulatorServer, target: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(srv, target, *args), env={**os.environ, **ENV, **env}, capture_output=True,
                          text=True, timeout=900, check=False)


def backfill_args() -> list[str]:
    return ["backfill", "--start", START.isoformat(), "--end", END.isoformat()]


def set_clock(srv: EmulatorServer, at: datetime) -> None:
    answer = httpx2.post(f"{srv.base_url}/_emulator/clock", json={"set": at.isoformat()}, timeout=30.0)
    assert answer.status_code == 200, answer.text


def values(target: Path) -> pa.Table:
    return DeltaSink(str(target)).read("pi_values")


def only_points(lake: Path, target: Path) -> None:
    """A copy of ``lake`` with its point catalog only (the state after ``discover``)."""
    shutil.copytree(lake / "pi_points", target / "pi_points")


def sample_of_every_type(srv: EmulatorServer, target: Path) -> list[object]:
    """``PER_TYPE`` points of each PI point type, spread over the catalog."""
    catalog = DeltaSink(str(target)).read("pi_points", columns=["webid", "point_type"]).to_pylist()
    rng = random.Random(14)
    rng.shuffle(catalog)
    chosen: dict[str, list[str]] = {}
    for row in catalog:
        group = chosen.setdefault(row["point_type"], [])
        if len(group) < PER_TYPE:
            group.append(row["webid"])
    assert len(chosen) >= 6, chosen.keys()  # Float32, Float64, Int32, Digital, String, Timestamp
    return [srv.state.model.point_by_webid(w) for ws in chosen.values() for w in ws]


def assert_equals_truth_for_a_sample(srv: EmulatorServer, target: Path, start: datetime, end: datetime,
                                     *, end_inclusive: bool = False) -> None:
    points = sample_of_every_type(srv, target)
    expected = recorded_truth(srv.state, points, start, end)  # type: ignore[arg-type]
    if not end_inclusive:
        expected = expected.filter(pc.less(expected.column("timestamp"), end))
    webids = pa.array([p.webid for p in points], pa.string())  # type: ignore[attr-defined]
    table = values(target)
    mine = table.filter(pc.and_(pc.is_in(table.column("webid"), webids),
                                pc.greater_equal(table.column("timestamp"), pa.scalar(start))))
    assert expected.num_rows > 1000
    assert_same_rows(mine, expected)


@pytest.fixture(scope="module")
def fleet() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorSettings(points=POINTS, seed=11, now=T0, frozen=True)) as srv:
        yield srv


@pytest.fixture(scope="module")
def clean(fleet: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Discover all 100,000 points, then one uninterrupted backfill of five minutes (checked against truth)."""
    lake = tmp_path_factory.mktemp("clean")
    set_clock(fleet, T0)
    found = run_cli(fleet, lake, "discover")
    assert found.returncode == 0, found.stderr
    assert DeltaSink(str(lake)).read("pi_points", columns=["webid"]).num_rows == POINTS
    done = run_cli(fleet, lake, *backfill_args())
    assert done.returncode == 0, done.stderr
    assert_equals_truth_for_a_sample(fleet, lake, START, END)
    return lake


def wait_for_commit(proc: subprocess.Popen[str], target: Path, after: int | None) -> None:
    deadline = time.monotonic() + 300
    while (DeltaSink(str(target)).version("pi_values") or 0) <= (after or 0):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no commit within five minutes"
        time.sleep(0.1)


def test_kill_9_three_times_during_a_backfill_then_a_rerun_leaves_no_duplicate_and_no_gap(
        fleet: EmulatorServer, clean: Path, tmp_path: Path) -> None:
    set_clock(fleet, T0)
    only_points(clean, tmp_path)
    rng = random.Random(2026)
    committed: list[int] = []
    for _ in range(3):
        before = DeltaSink(str(tmp_path)).version("pi_values")
        proc = subprocess.Popen(cli(fleet, tmp_path, *backfill_args()), env={**os.environ, **ENV},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for_commit(proc, tmp_path, before)  # this run has committed: the kill lands mid-run
        time.sleep(rng.uniform(0.0, 1.5))
        assert proc.poll() is None, "the backfill finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        committed.append(values(tmp_path).num_rows)
    whole = content(values(clean)).num_rows
    assert 0 < committed[0] <= committed[1] <= committed[2] < whole  # each run added some and none finished
    final = run_cli(fleet, tmp_path, *backfill_args())
    assert final.returncode == 0, final.stderr
    table = values(tmp_path)
    assert duplicate_keys(table) == 0
    assert content(table).equals(content(values(clean)))  # every row of every point: no gap, no duplicate
    assert_equals_truth_for_a_sample(fleet, tmp_path, START, END)
    # The log: progress is kept per shard of points (about a thousand each), not per point.
    app_ids: set[str] = set()
    biggest = 0
    for entry in sorted((tmp_path / "pi_values" / "_delta_log").glob("*.json")):
        biggest = max(biggest, entry.stat().st_size)
        for line in entry.read_text().splitlines():
            action = json.loads(line)
            if "txn" in action and action["txn"]["appId"].startswith("piflow-backfill-"):
                app_ids.add(action["txn"]["appId"])
    assert 20 <= len(app_ids) <= 400, len(app_ids)
    assert biggest < 100_000, biggest  # one commit's log entry stays small whatever the point count


def test_sync_at_100k_points_catches_up_and_equals_ground_truth(fleet: EmulatorServer, clean: Path,
                                                                 tmp_path: Path) -> None:
    shutil.copytree(clean, tmp_path, dirs_exist_ok=True)
    later = T0 + timedelta(minutes=5)
    set_clock(fleet, later)
    try:
        synced = run_cli(fleet, tmp_path, "sync", PIFLOW_LOOKBACK="10m", PIFLOW_SAFETY_LAG="0s")
        assert synced.returncode == 0, synced.stderr
        table = values(tmp_path)
        assert duplicate_keys(table) == 0
        # Late values and edits made since the backfill are in, and five new minutes of every point.
        assert_equals_truth_for_a_sample(fleet, tmp_path, START, later, end_inclusive=True)
    finally:
        set_clock(fleet, T0)


def test_a_filter_matching_none_of_100k_points_says_what_it_says_at_200(fleet: EmulatorServer, clean: Path,
                                                                       tmp_path: Path) -> None:
    only_points(clean, tmp_path / "big")
    with EmulatorServer(EmulatorSettings(points=200, seed=11, now=T0, frozen=True)) as small:
        assert run_cli(small, tmp_path / "small", "discover").returncode == 0
        lines = {}
        for srv, lake in ((small, tmp_path / "small"), (fleet, tmp_path / "big")):
            result = run_cli(srv, lake, *backfill_args(), "--points", "NOPE.*")
            lines[srv.url] = (result.returncode, result.stderr.strip().replace(srv.url, "URL"))
    (small_code, small_line), (big_code, big_line) = lines.values()
    assert small_code == big_code != 0
    assert small_line == big_line
    assert "NOPE.*" in big_line
    assert "\n" not in big_line


def test_a_server_refusing_calls_as_too_large_halfway_is_met_by_smaller_calls(fleet: EmulatorServer, clean: Path,
                                                                              tmp_path: Path) -> None:
    set_clock(fleet, T0)
    only_points(clean, tmp_path)
    limit = fleet.state.settings.max_returned_items
    asked = fleet.state.stats.requests
    proc = subprocess.Popen(cli(fleet, tmp_path, *backfill_args()), env={**os.environ, **ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while fleet.state.stats.requests - asked < 700:  # about a third of the run's ~2,000 calls
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # 50 points x 5 minutes is ~200 values a call: from now on, every such call is refused as too large.
        lowered = httpx2.post(f"{fleet.base_url}/_emulator/limits", json={"maxReturnedItems": 100}, timeout=30.0)
        assert lowered.status_code == 200
        _, err = proc.communicate(timeout=900)
    finally:
        httpx2.post(f"{fleet.base_url}/_emulator/limits", json={"maxReturnedItems": limit}, timeout=30.0)
    assert proc.returncode == 0, err
    runs = DeltaSink(str(tmp_path)).read("pi_ingest_runs").to_pylist()
    assert [r["status"] for r in runs] == ["ok"]
    assert runs[0]["errors"] > 0  # calls were refused as too large, then cut and asked again
    assert content(values(tmp_path)).equals(content(values(clean)))


def test_a_point_deleted_mid_run_makes_the_run_partial_and_the_rest_complete(clean: Path, tmp_path: Path) -> None:
    """Its own emulator: deleting a point cannot be undone."""
    with EmulatorServer(EmulatorSettings(points=POINTS, seed=11, now=T0, frozen=True)) as srv:
        only_points(clean, tmp_path)
        catalog = DeltaSink(str(tmp_path)).read("pi_points", columns=["webid", "name"]).sort_by("webid")
        gone_webid, gone_name = catalog.column("webid")[-1].as_py(), catalog.column("name")[-1].as_py()
        proc = subprocess.Popen(cli(srv, tmp_path, *backfill_args()), env={**os.environ, **ENV},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_commit(proc, tmp_path, None)
        answer = httpx2.post(f"{srv.base_url}/_emulator/points/delete", json={"webIds": [gone_webid]}, timeout=30.0)
        assert answer.json()["deleted"] == [gone_webid]
        out, err = proc.communicate(timeout=900)
        rerun = run_cli(srv, tmp_path, *backfill_args())
    expected = content(values(clean))
    expected = expected.filter(pc.not_equal(expected.column("webid"), gone_webid))
    for code, stdout in ((proc.returncode, out), (rerun.returncode, rerun.stdout)):
        assert code == 3, err  # partial: the rest was written
        assert "partial" in stdout
    runs = DeltaSink(str(tmp_path)).read("pi_ingest_runs").to_pylist()
    backfills = [r for r in runs if r["job"] == "backfill"]
    assert [r["status"] for r in backfills] == ["partial", "partial"]
    assert all("1 point(s) unknown to the server" in r["message"] and gone_name in r["message"]
               for r in backfills), backfills
    table = values(tmp_path)
    assert duplicate_keys(table) == 0
    mine = content(table)
    assert mine.filter(pc.not_equal(mine.column("webid"), gone_webid)).equals(expected)
