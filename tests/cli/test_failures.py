"""Issue #12, one test per finding: targets that cannot hold tables, a foreign table at the target, bare-number
intervals, credentials in URLs, the scrubber, TOML typos, unexpected errors, exit codes and run records."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pyarrow as pa
import pytest
import typer
from deltalake import DeltaTable, write_deltalake
from typer.testing import CliRunner, Result

from piflow import schema
from piflow.cli import EXIT_PARTIAL, _errors_handled, app, check_writable_target
from piflow.config import load_settings
from piflow.emulator.server import EmulatorServer
from piflow.emulator.settings import AuthSettings, EmulatorSettings
from piflow.errors import ConfigError, SinkError
from piflow.logs import configure_logging, redact, register_secrets
from piflow.pitime import parse_interval
from piflow.sinks.delta import DeltaSink, Write

WriteToml = Callable[..., Path]
FEW = "BRK.A0.PMP000001.*"  # a handful of the emulator's points


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorSettings(points=40)) as server:
        yield server


def one_line(result: Result, exit_code: int = 1) -> str:
    """The single stderr line of a failed command: no traceback, no Rust panic, nothing on stdout (click's
    "Usage:" and "Try ..." lines around a usage error, exit code 2, are not counted)."""
    shown = result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == exit_code, shown
    assert "Traceback" not in shown
    assert "panicked" not in shown
    assert result.stdout == ""
    usage = ("Usage: ", "Try '") if exit_code == 2 else ()
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(usage)]
    assert len(lines) == 1, result.stderr
    return lines[0]


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


# --- targets that cannot hold tables ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["discover", "status"])
def test_a_target_that_is_a_file_is_refused_before_anything_runs(
    emulator: EmulatorServer, tmp_path: Path, command: str
) -> None:
    afile = tmp_path / "hostname"
    afile.write_text("pi-box\n")
    extra = ["--url", emulator.url] if command == "discover" else []
    for target, words in ((afile, "is a file, not a folder"), (afile / "lake", f"goes through {afile}")):
        line = one_line(run(command, *extra, "--target", str(target)))
        assert line.startswith("error: setting 'target': ")
        assert words in line
        assert "e.g. ./lake" in line
    assert afile.read_text() == "pi-box\n"


def _unwritable_parent(tmp_path: Path) -> Path:
    """A folder in which no folder can be made. Tests may run as root, which chmod does not stop: there the
    parent is under /proc (no one creates folders in it); otherwise a folder without write permission."""
    if os.geteuid() == 0:
        return Path("/proc") / f"piflow-test-{uuid.uuid4().hex}"
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    return parent


def test_a_target_in_a_read_only_parent_is_one_line_and_nothing_is_read(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    target = _unwritable_parent(tmp_path) / "lake"
    requests_before = emulator.state.stats.requests
    line = one_line(run("discover", "--url", emulator.url, "--target", str(target), "--progress", "never"))
    assert line.startswith(f"error: setting 'target': cannot write to {target}")
    assert "choose a folder this user can write to" in line
    assert emulator.state.stats.requests == requests_before  # refused before PI was asked anything
    assert not target.exists()


def test_the_write_check_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    check_writable_target(str(tmp_path / "lake"))
    assert list((tmp_path / "lake").iterdir()) == []
    check_writable_target(str(tmp_path / "absent"), create=False)  # optimize: nothing to check, nothing made
    assert not (tmp_path / "absent").exists()
    with pytest.raises(ConfigError) as exc:
        check_writable_target(str(_unwritable_parent(tmp_path) / "lake"))
    assert exc.value.setting == "target"


@pytest.mark.parametrize("target", ["foo://x", "http://127.0.0.1/lake"])
def test_status_on_an_unknown_scheme_is_an_error(target: str) -> None:
    line = one_line(run("status", "--target", target))
    assert "setting 'target'" in line
    assert "is not a storage scheme" in line


def test_the_sink_itself_refuses_an_unknown_scheme() -> None:
    """delta-rs reports foo:// as "table not found"; the sink must not read that as "no table yet"."""
    with pytest.raises(SinkError, match="knows no storage scheme foo://"):
        DeltaSink("foo://x").table("pi_points")


# --- a table of piflow's name that piflow did not write --------------------------------------------------


def _foreign_pi_points(lake: Path) -> DeltaTable:
    write_deltalake(str(lake / "pi_points"), pa.table({"a": [1, 2], "b": ["x", "y"]}))
    return DeltaTable(str(lake / "pi_points"))


