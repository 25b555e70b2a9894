"""Deterministic PI data: the point catalog and recorded values, pure functions of (seed, point, time).

Nothing here is random at request time and nothing is stored: a point's metadata is computed from its
index, and its recorded events in any window are computed from slot numbers. That is what lets the emulator
start at once with 100,000 points, serve the same bytes twice, and answer "what did the server hold for this
point over this range as of that virtual time" for the tests (see ``truth.py``).

Events of a point live on slots ``k`` of its sampling interval ``I`` after ``origin``. Slot ``k`` holds zero
events (about 10 %: compression), one, or two sharing a timestamp (about 0.5 %). Its timestamp is
``origin + k*I + jitter`` with ``jitter < 0.8*I``, so timestamps never decrease. Late events become visible
``delay`` after their timestamp; edited events change value (and become Substituted) ``edit_delay`` after it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from piflow import webids
from piflow.pitime import TICKS_PER_SECOND, format_ticks, to_ticks

U64 = np.uint64
MINUTE = 60 * TICKS_PER_SECOND

# Value kinds as small ints in the arrays.
K_NUMBER, K_STRING, K_TIMESTAMP, K_DIGITAL, K_SYSTEM = 0, 1, 2, 3, 4

SYSTEM_STATES: dict[int, str] = {
    246: "I/O Timeout",
    248: "No Data",
    253: "Pt Created",
    254: "Shutdown",
    255: "Bad Input",
}
_SYSTEM_CODES = np.array([246, 248, 254, 255, 246, 254], dtype=np.int32)

DIGITAL_SETS: dict[str, tuple[str, ...]] = {
    "Modes": ("Auto", "Manual", "Cascade", "Off"),
    "RunStatus": ("Stopped", "Running", "Tripped"),
    "OnOff": ("Off", "On"),
    "AlarmState": ("Normal", "Low", "High", "LowLow", "HighHigh"),
    "ValvePosition": ("Closed", "Opening", "Open", "Closing", "Fault"),
}

POINT_TYPES = ("Float32", "Float64", "Int32", "Digital", "String", "Timestamp")
_TYPE_CODE = {t: i for i, t in enumerate(POINT_TYPES)}
_T_FLOAT32, _T_FLOAT64, _T_INT32, _T_DIGITAL = 0, 1, 2, 3
_KIND_OF_TYPE = np.array([0, 0, 0, 3, 1, 2], dtype=np.int8)  # K_NUMBER x3, K_DIGITAL, K_STRING, K_TIMESTAMP
_TYPE_CUTS = (40, 65, 75, 90, 95, 100)  # cumulative shares in percent
_INTERVALS_S = (15, 30, 60, 120, 300)
_INTERVAL_CUTS = (3, 15, 60, 85, 100)

SITES = ("BRK", "HLD", "MRS", "TGN", "VLC", "OSL", "KRK", "LYN")
EQUIPMENT = ("PMP", "CMP", "HX", "TK", "BLR", "FAN", "VLV", "MTR")

# Per slot within an equipment (5 points each): names by type, so that names within an equipment are unique.
_NUMERIC = (
    ("FLOW", "m3/h", 120.0, 40.0),
    ("PRESSURE", "bar", 6.0, 1.5),
    ("TEMP", "degC", 65.0, 12.0),
    ("LEVEL", "%", 50.0, 30.0),
    ("POWER", "kW", 310.0, 90.0),
)
_INTEGER = (("STARTS", "count"), ("CYCLES", "count"), ("ALARMS", "count"), ("RUNHOURS", "h"), ("TRIPS", "count"))
_DIGITAL = (("MODE", "Modes"), ("STATUS", "RunStatus"), ("ALARM", "AlarmState"), ("VALVE", "ValvePosition"),
            ("BREAKER", "OnOff"))
_STRING = ("BATCHID", "OPERATOR", "RECIPE", "PRODUCT", "COMMENT")
_TIMESTAMP = ("LASTSTART", "LASTSTOP", "LASTCAL", "LASTMAINT", "LASTTRIP")
_STRING_WORDS = ("Batch", "Operator", "Recipe", "Product", "Note")

_NAME_RE = re.compile(r"^[A-Z]{3}\.A\d\.[A-Z]{2,3}(\d{6})\.[A-Z]+$")


_C0, _C1, _C2 = U64(0x9E3779B97F4A7C15), U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB)
_S30, _S27, _S31 = U64(30), U64(27), U64(31)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64 finaliser over an array.

    uint64 array arithmetic wraps silently (only numpy scalars warn on overflow), which is what we want; no
    ``errstate`` context here, it costs more than the arithmetic on the small arrays the emulator uses.
    """
    z = x + _C0
    z = (z ^ (z >> _S30)) * _C1
    z = (z ^ (z >> _S27)) * _C2
    return z ^ (z >> _S31)


