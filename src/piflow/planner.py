"""Which points, which windows, how many per request (pure).

A backfill is split into (point group x time window) units. Progress is recorded per *shard*: points cut into
shards of about a thousand at content-defined boundaries, one Delta transaction id per shard whose version counts
the shard's (window, point) positions done. The log a commit adds, and the lookups a re-run makes, grow with the
shards touched, not with the points; a re-run resumes exactly where the table says it stopped, even with other
request groups, and a point added or removed since costs only its own shard's progress.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from piflow.pitime import TICKS_PER_SECOND

DAY_TICKS = 86400 * TICKS_PER_SECOND
# Mean points per progress shard: 100 transaction ids at 100,000 points, 500 at 500,000 (one id per point made
# the log grow by 2.5 MB a commit at 100,000 points, and a re-run ask delta-rs for each id at ~4 ms a call).
SHARD_POINTS = 1024


@dataclass(frozen=True)
class PointRef:
    """What the reader needs to know about a point."""

    webid: str
    name: str
    point_type: str | None = None
    units: str | None = None


@dataclass(frozen=True)
class Shard:
    """Points (sorted by webid) whose backfill progress one transaction id records; ``key`` digests them."""

    key: str
    points: tuple[PointRef, ...]


@dataclass(frozen=True)
class WorkUnit:
    window: int  # index of the window in the plan
    points: tuple[PointRef, ...]
    start_ticks: int
    end_ticks: int
    final: bool  # the last window of the plan (every window, the last included, is half-open [start, end))
    shard: str = ""  # key of the shard the points belong to
    first: int = 0  # the shard's progress before this unit (window x shard size + index of its first point)
    after: int = 0  # the shard's progress once this unit is committed


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

    def app_id(self, shard_key: str) -> str:
        """Transaction id of one shard's progress in this backfill range (short, stable)."""
        return f"piflow-backfill-{self.range_id}-{shard_key}"


def progress_shards(points: Sequence[PointRef], mean: int = SHARD_POINTS) -> list[Shard]:
    """The points cut into shards at content-defined boundaries (pure).

    A shard ends after each point whose webid hashes to 0 modulo ``mean``, so adding or removing a point changes
    only the shard it falls in: every other shard keeps its key, and with it its progress. A shard whose members
    changed has a new key and starts from zero (windows already holding its data are compared, not appended).
    """
    shards: list[Shard] = []
    members: list[PointRef] = []
    for p in sorted({p.webid: p for p in points}.values(), key=lambda p: p.webid):
        members.append(p)
        if zlib.crc32(p.webid.encode("utf-8")) % mean == 0:
            shards.append(_shard(members))
            members = []
    if members:
        shards.append(_shard(members))
    return shards


def _shard(members: list[PointRef]) -> Shard:
    digest = hashlib.sha1("\n".join(p.webid for p in members).encode("utf-8"), usedforsecurity=False)
    return Shard(digest.hexdigest()[:16], tuple(members))


def make_plan(start_ticks: int, end_ticks: int, window_ticks: int = DAY_TICKS) -> BackfillPlan:
    if end_ticks <= start_ticks:
        raise ValueError("backfill end must be after start")
    if window_ticks <= 0:
        raise ValueError("window must be positive")
    windows = -(-(end_ticks - start_ticks) // window_ticks)
    rid = hashlib.sha1(f"{start_ticks}:{end_ticks}:{window_ticks}".encode(), usedforsecurity=False).hexdigest()[:10]
    return BackfillPlan(rid, start_ticks, end_ticks, window_ticks, windows)


def units_to_do(plan: BackfillPlan, shards: Sequence[Shard], progress: dict[str, int], group_size: int
                ) -> list[WorkUnit]:
    """Remaining units, window-major so every point advances evenly (pure).

    ``progress`` is each shard's committed position, ``window x len(shard) + points done in that window``:
    a shard is committed in that order, so its position is where its next unit starts, whatever group size
    the run that committed it used."""
    out: list[WorkUnit] = []
    step = max(1, group_size)
    for w in range(plan.windows):
        s, e = plan.window_bounds(w)
        for shard in shards:
            size = len(shard.points)
            k = max(0, progress.get(shard.key, 0) - w * size)
            while k < size:
                j = min(size, k + step)
                out.append(WorkUnit(w, shard.points[k:j], s, e, final=(w == plan.windows - 1), shard=shard.key,
                                    first=w * size + k, after=w * size + j))
                k = j
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
