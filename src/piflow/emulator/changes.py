"""Which recorded events of a point appeared or were edited between two virtual times (pure).

The data model keeps no change log: an event becomes visible ``delay`` after its timestamp (late arrivals)
and may be replaced by an edited value (flagged Substituted) some minutes later. Channels and stream
updates must still say "what changed since you last looked", so the change set between virtual times
``t0 < t1`` is the difference of two snapshots of :meth:`Model.events` (as of ``t0`` and as of ``t1``).
Only a bounded window can differ: an event whose timestamp is older than the longest late delay and the
longest edit delay before ``t0`` was already final at ``t0``.

Events are matched by timestamp and ``variant`` (the per-event hash every value is made from, which an
edit replaces). When one event of a pair sharing a timestamp arrives late *and* its sibling is edited in
the same interval, which is which cannot be told apart from the snapshots; the Substituted one is then
reported as the Update and the other as the Add (the multiset of values is right either way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from piflow.emulator.model import MINUTE, Events, Model, ModelConfig, PointSpec

Action = Literal["Add", "Update"]
ADD: Action = "Add"
UPDATE: Action = "Update"


@dataclass(frozen=True)
class Changes:
    """Changed events as of the later time (oldest first) and what happened to each."""

    events: Events
    actions: tuple[Action, ...]

    def __len__(self) -> int:
        return len(self.actions)


def settle_ticks(config: ModelConfig) -> int:
    """How long after its timestamp an event may still appear or change (late delay or edit delay)."""
    return max(config.late_max_minutes, config.edit_max_minutes, 0) * MINUTE + 1


def changes_between(model: Model, point: PointSpec, t0: int, t1: int) -> Changes:
    """Events of ``point`` that became visible or were edited after virtual time ``t0`` up to ``t1``."""
    if t1 <= t0:
        return Changes(model.events(point, t1, t1 - 1, t1), ())  # an empty window
    start = t0 - settle_ticks(model.config)
    before = model.events(point, start, t0, t0)
    after = model.events(point, start, t1, t1)
    return diff(before, after)


def changes_between_many(model: Model, points: Sequence[PointSpec], t0: int, t1: int) -> list[Changes]:
    """:func:`changes_between` for many points, with two batched model calls instead of two per point."""
    if t1 <= t0:
        return [changes_between(model, p, t0, t1) for p in points]
    start = t0 - settle_ticks(model.config)
    befores = model.events_many(points, start, t0, t0)
    afters = model.events_many(points, start, t1, t1)
    out = []
    for before, after in zip(befores, afters, strict=True):
        if len(before) == len(after) and np.array_equal(before.variant, after.variant):
            out.append(Changes(after.take(slice(0, 0)), ()))  # the usual case in a short poll: nothing new
        else:
            out.append(diff(before, after))
    return out


def diff(before: Events, after: Events) -> Changes:
    """Events of ``after`` that ``before`` does not hold unchanged, each marked Add or Update."""
    changed = np.nonzero(~_unchanged(before, after))[0]
    if changed.shape[0] == 0:
        return Changes(after.take(changed), ())
    b_lo = np.searchsorted(before.ticks, after.ticks[changed], side="left")
    b_hi = np.searchsorted(before.ticks, after.ticks[changed], side="right")
    a_lo = np.searchsorted(after.ticks, after.ticks[changed], side="left")
    a_hi = np.searchsorted(after.ticks, after.ticks[changed], side="right")
    changed_set = {int(i) for i in changed}
    actions: list[Action] = []
    for j, i in enumerate(changed):
        actions.append(_action(after, int(i), int(b_hi[j] - b_lo[j]), range(int(a_lo[j]), int(a_hi[j])),
                               changed_set))
    return Changes(after.take(changed), tuple(actions))


def _unchanged(before: Events, after: Events) -> npt.NDArray[np.bool_]:
    """For each event of ``after``: does ``before`` hold the same event (timestamp and variant)?"""
    n_before = len(before)
    if n_before == 0:
        return np.zeros(len(after), dtype=np.bool_)
    lo = np.searchsorted(before.ticks, after.ticks, side="left")
    hi = np.searchsorted(before.ticks, after.ticks, side="right")
    found = np.zeros(len(after), dtype=np.bool_)
    # At most a few events share a timestamp, so probing the first few slots of each group is enough.
    for offset in range(int((hi - lo).max(initial=0))):
        idx = np.minimum(lo + offset, n_before - 1)
        found |= (lo + offset < hi) & (before.variant[idx] == after.variant)
    return found


def _action(after: Events, i: int, n_before: int, group: range, changed: set[int]) -> Action:
    """Add when the timestamp gained an event, Update when an existing one took a new value."""
    n_after = len(group)
    if n_before == 0:
        return ADD
    if n_before >= n_after:
        return UPDATE
    new_here = [k for k in group if k in changed]
    extra = n_after - n_before  # how many of the changed events at this timestamp are arrivals
    updates = len(new_here) - extra
    if updates <= 0:
        return ADD
    # Some changed events here are edits of old ones: prefer Substituted ones as the edits.
    ranked = sorted(new_here, key=lambda k: (not bool(after.substituted[k]), k))
    return UPDATE if i in ranked[:updates] else ADD
