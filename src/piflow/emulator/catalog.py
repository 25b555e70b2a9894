"""The point name catalog and the ``points/search`` query language, used by the discovery routes.

Listing or searching a data server's points needs every point name; asking the model point by point is slow
for a million points, so the names are built vectorised on first use and cached per model (weakly: a
discarded emulator frees them). Query terms (``tag:=BRK* pointtype:=Float32``) are parsed here too.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from piflow.emulator.model import _TYPE_CUTS, EQUIPMENT, POINT_TYPES, SITES, Model, PointSpec, _mix
from piflow.emulator.responses import pi_error
from piflow.wildcards import wildcard

I64 = npt.NDArray[np.int64]


# ---- the point catalog -----------------------------------------------------------------------------------

_catalog_lock = threading.Lock()
_catalogs: weakref.WeakKeyDictionary[Model, dict[int, list[str]]] = weakref.WeakKeyDictionary()


def point_names(model: Model, server: int) -> list[str]:
    """Every point name of a data server, built on first use (vectorised) and cached.

    The names follow :meth:`Model._make_point`; a sample is checked against the model and any difference falls
    back to asking the model point by point, so the catalog can never disagree with the points themselves.
    """
    with _catalog_lock:
        cached = _catalogs.setdefault(model, {})
        if server not in cached:
            names = _names_fast(model, server)
            n = len(names)
            sample = sorted({*range(min(n, 50)), *range(0, n, max(1, n // 50)), n - 1} - {-1})
            if any(model.point(server, i).name != names[i] for i in sample):
                names = [model.point(server, i).name for i in range(n)]
            cached[server] = names
        return cached[server]


def _names_fast(model: Model, server: int) -> list[str]:
    cfg = model.config
    n = cfg.point_count
    if n == 0:
        return []
    mask = (1 << 64) - 1
    seed_h = _mix(np.array([cfg.seed & mask], dtype=np.uint64))
    server_h = _mix(seed_h ^ np.uint64(server & mask))
    h = _mix(server_h ^ np.arange(n, dtype=np.uint64))
    ptype = np.searchsorted(np.array(_TYPE_CUTS), (h % np.uint64(100)).astype(np.int64), side="right")
    measures = _measure_table(model, server, ptype)
    out: list[str] = []
    for equipment in range((n + 4) // 5):
        prefix = (f"{SITES[(equipment // 400) % len(SITES)]}.A{(equipment // 40) % 10}."
                  f"{EQUIPMENT[(equipment // 4) % len(EQUIPMENT)]}{equipment:06d}.")
        base = equipment * 5
        out.extend(prefix + measures[int(ptype[i])][i - base] for i in range(base, min(n, base + 5)))
    return out


def _measure_table(model: Model, server: int, ptype: I64) -> list[list[str]]:
    """The measurement word (last name part) per point type and slot, read off one point of each kind."""
    table = [["?"] * 5 for _ in POINT_TYPES]
    slot = np.arange(ptype.shape[0]) % 5
    for t in range(len(POINT_TYPES)):
        for s in range(5):
            hits = np.flatnonzero((ptype == t) & (slot == s))
            if hits.size:
                table[t][s] = model.point(server, int(hits[0])).name.rsplit(".", 1)[-1]
    return table


# ---- points/search queries -------------------------------------------------------------------------------

_TERM_RE = re.compile(r"""([A-Za-z]+)\s*:\s*(=|<>)?\s*("[^"]*"|'[^']*'|\S+)|(\S+)""")
_QUERY_FIELDS: dict[str, Callable[[PointSpec], str]] = {
    "tag": lambda p: p.name, "name": lambda p: p.name, "descriptor": lambda p: p.descriptor,
    "pointtype": lambda p: p.point_type, "engunits": lambda p: p.units, "pointsource": lambda p: "EMU",
    "pointclass": lambda p: "classic", "digitalset": lambda p: p.digital_set or "",
}


def parse_point_query(query: str) -> list[tuple[str, bool, re.Pattern[str]]]:
    """``tag:=BRK* pointtype:=Float32`` -> [(field, negated, pattern)]; bare words filter the name."""
    terms: list[tuple[str, bool, re.Pattern[str]]] = []
    for m in _TERM_RE.finditer(query):
        field, op, value, bare = m.groups()
        if bare is not None:
            if bare.upper() in ("AND", "&&"):
                continue
            field, value = "tag", bare
        key = field.lower()
        if key not in _QUERY_FIELDS:
            raise pi_error(400, f"The query field '{field}' is not supported by the emulator.")
        terms.append((key, op == "<>", wildcard(value.strip("'\""))))
    return terms


def point_matches(p: PointSpec, terms: Sequence[tuple[str, bool, re.Pattern[str]]]) -> bool:
    return all((rx.fullmatch(_QUERY_FIELDS[key](p)) is not None) != neg for key, neg, rx in terms)
