"""Which points, which windows, how many per request (pure).

A backfill is split into (point group x time window) units. Progress is recorded per *point* and window
(``app_id`` per point, version = windows committed), so a re-run resumes exactly where the table says it
stopped even if the groups are formed differently, or points were added, since the first run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from piflow.pitime import TICKS_PER_SECOND

DAY_TICKS = 86400 * TICKS_PER_SECOND


@dataclass(frozen=True)
class PointRef:
    """What the reader needs to know about a point."""

    webid: str
    name: str
    point_type: str | None = None
    units: str | None = None


@dataclass(frozen=True)
class WorkUnit:
    window: int  # index of the window in the plan
    points: tuple[PointRef, ...]
    start_ticks: int
    end_ticks: int
    final: bool  # the last window of the plan (every window, the last included, is half-open [start, end))


@dataclass(frozen=True)
class BackfillPlan:
    range_id: str
    start_ticks: int
    end_ticks: int
    window_ticks: int
    windows: int

    def window_bounds(self, w: int) -> tuple[int, int]:
        s = self.start_ticks + w * self.window_ticks
        return s, min(self.end_ticks, s + self.window_ticks)

    def app_id(self, webid: str) -> str:
        """Transaction id of one point's progress in this backfill range (short, stable)."""
        digest = hashlib.sha1(webid.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]
        return f"piflow-backfill-{self.range_id}-{digest}"


def make_plan(start_ticks: int, end_ticks: int, window_ticks: int = DAY_TICKS) -> BackfillPlan:
    if end_ticks <= start_ticks:
        raise ValueError("backfill end must be after start")
    if window_ticks <= 0:
        raise ValueError("window must be positive")
    windows = -(-(end_ticks - start_ticks) // window_ticks)
    rid = hashlib.sha1(f"{start_ticks}:{end_ticks}:{window_ticks}".encode(), usedforsecurity=False).hexdigest()[:10]
    return BackfillPlan(rid, start_ticks, end_ticks, window_ticks, windows)


def units_to_do(
    plan: BackfillPlan, points: Sequence[PointRef], committed: dict[str, int], group_size: int
) -> list[WorkUnit]:
    """Remaining units, window-major so every point advances evenly; ``committed`` = windows done per webid."""
    out: list[WorkUnit] = []
    for w in range(plan.windows):
        todo = [p for p in points if committed.get(p.webid, 0) <= w]
        s, e = plan.window_bounds(w)
        for i in range(0, len(todo), max(1, group_size)):
            out.append(WorkUnit(w, tuple(todo[i : i + group_size]), s, e, final=(w == plan.windows - 1)))
    return out


def group_size(point_count: int, in_flight: int, requested: int, default: int) -> int:
    """Points per streamset call: as asked, else ``default``, smaller when there are too few points to keep
    ``in_flight`` calls busy (100 points at 50 a call left six of eight slots idle and the server waiting)."""
    if requested > 0:
        return requested
    return max(1, min(default, -(-point_count // max(1, in_flight))))


def group_for_sync(starts: dict[str, int], points: Sequence[PointRef], group_size: int, slack_ticks: int
                   ) -> list[tuple[int, list[PointRef]]]:
    """Group points whose read start is close, so one streamset call serves them (start = the group's min)."""
    ordered = sorted(points, key=lambda p: starts[p.webid])
    groups: list[tuple[int, list[PointRef]]] = []
    for p in ordered:
        s = starts[p.webid]
        if groups and len(groups[-1][1]) < group_size and s - groups[-1][0] <= slack_ticks:
            groups[-1][1].append(p)
        else:
            groups.append((s, [p]))
    return groups


def max_count_for(group_size: int, max_items: int) -> int:
    """Per-stream maxCount so that a full answer never exceeds the server's item limit."""
    return max(1, max_items // max(1, group_size))


class AdaptiveConcurrency:
    """How many units may be in flight: additive increase, multiplicative decrease (pure).

    Throttling (429, 503, dropped connections: the client's retry counter moves) halves the limit; a unit
    much slower than the best seen so far (the server is struggling) takes one off; otherwise the limit
    creeps back up to ``maximum``. This is what keeps a backfill polite without hand tuning.
    """

    def __init__(self, maximum: int, *, slow_factor: float = 3.0) -> None:
        self.maximum = max(1, maximum)
        self.limit = self.maximum
        self.slow_factor = slow_factor
        self._best_s_per_value: float | None = None

    def on_throttled(self) -> None:
        self.limit = max(1, self.limit // 2)

    def on_done(self, seconds: float, values: int) -> None:
        per_value = seconds / max(1, values)
        best = self._best_s_per_value
        if best is None or per_value < best:
            self._best_s_per_value = per_value
        if best is not None and values > 1000 and per_value > best * self.slow_factor:
            self.limit = max(1, self.limit - 1)
        elif self.limit < self.maximum:
            self.limit += 1
