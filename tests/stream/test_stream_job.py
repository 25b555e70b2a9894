"""``run_stream`` against the emulator over loopback: after a stop the table equals ground truth, with sockets
closed every second, a running clock, dead sockets, pushes out of order, unknown points, and a final commit.

The clock moves by the tests (frozen and advanced, or running plus jumps); a test waits for conditions, never
for a duration it then asserts on. Ground truth comes from the data model (``recorded_truth``), not from the
HTTP answers the job reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.compute as pc
import pytest

from piflow.emulator.routes.streaming import changed_items, resolve_stream, stream_item, value_dicts
from piflow.emulator.server import EmulatorServer
from piflow.emulator.truth import recorded_truth
from piflow.jobs.common import selected_points
from piflow.jobs.discover import run_discover
from piflow.jobs.runs import RunResult, open_client
from piflow.jobs.stream.job import StreamJob, run_stream
from piflow.jobs.stream.options import StreamOptions
from piflow.pitime import parse_iso_ticks, to_ticks
from piflow.sinks.delta import DeltaSink

from .conftest import (
    START,
    MakeServer,
    Observer,
    RecordingProgress,
    differences,
    equals_truth,
    fast_options,
    points_of,
    settings_for,
    truth,
    values_of,
    wait_for,
)

pytestmark = pytest.mark.loopback


async def stream_until(srv: EmulatorServer, target: Path, options: StreamOptions, steps: int,
                       step: timedelta = timedelta(minutes=1), url: str | None = None,
                       progress: RecordingProgress | None = None) -> tuple[RunResult, Observer]:
    """Start the job, move the clock ``steps`` times, wait until the table equals truth, then stop it."""
    observer = Observer()
    options = dataclasses.replace(options, on_status=observer)
    stop = asyncio.Event()
    job = asyncio.create_task(run_stream(settings_for(url or srv.url, target), progress, options=options, stop=stop))
    try:
        await wait_for(lambda: job.done() or (observer.stats is not None and observer.stats.commits > 0),
                       "the first commit")
        for _ in range(steps):
            srv.state.clock.advance(step)
            await asyncio.sleep(0.3)  # let pushes and reconnects happen between jumps (coverage, not asserted)
        srv.state.clock.freeze()
        await wait_for(lambda: job.done() or equals_truth(srv.state, target), "the table to catch up")
    finally:
        stop.set()
    return await job, observer


async def test_sockets_closed_every_second_with_a_running_clock(server_for: MakeServer, tmp_path: Path) -> None:
    srv = server_for(frozen=False, faults={"channel_close_every_s": 1.0})
    progress = RecordingProgress()
    result, observer = await stream_until(srv, tmp_path, fast_options(), steps=12, progress=progress)
    assert result.status == "ok", result.message
    # After the stop (and its final commit) the table is exactly the server's data, no duplicates.
    assert differences(values_of(tmp_path), truth(srv.state, tmp_path)) == ""
    details = result.details
    assert details["mode"] == "channels"
    assert details["sockets"] == 2  # 40 points, 20 per socket
    assert details["reconnects"] >= 4  # the server closed sockets while the job ran
    assert details["pushed_values"] > 0
    assert details["gap_reads"] > details["sockets"]
    assert details["updated"] > 0  # edits and late values replaced rows in place
    sources = set(values_of(tmp_path).column("source").to_pylist())
    assert sources == {"channel", "recorded"}
    assert any(n.startswith("stream [channels] 40 points, 2 sockets:") for n in progress.notes)
    assert progress.closed
    runs = DeltaSink(str(tmp_path)).read("pi_ingest_runs").to_pylist()
    assert [(r["job"], r["status"]) for r in runs if r["job"] == "stream"] == [("stream", "ok")]
    assert observer.stats is not None
    assert observer.stats.reconnects == details["reconnects"]


async def test_stop_commits_what_was_pushed(server_for: MakeServer, tmp_path: Path) -> None:
    srv = server_for()
    observer = Observer()
    options = fast_options(commit_interval_s=3600.0, on_status=observer)  # no periodic commit at all
    stop = asyncio.Event()
    job = asyncio.create_task(run_stream(settings_for(srv.url, tmp_path), options=options, stop=stop))
    await wait_for(lambda: observer.stats is not None and observer.stats.gap_reads >= 2, "the first gap reads")
    srv.state.clock.advance(timedelta(minutes=4))
    await wait_for(lambda: observer.stats is not None and observer.stats.waiting > 0, "pushed values")
    assert DeltaSink(str(tmp_path)).table("pi_values") is None  # nothing committed before the stop
    stop.set()
    result = await job
    assert result.status == "ok"
    assert differences(values_of(tmp_path), truth(srv.state, tmp_path)) == ""
    assert "channel" in values_of(tmp_path).column("source").to_pylist()
    assert result.details["inserted"] == values_of(tmp_path).num_rows  # all of it in the final commit


@pytest.mark.parametrize("heartbeat_rate", [0, 1])
async def test_silent_sockets_are_replaced_and_heartbeats_prevent_it(server_for: MakeServer, tmp_path: Path,
                                                                       heartbeat_rate: int) -> None:
    srv = server_for()
    observer = Observer()
    options = fast_options(heartbeat_rate=heartbeat_rate, dead_after_s=0.5, on_status=observer)
    stop = asyncio.Event()
    job = asyncio.create_task(run_stream(settings_for(srv.url, tmp_path), options=options, stop=stop))
    # The clock is frozen: no value changes, so only heartbeats (if asked for) cross the sockets.
    if heartbeat_rate:
        await wait_for(lambda: observer.stats is not None and observer.stats.heartbeats >= 40, "heartbeats")
    else:
        await wait_for(lambda: observer.stats is not None and observer.stats.dead_sockets >= 3, "dead sockets")
    srv.state.clock.advance(timedelta(minutes=3))
    await wait_for(lambda: equals_truth(srv.state, tmp_path), "the table to catch up")
    stop.set()
    result = await job
    assert differences(values_of(tmp_path), truth(srv.state, tmp_path)) == ""
    if heartbeat_rate:
        assert result.details["dead_sockets"] == 0
    else:
        assert result.details["dead_sockets"] >= 3
        assert result.details["heartbeats"] == 0


async def test_pushes_out_of_order_and_split_across_messages(server_for: MakeServer, tmp_path: Path) -> None:
    """Hand the job the emulator's own change sets, shuffled across messages, and commit after each one."""
    srv = server_for(late_share=0.2, edit_share=0.2)
    settings = settings_for(srv.url, tmp_path)
    await run_discover(settings)
    sink = DeltaSink(str(tmp_path))
    refs = selected_points(sink, settings.points)
    streams = [resolve_stream(srv.state, r.webid) for r in refs]
    async with open_client(settings) as client:
        job = StreamJob(settings, StreamOptions(), sink, client, refs, RecordingProgress(), RunResult(job="stream"))
        await job.prepare()
        await job.read_gap(refs)
        await job.commit()
        rng = random.Random(5)
        shared_timestamps = late = 0
        for _ in range(4):
            t0 = srv.state.clock.now_ticks()
            srv.state.clock.advance(timedelta(minutes=15))
            items = changed_items(srv.state, streams, t0, srv.state.clock.now_ticks())
            values = [(it, v) for it in items for v in it["Items"]]
            shared_timestamps += len(values) - len({(it["WebId"], v["Timestamp"]) for it, v in values})
            late += sum(1 for _, v in values if parse_iso_ticks(v["Timestamp"]) <= t0)
            rng.shuffle(values)
            for part in (values[: len(values) // 3], values[len(values) // 3:]):
                job.take_message(message(part), "channel")
                await job.commit()
        await job.flush()  # re-reads run in the background: wait for them and commit their rows
    assert shared_timestamps > 0  # the shuffles did split events that share a timestamp
    assert late > 0  # and pushed values older than what was committed
    assert differences(values_of(tmp_path), truth(srv.state, tmp_path)) == ""
    assert job.stats.reread_points > 0


def message(values: list[tuple[dict[str, Any], dict[str, Any]]]) -> bytes:
    """A channel message holding these (stream item, value) pairs in this order, one item per run of a stream."""
    items: list[dict[str, Any]] = []
    for item, value in values:
        if items and items[-1]["WebId"] == item["WebId"]:
            items[-1]["Items"].append(value)
        else:
            items.append({**item, "Items": [value]})
    return orjson.dumps({"Links": {}, "Items": items})


async def test_a_point_the_server_no_longer_knows_is_dropped(server_for: MakeServer, tmp_path: Path) -> None:
    srv = server_for()
    settings = settings_for(srv.url, tmp_path)
    await run_discover(settings)
    points = points_of(srv.state, tmp_path)
    gone = points[7]
    srv.state.deleted_points.add((0, gone.index))
    stop = asyncio.Event()
    observer = Observer()
    job = asyncio.create_task(run_stream(settings, options=fast_options(on_status=observer), stop=stop))
    await wait_for(lambda: observer.stats is not None and observer.stats.commits > 0, "a commit")
    srv.state.clock.advance(timedelta(minutes=2))
    live = [p for p in points if p is not gone]

    def caught_up() -> bool:
        now = srv.state.clock.now()
        return differences(values_of(tmp_path), recorded_truth(srv.state, live, START, now)) == ""

    await wait_for(caught_up, "the table to catch up")
    stop.set()
    result = await job
    assert result.details["missing"] == [gone.webid]
    assert caught_up()
    assert gone.webid not in set(values_of(tmp_path).column("webid").to_pylist())
    assert pc.count_distinct(values_of(tmp_path).column("webid")).as_py() == len(live)


async def test_pushes_wait_for_the_first_gap_after_a_crash_left_rows_past_the_watermark(
        server_for: MakeServer, tmp_path: Path) -> None:
    """A run died between its commit and its watermark update: the table holds rows the watermark does not
    cover. A pushed value at such a timestamp must not go in as seq 0 before the gap read has been committed."""
    srv = server_for()
    settings = settings_for(srv.url, tmp_path)
    await run_discover(settings)
    sink = DeltaSink(str(tmp_path))
    refs = selected_points(sink, settings.points)
    async with open_client(settings) as client:
        first = StreamJob(settings, StreamOptions(), sink, client, refs, RecordingProgress(), RunResult(job="stream"))
        await first.prepare()
        await first.read_gap(refs)
        await first.commit()
    shutil.rmtree(tmp_path / "pi_watermarks")  # as if the run died before advancing the watermarks
    # The second of two events sharing a timestamp, pushed alone (as a channel may do).
    point, ts = shared_timestamp(srv, refs)
    ev = srv.state.model.events(point, ts, ts, srv.state.clock.now_ticks())
    assert len(ev) == 2
    second = value_dicts(ev, point.units)[1:]
    body = orjson.dumps({"Links": {}, "Items": [stream_item(resolve_stream(srv.state, point.webid), second)]})
    async with open_client(settings) as client:
        job = StreamJob(settings, StreamOptions(), sink, client, refs, RecordingProgress(), RunResult(job="stream"))
        await job.prepare()
        assert job.marks == {}
        job.take_message(body, "channel")
        await job.commit()
        assert job.stats.waiting == 1  # held: no gap committed yet in this run
        # ...so the table is still exactly right (as seq 0 it would have replaced the first event's row).
        assert differences(values_of(tmp_path), truth(srv.state, tmp_path)) == ""
        await job.read_gap(refs)
        await job.flush()
    assert differences(values_of(tmp_path), truth(srv.state, tmp_path)) == ""
    assert job.stats.reread_points == 1


def shared_timestamp(srv: EmulatorServer, refs: list[Any]) -> tuple[Any, int]:
    """A streamed point and a timestamp (ticks) holding two events, between START and now."""
    now = srv.state.clock.now_ticks()
    for r in refs:
        p = srv.state.model.point_by_webid(r.webid)
        ev = srv.state.model.events(p, to_ticks(START), now, now)  # type: ignore[arg-type]
        ticks = ev.ticks.tolist()
        for a, b in itertools.pairwise(ticks):
            if a == b:
                return p, a
    pytest.fail("no two events share a timestamp in this data")
