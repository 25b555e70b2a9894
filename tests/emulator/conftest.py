"""Shared fixtures for emulator tests: an app factory and an in-process client (no sockets).

``emulator_app(**settings)`` builds a fresh app with a frozen virtual clock at :data:`NOW` (so answers are
deterministic) and a small catalog; any :class:`EmulatorSettings` field can be overridden.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from piflow.emulator import EmulatorSettings, create_app

NOW = datetime(2026, 1, 1, tzinfo=UTC)

AppFactory = Callable[..., FastAPI]


@pytest.fixture
def emulator_app() -> AppFactory:
    def make(**overrides: Any) -> FastAPI:
        settings: dict[str, Any] = {"points": 200, "seed": 7, "now": NOW, "frozen": True}
        settings.update(overrides)
        return create_app(EmulatorSettings(**settings))

    return make


@pytest.fixture
def client(emulator_app: AppFactory) -> Iterator[TestClient]:
    with TestClient(emulator_app()) as c:
        yield c
