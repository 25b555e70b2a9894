"""Every job against every emulator profile (servers without system/status, /batch, streamsets, channels or
selectedFields, with partial /batch answers, a silent maxCount cap, Links.Next paging, an old version, and all
of these at once): the tables equal ground truth, and the run row names the fallback the server forced.

The ground truth comes from the emulator's model (or, for views, from single-stream calls, which every profile
serves), never from what the job wrote.
"""

from __future__ import annotations

import asyncio
import fnmatch
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from piflow.emulator import EmulatorSettings
from piflow.emulator.server import EmulatorServer
from piflow.emulator.settings import PROFILES, ProfileSettings
from piflow.jobs.af.events import run_events
from piflow.jobs.af.job import run_af
from piflow.jobs.af.views import run_view
from piflow.jobs.backfill import run_backfill
from piflow.jobs.discover import run_discover
from piflow.jobs.runs import RunResult
from piflow.jobs.sync import run_sync
from tests.af.test_af import assert_matches_truth
from tests.af.test_events import assert_attributes, assert_frame
from tests.af.test_events import truth as frames_truth
from tests.af.test_views import assert_cells_equal, interpolated_truth
from tests.connector.conftest import T0, settings_for, table_of
from tests.connector.test_sync import truth as values_truth
from tests.rows import assert_same_rows
from tests.stream.conftest import differences, fast_options, values_of
from tests.stream.conftest import truth as stream_truth
from tests.stream.test_stream_job import stream_until

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(180)]

FILTER = "BRK.A0.CMP*"  # 40 points of every type
# What each profile makes the jobs do instead, as the run row says it (a profile absent here forces nothing
# that is noted: ignored selectedFields and Links.Next paging are read as they come).
FORCED = {
    "no-status": ["refuses system/status"],
    "no-batch": ["refuses /batch"],
    "partial-batch": ["leave request ids out"],
    "no-streamsets": ["streamsets"],
    "low-cap": ["at most 250 values"],
    "minimal": ["refuses system/status", "refuses /batch", "streamsets", "at most 250 values"],
}
# Which jobs meet which fallback: the clock (backfill with relative times, sync, events, view), /batch (af,
# events, view), streamsets (backfill, sync, af, events, view), the cap (backfill, sync: recorded pages).
MEETS = {
    "refuses system/status": {"sync", "events", "view"},
    "refuses /batch": {"af", "events", "view"},
    "leave request ids out": {"af", "events", "view"},
    "streamsets": {"backfill", "sync", "af", "events", "view"},
    "at most 250 values": {"backfill", "sync"},
}

# Without streamsets, everything the events job sends through /batch is a streamset: it is read directly, so
# /batch is never asked.
SPARED: dict[str, set[tuple[str, str]]] = {"refuses /batch": {("minimal", "events")}}


def emulator(profile: str, **kw: Any) -> EmulatorServer:
    base: dict[str, Any] = {"points": 1000, "seed": 11, "now": T0, "frozen": True, "max_returned_items": 5_000,
                            "profile": PROFILES[profile]}
    base.update(kw)
    return EmulatorServer(EmulatorSettings(**base))


def assert_forced(profile: str, job: str, result: RunResult) -> None:
    """The run row names every fallback this profile forces on this job, and none it does not."""
    want = [note for note in FORCED.get(profile, [])
            if job in MEETS[note] and (profile, job) not in SPARED.get(note, set())]
    for note in want:
        assert note in result.message, f"{profile}/{job}: {note!r} not in {result.message!r}"
    if profile == "complete":
        assert result.fallbacks == [], result.fallbacks


@pytest.fixture(params=list(PROFILES))
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_discover(profile: str, tmp_path: Path) -> None:
    with emulator(profile) as srv:
        result = asyncio.run(run_discover(settings_for(srv, tmp_path, points=FILTER)))
        assert result.status == "ok", result.message
        model = srv.state.model
        want = {p.webid: (p.name, p.point_type, p.units or None)
                for p in (model.point(0, i) for i in range(1000)) if fnmatch.fnmatchcase(p.name, FILTER)}
    rows = table_of(tmp_path, "pi_points").to_pylist()
    assert {r["webid"]: (r["name"], r["point_type"], r["engineering_units"]) for r in rows} == want
    assert len(want) == 40


def test_backfill(profile: str, tmp_path: Path) -> None:
    # Half a day in one window: ~600 values per point, over the low cap of 250 (PI's item limit lets maxCount ask
    # for far more).
    start, end = T0 - timedelta(hours=12), T0 - timedelta(minutes=10)
    with emulator(profile, max_returned_items=150_000) as srv:
        s = settings_for(srv, tmp_path, points=FILTER, start=start.isoformat(), end=end.isoformat(), window="12h")
        result = asyncio.run(run_backfill(s))
        assert result.status == "ok", result.message
        expected = values_truth(srv, tmp_path, start, end)
    values = table_of(tmp_path)
    assert_same_rows(values, expected.filter(pc.less(expected.column("timestamp"), end)))  # backfill is [start, end)
    assert_forced(profile, "backfill", result)


