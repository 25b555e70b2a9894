"""Retry timing and request pacing (pure apart from the injected sleep and clock).

Backoff is exponential with *full jitter* (a uniform draw in ``[0, min(cap, base * 2**(n-1))]``), so that
many workers hit by the same 503 do not come back in lock step. A server's ``Retry-After`` is a floor on the
delay: retrying earlier only earns another 429.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
_EPS = 1e-9


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure.

    ``max_attempts`` counts every attempt including the first. Give ``rng`` a seeded ``random.Random`` for
    reproducible delays (tests); by default a module-level generator is used.
    """

    max_attempts: int = 8
    base_s: float = 0.2
    cap_s: float = 30.0
    jitter: bool = True
    rng: random.Random | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_s < 0 or self.cap_s < 0:
            raise ValueError("base_s and cap_s must not be negative")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 = the first attempt failed)."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** max(0, min(attempt - 1, 60)))
        rng = self.rng if self.rng is not None else random
        wait = rng.uniform(0.0, ceiling) if self.jitter else ceiling
        if retry_after is not None and retry_after > 0:
            wait = max(wait, retry_after)
        return min(wait, self.cap_s)

    def should_retry(self, attempt: int) -> bool:
        """True if another attempt is allowed after ``attempt`` attempts have failed."""
        return attempt < self.max_attempts


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date; None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class TokenBucket:
    """Requests-per-second limit shared by every request of one client (politeness towards PI).

    Holds at most ``burst`` tokens (default: one second's worth, at least 1) and refills continuously.
    """

    def __init__(self, rate: float, *, burst: float | None = None, sleep: Sleep = asyncio.sleep,
                 clock: Clock = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = max(1.0, burst if burst is not None else rate)
        self._tokens = self.capacity
        self._sleep = sleep
        self._clock = clock
        self._last = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self) -> None:
        """Wait until one token is available and take it (callers are served in arrival order)."""
        async with self._lock:
            self._refill()
            while self._tokens < 1.0 - _EPS:  # the tolerance stops float dust from spinning on tiny sleeps
                await self._sleep((1.0 - self._tokens) / self.rate)
                self._refill()
            self._tokens = max(0.0, self._tokens - 1.0)
