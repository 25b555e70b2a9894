"""Event frames: Batch, Downtime and Alarm frames over the whole timeline, computed per window, never stored.

The timeline from ``settings.origin`` is cut into slots of ``86400 / event_frames_per_day`` seconds (whole
seconds); slot ``k`` holds exactly one frame, a pure function of (seed, k): its start lies inside the slot,
its duration is at most :data:`MAX_DURATION`, it references one equipment element. So any search only
computes the slots of its window plus a look-back of ``MAX_DURATION``, with numpy, and materialises only the
frames it returns. A frame exists once virtual now reaches its start; it is in progress (EndTime
``9999-12-31T23:59:59Z``, values not captured) until now passes its end, which was fixed from the start but
is only revealed then.

Search modes, as implemented (``s``/``e`` are startTime/endTime, "open" means in progress at virtual now):

* ``Overlapped`` (default) and ``None``: start <= e and (open or end >= s).
* ``StartInclusive``: s <= start <= e.  ``EndInclusive``: closed and s <= end <= e.
* ``Inclusive``: s <= start and closed and end <= e (entirely within).
* ``InProgress``: open and s <= start <= e.
* ``BackwardFromStartTime`` / ``ForwardFromStartTime``: start <= s (newest first) / start >= s (oldest first).
* ``BackwardFromEndTime`` / ``ForwardFromEndTime``: closed and end <= s (latest end first) / end >= s.
* ``BackwardInProgress`` / ``ForwardInProgress``: open and start <= s (newest first) / start >= s.

The six directional modes take no endTime and no sort options (as PI); the others sort by ``sortField``
(Name by default, as PI; also StartTime, EndTime with open frames last) and ``sortOrder``.
"""

from __future__ import annotations

import re
import struct
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from piflow import webids
from piflow.emulator.af.catalog import (
    AF_SERVER,
    EVENT_FRAME_TEMPLATES,
    PLANT,
    TEMPLATE_ATTRIBUTES,
    TEMPLATE_CATEGORIES,
    UNIT_NAMES,
    AttrDef,
    equipment_code,
)
from piflow.emulator.af.hashing import child_guid
from piflow.emulator.af.records import AttributeInfo, AttributeRef
from piflow.emulator.model import mix1
from piflow.pitime import TICKS_PER_SECOND, to_ticks
from piflow.wildcards import wildcard

if TYPE_CHECKING:
    from piflow.emulator.af.model import AfModel
    from piflow.emulator.clock import VirtualClock
    from piflow.emulator.settings import EmulatorSettings

U64 = np.uint64
M64 = (1 << 64) - 1
TEMPLATES = EVENT_FRAME_TEMPLATES
SEVERITIES = ("None", "Information", "Warning", "Minor", "Major", "Critical")
IN_PROGRESS_END = "9999-12-31T23:59:59Z"
MAX_DURATION = 8 * 3600 * TICKS_PER_SECOND
DEFAULT_PER_EQUIPMENT_PER_DAY = 2.0
DEFAULT_MAX_PER_DAY = 5000.0
SAFETY = "Safety"
WINDOW_MODES = ("Overlapped", "None", "StartInclusive", "EndInclusive", "Inclusive", "InProgress")
DIRECTIONAL_MODES = ("BackwardFromStartTime", "ForwardFromStartTime", "BackwardFromEndTime", "ForwardFromEndTime",
                     "BackwardInProgress", "ForwardInProgress")
SEARCH_MODES = WINDOW_MODES + DIRECTIONAL_MODES
SORT_FIELDS = ("Name", "StartTime", "EndTime")
SORT_ORDERS = ("Ascending", "Descending")

# Per template: (min, max) duration in seconds; every max is at most MAX_DURATION.
_DUR_MIN = np.array([1800, 600, 60], dtype=np.uint64)
_DUR_SPAN = np.array([8 * 3600 - 1800, 6 * 3600 - 600, 2 * 3600 - 60], dtype=np.uint64)
_PRODUCTS = ("Resin A", "Resin B", "Polymer X", "Solvent S2", "Catalyst C")
_REASONS = ("Planned maintenance", "Breakdown", "No material", "Changeover", "Power loss")
_NAME_RE = re.compile(r"^([A-Za-z]+)-([A-Z]+\d{6,})-(\d{10,})$")
_PATH_RE = re.compile(r"^\\*([^\\]+)\\([^\\]+)\\EVENTFRAMES\[([^\]]+)\](?:\|(.+))?$", re.IGNORECASE)
_ODD = 0x9E3779B97F4A7C15  # multiplying by an odd number is a bijection mod 2**64: the slot looks random
_ODD_INVERSE = pow(_ODD, -1, 1 << 64)
_CHUNK0 = 2048
_CHUNK_MAX = 1 << 20


