"""docs/configuration.md lists every setting and every `piflow emulator` flag, and nothing that does not exist.

A setting added to PiflowSettings (or a flag added to the emulator command) without a line in the docs fails
here; so does a row left behind for a setting that is gone, or a default in the table that the code no longer
has.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer.main

from piflow.cli import app
from piflow.config import PiflowSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"docs/configuration.md has no '## {title}' section"
    return match.group(1)


def _settings_rows() -> dict[str, str]:
    """setting name -> its default cell, from the table of '## Settings' (`password` / `password_file` is two)."""
    rows: dict[str, str] = {}
    for line in _section("Settings").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([a-z_]+)`", cells[0]):
            rows[name] = cells[1]
    return rows


def test_the_settings_table_has_a_row_for_every_setting_and_no_other() -> None:
    documented = set(_settings_rows())
    fields = set(PiflowSettings.model_fields)
    assert fields - documented == set(), "settings without a row in docs/configuration.md '## Settings'"
    assert documented - fields == set(), "rows in docs/configuration.md for settings PiflowSettings lacks"


def test_each_documented_default_is_the_default_the_code_has() -> None:
    # A default written as a literal (`8`, `30s`, `auto`) must load to what the setting holds when unset;
    # descriptive defaults ("(none)", "first", "discovered") and blanks are prose, not checked.
    defaults = PiflowSettings()
    checked = 0
    for name, cell in _settings_rows().items():
        literal = re.fullmatch(r"`([^`]+)`", cell)
        if literal is None:
            continue
        given: dict[str, Any] = {name: literal.group(1)}
        as_given = PiflowSettings(**given)
        assert getattr(as_given, name) == getattr(defaults, name), (
            f"docs/configuration.md says {name} defaults to {cell}; the code's default is {getattr(defaults, name)!r}")
        checked += 1
    assert checked >= 15  # the table really has literal defaults to compare


def _emulator_options() -> set[str]:
    emulator = typer.main.get_command(app).commands["emulator"]  # type: ignore[attr-defined]
    return {opt for p in emulator.params if p.param_type_name == "option" for opt in p.opts if opt.startswith("--")}


def test_every_emulator_flag_is_documented_and_every_documented_flag_exists() -> None:
    section = _section("The emulator")
    documented = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", section))
    common = {"--help", "--debug"}  # every command has them; the doc's first part describes --debug for all
    flags = _emulator_options() - common
    assert flags - documented == set(), "piflow emulator flags missing from docs/configuration.md '## The emulator'"
    assert documented - flags - common == set(), "flags in docs/configuration.md that piflow emulator lacks"
