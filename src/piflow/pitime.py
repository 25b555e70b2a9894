"""PI time strings and timestamps (pure).

PI keeps time in 100 ns ticks and prints up to 7 fractional digits; the table contract keeps microseconds.
Internally piflow and the emulator count *ticks since the Unix epoch* (int), so no precision is lost before
the one deliberate truncation to microseconds at the table boundary.

Accepted input, as PI accepts it: ``*`` (now), ``*-1d``, ``t``/``today``, ``y``/``yesterday``, weekday and
month names, ISO-8601 timestamps (``Z`` or offsets, up to 7 fractional digits), each optionally followed by
``+N<unit>``/``-N<unit>`` terms with units ``s m h d w mo y``. An empty string means ``*``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache

TICKS_PER_SECOND = 10_000_000
TICKS_PER_US = 10
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
           "october", "november", "december"]
_OFFSET_RE = re.compile(r"\s*([+-])\s*(\d+(?:\.\d+)?)\s*(mo|y|w|d|h|m|s)\s*", re.IGNORECASE)
_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?",
    re.IGNORECASE,
)


def to_ticks(dt: datetime) -> int:
    """Ticks since the epoch; a naive datetime is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - EPOCH
    return (delta.days * 86400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * TICKS_PER_US


def from_ticks(ticks: int) -> datetime:
    """UTC datetime (microsecond precision: sub-microsecond ticks are truncated)."""
    return EPOCH + timedelta(microseconds=ticks // TICKS_PER_US)


_TICKS_PER_DAY = 86400 * TICKS_PER_SECOND


@lru_cache(maxsize=8192)
def _date_text(day: int) -> str:
    return (EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


def format_ticks(ticks: int) -> str:
    """ISO-8601 UTC as PI prints it: fraction up to 7 digits, trailing zeros dropped.

    The date part is cached per day: the emulator prints millions of timestamps and ``strftime`` was most of
    the cost of each."""
    day, rest = divmod(ticks, _TICKS_PER_DAY)
    seconds, frac = divmod(rest, TICKS_PER_SECOND)
    hours, rest_s = divmod(seconds, 3600)
    minutes, secs = divmod(rest_s, 60)
    base = f"{_date_text(day)}T{hours:02d}:{minutes:02d}:{secs:02d}"
    if frac == 0:
        return base + "Z"
    return f"{base}.{frac:07d}".rstrip("0") + "Z"


def parse_iso_ticks(text: str) -> int:
    """Parse an ISO timestamp (offsets and up to 9 fractional digits) into ticks; ValueError if not ISO."""
    m = _ISO_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}")
    y, mo, d, hh, mm, ss, frac, tz = m.groups()
    dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0), tzinfo=UTC)
    ticks = to_ticks(dt)
    if frac:
        ticks += int((frac + "0000000")[:7])
    if tz and tz.upper() != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = (int(digits[:2]) * 3600 + int(digits[2:]) * 60) * TICKS_PER_SECOND
        ticks -= sign * offset
    return ticks


def _add_months(dt: datetime, months: int) -> datetime:
    month0 = dt.month - 1 + months
    year, month = dt.year + month0 // 12, month0 % 12 + 1
    days_in_month = [31, 29 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 28,
                     31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    return dt.replace(year=year, month=month, day=min(dt.day, days_in_month))


def parse_pi_time(text: str | None, now: datetime, tz: tzinfo = UTC) -> datetime:
    """Resolve a PI time string against ``now``; raises ValueError naming the bad string."""
    raw = (text or "").strip()
    if raw == "":
        return now
    low = raw.lower()
    base: datetime
    rest: str
    local_now = now.astimezone(tz)
    midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    m = _ISO_RE.match(raw)
    if m and m.start() == 0:
        base = from_ticks(parse_iso_ticks(m.group(0)))
        rest = raw[m.end():]
    elif low.startswith("*"):
        base, rest = now, raw[1:]
    elif low.startswith("today"):
        base, rest = midnight, raw[5:]
    elif low.startswith("yesterday"):
        base, rest = midnight - timedelta(days=1), raw[9:]
    elif low.startswith("t") and (len(low) == 1 or low[1] in "+- "):
        base, rest = midnight, raw[1:]
    elif low.startswith("y") and (len(low) == 1 or low[1] in "+- "):
        base, rest = midnight - timedelta(days=1), raw[1:]
    else:
        word = re.match(r"[a-z]+", low)
        name = word.group(0) if word else ""
        day_idx = next((i for i, d in enumerate(_WEEKDAYS) if len(name) >= 3 and d.startswith(name)), None)
        month_idx = next((i for i, d in enumerate(_MONTHS) if len(name) >= 3 and d.startswith(name)), None)
        if day_idx is not None:
            # The most recent such weekday at midnight (today if today is that day).
            back = (local_now.weekday() - day_idx) % 7
            base, rest = midnight - timedelta(days=back), raw[len(name):]
        elif month_idx is not None:
            # The first of that month in the current year, as PI does.
            base, rest = midnight.replace(month=month_idx + 1, day=1), raw[len(name):]
        else:
            raise ValueError(f"cannot parse PI time {text!r}")
    pos = 0
    while pos < len(rest):
        om = _OFFSET_RE.match(rest, pos)
        if not om:
            if rest[pos:].strip() == "":
                break
            raise ValueError(f"cannot parse PI time {text!r}")
        sign = 1 if om.group(1) == "+" else -1
        amount, unit = float(om.group(2)), om.group(3).lower()
        if unit == "mo":
            base = _add_months(base, sign * int(amount))
        elif unit == "y":
            base = _add_months(base, sign * 12 * int(amount))
        else:
            base = base + timedelta(seconds=sign * amount * _UNIT_SECONDS[unit])
        pos = om.end()
    return base.astimezone(UTC)


INTERVAL_EXAMPLES = "a number and a unit such as 30s, 5m, 1.5h or 1d (ms s m h d w; a bare number is seconds)"


def parse_interval(text: str) -> timedelta:
    """A PI interval such as ``1h``, ``30m``, ``1d``, ``15s``; a bare number is seconds (``2`` = ``2s``), as
    people type it for a setting that is a duration. Months and years are not fixed lengths."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(w|d|h|m|s|ms)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"cannot parse interval {text!r}: give {INTERVAL_EXAMPLES}")
    amount, unit = float(m.group(1)), (m.group(2) or "s").lower()
    if unit == "ms":
        return timedelta(milliseconds=amount)
    return timedelta(seconds=amount * _UNIT_SECONDS[unit])


def interval_text(text: str) -> str:
    """``text`` as PI itself accepts an interval: a bare number of seconds gets its unit (``2`` -> ``2s``),
    since PI Web API refuses a number without one. ValueError as :func:`parse_interval`."""
    parse_interval(text)
    clean = text.strip()
    return f"{clean}s" if re.fullmatch(r"\d+(?:\.\d+)?", clean) else clean
