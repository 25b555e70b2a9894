"""``spark.readStream.format("pi")`` with Trigger.AvailableNow: stopped, restarted from the checkpoint and
crashed in the middle of a batch, the written data holds every value exactly once.

Delta is not available to local Spark here, so the micro-batches go through :class:`MicroBatchWriter`'s
Parquet mode (one directory per batch, replaced when a batch is replayed). The emulator's late values arrive
within 10 minutes and the stream lags 15 minutes behind the server, so "equals ground truth" must hold
exactly; edits are off (an append-only stream does not rewrite values; ``piflow sync`` does).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession

from piflow import schema
from piflow.emulator import EmulatorSettings
from piflow.emulator.server import EmulatorServer
from piflow.pitime import from_ticks, to_ticks
from piflow.spark.plan import decode_offset
from piflow.spark.writer import MicroBatchWriter, app_id_for
from tests.rows import assert_same_rows

from .conftest import T0, arrow_of, truth

pytestmark = pytest.mark.slow

LAG = timedelta(minutes=15)
START = T0 - timedelta(hours=2)


@pytest.fixture
def stream_emulator() -> Iterator[EmulatorServer]:
    settings = EmulatorSettings(points=20, seed=5, now=T0, frozen=True, late_share=0.05, late_max_minutes=10,
                                edit_share=0.0)
    with EmulatorServer(settings) as srv:
        yield srv


def stream(spark: SparkSession, srv: EmulatorServer) -> DataFrame:
    return (spark.readStream.format("pi").option("url", srv.url).option("points", "*")
            .option("start", START.isoformat()).option("maxBatchWindow", "30m").option("window", "30m")
            .option("safetyLag", "15m").option("pointsPerPartition", "10").option("pointsRefresh", "0").load())


def run_available_now(df: DataFrame, checkpoint: Path, sink: Any) -> Any:
    query = (df.writeStream.foreachBatch(sink).trigger(availableNow=True)
             .option("checkpointLocation", str(checkpoint)).start())
    try:
        query.awaitTermination()
    finally:
        query.stop()
    return query


def written(spark: SparkSession, path: Path) -> Any:
    return arrow_of(spark.read.parquet(str(path)).select(*schema.PI_VALUES.names))


def test_available_now_restart_and_replay_lose_and_duplicate_nothing(
        spark: SparkSession, stream_emulator: EmulatorServer, tmp_path: Path) -> None:
    srv = stream_emulator
    out, checkpoint = tmp_path / "pi_values", tmp_path / "checkpoint"
    writer = MicroBatchWriter(str(out), app_id_for(str(checkpoint)), format="parquet")
    attempts: dict[int, list[set[tuple[Any, ...]]]] = {}

    def recording(df: DataFrame, batch_id: int) -> None:
        keys = {(r["webid"], r["timestamp"], r["seq"]) for r in df.select("webid", "timestamp", "seq").collect()}
        attempts.setdefault(batch_id, []).append(keys)
        writer(df, batch_id)

    # Run 1: from START to T0 - LAG in 30-minute steps per point.
    q1 = run_available_now(stream(spark, srv), checkpoint, recording)
    first_batches = sorted(attempts)
    assert len(first_batches) >= 3, "AvailableNow should take several micro-batches of at most 30 minutes"
    end_offset = q1.lastProgress["sources"][0]["endOffset"]
    end1 = decode_offset(json.loads(end_offset) if isinstance(end_offset, str) else end_offset)
    assert set(end1.at.values()) == {to_ticks(T0 - LAG)}

    # The server moves on by an hour; run 2 crashes right after writing its second batch (before Spark
    # commits it), run 3 restarts from the checkpoint, replays that batch and finishes.
    srv.state.clock.advance(timedelta(hours=1))
    crash_after = first_batches[-1] + 2
    crashed: list[int] = []

    def crashing(df: DataFrame, batch_id: int) -> None:
        recording(df, batch_id)
        if batch_id == crash_after and not crashed:
            crashed.append(batch_id)
            raise RuntimeError("simulated crash after the write, before the commit")

    with pytest.raises(StreamingQueryException):
        run_available_now(stream(spark, srv), checkpoint, crashing)
    assert crashed == [crash_after]
    run_available_now(stream(spark, srv), checkpoint, recording)

    # The crashed batch was replayed with exactly the same rows.
    assert len(attempts[crash_after]) == 2
    assert attempts[crash_after][0] == attempts[crash_after][1]
    assert attempts[crash_after][0], "the replayed batch should not be empty"

    final_end = T0 + timedelta(hours=1) - LAG
    expected = truth(srv, START, final_end - timedelta(microseconds=1))
    got = written(spark, out)
    assert_same_rows(got, expected)
    assert from_ticks(to_ticks(final_end)) == final_end
