"""How many of piflow's error paths the tests run: `raise` statements and `except` handlers, from a coverage report.

It runs nothing itself. Measure first, then read the report:

    .venv/bin/python -m pytest --cov=piflow --cov-branch --cov-report=json:/tmp/cov.json -q
    .venv/bin/python scripts/error_paths.py /tmp/cov.json

Every `.py` file under src/piflow is parsed, except src/piflow/emulator/ (a test double of PI, not the product's
error handling). A `raise` counts as run when its line executed; an `except` handler when the first statement of
its body executed (the `except` line itself is not a statement coverage records). A line excluded from coverage
(`# pragma: no cover`) counts as not run: excluding it must not raise the figure. A file the report does not
list counts as never run.

Prints covered/total and the percentage for each kind, then every path not run as file:line with what it raises
or catches, and a warning on stderr naming any file whose statements are no longer those the report measured
(edited since: its figures would be wrong). `--fail-under N` exits 1 when either kind is below N percent.

Child processes count (`python -m piflow` in the CLI tests, servers of the loopback tests) through coverage's
`patch = ["subprocess"]` in pyproject.toml; a process ended by SIGKILL saves no data.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SRC = REPO / "src" / "piflow"
DEFAULT_SKIP = ("emulator",)


@dataclass(frozen=True)
class ErrorPath:
    kind: str  # "raise" or "except"
    file: str  # relative to the repository (or to the source root's parent)
    line: int  # the line shown to the reader: the raise, or the except clause
    probe: int  # the line whose execution means "run": the raise, or the handler's first statement
    what: str  # the exception raised or caught, as written

    def __str__(self) -> str:
        return f"{self.file}:{self.line}  {self.kind} {self.what}"


def _source(node: ast.expr | None, text: str) -> str:
    if node is None:
        return ""
    segment = ast.get_source_segment(text, node) or ""
    segment = " ".join(segment.split())
    return segment if len(segment) <= 70 else segment[:67] + "..."


def error_paths(path: Path, shown_as: str) -> list[ErrorPath]:
    """Every raise statement and except handler in one file."""
    text = path.read_text(encoding="utf-8")
    found: list[ErrorPath] = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Raise):
            what = _source(node.exc, text) or "(re-raise)"
            found.append(ErrorPath("raise", shown_as, node.lineno, node.lineno, what))
        elif isinstance(node, ast.ExceptHandler):
            what = _source(node.type, text) or "(bare except)"
            found.append(ErrorPath("except", shown_as, node.lineno, node.body[0].lineno, what))
    return sorted(found, key=lambda p: (p.line, p.kind))


def source_files(src: Path, skip: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in src.rglob("*.py") if not (set(p.relative_to(src).parts[:-1]) & set(skip)))


@dataclass(frozen=True)
class FileLines:
    executed: frozenset[int]
    measured: frozenset[int]  # the statements coverage measured, run or not (excluded ones left out)
    excluded: frozenset[int]


def executed_lines(report: dict[str, object]) -> dict[Path, FileLines]:
    """Lines per absolute file path. Coverage names files relative to where it ran, or absolutely."""
    files = report.get("files")
    if not isinstance(files, dict):
        raise SystemExit("not a coverage JSON report: no 'files' object (write one with --cov-report=json:PATH)")
    meta = report.get("meta")
    base = Path.cwd()
    if isinstance(meta, dict) and isinstance(meta.get("root"), str):  # not in every coverage version
        base = Path(meta["root"])
    out: dict[Path, FileLines] = {}
    for name, data in files.items():
        path = Path(name) if Path(name).is_absolute() else base / name
        run = frozenset(data.get("executed_lines", []))
        out[path.resolve()] = FileLines(run, run | frozenset(data.get("missing_lines", [])),
                                        frozenset(data.get("excluded_lines", [])))
    return out


def _find(executed: dict[Path, FileLines], path: Path, src: Path) -> FileLines | None:
    hit = executed.get(path.resolve())
    if hit is not None:
        return hit
    # The report may come from another checkout of the same tree: match on the path below the package's parent.
    tail = path.resolve().relative_to(src.resolve().parent).parts
    for candidate, lines in executed.items():
        if candidate.parts[-len(tail):] == tail:
            return lines
    return None


@dataclass
class Tally:
    covered: int = 0
    total: int = 0

    @property
    def percent(self) -> float:
        return 100.0 * self.covered / self.total if self.total else 100.0


@dataclass
class Measurement:
    tallies: dict[str, Tally]
    missed: list[ErrorPath]
    stale: list[str]  # files whose statements are not those the report measured: edited after the measurement


def measure(report: dict[str, object], src: Path, skip: tuple[str, ...]) -> Measurement:
    executed = executed_lines(report)
    m = Measurement({"raise": Tally(), "except": Tally()}, [], [])
    for path in source_files(src, skip):
        shown = path.resolve().relative_to(src.resolve().parent.parent).as_posix()
        lines = _find(executed, path, src)
        if lines is not None and not _matches(path, lines):
            m.stale.append(shown)
        for p in error_paths(path, shown):
            m.tallies[p.kind].total += 1
            if lines is not None and p.probe in lines.executed:
                m.tallies[p.kind].covered += 1
            else:
                m.missed.append(p)
    return m


def _matches(path: Path, lines: FileLines) -> bool:
    """Whether the file still has the statements the report measured (coverage's own parser says which)."""
    from coverage.parser import PythonParser

    parser = PythonParser(text=path.read_text(encoding="utf-8"), filename=str(path))
    parser.parse_source()
    return set(parser.statements) - lines.excluded == lines.measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("report", type=Path, help="a coverage JSON report (pytest --cov-report=json:PATH)")
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="the package to read (default: src/piflow)")
    parser.add_argument("--skip", action="append", default=None,
                        help="a sub-package to leave out (default: emulator); repeat for more")
    parser.add_argument("--fail-under", type=float, default=None, help="exit 1 if either kind is below this percent")
    args = parser.parse_args(argv)
    skip = tuple(args.skip) if args.skip is not None else DEFAULT_SKIP

    try:
        report = json.loads(args.report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"error: cannot read the coverage report {args.report}: {exc}", file=sys.stderr)
        return 2
    m = measure(report, args.src, skip)

    for kind, label in (("raise", "raise statements"), ("except", "except handlers")):
        t = m.tallies[kind]
        print(f"{label:17} {t.covered:4d}/{t.total:<4d} {t.percent:5.1f}%")
    if m.missed:
        print(f"\nnot run ({len(m.missed)}):")
        for p in sorted(m.missed, key=lambda p: (p.file, p.line)):
            print(f"  {p}")
    if m.stale:
        print(f"\nwarning: the report does not match the source of {', '.join(m.stale)} (edited after the "
              "measurement?): measure again", file=sys.stderr)
    if args.fail_under is not None and any(t.percent < args.fail_under for t in m.tallies.values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
