"""The doctor's probes when the server fails them, the CLI's handling of interrupts, panics and missing parts,
and the jobs that must go on when a side table fails them.

Doctor probes run against the scripted server of tests/client/conftest.py; the CLI's last line of defence
(:func:`piflow.cli._errors_handled`) is given what Python raises on Ctrl-C and what pyo3 raises on a panic in
delta-rs; a real SIGINT is sent to this process while a job runs under :func:`run_until_signalled`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from deltalake import DeltaTable
from typer.testing import CliRunner

from piflow.cli import Interrupted, _errors_handled, _total_size, app, interrupted_line, run_until_signalled
from piflow.client import PiClient
from piflow.config import PiflowSettings
from piflow.doctor import Target, _guarded, check_data, find_point, first_contact, probe_version, read_clock
from piflow.jobs.common import server_now
from piflow.jobs.optimize import view_tables
from piflow.sinks.delta import DeltaSink
from tests.client.conftest import Canned, ScriptedApp, Seen, fast_retry

URL = "http://pi.test/piwebapi"
DATE = "Thu, 01 Jan 2026 06:00:00 GMT"


def routes(table: dict[str, Canned]) -> ScriptedApp:
    """Answers by path (below /piwebapi/; "" is the root); anything else is a 404 in PI's shape."""
    def script(seen: Seen, n: int) -> Canned:
        return table.get(seen.path.removeprefix("/piwebapi").lstrip("/"),
                         Canned(404, b'{"Errors": ["not found"]}', {"content-type": "application/json",
                                                                   "date": DATE}))

    return ScriptedApp(script)


def ok(doc: Any) -> Canned:
    return Canned(200, json.dumps(doc).encode(), {"content-type": "application/json", "date": DATE})


BUSY = Canned(503, b'{"Errors": ["Service Unavailable"]}')


def run(app_: ScriptedApp, job: Callable[[PiClient], Coroutine[Any, Any, Any]]) -> Any:
    async def main() -> Any:
        async with PiClient(URL, transport=app_.transport(), retry=fast_retry(1)) as client:
            return await job(client)

    return asyncio.run(main())


# ---- the doctor's probes ---------------------------------------------------------------------------------------


def test_first_contact_falls_back_to_the_root_where_there_is_no_userinfo() -> None:
    contact = run(routes({"": ok({"Links": {"Self": URL}})}), first_contact)
    assert (contact.body, contact.userinfo, contact.error) == ({"Links": {"Self": URL}}, False, None)


def test_first_contact_keeps_a_failure_to_report_it() -> None:
    contact = run(routes({"system/userinfo": BUSY}), first_contact)
    assert str(contact.error) == f"HTTP 503: Service Unavailable [{URL}/system/userinfo]"


def test_the_version_comes_from_system_where_system_versions_is_missing() -> None:
    app_ = routes({"system": ok({"ProductTitle": "PI Web API 2019 SP1", "ProductVersion": "1.13.0.6518"})})
    assert run(app_, probe_version) == ("1.13.0.6518", "system, PI Web API 2019 SP1")
    assert run(routes({}), probe_version) == (None, "")


def test_a_data_server_list_that_fails_is_kept_for_the_data_step() -> None:
    settings = PiflowSettings(url=URL)
    target = run(routes({"dataservers": BUSY}), lambda c: find_point(c, settings))
    assert (target.server, str(target.error)) == (None, f"HTTP 503: Service Unavailable [{URL}/dataservers]")
    step = run(routes({}), lambda c: check_data(c, settings, target))
    assert (step.verdict, step.detail) == (
        "fail", f"could not list the points of the data server: HTTP 503: Service Unavailable [{URL}/dataservers]")


def test_a_clock_that_cannot_be_read_is_kept_for_the_clock_step() -> None:
    clock = run(routes({"system/status": BUSY}), read_clock)
    assert (clock.server, clock.source, str(clock.error)) == (
        None, "", f"HTTP 503: Service Unavailable [{URL}/system/status]")


def test_reading_the_points_values_that_fails_is_a_failed_data_step() -> None:
    settings = PiflowSettings(url=URL)
    target = Target(server="PISRV01", server_webid="S1", name="SINUSOID", webid="W1")
    step = run(routes({"streams/W1/recorded": BUSY}), lambda c: check_data(c, settings, target))
    assert step.verdict == "fail"
    assert step.detail.startswith("reading recorded values of SINUSOID failed: HTTP 503: Service Unavailable "
                                  f"[{URL}/streams/W1/recorded?")


def test_a_probe_that_fails_for_any_reason_says_it_could_not_tell() -> None:
    async def broken() -> Any:
        raise RuntimeError("a bug in a probe")

    feature = asyncio.run(_guarded("channels", broken()))
    assert (feature.name, feature.available, feature.detail) == ("channels", None, "could not tell: RuntimeError")


def test_the_servers_clock_comes_from_the_date_header_where_system_status_is_refused() -> None:
    async def now_and_notes(client: PiClient) -> tuple[datetime, list[str]]:
        return await server_now(client), client.caps.notes

    when, notes = run(routes({"": ok({})}), now_and_notes)
    assert when == datetime(2026, 1, 1, 6, tzinfo=UTC)
    assert notes == ["the server refuses system/status (HTTP 404): taking the server's time from the Date header "
                     "of its answers"]


