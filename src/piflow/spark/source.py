"""What the ``pi`` data source and the Lakeflow adapter share: plan on the driver, read on the executors.

No pyspark here. :class:`PiSource` plans (lists points, cuts partitions, moves stream offsets) on the driver;
:func:`read_partition` reads one partition into an Arrow table in the table contract and runs anywhere, since
it only needs the partition (a JSON-able dict) and the options. Each read makes its own client and runs the
async readers with ``asyncio.run``: an executor's Python worker has no event loop of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import pyarrow as pa

from piflow.errors import ConfigError
from piflow.pitime import from_ticks, parse_pi_time, to_ticks
from piflow.planner import PointRef
from piflow.spark import plan
from piflow.spark.options import TABLE_ALIASES, SourceOptions
from piflow.tables import TABLES

log = logging.getLogger(__name__)

T = TypeVar("T")
Spec = dict[str, Any]

# The tables a Spark read can produce (those the ``table`` option names), with the registry's schemas.
TABLE_SCHEMAS: dict[str, pa.Schema] = {name: TABLES[name].schema for name in dict.fromkeys(TABLE_ALIASES.values())}
POINT_FIELDS = ("Items.WebId;Items.Id;Items.Name;Items.Path;Items.Descriptor;Items.PointClass;Items.PointType;"
                "Items.DigitalSetName;Items.EngineeringUnits;Items.Span;Items.Zero;Items.Step;Items.Future")


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion here (driver planner worker or executor task)."""
    async def main() -> T:
        return await make()

    return asyncio.run(main())


def table_schema(table: str) -> pa.Schema:
    try:
        return TABLE_SCHEMAS[table]
    except KeyError:
        raise ConfigError("table", f"unknown table {table!r}; one of {sorted(TABLE_SCHEMAS)}") from None


