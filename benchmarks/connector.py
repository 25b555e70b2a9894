"""Core connector benchmark: prints figures, asserts nothing.

Runs the emulator in a separate process (`python -m piflow emulator`) and measures, on this machine:
1. backfill of 1,000 points over one day into Delta: values/s, peak RSS of the job process, requests;
2. fetch-only: the same requests decoded and thrown away (the ceiling for 1.);
3. sync of 10,000 points with 5 minutes of new data: wall time, requests;
4. naive (one request per point per 1 h window, sequential) vs piflow with 20 ms of added latency.

Usage: python benchmarks/connector.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2

from _support import emulator_cmd, free_port, run_child, serving

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@contextmanager
def emulator(points: int, *extra: str) -> Iterator[str]:
    port = free_port()
    with serving(emulator_cmd(port, points, "--frozen", *extra), port) as url:
        yield url


def job(kind: str, url: str, target: str, **kw: Any) -> dict[str, Any]:
    """Run one job in a child process (so its peak RSS is its own) and return its JSON report."""
    return run_child(__file__, {"kind": kind, "url": url, "target": target, **kw})


def child(spec: dict[str, Any]) -> None:
    from piflow.config import PiflowSettings
    from piflow.jobs.backfill import run_backfill
    from piflow.jobs.discover import run_discover
    from piflow.jobs.sync import run_sync

    kind = spec.pop("kind")
    settings = PiflowSettings(**{k: v for k, v in spec.items() if k not in ("naive_window_s",)})
    t0 = time.perf_counter()
    report: dict[str, Any] = {}
    if kind == "discover":
        r = asyncio.run(run_discover(settings))
        report = {"points": r.points}
    elif kind in ("backfill", "sync"):
        r = asyncio.run(run_backfill(settings) if kind == "backfill" else run_sync(settings))
        report = {"values": r.values_written, "requests": r.requests, "retries": r.retries, **r.details}
    elif kind == "fetch":
        report = asyncio.run(fetch_only(settings))
    elif kind == "naive":
        report = asyncio.run(naive(settings, int(spec.get("naive_window_s", 3600))))
    report["wall_s"] = time.perf_counter() - t0
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(report))


async def fetch_only(settings: Any) -> dict[str, Any]:
    """piflow's reader over the same plan as the backfill, decoding every page and keeping nothing."""
    from piflow.jobs.backfill import DEFAULT_GROUP
    from piflow.jobs.common import open_client, resolve_time, selected_points, server_now
    from piflow.jobs.reader import RecordedReader
    from piflow.pitime import to_ticks
    from piflow.planner import DAY_TICKS, group_size, make_plan, progress_shards, units_to_do
    from piflow.sinks.delta import DeltaSink

    points = selected_points(DeltaSink(settings.target), settings.points)
    async with open_client(settings) as client:
        now = await server_now(client)
        plan = make_plan(to_ticks(resolve_time("start", settings.start, now)),
                         to_ticks(resolve_time("end", settings.end, now)), DAY_TICKS)
        group = group_size(len(points), settings.concurrency, settings.points_per_request, DEFAULT_GROUP)
        units = units_to_do(plan, progress_shards(points), {}, group)
        reader = RecordedReader(client)
        sem = asyncio.Semaphore(settings.concurrency)
        total = 0

        async def one(u: Any) -> None:
            nonlocal total
            async with sem:
                table = await reader.read(list(u.points), u.start_ticks, u.end_ticks, final=False)
            total += table.num_rows

        await asyncio.gather(*(one(u) for u in units))
        return {"values": total, "requests": client.http.requests}


async def naive(settings: Any, window_s: int) -> dict[str, Any]:
    """What tools do today: one `recorded` request per point per window, one after another, json.loads."""
    import json as stdjson

    from piflow.jobs.common import open_client, resolve_time, selected_points, server_now
    from piflow.sinks.delta import DeltaSink

    points = selected_points(DeltaSink(settings.target), settings.points)
    values = 0
    async with open_client(settings) as client:
        now = await server_now(client)
        start = resolve_time("start", settings.start, now)
        end = resolve_time("end", settings.end, now)
        for p in points:
            t = start
            while t < end:
                t2 = min(end, t + timedelta(seconds=window_s))
                body = await client.recorded_bytes(p.webid, t, t2, 1000)
                values += len(stdjson.loads(body)["Items"])
                t = t2
        return {"values": values, "requests": client.http.requests}


