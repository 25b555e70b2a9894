"""``piflow uc register``: the piflow tables in Unity Catalog, with comments and tags, through databricks-sdk.

Steps: the schema is looked up and, if missing and allowed (``create_schema``), created; each table is created
if it does not exist (``CREATE TABLE IF NOT EXISTS`` with the registry's columns, partitioning and properties;
``LOCATION <root>/<table>`` for external tables, none for managed ones), then its table and column comments are
set from the registry (:mod:`piflow.tables`; re-running refreshes them on existing tables) and it is tagged
with the PI source server and the point filter. Tables and comments go through the SQL Statement Execution
API on a SQL warehouse, which is what supports comments, partitioning and tags on both managed and external
tables; the schema goes through the Unity Catalog REST API. Nothing secret is sent or written: the PI
credentials are not involved at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from piflow.errors import ConfigError, PiflowError
from piflow.tables import TABLES as REGISTRY

if TYPE_CHECKING:
    from piflow.config import PiflowSettings

log = logging.getLogger(__name__)

# Every table of the registry (asset views have a schema per template, so a view is registered by Spark itself).
TABLES = tuple(REGISTRY)


# ---- SQL (pure) ------------------------------------------------------------------------------------------------
def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def quote_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_type(t: pa.DataType) -> str:
    if pa.types.is_string(t):
        return "STRING"
    if pa.types.is_int32(t):
        return "INT"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_date32(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    if pa.types.is_list(t):
        return f"ARRAY<{sql_type(t.value_type)}>"
    raise TypeError(f"no SQL type for {t}")


@dataclass(frozen=True)
class Registration:
    catalog: str
    schema: str
    location: str | None = None  # root of external tables (<location>/<table>); None: managed tables
    tags: Mapping[str, str] = field(default_factory=dict)
    tables: Sequence[str] = TABLES

    def full(self, table: str | None = None) -> str:
        parts = [self.catalog, self.schema] + ([table] if table else [])
        return ".".join(quote_ident(p) for p in parts)


def table_statements(reg: Registration, table: str) -> list[str]:
    """Create (if missing), comment (table and every column) and tag one table, all from the registry."""
    spec = REGISTRY[table]
    schema, table_comment, columns = spec.schema, spec.comment, spec.comments()
    name = reg.full(table)
    cols = ",\n  ".join(f"{quote_ident(f.name)} {sql_type(f.type)}{'' if f.nullable else ' NOT NULL'} "
                        f"COMMENT {quote_str(columns[f.name])}" for f in schema)
    create = f"CREATE TABLE IF NOT EXISTS {name} (\n  {cols}\n) USING DELTA"
    if spec.partition_by:
        create += f" PARTITIONED BY ({', '.join(quote_ident(c) for c in spec.partition_by)})"
    if reg.location:
        create += f" LOCATION {quote_str(reg.location.rstrip('/') + '/' + table)}"
    create += f" COMMENT {quote_str(table_comment)}"
    if spec.properties:
        pairs = ", ".join(f"{quote_str(k)} = {quote_str(v)}" for k, v in spec.properties.items())
        create += f" TBLPROPERTIES ({pairs})"
    out = [create, f"COMMENT ON TABLE {name} IS {quote_str(table_comment)}"]
    out += [f"ALTER TABLE {name} ALTER COLUMN {quote_ident(f.name)} COMMENT {quote_str(columns[f.name])}"
            for f in schema]
    tags = {"piflow_table": table, **reg.tags}
    pairs = ", ".join(f"{quote_str(k)} = {quote_str(v)}" for k, v in tags.items())
    out.append(f"ALTER TABLE {name} SET TAGS ({pairs})")
    return out


# ---- against a workspace -------------------------------------------------------------------------------------
@dataclass
class RegisterResult:
    schema_created: bool = False
    tables: list[str] = field(default_factory=list)
    statements: int = 0


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", "") or type(exc).__name__)


def ensure_schema(w: Any, reg: Registration, *, create: bool) -> bool:
    """True if the schema was created; a clear error if it is missing and may not or cannot be created."""
    from databricks.sdk.errors import NotFound, PermissionDenied

    try:
        w.schemas.get(f"{reg.catalog}.{reg.schema}")
        return False
    except NotFound:
        pass
    if not create:
        raise ConfigError("schema", f"{reg.catalog}.{reg.schema} does not exist (allow creating it with "
                                    "--create-schema)")
    try:
        w.schemas.create(name=reg.schema, catalog_name=reg.catalog,
                         comment="PI System data ingested by piflow", properties=dict(reg.tags) or None)
    except PermissionDenied as exc:
        raise PiflowError(f"not allowed to create schema {reg.catalog}.{reg.schema} ({_error_code(exc)}): ask "
                          "for CREATE SCHEMA on the catalog, or create it and run again") from exc
    return True


def execute(w: Any, warehouse_id: str, statement: str, *, poll_s: float = 1.0, timeout_s: float = 600.0) -> None:
    """Run one SQL statement on a warehouse and wait for it; PiflowError with the server's message if it fails."""
    from databricks.sdk.service.sql import StatementState

    resp = w.statement_execution.execute_statement(statement=statement, warehouse_id=warehouse_id,
                                                   wait_timeout="30s")
    deadline = time.monotonic() + timeout_s
    while resp.status is not None and resp.status.state in (StatementState.PENDING, StatementState.RUNNING):
        if time.monotonic() > deadline:
            raise PiflowError(f"statement {resp.statement_id} did not finish in {timeout_s:.0f}s")
        time.sleep(poll_s)
        resp = w.statement_execution.get_statement(resp.statement_id)
    state = resp.status.state if resp.status is not None else None
    if state != StatementState.SUCCEEDED:
        err = resp.status.error if resp.status is not None else None
        message = getattr(err, "message", None) or "no message"
        raise PiflowError(f"SQL statement failed ({state.value if state else 'no state'}): {message}\n"
                          f"statement: {statement.splitlines()[0]}")


