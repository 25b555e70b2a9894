"""Jobs asked for what cannot be read, channels that cannot be opened, lists that do not page, and the rest of
the user-facing refusals: each one line naming the setting, the window or the server answer at fault.

Jobs run against the real emulator on 127.0.0.1; channels against a closed port and a raw socket server that
answers the WebSocket upgrade wrongly; answers of the wrong shape come from the scripted server of
tests/client/conftest.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from piflow.cli import app, exit_for, run_until_signalled
from piflow.client import PiClient, PiHttp
from piflow.client.channels import ChannelUnavailableError, channel_url, open_channel, register_updates
from piflow.client.retry import RetryPolicy
from piflow.config import PiflowSettings, load_emulator_settings, load_settings, read_toml
from piflow.emulator import EmulatorSettings
from piflow.emulator.server import EmulatorServer
from piflow.errors import (
    BadResponseError,
    ConfigError,
    NetworkError,
    NotFoundError,
    PiApiError,
    ServerBusyError,
)
from piflow.jobs.af.views import plan_windows, run_view
from piflow.jobs.backfill import run_backfill
from piflow.jobs.batching import paged_items, send_batch
from tests.client.conftest import Canned, RawServer, ScriptedApp, fast_retry
from tests.servers import free_port

URL = "http://pi.test/piwebapi"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def scripted(app_: ScriptedApp, job: Callable[[PiClient], Coroutine[Any, Any, Any]]) -> Any:
    async def main() -> Any:
        async with PiClient(URL, transport=app_.transport(), retry=fast_retry(1)) as client:
            return await job(client)

    return asyncio.run(main())


def refusal(kind: type[BaseException], run: Callable[[], Any]) -> str:
    with pytest.raises(kind) as info:
        run()
    return str(info.value)


# ---- jobs asked for what cannot be read -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorSettings(points=20, seed=5, now=T0, frozen=True)) as srv:
        yield srv


def settings(srv: EmulatorServer, target: Path, **kw: Any) -> PiflowSettings:
    return PiflowSettings(url=srv.url, target=str(target), points="*", **kw)


@pytest.mark.loopback
def test_a_backfill_whose_end_is_not_after_its_start(emulator: EmulatorServer, tmp_path: Path) -> None:
    s = settings(emulator, tmp_path, start="2025-12-31T12:00:00Z", end="2025-12-31T06:00:00Z")
    assert refusal(ConfigError, lambda: asyncio.run(run_backfill(s))) == (
        "setting 'end': must be after start (2025-12-31T12:00:00+00:00 .. 2025-12-31T06:00:00+00:00)")


@pytest.mark.loopback
def test_a_backfill_that_starts_after_the_servers_now(emulator: EmulatorServer, tmp_path: Path) -> None:
    s = settings(emulator, tmp_path, start="2026-01-02", end="2026-01-03")
    assert refusal(ConfigError, lambda: asyncio.run(run_backfill(s))) == (
        "setting 'start': 2026-01-02T00:00:00+00:00 is after the server's now (2026-01-01T00:00:00+00:00): nothing "
        "to read yet")


@pytest.mark.loopback
def test_a_point_filter_that_matches_nothing_names_the_filter(emulator: EmulatorServer, tmp_path: Path) -> None:
    s = PiflowSettings(url=emulator.url, target=str(tmp_path), points="NO.SUCH.POINT*")
    assert refusal(ConfigError, lambda: asyncio.run(run_backfill(s))) == (
        "setting 'points': no PI point matches 'NO.SUCH.POINT*'")


@pytest.mark.loopback
def test_a_view_whose_end_is_before_its_start(emulator: EmulatorServer, tmp_path: Path) -> None:
    s = settings(emulator, tmp_path)
    message = refusal(ConfigError, lambda: asyncio.run(run_view(
        s, template="Pump", interval="1h", start="2025-12-31T12:00:00Z", end="2025-12-31T06:00:00Z")))
    assert message == ("setting 'end': the end 2025-12-31T06:00:00+00:00 is before the start "
                       "2025-12-31T12:00:00+00:00")


@pytest.mark.loopback
def test_a_view_of_a_database_the_server_lacks_names_the_ones_it_has(emulator: EmulatorServer,
                                                                     tmp_path: Path) -> None:
    s = settings(emulator, tmp_path)
    message = refusal(NotFoundError, lambda: asyncio.run(run_view(
        s, template="Pump", interval="1h", start="2025-12-31T00:00:00Z", end="2025-12-31T06:00:00Z",
        database="NoSuchDatabase")))
    assert message == ("asset database 'NoSuchDatabase' not found (the asset servers have: \\\\PIEMU-AF\\Plant, "
                       "\\\\PIEMU-AF\\Sandbox)")


def test_view_windows_need_a_positive_interval() -> None:
    with pytest.raises(ValueError, match="the interval must be positive"):
        plan_windows(T0, T0 + timedelta(hours=1), timedelta(0), 10)


# ---- lists that do not page, batches that fail ------------------------------------------------------------------


def test_a_list_that_ignores_start_index_is_refused_instead_of_read_forever() -> None:
    page = json.dumps({"Items": [{"WebId": "A"}, {"WebId": "B"}]}).encode()

    async def read_all(client: PiClient) -> None:
        async for _ in paged_items(client, "dataservers/S1/points", [], page_size=2, lookahead=1):
            pass

    message = refusal(PiApiError, lambda: scripted(ScriptedApp([Canned(200, page)]), read_all))
    assert message == "dataservers/S1/points: the server returned the same page again; it ignores startIndex"


def test_a_list_page_without_items_names_its_start_index() -> None:
    async def read_all(client: PiClient) -> None:
        async for _ in paged_items(client, "dataservers/S1/points", [], page_size=2, lookahead=1):
            pass

    message = refusal(PiApiError, lambda: scripted(ScriptedApp([Canned(200, b'{"Links": {}}')]), read_all))
    assert message == "dataservers/S1/points (startIndex 0): the answer has no Items list"


def test_a_batch_call_that_fails_for_another_reason_than_a_refusal_is_raised() -> None:
    # 503 is no "this server has no /batch" (404, 405, 403, 501): the failure itself is the answer.
    app_ = ScriptedApp([Canned(503, b'{"Errors": ["Service Unavailable"]}')])
    body = {"a": {"Method": "GET", "Resource": "dataservers"}}
    message = refusal(ServerBusyError, lambda: scripted(app_, lambda c: send_batch(c, body)))
    assert message == f"HTTP 503: Service Unavailable [{URL}/batch]"


def test_a_request_path_with_a_control_character_is_a_config_error() -> None:
    app_ = ScriptedApp([Canned(200, b"{}")])
    message = refusal(ConfigError, lambda: scripted(app_, lambda c: c.http.get_json("streams/a\x00b")))
    assert message.startswith(f"setting 'url': invalid URL {URL}/streams/a")
    assert "non-printable" in message
    assert app_.seen == []


# ---- channels and stream updates ---------------------------------------------------------------------------------


def open_and_close(url: str) -> None:
    async def main() -> None:
        async with PiHttp(url, retry=fast_retry(1)) as http, open_channel(http, ["W1"]):
            pass

    asyncio.run(main())


@pytest.mark.loopback
def test_a_channel_to_a_port_nobody_listens_on_is_a_network_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/piwebapi"
    message = refusal(NetworkError, lambda: open_and_close(url))
    assert message.startswith("ConnectionRefusedError: channel connection failed: ")
    assert message.endswith(f"[ws://127.0.0.1:{url.split(':')[2].split('/')[0]}/piwebapi/streamsets/channel?(1 "
                            "webIds)]")


@pytest.mark.loopback
def test_a_switch_without_an_upgrade_header_means_no_channels() -> None:
    async def main() -> str:
        async with RawServer([b"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\n\r\n"]) as srv:
            with pytest.raises(ChannelUnavailableError) as info:
                async with PiHttp(srv.url, retry=fast_retry(1)) as http, open_channel(http, ["W1"]):
                    pass
            return str(info.value)

    message = asyncio.run(main())
    assert message.startswith("the WebSocket handshake failed: InvalidUpgrade: ")


def test_a_channel_needs_a_webid() -> None:
    with pytest.raises(ValueError, match="a channel needs at least one WebID"):
        channel_url(URL, [])


def test_stream_updates_registrations_of_the_wrong_shape_or_missing_markers() -> None:
    async def register(http_app: ScriptedApp) -> dict[str, str]:
        async with PiHttp(URL, transport=http_app.transport(), retry=fast_retry(1)) as http:
            return await register_updates(http, ["A", "B"])

    odd = ScriptedApp([Canned(200, b'{"Items": "not a list"}')])
    message = refusal(BadResponseError, lambda: asyncio.run(register(odd)))
    assert message.startswith("streamsets/updates registration: unexpected answer shape: ")
    half = ScriptedApp([Canned(200, json.dumps({"Items": [{"Source": "A", "LatestMarker": "m1"}]}).encode())])
    assert refusal(BadResponseError, lambda: asyncio.run(register(half))) == (
        "stream updates registration returned no marker for 1 streams")


# ---- the CLI ---------------------------------------------------------------------------------------------------


def test_a_failed_or_partial_run_sets_the_exit_code() -> None:
    class Result:
        def __init__(self, status: str) -> None:
            self.status = status

    codes = []
    for status in ("failed", "partial"):
        with pytest.raises(typer.Exit) as info:
            exit_for(Result(status))
        codes.append(info.value.exit_code)
    assert codes == [1, 3]
    exit_for(Result("ok"))  # no exit: the command ends normally


def test_a_job_cancelled_without_a_signal_is_not_taken_for_an_interrupt() -> None:
    async def job() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        run_until_signalled(job())


def test_an_emulator_whose_own_dependency_is_missing_is_an_unexpected_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not "the emulator is not part of this build" (exit 2): a library it needs is missing, which is a fault.
    monkeypatch.delitem(sys.modules, "piflow.emulator.server", raising=False)
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = CliRunner().invoke(app, ["emulator"])
    assert result.exit_code == 1
    assert result.output.startswith("error: unexpected ModuleNotFoundError: import of uvicorn halted; None in "
                                    "sys.modules")


# ---- settings files ------------------------------------------------------------------------------------------------


def test_a_config_path_that_is_a_folder_cannot_be_read(tmp_path: Path) -> None:
    assert refusal(ConfigError, lambda: read_toml(tmp_path)) == (
        f"setting 'config': cannot read {tmp_path}: Is a directory")


def test_a_piflow_or_emulator_key_that_is_not_a_table(tmp_path: Path) -> None:
    config = tmp_path / "piflow.toml"
    config.write_text('piflow = "lake"\n')
    assert refusal(ConfigError, lambda: load_settings(config)) == "setting 'piflow': must be a table ([piflow])"
    config.write_text("emulator = 5\n")
    assert refusal(ConfigError, lambda: load_emulator_settings(config, {})) == (
        "setting 'emulator': must be a table ([emulator])")


def test_a_retry_policy_cannot_wait_a_negative_time() -> None:
    with pytest.raises(ValueError, match="base_s and cap_s must not be negative"):
        RetryPolicy(base_s=-1.0)


# ---- Spark and Unity Catalog -------------------------------------------------------------------------------------


def test_spark_side_refusals_name_what_is_wrong() -> None:
    from piflow.spark.jobs import run_catalog
    from piflow.spark.options import SourceOptions
    from piflow.spark.source import PiSource, read_partition, table_schema
    from piflow.spark.unity import Registration, register, sql_type

    assert refusal(ConfigError, lambda: table_schema("pi_nope")).startswith(
        "setting 'table': unknown table 'pi_nope'; one of [")
    opts = SourceOptions.parse({"url": "https://pi.example.com/piwebapi"})
    assert refusal(ConfigError, lambda: PiSource(opts).resolve("next blue moon", "start", T0)) == (
        "setting 'start': cannot parse PI time 'next blue moon'")
    assert refusal(ValueError, lambda: read_partition(opts, {"kind": "rows"})) == "not a piflow partition: 'rows'"
    assert refusal(SystemExit, lambda: run_catalog(None, argparse.Namespace(tables="pi_nope"))).startswith(
        "unknown catalog table 'pi_nope'; one of ")
    assert refusal(TypeError, lambda: sql_type(pa.binary())) == "no SQL type for binary"
    assert refusal(ConfigError, lambda: register(None, Registration("main", "pi"), warehouse_id="")) == (
        "setting 'warehouse_id': a SQL warehouse id is needed to create tables and set comments")
