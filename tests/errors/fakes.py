"""Small fakes for the error-path tests: a PI server's two `recorded` calls, held in memory.

:class:`FakeRecorded` answers like PI Web API (``startTime`` and ``endTime`` inclusive, the first ``maxCount``
events, several events may share a timestamp) and can be told to misbehave the ways real servers and proxies
do: refuse streamsets, refuse calls over an item limit, not know a point, answer without a stream that was
asked for, or fail outright. It is a fake, not a mock: the reader talks to it exactly as to ``PiClient``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from piflow.client.capabilities import Capabilities
from piflow.decode import PiValue, StreamPage, StreamsetEntry, StreamsetPage
from piflow.errors import NotFoundError, PiApiError, PiflowError, TooManyItemsError
from piflow.pitime import format_ticks, parse_iso_ticks, to_ticks
from piflow.planner import PointRef

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def values(*offsets_s: float, start: datetime = T0) -> list[PiValue]:
    """One event per offset (seconds after ``start``; equal offsets share a timestamp), values 0, 1, 2, ..."""
    return [PiValue(Timestamp=format_ticks(to_ticks(start + timedelta(seconds=s))), Value=float(i))
            for i, s in enumerate(offsets_s)]


def point(i: int) -> PointRef:
    return PointRef(f"W{i}", f"PLANT.P{i}", "Float64", "degC")


@dataclass
class Call:
    kind: str  # "streamset" or "recorded"
    webids: tuple[str, ...]
    start: str
    max_count: int


@dataclass
class FakeRecorded:
    """PI's ``streamsets/recorded`` and ``streams/{webid}/recorded`` over ``streams`` (WebID -> events)."""

    streams: dict[str, list[PiValue]]
    caps: Capabilities = field(default_factory=Capabilities)
    # Misbehaviour, each off by default:
    streamset_status: int | None = None  # every streamset call is refused with this status (405, 403, ...)
    recorded_status: int | None = None  # every recorded call is refused with this status
    max_items: int | None = None  # a call asking for more (points x maxCount) is refused: TooManyItemsError
    unknown: frozenset[str] = frozenset()  # WebIDs answered 404 (a whole streamset call naming one, too)
    failure: Callable[[Call], PiflowError | None] | None = None  # raised instead of answering, when not None
    edit_streamset: Callable[[StreamsetPage], StreamsetPage] | None = None  # what a broken server sends instead
    edit_recorded: Callable[[Call, StreamPage], StreamPage] | None = None
    calls: list[Call] = field(default_factory=list)

    def _page(self, webid: str, start: str, end: str, max_count: int) -> list[PiValue]:
        lo, hi = parse_iso_ticks(start), parse_iso_ticks(end)
        inside = [v for v in self.streams[webid] if lo <= parse_iso_ticks(v.Timestamp or "") <= hi]
        return inside[:max_count]

    def _refuse(self, call: Call, status: int | None) -> None:
        if self.failure is not None and (exc := self.failure(call)) is not None:
            raise exc
        if status is not None:
            raise PiApiError(f"{call.kind} refused", status=status, url=f"https://pi.test/piwebapi/{call.kind}")
        if self.max_items is not None and len(call.webids) * call.max_count > self.max_items:
            raise TooManyItemsError(f"over MaxReturnedItemsPerCall ({self.max_items})", status=400)
        unknown = [w for w in call.webids if w in self.unknown]
        if unknown:
            raise NotFoundError(f"unknown WebId {unknown[0]}", status=404)

    async def streamset_recorded_page(
        self, webids: Sequence[str], start: str, end: str, max_count: int, selected_fields: str | None = None
    ) -> StreamsetPage:
        call = Call("streamset", tuple(webids), start, max_count)
        self.calls.append(call)
        self._refuse(call, self.streamset_status)
        page = StreamsetPage(Items=[
            StreamsetEntry(WebId=w, Items=self._page(w, start, end, max_count)) for w in webids
        ])
        return self.edit_streamset(page) if self.edit_streamset is not None else page

    async def recorded_page(
        self, webid: str, start: str, end: str, max_count: int, selected_fields: str | None = None
    ) -> StreamPage:
        call = Call("recorded", (webid,), start, max_count)
        self.calls.append(call)
        self._refuse(call, self.recorded_status)
        page = StreamPage(Items=self._page(webid, start, end, max_count))
        return self.edit_recorded(call, page) if self.edit_recorded is not None else page