@pytest.mark.parametrize("command", ["discover", "backfill", "status"])
def test_a_foreign_pi_points_table_is_named_and_left_alone(
    emulator: EmulatorServer, tmp_path: Path, command: str
) -> None:
    lake = tmp_path / "lake"
    before = _foreign_pi_points(lake)
    extra = [] if command == "status" else ["--url", emulator.url, "--progress", "never"]
    line = one_line(run(command, *extra, "--target", str(lake)))
    assert f"pi_points at {lake / 'pi_points'} is not a piflow table" in line
    assert "lacks the columns webid" in line
    assert "move it out of the target, or choose another --target" in line
    assert "overwrite" not in line.lower()
    after = DeltaTable(str(lake / "pi_points"))
    assert after.version() == before.version()
    assert after.to_pyarrow_table().to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]


def test_a_schema_mismatch_never_passes_on_advice_to_overwrite(tmp_path: Path) -> None:
    """delta-rs answers a partitioning mismatch with "use full table overwrite with schema overwrite", which
    would drop the table; piflow says what is wrong and what is safe instead."""
    write_deltalake(str(tmp_path / "pi_values"), schema.PI_VALUES.empty_table())  # not partitioned by date
    row = pa.table({f.name: pa.nulls(1, f.type) for f in schema.PI_VALUES})
    with pytest.raises(SinkError) as exc:
        DeltaSink(str(tmp_path)).commit("pi_values", lambda snap: Write(append=row))
    message = str(exc.value)
    assert message.startswith(f"append to pi_values at {tmp_path / 'pi_values'}: the table does not have the "
                              "schema piflow writes (")
    assert "partitioning does not match" in message
    assert "overwrite" not in message.lower()
    assert DeltaTable(str(tmp_path / "pi_values")).version() == 0


@pytest.mark.parametrize(
    ("delta_rs_says", "piflow_says"),
    [
        # as delta-rs 1.x words a write into a table folder this user may not write (seen running as non-root)
        ("Failed to parse parquet: External: Generic LocalFileSystem error: Unable to open file "
         "/x/pi_points/part-00000-1.snappy.parquet#1: Permission denied (os error 13)",
         "permission denied; let this user write to that folder, or choose another --target"),
        ("Generic LocalFileSystem error: Unable to open file /x/pi_points/part-1.parquet: Read-only file system "
         "(os error 30)", "the file system is read-only; choose a --target on a writable disk"),
        ("Could not create local directory: /x/pi_points Error: Os { code: 20, kind: NotADirectory, message: "
         "\"Not a directory\" }", "the path goes through a file, not a folder; choose a folder as --target"),
        ("Generic LocalFileSystem error: Unable to write /x/pi_points/part-1.parquet: No space left on device "
         "(os error 28)", "the disk is full (or over quota); free space and run again, the table keeps its last "
         "commit"),
    ],
)
def test_delta_rs_failures_are_said_in_piflows_words(delta_rs_says: str, piflow_says: str) -> None:
    from deltalake.exceptions import DeltaError

    from piflow.sinks.delta import sink_error

    error = sink_error("commit to", "pi_points", "/x/pi_points", DeltaError(delta_rs_says))
    assert str(error) == f"commit to pi_points at /x/pi_points: {piflow_says}"


# --- intervals --------------------------------------------------------------------------------------------


def test_a_bare_number_is_seconds_wherever_an_interval_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from piflow.jobs.stream.options import StreamOptions

    assert parse_interval("2") == parse_interval("2s")
    assert parse_interval(" 1.5 ").total_seconds() == 1.5
    monkeypatch.setenv("PIFLOW_SAFETY_LAG", "45")
    settings = load_settings(None, {"lookback": "3600", "window": "86400", "commit_interval": "2",
                                    "poll_interval": "10"})
    assert settings.safety_lag_delta.total_seconds() == 45
    assert settings.lookback_delta.total_seconds() == 3600
    assert settings.window_delta is not None
    assert settings.window_delta.days == 1
    options = StreamOptions.from_settings(settings)
    assert (options.commit_interval_s, options.poll_interval_s) == (2.0, 10.0)
    with pytest.raises(ValueError, match="a bare number is seconds"):
        parse_interval("2 fortnights")


