"""``piflow status``: each point's watermark and how far behind it is."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from piflow.jobs.watermarks import read_watermarks
from piflow.sinks.delta import DeltaSink
from piflow.wildcards import wildcard

if TYPE_CHECKING:
    from piflow.config import PiflowSettings


def status_rows(settings: PiflowSettings, now: datetime | None = None) -> list[dict[str, object]]:
    """One row per live point whose name matches the ``points`` filter (as the jobs match it: PI's wildcards,
    case-insensitive): webid, name, watermark (None if never read) and lag in seconds."""
    sink = DeltaSink(settings.target)
    marks = read_watermarks(sink)
    points = sink.read("pi_points", columns=["webid", "name", "is_deleted"]).to_pylist()
    rx = wildcard(settings.points)
    now = now or datetime.now(UTC)
    rows: list[dict[str, object]] = []
    for p in sorted(points, key=lambda r: r["name"]):
        if p["is_deleted"] or not rx.fullmatch(p["name"]):
            continue
        us = marks.get(p["webid"])
        wm = datetime.fromtimestamp(us / 1_000_000, UTC) if us is not None else None
        rows.append({"webid": p["webid"], "name": p["name"], "watermark": wm,
                     "lag_s": None if wm is None else round((now - wm).total_seconds(), 3)})
    return rows
