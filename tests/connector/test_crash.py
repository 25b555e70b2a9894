"""kill -9 the backfill at random moments, again and again, then finish it: the table equals ground truth."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest

from piflow.emulator.server import EmulatorServer
from piflow.emulator.truth import recorded_truth
from piflow.jobs.common import selected_points
from piflow.sinks.delta import DeltaSink
from tests.rows import assert_same_rows

from .conftest import FILTER, T0, table_of

pytestmark = [pytest.mark.loopback, pytest.mark.slow]


def backfill_cmd(srv: EmulatorServer, target: Path, start: str, end: str) -> list[str]:
    return [sys.executable, "-m", "piflow", "backfill", "--url", srv.url, "--target", str(target),
            "--points", FILTER, "--start", start, "--end", end]


def test_backfill_survives_repeated_kill_9(emulator: EmulatorServer, tmp_path: Path) -> None:
    start, end = T0 - timedelta(days=3), T0
    # 8 point groups x 18 windows = 144 units at 5 requests/s: ~30 s of work, so every kill lands mid-run.
    env = {**os.environ, "PIFLOW_WINDOW": "4h", "PIFLOW_POINTS_PER_REQUEST": "25", "PIFLOW_COMMIT_ROWS": "20000",
           "PIFLOW_CONCURRENCY": "4", "PIFLOW_MAX_RPS": "5"}
    cmd = backfill_cmd(emulator, tmp_path, start.isoformat(), end.isoformat())
    rng = random.Random(20260101)
    kills = 0
    progressed: list[int] = []
    for i in range(12):
        version = DeltaSink(str(tmp_path)).version("pi_values")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if i % 3 == 2:  # every third run is killed only after it has committed: progress whatever the load
            deadline = time.monotonic() + 120
            while (proc.poll() is None and DeltaSink(str(tmp_path)).version("pi_values") == version
                   and time.monotonic() < deadline):
                time.sleep(0.1)
        time.sleep(rng.uniform(0.8, 3.0))  # start-up takes ~0.7 s on an idle machine; kill anywhere after it
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()  # waits, and closes the stderr pipe
        if DeltaSink(str(tmp_path)).table("pi_values") is not None:
            progressed.append(table_of(tmp_path).num_rows)
    assert kills >= 10
    # Progress survived the kills (at least some commits happened between them).
    assert progressed
    assert max(progressed) > 0
    final = subprocess.run(cmd, env={**env, "PIFLOW_MAX_RPS": "0"}, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    refs = selected_points(DeltaSink(str(tmp_path)), FILTER)
    points = [emulator.state.model.point_by_webid(r.webid) for r in refs]
    expected = recorded_truth(emulator.state, points, start, end)  # type: ignore[arg-type]
    expected = expected.filter(pc.less(expected.column("timestamp"), end))
    assert_same_rows(table_of(tmp_path), expected)


def committed_by(target: Path, run_id: str) -> int:
    """Rows the Delta log says this run committed to pi_values."""
    dt = DeltaSink(str(target)).table("pi_values")
    assert dt is not None
    return sum(int(h["operationMetrics"].get("num_added_rows", 0)) + sum(
        int(h["operationMetrics"].get(k, 0)) for k in ("num_target_rows_inserted", "num_target_rows_updated"))
        for h in dt.history() if h.get("piflow.run_id") == run_id)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_a_backfill_with_a_true_run_row_and_one_line(emulator: EmulatorServer, tmp_path: Path,
                                                                    sig: signal.Signals, code: int) -> None:
    start, end = T0 - timedelta(days=3), T0
    env = {**os.environ, "PIFLOW_WINDOW": "4h", "PIFLOW_POINTS_PER_REQUEST": "25", "PIFLOW_COMMIT_ROWS": "20000",
           "PIFLOW_CONCURRENCY": "4", "PIFLOW_MAX_RPS": "5", "PIFLOW_PROGRESS": "never", "PIFLOW_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(backfill_cmd(emulator, tmp_path, start.isoformat(), end.isoformat()), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while (DeltaSink(str(tmp_path)).version("pi_values") or 0) < 2:  # a few commits in
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no commit within a minute"
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    runs = [r for r in DeltaSink(str(tmp_path)).read("pi_ingest_runs").to_pylist() if r["job"] == "backfill"]
    assert [r["status"] for r in runs] == ["interrupted"]
    run = runs[0]
    assert run["values_written"] == committed_by(tmp_path, run["run_id"]) == table_of(tmp_path).num_rows > 0
    assert lines[0].startswith(f"interrupted by {sig.name}: backfill run {run['run_id']} had committed "
                               f"{run['values_written']:,} values (before it, discover run ")
    assert lines[0].endswith("; every table is as its last commit left it, and running the command again continues "
                             "from there")
    # And it does: the re-run finishes the range, exactly once.
    final = subprocess.run(backfill_cmd(emulator, tmp_path, start.isoformat(), end.isoformat()),
                           env={**env, "PIFLOW_MAX_RPS": "0"}, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    refs = selected_points(DeltaSink(str(tmp_path)), FILTER)
    points = [emulator.state.model.point_by_webid(r.webid) for r in refs]
    expected = recorded_truth(emulator.state, points, start, end)  # type: ignore[arg-type]
    assert_same_rows(table_of(tmp_path), expected.filter(pc.less(expected.column("timestamp"), end)))


def test_sigterm_during_a_sync_read_records_an_interrupted_run_that_wrote_nothing(emulator: EmulatorServer,
                                                                                 tmp_path: Path) -> None:
    env = {**os.environ, "PIFLOW_MAX_RPS": "2", "PIFLOW_POINTS_PER_REQUEST": "10", "PIFLOW_PROGRESS": "never",
           "PIFLOW_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "piflow", "sync", "--url", emulator.url, "--target", str(tmp_path),
           "--points", FILTER, "--start", (T0 - timedelta(days=1)).isoformat()]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while DeltaSink(str(tmp_path)).table("pi_points") is None:  # discovered: reading values now (2 requests/s)
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().startswith("interrupted by SIGTERM: sync run ")
    runs = [r for r in DeltaSink(str(tmp_path)).read("pi_ingest_runs").to_pylist() if r["job"] == "sync"]
    assert [(r["status"], r["values_written"]) for r in runs] == [("interrupted", 0)]
    assert table_of(tmp_path).num_rows == 0
