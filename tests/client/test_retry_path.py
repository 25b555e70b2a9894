"""The one retry path (piflow.client.retry.Backoff): classification by class, Retry-After as a floor, the injected
sleep, halts, and the same retriable conditions for plain requests, /batch items and channel handshakes.

Plain requests and /batch answers come from scripted ASGI apps: the emulator never answers a batch item with 429
and a Retry-After of its own, which is exactly what these tests need.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest

from piflow.client import PiClient, PiHttp, RetryPolicy
from piflow.client.api import BatchItem
from piflow.client.channels import ChannelClosedError, handshake_error
from piflow.client.http import error_for_status
from piflow.client.retry import Backoff, retriable, wait_unless_halted
from piflow.errors import (
    BadRequestError,
    NetworkError,
    NotFoundError,
    PiApiError,
    RateLimitedError,
    ServerBusyError,
    TransientError,
)
from piflow.jobs.batching import item_error, send_batch, transient_items
from tests.client.conftest import (
    Canned,
    ForeverSleep,
    RawServer,
    RecordingSleep,
    ScriptedApp,
    Seen,
    fast_retry,
    http_reply,
)

pytestmark = pytest.mark.timeout(60)

URL = "http://pi.test/piwebapi"
GOOD = b'{"Items": []}'
RETRIED = [408, 429, 500, 502, 503, 504]
NOT_RETRIED = [400, 404]


def busy(retry_after: float | None = None) -> ServerBusyError:
    return ServerBusyError("busy", status=503, retry_after=retry_after)


# ---- Backoff: what, how long, how ----------------------------------------------------------------------------
def test_next_delay_is_none_for_a_failure_that_is_not_transient() -> None:
    backoff = Backoff(RetryPolicy(max_attempts=5))
    assert backoff.next_delay(NotFoundError("gone", status=404)) is None
    assert backoff.next_delay(busy(), BadRequestError("no", status=400)) is None  # every failure must be transient
    assert backoff.failures == 2  # each call counts the attempt that failed


def test_next_delay_counts_attempts_and_stops_at_max_attempts() -> None:
    backoff = Backoff(RetryPolicy(max_attempts=3, base_s=1.0, cap_s=10.0, jitter=False))
    assert [backoff.next_delay(busy()) for _ in range(3)] == [1.0, 2.0, None]
    backoff.reset()
    assert backoff.next_delay(busy()) == 1.0


def test_the_largest_retry_after_of_an_attempts_failures_is_the_floor() -> None:
    backoff = Backoff(RetryPolicy(base_s=0.001, cap_s=60.0, rng=random.Random(1)))
    limited = RateLimitedError("slow down", status=429, retry_after=5.0)
    assert backoff.next_delay(busy(2.0), limited, busy()) == 5.0
    assert backoff.next_delay(RateLimitedError("x", status=429, retry_after=600.0)) == 60.0  # the cap holds


async def test_run_retries_transient_failures_through_the_injected_sleep() -> None:
    sleeper = RecordingSleep()
    backoff = Backoff(RetryPolicy(max_attempts=4, base_s=0.001, cap_s=30.0, rng=random.Random(2)), sleep=sleeper)
    failures: list[tuple[str, int]] = []
    answers: list[Exception | str] = [busy(), RateLimitedError("x", status=429, retry_after=7.0), "done"]

    async def attempt() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await backoff.run(attempt, lambda exc, n: failures.append((type(exc).__name__, n))) == "done"
    assert failures == [("ServerBusyError", 1), ("RateLimitedError", 2)]
    assert len(sleeper.delays) == 2
    assert sleeper.delays[1] == 7.0


async def test_run_raises_what_is_not_transient_at_once_and_the_last_failure_when_attempts_run_out() -> None:
    sleeper = RecordingSleep()
    calls = 0

    async def not_found() -> None:
        nonlocal calls
        calls += 1
        raise NotFoundError("gone", status=404)

    with pytest.raises(NotFoundError):
        await Backoff(fast_retry(5), sleep=sleeper).run(not_found)
    assert (calls, sleeper.delays) == (1, [])

    async def always_busy() -> None:
        nonlocal calls
        calls += 1
        raise busy()

    calls = 0
    with pytest.raises(ServerBusyError):
        await Backoff(fast_retry(3), sleep=sleeper).run(always_busy)
    assert (calls, len(sleeper.delays)) == (3, 2)


# ---- halts -----------------------------------------------------------------------------------------------------
async def test_a_halt_ends_a_backoff_wait_at_once_and_no_attempt_follows() -> None:
    halt, sleep = asyncio.Event(), ForeverSleep()
    backoff = Backoff(RetryPolicy(max_attempts=1_000_000, base_s=3600.0, cap_s=3600.0, jitter=False), sleep=sleep,
                      halt=halt)
    calls = 0

    async def always_busy() -> None:
        nonlocal calls
        calls += 1
        raise busy()

    task = asyncio.create_task(backoff.run(always_busy))
    await sleep.started.wait()
    halt.set()
    with pytest.raises(ServerBusyError):
        await task  # the wait ended with the halt; a sleep that never ends would time the test out
    assert (calls, sleep.delays, sleep.cancelled) == (1, [3600.0], 1)
    assert backoff.next_delay(busy()) is None  # halted: no further attempt is worth making


async def test_a_halt_already_set_does_not_wait_at_all() -> None:
    halt, sleeper = asyncio.Event(), RecordingSleep()
    halt.set()
    assert await wait_unless_halted(3600.0, halt, sleeper) is True
    assert await wait_unless_halted(3600.0, halt) is True
    assert sleeper.delays == []


async def test_a_wait_with_the_real_sleep_ends_with_the_halt() -> None:
    halt = asyncio.Event()
    waiter = asyncio.create_task(wait_unless_halted(3600.0, halt))
    await asyncio.sleep(0)
    halt.set()
    assert await waiter is True
    assert await wait_unless_halted(0.0, asyncio.Event()) is False  # a wait that ran its course


async def test_cancelling_a_wait_cancels_the_injected_sleep_too() -> None:
    sleep = ForeverSleep()
    waiter = asyncio.create_task(wait_unless_halted(10.0, asyncio.Event(), sleep))
    await sleep.started.wait()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert sleep.cancelled == 1


# ---- /batch items --------------------------------------------------------------------------------------------
def batch_answer(statuses: dict[str, int], retry_after: dict[str, str] | None = None) -> Canned:
    retry_after = retry_after or {}
    doc: dict[str, Any] = {k: {"Status": s, "Headers": {"Retry-After": retry_after[k]} if k in retry_after else {},
                               "Content": {"Items": []} if s < 300 else {"Errors": [f"status {s}"]}}
                           for k, s in statuses.items()}
    return Canned(207, orjson.dumps(doc))


def sent_ids(seen: Seen) -> list[str]:
    return sorted(orjson.loads(seen.body))


BODY = {"a": {"Method": "GET", "Resource": "streams/A/value"}, "b": {"Method": "GET", "Resource": "streams/B/value"},
        "c": {"Method": "GET", "Resource": "streams/C/value"}}


async def test_batch_items_are_retried_after_their_retry_after_through_the_injected_sleep() -> None:
    app = ScriptedApp([batch_answer({"a": 200, "b": 429, "c": 503}, {"b": "7", "c": "3"}),
                       batch_answer({"b": 200, "c": 200})])
    sleeper = RecordingSleep()
    policy = RetryPolicy(max_attempts=4, base_s=0.001, cap_s=60.0, rng=random.Random(5))
    async with PiClient(URL, transport=app.transport(), retry=policy, sleep=sleeper) as pi:
        answers = await send_batch(pi, BODY)
    assert {k: a.status for k, a in answers.items()} == {"a": 200, "b": 200, "c": 200}
    assert [sent_ids(s) for s in app.seen] == [["a", "b", "c"], ["b", "c"]]
    assert sleeper.delays == [7.0]  # the larger Retry-After of the failed items, not a jittered millisecond


async def test_batch_items_that_stay_transient_are_returned_after_the_last_attempt() -> None:
    app = ScriptedApp([batch_answer({"a": 200, "b": 503, "c": 200}), batch_answer({"b": 503})])
    sleeper = RecordingSleep()
    async with PiClient(URL, transport=app.transport(), retry=fast_retry(3), sleep=sleeper) as pi:
        answers = await send_batch(pi, BODY)
    assert answers["b"].status == 503
    assert (len(app.seen), len(sleeper.delays)) == (3, 2)


def test_a_web_exception_inside_a_200_item_is_transient_as_in_a_plain_answer() -> None:
    item = BatchItem(200, content={"WebException": {"StatusCode": 500, "Errors": ["read failed"]}}, id="a")
    assert set(transient_items({"a": item, "b": BatchItem(200, content={}, id="b")})) == {"a"}


# ---- one list of retriable conditions, the same everywhere -------------------------------------------------------
@pytest.mark.parametrize("status", RETRIED + NOT_RETRIED)
def test_a_status_is_retriable_or_not_alike_for_requests_batch_items_and_handshakes(status: int) -> None:
    body = orjson.dumps({"Errors": ["x"]})
    plain = error_for_status(status, ["x"], url=URL)
    item = item_error(BatchItem(status, headers={"Retry-After": "1"}, content={"Errors": ["x"]}, id="a"))
    handshake = handshake_error(status, body, "ws://pi.test/piwebapi/streamsets/channel")
    assert item is not None
    assert [retriable(e) for e in (plain, item, handshake)] == [status in RETRIED] * 3
    if status in RETRIED:  # the same class wherever it was seen (a handshake refused otherwise is "unavailable")
        assert type(plain) is type(item) is type(handshake)


def test_a_dropped_connection_is_retriable_as_a_network_error_or_a_closed_channel() -> None:
    assert retriable(NetworkError("dropped"))
    assert retriable(ChannelClosedError("closed", code=1006))
    assert not retriable(PiApiError("unexpected redirect", status=302))
    assert issubclass(ChannelClosedError, TransientError)


@pytest.mark.parametrize("status", RETRIED + NOT_RETRIED)
async def test_plain_requests_retry_exactly_the_retriable_statuses(status: int) -> None:
    app = ScriptedApp([Canned(status, b'{"Errors": ["x"]}'), Canned(200, GOOD)])
    async with PiHttp(URL, transport=app.transport(), retry=fast_retry(3), sleep=RecordingSleep()) as http:
        if status in RETRIED:
            assert await http.get_json("streams/A/value") == {"Items": []}
        else:
            with pytest.raises(PiApiError):
                await http.get_json("streams/A/value")
    assert len(app.seen) == (2 if status in RETRIED else 1)


@pytest.mark.parametrize("status", RETRIED + NOT_RETRIED)
async def test_batch_items_retry_exactly_the_retriable_statuses(status: int) -> None:
    app = ScriptedApp([batch_answer({"a": 200, "b": status, "c": 200}), batch_answer({"b": 200})])
    async with PiClient(URL, transport=app.transport(), retry=fast_retry(3), sleep=RecordingSleep()) as pi:
        answers = await send_batch(pi, BODY)
    assert len(app.seen) == (2 if status in RETRIED else 1)
    assert answers["b"].status == (200 if status in RETRIED else status)


@pytest.mark.loopback
async def test_a_dropped_connection_is_retried_for_plain_requests_and_batch_calls() -> None:
    batch = orjson.dumps({k: {"Status": 200, "Headers": {}, "Content": {}} for k in BODY})
    for path, reply in (("plain", http_reply(GOOD)), ("batch", http_reply(batch))):
        async with RawServer([http_reply(GOOD), None, reply]) as server:
            async with PiClient(server.url, retry=fast_retry(3), sleep=RecordingSleep()) as pi:
                await pi.http.get_json("system")  # answered once: a dropped connection is now a restart
                if path == "plain":
                    assert await pi.http.get_json("streams/A/value") == {"Items": []}
                else:
                    assert {a.status for a in (await send_batch(pi, BODY)).values()} == {200}
                assert pi.http.retries == 1
            assert server.connections == 3
