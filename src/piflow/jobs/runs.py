"""What every job shares while it runs: its record in ``pi_ingest_runs`` (:class:`RunResult`, written by
:class:`RunRecorder` whatever the outcome), the PI client built from the settings, and :func:`job_run`, the
skeleton every job runs inside (sink, client, record, counters, progress)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from piflow import __version__, schema
from piflow.errors import PiflowError
from piflow.progress import NullProgress, Progress
from piflow.sinks.delta import DeltaSink

if TYPE_CHECKING:
    from piflow.client.api import PiClient
    from piflow.config import PiflowSettings

log = logging.getLogger(__name__)

# ok: everything asked for was read and written; partial: some points could not be read (the rest was written);
# failed: the job raised (nothing after its last commit was written); interrupted: a signal stopped it.
Status = Literal["ok", "partial", "failed", "interrupted"]
UNREADABLE_KEY = "piflow.unreadable_points"
MAX_UNREADABLE = 10_000


@dataclass
class RunResult:
    """One row of ``pi_ingest_runs``, also what the CLI prints at the end of a command."""

    job: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: Status = "ok"
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
    unreadable: list[str] = field(default_factory=list)  # webids the server no longer knows (``partial``)

    def record_metadata(self) -> dict[str, str]:
        """What the run record's commit carries besides the row: the job, and the points it could not read
        (``piflow status`` counts them as ``error``; at most :data:`MAX_UNREADABLE`)."""
        meta = {"piflow.job": self.job, "piflow.run_id": self.run_id}
        if self.unreadable:
            meta[UNREADABLE_KEY] = json.dumps(self.unreadable[:MAX_UNREADABLE])
        return meta

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
            self.sink.append("pi_ingest_runs", self.result.row(), metadata=self.result.record_metadata())
        except PiflowError:
            log.exception("could not record run %s", self.result.run_id)


def take_client_counters(result: RunResult, client: PiClient) -> None:
    """The client's request counters, and the fallbacks it chose for what the server lacks, into the run row."""
    http = client.http
    result.requests = int(getattr(http, "requests", 0))
    result.retries = int(getattr(http, "retries", 0))
    result.errors += int(getattr(http, "errors", 0))
    result.fallbacks = list(client.caps.notes)


class JobRun:
    """One job while it runs: its settings, progress, sink and run record, and the PI client, opened on first
    use (a job that finds nothing to do asks PI nothing)."""

    def __init__(self, job: str, settings: PiflowSettings, progress: Progress | None) -> None:
        self.settings = settings
        self.progress: Progress = progress or NullProgress()
        self.sink = DeltaSink(settings.target)
        self.result = RunResult(job=job)
        self._client: PiClient | None = None

    @property
    def client(self) -> PiClient:
        if self._client is None:
            self._client = open_client(self.settings)
        return self._client

    def unknown_points(self, missing: Mapping[str, str]) -> None:
        """Points the server no longer knows make a run ``partial``, whichever job read them (the rest was
        written; the message names them)."""
        if not missing:
            return
        self.result.status = "partial"
        self.result.errors += len(missing)
        self.result.unreadable = sorted(missing)
        note = (f"{len(missing)} point(s) unknown to the server, not written: "
                + "; ".join(list(missing.values())[:5]))
        self.result.message = f"{self.result.message}; {note}" if self.result.message else note

    async def close_client(self) -> None:
        """Take the client's counters into the record and close it (before the record is written)."""
        if self._client is not None:
            client, self._client = self._client, None
            take_client_counters(self.result, client)
            await client.aclose()


@contextlib.asynccontextmanager
async def job_run(job: str, settings: PiflowSettings, progress: Progress | None = None) -> AsyncIterator[JobRun]:
    """The skeleton of every job: the run is recorded in ``pi_ingest_runs`` whatever happens (with the client's
    counters and the server fallbacks it chose), the client is closed and the progress display ended."""
    run = JobRun(job, settings, progress)
    try:
        with RunRecorder(run.sink, run.result):
            try:
                yield run
            finally:
                await run.close_client()
    finally:
        run.progress.close()
