"""PiClient against the emulator app in-process: discovery, paging, WebIDs, raw recorded pages, batch.

Expected values come from the emulator's data model (``state_of(app).model``), never from the client.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from piflow.client import PiClient, PiHttp
from piflow.emulator import state_of
from piflow.errors import BadRequestError, ConflictError, NotFoundError, PiApiError, TooManyItemsError
from piflow.pitime import to_ticks
from tests.client.conftest import (
    EMU_URL,
    NOW,
    Canned,
    ScriptedApp,
    emulator_settings,
    emulator_transport,
    fast_retry,
)

pytestmark = pytest.mark.timeout(60)


def emulator_client(points: int = 50, **settings: Any) -> tuple[Any, PiClient]:
    app, transport = emulator_transport(emulator_settings(points=points).model_copy(update=settings))
    return app, PiClient(EMU_URL, transport=transport, retry=fast_retry())


# ---- discovery -------------------------------------------------------------------------------------------------
async def test_system_status_and_data_servers() -> None:
    app, pi = emulator_client()
    model = state_of(app).model
    async with pi:
        status = await pi.system_status()
        assert "State" in status
        servers = await pi.dataservers()
        assert [s["Name"] for s in servers] == [model.server(0).name]
        srv = await pi.dataserver_by_name(model.server(0).name)
        assert srv["WebId"] == model.server(0).webid
        sent = pi.http.requests
        assert (await pi.dataserver_by_name(model.server(0).name.lower()))["WebId"] == srv["WebId"]
        assert pi.http.requests == sent  # cached
        with pytest.raises(NotFoundError):
            await pi.dataserver_by_name("NOSUCHSERVER")


async def test_iter_points_pages_past_the_first_thousand() -> None:
    app, pi = emulator_client(points=2500)
    model = state_of(app).model
    async with pi:
        before = pi.http.requests
        points = [p async for p in pi.iter_points(model.server(0).webid)]
        assert pi.http.requests - before == 3  # 1000 + 1000 + 500
    assert len(points) == 2500
    assert len({p["WebId"] for p in points}) == 2500
    assert {p["Name"] for p in points} == {model.point(0, i).name for i in range(2500)}


async def test_iter_points_with_an_exact_multiple_of_the_page_size_ends_on_an_empty_page() -> None:
    app, pi = emulator_client(points=2500)
    async with pi:
        points = [p async for p in pi.iter_points(state_of(app).model.server(0).webid, page_size=500)]
        assert len(points) == 2500
        assert pi.http.requests == 6


async def test_iter_points_name_filter() -> None:
    app, pi = emulator_client(points=200)
    model = state_of(app).model
    name = model.point(0, 7).name
    prefix = name.rsplit(".", 1)[0]
    async with pi:
        got = {p["Name"] async for p in pi.iter_points(model.server(0).webid, name_filter=prefix + ".*")}
    assert name in got
    assert got == {model.point(0, i).name for i in range(200) if model.point(0, i).name.startswith(prefix + ".")}


async def test_iter_list_refuses_a_server_that_ignores_start_index() -> None:
    page = orjson.dumps({"Items": [{"WebId": f"W{i}"} for i in range(3)]})
    app = ScriptedApp([Canned(200, page)])
    async with PiClient("http://pi.test", transport=app.transport()) as pi:
        with pytest.raises(PiApiError, match="startIndex"):
            [x async for x in pi.iter_list("dataservers/X/points", page_size=3)]
    assert [dict(s.query)["startIndex"] for s in app.seen] == ["0", "3"]


# ---- points and WebIDs -----------------------------------------------------------------------------------------
async def test_point_by_path_is_cached_and_webids_are_computed_or_resolved() -> None:
    app, pi = emulator_client()
    spec = state_of(app).model.point(0, 3)
    async with pi:
        computed = await pi.webid_for_path(spec.path)
        assert computed == spec.path_webid
        assert pi.http.requests == 0  # PathOnly WebIDs need no server
        point = await pi.point_by_path(spec.path)
        assert point["Name"] == spec.name
        assert await pi.webid_for_path(spec.path, resolve=True) == spec.webid
        await pi.point_by_path(spec.path.lower())
        assert pi.http.requests == 1
        with pytest.raises(NotFoundError):
            await pi.point_by_path(f"\\\\{spec.server.name}\\NO.SUCH.TAG")


async def test_points_multiple_reports_each_identifier() -> None:
    app, pi = emulator_client()
    model = state_of(app).model
    ids = [model.point(0, 1).webid, model.point(0, 2).path_webid, "P1DPUE5PU1VSVkVSXE5PVEFH"]
    async with pi:
        items = await pi.points_multiple(ids, chunk_size=2)
        assert pi.http.requests == 2
    assert len(items) == 3
    assert items[0]["Object"]["Name"] == model.point(0, 1).name
    assert items[1]["Object"]["Name"] == model.point(0, 2).name
    assert [i["Identifier"] for i in items] == ids
    assert items[2]["Object"] is None
    assert items[2]["Exception"]["Errors"]


# ---- recorded values as raw bytes -------------------------------------------------------------------------------
async def test_recorded_bytes_covers_the_window_asked_for() -> None:
    app, pi = emulator_client()
    state = state_of(app)
    spec = state.model.point(0, 0)
    start, end = NOW - timedelta(hours=1), NOW
    expected = state.model.events(spec, to_ticks(start), to_ticks(end), state.clock.now_ticks())
    async with pi:
        raw = await pi.recorded_bytes(spec.path_webid, start, end, max_count=10_000)
        slim = await pi.recorded_bytes(spec.webid, "*-1h", "*", max_count=10_000,
                                       selected_fields="Items.Timestamp;Items.Value")
    items = orjson.loads(raw)["Items"]
    assert len(items) == len(expected) > 0
    assert {"Timestamp", "Value", "Good"} <= set(items[0])
    slim_items = orjson.loads(slim)["Items"]
    assert len(slim_items) == len(expected)
    assert set(slim_items[0]) == {"Timestamp", "Value"}
    assert [i["Timestamp"] for i in slim_items] == [i["Timestamp"] for i in items]


async def test_streamset_recorded_page_repeats_web_id() -> None:
    app, pi = emulator_client()
    model = state_of(app).model
    specs = [model.point(0, i) for i in (0, 5, 9)]
    async with pi:
        page = await pi.streamset_recorded_page([p.webid for p in specs], NOW - timedelta(hours=6), NOW,
                                                max_count=5)
    assert [s.Name for s in page.Items] == [p.name for p in specs]
    assert all(0 < len(s.Items) <= 5 for s in page.Items)


async def test_unknown_webid_is_not_found_and_not_retried() -> None:
    _, pi = emulator_client()
    async with pi:
        with pytest.raises(NotFoundError) as info:
            await pi.recorded_bytes("P1DPUE5PU1VSVkVSXE5PVEFH", "*-1h", "*")
        assert info.value.status == 404
        assert info.value.errors
        assert pi.http.requests == 1


async def test_over_max_returned_items_is_too_many_items() -> None:
    app, pi = emulator_client(max_returned_items=100)
    model = state_of(app).model
    async with pi:
        with pytest.raises(TooManyItemsError) as info:
            await pi.streamset_recorded_page([model.point(0, i).webid for i in range(10)],
                                             NOW - timedelta(days=1), NOW, max_count=1000)
        assert any("is greater than the maximum allowed" in e for e in info.value.errors)
        assert pi.http.requests == 1


async def test_a_bad_parameter_is_a_bad_request() -> None:
    app, pi = emulator_client()
    async with pi:
        with pytest.raises(BadRequestError):
            await pi.recorded_bytes(state_of(app).model.point(0, 0).webid, "not a time", "*")


# ---- batch -----------------------------------------------------------------------------------------------------
async def test_batch_gives_one_status_per_request() -> None:
    app, pi = emulator_client()
    spec = state_of(app).model.point(0, 4)
    missing = f"\\\\{spec.server.name}\\NO.SUCH.TAG"
    async with pi:
        answer = await pi.batch({
            "point": {"Method": "GET", "Resource": f"points?path={spec.path}"},
            "values": {"Method": "GET", "ParentIds": ["point"], "Parameters": ["$.point.Content.WebId"],
                       "Resource": "streams/{0}/recorded?startTime=*-1h&endTime=*&selectedFields=Items.Value"},
            "missing": {"Method": "GET", "Resource": f"points?path={missing}"},
            "orphan": {"Method": "GET", "ParentIds": ["missing"], "Parameters": ["$.missing.Content.WebId"],
                       "Resource": "streams/{0}/value"},
        })
        assert pi.http.requests == 1
    assert {k: v.status for k, v in answer.items()} == {"point": 200, "values": 200, "missing": 404,
                                                         "orphan": 409}
    answer["point"].raise_for_status()
    assert answer["point"].content["Name"] == spec.name
    assert len(answer["values"].content["Items"]) > 0
    with pytest.raises(NotFoundError) as info:
        answer["missing"].raise_for_status(point=missing)
    assert info.value.point == missing
    with pytest.raises(ConflictError):
        answer["orphan"].raise_for_status()


async def test_batch_needs_and_sends_the_csrf_header() -> None:
    """The emulator refuses a POST without X-Requested-With; PiHttp always sends it."""
    _, transport = emulator_transport(emulator_settings())
    async with PiHttp(EMU_URL, transport=transport) as http:
        reply = await http.post_json("batch", {"a": {"Method": "GET", "Resource": "assetservers"}})
    assert reply["a"]["Status"] == 200
