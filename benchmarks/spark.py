"""Spark benchmark: the ``pi`` data source in local Spark against piflow's own laptop backfill. Prints figures,
asserts nothing.

Runs the emulator in its own process (``python -m piflow emulator``), then, each in a child process:
1. the laptop path: ``piflow discover`` + ``piflow backfill`` of N points x one day into Delta (delta-rs);
2. Spark ``local[1]`` and ``local[2]``: ``spark.read.format("pi")`` over the same points and day, counted
   (read, decode, hand to the JVM) and written to Parquet (the same plus the write);
reporting values/s, partitions used, and the ratio to the laptop backfill. The emulator shares the machine's
cores with the reader, as it does in every figure of this repository; each line says how busy it was (a
single Python process near 100 % is the bottleneck, and then more Spark cores cannot help).

Usage: python benchmarks/spark.py [--quick] [--points N] [--per-partition K]
"""

from __future__ import annotations

import argparse
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

from _support import emulator_cmd, free_port, run_child, serving_process

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DAY = {"start": (NOW - timedelta(days=1)).isoformat(), "end": NOW.isoformat()}




@contextmanager
def emulator(points: int) -> Iterator[tuple[str, int]]:
    port = free_port()
    with serving_process(emulator_cmd(port, points, "--frozen"), port) as (url, proc):
        yield url, proc.pid


def child(kind: str, **spec: Any) -> dict[str, Any]:
    return run_child(__file__, {"kind": kind, **spec})


def run_laptop(spec: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    from piflow.config import PiflowSettings
    from piflow.jobs.backfill import run_backfill
    from piflow.jobs.discover import run_discover

    settings = PiflowSettings(url=spec["url"], target=spec["target"], points="*", **DAY)
    asyncio.run(run_discover(settings))
    cpu0, t0 = cpu_s(spec["emulator_pid"]), time.perf_counter()
    r = asyncio.run(run_backfill(settings))
    return {"values": r.values_written, "wall_s": time.perf_counter() - t0, "requests": r.requests,
            "emulator_cpu_s": cpu_s(spec["emulator_pid"]) - cpu0}


def run_spark(spec: dict[str, Any]) -> dict[str, Any]:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from piflow.spark import register

    spark = (SparkSession.builder.master(f"local[{spec['cores']}]").appName("piflow-bench")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.memory", "2g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    register(spark)
    df = (spark.read.format("pi").option("url", spec["url"]).option("points", "*").option("start", DAY["start"])
          .option("end", DAY["end"]).option("pointsPerPartition", str(spec["per_partition"])).load())
    # warm the Python workers once (a tiny read), so the figure is the read and not the first fork
    spark.read.format("pi").option("url", spec["url"]).option("points", "*").option("start", DAY["start"]) \
        .option("end", (NOW - timedelta(days=1) + timedelta(minutes=1)).isoformat()).load().count()
    cpu0, t0 = cpu_s(spec["emulator_pid"]), time.perf_counter()
    partitions = df.rdd.getNumPartitions()
    if spec["sink"] == "count":
        values = df.count()  # a Python data source has no column pruning: every value is read and converted
    else:
        df.write.mode("overwrite").partitionBy("date").parquet(spec["target"])
    wall, cpu = time.perf_counter() - t0, cpu_s(spec["emulator_pid"]) - cpu0
    if spec["sink"] == "parquet":
        values = spark.read.parquet(spec["target"]).count()
    spark.stop()
    return {"values": values, "wall_s": wall, "partitions": partitions, "emulator_cpu_s": cpu}


def cpu_s(pid: int) -> float:
    """CPU seconds a process has used (to see whether the emulator, not the reader, is the bottleneck)."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def busy(r: dict[str, Any]) -> str:
    return f"emulator busy {100 * r['emulator_cpu_s'] / r['wall_s']:.0f}% of the time"


def rate(r: dict[str, Any]) -> float:
    return float(r["values"]) / r["wall_s"] if r["wall_s"] else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="200 points instead of 1,000")
    ap.add_argument("--points", type=int)
    ap.add_argument("--per-partition", type=int, default=50)
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        spec = json.loads(a.child)
        result = run_laptop(spec) if spec["kind"] == "laptop" else run_spark(spec)
        print(json.dumps(result))
        return
    n = a.points or (200 if a.quick else 1000)
    work = Path(tempfile.mkdtemp(prefix="piflow-bench-spark-"))
    print(f"piflow Spark benchmark: {n} points x 1 day, {os.cpu_count()} cores, emulator in its own process\n")
    try:
        with emulator(n) as (url, pid):
            lap = child("laptop", url=url, target=str(work / "lake"), emulator_pid=pid)
            print(f"laptop backfill (delta-rs): {lap['values']:,} values in {lap['wall_s']:.2f} s = "
                  f"{rate(lap):,.0f} values/s, {lap['requests']} requests; {busy(lap)}")
            for sink in ("count", "parquet"):
                for cores in (1, 2):
                    r = child("spark", url=url, cores=cores, sink=sink, per_partition=a.per_partition,
                              target=str(work / f"spark-{sink}-{cores}"), emulator_pid=pid)
                    print(f"spark local[{cores}] -> {sink:7s}: {r['values']:,} values in {r['wall_s']:.2f} s = "
                          f"{rate(r):,.0f} values/s, {r['partitions']} partitions; "
                          f"{rate(r) / rate(lap):.2f}x the laptop backfill; {busy(r)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