# ---- the CLI's last line of defence ---------------------------------------------------------------------------


def test_ctrl_c_outside_a_job_is_one_line_and_exit_130(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as info, _errors_handled(debug=False):
        raise KeyboardInterrupt
    assert info.value.exit_code == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_a_panic_inside_delta_rs_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    class PanicException(BaseException):  # what pyo3 raises for a Rust panic: not an Exception
        pass

    with pytest.raises(typer.Exit) as info, _errors_handled(debug=False):
        raise PanicException("called `Option::unwrap()` on a `None` value")
    assert info.value.exit_code == 1
    assert capsys.readouterr().err.strip() == (
        "error: unexpected PanicException: called `Option::unwrap()` on a `None` value (rerun with --debug to see "
        "the traceback)")


def test_other_base_exceptions_pass_through() -> None:
    with pytest.raises(GeneratorExit), _errors_handled(debug=False):
        raise GeneratorExit


def test_sigint_during_a_job_cancels_it_and_says_what_stands() -> None:
    async def job() -> None:
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
        await asyncio.sleep(60)

    with pytest.raises(Interrupted) as info:
        run_until_signalled(job())
    assert info.value.exit_code == 130
    assert interrupted_line(info.value) == ("interrupted by SIGINT; every table is as its last commit left it, and "
                                            "running the command again continues from there")


def test_optimize_stats_in_an_unexpected_shape_show_no_size() -> None:
    assert _total_size('{"totalSize": 12}') == 12
    assert _total_size("totalSize: twelve") is None


@pytest.mark.parametrize(("module", "args", "message"), [
    ("databricks.sdk", ["uc", "register", "--catalog", "main", "--schema", "pi", "--warehouse-id", "abc123"],
     "piflow uc register: needs the databricks extra (pip install 'piflow[databricks]'): "),
    ("piflow.emulator.server", ["emulator"], "piflow emulator: the emulator server is not part of this build"),
])
def test_a_part_this_installation_lacks_is_exit_2_naming_it(monkeypatch: pytest.MonkeyPatch, module: str,
                                                            args: list[str], message: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it raises ModuleNotFoundError
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(message)
    assert len(result.output.strip().splitlines()) == 1


# ---- side tables that fail a job ------------------------------------------------------------------------------


def test_optimize_leaves_out_a_table_it_cannot_read_and_says_so(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "lake"
    DeltaSink(str(target)).append("pi_ingest_runs", DeltaSink(str(target)).read("pi_ingest_runs"))
    mine = target / "plant_view" / "_delta_log"
    mine.mkdir(parents=True)
    (mine / "00000000000000000000.json").write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="piflow.jobs.optimize"):
        assert view_tables(DeltaSink(str(target))) == []
    (record,) = caplog.records
    assert record.getMessage().startswith(f"cannot open plant_view at {target}/plant_view: ")
    assert record.getMessage().endswith("; plant_view is not optimized")


def test_optimize_on_a_target_that_cannot_be_listed_optimizes_no_view(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "lake").write_text("a file, not a folder")
    with caplog.at_level(logging.WARNING, logger="piflow.jobs.optimize"):
        assert view_tables(DeltaSink(str(tmp_path / "lake"))) == []
    (record,) = caplog.records
    assert record.getMessage().startswith(f"cannot list the tables at {tmp_path}/lake: ")
    assert record.getMessage().endswith("; asset views are not optimized")


@pytest.mark.loopback
def test_a_run_that_cannot_be_recorded_is_logged_and_the_job_still_lands(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    # pi_ingest_runs exists with piflow's column names but another type for `points`: the run row cannot be
    # appended. The job's own table is written all the same, and the failure is logged with the run id.
    import pyarrow as pa
    from deltalake import write_deltalake

    from piflow import schema as contract
    from piflow.emulator import EmulatorSettings
    from piflow.emulator.server import EmulatorServer
    from piflow.jobs.discover import run_discover

    runs = contract.TABLES["pi_ingest_runs"]
    struct = pa.struct([("count", pa.int64())])
    target = tmp_path / "lake"
    write_deltalake(str(target / "pi_ingest_runs"), pa.table(
        {f.name: pa.nulls(0, struct if f.name == "points" else f.type) for f in runs}))
    with EmulatorServer(EmulatorSettings(points=20, seed=3, frozen=True)) as srv, \
            caplog.at_level(logging.ERROR, logger="piflow.jobs.runs"):
        result = asyncio.run(run_discover(PiflowSettings(url=srv.url, target=str(target), points="*")))
    assert result.status == "ok"
    assert DeltaTable(str(target / "pi_points")).to_pyarrow_table().num_rows == 20 * srv.state.settings.data_servers
    (record,) = [r for r in caplog.records if r.getMessage().startswith("could not record run")]
    assert record.getMessage() == f"could not record run {result.run_id}"
    assert record.exc_info is not None
    assert str(record.exc_info[1]).startswith(f"append to pi_ingest_runs at {target}/pi_ingest_runs: the table does "
                                              "not have the schema piflow writes (")