def test_sync(profile: str, tmp_path: Path) -> None:
    start = T0 - timedelta(hours=12)  # the first sync reads 6 h slices: over the low cap of 250 values per point
    with emulator(profile, max_returned_items=150_000) as srv:
        s = settings_for(srv, tmp_path, points=FILTER, start=start.isoformat(), lookback="3h", safety_lag="0s")
        for _ in range(2):
            srv.state.clock.advance(timedelta(minutes=20))
            result = asyncio.run(run_sync(s))
            assert result.status == "ok", result.message
        now = srv.state.clock.now()
        expected = values_truth(srv, tmp_path, start, now)
    values = table_of(tmp_path)  # the second sync looks back before start: compare from start on
    assert_same_rows(values.filter(pc.greater_equal(values.column("timestamp"), start)), expected)
    assert_forced(profile, "sync", result)


async def test_stream(profile: str, tmp_path: Path) -> None:
    from tests.stream.conftest import emulator_settings

    settings = emulator_settings(profile=PROFILES[profile])
    with EmulatorServer(settings) as srv:
        result, _ = await stream_until(srv, tmp_path, fast_options(), steps=2)
        assert result.status == "ok", result.message
        assert differences(values_of(tmp_path), stream_truth(srv.state, tmp_path)) == ""
    # Channels and stream updates are streamset routes here (streamsets/channel, streamsets/updates).
    p = PROFILES[profile]
    channels, updates = p.channels and p.streamsets, p.stream_updates and p.streamsets
    want = ["channels"] if channels else ["channels", "updates"] if updates else ["channels", "updates", "poll"]
    assert result.details["modes_tried"] == want
    if not channels:
        assert "channels unavailable" in result.message


def test_af(profile: str, tmp_path: Path) -> None:
    with emulator(profile, points=500, seed=4, max_returned_items=2_000) as srv:
        result = asyncio.run(run_af(settings_for(srv, tmp_path, points="*"), page_size=7))
        assert result.status == "ok", result.message
        assert_matches_truth(srv, tmp_path)
    assert_forced(profile, "af", result)


def test_events(profile: str, tmp_path: Path) -> None:
    with emulator(profile, points=500, seed=4, max_returned_items=2_000) as srv:
        result = asyncio.run(run_events(settings_for(srv, tmp_path, points="*", start="*-1d"), page_size=40))
        assert result.status == "ok", result.message
        frames = frames_truth(srv, T0 - timedelta(days=1), T0)
    rows = table_of(tmp_path, "pi_event_frames").to_pylist()
    assert sorted(r["webid"] for r in rows) == sorted(frames)
    for r in rows:
        assert_frame(r, frames[r["webid"]])
    assert_attributes(table_of(tmp_path, "pi_event_frame_attributes").to_pylist(), frames)
    assert_forced(profile, "events", result)


def test_view(profile: str, tmp_path: Path) -> None:
    with emulator(profile, points=500, seed=4, max_returned_items=2_000) as srv:
        result = asyncio.run(run_view(settings_for(srv, tmp_path, points="*"), template="Pump", interval="1h",
                                      start="*-1d", end="*"))
        assert result.status == "ok", result.message
        truth = asyncio.run(interpolated_truth(srv, interval="1h"))
        pumps = {e.webid for e in srv.state.af.all_elements("Plant") if e.template_name == "Pump"}
    rows = table_of(tmp_path, "pi_view_pump").to_pylist()
    assert {r["element_webid"] for r in rows} == pumps
    assert_cells_equal(rows, truth)
    assert_forced(profile, "view", result)


def test_a_server_without_any_clock_runs_on_this_machines_clock_and_says_so(tmp_path: Path) -> None:
    """No system/status and no Date header: absolute times still read exactly; the run row warns that the skew
    to PI is unknown."""
    start, end = T0 - timedelta(hours=2), T0 - timedelta(minutes=10)
    with EmulatorServer(EmulatorSettings(points=1000, seed=11, now=T0, frozen=True,
                                         profile=ProfileSettings(system_status=False, date_header=False))) as srv:
        s = settings_for(srv, tmp_path, points=FILTER, start=start.isoformat(), end=end.isoformat(), window="1h")
        result = asyncio.run(run_backfill(s))
        assert result.status == "ok", result.message
        expected = values_truth(srv, tmp_path, start, end)
    assert_same_rows(table_of(tmp_path), expected.filter(pc.less(expected.column("timestamp"), end)))
    assert "refuses system/status" in result.message
    assert "using this machine's clock, so the skew to the PI server is unknown" in result.message


def test_partial_batch_answers_are_asked_again_then_made_directly(tmp_path: Path) -> None:
    """Ids a /batch answer leaves out are sent again once, then as plain requests: none is dropped."""
    from piflow.client.api import PiClient
    from piflow.jobs.batching import fetch_many

    async def run(srv: EmulatorServer) -> list[Any]:
        async with PiClient(srv.url) as client:
            asks = [f"points/{srv.state.model.point(0, i).webid}" for i in range(10)]
            answers = await fetch_many(client, asks)
            direct = [await client.http.get_json(a) for a in asks]
            assert [a.content for a in answers] == direct
            return list(client.caps.notes)

    with emulator("partial-batch") as srv:
        before = srv.state.stats.requests
        notes = asyncio.run(run(srv))
        # one /batch, one for the left-out ids (some left out again), the rest directly, then the 10 checks
        assert srv.state.stats.requests - before > 2 + 10
    assert any("leave request ids out" in n for n in notes)
