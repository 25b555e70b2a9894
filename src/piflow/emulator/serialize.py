"""Fast, deterministic JSON for arrays of PI values.

Encoding is what limits an emulator serving recorded values: building a dict per value and handing it to a
JSON library costs microseconds per value. Here a page of values is assembled column-wise: each field of every
row comes from a small lookup table (the date, the time of day, the fraction digits, the flags and units of
the stream, the digital states) or from the numbers orjson prints for a whole numpy column at once, held as
Arrow binary arrays; one ``binary_join_element_wise`` writes all rows into a single buffer. Nothing here
loops over values in Python.

:func:`encode_arrays_slow` builds the same bytes the obvious way (a dict per value): it is the reference the
tests compare the fast path with, and the fallback for timestamps outside the tables (before 1970, after 2199).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from piflow.emulator.model import K_DIGITAL, K_STRING, K_SYSTEM, K_TIMESTAMP, SYSTEM_STATES, Events
from piflow.pitime import TICKS_PER_SECOND, format_ticks

K_OTHER = 5  # a value given as encoded JSON (static AF attributes: numbers, strings, booleans)

VALUE_FIELDS = ("Timestamp", "Value", "UnitsAbbreviation", "Good", "Questionable", "Substituted", "Annotated")
_FLAG_FIELDS = ("Good", "Questionable", "Substituted", "Annotated")
_TABLE_DAYS = 84_000  # 1970-01-01 .. 2199-12-30: the days the day table covers
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_CHUNK_ROWS = 1 << 21  # rows per Arrow join (each row is at most a few hundred bytes)

Buffer = bytes | memoryview
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class StreamFormat:
    """What a stream's values need besides the values: units, integer printing, digital state names."""

    units: str = ""
    integer: bool = False
    state_names: tuple[str, ...] = ()


def _no_rows() -> I64:
    return np.zeros(0, dtype=np.int64)


@dataclass
class ValueColumns:
    """PI values as parallel arrays: the shape of :class:`Events`, for computed values too."""

    ticks: npt.NDArray[np.int64]
    kind: npt.NDArray[np.int8]
    number: npt.NDArray[np.float64]
    code: npt.NDArray[np.int32]
    good: npt.NDArray[np.bool_]
    questionable: npt.NDArray[np.bool_]
    substituted: npt.NDArray[np.bool_]
    annotated: npt.NDArray[np.bool_]
    # Rows whose value is given as encoded JSON (String/Timestamp points, static attributes), ascending,
    # as a NUL-padded matrix with one row per such value.
    extra_rows: I64 = field(default_factory=_no_rows)
    extra_matrix: U8 = field(default_factory=lambda: np.zeros((0, 0), dtype=np.uint8))

    def __len__(self) -> int:
        return int(self.ticks.shape[0])

    @classmethod
    def from_events(cls, ev: Events) -> ValueColumns:
        rows = np.flatnonzero((ev.kind == K_STRING) | (ev.kind == K_TIMESTAMP)).astype(np.int64)
        return cls(ev.ticks, ev.kind, ev.number, ev.code, ev.good, ev.questionable, ev.substituted,
                   ev.annotated, rows, _event_strings(ev, rows))

    @classmethod
    def empty(cls) -> ValueColumns:
        b = np.zeros(0, dtype=np.bool_)
        return cls(_no_rows(), np.zeros(0, dtype=np.int8), np.zeros(0, dtype=np.float64),
                   np.zeros(0, dtype=np.int32), b, b, b, b)

    @classmethod
    def single(cls, ticks: int, value_json: bytes) -> ValueColumns:
        """One good value given as JSON (a static attribute's value)."""
        f = np.zeros(1, dtype=np.bool_)
        return cls(np.array([ticks], dtype=np.int64), np.array([K_OTHER], dtype=np.int8),
                   np.array([np.nan]), np.array([-1], dtype=np.int32), np.ones(1, dtype=np.bool_), f, f, f,
                   np.zeros(1, dtype=np.int64), _ascii_matrix([value_json]))

    def extra_map(self) -> dict[int, bytes]:
        return {int(r): self.extra_matrix[j].tobytes().rstrip(b"\0") for j, r in enumerate(self.extra_rows)}


