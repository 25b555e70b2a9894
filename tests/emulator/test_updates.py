"""Stream updates (markers) through the real app in-process, checked against the data model's own snapshots."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from piflow import webids
from piflow.emulator import EmulatorSettings, create_app, state_of
from piflow.emulator.model import PointSpec
from piflow.emulator.routes import streaming as rs
from piflow.emulator.state import EmulatorState
from piflow.emulator.truth import pi_value
from piflow.pitime import TICKS_PER_SECOND, format_ticks

NOW = datetime(2026, 1, 1, tzinfo=UTC)
XRW = {"X-Requested-With": "test"}


def settings(seed: int = 21) -> EmulatorSettings:
    return EmulatorSettings(seed=seed, points=40, now=NOW, frozen=True, late_share=0.3, edit_share=0.3)


@pytest.fixture
def app_client() -> Iterator[tuple[TestClient, EmulatorState]]:
    app = create_app(settings())
    with TestClient(app) as client:
        yield client, state_of(app)


# ---- expectations built from the model, independently of the code under test -----------------------------

def expected_events(state: EmulatorState, p: PointSpec, t0: int, t1: int) -> list[dict[str, Any]]:
    """Events the server holds at t1 but did not hold (with that value) at t0, over a two-day window."""
    start = t0 - 2 * 86400 * TICKS_PER_SECOND
    before = state.model.events(p, start, t0, t0)
    after = state.model.events(p, start, t1, t1)
    held = Counter(zip(before.ticks.tolist(), before.variant.tolist(), strict=True))
    per_ts_before = Counter(before.ticks.tolist())
    per_ts_after = Counter(after.ticks.tolist())
    out = []
    for i in range(len(after)):
        key = (int(after.ticks[i]), int(after.variant[i]))
        if held[key]:
            held[key] -= 1
            continue
        ts = key[0]
        action = "Update" if per_ts_before[ts] == per_ts_after[ts] else "Add"
        out.append({
            "Action": action, "PreviousEventAction": "PreviousEventArchived" if action == "Add" else "None",
            "Timestamp": format_ticks(ts), "Value": pi_value(after, i), "UnitsAbbreviation": p.units,
            "Good": bool(after.good[i]), "Questionable": bool(after.questionable[i]),
            "Substituted": bool(after.substituted[i]), "Annotated": bool(after.annotated[i]),
        })
    return out


def register(client: TestClient, webid: str) -> str:
    r = client.post(f"/piwebapi/streams/{webid}/updates", headers=XRW)
    assert r.status_code == 200, r.text
    marker: str = r.json()["LatestMarker"]
    return marker


# ---- single streams ------------------------------------------------------------------------------------------

def test_register_names_the_source(app_client: tuple[TestClient, EmulatorState]) -> None:
    client, state = app_client
    p = state.model.point(0, 7)
    r = client.post(f"/piwebapi/streams/{p.webid}/updates", headers=XRW)
    assert r.status_code == 200
    body = r.json()
    assert body["Source"] == p.webid
    assert body["Status"] == "Succeeded"
    assert body["SourceName"] == p.name
    assert body["SourcePath"] == p.path
    assert isinstance(body["LatestMarker"], str)
    assert body["LatestMarker"]


def test_read_returns_the_model_changes_with_adds_and_updates(app_client: tuple[TestClient, EmulatorState]) -> None:
    client, state = app_client
    t0 = state.clock.now_ticks()
    markers = {i: register(client, state.model.point(0, i).webid) for i in range(12)}
    state.clock.advance(timedelta(minutes=8))
    t1 = state.clock.now_ticks()
    actions: Counter[str] = Counter()
    late = 0
    for i, marker in markers.items():
        p = state.model.point(0, i)
        r = client.get(f"/piwebapi/streams/updates/{marker}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["Source"] == p.webid
        assert body["Status"] == "Succeeded"
        assert body["RequestedMarker"] == marker
        assert body["LatestMarker"] != marker
        expected = expected_events(state, p, t0, t1)
        assert body["Events"] == expected
        actions.update(e["Action"] for e in expected)
        late += sum(1 for e in expected if e["Action"] == "Add" and e["Timestamp"] <= format_ticks(t0))
    # The scenario exercises late arrivals and edits, not just new values.
    assert actions["Add"] > 0
    assert actions["Update"] > 0
    assert late > 0


def test_markers_chain_and_can_be_reread(app_client: tuple[TestClient, EmulatorState]) -> None:
    client, state = app_client
    p = next(state.model.point(0, i) for i in range(40) if state.model.point(0, i).interval_ticks <= 60 * 10**7)
    t0 = state.clock.now_ticks()
    m1 = register(client, p.webid)
    state.clock.advance(timedelta(minutes=4))
    t1 = state.clock.now_ticks()
    first = client.get(f"/piwebapi/streams/updates/{m1}").json()
    m2 = first["LatestMarker"]
    state.clock.advance(timedelta(minutes=4))
    t2 = state.clock.now_ticks()
    second = client.get(f"/piwebapi/streams/updates/{m2}").json()
    assert first["Events"] == expected_events(state, p, t0, t1)
    assert second["Events"] == expected_events(state, p, t1, t2)
    assert second["Events"]  # a point sampled every minute or faster has values in 4 minutes
    # An older marker still answers for its own time (it was used less than the retention ago).
    again = client.get(f"/piwebapi/streams/updates/{m2}").json()
    assert again["Events"] == second["Events"]
    # No virtual time passed since the latest marker: nothing new, and the marker stays the same.
    m3 = second["LatestMarker"]
    idle = client.get(f"/piwebapi/streams/updates/{m3}").json()
    assert idle["Events"] == []
    assert idle["LatestMarker"] == m3


def test_unused_markers_expire_after_ten_virtual_minutes(app_client: tuple[TestClient, EmulatorState]) -> None:
    client, state = app_client
    p = state.model.point(0, 5)
    stale = register(client, p.webid)
    kept = register(client, p.webid)
    state.clock.advance(timedelta(minutes=9))
    assert client.get(f"/piwebapi/streams/updates/{kept}").status_code == 200  # used: retention restarts
    state.clock.advance(timedelta(minutes=1, seconds=1))
    r = client.get(f"/piwebapi/streams/updates/{stale}")
    assert r.status_code == 404
    assert r.json()["Errors"]
    assert stale in r.json()["Errors"][0]
    assert client.get(f"/piwebapi/streams/updates/{kept}").status_code == 200
    state.clock.advance(timedelta(minutes=10, seconds=1))
    assert client.get(f"/piwebapi/streams/updates/{kept}").status_code == 404


def test_retention_is_a_module_setting(app_client: tuple[TestClient, EmulatorState],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    client, state = app_client
    monkeypatch.setattr(rs, "MARKER_RETENTION_S", 60.0)
    marker = register(client, state.model.point(0, 1).webid)
    state.clock.advance(timedelta(seconds=59))
    assert client.get(f"/piwebapi/streams/updates/{marker}").status_code == 200
    state.clock.advance(timedelta(seconds=61))
    assert client.get(f"/piwebapi/streams/updates/{marker}").status_code == 404


def test_unknown_marker_and_bad_webids(app_client: tuple[TestClient, EmulatorState]) -> None:
    client, state = app_client
    r = client.get("/piwebapi/streams/updates/0123456789abcdef0123456789abcdef_9")
    assert r.status_code == 404
    assert isinstance(r.json()["Errors"], list)
    assert client.post("/piwebapi/streams/NOT-A-WEBID/updates", headers=XRW).status_code == 400
    unknown = webids.point_path_only(state.model.server(0).name, "NO.SUCH.TAG")
    r = client.post(f"/piwebapi/streams/{unknown}/updates", headers=XRW)
    assert r.status_code == 404
    assert r.json()["Errors"]


def test_pathonly_webids_register_too(app_client: tuple[TestClient, EmulatorState]) -> None:
    client, state = app_client
    p = state.model.point(0, 9)
    r = client.post(f"/piwebapi/streams/{p.path_webid}/updates", headers=XRW)
    assert r.status_code == 200
    assert r.json()["Source"] == p.path_webid


def test_a_deleted_point_loses_its_updates(app_client: tuple[TestClient, EmulatorState]) -> None:
    client, state = app_client
    p = state.model.point(0, 11)
    marker = register(client, p.webid)
    state.deleted_points.add((0, 11))
    assert client.get(f"/piwebapi/streams/updates/{marker}").status_code == 404
    assert client.post(f"/piwebapi/streams/{p.webid}/updates", headers=XRW).status_code == 404


def test_selected_fields_trim_the_answer(app_client: tuple[TestClient, EmulatorState]) -> None:
    client, state = app_client
    marker = register(client, state.model.point(0, 2).webid)
    state.clock.advance(timedelta(minutes=5))
    body = client.get(f"/piwebapi/streams/updates/{marker}?selectedFields=LatestMarker;Events.Timestamp").json()
    assert set(body) == {"LatestMarker", "Events"}
    assert body["Events"]
    assert all(set(e) == {"Timestamp"} for e in body["Events"])


def test_markers_are_deterministic() -> None:
    def markers() -> list[str]:
        app = create_app(settings(seed=99))
        st = state_of(app)
        with TestClient(app) as c:
            return [register(c, st.model.point(0, i).webid) for i in range(3)]

    first, second = markers(), markers()
    assert first == second
    assert len(set(first)) == 3


# ---- stream sets ---------------------------------------------------------------------------------------------

def test_streamset_register_and_read(app_client: tuple[TestClient, EmulatorState]) -> None:
    client, state = app_client
    a, b = state.model.point(0, 4), state.model.point(0, 6)
    t0 = state.clock.now_ticks()
    r = client.post("/piwebapi/streamsets/updates", params=[("webId", a.webid), ("webId", b.path_webid)],
                    headers=XRW)
    assert r.status_code == 200, r.text
    items = r.json()["Items"]
    assert [i["Source"] for i in items] == [a.webid, b.path_webid]
    assert all(i["Status"] == "Succeeded" and i["LatestMarker"] for i in items)
    state.clock.advance(timedelta(minutes=6))
    t1 = state.clock.now_ticks()
    r = client.get("/piwebapi/streamsets/updates", params=[("marker", i["LatestMarker"]) for i in items])
    assert r.status_code == 200
    got = r.json()["Items"]
    assert [g["Source"] for g in got] == [a.webid, b.path_webid]
    assert got[0]["Events"] == expected_events(state, a, t0, t1)
    assert got[1]["Events"] == expected_events(state, b, t0, t1)


def test_streamset_read_with_an_unknown_marker(app_client: tuple[TestClient, EmulatorState]) -> None:
    client, state = app_client
    good = register(client, state.model.point(0, 8).webid)
    r = client.get("/piwebapi/streamsets/updates", params=[("marker", good), ("marker", "nope_1")])
    assert r.status_code == 207
    first, second = r.json()["Items"]
    assert first["Status"] == "Succeeded"
    assert second["Status"] == "Failed"
    assert second["RequestedMarker"] == "nope_1"
    assert second["Errors"]
    r = client.get("/piwebapi/streamsets/updates", params=[("marker", "nope_1"), ("marker", "nope_2")])
    assert r.status_code == 404
    assert len(r.json()["Errors"]) == 2
    assert client.get("/piwebapi/streamsets/updates").status_code == 400


def test_streamset_register_refuses_unknown_webids(app_client: tuple[TestClient, EmulatorState]) -> None:
    client, state = app_client
    r = client.post("/piwebapi/streamsets/updates",
                    params=[("webId", state.model.point(0, 1).webid), ("webId", "garbage")], headers=XRW)
    assert r.status_code == 400
    assert any("garbage" in e for e in r.json()["Errors"])
    assert client.post("/piwebapi/streamsets/updates", headers=XRW).status_code == 400