def test_a_bare_number_interval_through_the_cli(emulator: EmulatorServer, tmp_path: Path) -> None:
    target = tmp_path / "lake"
    result = run("view", "--url", emulator.url, "--target", str(target), "--template", "Pump", "--interval", "1800",
                 "--start", "*-2h", "--end", "*", "--progress", "never")
    assert result.exit_code == 0, result.output
    stamps = sorted(DeltaSink(str(target)).read("pi_view_pump").column("timestamp").to_pylist())
    assert stamps
    assert {(b - a).total_seconds() for a, b in itertools.pairwise(stamps) if b != a} == {1800.0}


@pytest.mark.parametrize("value", ["0", "-1s", "soon"])
def test_a_stream_commit_interval_that_cannot_work_is_a_usage_error(value: str) -> None:
    line = one_line(run("stream", "--url", "http://127.0.0.1:9", f"--commit-interval={value}"), exit_code=2)
    assert line.startswith("Error: Invalid value for '--commit-interval': ")


# --- credentials in URLs ----------------------------------------------------------------------------------

SECRET_URL = "http://piuser:Hunter2-pw@127.0.0.1:9/piwebapi"


def _refused(result: Result) -> None:
    line = one_line(result)
    assert line.startswith("error: setting 'url': must not carry a user name or password")
    assert "PIFLOW_PASSWORD" in line
    assert "password_file" in line
    assert "Hunter2-pw" not in result.output


def test_credentials_in_the_url_flag_are_refused() -> None:
    _refused(run("discover", "--url", SECRET_URL))


def test_credentials_in_the_url_in_the_toml_are_refused(write_toml: WriteToml) -> None:
    write_toml(f'url = "{SECRET_URL}"\n')
    _refused(run("discover"))


def test_credentials_in_pifow_url_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIFLOW_URL", SECRET_URL)
    _refused(run("sync"))


@pytest.mark.parametrize("url", ["ftp://u:Hunter2-pw@pi/piwebapi", "u:Hunter2-pw@pi/piwebapi",
                                 "https://Hunter2-pw@pi.example.com"])
def test_no_url_error_echoes_a_password(url: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {"url": url})
    assert "Hunter2-pw" not in str(exc.value)


def test_credentials_in_the_oidc_token_url_are_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {"oidc_token_url": "https://client:Hunter2-pw@idp.example.com/token"})
    assert exc.value.setting == "oidc_token_url"
    assert "Hunter2-pw" not in str(exc.value)


# --- the scrubber -----------------------------------------------------------------------------------------


def test_the_readme_command_without_a_password_reads_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIFLOW_USERNAME", "PLANT\\svc-piflow")
    line = one_line(run("discover", "--url", "https://pi.example.com/piwebapi", "--auth", "basic", "--target",
                        "./lake", "--points", "PLANT1.*"))
    assert line == ("error: setting 'password': auth=basic needs a password: set PIFLOW_PASSWORD in the "
                    "environment or point password_file (PIFLOW_PASSWORD_FILE) at a file holding it")


def test_the_scrubber_removes_secret_values_and_keeps_words() -> None:
    register_secrets("plain words secret", username="svc")
    register_secrets("abc")  # too short to look for: it would garble ordinary text
    text = ("the password 'plain words secret' was refused for svc (Basic c3ZjOnBsYWluIHdvcmRzIHNlY3JldA==); "
            "url http://svc:Ab3-x@pi/piwebapi; set a password: set PIFLOW_PASSWORD; token: set it; abc")
    assert redact(text) == ("the password '***' was refused for svc (Basic ***); url http://svc:***@pi/piwebapi; "
                            "set a password: set PIFLOW_PASSWORD; token: set it; abc")


def test_a_configured_secret_never_reaches_a_log_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """The CLI registers the settings' secret values: a log line carrying one (here a library logging the
    settings' password by mistake) shows *** instead, whatever words surround it."""
    import logging

    from piflow.cli import _setup

    monkeypatch.setenv("PIFLOW_PASSWORD", "correct horse battery")
    settings = _setup(None, {"auth": "basic", "username": "u", "url": emulator.url})
    assert settings.password is not None
    logging.getLogger("piflow.test").warning("sending %s", settings.password.get_secret_value())
    err = capsys.readouterr().err
    assert "sending ***" in err
    assert "horse" not in err


# --- TOML typos -------------------------------------------------------------------------------------------


def test_a_misspelt_section_is_an_error_naming_it(write_toml: WriteToml) -> None:
    write_toml('[piflo]\nurl = "http://127.0.0.1:9/piwebapi"\n')
    line = one_line(run("status"))
    assert line == ("error: setting 'config': unknown section [piflo] in the config file (did you mean [piflow]? "
                    "valid sections: [piflow], [emulator], or settings at the top level)")


