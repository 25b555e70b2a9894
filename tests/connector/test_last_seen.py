"""``last_seen`` on the delta-rs path means "last changed": a row piflow reads again unchanged is not rewritten
(and an unchanged catalog commits nothing); a row that changes, here by vanishing, gets the new time."""

from __future__ import annotations

import asyncio
from pathlib import Path

from piflow.emulator.server import EmulatorServer
from piflow.jobs.discover import run_discover
from piflow.sinks.delta import DeltaSink
from tests.connector.conftest import settings_for


def test_last_seen_moves_only_when_the_row_changes(emulator: EmulatorServer, tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path, points="BRK.A0.PMP*")
    sink = DeltaSink(str(tmp_path))
    asyncio.run(run_discover(settings))
    first = {r["webid"]: r for r in sink.read("pi_points").to_pylist()}
    version = sink.version("pi_points")
    asyncio.run(run_discover(settings))  # every point seen again, none changed
    assert sink.version("pi_points") == version
    gone = next(p for p in (emulator.state.model.point(0, i) for i in range(1000)) if p.webid in first)
    emulator.state.deleted_points.add((0, gone.index))
    asyncio.run(run_discover(settings))
    rows = {r["webid"]: r for r in sink.read("pi_points").to_pylist()}
    assert rows[gone.webid]["is_deleted"]
    assert rows[gone.webid]["last_seen"] > first[gone.webid]["last_seen"]
    assert rows[gone.webid]["first_seen"] == first[gone.webid]["first_seen"]
    for webid, row in rows.items():
        if webid != gone.webid:
            assert (row["first_seen"], row["last_seen"]) == (first[webid]["first_seen"], first[webid]["last_seen"])
