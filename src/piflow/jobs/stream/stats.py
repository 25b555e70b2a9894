"""The counters of a ``piflow stream`` run, the names of the streaming modes they report, and the lines that
report them.

Pure: :class:`StreamStats` is what the status line, ``on_status`` observers and the run's details see;
:class:`Delays` measures the job's own share of the lag. Kept apart from the job so reporting can be read and
tested without it. The mode names live here, below the options that choose among them, because a report
says which mode ran.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from piflow.jobs.stream.news import News

MODE_CHANNELS = "channels"
MODE_UPDATES = "updates"
MODE_POLL = "poll"
MODES = (MODE_CHANNELS, MODE_UPDATES, MODE_POLL)


@dataclass
class StreamStats:
    """Counters reported in the status line and in the run's details."""

    mode: str = ""
    modes_tried: list[str] = field(default_factory=list)
    sockets: int = 0
    connects: int = 0
    reconnects: int = 0
    dead_sockets: int = 0
    messages: int = 0
    heartbeats: int = 0
    pushed_values: int = 0
    gap_reads: int = 0
    gap_values: int = 0
    reread_points: int = 0
    commits: int = 0
    inserted: int = 0
    updated: int = 0
    waiting: int = 0
    last_lag_s: float | None = None
    commit_delay_p50_s: float | None = None  # pushed value arrived -> its commit done
    commit_delay_p99_s: float | None = None
    missing: list[str] = field(default_factory=list)


def status_line(point_count: int, stats: StreamStats, values_per_s: float) -> str:
    """One human line: mode, points, sockets, rate, lag and reconnects."""
    lag = "-" if stats.last_lag_s is None else f"{stats.last_lag_s:.1f} s"
    sockets = f", {stats.sockets} sockets" if stats.mode == MODE_CHANNELS else ""
    return (f"stream [{stats.mode or 'starting'}] {point_count} points{sockets}: {values_per_s:.0f} values/s, "
            f"lag {lag}, {stats.reconnects} reconnects, {stats.waiting} values waiting, "
            f"{stats.inserted + stats.updated} committed in {stats.commits} commits")


class Delays:
    """Seconds from a value's arrival to the end of the commit that took it (the job's own share of the lag)."""

    def __init__(self, keep: int = 50_000) -> None:
        self._samples: deque[float] = deque(maxlen=keep)

    def record(self, news: News, done: float) -> None:
        for parts in news.values():
            for p in parts:
                self._samples.extend([done - p.arrived] * len(p.values))

    def quantile(self, q: float) -> float | None:
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_line(stats: StreamStats) -> str:
    """The run's one-line summary (``RunResult.message``): modes tried, connections, values, delays."""
    tried = " -> ".join(stats.modes_tried) or "-"
    return (f"mode {stats.mode or '-'} (tried {tried}); {stats.connects} connects, {stats.reconnects} reconnects, "
            f"{stats.dead_sockets} dead sockets; {stats.pushed_values} values pushed, {stats.gap_values} read back "
            f"in {stats.gap_reads} gap reads, {stats.reread_points} point ranges re-read; "
            f"{stats.inserted} inserted, {stats.updated} updated in {stats.commits} commits; "
            f"arrival to commit p50 {_seconds(stats.commit_delay_p50_s)}, p99 {_seconds(stats.commit_delay_p99_s)}")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"
