"""``run_events`` against the emulator: ground truth, frames closing in place, re-reads, watermarks, filters,
frames whose element is gone; and the pure row functions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from piflow import schema
from piflow.emulator.af.eventframes import FrameInfo
from piflow.emulator.server import EmulatorServer
from piflow.errors import ConfigError, NotFoundError
from piflow.jobs.af.events import EventsRead, frame_changes, value_columns
from piflow.jobs.af.events import run_events as _run_events
from piflow.jobs.af.job import run_af
from piflow.jobs.runs import RunResult
from tests.af.conftest import T0, live, rows_of, settings_for, version_of

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def run_events(srv: EmulatorServer, target: Path, start: str = "*-1d", **kw: Any) -> RunResult:
    kw.setdefault("page_size", 40)
    return asyncio.run(_run_events(settings_for(srv, target, start=start), **kw))


def ticks(dt: datetime) -> int:
    return int((dt - EPOCH).total_seconds()) * 10_000_000


def as_dt(t: int) -> datetime:
    return EPOCH + timedelta(microseconds=t // 10)


def truth(srv: EmulatorServer, start: datetime, end: datetime) -> dict[str, FrameInfo]:
    asof = srv.state.clock.now_ticks()
    return {f.webid: f for f in srv.state.eventframes.frames(ticks(start), ticks(end), asof)}


def assert_frame(row: dict[str, Any], f: FrameInfo) -> None:
    want = {
        "id": f.id, "name": f.name, "path": f.path, "description": f.description, "template": f.template_name,
        "categories": list(f.category_names), "severity": f.severity, "start_time": as_dt(f.start),
        "end_time": None if f.end is None else as_dt(f.end), "in_progress": f.end is None,
        "ref_element_webids": list(f.ref_element_webids), "primary_element_webid": f.ref_element_webids[0],
        "is_acknowledged": f.is_acknowledged, "can_be_acknowledged": f.can_be_acknowledged,
        "is_annotated": f.is_annotated, "is_locked": f.is_locked, "are_values_captured": f.are_values_captured,
        "database": "Plant", "is_deleted": False,
    }
    assert {k: row[k] for k in want} == want, f.name


def assert_attributes(rows: list[dict[str, Any]], frames: dict[str, FrameInfo]) -> None:
    got: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["is_deleted"]:
            continue
        value = r["value_double"] if r["value_kind"] == "number" else r["value_string"]
        got.setdefault(r["frame_webid"], {})[r["name"]] = value
    assert set(got) == set(frames)
    for webid, f in frames.items():
        assert got[webid] == f.attributes, f.name


# ---- ground truth and paging ---------------------------------------------------------------------------------
def test_every_frame_and_its_values_equal_ground_truth(emulator: EmulatorServer, tmp_path: Path) -> None:
    result = run_events(emulator, tmp_path)
    assert result.status == "ok", result.message
    frames = truth(emulator, T0 - timedelta(days=1), T0)
    assert len(frames) > 5 * 40  # many pages
    assert any(f.end is None for f in frames.values())
    rows = rows_of(tmp_path, "pi_event_frames")
    assert sorted(r["webid"] for r in rows) == sorted(frames)
    for r in rows:
        assert_frame(r, frames[r["webid"]])
    assert_attributes(rows_of(tmp_path, "pi_event_frame_attributes"), frames)
    assert (result.window_start, result.window_end) == (T0 - timedelta(days=1), T0)


def test_second_run_reads_from_the_watermark_and_commits_nothing(emulator: EmulatorServer, tmp_path: Path) -> None:
    run_events(emulator, tmp_path)
    versions = (version_of(tmp_path, "pi_event_frames"), version_of(tmp_path, "pi_event_frame_attributes"))
    again = run_events(emulator, tmp_path, overlap="2h")
    assert (again.window_start, again.window_end) == (T0 - timedelta(hours=2), T0)
    assert again.values_written == 0
    assert (version_of(tmp_path, "pi_event_frames"), version_of(tmp_path, "pi_event_frame_attributes")) == versions
    webids = [r["webid"] for r in rows_of(tmp_path, "pi_event_frames")]
    assert len(webids) == len(set(webids))


def test_frame_in_progress_closes_in_place(emulator: EmulatorServer, tmp_path: Path) -> None:
    run_events(emulator, tmp_path)
    first = {r["webid"]: r for r in rows_of(tmp_path, "pi_event_frames")}
    open_before = {w for w, r in first.items() if r["in_progress"]}
    assert open_before
    emulator.state.clock.advance(timedelta(hours=9))  # longer than any frame lasts: all of them closed
    result = run_events(emulator, tmp_path)
    assert result.status == "ok", result.message
    rows = rows_of(tmp_path, "pi_event_frames")
    assert len({r["webid"] for r in rows}) == len(rows), "a frame got a second row"
    by_webid = {r["webid"]: r for r in rows}
    now = T0 + timedelta(hours=9)
    frames = truth(emulator, T0 - timedelta(days=1), now)
    assert set(by_webid) == set(frames)
    for w in open_before:
        row = by_webid[w]
        assert_frame(row, frames[w])
        assert row["in_progress"] is False
        assert row["end_time"] is not None
        assert row["first_seen"] == first[w]["first_seen"]
    # Values captured at the close replace the running ones (Downtime's Duration grows while open).
    closed = {w: frames[w] for w in open_before}
    attrs = [r for r in rows_of(tmp_path, "pi_event_frame_attributes") if r["frame_webid"] in closed]
    assert_attributes(attrs, closed)


def test_open_frames_are_reread_when_the_search_no_longer_returns_them(emulator: EmulatorServer,
                                                                      tmp_path: Path) -> None:
    run_events(emulator, tmp_path, template="Downtime")
    open_downtime = {r["webid"] for r in rows_of(tmp_path, "pi_event_frames") if r["in_progress"]}
    assert open_downtime
    emulator.state.clock.advance(timedelta(hours=9))
    run_events(emulator, tmp_path, template="Alarm")  # another scope: its search returns no Downtime frame
    rows = {r["webid"]: r for r in rows_of(tmp_path, "pi_event_frames")}
    frames = truth(emulator, T0 - timedelta(days=1), T0 + timedelta(hours=9))
    for w in open_downtime:
        assert rows[w]["in_progress"] is False
        assert_frame(rows[w], frames[w])
    templates = {r["template"] for r in rows.values()}
    assert templates == {"Downtime", "Alarm"}


# ---- filters ---------------------------------------------------------------------------------------------------
def test_filters_select_what_pi_selects(emulator: EmulatorServer, tmp_path: Path) -> None:
    frames = truth(emulator, T0 - timedelta(days=1), T0)
    run_events(emulator, tmp_path / "a", template="Alarm", category="Safety")
    want = {w for w, f in frames.items() if f.template_name == "Alarm" and f.severity == "Critical"}
    assert want
    assert {r["webid"] for r in rows_of(tmp_path / "a", "pi_event_frames")} == want
    run_events(emulator, tmp_path / "b", name="Batch-*", referenced_element="PMP*")
    want = {w for w, f in frames.items() if f.name.startswith("Batch-") and f.ref_element_names[0].startswith("PMP")}
    assert want
    assert {r["webid"] for r in rows_of(tmp_path / "b", "pi_event_frames")} == want


# ---- a frame whose referenced element is gone ----------------------------------------------------------------
def test_frame_whose_element_was_removed_keeps_it_and_joins_its_tombstone(emulator: EmulatorServer,
                                                                         tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path, start="*-1d")
    asyncio.run(run_af(settings))
    frames = truth(emulator, T0 - timedelta(days=1), T0)
    victim = next(iter(frames.values()))
    element = victim.ref_element_webids[0]
    referencing = {w for w, f in frames.items() if f.ref_element_webids[0] == element}
    emulator.state.af.remove_element(element)
    asyncio.run(run_af(settings))
    result = run_events(emulator, tmp_path)
    assert f"{len(referencing)} event frames reference AF elements that were removed" in result.message
    rows = live(rows_of(tmp_path, "pi_event_frames"))
    assert {w for w, r in rows.items() if r["primary_element_webid"] == element} == referencing
    elements = {r["webid"]: r for r in rows_of(tmp_path, "pi_af_elements")}
    assert elements[element]["is_deleted"] is True
    assert elements[element]["name"] == victim.ref_element_names[0]


# ---- pure parts -------------------------------------------------------------------------------------------------
def test_value_columns_keep_every_kind() -> None:
    assert value_columns(12.5)["value_double"] == 12.5
    assert value_columns(True)["value_double"] == 1.0
    assert value_columns("Resin A")["value_string"] == "Resin A"
    digital = value_columns({"Name": "Running", "Value": 1, "IsSystem": False})
    assert (digital["value_kind"], digital["state_code"], digital["state_name"]) == (schema.KIND_DIGITAL, 1,
                                                                                      "Running")
    system = value_columns({"Name": "I/O Timeout", "Value": 246, "IsSystem": True})
    assert (system["value_kind"], system["value_double"], system["state_code"]) == (schema.KIND_SYSTEM, None, 246)
    assert value_columns(None)["value_kind"] == schema.KIND_NULL


def test_frame_changes_tombstone_only_open_frames_the_server_lost() -> None:
    now = T0 + timedelta(hours=1)

    def row(w: str, open_: bool) -> dict[str, Any]:
        return {"webid": w, "name": w, "in_progress": open_, "end_time": None if open_ else T0, "is_deleted": False,
                "first_seen": T0, "last_seen": T0}

    existing = [row("kept", False), row("lost", True), row("unseen", False), row("closing", True)]
    read = EventsRead(frames=[row("kept", False), {**row("closing", False), "first_seen": now}], gone=["lost"])
    changes = {c["webid"]: c for c in frame_changes(existing, read, now)}
    assert set(changes) == {"lost", "closing"}
    assert changes["lost"]["is_deleted"] is True
    assert changes["closing"]["first_seen"] == T0  # the row is updated, its first sighting kept


def test_bad_overlap_and_unknown_database_are_clear_errors(emulator: EmulatorServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="overlap"):
        run_events(emulator, tmp_path, overlap="a while")
    with pytest.raises(NotFoundError, match=r"asset database 'Nope' not found .*Plant"):
        run_events(emulator, tmp_path, database="Nope")
