"""Delta tables through delta-rs: the laptop sink (no cluster) and the one place that imports ``deltalake``.

The writer protocol (who may commit what)
-----------------------------------------
Every change piflow makes to one of its tables is planned from one :class:`Snapshot` (a fixed table version)
and committed *from that version* by :meth:`DeltaSink.commit`. Each such commit carries the transaction
identifier ``Transaction(WRITER_APP_ID, n)``. delta-rs refuses to commit a transaction whose identifiers a
commit made since its read version also carries (``CommitFailedError: Concurrent transaction failed``), so a
plan is committed only if no other piflow writer committed to that table after the plan's snapshot was taken.
When one did, the sink says so in one line (naming the other writer's job and run), takes a fresh snapshot, and
asks the caller to plan again (a new diff against what the table now holds), up to ``COMMIT_ATTEMPTS`` times.
This is optimistic concurrency: any number of writers on local disks and object stores alike (the check is
done by the commit itself, no lock file), none of which can ever commit a plan made from a stale read.

A plan (:class:`Write`) lands in one atomic commit: rows appended, rows replaced and rows deleted together.
Commits that change no row (``optimize``) need no identifier: delta-rs's own conflict rules stop a merge
that read files a compaction replaced. Blind appends of rows that never collide (``pi_ingest_runs``) use
:meth:`DeltaSink.append`.

Exactly-once backfills use more transaction identifiers in the same commit (one per point, version = windows
done), so "was this unit of work written?" is answered by the table itself.

Errors
------
Every delta-rs and file-system failure leaves this module as a :class:`SinkError` in piflow's words
(:func:`sink_error`): which table, where, what is wrong and what is safe to do. delta-rs's own advice is never
passed on: it suggests a "full table overwrite with schema overwrite" for a schema mismatch, which would drop
the table's data. A table of piflow's name that lacks the contract's columns is refused as soon as it is opened
(:func:`_check_contract`), before anything reads or writes it.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from piflow.errors import SinkError, WriteConflictError
from piflow.tables import TABLES, spec_of

log = logging.getLogger(__name__)

WRITER_APP_ID = "piflow.writer"
COMMIT_ATTEMPTS = 12
LOG_RETENTION_KEY = "delta.logRetentionDuration"
LOG_RETENTION_S = 30 * 86400  # Delta's default log retention
_OP = "__piflow_op"


def _partitions(name: str) -> list[str] | None:
    """The partition columns of a piflow table (None: not partitioned)."""
    spec = TABLES.get(name)
    return list(spec.partition_by) if spec is not None and spec.partition_by else None


def _contract(name: str) -> pa.Schema | None:
    """The registry's schema of a table of piflow's names (None for any other table, e.g. an asset view)."""
    spec = TABLES.get(name)
    return None if spec is None else spec.schema


@dataclass(frozen=True)
class Write:
    """One planned commit, worked out from one snapshot; everything in it lands together or not at all.

    ``append`` holds rows whose keys the snapshot lacks; ``upsert`` rows that replace the rows with their key
    (or are added); ``delete`` the keys whose rows go. ``overwrite`` replaces the whole table. ``bounds`` is
    an extra merge predicate on the target (``t.date >= ...``) that lets delta-rs skip files by statistics.
    """

    append: pa.Table | None = None
    upsert: pa.Table | None = None
    delete: pa.Table | None = None
    overwrite: pa.Table | None = None
    key: Sequence[str] = ()
    bounds: str | None = None
    transactions: Sequence[tuple[str, int]] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    def rows(self) -> int:
        """How many rows this write adds, replaces or deletes."""
        return sum(t.num_rows for t in (self.append, self.upsert, self.delete, self.overwrite) if t is not None)

    @property
    def empty(self) -> bool:
        return self.overwrite is None and self.rows() == 0 and not self.transactions


class Snapshot:
    """One version of one table: every read of a plan comes from here, and its commit is made from here."""

    def __init__(self, sink: DeltaSink, name: str, table: DeltaTable | None) -> None:
        self.sink = sink
        self.name = name
        self.table = table

    @property
    def version(self) -> int | None:
        """The table version (None when the table does not exist)."""
        return None if self.table is None else int(self.table.version())

    def read(self, columns: Sequence[str] | None = None, filter: ds.Expression | None = None) -> pa.Table:
        return self.sink.read_version(self.name, self.table, columns, filter)

    def transaction_version(self, app_id: str) -> int | None:
        """The version recorded for ``app_id`` as of this snapshot (None if never)."""
        if self.table is None:
            return None
        try:
            version: int | None = self.table.transaction_version(app_id)
        except DeltaError as exc:
            raise sink_error(f"cannot read transaction {app_id} of", self.name, self.sink.uri(self.name),
                             exc) from exc
        return version

    def is_empty(self) -> bool:
        """True when the snapshot holds no data file (a table just created, or none at all)."""
        return self.table is None or len(self.table.file_uris()) == 0


class DeltaSink:
    """The tables of one target: ``<target>/pi_values``, ``<target>/pi_points``, ...

    ``conflicts`` counts the commits this sink had to plan again because another writer committed first.
    """

    def __init__(self, target: str, storage_options: Mapping[str, str] | None = None) -> None:
        self.target = target.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.conflicts = 0

    # ---- paths and handles ----------------------------------------------------------------------------
    def uri(self, name: str) -> str:
        if "://" in self.target:
            return f"{self.target}/{name}"
        return os.path.join(self.target, name)

    def table(self, name: str) -> DeltaTable | None:
        """The table if it exists (None otherwise)."""
        try:
            dt = DeltaTable(self.uri(name), storage_options=self.storage_options or None)
        except TableNotFoundError as exc:
            if "unknown scheme" in str(exc).lower():  # foo://...: not "no table yet" but a wrong target
                raise SinkError(f"cannot open {name} at {self.uri(name)}: delta-rs knows no storage scheme "
                                f"{self.target.split('://')[0]}://; choose a folder or an object-store URI such as "
                                "s3://bucket/pi as --target") from exc
            return None
        except (DeltaError, OSError) as exc:
            raise sink_error("cannot open", name, self.uri(name), exc) from exc
        _check_contract(name, self.uri(name), dt)
        return dt

    def table_names(self) -> list[str]:
        """The Delta tables at the target (its folders holding a ``_delta_log``), sorted; none if it is missing."""
        try:
            if "://" in self.target:
                fs, root = pafs.FileSystem.from_uri(self.target)
            else:
                fs, root = pafs.LocalFileSystem(), os.path.abspath(self.target)
            folders = [i.path for i in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
                       if i.type == pafs.FileType.Directory]
            logs = fs.get_file_info([f"{f}/_delta_log" for f in folders])
        except (OSError, pa.ArrowException) as exc:
            raise sink_error("cannot list", "the tables", self.target, exc, writing=False) from exc
        return sorted(f.rsplit("/", 1)[-1] for f, delta_log in zip(folders, logs, strict=True)
                      if delta_log.type == pafs.FileType.Directory)

    def columns(self, name: str) -> list[str] | None:
        """A table's column names (None when it does not exist)."""
        dt = self.table(name)
        if dt is None:
            return None
        try:
            return [f.name for f in dt.schema().fields]
        except (DeltaError, OSError) as exc:
            raise sink_error("cannot read the schema of", name, self.uri(name), exc, writing=False) from exc

    def snapshot(self, name: str) -> Snapshot:
        """The table's newest version, to plan a write from (see :meth:`commit`)."""
        return Snapshot(self, name, self.table(name))

    def ensure(self, name: str, schema: pa.Schema) -> DeltaTable:
        """Create the table (empty, with its contract schema, partitions, properties and comment) if missing.

        Two writers may create it at once: the one that loses finds the table there, which is all it wanted.
        """
        dt = self.table(name)
        if dt is not None:
            return dt
        if "://" not in self.target:
            try:
                os.makedirs(self.target, exist_ok=True)
            except OSError as exc:
                raise sink_error("cannot create the folder for", name, self.target, exc) from exc
        spec = spec_of(name, schema.names)
        try:
            write_deltalake(
                self.uri(name), schema.empty_table(), mode="ignore", partition_by=_partitions(name),
                configuration=(spec.properties or None) if spec else None,
                description=spec.comment if spec else None, storage_options=self.storage_options or None,
            )
        except (DeltaError, OSError) as exc:
            if self.table(name) is None:
                raise sink_error("cannot create", name, self.uri(name), exc) from exc
        dt = self.table(name)
        if dt is None:
            raise SinkError(f"Delta table {name} at {self.uri(name)} vanished right after it was created")
        return dt

    # ---- the writer protocol -----------------------------------------------------------------------------
    def commit(self, name: str, plan: Callable[[Snapshot], Write | None], *, first: Snapshot | None = None,
               schema: pa.Schema | None = None, attempts: int = COMMIT_ATTEMPTS) -> Write | None:
        """Plan a write from a snapshot and commit it from that snapshot; plan again when another writer
        committed first. Returns the write that landed (None or an empty write: nothing to do).

        ``first`` is the snapshot of the first attempt (default: the newest version); later attempts always
        take the newest. ``plan`` must derive everything it writes from the snapshot it is given. ``schema``
        is the table's schema where the contract has none (asset views).
        """
        table_schema = schema if schema is not None else TABLES[name].schema
        snap = first
        for attempt in range(1, attempts + 1):
            if snap is None or snap.table is None:
                self.ensure(name, table_schema)
                snap = self.snapshot(name)
            write = plan(snap)
            if write is None or write.empty:
                return write
            try:
                self._execute(snap, write, table_schema)
                return write
            except CommitFailedError as exc:
                self.conflicts += 1
                if attempt == attempts:
                    raise WriteConflictError(
                        f"{name}: gave up after {attempts} attempts, other writers kept committing first "
                        f"(last: {self._winners(name, snap.version)}); nothing of this write landed") from exc
                log.warning("%s: %s committed after version %s, which this %s write was planned from; "
                            "planning it again (attempt %d of %d)", name, self._winners(name, snap.version),
                            snap.version, write.metadata.get("piflow.job", "piflow"), attempt + 1, attempts)
                time.sleep(random.uniform(0.02, 0.1) * min(attempt, 10))
                snap = None
        raise AssertionError("unreachable")  # pragma: no cover

    def _execute(self, snap: Snapshot, write: Write, table_schema: pa.Schema) -> None:
        """Commit ``write`` from ``snap``'s version, in one commit carrying the writer identifier."""
        dt = snap.table
        assert dt is not None
        name = snap.name
        mine = snap.transaction_version(WRITER_APP_ID)
        txns = [Transaction(app_id=WRITER_APP_ID, version=(mine or 0) + 1)]
        txns += [Transaction(app_id=a, version=v) for a, v in write.transactions]
        props = CommitProperties(app_transactions=txns, custom_metadata=dict(write.metadata) or None)
        if write.overwrite is not None:
            self._write(dt, name, write.overwrite, "overwrite", props)
        elif (write.upsert is None or write.upsert.num_rows == 0) and (
                write.delete is None or write.delete.num_rows == 0):
            data = write.append if write.append is not None else table_schema.empty_table()
            self._write(dt, name, data, "append", props)
        else:
            _merge(dt, _merge_source(write, table_schema), write.key, write.bounds, props, name, self.uri(name))

    def _write(self, dt: DeltaTable, name: str, data: pa.Table, mode: Literal["append", "overwrite"],
               props: CommitProperties) -> None:
        try:
            if mode == "overwrite":
                write_deltalake(dt, data, mode="overwrite", partition_by=_partitions(name),
                                commit_properties=props, storage_options=self.storage_options or None)
            else:
                write_deltalake(dt, data, mode="append", partition_by=_partitions(name),
                                commit_properties=props, storage_options=self.storage_options or None)
        except CommitFailedError:
            raise
        except (DeltaError, OSError, pa.ArrowInvalid) as exc:
            raise sink_error(f"{mode} to" if mode == "append" else "overwrite of", name, self.uri(name),
                             exc) from exc

    def _winners(self, name: str, since: int | None) -> str:
        """Who committed to the table after version ``since``: "sync run 1a2b... (version 12)", best effort."""
        dt = self.table(name)
        if dt is None or since is None:
            return "another writer"
        try:
            newer = [h for h in dt.history(limit=max(1, int(dt.version()) - since)) if int(h["version"]) > since]
        except (DeltaError, OSError, KeyError, ValueError):
            return "another writer"
        if not newer:
            return "another writer"
        last = newer[0]
        who = f"{last.get('piflow.job', last.get('operation', 'a writer'))} run {last.get('piflow.run_id', '?')}"
        more = f" and {len(newer) - 1} more" if len(newer) > 1 else ""
        return f"{who} (version {last['version']}){more}"

    # ---- blind appends ----------------------------------------------------------------------------------
    def append(self, name: str, data: pa.Table, *, metadata: Mapping[str, Any] | None = None) -> None:
        """Append rows that can never collide with others (run records keyed by a fresh run id), no plan."""
        contract = _contract(name)
        self.ensure(name, contract if contract is not None else data.schema)
        props = CommitProperties(custom_metadata=dict(metadata or {}) or None)
        try:
            write_deltalake(
                self.uri(name), data, mode="append", partition_by=_partitions(name),
                commit_properties=props, storage_options=self.storage_options or None,
            )
        except (DeltaError, OSError, pa.ArrowInvalid) as exc:
            raise sink_error("append to", name, self.uri(name), exc) from exc

    # ---- reads -------------------------------------------------------------------------------------------
    def read(self, name: str, columns: Sequence[str] | None = None, filter: ds.Expression | None = None) -> pa.Table:
        """Read the newest version of a table (empty with its contract schema if it does not exist yet)."""
        return self.read_version(name, self.table(name), columns, filter)

    def read_version(self, name: str, dt: DeltaTable | None, columns: Sequence[str] | None = None,
                     filter: ds.Expression | None = None) -> pa.Table:
        """Read one loaded version of a table.

        Local tables are scanned as plain Parquet over the snapshot's files (:meth:`_snapshot_dataset`):
        it stays fast as small commits pile up, works on files a delta-rs merge wrote with ``string_view``
        columns, and does not scan through deltalake's Python filesystem handler, whose threads outlive the
        scan and abort the interpreter at exit now and then ("terminate called without an active exception").
        """
        if dt is None:
            empty = TABLES[name].schema.empty_table()
            return empty.select(list(columns)) if columns else empty
        try:
            dataset = self._snapshot_dataset(name, dt)
            if dataset is not None:
                return _scan(dataset, columns, filter)
            return _scan(dt.to_pyarrow_dataset(), columns, filter, use_threads=False)
        except (DeltaError, OSError, pa.ArrowException) as exc:
            raise sink_error("read of", name, self.uri(name), exc, writing=False) from exc

    def _snapshot_dataset(self, name: str, dt: DeltaTable) -> ds.Dataset | None:
        """A plain Parquet dataset over the snapshot's files, when those files alone are the table.

        ``to_pyarrow_dataset`` builds a Python fragment with a statistics expression per file (seconds at a few
        hundred files); listing the snapshot's files and letting the scan prune row groups costs milliseconds.
        Only for local tables whose protocol has no reader features (no deletion vectors, no column mapping).
        """
        table_schema = _contract(name)
        if table_schema is None or "://" in self.target:
            return None
        protocol = dt.protocol()
        if protocol.min_reader_version > 1 or protocol.reader_features:
            return None
        partitions = list(dt.metadata().partition_columns)
        root = self.uri(name)
        paths = [os.path.join(root, unquote(p)) for p in pa.table(dt.get_add_actions()).column("path").to_pylist()]
        hive = ds.partitioning(pa.schema([table_schema.field(c) for c in partitions]), flavor="hive")
        return ds.dataset(paths, schema=table_schema, format="parquet", partitioning=hive, partition_base_dir=root)

    def history(self, name: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` commits' information (custom metadata included), newest first."""
        dt = self.table(name)
        if dt is None:
            return []
        try:
            return list(dt.history(limit))
        except (DeltaError, OSError) as exc:
            raise sink_error("history of", name, self.uri(name), exc, writing=False) from exc

    def version(self, name: str) -> int | None:
        dt = self.table(name)
        return None if dt is None else int(dt.version())

    def size(self, name: str) -> dict[str, int] | None:
        """Version, data files, bytes and rows of a table, from its log's file statistics (nothing is scanned);
        None when the table does not exist."""
        dt = self.table(name)
        if dt is None:
            return None
        adds = pa.table(dt.get_add_actions(flatten=True))
        if adds.num_rows == 0:
            return {"version": int(dt.version()), "files": 0, "bytes": 0, "rows": 0}
        rows = pc.sum(adds.column("num_records")).as_py() if "num_records" in adds.column_names else None
        return {"version": int(dt.version()), "files": adds.num_rows,
                "bytes": int(pc.sum(adds.column("size_bytes")).as_py() or 0), "rows": int(rows or 0)}

    def optimize(self, name: str, zorder: Sequence[str] | None = None, vacuum_hours: int = 168,
                 attempts: int = COMMIT_ATTEMPTS, log_retention_s: int = LOG_RETENTION_S) -> dict[str, Any]:
        """Compact (or z-order), vacuum and checkpoint; a compaction whose files a writer replaced meanwhile is
        done again."""
        for attempt in range(1, attempts + 1):
            dt = self.table(name)
            if dt is None:
                return {}
            since = int(dt.version())
            try:
                stats: dict[str, Any] = (
                    dt.optimize.z_order(list(zorder)) if zorder else dt.optimize.compact()
                )
                stats = self._vacuum(name, dt, stats, vacuum_hours)
                self._keep_log_for(name, dt, log_retention_s)
                return self._checkpoint(name, dt, stats)
            except CommitFailedError as exc:
                if attempt == attempts:
                    raise WriteConflictError(f"optimize of {name}: gave up after {attempts} attempts, writers kept "
                                             f"replacing its files (last: {self._winners(name, since)})") from exc
                self.conflicts += 1
                log.warning("%s: %s replaced files this optimize was compacting; compacting again (attempt %d of "
                            "%d)", name, self._winners(name, since), attempt + 1, attempts)
            except (DeltaError, OSError) as exc:
                raise sink_error("optimize of", name, self.uri(name), exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _vacuum(name: str, dt: DeltaTable, stats: dict[str, Any], vacuum_hours: int) -> dict[str, Any]:
        try:
            removed = dt.vacuum(retention_hours=vacuum_hours, dry_run=False, enforce_retention_duration=False)
        except (DeltaError, OSError) as exc:
            raise sink_error("vacuum of", name, str(dt.table_uri), exc) from exc
        stats["vacuumed_files"] = len(removed)
        return stats

    @staticmethod
    def _keep_log_for(name: str, dt: DeltaTable, seconds: int) -> None:
        """Set the table's delta.logRetentionDuration to ``seconds`` when it says otherwise (a table that says
        nothing has Delta's default, 30 days: left alone when that is what is asked, so no commit is made)."""
        wanted = f"interval {seconds} seconds"
        current = dt.metadata().configuration.get(LOG_RETENTION_KEY)
        if current == wanted or (current is None and seconds == LOG_RETENTION_S):
            return
        try:
            dt.alter.set_table_properties({LOG_RETENTION_KEY: wanted})
        except (DeltaError, OSError) as exc:
            raise sink_error("setting the log retention of", name, str(dt.table_uri), exc) from exc

    @staticmethod
    def _checkpoint(name: str, dt: DeltaTable, stats: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint at the version just written lets readers skip the JSON log before it; then the log
        entries older than the table's delta.logRetentionDuration (Delta's default: 30 days) go."""
        try:
            dt.create_checkpoint()
            dt.cleanup_metadata()
        except (DeltaError, OSError) as exc:
            raise sink_error("checkpoint of", name, str(dt.table_uri), exc) from exc
        stats["checkpoint_version"] = int(dt.version())
        return stats


def _merge_source(write: Write, table_schema: pa.Schema) -> pa.Table:
    """The rows of ``write`` as one merge source, each tagged upsert (``u``) or delete (``d``)."""
    parts = []
    for rows, op in ((write.append, "u"), (write.upsert, "u"), (write.delete, "d")):
        if rows is None or rows.num_rows == 0:
            continue
        full = pa.table({f.name: rows.column(f.name) if f.name in rows.column_names
                         else pa.nulls(rows.num_rows, f.type) for f in table_schema})
        parts.append(full.append_column(_OP, pa.array([op] * rows.num_rows, pa.string())))
    return pa.concat_tables(parts)


def _merge(dt: DeltaTable, source: pa.Table, key: Sequence[str], bounds: str | None,
           props: CommitProperties, name: str, uri: str) -> dict[str, Any]:
    """One delta-rs merge of a tagged source (:func:`_merge_source`) on equal ``key`` columns (plus
    ``bounds``): matched deletes go, matched upserts replace, unmatched upserts are inserted; one commit."""
    predicate = " AND ".join(f"t.{k} = s.{k}" for k in key)
    if bounds:
        predicate = f"{predicate} AND {bounds}"
    columns = {c: f"s.{c}" for c in source.column_names if c != _OP}
    try:
        # Streamed: a third of the memory of a materialised source (the merge holds what it scans of the target;
        # the bounds prune that by date and time), which matters more at 100,000 points than a fifth of speed.
        merger = dt.merge(source, predicate, source_alias="s", target_alias="t", streamed_exec=True,
                          commit_properties=props)
        result: dict[str, Any] = (
            merger.when_matched_delete(predicate=f"s.{_OP} = 'd'")
            .when_matched_update(columns, predicate=f"s.{_OP} = 'u'")
            .when_not_matched_insert(columns, predicate=f"s.{_OP} = 'u'")
            .execute())
    except CommitFailedError:
        raise
    except (DeltaError, OSError, pa.ArrowInvalid) as exc:
        raise sink_error("commit to", name, uri, exc) from exc
    return result


def _scan(dataset: ds.Dataset, columns: Sequence[str] | None, filter: ds.Expression | None,
          use_threads: bool = True) -> pa.Table:
    """Scan with the filter pushed down; file by file (view-typed files filtered in memory) if that fails."""
    cols = list(columns) if columns else None
    try:
        # One file and two batches ahead, not pyarrow's defaults (several files, many batches): a filtered read
        # of a large table decodes far more than it keeps, and the readahead is what that costs in memory
        # (880 -> 620 MiB peak for a sync's first chunk at 100,000 points).
        return dataset.to_table(columns=cols, filter=filter, use_threads=use_threads, batch_readahead=2,
                                fragment_readahead=1)
    except pa.ArrowNotImplementedError:
        if filter is None:
            raise
    parts = []
    for fragment in dataset.get_fragments(filter=filter):  # pruned by partition values
        try:
            parts.append(fragment.to_table(schema=dataset.schema, filter=filter, use_threads=use_threads))
        except pa.ArrowNotImplementedError:
            parts.append(fragment.to_table(schema=dataset.schema, use_threads=use_threads).filter(filter))
    table = pa.concat_tables(parts) if parts else dataset.schema.empty_table()
    return table.select(cols) if cols else table


# ---- errors in piflow's words ---------------------------------------------------------------------------------

_ERRNO_WORDS = {
    errno.EACCES: ("permission denied", "os error 13"),
    errno.EPERM: ("operation not permitted", "os error 1)"),
    errno.EROFS: ("read-only file system", "os error 30"),
    errno.ENOTDIR: ("not a directory", "os error 20"),
    errno.ENOSPC: ("no space left", "os error 28"),
    errno.EDQUOT: ("quota exceeded", "os error 122"),
}
_SCHEMA_WORDS = ("schema", "no field named", "partitioning does not match", "cannot cast")
# delta-rs advises a "full table overwrite with schema overwrite" (or schema_mode="overwrite") for a schema
# mismatch: followed, it would drop the table's data. Such sentences are cut from any message passed on.
_OVERWRITE_ADVICE = re.compile(r"[^.:]*\b(?:overwrite|schema_mode|overwrite_schema|replacewhere)\b[^.]*\.?",
                               re.IGNORECASE)
_MAX_CAUSE_CHARS = 300


def _errno_of(exc: BaseException) -> int | None:
    """The OS error behind ``exc``: its own errno, or the one delta-rs names in its message text."""
    if isinstance(exc, OSError) and exc.errno in _ERRNO_WORDS:
        return exc.errno
    text = str(exc).lower()
    return next((code for code, words in _ERRNO_WORDS.items() if any(w in text for w in words)), None)


def _cause(exc: BaseException) -> str:
    """delta-rs's message on one line, without its advice to overwrite anything, cut to a readable length."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = _OVERWRITE_ADVICE.sub("", text).strip(" .;:") or type(exc).__name__
    return text if len(text) <= _MAX_CAUSE_CHARS else text[:_MAX_CAUSE_CHARS].rstrip() + " ..."


def sink_error(action: str, name: str, uri: str, exc: BaseException, *, writing: bool = True) -> SinkError:
    """``exc`` (delta-rs, Arrow, the file system) as one line: ``<action> <table> at <where>: <what is wrong>;
    <what to do>``. What to do is always safe: nothing here ever suggests overwriting a table."""
    code = _errno_of(exc)
    where = f"{action} {name} at {uri}"
    if code in (errno.EACCES, errno.EPERM):
        access = "write to" if writing else "read"
        return SinkError(f"{where}: permission denied; let this user {access} that folder, or choose another "
                         "--target")
    if code == errno.EROFS:
        return SinkError(f"{where}: the file system is read-only; choose a --target on a writable disk")
    if code == errno.ENOTDIR:
        return SinkError(f"{where}: the path goes through a file, not a folder; choose a folder as --target")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return SinkError(f"{where}: the disk is full (or over quota); free space and run again, the table keeps "
                         "its last commit")
    cause = _cause(exc)
    if any(w in cause.lower() for w in _SCHEMA_WORDS) and "parquet" not in cause.lower():
        return SinkError(f"{where}: the table does not have the schema piflow writes ({cause}); piflow does not "
                         f"change a table it did not write: move {name} out of the target, or choose another "
                         "--target")
    return SinkError(f"{where}: {cause}" if action.startswith("cannot") else f"{where} failed: {cause}")


def _check_contract(name: str, uri: str, dt: DeltaTable) -> None:
    """A table of one of piflow's names must have the contract's columns; any other table is the user's."""
    expected = _contract(name)
    if expected is None:
        return
    try:
        have = [f.name for f in dt.schema().fields]
    except (DeltaError, OSError) as exc:
        raise sink_error("cannot read the schema of", name, uri, exc, writing=False) from exc
    missing = [f for f in expected.names if f not in have]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise SinkError(f"{name} at {uri} is not a piflow table: it lacks the columns {shown} (it has "
                        f"{', '.join(have[:6])}{', ...' if len(have) > 6 else ''}); piflow does not change a table "
                        f"it did not write: move it out of the target, or choose another --target")
