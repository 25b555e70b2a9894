"""Real piflow processes writing one target at once, the emulator's clock running: every pair and every triple
of backfill, sync, stream, af + events, view and optimize. Afterwards each table holds every key once, the
values equal the server's ground truth, every run row says what its run committed, and a writer that had to
plan a commit again said so in one line.

How "equal to ground truth" is judged while the clock runs: late values and edits arrive within minutes
(emulator settings below), so values older than ``SETTLED`` before T0 were final before any job started and
must be in the table exactly as the server holds them, whatever ran at the same time. The newer ones are
settled afterwards by one more sync with the clock frozen, and then the whole table must equal the truth.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from piflow import schema
from piflow.emulator import EmulatorSettings
from piflow.emulator.server import EmulatorServer
from piflow.emulator.truth import recorded_truth
from piflow.jobs.common import selected_points
from piflow.sinks.delta import DeltaSink
from tests.rows import assert_same_rows, duplicate_keys

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

T0 = datetime(2026, 1, 1, tzinfo=UTC)
START = T0 - timedelta(hours=2)
SETTLED = T0 - timedelta(minutes=10)  # late values and edits (below) arrive within 6 minutes
FILTER = "BRK.A0.*"  # 200 points of every type
JOBS = ("backfill", "sync", "stream", "af_events", "view", "optimize")
SCENARIOS = [*itertools.combinations(JOBS, 2), *itertools.combinations(JOBS, 3)]
VIEW = ["--template", "Pump", "--interval", "1m", "--start", START.isoformat(), "--end", SETTLED.isoformat()]
RETRIED = re.compile(r"^\S+ \S+ WARNING piflow\.sinks\.delta: (\w+): .* planning it again \(attempt \d+ of \d+\)$")


def emulator_settings() -> EmulatorSettings:
    return EmulatorSettings(points=1000, seed=7, now=T0, frozen=False, late_share=0.1, late_max_minutes=4,
                            edit_share=0.1, edit_min_minutes=1, edit_max_minutes=6)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIFLOW_")}
    env.update({"PIFLOW_LOOKBACK": "30m", "PIFLOW_RETRIES": "6", "PIFLOW_PROGRESS": "never",
                "PIFLOW_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def piflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "piflow", *args]


@dataclass
class Slot:
    """One job of a scenario: the commands it runs one after another, and how it ends."""

    job: str
    commands: list[list[str]]
    env: dict[str, str] = field(default_factory=clean_env)
    delay_s: float = 0.0
    stop_after_s: float | None = None  # streams run until SIGTERM
    # ... and not before this says they have committed (on a loaded machine start-up alone can take seconds)
    stop_once: Callable[[], bool] | None = None


def slots(job: str, url: str, target: Path) -> list[Slot]:
    common = ["--url", url, "--target", str(target)]
    values = [*common, "--points", FILTER]
    if job == "backfill":  # small windows and commits, throttled: a dozen commits over a few seconds
        env = clean_env(PIFLOW_WINDOW="15m", PIFLOW_COMMIT_ROWS="2500", PIFLOW_CONCURRENCY="2", PIFLOW_MAX_RPS="15")
        return [Slot(job, [piflow("backfill", *values, "--start", START.isoformat(), "--end", T0.isoformat())], env)]
    if job == "sync":  # the first sync has no watermark: it reads the backfill's whole range too
        cmd = piflow("sync", *values, "--start", START.isoformat())
        return [Slot(job, [cmd, cmd, cmd], delay_s=0.3)]
    if job == "stream":
        cmd = piflow("stream", *values, "--start", START.isoformat(), "--commit-interval", "1s")
        return [Slot(job, [cmd], delay_s=0.6, stop_after_s=6.0, stop_once=lambda: committed_by(target, "stream"))]
    if job == "af_events":
        return [Slot("af", [piflow("af", *common, "--database", "Plant")]),
                Slot("events", [piflow("events", *common, "--database", "Plant", "--start", START.isoformat())],
                     delay_s=0.2)]
    if job == "view":
        cmd = piflow("view", *common, *VIEW)
        return [Slot(job, [cmd, cmd], delay_s=0.4)]
    assert job == "optimize"
    cmd = piflow("optimize", "--target", str(target))
    return [Slot(job, [cmd, cmd, cmd], delay_s=1.0)]


@dataclass
class Outcome:
    job: str
    returncode: int
    stderr: str


def run_together(all_slots: list[Slot]) -> list[Outcome]:
    """Run every slot at once (each slot's commands in sequence); SIGTERM the streams after their time."""
    t0 = time.monotonic()
    pending = {i: list(s.commands) for i, s in enumerate(all_slots)}
    running: dict[int, tuple[subprocess.Popen[str], float]] = {}
    stopped: set[int] = set()
    outcomes: list[Outcome] = []
    deadline = t0 + 240
    while pending or running:
        now = time.monotonic()
        assert now < deadline, "the scenario did not finish"
        for i in list(pending):
            slot = all_slots[i]
            if i not in running and now - t0 >= slot.delay_s:
                cmd = pending[i].pop(0)
                if not pending[i]:
                    del pending[i]
                proc = subprocess.Popen(cmd, env=slot.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                running[i] = (proc, now)
        for i, (proc, started) in list(running.items()):
            slot = all_slots[i]
            if (proc.poll() is None and slot.stop_after_s is not None and now - started > slot.stop_after_s
                    and proc.pid not in stopped and (slot.stop_once is None or slot.stop_once())):
                proc.send_signal(signal.SIGTERM)  # once: a second one would not wait for the final commit
                stopped.add(proc.pid)
            if proc.poll() is not None:
                _, err = proc.communicate()
                outcomes.append(Outcome(slot.job, proc.returncode, err))
                del running[i]
        time.sleep(0.05)
    return outcomes


def committed_by(target: Path, job: str) -> bool:
    """Whether a commit of ``job`` is in pi_values' log (read from the Delta history)."""
    dt = DeltaSink(str(target)).table("pi_values")
    return dt is not None and any(entry.get("piflow.job") == job for entry in dt.history(50))


def settled_rows(target: Path) -> int:
    """Rows of pi_values older than ``SETTLED`` (final before the jobs started)."""
    sink = DeltaSink(str(target))
    if sink.table("pi_values") is None:
        return 0
    return before(sink.read("pi_values", columns=["webid", "timestamp", "seq"]), SETTLED).num_rows


def truth(srv: EmulatorServer, target: Path, end: datetime, asof: datetime) -> pa.Table:
    refs = selected_points(DeltaSink(str(target)), FILTER)
    points = [srv.state.model.point_by_webid(r.webid) for r in refs]
    return recorded_truth(srv.state, points, START, end, asof=asof)  # type: ignore[arg-type]


def before(table: pa.Table, end: datetime) -> pa.Table:
    return table.filter(pc.less(table.column("timestamp"), pa.scalar(end, schema.TS)))


def commits_by_run(target: Path) -> dict[str, int]:
    """Rows each run added, replaced or deleted in pi_values, from the Delta log's own commit metrics."""
    dt = DeltaSink(str(target)).table("pi_values")
    out: dict[str, int] = {}
    for h in dt.history() if dt is not None else []:
        run = h.get("piflow.run_id")
        m = h.get("operationMetrics", {})
        if run:
            n = (int(m.get("num_added_rows", 0)) if h["operation"] == "WRITE" else
                 sum(int(m.get(k, 0)) for k in ("num_target_rows_inserted", "num_target_rows_updated",
                                                "num_target_rows_deleted")))
            out[run] = out.get(run, 0) + n
    return out


def without(rows: list[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    """The rows without the named columns, in a canonical order."""
    return sorted(({k: v for k, v in r.items() if k not in names} for r in rows), key=lambda r: repr(sorted(r.items())))


def discover_first(srv: EmulatorServer, target: Path) -> list[str]:
    """The point catalog, read before the jobs start; returns the flags that point a command at both."""
    common = ["--url", srv.url, "--target", str(target)]
    first = subprocess.run(piflow("discover", *common, "--points", FILTER), env=clean_env(), capture_output=True,
                           text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    return common


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """The AF tables and the view of a run alone (the asset model is static; the view's range is settled)."""
    target = tmp_path_factory.mktemp("reference")
    with EmulatorServer(emulator_settings()) as srv:
        common = ["--url", srv.url, "--target", str(target)]
        for cmd in (piflow("af", *common, "--database", "Plant"), piflow("view", *common, *VIEW)):
            done = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
    sink = DeltaSink(str(target))
    return {name: sink.read(name).to_pylist() for name in ("pi_af_elements", "pi_af_attributes", "pi_view_pump")}


@pytest.mark.parametrize("jobs", SCENARIOS, ids=["+".join(s) for s in SCENARIOS])
def test_concurrent_writers_leave_every_table_true(jobs: tuple[str, ...], tmp_path: Path,
                                                   references: dict[str, list[dict[str, Any]]]) -> None:
    target = tmp_path / "lake"
    with EmulatorServer(emulator_settings()) as srv:
        common = discover_first(srv, target)
        scenario = [s for job in jobs for s in slots(job, srv.url, target)]
        settled = before(truth(srv, target, SETTLED, srv.state.clock.now()), SETTLED).num_rows
        for slot in scenario:  # a stream stops once what settled is in the table, however loaded the machine
            if slot.job == "stream":
                slot.stop_once = lambda: committed_by(target, "stream") and settled_rows(target) >= settled
        outcomes = run_together(scenario)

        # Every process ended well, and said in one line each time it had to plan a commit again.
        for o in outcomes:
            assert o.returncode == 0, f"{o.job} exited {o.returncode}: {o.stderr}"
            assert "Traceback" not in o.stderr, o.stderr
            for line in o.stderr.splitlines():
                if "planning it again" in line:
                    assert RETRIED.match(line), line
        sink = DeltaSink(str(target))
        runs = sink.read("pi_ingest_runs").to_pylist()
        for job in {o.job for o in outcomes} - {"optimize"}:  # optimize changes no row and records no run
            assert sum(1 for r in runs if r["job"] == job) == sum(1 for o in outcomes if o.job == job), job
        assert {r["status"] for r in runs} <= {"ok"}, runs
        retried = sum(o.stderr.count("planning it again") for o in outcomes)
        noted = sum(int(m.group(1)) for r in runs for m in [re.search(r"(\d+) commit\(s\) planned again", r["message"])]
                    if m)
        assert noted == retried  # each retry said in a line is counted in its run's row

        # Every run row says what its run committed to pi_values (the Delta log's own metrics).
        committed = commits_by_run(target)
        for r in runs:
            if r["job"] in ("backfill", "sync", "stream"):
                assert r["values_written"] == committed.get(r["run_id"], 0), r

        # Values final before the jobs started are in the table exactly once and exactly as PI holds them.
        values = sink.read("pi_values")
        assert duplicate_keys(values, list(schema.PI_VALUES_KEY)) == 0
        if {"backfill", "sync", "stream"} & set(jobs):
            now = srv.state.clock.now()
            assert_same_rows(before(values, SETTLED), before(truth(srv, target, SETTLED, now), SETTLED))

        # Then, the clock frozen, one more sync settles the newest minutes: the whole table equals the truth.
        srv.state.clock.freeze()
        now = srv.state.clock.now()
        last = subprocess.run(piflow("sync", *common, "--points", FILTER, "--start", START.isoformat()),
                              env=clean_env(PIFLOW_SAFETY_LAG="0s"), capture_output=True, text=True, timeout=120)
        assert last.returncode == 0, last.stderr
        values = sink.read("pi_values")
        assert duplicate_keys(values, list(schema.PI_VALUES_KEY)) == 0
        assert_same_rows(values, truth(srv, target, now, now))

        if "af_events" in jobs:
            for name in ("pi_af_elements", "pi_af_attributes"):
                rows = sink.read(name).to_pylist()
                assert without(rows, "first_seen", "last_seen") == without(references[name], "first_seen",
                                                                           "last_seen"), name
            frames = sink.read("pi_event_frames")
            assert frames.num_rows > 0
            assert duplicate_keys(frames, ["webid"]) == 0
            assert duplicate_keys(sink.read("pi_event_frame_attributes"), ["webid"]) == 0
        if "view" in jobs:
            view = sink.read("pi_view_pump")
            assert duplicate_keys(view, ["element_webid", "timestamp"]) == 0
            assert without(view.to_pylist(), "ingested_at") == without(references["pi_view_pump"], "ingested_at")


def test_two_backfills_of_one_range_at_once_one_stops_in_one_line_and_a_rerun_completes(tmp_path: Path) -> None:
    """The same range twice at once: whichever commits second finds the first's windows in the table and stops
    with one line (or, if they never overlapped in time, both simply finish); nothing is written twice."""
    target = tmp_path / "lake"
    with EmulatorServer(emulator_settings()) as srv:
        discover_first(srv, target)
        backfill = slots("backfill", srv.url, target)[0]
        outcomes = run_together([backfill, Slot("backfill", backfill.commands, backfill.env)])
        for o in outcomes:
            assert "Traceback" not in o.stderr, o.stderr
            if o.returncode:
                lines = [line for line in o.stderr.splitlines() if line.strip() and "planning it again" not in line]
                assert len(lines) == 1, o.stderr
                assert lines[0].startswith("error: another backfill of the same range committed values of points")
                # The other backfill is ahead in the table (the first failed commit is what is reported).
                has, expected = map(int, re.findall(r"their progress in the table is (\d+), this run expected (\d+)",
                                                    lines[0])[0])
                assert has > expected, lines[0]
        again = subprocess.run(backfill.commands[0], env=backfill.env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        srv.state.clock.freeze()
        values = DeltaSink(str(target)).read("pi_values")
        assert duplicate_keys(values, list(schema.PI_VALUES_KEY)) == 0
        now = srv.state.clock.now()
        assert_same_rows(before(values, SETTLED), before(truth(srv, target, SETTLED, now), SETTLED))
