"""Spark schemas derived from the Arrow table contract (``piflow.schema``, ``piflow.af_schema``).

The contract is written once, in Arrow; Spark types follow from it so that the two can never disagree.
``long_ints`` widens 32-bit integers to ``LongType`` for the Lakeflow community-connector suite, which asks
connectors to use LongType throughout (the Delta tables written by piflow keep ``int``).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def spark_type(t: pa.DataType, *, long_ints: bool = False) -> Any:
    from pyspark.sql import types as T

    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return T.StringType()
    if pa.types.is_int32(t):
        return T.LongType() if long_ints else T.IntegerType()
    if pa.types.is_int64(t):
        return T.LongType()
    if pa.types.is_float64(t):
        return T.DoubleType()
    if pa.types.is_boolean(t):
        return T.BooleanType()
    if pa.types.is_date32(t):
        return T.DateType()
    if pa.types.is_timestamp(t):
        if t.unit != "us" or t.tz is None:
            raise TypeError(f"the contract keeps timestamps as UTC microseconds, not {t}")
        return T.TimestampType()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return T.ArrayType(spark_type(t.value_type, long_ints=long_ints), containsNull=t.value_field.nullable)
    raise TypeError(f"no Spark type for Arrow {t}")


def spark_schema(schema: pa.Schema, *, long_ints: bool = False) -> Any:
    """A ``StructType`` with the contract's names, order, types and nullability."""
    from pyspark.sql import types as T

    return T.StructType([T.StructField(f.name, spark_type(f.type, long_ints=long_ints), nullable=f.nullable)
                         for f in schema])