# =====================================================================================================================
# Driver side
# =====================================================================================================================
class PiSource:
    """Planning for one source (one set of options). Keeps a short-lived cache of the point list."""

    def __init__(self, opts: SourceOptions) -> None:
        self.opts = opts
        self._points: list[PointRef] | None = None
        self._listed_at = 0.0

    # ---- what is there -------------------------------------------------------------------------------------
    def server_now(self) -> datetime:
        async def go() -> datetime:
            from piflow.jobs.common import server_now

            async with self.opts.client() as client:
                return await server_now(client)

        return run(go)

    def points(self, *, refresh: bool = False) -> list[PointRef]:
        """The selected points (name filter, server, shard), sorted by WebID; cached ``pointsRefresh``."""
        fresh = time.monotonic() - self._listed_at < self.opts.points_refresh_s
        if self._points is None or refresh or not fresh:
            rows = run(lambda: list_point_objects(self.opts))
            self._points = sorted((_ref(obj) for _, obj in rows), key=lambda p: p.webid)
            self._listed_at = time.monotonic()
        return list(self._points)

    def resolve(self, text: str, setting: str, now: datetime) -> int:
        try:
            return to_ticks(parse_pi_time(text, now))
        except ValueError as exc:
            raise ConfigError(setting, f"cannot parse PI time {text!r}") from exc

    # ---- batch -------------------------------------------------------------------------------------------
    def batch_partitions(self) -> list[Spec]:
        """Every partition of a batch read of this table."""
        table = self.opts.table
        if table == "pi_values":
            now = self.server_now()
            start, end = self.resolve(self.opts.start, "start", now), self.resolve(self.opts.end, "end", now)
            if end <= start:
                raise ConfigError("end", f"must be after start ({from_ticks(start)} .. {from_ticks(end)})")
            points = self.points()
            return plan.value_partitions(plan.batch_ranges(points, start, end), points,
                                         window=self.opts.window_ticks, per_partition=self.opts.points_per_partition)
        if table == "pi_points":
            servers = run(lambda: selected_servers(self.opts))
            return [{"kind": "points", "server": [s["WebId"], s["Name"]]} for s in servers]
        dbs = run(lambda: selected_databases(self.opts))
        if table in ("pi_af_elements", "pi_af_attributes"):
            return [{"kind": "af", "table": table, "db": db} for db in dbs]
        now = self.server_now()
        start, end = self.resolve(self.opts.start, "start", now), self.resolve(self.opts.end, "end", now)
        wins = plan.windows(start, end, self.opts.window_ticks)
        return [{"kind": "frames", "db": db, "start": s, "end": e, "first": i == 0, "last": i == len(wins) - 1}
                for db in dbs for i, (s, e) in enumerate(wins)]

    # ---- stream -----------------------------------------------------------------------------------------
    def stream_target(self, cap: int | None = None) -> tuple[int, int]:
        """(origin for points starting now, the newest position a batch may reach: now minus the lag)."""
        now = self.server_now()
        target = to_ticks(now) - self.opts.safety_lag_ticks
        target -= target % 10  # microsecond-aligned, like every position
        if cap is not None:
            target = min(target, cap)
        return self.resolve(self.opts.start, "start", now), target

    def latest_offset(self, start: Mapping[str, Any] | None, cap: int | None = None) -> dict[str, Any]:
        """The end of the next micro-batch (returns ``start`` itself when there is nothing new)."""
        self._values_only()
        begin = plan.decode_offset(start)
        origin, target = self.stream_target(cap)
        keys = [plan.point_key(p.webid) for p in self.points()]
        end = plan.advance(begin, keys, origin=origin, target=target, max_window=self.opts.max_batch_window_ticks)
        if start and end == dict(start):
            return dict(start)
        return end

    def stream_partitions(self, start: Mapping[str, Any] | None, end: Mapping[str, Any]) -> list[Spec]:
        """The partitions of the micro-batch ``(start, end]``: a pure function of the two offsets."""
        self._values_only()
        begin, stop = plan.decode_offset(start), plan.decode_offset(end)
        points = self.points()
        known = {plan.point_key(p.webid) for p in points}
        if any(k not in known for k in stop.at):
            points = self.points(refresh=True)  # a point newer than the cached list
        ranges = plan.stream_ranges(begin, stop, points)
        return plan.value_partitions(ranges, points, window=self.opts.window_ticks,
                                     per_partition=self.opts.points_per_partition)

    def _values_only(self) -> None:
        if self.opts.table != "pi_values":
            raise ConfigError("table", f"{self.opts.table} cannot be streamed; only pi_values can")


def _ref(obj: Mapping[str, Any]) -> PointRef:
    return PointRef(str(obj["WebId"]), str(obj.get("Name") or ""), obj.get("PointType") or None,
                    obj.get("EngineeringUnits") or None)


# =====================================================================================================================
# Listing (async; driver and executors)
# =====================================================================================================================
async def _servers(client: Any, name: str | None) -> list[dict[str, Any]]:
    if name:
        return [await client.dataserver_by_name(name)]
    servers: list[dict[str, Any]] = await client.dataservers()
    return servers


async def selected_servers(opts: SourceOptions) -> list[dict[str, Any]]:
    async with opts.client() as client:
        return await _servers(client, opts.server)


async def list_point_objects(opts: SourceOptions, server: Sequence[str] | None = None
                             ) -> list[tuple[str, dict[str, Any]]]:
    """(server name, point object) of every selected point (one server, or the ``server`` option's)."""
    out: list[tuple[str, dict[str, Any]]] = []
    async with opts.client() as client:
        servers = ([{"WebId": server[0], "Name": server[1]}] if server is not None
                   else await _servers(client, opts.server))
        for srv in servers:
            async for obj in client.iter_points(srv["WebId"], opts.points, selected_fields=POINT_FIELDS):
                if opts.shard is None or opts.shard.owns(str(obj["WebId"])):
                    out.append((str(srv["Name"]), obj))
    return out


