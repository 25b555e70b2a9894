"""The emulator's shared state: settings, data model, virtual clock, counters and lazily built AF/events."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from piflow.emulator.clock import VirtualClock
from piflow.emulator.model import Model
from piflow.emulator.settings import EmulatorSettings

if TYPE_CHECKING:
    from piflow.emulator.af.eventframes import EventFrameModel
    from piflow.emulator.af.model import AfModel


@dataclass
class Stats:
    """Counters a test or benchmark can read (requests served, values served, faults injected)."""

    requests: int = 0
    values: int = 0
    faults: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, requests: int = 0, values: int = 0, faults: int = 0) -> None:
        with self.lock:
            self.requests += requests
            self.values += values
            self.faults += faults


class EmulatorState:
    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.model = Model(settings.model_config_())
        self.clock = VirtualClock(settings.now, frozen=settings.frozen)
        self.stats = Stats()
        # Points removed at run time (tests of "a point deleted mid-run"): server index, point index.
        self.deleted_points: set[tuple[int, int]] = set()

    @cached_property
    def af(self) -> AfModel:
        from piflow.emulator.af.model import AfModel

        return AfModel(self.settings, self.model, self.deleted_points, lambda: self.eventframes)

    @cached_property
    def eventframes(self) -> EventFrameModel:
        from piflow.emulator.af.eventframes import EventFrameModel

        return EventFrameModel(self.af, self.settings, self.clock)