def rate(r: dict[str, Any]) -> float:
    return float(r["values"]) / r["wall_s"] if r["wall_s"] else 0.0


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=rate)[len(runs) // 2]


def spread(runs: list[dict[str, Any]]) -> str:
    rates = sorted(rate(r) for r in runs)
    return f"runs {rates[0]:,.0f} .. {rates[-1]:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--repeat", type=int, default=3, help="runs of 1. and 2. (the median is reported)")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        child(json.loads(a.child))
        return
    n_backfill = 200 if a.quick else 1000
    n_sync = 1000 if a.quick else 10_000
    work = Path(tempfile.mkdtemp(prefix="piflow-bench-"))
    day = {"start": (NOW - timedelta(days=1)).isoformat(), "end": NOW.isoformat()}
    print(f"piflow connector benchmark on {os.cpu_count()} cores (emulator in its own process)\n")
    try:
        fetches, backfills = [], []
        with emulator(n_backfill) as url:
            base = str(work / "backfill")
            job("discover", url, base, points="*")
            # Runs alternate and repeat: on this shared machine one run can differ from the next by a third.
            for i in range(a.repeat):
                lake = str(work / f"backfill-{i}")
                shutil.copytree(base, lake)
                fetches.append(job("fetch", url, lake, points="*", **day))
                backfills.append(job("backfill", url, lake, points="*", **day))
        bf, fetch = median_run(backfills), median_run(fetches)
        print(f"1. backfill {n_backfill} points x 1 day: {bf['values']:,} values in {bf['wall_s']:.2f} s = "
              f"{rate(bf):,.0f} values/s (median of {a.repeat}; {spread(backfills)}); peak RSS "
              f"{max(r['peak_rss_mb'] for r in backfills):.0f} MB; {bf['requests']} requests "
              f"(goal: 500,000 values/s, RSS < 1 GB)")
        print(f"2. fetch-only, same requests: {fetch['values']:,} values in {fetch['wall_s']:.2f} s = "
              f"{rate(fetch):,.0f} values/s (median; {spread(fetches)}); backfill reaches "
              f"{100 * rate(bf) / rate(fetch):.0f}% of it (goal: 70%)")

        with emulator(n_sync) as url:
            lake = str(work / "sync")
            job("discover", url, lake, points="*")
            # Two hours already in the table (more than the longest lookback, as after earlier syncs), then
            # 5 minutes pass; each lookback syncs its own copy of that table, so each sees the same new data.
            base = {"start": (NOW - timedelta(hours=2)).isoformat(), "end": NOW.isoformat()}
            job("backfill", url, lake, points="*", **base)
            httpx2.post(url.replace("/piwebapi", "/_emulator/clock"), json={"advance_s": 300}, timeout=10)
            for lookback in ("5m", "1h"):
                runs = []
                for i in range(a.repeat):
                    copy = str(work / f"sync-{lookback}-{i}")
                    shutil.copytree(lake, copy)
                    runs.append(job("sync", url, copy, points="*", lookback=lookback, safety_lag="0s"))
                walls = sorted(r["wall_s"] for r in runs)
                s = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
                print(f"3. sync {n_sync} points, 5 min of new data, lookback {lookback}: {s['wall_s']:.2f} s "
                      f"(median of {a.repeat}; runs {walls[0]:.2f} .. {walls[-1]:.2f} s), {s['requests']} requests, "
                      f"{s['read']:,} values read, {s['inserted']:,} inserted, {s['updated']:,} updated "
                      f"(goal: < 3 s)")

        n_naive = 20 if a.quick else 100
        with emulator(n_naive, "--latency-ms", "20") as url:
            lake = str(work / "naive")
            job("discover", url, lake, points="*")
            nv = job("naive", url, lake, points="*", naive_window_s=3600, **day)
            pf = job("fetch", url, lake, points="*", **day)
        print(f"4. 20 ms latency, {nv['values']:,} values: naive {nv['wall_s']:.2f} s ({nv['requests']} requests, "
              f"sequential, 1 request per point per hour) vs piflow {pf['wall_s']:.2f} s ({pf['requests']} "
              f"requests): {nv['wall_s'] / pf['wall_s']:.0f}x faster (goal: 100x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
