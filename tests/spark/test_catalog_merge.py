"""The Spark catalog job's MERGE updates a matched row only when its content changed, so ``last_seen`` means
"last changed" as on the delta-rs path. Local Spark has no Delta, so the MERGE's condition is run by Spark on
the join the MERGE makes."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from pyspark.sql import SparkSession

from piflow.spark import jobs

COLUMNS = ["webid", "name", "span", "categories", "is_deleted", "first_seen", "last_seen"]
DDL = ("webid string, name string, span double, categories array<string>, is_deleted boolean, "
       "first_seen timestamp, last_seen timestamp")
T0, T1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)


def test_only_changed_rows_are_updated(spark: SparkSession) -> None:
    target = [("same", "A", None, ["x"], False, T0, T0), ("nan", "B", math.nan, [], False, T0, T0),
              ("renamed", "C", 1.0, None, False, T0, T0), ("to-null", "D", 2.0, ["x"], False, T0, T0),
              ("from-null", "E", None, None, False, T0, T0), ("revived", "F", 1.0, [], True, T0, T0),
              ("list", "G", 1.0, ["x"], False, T0, T0)]
    source = [("same", "A", None, ["x"], False, T1, T1), ("nan", "B", math.nan, [], False, T1, T1),
              ("renamed", "C2", 1.0, None, False, T1, T1), ("to-null", "D", None, ["x"], False, T1, T1),
              ("from-null", "E", 3.0, None, False, T1, T1), ("revived", "F", 1.0, [], False, T1, T1),
              ("list", "G", 1.0, ["x", "y"], False, T1, T1)]
    t, s = spark.createDataFrame(target, DDL).alias("t"), spark.createDataFrame(source, DDL).alias("s")
    condition = jobs.changed_sql(COLUMNS)
    hits = t.join(s, on=t["webid"] == s["webid"]).where(condition).select("t.webid")
    assert sorted(r["webid"] for r in hits.collect()) == ["from-null", "list", "renamed", "revived", "to-null"]
    sql = jobs.merge_sql("cat.sch.pi_points", "src", COLUMNS, complete=True)
    assert f"WHEN MATCHED AND ({condition}) THEN UPDATE SET" in sql
    assert "t.`last_seen` = s.`last_seen`" in sql  # a changed row takes the time it was read
    assert "last_seen" not in condition
    assert "first_seen" not in condition
