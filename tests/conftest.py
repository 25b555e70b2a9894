"""Every test runs hermetic: no PIFLOW_* variable from the developer's shell (or CI's) reaches the settings, and
the working directory is a scratch folder, so a ./piflow.toml where pytest was started is not read either.

The variables go for the whole session, before any session fixture starts a process that inherits them (the
Spark JVM and its Python workers); the working directory changes per test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def no_piflow_environment() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.upper().startswith("PIFLOW_"):
                mp.delenv(name)
        yield


@pytest.fixture(autouse=True)
def scratch_working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
