"""The merge-written Delta tables (``pi_af_elements``, ``pi_af_attributes``, ``pi_event_frames`` ...) as rows: read a
whole table, write the changed rows in one commit. Shared by ``piflow af``, ``piflow events`` and
``piflow discover``; apart from the pure row logic because it does the Delta I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from piflow.jobs.pi_json import Row
from piflow.sinks.delta import Snapshot, Write

if TYPE_CHECKING:
    from piflow.sinks.delta import DeltaSink


def read_rows(snap: Snapshot) -> list[Row]:
    """Every row of one version of a table as dicts (none when the table does not exist yet)."""
    if snap.table is None:
        return []
    rows: list[Row] = snap.read().to_pylist()
    return rows


def write_changes(sink: DeltaSink, name: str, changes: Callable[[list[Row]], list[Row]], schema: pa.Schema,
                  key: Sequence[str], *, existing: Callable[[Snapshot], list[Row]] = read_rows,
                  first: tuple[Snapshot, list[Row]] | None = None,
                  transactions: Callable[[Snapshot], Sequence[tuple[str, int]]] | None = None,
                  metadata: dict[str, str] | None = None) -> list[Row]:
    """Merge on ``key``, in one commit, the rows ``changes`` finds against the rows ``existing`` reads from a
    snapshot; returns the rows written.

    When another writer commits first (the sink's writer protocol) the rows are read again from a newer
    snapshot and compared again. ``first`` is (snapshot, its rows) when the caller read them already: the
    first attempt is planned from them instead of reading the table twice. A table with no rows yet takes a
    plain append: nothing to match, and much faster for a first load.
    """
    written: list[Row] = []

    def plan(snap: Snapshot) -> Write | None:
        rows = changes(first[1] if first is not None and snap is first[0] else existing(snap))
        written[:] = rows
        if not rows:
            return None
        data = pa.Table.from_pylist(rows, schema=schema)
        txns = tuple(transactions(snap)) if transactions is not None else ()
        if snap.is_empty():
            return Write(append=data, key=key, transactions=txns, metadata=metadata or {})
        return Write(upsert=data, key=key, transactions=txns, metadata=metadata or {})

    sink.commit(name, plan, schema=schema, first=first[0] if first is not None else None)
    return written


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def merge_changes(existing: Iterable[dict[str, Any]], current: Iterable[dict[str, Any]], compared: Sequence[str],
                  in_scope: Callable[[dict[str, Any]], bool], now: datetime) -> list[dict[str, Any]]:
    """Rows to merge on ``webid`` (catalog-like tables: points, AF objects, event frames): new rows, changed
    rows (keeping ``first_seen``) and tombstones for rows in scope that vanished (pure). Unchanged rows are not
    returned, so an unchanged source commits nothing."""
    old = {r["webid"]: r for r in existing}
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in current:
        seen.add(row["webid"])
        prev = old.get(row["webid"])
        if prev is None:
            out.append(row)
        elif not all(_same(prev.get(k), row.get(k)) for k in compared):
            out.append({**row, "first_seen": prev["first_seen"]})
    for webid, prev in old.items():
        if webid not in seen and not prev["is_deleted"] and in_scope(prev):
            out.append({**prev, "is_deleted": True, "last_seen": now})
    return out
