"""The emulator's data endpoints against PI Web API semantics (shapes, defaults, limits, errors).

Expected values come from the data model (``Model.events`` and the point specs) and from ``piflow.pitime``,
never from the endpoints themselves; the app runs in-process (starlette TestClient) with a frozen clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from piflow import webids
from piflow.emulator import catalog, query, serialize
from piflow.emulator.model import (
    DIGITAL_SETS,
    K_DIGITAL,
    K_NUMBER,
    K_STRING,
    K_SYSTEM,
    K_TIMESTAMP,
    SYSTEM_STATES,
    Events,
    PointSpec,
)
from piflow.emulator.state import EmulatorState
from piflow.pitime import TICKS_PER_SECOND, format_ticks, parse_iso_ticks, to_ticks
from piflow.wildcards import wildcard

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # the conftest apps' frozen virtual now
AppFactory = Callable[..., FastAPI]

API = "/piwebapi"
T_NOW = to_ticks(NOW)
HOUR = 3600 * TICKS_PER_SECOND
DAY = 24 * HOUR
VALUE_KEYS = ["Timestamp", "Value", "UnitsAbbreviation", "Good", "Questionable", "Substituted", "Annotated"]
TOO_MANY = "is greater than the maximum allowed"


def state(client: TestClient) -> EmulatorState:
    st: EmulatorState = client.app.state.emulator  # type: ignore[attr-defined]
    return st


def find_point(st: EmulatorState, test: Callable[[PointSpec], bool]) -> PointSpec:
    for i in range(st.model.config.point_count):
        p = st.model.point(0, i)
        if test(p):
            return p
    raise AssertionError("no such point in the catalog")


def of_type(st: EmulatorState, ptype: str, interval_s: int | None = None) -> PointSpec:
    return find_point(st, lambda p: p.point_type == ptype
                      and (interval_s is None or p.interval_ticks == interval_s * TICKS_PER_SECOND))


def events(st: EmulatorState, p: PointSpec, start: int, end: int, asof: int = T_NOW) -> Events:
    return st.model.events(p, start, end, asof)


def iso(ticks: int) -> str:
    return format_ticks(ticks)


def recorded(client: TestClient, webid: str, **params: Any) -> Any:
    r = client.get(f"{API}/streams/{webid}/recorded", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def errors_of(r: Any, status: int) -> list[str]:
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["Errors"]
    assert body["Errors"]
    assert all(isinstance(e, str) for e in body["Errors"])
    errors: list[str] = body["Errors"]
    return errors


# ---- system and discovery --------------------------------------------------------------------------------

def test_root_links_are_absolute(client: TestClient) -> None:
    links = client.get(API).json()["Links"]
    assert links == {"Self": "http://testserver/piwebapi", "AssetServers": "http://testserver/piwebapi/assetservers",
                     "DataServers": "http://testserver/piwebapi/dataservers",
                     "System": "http://testserver/piwebapi/system"}


def test_system_and_status_follow_the_virtual_clock(client: TestClient) -> None:
    assert client.get(f"{API}/system").json()["ProductTitle"] == "PI Web API"
    assert client.get(f"{API}/system").json()["ProductVersion"]
    status = client.get(f"{API}/system/status").json()
    assert status["State"] == "Running"
    assert status["ServerTime"] == "2026-01-01T00:00:00Z"
    assert client.post("/_emulator/clock", json={"advance_s": 90}).status_code == 200
    status = client.get(f"{API}/system/status").json()
    assert status["ServerTime"] == "2026-01-01T00:01:30Z"
    assert status["UpTimeInMinutes"] == pytest.approx(1.5)


def test_dataservers_list_path_and_webid(client: TestClient) -> None:
    srv = state(client).model.server(0)
    items = client.get(f"{API}/dataservers").json()["Items"]
    assert [i["Name"] for i in items] == ["PIEMU01"]
    assert items[0]["WebId"] == srv.webid
    assert items[0]["Path"] == "\\\\PIEMU01"
    by_path = client.get(f"{API}/dataservers", params={"path": "\\\\piemu01"}).json()
    assert by_path["WebId"] == srv.webid
    assert client.get(f"{API}/dataservers/{srv.webid}").json()["Name"] == "PIEMU01"
    path_only = webids.path_only("DS", "PIEMU01")
    assert client.get(f"{API}/dataservers/{path_only}").json()["WebId"] == srv.webid
    errors_of(client.get(f"{API}/dataservers", params={"path": "\\\\NOPE"}), 404)
    errors_of(client.get(f"{API}/dataservers/F1DSnotawebid"), 404)


def test_points_listing_pages_and_defaults(emulator_app: AppFactory) -> None:
    with TestClient(emulator_app(points=1200)) as client:
        st = state(client)
        url = f"{API}/dataservers/{st.model.server(0).webid}/points"
        assert len(client.get(url).json()["Items"]) == 1000  # maxCount defaults to 1000
        page = client.get(url, params={"startIndex": 5, "maxCount": 7}).json()["Items"]
        assert [p["Name"] for p in page] == [st.model.point(0, i).name for i in range(5, 12)]
        assert len(client.get(url, params={"startIndex": 1195}).json()["Items"]) == 5
        assert client.get(url, params={"startIndex": 5000}).json()["Items"] == []


def test_points_name_filter_wildcards_case_insensitive(client: TestClient) -> None:
    st = state(client)
    url = f"{API}/dataservers/{st.model.server(0).webid}/points"
    names = [st.model.point(0, i).name for i in range(st.model.config.point_count)]
    flows = client.get(url, params={"nameFilter": "*.flow"}).json()["Items"]
    assert [p["Name"] for p in flows] == [n for n in names if n.endswith(".FLOW")]
    single = client.get(url, params={"nameFilter": "brk.a0.pmp00000?.*"}).json()["Items"]
    expected = [n for n in names if re.fullmatch(r"BRK\.A0\.PMP00000\d\..*", n)]
    assert expected
    assert [p["Name"] for p in single] == expected


def test_points_search_query_and_page_cap(emulator_app: AppFactory) -> None:
    with TestClient(emulator_app(points=1500)) as client:
        st = state(client)
        srv = st.model.server(0).webid
        hits = client.get(f"{API}/points/search", params={"dataServerWebId": srv,
                                                          "query": "tag:=brk.a0.pmp00000*"}).json()["Items"]
        assert hits
        assert all(h["Name"].startswith("BRK.A0.PMP00000") for h in hits)
        assert len(hits) == sum(st.model.point(0, i).name.startswith("BRK.A0.PMP00000") for i in range(1500))
        typed = client.get(f"{API}/points/search", params={"query": "tag:=BRK.A0.PMP00000* pointtype:=Int32"})
        assert {h["PointType"] for h in typed.json()["Items"]} == {"Int32"}
        everything = client.get(f"{API}/points/search", params={"query": "tag:=*", "maxCount": 5000})
        assert len(everything.json()["Items"]) == 1000  # at most 1000 per page
        second = client.get(f"{API}/points/search", params={"query": "tag:=*", "startIndex": 1000,
                                                            "maxCount": 1000}).json()["Items"]
        assert [h["Name"] for h in second] == [st.model.point(0, i).name for i in range(1000, 1500)]


def test_catalog_of_a_million_points_stays_lazy(emulator_app: AppFactory) -> None:
    with TestClient(emulator_app(points=1_000_000)) as client:
        st = state(client)
        url = f"{API}/dataservers/{st.model.server(0).webid}/points"
        tail = client.get(url, params={"startIndex": 999_995, "maxCount": 10}).json()["Items"]
        assert [p["Name"] for p in tail] == [st.model.point(0, i).name for i in range(999_995, 1_000_000)]
        last = st.model.point(0, 999_999)
        assert client.get(f"{API}/points", params={"path": last.path}).json()["WebId"] == last.webid
        assert st.model not in catalog._catalogs  # no name list was built for any of this


def test_vectorised_catalog_names_equal_the_model(emulator_app: AppFactory) -> None:
    for seed in (7, 123):
        st: EmulatorState = emulator_app(points=3000, seed=seed).state.emulator
        assert catalog.point_names(st.model, 0) == [st.model.point(0, i).name for i in range(3000)]


def test_point_object_fields_and_links(client: TestClient) -> None:
    st = state(client)
    p = of_type(st, "Float32")
    obj = client.get(f"{API}/points/{p.webid}").json()
    assert obj["WebId"] == p.webid
    assert obj["Id"] == p.point_id
    assert (obj["Name"], obj["Path"], obj["PointType"], obj["EngineeringUnits"]) == (p.name, p.path, "Float32", p.units)
    assert obj["PointClass"] == "classic"
    assert obj["Future"] is False
    assert obj["Step"] is False
    assert obj["Descriptor"] == p.descriptor
    assert obj["DigitalSetName"] == ""
    assert obj["Span"] == p.span
    assert obj["Zero"] == p.zero
    assert isinstance(obj["DisplayDigits"], int)
    links = obj["Links"]
    assert set(links) == {"Self", "DataServer", "Attributes", "InterpolatedData", "RecordedData", "PlotData",
                          "SummaryData", "Value", "EndValue"}
    assert links["RecordedData"] == f"http://testserver/piwebapi/streams/{p.webid}/recorded"
    assert links["DataServer"] == f"http://testserver/piwebapi/dataservers/{st.model.server(0).webid}"
    digital = of_type(st, "Digital")
    dobj = client.get(f"{API}/points/{digital.webid}").json()
    assert dobj["DigitalSetName"] == digital.digital_set
    assert dobj["Step"] is True


def test_point_by_path_and_404s(client: TestClient) -> None:
    p = of_type(state(client), "Int32")
    assert client.get(f"{API}/points", params={"path": p.path.lower()}).json()["WebId"] == p.webid
    errors_of(client.get(f"{API}/points", params={"path": "\\\\PIEMU01\\NO.SUCH.TAG"}), 404)
    errors_of(client.get(f"{API}/points/not-a-webid"), 404)
    errors_of(client.get(f"{API}/points/" + webids.point_path_only("PIEMU01", "NO.SUCH.TAG")), 404)
    errors_of(client.get(f"{API}/streams/F1DPgarbage/recorded"), 404)
    errors_of(client.get(f"{API}/streams/{p.webid[:-3]}/value"), 404)


def test_points_multiple_200_and_207(client: TestClient) -> None:
    st = state(client)
    a, b = st.model.point(0, 0), st.model.point(0, 1)
    ok = client.get(f"{API}/points/multiple", params=[("webId", a.webid), ("webId", b.webid)])
    assert ok.status_code == 200
    assert [i["Object"]["Name"] for i in ok.json()["Items"]] == [a.name, b.name]
    assert [i["IdentifierType"] for i in ok.json()["Items"]] == ["WebId", "WebId"]
    mixed = client.get(f"{API}/points/multiple", params=[("webId", a.webid), ("webId", "F1DPbad"),
                                                         ("path", b.path)])
    assert mixed.status_code == 207
    items = mixed.json()["Items"]
    assert items[0]["Object"]["WebId"] == a.webid
    assert items[0]["Exception"] is None
    assert items[1]["Identifier"] == "F1DPbad"
    assert items[1]["Object"] is None
    assert items[1]["Exception"]["Errors"]
    assert items[2]["IdentifierType"] == "Path"
    assert items[2]["Object"]["WebId"] == b.webid


def test_point_attributes_are_plausible(client: TestClient) -> None:
    p = of_type(state(client), "Float64")
    items = client.get(f"{API}/points/{p.webid}/attributes").json()["Items"]
    attrs = {i["Name"]: i["Value"] for i in items}
    assert {"compressing", "excdev", "compdev", "span", "zero", "pointsource", "pointtype", "engunits"} <= set(attrs)
    assert attrs["span"] == p.span
    assert attrs["zero"] == p.zero
    assert attrs["engunits"] == p.units
    assert attrs["pointtype"] == "Float64"
    assert attrs["tag"] == p.name


def test_webid_types(client: TestClient) -> None:
    st = state(client)
    p = of_type(st, "Float32")
    path_only = webids.point_path_only("PIEMU01", p.name)  # computed offline, as a client does
    obj = client.get(f"{API}/points/{p.webid}", params={"webIdType": "PathOnly"}).json()
    assert obj["WebId"] == path_only
    assert obj["Links"]["Self"].endswith(f"/points/{path_only}")
    assert client.get(f"{API}/points/{path_only}").json()["WebId"] == p.webid  # resolves; Full by default
    full = recorded(client, p.webid, maxCount=50)
    assert recorded(client, path_only, maxCount=50)["Items"] == full["Items"]
    errors_of(client.get(f"{API}/points/{p.webid}", params={"webIdType": "IDOnly"}), 400)


def test_deleted_points_answer_404(client: TestClient) -> None:
    p = of_type(state(client), "Float32")
    assert client.get(f"{API}/streams/{p.webid}/recorded").status_code == 200
    r = client.post("/_emulator/points/delete", json={"webIds": [p.path_webid, "F1DPnope"]})
    assert r.json() == {"deleted": [p.webid], "unknown": ["F1DPnope"]}
    errors_of(client.get(f"{API}/points/{p.webid}"), 404)
    errors_of(client.get(f"{API}/streams/{p.webid}/recorded"), 404)
    in_set = client.get(f"{API}/streamsets/recorded", params=[("webId", p.webid)])
    assert in_set.status_code == 207
    assert in_set.json()["Items"][0]["Exception"]["Errors"]
    errors_of(client.get(f"{API}/points", params={"path": p.path}), 404)


def test_deleted_values_vanish_from_recorded_from_the_time_of_the_delete(client: TestClient) -> None:
    st = state(client)
    p = of_type(st, "Float64", interval_s=60)
    before = recorded(client, p.webid, maxCount=5000)["Items"]
    victims = [before[3]["Timestamp"], before[10]["Timestamp"]]
    r = client.post("/_emulator/values/delete", json={"webId": p.webid, "times": [*victims, "2001-01-01T00:00:00Z"]})
    assert r.json() == {"deleted": 2}
    after = recorded(client, p.webid, maxCount=5000)["Items"]
    assert [v["Timestamp"] for v in after] == [v["Timestamp"] for v in before if v["Timestamp"] not in victims]
    # Reads as of a virtual time before the delete still see the values (the model keeps the history).
    now = st.clock.now_ticks()
    assert len(st.model.events(p, now - DAY, now, now - 1)) == len(st.model.events(p, now - DAY, now, now)) + 2
    errors_of(client.post("/_emulator/values/delete", json={"webId": "F1DPnope", "times": []}), 404)
    errors_of(client.post("/_emulator/values/delete", json={"webId": p.webid, "times": "soon"}), 400)
    errors_of(client.post("/_emulator/values/delete", json={"webId": p.webid, "times": ["yesterday-ish"]}), 400)


# ---- recorded values -------------------------------------------------------------------------------------

def test_recorded_shape_defaults_and_values(client: TestClient) -> None:
    st = state(client)
    p = of_type(st, "Float64", interval_s=60)  # ~1300 events a day: more than one default page
    body = recorded(client, p.webid)
    assert list(body) == ["Links", "Items", "UnitsAbbreviation"]
    assert body["UnitsAbbreviation"] == p.units
    ev = events(st, p, T_NOW - DAY, T_NOW)  # default window *-1d .. *
    assert len(ev) > 1000
    assert len(body["Items"]) == 1000
    for i, item in enumerate(body["Items"]):
        assert list(item) == VALUE_KEYS
        assert item["Timestamp"] == iso(int(ev.ticks[i]))
        assert item["Value"] == float(ev.number[i]) or ev.kind[i] == K_SYSTEM
        assert (item["Good"], item["Questionable"], item["Substituted"], item["Annotated"]) == (
            bool(ev.good[i]), bool(ev.questionable[i]), bool(ev.substituted[i]), bool(ev.annotated[i]))
        assert item["UnitsAbbreviation"] == p.units


def test_recorded_max_count_bounds_and_newest_first(client: TestClient) -> None:
    st = state(client)
    p = of_type(st, "Float32")
    ev = events(st, p, T_NOW - 6 * HOUR, T_NOW - 5 * HOUR)
    t0, t9 = int(ev.ticks[2]), int(ev.ticks[11])  # exact event times as bounds: both ends are inclusive
    body = recorded(client, p.webid, startTime=iso(t0), endTime=iso(t9))
    assert [i["Timestamp"] for i in body["Items"]] == [iso(int(t)) for t in ev.ticks[2:12]]
    short = recorded(client, p.webid, startTime=iso(t0), endTime=iso(t9), maxCount=4)["Items"]
    assert [i["Timestamp"] for i in short] == [iso(int(t)) for t in ev.ticks[2:6]]
    back = recorded(client, p.webid, startTime=iso(t9), endTime=iso(t0))["Items"]  # endTime < startTime
    assert [i["Timestamp"] for i in back] == [iso(int(t)) for t in ev.ticks[2:12][::-1]]
    back4 = recorded(client, p.webid, startTime=iso(t9), endTime=iso(t0), maxCount=4)["Items"]
    assert [i["Timestamp"] for i in back4] == [iso(int(t)) for t in ev.ticks[8:12][::-1]]


def test_recorded_over_the_item_limit_is_400(emulator_app: AppFactory) -> None:
    with TestClient(emulator_app(max_returned_items=50)) as client:
        st = state(client)
        a, b = st.model.point(0, 0), st.model.point(0, 1)
        msg = errors_of(client.get(f"{API}/streams/{a.webid}/recorded", params={"maxCount": 100}), 400)
        assert TOO_MANY in msg[0]
        assert "(50)" in msg[0]
        assert len(recorded(client, a.webid, maxCount=50)["Items"]) == 50
        both = [("webId", a.webid), ("webId", b.webid), ("maxCount", "30")]
        assert TOO_MANY in errors_of(client.get(f"{API}/streamsets/recorded", params=both), 400)[0]
        ok = client.get(f"{API}/streamsets/recorded", params=[("webId", a.webid), ("webId", b.webid),
                                                              ("maxCount", "25")])
        assert [len(i["Items"]) for i in ok.json()["Items"]] == [25, 25]
        over = client.get(f"{API}/streams/{a.webid}/interpolated", params={"startTime": "*-3d", "interval": "1h"})
        assert TOO_MANY in errors_of(over, 400)[0]


def test_recorded_bad_parameters_are_400(client: TestClient) -> None:
    p = state(client).model.point(0, 0)
    url = f"{API}/streams/{p.webid}/recorded"
    assert "startTime" in errors_of(client.get(url, params={"startTime": "next tuesday-ish"}), 400)[0]
    errors_of(client.get(url, params={"endTime": "2026-13-45"}), 400)
    errors_of(client.get(url, params={"maxCount": "many"}), 400)
    errors_of(client.get(url, params={"boundaryType": "Sideways"}), 400)
    assert "not supported" in errors_of(client.get(url, params={"filterExpression": "'.'>0"}), 400)[0]


def test_recorded_boundary_types(client: TestClient) -> None:
    st = state(client)
    p = of_type(st, "Float64", interval_s=60)
    ev = events(st, p, T_NOW - 6 * HOUR, T_NOW - 5 * HOUR)
    lo = int(ev.ticks[3]) + 1  # just after an event, just before the next ones
    hi = int(ev.ticks[8]) - 1
    inside = recorded(client, p.webid, startTime=iso(lo), endTime=iso(hi))["Items"]
    assert [i["Timestamp"] for i in inside] == [iso(int(t)) for t in ev.ticks[4:8]]
    outside = recorded(client, p.webid, startTime=iso(lo), endTime=iso(hi), boundaryType="Outside")["Items"]
    assert [i["Timestamp"] for i in outside] == [iso(int(t)) for t in ev.ticks[3:9]]
    interp = recorded(client, p.webid, startTime=iso(lo), endTime=iso(hi), boundaryType="Interpolated")["Items"]
    assert [i["Timestamp"] for i in interp] == [iso(lo), *[iso(int(t)) for t in ev.ticks[4:8]], iso(hi)]
    t3, t4, v3, v4 = int(ev.ticks[3]), int(ev.ticks[4]), float(ev.number[3]), float(ev.number[4])
    assert interp[0]["Value"] == pytest.approx(v3 + (v4 - v3) * (lo - t3) / (t4 - t3))


def test_timestamps_have_up_to_seven_digits_and_round_trip(client: TestClient) -> None:
    st = state(client)
    p = of_type(st, "Float32", interval_s=30)
    items = recorded(client, p.webid, maxCount=3000)["Items"]
    stamps = [i["Timestamp"] for i in items]
    assert any(re.fullmatch(r".*\.\d{7}Z", s) for s in stamps)  # 100 ns precision
    assert any(re.fullmatch(r".*:\d\dZ", s) for s in stamps)  # whole seconds: no fraction at all
    assert all(not re.search(r"\.\d*0Z$", s) for s in stamps)  # trailing zeros dropped
    ev = events(st, p, T_NOW - DAY, T_NOW)
    assert [parse_iso_ticks(s) for s in stamps] == [int(t) for t in ev.ticks[:3000]]


def test_shared_timestamps_are_served_as_separate_events(client: TestClient) -> None:
    st = state(client)
    p = find_point(st, lambda q: q.point_type == "Float64"
                   and bool(np.any(np.diff(events(st, q, T_NOW - DAY, T_NOW).ticks) == 0)))
    ev = events(st, p, T_NOW - DAY, T_NOW)
    items = recorded(client, p.webid, maxCount=100000)["Items"]
    stamps = [i["Timestamp"] for i in items]
    dup = int(np.flatnonzero(np.diff(ev.ticks) == 0)[0])
    assert stamps[dup] == stamps[dup + 1]
    assert items[dup]["Value"] == float(ev.number[dup])
    assert items[dup + 1]["Value"] == float(ev.number[dup + 1])


def test_value_shapes_of_every_point_type(client: TestClient) -> None:
    st = state(client)
    for ptype in ("Int32", "Digital", "String", "Timestamp"):
        p = of_type(st, ptype)
        r = client.get(f"{API}/streams/{p.webid}/recorded", params={"maxCount": 50})
        items = r.json()["Items"]
        ev = events(st, p, T_NOW - DAY, T_NOW)
        for i, item in enumerate(items):
            kind = int(ev.kind[i])
            if kind == K_SYSTEM:
                continue
            if ptype == "Int32":
                assert type(item["Value"]) is int
                assert item["Value"] == int(ev.number[i])
            elif ptype == "Digital":
                names = DIGITAL_SETS[p.digital_set or ""]
                assert item["Value"] == {"Name": names[int(ev.code[i])], "Value": int(ev.code[i]), "IsSystem": False}
            else:
                assert item["Value"] == ev.string_value(i)
                if kind == K_TIMESTAMP:
                    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", item["Value"])
        if ptype == "Int32":
            assert re.search(rb'"Value":\d+,', r.content)
            assert not re.search(rb'"Value":\d+\.0,', r.content)


def test_system_states_are_objects_with_good_false(client: TestClient) -> None:
    st = state(client)
    for ptype in ("Float32", "Digital", "String"):
        p = find_point(st, lambda q, t=ptype: q.point_type == t
                       and bool(np.any(events(st, q, T_NOW - DAY, T_NOW).kind == K_SYSTEM)))
        ev = events(st, p, T_NOW - DAY, T_NOW)
        i = int(np.flatnonzero(ev.kind == K_SYSTEM)[0])
        item = recorded(client, p.webid, startTime=iso(int(ev.ticks[i])), endTime=iso(int(ev.ticks[i])))["Items"][-1]
        code = int(ev.code[i])
        assert item["Value"] == {"Name": SYSTEM_STATES[code], "Value": code, "IsSystem": True}
        assert item["Good"] is False


def test_selected_fields(client: TestClient) -> None:
    st = state(client)
    p, d = of_type(st, "Float32"), of_type(st, "Digital")
    body = recorded(client, p.webid, maxCount=5, selectedFields="Items.Timestamp;Items.Value")
    assert list(body) == ["Items"]
    assert all(list(i) == ["Timestamp", "Value"] for i in body["Items"])
    full = recorded(client, p.webid, maxCount=5)["Items"]
    assert body["Items"] == [{"Timestamp": i["Timestamp"], "Value": i["Value"]} for i in full]
    deep = recorded(client, d.webid, maxCount=5, selectedFields="Items.Value.Name;UnitsAbbreviation")
    assert list(deep) == ["Items", "UnitsAbbreviation"]
    assert all(list(i) == ["Value"] and list(i["Value"]) == ["Name"] for i in deep["Items"])
    units_only = recorded(client, p.webid, selectedFields="unitsabbreviation")
    assert units_only == {"UnitsAbbreviation": p.units}
    params = [("webId", p.webid), ("webId", d.webid), ("maxCount", "3"),
              ("selectedFields", "Items.WebId;Items.Items.Timestamp;Items.Items.Value")]
    ss = client.get(f"{API}/streamsets/recorded", params=params).json()
    assert list(ss) == ["Items"]
    assert [list(i) for i in ss["Items"]] == [["WebId", "Items"], ["WebId", "Items"]]
    assert ss["Items"][0]["Items"] == body["Items"][:3]
    obj = client.get(f"{API}/points/{p.webid}", params={"selectedFields": "WebId;Name;Links.Self"}).json()
    assert obj == {"WebId": p.webid, "Name": p.name, "Links": {"Self": f"http://testserver/piwebapi/points/{p.webid}"}}


def test_same_request_same_bytes_and_seed_changes_data(emulator_app: AppFactory) -> None:
    def body(seed: int) -> bytes:
        with TestClient(emulator_app(seed=seed)) as client:
            st = state(client)
            params = [("webId", st.model.point(0, i).webid) for i in range(20)]
            params += [("maxCount", "100000"), ("startTime", "*-2d")]
            first = client.get(f"{API}/streamsets/recorded", params=params).content
            assert client.get(f"{API}/streamsets/recorded", params=params).content == first
            return first

    a = body(7)
    assert body(7) == a  # a new app with the same seed serves the same bytes
    assert body(8) != a


def test_nothing_after_now_and_the_clock_reveals_new_values(client: TestClient) -> None:
    st = state(client)
    p = of_type(st, "Float32", interval_s=60)
    before = recorded(client, p.webid, startTime="*-2h", endTime="*+2h", maxCount=10000)["Items"]
    assert before
    assert max(parse_iso_ticks(i["Timestamp"]) for i in before) <= T_NOW
    assert client.post("/_emulator/clock", json={"advance_s": 3600}).json()["now"] == "2026-01-01T01:00:00Z"
    after = recorded(client, p.webid, startTime=iso(T_NOW - 2 * HOUR), endTime=iso(T_NOW + 2 * HOUR),
                     maxCount=10000)["Items"]
    new = [i for i in after if parse_iso_ticks(i["Timestamp"]) > T_NOW]
    assert new
    assert max(parse_iso_ticks(i["Timestamp"]) for i in new) <= T_NOW + HOUR
    expected = events(st, p, T_NOW + 1, T_NOW + HOUR, asof=T_NOW + HOUR)
    assert [i["Timestamp"] for i in new] == [iso(int(t)) for t in expected.ticks]


def test_late_values_appear_after_their_delay(client: TestClient) -> None:
    st = state(client)
    lo, hi = T_NOW - HOUR, T_NOW
    for i in range(st.model.config.point_count):
        p = st.model.point(0, i)
        now_ticks = set(events(st, p, lo, hi).ticks.tolist())
        late = sorted(set(events(st, p, lo, hi, asof=T_NOW + HOUR).ticks.tolist()) - now_ticks)
        if late:
            break
    else:
        raise AssertionError("no late value in the catalog")
    window = {"startTime": iso(lo), "endTime": iso(hi), "maxCount": 10000}
    assert iso(late[0]) not in {v["Timestamp"] for v in recorded(client, p.webid, **window)["Items"]}
    client.post("/_emulator/clock", json={"set": "2026-01-01T01:00:00Z"})
    assert iso(late[0]) in {v["Timestamp"] for v in recorded(client, p.webid, **window)["Items"]}


def test_edits_change_the_value_and_set_substituted(client: TestClient) -> None:
    st = state(client)
    lo, hi, later = T_NOW - 2 * HOUR, T_NOW, T_NOW + 3 * HOUR
    for i in range(st.model.config.point_count):
        p = st.model.point(0, i)
        if p.point_type not in ("Float32", "Float64"):
            continue
        early, late = events(st, p, lo, hi), events(st, p, lo, hi, asof=later)
        common = np.intersect1d(early.ticks, late.ticks)
        e_idx = np.searchsorted(early.ticks, common)
        l_idx = np.searchsorted(late.ticks, common)
        numeric = (early.kind[e_idx] == K_NUMBER) & (late.kind[l_idx] == K_NUMBER)
        changed = np.flatnonzero(numeric & (early.number[e_idx] != late.number[l_idx]))
        if changed.size:
            t = int(common[changed[0]])
            before_value, after_value = float(early.number[e_idx[changed[0]]]), float(late.number[l_idx[changed[0]]])
            break
    else:
        raise AssertionError("no edited value in the catalog")
    one = {"startTime": iso(t), "endTime": iso(t)}
    [v0] = recorded(client, p.webid, **one)["Items"]
    assert v0["Value"] == before_value
    assert v0["Substituted"] is False
    client.post("/_emulator/clock", json={"set": "2026-01-01T03:00:00Z"})
    [v1] = recorded(client, p.webid, **one)["Items"]
    assert v1["Timestamp"] == v0["Timestamp"]
    assert v1["Value"] == after_value != before_value
    assert v1["Substituted"] is True


# ---- interpolated, plot, value, end, recorded at time, summary -------------------------------------------

def test_interpolated_defaults_linear_and_step(client: TestClient) -> None:
    st = state(client)
    f = of_type(st, "Float64")
    body = client.get(f"{API}/streams/{f.webid}/interpolated").json()
    assert list(body) == ["Links", "Items", "UnitsAbbreviation"]
    assert [i["Timestamp"] for i in body["Items"]] == [iso(T_NOW - DAY + k * HOUR) for k in range(25)]
    ev = events(st, f, T_NOW - 6 * HOUR, T_NOW - 5 * HOUR)
    t_mid = (int(ev.ticks[4]) + int(ev.ticks[5])) // 2
    at_event = int(ev.ticks[4])
    items = client.get(f"{API}/streams/{f.webid}/interpolated",
                       params={"startTime": iso(at_event), "endTime": iso(t_mid),
                               "interval": f"{(t_mid - at_event) / TICKS_PER_SECOND}s"}).json()["Items"]
    assert items[0]["Value"] == float(ev.number[4])  # at an event: the event's value
    t4, t5, v4, v5 = int(ev.ticks[4]), int(ev.ticks[5]), float(ev.number[4]), float(ev.number[5])
    assert items[1]["Value"] == pytest.approx(v4 + (v5 - v4) * (t_mid - t4) / (t5 - t4), rel=1e-12)
    n = of_type(st, "Int32")
    nev = events(st, n, T_NOW - 6 * HOUR, T_NOW - 5 * HOUR)
    mid = (int(nev.ticks[4]) + int(nev.ticks[5])) // 2
    [step] = client.get(f"{API}/streams/{n.webid}/interpolated",
                        params={"startTime": iso(mid), "endTime": iso(mid)}).json()["Items"]
    assert step["Value"] == int(nev.number[4])
    assert step["Timestamp"] == iso(mid)


def test_interpolated_before_the_first_event_is_no_data(client: TestClient) -> None:
    p = state(client).model.point(0, 0)
    [item] = client.get(f"{API}/streams/{p.webid}/interpolated",
                        params={"startTime": "2019-06-01T00:00:00Z", "endTime": "2019-06-01T00:00:00Z"}).json()["Items"]
    assert item["Value"] == {"Name": "No Data", "Value": 248, "IsSystem": True}
    assert item["Good"] is False


def test_plot_keeps_extremes_within_the_window(client: TestClient) -> None:
    st = state(client)
    p = of_type(st, "Float32")
    items = client.get(f"{API}/streams/{p.webid}/plot", params={"startTime": "*-6h", "intervals": 6}).json()["Items"]
    ticks = [parse_iso_ticks(i["Timestamp"]) for i in items]
    assert ticks == sorted(ticks)
    assert ticks[0] == T_NOW - 6 * HOUR
    assert ticks[-1] == T_NOW
    ev = events(st, p, T_NOW - 6 * HOUR, T_NOW)
    good = ev.kind == K_NUMBER
    values = [i["Value"] for i in items]
    assert float(ev.number[good].max()) in values
    assert float(ev.number[good].min()) in values
    assert len(items) < len(ev) / 4  # a plot is a reduction


def test_value_end_and_recorded_at_time(client: TestClient) -> None:
    st = state(client)
    p = of_type(st, "Float32")
    ev = events(st, p, T_NOW - HOUR, T_NOW)
    last = {"Timestamp": iso(int(ev.ticks[-1])), "Value": float(ev.number[-1])}
    for path in ("value", "end"):
        got = client.get(f"{API}/streams/{p.webid}/{path}").json()
        assert list(got) == VALUE_KEYS
        assert {k: got[k] for k in last} == last
    t = int(ev.ticks[10])

    def at(mode: str, ticks: int) -> Any:
        return client.get(f"{API}/streams/{p.webid}/recordedattime",
                          params={"time": iso(ticks), "retrievalMode": mode}).json()

    assert at("AtOrBefore", t)["Timestamp"] == iso(t)
    assert at("Auto", t + 1)["Timestamp"] == iso(t)
    assert at("Before", t)["Timestamp"] == iso(int(ev.ticks[ev.ticks < t][-1]))
    assert at("AtOrAfter", t)["Timestamp"] == iso(t)
    assert at("After", t)["Timestamp"] == iso(int(ev.ticks[ev.ticks > t][0]))
    assert at("Exact", t)["Value"] == float(ev.number[10])
    assert at("Exact", t + 1)["Value"] == {"Name": "No Data", "Value": 248, "IsSystem": True}
    assert at("After", T_NOW)["Good"] is False  # nothing recorded after now
    errors_of(client.get(f"{API}/streams/{p.webid}/recordedattime"), 400)
    errors_of(client.get(f"{API}/streams/{p.webid}/recordedattime", params={"time": "*", "retrievalMode": "X"}), 400)


def test_summary_event_weighted_matches_the_events(client: TestClient) -> None:
    st = state(client)
    p = of_type(st, "Float64")
    params = [("startTime", "*-3h"), ("endTime", "*"), ("calculationBasis", "EventWeighted")]
    params += [("summaryType", t) for t in ("Average", "Minimum", "Maximum", "Count", "Total", "Range")]
    items = client.get(f"{API}/streams/{p.webid}/summary", params=params).json()["Items"]
    got = {i["Type"]: i["Value"] for i in items}
    ev = events(st, p, T_NOW - 3 * HOUR, T_NOW)
    good = ev.kind == K_NUMBER
    v, t = ev.number[good], ev.ticks[good]
    assert got["Average"]["Value"] == pytest.approx(float(v.mean()))
    assert got["Total"]["Value"] == pytest.approx(float(v.sum()))
    assert got["Count"]["Value"] == int(good.sum())
    assert got["Range"]["Value"] == pytest.approx(float(v.max() - v.min()))
    assert got["Minimum"]["Value"] == float(v.min())
    assert got["Minimum"]["Timestamp"] == iso(int(t[v.argmin()]))
    assert got["Maximum"]["Value"] == float(v.max())
    assert got["Maximum"]["Timestamp"] == iso(int(t[v.argmax()]))
    assert got["Average"]["Timestamp"] == iso(T_NOW - 3 * HOUR)  # other types carry the interval start


def test_summary_time_weighted_step_average_and_durations(client: TestClient) -> None:
    st = state(client)
    p = find_point(st, lambda q: q.point_type == "Int32"
                   and not np.any(events(st, q, T_NOW - 3 * HOUR, T_NOW).kind == K_SYSTEM))
    start, end = T_NOW - 2 * HOUR, T_NOW
    ev = events(st, p, T_NOW - 3 * HOUR, T_NOW)
    # a step function: each value holds until the next event
    knots = np.concatenate([[start], ev.ticks[(ev.ticks > start) & (ev.ticks < end)], [end]])
    held = [float(ev.number[ev.ticks <= k][-1]) for k in knots[:-1]]
    expected = float(np.dot(held, np.diff(knots))) / (end - start)
    params = {"startTime": iso(start), "endTime": iso(end), "summaryType": "Average"}
    [item] = client.get(f"{API}/streams/{p.webid}/summary", params=params).json()["Items"]
    assert item == {"Type": "Average", "Value": {**item["Value"], "Value": pytest.approx(expected, rel=1e-9)}}
    hourly = client.get(f"{API}/streams/{p.webid}/summary",
                        params=[("startTime", iso(start)), ("endTime", iso(end)), ("summaryDuration", "1h"),
                                ("summaryType", "Average"), ("summaryType", "Maximum")]).json()["Items"]
    assert [i["Type"] for i in hourly] == ["Average", "Average", "Maximum", "Maximum"]
    assert [i["Value"]["Timestamp"] for i in hourly[:2]] == [iso(start), iso(start + HOUR)]
    errors_of(client.get(f"{API}/streams/{p.webid}/summary", params={"summaryType": "Median"}), 400)


# ---- stream sets -----------------------------------------------------------------------------------------

def test_streamset_recorded_matches_single_streams(client: TestClient) -> None:
    st = state(client)
    pts = [st.model.point(0, i) for i in range(8)]
    params = [("webId", p.webid) for p in pts] + [("maxCount", "40"), ("startTime", "*-6h")]
    body = client.get(f"{API}/streamsets/recorded", params=params).json()
    assert list(body) == ["Links", "Items"]
    for p, item in zip(pts, body["Items"], strict=True):
        assert list(item) == ["WebId", "Name", "Path", "UnitsAbbreviation", "Links", "Items"]
        assert (item["WebId"], item["Name"], item["Path"], item["UnitsAbbreviation"]) == (
            p.webid, p.name, p.path, p.units)
        assert item["Links"]["Source"] == f"http://testserver/piwebapi/points/{p.webid}"
        single = recorded(client, p.webid, maxCount=40, startTime="*-6h")["Items"]
        assert item["Items"] == single
        assert len(single) == 40
    path_only = [webids.point_path_only("PIEMU01", p.name) for p in pts[:2]]
    echoed = client.get(f"{API}/streamsets/recorded", params=[("webId", w) for w in path_only]).json()
    assert [i["WebId"] for i in echoed["Items"]] == path_only  # the WebIDs come back as they were asked
    errors_of(client.get(f"{API}/streamsets/recorded"), 400)


def test_streamset_items_that_cannot_be_read_carry_an_exception(client: TestClient) -> None:
    st = state(client)
    a, b = st.model.point(0, 0), st.model.point(0, 1)
    client.post("/_emulator/points/delete", json={"webIds": [b.webid]})
    asked = [a.webid, "F1DPnot-a-point", b.webid]
    for action in ("recorded", "interpolated", "plot", "value", "end", "summary"):
        r = client.get(f"{API}/streamsets/{action}", params=[("webId", w) for w in asked])
        assert r.status_code == 207, action
        items = r.json()["Items"]
        assert [i["WebId"] for i in items] == asked
        assert "Exception" not in items[0]
        assert items[0]["Name"] == a.name
        for bad in items[1:]:
            assert bad["Exception"]["Errors"]
            assert "Items" not in bad
            assert "Value" not in bad
    fields = "Items.WebId;Items.Exception;Items.Items.Timestamp"
    pruned = client.get(f"{API}/streamsets/recorded", params=[*[("webId", w) for w in asked],
                                                              ("selectedFields", fields), ("maxCount", "2")]).json()
    assert [sorted(i) for i in pruned["Items"]] == [["Items", "WebId"], ["Exception", "WebId"], ["Exception", "WebId"]]


def test_streamset_other_actions(client: TestClient) -> None:
    st = state(client)
    pts = [of_type(st, "Float32"), of_type(st, "Digital")]
    ids = [("webId", p.webid) for p in pts]
    interp = client.get(f"{API}/streamsets/interpolated", params=[*ids, ("startTime", "*-2h")]).json()["Items"]
    assert [len(i["Items"]) for i in interp] == [3, 3]
    for path in ("value", "end"):
        items = client.get(f"{API}/streamsets/{path}", params=ids).json()["Items"]
        assert [i["WebId"] for i in items] == [p.webid for p in pts]
        for p, item in zip(pts, items, strict=True):
            assert item["Value"] == client.get(f"{API}/streams/{p.webid}/{path}").json()
    summ = client.get(f"{API}/streamsets/summary", params=[*ids, ("summaryType", "Count")]).json()["Items"]
    assert [[v["Type"] for v in i["Items"]] for i in summ] == [["Count"], ["Count"]]
    plot = client.get(f"{API}/streamsets/plot", params=[*ids, ("intervals", "4")]).json()["Items"]
    assert all(i["Items"] for i in plot)
    t = iso(T_NOW - HOUR)
    at = client.get(f"{API}/streamsets/recordedattime", params=[*ids, ("time", t), ("retrievalMode", "After")])
    for p, item in zip(pts, at.json()["Items"], strict=True):
        single = client.get(f"{API}/streams/{p.webid}/recordedattime", params={"time": t, "retrievalMode": "After"})
        assert item["Value"] == single.json()
    errors_of(client.get(f"{API}/streamsets/recordedattime", params=ids), 400)


def test_time_zone_moves_today_and_unknown_routes_are_404(client: TestClient) -> None:
    p = state(client).model.point(0, 0)

    def first_stamp(**params: str) -> str:
        r = client.get(f"{API}/streams/{p.webid}/interpolated", params={"startTime": "t", "endTime": "t", **params})
        stamp: str = r.json()["Items"][0]["Timestamp"]
        return stamp

    assert first_stamp() == "2026-01-01T00:00:00Z"  # the server time zone is UTC
    assert first_stamp(timeZone="Asia/Tokyo") == "2025-12-31T15:00:00Z"  # midnight in Tokyo (UTC+9)
    assert first_stamp(timeZone="America/New_York") == "2025-12-31T05:00:00Z"  # 'today' there is Dec 31
    errors_of(client.get(f"{API}/streams/{p.webid}/interpolated", params={"timeZone": "Mars/Olympus"}), 400)
    errors_of(client.get(f"{API}/streams/{p.webid}/nonsense"), 404)
    errors_of(client.get(f"{API}/streamsets/nonsense", params={"webId": p.webid}), 404)


def test_streamsets_of_an_af_element(client: TestClient) -> None:
    st = state(client)
    element, refs = next((e, r) for e in st.af.all_elements() if (r := st.af.element_attributes(e.webid))
                         and any(a.point is None for a in r) and any(a.point is not None for a in r))
    window = {"startTime": "2019-12-31T23:00:00Z", "endTime": "2020-01-01T06:00:00Z", "maxCount": 5}
    body = client.get(f"{API}/streamsets/{element.webid}/recorded", params=window).json()
    assert [i["WebId"] for i in body["Items"]] == [a.webid for a in refs]
    for ref, item in zip(refs, body["Items"], strict=True):
        assert item["Name"] == ref.name
        assert item["Path"] == ref.path
        if ref.point is None:
            assert [(v["Timestamp"], v["Value"]) for v in item["Items"]] == [("2020-01-01T00:00:00Z", ref.static_value)]
        else:
            ev = events(st, ref.point, to_ticks(datetime(2020, 1, 1, tzinfo=UTC)), to_ticks(datetime(2020, 1, 1, 6,
                                                                                                        tzinfo=UTC)))
            assert [v["Timestamp"] for v in item["Items"]] == [iso(int(t)) for t in ev.ticks[:5]]
            own = recorded(client, ref.webid, **window)  # an attribute WebID is a stream of its own
            assert own["Items"] == item["Items"]
    values = client.get(f"{API}/streamsets/{element.webid}/value").json()["Items"]
    static = next(r for r in refs if r.point is None)
    assert next(v for v in values if v["WebId"] == static.webid)["Value"]["Value"] == static.static_value
    errors_of(client.get(f"{API}/streamsets/{st.model.point(0, 0).webid}/recorded"), 404)
    backed = next(r for r in refs if r.point is not None)
    assert backed.point is not None
    client.post("/_emulator/points/delete", json={"webIds": [backed.point.webid]})
    after = client.get(f"{API}/streamsets/{element.webid}/value")
    assert after.status_code == 207
    broken = next(v for v in after.json()["Items"] if v["WebId"] == backed.webid)
    assert "PI Point not found" in broken["Exception"]["Errors"][0]
    errors_of(client.get(f"{API}/streams/{backed.webid}/value"), 404)


# ---- admin -----------------------------------------------------------------------------------------------

def test_admin_stats_count_values_and_clock_controls(client: TestClient) -> None:
    p = state(client).model.point(0, 0)
    before = client.get("/_emulator/stats").json()
    n = len(recorded(client, p.webid, maxCount=17)["Items"])
    after = client.get("/_emulator/stats").json()
    assert n == 17
    assert after["values"] - before["values"] == 17
    assert set(after) >= {"requests", "values", "faults", "now"}
    assert after["now"] == "2026-01-01T00:00:00Z"
    assert client.post("/_emulator/clock", json={"set": "2026-02-01T00:00:00Z"}).json()["now"] == \
        "2026-02-01T00:00:00Z"
    assert client.post("/_emulator/clock", json={"frozen": False}).json()["frozen"] is False
    errors_of(client.post("/_emulator/clock", json={"jump": 1}), 400)
    errors_of(client.post("/_emulator/clock", json={"set": "not a time"}), 400)
    errors_of(client.post("/_emulator/points/delete", json={"webIds": "x"}), 400)


def test_recorded_reaches_back_years_cheaply(client: TestClient) -> None:
    """A small page at the far end of a long window must not compute the whole window."""
    p = of_type(state(client), "Float32", interval_s=60)
    body = recorded(client, p.webid, startTime="*", endTime="2020-01-01T00:00:00Z", maxCount=3)
    assert [parse_iso_ticks(i["Timestamp"]) <= T_NOW for i in body["Items"]] == [True] * 3
    oldest = recorded(client, p.webid, startTime="2010-01-01T00:00:00Z", endTime="*", maxCount=2)["Items"]
    assert parse_iso_ticks(oldest[0]["Timestamp"]) >= to_ticks(datetime(2020, 1, 1, tzinfo=UTC))
    assert parse_iso_ticks(oldest[0]["Timestamp"]) < to_ticks(datetime(2020, 1, 1, tzinfo=UTC) + timedelta(hours=1))



# ---- the fast encoder against the one-dict-per-value reference ------------------------------------------

FIELD_SETS = [list(serialize.VALUE_FIELDS), ["Timestamp", "Value"], ["Value"], ["Good", "Annotated"], ["Timestamp"], []]


@pytest.mark.parametrize("fields", FIELD_SETS, ids=lambda f: "+".join(f) or "none")
def test_fast_encoder_equals_the_reference(emulator_app: AppFactory, fields: list[str]) -> None:
    st: EmulatorState = emulator_app(points=120).state.emulator
    streams = []
    for i in range(120):
        p = st.model.point(0, i)
        ev = st.model.events(p, T_NOW - 6 * HOUR, T_NOW, T_NOW)
        fmt = serialize.StreamFormat(p.units, p.point_type == "Int32", p.state_names())
        streams.append((serialize.ValueColumns.from_events(ev), fmt))
    streams.append((serialize.ValueColumns.empty(), serialize.StreamFormat()))
    quoted = serialize.ValueColumns.single(T_NOW, orjson.dumps('a "quoted" text'))
    streams.append((quoted, serialize.StreamFormat("m")))
    kinds = set(np.concatenate([c.kind for c, _ in streams]).tolist())
    assert kinds == {K_NUMBER, K_STRING, K_TIMESTAMP, K_DIGITAL, K_SYSTEM, serialize.K_OTHER}
    fast = [b"".join(parts) for parts in serialize.encode_arrays(streams, fields)]
    assert fast == serialize.encode_arrays_slow(streams, fields)
    assert [len(orjson.loads(b)) for b in fast] == [len(c) for c, _ in streams]


def test_vectorised_string_values_equal_the_model(emulator_app: AppFactory) -> None:
    st: EmulatorState = emulator_app(points=400).state.emulator
    checked = 0
    for i in range(400):
        p = st.model.point(0, i)
        if p.point_type not in ("String", "Timestamp"):
            continue
        ev = st.model.events(p, T_NOW - DAY, T_NOW, T_NOW)
        cols = serialize.ValueColumns.from_events(ev)
        extras = cols.extra_map()
        for j in range(len(ev)):
            if ev.kind[j] in (K_STRING, K_TIMESTAMP):
                assert orjson.loads(extras[j]) == ev.string_value(j)
                checked += 1
    assert checked > 1000


def test_encoder_outside_the_table_range_uses_the_reference() -> None:
    ticks = np.array([-10 * DAY - 1234567, 0, 85_000 * DAY + 1], dtype=np.int64)
    n = ticks.shape[0]
    cols = serialize.ValueColumns(ticks, np.zeros(n, np.int8), np.array([1.5, -2.0, 3e20]), np.zeros(n, np.int32),
                                  np.ones(n, np.bool_), np.zeros(n, np.bool_), np.zeros(n, np.bool_),
                                  np.zeros(n, np.bool_))
    [parts] = serialize.encode_arrays([(cols, serialize.StreamFormat("x"))])
    items = orjson.loads(b"".join(parts))
    assert [i["Timestamp"] for i in items] == [format_ticks(int(t)) for t in ticks]
    assert [i["Value"] for i in items] == [1.5, -2.0, 3e20]


def test_selected_fields_parsing_and_pruning() -> None:
    sel = query.parse_selected_fields("Items.Timestamp; items.VALUE;Links")
    assert sel.includes("links")
    assert sel.includes("Items")
    assert not sel.includes("UnitsAbbreviation")
    items = sel.sub("Items")
    assert items is not None
    assert set(items.children) == {"timestamp", "value"}
    assert sel.depth == 2
    assert query.parse_selected_fields("Items;Items.Value").path("Items", "Anything") is query.ALL
    body = {"Links": {"Self": "x"}, "Items": [{"Timestamp": "t", "Value": 1, "Good": True}], "Other": 1}
    assert query.prune(body, sel) == {"Links": {"Self": "x"}, "Items": [{"Timestamp": "t", "Value": 1}]}
    assert query.prune(body, query.parse_selected_fields("")) == body
    assert wildcard("a?c*").fullmatch("ABCdef")
    assert not wildcard("a?c").fullmatch("abcd")


def test_encoder_joins_large_pages_in_chunks(emulator_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    st: EmulatorState = emulator_app(points=30).state.emulator
    streams = []
    for i in range(30):
        p = st.model.point(0, i)
        ev = st.model.events(p, T_NOW - 2 * HOUR, T_NOW, T_NOW)
        streams.append((serialize.ValueColumns.from_events(ev),
                        serialize.StreamFormat(p.units, p.point_type == "Int32", p.state_names())))
    streams.insert(3, (serialize.ValueColumns.empty(), serialize.StreamFormat()))
    whole = [b"".join(parts) for parts in serialize.encode_arrays(streams)]
    monkeypatch.setattr(serialize, "_CHUNK_ROWS", 7)  # chunk boundaries inside and between streams
    assert [b"".join(parts) for parts in serialize.encode_arrays(streams)] == whole
    assert whole == serialize.encode_arrays_slow(streams)


def test_streamsets_of_an_event_frame(client: TestClient) -> None:
    st = state(client)
    frames = st.eventframes.frames(T_NOW - 7 * DAY, T_NOW, T_NOW)
    frame = next(f for f in frames if st.af.element_attributes(f.webid))
    refs = st.af.element_attributes(frame.webid)
    r = client.get(f"{API}/streamsets/{frame.webid}/value")
    assert r.status_code in (200, 207)
    items = r.json()["Items"]
    assert [i["WebId"] for i in items] == [a.webid for a in refs]
    for ref, item in zip(refs, items, strict=True):
        if ref.static_value is not None:
            assert item["Value"]["Value"] == ref.static_value


def test_the_item_limit_can_be_lowered_while_the_server_runs(client: TestClient) -> None:
    """As when an administrator lowers MaxReturnedItemsPerCall mid-run: the same call is then refused as too
    large, and allowed again once the limit is raised."""
    p = of_type(state(client), "Float32", interval_s=60)
    ask = {"startTime": "2025-12-31T00:00:00Z", "endTime": "2026-01-01T00:00:00Z", "maxCount": 1000}
    assert len(recorded(client, p.webid, **ask)["Items"]) > 100
    limit = state(client).settings.max_returned_items
    assert client.post("/_emulator/limits", json={"maxReturnedItems": 100}).json() == {"maxReturnedItems": 100}
    refused = errors_of(client.get(f"{API}/streams/{p.webid}/recorded", params=ask), 400)
    assert "greater than the maximum allowed (100)" in refused[0]
    client.post("/_emulator/limits", json={"maxReturnedItems": limit})
    assert len(recorded(client, p.webid, **ask)["Items"]) > 100
    for bad in ({"maxReturnedItems": 0}, {"maxReturnedItems": "5"}, {"maxReturnedItems": True}, {}):
        errors_of(client.post("/_emulator/limits", json=bad), 400)
