"""``piflow doctor`` against real emulators on loopback: healthy, wrong password, untrusted certificate, nothing
listening, a minimal server; each test reads the verdict of the step it is about."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import Result
from rich.console import Console
from typer.testing import CliRunner

from piflow.cli import app
from piflow.doctor import STEPS, ClockReading, Report, Step, check_clock, report_table
from piflow.emulator import EmulatorSettings
from piflow.emulator.server import EmulatorServer
from piflow.emulator.settings import PROFILES, AuthSettings, ProfileSettings
from tests.servers import tls_files

pytestmark = pytest.mark.loopback

USER, PASSWORD = "PIDEMO\\piuser", "pipass"  # the emulator's default Basic user
BASIC = {"PIFLOW_AUTH": "basic", "PIFLOW_USERNAME": USER, "PIFLOW_PASSWORD": PASSWORD}
# Two days behind this machine, frozen: the clock step has a skew to report whenever the test runs.
PAST = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


def emulator(**kw: Any) -> EmulatorServer:
    return EmulatorServer(EmulatorSettings(points=20, now=PAST, frozen=True, **kw))


@pytest.fixture(scope="module")
def healthy() -> Iterator[EmulatorServer]:
    with emulator(auth=AuthSettings(mode="basic")) as server:
        yield server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_server(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    certfile, keyfile = tls_files(ca, tmp_path_factory.mktemp("tls"))
    with EmulatorServer(EmulatorSettings(points=20, now=PAST, frozen=True), certfile=certfile,
                        keyfile=keyfile) as server:
        yield server


def doctor(runner: CliRunner, url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, ["doctor", "--url", url, *args], env=env or {})


def steps_of(result: Result) -> dict[str, dict[str, Any]]:
    doc = json.loads(result.stdout)
    assert [s["step"] for s in doc["steps"]] == list(STEPS)
    return {s["step"]: s for s in doc["steps"]}


def line_of(result: Result, step: str) -> str:
    """The human output's line for ``step`` (``step  verdict  detail``)."""
    return next(line for line in result.stdout.splitlines() if line.startswith(f"{step} "))


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


# ---- a healthy server ----------------------------------------------------------------------------------------

def test_a_healthy_server_passes_with_identity_version_and_data(runner: CliRunner, healthy: EmulatorServer) -> None:
    result = doctor(runner, healthy.url, "--json", env=BASIC)
    assert result.exit_code == 0, result.output
    steps = steps_of(result)
    assert {s["verdict"] for s in steps.values()} <= {"ok", "warn"}
    assert steps["authentication"]["verdict"] == "ok"
    assert steps["identity"]["verdict"] == "ok"
    assert steps["identity"]["facts"]["name"] == USER
    assert steps["version"]["verdict"] == "ok"
    assert steps["version"]["facts"]["version"] == ProfileSettings().version
    assert steps["capabilities"]["verdict"] == "ok"
    assert all(f["available"] for f in steps["capabilities"]["features"])
    assert steps["data"]["verdict"] == "ok"
    assert steps["data"]["facts"]["values"] > 0
    assert steps["tls"]["verdict"] == "warn"  # plain http
    assert "unencrypted" in steps["tls"]["detail"]
    assert json.loads(result.stdout)["ok"] is True
    assert PASSWORD not in result.stdout + result.stderr


def test_the_human_form_has_a_line_per_step_and_a_summary(runner: CliRunner, healthy: EmulatorServer) -> None:
    result = doctor(runner, healthy.url, env=BASIC)
    assert result.exit_code == 0, result.output
    for step in STEPS:
        assert line_of(result, step).split()[1] in ("ok", "warn"), step
    assert USER in line_of(result, "identity")
    assert "1.19" in line_of(result, "version")
    assert "fix: use the server's https:// URL" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("doctor: ")
    assert "piflow can read from this server" in result.stdout.splitlines()[-1]


