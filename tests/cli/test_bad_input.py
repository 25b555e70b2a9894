"""Bad input never shows a traceback: every option of every command, fed malformed values, ends the command with
one line naming the option, exit code 1 or 2, nothing on stdout and no file touched.

The cases are built from the typer/click command tree itself, so an option added later is covered without a
change here: it gets an empty value and a value of the wrong type at least (an option that takes any text
must refuse an empty one). Options whose meaning allows a more telling malformed value get that too (a target
that is a file, a URL carrying a password, an interval without a number ...).

What "one line" means, exactly: after dropping click's own usage lines ("Usage: piflow ...", "Try 'piflow ...
--help' for help.") and blank lines, stderr holds exactly one line, starting "error: " (piflow's) or
"Error: " (click's usage error, exit code 2), and it names the option (``--target`` or ``'target'``).
"""

from __future__ import annotations

import socket
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from piflow.cli import app
from piflow.emulator.server import EmulatorServer
from piflow.emulator.settings import EmulatorSettings

ROOT = typer.main.get_command(app)

# Placeholders filled in per test (files made in the test's own folder, the emulator's URL, a busy port).
FILE, TYPO_TOML, URL, BUSY_PORT = "{file}", "{typo_toml}", "{url}", "{busy_port}"

# Values that make every other option of a command valid, so that the malformed one is the only fault.
BASE: dict[str, str] = {"url": URL, "target": "lake", "progress": "never", "template": "Pump", "shards": "2",
                        "output": "bundle", "catalog": "main", "schema": "pi", "warehouse_id": "1234abcd",
                        "port": BUSY_PORT}
ALWAYS = {"url", "target", "progress", "output", "port"}  # given even where optional (defaults point elsewhere)

# Malformed values beyond the generic ones, by option name (and by command where a name means two things).
SPECIFIC: dict[str, list[str]] = {
    "config": ["missing.toml", TYPO_TOML],
    "url": ["pi.example.com/piwebapi", "ftp://pi.example.com/piwebapi", "http://piuser:pa55word@127.0.0.1/piwebapi"],
    "target": [FILE, f"{FILE}/lake", "foo://x"],
    "start": ["yesterday-ish"],
    "end": ["yesterday-ish"],
    "commit_interval": ["fast", "0"],
    "overlap": ["soon"],
    "interval": ["soon", "0"],
    "table": ["pi_values", "no spaces!"],
    "output": [FILE, f"{FILE}/bundle"],
    "catalog": ["main.pi"],
    "schema": ["main.pi"],
    "location": ["not a uri"],
    "tables": ["pi_nothing"],
    "uc register host": ["not a url", "https://me:pa55word@adb.example.net"],
    "emulator now": ["yesterday-ish"],
    "emulator profile": ["no-such-profile"],
}
NOT_FOR: dict[tuple[str, str], set[str]] = {}
# What no check before the server starts can see: --host and --log-level are only read by uvicorn as the
# emulator's server starts (the server-starting path); every other emulator option is covered.
SERVER_ONLY = {("emulator", "host"), ("emulator", "log_level")}
# The doctor's job is to report every step on stdout: a bad option is its failed "settings" step.
REPORTS_ON_STDOUT = {"doctor"}


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def _options(command: Any) -> Iterator[Any]:
    """Options that take a value; boolean flags (--debug, --force, --frozen ...) take none to get wrong."""
    for param in command.params:
        if param.param_type_name == "option" and not param.is_flag:
            yield param


def _bare(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if typing.get_origin(annotation) is not typing.Literal and len(args) == 1 else annotation


def malformed(command_name: str, param: Any) -> list[str]:
    """Malformed values for one option: empty, of the wrong type, and the option's own telling ones."""
    kind = _bare(param.type_descriptor.annotation)
    values = [""]
    if typing.get_origin(kind) is typing.Literal:
        values.append("not-a-choice")
    elif kind in (int, float):
        values.append("many")
    values += SPECIFIC.get(f"{command_name} {param.name}", SPECIFIC.get(param.name, []))
    return [v for v in values if v not in NOT_FOR.get((command_name, param.name), set())]


@dataclass(frozen=True)
class Case:
    path: tuple[str, ...]
    option: str
    name: str
    value: str
    base: tuple[str, ...]

    def __str__(self) -> str:
        return f"{' '.join(self.path)} {self.option}={self.value!r}"


def _cases() -> list[Case]:
    cases = []
    for path, command in _commands(ROOT):
        command_name = " ".join(path)
        options = list(_options(command))
        for param in options:
            if (command_name, param.name) in SERVER_ONLY:
                continue
            base: list[str] = []
            for other in options:
                if other is not param and other.name in BASE and (other.required or other.name in ALWAYS):
                    base += [other.opts[0], BASE[other.name]]
            option = next(o for o in param.opts if o.startswith("--"))
            cases += [Case(path, option, param.name, v, tuple(base)) for v in malformed(command_name, param)]
    return cases


CASES = _cases()


def test_the_cases_cover_every_command_and_option() -> None:
    """The tree walk found the commands and their options (a walk that found nothing would pass every case)."""
    commands = {" ".join(c.path) for c in CASES}
    assert {"discover", "backfill", "sync", "stream", "af", "events", "view", "status", "optimize", "demo",
            "bundle", "uc register", "emulator"} <= commands
    assert {("status", "--target"), ("stream", "--commit-interval"), ("uc register", "--tables"),
            ("emulator", "--late-share")} <= {(" ".join(c.path), c.option) for c in CASES}


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorSettings(points=20)) as server:
        yield server


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something already listens on: an emulator that wrongly got as far as serving fails at once
    instead of serving for ever (and the test says which option it accepted)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _tree(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
                  for p in root.rglob("*"))


def _fill(arg: str, tmp_path: Path, emulator: EmulatorServer, busy_port: int) -> str:
    return (arg.replace(FILE, str(tmp_path / "notes.txt")).replace(TYPO_TOML, str(tmp_path / "typo.toml"))
            .replace(URL, emulator.url).replace(BUSY_PORT, str(busy_port)))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_malformed_option_is_one_line_and_touches_nothing(
    case: Case, tmp_path: Path, emulator: EmulatorServer, busy_port: int
) -> None:
    (tmp_path / "notes.txt").write_text("a file where a folder should be\n")
    (tmp_path / "typo.toml").write_text('[piflo]\nurl = "http://127.0.0.1:9/piwebapi"\n')
    (tmp_path / "lake").mkdir()
    before = _tree(tmp_path)
    args = [_fill(a, tmp_path, emulator, busy_port) for a in (*case.path, *case.base, case.option, case.value)]

    result = CliRunner().invoke(app, args)

    shown = result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in shown
    assert "panicked" not in shown
    assert result.exit_code in (1, 2), shown
    assert _tree(tmp_path) == before, "the command wrote something"
    names = (case.option, f"'{case.name}'")
    if case.path[0] in REPORTS_ON_STDOUT and result.exit_code == 1:
        failed = [line for line in result.stdout.splitlines() if line.startswith("settings")]
        assert failed, result.stdout
        assert "fail" in failed[0]
        assert any(n in failed[0] for n in names), failed[0]
        return
    assert result.stdout == "", "a malformed option must stop the command before it prints a result"
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not line.startswith(("Usage: ", "Try '"))]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: " if result.exit_code == 1 else "Error: "), lines[0]
    assert any(n in lines[0] for n in names), lines[0]
    assert "pa55word" not in shown
