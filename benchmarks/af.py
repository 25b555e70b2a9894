"""Asset model and event frames benchmark: prints figures, asserts nothing.

Runs the emulator in a separate process (uvicorn on ``create_app(EmulatorSettings(...))``; the ``piflow emulator``
command has no AF flags) and measures, on this machine:

1. ``run_af`` over 10,000 elements x ~12 attributes (50,000 PI points): wall time and requests, first run and
   an unchanged re-run (goal: under 30 s and under 100 requests);
2. ``run_events`` over 100,000 event frames in a year, frames only: frames/s (goal: 20,000 frames/s), then the
   unchanged re-run;
3. ``run_events`` with attribute values over one week of the same frames: frames/s.

Usage: python benchmarks/af.py [--quick] [--workers N]   (N emulator worker processes, default 1)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2

from _support import free_port, serving

NOW = datetime(2026, 1, 1, tzinfo=UTC)
_ENV = "PIFLOW_BENCH_EMULATOR"


def make_app() -> Any:
    """uvicorn factory for the emulator workers (settings come from the environment as JSON)."""
    from piflow.emulator import EmulatorSettings, create_app

    return create_app(EmulatorSettings(**json.loads(os.environ[_ENV])))


def serve(port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run("af:make_app", factory=True, host="127.0.0.1", port=port, workers=workers, log_level="warning",
                access_log=False, lifespan="off", app_dir=str(Path(__file__).parent))


@contextmanager
def emulator(workers: int, **settings: Any) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, _ENV: json.dumps({"now": NOW.isoformat(), "frozen": True, "seed": 7, **settings})}
    cmd = [sys.executable, __file__, "--serve", str(port), "--workers", str(workers)]
    with serving(cmd, port, timeout_s=120, env=env) as url:
        # Each worker builds its AF tree on first use: do that before anything is measured (separate
        # connections land on different workers).
        for _ in range(4 * workers):
            httpx2.get(f"{url}/elements", params={"path": "\\\\PIEMU-AF\\Plant\\Enterprise"}, timeout=300)
        yield url


def timed(coro: Any) -> tuple[Any, float]:
    """Run a job; returns (result, wall seconds) and prints the CPU time piflow itself used (the rest of the wall
    time is the emulator's, in its own process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = asyncio.run(coro)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"  [{result.job}: piflow CPU {cpu:.1f} s of {wall:.1f} s wall]")
    return result, wall


def bench_af(workers: int, elements: int, lake: Path) -> None:
    from piflow.config import PiflowSettings
    from piflow.jobs.af.job import run_af

    with emulator(workers, points=elements * 5, af_elements=elements) as url:
        settings = PiflowSettings(url=url, target=str(lake))
        first, wall = timed(run_af(settings))
        d = first.details
        print(f"af first run: {d['elements']:,} elements, {d['attributes']:,} attributes in {wall:.1f} s "
              f"({d['elements'] / wall:,.0f} elements/s), {first.requests} requests "
              f"(goal: < 30 s, < 100 requests); status {first.status}; phases {d['seconds']}")
        again, wall2 = timed(run_af(settings))
        print(f"af unchanged re-run: {wall2:.1f} s, {again.requests} requests, {again.values_written} rows written")


async def fetch_only(url: str, days: int, parts: int) -> int:
    """The same search pages as ``run_events`` (the window cut into the same slices, searched at once), fetched
    and thrown away undecoded: what the emulator alone can serve (the ceiling of the job). Frames overlapping
    two slices are counted twice."""
    from piflow.client.api import PiClient
    from piflow.jobs.af.events import FRAME_FIELDS, split_window
    from piflow.jobs.common import server_now
    from piflow.pitime import format_ticks, to_ticks

    async with PiClient(url) as client:
        db = (await client.http.get_json("assetdatabases", [("path", "\\\\PIEMU-AF\\Plant")]))["WebId"]

        async def one(a: datetime, b: datetime) -> int:
            frames, start = 0, 0
            while True:
                body = await client.http.get_bytes(f"assetdatabases/{db}/eventframes", [
                    ("searchMode", "Overlapped"), ("startTime", format_ticks(to_ticks(a))),
                    ("endTime", format_ticks(to_ticks(b))), ("sortField", "StartTime"),
                    ("selectedFields", FRAME_FIELDS), ("startIndex", start), ("maxCount", 1000)])
                n = body.count(b'"WebId"')
                frames, start = frames + n, start + 1000
                if n < 1000:
                    return frames

        end = await server_now(client)
        counts = await asyncio.gather(*(one(a, b) for a, b in split_window(end - timedelta(days=days), end, parts)))
        return sum(counts)


def bench_events(workers: int, days: int, lake: Path) -> None:
    from piflow.config import PiflowSettings
    from piflow.jobs.af.events import run_events

    per_day = 100_000 / 365
    with emulator(workers, points=5_000, af_elements=1_000, event_frames_per_day=per_day) as url:
        t0 = time.perf_counter()
        n = asyncio.run(fetch_only(url, days, max(1, PiflowSettings().concurrency // 2)))
        wall = time.perf_counter() - t0
        print(f"emulator alone (search pages fetched, not decoded): {n:,} frames in {wall:.1f} s = "
              f"{n / wall:,.0f} frames/s")
        settings = PiflowSettings(url=url, target=str(lake / "frames"), start=f"*-{days}d", end="*")
        first, wall = timed(run_events(settings, attributes=False))
        n = first.details["frames"]
        print(f"events, frames only: {n:,} frames over {days} days in {wall:.1f} s = {n / wall:,.0f} frames/s "
              f"(goal: 20,000 frames/s), {first.requests} requests; status {first.status}")
        again, wall2 = timed(run_events(settings, attributes=False))
        print(f"events unchanged re-run: {wall2:.2f} s, {again.requests} requests, {again.details['frames']} frames "
              f"in the overlap, {again.values_written} rows written")
        week = PiflowSettings(url=url, target=str(lake / "attrs"), start="*-7d", end="*")
        with_attrs, wall3 = timed(run_events(week))
        m = with_attrs.details["frames"]
        print(f"events with attribute values: {m:,} frames ({with_attrs.details['attributes_changed']:,} values) "
              f"in {wall3:.1f} s = {m / wall3:,.0f} frames/s, {with_attrs.requests} requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 elements and 30 days of frames")
    parser.add_argument("--only", choices=("af", "events"), help="run one part")
    parser.add_argument("--workers", type=int, default=1, help="emulator worker processes")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.workers)
        return
    lake = Path(tempfile.mkdtemp(prefix="piflow-bench-af-"))
    try:
        print(f"machine: {os.cpu_count()} CPUs; emulator workers: {args.workers}")
        if args.only in (None, "af"):
            bench_af(args.workers, 1_000 if args.quick else 10_000, lake / "af")
        if args.only in (None, "events"):
            bench_events(args.workers, 30 if args.quick else 365, lake / "events")
    finally:
        shutil.rmtree(lake, ignore_errors=True)


if __name__ == "__main__":
    main()
