"""The Spark jobs a generated Asset Bundle runs (``python piflow_job.py values|catalog ...``).

``values``: one shard of the points, streamed from the ``pi`` source into ``pi_values`` with
:class:`~piflow.spark.writer.MicroBatchWriter` (exactly once per micro-batch); ``--trigger available-now`` for
scheduled runs, ``continuous`` for a job that keeps running. Each shard has its own checkpoint and its own
transaction app id, and all shards append to the same table (Delta appends do not conflict).

``catalog``: ``pi_points``, ``pi_af_elements``, ``pi_af_attributes`` and ``pi_event_frames`` read in batch and
merged on WebID (Delta ``MERGE``; rows of a table read completely that vanished from PI become tombstones).
Without Delta (``--format parquet``) each table is a snapshot overwritten whole.

Secrets never appear on the command line: the bundle passes ``--password-env PIFLOW_PASSWORD`` and the job
cluster sets that variable from a Databricks secret.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from piflow.spark.writer import MicroBatchWriter, app_id_for

CATALOG_TABLES = ("pi_points", "pi_af_elements", "pi_af_attributes", "pi_event_frames")
_SOURCE_FLAGS = ("url", "points", "server", "start", "end", "window", "points_per_partition", "max_batch_window",
                 "safety_lag", "auth", "username", "password_env", "token_env", "oidc_client_id",
                 "oidc_client_secret_env", "oidc_token_url", "oidc_scope", "database")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="piflow_job", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("values", "catalog"):
        s = sub.add_parser(name)
        s.add_argument("--url", required=True)
        s.add_argument("--points", default="*")
        s.add_argument("--server")
        s.add_argument("--start", default="*-1d")
        s.add_argument("--end", default="*")
        s.add_argument("--window", default="1d")
        s.add_argument("--points-per-partition", default="100")
        s.add_argument("--auth", default="none")
        s.add_argument("--username")
        s.add_argument("--password-env")
        s.add_argument("--token-env")
        s.add_argument("--oidc-client-id")
        s.add_argument("--oidc-client-secret-env")
        s.add_argument("--oidc-token-url")
        s.add_argument("--oidc-scope")
        s.add_argument("--format", choices=("delta", "parquet"), default="delta")
        where = s.add_mutually_exclusive_group(required=True)
        where.add_argument("--path", help="folder holding one table per name (<path>/pi_values, ...)")
        where.add_argument("--schema-name", help="catalog.schema holding the tables (Unity Catalog)")
    values = sub.choices["values"]
    values.add_argument("--shard", required=True, help="i/N, zero-based")
    values.add_argument("--checkpoint", required=True)
    values.add_argument("--trigger", choices=("available-now", "continuous"), default="available-now")
    values.add_argument("--interval", default="1 minute", help="micro-batch interval when continuous")
    values.add_argument("--max-batch-window", default="7d")
    values.add_argument("--safety-lag", default="30s")
    catalog = sub.choices["catalog"]
    catalog.add_argument("--tables", default=",".join(CATALOG_TABLES))
    catalog.add_argument("--database")
    return p


def source_options(args: argparse.Namespace) -> dict[str, str]:
    """The ``pi`` source's options from the flags (secrets only by environment-variable name)."""
    out = {}
    for flag in _SOURCE_FLAGS:
        value = getattr(args, flag, None)
        if value is not None:
            out[flag] = str(value)
    return out


def _reader(spark: Any, options: dict[str, str], *, stream: bool = False) -> Any:
    r = (spark.readStream if stream else spark.read).format("pi")
    for k, v in options.items():
        r = r.option(k, v)
    return r


def run_values(spark: Any, args: argparse.Namespace) -> Any:
    """Start (and for available-now, finish) the stream of one shard; returns the query."""
    options = {**source_options(args), "shard": args.shard, "table": "pi_values"}
    table_name = f"{args.schema_name}.pi_values" if args.schema_name else None
    path = None if table_name else f"{args.path.rstrip('/')}/pi_values"
    writer = MicroBatchWriter(path, app_id_for(args.checkpoint), format=args.format, table_name=table_name)
    stream = _reader(spark, options, stream=True).load().writeStream.foreachBatch(writer)
    stream = stream.option("checkpointLocation", args.checkpoint).queryName(f"piflow_values_{args.shard}")
    if args.trigger == "available-now":
        query = stream.trigger(availableNow=True).start()
        query.awaitTermination()
    else:
        query = stream.trigger(processingTime=args.interval).start()
    return query


