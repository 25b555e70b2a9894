"""piflow on Spark and Databricks: the ``pi`` data source, the Lakeflow adapter, Unity Catalog and bundles.

Importing this package does not import pyspark (the CLI imports :mod:`piflow.spark.bundle` and
:mod:`piflow.spark.unity` on machines without Spark); only :mod:`piflow.spark.datasource`,
:mod:`piflow.spark.lakeflow` and :mod:`piflow.spark.writer` need it. Modules:

- ``options``  the source's options (credentials kept out of reprs, plans and errors)
- ``plan``     pure planning: shards by WebID hash, partitions, per-point stream offsets
- ``source``   what both Spark adapters share: listing points, reading one partition as Arrow
- ``datasource`` the PySpark Python Data Source ``pi`` (batch and streaming)
- ``lakeflow`` ``PiLakeflowConnect``, the Databricks community-connector interface with partitioned reads
- ``writer``   exactly-once micro-batch writes (Delta ``txnAppId``/``txnVersion``, or Parquet per batch)
- ``unity``    ``piflow uc register``: schema, tables, comments and tags in Unity Catalog
- ``bundle``   ``piflow bundle --shards N``: a Databricks Asset Bundle with one job per shard
"""

from __future__ import annotations

from typing import Any


def register(spark: Any) -> None:
    """Register the ``pi`` data source with a SparkSession (``spark.read.format("pi")`` afterwards)."""
    from piflow.spark.datasource import PiDataSource

    spark.dataSource.register(PiDataSource)


__all__ = ["register"]
