"""``piflow status``: how current the selected points are, as a summary that stays short at any point count.

Lag is measured against the PI server's clock when the server is known (a frozen or skewed server would
otherwise look months behind), else against this machine's clock, and the report says which. Points are
counted by state; the lag percentiles, the worst points and each table's size (from the Delta log, no scan)
follow. Beyond one pass over the selected points the work is on numpy columns; ``--all`` lists every point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from piflow.errors import PiflowError
from piflow.jobs.common import selected_points, server_now
from piflow.jobs.runs import UNREADABLE_KEY, open_client
from piflow.jobs.watermarks import read_watermarks
from piflow.sinks.delta import DeltaSink

if TYPE_CHECKING:
    from piflow.config import PiflowSettings

STATES = ("never_read", "current", "lagging", "stale", "error")
# The jobs that read values: a point the newest run of any of them could not read is in ``error``.
VALUE_JOBS = ("backfill", "sync", "stream")
WORST = 20


@dataclass(frozen=True)
class Thresholds:
    """Lag bounds of the states: ``current`` up to ``current_s``, ``lagging`` up to ``stale_s``, then ``stale``."""

    current_s: float = 300.0
    stale_s: float = 86_400.0


@dataclass(frozen=True)
class PointLags:
    """The selected live points as columns, in name order; ``lag_s`` is NaN for a point never read."""

    webids: list[str]
    names: list[str]
    watermark_us: np.ndarray  # int64, meaningful where ``lag_s`` is not NaN
    lag_s: np.ndarray  # float64
    error: np.ndarray | None = None  # bool: the newest run of a value job could not read the point

    def states(self, limits: Thresholds) -> np.ndarray:
        """The state of each point, as indexes into :data:`STATES`."""
        lag = self.lag_s
        out = np.full(len(lag), 0, dtype=np.int8)
        read = ~np.isnan(lag)
        out[read & (lag <= limits.current_s)] = 1
        out[read & (lag > limits.current_s) & (lag <= limits.stale_s)] = 2
        out[read & (lag > limits.stale_s)] = 3
        if self.error is not None:
            out[self.error] = 4
        return out


def point_lags(sink: DeltaSink, name_filter: str, now: datetime) -> PointLags:
    """The points the jobs would read for ``name_filter`` (:func:`selected_points`), with their watermark and
    lag at ``now``."""
    points = selected_points(sink, name_filter)
    marks = read_watermarks(sink)
    found = [marks.get(p.webid) for p in points]
    read = np.array([us is not None for us in found], dtype=bool)
    wm = np.array([us or 0 for us in found], dtype=np.int64)
    lag = np.where(read, (int(now.timestamp() * 1_000_000) - wm) / 1_000_000, np.nan)
    failed = unreadable_points(sink)
    error = np.array([p.webid in failed for p in points], dtype=bool)
    return PointLags(webids=[p.webid for p in points], names=[p.name for p in points], watermark_us=wm, lag_s=lag,
                     error=error)


def unreadable_points(sink: DeltaSink, commits: int = 200) -> set[str]:
    """The points the newest run of each value job could not read (the server no longer knew them), from the
    run records' commit metadata (the newest ``commits`` of ``pi_ingest_runs``)."""
    out: set[str] = set()
    seen: set[str] = set()
    for info in sink.history("pi_ingest_runs", commits):
        job = info.get("piflow.job")
        if job not in VALUE_JOBS or job in seen:
            continue
        seen.add(job)
        out.update(json.loads(info.get(UNREADABLE_KEY) or "[]"))
    return out


def summarise(lags: PointLags, limits: Thresholds, worst: int = WORST) -> dict[str, Any]:
    """Counts by state, lag percentiles of the points read, and the ``worst`` points (pure)."""
    states = lags.states(limits)
    counts = {name: int((states == i).sum()) for i, name in enumerate(STATES)}
    read = ~np.isnan(lags.lag_s)
    percentiles: dict[str, float | None] = dict.fromkeys(("p50", "p90", "p99", "max"))
    if read.any():
        values = lags.lag_s[read]
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        percentiles = {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
                       "max": round(float(values.max()), 3)}
    # in error first, then never read, then the longest lag; ties by name (the columns are in name order and the
    # sort is stable)
    key = np.where(read, lags.lag_s, np.inf)
    failed = lags.error if lags.error is not None else np.zeros(len(key), dtype=bool)
    top = np.lexsort((-key, ~failed))[:worst]
    return {"points": len(lags.names), "states": counts, "lag_s": percentiles,
            "worst": [_point_row(lags, int(i)) for i in top]}


def all_points(lags: PointLags) -> list[dict[str, object]]:
    """Every selected point: webid, name, watermark (None if never read) and lag in seconds."""
    return [_point_row(lags, i) for i in range(len(lags.names))]


def _point_row(lags: PointLags, i: int) -> dict[str, object]:
    never = bool(np.isnan(lags.lag_s[i]))
    wm = None if never else datetime.fromtimestamp(int(lags.watermark_us[i]) / 1_000_000, UTC)
    row: dict[str, object] = {"webid": lags.webids[i], "name": lags.names[i], "watermark": wm,
                              "lag_s": None if never else round(float(lags.lag_s[i]), 3)}
    if lags.error is not None:
        row["error"] = "unknown to the PI server at the last read" if lags.error[i] else None
    return row


def table_stats(sink: DeltaSink) -> list[dict[str, object]]:
    """Version, data files, bytes and rows of each table at the target."""
    return [{"table": name, **size} for name in sink.table_names() if (size := sink.size(name)) is not None]


def status_report(settings: PiflowSettings, now: datetime, clock: str, *, limits: Thresholds | None = None,
                  every_point: bool = False) -> dict[str, Any]:
    """The whole report as plain data (what ``--json`` prints): ``clock`` says where ``now`` came from."""
    sink = DeltaSink(settings.target)
    lags = point_lags(sink, settings.points, now)
    limits = limits or Thresholds()
    report: dict[str, Any] = {"target": settings.target, "filter": settings.points, "now": now, "clock": clock,
                              "thresholds_s": {"current": limits.current_s, "stale": limits.stale_s},
                              **summarise(lags, limits), "tables": table_stats(sink)}
    if every_point:
        report["all"] = all_points(lags)
    return report


async def server_clock(settings: PiflowSettings) -> tuple[datetime, str]:
    """"Now" for the lags, and where it came from: the PI server's clock when a URL is set and the server
    answers (one quick try, no retries), else this machine's, with the reason."""
    if not settings.url:
        return datetime.now(UTC), "this machine's clock (no PI Web API URL is set)"
    quick = settings.model_copy(update={"retries": 0, "timeout_s": min(settings.timeout_s, 10.0)})
    try:
        async with open_client(quick) as client:
            now = await server_now(client)
            if client.caps.server_clock is False:
                return now, "this machine's clock (the PI server gives no time)"
            return now, "the PI server's clock"
    except PiflowError as exc:
        return datetime.now(UTC), f"this machine's clock (the PI server was not asked: {exc})"


def status_rows(settings: PiflowSettings, now: datetime | None = None) -> list[dict[str, object]]:
    """One row per selected live point (name order): webid, name, watermark and lag in seconds."""
    return all_points(point_lags(DeltaSink(settings.target), settings.points, now or datetime.now(UTC)))