def run_catalog(spark: Any, args: argparse.Namespace) -> dict[str, int]:
    """Read the catalog tables and write them; returns rows read per table."""
    counts: dict[str, int] = {}
    for table in [t.strip() for t in args.tables.split(",") if t.strip()]:
        if table not in CATALOG_TABLES:
            raise SystemExit(f"unknown catalog table {table!r}; one of {', '.join(CATALOG_TABLES)}")
        df = _reader(spark, {**source_options(args), "table": table}).load().cache()
        counts[table] = df.count()
        if args.format == "parquet":
            df.write.mode("overwrite").parquet(f"{args.path.rstrip('/')}/{table}")
        else:
            _merge(spark, df, table, args, complete=_complete(table, args))
        df.unpersist()
    return counts


def _complete(table: str, args: argparse.Namespace) -> bool:
    """Whether the read covered everything the table holds from this source (then vanished rows die)."""
    if table == "pi_points":
        return args.points == "*" and not args.server
    if table in ("pi_af_elements", "pi_af_attributes"):
        return not args.database
    return False  # event frames are read over a window


def changed_sql(columns: Sequence[str]) -> str:
    """The condition under which a matched row ``t`` differs from its source row ``s`` (null-safe; ``webid``,
    ``first_seen`` and ``last_seen`` are not content)."""
    compared = [c for c in columns if c not in ("webid", "first_seen", "last_seen")]
    return " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in compared) or "false"


def merge_sql(target: str, source_view: str, columns: Sequence[str], *, complete: bool) -> str:
    """MERGE on webid keeping ``first_seen``; a row is updated only when its content changed, so ``last_seen``
    is when piflow last saw it change, as with the local jobs (``merged_tables.merge_changes``); tombstones for
    vanished rows when the read was complete."""
    updates = ", ".join(f"t.`{c}` = s.`{c}`" for c in columns if c not in ("webid", "first_seen"))
    sql = (f"MERGE INTO {target} t USING {source_view} s ON t.webid = s.webid "
           f"WHEN MATCHED AND ({changed_sql(columns)}) THEN UPDATE SET {updates} WHEN NOT MATCHED THEN INSERT *")
    if complete:
        sql += (" WHEN NOT MATCHED BY SOURCE AND NOT t.is_deleted THEN UPDATE SET t.is_deleted = true, "
                "t.last_seen = current_timestamp()")
    return sql


def _merge(spark: Any, df: Any, table: str, args: argparse.Namespace, *, complete: bool) -> None:
    target = f"{args.schema_name}.{table}" if args.schema_name else f"delta.`{args.path.rstrip('/')}/{table}`"
    if args.schema_name:
        exists = bool(spark.catalog.tableExists(target))
    else:
        from pyspark.errors import AnalysisException

        try:
            spark.read.format("delta").load(f"{args.path.rstrip('/')}/{table}").limit(0).collect()
            exists = True
        except AnalysisException:
            exists = False
    if not exists:
        writer = df.write.format("delta").option("delta.enableChangeDataFeed", "true")
        if args.schema_name:
            writer.saveAsTable(target)
        else:
            writer.save(f"{args.path.rstrip('/')}/{table}")
        return
    view = f"piflow_src_{table}"
    df.createOrReplaceTempView(view)
    spark.sql(merge_sql(target, view, df.columns, complete=complete))


def main(argv: Sequence[str] | None = None, spark: Any = None) -> None:
    args = parser().parse_args(argv)
    if spark is None:
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
    from piflow.spark import register

    register(spark)
    if args.command == "values":
        run_values(spark, args)
    else:
        run_catalog(spark, args)
