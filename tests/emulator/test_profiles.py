"""Server profiles over real sockets: every switch degrades the emulator as a real deployment would, and the
complete profile does not degrade. Expectations come from a complete emulator built from the same settings,
not from the code under test.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from tests.servers import free_port
from typer.testing import CliRunner
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from piflow.cli import app as cli_app
from piflow.config import load_emulator_settings
from piflow.emulator import EmulatorSettings
from piflow.emulator.profile import omitted_ids
from piflow.emulator.server import EmulatorServer, exposure_warning, is_loopback
from piflow.emulator.settings import PROFILES, ProfileSettings

pytestmark = pytest.mark.loopback

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TIMEOUT = 10.0  # a guard against a hung request; never an assertion on time
NOT_FOUND = {"Errors": ["Not Found"]}
Serve = Callable[..., "Api"]


class Api:
    """A server and an httpx2 client on its PI Web API base (relative paths are under ``/piwebapi``)."""

    def __init__(self, srv: EmulatorServer, client: httpx2.Client) -> None:
        self.srv, self.http = srv, client

    def get(self, route: str, /, **params: Any) -> httpx2.Response:
        return self.http.get(route if "://" in route else f"{self.srv.url}/{route}", params=params or None)

    def post(self, route: str, body: Any = None, /, **params: Any) -> httpx2.Response:
        return self.http.post(f"{self.srv.url}/{route}", json=body, params=params or None,
                              headers={"X-Requested-With": "test"})

    def point(self, i: int) -> str:
        return self.srv.state.model.point(0, i).webid


@pytest.fixture
def serve() -> Iterator[Serve]:
    with ExitStack() as stack:
        def make(profile: ProfileSettings | str = "complete", **settings: Any) -> Api:
            srv = stack.enter_context(EmulatorServer(EmulatorSettings(
                points=60, seed=7, now=NOW, frozen=True, profile=profile, **settings)))
            return Api(srv, stack.enter_context(httpx2.Client(timeout=TIMEOUT)))

        yield make


# ---- the profiles ------------------------------------------------------------------------------------------

def test_named_profiles_set_what_their_names_say() -> None:
    assert list(PROFILES) == ["complete", "no-status", "no-batch", "partial-batch", "no-streamsets", "no-push",
                              "no-selected-fields", "low-cap", "links-paging", "old", "minimal"]
    assert PROFILES["complete"] == ProfileSettings()
    assert PROFILES["no-push"] == ProfileSettings(channels=False, stream_updates=False)
    assert PROFILES["old"] == ProfileSettings(version="1.10.0.4020", stream_updates=False, selected_fields=False)
    assert PROFILES["minimal"] == ProfileSettings(
        system_status=False, batch="off", streamsets=False, channels=False, stream_updates=False,
        selected_fields=False, max_count_cap=250, list_paging="links", version="1.10.0.4020")
    assert EmulatorSettings().profile == ProfileSettings()
    assert EmulatorSettings(profile="low-cap").profile.max_count_cap == 250
    with pytest.raises(ValueError, match=r"unknown profile .bogus. .*valid: complete, .*minimal"):
        EmulatorSettings(profile="bogus")


def test_the_toml_table_names_a_profile_and_the_flag_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "emu.toml"
    cfg.write_text('[emulator]\npoints = 10\nprofile = "minimal"\n')
    assert load_emulator_settings(cfg, {}).profile == PROFILES["minimal"]
    assert load_emulator_settings(cfg, {"profile": "no-batch"}).profile == PROFILES["no-batch"]
    cfg.write_text('[emulator]\n[emulator.profile]\nbatch = "partial"\nversion = "1.12.0.1"\n')
    assert load_emulator_settings(cfg, {}).profile == ProfileSettings(batch="partial", version="1.12.0.1")


# ---- system ------------------------------------------------------------------------------------------------

def test_system_status_missing(serve: Serve) -> None:
    complete, degraded = serve(), serve("no-status")
    assert complete.get("system/status").status_code == 200
    r = degraded.get("system/status")
    assert r.status_code == 404
    assert r.json() == NOT_FOUND == degraded.get("no/such/route").json()  # as if the route did not exist
    assert degraded.get("system").status_code == 200


def test_version_reported_by_system_and_system_versions(serve: Serve) -> None:
    complete, old = serve(), serve("old")
    assert complete.get("system").json()["ProductVersion"] == "1.19.1.16"
    assert complete.get("system").json()["Links"]["Versions"] == f"{complete.srv.url}/system/versions"
    versions = complete.get("system/versions").json()
    assert versions["OSIsoft.REST.Core"] == {"FullVersion": "1.19.1.16", "MajorMinorRevision": "1.19.1",
                                             "Build": "16"}
    assert "OSIsoft.REST.StreamUpdates" in versions
    assert old.get("system").json()["ProductVersion"] == "1.10.0.4020"
    old_versions = old.get("system/versions").json()
    assert {v["FullVersion"] for v in old_versions.values()} == {"1.10.0.4020"}
    assert "OSIsoft.REST.StreamUpdates" not in old_versions  # the old profile has no stream updates


# ---- batch -------------------------------------------------------------------------------------------------

def _value_request(api: Api, i: int) -> dict[str, Any]:
    return {"Method": "GET", "Resource": f"{api.srv.url}/streams/{api.point(i)}/value"}


def test_batch_off(serve: Serve) -> None:
    body = {"a": _value_request(serve(), 0)}
    assert serve().post("batch", body).status_code == 207
    r = serve("no-batch").post("batch", body)
    assert r.status_code == 404
    assert r.json() == NOT_FOUND


def test_which_ids_a_partial_batch_omits() -> None:
    assert omitted_ids(["a"]) == set()
    assert omitted_ids(["b", "a"]) == {"b"}
    assert omitted_ids(["a", "b", "c"]) == {"c"}
    assert omitted_ids([str(i) for i in range(1, 10)]) == {"3", "6", "9"}
    assert omitted_ids(["g", "f", "e", "d", "c", "b", "a"]) == {"c", "f"}


def test_partial_batch_omits_every_third_id_and_answers_the_rest(serve: Serve) -> None:
    complete, partial = serve(), serve("partial-batch")
    path = complete.srv.state.model.point(0, 3).path

    def batch(api: Api) -> dict[str, Any]:
        body: dict[str, Any] = {rid: _value_request(api, i) for i, rid in enumerate("abefg")}
        # "c" (omitted) is the parent of "d" (answered): the omitted request still ran
        body["c"] = {"Method": "GET", "Resource": f"{api.srv.url}/points?path={path}"}
        body["d"] = {"Method": "GET", "ParentIds": ["c"], "Parameters": ["$.c.Content.WebId"],
                     "Resource": f"{api.srv.url}/streams/{{0}}/recorded?startTime=*-1h&maxCount=5"}
        r = api.post("batch", body)
        assert r.status_code == 207
        answer: dict[str, Any] = r.json()
        return answer

    full, part = batch(complete), batch(partial)
    assert sorted(full) == list("abcdefg")
    assert sorted(part) == list("abdeg")  # sorted ids a..g: the 3rd (c) and the 6th (f) are left out
    for rid in part:
        assert part[rid]["Status"] == 200
        assert part[rid]["Content"] == full[rid]["Content"]
    assert len(part["d"]["Content"]["Items"]) == 5
    two = partial.post("batch", {"x": _value_request(partial, 0), "y": _value_request(partial, 1)}).json()
    assert list(two) == ["x"]
    assert list(partial.post("batch", {"x": _value_request(partial, 0)}).json()) == ["x"]


# ---- stream sets, channels, stream updates --------------------------------------------------------------

def test_streamsets_missing(serve: Serve) -> None:
    complete, degraded = serve(), serve("no-streamsets")
    ids = [complete.point(0), complete.point(1)]
    assert complete.get("streamsets/recorded", webId=ids, startTime="*-1h").status_code == 200
    assert complete.get("streamsets/value", webId=ids).status_code == 200
    for path in ("streamsets/recorded", "streamsets/value", "streamsets/end"):
        r = degraded.get(path, webId=ids, startTime="*-1h")
        assert (r.status_code, r.json()) == (404, NOT_FOUND)
    assert degraded.post("streamsets/updates", webId=ids).status_code == 404
    assert _channel_status(complete, f"streamsets/channel?webId={ids[0]}") == 101
    assert _channel_status(degraded, f"streamsets/channel?webId={ids[0]}") == 404
    assert degraded.get(f"streams/{ids[0]}/recorded", startTime="*-1h").status_code == 200  # streams remain


def _channel_status(api: Api, path: str) -> int:
    """101 when the channel opens, else the status the handshake was refused with."""
    try:
        with connect(f"{api.srv.ws_url}/{path}", open_timeout=TIMEOUT) as ws:
            return ws.response.status_code if ws.response is not None else 0
    except InvalidStatus as exc:
        return exc.response.status_code


def test_channels_refused_before_accept(serve: Serve) -> None:
    complete, degraded = serve(), serve("no-push")
    w = complete.point(0)
    for path in (f"streams/{w}/channel", f"streamsets/channel?webId={w}"):
        assert _channel_status(complete, path) == 101
        assert _channel_status(degraded, path) == 403


def test_stream_updates_missing(serve: Serve) -> None:
    complete, degraded = serve(), serve("no-push")
    w = complete.point(0)
    registered = complete.post(f"streams/{w}/updates")
    assert registered.status_code == 200
    marker = registered.json()["LatestMarker"]
    assert complete.get(f"streams/updates/{marker}").status_code == 200
    assert complete.post("streamsets/updates", webId=[w]).status_code == 200
    for r in (degraded.post(f"streams/{w}/updates"), degraded.get(f"streams/updates/{marker}"),
              degraded.post("streamsets/updates", webId=[w]), degraded.get("streamsets/updates", marker=marker)):
        assert (r.status_code, r.json()) == (404, NOT_FOUND)  # not "unknown marker": the route is missing
    assert degraded.get(f"streams/{w}/recorded").status_code == 200


# ---- selectedFields ----------------------------------------------------------------------------------------

def test_selected_fields_ignored(serve: Serve) -> None:
    complete, degraded = serve(), serve("no-selected-fields")
    w = complete.point(0)
    params = {"startTime": "*-1h", "selectedFields": "Items.Timestamp"}
    trimmed = complete.get(f"streams/{w}/recorded", **params).json()
    assert trimmed["Items"]
    assert all(set(v) == {"Timestamp"} for v in trimmed["Items"])
    whole = degraded.get(f"streams/{w}/recorded", **params).json()
    assert whole == complete.get(f"streams/{w}/recorded", startTime="*-1h").json()
    assert {"Timestamp", "Value", "Good"} <= set(whole["Items"][0])
    assert set(complete.get(f"points/{w}", selectedfields="Name").json()) == {"Name"}
    assert degraded.get(f"points/{w}", selectedfields="Name").json() == degraded.get(f"points/{w}").json()


# ---- the lower maxCount cap --------------------------------------------------------------------------------

def test_max_count_cap_truncates_recorded_pages(serve: Serve) -> None:
    complete, capped = serve(), serve("low-cap")
    w = [complete.point(i) for i in range(3)]
    window = {"startTime": "*-10d", "endTime": "*", "maxCount": 1000}
    full = complete.get(f"streams/{w[0]}/recorded", **window).json()["Items"]
    assert len(full) == 1000  # the complete server gives what maxCount asks for
    assert capped.get(f"streams/{w[0]}/recorded", **window).json()["Items"] == full[:250]
    assert capped.get(f"streams/{w[0]}/recorded", **{**window, "maxCount": 100}).json()["Items"] == full[:100]
    newest_first = {"startTime": "*", "endTime": "*-10d", "maxCount": 1000}
    full_back = complete.get(f"streams/{w[0]}/recorded", **newest_first).json()["Items"]
    assert capped.get(f"streams/{w[0]}/recorded", **newest_first).json()["Items"] == full_back[:250]

    full_set = complete.get("streamsets/recorded", webId=w, **window).json()["Items"]
    capped_set = capped.get("streamsets/recorded", webId=w, **window).json()["Items"]
    assert [len(s["Items"]) for s in full_set] == [1000, 1000, 1000]
    assert [s["Items"] for s in capped_set] == [s["Items"][:250] for s in full_set]

    element = _first_element_with_streams(complete)
    full_el = complete.get(f"streamsets/{element}/recorded", **window).json()["Items"]
    capped_el = capped.get(f"streamsets/{element}/recorded", **window).json()["Items"]
    assert max(len(s["Items"]) for s in full_el) > 250
    assert [s["Items"] for s in capped_el] == [s["Items"][:250] for s in full_el]


def _first_element_with_streams(api: Api) -> str:
    db = _plant_database(api)
    for e in api.get(f"assetdatabases/{db}/elements", searchFullHierarchy="true").json()["Items"]:
        attrs = api.get(f"elements/{e['WebId']}/attributes").json()["Items"]
        if any(a["DataReferencePlugIn"] == "PI Point" for a in attrs):
            return str(e["WebId"])
    raise AssertionError("no element has a PI point attribute")


def _plant_database(api: Api) -> str:
    server = api.get("assetservers").json()["Items"][0]
    return str(api.get("assetdatabases", path=f"\\\\{server['Name']}\\Plant").json()["WebId"])


# ---- links paging ------------------------------------------------------------------------------------------

def _by_links(api: Api, path: str, params: dict[str, Any]) -> tuple[list[str], int]:
    """Every item's WebId following Links.Next from the first page, and how many pages that took."""
    page = api.get(path, **params).json()
    ids, pages = [i["WebId"] for i in page["Items"]], 1
    while "Next" in page["Links"]:
        nxt = page["Links"]["Next"]
        assert nxt.startswith(f"{api.srv.url}/")
        assert "continuation=" in nxt
        page = api.get(nxt).json()
        ids += [i["WebId"] for i in page["Items"]]
        pages += 1
        assert pages < 1000, "Links.Next does not end"
    return ids, pages