def _event_strings(ev: Events, rows: I64) -> U8:
    """The JSON strings of String/Timestamp events, vectorised.

    The layout mirrors :meth:`Events.string_value` (a fixed prefix and five digits of the event's variant; a
    timestamp some whole seconds earlier). Each point's first value is checked against ``string_value`` and a
    mismatch (the model changed) falls back to calling it per event, so the served text always comes from it.
    """
    if rows.size == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    first = int(rows[0])
    text = ev.string_value(first)
    if ev.kind[first] == K_TIMESTAMP:
        t = ev.ticks[rows]
        back = (ev.variant[rows] % np.uint64(30 * 86400)).astype(np.int64) * TICKS_PER_SECOND
        secs = (t - back - t % TICKS_PER_SECOND) // TICKS_PER_SECOND
        if secs.min() >= 0 and secs.max() < _TABLE_DAYS * 86400:
            quote = np.full((rows.shape[0], 1), ord('"'), dtype=np.uint8)
            days = secs // 86400
            mat = np.hstack([quote, _day_table()[days], _tod_table()[secs - days * 86400],
                             np.full((rows.shape[0], 1), ord("Z"), dtype=np.uint8), quote])
            if mat[0].tobytes() == orjson.dumps(text) and bool((ev.kind[rows] == K_TIMESTAMP).all()):
                return mat
    else:
        prefix = text[:-5]
        digits = _digits((ev.variant[rows] % np.uint64(100000)).astype(np.int64), 5)
        head = orjson.dumps(prefix)[:-1]
        mat = np.hstack([np.broadcast_to(np.frombuffer(head, dtype=np.uint8), (rows.shape[0], len(head))),
                         digits, np.full((rows.shape[0], 1), ord('"'), dtype=np.uint8)])
        if mat[0].tobytes() == orjson.dumps(text) and bool((ev.kind[rows] == K_STRING).all()):
            return mat
    return _ascii_matrix([orjson.dumps(ev.string_value(int(i))) for i in rows])


# ---- the slow reference path -----------------------------------------------------------------------------

def state_object(name: str, code: int, is_system: bool) -> dict[str, Any]:
    return {"Name": name, "Value": code, "IsSystem": is_system}


def state_name(fmt: StreamFormat, kind: int, code: int) -> str:
    if kind == K_SYSTEM:
        return SYSTEM_STATES.get(code, f"State {code}")
    return fmt.state_names[code] if 0 <= code < len(fmt.state_names) else f"State {code}"


def value_of(cols: ValueColumns, fmt: StreamFormat, i: int, extras: dict[int, bytes]) -> Any:
    """The ``Value`` of row i as a Python object that orjson prints the way PI does."""
    kind = int(cols.kind[i])
    if kind in (K_DIGITAL, K_SYSTEM):
        code = int(cols.code[i])
        return state_object(state_name(fmt, kind, code), code, kind == K_SYSTEM)
    if i in extras:
        return orjson.loads(extras[i])
    x = float(cols.number[i])
    if not np.isfinite(x):
        return None
    return int(x) if fmt.integer else x


def value_dicts(cols: ValueColumns, fmt: StreamFormat, fields: Sequence[str] = VALUE_FIELDS) -> list[dict[str, Any]]:
    """One dict per value, in PI's field order, keeping only ``fields``."""
    extras = cols.extra_map()
    out: list[dict[str, Any]] = []
    for i in range(len(cols)):
        full: dict[str, Any] = {
            "Timestamp": format_ticks(int(cols.ticks[i])),
            "Value": value_of(cols, fmt, i, extras),
            "UnitsAbbreviation": fmt.units,
            "Good": bool(cols.good[i]),
            "Questionable": bool(cols.questionable[i]),
            "Substituted": bool(cols.substituted[i]),
            "Annotated": bool(cols.annotated[i]),
        }
        out.append({k: v for k, v in full.items() if k in fields})
    return out


