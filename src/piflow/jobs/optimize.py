"""``piflow optimize``: compact small files, z-order values on (webid, timestamp), vacuum old files."""

from __future__ import annotations

from typing import TYPE_CHECKING

from piflow.sinks.delta import DeltaSink

if TYPE_CHECKING:
    from piflow.config import PiflowSettings

_TABLES = ("pi_points", "pi_watermarks", "pi_ingest_runs", "pi_af_elements", "pi_af_attributes", "pi_event_frames")


def run_optimize(settings: PiflowSettings, vacuum_hours: int = 168) -> dict[str, object]:
    """Per table, what optimize and vacuum did (tables that do not exist are left out)."""
    sink = DeltaSink(settings.target)
    out: dict[str, object] = {}
    stats = sink.optimize("pi_values", zorder=["webid", "timestamp"], vacuum_hours=vacuum_hours)
    if stats:
        out["pi_values"] = stats
    for name in _TABLES:
        stats = sink.optimize(name, vacuum_hours=vacuum_hours)
        if stats:
            out[name] = stats
    return out
