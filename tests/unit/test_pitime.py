from datetime import UTC, datetime, timedelta

import pytest

from piflow.pitime import format_ticks, from_ticks, parse_interval, parse_iso_ticks, parse_pi_time, to_ticks

NOW = datetime(2026, 1, 7, 10, 30, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*", NOW),
        ("", NOW),
        ("*-1d", NOW - timedelta(days=1)),
        ("*+2h", NOW + timedelta(hours=2)),
        ("t", datetime(2026, 1, 7, tzinfo=UTC)),
        ("today", datetime(2026, 1, 7, tzinfo=UTC)),
        ("y", datetime(2026, 1, 6, tzinfo=UTC)),
        ("yesterday+8h", datetime(2026, 1, 6, 8, tzinfo=UTC)),
        ("monday", datetime(2026, 1, 5, tzinfo=UTC)),
        ("wed", datetime(2026, 1, 7, tzinfo=UTC)),
        ("jan", datetime(2026, 1, 1, tzinfo=UTC)),
        ("*-1mo", datetime(2025, 12, 7, 10, 30, tzinfo=UTC)),
        ("*-1y", datetime(2025, 1, 7, 10, 30, tzinfo=UTC)),
        ("*-1w", NOW - timedelta(weeks=1)),
        ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T01:00:00+01:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00Z+30m", datetime(2026, 1, 1, 0, 30, tzinfo=UTC)),
    ],
)
def test_parse_pi_time(text: str, expected: datetime) -> None:
    assert parse_pi_time(text, NOW) == expected


@pytest.mark.parametrize("bad", ["soon", "*-1x", "2026-13-01", "t+"])
def test_parse_pi_time_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError, match=r"PI time|ISO|month"):
        parse_pi_time(bad, NOW)


def test_seven_fraction_digits_round_trip() -> None:
    ticks = parse_iso_ticks("2026-01-05T10:00:00.1234567Z")
    assert ticks % 10 == 7  # the 100 ns digit survives in ticks
    assert format_ticks(ticks) == "2026-01-05T10:00:00.1234567Z"
    assert from_ticks(ticks) == datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC)  # truncated to microseconds


def test_format_drops_trailing_zeros() -> None:
    assert format_ticks(to_ticks(datetime(2026, 1, 5, 10, tzinfo=UTC))) == "2026-01-05T10:00:00Z"
    assert format_ticks(parse_iso_ticks("2026-01-05T10:00:00.500Z")) == "2026-01-05T10:00:00.5Z"


def test_offsets_convert_to_utc() -> None:
    assert parse_iso_ticks("2026-01-05T12:00:00+02:00") == parse_iso_ticks("2026-01-05T10:00:00Z")
    assert parse_iso_ticks("2026-01-05T05:30:00-0430") == parse_iso_ticks("2026-01-05T10:00:00Z")


def test_parse_interval() -> None:
    assert parse_interval("1h") == timedelta(hours=1)
    assert parse_interval("30s") == timedelta(seconds=30)
    assert parse_interval("250ms") == timedelta(milliseconds=250)
    with pytest.raises(ValueError, match="interval"):
        parse_interval("1mo")


def test_format_ticks_agrees_with_datetime_everywhere() -> None:
    """The per-day cached formatter against datetime's own ISO text, over random instants (before 1970 too)."""
    import random

    rng = random.Random(5)
    lo, hi = to_ticks(datetime(1900, 1, 1, tzinfo=UTC)), to_ticks(datetime(2200, 1, 1, tzinfo=UTC))
    for _ in range(20_000):
        ticks = rng.randrange(lo, hi)
        if rng.random() < 0.3:
            ticks -= ticks % 10_000_000  # whole seconds: no fraction printed
        expected = from_ticks(ticks).strftime("%Y-%m-%dT%H:%M:%S")
        frac = ticks % 10_000_000
        expected += (f".{frac:07d}".rstrip("0") if frac else "") + "Z"
        assert format_ticks(ticks) == expected
        assert parse_iso_ticks(format_ticks(ticks)) == ticks