def test_the_clock_skew_of_the_server_is_a_warning(runner: CliRunner, healthy: EmulatorServer) -> None:
    result = doctor(runner, healthy.url, "--json", env=BASIC)
    clock = steps_of(result)["clock"]
    assert clock["verdict"] == "warn"
    assert "behind" in clock["detail"]
    assert clock["facts"]["source"] == "system/status"
    assert clock["facts"]["skew_s"] < -86400
    assert result.exit_code == 0


def test_clock_verdicts_around_the_threshold() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert check_clock(ClockReading(t, t + timedelta(seconds=2), "system/status")).verdict == "ok"
    ahead = check_clock(ClockReading(t + timedelta(minutes=3), t, "the Date header"))
    assert ahead.verdict == "warn"
    assert "3 min ahead" in ahead.detail
    assert check_clock(ClockReading(None, t, "this machine")).verdict == "warn"


def test_a_filter_matching_no_point_is_a_warning_naming_it(runner: CliRunner, healthy: EmulatorServer) -> None:
    result = doctor(runner, healthy.url, "--points", "NO.SUCH.POINT*", "--json", env=BASIC)
    data = steps_of(result)["data"]
    assert data["verdict"] == "warn"
    assert "NO.SUCH.POINT*" in data["detail"]
    assert "--points" in data["fix"]
    assert result.exit_code == 0


# ---- failures ----------------------------------------------------------------------------------------------

def test_a_wrong_password_fails_authentication_and_skips_the_rest(runner: CliRunner,
                                                                   healthy: EmulatorServer) -> None:
    secret = "Wrong-Secret-4711"
    result = doctor(runner, healthy.url, env={**BASIC, "PIFLOW_PASSWORD": secret})
    assert result.exit_code == 1
    auth = line_of(result, "authentication")
    assert auth.split()[1] == "fail"
    assert "user name or password was refused" in auth
    assert USER in auth
    assert "PIFLOW_PASSWORD" in auth  # where the password came from
    for step in STEPS[STEPS.index("authentication") + 1:]:
        assert line_of(result, step).split()[1] == "skipped"
    assert "fix the authentication step first" in result.stdout
    assert secret not in result.stdout + result.stderr
    assert_no_traceback(result)


def test_incomplete_auth_settings_fail_the_settings_step(runner: CliRunner, healthy: EmulatorServer) -> None:
    result = doctor(runner, healthy.url, "--auth", "basic", "--json", env={"PIFLOW_USERNAME": USER})
    assert result.exit_code == 1
    steps = steps_of(result)
    assert steps["settings"]["verdict"] == "fail"
    assert "password" in steps["settings"]["detail"]
    assert "PIFLOW_PASSWORD" in steps["settings"]["fix"]
    assert {steps[s]["verdict"] for s in STEPS[1:]} == {"skipped"}
    assert_no_traceback(result)


def test_an_untrusted_certificate_fails_tls_naming_ca_bundle(runner: CliRunner, tls_server: EmulatorServer) -> None:
    assert tls_server.url.startswith("https://")
    result = doctor(runner, tls_server.url, "--json")
    assert result.exit_code == 1
    steps = steps_of(result)
    assert steps["reachability"]["verdict"] == "ok"
    assert steps["tls"]["verdict"] == "fail"
    assert "ca_bundle" in steps["tls"]["detail"]
    assert "PIFLOW_CA_BUNDLE" in steps["tls"]["fix"]
    assert steps["authentication"]["verdict"] == "skipped"
    assert_no_traceback(result)


