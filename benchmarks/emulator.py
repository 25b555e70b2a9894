"""Benchmark the PI Web API emulator: start-up time and recorded values served per second.

The emulator must never be the limit of a benchmark of the connector, so it is measured on its own: one server
process (``python -m piflow emulator``), a client that only downloads (httpx2, several concurrent connections,
no JSON parsing), ``streamsets/recorded`` for 100 points per call over one day each. The number of values
comes from the server's own counter (``/_emulator/stats``), so the client does not spend time counting.

    python benchmarks/emulator.py                      # goals: >= 1,000,000 values/s, start-up < 2 s
    python benchmarks/emulator.py --seconds 20 --connections 4 --selected-fields

Figures depend on the machine and on what else runs on it; this prints them, it asserts nothing. Besides the
wall-clock rate it prints the CPU time the server process spent per value (psutil), i.e. what one server core
delivers when it does not share the machine with the client and other jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx2
import psutil

from _support import free_port

NOW = "2026-01-01T00:00:00Z"
GOAL_VALUES_PER_S = 1_000_000
GOAL_STARTUP_S = 2.0
FIELDS = "Items.WebId;Items.Items.Timestamp;Items.Items.Value"




@dataclass
class Emulator:
    proc: subprocess.Popen[bytes]
    url: str
    startup_s: float

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_emulator(points: int, max_items: int | None) -> Emulator:
    """Start ``python -m piflow emulator`` and time it until ``system/status`` answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "piflow", "emulator", "--port", str(port), "--points", str(points),
           "--seed", "7", "--now", NOW, "--frozen"]
    if max_items is not None:
        cmd += ["--max-returned-items", str(max_items)]
    url = f"http://127.0.0.1:{port}/piwebapi"
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    with httpx2.Client(timeout=2) as client:
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise SystemExit(f"the emulator exited with {proc.returncode}:\n{err}")
            try:
                if client.get(f"{url}/system/status").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.perf_counter() - t0 > 120:
                proc.kill()
                raise SystemExit("the emulator did not answer within 120 s")
            time.sleep(0.01)
    return Emulator(proc, url, time.perf_counter() - t0)


async def point_webids(client: httpx2.AsyncClient, url: str, count: int) -> list[str]:
    server = (await client.get(f"{url}/dataservers")).json()["Items"][0]["WebId"]
    out: list[str] = []
    while len(out) < count:
        page = (await client.get(f"{url}/dataservers/{server}/points",
                                 params={"startIndex": len(out), "maxCount": 1000,
                                         "selectedFields": "Items.WebId"})).json()["Items"]
        if not page:
            break
        out += [p["WebId"] for p in page]
    return out[:count]


@dataclass
class Run:
    seconds: float
    calls: int
    failed: int
    values: int
    bytes: int
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def values_per_s(self) -> float:
        return self.values / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


async def download(url: str, webids: list[str], *, per_call: int, connections: int, seconds: float,
                   selected_fields: bool, server_pid: int) -> Run:
    """Several connections fetch ``streamsets/recorded`` (one day, 100 points a call) for ``seconds``."""
    groups = [webids[i:i + per_call] for i in range(0, len(webids) - per_call + 1, per_call)]
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx2.AsyncClient(timeout=120, limits=limits) as client:
        before = (await client.get(f"{url[:-len('/piwebapi')]}/_emulator/stats")).json()["values"]
        stop_at = time.perf_counter() + seconds
        next_group = 0
        calls = failed = nbytes = 0

        async def worker() -> None:
            nonlocal next_group, calls, failed, nbytes
            while time.perf_counter() < stop_at:
                group = groups[next_group % len(groups)]
                next_group += 1
                params = [("webId", w) for w in group] + [("startTime", "*-1d"), ("endTime", "*"),
                                                          ("maxCount", "100000")]
                if selected_fields:
                    params.append(("selectedFields", FIELDS))
                r = await client.get(f"{url}/streamsets/recorded", params=params)
                calls += 1
                nbytes += len(r.content)
                failed += r.status_code != 200

        t0, cpu0, mine0 = time.perf_counter(), cpu_seconds(server_pid), time.process_time()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - t0
        server_cpu, client_cpu = cpu_seconds(server_pid) - cpu0, time.process_time() - mine0
        after = (await client.get(f"{url[:-len('/piwebapi')]}/_emulator/stats")).json()["values"]
    return Run(elapsed, calls, failed, after - before, nbytes, server_cpu, client_cpu)


def verdict(ok: bool) -> str:
    return "meets the goal" if ok else "BELOW the goal"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=100_000, help="points in the emulator (start-up is timed)")
    ap.add_argument("--per-call", type=int, default=100, help="points per streamsets/recorded call")
    ap.add_argument("--connections", type=int, default=4, help="concurrent client connections")
    ap.add_argument("--seconds", type=float, default=15.0, help="duration of each download run")
    ap.add_argument("--selected-fields", action="store_true", help=f"also run with selectedFields={FIELDS}")
    ap.add_argument("--max-returned-items", type=int, default=None, help="server MaxReturnedItemsPerCall")
    args = ap.parse_args()

    emu = start_emulator(args.points, args.max_returned_items)
    try:
        print(f"emulator: {args.points:,} points, start-up {emu.startup_s:.2f} s "
              f"(goal < {GOAL_STARTUP_S:.0f} s: {verdict(emu.startup_s < GOAL_STARTUP_S)})")
        webids = asyncio.run(_webids(emu.url, min(args.points, 20_000)))
        asyncio.run(download(emu.url, webids[:args.per_call], per_call=args.per_call, connections=1, seconds=0.1,
                             selected_fields=False, server_pid=emu.proc.pid))  # warm-up: tables, first imports
        modes = [False, True] if args.selected_fields else [False]
        for sel in modes:
            run = asyncio.run(download(emu.url, webids, per_call=args.per_call, connections=args.connections,
                                       seconds=args.seconds, selected_fields=sel, server_pid=emu.proc.pid))
            label = "selectedFields" if sel else "all fields    "
            per_core = run.values / run.server_cpu_s if run.server_cpu_s else float("nan")
            print(f"streamsets/recorded, {label}: {run.values_per_s:12,.0f} values/s  {run.mb_per_s:7.1f} MB/s  "
                  f"{run.calls} calls ({run.failed} failed), {run.values / max(1, run.calls):,.0f} values/call, "
                  f"{run.bytes / max(1, run.values):.0f} B/value  "
                  f"(goal {GOAL_VALUES_PER_S:,}/s: {verdict(run.values_per_s >= GOAL_VALUES_PER_S)})")
            print(f"    server CPU {run.server_cpu_s:.1f} s = {1e6 / per_core:.2f} us/value, i.e. {per_core:,.0f} "
                  f"values/s per server core; client CPU {run.client_cpu_s:.1f} s; wall {run.seconds:.1f} s; "
                  f"load average {os.getloadavg()[0]:.1f}")
    finally:
        emu.stop()


async def _webids(url: str, count: int) -> list[str]:
    async with httpx2.AsyncClient(timeout=60) as client:
        return await point_webids(client, url, count)


if __name__ == "__main__":
    main()
