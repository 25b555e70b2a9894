"""The join of values to equipment and event frames shown in docs/af-and-events.md, executed as written."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from piflow.emulator.server import EmulatorServer
from piflow.jobs.af.events import run_events
from piflow.jobs.af.job import run_af
from piflow.jobs.backfill import run_backfill
from piflow.jobs.discover import run_discover
from tests.af.conftest import rows_of, settings_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "af-and-events.md"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def doc_query() -> str:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"<!-- query:begin -->\s*```python\n(.*?)```\s*<!-- query:end -->", text, re.DOTALL)
    assert m, "the pyarrow query block is missing from docs/af-and-events.md"
    return m.group(1)


def as_dt(ticks: int) -> datetime:
    return EPOCH + timedelta(microseconds=ticks // 10)


def test_documented_query_joins_values_to_equipment_and_downtime(emulator: EmulatorServer, tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path, points="BRK.A0.*", start="*-6h", end="*")
    for job in (run_discover, run_backfill, run_af, run_events):
        result = asyncio.run(job(settings))
        assert result.status == "ok", f"{result.job}: {result.message}"

    namespace: dict[str, Any] = {"target": str(tmp_path)}
    exec(compile(doc_query(), str(DOC), "exec"), namespace)  # noqa: S102 - the documented query, as written
    got = Counter((r["equipment"], r["attribute"], r["event_frame"], r["timestamp"], r["value_double"])
                  for r in namespace["result"].to_pylist())

    # The same answer from the emulator's ground truth and plain loops over pi_values.
    af, ef = emulator.state.af, emulator.state.eventframes
    values: dict[str, list[dict[str, Any]]] = {}
    for v in rows_of(tmp_path, "pi_values"):
        values.setdefault(v["webid"], []).append(v)
    want: Counter[tuple[Any, ...]] = Counter()
    now = emulator.state.clock.now_ticks()
    for f in ef.frames(now - 6 * 3600 * 10_000_000, now, now):
        if f.template_name != "Downtime":
            continue
        element = af.element(f.ref_element_webids[0])
        assert element is not None
        start, end = as_dt(f.start), None if f.end is None else as_dt(f.end)
        for a in af.attributes(element.webid) or []:
            for v in values.get(a.point_webid or "", []):
                if v["timestamp"] >= start and (end is None or v["timestamp"] <= end):
                    want[(element.path, a.name, f.name, v["timestamp"], v["value_double"])] += 1
    assert sum(want.values()) > 100
    assert got == want
