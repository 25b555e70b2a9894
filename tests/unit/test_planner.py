import itertools

from piflow.pitime import TICKS_PER_SECOND
from piflow.planner import (
    DAY_TICKS,
    PointRef,
    Shard,
    WorkUnit,
    group_for_sync,
    make_plan,
    max_count_for,
    progress_shards,
    units_to_do,
)

P = [PointRef(f"W{i}", f"TAG{i}") for i in range(5)]


def test_windows_cover_the_range_half_open_and_last_is_final() -> None:
    plan = make_plan(0, 2 * DAY_TICKS + 5, DAY_TICKS)
    assert plan.windows == 3
    assert [plan.window_bounds(w) for w in range(3)] == [(0, DAY_TICKS), (DAY_TICKS, 2 * DAY_TICKS),
                                                        (2 * DAY_TICKS, 2 * DAY_TICKS + 5)]
    units = units_to_do(plan, [Shard("s", tuple(P))], {}, group_size=2)
    assert [len(u.points) for u in units] == [2, 2, 1] * 3
    assert [u.final for u in units] == [False] * 6 + [True] * 3


def _covered(units: list[WorkUnit]) -> set[tuple[int, str]]:
    return {(u.window, p.webid) for u in units for p in u.points}


def test_a_shard_resumes_at_its_position_whatever_group_size_committed_it() -> None:
    plan = make_plan(0, 3 * DAY_TICKS, DAY_TICKS)
    a, b = Shard("a", tuple(P[:3])), Shard("b", tuple(P[3:]))
    # shard a: window 0 done and the first two points of window 1; shard b: nothing
    units = units_to_do(plan, [a, b], {"a": 3 + 2}, group_size=10)
    assert _covered(units) == {(1, "W2"), (2, "W0"), (2, "W1"), (2, "W2")} | {
        (w, x) for w in range(3) for x in ("W3", "W4")}
    # each unit says where its shard stands before and after it, and a shard's units chain
    for shard in (a, b):
        chain = sorted((u for u in units if u.shard == shard.key), key=lambda u: u.first)
        assert all(x.after == y.first for x, y in itertools.pairwise(chain))
        assert chain[-1].after == plan.windows * len(shard.points)
    assert units_to_do(plan, [a, b], {"a": 9, "b": 6}, group_size=2) == []


def test_shards_cut_at_content_defined_boundaries_survive_a_changed_point_list() -> None:
    points = [PointRef(f"F1DP-{i:06d}", f"T{i}") for i in range(20_000)]
    shards = progress_shards(points, mean=64)
    assert sorted(p.webid for s in shards for p in s.points) == sorted(p.webid for p in points)
    assert 200 <= len(shards) <= 450  # about 20,000 / 64, not one per point and not one for all
    assert len({s.key for s in shards}) == len(shards)
    added = progress_shards([*points, PointRef("F1DP-010000x", "NEW")], mean=64)
    removed = progress_shards(points[:5000] + points[5001:], mean=64)
    for other in (added, removed):
        kept = {s.key for s in shards} & {s.key for s in other}
        assert len(kept) >= len(shards) - 2  # only the shard the point falls in changes (and maybe a neighbour)
        assert len(kept) < len(shards)
    assert progress_shards(list(reversed(points)), mean=64) == shards  # the order points come in does not matter


def test_app_ids_are_stable_and_distinct() -> None:
    a, b = make_plan(0, DAY_TICKS), make_plan(0, DAY_TICKS)
    assert a.app_id("k1") == b.app_id("k1")
    assert a.app_id("k1") != a.app_id("k2")
    assert a.app_id("k1") != make_plan(0, 2 * DAY_TICKS).app_id("k1")


def test_sync_groups_respect_size_and_slack() -> None:
    starts = {"W0": 0, "W1": 10, "W2": 20, "W3": 10_000, "W4": 10_005}
    groups = group_for_sync(starts, P, group_size=2, slack_ticks=100)
    assert [(s, [p.webid for p in ps]) for s, ps in groups] == [(0, ["W0", "W1"]), (20, ["W2"]),
                                                               (10_000, ["W3", "W4"])]


