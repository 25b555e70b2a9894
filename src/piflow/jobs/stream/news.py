"""Values pushed to ``piflow stream`` on their way to a commit: buffered, decoded, classified, deduplicated.

Pure logic (no network, no table): which pushed rows can be committed as they are and which points need a
re-read, kept apart from the job that orchestrates reads and commits so it can be unit-tested on its own.
"""

from __future__ import annotations

import time
from collections.abc import Container, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piflow import decode, schema
from piflow.planner import PointRef

_NEVER = -(2**62)


# ---- pure logic ----------------------------------------------------------------------------------------------
def classify_news(news: pa.Table, marks: Mapping[str, int]) -> tuple[pa.Table, dict[str, tuple[int, int]]]:
    """Split pushed values into rows safe to commit as they are, and per point a range to re-read.

    A point's pushed rows are safe when every timestamp is newer than its committed watermark (``marks``, in
    microseconds) and no two share a timestamp: then no other event can hold that key and ``seq`` is 0. Any
    other point (late value, edit, events sharing a timestamp, out-of-order messages) is returned with the
    (first, last) microsecond of its pushed rows, to be re-read with ``recorded``.
    """
    if news.num_rows == 0:
        return news, {}
    webids = news.column("webid").to_pylist()
    ts = pc.cast(news.column("timestamp"), pa.int64()).to_numpy(zero_copy_only=False).tolist()
    seen: set[tuple[str, int]] = set()
    unsafe: set[str] = set()
    lo: dict[str, int] = {}
    hi: dict[str, int] = {}
    for w, t in zip(webids, ts, strict=True):
        lo[w] = min(t, lo.get(w, t))
        hi[w] = max(t, hi.get(w, t))
        if t <= marks.get(w, _NEVER) or (w, t) in seen:
            unsafe.add(w)
        seen.add((w, t))
    if not unsafe:
        return news, {}
    keep = pa.array([w not in unsafe for w in webids], pa.bool_())
    return news.filter(keep), {w: (lo[w], hi[w]) for w in unsafe}


def dedupe_latest(table: pa.Table) -> pa.Table:
    """Keep the last row of each (webid, timestamp, seq): gap reads concatenated in order, newest last."""
    n = table.num_rows
    if n < 2:
        return table
    w = pc.dictionary_encode(table.column("webid").combine_chunks()).indices.to_numpy(zero_copy_only=False)
    t = pc.cast(table.column("timestamp"), pa.int64()).to_numpy(zero_copy_only=False)
    s = table.column("seq").to_numpy(zero_copy_only=False)
    order = np.lexsort((np.arange(n), s, t, w))
    ws, ts_, ss = w[order], t[order], s[order]
    last = np.ones(n, dtype=np.bool_)
    last[:-1] = (ws[1:] != ws[:-1]) | (ts_[1:] != ts_[:-1]) | (ss[1:] != ss[:-1])
    if last.all():
        return table
    return table.take(pa.array(np.sort(order[last])))


# ---- pushed values waiting for the next commit ----------------------------------------------------------------
@dataclass
class Pushed:
    """Values of one point from one message, and when they arrived (monotonic seconds)."""

    source: str
    values: list[decode.PiValue]
    units: str | None
    arrived: float


News = dict[str, list[Pushed]]


class NewsBuffer:
    """Values pushed per point since the last commit, in arrival order, with the source they came from."""

    def __init__(self) -> None:
        self._items: News = {}
        self.size = 0

    def add(self, webid: str, values: list[decode.PiValue], units: str | None, source: str,
            arrived: float | None = None) -> None:
        if values:
            at = time.monotonic() if arrived is None else arrived
            self._items.setdefault(webid, []).append(Pushed(source, values, units, at))
            self.size += len(values)

    def points(self) -> list[str]:
        return list(self._items)

    def drain(self, hold: Container[str]) -> News:
        """Everything except the points in ``hold`` (their gap read is not committed yet)."""
        out = {w: v for w, v in self._items.items() if w not in hold}
        self._items = {w: v for w, v in self._items.items() if w in hold}
        self.size = sum(len(p.values) for parts in self._items.values() for p in parts)
        return out


def news_table(news: Mapping[str, list[Pushed]], points: Mapping[str, PointRef]) -> pa.Table:
    """Decode pushed values into pi_values rows (per source, then concatenated)."""
    builders: dict[str, decode.ColumnBuilder] = {}
    for w, parts in news.items():
        ref = points[w]
        for p in parts:
            b = builders.setdefault(p.source, decode.ColumnBuilder(source=p.source))
            b.add(w, p.values, point_type=ref.point_type, default_units=p.units or ref.units,
                  where=f"{ref.name} (pushed)")
    tables = [b.table() for b in builders.values()]
    return pa.concat_tables(tables) if tables else schema.PI_VALUES.empty_table()

