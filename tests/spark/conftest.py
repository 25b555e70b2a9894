"""Fixtures for the Spark tier: one local[2] SparkSession for the whole run, the emulator on loopback, truth.

pyspark is an optional extra, but these tests never skip: without it the import below fails and the run says
so loudly (``make test`` installs the extra). Spark's Python workers are this interpreter, so they import the
same piflow; they reach the emulator over 127.0.0.1 like a cluster reaches a PI server.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from pyspark.sql import DataFrame, SparkSession

from piflow.emulator import EmulatorSettings
from piflow.emulator.model import PointSpec
from piflow.emulator.server import EmulatorServer
from piflow.emulator.truth import recorded_truth
from piflow.spark import register

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POINTS = 40  # every point of the emulator: five equipment of each kind of point


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]").appName("piflow-tests")
        .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2").config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    register(session)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    """A frozen emulator shared by the read-only tests (nobody moves its clock). Seed 62 gives one piece of
    equipment an AF attribute referencing a missing point, so that every column has something to hold."""
    with EmulatorServer(EmulatorSettings(points=POINTS, seed=62, now=T0, frozen=True, max_returned_items=2_000)) as srv:
        yield srv


def specs(srv: EmulatorServer) -> list[PointSpec]:
    return [srv.state.model.point(0, i) for i in range(srv.state.model.config.point_count)]


def truth(srv: EmulatorServer, start: datetime, end: datetime, points: list[PointSpec] | None = None) -> pa.Table:
    return recorded_truth(srv.state, points if points is not None else specs(srv), start, end)


def arrow_of(df: DataFrame) -> pa.Table:
    """A DataFrame as Arrow with the contract's types (Spark hands timestamps back in the session zone)."""
    table = df.toArrow()
    cols = []
    for f in table.schema:
        col = table.column(f.name)
        if pa.types.is_timestamp(f.type):
            col = col.cast(pa.timestamp("us", tz="UTC"))
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


def reader(spark: SparkSession, srv: EmulatorServer, **options: Any) -> Any:
    r = spark.read.format("pi").option("url", srv.url)
    for k, v in options.items():
        r = r.option(k, v)
    return r


HOUR = timedelta(hours=1)
US = timedelta(microseconds=1)  # reads are half-open: [start, end) is truth(start, end - US)
