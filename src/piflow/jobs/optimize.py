"""``piflow optimize``: compact small files (z-ordered where the registry says so), vacuum old files,
checkpoint the log and remove log entries older than ``log_retention``, in every table of the registry and every
asset view at the target."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from piflow.errors import SinkError
from piflow.sinks.delta import DeltaSink
from piflow.tables import TABLES, is_view

if TYPE_CHECKING:
    from piflow.config import PiflowSettings

log = logging.getLogger(__name__)


def run_optimize(settings: PiflowSettings, *, vacuum_hours: int = 168) -> dict[str, object]:
    """Per table, what optimize and vacuum did (tables that do not exist are left out)."""
    sink = DeltaSink(settings.target)
    todo = [(spec.name, list(spec.zorder)) for spec in TABLES.values()]
    todo += [(name, []) for name in view_tables(sink)]
    out: dict[str, object] = {}
    for name, zorder in todo:
        stats = sink.optimize(name, zorder=zorder or None, vacuum_hours=vacuum_hours,
                              log_retention_s=int(settings.log_retention_delta.total_seconds()))
        if stats:
            out[name] = stats
    return out


def view_tables(sink: DeltaSink) -> list[str]:
    """The asset views at the target: its other tables whose leading columns are a view's (users name views,
    so they are found by what they hold). A table that cannot be read is left out with a warning."""
    try:
        names = [n for n in sink.table_names() if n not in TABLES]
    except SinkError as exc:
        log.warning("%s; asset views are not optimized", exc)
        return []
    views = []
    for name in names:
        try:
            columns = sink.columns(name)
        except SinkError as exc:
            log.warning("%s; %s is not optimized", exc, name)
            continue
        if columns is not None and is_view(columns):
            views.append(name)
    return views
