"""Settings of ``piflow stream`` (:class:`StreamOptions`): which streaming modes to try, and fixed read limits.

The CLI, the docs and tests build and validate options here without the job's I/O machinery; nothing here
touches the network or a table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from piflow.errors import ConfigError
from piflow.jobs.stream.stats import MODES, StreamStats
from piflow.pitime import parse_interval

READ_GROUP = 100


@dataclass(frozen=True)
class StreamOptions:
    """Settings of ``piflow stream`` that ``PiflowSettings`` does not hold (yet).

    ``modes`` is the order of attempts: channels, then stream updates, then polling ``recorded``; a mode
    is left only when the server shows it is not available. ``gap_lookback_s`` (None: the ``lookback``
    setting) is how far before each watermark a gap read starts, for values that arrive late.
    ``channel_params`` adds query parameters to channel URLs (the emulator's ``_pollSeconds``).
    ``on_status`` is called with the live counters after every commit and status tick (monitoring, tests).
    """

    commit_interval_s: float = 5.0
    points_per_socket: int = 500
    max_url_chars: int = 8000
    heartbeat_rate: int = 5
    dead_after_s: float = 60.0
    reconnect_base_s: float = 0.5
    reconnect_cap_s: float = 30.0
    unavailable_after: int = 3
    modes: tuple[str, ...] = MODES
    updates_interval_s: float = 2.0
    poll_interval_s: float = 30.0
    gap_lookback_s: float | None = None
    status_interval_s: float = 10.0
    channel_params: tuple[tuple[str, str], ...] = ()
    on_status: Callable[[StreamStats], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.commit_interval_s <= 0:
            raise ConfigError("commit_interval", "must be positive")
        if not self.modes or any(m not in MODES for m in self.modes):
            raise ConfigError("stream_modes", f"must be a non-empty sequence of {', '.join(MODES)}")
        if self.points_per_socket < 1:
            raise ConfigError("points_per_socket", "must be at least 1")

    @classmethod
    def from_settings(cls, settings: object, **overrides: Any) -> StreamOptions:
        """Options from settings that may define ``commit_interval`` (an interval such as ``5s``),
        ``points_per_socket``, ``heartbeat_rate``, ``poll_interval`` and ``stream_modes`` (comma-separated);
        ``overrides`` (None values ignored) win. Settings without these fields give the defaults."""
        values: dict[str, Any] = {}
        interval = getattr(settings, "commit_interval", None)
        if interval is not None:
            values["commit_interval_s"] = _seconds_of("commit_interval", interval)
        poll = getattr(settings, "poll_interval", None)
        if poll is not None:
            values["poll_interval_s"] = _seconds_of("poll_interval", poll)
        for name in ("points_per_socket", "heartbeat_rate"):
            if getattr(settings, name, None) is not None:
                values[name] = int(getattr(settings, name))
        modes = getattr(settings, "stream_modes", None)
        if modes:
            values["modes"] = tuple(m.strip().lower() for m in str(modes).split(",") if m.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _seconds_of(setting: str, value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        return parse_interval(str(value)).total_seconds()
    except ValueError as exc:
        raise ConfigError(setting, f"not an interval such as 5s: {value!r}") from exc
