"""Fixtures for the CLI tests: a clean environment, a scratch working directory and untouched logging."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The test's own folder as the working directory (tests/conftest.py removed the PIFLOW_* variables): no
    ./piflow.toml but the one the test writes there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes the root logger; put it back so other tests see what they expect."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def write_toml(tmp_path: Path) -> Callable[..., Path]:
    """Write a TOML file (default ./piflow.toml in the test's working directory) and return its path."""

    def write(text: str, name: str = "piflow.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
