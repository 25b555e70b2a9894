"""What every job shares: the client built from settings, the point selection, and the run record."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fnmatch
import logging
import math
import signal
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from piflow import __version__, schema
from piflow.errors import AuthError, BadRequestError, ConfigError, NotFoundError, PiflowError
from piflow.pitime import from_ticks, parse_iso_ticks, parse_pi_time
from piflow.planner import PointRef
from piflow.sinks.delta import DeltaSink

if TYPE_CHECKING:
    from piflow.client.api import PiClient
    from piflow.config import PiflowSettings
    from piflow.progress import Progress

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class RunResult:
    """One row of ``pi_ingest_runs``, also what the CLI prints at the end of a command."""

    job: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = "ok"
    points: int = 0
    values_written: int = 0
    requests: int = 0
    retries: int = 0
    errors: int = 0
    duration_s: float = 0.0
    message: str = ""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    window_start: datetime | None = None
    window_end: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)  # what the server lacked and what was done instead

    def row(self) -> pa.Table:
        finished = datetime.now(UTC)
        return pa.Table.from_pylist(
            [{
                "run_id": self.run_id, "job": self.job, "started_at": self.started_at, "finished_at": finished,
                "status": self.status, "points": self.points, "values_written": self.values_written,
                "requests": self.requests, "retries": self.retries, "errors": self.errors,
                "duration_s": self.duration_s, "window_start": self.window_start, "window_end": self.window_end,
                "message": self.message[:2000], "piflow_version": __version__,
            }],
            schema=schema.PI_INGEST_RUNS,
        )


def open_client(settings: PiflowSettings) -> PiClient:
    from piflow.client.api import PiClient
    from piflow.client.retry import RetryPolicy

    return PiClient(
        settings.require_url(), settings.make_auth(), verify=settings.verify, timeout_s=settings.timeout_s,
        max_connections=max(4, settings.concurrency * 2), retry=RetryPolicy(max_attempts=settings.retries + 1),
        max_rps=settings.max_rps or None,
    )


@contextlib.contextmanager
def on_stop_signals(callback: Callable[[int], None]) -> Iterator[None]:
    """Inside the running event loop, SIGINT and SIGTERM call ``callback(signum)`` for the block (nothing is
    installed where the loop cannot take handlers: another thread, another platform)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, callback, sig)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


_RECORDED: contextvars.ContextVar[list[RunResult] | None] = contextvars.ContextVar("piflow_recorded", default=None)


@contextlib.contextmanager
def recorded_runs() -> Iterator[list[RunResult]]:
    """The runs recorded inside this block (and the tasks it starts), for a caller that must report on a run
    that did not return: one interrupted by a signal, say."""
    runs: list[RunResult] = []
    token = _RECORDED.set(runs)
    try:
        yield runs
    finally:
        _RECORDED.reset(token)


class RunRecorder:
    """Times a job and appends its row to ``pi_ingest_runs`` whatever the outcome (then re-raises).

    An interruption (Ctrl-C, SIGTERM: the job's task is cancelled) is recorded as ``interrupted``, with the
    counts of what the job had committed by then.
    """

    def __init__(self, sink: DeltaSink, result: RunResult) -> None:
        self.sink = sink
        self.result = result
        self._t0 = time.monotonic()

    def __enter__(self) -> RunResult:
        return self.result

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.result.duration_s = time.monotonic() - self._t0
        if exc is not None:
            self.result.status = "failed" if isinstance(exc, Exception) else "interrupted"
            self.result.errors += 1
            self.result.message = str(exc) if isinstance(exc, PiflowError) else f"{type(exc).__name__}: {exc}"
        if self.result.fallbacks:
            note = "; ".join(self.result.fallbacks)
            self.result.message = f"{self.result.message}; {note}" if self.result.message else note
        if self.sink.conflicts:
            self.result.details["commit_retries"] = self.sink.conflicts
            note = f"{self.sink.conflicts} commit(s) planned again because other writers committed first"
            self.result.message = f"{self.result.message}; {note}" if self.result.message else note
        runs = _RECORDED.get()
        if runs is not None:
            runs.append(self.result)
        try:
            self.sink.append("pi_ingest_runs", self.result.row())
        except PiflowError:
            log.exception("could not record run %s", self.result.run_id)


