"""changes.py against snapshots of the data model taken over a much wider window than changes.py looks at."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from piflow.emulator.changes import changes_between, diff
from piflow.emulator.model import MINUTE, Events, Model, ModelConfig
from piflow.pitime import TICKS_PER_SECOND, to_ticks

HOUR = 60 * MINUTE
DAY = 24 * HOUR
T0 = to_ticks(datetime(2026, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def model() -> Model:
    # Many late arrivals and edits, so that every interval below has both.
    return Model(ModelConfig(seed=11, point_count=40, late_share=0.3, edit_share=0.3))


def snapshot(model: Model, index: int, asof: int) -> Counter[tuple[int, int]]:
    """Everything the server holds for the point at ``asof`` since two days before T0: (timestamp, variant) counts."""
    ev = model.events(model.point(0, index), T0 - 2 * DAY, asof, asof)
    return Counter(zip(ev.ticks.tolist(), ev.variant.tolist(), strict=True))


def change_keys(model: Model, index: int, t0: int, t1: int) -> tuple[Counter[tuple[int, int]], list[str]]:
    ch = changes_between(model, model.point(0, index), t0, t1)
    return Counter(zip(ch.events.ticks.tolist(), ch.events.variant.tolist(), strict=True)), list(ch.actions)


@pytest.mark.parametrize("minutes", [1, 7, 45, 180])
def test_changes_are_exactly_what_the_later_snapshot_adds(model: Model, minutes: int) -> None:
    t1 = T0 + minutes * MINUTE
    for index in range(0, 40, 3):
        before, after = snapshot(model, index, T0), snapshot(model, index, t1)
        got, actions = change_keys(model, index, T0, t1)
        assert got == after - before, index
        # Every edited event replaced exactly one old version: as many Updates as versions that went away.
        assert actions.count("Update") == sum((before - after).values()), index


def test_interval_has_late_arrivals_and_edits(model: Model) -> None:
    """The scenario above is not vacuous: late events (timestamped before t0) and edits both occur."""
    t1 = T0 + 45 * MINUTE
    late = edits = 0
    for index in range(0, 40, 3):
        ch = changes_between(model, model.point(0, index), T0, t1)
        for k, action in enumerate(ch.actions):
            if action == "Add" and int(ch.events.ticks[k]) <= T0:
                late += 1
            if action == "Update":
                edits += 1
                assert bool(ch.events.substituted[k])
                assert int(ch.events.ticks[k]) <= t1
    assert late > 0
    assert edits > 0


def test_updates_are_at_timestamps_already_held_and_adds_grow_the_timestamp(model: Model) -> None:
    t1 = T0 + 90 * MINUTE
    for index in range(0, 40, 2):
        before, after = snapshot(model, index, T0), snapshot(model, index, t1)
        count_before = Counter(ts for ts, _ in before.elements())
        count_after = Counter(ts for ts, _ in after.elements())
        ch = changes_between(model, model.point(0, index), T0, t1)
        for k, action in enumerate(ch.actions):
            ts = int(ch.events.ticks[k])
            if action == "Update":
                assert count_before[ts] >= 1
            else:
                assert count_after[ts] > count_before[ts]


def test_consecutive_intervals_compose(model: Model) -> None:
    """Reading changes every few minutes adds up to the changes of the whole span (what a channel relies on)."""
    step = 4 * MINUTE
    for index in (1, 5, 9):
        total: Counter[tuple[int, int]] = Counter()
        held = snapshot(model, index, T0)
        for k in range(30):
            got, _ = change_keys(model, index, T0 + k * step, T0 + (k + 1) * step)
            total += got
            held = held - (held - snapshot(model, index, T0 + (k + 1) * step)) + got
        end = snapshot(model, index, T0 + 30 * step)
        assert end - snapshot(model, index, T0) <= total  # nothing that arrived over the span was missed
        assert held == end


def test_no_time_passed_no_changes(model: Model) -> None:
    p = model.point(0, 2)
    assert len(changes_between(model, p, T0, T0)) == 0
    assert len(changes_between(model, p, T0, T0 - 5 * MINUTE)) == 0


def test_values_of_a_quiet_model_only_grow_at_the_end() -> None:
    """Without late arrivals or edits, the changes are just the events timestamped in (t0, t1]."""
    quiet = Model(ModelConfig(seed=3, point_count=10, late_share=0.0, edit_share=0.0))
    p = quiet.point(0, 4)
    t1 = T0 + 20 * MINUTE
    ch = changes_between(quiet, p, T0, t1)
    expected = quiet.events(p, T0 + 1, t1, t1)
    assert ch.events.ticks.tolist() == expected.ticks.tolist()
    assert set(ch.actions) <= {"Add"}
    assert len(ch) == len(expected) > 0


def test_diff_of_a_late_sibling_sharing_a_timestamp() -> None:
    """Two events at one timestamp, only the second visible at first: the first arrives as an Add."""
    m = Model(ModelConfig(seed=5, point_count=10, late_share=0.0, edit_share=0.0))
    p = m.point(0, 0)
    ev = m.events(p, T0 - 7 * DAY, T0, T0)
    _, first, counts = np.unique(ev.ticks, return_index=True, return_counts=True)
    pair = int(first[np.flatnonzero(counts == 2)[0]])  # ~0.5 % of slots hold two events
    keep_second = np.array([i for i in range(len(ev)) if i != pair], dtype=np.int64)
    ch = diff(ev.take(keep_second), ev)
    assert list(ch.actions) == ["Add"]
    assert int(ch.events.variant[0]) == int(ev.variant[pair])
    assert int(ch.events.ticks[0]) == int(ev.ticks[pair]) < T0 + TICKS_PER_SECOND


def _join(*parts: Events) -> Events:
    """Events side by side (same point), in the order given."""
    first = parts[0]
    return Events(first.point, *(np.concatenate([getattr(p, f) for p in parts]) for f in (
        "ticks", "kind", "number", "code", "good", "questionable", "substituted", "annotated", "variant")))


@pytest.mark.parametrize("late_one", [0, 1])
def test_edit_and_late_sibling_in_one_interval(late_one: int) -> None:
    """One event of a same-timestamp pair arrives late while the other is edited: the edit is the Update."""
    plain = Model(ModelConfig(seed=5, point_count=10, late_share=0.0, edit_share=0.0))
    edited = Model(ModelConfig(seed=5, point_count=10, late_share=0.0, edit_share=1.0))
    p = plain.point(0, 0)
    a = plain.events(p, T0 - 7 * DAY, T0 - DAY, T0)
    b = edited.events(p, T0 - 7 * DAY, T0 - DAY, T0)  # same events, every one of them edited by now
    assert a.ticks.tolist() == b.ticks.tolist()
    _, first, counts = np.unique(a.ticks, return_index=True, return_counts=True)
    pairs = [int(i) for i in first[counts == 2] if not a.substituted[int(i)] and not a.substituted[int(i) + 1]]
    i = pairs[0] + late_one  # the late one, shown unedited
    j = pairs[0] + 1 - late_one  # its sibling: held before, edited since
    before = a.take(np.array([j], dtype=np.int64))
    order = sorted([i, j])
    after = _join(*(a.take(np.array([k], dtype=np.int64)) if k == i else b.take(np.array([k], dtype=np.int64))
                    for k in order))
    ch = diff(before, after)
    got = {int(ch.events.variant[k]): action for k, action in enumerate(ch.actions)}
    assert got == {int(a.variant[i]): "Add", int(b.variant[j]): "Update"}


def test_batched_changes_equal_one_point_at_a_time() -> None:
    from datetime import UTC, datetime, timedelta

    from piflow.emulator.changes import changes_between, changes_between_many
    from piflow.emulator.model import Model, ModelConfig
    from piflow.pitime import to_ticks

    model = Model(ModelConfig(point_count=300, seed=21))
    points = [model.point(0, i) for i in range(300)]
    t0 = to_ticks(datetime(2026, 1, 1, tzinfo=UTC))
    t1 = t0 + to_ticks(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(minutes=20))
    batched = changes_between_many(model, points, t0, t1)
    total = 0
    for p, got in zip(points, batched, strict=True):
        alone = changes_between(model, p, t0, t1)
        assert got.actions == alone.actions
        assert got.events.ticks.tolist() == alone.events.ticks.tolist()
        assert got.events.variant.tolist() == alone.events.variant.tolist()
        total += len(got)
    assert total > 100  # twenty minutes of a running clock brings new values, late ones and edits
