"""Exactly-once writes of Spark micro-batches into ``pi_values`` (the Spark side of the laptop's protocol).

On Delta (Databricks) each micro-batch is appended with ``txnAppId``/``txnVersion`` = (query's app id,
batch id): Delta records the pair in the same commit as the rows and silently skips a write whose version it
has already committed, so a batch that Spark replays after a crash (its offsets were logged, its commit was
not) is not written twice. This is the laptop path's ``Transaction(app_id, version)`` in Spark's words.

Where local Spark has no Delta (the tests, a bare ``pip install pyspark``) the same writer writes Parquet, one
directory per stream and batch (``<path>/stream=<app id>/batch_id=N``) replaced whole when the batch is
replayed: the same guarantee through a different mechanism. Read such a folder with ``spark.read.parquet(path)``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Literal

from piflow import schema

log = logging.getLogger(__name__)

Format = Literal["delta", "parquet"]


def app_id_for(name: str) -> str:
    """A stable transaction app id for a stream (from its name or checkpoint location)."""
    return "piflow-spark-" + hashlib.sha1(name.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]


@dataclass(frozen=True)
class MicroBatchWriter:
    """``query.writeStream.foreachBatch(MicroBatchWriter(path, app_id))``; also callable for one batch write.

    ``path`` is the table's folder (``<target>/pi_values``); ``table_name`` (``catalog.schema.pi_values``)
    writes to a catalog table instead (Delta only).
    """

    path: str | None
    app_id: str
    format: Format = "delta"
    table_name: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.table_name is None):
            raise ValueError("give exactly one of path and table_name")
        if self.table_name is not None and self.format != "delta":
            raise ValueError("catalog tables are written as Delta")

    def __call__(self, df: Any, batch_id: int) -> None:
        rows = df.select(*schema.PI_VALUES.names)
        if self.format == "delta":
            self._delta(rows, batch_id)
        else:
            self._parquet(rows, batch_id)

    def _delta(self, df: Any, batch_id: int) -> None:
        writer = (df.write.format("delta").mode("append").partitionBy(*schema.PI_VALUES_PARTITION)
                  .option("txnAppId", self.app_id).option("txnVersion", int(batch_id)))
        if self.table_name is not None:
            writer.saveAsTable(self.table_name)
        else:
            writer.save(self.path)

    def _parquet(self, df: Any, batch_id: int) -> None:
        # A replay overwrites its own batch directory and nothing else (other streams have their own folder).
        df.write.mode("overwrite").partitionBy(*schema.PI_VALUES_PARTITION).parquet(
            f"{self.path}/stream={self.app_id}/batch_id={int(batch_id):012d}")
