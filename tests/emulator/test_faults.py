"""Fault injection observed by real clients: status faults in-process, dropped and slow bodies over loopback."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime

import httpx2
import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from starlette.testclient import TestClient

from piflow.emulator import AuthSettings, EmulatorSettings, FaultSettings, create_app, state_of
from piflow.emulator.faults import plan
from piflow.emulator.server import EmulatorServer

PROBE = "/piwebapi/_probe"
ADMIN_PROBE = "/_emulator/_probe"
BODY = b'{"Data":"' + b"0123456789" * 4000 + b'"}'  # 40 kB: big enough to be cut or trickled

MakeClient = Callable[..., TestClient]


async def _probe() -> Response:
    return Response(BODY, media_type="application/json")


def with_probes(app: FastAPI) -> FastAPI:
    # Routes of our own, so that these tests do not depend on other route modules.
    app.add_api_route(PROBE, _probe, methods=["GET"])
    app.add_api_route(ADMIN_PROBE, _probe, methods=["GET"])
    return app


def make_settings(seed: int = 3, mode: str = "anonymous", **faults: object) -> EmulatorSettings:
    return EmulatorSettings(seed=seed, points=10, now=datetime(2026, 1, 1, tzinfo=UTC), frozen=True,
                            auth=AuthSettings(mode=mode),  # type: ignore[arg-type]
                            faults=FaultSettings(**faults))  # type: ignore[arg-type]


@pytest.fixture
def client_for() -> Iterator[MakeClient]:
    with ExitStack() as stack:
        def make(seed: int = 3, mode: str = "anonymous", client: tuple[str, int] = ("10.0.0.1", 5000),
                 **faults: object) -> TestClient:
            app = with_probes(create_app(make_settings(seed, mode, **faults)))
            return stack.enter_context(TestClient(app, client=client))

        yield make


def statuses(c: TestClient, n: int, path: str = PROBE) -> list[int]:
    return [c.get(path).status_code for _ in range(n)]


# ---- status faults, in-process -------------------------------------------------------------------------------

def test_error_rate_is_reproducible_from_the_seed(client_for: MakeClient) -> None:
    first = statuses(client_for(seed=3, error_rate=0.4), 60)
    again = statuses(client_for(seed=3, error_rate=0.4), 60)
    other = statuses(client_for(seed=4, error_rate=0.4), 60)
    assert first == again
    assert first != other
    assert set(first) <= {200, 500, 502, 503}
    assert 200 in first
    assert set(first) - {200}
    assert 10 <= sum(s != 200 for s in first) <= 40  # about 40 % of 60


def test_error_shapes(client_for: MakeClient) -> None:
    c = client_for(error_rate=1.0)
    seen: dict[int, httpx2.Response] = {}
    for _ in range(100):
        r = c.get(PROBE)
        seen.setdefault(r.status_code, r)
        if len(seen) == 3:
            break
    assert set(seen) == {500, 502, 503}
    assert seen[500].json()["Errors"]
    assert seen[503].json()["Errors"]
    assert seen[503].headers["Retry-After"] == "1"
    assert seen[502].headers["content-type"].startswith("text/html")  # what a proxy in front of PI sends
    assert b"502" in seen[502].content


def test_faults_and_requests_are_counted(client_for: MakeClient) -> None:
    c = client_for(error_rate=0.5)
    got = statuses(c, 40)
    c.get(ADMIN_PROBE)  # exempt: neither counted nor faulted
    stats = state_of(c.app).stats  # type: ignore[arg-type]
    assert stats.requests == 40
    assert stats.faults == sum(s != 200 for s in got)


def test_refused_requests_are_counted_too(client_for: MakeClient) -> None:
    c = client_for(mode="bearer")
    assert statuses(c, 3) == [401, 401, 401]
    assert state_of(c.app).stats.requests == 3  # type: ignore[arg-type]


def test_exempt_paths_and_batch_children_get_no_faults(client_for: MakeClient) -> None:
    c = client_for(error_rate=1.0)
    assert statuses(c, 10, ADMIN_PROBE) == [200] * 10
    assert [c.get(PROBE, headers={"X-Emulator-Batch-Child": "1"}).status_code for _ in range(10)] == [200] * 10
    assert state_of(c.app).stats.requests == 0  # type: ignore[arg-type]
    assert state_of(c.app).stats.faults == 0  # type: ignore[arg-type]
    custom = client_for(error_rate=1.0, exempt_paths=("/piwebapi/_probe",))
    assert statuses(custom, 5) == [200] * 5


def test_exempt_requests_do_not_shift_the_fault_sequence(client_for: MakeClient) -> None:
    plain = client_for(error_rate=0.5)
    expected = statuses(plain, 30)
    mixed = client_for(error_rate=0.5)
    got = []
    for _ in range(30):
        mixed.get(ADMIN_PROBE)
        mixed.get(PROBE, headers={"X-Emulator-Batch-Child": "1"})
        got.append(mixed.get(PROBE).status_code)
    assert got == expected


def test_rate_limit_per_client_address(client_for: MakeClient) -> None:
    c = client_for(rate_limit_rps=0.01)  # one request, then one per 100 s
    assert c.get(PROBE).status_code == 200
    r = c.get(PROBE)
    assert r.status_code == 429
    assert r.json() == {"Errors": ["Rate limit was reached"]}
    assert int(r.headers["Retry-After"]) >= 1
    assert state_of(c.app).stats.faults == 1  # type: ignore[arg-type]
    other = TestClient(c.app, client=("10.0.0.2", 5000))
    assert other.get(PROBE).status_code == 200
    assert c.get(PROBE).status_code == 429


def test_plan_latency_stays_in_its_band() -> None:
    settings = FaultSettings(latency_ms=100, latency_jitter_ms=50)
    latencies = [plan(settings, 7, seq).latency_s for seq in range(1, 201)]
    assert all(0.1 <= x <= 0.15 for x in latencies)
    assert len(set(latencies)) > 100
    assert latencies == [plan(settings, 7, seq).latency_s for seq in range(1, 201)]


def test_plan_rates() -> None:
    settings = FaultSettings(error_rate=0.2, drop_rate=0.1)
    plans = [plan(settings, 1, seq) for seq in range(1, 2001)]
    errors = sum(p.error_status is not None for p in plans)
    drops = sum(p.drop for p in plans)
    assert 300 <= errors <= 500
    assert 130 <= drops <= 270
    assert {p.error_status for p in plans} == {None, 500, 502, 503}


# ---- connection faults, over loopback ------------------------------------------------------------------------

@pytest.fixture
def server_for() -> Iterator[Callable[..., EmulatorServer]]:
    with ExitStack() as stack:
        def make(**faults: object) -> EmulatorServer:
            srv = EmulatorServer(make_settings(**faults))
            with_probes(srv.app)
            return stack.enter_context(srv)

        yield make


def test_dropped_connection_is_an_incomplete_body(server_for: Callable[..., EmulatorServer]) -> None:
    srv = server_for(drop_rate=1.0)
    with httpx2.Client() as client, client.stream("GET", srv.base_url + PROBE) as r:
        assert r.status_code == 200
        assert int(r.headers["content-length"]) == len(BODY)
        with pytest.raises(httpx2.RemoteProtocolError):
            r.read()
    assert srv.state.stats.faults == 1


def test_dropped_connection_on_the_wire(server_for: Callable[..., EmulatorServer]) -> None:
    srv = server_for(drop_rate=1.0)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(f"GET {PROBE} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):  # until the server closes the connection
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert f"content-length: {len(BODY)}".encode() in head.lower()
    assert 0 < len(body) < len(BODY)
    assert BODY.startswith(body)


def test_drop_rate_zero_serves_whole_bodies(server_for: Callable[..., EmulatorServer]) -> None:
    srv = server_for(drop_rate=0.0)
    with httpx2.Client() as client:
        assert client.get(srv.base_url + PROBE).content == BODY


def test_slow_body_arrives_in_pieces_and_whole(server_for: Callable[..., EmulatorServer]) -> None:
    srv = server_for(slow_body_ms=150)
    with httpx2.Client(timeout=30) as client, client.stream("GET", srv.base_url + PROBE) as r:
        pieces = list(r.iter_raw())
    assert b"".join(pieces) == BODY
    assert len(pieces) >= 2


def test_slow_body_outlasts_a_short_read_timeout(server_for: Callable[..., EmulatorServer]) -> None:
    """Headers come at once; the rest of the body is held back longer than the client waits for a read."""
    srv = server_for(slow_body_ms=1000)
    timeout = httpx2.Timeout(10.0, read=0.2)
    with httpx2.Client(timeout=timeout) as client, client.stream("GET", srv.base_url + PROBE) as r:
        assert r.status_code == 200
        with pytest.raises(httpx2.ReadTimeout):
            r.read()


def test_latency_outlasts_a_short_timeout(server_for: Callable[..., EmulatorServer]) -> None:
    srv = server_for(latency_ms=10_000)
    with httpx2.Client(timeout=httpx2.Timeout(10.0, read=0.2)) as client, pytest.raises(httpx2.ReadTimeout):
        client.get(srv.base_url + PROBE)
    with httpx2.Client(timeout=httpx2.Timeout(10.0, read=5.0)) as client:
        assert client.get(srv.base_url + ADMIN_PROBE).status_code == 200  # exempt: long before the 10 s latency
