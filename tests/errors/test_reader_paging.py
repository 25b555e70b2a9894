"""The reader's defences against pages it cannot trust, and how it says what went wrong.

Each test drives :class:`RecordedReader` against :class:`FakeRecorded` (PI's paging rules in memory) made to
misbehave one way, and checks what a user would read: the error names the point and the window, or the point
is set aside as missing and the rest of the call is kept.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pyarrow as pa
import pytest

from piflow.decode import PiValue, StreamPage, StreamsetEntry, StreamsetPage
from piflow.errors import (
    BadRequestError,
    BadResponseError,
    DecodeError,
    NotFoundError,
    PiApiError,
    ServerBusyError,
    TooManyItemsError,
)
from piflow.jobs.reader import RecordedReader
from piflow.pitime import to_ticks
from piflow.planner import PointRef

from .fakes import T0, Call, FakeRecorded, point, values

END = T0 + timedelta(hours=1)
WINDOW = "window [2026-01-01T00:00:00+00:00, 2026-01-01T01:00:00+00:00]"


def read(reader: RecordedReader, points: list[PointRef]) -> pa.Table:
    return asyncio.run(reader.read(points, to_ticks(T0), to_ticks(END), final=True))


def rows(table: pa.Table) -> list[tuple[str, float, int]]:
    t = table.sort_by([("webid", "ascending"), ("timestamp", "ascending"), ("seq", "ascending")])
    return list(zip(t.column("webid").to_pylist(), t.column("value_double").to_pylist(),
                    t.column("seq").to_pylist(), strict=True))


# ---- events sharing one timestamp across pages ------------------------------------------------------------


def test_a_full_page_of_already_seen_events_asks_for_bigger_pages_and_keeps_each_event_once() -> None:
    # Six events at one timestamp, pages of two: the second page holds only the two already kept, so the
    # reader must widen the page (up to the cap) instead of asking for the same two forever.
    source = FakeRecorded({"W1": values(0, 0, 0, 0, 0, 0, 10)})
    reader = RecordedReader(source, max_items=2, max_count_cap=8)
    table = read(reader, [point(1)])
    assert rows(table) == [("W1", float(i), i if i < 6 else 0) for i in range(7)]
    assert [c.max_count for c in source.calls] == [2, 2, 8]


def test_more_events_at_one_timestamp_than_the_biggest_page_is_an_error_naming_point_and_window() -> None:
    source = FakeRecorded({"W1": values(5, 5, 5, 5, 5, 5)})
    reader = RecordedReader(source, max_items=1_000, max_count_cap=4)
    with pytest.raises(DecodeError) as info:
        read(reader, [point(1)])
    assert str(info.value) == f"more than 4 events share one timestamp (point PLANT.P1 {WINDOW})"


# ---- answers that do not match the question -----------------------------------------------------------------


def test_a_streamset_answer_without_a_requested_stream_names_the_missing_point() -> None:
    def drop_second(page: StreamsetPage) -> StreamsetPage:
        return StreamsetPage(Items=[e for e in page.Items if e.WebId != "W2"])

    source = FakeRecorded({"W1": values(1), "W2": values(2), "W3": values(3)}, edit_streamset=drop_second)
    with pytest.raises(BadResponseError) as info:
        read(RecordedReader(source), [point(1), point(2), point(3)])
    assert str(info.value) == f"streamset answer lacks 1 requested streams (point PLANT.P2 {WINDOW})"


def test_a_streamset_answer_with_a_stream_nobody_asked_for_is_refused() -> None:
    def add_stranger(page: StreamsetPage) -> StreamsetPage:
        return StreamsetPage(Items=[*page.Items, StreamsetEntry(WebId="W-STRANGER", Items=values(1))])

    source = FakeRecorded({"W1": values(1)}, edit_streamset=add_stranger)
    with pytest.raises(BadResponseError) as info:
        read(RecordedReader(source), [point(1)])
    assert str(info.value) == f"streamset answer holds an unrequested WebId 'W-STRANGER' ({WINDOW})"


def test_a_stream_the_server_answers_with_an_exception_is_missing_and_the_others_are_kept() -> None:
    def fail_w2(page: StreamsetPage) -> StreamsetPage:
        for entry in page.Items:
            if entry.WebId == "W2":
                entry.Items, entry.Exception = [], {"Errors": ["PI Point not found"]}
        return page

    source = FakeRecorded({"W1": values(1, 2), "W2": values(3)}, edit_streamset=fail_w2)
    reader = RecordedReader(source)
    table = read(reader, [point(1), point(2)])
    assert rows(table) == [("W1", 0.0, 0), ("W1", 1.0, 0)]
    assert reader.stats.missing == {
        "W2": f"the server could not read this stream: ['PI Point not found'] (point PLANT.P2 {WINDOW})"}


# ---- refused calls ----------------------------------------------------------------------------------------------


def test_a_point_the_server_does_not_know_is_found_by_splitting_the_call_and_set_aside() -> None:
    source = FakeRecorded({"W1": values(1), "W2": values(2), "W3": values(3), "W4": values(4)},
                          unknown=frozenset({"W3"}))
    reader = RecordedReader(source)
    table = read(reader, [point(1), point(2), point(3), point(4)])
    assert rows(table) == [("W1", 0.0, 0), ("W2", 0.0, 0), ("W4", 0.0, 0)]
    assert reader.stats.missing == {"W3": f"HTTP 404: unknown WebId W3 (point PLANT.P3 {WINDOW})"}
    # The first 404 was checked against the first point read alone both ways: streamsets do work.
    assert reader.caps.streamsets is True
    assert reader.caps.notes == []


def test_streamsets_refused_outright_fall_back_to_one_call_per_point_and_say_so() -> None:
    source = FakeRecorded({"W1": values(1, 2), "W2": values(3)}, streamset_status=405)
    reader = RecordedReader(source)
    table = read(reader, [point(1), point(2)])
    assert rows(table) == [("W1", 0.0, 0), ("W1", 1.0, 0), ("W2", 0.0, 0)]
    assert reader.caps.streamsets is False
    assert reader.caps.notes == ["the server refuses streamsets (HTTP 405): reading recorded values with one call "
                                 "per point"]
    assert [c.kind for c in source.calls] == ["streamset", "recorded", "recorded"]


def test_a_403_for_streamsets_but_not_for_the_point_means_no_streamsets() -> None:
    source = FakeRecorded({"W1": values(1), "W2": values(2)}, streamset_status=403)
    reader = RecordedReader(source)
    table = read(reader, [point(1), point(2)])
    assert rows(table) == [("W1", 0.0, 0), ("W2", 0.0, 0)]
    assert reader.caps.notes == ["the server refuses streamsets (HTTP 403): reading recorded values with one call "
                                 "per point"]
    # The probe: the first point read alone with recorded (allowed) and again with a streamset (refused).
    assert [(c.kind, c.max_count) for c in source.calls[:3]] == [("streamset", 150_000 // 2), ("recorded", 1),
                                                                  ("streamset", 1)]


def test_a_403_for_the_point_itself_is_not_taken_for_missing_streamsets() -> None:
    source = FakeRecorded({"W1": values(1)}, streamset_status=403, recorded_status=403)
    with pytest.raises(PiApiError) as info:
        read(RecordedReader(source), [point(1)])
    assert str(info.value) == (f"HTTP 403: streamset refused [https://pi.test/piwebapi/streamset] "
                               f"(point PLANT.P1 {WINDOW})")
    assert source.caps.streamsets is None  # nothing learned: the point, not the endpoint, is refused


def test_a_bad_request_for_a_group_names_the_first_point_and_how_many_share_the_call() -> None:
    source = FakeRecorded({"W1": values(1), "W2": values(2), "W3": values(3)},
                          failure=lambda call: BadRequestError("the filter is invalid", status=400))
    with pytest.raises(BadRequestError) as info:
        read(RecordedReader(source), [point(1), point(2), point(3)])
    assert str(info.value) == f"HTTP 400: the filter is invalid (point PLANT.P1 (+2 more in the same call) {WINDOW})"


def test_a_failure_that_is_no_http_error_is_located_too() -> None:
    # The client raises DecodeError when an answer cannot be decoded: it must name where, like the others.
    source = FakeRecorded({"W1": values(1)}, failure=lambda call: DecodeError("Value of an unknown shape"))
    with pytest.raises(DecodeError) as info:
        read(RecordedReader(source), [point(1)])
    assert str(info.value) == f"Value of an unknown shape (point PLANT.P1 {WINDOW})"


def test_a_single_point_refused_as_too_many_items_even_one_at_a_time_is_an_error() -> None:
    source = FakeRecorded({"W1": values(1, 2, 3)}, max_items=0)
    reader = RecordedReader(source, max_items=8)
    with pytest.raises(TooManyItemsError) as info:
        read(reader, [point(1)])
    assert str(info.value) == f"HTTP 400: over MaxReturnedItemsPerCall (0) (point PLANT.P1 {WINDOW})"
    assert [c.max_count for c in source.calls] == [8, 4, 2, 1]  # halved down to one value per call first


def test_a_follow_up_page_refused_as_too_many_items_is_read_in_smaller_pages() -> None:
    # The streamset call passes; the follow-up `recorded` calls are refused until they ask for at most 2.
    source = FakeRecorded({"W1": values(*range(9))},
                          failure=lambda c: TooManyItemsError("too many", status=400)
                          if c.kind == "recorded" and c.max_count > 2 else None)
    reader = RecordedReader(source, max_items=8)
    table = read(reader, [point(1)])
    assert [r[1] for r in rows(table)] == [float(i) for i in range(9)]
    assert reader.stats.splits == 2  # 8 -> 4 -> 2


def test_a_follow_up_page_refused_even_for_one_value_is_an_error_naming_point_and_window() -> None:
    source = FakeRecorded({"W1": values(*range(4))},
                          failure=lambda c: TooManyItemsError("too many", status=400) if c.kind == "recorded" else None)
    with pytest.raises(TooManyItemsError) as info:
        read(RecordedReader(source, max_items=2), [point(1)])
    assert str(info.value) == f"HTTP 400: too many (point PLANT.P1 {WINDOW})"


def test_a_point_deleted_between_two_pages_is_missing_and_keeps_what_was_read() -> None:
    source = FakeRecorded({"W1": values(*range(4)), "W2": values(1)},
                          failure=lambda c: NotFoundError("unknown WebId W1", status=404)
                          if c.kind == "recorded" else None)
    reader = RecordedReader(source, max_items=4)
    table = read(reader, [point(1), point(2)])
    assert rows(table) == [("W1", 0.0, 0), ("W1", 1.0, 0), ("W2", 0.0, 0)]  # the first page of W1 is kept
    assert reader.stats.missing == {"W1": f"HTTP 404: unknown WebId W1 (point PLANT.P1 {WINDOW})"}


def test_a_follow_up_page_that_fails_names_its_point_and_window() -> None:
    source = FakeRecorded({"W1": values(*range(4))},
                          failure=lambda c: ServerBusyError("Service Unavailable", status=503)
                          if c.kind == "recorded" else None)
    with pytest.raises(ServerBusyError) as info:
        read(RecordedReader(source, max_items=2), [point(1)])
    assert str(info.value) == f"HTTP 503: Service Unavailable (point PLANT.P1 {WINDOW})"


def test_the_check_for_a_silent_page_cap_that_fails_names_its_point_and_window() -> None:
    # 120 values where 200 were asked for: the reader reads on once to learn whether the server capped the page.
    def cap_120(page: StreamsetPage) -> StreamsetPage:
        for entry in page.Items:
            entry.Items = entry.Items[:120]
        return page

    def bad_gateway(call: Call) -> ServerBusyError | None:
        return ServerBusyError("Bad Gateway", status=502) if call.kind == "recorded" else None

    source = FakeRecorded({"W1": values(*range(300))}, edit_streamset=cap_120, failure=bad_gateway)
    with pytest.raises(ServerBusyError) as info:
        read(RecordedReader(source, max_items=200), [point(1)])
    assert str(info.value) == f"HTTP 502: Bad Gateway (point PLANT.P1 {WINDOW})"


# ---- values that cannot be stored -------------------------------------------------------------------------------


def test_a_value_without_a_timestamp_names_point_and_window() -> None:
    def drop_timestamp(page: StreamsetPage) -> StreamsetPage:
        page.Items[0].Items.append(PiValue(Timestamp=None, Value=2.0))
        return page

    source = FakeRecorded({"W1": values(1)}, edit_streamset=drop_timestamp)
    with pytest.raises(DecodeError) as info:
        read(RecordedReader(source), [point(1)])
    assert str(info.value) == f"a value without Timestamp (point PLANT.P1 {WINDOW})"


def test_an_unparseable_timestamp_in_a_full_page_names_point_and_window() -> None:
    def garble(page: StreamsetPage) -> StreamsetPage:
        page.Items[0].Items[-1].Timestamp = "yesterday at noon"
        return page

    source = FakeRecorded({"W1": values(1, 2, 3)}, edit_streamset=garble)
    with pytest.raises(DecodeError) as info:
        read(RecordedReader(source, max_items=3), [point(1)])
    assert str(info.value) == f"unparseable timestamp in a recorded page (point PLANT.P1 {WINDOW})"


def test_an_unparseable_timestamp_where_a_page_resumes_names_point_and_window() -> None:
    def garble_first(call: Call, page: StreamPage) -> StreamPage:
        page.Items[0].Timestamp = "2026-13-45T99:00:00Z"
        return page

    source = FakeRecorded({"W1": values(1, 1, 2, 3)}, edit_recorded=garble_first)
    with pytest.raises(DecodeError) as info:
        read(RecordedReader(source, max_items=2), [point(1)])
    assert str(info.value) == f"unparseable timestamp '2026-13-45T99:00:00Z' (point PLANT.P1 {WINDOW})"
