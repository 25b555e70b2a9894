"""Pure helpers shared by the emulator's route modules: query parameters, selectedFields, paging (name filters are
:mod:`piflow.wildcards`, shared with the jobs).

PI Web API treats query parameter names case-insensitively (``webId`` and ``webid`` both work) and repeats a
parameter to pass a list (``webId=A&webId=B``), which is why routes read :class:`QueryArgs` rather than
declaring FastAPI parameters. Every parse failure becomes a 400 with PI's ``{"Errors": [...]}`` body (the
helpers raise :func:`~piflow.emulator.responses.pi_error`, an ``HTTPException`` the app renders). No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from functools import lru_cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from fastapi import HTTPException

from piflow.emulator.responses import pi_error
from piflow.pitime import TICKS_PER_SECOND, from_ticks, parse_iso_ticks, parse_pi_time, to_ticks

T = TypeVar("T")


# ---- query parameters ------------------------------------------------------------------------------------
class QueryArgs:
    """Case-insensitive, multi-valued view of a query string."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._items: dict[str, list[str]] = {}
        for key, value in items:
            self._items.setdefault(key.lower(), []).append(value)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value given for ``name`` (an empty string counts as given)."""
        values = self._items.get(name.lower())
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        return list(self._items.get(name.lower(), []))

    def text(self, name: str, default: str = "") -> str:
        value = self.get(name)
        return default if value is None else value

    def integer(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        """An integer parameter; not a number or under ``minimum`` -> 400; ``maximum`` caps silently, as PI."""
        raw = self.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            raise bad_param(name, raw, "an integer is expected") from None
        if minimum is not None and value < minimum:
            raise bad_param(name, raw, f"the minimum is {minimum}")
        return min(value, maximum) if maximum is not None else value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.get(name)
        if raw is None or raw.strip() == "":
            return default
        low = raw.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise bad_param(name, raw, "true or false is expected")

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        """One of ``choices``, matched case-insensitively and returned in its canonical spelling."""
        raw = self.get(name)
        if raw is None or raw.strip() == "":
            return default
        return _canonical(name, raw, choices)

    def choices(self, name: str, default: Sequence[str], choices: Sequence[str]) -> list[str]:
        """A repeatable choice (``summaryType=Average&summaryType=Maximum``, or comma separated), deduplicated."""
        raws = [part.strip() for raw in self.getlist(name) for part in raw.split(",") if part.strip()]
        return list(dict.fromkeys(_canonical(name, raw, choices) for raw in raws or default))

    def timezone(self) -> tzinfo:
        """``timeZone`` (IANA name or UTC); only affects how ``t``, ``y`` and weekday names are resolved."""
        raw = self.get("timeZone")
        if raw is None or raw.strip() == "" or raw.strip().upper() in ("UTC", "Z", "GMT"):
            return UTC
        try:
            return ZoneInfo(raw.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise bad_param("timeZone", raw, "unknown time zone") from None

    def time_ticks(self, name: str, default: str, now_ticks: int, tz: tzinfo = UTC) -> int:
        """A PI time string resolved against the virtual ``now`` (ticks since the epoch); empty means default."""
        raw = self.get(name)
        return parse_time_ticks(name, default if raw is None or raw.strip() == "" else raw, now_ticks, tz)

    def interval_ticks(self, name: str, default: str) -> int:
        """A PI interval (``1h``, ``30m``, ``15s``, ``1d``, ``500ms``) in ticks; zero is refused."""
        raw = self.text(name, default).strip() or default
        m = _INTERVAL_RE.fullmatch(raw)
        ticks = int(float(m.group(1)) * _UNIT_TICKS[m.group(2).lower()]) if m else 0
        if ticks <= 0:
            raise bad_param(name, raw, "a positive time interval such as 1h, 30m or 15s is expected")
        return ticks


def _canonical(name: str, raw: str, choices: Sequence[str]) -> str:
    for c in choices:
        if c.lower() == raw.strip().lower():
            return c
    raise bad_param(name, raw, f"expected one of {', '.join(choices)}")


_INTERVAL_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_UNIT_TICKS = {"ms": TICKS_PER_SECOND // 1000, "s": TICKS_PER_SECOND, "m": 60 * TICKS_PER_SECOND,
               "h": 3600 * TICKS_PER_SECOND, "d": 86400 * TICKS_PER_SECOND, "w": 7 * 86400 * TICKS_PER_SECOND}


def parse_time_ticks(name: str, text: str, now_ticks: int, tz: tzinfo = UTC) -> int:
    """A PI time string in ticks. Plain ISO timestamps keep all 7 fractional digits: a client resumes paging
    from a served timestamp, and truncating it to microseconds would re-read or skip events."""
    raw = text.strip()
    if raw in ("", "*"):
        return now_ticks
    try:
        return parse_iso_ticks(raw)
    except ValueError:
        pass
    try:
        return to_ticks(parse_pi_time(raw, from_ticks(now_ticks), tz))
    except (ValueError, OverflowError):
        raise pi_error(400, f"The '{name}' parameter value '{text}' is not a valid PI time string.") from None


def bad_param(name: str, raw: str, why: str) -> HTTPException:
    return pi_error(400, f"The '{name}' parameter value '{raw}' is not valid: {why}.")


# ---- selectedFields --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """A parsed ``selectedFields``: a tree of lower-cased field names; no children means "everything below"."""

    children: Mapping[str, Selection] = field(default_factory=dict)
    # ``children`` looked up by the exact key of the JSON being pruned (filled as keys are met): PI's keys
    # are few and fixed, and lower-casing every key of every item was most of the cost of pruning.
    by_key: dict[str, Selection | None] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def everything(self) -> bool:
        return not self.children

    def includes(self, key: str) -> bool:
        return self.everything or key.lower() in self.children

    def sub(self, key: str) -> Selection | None:
        """The selection under ``key``: None if ``key`` is not selected, :data:`ALL` if it is wholly selected."""
        if self.everything:
            return ALL
        return self.children.get(key.lower())

    def path(self, *keys: str) -> Selection | None:
        """``sub`` along a path: ``sel.path("Items", "Items")``."""
        node: Selection | None = self
        for key in keys:
            node = node.sub(key) if node is not None else None
        return node

    @property
    def depth(self) -> int:
        """How many levels below here the selection reaches (0: everything is kept)."""
        return 0 if self.everything else 1 + max(c.depth for c in self.children.values())


ALL = Selection()


def _insert_path(tree: dict[str, Any], parts: list[str]) -> None:
    """Add one dotted path; ``None`` marks a node selected as a whole (a shorter path wins over a longer one)."""
    node = tree
    for i, part in enumerate(parts):
        if i == len(parts) - 1:
            node[part] = None
            return
        if part in node and node[part] is None:
            return  # an ancestor already selects everything below
        node = node.setdefault(part, {})


def _freeze(tree: Mapping[str, Any]) -> Selection:
    return Selection({k: ALL if v is None else _freeze(v) for k, v in tree.items()})


@lru_cache(maxsize=256)
def parse_selected_fields(text: str | None) -> Selection:
    """``Items.Timestamp;Items.Value`` -> a :class:`Selection` (:data:`ALL` when empty)."""
    if text is None or text.strip() == "":
        return ALL
    tree: dict[str, Any] = {}
    for spec in text.split(";"):
        parts = [p.strip().lower() for p in spec.split(".") if p.strip()]
        if parts:
            _insert_path(tree, parts)
    return _freeze(tree) if tree else ALL


def prune(obj: Any, sel: Selection) -> Any:
    """Keep only the selected fields of a JSON-like value (lists are transparent; other leaves are kept)."""
    if sel.everything:
        return obj
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        by_key = sel.by_key
        for key, value in obj.items():
            try:
                sub = by_key[key]
            except KeyError:
                sub = by_key[key] = sel.children.get(key.lower())
            if sub is not None:
                out[key] = value if sub is ALL else prune(value, sub)
        return out
    if isinstance(obj, list):
        return [prune(v, sel) for v in obj]
    return obj


def prune_json(body: bytes, sel: Selection) -> bytes:
    """The slow but general path: parse, prune, re-encode."""
    if sel.everything:
        return body
    return orjson.dumps(prune(orjson.loads(body), sel))


# ---- paging -----------------------------------------------------------------------------
def page(items: Sequence[T], start_index: int, max_count: int) -> list[T]:
    """``startIndex``/``maxCount`` paging: silent truncation, an index past the end gives an empty page."""
    return list(items[start_index:start_index + max_count])
