"""``piflow discover``: the point catalog into ``pi_points`` (merge on WebID, tombstones for vanished points).

Only rows that changed are merged, so a re-run over an unchanged catalog commits nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from piflow import schema
from piflow.errors import NotFoundError
from piflow.jobs.merged_tables import merge_changes, write_changes
from piflow.jobs.runs import RunResult, job_run
from piflow.progress import Progress
from piflow.wildcards import wildcard

if TYPE_CHECKING:
    from piflow.config import PiflowSettings

_COMPARED = ("id", "name", "path", "server", "descriptor", "point_class", "point_type", "digital_set",
             "engineering_units", "span", "zero", "step", "future", "is_deleted")


def point_row(obj: dict[str, Any], server: str, now: datetime) -> dict[str, Any]:
    """One ``pi_points`` row from a PI point object."""
    return {
        "webid": obj["WebId"], "id": obj.get("Id"), "name": obj["Name"], "path": obj.get("Path") or "",
        "server": server, "descriptor": obj.get("Descriptor"), "point_class": obj.get("PointClass"),
        "point_type": obj.get("PointType"), "digital_set": obj.get("DigitalSetName") or None,
        "engineering_units": obj.get("EngineeringUnits") or None, "span": obj.get("Span"),
        "zero": obj.get("Zero"), "step": obj.get("Step"), "future": obj.get("Future"), "is_deleted": False,
        "first_seen": now, "last_seen": now,
    }


def catalog_changes(existing: list[dict[str, Any]], current: list[dict[str, Any]], server: str, name_filter: str,
                    now: datetime) -> list[dict[str, Any]]:
    """Rows to merge: new or changed points, and tombstones for points of this scope that vanished (pure)."""
    rx = wildcard(name_filter)  # matched as the server matched it: only rows it would have returned can vanish
    return merge_changes(existing, current, _COMPARED,
                         lambda r: r["server"] == server and rx.fullmatch(r["name"]) is not None, now)


async def run_discover(settings: PiflowSettings, progress: Progress | None = None) -> RunResult:
    async with job_run("discover", settings, progress) as run:
        client, result = run.client, run.result
        servers = await client.dataservers()
        if settings.server:
            server = await client.dataserver_by_name(settings.server)
        else:
            if not servers:
                raise NotFoundError("the PI Web API lists no data servers")
            server = servers[0]
        now = datetime.now(UTC)
        run.progress.start(None, f"discover {server['Name']}")
        current: list[dict[str, Any]] = []
        async for obj in client.iter_points(server["WebId"], settings.points):
            current.append(point_row(obj, server["Name"], now))
            run.progress.advance(1)
        await run.close_client()
        changes = write_changes(
            run.sink, "pi_points", lambda rows: catalog_changes(rows, current, server["Name"], settings.points, now),
            schema.PI_POINTS, schema.PI_POINTS_KEY, metadata={"piflow.job": "discover", "piflow.run_id": result.run_id})
        result.points = len(current)
        result.values_written = len(changes)
        result.details = {"changed": len(changes), "tombstoned": sum(1 for c in changes if c["is_deleted"])}
    return result
