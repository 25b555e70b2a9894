"""Comparing what PI holds with what ``pi_values`` holds, and the commits that make the table equal PI.

Shared by sync (every slice), stream (every commit) and backfill (windows that already hold data). The compare is
on the key (webid, timestamp, seq): keys PI has and the table lacks are new, keys whose content differs are
changed, keys the table has in a range PI was read over completely and PI no longer has are gone. Changed and
gone rows land in one merge, then the new rows in one append, each planned from one table version (the sink's
writer protocol).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from piflow import schema
from piflow.jobs.watermarks import advance_watermarks, max_timestamps
from piflow.pitime import TICKS_PER_US
from piflow.sinks.delta import DeltaSink, Snapshot, Write

log = logging.getLogger(__name__)

KEY = list(schema.PI_VALUES_KEY)
_COMPARE = [c for c in schema.PI_VALUES_CONTENT if c not in KEY and c != "date"]


def _same(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.ChunkedArray:
    """Null-aware (and NaN-aware) equality of two columns."""
    eq = pc.fill_null(pc.equal(a, b), False)
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    same = pc.or_(eq, both_null)
    if pa.types.is_floating(a.type):
        same = pc.or_(same, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
    return same


def split_new_and_changed(fetched: pa.Table, existing: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Rows of ``fetched`` whose key is not in ``existing``, and rows whose key is there with other content."""
    new_rows, changed, _ = diff_rows(fetched, existing)
    return new_rows, changed


def diff_rows(fetched: pa.Table, existing: pa.Table) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(rows of ``fetched`` with a new key, rows of ``fetched`` whose key holds other content, keys of
    ``existing`` that ``fetched`` lacks), each in its table's order (pure)."""
    if fetched.num_rows == 0 or existing.num_rows == 0:
        return fetched, fetched.slice(0, 0), existing.select(KEY)
    ids = pc.unique(pa.chunked_array(fetched.column("webid").chunks + existing.column("webid").chunks))
    keys = _packed_keys(ids, fetched, existing)
    if keys is None:
        row, old_row = _joined_rows(ids, fetched, existing)
        found = np.zeros(fetched.num_rows, dtype=bool)
        found[row.to_numpy(zero_copy_only=False)] = True
        matched = np.zeros(existing.num_rows, dtype=bool)
        matched[old_row.to_numpy(zero_copy_only=False)] = True
    else:
        # One integer per key, looked up in sorted order: a tenth of the time of a join carrying every column
        # (both sides arrive as runs of rows in time order, so the sorts are cheap).
        mine, theirs = keys
        at, found = _lookup(theirs, mine)
        row, old_row = pa.array(np.flatnonzero(found)), pa.array(at[found])
        matched = _lookup(mine, theirs)[1]  # every copy of a key counts, should the table hold two
    unchanged = None
    for c in _COMPARE:
        same = _same(fetched.column(c).take(row), existing.column(c).take(old_row))
        unchanged = same if unchanged is None else pc.and_(unchanged, same)
    changed_rows = pc.filter(row, pc.invert(unchanged))
    return (fetched.filter(pa.array(~found)), fetched.take(_sorted(changed_rows)),
            existing.select(KEY).filter(pa.array(~matched)))


def _packed_keys(ids: pa.Array, fetched: pa.Table, existing: pa.Table) -> tuple[np.ndarray, np.ndarray] | None:
    """(webid, timestamp, seq) of both tables as one int64 each (mixed radix over the ranges present), or None
    when the ranges do not fit in 63 bits."""
    ts = [t.column("timestamp").cast(pa.int64()) for t in (fetched, existing)]
    lo = min(pc.min(t).as_py() for t in ts)
    span = max(pc.max(t).as_py() for t in ts) - lo + 1
    seqs = max(pc.max(t.column("seq")).as_py() for t in (fetched, existing)) + 1
    if len(ids) * span * seqs >= 2**63:
        return None
    out = []
    for table, t in zip((fetched, existing), ts, strict=True):
        point = pc.index_in(table.column("webid"), value_set=ids).to_numpy(zero_copy_only=False).astype(np.int64)
        rel = t.to_numpy(zero_copy_only=False) - lo
        out.append((point * span + rel) * seqs + table.column("seq").to_numpy(zero_copy_only=False))
    return out[0], out[1]