def good_value_dict(ticks: int, value: object, units: str) -> dict[str, Any]:
    """One good value as PI serves it: what :func:`value_dicts` gives for ``ValueColumns.single(ticks,
    orjson.dumps(value))``, without arrays. Static attribute values are asked one at a time by the thousand
    (numpy on one-element arrays also hands the GIL back and forth with the event loop, which cost milliseconds
    per value under load)."""
    return {"Timestamp": format_ticks(ticks), "Value": value, "UnitsAbbreviation": units,
            "Good": True, "Questionable": False, "Substituted": False, "Annotated": False}


def encode_arrays_slow(streams: Sequence[tuple[ValueColumns, StreamFormat]],
                       fields: Sequence[str] = VALUE_FIELDS) -> list[bytes]:
    return [orjson.dumps(value_dicts(cols, fmt, fields)) for cols, fmt in streams]


# ---- lookup tables ---------------------------------------------------------------------------------------

def _ascii_matrix(strings: Sequence[bytes], width: int | None = None) -> U8:
    """Byte strings as the rows of a NUL-padded uint8 matrix."""
    w = max([len(s) for s in strings] + [0]) if width is None else width
    if w == 0:
        return np.zeros((len(strings), 0), dtype=np.uint8)
    return np.array(list(strings), dtype=f"S{w}").view(np.uint8).reshape(len(strings), w)


def _digits(values: I64, count: int) -> U8:
    """Zero-padded decimal digits of non-negative ints as an (n, count) ASCII matrix."""
    out = np.empty((values.shape[0], count), dtype=np.uint8)
    v = values.copy()
    for j in range(count - 1, -1, -1):
        out[:, j] = (v % 10 + 48).astype(np.uint8)
        v //= 10
    return out


@cache
def _day_table() -> U8:
    """``YYYY-MM-DDT`` for every day of the table range."""
    days = np.arange(_TABLE_DAYS).astype("datetime64[D]")
    text = np.datetime_as_string(days).astype("S10").view(np.uint8).reshape(_TABLE_DAYS, 10)
    return np.hstack([text, np.full((_TABLE_DAYS, 1), ord("T"), dtype=np.uint8)])


