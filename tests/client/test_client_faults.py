"""The client against the emulator's fault injection: in-process and over real loopback sockets (uvicorn).

Each injected fault must cost exactly one retry, so ``http.retries`` is checked against the emulator's own
fault counter. Dropped connections are only tested over loopback: httpx2's ASGITransport asserts that the app
finished its response, so an in-process drop surfaces as an AssertionError from the transport, not as I/O.
"""

from __future__ import annotations

import pytest

from piflow.client import PiHttp
from piflow.emulator import state_of
from piflow.emulator.server import EmulatorServer
from piflow.errors import NetworkError, RateLimitedError
from tests.client.conftest import (
    EMU_URL,
    RecordingSleep,
    emulator_settings,
    emulator_transport,
    fast_retry,
)

pytestmark = pytest.mark.timeout(60)

PROBE = "assetservers"


async def test_server_errors_in_process_each_cost_one_retry() -> None:
    app, transport = emulator_transport(emulator_settings(error_rate=0.3))
    async with PiHttp(EMU_URL, transport=transport, retry=fast_retry(10)) as http:
        for _ in range(30):
            assert isinstance((await http.get_json(PROBE))["Items"], list)
        faults = state_of(app).stats.faults
        assert faults > 3
        assert http.retries == faults
        assert http.requests == 30 + faults


async def test_rate_limit_gives_429_with_retry_after_that_the_client_honours() -> None:
    """0.01 request/s: after the first request the emulator asks for ~100 s; the sleep is recorded, not slept."""
    app, transport = emulator_transport(emulator_settings(rate_limit_rps=0.01))
    sleeper = RecordingSleep()
    policy = fast_retry(3)
    policy = type(policy)(max_attempts=3, base_s=0.001, cap_s=600.0, rng=policy.rng)
    async with PiHttp(EMU_URL, transport=transport, retry=policy, sleep=sleeper) as http:
        await http.get_json(PROBE)
        with pytest.raises(RateLimitedError) as info:
            await http.get_json(PROBE)
    hint = info.value.retry_after
    assert hint is not None
    assert hint >= 99
    assert len(sleeper.delays) == 2
    assert all(d >= 99 for d in sleeper.delays)
    assert info.value.status == 429
    assert state_of(app).stats.faults == 3


@pytest.mark.loopback
async def test_dropped_connections_over_loopback_are_retried() -> None:
    with EmulatorServer(emulator_settings(drop_rate=0.3)) as srv:
        async with PiHttp(srv.url, retry=fast_retry(10)) as http:
            for _ in range(20):
                assert isinstance((await http.get_json(PROBE))["Items"], list)
            assert srv.state.stats.faults > 0
            assert http.retries == srv.state.stats.faults


@pytest.mark.loopback
async def test_a_body_slower_than_the_timeout_is_a_network_error() -> None:
    with EmulatorServer(emulator_settings(slow_body_ms=500)) as srv:
        async with PiHttp(srv.url, retry=fast_retry(2), timeout_s=0.1) as http:
            with pytest.raises(NetworkError, match=r"ReadTimeout|no complete answer within 0\.1 s"):
                await http.get_bytes(PROBE)
            assert http.requests == 2


@pytest.mark.loopback
async def test_timeout_bounds_the_whole_request_not_each_read() -> None:
    # Pieces every 0.12 s: no single read waits 0.3 s, but the body takes longer than that in all.
    with EmulatorServer(emulator_settings(slow_body_ms=120)) as srv:
        async with PiHttp(srv.url, retry=fast_retry(1), timeout_s=0.3) as http:
            with pytest.raises(NetworkError, match=r"no complete answer within 0.3 s \(timeout_s\)"):
                await http.get_bytes(PROBE)
        async with PiHttp(srv.url, retry=fast_retry(1), timeout_s=30) as http:
            assert await http.get_bytes(PROBE)  # the same answer, given time


@pytest.mark.loopback
async def test_server_errors_over_loopback() -> None:
    with EmulatorServer(emulator_settings(error_rate=0.3)) as srv:
        async with PiHttp(srv.url, retry=fast_retry(10)) as http:
            for _ in range(20):
                await http.get_bytes(PROBE)
            assert http.retries == srv.state.stats.faults > 0
