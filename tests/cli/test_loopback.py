"""The CLI against a real emulator process: ``python -m piflow emulator`` and the jobs through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from typer.testing import CliRunner

from piflow.cli import app
from tests.servers import free_port

pytestmark = pytest.mark.loopback

STARTUP_DEADLINE_S = 60.0  # a deadline for a starting server, not a measurement
NOW = "2026-01-01T00:00:00Z"
BASIC = ("PIDEMO\\piuser", "pipass")  # the emulator's default Basic user


@dataclass
class Emulator:
    url: str
    first_line: str



def _wait_until_serving(proc: subprocess.Popen[str], url: str, auth: tuple[str, str] | None) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the emulator exited with {proc.returncode}")
        try:
            if httpx2.get(f"{url}/system/status", auth=auth, timeout=2.0).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the emulator did not answer in time")
        time.sleep(0.1)


@contextmanager
def emulator_process(log: Path, *flags: str, auth: tuple[str, str] | None = None) -> Iterator[Emulator]:
    """``python -m piflow emulator`` on a free port, exactly as a user or a benchmark starts it."""
    port = free_port()
    cmd = [sys.executable, "-m", "piflow", "emulator", "--port", str(port), "--now", NOW, "--frozen", *flags]
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            assert proc.stdout is not None
            first_line = proc.stdout.readline().strip()
            url = f"http://127.0.0.1:{port}/piwebapi"
            _wait_until_serving(proc, url, auth)
            yield Emulator(url=url, first_line=first_line)
        finally:
            proc.terminate()
            try:
                proc.communicate(timeout=15)  # waits, and closes the stdout pipe
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def test_emulator_subprocess_prints_its_url_and_answers(tmp_path: Path) -> None:
    with emulator_process(tmp_path / "emu.log", "--points", "12", "--seed", "7", "--auth", "basic",
                          auth=BASIC) as emu:
        assert emu.first_line == emu.url
        status = httpx2.get(f"{emu.url}/system/status", auth=BASIC, timeout=10.0)
        assert status.status_code == 200
        assert status.json()["ServerTime"].startswith("2026-01-01T00:00:00")  # --now and --frozen arrived
        anonymous = httpx2.get(f"{emu.url}/system/status", timeout=10.0)
        assert anonymous.status_code == 401  # --auth basic arrived
        assert "Errors" in anonymous.json()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    log = tmp_path_factory.mktemp("emulator") / "emu.log"
    with emulator_process(log, "--points", "200", "--seed", "7") as emu:
        yield emu


def _point_names(url: str, name_filter: str) -> list[str]:
    """The emulator's own catalog, read directly, to compare the CLI's output against."""
    servers = httpx2.get(f"{url}/dataservers", timeout=10.0).json()["Items"]
    names: list[str] = []
    for server in servers:
        page = httpx2.get(f"{url}/dataservers/{server['WebId']}/points",
                          params={"nameFilter": name_filter, "maxCount": 1000}, timeout=10.0).json()
        names += [p["Name"] for p in page["Items"]]
    return names


def test_discover_backfill_status_optimize_through_the_cli(served: Emulator, tmp_path: Path) -> None:
    runner = CliRunner()
    target = str(tmp_path / "lake")
    flags = ["--url", served.url.removesuffix("/piwebapi"), "--target", target, "--points", "BRK.A0.*",
             "--progress", "never"]
    expected = sorted(_point_names(served.url, "BRK.A0.*"))
    assert expected  # the filter must select something for this test to mean anything

    result = runner.invoke(app, ["discover", *flags])
    assert result.exit_code == 0, result.output
    assert "discover run" in result.stdout
    assert f"{len(expected):,}" in result.stdout

    result = runner.invoke(app, ["backfill", *flags, "--start", "*-2h", "--end", "*"])
    assert result.exit_code == 0, result.output
    assert "backfill run" in result.stdout
    assert "values_written" in result.stdout

    result = runner.invoke(app, ["status", "--target", target, "--all"])
    assert result.exit_code == 0, result.output
    assert f"{len(expected):,} points" in result.stdout
    for name in expected[:3]:
        assert name in result.stdout

    result = runner.invoke(app, ["optimize", "--target", target])
    assert result.exit_code == 0, result.output
    assert "pi_values" in result.stdout


def test_json_logs_and_forced_progress_through_the_cli(
    served: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIFLOW_LOG_JSON", "true")
    monkeypatch.setenv("PIFLOW_LOG_LEVEL", "DEBUG")
    runner = CliRunner()
    result = runner.invoke(app, ["discover", "--url", served.url, "--target", str(tmp_path / "lake"),
                                 "--points", "BRK.A0.*", "--progress", "never"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert records, "a DEBUG run logs something"
    for rec in records:
        assert {"ts", "level", "logger", "msg"} <= rec.keys()

    monkeypatch.setenv("PIFLOW_LOG_LEVEL", "WARNING")
    result = runner.invoke(app, ["backfill", "--url", served.url, "--target", str(tmp_path / "lake"),
                                 "--points", "BRK.A0.*", "--start", "*-1h", "--progress", "always"])
    assert result.exit_code == 0, result.output
    assert "backfill" in result.stderr  # the bar's description
    assert "values" in result.stderr


def test_unreachable_server_is_one_red_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    (tmp_path / "piflow.toml").write_text(f'url = "http://127.0.0.1:{port}"\nretries = 0\ntimeout_s = 5\n')
    result = CliRunner().invoke(app, ["discover", "--target", str(tmp_path / "lake"), "--progress", "never"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # retries = 0: no retry warnings, just the error
    assert lines[0].startswith("error: ")
    assert f"127.0.0.1:{port}" in lines[0]


def test_demo_writes_tables_and_prints_their_summary(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    target = tmp_path / "lake"
    result = CliRunner().invoke(app, ["demo", "--target", str(target), "--progress", "never"])
    assert result.exit_code == 0, result.output
    rows = DeltaTable(str(target / "pi_values")).count()
    assert rows > 0
    assert f"{rows:,}" in result.stdout  # the printed row count is what Delta holds
    for job in ("discover", "backfill", "sync"):
        assert job in result.stdout
    assert str(target) in result.stdout


def test_af_events_and_view_through_the_cli(served: Emulator, tmp_path: Path) -> None:
    from piflow.sinks.delta import DeltaSink

    runner = CliRunner()
    target = str(tmp_path / "lake")
    flags = ["--url", served.url, "--target", target, "--progress", "never"]
    result = runner.invoke(app, ["af", *flags, "--database", "Plant"])
    assert result.exit_code == 0, result.output
    elements = DeltaSink(target).read("pi_af_elements")
    assert elements.num_rows > 40  # enterprise, sites, areas and the equipment of 200 points
    result = runner.invoke(app, ["events", *flags, "--database", "Plant", "--start", "*-6h", "--end", "*",
                                 "--template", "Downtime"])
    assert result.exit_code == 0, result.output
    frames = DeltaSink(target).read("pi_event_frames").to_pylist()
    assert frames
    assert {f["template"] for f in frames} == {"Downtime"}
    result = runner.invoke(app, ["view", *flags, "--template", "Pump", "--interval", "1h", "--start", "*-3h",
                                 "--end", "*"])
    assert result.exit_code == 0, result.output
    assert DeltaSink(target).read("pi_view_pump").num_rows > 0


def test_stream_through_the_cli_stops_cleanly_on_sigterm(served: Emulator, tmp_path: Path) -> None:
    import signal
    import time

    from piflow.sinks.delta import DeltaSink

    target = str(tmp_path / "lake")
    cmd = [sys.executable, "-m", "piflow", "stream", "--url", served.url, "--target", target,
           "--points", "BRK.A0.PMP00000?.*", "--start", "*-10m", "--commit-interval", "1s", "--progress", "never"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while DeltaSink(target).table("pi_values") is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the gap read of the first connect commits the last 10 minutes
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stream run" in out
    assert DeltaSink(target).read("pi_values").num_rows > 0
