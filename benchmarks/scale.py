"""Fleet-scale figures: how each command's time, memory and Delta log grow with the number of points.

Prints figures, asserts nothing. For each point count, an emulator in its own process (frozen at
2026-01-01T00:00:00Z) and the CLI as a user runs it, each command a process of its own (wall time and peak
RSS are that process's):
discover; backfill of the last ``--minutes`` (values/s end to end); a sync right after it (it also takes the
values stamped exactly at the server's now, which the half-open backfill range leaves out); the clock moved on
five minutes and a sync (the sync cycle); a sync with nothing new (the steady state); one more with
``recheck_every = always`` (what a run that re-reads the lookback costs); status (with the server's clock);
and the bytes of the ``pi_values`` _delta_log per commit.

Usage: python benchmarks/scale.py [--points 1000 10000 100000] [--minutes 10] [--lookback 1h]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _support import emulator_cmd, free_port, serving

_MEASURE = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
out = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"rc": out.returncode, "wall_s": wall, "peak_mib": peak, "stdout": out.stdout,
                  "stderr": out.stderr[-2000:]}))
"""


def _cli(*args: str, env: dict[str, str]) -> dict[str, Any]:
    """One ``python -m piflow`` command, started by a process of its own whose only child it is, so that the
    peak RSS of its children is this command's: wall seconds, peak RSS (MiB) and its output."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "piflow", *args],
                         capture_output=True, text=True, env=env, check=True)
    fig: dict[str, Any] = json.loads(out.stdout)
    if fig["rc"] not in (0, 3):
        raise RuntimeError(f"piflow {' '.join(args)} failed ({fig['rc']}): {fig['stderr']}")
    return fig


def _log_bytes_per_commit(table: Path) -> tuple[int, float]:
    """(commits, mean bytes of a commit's JSON) in a table's _delta_log."""
    files = sorted((table / "_delta_log").glob("*.json"))
    sizes = [f.stat().st_size for f in files]
    return len(sizes), (sum(sizes) / len(sizes) if sizes else 0.0)


def _values(stdout: str) -> int:
    for line in stdout.splitlines():
        if "values_written" in line:
            return int("".join(ch for ch in line.split("values_written", 1)[1] if ch.isdigit()) or 0)
    return 0


def _advance(url: str, seconds: int) -> None:
    """Move the frozen emulator's clock on (new values appear, as if the server ran for that long)."""
    import httpx2

    base = url.rsplit("/piwebapi", 1)[0]
    httpx2.post(f"{base}/_emulator/clock", json={"advance_s": seconds}, timeout=30.0).raise_for_status()


def measure(points: int, minutes: int, lookback: str) -> dict[str, Any]:
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="piflow-scale-"))
    env = {**os.environ, "PIFLOW_PROGRESS": "never", "PIFLOW_LOOKBACK": lookback, "PIFLOW_SAFETY_LAG": "0s"}
    try:
        t = time.perf_counter()
        with serving(emulator_cmd(port, points, "--frozen"), port, timeout_s=600) as url:
            startup = time.perf_counter() - t
            common = ["--url", url, "--target", str(work / "lake")]
            row: dict[str, Any] = {"points": points, "emulator_start_s": startup}
            d = _cli("discover", *common, env=env)
            row["discover"] = d
            b = _cli("backfill", *common, "--start", f"*-{minutes}m", "--end", "*", env=env)
            b["values"] = _values(b["stdout"])
            row["backfill"] = b
            commits, per_commit = _log_bytes_per_commit(work / "lake" / "pi_values")
            row["pi_values_log"] = {"commits": commits, "bytes_per_commit": per_commit}
            row["sync_after"] = _cli("sync", *common, env=env)  # also takes the values stamped exactly at now
            _advance(url, 300)
            row["sync_5min"] = _cli("sync", *common, env=env)  # the sync cycle: five minutes of new data
            row["sync_steady"] = _cli("sync", *common, env=env)
            row["sync_reread"] = _cli("sync", *common, env={**env, "PIFLOW_RECHECK_EVERY": "always"})
            row["status"] = _cli("status", *common, env=env)
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--lookback", default="1h")
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    a = ap.parse_args()
    rows = [measure(n, a.minutes, a.lookback) for n in a.points]

    def fig(r: dict[str, Any], step: str) -> str:
        s = r[step]
        return f"{s['wall_s']:7.2f} s {s['peak_mib']:>5,.0f} MiB"

    steps = ("discover", "backfill", "sync_after", "sync_5min", "sync_steady", "sync_reread", "status")
    titles = ("discover", "backfill", "sync after backfill", "sync, 5 min new", "sync, nothing new",
              "sync re-reading", "status")
    print(f"piflow at scale: emulator frozen, backfill of {a.minutes} min, sync lookback {a.lookback} "
          "(recheck_every auto; 're-reading' = always), 2 CPUs")
    print(f"{'points':>8} | {'emulator':>8} | " + " | ".join(f"{t:>19}" for t in titles)
          + f" | {'backfill values/s':>17} | {'log B/commit':>12}")
    for r in rows:
        b = r["backfill"]
        print(f"{r['points']:>8,} | {r['emulator_start_s']:7.1f}s | " + " | ".join(fig(r, s) for s in steps)
              + f" | {b['values'] / b['wall_s']:>17,.0f} | {r['pi_values_log']['bytes_per_commit']:>12,.0f}")
    if a.json:
        for r in rows:
            for step in steps:
                r[step].pop("stdout", None)
                r[step].pop("stderr", None)
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