def take_client_counters(result: RunResult, client: PiClient) -> None:
    """The client's request counters, and the fallbacks it chose for what the server lacks, into the run row."""
    http = client.http
    result.requests = int(getattr(http, "requests", 0))
    result.retries = int(getattr(http, "retries", 0))
    result.errors += int(getattr(http, "errors", 0))
    result.fallbacks = list(client.caps.notes)


def selected_points(sink: DeltaSink, name_filter: str) -> list[PointRef]:
    """Live (not tombstoned) points of ``pi_points`` whose name matches the filter, ordered by name."""
    table = sink.read("pi_points", columns=["webid", "name", "point_type", "engineering_units", "is_deleted"])
    table = table.filter(pc.invert(table.column("is_deleted")))
    pattern = name_filter.upper()
    refs = [
        PointRef(r["webid"], r["name"], r["point_type"], r["engineering_units"] or None)
        for r in table.to_pylist()
        if fnmatch.fnmatchcase(r["name"].upper(), pattern)
    ]
    refs.sort(key=lambda p: p.name)
    return refs


async def points_to_read(settings: PiflowSettings, sink: DeltaSink, progress: Progress) -> list[PointRef]:
    """The points a job reads: from ``pi_points``, discovering them first if the table has none for the filter."""
    points = selected_points(sink, settings.points)
    if not points:
        from piflow.jobs.discover import run_discover

        progress.note("pi_points is empty for this filter: discovering points first")
        await run_discover(settings, progress)
        points = selected_points(sink, settings.points)
    if not points:
        raise ConfigError("points", f"no PI point matches {settings.points!r}")
    return points


async def server_now(client: PiClient) -> datetime:
    """The PI server's clock (jobs measure "now" where the data is, not on this machine).

    ``system/status`` gives it; a server without one (disabled, a gateway, another implementation) gives it in
    the ``Date`` header of any answer; failing both, this machine's clock is used with a warning, since the
    skew is then unknown. The choice is made once per client and noted.
    """
    caps = client.caps
    if caps.system_status is not False:
        try:
            status = await client.system_status()
        except (NotFoundError, BadRequestError, AuthError) as exc:
            if isinstance(exc, AuthError) and exc.status != 403:
                raise  # 401: the credentials are wrong, which every other call would say too
            caps.fallback("system_status", f"the server refuses system/status (HTTP {exc.status}): taking the "
                                           "server's time from the Date header of its answers")
        else:
            text = status.get("ServerTime")
            if text:
                caps.worked("system_status")
                return from_ticks(parse_iso_ticks(str(text)))
            caps.fallback("system_status", "system/status has no ServerTime: taking the server's time from the "
                                           "Date header of its answers")
    with contextlib.suppress(PiflowError):  # any answer carries the Date header, a refusal too
        await client.http.get_json("")
    date = client.http.server_date()
    if date is not None:
        return date
    caps.fallback("server_clock", "the server gives its time neither in system/status nor in a Date header: "
                                  "using this machine's clock, so the skew to the PI server is unknown")
    return datetime.now(UTC)


def resolve_time(setting: str, text: str, now: datetime) -> datetime:
    try:
        return parse_pi_time(text, now)
    except ValueError as exc:
        raise ConfigError(setting, f"cannot parse PI time {text!r}") from exc


async def all_or_none(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run coroutines at once and return their results in order; when one fails, the others are cancelled
    (and awaited) before its error is raised, so none keeps using a client that is about to close."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def merge_changes(existing: Iterable[dict[str, Any]], current: Iterable[dict[str, Any]], compared: Sequence[str],
                  in_scope: Callable[[dict[str, Any]], bool], now: datetime) -> list[dict[str, Any]]:
    """Rows to merge on ``webid`` (catalog-like tables: points, AF objects, event frames): new rows, changed
    rows (keeping ``first_seen``) and tombstones for rows in scope that vanished (pure). Unchanged rows are not
    returned, so an unchanged source commits nothing."""
    old = {r["webid"]: r for r in existing}
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in current:
        seen.add(row["webid"])
        prev = old.get(row["webid"])
        if prev is None:
            out.append(row)
        elif not all(_same(prev.get(k), row.get(k)) for k in compared):
            out.append({**row, "first_seen": prev["first_seen"]})
    for webid, prev in old.items():
        if webid not in seen and not prev["is_deleted"] and in_scope(prev):
            out.append({**prev, "is_deleted": True, "last_seen": now})
    return out