async def selected_databases(opts: SourceOptions) -> list[list[str]]:
    """[server, webid, name, path] of the asset databases to read (all, or the ``database`` option's)."""
    from piflow.jobs.af.databases import database_matches, list_databases, no_such_database

    async with opts.client() as client:
        dbs, _ = await list_databases(client)
    chosen = [d for d in dbs if database_matches(d.server, d.name, opts.database)]
    if opts.database and not chosen:
        raise no_such_database(opts.database, dbs)
    return [[d.server, d.webid, d.name, d.path] for d in chosen]


# =====================================================================================================================
# Executor side: one partition -> one Arrow table in the contract
# =====================================================================================================================
def read_partition(opts: SourceOptions, spec: Spec) -> pa.Table:
    kind = spec.get("kind")
    if kind == "values":
        return run(lambda: read_values(opts, spec))
    if kind == "points":
        return run(lambda: read_points(opts, spec))
    if kind == "af":
        return run(lambda: read_af(opts, spec))
    if kind == "frames":
        return run(lambda: read_frames(opts, spec))
    raise ValueError(f"not a piflow partition: {kind!r}")


async def read_values(opts: SourceOptions, spec: Spec) -> pa.Table:
    from piflow.jobs.reader import RecordedReader

    points = [plan.point_from_entry(e) for e in spec["points"]]
    async with opts.client() as client:
        reader = RecordedReader(client, max_items=opts.max_items)
        table = await reader.read(points, int(spec["start"]), int(spec["end"]), final=bool(spec["final"]))
    if reader.stats.missing:
        log.warning("%d point(s) unknown to the server were skipped", len(reader.stats.missing))
    return table


async def read_points(opts: SourceOptions, spec: Spec) -> pa.Table:
    from piflow.jobs.discover import point_row

    now = datetime.now(UTC)
    rows = [point_row(obj, name, now) for name, obj in await list_point_objects(opts, spec["server"])]
    return pa.Table.from_pylist(rows, schema=TABLE_SCHEMAS["pi_points"])


def _database(entry: Sequence[str]) -> Any:
    from piflow.jobs.af.databases import Database

    return Database(entry[0], entry[1], entry[2], entry[3])


async def read_af(opts: SourceOptions, spec: Spec) -> pa.Table:
    from piflow.jobs.af import read as af_read
    from piflow.jobs.af import rows as af_rows

    db = _database(spec["db"])
    now = datetime.now(UTC)
    async with opts.client() as client:
        read = await af_read.read_database(client, db)
        if spec["table"] == "pi_af_elements":
            return pa.Table.from_pylist(af_rows.element_rows(read, now), schema=TABLE_SCHEMAS["pi_af_elements"])
        attrs = [a for lst in read.attributes.values() for a in lst]
        paths, links = af_rows.point_queries(attrs)
        points = await af_read.resolve_points(client, paths, links) if paths or links else {}
        statics = [str(a["WebId"]) for a in attrs if af_rows.is_static(a)]
        values = await af_read.read_static_values(client, statics) if statics else {}
    return pa.Table.from_pylist(af_rows.attribute_rows(read, points, values, now),
                                schema=TABLE_SCHEMAS["pi_af_attributes"])


async def read_frames(opts: SourceOptions, spec: Spec) -> pa.Table:
    """Frames overlapping the window; each frame is kept by the window holding its start (first window:
    also frames that started earlier), so a frame spanning windows is read once."""
    from piflow.jobs.af.events import Filters, search_frames
    from piflow.progress import NullProgress

    db = _database(spec["db"])
    start, end = from_ticks(int(spec["start"])), from_ticks(int(spec["end"]))
    now = datetime.now(UTC)
    async with opts.client() as client:
        rows = await search_frames(client, db, start, end, Filters(), 1000, NullProgress(), now)
    return pa.Table.from_pylist([r for r in rows if _owns(r["start_time"], start, end, spec)],
                                schema=TABLE_SCHEMAS["pi_event_frames"])


def _owns(frame_start: datetime, start: datetime, end: datetime, spec: Spec) -> bool:
    after_start = frame_start >= start or bool(spec.get("first"))
    before_end = frame_start <= end if spec.get("last") else frame_start < end
    return after_start and before_end
