"""The pure planning of the Spark side: stream offsets per point, new points, partitions, options.

No Spark session and no server: these are the rules the stream and the Lakeflow adapter rely on for
"replays read the same data" and "nothing is read twice".
"""

from __future__ import annotations

import json
import pickle

import pytest

from piflow.errors import ConfigError
from piflow.planner import PointRef
from piflow.spark.options import SourceOptions
from piflow.spark.plan import (
    KEY_CHARS,
    Shard,
    advance,
    decode_offset,
    encode_offset,
    point_key,
    stream_ranges,
    value_partitions,
    windows,
)

pytestmark = pytest.mark.slow  # the whole Spark tier is marked; these particular tests take milliseconds

MIN = 60 * 10_000_000


def refs(n: int, prefix: str = "P") -> list[PointRef]:
    return [PointRef(f"W-{prefix}{i:03d}", f"{prefix}{i:03d}", "Float32", "kW") for i in range(n)]


def keys(points: list[PointRef]) -> list[str]:
    return [point_key(p.webid) for p in points]


def test_offset_codec_round_trips_and_is_canonical() -> None:
    at = {point_key("a"): 50, point_key("b"): 50, point_key("c"): 70}
    offset = encode_offset(10, at)
    assert json.loads(json.dumps(offset)) == offset
    assert decode_offset(offset).at == at
    assert decode_offset(offset).origin == 10
    assert encode_offset(10, dict(reversed(list(at.items())))) == offset  # order does not matter
    assert len(offset["at"]) == 2  # points sharing a position share one entry
    assert all(len(point_key(w)) == KEY_CHARS for w in ("x", "ü", "F1DP" * 30))
    assert decode_offset({}).initial
    assert decode_offset(None).initial
    with pytest.raises(ValueError, match="version"):
        decode_offset({"v": 99, "at": {}})
    with pytest.raises(ValueError, match="corrupt"):
        decode_offset({"v": 1, "origin": 0, "at": {"5": "abc"}})


def test_first_batch_moves_every_point_from_origin_by_at_most_the_window() -> None:
    points = refs(5)
    end = advance(decode_offset({}), keys(points), origin=0, target=100 * MIN, max_window=30 * MIN)
    pos = decode_offset(end)
    assert set(pos.at.values()) == {30 * MIN}
    assert stream_ranges(decode_offset({}), pos, points) == {p.webid: (0, 30 * MIN) for p in points}


def test_batches_converge_by_equality_at_the_target() -> None:
    points = refs(3)
    start: dict[str, object] = {}
    ends = []
    for _ in range(10):
        end = advance(decode_offset(start), keys(points), origin=0, target=70 * MIN, max_window=30 * MIN)
        if end == start:
            break
        ends.append(end)
        start = end
    assert [sorted(set(decode_offset(e).at.values())) for e in ends] == [[30 * MIN], [60 * MIN], [70 * MIN]]


def test_a_new_point_is_registered_first_and_read_from_the_next_batch() -> None:
    old, new = refs(2), refs(1, "N")
    first = advance(decode_offset({}), keys(old), origin=0, target=60 * MIN, max_window=60 * MIN)
    # the new point shows up; "now" has moved, so its default start resolves to a later origin
    second = advance(decode_offset(first), keys(old + new), origin=40 * MIN, target=90 * MIN, max_window=60 * MIN)
    ranges = stream_ranges(decode_offset(first), decode_offset(second), old + new)
    assert ranges == {p.webid: (60 * MIN, 90 * MIN) for p in old}  # the new point reads nothing yet
    assert decode_offset(second).at[point_key(new[0].webid)] == 40 * MIN
    assert decode_offset(second).origin == 0  # the stream's origin never changes
    third = advance(decode_offset(second), keys(old + new), origin=50 * MIN, target=90 * MIN, max_window=60 * MIN)
    assert stream_ranges(decode_offset(second), decode_offset(third), old + new) == {
        new[0].webid: (40 * MIN, 90 * MIN)}


def test_positions_never_move_back_and_vanished_points_drop_out() -> None:
    points = refs(3)
    start = encode_offset(0, {k: 50 * MIN for k in keys(points)})
    end = advance(decode_offset(start), keys(points[:2]), origin=0, target=20 * MIN, max_window=60 * MIN)
    assert decode_offset(end).at == {k: 50 * MIN for k in keys(points[:2])}
    assert stream_ranges(decode_offset(start), decode_offset(end), points) == {}


def test_partitions_group_points_by_range_and_window() -> None:
    points = refs(25)
    ranges = {p.webid: (0, 90 * MIN) for p in points[:20]} | {p.webid: (30 * MIN, 90 * MIN) for p in points[20:]}
    parts = value_partitions(ranges, list(reversed(points)), window=60 * MIN, per_partition=8)
    # 20 points from 0: 3 groups x 2 windows; 5 points from 30 min: 1 group x 1 window
    assert len(parts) == 7
    covered = [(e[0], p["start"], p["end"]) for p in parts for e in p["points"]]
    assert len(covered) == len(set(covered))
    assert sum(1 for c in covered if c[1] == 0) == 20
    assert {p["final"] for p in parts} == {False}  # half-open everywhere, like the laptop backfill
    assert parts == value_partitions(ranges, points, window=60 * MIN, per_partition=8)
    assert pickle.loads(pickle.dumps(parts)) == parts  # noqa: S301 - our own bytes
    assert windows(0, 10, 4) == [(0, 4), (4, 8), (8, 10)]


def test_shard_parsing() -> None:
    assert Shard.parse("2/8") == Shard(2, 8)
    assert str(Shard(2, 8)) == "2/8"
    for bad in ("8/8", "x/2", "3", "-1/4"):
        with pytest.raises(ValueError, match="shard"):
            Shard.parse(bad)


def test_options_keep_secrets_out_of_reprs_and_errors() -> None:
    opts = SourceOptions.parse({"url": "https://pi.example.com", "auth": "basic", "username": "u",
                                "password": "s3cr3t-value", "pointsPerPartition": "7", "SAFETY_LAG": "0"})
    assert opts.url == "https://pi.example.com/piwebapi"
    assert opts.points_per_partition == 7
    assert opts.safety_lag_ticks == 0
    assert "s3cr3t-value" not in repr(opts)
    assert opts.secret("password") == "s3cr3t-value"
    table = opts.with_table({"points": "PLANT1*", "table": "points"})
    assert table.points == "PLANT1*"
    assert table.table == "pi_points"
    assert table.secret("password") == "s3cr3t-value"
    for bad, name in (({"window": "0s"}, "window"), ({"shard": "9/3"}, "shard"), ({"table": "x"}, "table"),
                      ({"pointsPerPartition": "many"}, "pointsPerPartition")):
        with pytest.raises(ConfigError, match=name) as info:
            SourceOptions.parse({"url": "https://pi", "password": "s3cr3t-value", **bad})
        assert "s3cr3t-value" not in str(info.value)
    with pytest.raises(ConfigError, match="url"):
        SourceOptions.parse({})
