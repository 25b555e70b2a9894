"""A PI name filter selects the same points on the server (the emulator's ``nameFilter``) as in the jobs' own
selection from ``pi_points`` (``selected_points``, ``status``, and discover's tombstone scope)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from piflow.client.api import PiClient
from piflow.emulator.server import EmulatorServer
from piflow.jobs.common import selected_points
from piflow.jobs.discover import run_discover
from piflow.jobs.status import status_rows
from piflow.sinks.delta import DeltaSink
from tests.connector.conftest import settings_for

FILTERS = [
    "BRK.A0.PMP00000[13].*",  # a character set: PI has them, fnmatch too; the emulator read '[' literally
    "brk.a0.pmp00000[!13].pressure",
    "*.FLOW",
    "BRK.A0.???000002.*",
    "BRK.A0.PMP00000\\1.*",  # an escaped ordinary character is itself
]


async def server_names(srv: EmulatorServer, name_filter: str) -> list[str]:
    async with PiClient(srv.url) as client:
        server = (await client.dataservers())[0]
        return sorted([p["Name"] async for p in client.iter_points(server["WebId"], name_filter)])


@pytest.mark.parametrize("name_filter", FILTERS)
def test_the_server_and_the_jobs_select_the_same_points(emulator: EmulatorServer, tmp_path: Path,
                                                        name_filter: str) -> None:
    asyncio.run(run_discover(settings_for(emulator, tmp_path, points="*")))
    on_server = asyncio.run(server_names(emulator, name_filter))
    assert on_server
    sink = DeltaSink(str(tmp_path))
    assert [p.name for p in selected_points(sink, name_filter)] == on_server
    assert [r["name"] for r in status_rows(settings_for(emulator, tmp_path, points=name_filter))] == on_server
    # discover with the filter: every row the local match puts in scope came back, so none is tombstoned
    result = asyncio.run(run_discover(settings_for(emulator, tmp_path, points=name_filter)))
    assert result.points == len(on_server)
    assert result.details["tombstoned"] == 0
