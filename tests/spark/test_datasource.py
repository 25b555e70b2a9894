"""The ``pi`` data source in local Spark: batch reads of every table against the emulator's ground truth."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from piflow import schema
from piflow.emulator import EmulatorSettings
from piflow.emulator.server import EmulatorServer
from piflow.pitime import from_ticks, to_ticks
from piflow.spark.plan import Shard
from tests.rows import assert_same_rows

from .conftest import HOUR, T0, US, arrow_of, reader, specs, truth

pytestmark = pytest.mark.slow


def test_batch_read_equals_ground_truth_in_many_partitions(spark: SparkSession, emulator: EmulatorServer) -> None:
    start, end = T0 - 3 * HOUR, T0
    df = reader(spark, emulator, points="*", start=start.isoformat(), end=end.isoformat(), window="1h",
                pointsPerPartition="15").load()
    # 40 points in groups of 15 (3 groups) x 3 one-hour windows.
    assert df.rdd.getNumPartitions() == 9
    assert [f.name for f in df.schema.fields] == schema.PI_VALUES.names
    assert [f.nullable for f in df.schema.fields] == [f.nullable for f in schema.PI_VALUES]
    got = arrow_of(df)
    expected = truth(emulator, start, end - US)  # [start, end), like the laptop backfill
    assert expected.num_rows > 3000
    assert_same_rows(got, expected)
    assert set(got.column("source").to_pylist()) == {schema.SOURCE_RECORDED}
    # every kind of PI value came through the executors, not only numbers
    assert set(got.column("value_kind").to_pylist()) >= {schema.KIND_NUMBER, schema.KIND_DIGITAL,
                                                          schema.KIND_STRING, schema.KIND_TIMESTAMP}


def test_events_at_window_boundaries_are_read_once(spark: SparkSession, emulator: EmulatorServer) -> None:
    """Windows of 7 minutes, one of whose boundaries falls exactly on an event: each holds [start, end)."""
    equipment = specs(emulator)[5].name.rsplit(".", 1)[0]  # the five points of one piece of equipment
    points = [p for p in specs(emulator) if p.name.startswith(equipment + ".")]
    assert len(points) == 5
    now = to_ticks(T0)
    events = emulator.state.model.events(points[0], now - 3600 * 10**7, now, now)
    on_boundary = from_ticks(int(events.ticks[len(events) // 2]))  # microsecond of a real event
    start = on_boundary - timedelta(minutes=21)
    end = start + timedelta(minutes=35)
    df = reader(spark, emulator, points=equipment + ".*", start=start.isoformat(), end=end.isoformat(),
                window="7m", pointsPerPartition="40").load()
    assert df.rdd.getNumPartitions() == 5
    got = arrow_of(df)
    assert on_boundary in got.column("timestamp").to_pylist()
    assert_same_rows(got, truth(emulator, start, end - US, points))


def test_points_table_lists_the_catalog(spark: SparkSession, emulator: EmulatorServer) -> None:
    got = arrow_of(reader(spark, emulator, table="points").load())
    assert got.schema.names == schema.PI_POINTS.names
    rows = {r["webid"]: r for r in got.to_pylist()}
    model = {p.webid: p for p in specs(emulator)}
    assert set(rows) == set(model)
    for webid, p in model.items():
        r = rows[webid]
        assert (r["name"], r["point_type"], r["engineering_units"] or "", r["path"]) == \
            (p.name, p.point_type, p.units, p.path)
        assert r["digital_set"] == p.digital_set
        assert r["is_deleted"] is False


def test_shards_split_the_points_disjointly(spark: SparkSession, emulator: EmulatorServer) -> None:
    seen: list[str] = []
    for i in range(3):
        part = arrow_of(reader(spark, emulator, table="pi_points", shard=f"{i}/3").load())
        webids = part.column("webid").to_pylist()
        assert webids, f"shard {i}/3 is empty"
        assert all(Shard(i, 3).owns(w) for w in webids)
        seen += webids
    assert sorted(seen) == sorted(p.webid for p in specs(emulator))


def test_af_elements_and_attributes_tables(spark: SparkSession, emulator: EmulatorServer) -> None:
    af = emulator.state.af
    elements = arrow_of(reader(spark, emulator, table="af_elements").load())
    assert elements.schema.names == schema.TABLES["pi_af_elements"].names
    truth_elements = [e for db in af.databases() for e in af.all_elements(db.name)]
    assert sorted(elements.column("webid").to_pylist()) == sorted(e.webid for e in truth_elements)
    by_webid = {r["webid"]: r for r in elements.to_pylist()}
    assert all(by_webid[e.webid]["path"] == e.path for e in truth_elements)

    attributes = arrow_of(reader(spark, emulator, table="af_attributes", database="Plant").load())
    plant = [e for e in truth_elements if e.path.upper().startswith("\\\\PIEMU-AF\\PLANT\\")]
    expected = {a.webid for e in plant for a in af.attributes(e.webid, full_hierarchy=True) or []}
    assert len(expected) > 40
    assert set(attributes.column("webid").to_pylist()) == expected
    assert attributes.num_rows == len(expected)
    point_webids = {p.webid for p in specs(emulator)}
    linked = {w for w in attributes.column("point_webid").to_pylist() if w}
    assert linked
    assert linked <= point_webids


def test_event_frames_spanning_windows_are_read_once(spark: SparkSession, emulator: EmulatorServer) -> None:
    start, end = T0 - timedelta(days=2), T0
    frames = arrow_of(reader(spark, emulator, table="event_frames", start=start.isoformat(), end=end.isoformat(),
                             window="6h").load())
    assert frames.schema.names == schema.TABLES["pi_event_frames"].names
    expected = emulator.state.eventframes.frames(to_ticks(start), to_ticks(end), to_ticks(T0))
    assert len(expected) > 5
    webids = frames.column("webid").to_pylist()
    assert len(webids) == len(set(webids)), "a frame spanning two windows was read twice"
    assert sorted(webids) == sorted(f.webid for f in expected)
    open_frames = {f.webid for f in expected if f.end is None}
    assert {r["webid"] for r in frames.to_pylist() if r["in_progress"]} == open_frames


def test_password_never_reaches_plans_or_errors(spark: SparkSession, capsys: pytest.CaptureFixture[str]) -> None:
    password = "Pa55-w0rd-that-must-not-leak"
    settings = EmulatorSettings(points=10, seed=3, now=T0, frozen=True)
    settings.auth.mode = "basic"
    settings.auth.users = {"PIDEMO\\piuser": password}
    with EmulatorServer(settings) as srv:
        def read(pw: str):  # type: ignore[no-untyped-def]
            return reader(spark, srv, auth="basic", username="PIDEMO\\piuser", password=pw,
                          start=(T0 - HOUR).isoformat(), end=T0.isoformat()).load()

        good = read(password)
        for mode in ("extended", "formatted", "cost"):
            good.explain(mode)
        plans = capsys.readouterr().out
        assert "BatchScan pi" in plans
        assert password not in plans
        assert good.count() > 0
        wrong = password[::-1]
        with pytest.raises(Exception) as info:  # noqa: PT011 - Spark wraps the executor's error in its own types
            read(wrong).count()
        text = str(info.value) + repr(info.value)
        assert "401" in text or "uthent" in text
        assert wrong not in text
        assert password not in text


def test_bad_option_names_the_option_not_the_secret(spark: SparkSession, emulator: EmulatorServer) -> None:
    with pytest.raises(Exception) as info:  # noqa: PT011
        reader(spark, emulator, window="soon", password="hunter2-secret").load().schema  # noqa: B018
    assert "window" in str(info.value)
    assert "hunter2-secret" not in str(info.value)


def test_empty_selection_reads_nothing(spark: SparkSession, emulator: EmulatorServer) -> None:
    df = reader(spark, emulator, points="NO.SUCH.POINT*", start=(T0 - HOUR).isoformat(), end=T0.isoformat()).load()
    assert df.count() == 0
    assert isinstance(arrow_of(df), pa.Table)
