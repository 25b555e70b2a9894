"""Ground truth for tests of the connector: what the emulator holds, as rows of the ``pi_values`` contract.

The connector reads the emulator over HTTP (pages, JSON, decoding, retries) and writes Delta tables; a test
compares those tables with :func:`recorded_truth`, which is computed here from :meth:`Model.events` directly,
not by reading what the endpoints serve. The two paths share only the data model, so a bug in serving,
decoding or writing shows up as a difference instead of being copied into the expectation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from piflow import schema
from piflow.emulator.model import K_DIGITAL, K_NUMBER, K_STRING, K_SYSTEM, K_TIMESTAMP, Events, PointSpec
from piflow.emulator.state import EmulatorState
from piflow.pitime import TICKS_PER_US, to_ticks

_KIND_NAMES = {K_NUMBER: schema.KIND_NUMBER, K_STRING: schema.KIND_STRING, K_TIMESTAMP: schema.KIND_TIMESTAMP,
               K_DIGITAL: schema.KIND_DIGITAL, K_SYSTEM: schema.KIND_SYSTEM}
_US_PER_DAY = 86_400_000_000
_CHUNK_SLOTS = 1 << 20  # model calls over at most this many sampling slots (bounded memory)

TRUTH_SCHEMA = pa.schema([schema.PI_VALUES.field(name) for name in schema.PI_VALUES_CONTENT])


def pi_value(ev: Events, i: int) -> Any:
    """The ``Value`` PI's JSON should carry for event ``i``, from the model (for tests of served bodies)."""
    kind = int(ev.kind[i])
    if kind == K_NUMBER:
        return int(ev.number[i]) if ev.point.point_type == "Int32" else float(ev.number[i])
    if kind in (K_STRING, K_TIMESTAMP):
        return ev.string_value(i)
    assert kind in (K_DIGITAL, K_SYSTEM)
    return {"Name": ev.state_name(i), "Value": int(ev.code[i]), "IsSystem": kind == K_SYSTEM}


def recorded_truth(state: EmulatorState, points: Sequence[PointSpec], start: datetime, end: datetime,
                   asof: datetime | None = None) -> pa.Table:
    """Every recorded event of ``points`` with start <= timestamp <= end that the server holds at ``asof``
    (default: the virtual clock's now), as a table with the columns of ``PI_VALUES_CONTENT``.

    Rows are ordered by the given points, then in server order. ``seq`` numbers the events of a point that
    share one microsecond timestamp (PI allows several events at one time; the table keeps microseconds).
    """
    start_ticks, end_ticks = to_ticks(start), to_ticks(end)
    asof_ticks = state.clock.now_ticks() if asof is None else to_ticks(asof)
    tables = [_point_rows(p, _events(state, p, start_ticks, end_ticks, asof_ticks)) for p in points]
    if not tables:
        return TRUTH_SCHEMA.empty_table()
    return pa.concat_tables(tables)


def _events(state: EmulatorState, p: PointSpec, start: int, end: int, asof: int) -> list[Events]:
    """The point's events in chunks of the window (each chunk a separate model call)."""
    step = _CHUNK_SLOTS * p.interval_ticks
    out: list[Events] = []
    t = start
    while t <= end:
        chunk_end = min(end, t + step - 1)
        out.append(state.model.events(p, t, chunk_end, asof))
        t = chunk_end + 1
    return out


def _seq(ts_us: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
    """0, 1, ... within each run of equal microsecond timestamps (events come in timestamp order)."""
    n = ts_us.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    new_run = np.ones(n, dtype=np.bool_)
    new_run[1:] = ts_us[1:] != ts_us[:-1]
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))
    return (np.arange(n) - run_start).astype(np.int32)


def _point_rows(p: PointSpec, chunks: list[Events]) -> pa.Table:
    ticks = np.concatenate([e.ticks for e in chunks] + [np.zeros(0, np.int64)]).astype(np.int64)
    n = ticks.shape[0]
    kind = np.concatenate([e.kind for e in chunks] + [np.zeros(0, np.int8)])
    number = np.concatenate([e.number for e in chunks] + [np.zeros(0, np.float64)])
    code = np.concatenate([e.code for e in chunks] + [np.zeros(0, np.int32)])
    flags = {name: np.concatenate([getattr(e, name) for e in chunks] + [np.zeros(0, np.bool_)])
             for name in ("good", "questionable", "substituted", "annotated")}
    strings: list[str | None] = [None] * n
    names: list[str | None] = [None] * n
    at = 0
    for e in chunks:
        for i in np.flatnonzero((e.kind == K_STRING) | (e.kind == K_TIMESTAMP)).tolist():
            strings[at + i] = e.string_value(i)
        for i in np.flatnonzero((e.kind == K_DIGITAL) | (e.kind == K_SYSTEM)).tolist():
            names[at + i] = e.state_name(i)
        at += len(e)
    ts_us = ticks // TICKS_PER_US  # ticks are never negative here (the model starts at its origin)
    is_state = (kind == K_DIGITAL) | (kind == K_SYSTEM)
    columns = {
        "webid": pa.array([p.webid] * n, pa.string()),
        "timestamp": pa.array(ts_us, schema.TS),
        "seq": pa.array(_seq(ts_us), pa.int32()),
        "date": pa.array((ts_us // _US_PER_DAY).astype(np.int32), pa.date32()),
        "value_kind": pa.array(np.array([_KIND_NAMES[k] for k in range(5)], dtype=object)[kind], pa.string()),
        "value_double": pa.array(number, pa.float64(), mask=kind != K_NUMBER),
        "value_string": pa.array(strings, pa.string()),
        "state_code": pa.array(code, pa.int32(), mask=~is_state),
        "state_name": pa.array(names, pa.string()),
        "is_system": pa.array(kind == K_SYSTEM, pa.bool_()),
        **{name: pa.array(values, pa.bool_()) for name, values in flags.items()},
        "units": pa.array([p.units or None] * n, pa.string()),
    }
    return pa.Table.from_arrays([columns[name] for name in TRUTH_SCHEMA.names], schema=TRUTH_SCHEMA)
