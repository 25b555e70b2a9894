"""Streaming latency benchmark: prints figures, asserts nothing.

Latency of a value = the Delta commit that first holds it (the commit timestamp in ``_delta_log``) minus the
moment it became visible on the emulator (its virtual timestamp, mapped to wall time; the emulator's clock
runs at real speed). Only on-time values count (late arrivals are visible minutes after their timestamp, by
design); a value is on time when the data model shows it at its own timestamp.

Three processes, as in production: the emulator (``python -m piflow emulator ... --now 2026-01-01T00:00:00Z``,
clock running), the stream job (``run_stream`` in ``python -c``, stopped with SIGTERM), and this one, which
only tails ``_delta_log``. Goal at 10,000 points: p50 under commit interval + 1 s, p99 under 2 x commit
interval.

Usage: python benchmarks/stream.py [--points 1000 10000] [--seconds 60] [--commit-interval 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pyarrow.compute as pc
import pyarrow.parquet as pq

from _support import emulator_cmd, free_port, serving
from piflow.emulator.model import Model, ModelConfig
from piflow.pitime import TICKS_PER_SECOND, TICKS_PER_US, parse_iso_ticks

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SEED = 7

JOB = """
import asyncio, json, logging, sys
from piflow.config import PiflowSettings
from piflow.jobs.stream.job import run_stream
from piflow.jobs.stream.options import StreamOptions

logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
logging.getLogger("piflow.jobs.stream.job").setLevel(logging.DEBUG)  # one line per commit, with its duration
url, target, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
settings = PiflowSettings(url=url, target=target, points="*", start="*-2m", lookback="10m")
result = asyncio.run(run_stream(settings, options=StreamOptions(commit_interval_s=interval)))
print(json.dumps({"message": result.message, "details": result.details}, default=str), flush=True)
"""


@contextmanager
def emulator(points: int) -> Iterator[str]:
    port = free_port()
    with serving(emulator_cmd(port, points, seed=SEED), port) as url:
        yield url


def clock_offset(url: str) -> float:
    """Emulator virtual seconds minus wall seconds, from the fastest of a few status calls."""
    samples = []
    with httpx2.Client() as client:
        for _ in range(15):
            t0 = time.time()
            server = client.get(f"{url}/system/status").json()["ServerTime"]
            t1 = time.time()
            samples.append((t1 - t0, parse_iso_ticks(server) / TICKS_PER_SECOND - (t0 + t1) / 2))
    return min(samples)[1]


@dataclass
class Tail:
    """Follows ``_delta_log`` of pi_values: the commit time at which each key first appeared."""

    table: Path
    next_version: int = 0
    first_seen: dict[tuple[str, int, int], float] = field(default_factory=dict)

    def poll(self) -> None:
        while True:
            entry = self.table / "_delta_log" / f"{self.next_version:020d}.json"
            if not entry.exists():
                return
            try:
                actions = [json.loads(line) for line in entry.read_text().splitlines() if line.strip()]
            except json.JSONDecodeError:  # being written: read it next time
                return
            commit_ts = next(a["commitInfo"]["timestamp"] / 1000.0 for a in actions if "commitInfo" in a)
            for a in actions:
                if "add" in a:
                    self._read(self.table / a["add"]["path"], commit_ts)
            self.next_version += 1

    def _read(self, path: Path, commit_ts: float) -> None:
        t = pq.read_table(path, columns=["webid", "timestamp", "seq"])
        ts = pc.cast(t.column("timestamp"), "int64").to_pylist()
        for key in zip(t.column("webid").to_pylist(), ts, t.column("seq").to_pylist(), strict=True):
            self.first_seen.setdefault(key, commit_ts)


def on_time(model: Model, points: dict[str, object], webid: str, ts_us: int) -> bool:
    """Did the server show this event at its own timestamp (not a late arrival)?"""
    p = points.get(webid)
    if p is None:
        return False
    lo = ts_us * TICKS_PER_US
    return len(model.events(p, lo, lo + TICKS_PER_US - 1, lo + TICKS_PER_US - 1)) > 0  # type: ignore[arg-type]


def push_baseline(points: int, seconds: float, warmup: float) -> list[float]:
    """The emulator's own push latency: piflow's bare channel client on every point, no job, no Delta."""
    from piflow.client.channels import ChannelOptions, decode_message, open_channel, plan_sockets
    from piflow.client.http import PiHttp

    model = Model(ModelConfig(seed=SEED, point_count=points))
    by_webid: dict[str, object] = {p.webid: p for p in (model.point(0, i) for i in range(points))}
    latencies: list[float] = []

    async def listen(url: str, offset: float, webids: list[str], http: PiHttp, t_from: float) -> None:
        async with open_channel(http, webids, ChannelOptions()) as channel:
            while True:
                body = await channel.receive()
                now = time.time()
                for entry in decode_message(body).Items:
                    for v in entry.Items:
                        ts_us = parse_iso_ticks(v.Timestamp or "") // TICKS_PER_US
                        visible = ts_us / 1e6 - offset
                        if visible >= t_from and on_time(model, by_webid, entry.WebId or "", ts_us):
                            latencies.append(now - visible)

    async def main(url: str) -> None:
        offset = clock_offset(url)
        async with PiHttp(url) as http:
            plan = plan_sockets(url, list(by_webid), 500)
            t_from = time.time() + warmup
            tasks = [asyncio.create_task(listen(url, offset, ws, http, t_from)) for ws in plan]
            await asyncio.sleep(warmup + seconds)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    with emulator(points) as url:
        asyncio.run(main(url))
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(points: int, seconds: float, interval: float, warmup: float, keep: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="piflow-stream-bench-"))
    try:
        with emulator(points) as url:
            offset = clock_offset(url)
            log = (work / "job.log").open("w")
            job = subprocess.Popen([sys.executable, "-c", JOB, url, str(work / "lake"), str(interval)],
                                   stdout=subprocess.PIPE, stderr=log, text=True)
            t_start = time.time()
            tail = Tail(work / "lake" / "pi_values")
            # Measure values that become visible in [start + warmup, start + warmup + seconds]; keep the job
            # running long enough afterwards for all of them to be committed.
            t_from, t_to = t_start + warmup, t_start + warmup + seconds
            while time.time() < t_to + 3 * interval + 2:
                tail.poll()
                time.sleep(0.1)
                if job.poll() is not None:
                    raise RuntimeError(f"the stream job ended early: see {work / 'job.log'}")
            job.send_signal(signal.SIGTERM)
            out, _ = job.communicate(timeout=120)
            summary = json.loads(out.strip().splitlines()[-1])
            tail.poll()
        model = Model(ModelConfig(seed=SEED, point_count=points))
        by_webid: dict[str, object] = {p.webid: p for p in (model.point(0, i) for i in range(points))}
        latencies: list[float] = []
        late = 0
        for (webid, ts_us, _seq), committed in tail.first_seen.items():
            visible = ts_us / 1e6 - offset
            if not t_from <= visible <= t_to:
                continue
            if not on_time(model, by_webid, webid, ts_us):
                late += 1
                continue
            latencies.append(committed - visible)
        return {"points": points, "values": len(latencies), "late_excluded": late,
                "p50": statistics.median(latencies) if latencies else float("nan"),
                "p99": percentile(latencies, 0.99) if latencies else float("nan"),
                "max": max(latencies) if latencies else float("nan"), "job": summary["message"],
                "job_p50": summary["details"]["commit_delay_p50_s"],
                "job_p99": summary["details"]["commit_delay_p99_s"]}
    finally:
        if keep:
            print(f"        kept {work} (job.log has one line per commit)")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seconds", type=float, default=60.0, help="measuring window per run")
    parser.add_argument("--warmup", type=float, default=30.0, help="start-up (discovery, first gap reads) to skip")
    parser.add_argument("--commit-interval", type=float, default=5.0)
    parser.add_argument("--keep", action="store_true", help="keep the job's log and tables")
    parser.add_argument("--no-baseline", action="store_true", help="skip the emulator-only push measurement")
    args = parser.parse_args()
    interval = args.commit_interval
    print(f"piflow stream latency (value visible on the emulator -> committed in Delta), commit interval "
          f"{interval:g} s, {os.cpu_count()} CPUs")
    for n in args.points:
        r = run(n, args.seconds, interval, args.warmup, args.keep)
        p50, p99 = float(r["p50"]), float(r["p99"])
        goal = (f"goal p50 < {interval + 1:g} s: {'met' if p50 < interval + 1 else 'MISSED'}; "
                f"p99 < {2 * interval:g} s: {'met' if p99 < 2 * interval else 'MISSED'}")
        print(f"{n:>6} points: {r['values']:>6} on-time values ({r['late_excluded']} late ones excluded)  "
              f"p50 {p50:.2f} s  p99 {p99:.2f} s  max {float(r['max']):.2f} s   [{goal}]")
        print(f"        the job's own share, pushed value arrived -> committed: p50 {float(r['job_p50']):.2f} s  "
              f"p99 {float(r['job_p99']):.2f} s")
        print(f"        job: {r['job']}")
        if not args.no_baseline:
            base = push_baseline(n, args.seconds, min(args.warmup, 10.0))
            print(f"        the emulator alone, visible -> pushed to a bare channel client: {len(base)} values  "
                  f"p50 {statistics.median(base):.2f} s  p99 {percentile(base, 0.99):.2f} s")


if __name__ == "__main__":
    main()
