"""Helpers shared by the emulator's AF, event-frame and batch tests (``tests/emulator``): GET a PI Web API path
in process and reach the AF model behind a test client.

They live here, next to ``tests/rows.py``, because ``tests/emulator`` is not a package its modules could import
from.
"""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from piflow.emulator.af.model import AfModel
from piflow.emulator.app import state_of

API = "/piwebapi"


def af_of(client: TestClient) -> AfModel:
    return state_of(client.app).af  # type: ignore[arg-type]


def get(client: TestClient, url: str, status: int = 200, /, **params: Any) -> Any:
    r = client.get(API + url, params=params)
    assert r.status_code == status, r.text
    return r.json()


def plant_webid(client: TestClient) -> str:
    return str(get(client, "/assetdatabases", path="\\\\PIEMU-AF\\Plant")["WebId"])
