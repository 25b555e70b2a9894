"""The PySpark Python Data Source ``pi`` (Spark 4.2+): batch and streaming reads of the PI Web API.

::

    from piflow.spark import register
    register(spark)
    df = (spark.read.format("pi").option("url", "https://pi.example.com/piwebapi")
          .option("points", "PLANT1*").option("start", "*-7d").option("end", "*").load())

The driver lists the points and cuts the work into partitions of at most ``pointsPerPartition`` points x one
``window`` of time; executors read their partitions and yield Arrow record batches in the ``pi_values``
contract. ``.option("table", "pi_points" | "pi_af_elements" | "pi_af_attributes" | "pi_event_frames")`` reads
the other tables. ``spark.readStream.format("pi")`` keeps one position per point in its offsets (see
:mod:`piflow.spark.plan`), supports ``Trigger.AvailableNow`` and re-reads exactly the same ranges when Spark
replays a micro-batch from its checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
from pyspark.sql.datasource import DataSource, DataSourceReader, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, SupportsTriggerAvailableNow
from pyspark.sql.types import StructType

from piflow.errors import ConfigError
from piflow.spark.options import SourceOptions
from piflow.spark.source import PiSource, read_partition, table_schema
from piflow.spark.sparktypes import spark_schema

BATCH_ROWS = 65_536


class PiPartition(InputPartition):
    """One unit of work: the JSON-able partition spec of :mod:`piflow.spark.plan` (no secrets in it)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.spec = spec

    def __repr__(self) -> str:
        kind = self.spec.get("kind")
        points = len(self.spec.get("points") or ())
        return f"PiPartition({kind}, points={points}, start={self.spec.get('start')}, end={self.spec.get('end')})"


def _batches(opts: SourceOptions, partition: InputPartition) -> Iterator[pa.RecordBatch]:
    spec = getattr(partition, "spec", None) or partition.value
    table = read_partition(opts, spec)
    yield from table.to_batches(max_chunksize=BATCH_ROWS)


class PiDataSource(DataSource):
    """``spark.read.format("pi")`` / ``spark.readStream.format("pi")``."""

    _parsed: SourceOptions | None = None

    @property
    def opts(self) -> SourceOptions:
        """The parsed options (``DataSource.__init__`` must not be overridden, so they are parsed here)."""
        if self._parsed is None:
            self._parsed = SourceOptions.parse(self.options)
        return self._parsed

    @classmethod
    def name(cls) -> str:
        return "pi"

    def schema(self) -> StructType:
        result: StructType = spark_schema(table_schema(self.opts.table))
        return result

    def reader(self, schema: StructType) -> DataSourceReader:
        return PiBatchReader(self.opts)

    def streamReader(self, schema: StructType) -> DataSourceStreamReader:
        return PiStreamReader(self.opts)

    def __repr__(self) -> str:
        return f"PiDataSource({self.opts!r})"  # never the raw options: they may hold a password


class PiBatchReader(DataSourceReader):
    def __init__(self, opts: SourceOptions) -> None:
        self.opts = opts

    def partitions(self) -> Sequence[InputPartition]:
        specs = PiSource(self.opts).batch_partitions()
        # Spark needs at least one partition; an empty spec list reads nothing.
        return [PiPartition(s) for s in specs] or [PiPartition({"kind": "none"})]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        if (getattr(partition, "spec", None) or {}).get("kind") == "none":
            return iter(())
        return _batches(self.opts, partition)


class PiStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Per-point offsets; ``maxBatchWindow`` bounds how far one micro-batch moves a point."""

    def __init__(self, opts: SourceOptions) -> None:
        self.opts = opts
        self._source: PiSource | None = None
        self._cap: int | None = None

    @property
    def source(self) -> PiSource:
        # Built lazily: the reader is pickled to executors, the planner state need not be.
        if self._source is None:
            self._source = PiSource(self.opts)
        return self._source

    def __getstate__(self) -> dict[str, Any]:
        return {"opts": self.opts, "_source": None, "_cap": self._cap}

    def initialOffset(self) -> dict[str, Any]:
        return {}

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadAllAvailable()

    def prepareForTriggerAvailableNow(self) -> None:
        """Fix the end of this AvailableNow run: nothing newer than now minus the lag will be read."""
        self._cap = self.source.stream_target()[1]

    def latestOffset(self, start: dict[str, Any] | None = None, limit: ReadLimit | None = None) -> dict[str, Any]:
        if start is None:
            # Spark before 4.2 calls latestOffset() without the start offset: per-point positions cannot be
            # moved safely from nothing (a restart would re-read), so refuse rather than duplicate.
            raise ConfigError("spark", "streaming from the pi source needs Apache Spark 4.2 or later "
                                       "(DataSourceStreamReader.latestOffset(start, limit)); batch reads work on 4.0+")
        return self.source.latest_offset(start, self._cap)

    def partitions(self, start: dict[str, Any], end: dict[str, Any]) -> Sequence[InputPartition]:
        return [PiPartition(s) for s in self.source.stream_partitions(start, end)]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        return _batches(self.opts, partition)

    def commit(self, end: dict[str, Any]) -> None:
        """Nothing to do: the positions live in Spark's checkpoint, not in PI."""