def _lookup(values: np.ndarray, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each probe, the index of an equal value (any, where undefined) and whether there is one."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    pos = np.searchsorted(ordered, probes)
    pos[pos == len(ordered)] = 0
    return order[pos], ordered[pos] == probes


def _joined_rows(ids: pa.Array, fetched: pa.Table, existing: pa.Table) -> tuple[pa.Array, pa.Array]:
    """Row numbers of equal keys in ``fetched`` and ``existing``, paired, from an inner join on (point id,
    timestamp, seq): for ranges too wide for :func:`_packed_keys`."""
    key_names = ["__point", "timestamp", "seq"]

    def keyed(table: pa.Table, rows: str) -> pa.Table:
        return pa.table({"__point": pc.index_in(table.column("webid"), value_set=ids),
                         "timestamp": table.column("timestamp"), "seq": table.column("seq"),
                         rows: pa.array(np.arange(table.num_rows, dtype=np.int64))})

    joined = keyed(fetched, "__row").join(keyed(existing, "__old_row"), keys=key_names, join_type="inner")
    order = pc.sort_indices(joined.column("__row"))
    return joined.column("__row").take(order).combine_chunks(), joined.column("__old_row").take(order).combine_chunks()


def within_read(keys: pa.Table, covered_from: dict[str, int], end_ticks: int) -> pa.Table:
    """The keys of rows inside the range their point was read completely (pure): [``covered_from[webid]``,
    ``end_ticks``] in ticks, judged only when a row's whole microsecond lies inside it (the table truncates
    PI's 100 ns ticks); points not in ``covered_from`` (not read, or unknown to the server) never are."""
    if keys.num_rows == 0 or not covered_from:
        return keys.slice(0, 0)
    names = list(covered_from)
    where = pc.index_in(keys.column("webid"), value_set=pa.array(names, pa.string()))
    lower_us = np.array([-(-covered_from[w] // TICKS_PER_US) for w in names], dtype=np.int64)
    idx = where.to_numpy(zero_copy_only=False)
    known = ~np.isnan(idx) if idx.dtype.kind == "f" else np.ones(idx.shape[0], dtype=bool)
    ts = keys.column("timestamp").cast(pa.int64()).to_numpy(zero_copy_only=False)
    inside = known.copy()
    inside[known] = ts[known] >= lower_us[idx[known].astype(np.int64)]
    inside &= ts <= (end_ticks - (TICKS_PER_US - 1)) // TICKS_PER_US
    return keys.filter(pa.array(inside))


def _sorted(indices: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Row numbers in ascending order, so the server's order survives the join."""
    return pc.take(indices, pc.sort_indices(indices))


def existing_rows(snap: Snapshot, webids: list[str], since_us: int, until_us: int | None = None,
                  columns: list[str] | None = None) -> pa.Table:
    """What one version of ``pi_values`` holds for these points in [since, until) (partition- and stats-pruned)."""
    since = datetime.fromtimestamp(since_us / 1_000_000, UTC)
    flt = (ds.field("date") >= pa.scalar(since.date(), pa.date32())) & (
        ds.field("timestamp") >= pa.scalar(since_us, pa.int64()).cast(schema.TS)) & ds.field("webid").isin(webids)
    if until_us is not None:
        until = datetime.fromtimestamp(until_us / 1_000_000, UTC)
        flt = flt & (ds.field("date") <= pa.scalar(until.date(), pa.date32())) & (
            ds.field("timestamp") < pa.scalar(until_us, pa.int64()).cast(schema.TS))
    return snap.read(columns=columns or list(schema.PI_VALUES_CONTENT), filter=flt)


def values_write(new_rows: pa.Table, changed: pa.Table, gone: pa.Table | None,
                 metadata: dict[str, str]) -> Write:
    """New rows, changed rows and deleted keys of ``pi_values`` as one write (one commit, all or nothing).

    The merge bounds (date and time from the earliest row involved) let delta-rs skip files by statistics
    without excluding any row the write could match.
    """
    involved = [t for t in (changed, gone) if t is not None and t.num_rows]
    if not involved:
        return Write(append=new_rows, key=KEY, metadata=metadata)
    first = min(pc.min(t.column("timestamp")).cast(pa.int64()).as_py() for t in [*involved, new_rows]
                if t.num_rows)
    start = datetime.fromtimestamp(first / 1_000_000, UTC)
    return Write(append=new_rows, upsert=changed, delete=gone, key=KEY, metadata=metadata,
                 bounds=f"t.date >= '{start.date().isoformat()}' AND t.timestamp >= '{start.isoformat()}'")


def commit_diff(sink: DeltaSink, fetched: pa.Table, webids: list[str], since_us: int,
                metadata: dict[str, str], existing: tuple[Snapshot, pa.Table] | None = None,
                covered: tuple[dict[str, int], int] | None = None,
                hold: frozenset[str] = frozenset(), until_us: int | None = None) -> tuple[int, int, int]:
    """Make the table hold ``fetched`` for these points from ``since`` on, without duplicating anything.

    ``fetched`` must be everything the server holds for ``webids`` over the range it covers (so that seq
    numbers are the server's). New keys are appended; keys whose content changed are replaced; with
    ``covered`` = (first tick read per point, last tick read), rows the server no longer holds in that range
    are deleted (edits in one merge, then new rows in one append: :func:`commit_staged`). The watermarks then
    move forward. Safe to repeat: a second call with the same data changes nothing. ``existing`` is (snapshot,
    ``existing_rows(snapshot, webids, since_us, until_us)``) when the caller read it already (``until_us``: where
    ``fetched`` ends, exclusive). ``hold`` names points whose rows are only added to, never changed or deleted
    (their stored values are newer than the server's clock). Returns (inserted, updated, deleted).
    """
    if existing is None:
        snap = sink.snapshot("pi_values")
        existing = (snap, existing_rows(snap, webids, since_us, until_us))
    staged = StagedDiff()
    staged.add(fetched, existing[1], covered, hold)
    return commit_staged(sink, existing[0], staged, metadata)


@dataclass
class StagedDiff:
    """What chunks of points need written, each chunk compared with the same snapshot; committed together.

    A sync compares its lookback a chunk of points at a time and keeps only the differences (new rows, changed
    rows, keys PI deleted), so a large fleet's lookback is never in memory at once.
    """

    new: list[pa.Table] = field(default_factory=list)
    changed: list[pa.Table] = field(default_factory=list)
    gone: list[pa.Table] = field(default_factory=list)
    newest: dict[str, int] = field(default_factory=dict)  # newest timestamp read per point (for watermarks)
    rows: int = 0

    def add(self, fetched: pa.Table, held: pa.Table, covered: tuple[dict[str, int], int] | None = None,
            hold: frozenset[str] = frozenset()) -> None:
        """Compare what was read for some points with what the table holds for them (``held``)."""
        new_rows, changed, lacking = diff_rows(fetched, held)
        gone = within_read(lacking, *covered) if covered is not None else lacking.slice(0, 0)
        if hold:
            held_ids = pa.array(sorted(hold), pa.string())
            changed = changed.filter(pc.invert(pc.is_in(changed.column("webid"), value_set=held_ids)))
            gone = gone.filter(pc.invert(pc.is_in(gone.column("webid"), value_set=held_ids)))
        for tables, t in ((self.new, new_rows), (self.changed, changed), (self.gone, gone)):
            if t.num_rows:
                tables.append(t)
                self.rows += t.num_rows
        for w, ts in max_timestamps(fetched).items():
            self.newest[w] = max(ts, self.newest.get(w, ts))


def commit_staged(sink: DeltaSink, snap: Snapshot, staged: StagedDiff, metadata: dict[str, str],
                  transactions: Sequence[tuple[str, int]] = ()) -> tuple[int, int, int]:
    """Commit what ``staged`` holds (compared with ``snap``), then move the watermarks forward.
    ``transactions`` go into the last commit (and make one even when nothing else is to be written).

    Changed rows and deleted keys are merged in one commit, then the new rows appended in another: a delta-rs
    merge holds in memory what it scans of the table and what it inserts, so the new rows of 100,000 points
    riding along with one edit cost 1.3 GB. If the merge fails, nothing of this has landed; if the append
    fails, the edits are in and the new rows are not (the watermarks have not moved: the next run reads them
    again). When another writer committed after ``snap``, the rows are compared again with the newest version
    (only the points and times they cover): what that writer already wrote is not written twice, and only keys
    still in the table are deleted. Returns (inserted, updated, deleted).
    """
    new = _concat(staged.new, schema.PI_VALUES)
    changed = _concat(staged.changed, schema.PI_VALUES)
    gone = pa.concat_tables(staged.gone) if staged.gone else None
    none = new.slice(0, 0)
    edits = bool(changed.num_rows or (gone is not None and gone.num_rows))
    # per commit: (inserted, updated, deleted), set by the plan that landed
    landed: dict[str, tuple[int, int, int]] = {}

    def merge_edits(s: Snapshot) -> Write:
        # (compared again, a changed row whose key another writer removed meanwhile is new again)
        n, c, g = (none, changed, gone) if s is snap else _compare_again(s, none, changed, gone)
        landed["merge"] = (n.num_rows, c.num_rows, 0 if g is None else g.num_rows)
        return replace(values_write(n, c, g, metadata), transactions=() if new.num_rows else transactions)

    def append_new(s: Snapshot) -> Write:
        # (compared again, a new row another writer wrote otherwise meanwhile is put right)
        n, c, _ = (new, none, None) if s is snap else _compare_again(s, new, none, None)
        landed["append"] = (n.num_rows, c.num_rows, 0)
        return replace(values_write(n, c, None, metadata), transactions=transactions)

    if edits:
        sink.commit("pi_values", merge_edits, first=snap)
    if new.num_rows or (transactions and not edits):
        sink.commit("pi_values", append_new, first=snap)
    inserted, updated, deleted = (sum(t[i] for t in landed.values()) for i in range(3))
    if deleted:
        log.info("sync: %d values were deleted in PI; deleted them here too", deleted)
    advance_watermarks(sink, staged.newest, metadata)
    return inserted, updated, deleted


def _concat(tables: list[pa.Table], table_schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else table_schema.empty_table()


def _compare_again(snap: Snapshot, new: pa.Table, changed: pa.Table, gone: pa.Table | None
                   ) -> tuple[pa.Table, pa.Table, pa.Table | None]:
    """The staged rows compared with a newer version than the one they were compared with (pure but for the
    read): rows to put are new or changed against it, keys to delete only those it still holds."""
    rows = pa.concat_tables([new, changed])
    parts = [t for t in (rows, gone) if t is not None and t.num_rows]
    if not parts:
        return new, changed, gone
    webids = sorted(set().union(*(t.column("webid").unique().to_pylist() for t in parts)))
    since = min(pc.min(t.column("timestamp")).cast(pa.int64()).as_py() for t in parts)
    until = max(pc.max(t.column("timestamp")).cast(pa.int64()).as_py() for t in parts) + 1
    held = existing_rows(snap, webids, since, until)
    n, c, _ = diff_rows(rows, held)
    if gone is not None and gone.num_rows:
        gone = gone.join(held.select(KEY), keys=KEY, join_type="left semi")
    return n, c, gone