def test_the_ca_bundle_makes_the_certificate_trusted(runner: CliRunner, tls_server: EmulatorServer, ca: trustme.CA,
                                                     tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    result = doctor(runner, tls_server.url, "--json", env={"PIFLOW_CA_BUNDLE": str(bundle)})
    assert result.exit_code == 0, result.output
    steps = steps_of(result)
    assert steps["tls"]["verdict"] == "ok"
    assert "ca.pem" in steps["tls"]["detail"]
    assert next(f for f in steps["capabilities"]["features"] if f["name"] == "channels")["available"] is True


def test_a_port_with_nothing_listening_fails_reachability(runner: CliRunner) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = doctor(runner, f"http://127.0.0.1:{port}/piwebapi")
    assert result.exit_code == 1
    assert line_of(result, "settings").split()[1] == "ok"
    reach = line_of(result, "reachability")
    assert reach.split()[1] == "fail"
    assert "refused" in reach
    assert f"127.0.0.1:{port}" in reach
    assert "fix: check the host and port" in result.stdout
    assert line_of(result, "tls").split()[1] == "skipped"
    assert_no_traceback(result)


# ---- what a server lacks -----------------------------------------------------------------------------------

def test_a_minimal_server_shows_each_fallback(runner: CliRunner) -> None:
    with emulator(profile=PROFILES["minimal"]) as server:
        result = doctor(runner, server.url, "--json")
    assert result.exit_code == 0, result.output
    steps = steps_of(result)
    caps = steps["capabilities"]
    assert caps["verdict"] == "warn"
    features = {f["name"]: f for f in caps["features"]}
    assert {name: f["available"] for name, f in features.items()} == dict.fromkeys(features, False)
    expected = {"system/status": "Date header", "batch": "direct requests", "streamsets": "per-stream",
                "channels": "polling", "stream updates": "polling", "list paging": "Links.Next",
                "maxCount": "reads on"}
    for name, fallback in expected.items():
        assert fallback in features[name]["fallback"], name
    assert "250" in features["maxCount"]["detail"]  # the profile's cap
    assert steps["clock"]["facts"]["source"] == "the Date header"
    assert steps["version"]["facts"]["version"] == PROFILES["minimal"].version
    assert steps["data"]["verdict"] == "ok"


def test_without_channels_the_stream_falls_back_to_stream_updates(runner: CliRunner) -> None:
    with emulator(profile=ProfileSettings(channels=False)) as server:
        result = doctor(runner, server.url, "--json")
    features = {f["name"]: f for f in steps_of(result)["capabilities"]["features"]}
    assert features["channels"]["available"] is False
    assert features["channels"]["fallback"] == "stream updates"
    assert features["stream updates"]["available"] is True
    assert result.exit_code == 0


def test_a_version_older_than_2017_r2_is_a_warning(runner: CliRunner) -> None:
    with emulator(profile=ProfileSettings(version="1.9.1.300")) as server:
        result = doctor(runner, server.url, "--json")
    version = steps_of(result)["version"]
    assert version["verdict"] == "warn"
    assert "older than 2017 R2" in version["detail"]
    assert result.exit_code == 0


def test_the_table_shows_every_step_with_its_fix() -> None:
    report = Report((Step("settings", "ok", "url http://pi/piwebapi"),
                     Step("reachability", "fail", "nothing listens", "check the port")))
    console = Console(record=True, width=160)
    console.print(report_table(report))
    text = console.export_text()
    assert "reachability" in text
    assert "fail" in text
    assert "fix: check the port" in text


def test_credentials_in_the_url_fail_the_settings_step_unshown(runner: CliRunner) -> None:
    result = doctor(runner, "http://PIDEMO%5Cpiuser:Url-Secret-93@127.0.0.1:1/piwebapi", "--json")
    assert result.exit_code == 1
    settings = steps_of(result)["settings"]
    assert settings["verdict"] == "fail"
    assert "without user:password" in settings["fix"]
    assert "Url-Secret-93" not in result.stdout + result.stderr
    assert_no_traceback(result)


def test_help_names_the_options(runner: CliRunner) -> None:
    result = runner.invoke(app, ["doctor", "--help"])
    assert result.exit_code == 0
    for flag in ("--url", "--auth", "--points", "--config", "--json"):
        assert flag in result.stdout