@cache
def _tod_table() -> U8:
    """``HH:MM:SS`` for every second of a day."""
    s = np.arange(86400, dtype=np.int64)
    colon = np.full((86400, 1), ord(":"), dtype=np.uint8)
    return np.hstack([_digits(s // 3600, 2), colon, _digits(s // 60 % 60, 2), colon, _digits(s % 60, 2)])


@cache
def _frac_tables() -> tuple[U8, U8]:
    """The 7 fraction digits as milliseconds (``.ddd``) and the rest (``dddd``), trailing zeros dropped.

    Row ``ms`` of the first table is trimmed (for when the rest is zero); row ``1000 + ms`` is complete.
    """
    ms = [b"." + f"{i:03d}".rstrip("0").encode() if i else b"" for i in range(1000)]
    ms_full = [b"." + f"{i:03d}".encode() for i in range(1000)]
    rest = [f"{i:04d}".rstrip("0").encode() for i in range(10000)]
    return _ascii_matrix(ms + ms_full, 4), _ascii_matrix(rest, 4)


def _row_lengths(table: U8) -> I64:
    return np.asarray(np.count_nonzero(table, axis=1), dtype=np.int64)


# ---- the fast path ---------------------------------------------------------------------------------------

@dataclass
class _Cat:
    """All streams' columns concatenated, with the stream of each row."""

    ticks: I64
    kind: npt.NDArray[np.int8]
    number: npt.NDArray[np.float64]
    code: npt.NDArray[np.int32]
    flags: I64  # Good*8 + Questionable*4 + Substituted*2 + Annotated
    sid: I64
    extra_rows: I64
    extra: U8


def _concat(streams: Sequence[tuple[ValueColumns, StreamFormat]]) -> _Cat:
    cols = [c for c, _ in streams]
    sizes = np.array([len(c) for c in cols], dtype=np.int64)
    offsets = np.cumsum(sizes) - sizes

    def cat(name: str) -> npt.NDArray[Any]:
        return np.concatenate([getattr(c, name) for c in cols])

    flags = (cat("good").astype(np.int64) * 8 + cat("questionable").astype(np.int64) * 4
             + cat("substituted").astype(np.int64) * 2 + cat("annotated").astype(np.int64))
    extra_rows = np.concatenate([c.extra_rows + off for c, off in zip(cols, offsets, strict=True)]
                                + [_no_rows()]).astype(np.int64)
    width = max([c.extra_matrix.shape[1] for c in cols] + [0])
    extra = np.zeros((extra_rows.shape[0], width), dtype=np.uint8)
    at = 0
    for c in cols:
        k, w = c.extra_matrix.shape
        extra[at:at + k, :w] = c.extra_matrix
        at += k
    return _Cat(cat("ticks").astype(np.int64), cat("kind").astype(np.int8), cat("number").astype(np.float64),
                cat("code").astype(np.int32), flags, np.repeat(np.arange(len(cols), dtype=np.int64), sizes),
                extra_rows, extra)


def _state_table(fmts: Sequence[StreamFormat], cat: _Cat) -> tuple[U8, I64]:
    """Encoded ``{Name, Value, IsSystem}`` objects, and the row of each value in that table."""
    rows: list[bytes] = []
    set_offset: dict[tuple[str, ...], int] = {}
    stream_offset = np.zeros(len(fmts), dtype=np.int64)
    for i, fmt in enumerate(fmts):
        if fmt.state_names not in set_offset:
            set_offset[fmt.state_names] = len(rows)
            rows += [orjson.dumps(state_object(n, c, False)) for c, n in enumerate(fmt.state_names)]
        stream_offset[i] = set_offset[fmt.state_names]
    is_digital, is_system = cat.kind == K_DIGITAL, cat.kind == K_SYSTEM
    sys_codes = np.unique(cat.code[is_system])
    sys_map = np.zeros(int(sys_codes.max()) + 1 if sys_codes.size else 1, dtype=np.int64)
    for c in (int(x) for x in sys_codes):
        sys_map[c] = len(rows)
        rows.append(orjson.dumps(state_object(SYSTEM_STATES.get(c, f"State {c}"), c, True)))
    # The model never produces a digital code outside the stream's set; clipping keeps a bad one in its set.
    sizes = np.array([max(len(f.state_names), 1) for f in fmts], dtype=np.int64)
    digital = stream_offset[cat.sid] + np.clip(cat.code.astype(np.int64), 0, sizes[cat.sid] - 1)
    system = sys_map[np.clip(cat.code, 0, sys_map.shape[0] - 1)]
    return _ascii_matrix(rows), np.where(is_digital, digital, np.where(is_system, system, 0))


def _tail_table(fmts: Sequence[StreamFormat], fields: Sequence[str], first: bool) -> tuple[U8, I64]:
    """Units and the 16 flag combinations per distinct unit, closing the object: ``...},``."""
    units = sorted({f.units for f in fmts})
    unit_id = {u: i for i, u in enumerate(units)}
    rows: list[bytes] = []
    for u in units:
        for bits in range(16):
            parts = []
            if "UnitsAbbreviation" in fields:
                parts.append(b'"UnitsAbbreviation":' + orjson.dumps(u))
            for j, name in enumerate(_FLAG_FIELDS):
                if name in fields:
                    parts.append(b'"' + name.encode() + b'":' + (b"true" if bits >> (3 - j) & 1 else b"false"))
            body = b",".join(parts)
            rows.append((b"," if body and not first else b"") + body + b"},")
    return _ascii_matrix(rows), np.array([unit_id[f.units] * 16 for f in fmts], dtype=np.int64)


def _binary(data: npt.NDArray[np.uint8], lengths: I64) -> pa.BinaryArray:
    """An Arrow binary array over ``data`` cut into consecutive pieces of ``lengths``."""
    offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.BinaryArray.from_buffers(pa.binary(), lengths.shape[0],
                                       [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))])


def _binary_rows(matrix: U8) -> pa.BinaryArray:
    """The NUL-padded rows of a small matrix as a binary array (padding removed)."""
    lengths = _row_lengths(matrix)
    return _binary(matrix[matrix != 0], lengths)


def _fixed(matrix: U8) -> pa.BinaryArray:
    n, w = matrix.shape
    fsb = pa.FixedSizeBinaryArray.from_buffers(pa.binary(w), n, [None, pa.py_buffer(np.ascontiguousarray(matrix))])
    return fsb.cast(pa.binary())


def _numbers(text: bytes) -> pa.BinaryArray:
    """orjson's ``[1.5,2,null]`` as one binary value per number."""
    body = np.frombuffer(text, dtype=np.uint8)[1:-1]
    commas = np.flatnonzero(body == 44)
    lengths = np.diff(np.concatenate([[-1], commas, [body.shape[0]]])) - 1
    return _binary(body[body != 44], lengths.astype(np.int64))


def _values_arrow(fmts: Sequence[StreamFormat], cat: _Cat) -> pa.BinaryArray:
    """Each row's encoded ``Value``, in row order."""
    n = cat.ticks.shape[0]
    is_extra = np.zeros(n, dtype=np.bool_)
    is_extra[cat.extra_rows] = True
    is_state = (cat.kind == K_DIGITAL) | (cat.kind == K_SYSTEM)
    is_number = ~is_extra & ~is_state
    integer = np.array([f.integer for f in fmts], dtype=np.bool_)[cat.sid] & np.isfinite(cat.number)
    int_rows, float_rows = np.flatnonzero(is_number & integer), np.flatnonzero(is_number & ~integer)
    state_rows = np.flatnonzero(is_state)
    parts: list[pa.BinaryArray] = []
    order: list[I64] = []
    if float_rows.size:
        parts.append(_numbers(orjson.dumps(cat.number[float_rows], option=_NUMPY)))
        order.append(float_rows)
    if int_rows.size:
        parts.append(_numbers(orjson.dumps(cat.number[int_rows].astype(np.int64), option=_NUMPY)))
        order.append(int_rows)
    if state_rows.size:
        table, idx = _state_table(fmts, cat)
        parts.append(pc.take(_binary_rows(table), pa.array(idx[state_rows])))
        order.append(state_rows)
    if cat.extra_rows.size:
        parts.append(_binary_rows(cat.extra))
        order.append(cat.extra_rows)
    if len(parts) == 1:
        return parts[0]
    perm = np.empty(n, dtype=np.int64)
    perm[np.concatenate(order)] = np.arange(n, dtype=np.int64)
    return pc.take(pa.concat_arrays(parts), pa.array(perm))


@cache
def _frac_arrays(suffix: bytes) -> tuple[pa.BinaryArray, pa.BinaryArray]:
    frac1, frac2 = _frac_tables()
    tail = np.broadcast_to(np.frombuffer(suffix, dtype=np.uint8), (frac2.shape[0], len(suffix)))
    return _binary_rows(frac1), _binary_rows(np.hstack([frac2, tail]) if suffix else frac2)


def _rows_arrow(fmts: Sequence[StreamFormat], cat: _Cat, fields: Sequence[str]) -> tuple[Buffer, I64]:
    """All rows as ``{...},{...},`` (every row ends with a comma) and the byte offset of each row."""
    n = cat.ticks.shape[0]
    columns: list[pa.Array] = []
    first = True
    if "Timestamp" in fields:
        secs = cat.ticks // TICKS_PER_SECOND
        frac = cat.ticks - secs * TICKS_PER_SECOND
        days = secs // 86400
        d0, d1 = int(days.min()), int(days.max())
        day = np.hstack([np.broadcast_to(np.frombuffer(b'{"Timestamp":"', dtype=np.uint8), (d1 - d0 + 1, 14)),
                         _day_table()[d0:d1 + 1]])
        head = np.empty(n, dtype=np.dtype([("d", "V25"), ("t", "V8")]))
        head["d"] = day.view("V25").reshape(-1)[days - d0]
        head["t"] = _tod_table().view("V8").reshape(-1)[secs - days * 86400]
        columns.append(_fixed(head.view(np.uint8).reshape(n, 33)))
        ms, rest = frac // 10_000, frac % 10_000
        suffix = b'Z","Value":' if "Value" in fields else b'Z"'
        frac1, frac2 = _frac_arrays(suffix)
        columns += [pc.take(frac1, pa.array(ms + 1000 * (rest != 0))), pc.take(frac2, pa.array(rest))]
        first = False
    elif "Value" in fields:
        columns.append(pa.array([b'{"Value":'] * n, pa.binary()))
    else:
        columns.append(pa.array([b"{"] * n, pa.binary()))
    if "Value" in fields:
        columns.append(_values_arrow(fmts, cat))
        first = False
    tail, unit_base = _tail_table(fmts, fields, first)
    columns.append(pc.take(_binary_rows(tail), pa.array(unit_base[cat.sid] + cat.flags)))
    rows = pc.binary_join_element_wise(*columns, b"")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)[rows.offset:rows.offset + n + 1].astype(np.int64)
    return memoryview(rows.buffers()[2]), offsets


