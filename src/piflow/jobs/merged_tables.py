"""The merge-written Delta tables (``pi_af_elements``, ``pi_af_attributes``, ``pi_event_frames`` ...) as rows: read a
whole table, write the changed rows in one commit. Shared by ``piflow af`` and ``piflow events``; separate from the
pure row logic because it does the Delta I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from piflow.jobs.pi_json import Row

if TYPE_CHECKING:
    from piflow.sinks.delta import DeltaSink


def read_rows(sink: DeltaSink, name: str) -> list[Row]:
    """Every row of a table as dicts (none when the table does not exist yet)."""
    if sink.table(name) is None:
        return []
    rows: list[Row] = sink.read(name).to_pylist()
    return rows


def write_changes(sink: DeltaSink, name: str, rows: list[Row], schema: pa.Schema, key: Sequence[str],
                  transactions: Iterable[tuple[str, int]] = ()) -> int:
    """Merge the rows on ``key`` in one commit (a plain append when the table does not exist yet: nothing to
    match, and much faster for a first load)."""
    if not rows:
        return 0
    data = pa.Table.from_pylist(rows, schema=schema)
    if sink.table(name) is None:
        sink.append(name, data, transactions=transactions)
    else:
        sink.upsert(name, data, key, transactions=transactions)
    return len(rows)
