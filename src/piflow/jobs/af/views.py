"""``piflow view``: an asset view as PI Integrator users build by hand, as one wide Delta table.

``piflow view --template Pump --interval 1m --start ... --end ...`` writes ``pi_view_pump``: one row per element
of the template and interval, one column per (top-level) attribute, from interpolated values. The elements come
from one paged search (``templateName``), their attribute names and types from one ``/batch`` fan-out, the values
from ``streamsets/{element}/interpolated`` fanned out through ``/batch`` per time window; a window that would
return more than the server's ``MaxReturnedItemsPerCall`` is split and asked again.

Numeric attribute types become float64 columns, the rest strings; values are classified as in ``pi_values``
(:mod:`piflow.pi_values`: a number sent as text is a number on a numeric attribute). A digital or system state
("I/O Timeout") in a numeric column is null there (the run says how many): ``pi_values`` keeps the exact state.
Rows are merged on (``element_webid``, ``timestamp``) on a grid aligned to the interval (multiples of it since
1970-01-01 UTC, whatever the start), so writing an overlapping window again replaces its rows instead of adding a
second grid.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from piflow import af_schema, schema
from piflow.errors import ConfigError, SinkError, TooManyItemsError
from piflow.jobs.af.databases import Database, database_matches, list_databases, no_such_database
from piflow.jobs.af.events import pi_datetime
from piflow.jobs.batching import fetch_many, item_error, resource
from piflow.jobs.common import resolve_time, server_now
from piflow.jobs.pi_json import Json, stream_error
from piflow.jobs.runs import RunResult, job_run
from piflow.pi_values import classify_many, is_numeric_type, value_text
from piflow.pitime import format_ticks, parse_interval, to_ticks
from piflow.progress import Progress
from piflow.schema import TABLES
from piflow.sinks.delta import Snapshot, Write

if TYPE_CHECKING:
    from piflow.client.api import PiClient
    from piflow.config import PiflowSettings

log = logging.getLogger(__name__)

MAX_ITEMS_PER_CALL = 150_000  # PI's default MaxReturnedItemsPerCall; windows are planned to stay well below
_BAD_CHARS = re.compile(r"[ ,;{}()\n\t=]+")
_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
VALUE_FIELDS = "Items.WebId;Items.Exception;Items.Items.Timestamp;Items.Items.Value"


@dataclass(frozen=True)
class Element:
    webid: str
    name: str
    path: str


@dataclass
class Columns:
    """Attribute columns of the view: WebID of an element's attribute -> column and AF type; column -> numeric
    or not."""

    of_attribute: dict[str, str] = field(default_factory=dict)
    type_of: dict[str, str | None] = field(default_factory=dict)
    numeric: dict[str, bool] = field(default_factory=dict)
    widest: int = 0  # most attributes of one element (sizes the time windows)

    def add(self, webid: str, name: str, type_name: str | None) -> None:
        col = column_name(name)
        self.of_attribute[webid] = col
        self.type_of[webid] = type_name
        self.numeric[col] = self.numeric.get(col, True) and is_numeric_type(type_name)

    def schema(self) -> pa.Schema:
        return af_schema.view_schema([(c, pa.float64() if num else pa.string()) for c, num in self.numeric.items()])


def column_name(attribute: str) -> str:
    """A Delta-safe column name for an attribute (spaces and ``,;{}()=`` become ``_``)."""
    return _BAD_CHARS.sub("_", attribute.strip()) or "_"


def table_name(template: str) -> str:
    return "pi_view_" + (re.sub(r"[^a-z0-9]+", "_", template.lower()).strip("_") or "template")


def checked_table_name(name: str) -> str:
    """``name`` if it can be a view table of its own inside the target, else a ConfigError (pure)."""
    if not _TABLE_NAME.fullmatch(name):
        raise ConfigError("table", f"{name!r} is not a plain table name inside the target (letters, digits and _ "
                                   "only, e.g. pi_view_pump)")
    if name.lower() in {t.lower() for t in TABLES}:
        raise ConfigError("table", f"{name!r} is one of piflow's own tables; name the view e.g. pi_view_pump")
    return name


def align_window(start: datetime, end: datetime, step: timedelta) -> tuple[datetime, datetime]:
    """The first and last grid points inside ``[start, end]`` of the grid of multiples of ``step`` since the
    epoch (pure): every run, whatever its start, asks for the same grid, so re-runs replace rows in place."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = epoch + step * -((epoch - start) // step)  # ceiling division by step
    last = epoch + step * ((end - epoch) // step)
    return first, last


def plan_windows(start: datetime, end: datetime, step: timedelta, per_call: int) -> list[tuple[datetime, datetime]]:
    """Windows on the interpolation grid of ``[start, end]`` holding at most ``per_call`` grid points each, so
    that no grid point is asked twice (pure)."""
    if step <= timedelta(0):
        raise ValueError("the interval must be positive")
    count = int((end - start) / step) + 1
    out = []
    for first in range(0, count, max(1, per_call)):
        last = min(count, first + max(1, per_call)) - 1
        out.append((start + first * step, min(end, start + last * step)))
    return out


@dataclass
class WideRows:
    """Values gathered per (element, timestamp) before they become columns."""

    columns: Columns
    cells: dict[tuple[str, datetime], dict[str, Any]] = field(default_factory=dict)
    elements: dict[str, Element] = field(default_factory=dict)
    not_numeric: int = 0
    errors: dict[str, tuple[set[str], str]] = field(default_factory=dict)  # column -> (elements failed, a message)

    def add_stream(self, element: Element, item: Json, times: dict[str, datetime | None]) -> None:
        webid = str(item.get("WebId"))
        col = self.columns.of_attribute.get(webid)
        if col is None:
            return
        err = stream_error(item)
        if err:
            self.errors.setdefault(col, (set(), err))[0].add(element.webid)
        self.elements[element.webid] = element
        stamped: list[tuple[datetime, Any]] = []
        for v in item.get("Items") or []:
            text = v.get("Timestamp") if isinstance(v, dict) else None
            if not isinstance(text, str):
                continue
            if text not in times:
                times[text] = pi_datetime(text)
            ts = times[text]
            if ts is not None:
                stamped.append((ts, v.get("Value")))
        cells = self._cells([value for _, value in stamped], self.columns.type_of.get(webid),
                            self.columns.numeric[col])
        for (ts, _), cell in zip(stamped, cells, strict=True):
            self.cells.setdefault((element.webid, ts), {})[col] = cell

    def _cells(self, values: list[Any], value_type: str | None, numeric: bool) -> list[Any]:
        """The cells of one stream, classified as in ``pi_values``: a numeric column takes the numbers (a state
        there is null and counted), a text column the value as text (states by name)."""
        if not numeric:
            return [value_text(value, value_type)[0] for value in values]
        cols = classify_many(values, value_type)
        self.not_numeric += sum(1 for k in cols.kind if k not in (schema.KIND_NUMBER, schema.KIND_NULL))
        return [d if k == schema.KIND_NUMBER else None for k, d in zip(cols.kind, cols.double, strict=True)]

    def table(self) -> pa.Table:
        sch = self.columns.schema()
        keys = sorted(self.cells, key=lambda k: (self.elements[k[0]].path, k[1]))
        data: dict[str, list[Any]] = {
            "element_webid": [k[0] for k in keys], "element": [self.elements[k[0]].name for k in keys],
            "element_path": [self.elements[k[0]].path for k in keys], "timestamp": [k[1] for k in keys],
        }
        for col in self.columns.numeric:
            data[col] = [self.cells[k].get(col) for k in keys]
        return pa.Table.from_pydict(data, schema=sch)


# ---- reading ---------------------------------------------------------------------------------------------------------
async def find_elements(client: PiClient, dbs: Sequence[Database], template: str, page_size: int) -> list[Element]:
    out: dict[str, Element] = {}
    params: list[tuple[str, str | int | float | bool]] = [("searchFullHierarchy", True), ("templateName", template),
              ("selectedFields", "Items.WebId;Items.Name;Items.Path")]
    for db in dbs:
        async for e in client.iter_list(f"assetdatabases/{db.webid}/elements", params, page_size):
            out[str(e["WebId"])] = Element(str(e["WebId"]), str(e.get("Name") or ""), str(e.get("Path") or ""))
    return list(out.values())


async def attribute_columns(client: PiClient, elements: Sequence[Element]) -> Columns:
    """The top-level attributes of every element (names and types), in one fan-out."""
    asks = [resource(f"elements/{e.webid}/attributes", [("maxCount", 10_000),
                                                         ("selectedFields", "Items.WebId;Items.Name;Items.Type")])
            for e in elements]
    cols = Columns()
    for e, answer in zip(elements, await fetch_many(client, asks), strict=True):
        exc = item_error(answer, f"attributes of element {e.path}")
        if exc is not None:
            raise exc
        items = answer.content.get("Items") if isinstance(answer.content, dict) else None
        attrs = [a for a in items if isinstance(a, dict)] if isinstance(items, list) else []
        for a in attrs:
            cols.add(str(a["WebId"]), str(a.get("Name") or ""), a.get("Type"))
        cols.widest = max(cols.widest, len(attrs))
    return cols


async def read_window(client: PiClient, elements: Sequence[Element], window: tuple[datetime, datetime],
                      interval: str, rows: WideRows, times: dict[str, datetime | None], step: timedelta) -> int:
    """Interpolated values of every element in one window; windows the server refuses as too large are split.
    Returns the number of streamset calls made."""
    start, end = window
    asks = [resource(f"streamsets/{e.webid}/interpolated",
                     [("startTime", format_ticks(to_ticks(start))), ("endTime", format_ticks(to_ticks(end))),
                      ("interval", interval), ("selectedFields", VALUE_FIELDS)]) for e in elements]
    retry: list[Element] = []
    for e, answer in zip(elements, await fetch_many(client, asks), strict=True):
        exc = item_error(answer, f"interpolated values of element {e.path}")
        if isinstance(exc, TooManyItemsError) and end > start:
            retry.append(e)
            continue
        if exc is not None:
            raise exc
        items = answer.content.get("Items") if isinstance(answer.content, dict) else None
        for item in items if isinstance(items, list) else []:
            rows.add_stream(e, item, times)
    calls = len(elements)
    if retry:
        half = max(1, int((end - start) / step) // 2)
        mid = start + half * step
        log.info("view: %d elements answered 'too many items' for [%s, %s]; splitting the window", len(retry),
                 start.isoformat(), end.isoformat())
        calls += await read_window(client, retry, (start, mid), interval, rows, times, step)
        if mid + step <= end:
            calls += await read_window(client, retry, (mid + step, end), interval, rows, times, step)
    return calls


def align_to_table(snap: Snapshot, name: str, table: pa.Table) -> pa.Table:
    """Make the new rows fit an existing view table: its extra columns are added as nulls; a column the table
    lacks is refused with a clear message (the template gained an attribute)."""
    dt = snap.table
    if dt is None:
        return table
    existing = [f.name for f in dt.schema().fields]
    new = [c for c in table.column_names if c not in existing]
    if new:
        raise SinkError(f"view table {name} has no column for {', '.join(new)} (the template gained attributes); "
                        "write to another table (table=...) or drop it")
    for col in existing:
        if col not in table.column_names:
            table = table.append_column(col, pa.nulls(table.num_rows, pa.string()))
    return table.select(existing)


async def run_view(settings: PiflowSettings, progress: Progress | None = None, *, template: str, interval: str,
                   start: str | None = None, end: str | None = None, database: str | None = None,
                   table: str | None = None, page_size: int = 1000) -> RunResult:
    """Write the wide asset view of ``template`` for ``[start, end]`` (PI time strings; default the settings'
    ``start``/``end``) every ``interval`` into ``table`` (default ``pi_view_<template>``)."""
    try:
        step = parse_interval(interval)
    except ValueError as exc:
        raise ConfigError("interval", str(exc)) from exc
    if step <= timedelta(0):
        raise ConfigError("interval", f"{interval!r} is not a positive interval")
    name = checked_table_name(table) if table is not None else table_name(template)
    async with job_run("view", settings, progress) as run:
        sink, result, progress = run.sink, run.result, run.progress
        rows, elements = await _read(run.client, settings, template, interval, start or settings.start,
                                     end or settings.end, database, step, page_size, result, progress)
        await run.close_client()
        notes = _notes(template, elements, rows)
        if rows.cells:
            meta = {"piflow.job": "view", "piflow.run_id": result.run_id}
            new_rows = rows.table()
            write = sink.commit(name, lambda snap: Write(upsert=align_to_table(snap, name, new_rows),
                                                         key=af_schema.VIEW_KEY, metadata=meta),
                                schema=new_rows.schema)
            result.values_written = write.rows() if write is not None else 0
        result.points = len(elements)
        result.message = "; ".join(notes)
        result.details = {"table": name, "elements": len(elements), "rows": len(rows.cells),
                          "columns": list(rows.columns.numeric), "not_numeric": rows.not_numeric,
                          "stream_errors": {c: len(f) for c, (f, _) in rows.errors.items()}}
        for note in notes:
            progress.note(note)
    return result


async def _read(client: PiClient, settings: PiflowSettings, template: str, interval: str, start: str, end: str,
                database: str | None, step: timedelta, page_size: int, result: RunResult,
                progress: Progress) -> tuple[WideRows, list[Element]]:
    now = await server_now(client)
    t0, t1 = resolve_time("start", start, now), resolve_time("end", end, now)
    if t1 < t0:
        raise ConfigError("end", f"the end {t1.isoformat()} is before the start {t0.isoformat()}")
    t0, t1 = align_window(t0, t1, step)
    if t1 < t0:
        raise ConfigError("interval", f"[{start}, {end}] holds no multiple of the interval {interval}")
    result.window_start, result.window_end = t0, t1
    listed, _ = await list_databases(client)
    dbs = [d for d in listed if database_matches(d.server, d.name, database)]
    if database is not None and not dbs:
        raise no_such_database(database, listed)
    elements = await find_elements(client, dbs, template, page_size)
    rows = WideRows(Columns())
    if not elements:
        return rows, elements
    rows.columns = await attribute_columns(client, elements)
    per_call = max(1, MAX_ITEMS_PER_CALL // (4 * max(1, rows.columns.widest)))
    windows = plan_windows(t0, t1, step, per_call)
    progress.start(len(windows), f"view {template}: {len(elements)} elements")
    times: dict[str, datetime | None] = {}
    for w in windows:
        await read_window(client, elements, w, interval, rows, times, step)
        progress.advance(1)
    return rows, elements


def _notes(template: str, elements: Sequence[Element], rows: WideRows) -> list[str]:
    notes = []
    if not elements:
        notes.append(f"no element uses the template {template!r}; nothing was written")
    if rows.not_numeric:
        notes.append(f"{rows.not_numeric} values of numeric attributes were digital or system states and are null "
                     "in the view (pi_values keeps them)")
    for col, (failed, err) in sorted(rows.errors.items()):
        notes.append(f"attribute {col} could not be read for {len(failed)} elements (null there), e.g. {err}")
    return notes