def _by_start_index(api: Api, path: str, params: dict[str, Any], count: int) -> list[str]:
    ids: list[str] = []
    while True:
        page = api.get(path, **{**params, "startIndex": len(ids), "maxCount": count}).json()
        assert page["Links"] == {}  # start_index paging never says what follows
        ids += [i["WebId"] for i in page["Items"]]
        if len(page["Items"]) < count:
            return ids


def test_links_paging_visits_every_item_once_in_start_index_order(serve: Serve) -> None:
    complete, linked = serve(), serve("links-paging")
    server = complete.get("dataservers").json()["Items"][0]["WebId"]
    db = _plant_database(complete)
    element = _first_element_with_streams(complete)
    lists: list[tuple[str, dict[str, Any]]] = [
        (f"dataservers/{server}/points", {}),
        (f"dataservers/{server}/points", {"nameFilter": "*A0*"}),
        ("points/search", {"query": "tag:=*"}),
        (f"assetdatabases/{db}/elements", {"searchFullHierarchy": "true"}),
        ("elements/search", {"databaseWebId": db, "query": "*"}),
        (f"elements/{element}/attributes", {"searchFullHierarchy": "true"}),
        (f"assetdatabases/{db}/eventframes", {"startTime": "*-3d", "endTime": "*"}),
    ]
    for path, params in lists:
        expected = _by_start_index(complete, path, params, 7)
        assert len(expected) > 7, path  # more than one page, or the test says nothing
        assert len(set(expected)) == len(expected), path
        ids, pages = _by_links(linked, path, {**params, "maxCount": 7})
        assert ids == expected, path
        assert pages == -(-len(expected) // 7), path  # no empty last page, even when the last is full
        # startIndex is ignored: the first page is the first page
        first = linked.get(path, **params, maxCount=7, startIndex=14).json()["Items"]
        assert [i["WebId"] for i in first] == expected[:7], path


def test_links_paging_pages_the_short_lists_and_ends(serve: Serve) -> None:
    complete, linked = serve(), serve("links-paging")
    server = complete.get("assetservers").json()["Items"][0]
    expected = [d["WebId"] for d in complete.get(f"assetservers/{server['WebId']}/assetdatabases").json()["Items"]]
    assert len(expected) > 1
    assert _by_links(linked, f"assetservers/{server['WebId']}/assetdatabases", {"maxCount": 1}) == (
        expected, len(expected))
    assert _by_links(linked, "assetservers", {}) == ([server["WebId"]], 1)
    everything = linked.get(f"dataservers/{complete.get('dataservers').json()['Items'][0]['WebId']}/points")
    assert len(everything.json()["Items"]) == 60
    assert everything.json()["Links"] == {}  # one page held them all: no Next


def test_a_foreign_or_broken_continuation_is_refused(serve: Serve) -> None:
    linked = serve("links-paging")
    server = linked.get("dataservers").json()["Items"][0]["WebId"]
    nxt = linked.get(f"dataservers/{server}/points", maxCount=5).json()["Links"]["Next"]
    token = nxt.split("continuation=")[1]
    assert linked.get(f"dataservers/{server}/points", maxCount=5, continuation=token).status_code == 200
    for bad in (linked.get(f"dataservers/{server}/points", maxCount=5, nameFilter="X*", continuation=token),
                linked.get("points/search", query="tag:=*", continuation=token),
                linked.get(f"dataservers/{server}/points", continuation="not-a-token")):
        assert bad.status_code == 400
        assert "continuation" in bad.json()["Errors"][0]


# ---- the Date header ---------------------------------------------------------------------------------------

def test_date_header_follows_the_virtual_clock(serve: Serve) -> None:
    api = serve()
    for r in (api.get("system"), api.get("no/such/route"), api.http.get(f"{api.srv.base_url}/_emulator/stats")):
        assert parsedate_to_datetime(r.headers["Date"]) == NOW
        assert len(r.headers.get_list("Date")) == 1  # uvicorn's wall-clock Date is off
    api.srv.state.clock.advance(timedelta(hours=3, seconds=7))
    assert parsedate_to_datetime(api.get("system").headers["Date"]) == NOW + timedelta(hours=3, seconds=7)
    with connect(f"{api.srv.ws_url}/streams/{api.point(0)}/channel", open_timeout=TIMEOUT) as ws:
        assert ws.response is not None
        assert parsedate_to_datetime(ws.response.headers["Date"]) == NOW + timedelta(hours=3, seconds=7)


def test_no_date_header_at_all(serve: Serve) -> None:
    api = serve(ProfileSettings(date_header=False))
    for r in (api.get("system"), api.get("no/such/route"), api.post("batch", {"a": _value_request(api, 0)})):
        assert "Date" not in r.headers
    sub = api.post("batch", {"a": _value_request(api, 0)}).json()["a"]
    assert "Date" not in sub["Headers"]


# ---- the CLI -----------------------------------------------------------------------------------------------

def test_cli_refuses_an_unknown_profile_in_one_line() -> None:
    result = CliRunner().invoke(cli_app, ["emulator", "--profile", "bogus"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "unknown profile 'bogus'" in lines[0]
    assert "minimal" in lines[0]
    assert "links-paging" in lines[0]
    assert "Traceback" not in result.output


def test_which_hosts_are_loopback() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host)
        assert exposure_warning(host) is None
    for host in ("0.0.0.0", "::", "192.168.1.20", "pi-emulator.example.com"):
        warning = exposure_warning(host)
        assert warning is not None
        assert "\n" not in warning
        assert "/_emulator" in warning
        assert "127.0.0.1" in warning



def test_cli_warns_when_bound_beyond_loopback() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "piflow", "emulator", "--host", "0.0.0.0", "--port", str(port),
                             "--points", "10", "--profile", "minimal"],
                            env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60  # a guard, not an assertion on speed
        while True:
            try:
                r = httpx2.get(f"http://127.0.0.1:{port}/piwebapi/system", timeout=5)
                break
            except httpx2.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline, "the emulator did not start listening"
                time.sleep(0.1)
        assert r.json()["ProductVersion"] == "1.10.0.4020"  # --profile reached the server
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], TIMEOUT)
        assert ready, "nothing on stderr"
        line = proc.stderr.readline().decode()
        assert line.startswith("warning: --host 0.0.0.0")
        assert "/_emulator" in line
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # waits, and closes the stderr pipe
