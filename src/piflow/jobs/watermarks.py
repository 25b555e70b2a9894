"""Per-point watermarks: the newest timestamp stored for each point (``pi_watermarks``).

A watermark only ever moves forward, and is written *after* the values it covers are committed. A crash in
between leaves it behind the data, which costs a re-read on the next sync (values are matched on their key,
so nothing is duplicated), never a gap. Writers that advance watermarks at the same time (a sync beside a
stream) each plan from the version they read and the sink's writer protocol makes the later one plan again,
so no advance is lost and none moves a watermark back.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from piflow import schema
from piflow.sinks.delta import DeltaSink, Snapshot, Write

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def max_timestamps(values: pa.Table) -> dict[str, int]:
    """Newest timestamp (microseconds since the epoch) per webid in a pi_values table."""
    if values.num_rows == 0:
        return {}
    grouped = pa.table({"webid": values.column("webid"),
                        "ts": pc.cast(values.column("timestamp"), pa.int64())}).group_by("webid").aggregate(
        [("ts", "max")])
    return dict(zip(grouped.column("webid").to_pylist(), grouped.column("ts_max").to_pylist(), strict=True))


def read_watermarks(sink: DeltaSink) -> dict[str, int]:
    return _marks(sink.read("pi_watermarks", columns=["webid", "watermark"]))


def _marks(table: pa.Table) -> dict[str, int]:
    """{webid: watermark in microseconds} of a pi_watermarks table."""
    ts = pc.cast(table.column("watermark"), pa.int64()).to_pylist()
    return dict(zip(table.column("webid").to_pylist(), ts, strict=True))


def advance_watermarks(sink: DeltaSink, newest: dict[str, int], metadata: dict[str, str] | None = None) -> int:
    """Move watermarks forward to ``newest`` where that is later; returns how many moved.

    The table holds one small row per point, so it is rewritten whole (one atomic overwrite) rather than
    merged: cheaper than a merge at 10,000 points, and a crash leaves either the old or the new version.
    """
    if not newest:
        return 0
    moved: dict[str, int] = {}

    def plan(snap: Snapshot) -> Write | None:
        existing = snap.read()
        current = _marks(existing)
        moved.clear()
        moved.update({w: t for w, t in newest.items() if t > current.get(w, -(2**62))})
        if not moved:
            return None
        now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
        keep = existing.filter(pc.invert(pc.is_in(existing.column("webid"), pa.array(list(moved), pa.string()))))
        table = pa.table(
            {
                "webid": pa.array(list(moved), pa.string()),
                "watermark": pa.array(list(moved.values()), pa.int64()).cast(schema.TS),
                "updated_at": pa.array([now_us] * len(moved), pa.int64()).cast(schema.TS),
            },
            schema=schema.PI_WATERMARKS,
        )
        kept = keep.select(table.column_names).cast(schema.PI_WATERMARKS)
        return Write(overwrite=pa.concat_tables([kept, table]), metadata=metadata or {})

    sink.commit("pi_watermarks", plan)
    return len(moved)
