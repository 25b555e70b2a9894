"""Pure parts of the client: backoff, Retry-After, pacing, URL handling, error translation, body checks."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest

from piflow.client.api import BatchItem, pi_time, split_point_path
from piflow.client.http import (
    check_raw,
    display_url,
    error_for_status,
    errors_of,
    normalise_base_url,
    parse_json,
)
from piflow.client.retry import RetryPolicy, TokenBucket, parse_retry_after
from piflow.errors import (
    AuthError,
    BadRequestError,
    BadResponseError,
    ConfigError,
    ConflictError,
    NotFoundError,
    PiApiError,
    RateLimitedError,
    ServerBusyError,
    TooManyItemsError,
    TransientError,
)

pytestmark = pytest.mark.timeout(30)


# ---- RetryPolicy -----------------------------------------------------------------------------------------------
def test_backoff_without_jitter_doubles_until_the_cap() -> None:
    policy = RetryPolicy(base_s=0.2, cap_s=1.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0])


def test_full_jitter_stays_under_the_exponential_ceiling_and_is_reproducible() -> None:
    a = RetryPolicy(base_s=0.5, cap_s=4.0, rng=random.Random(42))
    b = RetryPolicy(base_s=0.5, cap_s=4.0, rng=random.Random(42))
    delays = [a.delay(n) for n in range(1, 9) for _ in range(20)]
    assert delays == [b.delay(n) for n in range(1, 9) for _ in range(20)]
    ceilings = [min(4.0, 0.5 * 2 ** (n - 1)) for n in range(1, 9) for _ in range(20)]
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) > 100  # really jittered, not a constant


def test_retry_after_is_a_floor_but_the_cap_still_holds() -> None:
    policy = RetryPolicy(base_s=0.01, cap_s=30.0, rng=random.Random(1))
    assert policy.delay(1, retry_after=5.0) == 5.0
    assert policy.delay(1, retry_after=120.0) == 30.0
    assert policy.delay(1, retry_after=None) <= 0.01


def test_should_retry_counts_every_attempt() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.should_retry(n) for n in (1, 2, 3)] == [True, True, False]
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_parse_retry_after_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Mon, 05 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Mon, 05 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None


async def test_token_bucket_paces_requests_at_the_rate() -> None:
    now = [100.0]
    waits: list[float] = []

    async def fake_sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    bucket = TokenBucket(2.0, burst=1.0, sleep=fake_sleep, clock=lambda: now[0])
    for _ in range(5):
        await bucket.acquire()
    # one token at start, then one every 0.5 s: four waits of 0.5 s
    assert sum(waits) == pytest.approx(2.0)
    assert now[0] == pytest.approx(102.0)


async def test_token_bucket_serves_concurrent_callers_one_at_a_time() -> None:
    now = [0.0]

    async def fake_sleep(s: float) -> None:
        now[0] += s
        await asyncio.sleep(0)

    bucket = TokenBucket(10.0, burst=1.0, sleep=fake_sleep, clock=lambda: now[0])
    await asyncio.gather(*(bucket.acquire() for _ in range(11)))
    assert now[0] == pytest.approx(1.0)


# ---- URLs ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "expected"), [
    ("https://pi.example.com", "https://pi.example.com/piwebapi"),
    ("https://pi.example.com/", "https://pi.example.com/piwebapi"),
    ("https://pi.example.com/piwebapi", "https://pi.example.com/piwebapi"),
    ("https://pi.example.com/piwebapi/", "https://pi.example.com/piwebapi"),
    ("https://pi.example.com/PIWebAPI/", "https://pi.example.com/piwebapi"),
    ("http://127.0.0.1:8080/proxy/piwebapi", "http://127.0.0.1:8080/proxy/piwebapi"),
    ("http://127.0.0.1:8080/proxy", "http://127.0.0.1:8080/proxy/piwebapi"),
])
def test_normalise_base_url(given: str, expected: str) -> None:
    assert normalise_base_url(given) == expected


def test_normalise_base_url_rejects_non_http() -> None:
    with pytest.raises(ConfigError, match="'url'"):
        normalise_base_url("ftp://pi.example.com")
    with pytest.raises(ConfigError):
        normalise_base_url("pi.example.com/piwebapi")


def test_display_url_drops_credentials() -> None:
    shown = display_url("https://DOMAIN%5Cuser:hunter2@pi.example.com:8443/piwebapi/points?path=x")
    assert "hunter2" not in shown
    assert "user" not in shown
    assert shown == "https://pi.example.com:8443/piwebapi/points?path=x"
    assert len(display_url("https://h/" + "a" * 5000)) < 600


# ---- error translation -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "errors", "cls"), [
    (400, ["The parameter is wrong."], BadRequestError),
    (400, ["The number of items 200000 is greater than the maximum allowed (150000)."], TooManyItemsError),
    (401, [], AuthError),
    (403, ["Forbidden"], AuthError),
    (404, ["Unknown WebID"], NotFoundError),
    (409, ["Parent failed"], ConflictError),
    (429, ["Rate limit was reached"], RateLimitedError),
    (500, [], ServerBusyError),
    (502, [], ServerBusyError),
    (503, [], ServerBusyError),
    (504, [], ServerBusyError),
    (414, [], TooManyItemsError),
    (405, [], BadRequestError),
])
def test_error_for_status_maps_onto_the_tree(status: int, errors: list[str], cls: type[PiApiError]) -> None:
    exc = error_for_status(status, errors, url="https://h/piwebapi/x", retry_after=3.0)
    assert type(exc) is cls
    assert exc.status == status
    assert exc.errors == errors
    assert "https://h/piwebapi/x" in str(exc)


def test_transient_is_a_class_distinction() -> None:
    assert isinstance(error_for_status(503, []), TransientError)
    assert isinstance(error_for_status(429, []), TransientError)
    assert not isinstance(error_for_status(400, []), TransientError)
    assert not isinstance(error_for_status(501, []), TransientError)
    limited = error_for_status(429, [], retry_after=4.0)
    assert isinstance(limited, RateLimitedError)
    assert limited.retry_after == 4.0


def test_errors_of_reads_pi_oauth_and_junk_bodies() -> None:
    assert errors_of(b'{"Errors": ["a", "b"]}') == ["a", "b"]
    assert errors_of(b'{"error": "invalid_client", "error_description": "bad secret"}') == [
        "invalid_client", "bad secret"]
    assert errors_of(b'{"Message": "An error has occurred."}') == ["An error has occurred."]
    assert errors_of(b"<html><body>Bad Gateway</body></html>") == ["<html><body>Bad Gateway</body></html>"]
    assert errors_of(b"") == []


# ---- body checks -----------------------------------------------------------------------------------------------
def test_check_raw_accepts_json_and_returns_the_same_bytes() -> None:
    body = b'{"Items": [{"Timestamp": "2026-01-05T10:00:00Z", "Value": 1.5}]}'
    assert check_raw(body, 200, "u") is body


@pytest.mark.parametrize("body", [
    b'{"Items": [{"Timestamp": "2026-01-05T10:00:00Z", "Val',
    b"<html><head><title>502 Bad Gateway</title></head></html>",
    b'{"Items": [1, 2,]}',
    b"",
])
def test_check_raw_and_parse_json_reject_non_json(body: bytes) -> None:
    with pytest.raises(BadResponseError):
        check_raw(body, 200, "u")
    with pytest.raises(BadResponseError):
        parse_json(body, 200, "u")


def test_html_page_is_named_as_such() -> None:
    with pytest.raises(BadResponseError, match="HTML page"):
        check_raw(b"<!DOCTYPE html><html>login</html>", 200, "u", "text/html")


def test_web_exception_in_a_200_is_a_bad_response() -> None:
    body = b'{"WebException": {"StatusCode": 502, "Errors": ["Archive went away"]}}'
    for check in (check_raw, parse_json):
        with pytest.raises(BadResponseError, match="WebException") as info:
            check(body, 200, "u")
        assert info.value.errors == ["Archive went away"]


# ---- api helpers -----------------------------------------------------------------------------------------------
def test_pi_time_formats_aware_datetimes_and_passes_strings() -> None:
    assert pi_time(datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC)) == "2026-01-05T10:00:00.123456Z"
    assert pi_time("*-1d") == "*-1d"
    with pytest.raises(ValueError, match="naive"):
        pi_time(datetime(2026, 1, 5))


def test_split_point_path() -> None:
    assert split_point_path("\\\\PIEMU01\\BRK.A0.PMP000000.FLOW") == ("PIEMU01", "BRK.A0.PMP000000.FLOW")
    for bad in ("PIEMU01\\TAG", "\\\\PIEMU01", "\\\\A\\B\\C"):
        with pytest.raises(ValueError, match="point path"):
            split_point_path(bad)


def test_batch_item_raise_for_status_uses_the_same_tree() -> None:
    BatchItem(200, {}, {"Items": []}, "a").raise_for_status()
    with pytest.raises(NotFoundError) as info:
        BatchItem(404, {}, {"Errors": ["Unknown WebID"]}, "b", "https://h/piwebapi/x").raise_for_status(
            point="\\\\S\\T")
    assert info.value.errors == ["Unknown WebID"]
    assert info.value.point == "\\\\S\\T"
    with pytest.raises(RateLimitedError) as limited:
        BatchItem(429, {"Retry-After": "2"}, {"Errors": ["Rate limit was reached"]}, "c").raise_for_status()
    assert limited.value.retry_after == 2.0
    with pytest.raises(BadResponseError):
        BatchItem(200, {}, {"WebException": {"Errors": ["x"]}}, "d").raise_for_status()
