"""kill -9 the streaming process mid-stream (twice), let values arrive while it is down, restart it, stop the
last one with SIGTERM: nothing lost, nothing duplicated, and the clean stop is recorded as a run.

The job runs in a subprocess (``python -c`` calling ``run_stream`` with ``stop=None``, so it installs its own
SIGINT/SIGTERM handlers); the emulator runs in this process with a frozen clock that the test moves.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from piflow.sinks.delta import DeltaSink

from .conftest import FILTER, START, MakeServer, differences, equals_truth, truth, values_of, wait_for

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

CHILD = """
import asyncio, sys
from piflow.config import PiflowSettings
from piflow.jobs.stream.job import run_stream
from piflow.jobs.stream.options import StreamOptions

url, target, points, start = sys.argv[1:5]
settings = PiflowSettings(url=url, target=target, points=points, start=start, lookback="30m", retries=6)
options = StreamOptions(commit_interval_s=0.3, channel_params=(("_pollSeconds", "0.05"),), heartbeat_rate=2,
                        points_per_socket=20, reconnect_base_s=0.05, reconnect_cap_s=0.5)
result = asyncio.run(run_stream(settings, options=options))
sys.exit(0 if result.status == "ok" else 1)
"""


def start_child(url: str, target: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", CHILD, url, str(target), FILTER, START.isoformat()],
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def version(target: Path) -> int:
    v = DeltaSink(str(target)).version("pi_values")
    return -1 if v is None else v


async def test_kill_9_then_restart_loses_and_duplicates_nothing(server_for: MakeServer, tmp_path: Path) -> None:
    srv = server_for(faults={"channel_close_every_s": 1.5})
    rng = random.Random(11)
    for _ in range(2):
        child = start_child(srv.url, tmp_path)
        base = version(tmp_path)
        # A commit of values after the start (version 0 is the empty table the first run creates).
        await wait_for(lambda c=child, b=base: c.poll() is not None or version(tmp_path) >= max(b + 1, 1),  # type: ignore[misc]
                       "a commit")
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        for _ in range(3):
            srv.state.clock.advance(timedelta(minutes=1))
            await asyncio.sleep(rng.uniform(0.1, 0.5))
        child.send_signal(signal.SIGKILL)
        await asyncio.to_thread(child.communicate, timeout=30)  # also closes the stderr pipe
        assert child.returncode == -signal.SIGKILL
        srv.state.clock.advance(timedelta(minutes=3))  # values (late ones and edits too) while nobody listens
    last = start_child(srv.url, tmp_path)
    srv.state.clock.advance(timedelta(minutes=1))
    await wait_for(lambda: last.poll() is not None or equals_truth(srv.state, tmp_path), "the table to catch up")
    last.send_signal(signal.SIGTERM)
    _, err = await asyncio.to_thread(last.communicate, timeout=60)
    assert last.returncode == 0, err.decode()
    assert differences(values_of(tmp_path), truth(srv.state, tmp_path)) == ""
    runs = [r for r in DeltaSink(str(tmp_path)).read("pi_ingest_runs").to_pylist() if r["job"] == "stream"]
    # The killed runs never got to write their row; the one stopped by SIGTERM finished cleanly.
    assert [r["status"] for r in runs] == ["ok"]
    assert "mode channels" in runs[0]["message"]
