"""The emulator's virtual clock.

``--now`` sets the virtual time at start; unless frozen it then runs forward with real time. Tests move it
explicitly with :meth:`VirtualClock.advance` or :meth:`VirtualClock.set`, which is deterministic.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from piflow.pitime import TICKS_PER_SECOND, from_ticks, to_ticks


class VirtualClock:
    def __init__(self, now: datetime, *, frozen: bool = False) -> None:
        self._base_ticks = to_ticks(now)
        self._frozen = frozen
        self._t0 = time.monotonic()
        self._lock = threading.Lock()

    @property
    def frozen(self) -> bool:
        return self._frozen

    def now_ticks(self) -> int:
        with self._lock:
            if self._frozen:
                return self._base_ticks
            return self._base_ticks + int((time.monotonic() - self._t0) * TICKS_PER_SECOND)

    def now(self) -> datetime:
        return from_ticks(self.now_ticks())

    def set(self, now: datetime) -> None:
        with self._lock:
            self._base_ticks = to_ticks(now)
            self._t0 = time.monotonic()

    def advance(self, delta: timedelta) -> None:
        self.set(self.now() + delta)

    def freeze(self, frozen: bool = True) -> None:
        current = self.now()
        with self._lock:
            self._frozen = frozen
        self.set(current)
