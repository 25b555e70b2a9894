"""``piflow demo``: the whole path on one machine, against the bundled emulator.

Starts the emulator in-process on a free loopback port, discovers its points, backfills one day of about
200 of them into ``<target>/pi_values``, lets the emulator's clock run a little, syncs, and returns what a
newcomer wants to see: run summaries and a sample of the table read back from Delta.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from piflow.config import PiflowSettings
from piflow.jobs.backfill import run_backfill
from piflow.jobs.discover import run_discover
from piflow.jobs.sync import run_sync
from piflow.progress import NullProgress, Progress
from piflow.sinks.delta import DeltaSink

DEMO_FILTER = "BRK.A0.*"  # 40 pieces of equipment x 5 points = 200 points
DEMO_NOW = datetime(2026, 1, 1, tzinfo=UTC)


def run_demo(target: str, progress_factory: Callable[[], Progress] | None = None) -> dict[str, Any]:
    from piflow.emulator import EmulatorSettings
    from piflow.emulator.server import EmulatorServer

    make_progress = progress_factory or NullProgress
    with EmulatorServer(EmulatorSettings(points=1000, seed=7, now=DEMO_NOW)) as srv:
        settings = PiflowSettings(url=srv.url, target=target, points=DEMO_FILTER, start="*-1d", end="*",
                                  lookback="10m", safety_lag="0s")
        runs = [asyncio.run(run_discover(settings, make_progress()))]
        runs.append(asyncio.run(run_backfill(settings, make_progress())))
        srv.state.clock.advance(timedelta(minutes=5))  # new data arrives on the emulator
        time.sleep(0.1)
        runs.append(asyncio.run(run_sync(settings, make_progress())))
    sink = DeltaSink(target)
    values = sink.read("pi_values")
    names = sink.read("pi_points", columns=["webid", "name"])
    return {"runs": runs, "rows": values.num_rows, "by_kind": _by_kind(values), "sample": _sample(values, names)}


def _by_kind(values: pa.Table) -> list[dict[str, Any]]:
    counts = values.group_by("value_kind").aggregate([("webid", "count")]).sort_by("value_kind")
    return [{"value_kind": r["value_kind"], "rows": r["webid_count"]} for r in counts.to_pylist()]


def _sample(values: pa.Table, names: pa.Table, n: int = 8) -> list[dict[str, Any]]:
    """A few rows of different kinds, newest first, joined to their tag names as a reader would query them."""
    values = values.join(names, keys="webid")
    out: list[dict[str, Any]] = []
    for kind in ("number", "digital", "string", "system"):
        subset = values.filter(pc.equal(values.column("value_kind"), kind))
        subset = subset.sort_by([("timestamp", "descending")]).slice(0, max(1, n // 4))
        cols = ["name", "timestamp", "seq", "value_kind", "value_double", "value_string", "state_name", "good"]
        out.extend(subset.select(cols).to_pylist())
    return out
