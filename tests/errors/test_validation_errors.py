"""Values piflow refuses before it does anything with them, and the one line that says so.

Settings and Spark options (what users type), and the guards of the pure modules (what a caller inside piflow
could get wrong): each refusal must name what is wrong and, for user input, the setting.
"""

from __future__ import annotations

import asyncio
import io
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from piflow.client.auth import BasicAuth, BearerAuth, OidcClientCredentials
from piflow.client.retry import Backoff, RetryPolicy, TokenBucket, parse_retry_after
from piflow.config import PiflowSettings, checked_target, file_in_the_way, load_settings
from piflow.errors import AuthError, ConfigError, NetworkError, ServerBusyError
from piflow.jobs.batch_direct import json_path
from piflow.jobs.common import resolve_time
from piflow.pi_values import numeric_string
from piflow.planner import make_plan
from piflow.progress import NullProgress, make_progress
from piflow.tables import TableSpec
from piflow.webids import parse

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def config_error(**settings: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(None, settings)
    return str(info.value)


# ---- settings -----------------------------------------------------------------------------------------------


def test_an_empty_point_filter_is_refused_with_an_example() -> None:
    assert config_error(points="  ") == ("setting 'points': is empty: give a PI point name filter, e.g. PLANT1.* "
                                         "(or * for all)")


def test_a_window_of_zero_would_never_move_on() -> None:
    message = config_error(window="0")
    assert message.startswith("setting 'window': must be longer than zero, got '0")
    assert message.endswith("; e.g. 1d (or auto)")


@pytest.mark.parametrize(("setting", "example"), [("safety_lag", "30s"), ("lookback", "1h")])
def test_auto_is_no_interval_for_sync(setting: str, example: str) -> None:
    # `auto` is a window's way of saying "let the planner decide"; sync needs a real span here.
    assert config_error(**{setting: "auto"}) == f"setting '{setting}': must be an interval such as {example}"


def test_an_empty_target_is_refused_with_an_example() -> None:
    with pytest.raises(ConfigError) as info:
        checked_target("   ")
    assert str(info.value) == ("setting 'target': is empty: give a folder or an object-store URI, e.g. ./lake or "
                               "s3://bucket/pi")


def test_a_target_that_cannot_be_looked_at_is_left_to_the_write_to_judge() -> None:
    # A name too long for the file system cannot even be checked (ENAMETOOLONG): no "file in the way" claim.
    too_long = Path("x" * 300) / "lake"
    assert file_in_the_way(too_long) is None
    assert PiflowSettings(target=str(too_long)).target == str(too_long)


def test_an_unparseable_pi_time_names_the_setting() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_time("start", "the day before yesterday", NOW)
    assert str(info.value) == "setting 'start': cannot parse PI time 'the day before yesterday'"


# ---- auth objects -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "setting"), [
    (lambda: BasicAuth("", "secret"), "auth.username"),
    (lambda: BearerAuth(""), "auth.token"),
    (lambda: OidcClientCredentials("", "secret"), "auth.client_id"),
])
def test_an_auth_object_without_its_identity_is_refused(make: Any, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert str(info.value) == f"setting '{setting}': is empty"


# ---- retries and rate limits ------------------------------------------------------------------------------------


class Sleeps:
    def __init__(self, halt: asyncio.Event | None = None) -> None:
        self.delays: list[float] = []
        self.halt = halt

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.halt is not None:
            self.halt.set()


def policy(attempts: int) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, base_s=0.01, cap_s=0.05, rng=random.Random(1))


def test_backoff_retries_transient_failures_then_raises_the_last_one() -> None:
    failures = [ServerBusyError("busy 1", status=503), NetworkError("reset"), ServerBusyError("busy 3", status=503)]
    sleeps = Sleeps()
    told: list[tuple[str, int]] = []

    async def attempt() -> str:
        raise failures.pop(0)

    backoff = Backoff(policy(3), sleep=sleeps)
    with pytest.raises(ServerBusyError) as info:
        asyncio.run(backoff.run(attempt, on_retry=lambda exc, n: told.append((exc.message, n))))
    assert str(info.value) == "HTTP 503: busy 3"
    assert told == [("HTTP 503: busy 1", 1), ("reset", 2)]
    assert len(sleeps.delays) == 2


def test_backoff_gives_up_at_once_on_a_failure_that_is_not_transient() -> None:
    async def attempt() -> str:
        raise AuthError("wrong password", status=401)

    with pytest.raises(AuthError):
        asyncio.run(Backoff(policy(5), sleep=Sleeps()).run(attempt))


def test_backoff_stops_retrying_once_the_caller_halts() -> None:
    calls = 0

    async def run() -> None:
        halt = asyncio.Event()

        async def attempt() -> str:
            nonlocal calls
            calls += 1
            raise ServerBusyError("busy", status=503)

        await Backoff(policy(10), sleep=Sleeps(halt), halt=halt).run(attempt)

    with pytest.raises(ServerBusyError):
        asyncio.run(run())
    assert calls == 1  # halted during the first wait: no second attempt


@pytest.mark.parametrize("value", ["soon", "Fri, 99 Foo 2026 25:61:00 GMT"])
def test_an_unreadable_retry_after_is_no_hint(value: str) -> None:
    assert parse_retry_after(value, NOW) is None


def test_a_rate_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        TokenBucket(0)


# ---- pure modules -----------------------------------------------------------------------------------------------


def test_a_backfill_plan_needs_an_end_after_its_start_and_a_positive_window() -> None:
    with pytest.raises(ValueError, match="backfill end must be after start"):
        make_plan(100, 100)
    with pytest.raises(ValueError, match="window must be positive"):
        make_plan(0, 100, 0)


def test_a_webid_of_a_kind_piflow_cannot_read_is_named() -> None:
    with pytest.raises(ValueError, match="unsupported WebID type 'L'"):
        parse("L1DPabcdefgh")


def test_a_table_spec_must_name_its_own_columns_and_comment_each() -> None:
    commented = pa.field("webid", pa.string(), metadata={"comment": "the point"})
    with pytest.raises(ValueError, match="pi_x: key column 'name' is not in the schema"):
        TableSpec(name="pi_x", schema=pa.schema([commented]), key=("name",), comment="x")
    with pytest.raises(ValueError, match="pi_x: column 'units' has no comment"):
        TableSpec(name="pi_x", schema=pa.schema([commented, pa.field("units", pa.string())]), key=("webid",),
                  comment="x")


@pytest.mark.parametrize(("text", "expected"), [("12.5", 12.5), ("degC", None), ("", None)])
def test_a_number_sent_as_text_is_read_and_anything_else_is_not(text: str, expected: float | None) -> None:
    assert numeric_string(text) == expected


def test_no_progress_bar_on_a_stream_that_cannot_say_whether_it_is_a_terminal() -> None:
    closed = io.StringIO()
    closed.close()  # isatty() on a closed stream raises ValueError
    assert isinstance(make_progress("auto", closed), NullProgress)


@pytest.mark.parametrize(("path", "message"), [
    ("Content.Items", "not a batch JSONPath: 'Content.Items'"),
    ("$.a.Content.Items[-1]", "unsupported JSONPath step 'Items[-1]' in '$.a.Content.Items[-1]'"),
])
def test_a_batch_parameter_piflow_cannot_follow_is_refused(path: str, message: str) -> None:
    from piflow.client.api import BatchItem

    with pytest.raises(ValueError, match="JSONPath") as info:
        json_path(path, {"a": BatchItem(200, content={"Items": []}, id="a")})
    assert str(info.value) == message
