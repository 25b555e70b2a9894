"""The asset databases: which ones the asset servers list, which one a ``--database`` option names, and what was read
of one (:class:`DatabaseRead`): what ``piflow af``, ``piflow events``, ``piflow view`` and the Spark source all need
before they read anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from piflow.errors import NotFoundError
from piflow.jobs.pi_json import Json

if TYPE_CHECKING:
    from piflow.client.api import PiClient


@dataclass(frozen=True)
class Database:
    server: str
    webid: str
    name: str
    path: str


async def list_databases(client: PiClient) -> tuple[list[Database], set[str]]:
    """Every database of every asset server, and the names of the servers that answered."""
    out: list[Database] = []
    servers: set[str] = set()
    async for srv in client.iter_list("assetservers", [("selectedFields", "Items.WebId;Items.Name")]):
        servers.add(str(srv.get("Name")))
        async for db in client.iter_list(f"assetservers/{srv['WebId']}/assetdatabases",
                                         [("selectedFields", "Items.WebId;Items.Name;Items.Path")]):
            out.append(Database(str(srv.get("Name")), str(db["WebId"]), str(db["Name"]), str(db.get("Path") or "")))
    return out, servers


def database_matches(db_server: str, db_name: str, wanted: str | None) -> bool:
    r"""``wanted`` is a database name (``Plant``) or path (``\\AFSERVER\Plant``), case-insensitive."""
    if wanted is None:
        return True
    text = wanted.strip().lstrip("\\")
    if "\\" in text:
        server, _, name = text.partition("\\")
        return server.upper() == db_server.upper() and name.upper() == db_name.upper()
    return text.upper() == db_name.upper()


def no_such_database(wanted: str, dbs: Sequence[Database]) -> NotFoundError:
    known = ", ".join(f"\\\\{d.server}\\{d.name}" for d in dbs) or "none"
    return NotFoundError(f"asset database {wanted!r} not found (the asset servers have: {known})")


@dataclass
class DatabaseRead:
    db: Database
    elements: list[Json] = field(default_factory=list)
    attributes: dict[str, list[Json]] = field(default_factory=dict)  # element WebId -> its attributes
    vanished: str | None = None  # why the database could not be read (it went away during the run)
    removed_elements: int = 0  # elements listed but gone before their attributes were read
    fallbacks: int = 0
