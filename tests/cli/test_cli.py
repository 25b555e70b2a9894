"""The typer CLI in-process: help texts, config errors as one red line, unimplemented commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from piflow.cli import app

WriteToml = Callable[..., Path]
COMMANDS = ["emulator", "demo", "discover", "backfill", "sync", "stream", "af", "events", "view", "status",
            "optimize"]
COMMON_FLAGS = ["--config", "--url", "--target", "--points", "--auth"]


def test_top_level_help_lists_every_command(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


def test_no_arguments_shows_help(runner: CliRunner) -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output
    assert "backfill" in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_every_command(runner: CliRunner, command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"piflow {command}" in result.stdout
    assert "--config" in result.stdout


@pytest.mark.parametrize(
    ("command", "used", "unused"),
    [("discover", [], ["--start", "--end"]), ("backfill", ["--start", "--end"], []),
     ("sync", ["--start"], ["--end"]), ("stream", ["--start"], ["--end"])],
)
def test_data_commands_take_the_flags_they_use(
    runner: CliRunner, command: str, used: list[str], unused: list[str]
) -> None:
    """A flag a command would ignore is not offered (sync ends at the server's now, discover reads no values)."""
    result = runner.invoke(app, [command, "--help"])
    for flag in [*COMMON_FLAGS, *used]:
        assert flag in result.stdout
    for flag in unused:
        assert flag not in result.stdout


@pytest.mark.parametrize("command", ["af", "events", "view"])
def test_af_commands_take_their_flags(runner: CliRunner, command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    for flag in ["--config", "--url", "--target", "--auth", "--database"]:
        assert flag in result.stdout
    if command != "af":
        assert "--start" in result.stdout
        assert "--end" in result.stdout


def test_emulator_help_shows_its_flags(runner: CliRunner) -> None:
    text = runner.invoke(app, ["emulator", "--help"]).stdout
    for flag in ["--port", "--host", "--points", "--seed", "--now", "--frozen", "--data-servers", "--late-share",
                 "--edit-share", "--max-returned-items", "--auth", "--latency-ms", "--latency-jitter-ms",
                 "--error-rate", "--rate-limit-rps", "--drop-rate", "--slow-body-ms", "--channel-close-every-s"]:
        assert flag in text


def test_version(runner: CliRunner) -> None:
    from piflow import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"piflow {__version__}"


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("command", ["discover", "backfill", "sync"])
def test_basic_auth_without_password_is_one_clear_line(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("PIFLOW_USERNAME", "PIDEMO\\piuser")
    result = runner.invoke(app, [command, "--url", "http://127.0.0.1:9/piwebapi", "--auth", "basic"])
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "'password'" in line
    assert "PIFLOW_PASSWORD" in line
    assert result.stdout == ""


def test_debug_shows_the_traceback(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIFLOW_USERNAME", "u")
    result = runner.invoke(app, ["backfill", "--url", "http://127.0.0.1:9", "--auth", "basic", "--debug"])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert "ConfigError" in result.stderr


def test_secret_in_toml_through_the_cli(runner: CliRunner, write_toml: WriteToml) -> None:
    cfg = write_toml('[piflow]\nurl = "http://127.0.0.1:9"\ntoken = "abc-secret"\n', name="site.toml")
    result = runner.invoke(app, ["sync", "--config", str(cfg)])
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "'token'" in line
    assert "abc-secret" not in result.output


def test_missing_config_file(runner: CliRunner) -> None:
    result = runner.invoke(app, ["status", "--config", "missing.toml"])
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "'config'" in line
    assert "missing.toml" in line


def test_bad_url_flag(runner: CliRunner) -> None:
    result = runner.invoke(app, ["discover", "--url", "pi.example.com/piwebapi"])
    assert result.exit_code == 1
    assert "'url'" in _one_error_line(result.stderr)


@pytest.mark.parametrize("command", ["discover", "backfill", "sync"])
def test_data_commands_need_a_url(runner: CliRunner, command: str) -> None:
    result = runner.invoke(app, [command])
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "'url'" in line
    assert "--url" in line


def test_bad_value_in_env_names_the_setting(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIFLOW_CONCURRENCY", "lots")
    result = runner.invoke(app, ["backfill", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "'concurrency'" in _one_error_line(result.stderr)


def test_stream_reports_a_broken_config(runner: CliRunner) -> None:
    result = runner.invoke(app, ["stream", "--auth", "bearer"])
    assert result.exit_code == 1
    assert "'token'" in _one_error_line(result.stderr)


def test_emulator_rejects_a_bad_now(runner: CliRunner) -> None:
    result = runner.invoke(app, ["emulator", "--now", "yesterday-ish"])
    assert result.exit_code == 1
    assert "'now'" in _one_error_line(result.stderr)


def test_emulator_rejects_a_bad_toml_value(runner: CliRunner, write_toml: WriteToml) -> None:
    cfg = write_toml("[emulator]\nlate_share = 'lots'\n", name="emu.toml")
    result = runner.invoke(app, ["emulator", "--config", str(cfg)])
    assert result.exit_code == 1
    assert "'late_share'" in _one_error_line(result.stderr)


def test_invalid_choice_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["backfill", "--auth", "ntlm"])
    assert result.exit_code == 2
    assert "ntlm" in result.stderr


def test_status_on_an_empty_target(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "--target", str(tmp_path / "lake")])
    assert result.exit_code == 0, result.output
    assert "no points in " in result.stdout


def test_optimize_on_an_empty_target(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["optimize", "--target", str(tmp_path / "lake")])
    assert result.exit_code == 0, result.output
    assert "nothing to optimize" in result.stdout


def test_verify_tls_off_is_warned_about(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIFLOW_VERIFY_TLS", "false")
    result = runner.invoke(app, ["status", "--target", str(tmp_path / "lake")])
    assert result.exit_code == 0, result.output
    assert "verification is OFF" in result.stderr


def test_the_interrupted_line_names_the_signal_and_what_each_run_committed() -> None:
    import signal

    from piflow.cli import Interrupted, interrupted_line
    from piflow.jobs.runs import RunResult

    done = RunResult(job="discover", run_id="d1", values_written=200)
    stopped = RunResult(job="backfill", run_id="b2", status="interrupted", values_written=1_600_000)
    tail = "; every table is as its last commit left it, and running the command again continues from there"
    assert interrupted_line(Interrupted(signal.SIGTERM, [done, stopped])) == (
        "interrupted by SIGTERM: backfill run b2 had committed 1,600,000 values (before it, discover run d1 "
        "finished)" + tail)
    assert Interrupted(signal.SIGTERM, []).exit_code == 143
    after = "interrupted by SIGINT after discover run d1 finished"
    assert interrupted_line(Interrupted(signal.SIGINT, [done])) == after + tail
    assert Interrupted(signal.SIGINT, []).exit_code == 130
    assert interrupted_line(Interrupted(signal.SIGINT, [])) == "interrupted by SIGINT" + tail
