"""Delta tables through delta-rs: the laptop sink (no cluster) and the one place that imports ``deltalake``.

Exactly-once appends use Delta's transaction identifiers: a commit carries ``Transaction(app_id, version)``
entries in the same atomic log entry as its data, so "was this unit of work written?" is answered by the table
itself (``DeltaTable.transaction_version``) and state and data can never disagree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError
from deltalake.table import TableMerger

from piflow import schema as contract
from piflow.errors import SinkError

log = logging.getLogger(__name__)

_TABLE_CONFIG: dict[str, dict[str, str | None]] = {
    "pi_points": {"delta.enableChangeDataFeed": "true"},
    "pi_af_elements": {"delta.enableChangeDataFeed": "true"},
    "pi_af_attributes": {"delta.enableChangeDataFeed": "true"},
    "pi_event_frames": {"delta.enableChangeDataFeed": "true"},
    "pi_event_frame_attributes": {"delta.enableChangeDataFeed": "true"},
}
_PARTITIONS: dict[str, list[str]] = {"pi_values": list(contract.PI_VALUES_PARTITION)}


class DeltaSink:
    """The tables of one target: ``<target>/pi_values``, ``<target>/pi_points``, ..."""

    def __init__(self, target: str, storage_options: Mapping[str, str] | None = None) -> None:
        self.target = target.rstrip("/")
        self.storage_options = dict(storage_options or {})

    # ---- paths and handles ----------------------------------------------------------------------------
    def uri(self, name: str) -> str:
        if "://" in self.target:
            return f"{self.target}/{name}"
        return os.path.join(self.target, name)

    def table(self, name: str) -> DeltaTable | None:
        """The table if it exists (None otherwise)."""
        try:
            return DeltaTable(self.uri(name), storage_options=self.storage_options or None)
        except TableNotFoundError:
            return None
        except (DeltaError, OSError) as exc:
            raise SinkError(f"cannot open Delta table {name} at {self.uri(name)}: {exc}") from exc

    def ensure(self, name: str, schema: pa.Schema) -> DeltaTable:
        """Create the table (empty, with its contract schema, partitions and properties) if missing."""
        dt = self.table(name)
        if dt is not None:
            return dt
        if "://" not in self.target:
            os.makedirs(self.target, exist_ok=True)
        try:
            write_deltalake(
                self.uri(name), schema.empty_table(), mode="ignore", partition_by=_PARTITIONS.get(name),
                configuration=_TABLE_CONFIG.get(name), storage_options=self.storage_options or None,
            )
        except (DeltaError, OSError) as exc:
            raise SinkError(f"cannot create Delta table {name} at {self.uri(name)}: {exc}") from exc
        dt = self.table(name)
        assert dt is not None
        return dt

    # ---- exactly-once appends --------------------------------------------------------------------------
    def transaction_version(self, name: str, app_id: str) -> int | None:
        dt = self.table(name)
        if dt is None:
            return None
        try:
            version: int | None = dt.transaction_version(app_id)
        except DeltaError as exc:
            raise SinkError(f"cannot read transaction {app_id} of {name}: {exc}") from exc
        return version

    def append(
        self,
        name: str,
        data: pa.Table,
        *,
        transactions: Iterable[tuple[str, int]] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Append ``data`` and record ``transactions`` in the same atomic commit."""
        self.ensure(name, contract.TABLES.get(name, data.schema))
        txns = [Transaction(app_id=a, version=v) for a, v in transactions]
        props = CommitProperties(app_transactions=txns or None, custom_metadata=dict(metadata or {}) or None)
        try:
            write_deltalake(
                self.uri(name), data, mode="append", partition_by=_PARTITIONS.get(name),
                commit_properties=props, storage_options=self.storage_options or None,
            )
        except (DeltaError, OSError, pa.ArrowInvalid) as exc:
            raise SinkError(f"append to {name} failed: {exc}") from exc

    def overwrite(self, name: str, data: pa.Table) -> None:
        """Replace the whole table in one commit (for small state tables)."""
        self.ensure(name, contract.TABLES.get(name, data.schema))
        try:
            write_deltalake(self.uri(name), data, mode="overwrite", storage_options=self.storage_options or None)
        except (DeltaError, OSError, pa.ArrowInvalid) as exc:
            raise SinkError(f"overwrite of {name} failed: {exc}") from exc

    # ---- merges ------------------------------------------------------------------------------------------
    def upsert(
        self,
        name: str,
        source: pa.Table,
        key: Sequence[str],
        *,
        extra_predicate: str | None = None,
        transactions: Iterable[tuple[str, int]] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Insert new keys and replace matched rows in one commit (no-op for an empty source)."""
        if source.num_rows == 0:
            return {}
        dt = self.ensure(name, contract.TABLES.get(name, source.schema))
        txns = [Transaction(app_id=a, version=v) for a, v in transactions]
        props = CommitProperties(app_transactions=txns or None, custom_metadata=dict(metadata or {}) or None)
        return _merge(dt, source, key, extra_predicate, props, f"merge into {name} failed",
                      lambda m: m.when_matched_update_all().when_not_matched_insert_all())

    def delete_matching(self, name: str, keys: pa.Table, key: Sequence[str], *, extra_predicate: str | None = None,
                        metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Delete the rows whose ``key`` appears in ``keys``, in one commit (no-op when ``keys`` is empty)."""
        dt = self.table(name)
        if keys.num_rows == 0 or dt is None:
            return {}
        props = CommitProperties(custom_metadata=dict(metadata or {}) or None)
        return _merge(dt, keys, key, extra_predicate, props, f"deleting rows of {name} failed",
                      lambda m: m.when_matched_delete())

    # ---- reads -------------------------------------------------------------------------------------------
    def read(self, name: str, columns: Sequence[str] | None = None, filter: ds.Expression | None = None) -> pa.Table:
        """Read a table (empty with its contract schema if it does not exist yet).

        Filtered reads of local tables go through :meth:`_snapshot_dataset`, which stays fast as small commits
        pile up and works on files that a delta-rs merge wrote with ``string_view`` columns (pyarrow cannot
        push an ``isin`` filter into those). Anything else takes deltalake's own dataset.
        """
        dt = self.table(name)
        if dt is None:
            empty = contract.TABLES[name].empty_table()
            return empty.select(list(columns)) if columns else empty
        try:
            dataset = self._snapshot_dataset(name, dt) if filter is not None else None
            if dataset is not None:
                return _scan(dataset, columns, filter)
            return _scan(dt.to_pyarrow_dataset(), columns, filter)
        except (DeltaError, OSError, pa.ArrowException) as exc:
            raise SinkError(f"read of {name} failed: {exc}") from exc

    def _snapshot_dataset(self, name: str, dt: DeltaTable) -> ds.Dataset | None:
        """A plain Parquet dataset over the snapshot's files, when those files alone are the table.

        ``to_pyarrow_dataset`` builds a Python fragment with a statistics expression per file (seconds at a few
        hundred files); listing the snapshot's files and letting the scan prune row groups costs milliseconds.
        Only for local tables whose protocol has no reader features (no deletion vectors, no column mapping).
        """
        table_schema = contract.TABLES.get(name)
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

    def version(self, name: str) -> int | None:
        dt = self.table(name)
        return None if dt is None else int(dt.version())

    def optimize(self, name: str, zorder: Sequence[str] | None = None, vacuum_hours: int = 168) -> dict[str, Any]:
        dt = self.table(name)
        if dt is None:
            return {}
        try:
            stats: dict[str, Any] = (
                dt.optimize.z_order(list(zorder)) if zorder else dt.optimize.compact()
            )
            removed = dt.vacuum(retention_hours=vacuum_hours, dry_run=False, enforce_retention_duration=False)
        except (DeltaError, OSError) as exc:
            raise SinkError(f"optimize of {name} failed: {exc}") from exc
        stats["vacuumed_files"] = len(removed)
        return stats


def _merge(dt: DeltaTable, source: pa.Table, key: Sequence[str], extra_predicate: str | None,
           props: CommitProperties, failed: str, clauses: Callable[[TableMerger], TableMerger]) -> dict[str, Any]:
    """One delta-rs merge of ``source`` on equal ``key`` columns (plus ``extra_predicate``), its ``clauses``
    applied, in one commit; a SinkError starting ``failed`` if it does not go through."""
    predicate = " AND ".join(f"t.{k} = s.{k}" for k in key)
    if extra_predicate:
        predicate = f"{predicate} AND {extra_predicate}"
    try:
        # The source is in memory already: not streaming it lets the merge prune target files by the source's
        # key ranges (a fifth faster for a sync's few edited rows).
        merger = dt.merge(source, predicate, source_alias="s", target_alias="t", streamed_exec=False,
                          commit_properties=props)
        result: dict[str, Any] = clauses(merger).execute()
    except (DeltaError, OSError, pa.ArrowInvalid) as exc:
        raise SinkError(f"{failed}: {exc}") from exc
    return result


def _scan(dataset: ds.Dataset, columns: Sequence[str] | None, filter: ds.Expression | None) -> pa.Table:
    """Scan with the filter pushed down; file by file (view-typed files filtered in memory) if that fails."""
    cols = list(columns) if columns else None
    try:
        return dataset.to_table(columns=cols, filter=filter)
    except pa.ArrowNotImplementedError:
        if filter is None:
            raise
    parts = []
    for fragment in dataset.get_fragments(filter=filter):  # pruned by partition values
        try:
            parts.append(fragment.to_table(schema=dataset.schema, filter=filter))
        except pa.ArrowNotImplementedError:
            parts.append(fragment.to_table(schema=dataset.schema).filter(filter))
    table = pa.concat_tables(parts) if parts else dataset.schema.empty_table()
    return table.select(cols) if cols else table