def _in_table_range(ticks: I64) -> bool:
    return int(ticks.min()) >= 0 and int(ticks.max()) < _TABLE_DAYS * 86400 * TICKS_PER_SECOND


def _slice(cat: _Cat, a: int, b: int) -> _Cat:
    keep = (cat.extra_rows >= a) & (cat.extra_rows < b)
    return _Cat(cat.ticks[a:b], cat.kind[a:b], cat.number[a:b], cat.code[a:b], cat.flags[a:b], cat.sid[a:b],
                cat.extra_rows[keep] - a, cat.extra[keep])


def encode_arrays(streams: Sequence[tuple[ValueColumns, StreamFormat]],
                  fields: Sequence[str] = VALUE_FIELDS) -> list[list[Buffer]]:
    """Each stream's values as a JSON array, given as buffers to join (saving a copy of large bodies).

    ``fields`` is the subset of :data:`VALUE_FIELDS` to print; the order is always PI's. Rows are joined in
    chunks of at most ``_CHUNK_ROWS``, which keeps every Arrow buffer below its 2 GiB offset limit.
    """
    fields = [f for f in VALUE_FIELDS if f in fields]
    sizes = [len(c) for c, _ in streams]
    total = sum(sizes)
    if total == 0:
        return [[b"[]"] for _ in streams]
    cat = _concat(streams)
    if not _in_table_range(cat.ticks):
        return [[b] for b in encode_arrays_slow(streams, fields)]
    fmts = [f for _, f in streams]
    chunks = [(c0, *_rows_arrow(fmts, _slice(cat, c0, min(total, c0 + _CHUNK_ROWS)), fields))
              for c0 in range(0, total, _CHUNK_ROWS)]
    out: list[list[Buffer]] = []
    r0 = 0
    for size in sizes:
        r1 = r0 + size
        parts: list[Buffer] = [b"["]
        for c0, view, bounds in chunks:
            lo, hi = max(r0, c0), min(r1, c0 + bounds.shape[0] - 1)
            if lo < hi:
                parts.append(view[int(bounds[lo - c0]):int(bounds[hi - c0])])
        if size:
            parts[-1] = parts[-1][:-1]  # without the last row's comma
        parts.append(b"]")
        out.append(parts)
        r0 = r1
    return out


def encode_array(cols: ValueColumns, fmt: StreamFormat, fields: Sequence[str] = VALUE_FIELDS) -> bytes:
    return b"".join(encode_arrays([(cols, fmt)], fields)[0])