def test_an_unknown_key_is_an_error_naming_it(write_toml: WriteToml) -> None:
    write_toml('[piflow]\ntargte = "./lake"\n')
    line = one_line(run("status"))
    assert line == "error: setting 'targte': unknown setting in the config file (did you mean 'target'?)"


# --- options a command would ignore are not offered -------------------------------------------------------


@pytest.mark.parametrize("args", [["sync", "--end", "*"], ["stream", "--end", "*"], ["discover", "--start", "*-1d"],
                                  ["discover", "--end", "*"], ["status", "--start", "*-1d"]])
def test_an_option_the_command_does_not_use_is_refused(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert f"No such option: {args[1]}" in result.stderr


def test_status_shows_the_points_its_filter_selects(emulator: EmulatorServer, tmp_path: Path) -> None:
    target = str(tmp_path / "lake")
    assert run("discover", "--url", emulator.url, "--target", target, "--points", "BRK.A0.*",
               "--progress", "never").exit_code == 0
    names = DeltaSink(target).read("pi_points").column("name").to_pylist()
    few = sorted(n for n in names if n.startswith("BRK.A0.PMP000001."))
    assert few
    assert len(few) < len(names)
    result = run("status", "--target", target, "--points", FEW.lower())  # PI's filters ignore case
    assert result.exit_code == 0, result.output
    assert f"{len(few)} points" in result.stdout
    shown = [n for n in names if n in result.stdout]
    assert sorted(shown) == few
    result = run("status", "--target", target, "--points", "NOTHING.*")
    assert result.exit_code == 0
    assert "no points matching 'NOTHING.*'" in result.stdout


# --- unexpected errors, failed and partial runs ------------------------------------------------------------


def test_an_unexpected_error_is_one_line_pointing_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exit_, _errors_handled(debug=False):
        raise RuntimeError("boom\n  at line two")
    assert exit_.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: unexpected RuntimeError: boom at line two (rerun with --debug to see the traceback)"

    with pytest.raises(typer.Exit), _errors_handled(debug=True):
        raise RuntimeError("boom")
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().endswith("error: unexpected RuntimeError: boom (the traceback is above)")


def test_a_logged_exception_is_one_line_unless_debugging(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    log = logging.getLogger("piflow.jobs.common")
    for tracebacks in (False, True):
        configure_logging("INFO", tracebacks=tracebacks)
        try:
            raise SinkError("append to pi_ingest_runs at ./lake/pi_ingest_runs: permission denied")
        except SinkError:
            log.exception("could not record run r1")
        err = capsys.readouterr().err
        assert ("Traceback" in err) is tracebacks
        if not tracebacks:
            assert err.count("\n") == 1
            assert err.rstrip().endswith("could not record run r1 (SinkError: append to pi_ingest_runs at "
                                         "./lake/pi_ingest_runs: permission denied)")


def test_a_failed_run_exits_1_and_is_recorded_as_failed(tmp_path: Path) -> None:
    settings = EmulatorSettings(points=10, auth=AuthSettings(mode="basic"))
    target = tmp_path / "lake"
    with EmulatorServer(settings) as locked:
        line = one_line(run("discover", "--url", locked.url, "--target", str(target), "--progress", "never"))
    assert line.startswith("error: ")
    assert "401" in line
    runs = DeltaSink(str(target)).read("pi_ingest_runs").to_pylist()
    assert [(r["job"], r["status"]) for r in runs] == [("discover", "failed")]
    assert "401" in runs[0]["message"]
    assert DeltaSink(str(target)).table("pi_points") is None


def test_a_partial_run_has_its_own_exit_code(emulator: EmulatorServer, tmp_path: Path) -> None:
    target = str(tmp_path / "lake")
    flags = ["--url", emulator.url, "--target", target, "--points", FEW, "--progress", "never"]
    assert run("discover", *flags).exit_code == 0
    gone = DeltaSink(target).read("pi_points").column("webid").to_pylist()[0]
    answer = httpx2.post(f"{emulator.base_url}/_emulator/points/delete", json={"webIds": [gone]}, timeout=10.0)
    assert answer.json()["deleted"] == [gone]
    result = run("backfill", *flags, "--start", "*-1h", "--end", "*")
    assert result.exit_code == EXIT_PARTIAL == 3, result.output
    assert "partial" in result.stdout
    runs = DeltaSink(target).read("pi_ingest_runs").to_pylist()
    assert [r["status"] for r in runs if r["job"] == "backfill"] == ["partial"]