def register(w: Any, reg: Registration, *, warehouse_id: str, create_schema: bool = True) -> RegisterResult:
    """Register ``reg.tables`` in ``reg.catalog.reg.schema`` (idempotent: run it again to refresh comments)."""
    unknown = [t for t in reg.tables if t not in TABLES]
    if unknown:
        raise ConfigError("tables", f"unknown table {unknown[0]!r}; one of {', '.join(TABLES)}")
    if not warehouse_id:
        raise ConfigError("warehouse_id", "a SQL warehouse id is needed to create tables and set comments")
    result = RegisterResult(schema_created=ensure_schema(w, reg, create=create_schema))
    for table in reg.tables:
        for statement in table_statements(reg, table):
            execute(w, warehouse_id, statement)
            result.statements += 1
        result.tables.append(f"{reg.catalog}.{reg.schema}.{table}")
        log.info("registered %s.%s.%s", reg.catalog, reg.schema, table)
    return result


def source_tags(url: str, name_filter: str, server: str | None = None) -> dict[str, str]:
    """Tags naming where the data comes from: the PI Web API host (or the data server) and the point filter."""
    from urllib.parse import urlsplit

    return {"piflow_source_server": server or urlsplit(url).hostname or url or "unspecified",
            "piflow_point_filter": name_filter}


def register_from_settings(settings: PiflowSettings, *, catalog: str, schema: str, warehouse_id: str,
                           location: str | None = None, create_schema: bool = True, host: str | None = None,
                           profile: str | None = None, tables: Sequence[str] | None = None) -> RegisterResult:
    """``piflow uc register``: tags from piflow's settings (PI server and point filter), workspace from the
    usual Databricks configuration (``DATABRICKS_HOST``/``DATABRICKS_TOKEN``, a profile, or ``host``).
    ``tables`` None: every table of the registry."""
    tags = source_tags(settings.url or "", settings.points, settings.server)
    reg = Registration(catalog=catalog, schema=schema, location=location, tags=tags,
                       tables=TABLES if tables is None else tuple(tables))
    return register(workspace(host=host, profile=profile), reg, warehouse_id=warehouse_id,
                    create_schema=create_schema)


def workspace(host: str | None = None, token: str | None = None, profile: str | None = None) -> Any:
    """A databricks-sdk WorkspaceClient (host/token, a profile, or the usual DATABRICKS_* environment)."""
    from databricks.sdk import WorkspaceClient

    try:
        return WorkspaceClient(host=host, token=token, profile=profile, product="piflow", product_version="0.1")
    except ValueError as exc:  # databricks-sdk's word for "no usable credentials or host"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError("databricks", f"cannot sign in to the Databricks workspace: {reason}; give --host and "
                                        "DATABRICKS_TOKEN, or --profile naming a ~/.databrickscfg profile") from None