def test_max_count_keeps_a_full_answer_under_the_limit() -> None:
    assert max_count_for(100, 150_000) * 100 <= 150_000
    assert max_count_for(1, 150_000) == 150_000
    assert max_count_for(10**6, 10) == 1
    assert TICKS_PER_SECOND == 10_000_000


def test_adaptive_concurrency_backs_off_and_recovers() -> None:
    from piflow.planner import AdaptiveConcurrency

    c = AdaptiveConcurrency(8)
    c.on_throttled()
    c.on_throttled()
    assert c.limit == 2
    c.on_done(1.0, 10_000)  # the first observation sets the baseline
    c.on_done(1.0, 10_000)
    assert c.limit == 4  # each healthy unit adds one back
    c.on_done(10.0, 10_000)  # ten times slower per value than the best: the server struggles
    assert c.limit == 3
    for _ in range(20):
        c.on_done(1.0, 10_000)
    assert c.limit == 8  # never above the configured maximum
    c2 = AdaptiveConcurrency(1)
    c2.on_throttled()
    assert c2.limit == 1  # never below one


def test_group_size_keeps_every_call_slot_busy_when_points_are_few() -> None:
    from piflow.planner import group_size

    assert group_size(100, 8, 0, 50) == 13  # 8 calls of <= 13 points, not 2 calls of 50
    assert group_size(10_000, 8, 0, 50) == 50  # many points: the default
    assert group_size(3, 8, 0, 50) == 1
    assert group_size(100, 8, 20, 50) == 20  # what the user asked for wins
    assert group_size(0, 8, 0, 50) == 1


async def test_all_or_none_cancels_the_others_when_one_fails() -> None:
    import asyncio

    import pytest

    from piflow.jobs.common import all_or_none

    cancelled: list[int] = []

    async def slow(i: int) -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    async def fails() -> int:
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await all_or_none([slow(1), fails(), slow(2)])
    assert sorted(cancelled) == [1, 2]  # both were cancelled and awaited before the error surfaced

    async def quick(i: int) -> int:
        await asyncio.sleep(0.001 * (3 - i))
        return i

    assert await all_or_none(quick(i) for i in range(3)) == [0, 1, 2]  # results in order


def test_recheck_every_auto_adapts_to_the_fleet_and_an_interval_is_kept() -> None:
    from datetime import timedelta

    from piflow.config import AUTO_RECHECK_POINTS, PiflowSettings

    auto = PiflowSettings(lookback="2h")
    assert auto.recheck_interval(AUTO_RECHECK_POINTS) is None  # every run, as small fleets always did
    assert auto.recheck_interval(AUTO_RECHECK_POINTS + 1) == timedelta(hours=2)
    assert PiflowSettings(recheck_every="always").recheck_interval(10**6) is None
    assert PiflowSettings(recheck_every="15m").recheck_interval(10) == timedelta(minutes=15)


def test_a_rechecking_sync_reaches_back_past_the_previous_recheck() -> None:
    from piflow.jobs.sync import Recheck
    from piflow.pitime import TICKS_PER_US

    lookback, default = 3600 * TICKS_PER_SECOND, 123
    mark_us, last = 10_000_000_000, 9_000_000_000 * TICKS_PER_US
    full = Recheck(full=True, every_ticks=1800 * TICKS_PER_SECOND, last_ticks=last, end_ticks=0, app_id="a")
    assert full.start(mark_us, lookback, default) == last - lookback  # the earlier of watermark and last re-read
    assert full.start(None, lookback, default) == default  # a point never read starts where the settings say
    tail = Recheck(full=False, every_ticks=1800 * TICKS_PER_SECOND, last_ticks=last, end_ticks=0, app_id="a")
    assert tail.start(mark_us, lookback, default) == mark_us * TICKS_PER_US  # from the watermark, inclusive
    assert tail.transactions() == ()
    always = Recheck(full=True, every_ticks=None, last_ticks=None, end_ticks=0, app_id="a")
    assert always.start(mark_us, lookback, default) == mark_us * TICKS_PER_US - lookback
    assert always.transactions() == ()  # nothing to remember when every run re-reads
    assert full.transactions() == (("a", 0),)
