"""Read every recorded value of a set of points over one window, whatever the server's page limits.

This is where the silent ``maxCount`` truncation is defeated: a page that comes back exactly full means
"there may be more", so the stream is read again from its last timestamp *inclusive*, and the events at that
timestamp that were already seen are dropped (PI allows several events per timestamp). A call the server
refuses as over ``MaxReturnedItemsPerCall`` is split (fewer points per call, then a smaller maxCount).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np
import pyarrow as pa

from piflow import decode, schema
from piflow.client.capabilities import Capabilities
from piflow.errors import BadResponseError, DecodeError, NotFoundError, PiApiError, PiflowError, TooManyItemsError
from piflow.pitime import format_ticks, from_ticks, parse_iso_ticks
from piflow.planner import PointRef, max_count_for

log = logging.getLogger(__name__)

# Only what the table needs: halves the bytes per value compared with the default answer.
STREAMSET_FIELDS = (
    "Items.WebId;Items.UnitsAbbreviation;Items.Exception;Items.Items.Timestamp;Items.Items.Value;Items.Items.Good;"
    "Items.Items.Questionable;Items.Items.Substituted;Items.Items.Annotated"
)
STREAM_FIELDS = (
    "UnitsAbbreviation;Items.Timestamp;Items.Value;Items.Good;Items.Questionable;Items.Substituted;Items.Annotated"
)


CAP_CHECK_MIN = 100  # pages shorter than this are not checked for a silent cap (no server caps that low)


class RecordedSource(Protocol):
    """The two client calls the reader needs (PiClient provides them)."""

    async def streamset_recorded_page(
        self, webids: Sequence[str], start: str, end: str, max_count: int, selected_fields: str | None = None
    ) -> decode.StreamsetPage: ...

    async def recorded_page(
        self, webid: str, start: str, end: str, max_count: int, selected_fields: str | None = None
    ) -> decode.StreamPage: ...


@dataclass
class _Cursor:
    """Where a stream resumes: the last timestamp read and how many events at it were already kept."""

    point: PointRef
    start: str
    seen_at_start: int = 0
    max_count: int = 0


@dataclass
class ReaderStats:
    pages: int = 0
    continuations: int = 0
    splits: int = 0
    values: int = 0
    per_point: dict[str, int] = field(default_factory=dict)
    # Points the server no longer knows (404), with the error that says so; the rest of their call is kept.
    missing: dict[str, str] = field(default_factory=dict)


class RecordedReader:
    """Reads windows of recorded values; what the server lacks is learned in ``caps`` (the client's, when the
    source has them): streamsets refused means one ``recorded`` call per point, and a server that returns
    fewer values than ``maxCount`` asked for without saying so is caught by reading on after the longest page
    seen so far, once per new longest page."""

    def __init__(self, source: RecordedSource, *, max_items: int = 150_000, max_count_cap: int = 150_000) -> None:
        self.source = source
        self.max_items = max_items
        self.max_count_cap = max_count_cap
        self.stats = ReaderStats()
        caps = getattr(source, "caps", None)
        self.caps: Capabilities = caps if isinstance(caps, Capabilities) else Capabilities()
        http = getattr(source, "http", None)
        self._gate = asyncio.Semaphore(max(1, int(getattr(http, "max_connections", 8))))

    async def read(
        self, points: Sequence[PointRef], start_ticks: int, end_ticks: int, *, final: bool = True,
        source: str = schema.SOURCE_RECORDED, ingested_at: datetime | None = None,
    ) -> pa.Table:
        """All events of ``points`` in [start, end] (or [start, end) unless ``final``) as a pi_values table."""
        builder = decode.ColumnBuilder(source=source)
        window = (from_ticks(start_ticks), from_ticks(end_ticks))
        start, end = format_ticks(start_ticks), format_ticks(end_ticks)
        if self.caps.streamsets is False:
            follow_ups = await self._per_stream(builder, list(points), start, end, window)
        else:
            follow_ups = await self._streamset(builder, list(points), start, end, window)
        while follow_ups:
            self.stats.continuations += len(follow_ups)
            results = await asyncio.gather(*(self._stream(builder, c, end, window) for c in follow_ups))
            follow_ups = [c for c in results if c is not None]
        return builder.table(ingested_at=ingested_at, before_ns=None if final else end_ticks * 100)

    async def _streamset(
        self, builder: decode.ColumnBuilder, points: list[PointRef], start: str, end: str,
        window: tuple[datetime, datetime], max_count: int | None = None,
    ) -> list[_Cursor]:
        """One streamset call (split on over-limit answers); returns cursors of streams with full pages."""
        mc = max_count or min(self.max_count_cap, max_count_for(len(points), self.max_items))
        try:
            page = await self.source.streamset_recorded_page(
                [p.webid for p in points], start, end, mc, STREAMSET_FIELDS
            )
        except PiApiError as exc:
            if self.caps.streamsets is None and await self._streamsets_refused(exc, points[0], start, end):
                self.caps.fallback("streamsets", f"the server refuses streamsets (HTTP {exc.status}): reading "
                                                 "recorded values with one call per point")
            if self.caps.streamsets is False:  # learned here or by a call that ran alongside this one
                return await self._per_stream(builder, points, start, end, window)
            if not isinstance(exc, TooManyItemsError | NotFoundError):
                raise exc.located(point=_names(points), window=window) from None
            self.stats.splits += 1
            if len(points) > 1:  # split: fewer points per call, or find the one the server does not know
                half = len(points) // 2
                a = await self._streamset(builder, points[:half], start, end, window)
                b = await self._streamset(builder, points[half:], start, end, window)
                return a + b
            if isinstance(exc, NotFoundError):
                self._missing(points[0], exc, window)
                return []
            if mc > 1:
                return await self._streamset(builder, points, start, end, window, max(1, mc // 2))
            raise exc.located(point=points[0].name, window=window) from None
        except PiflowError as exc:
            raise exc.located(point=_names(points), window=window) from None
        self.caps.worked("streamsets")
        by_webid = {p.webid: p for p in points}
        cursors: list[_Cursor] = []
        seen: set[str] = set()
        longest = max(page.Items, key=lambda e: len(e.Items), default=None)
        if longest is not None and longest.WebId in by_webid:
            await self._check_cap(by_webid[longest.WebId], longest.Items, mc, end, window)
        for entry in page.Items:
            p = by_webid.get(entry.WebId or "")
            if p is None:
                raise BadResponseError(f"streamset answer holds an unrequested WebId {entry.WebId!r}",
                                       window=window)
            seen.add(p.webid)
            if entry.Exception:
                errors = entry.Exception.get("Errors") if isinstance(entry.Exception, dict) else None
                self._missing(p, NotFoundError(f"the server could not read this stream: {errors or entry.Exception}"),
                              window)
                continue
            cur = _Cursor(p, start, 0, mc)
            nxt = self._take(builder, cur, entry.Items, entry.UnitsAbbreviation, window)
            if nxt is not None:
                cursors.append(nxt)
        missing = [p.name for p in points if p.webid not in seen]
        if missing:
            raise BadResponseError(f"streamset answer lacks {len(missing)} requested streams", point=missing[0],
                                   window=window)
        self.stats.pages += 1
        return cursors

    async def _stream(
        self, builder: decode.ColumnBuilder, cur: _Cursor, end: str, window: tuple[datetime, datetime]
    ) -> _Cursor | None:
        try:
            page = await self.source.recorded_page(cur.point.webid, cur.start, end, cur.max_count, STREAM_FIELDS)
        except TooManyItemsError as exc:
            self.stats.splits += 1
            if cur.max_count > 1:
                cur.max_count = max(1, cur.max_count // 2)
                return cur
            raise exc.located(point=cur.point.name, window=window) from None
        except NotFoundError as exc:
            self._missing(cur.point, exc, window)
            return None
        except PiflowError as exc:
            raise exc.located(point=cur.point.name, window=window) from None
        self.stats.pages += 1
        await self._check_cap(cur.point, page.Items, cur.max_count, end, window)
        return self._take(builder, cur, page.Items, page.UnitsAbbreviation, window)

    async def _per_stream(self, builder: decode.ColumnBuilder, points: Sequence[PointRef], start: str, end: str,
                          window: tuple[datetime, datetime]) -> list[_Cursor]:
        """The first page of every point with its own ``recorded`` call (no streamsets); full pages' cursors."""
        mc = min(self.max_count_cap, max_count_for(1, self.max_items))

        async def one(p: PointRef) -> _Cursor | None:
            async with self._gate:
                return await self._stream(builder, _Cursor(p, start, 0, mc), end, window)

        return [c for c in await asyncio.gather(*(one(p) for p in points)) if c is not None]

    async def _streamsets_refused(self, exc: PiApiError, point: PointRef, start: str, end: str) -> bool:
        """Whether a failed streamset call means the server has no streamsets, not that a point is unknown: a
        405 or 501 says so outright; after a 404 or 403 the first point is read both ways, once."""
        if exc.status in (405, 501):
            return True
        if exc.status not in (403, 404):
            return False
        try:
            await self.source.recorded_page(point.webid, start, end, 1, STREAM_FIELDS)
        except PiApiError:
            return False  # the point itself is refused: the streamset call may be fine
        try:
            await self.source.streamset_recorded_page([point.webid], start, end, 1, STREAMSET_FIELDS)
        except PiApiError as again:
            return again.status == exc.status
        self.caps.worked("streamsets")
        return False

    async def _check_cap(self, point: PointRef, items: list[decode.PiValue], asked: int, end: str,
                         window: tuple[datetime, datetime]) -> None:
        """Learn whether the server cut this page short of ``asked`` without saying so: read on from its last
        timestamp; more values there mean the page's length is the server's cap. Done only for a page longer
        than any shown complete before, so a run pays it a few times, not per page."""
        n = len(items)
        caps = self.caps
        if caps.max_count_cap is not None or n >= asked or n <= max(caps.proven_page, CAP_CHECK_MIN - 1):
            return
        last = items[-1].Timestamp or ""
        at_last = sum(1 for v in items if v.Timestamp == last)
        try:
            page = await self.source.recorded_page(point.webid, last, end, at_last + 1, STREAM_FIELDS)
        except PiflowError as exc:
            raise exc.located(point=point.name, window=window) from None
        self.stats.pages += 1
        if len(page.Items) > at_last:
            caps.max_count_cap = n
            caps.note(f"the server returns at most {n} values per stream and page although more are asked for: "
                      "reading on after every page of that length")
        else:
            caps.proven_page = max(caps.proven_page, n)

    def _missing(self, point: PointRef, exc: NotFoundError, window: tuple[datetime, datetime]) -> None:
        exc.located(point=point.name, window=window)
        log.warning("point %s is unknown to the server (deleted?): %s", point.name, exc)
        self.stats.missing[point.webid] = str(exc)

    def _take(
        self, builder: decode.ColumnBuilder, cur: _Cursor, items: list[decode.PiValue], units: str | None,
        window: tuple[datetime, datetime],
    ) -> _Cursor | None:
        """Keep the new events of one page; return the cursor to continue from if the page was full."""
        cap = self.caps.max_count_cap
        full = len(items) >= cur.max_count or (cap is not None and len(items) >= cap)
        skip = 0
        if cur.seen_at_start:
            start_ticks = parse_iso_ticks(cur.start)
            while skip < len(items) and skip < cur.seen_at_start and _ticks(items[skip], cur, window) == start_ticks:
                skip += 1
        kept = items[skip:] if skip else items
        try:
            builder.add(cur.point.webid, kept, point_type=cur.point.point_type, default_units=units or cur.point.units,
                        where=cur.point.name)
        except DecodeError as exc:
            raise exc.located(point=cur.point.name, window=window) from None
        self.stats.values += len(kept)
        self.stats.per_point[cur.point.webid] = self.stats.per_point.get(cur.point.webid, 0) + len(kept)
        if not full:
            return None
        # Resume from the newest timestamp of this page, inclusive.
        ticks = _page_ticks(items, cur, window)
        if bool((ticks[1:] < ticks[:-1]).any()):
            raise BadResponseError("recorded page is not in time order; cannot page through it safely",
                                   point=cur.point.name, window=window)
        last = int(ticks[-1])
        at_last = int((ticks == last).sum())
        if cur.seen_at_start and last == parse_iso_ticks(cur.start):
            at_last = cur.seen_at_start + len(kept)
            if not kept:
                # A full page of already-seen events at one timestamp: ask for more per page.
                if cur.max_count >= self.max_count_cap:
                    raise DecodeError(f"more than {self.max_count_cap} events share one timestamp",
                                      point=cur.point.name, window=window)
                return _Cursor(cur.point, cur.start, cur.seen_at_start, min(self.max_count_cap, cur.max_count * 4))
        return _Cursor(cur.point, format_ticks(last), at_last, cur.max_count)


def _page_ticks(items: list[decode.PiValue], cur: _Cursor, window: tuple[datetime, datetime]) -> np.ndarray:
    """Ticks (100 ns) of every value of a page, parsed in Arrow rather than one by one."""
    try:
        ns = decode.ascii_strings([v.Timestamp or "" for v in items]).cast(pa.timestamp("ns", tz="UTC"))
    except pa.ArrowInvalid as exc:
        raise DecodeError("unparseable timestamp in a recorded page", point=cur.point.name, window=window) from exc
    return np.asarray(ns.cast(pa.int64()).to_numpy(zero_copy_only=False)) // 100


def _ticks(v: decode.PiValue, cur: _Cursor, window: tuple[datetime, datetime]) -> int:
    try:
        return parse_iso_ticks(v.Timestamp or "")
    except ValueError as exc:
        raise DecodeError(f"unparseable timestamp {v.Timestamp!r}", point=cur.point.name, window=window) from exc


def _names(points: Sequence[PointRef]) -> str:
    if len(points) == 1:
        return points[0].name
    return f"{points[0].name} (+{len(points) - 1} more in the same call)"
