"""Event frames: rate, search modes against the model's ground truth, frames closing as the clock runs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient
from tests.emulator_af_helpers import API, af_of, get, plant_webid

from piflow import webids
from piflow.emulator import EmulatorSettings, create_app
from piflow.emulator.af.eventframes import EventFrameModel, FrameInfo
from piflow.emulator.app import state_of
from piflow.pitime import TICKS_PER_SECOND, format_ticks, to_ticks

START = datetime(2026, 1, 1, tzinfo=UTC)
NOW = to_ticks(START)
H = 3600 * TICKS_PER_SECOND
D = 24 * H
OPEN = "9999-12-31T23:59:59Z"
TEMPLATE_ATTRS = {"Batch": ["Product", "Quantity", "Operator"], "Downtime": ["Reason", "Duration"],
                  "Alarm": ["Limit", "PeakValue"]}


def make_client(**settings: Any) -> TestClient:
    return TestClient(create_app(EmulatorSettings(frozen=True, now=settings.pop("now", START), **settings)))


@pytest.fixture
def client() -> Iterator[TestClient]:
    with make_client(points=1000, event_frames_per_day=240) as c:
        yield c


def ef_of(client: TestClient) -> EventFrameModel:
    return state_of(client.app).eventframes  # type: ignore[arg-type]


def search(client: TestClient, status: int = 200, /, **params: Any) -> Any:
    body = get(client, f"/assetdatabases/{plant_webid(client)}/eventframes", status, **params)
    return body["Items"] if status == 200 else body


def end_text(f: FrameInfo) -> str:
    return OPEN if f.end is None else format_ticks(f.end)


# ---- rate and ground truth -----------------------------------------------------------------------------
@pytest.mark.parametrize(("settings", "per_day"), [
    ({"points": 1000}, 400.0),  # default: 2 per equipment per day, 200 equipment
    ({"points": 1000, "event_frames_per_day": 240}, 240.0),
    ({"points": 1000, "event_frames_per_day": 100_000 / 365}, 100_000 / 365),  # the benchmark's year
])
def test_frame_rate_is_about_the_setting(settings: dict[str, Any], per_day: float) -> None:
    with make_client(**settings) as client:
        days = 20
        frames = ef_of(client).frames(NOW - days * D, NOW, NOW)
        started = [f for f in frames if f.start >= NOW - days * D]
        assert abs(len(started) - per_day * days) <= 0.03 * per_day * days
        assert all(f.start <= NOW for f in frames)
        assert len({f.webid for f in frames}) == len(frames)


def test_overlapped_default_window_matches_ground_truth(client: TestClient) -> None:
    served = search(client, maxCount=10_000)  # default: Overlapped, *-8h to *
    truth = ef_of(client).frames(NOW - 8 * H, NOW, NOW)
    assert {i["Name"] for i in served} == {f.name for f in truth}
    assert any(f.in_progress for f in truth)
    assert any(not f.in_progress for f in truth)
    by_name = {f.name: f for f in truth}
    for item in served:
        f = by_name[item["Name"]]
        assert (item["WebId"], item["Id"], item["Path"], item["TemplateName"], item["Severity"]) == (
            f.webid, f.id, f.path, f.template_name, f.severity)
        assert item["StartTime"] == format_ticks(f.start)
        assert item["EndTime"] == end_text(f)
        assert item["CategoryNames"] == list(f.category_names)
        assert item["RefElementWebIds"] == list(f.ref_element_webids)
        assert (item["IsAcknowledged"], item["CanBeAcknowledged"], item["IsAnnotated"], item["IsLocked"],
                item["AreValuesCaptured"]) == (f.is_acknowledged, f.can_be_acknowledged, f.is_annotated,
                                               f.is_locked, f.are_values_captured)
        assert item["AreValuesCaptured"] == (item["EndTime"] != OPEN)
        assert webids.parse(item["WebId"]).marker == "Fm"
        # Overlapped, checked on the served fields themselves.
        assert item["StartTime"] <= format_ticks(NOW)
        assert item["EndTime"] >= format_ticks(NOW - 8 * H)


@pytest.mark.parametrize("mode", ["None", "StartInclusive", "EndInclusive", "Inclusive", "InProgress"])
@pytest.mark.parametrize(("start", "end"), [
    (NOW - 30 * H, NOW - 20 * H), (NOW - 5 * H, NOW), (NOW - 2 * H, NOW + 3 * H),
])
def test_window_search_modes(client: TestClient, mode: str, start: int, end: int) -> None:
    truth = ef_of(client).frames(start - D, end, NOW)

    def wanted(f: FrameInfo) -> bool:
        closed = f.end is not None
        if mode == "None":  # documented: same as Overlapped
            return f.start <= end and (not closed or (f.end or 0) >= start)
        if mode == "StartInclusive":
            return start <= f.start <= end
        if mode == "EndInclusive":
            return closed and start <= (f.end or 0) <= end
        if mode == "Inclusive":
            return start <= f.start and closed and (f.end or 0) <= end
        return not closed and start <= f.start <= end

    served = search(client, searchMode=mode, startTime=format_ticks(start), endTime=format_ticks(end),
                    maxCount=10_000)
    assert sorted(i["Name"] for i in served) == sorted(f.name for f in truth if wanted(f))
    if mode == "InProgress" and end < NOW - 8 * H:
        assert served == []  # nothing that started that long ago is still open
    if (mode, end) in (("InProgress", NOW), ("Inclusive", NOW), ("StartInclusive", NOW - 20 * H)):
        assert served


@pytest.mark.parametrize(("mode", "t", "key", "newest_first", "only_open", "only_closed"), [
    ("BackwardFromStartTime", NOW - D, "start", True, False, False),
    ("ForwardFromStartTime", NOW - 2 * D, "start", False, False, False),
    ("BackwardFromEndTime", NOW - D, "end", True, False, True),
    ("ForwardFromEndTime", NOW - 2 * D, "end", False, False, True),
    ("ForwardFromEndTime", NOW - H, "end", False, False, True),
    ("BackwardInProgress", NOW, "start", True, True, False),
    ("ForwardInProgress", NOW - D, "start", False, True, False),
])
def test_directional_search_modes(client: TestClient, mode: str, t: int, key: str, newest_first: bool,
                                  only_open: bool, only_closed: bool) -> None:
    truth = ef_of(client).frames(t - 2 * D, min(NOW, t + D), NOW)

    def k(f: FrameInfo) -> int:
        return f.start if key == "start" else (f.end or 0)

    pool = [f for f in truth if (not only_open or f.in_progress) and (not only_closed or not f.in_progress)
            and (k(f) <= t if newest_first else k(f) >= t)]
    expected = sorted(pool, key=lambda f: (k(f), f.slot), reverse=newest_first)[:15]
    served = search(client, searchMode=mode, startTime=format_ticks(t), maxCount=15)
    assert [i["Name"] for i in served] == [f.name for f in expected]
    assert len(served) == min(15, len(pool))
    assert served


@pytest.mark.parametrize(("mode", "key", "newest_first", "count"), [
    ("BackwardFromStartTime", "start", True, 3000), ("BackwardFromEndTime", "end", True, 3000),
    ("BackwardFromEndTime", "end", True, 50), ("ForwardFromEndTime", "end", False, 3000),
    ("ForwardFromEndTime", "end", False, 50),
])
def test_directional_modes_across_many_slots(mode: str, key: str, newest_first: bool, count: int) -> None:
    """At ~21,600 frames a day a search walks thousands of slots and must still return the exact order."""
    with make_client(points=1000, event_frames_per_day=21_600) as client:
        t = NOW - 10 * H
        truth = ef_of(client).frames(t - 9 * H, t + 9 * H, NOW)

        def k(f: FrameInfo) -> int:
            return f.start if key == "start" else (f.end or 0)

        pool = [f for f in truth if (key == "start" or not f.in_progress)
                and (k(f) <= t if newest_first else k(f) >= t)]
        expected = sorted(pool, key=lambda f: (k(f), f.slot), reverse=newest_first)[:count]
        served = search(client, searchMode=mode, startTime=format_ticks(t), maxCount=count,
                        selectedFields="Items.Name")
        assert [i["Name"] for i in served] == [f.name for f in expected]
        assert len(served) == count


def test_directional_modes_refuse_end_time_and_sorting(client: TestClient) -> None:
    body = search(client, 400, searchMode="BackwardFromStartTime", startTime="*", endTime="*")
    assert "endTime" in body["Errors"][0]
    search(client, 400, searchMode="ForwardInProgress", startTime="*-1d", sortField="Name")
    search(client, 400, searchMode="Sideways")
    search(client, 400, startTime="not a time")
    search(client, 400, severity="Catastrophic")


# ---- the clock -----------------------------------------------------------------------------------------
def test_open_frame_closes_when_the_clock_passes_its_end(client: TestClient) -> None:
    open_frames = [f for f in ef_of(client).frames(NOW - 8 * H, NOW, NOW) if f.in_progress]
    f = open_frames[0]
    before = get(client, f"/eventframes/{f.webid}")
    assert before["EndTime"] == OPEN
    assert before["AreValuesCaptured"] is False
    state_of(client.app).clock.advance(timedelta(hours=8, seconds=1))  # type: ignore[arg-type]
    after = get(client, f"/eventframes/{f.webid}")
    assert after["StartTime"] == before["StartTime"]
    assert after["Name"] == before["Name"]
    assert after["AreValuesCaptured"] is True
    assert after["EndTime"] != OPEN
    end = to_ticks(datetime.fromisoformat(after["EndTime"].replace("Z", "+00:00")))
    assert f.start < end <= NOW + 8 * H + TICKS_PER_SECOND
    assert end - f.start <= 8 * H
    # The end was fixed all along: one second before it the frame is still open, at it closed.
    end_dt = START + timedelta(microseconds=(end - NOW) // 10)
    with make_client(points=1000, event_frames_per_day=240, now=end_dt - timedelta(seconds=1)) as early:
        assert get(early, f"/eventframes/{f.webid}")["EndTime"] == OPEN
    with make_client(points=1000, event_frames_per_day=240, now=end_dt) as late:
        assert get(late, f"/eventframes/{f.webid}")["EndTime"] == after["EndTime"]


def test_frames_that_have_not_started_do_not_exist(client: TestClient) -> None:
    later = ef_of(client).frames(NOW, NOW + 2 * H, NOW + 2 * H)
    future = [f for f in later if f.start > NOW]
    assert future
    get(client, f"/eventframes/{future[0].webid}", 404)
    assert future[0].name not in {i["Name"] for i in search(client, startTime="*-1h", endTime="*+2h")}


# ---- filters, sorting, paging --------------------------------------------------------------------------
def test_filters(client: TestClient) -> None:
    truth = ef_of(client).frames(NOW - 2 * D, NOW, NOW)
    window = {"startTime": "*-2d", "endTime": "*", "maxCount": 10_000}
    alarms = search(client, templateName="alarm", **window)
    assert sorted(i["Name"] for i in alarms) == sorted(f.name for f in truth if f.template_name == "Alarm")
    severe = client.get(f"{API}/assetdatabases/{plant_webid(client)}/eventframes",
                        params=[("severity", "Critical"), ("severity", "major"), ("startTime", "*-2d"),
                                ("maxCount", "10000")]).json()["Items"]
    assert sorted(i["Name"] for i in severe) == sorted(f.name for f in truth if f.severity in ("Critical", "Major"))
    safety = search(client, categoryName="Safety", **window)
    assert safety
    assert all(i["Severity"] == "Critical" and i["TemplateName"] == "Alarm" for i in safety)
    assert len(safety) == sum(1 for f in truth if f.severity == "Critical")
    pumps = search(client, referencedElementNameFilter="PMP*", **window)
    assert sorted(i["Name"] for i in pumps) == sorted(f.name for f in truth if f.ref_element_names[0].startswith("PMP"))
    batches = search(client, nameFilter="batch-*", **window)
    assert batches
    assert {i["TemplateName"] for i in batches} == {"Batch"}
    assert len(batches) == sum(1 for f in truth if f.template_name == "Batch")


def test_sorting_and_paging(client: TestClient) -> None:
    truth = ef_of(client).frames(NOW - D, NOW, NOW)
    by_start = sorted(truth, key=lambda f: f.start)
    pages = []
    for start in (0, 10, 20):
        pages += search(client, startTime="*-1d", sortField="StartTime", startIndex=start, maxCount=10)
    assert [i["Name"] for i in pages] == [f.name for f in by_start[:30]]
    newest = search(client, startTime="*-1d", sortField="StartTime", sortOrder="Descending", maxCount=10)
    assert [i["Name"] for i in newest] == [f.name for f in by_start[::-1][:10]]
    by_name = search(client, startTime="*-1d", maxCount=10_000)  # PI's default sort: Name, ascending
    assert [i["Name"] for i in by_name] == sorted(f.name for f in truth)
    by_end = search(client, startTime="*-1d", sortField="EndTime", maxCount=10_000)
    ends = [i["EndTime"] for i in by_end]
    assert ends == sorted(ends)  # open frames ('9999-...') last
    assert len(search(client, startTime="*-1d")) == min(1000, len(truth))


def test_a_year_of_frames_at_benchmark_rate() -> None:
    with make_client(points=1000, event_frames_per_day=100_000 / 365) as client:
        first = search(client, startTime="*-365d", sortField="StartTime", maxCount=1000)
        assert len(first) == 1000
        assert first[0]["StartTime"] >= format_ticks(NOW - 365 * D - 8 * H)
        assert len(search(client, startTime="*-365d")) == 1000  # sorted by name: all ~100k are considered


def test_a_sorted_search_over_too_many_frames_is_refused() -> None:
    with make_client(points=1000, event_frames_per_day=240, max_returned_items=1000) as client:
        body = search(client, 400, startTime="*-30d")
        assert "maximum" in body["Errors"][0]
        assert len(search(client, startTime="*-30d", sortField="StartTime")) == 1000


# ---- attributes, references, identities ----------------------------------------------------------------
def test_frame_attributes_carry_their_values(client: TestClient) -> None:
    truth = ef_of(client).frames(NOW - D, NOW, NOW)
    af = af_of(client)
    for template, names in TEMPLATE_ATTRS.items():
        f = next(x for x in truth if x.template_name == template)
        served = get(client, f"/eventframes/{f.webid}/attributes")["Items"]
        assert [a["Name"] for a in served] == names
        assert {a["Name"]: a["Value"]["Value"] for a in served} == f.attributes
        assert all(a["Value"]["Timestamp"] == format_ticks(f.start) for a in served)
        refs = af.element_attributes(f.webid)
        assert refs is not None
        assert [(r.webid, r.static_value, r.point) for r in refs] == [
            (a["WebId"], a["Value"]["Value"], None) for a in served]
        for a in served:
            ref = af.resolve_attribute(a["WebId"])
            assert ref is not None
            assert ref.static_value == a["Value"]["Value"]
            one = get(client, f"/attributes/{a['WebId']}")
            assert one["Links"]["EventFrame"].endswith(f.webid)
            assert get(client, "/attributes", path=a["Path"])["WebId"] == a["WebId"]
    downtime = next(x for x in truth if x.template_name == "Downtime" and not x.in_progress)
    assert downtime.end is not None
    assert downtime.attributes["Duration"] == round((downtime.end - downtime.start) / (60 * TICKS_PER_SECOND), 2)


def test_frames_reference_equipment_elements(client: TestClient) -> None:
    truth = ef_of(client).frames(NOW - 3 * D, NOW, NOW)
    f = truth[0]
    elem = get(client, f"/elements/{f.ref_element_webids[0]}")
    assert elem["Name"] == f.ref_element_names[0]
    assert elem["TemplateName"] in (
        "Pump", "Compressor", "HeatExchanger", "Tank", "Boiler", "Fan", "Valve", "Motor")
    assert [e["WebId"] for e in get(client, f"/eventframes/{f.webid}/referencedelements")["Items"]] == [elem["WebId"]]
    mine = get(client, f"/elements/{elem['WebId']}/eventframes", startTime="*-3d", maxCount=10_000)["Items"]
    assert sorted(i["Name"] for i in mine) == sorted(x.name for x in truth if x.equipment == f.equipment)
    assert all(i["RefElementWebIds"] == [elem["WebId"]] for i in mine)
    site = get(client, "/elements", path="\\\\PIEMU-AF\\Plant\\Enterprise\\BRK")
    assert get(client, f"/elements/{site['WebId']}/eventframes", startTime="*-3d")["Items"] == []


def test_a_removed_element_is_still_referenced_by_its_frames(client: TestClient) -> None:
    f = ef_of(client).frames(NOW - D, NOW, NOW)[0]
    ref = f.ref_element_webids[0]
    af_of(client).remove_element(ref)
    get(client, f"/elements/{ref}", 404)
    assert get(client, f"/eventframes/{f.webid}")["RefElementWebIds"] == [ref]
    assert get(client, f"/eventframes/{f.webid}/referencedelements")["Items"] == []
    names = {i["Name"] for i in search(client, startTime="*-1d", maxCount=10_000)}
    assert f.name in names


def test_frame_webid_forms_and_paths(client: TestClient) -> None:
    f = ef_of(client).frames(NOW - D, NOW, NOW)[5]
    guid = webids.parse(f.webid).guid
    assert guid is not None
    assert get(client, f"/eventframes/I1Fm{webids.encode_guid(guid)}")["WebId"] == f.webid
    assert get(client, f"/eventframes/{webids.path_only('Fm', f.path)}")["WebId"] == f.webid
    assert get(client, "/eventframes", path=f.path)["WebId"] == f.webid
    get(client, "/eventframes", 404, path=f.path.replace(f.name, f.name[:-1] + "x"))
    get(client, "/eventframes/garbage", 404)
    get(client, f"/eventframes/{f.ref_element_webids[0]}", 404)


def test_sandbox_has_no_frames_and_a_removed_plant_has_none_to_serve(client: TestClient) -> None:
    sandbox = get(client, "/assetdatabases", path="\\\\PIEMU-AF\\Sandbox")
    assert get(client, f"/assetdatabases/{sandbox['WebId']}/eventframes", startTime="*-10d")["Items"] == []
    f = ef_of(client).frames(NOW - D, NOW, NOW)[0]
    db = plant_webid(client)
    af_of(client).remove_database("Plant")
    get(client, f"/assetdatabases/{db}/eventframes", 404)
    get(client, f"/eventframes/{f.webid}", 404)
