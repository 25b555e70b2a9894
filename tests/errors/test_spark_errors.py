"""Spark-side refusals: options and bundle settings users type, and the guards of the planning helpers.

Nothing here starts Spark: these checks run on the driver before any job does.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from piflow.errors import ConfigError
from piflow.spark.bundle import BundleConfig
from piflow.spark.options import SourceOptions
from piflow.spark.plan import encode_offset, jump_hash, windows
from piflow.spark.sparktypes import spark_type
from piflow.spark.writer import MicroBatchWriter

URL = "https://pi.example.com/piwebapi"


@pytest.mark.parametrize(("option", "value", "message"), [
    ("pointsPerPartition", "0", "setting 'pointsPerPartition': must be at least 1, got 0"),
    ("retries", "-1", "setting 'retries': must be at least 0, got -1"),
])
def test_a_numeric_option_below_its_minimum_names_the_option(option: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SourceOptions.parse({"url": URL, option: value})
    assert str(info.value) == message


def test_an_auth_option_the_settings_refuse_names_the_option() -> None:
    options = SourceOptions.parse({"url": URL, "auth": "ntlm"})
    with pytest.raises(ConfigError) as info:
        options.client()
    assert str(info.value).startswith("setting 'auth': Input should be 'none', 'basic', 'bearer', 'oidc' or "
                                      "'kerberos' (got 'ntlm')")


@pytest.mark.parametrize(("changes", "message"), [
    ({"shards": 0}, "setting 'shards': must be at least 1"),
    ({"mode": "hourly"}, "setting 'mode': is batch or continuous"),
])
def test_a_bundle_that_cannot_be_deployed_is_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        BundleConfig(**{"shards": 2, "url": URL, **changes})  # type: ignore[arg-type]
    assert str(info.value) == message


def test_the_planning_helpers_refuse_what_cannot_be_planned() -> None:
    with pytest.raises(ValueError, match="buckets must be at least 1"):
        jump_hash(42, 0)
    with pytest.raises(ValueError, match="window must be positive"):
        windows(0, 100, 0)
    with pytest.raises(ValueError, match="bad point key 'abc'"):
        encode_offset(0, {"abc": 1})


def test_a_writer_needs_exactly_one_destination_and_catalog_tables_are_delta() -> None:
    with pytest.raises(ValueError, match="give exactly one of path and table_name"):
        MicroBatchWriter(path=None, app_id="piflow-test")
    with pytest.raises(ValueError, match="catalog tables are written as Delta"):
        MicroBatchWriter(path=None, app_id="piflow-test", table_name="main.pi.values", format="parquet")


@pytest.mark.parametrize(("arrow", "message"), [
    (pa.timestamp("ns", tz="UTC"), "the contract keeps timestamps as UTC microseconds, not timestamp[ns, tz=UTC]"),
    (pa.timestamp("us"), "the contract keeps timestamps as UTC microseconds, not timestamp[us]"),
    (pa.binary(), "no Spark type for Arrow binary"),
])
def test_an_arrow_type_outside_the_contract_has_no_spark_type(arrow: pa.DataType, message: str) -> None:
    with pytest.raises(TypeError) as info:
        spark_type(arrow)
    assert str(info.value) == message