def mix1(*parts: int) -> int:
    """Hash a few ints into one uint64 (deterministic across processes, unlike ``hash``)."""
    acc = np.array([0], dtype=np.uint64)
    for p in parts:
        acc = _mix(acc ^ np.array([p & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    return int(acc[0])  # arrays of one element: wrapping arithmetic without overflow warnings


def _pick(h: int, cuts: tuple[int, ...]) -> int:
    r = h % 100
    return next(i for i, c in enumerate(cuts) if r < c)


@dataclass(frozen=True)
class ModelConfig:
    """Everything the data depends on. Two emulators with equal configs serve equal data."""

    seed: int = 7
    point_count: int = 1000  # points per data server
    data_servers: int = 1
    server_prefix: str = "PIEMU"
    origin: datetime = field(default_factory=lambda: datetime(2020, 1, 1, tzinfo=UTC))
    late_share: float = 0.02
    late_max_minutes: int = 30
    edit_share: float = 0.01
    edit_min_minutes: int = 10
    edit_max_minutes: int = 120

    @property
    def origin_ticks(self) -> int:
        return to_ticks(self.origin)


@dataclass(frozen=True)
class DataServer:
    index: int
    name: str
    guid: uuid.UUID

    @property
    def path(self) -> str:
        return f"\\\\{self.name}"

    @property
    def webid(self) -> str:
        return webids.full_object("DS", self.guid, self.name)


@dataclass(frozen=True)
class PointSpec:
    """One PI point's metadata and value parameters (all derived from seed, server and index)."""

    server: DataServer
    index: int
    name: str
    point_type: str
    units: str
    digital_set: str | None
    interval_ticks: int
    base: float
    amplitude: float
    period_s: float
    phase: float
    descriptor: str
    hash: int

    @property
    def point_id(self) -> int:
        return self.index + 1

    @property
    def path(self) -> str:
        return f"\\\\{self.server.name}\\{self.name}"

    @property
    def webid(self) -> str:
        return webids.full_point(self.server.guid, self.point_id, self.path)

    @property
    def path_webid(self) -> str:
        return webids.path_only("DP", self.path)

    @property
    def step(self) -> bool:
        return self.point_type not in ("Float32", "Float64")

    @property
    def span(self) -> float:
        return 100.0 if self.point_type in ("Digital", "String", "Timestamp") else round(self.amplitude * 4, 3)

    @property
    def zero(self) -> float:
        if self.point_type in ("Digital", "String", "Timestamp"):
            return 0.0
        return round(self.base - self.amplitude * 2, 3)

    def state_names(self) -> tuple[str, ...]:
        return DIGITAL_SETS[self.digital_set] if self.digital_set else ()


@dataclass
class Events:
    """Recorded events of one point, oldest first, as parallel arrays."""

    point: PointSpec
    ticks: npt.NDArray[np.int64]
    kind: npt.NDArray[np.int8]
    number: npt.NDArray[np.float64]  # K_NUMBER values (NaN otherwise)
    code: npt.NDArray[np.int32]  # digital or system state code (-1 otherwise)
    good: npt.NDArray[np.bool_]
    questionable: npt.NDArray[np.bool_]
    substituted: npt.NDArray[np.bool_]
    annotated: npt.NDArray[np.bool_]
    variant: npt.NDArray[np.uint64]  # per-event hash the string values are made from

    def __len__(self) -> int:
        return int(self.ticks.shape[0])

    def take(self, sel: npt.NDArray[np.int64] | slice) -> Events:
        return Events(
            self.point, self.ticks[sel], self.kind[sel], self.number[sel], self.code[sel], self.good[sel],
            self.questionable[sel], self.substituted[sel], self.annotated[sel], self.variant[sel],
        )

    def string_value(self, i: int) -> str:
        """The value of a String or Timestamp point's event i (only meaningful for those kinds)."""
        v = int(self.variant[i])
        if self.kind[i] == K_TIMESTAMP:
            back = (v % (30 * 86400)) * TICKS_PER_SECOND
            return format_ticks(int(self.ticks[i]) - back - (int(self.ticks[i]) % TICKS_PER_SECOND))
        word = _STRING_WORDS[self.point.index % 5]
        return f"{word} {self.point.name[-3:]}-{v % 100000:05d}"

    def state_name(self, i: int) -> str:
        c = int(self.code[i])
        if self.kind[i] == K_SYSTEM:
            return SYSTEM_STATES[c]
        return self.point.state_names()[c]


class Model:
    """The catalog of data servers and points, and their recorded events."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.servers = [
            DataServer(i, f"{config.server_prefix}{i + 1:02d}", uuid.UUID(int=mix1(config.seed, 0xD5, i) << 64
                                                                          | mix1(config.seed, 0xD6, i)))
            for i in range(config.data_servers)
        ]
        self._point = lru_cache(maxsize=200_000)(self._make_point)
        # A streamset call names each point by WebID; parsing one (base64, path, name lookup) was ~10% of the
        # emulator's CPU for a sync of 10,000 points. The model's points never change, so hits are kept.
        self._by_webid = lru_cache(maxsize=400_000)(self._point_by_webid)
        # Events deleted at run time (tests): (server, point) -> [(timestamp ticks, virtual time of the delete)].
        self._deleted: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def delete_events(self, p: PointSpec, ticks: Sequence[int], at_ticks: int) -> None:
        """Delete every event of ``p`` at these timestamps from virtual time ``at_ticks`` on (an operator
        removing bad data in PI); reads as of an earlier time still see them."""
        self._deleted.setdefault((p.server.index, p.index), []).extend((int(t), at_ticks) for t in ticks)

    def _without_deleted(self, ev: Events, asof_ticks: int) -> Events:
        gone = [t for t, at in self._deleted.get((ev.point.server.index, ev.point.index), ()) if at <= asof_ticks]
        if not gone or len(ev) == 0:
            return ev
        return ev.take(np.nonzero(~np.isin(ev.ticks, np.array(gone, dtype=np.int64)))[0])

    # ---- catalog -------------------------------------------------------------------------------------
    def server(self, index: int = 0) -> DataServer:
        return self.servers[index]

    def server_by_name(self, name: str) -> DataServer | None:
        return next((s for s in self.servers if s.name.upper() == name.upper()), None)

    def point(self, server: int, index: int) -> PointSpec:
        if not 0 <= index < self.config.point_count:
            raise IndexError(index)
        return self._point(server, index)

    def _make_point(self, server: int, index: int) -> PointSpec:
        h = mix1(self.config.seed, server, index)
        ptype = POINT_TYPES[_pick(h, _TYPE_CUTS)]
        interval_s = _INTERVALS_S[_pick(h >> 8, _INTERVAL_CUTS)]
        equipment, slot = divmod(index, 5)
        site = SITES[(equipment // 400) % len(SITES)]
        area = (equipment // 40) % 10
        kind = EQUIPMENT[(equipment // 4) % len(EQUIPMENT)]
        units = ""
        digital_set: str | None = None
        base, amp = 0.0, 1.0
        if ptype in ("Float32", "Float64"):
            meas, units, base, amp = _NUMERIC[slot]
        elif ptype == "Int32":
            meas, units = _INTEGER[slot]
            base, amp = 1000.0, 50.0
        elif ptype == "Digital":
            meas, digital_set = _DIGITAL[slot]
        elif ptype == "String":
            meas = _STRING[slot]
        else:
            meas = _TIMESTAMP[slot]
        name = f"{site}.A{area}.{kind}{equipment:06d}.{meas}"
        descriptor = f"{meas.title()} of {kind} {equipment} in area {area} at {site}"
        return PointSpec(
            server=self.servers[server], index=index, name=name, point_type=ptype, units=units,
            digital_set=digital_set, interval_ticks=interval_s * TICKS_PER_SECOND, base=base, amplitude=amp,
            period_s=float(3600 * (1 + (h >> 16) % 24)), phase=((h >> 24) % 628) / 100.0,
            descriptor=descriptor, hash=h,
        )

    def find_point(self, server: int, name: str) -> PointSpec | None:
        """Look a point up by tag name (case-insensitive) without building the whole catalog."""
        m = _NAME_RE.match(name.upper())
        if not m:
            return None
        equipment = int(m.group(1))
        for slot in range(5):
            idx = equipment * 5 + slot
            if idx >= self.config.point_count:
                break
            p = self.point(server, idx)
            if p.name.upper() == name.upper():
                return p
        return None

    def point_by_path(self, path: str) -> PointSpec | None:
        parts = path.lstrip("\\").split("\\")
        if len(parts) != 2:
            return None
        srv = self.server_by_name(parts[0])
        return self.find_point(srv.index, parts[1]) if srv else None

    def point_by_webid(self, webid: str) -> PointSpec | None:
        return self._by_webid(webid)

    def _point_by_webid(self, webid: str) -> PointSpec | None:
        parsed = webids.parse_marked(webid, "DP")
        if parsed is None or parsed.path is None:
            return None
        p = self.point_by_path(parsed.path)
        if p is None:
            return None
        if parsed.kind_code == "F" and (parsed.guid != p.server.guid or parsed.point_id != p.point_id):
            return None
        return p

    # ---- recorded values ---------------------------------------------------------------------------------
    def events(self, p: PointSpec, start_ticks: int, end_ticks: int, asof_ticks: int) -> Events:
        """Events with start <= t <= end that the server holds at virtual time ``asof`` (oldest first)."""
        return self.events_many([p], start_ticks, end_ticks, asof_ticks)[0]

    def events_many(self, points: Sequence[PointSpec], start_ticks: int, end_ticks: int, asof_ticks: int
                    ) -> list[Events]:
        """:meth:`events` of many points over one window, computed in one pass.

        Every step is elementwise over the slots of all points together (each slot carries its point's
        parameters), so a call costs about the same for one point as for a hundred short windows: numpy's
        per-call overhead, not the arithmetic, is what dominates short windows.
        """
        cfg = self.config
        end_ticks = min(end_ticks, asof_ticks)
        n_points = len(points)
        if n_points == 0:
            return []
        intervals = np.array([p.interval_ticks for p in points], dtype=np.int64)
        if end_ticks < start_ticks:
            return [empty_events(p) for p in points]
        firsts = np.maximum(0, (start_ticks - cfg.origin_ticks) // intervals)
        lasts = (end_ticks - cfg.origin_ticks) // intervals
        counts = np.maximum(0, lasts - firsts + 1)
        total = int(counts.sum())
        if total == 0:
            return [empty_events(p) for p in points]
        owner = np.repeat(np.arange(n_points), counts)
        offsets = np.cumsum(counts) - counts
        k = (np.arange(total) - offsets[owner] + firsts[owner]).astype(np.uint64)
        hashes = np.array([p.hash for p in points], dtype=np.uint64)
        h = _mix(k ^ hashes[owner])
        present = (h % U64(1000)) >= U64(100)
        k, h, owner = k[present], h[present], owner[present]
        dup = ((h >> U64(20)) % U64(1000)) < U64(5)
        reps = np.where(dup, 2, 1)
        k, h, owner = np.repeat(k, reps), np.repeat(h, reps), np.repeat(owner, reps)
        sub = np.zeros(k.shape[0], dtype=np.uint64)
        if dup.any():
            starts = np.cumsum(reps) - reps
            sub[starts[dup] + 1] = 1
        # Timestamp: slot start + jitter, at whole-second, millisecond or 100 ns precision.
        interval = intervals[owner]
        jitter_mod = np.array([int(p.interval_ticks * 0.8) for p in points], dtype=np.uint64)[owner]
        jitter = ((h >> U64(10)) % jitter_mod).astype(np.int64)
        prec = ((h >> U64(40)) % U64(10)).astype(np.int64)
        raw = np.int64(cfg.origin_ticks) + k.astype(np.int64) * interval + jitter
        ticks = np.where(prec == 0, raw - raw % TICKS_PER_SECOND,
                         np.where(prec == 1, raw, raw - raw % 10_000)).astype(np.int64)
        # A second event at the same timestamp gets its own hash.
        h2 = _mix(h ^ (sub * U64(0x5BD1E995) + U64(1)))
        # Late arrival: visible only delay after the timestamp.
        late = ((h2 >> U64(3)) % U64(10_000)) < U64(int(cfg.late_share * 10_000))
        delay = np.where(late, (1 + (h2 >> U64(17)) % U64(max(1, cfg.late_max_minutes))).astype(np.int64) * MINUTE,
                         0)
        visible = (ticks >= start_ticks) & (ticks <= end_ticks) & (ticks + delay <= asof_ticks)
        if not visible.all():
            keep = np.nonzero(visible)[0]
            ticks, h, h2, owner = ticks[keep], h[keep], h2[keep], owner[keep]
        n = ticks.shape[0]
        # Edits: after edit_delay the value is replaced and flagged Substituted.
        edit = ((h2 >> U64(29)) % U64(10_000)) < U64(int(cfg.edit_share * 10_000))
        span = max(1, cfg.edit_max_minutes - cfg.edit_min_minutes)
        edit_at = ticks + (cfg.edit_min_minutes + ((h2 >> U64(41)) % U64(span)).astype(np.int64)) * MINUTE
        edited = edit & (edit_at <= asof_ticks)
        variant = np.where(edited, _mix(h2 ^ U64(0xED17)), h2) if edited.any() else h2

        system = ((h >> U64(30)) % U64(1000)) < U64(5)
        questionable = (((h2 >> U64(7)) % U64(1000)) < U64(10)) & ~system
        annotated = ((h2 >> U64(13)) % U64(1000)) < U64(3)
        substituted = edited | ((((h2 >> U64(23)) % U64(1000)) < U64(2)) & ~system)
        good = ~system
        ptype = np.array([_TYPE_CODE[p.point_type] for p in points], dtype=np.int8)[owner]
        kind = _KIND_OF_TYPE[ptype]
        number = np.full(n, np.nan, dtype=np.float64)
        numeric = ptype <= _T_INT32
        if numeric.any():
            sel = np.nonzero(numeric)[0]
            o = owner[sel]
            base = np.array([p.base for p in points])[o]
            amp = np.array([p.amplitude for p in points])[o]
            period = np.array([p.period_s for p in points])[o]
            phase = np.array([p.phase for p in points])[o]
            t_s = ticks[sel].astype(np.float64) / TICKS_PER_SECOND
            noise = ((variant[sel] >> U64(11)).astype(np.float64) / float(1 << 53)) - 0.5
            v = base + amp * np.sin(2 * np.pi * t_s / period + phase) + amp * 0.1 * noise
            t = ptype[sel]
            number[sel] = np.where(t == _T_INT32, np.round(v), np.where(t == _T_FLOAT32, np.round(v, 3), v))
        code = np.full(n, -1, dtype=np.int32)
        digital = ptype == _T_DIGITAL
        if digital.any():
            sel = np.nonzero(digital)[0]
            n_states = np.array([max(1, len(p.state_names())) for p in points], dtype=np.uint64)[owner[sel]]
            code[sel] = ((variant[sel] >> U64(5)) % n_states).astype(np.int32)
        if system.any():
            kind = np.where(system, K_SYSTEM, kind).astype(np.int8)
            number = np.where(system, np.nan, number)
            code = np.where(system, _SYSTEM_CODES[((h >> U64(33)) % U64(len(_SYSTEM_CODES))).astype(np.int64)],
                            code).astype(np.int32)
        bounds = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n_points))])
        out = [
            Events(p, ticks[a:b], kind[a:b], number[a:b], code[a:b], good[a:b], questionable[a:b],
                   substituted[a:b], annotated[a:b], variant[a:b])
            for p, a, b in zip(points, bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
        ]
        if self._deleted:
            out = [self._without_deleted(ev, asof_ticks) for ev in out]
        return out


def empty_events(p: PointSpec) -> Events:
    """No events of ``p`` (the arrays typed as :meth:`Model.events` returns them)."""
    e64 = np.zeros(0, dtype=np.int64)
    eb = np.zeros(0, dtype=np.bool_)
    return Events(p, e64, np.zeros(0, dtype=np.int8), np.zeros(0, dtype=np.float64),
                  np.zeros(0, dtype=np.int32), eb, eb, eb, eb, np.zeros(0, dtype=np.uint64))
