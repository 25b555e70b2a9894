"""``recorded_truth`` against what the endpoints serve: two independent paths from the same data model.

The served JSON is decoded here by hand (not by piflow's decoder) into the table contract's columns, and
must equal the truth row for row, for points of every type.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from piflow import schema
from piflow.emulator.model import PointSpec
from piflow.emulator.state import EmulatorState
from piflow.emulator.truth import recorded_truth
from piflow.pitime import format_ticks, parse_iso_ticks, to_ticks

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # the conftest apps' frozen virtual now
START = NOW - timedelta(hours=20)
AppFactory = Callable[..., FastAPI]


def state(client: TestClient) -> EmulatorState:
    st: EmulatorState = client.app.state.emulator  # type: ignore[attr-defined]
    return st


def points_of_every_type(st: EmulatorState, per_type: int = 2) -> list[PointSpec]:
    out: list[PointSpec] = []
    for ptype in ("Float32", "Float64", "Int32", "Digital", "String", "Timestamp"):
        out += [p for p in (st.model.point(0, i) for i in range(st.model.config.point_count))
                if p.point_type == ptype][:per_type]
    return out


def served_rows(client: TestClient, p: PointSpec, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The served values of ``p`` decoded by hand into pi_values columns."""
    params = {"startTime": start.isoformat(), "endTime": end.isoformat(), "maxCount": 150000}
    items = client.get(f"/piwebapi/streams/{p.webid}/recorded", params=params).json()["Items"]
    rows: list[dict[str, Any]] = []
    prev_us, seq = None, 0
    for item in items:
        us = parse_iso_ticks(item["Timestamp"]) // 10
        seq = seq + 1 if us == prev_us else 0
        prev_us = us
        ts = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
        v = item["Value"]
        row = {"webid": p.webid, "timestamp": ts, "seq": seq, "date": ts.date(), "value_double": None,
               "value_string": None, "state_code": None, "state_name": None, "is_system": False,
               "good": item["Good"], "questionable": item["Questionable"], "substituted": item["Substituted"],
               "annotated": item["Annotated"], "units": item["UnitsAbbreviation"] or None}
        if isinstance(v, dict):
            row.update(value_kind="system" if v["IsSystem"] else "digital", state_code=v["Value"],
                       state_name=v["Name"], is_system=v["IsSystem"])
        elif isinstance(v, str):
            row.update(value_kind="timestamp" if p.point_type == "Timestamp" else "string", value_string=v)
        else:
            row.update(value_kind="number", value_double=float(v))
        rows.append(row)
    return rows


def truth_rows(table: pa.Table, p: PointSpec) -> list[dict[str, Any]]:
    return table.filter(pc.equal(table.column("webid"), p.webid)).to_pylist()


def test_truth_has_exactly_the_contract_columns(client: TestClient) -> None:
    st = state(client)
    t = recorded_truth(st, points_of_every_type(st, 1), START, NOW)
    assert t.schema.names == list(schema.PI_VALUES_CONTENT)
    for f in t.schema:
        assert f.type == schema.PI_VALUES.field(f.name).type
    assert set(pc.unique(t.column("value_kind")).to_pylist()) <= set(schema.VALUE_KINDS)
    assert t.num_rows > 0


def test_truth_equals_the_served_json_for_every_point_type(client: TestClient) -> None:
    st = state(client)
    pts = points_of_every_type(st)
    truth = recorded_truth(st, pts, START, NOW)
    kinds = set(pc.unique(truth.column("value_kind")).to_pylist())
    assert kinds == {"number", "digital", "system", "string", "timestamp"}  # every kind is covered
    for p in pts:
        expected = truth_rows(truth, p)
        assert expected, p.name
        assert served_rows(client, p, START, NOW) == expected, p.name


def test_truth_bounds_are_inclusive_and_microsecond_exact(client: TestClient) -> None:
    st = state(client)
    p = next(q for q in points_of_every_type(st) if q.point_type == "Float64")
    whole = truth_rows(recorded_truth(st, [p], START, NOW), p)
    first, last = whole[3]["timestamp"], whole[9]["timestamp"]
    part = truth_rows(recorded_truth(st, [p], first, last), p)
    assert [r["timestamp"] for r in part] == [r["timestamp"] for r in whole[3:10]]
    assert part == served_rows(client, p, first, last)


