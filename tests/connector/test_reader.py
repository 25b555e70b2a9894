"""The reader's paging against the real emulator with tiny pages, and its refusal of pages it cannot trust."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import pyarrow.compute as pc
import pytest

from piflow.client.api import PiClient
from piflow.decode import StreamPage, StreamsetPage
from piflow.emulator import EmulatorSettings
from piflow.emulator.server import EmulatorServer
from piflow.emulator.truth import recorded_truth
from piflow.errors import BadResponseError
from piflow.jobs.reader import RecordedReader
from piflow.pitime import to_ticks
from piflow.planner import PointRef
from tests.rows import assert_same_rows

from .conftest import T0


def refs(srv: EmulatorServer, indices: Sequence[int]) -> list[PointRef]:
    out = []
    for i in indices:
        p = srv.state.model.point(0, i)
        out.append(PointRef(p.webid, p.name, p.point_type, p.units or None))
    return out


def test_tiny_pages_across_shared_timestamps_lose_and_repeat_nothing() -> None:
    # Seed and range chosen so that events sharing a timestamp fall on page boundaries.
    with EmulatorServer(EmulatorSettings(points=200, seed=4, now=T0, frozen=True, max_returned_items=60)) as srv:
        points = refs(srv, range(0, 30))
        start, end = T0 - timedelta(hours=4), T0

        async def read() -> tuple[object, RecordedReader]:
            async with PiClient(srv.url) as client:
                # The reader believes the limit is 300 items; the server's is 60: it must split calls.
                reader = RecordedReader(client, max_items=300, max_count_cap=7)
                return await reader.read(points, to_ticks(start), to_ticks(end), final=True), reader

        table, reader = asyncio.run(read())
        model_points = [srv.state.model.point(0, i) for i in range(0, 30)]
        expected = recorded_truth(srv.state, model_points, start, end)
        dup_keys = pc.sum(pc.greater(expected.column("seq"), 0)).as_py()
        assert dup_keys > 0  # the data really has events sharing a timestamp
        assert reader.stats.continuations > 50  # and the reader really paged through them
        assert reader.stats.splits > 0  # and split calls the server refused as too large
        assert_same_rows(table, expected)  # type: ignore[arg-type]


class ReversingSource:
    """A fake PI answering with a page in reverse time order (as a broken proxy cache might)."""

    def __init__(self, client: PiClient) -> None:
        self.client = client

    async def streamset_recorded_page(self, webids: Sequence[str], start: str, end: str, max_count: int,
                                      selected_fields: str | None = None) -> StreamsetPage:
        page = await self.client.streamset_recorded_page(webids, start, end, max_count, selected_fields)
        for entry in page.Items:
            entry.Items.reverse()
        return page

    async def recorded_page(self, webid: str, start: str, end: str, max_count: int,
                            selected_fields: str | None = None) -> StreamPage:
        raise AssertionError("not reached")


def test_out_of_order_full_page_is_a_clear_error_naming_point_and_window() -> None:
    with EmulatorServer(EmulatorSettings(points=20, seed=4, now=T0, frozen=True)) as srv:
        points = refs(srv, [0])

        async def read() -> None:
            async with PiClient(srv.url) as client:
                reader = RecordedReader(ReversingSource(client), max_count_cap=5)  # type: ignore[arg-type]
                await reader.read(points, to_ticks(T0 - timedelta(hours=2)), to_ticks(T0))

        with pytest.raises(BadResponseError, match="not in time order") as info:
            asyncio.run(read())
        assert points[0].name in str(info.value)
        assert "2025-12-31T22:00:00" in str(info.value)
