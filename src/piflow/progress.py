"""Progress reporting: the jobs call a :class:`Progress`; only the CLI decides whether anything is drawn.

The library default is :class:`NullProgress` (the library never prints). The CLI uses :class:`RichProgress`
when stderr is a terminal (or ``--progress always``), so that piping or cron logs stay clean.
"""

from __future__ import annotations

import sys
from typing import IO, Protocol, runtime_checkable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as _RichBar
from rich.text import Text


@runtime_checkable
class Progress(Protocol):
    """What a job reports: units of work (points, windows, requests) and the values they carried."""

    def start(self, total: int | None, description: str) -> None:
        """Begin a phase of ``total`` units (None when unknown); a later call starts the next phase."""

    def advance(self, units: int = 1, values: int = 0) -> None:
        """``units`` more done in the current phase, carrying ``values`` PI values."""

    def note(self, message: str) -> None:
        """A one-line remark worth showing a human (not a log replacement)."""

    def close(self) -> None:
        """Stop drawing; idempotent."""


class NullProgress:
    """Reports nowhere: the default for library callers."""

    def start(self, total: int | None, description: str) -> None:
        return None

    def advance(self, units: int = 1, values: int = 0) -> None:
        return None

    def note(self, message: str) -> None:
        return None

    def close(self) -> None:
        return None


class _ValuesPerSecond(ProgressColumn):
    """Values carried so far and their rate: the figure people watch during a backfill."""

    def render(self, task: Task) -> Text:
        values = int(task.fields.get("values", 0))
        elapsed = task.elapsed or 0.0
        rate = values / elapsed if elapsed > 0 else 0.0
        return Text(f"{_si(values)} values {_si(rate)}/s", style="progress.data.speed", no_wrap=True)


def _si(x: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= limit:
            return f"{x / limit:.1f}{suffix}"
    return f"{x:.0f}"  # below 1000 a count reads better without a suffix


class RichProgress:
    """A rich progress bar on stderr with units done, values and values/s; one task per phase."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True)
        self._bar = _RichBar(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            _ValuesPerSecond(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=False,
        )
        self._task: TaskID | None = None
        self._values = 0
        self._running = False

    def start(self, total: int | None, description: str) -> None:
        if not self._running:
            self._bar.start()
            self._running = True
        self._finish_task()
        self._values = 0
        self._task = self._bar.add_task(description, total=total, values=0)

    def advance(self, units: int = 1, values: int = 0) -> None:
        if self._task is None:
            self.start(None, "working")
        assert self._task is not None
        self._values += values
        self._bar.update(self._task, advance=units, values=self._values)

    def note(self, message: str) -> None:
        self._console.print(message, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._running:
            self._finish_task()
            self._bar.stop()
            self._running = False

    def _finish_task(self) -> None:
        """Stop the clock of the previous phase (an unknown total becomes what was done)."""
        if self._task is None:
            return
        task = next((t for t in self._bar.tasks if t.id == self._task), None)
        if task is not None and task.total is None:
            self._bar.update(self._task, total=task.completed)
        self._bar.stop_task(self._task)
        self._task = None


def make_progress(mode: str = "auto", stream: IO[str] | None = None) -> Progress:
    """What the CLI shows: ``never`` -> nothing, ``always`` -> a bar, ``auto`` -> a bar on a terminal."""
    out = stream if stream is not None else sys.stderr
    if mode == "never" or (mode == "auto" and not _isatty(out)):
        return NullProgress()
    return RichProgress(Console(file=out, force_terminal=mode == "always" or None))


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