def test_seq_numbers_events_sharing_a_timestamp(emulator_app: AppFactory) -> None:
    st: EmulatorState = emulator_app(points=100).state.emulator
    pts = [st.model.point(0, i) for i in range(100)]
    truth = recorded_truth(st, pts, NOW - timedelta(days=2), NOW)
    second = truth.filter(pc.equal(truth.column("seq"), 1))
    assert second.num_rows > 0
    row = second.slice(0, 1).to_pylist()[0]
    same = truth.filter(pc.and_(pc.equal(truth.column("webid"), row["webid"]),
                                pc.equal(truth.column("timestamp"), pa.scalar(row["timestamp"], schema.TS))))
    assert same.column("seq").to_pylist() == [0, 1]
    keys = truth.group_by(["webid", "timestamp", "seq"]).aggregate([])
    assert keys.num_rows == truth.num_rows  # the table key is unique


def test_truth_follows_asof_and_the_clock(client: TestClient) -> None:
    st = state(client)
    pts = points_of_every_type(st)
    window = (NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    at_now = recorded_truth(st, pts, *window)
    assert pc.max(at_now.column("timestamp")).as_py() <= NOW
    st.clock.advance(timedelta(hours=2))
    later = recorded_truth(st, pts, *window)
    assert later.num_rows > at_now.num_rows
    assert recorded_truth(st, pts, *window, asof=NOW).equals(at_now)
    p = pts[0]
    assert served_rows(client, p, *window) == truth_rows(later, p)


def test_units_are_null_when_the_point_has_none(client: TestClient) -> None:
    st = state(client)
    pts = points_of_every_type(st, 1)
    truth = recorded_truth(st, pts, START, NOW)
    for p in pts:
        units = set(truth_rows(truth, p)[i]["units"] for i in range(3))
        assert units == {p.units or None}


@pytest.mark.parametrize("hours", [0, 30 * 24])
def test_truth_of_an_empty_or_long_window(client: TestClient, hours: int) -> None:
    st = state(client)
    p = st.model.point(0, 0)
    t = recorded_truth(st, [p], NOW - timedelta(hours=hours), NOW - timedelta(hours=hours))
    assert t.num_rows <= 2
    assert t.schema.names == list(schema.PI_VALUES_CONTENT)
    if hours:
        month = recorded_truth(st, [p], NOW - timedelta(hours=hours), NOW)
        ticks = [to_ticks(x) for x in month.column("timestamp").to_pylist()]
        assert ticks == sorted(ticks)
        assert month.num_rows > 1000
        assert format_ticks(ticks[0]) >= format_ticks(to_ticks(NOW - timedelta(hours=hours)))
    assert recorded_truth(st, [], START, NOW).num_rows == 0


def test_batched_model_call_equals_one_point_at_a_time() -> None:
    """events_many (what streamset calls use) must give each point exactly what events gives it alone."""
    from datetime import UTC, datetime

    import numpy as np

    from piflow.emulator.model import Model, ModelConfig
    from piflow.pitime import to_ticks

    model = Model(ModelConfig(point_count=400, seed=13))
    points = [model.point(0, i) for i in range(0, 400, 3)]
    start, end = to_ticks(datetime(2025, 12, 30, tzinfo=UTC)), to_ticks(datetime(2025, 12, 31, 6, tzinfo=UTC))
    asof = end - 600 * 10**7  # late values near the end are still invisible
    batch = model.events_many(points, start, end, asof)
    fields = ("ticks", "kind", "number", "code", "good", "questionable", "substituted", "annotated", "variant")
    for p, ev in zip(points, batch, strict=True):
        alone = model.events_many([p], start, end, asof)[0]
        assert len(ev) > 0
        for f in fields:
            np.testing.assert_array_equal(getattr(ev, f), getattr(alone, f), err_msg=f"{p.name} {f}")
