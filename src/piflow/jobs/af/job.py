"""``piflow af``: the AF hierarchy into ``pi_af_elements`` and ``pi_af_attributes`` without N+1 round trips.

Per database, one ``/batch`` per page of 1000 elements carries the page itself (``searchFullHierarchy=true``, a
flat depth-first list) and, through a ``RequestTemplate`` on ``$.page.Content.Items[*].WebId``, the attributes of
every element of that page. A PI point reference comes resolved by the server (the attribute's ``Point`` link
holds the point's Full WebID, the one ``pi_points`` holds); only dangling or substituted references are asked
with ``points/multiple``, and static values are read with ``streamsets/value``, chunked into a few more
``/batch`` calls. 10,000 elements cost about 20 requests instead of 10,000.

Rows are merged on WebID like ``discover`` does: only new or changed rows are written, objects that vanished
from a database that was read completely get a tombstone (``is_deleted``), so a re-run over an unchanged model
commits nothing. A database that disappears *during* a run is left untouched (a clear message says so); the
next run tombstones it.

This module is the job itself; the reading is in :mod:`piflow.jobs.af.read`, the rows in :mod:`piflow.jobs.af.rows`,
the request plumbing in :mod:`piflow.jobs.batching`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from piflow import af_schema
from piflow.jobs.af.databases import Database, DatabaseRead, database_matches, list_databases, no_such_database
from piflow.jobs.af.read import read_database, read_static_values, resolve_points
from piflow.jobs.af.rows import (
    AttributePoint,
    attribute_rows,
    element_rows,
    is_point_reference,
    is_static,
    point_queries,
)
from piflow.jobs.batching import PAGE_SIZE
from piflow.jobs.merged_tables import merge_changes, read_rows, write_changes
from piflow.jobs.pi_json import Json, Row
from piflow.jobs.runs import RunResult, job_run
from piflow.progress import Progress

if TYPE_CHECKING:
    from piflow.client.api import PiClient
    from piflow.config import PiflowSettings

log = logging.getLogger(__name__)

_ELEMENT_COMPARED = ("id", "server", "database", "database_webid", "name", "path", "description", "parent_webid",
                     "depth", "template", "categories", "has_children", "is_deleted")
_ATTRIBUTE_COMPARED = tuple(n for n in af_schema.PI_AF_ATTRIBUTES.names if n not in ("webid", "first_seen",
                                                                                     "last_seen"))


def _scope(pairs: set[tuple[str, str]]) -> Callable[[Row], bool]:
    return lambda r: (str(r["server"]).upper(), str(r["database"]).upper()) in pairs


def vanished_databases(existing: Iterable[Row], listed: Sequence[Database], servers: set[str],
                       wanted: str | None) -> dict[tuple[str, str], tuple[str, str]]:
    """Databases with live rows that the asset servers no longer list (pure): upper-cased (server, database)
    -> the names as the rows spell them."""
    known = {(d.server.upper(), d.name.upper()) for d in listed}
    up_servers = {s.upper() for s in servers}
    out = {}
    for r in existing:
        pair = (str(r["server"]).upper(), str(r["database"]).upper())
        if (not r["is_deleted"] and pair not in known and pair[0] in up_servers
                and database_matches(r["server"], r["database"], wanted)):
            out[pair] = (str(r["server"]), str(r["database"]))
    return out


async def _read_all(client: PiClient, dbs: Sequence[Database], page_size: int, lookahead: int, progress: Progress,
                    seconds: dict[str, float]) -> tuple[list[DatabaseRead], dict[str, AttributePoint], dict[str, Json]]:
    t0 = time.monotonic()
    reads = []
    for db in dbs:
        progress.start(None, f"af {db.path}")
        read = await read_database(client, db, page_size=page_size, lookahead=lookahead, progress=progress)
        if read.vanished:
            log.warning("asset database %s disappeared during the run (%s); its rows are left unchanged",
                        db.path, read.vanished)
        reads.append(read)
    t1 = time.monotonic()
    attrs = [a for r in reads for lst in r.attributes.values() for a in lst]
    paths, links = point_queries(attrs)
    statics = [str(a["WebId"]) for a in attrs if is_static(a)]
    progress.start(len(paths) + len(links) + len(statics), "af: PI point references and static values")
    points, values = await asyncio.gather(resolve_points(client, paths, links), read_static_values(client, statics))
    seconds.update(elements_and_attributes=t1 - t0, points_and_values=time.monotonic() - t1)
    return reads, points, values


def _messages(reads: Sequence[DatabaseRead], gone: Iterable[tuple[str, str]], broken: int) -> list[str]:
    notes = []
    for r in reads:
        if r.vanished:
            notes.append(f"asset database {r.db.path} disappeared during the run; its rows were left unchanged "
                         "and will be tombstoned by the next run")
        if r.removed_elements:
            notes.append(f"{r.removed_elements} elements of {r.db.path} were removed during the run")
    for server, name in sorted(gone):
        notes.append(f"asset database \\\\{server}\\{name} no longer exists: its elements and attributes were "
                     "tombstoned")
    if broken:
        notes.append(f"{broken} attributes reference PI points that do not exist (kept with point_webid null; "
                     "see the error column)")
    return notes


async def run_af(settings: PiflowSettings, progress: Progress | None = None, *, database: str | None = None,
                 page_size: int = PAGE_SIZE) -> RunResult:
    """Read the asset model of one database (or all) into ``pi_af_elements`` and ``pi_af_attributes``."""
    seconds: dict[str, float] = {}
    async with job_run("af", settings, progress) as run:
        sink, result, progress = run.sink, run.result, run.progress
        listed, servers = await list_databases(run.client)
        dbs = [d for d in listed if database_matches(d.server, d.name, database)]
        elements_snap = sink.snapshot("pi_af_elements")
        old_elements = read_rows(elements_snap)
        gone = vanished_databases(old_elements, listed, servers, database)
        if database is not None and not dbs and not gone:
            raise no_such_database(database, listed)
        lookahead = max(1, min(settings.concurrency, 2))  # each batch is up to 1000 sub-requests
        reads, points, values = await _read_all(run.client, dbs, page_size, lookahead, progress, seconds)
        await run.close_client()
        now = datetime.now(UTC)
        done = {(r.db.server.upper(), r.db.name.upper()) for r in reads if not r.vanished} | set(gone)
        current_e = [row for r in reads if not r.vanished for row in element_rows(r, now)]
        current_a = [row for r in reads if not r.vanished for row in attribute_rows(r, points, values, now)]
        meta = {"piflow.job": "af", "piflow.run_id": result.run_id}
        e_changes = write_changes(
            sink, "pi_af_elements", lambda rows: merge_changes(rows, current_e, _ELEMENT_COMPARED, _scope(done), now),
            af_schema.PI_AF_ELEMENTS, af_schema.PI_AF_ELEMENTS_KEY, first=(elements_snap, old_elements), metadata=meta)
        a_changes = write_changes(
            sink, "pi_af_attributes",
            lambda rows: merge_changes(rows, current_a, _ATTRIBUTE_COMPARED, _scope(done), now),
            af_schema.PI_AF_ATTRIBUTES, af_schema.PI_AF_ATTRIBUTES_KEY, metadata=meta)
        seconds["compare_and_write"] = (datetime.now(UTC) - now).total_seconds()
        broken = sum(1 for r in current_a if r["data_reference"] and r["error"] and r["point_webid"] is None
                     and is_point_reference({"DataReferencePlugIn": r["data_reference"]}))
        notes = _messages(reads, gone.values(), broken)
        for note in notes:
            progress.note(note)
        result.points = len(current_e)
        result.values_written = len(e_changes) + len(a_changes)
        result.message = "; ".join(notes)
        result.details = {
            "databases": [r.db.path for r in reads], "elements": len(current_e), "attributes": len(current_a),
            "elements_changed": len(e_changes), "attributes_changed": len(a_changes),
            "elements_tombstoned": sum(1 for c in e_changes if c["is_deleted"]),
            "attributes_tombstoned": sum(1 for c in a_changes if c["is_deleted"]),
            "broken_point_references": broken, "fallbacks": sum(r.fallbacks for r in reads),
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
        }
    return result
