"""Pure planning for the Spark side: shards, partitions and per-point stream offsets (no I/O, no pyspark).

**Shards.** A point belongs to shard ``jump_hash(key(webid), N)`` (Lamping & Veach's jump consistent hash of a
64-bit BLAKE2b of the WebID). A point's shard depends on its own WebID only, so adding or removing points
never moves another point; going from N to N+1 shards moves about 1/(N+1) of them.

**Partitions.** A partition is a JSON-able dict (Spark pickles it, Lakeflow JSON-encodes it): a group of at
most ``per_partition`` points and one half-open time window ``[start, end)`` in ticks.

**Stream offsets.** Per point, the offset holds the position up to which everything was read (exclusive,
microsecond-aligned ticks). Most points share a position, so the offset groups point keys by position:
``{"v": 1, "origin": T0, "at": {"<ticks>": "<key><key>..."}}`` with fixed-width keys, sorted — about 16
bytes per point, and equal positions give equal dicts, which is how Spark and Lakeflow see "no new data".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from piflow.planner import PointRef

KEY_CHARS = 16  # hex digits of a point key (64 bits)
OFFSET_VERSION = 1
_MASK64 = (1 << 64) - 1
_JUMP_MULT = 2862933555777941757

Spec = dict[str, Any]


# ---- keys and shards -----------------------------------------------------------------------------------------
def key_int(webid: str) -> int:
    """A stable 64-bit hash of a WebID (the same on every machine and Python version)."""
    return int.from_bytes(hashlib.blake2b(webid.encode("utf-8"), digest_size=8).digest(), "big")


def point_key(webid: str) -> str:
    """The point's key in stream offsets: 16 hex digits of :func:`key_int`."""
    return f"{key_int(webid):0{KEY_CHARS}x}"


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash: a bucket in ``[0, buckets)`` that moves for only ~1/n keys when n grows."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    b, j = -1, 0
    key &= _MASK64
    while j < buckets:
        b = j
        key = (key * _JUMP_MULT + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_of(webid: str, shards: int) -> int:
    return jump_hash(key_int(webid), shards)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (written ``index/count``, zero-based)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count} is not in [0, {self.count})")

    @classmethod
    def parse(cls, text: str) -> Shard:
        head, sep, tail = text.strip().partition("/")
        if not sep or not head.strip().isdigit() or not tail.strip().isdigit():
            raise ValueError(f"shard must look like 'i/N' (zero-based), got {text!r}")
        return cls(int(head), int(tail))

    def owns(self, webid: str) -> bool:
        return shard_of(webid, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# ---- partitions ------------------------------------------------------------------------------------------------
def point_entry(p: PointRef) -> list[str | None]:
    return [p.webid, p.name, p.point_type, p.units]


def point_from_entry(entry: Sequence[Any]) -> PointRef:
    webid, name, ptype, units = [*entry, None, None, None, None][:4]
    return PointRef(str(webid), str(name), ptype, units)


def windows(start: int, end: int, window: int) -> list[tuple[int, int]]:
    """``[start, end)`` cut into windows of ``window`` ticks (the last one shorter)."""
    if window <= 0:
        raise ValueError("window must be positive")
    out = []
    s = start
    while s < end:
        out.append((s, min(end, s + window)))
        s += window
    return out


def value_partitions(ranges: Mapping[str, tuple[int, int]], points: Iterable[PointRef], *, window: int,
                     per_partition: int) -> list[Spec]:
    """Partitions reading each point over its own ``[start, end)`` (empty ranges are skipped).

    Points sharing a range are read together, in groups of ``per_partition`` sorted by WebID, one partition
    per (group, window). Every window is half-open, like the laptop backfill's, so consecutive reads (and
    batch reads followed by a stream from the same ``end``) meet without overlap.
    Deterministic: the same ranges and points always give the same partitions in the same order.
    """
    by_range: dict[tuple[int, int], list[PointRef]] = {}
    for p in sorted(points, key=lambda q: q.webid):
        rng = ranges.get(p.webid)
        if rng is not None and rng[1] > rng[0]:
            by_range.setdefault(rng, []).append(p)
    size = max(1, per_partition)
    out: list[Spec] = []
    for (start, end), group in sorted(by_range.items()):
        for ws, we in windows(start, end, window):
            for i in range(0, len(group), size):
                out.append({"kind": "values", "points": [point_entry(p) for p in group[i:i + size]],
                            "start": ws, "end": we, "final": False})
    return out


def batch_ranges(points: Iterable[PointRef], start: int, end: int) -> dict[str, tuple[int, int]]:
    return {p.webid: (start, end) for p in points}


# ---- stream offsets --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Positions:
    """A decoded stream offset: where each point's next read starts (ticks, exclusive of what was read)."""

    origin: int | None  # where points of the very first batch started
    at: dict[str, int]  # point key -> position

    @property
    def initial(self) -> bool:
        return self.origin is None and not self.at


def encode_offset(origin: int, at: Mapping[str, int]) -> dict[str, Any]:
    groups: dict[int, list[str]] = {}
    for key, pos in at.items():
        if len(key) != KEY_CHARS:
            raise ValueError(f"bad point key {key!r}")
        groups.setdefault(pos, []).append(key)
    return {"v": OFFSET_VERSION, "origin": origin,
            "at": {str(pos): "".join(sorted(keys)) for pos, keys in sorted(groups.items())}}


def decode_offset(offset: Mapping[str, Any] | None) -> Positions:
    """``{}`` or None is the initial offset (nothing read yet)."""
    if not offset:
        return Positions(None, {})
    if offset.get("v") != OFFSET_VERSION or not isinstance(offset.get("at"), Mapping):
        raise ValueError(f"not a piflow stream offset (version {offset.get('v')!r})")
    at: dict[str, int] = {}
    for pos, keys in offset["at"].items():
        text = str(keys)
        if len(text) % KEY_CHARS:
            raise ValueError("corrupt stream offset: key list length")
        for i in range(0, len(text), KEY_CHARS):
            at[text[i:i + KEY_CHARS]] = int(pos)
    origin = offset.get("origin")
    return Positions(int(origin) if origin is not None else None, at)


def advance(start: Positions, keys: Iterable[str], *, origin: int, target: int, max_window: int) -> dict[str, Any]:
    """The next offset: every point moves towards ``target`` by at most ``max_window``.

    From the initial offset all points start at ``origin``. Later, a point missing from ``start`` (new in
    the catalog) is only *registered* at ``origin`` and read from the next batch on, so that the range of
    every point in a batch is a function of the two offsets alone (replays read the same data). Positions
    never move back.
    """
    base = origin if start.initial else (start.origin if start.origin is not None else origin)
    at: dict[str, int] = {}
    for key in keys:
        if start.initial:
            at[key] = max(base, min(target, base + max_window))
        elif key in start.at:
            pos = start.at[key]
            at[key] = max(pos, min(target, pos + max_window))
        else:
            at[key] = origin
    return encode_offset(base, at)


def stream_ranges(start: Positions, end: Positions, points: Iterable[PointRef]) -> dict[str, tuple[int, int]]:
    """What each point reads in the batch ``(start, end]`` of offsets: ``[its start, its end)``."""
    out: dict[str, tuple[int, int]] = {}
    for p in points:
        key = point_key(p.webid)
        if key not in end.at:
            continue
        stop = end.at[key]
        first = end.origin if end.origin is not None else stop
        begin = first if start.initial else start.at.get(key, stop)
        if stop > begin:
            out[p.webid] = (begin, stop)
    return out
