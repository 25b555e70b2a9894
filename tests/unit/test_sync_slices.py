"""How sync cuts a long range into committed slices (pure)."""

from __future__ import annotations

from piflow.jobs.sync import sync_slices
from piflow.pitime import TICKS_PER_SECOND

S = TICKS_PER_SECOND
H = 3600 * S


def test_a_short_range_is_one_slice_ending_at_the_end() -> None:
    starts = {"a": 10 * H, "b": 10 * H + 5}
    assert sync_slices(starts, 11 * H + 7, 6 * H) == [(10 * H, 11 * H + 7, True, starts)]


def test_slices_meet_on_whole_seconds_and_points_join_where_they_start() -> None:
    starts = {"a": 0 * H + 3, "b": 13 * H}  # b's watermark is newer: it joins the slice holding its start
    slices = sync_slices(starts, 20 * H, 6 * H)
    assert [(s, e, last) for s, e, last, _ in slices] == [
        (3, 6 * H, False), (6 * H, 12 * H, False), (12 * H, 18 * H, False), (18 * H, 20 * H, True)]
    assert [sorted(ss) for *_, ss in slices] == [["a"], ["a"], ["a", "b"], ["a", "b"]]
    assert slices[2][3] == {"a": 12 * H, "b": 13 * H}  # each read starts at the slice or the point's own start
    assert all(e % S == 0 for _, e, last, _ in slices if not last)
    ends = [e for _, e, _, _ in slices]
    assert [s for s, _, _, _ in slices][1:] == ends[:-1]  # contiguous: every tick in exactly one slice


def test_a_point_starting_exactly_at_the_end_is_read_in_the_last_slice() -> None:
    slices = sync_slices({"a": 0, "b": 9 * H}, 9 * H, 6 * H)
    assert slices[-1][2] is True
    assert "b" in slices[-1][3]
