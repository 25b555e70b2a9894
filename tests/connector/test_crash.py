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
    for _ in range(12):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.8, 3.0))  # start-up takes ~0.7 s; kill anywhere after it
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
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