class TooManyFrames(ValueError):
    """A sorted search would have to hold more frames than ``max_returned_items``."""


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64 finaliser (the same mixing as ``model.py``)."""
    with np.errstate(over="ignore"):
        z = x + U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
        return z ^ (z >> U64(31))


def _mix_int(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


@dataclass(frozen=True)
class FrameQuery:
    """One event-frame search, with times already resolved to ticks and names in canonical spelling."""

    mode: str = "Overlapped"
    start: int = 0
    end: int | None = None
    template: str | None = None
    category: str | None = None
    name_filter: str | None = None
    ref_name_filter: str | None = None
    severities: tuple[str, ...] = ()
    equipment: int | None = None  # only frames referencing this equipment; -1 for none
    sort_field: str = "Name"
    sort_order: str = "Ascending"
    start_index: int = 0
    max_count: int = 1000


@dataclass(frozen=True)
class FrameInfo:
    """A frame as it looks at virtual time ``asof``; ``end`` is None while it is in progress."""

    webid: str
    id: str
    name: str
    description: str
    path: str
    template_name: str
    start: int
    end: int | None
    severity: str
    category_names: tuple[str, ...]
    ref_element_webids: tuple[str, ...]
    ref_element_names: tuple[str, ...]
    is_acknowledged: bool
    can_be_acknowledged: bool
    is_annotated: bool
    is_locked: bool
    are_values_captured: bool
    attributes: dict[str, object]
    slot: int
    equipment: int

    @property
    def in_progress(self) -> bool:
        return self.end is None


@dataclass
class _Slots:
    """Frames of some slots as parallel arrays."""

    k: npt.NDArray[np.int64]
    h: npt.NDArray[np.uint64]
    start: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]
    tmpl: npt.NDArray[np.int64]
    eq: npt.NDArray[np.int64]
    sev: npt.NDArray[np.int64]

    def take(self, sel: npt.NDArray[np.bool_] | npt.NDArray[np.int64]) -> _Slots:
        return _Slots(self.k[sel], self.h[sel], self.start[sel], self.end[sel], self.tmpl[sel], self.eq[sel],
                      self.sev[sel])

    def __len__(self) -> int:
        return int(self.k.shape[0])


def _concat(parts: list[_Slots]) -> _Slots:
    return _Slots(*(np.concatenate([getattr(p, f) for p in parts])
                    for f in ("k", "h", "start", "end", "tmpl", "eq", "sev")))


def _bytes_le(raw: bytes) -> bytes:
    """``uuid.UUID(bytes=raw).bytes_le`` without the object."""
    return raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:]


class EventFrameModel:
    """All event frames of database ``Plant``; see the module docstring."""

    def __init__(self, af: AfModel, settings: EmulatorSettings, clock: VirtualClock) -> None:
        self.af = af
        self.clock = clock
        s = settings
        self.seed = s.seed
        self.equipment = self.af.equipment_count
        rate = s.event_frames_per_day
        if rate is None:
            rate = min(DEFAULT_PER_EQUIPMENT_PER_DAY * self.equipment, DEFAULT_MAX_PER_DAY)
        self.per_day = rate if self.equipment > 0 and rate > 0 else 0.0
        self.slot_seconds = max(1, round(86400 / self.per_day)) if self.per_day else 0
        self.slot = self.slot_seconds * TICKS_PER_SECOND
        self.origin = to_ticks(s.origin)
        self._salt = mix1(self.seed, 0xEF0)
        self._mask = mix1(self.seed, 0xEF1)

    # ---- the deterministic core -------------------------------------------------------------------------
    def _slot_of(self, ticks: int) -> int:
        return (ticks - self.origin) // self.slot

    def _compute(self, k: npt.NDArray[np.int64]) -> _Slots:
        h = _mix(k.astype(np.uint64) ^ U64(self._salt))
        start = (np.int64(self.origin) + k * np.int64(self.slot)
                 + (h % U64(self.slot_seconds)).astype(np.int64) * TICKS_PER_SECOND)
        r = ((h >> U64(20)) % U64(100)).astype(np.int64)
        tmpl = np.where(r < 40, 0, np.where(r < 60, 1, 2)).astype(np.int64)
        dur = _DUR_MIN[tmpl] + (h >> U64(24)) % _DUR_SPAN[tmpl]
        end = start + dur.astype(np.int64) * TICKS_PER_SECOND
        eq = ((h >> U64(40)) % U64(max(1, self.equipment))).astype(np.int64)
        r2 = ((h >> U64(48)) % U64(100)).astype(np.int64)
        alarm = 1 + np.searchsorted(np.array([30, 60, 80, 95]), r2, side="right")
        sev = np.where(tmpl == 0, np.where(r2 < 80, 0, 1), np.where(tmpl == 1, np.where(r2 < 60, 3, 4), alarm))
        return _Slots(k, h, start, end, tmpl, eq, sev.astype(np.int64))

    def _slots(self, k0: int, k1: int) -> _Slots:
        """Slots ``k0 <= k < k1`` (clamped at the origin)."""
        k0 = max(0, k0)
        return self._compute(np.arange(k0, max(k0, k1), dtype=np.int64))

    def _guid(self, k: int, h: int) -> uuid.UUID:
        """The frame's GUID carries its slot (masked) so that any WebID form resolves without an index."""
        return uuid.UUID(bytes=struct.pack("<QQ", ((k ^ self._mask) * _ODD) & M64, h))

    def _slot_from_guid(self, guid: uuid.UUID) -> int:
        return ((int(struct.unpack("<Q", guid.bytes[:8])[0]) * _ODD_INVERSE) & M64) ^ self._mask

    # ---- frames -----------------------------------------------------------------------------------------
    @staticmethod
    def frame_name(template: str, equipment: int, k: int) -> str:
        return f"{template}-{equipment_code(equipment)}-{k:010d}"

    def _materialise(self, b: _Slots, asof: int) -> list[FrameInfo]:
        refs: dict[int, tuple[str, str]] = {}
        owner = webids.encode_guid(self.af.plant_guid())
        out = []
        columns = (b.k.tolist(), b.h.tolist(), b.eq.tolist(), b.tmpl.tolist(), b.sev.tolist(), b.start.tolist(),
                   b.end.tolist())
        for k, h, e, t, sev, start, end in zip(*columns, strict=True):
            if e not in refs:
                refs[e] = self.af.equipment_ref(e)
            ref_webid, ref_name = refs[e]
            closed = end <= asof
            template = TEMPLATES[t]
            name = self.frame_name(template, e, k)
            path = f"\\\\{AF_SERVER}\\{PLANT}\\EventFrames[{name}]"
            # The GUID's bytes straight from _guid's layout: UUID objects were a third of the cost of a frame.
            raw = struct.pack("<QQ", ((k ^ self._mask) * _ODD) & M64, h)
            hx = raw.hex()
            h2 = _mix_int(h ^ 0xA11)
            out.append(FrameInfo(
                webid=f"F1Fm{owner}{webids.b64(_bytes_le(raw))}{webids.encode_path(path)}",
                id=f"{hx[:8]}-{hx[8:12]}-{hx[12:16]}-{hx[16:20]}-{hx[20:]}", name=name,
                description=f"{template} on {equipment_code(e)}", path=path, template_name=template,
                start=start, end=end if closed else None, severity=SEVERITIES[sev],
                category_names=TEMPLATE_CATEGORIES[template] + ((SAFETY,) if sev == 5 else ()),
                ref_element_webids=(ref_webid,), ref_element_names=(ref_name,),
                is_acknowledged=t == 2 and closed and (h2 >> 40) % 4 != 0, can_be_acknowledged=t == 2,
                is_annotated=(h2 >> 44) % 25 == 0, is_locked=t == 0 and closed, are_values_captured=closed,
                attributes=self._values(t, h2, start, end, asof), slot=k, equipment=e,
            ))
        return out

    @staticmethod
    def _values(t: int, h2: int, start: int, end: int, asof: int) -> dict[str, object]:
        if t == 0:
            return {"Product": _PRODUCTS[h2 % len(_PRODUCTS)], "Quantity": round(500 + (h2 >> 8) % 95000 / 10, 1),
                    "Operator": f"Operator {(h2 >> 24) % 40 + 1:02d}"}
        if t == 1:
            # The duration so far while in progress, the final one once closed.
            minutes = (min(end, asof) - start) / (60 * TICKS_PER_SECOND)
            return {"Reason": _REASONS[h2 % len(_REASONS)], "Duration": round(minutes, 2)}
        limit = round(10 + (h2 >> 8) % 900 / 10, 1)
        return {"Limit": limit, "PeakValue": round(limit * (1 + ((h2 >> 24) % 300) / 1000), 2)}

    def frame(self, k: int, asof: int) -> FrameInfo | None:
        """Frame of slot ``k`` as it looks at ``asof`` (None if it has not started yet)."""
        if not self.slot or k < 0 or k > self._slot_of(asof):
            return None
        b = self._compute(np.array([k], dtype=np.int64))
        return self._materialise(b, asof)[0] if int(b.start[0]) <= asof else None

    def frames(self, start: int, end: int, asof: int) -> list[FrameInfo]:
        """Ground truth for tests: every frame overlapping [start, end] as seen at ``asof``, by start time."""
        if not self.slot:
            return []
        b = self._slots(self._slot_of(start - MAX_DURATION), self._slot_of(min(end, asof)) + 1)
        keep = (b.start <= end) & (b.start <= asof) & ((b.end > asof) | (b.end >= start))
        return self._materialise(b.take(keep), asof)

    def _now(self) -> int:
        return self.clock.now_ticks()

    def _k_of(self, webid: str, marker: str) -> tuple[int, str | None] | None:
        """(slot, attribute name or None) named by a frame (``Fm``) or frame attribute (``Ab``) WebID."""
        parsed = webids.parse_marked(webid, marker)
        if parsed is None or not self.slot or self.af.plant_database() is None:
            return None
        if parsed.guid is not None:
            k = self._slot_from_guid(parsed.guid)
            if not 0 <= k <= self._slot_of(self._now()):
                return None
            h = int(self._compute(np.array([k], dtype=np.int64)).h[0])
            if marker == "Fm":
                return (k, None) if self._guid(k, h) == parsed.guid else None
            frame_guid = self._guid(k, h)
            name = next((d.rel for d in self._defs_of_slot(k)
                         if child_guid(self.seed, frame_guid, d.rel) == parsed.guid), None)
            return (k, name) if name else None
        return self._k_of_path(parsed.path or "", want_attribute=marker == "Ab")

    def _k_of_path(self, path: str, *, want_attribute: bool) -> tuple[int, str | None] | None:
        m = _PATH_RE.match(path)
        if not m or m.group(1).upper() != AF_SERVER or m.group(2).upper() != PLANT.upper():
            return None
        if want_attribute != (m.group(4) is not None):
            return None
        nm = _NAME_RE.match(m.group(3).upper())
        if nm is None:
            return None
        k = int(nm.group(3))
        frame = self.frame(k, self._now()) if self.slot else None
        if frame is None or frame.name.upper() != m.group(3).upper():
            return None
        return k, m.group(4)

    def _defs_of_slot(self, k: int) -> tuple[AttrDef, ...]:
        t = int(self._compute(np.array([k], dtype=np.int64)).tmpl[0])
        return TEMPLATE_ATTRIBUTES[TEMPLATES[t]]

    def frame_by_webid(self, webid: str) -> FrameInfo | None:
        found = self._k_of(webid, "Fm")
        return self.frame(found[0], self._now()) if found else None

    def frame_by_path(self, path: str) -> FrameInfo | None:
        if self.af.plant_database() is None or not self.slot:
            return None
        found = self._k_of_path(path.lstrip("\\").upper(), want_attribute=False)
        return self.frame(found[0], self._now()) if found else None

    # ---- frame attributes -------------------------------------------------------------------------------
    def _attr_infos(self, f: FrameInfo) -> list[AttributeInfo]:
        owner = self.af.plant_guid()
        out = []
        for d in TEMPLATE_ATTRIBUTES[f.template_name]:
            guid = child_guid(self.seed, uuid.UUID(f.id), d.rel)
            out.append(AttributeInfo(
                webid=webids.full_object("Ab", guid, f"{f.path}|{d.rel}", owner=owner), id=str(guid), name=d.name,
                description=d.description, path=f"{f.path}|{d.rel}", type=d.type, type_qualifier=d.type_qualifier,
                default_units_name=UNIT_NAMES.get(d.units, d.units), units_abbreviation=d.units,
                data_reference="", config_string="", is_configuration_item=False, is_excluded=False,
                is_hidden=False, is_manual_data_entry=False, has_children=False, category_names=d.categories,
                step=False, element_webid=f.webid, parent_webid=None, template_webid=None, point_webid=None,
                static_value=f.attributes.get(d.rel), owner_is_event_frame=True,
            ))
        return out

    def attributes(self, frame_webid: str) -> list[AttributeInfo] | None:
        f = self.frame_by_webid(frame_webid)
        return self._attr_infos(f) if f else None

    def _attribute(self, found: tuple[int, str | None] | None) -> AttributeInfo | None:
        if found is None or found[1] is None:
            return None
        f = self.frame(found[0], self._now())
        name = found[1].upper()
        return next((a for a in self._attr_infos(f) if a.name.upper() == name), None) if f else None

    def attribute(self, webid: str) -> AttributeInfo | None:
        return self._attribute(self._k_of(webid, "Ab"))

    def attribute_by_path(self, path: str) -> AttributeInfo | None:
        if self.af.plant_database() is None or not self.slot:
            return None
        return self._attribute(self._k_of_path(path.lstrip("\\").upper(), want_attribute=True))

    @staticmethod
    def _ref(a: AttributeInfo) -> AttributeRef:
        return AttributeRef(a.webid, a.name, a.path, a.units_abbreviation, None, a.static_value)

    def resolve_attribute(self, webid: str) -> AttributeRef | None:
        a = self.attribute(webid)
        return self._ref(a) if a else None

    def attribute_refs(self, frame_webid: str) -> list[AttributeRef] | None:
        infos = self.attributes(frame_webid)
        return [self._ref(a) for a in infos] if infos is not None else None

    # ---- search -----------------------------------------------------------------------------------------
    def _filter(self, b: _Slots, q: FrameQuery, asof: int, eq_ok: npt.NDArray[np.bool_] | None,
                name_rx: re.Pattern[str] | None) -> _Slots:
        m = self._mode_mask(b, q, asof)
        if q.template is not None:
            idx = [i for i, t in enumerate(TEMPLATES) if t.upper() == q.template.upper()]
            m &= np.isin(b.tmpl, idx)
        if q.severities:
            m &= np.isin(b.sev, [SEVERITIES.index(s) for s in q.severities])
        if q.category is not None:
            cat = q.category.upper()
            idx = [i for i, t in enumerate(TEMPLATES) if cat in (c.upper() for c in TEMPLATE_CATEGORIES[t])]
            m &= np.isin(b.tmpl, idx) | ((b.sev == 5) & (cat == SAFETY.upper()))
        if q.equipment is not None:
            m &= b.eq == q.equipment
        if eq_ok is not None:
            m &= eq_ok[b.eq]
        out = b.take(m)
        if name_rx is not None and len(out):
            keep = np.array([name_rx.fullmatch(self.frame_name(TEMPLATES[int(t)], int(e), int(k))) is not None
                             for t, e, k in zip(out.tmpl, out.eq, out.k, strict=True)], dtype=np.bool_)
            out = out.take(keep)
        return out

    @staticmethod
    def _mode_mask(b: _Slots, q: FrameQuery, asof: int) -> npt.NDArray[np.bool_]:
        s, e = q.start, q.end if q.end is not None else asof
        if e < s:
            s, e = e, s
        started = b.start <= asof
        is_open = b.end > asof
        closed = ~is_open
        masks = {
            "Overlapped": (b.start <= e) & (is_open | (b.end >= s)),
            "StartInclusive": (b.start >= s) & (b.start <= e),
            "EndInclusive": closed & (b.end >= s) & (b.end <= e),
            "Inclusive": (b.start >= s) & closed & (b.end <= e),
            "InProgress": is_open & (b.start >= s) & (b.start <= e),
            "BackwardFromStartTime": b.start <= q.start,
            "ForwardFromStartTime": b.start >= q.start,
            "BackwardFromEndTime": closed & (b.end <= q.start),
            "ForwardFromEndTime": closed & (b.end >= q.start),
            "BackwardInProgress": is_open & (b.start <= q.start),
            "ForwardInProgress": is_open & (b.start >= q.start),
        }
        masks["None"] = masks["Overlapped"]
        return started & masks[q.mode]

    def _range(self, q: FrameQuery, asof: int) -> tuple[int, int]:
        """The slots a search has to look at (inclusive)."""
        last = self._slot_of(asof)
        if q.mode in WINDOW_MODES:
            s, e = q.start, q.end if q.end is not None else asof
            s, e = min(s, e), max(s, e)
            return max(0, self._slot_of(s - MAX_DURATION)), min(last, self._slot_of(e))
        t = q.start
        lo, hi = 0, last
        if q.mode.startswith("Forward"):
            lo = self._slot_of(t - MAX_DURATION) if q.mode == "ForwardFromEndTime" else self._slot_of(t)
        else:
            hi = min(last, self._slot_of(t))
        if q.mode.endswith("InProgress"):
            lo = max(lo, self._slot_of(asof - MAX_DURATION))
        return max(0, lo), hi

    def search(self, q: FrameQuery, asof: int, max_items: int = 150_000) -> list[FrameInfo]:
        """The page of frames a search returns (see the module docstring for the modes)."""
        if not self.slot:
            return []
        lo, hi = self._range(q, asof)
        if hi < lo:
            return []
        eq_ok = None
        if q.ref_name_filter:
            rx = wildcard(q.ref_name_filter)
            eq_ok = np.array([rx.fullmatch(n) is not None for n in self.af.equipment_names()], dtype=np.bool_)
        name_rx = wildcard(q.name_filter) if q.name_filter else None
        need = q.start_index + q.max_count
        if q.mode in DIRECTIONAL_MODES:
            key = "end" if "EndTime" in q.mode else "start"
            ordered = self._scan(q, asof, lo, hi, key, q.mode.startswith("Forward"), need, eq_ok, name_rx)
        elif q.sort_field == "StartTime":
            ordered = self._scan(q, asof, lo, hi, "start", q.sort_order == "Ascending", need, eq_ok, name_rx)
        else:
            ordered = self._sorted_all(q, asof, lo, hi, eq_ok, name_rx, max_items)
        return self._materialise(ordered.take(np.arange(q.start_index, min(need, len(ordered)))), asof)

    def _scan(self, q: FrameQuery, asof: int, lo: int, hi: int, key: str, forward: bool, need: int,
              eq_ok: npt.NDArray[np.bool_] | None, name_rx: re.Pattern[str] | None) -> _Slots:
        """Walk slots in time order until ``need`` frames are certainly the first ones by ``key``."""
        margin = 0 if forward or key == "start" else MAX_DURATION
        parts: list[_Slots] = []
        chunk, cur = _CHUNK0, lo if forward else hi
        while lo <= cur <= hi:
            a, b = (cur, min(hi + 1, cur + chunk)) if forward else (max(lo, cur - chunk + 1), cur + 1)
            parts.append(self._filter(self._slots(a, b), q, asof, eq_ok, name_rx))
            keys = np.concatenate([p.start if key == "start" else p.end for p in parts])
            if forward:
                final = int(np.count_nonzero(keys < self.origin + b * self.slot))
            else:
                final = int(np.count_nonzero(keys >= self.origin + a * self.slot + margin))
            if final >= need:
                break
            cur = b if forward else a - 1
            chunk = min(chunk * 2, _CHUNK_MAX)
        found = _concat(parts) if parts else self._slots(0, 0)
        keys = found.start if key == "start" else found.end
        order = np.lexsort((found.k, keys))
        return found.take(order if forward else order[::-1])

    def _sorted_all(self, q: FrameQuery, asof: int, lo: int, hi: int, eq_ok: npt.NDArray[np.bool_] | None,
                    name_rx: re.Pattern[str] | None, max_items: int) -> _Slots:
        parts: list[_Slots] = []
        total = 0
        for a in range(lo, hi + 1, _CHUNK_MAX):
            part = self._filter(self._slots(a, min(hi + 1, a + _CHUNK_MAX)), q, asof, eq_ok, name_rx)
            total += len(part)
            if total > max_items:
                raise TooManyFrames(f"The search matches more than {max_items} event frames, the maximum allowed "
                                    "for a sorted search; narrow the time range or sort by StartTime.")
            parts.append(part)
        found = _concat(parts) if parts else self._slots(0, 0)
        if q.sort_field == "EndTime":
            order = np.lexsort((found.k, np.where(found.end > asof, np.iinfo(np.int64).max, found.end)))
        else:
            names = [self.frame_name(TEMPLATES[int(t)], int(e), int(k))
                     for t, e, k in zip(found.tmpl, found.eq, found.k, strict=True)]
            order = np.array(sorted(range(len(names)), key=names.__getitem__), dtype=np.int64)
        return found.take(order if q.sort_order == "Ascending" else order[::-1])
