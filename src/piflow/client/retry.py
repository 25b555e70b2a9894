"""The one retry path of piflow, and request pacing (pure apart from the injected sleep and clock).

Every loop that tries something again (an HTTP request, the failed items of a ``/batch``, a channel socket, the
stream job's fallbacks and re-reads) goes through :class:`Backoff`, so they agree on three things:

- *what* is retried: a failure whose class is :class:`~piflow.errors.TransientError` (:func:`retriable`). Which
  statuses and transport failures are transient is decided once, where they become exceptions
  (:func:`piflow.client.http.error_for_status`), never by a status code checked at the call site;
- *how long* to wait: exponential backoff with *full jitter* (a uniform draw in
  ``[0, min(cap, base * 2**(n-1))]``), so that many workers hit by the same 503 do not come back in lock step,
  with a server's ``Retry-After`` as a floor (retrying earlier only earns another 429);
- *how* to wait: through the injected sleep (tests record the delays), and not a moment longer once the
  caller's halt event is set (a job that winds down must not sit out a 30 s backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeGuard, TypeVar

from piflow.errors import TransientError

T = TypeVar("T")
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


def retriable(exc: BaseException) -> TypeGuard[TransientError]:
    """Whether a failure is worth another attempt: a class distinction, the same for every caller."""
    return isinstance(exc, TransientError)


def retry_after_of(exc: BaseException) -> float | None:
    """The server's ``Retry-After`` (seconds) that came with a failure, if it sent one."""
    value = getattr(exc, "retry_after", None)
    return float(value) if isinstance(value, int | float) else None


async def wait_unless_halted(seconds: float, halt: asyncio.Event | None = None, sleep: Sleep = asyncio.sleep
                             ) -> bool:
    """Wait ``seconds`` through ``sleep``, ending at once when ``halt`` is set; True if it was (or already is).

    Never loses a cancel (``asyncio.wait_for`` can on Python 3.11): the waits are tasks of their own, cancelled
    and awaited on the way out.
    """
    if halt is None:
        await sleep(max(0.0, seconds))
        return False
    if halt.is_set():
        return True
    if sleep is asyncio.sleep:  # the common case, without a task per wait
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await halt.wait()
        return halt.is_set()
    waits = [asyncio.ensure_future(sleep(max(0.0, seconds))), asyncio.ensure_future(halt.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    return halt.is_set()


class Backoff:
    """The attempts of one operation under a :class:`RetryPolicy`: counts the failures, says whether another
    attempt is worth it and how long to wait first, and waits (through ``sleep``, cut short by ``halt``).

    Loops that need no more than "retry transient failures" call :meth:`run`; loops with more to do per failure
    (a 401 refresh, a socket whose points must be dropped) call :meth:`next_delay` and :meth:`wait` themselves.
    """

    def __init__(self, policy: RetryPolicy, *, sleep: Sleep = asyncio.sleep, halt: asyncio.Event | None = None
                 ) -> None:
        self.policy = policy
        self.failures = 0
        self._sleep = sleep
        self._halt = halt

    @property
    def halted(self) -> bool:
        return self._halt is not None and self._halt.is_set()

    def reset(self) -> None:
        """Start counting again (a socket that delivered a message is healthy again)."""
        self.failures = 0

    def next_delay(self, *failures: BaseException) -> float | None:
        """Count one failed attempt (``failures``: what failed in it) and return the wait before the next one,
        or None when there is to be no next one: a failure is not transient, the attempts are used up, or the
        caller halted. Every failure's ``Retry-After`` is a floor."""
        self.failures += 1
        if not failures or not all(retriable(f) for f in failures) or self.halted:
            return None
        if not self.policy.should_retry(self.failures):
            return None
        hints = [h for h in map(retry_after_of, failures) if h is not None]
        return self.policy.delay(self.failures, max(hints) if hints else None)

    async def wait(self, seconds: float) -> bool:
        """Wait before the next attempt; True if the caller halted (then it should not make one)."""
        return await wait_unless_halted(seconds, self._halt, self._sleep)

    async def run(self, attempt: Callable[[], Awaitable[T]],
                  on_retry: Callable[[TransientError, int], None] | None = None) -> T:
        """``await attempt()`` until it succeeds. A transient failure is retried after a backoff
        (``on_retry(exc, failures)`` is told first); anything else, the last failure once the attempts are used
        up, and the failure during which the caller halted are raised."""
        while True:
            try:
                return await attempt()
            except TransientError as exc:
                delay = self.next_delay(exc)
                if delay is None:
                    raise
                if on_retry is not None:
                    on_retry(exc, self.failures)
                if await self.wait(delay):
                    raise


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
