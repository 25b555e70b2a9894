"""PI JSON values -> Arrow columns (pure, no I/O: the hot path, and safe to run in Spark executors).

REST pages (``streams/.../recorded``, ``streamsets/recorded``) and channel messages share one value shape, so
one decoder serves them all. Bodies are decoded with msgspec into typed structs (no dict per value); a body
that strict JSON rejects (PI can write ``NaN``) gets one tolerant second pass through the stdlib parser.

Every value keeps its meaning, classified by :func:`piflow.pi_values.classify` (the one classification every
table uses): numbers in ``value_double``, strings and timestamps in ``value_string``, digital and system states
in ``state_code``/``state_name``/``is_system``; nothing is coerced into a null double. The common shapes of a
stream (all numbers, numbers with a few states) take column-at-a-time shortcuts that agree with it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from piflow import schema
from piflow.errors import BadResponseError, DecodeError
from piflow.pi_values import PiState, classify_many

PiScalar = float | int | str | bool | PiState | None


class PiValue(msgspec.Struct, gc=False):
    Timestamp: str | None = None
    Value: PiScalar = None
    UnitsAbbreviation: str | None = None
    Good: bool = True
    Questionable: bool = False
    Substituted: bool = False
    Annotated: bool = False
    Errors: Any = None


class StreamPage(msgspec.Struct, gc=False):
    Items: list[PiValue] = msgspec.field(default_factory=list)
    UnitsAbbreviation: str | None = None
    WebException: Any = None


class StreamsetEntry(msgspec.Struct, gc=False):
    WebId: str | None = None
    Name: str | None = None
    Path: str | None = None
    UnitsAbbreviation: str | None = None
    Items: list[PiValue] = msgspec.field(default_factory=list)
    # A per-stream failure inside a 200/207 answer (e.g. an unknown or deleted point): never an empty stream.
    Exception: Any = None


class StreamsetPage(msgspec.Struct, gc=False):
    Items: list[StreamsetEntry] = msgspec.field(default_factory=list)
    WebException: Any = None


_KINDS = pa.array(schema.VALUE_KINDS, pa.string())
_KIND_INDEX = {k: i for i, k in enumerate(schema.VALUE_KINDS)}
_NUMBER = _KIND_INDEX[schema.KIND_NUMBER]
_DIGITAL, _SYSTEM = _KIND_INDEX[schema.KIND_DIGITAL], _KIND_INDEX[schema.KIND_SYSTEM]
_NUMBER_TYPES = frozenset({float, int})
_NUMBER_OR_STATE = frozenset({float, int, PiState})
_stream_decoder = msgspec.json.Decoder(StreamPage)
_streamset_decoder = msgspec.json.Decoder(StreamsetPage)


def _decode(body: bytes, kind: type[Any], decoder: msgspec.json.Decoder[Any], what: str) -> Any:
    try:
        page = decoder.decode(body)
    except msgspec.DecodeError:
        # Non-standard JSON (NaN, Infinity) is valid for the stdlib parser; anything else is a bad body.
        try:
            page = msgspec.convert(json.loads(body), kind, strict=False)
        except (ValueError, msgspec.ValidationError) as exc:
            snippet = body[:80].decode("utf-8", "replace")
            raise BadResponseError(f"{what}: body is not PI JSON (starts {snippet!r})") from exc
    if getattr(page, "WebException", None):
        raise BadResponseError(f"{what}: the server reported an error while streaming the answer (WebException)")
    return page


def decode_stream_page(body: bytes, what: str = "recorded") -> StreamPage:
    page: StreamPage = _decode(body, StreamPage, _stream_decoder, what)
    return page


def decode_streamset_page(body: bytes, what: str = "streamsets/recorded") -> StreamsetPage:
    page: StreamsetPage = _decode(body, StreamsetPage, _streamset_decoder, what)
    return page


@dataclass
class ColumnBuilder:
    """Accumulates decoded values column-wise; :meth:`table` builds one Arrow table in the pi_values schema."""

    source: str = schema.SOURCE_RECORDED
    webid_runs: list[tuple[str, int]] = field(default_factory=list)
    ts: list[str] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)  # index into schema.VALUE_KINDS
    dbl: list[float | None] = field(default_factory=list)
    txt: list[str | None] = field(default_factory=list)
    code: list[int | None] = field(default_factory=list)
    sname: list[str | None] = field(default_factory=list)
    system: list[bool] = field(default_factory=list)
    good: list[bool] = field(default_factory=list)
    questionable: list[bool] = field(default_factory=list)
    substituted: list[bool] = field(default_factory=list)
    annotated: list[bool] = field(default_factory=list)
    unit_runs: list[tuple[str | None, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)

    def add(
        self,
        webid: str,
        values: Sequence[PiValue],
        *,
        point_type: str | None = None,
        default_units: str | None = None,
        where: str = "",
    ) -> None:
        """Append one stream's values (in server order). ``where`` names the point/window for errors.

        The common shapes of a stream (all numbers; numbers with a few system states; all states) take
        column-at-a-time paths; anything else takes the general per-value path.
        """
        n = len(values)
        if n == 0:
            return
        ts = [v.Timestamp for v in values]
        if None in ts or "" in ts:
            raise DecodeError("a value without Timestamp", point=where or webid)
        self.ts.extend(ts)  # type: ignore[arg-type]  # None was ruled out just above
        self.webid_runs.append((webid, n))
        self.good.extend([v.Good for v in values])
        self.questionable.extend([v.Questionable for v in values])
        self.substituted.extend([v.Substituted for v in values])
        self.annotated.extend([v.Annotated for v in values])
        units = [v.UnitsAbbreviation for v in values]
        if units.count(None) == n:
            self.unit_runs.append((default_units or None, n))
        else:
            self.unit_runs.extend((u or default_units or None, 1) for u in units)
        vals = [v.Value for v in values]
        types = set(map(type, vals))
        if types <= _NUMBER_TYPES:
            self.kind.extend([_NUMBER] * n)
            self.dbl.extend(vals)  # type: ignore[arg-type]
            self.txt.extend([None] * n)
            self.code.extend([None] * n)
            self.sname.extend([None] * n)
            self.system.extend([False] * n)
        elif types <= _NUMBER_OR_STATE:
            self._numbers_and_states(vals)
        else:
            self._general(vals, point_type)

    def _numbers_and_states(self, vals: list[Any]) -> None:
        """A numeric stream with a few digital/system states: copy the numbers, then patch the states in."""
        n = len(vals)
        states = [i for i, x in enumerate(vals) if type(x) is PiState]
        dbl: list[float | None] = list(vals)
        kind = [_NUMBER] * n
        code: list[int | None] = [None] * n
        name: list[str | None] = [None] * n
        system = [False] * n
        for i in states:  # msgspec typed these PiState: the rule of pi_values.state_of, inlined for speed
            x = vals[i]
            dbl[i] = None
            kind[i] = _SYSTEM if x.IsSystem else _DIGITAL
            code[i], name[i], system[i] = x.Value, x.Name, bool(x.IsSystem)
        self.dbl.extend(dbl)
        self.txt.extend([None] * n)
        self.kind.extend(kind)
        self.code.extend(code)
        self.sname.extend(name)
        self.system.extend(system)

    def _general(self, vals: list[Any], point_type: str | None) -> None:
        cols = classify_many(vals, point_type)
        self.kind.extend(map(_KIND_INDEX.__getitem__, cols.kind))
        self.dbl.extend(cols.double)
        self.txt.extend(cols.string)
        self.code.extend(cols.state_code)
        self.sname.extend(cols.state_name)
        self.system.extend(cols.is_system)

    def table(self, ingested_at: datetime | None = None, before_ns: int | None = None) -> pa.Table:
        """The rows as one table; ``before_ns`` drops events at or after it (half-open windows).

        Python strings are the slow part of building Arrow arrays, so repeated ones (WebIDs, units, kinds,
        source) become dictionary arrays built from run lengths, and timestamps go in as one buffer.
        """
        try:
            ts_ns = ascii_strings(self.ts).cast(pa.timestamp("ns", tz="UTC"))
        except pa.ArrowInvalid as exc:
            bad = next((t for t in self.ts if not _parses(t)), "?")
            raise DecodeError(f"unparseable PI timestamp {bad!r}") from exc
        ts = pc.cast(ts_ns, schema.TS, safe=False)
        n = len(self.ts)
        ingested = ingested_at or datetime.now(UTC)
        table = pa.Table.from_arrays(
            [
                _from_runs(self.webid_runs),
                ts,
                pa.array(np.zeros(n, dtype=np.int32)),
                pc.cast(ts, pa.date32()),
                _KINDS.take(np.array(self.kind, dtype=np.int8)),
                pa.array(self.dbl, pa.float64()),
                _nullable(self.txt, pa.string()),
                _nullable(self.code, pa.int32()),
                _nullable(self.sname, pa.string()),
                pa.array(self.system, pa.bool_()),
                pa.array(self.good, pa.bool_()),
                pa.array(self.questionable, pa.bool_()),
                pa.array(self.substituted, pa.bool_()),
                pa.array(self.annotated, pa.bool_()),
                _from_runs(self.unit_runs),
                _from_runs([(self.source, n)]),
                pa.array(np.full(n, _us(ingested), dtype="int64"), pa.int64()).cast(schema.TS),
            ],
            schema=schema.PI_VALUES,
        )
        seq = run_seq(self.webid_runs, ts.cast(pa.int64()).to_numpy(zero_copy_only=False)) if n else None
        if before_ns is not None:
            keep = pc.less(ts_ns.cast(pa.int64()), before_ns)
            if not pc.all(keep).as_py():  # usually nothing is at the window's end: skip the copy
                table = table.filter(keep)
                # Dropped rows are the newest of their point, so the others keep their numbers.
                seq = None if seq is None else seq[keep.to_numpy(zero_copy_only=False)]
        if table.num_rows:
            numbers = pa.array(seq) if seq is not None else seq_numbers(table.column("webid"),
                                                                        table.column("timestamp"))
            table = table.set_column(2, schema.PI_VALUES.field("seq"), numbers)
        return table


def ascii_strings(items: list[str]) -> pa.Array:
    """A string array from Python strings, as one buffer when they are ASCII (about twice as fast)."""
    data = "".join(items).encode("utf-8")
    offsets = np.zeros(len(items) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, items), dtype=np.int32, count=len(items)), out=offsets[1:])
    if len(data) != int(offsets[-1]):  # some character took more than one byte: let Arrow do it
        return pa.array(items, pa.string())
    return pa.StringArray.from_buffers(len(items), pa.py_buffer(offsets), pa.py_buffer(data))


def _from_runs(runs: Sequence[tuple[str | None, int]]) -> pa.Array:
    """A string column from (value, repeat) runs, through a dictionary (no Python string per row).

    ``take`` from the dictionary, not a cast of a DictionaryArray: the cast is about 6x slower.
    """
    if not runs:
        return pa.array([], pa.string())
    uniques: dict[str | None, int] = {}
    codes = [uniques.setdefault(v, len(uniques)) for v, _ in runs]
    counts = np.fromiter((c for _, c in runs), dtype=np.int64, count=len(runs))
    indices = np.repeat(np.array(codes, dtype=np.int32), counts)
    return pa.array(list(uniques), pa.string()).take(indices)


def _nullable(items: list[Any], type_: pa.DataType) -> pa.Array:
    if items.count(None) == len(items):
        return pa.nulls(len(items), type_)
    return pa.array(items, type_)


def _us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def _parses(text: str) -> bool:
    try:
        pa.array([text]).cast(pa.timestamp("ns", tz="UTC"))
    except pa.ArrowInvalid:
        return False
    return True


def run_seq(runs: Sequence[tuple[str, int]], t: np.ndarray) -> np.ndarray | None:
    """:func:`seq_numbers` from the builder's runs (each point's rows in server order), without sorting: the
    common case, where each point's rows are in time order. None when they are not (use the general path).

    A point read again from its last timestamp (a continuation page) has several runs; they are taken
    together, in order, so events at the timestamp where the pages meet keep counting.
    """
    n = t.shape[0]
    groups: dict[str, list[tuple[int, int]]] = {}
    pos = 0
    for webid, count in runs:
        groups.setdefault(webid, []).append((pos, count))
        pos += count
    if pos != n:
        return None
    perm: np.ndarray | None = None
    if len(groups) != len(runs):
        perm = np.concatenate([np.arange(s, s + c) for parts in groups.values() for s, c in parts])
    tt = t if perm is None else t[perm]
    first = np.zeros(n, dtype=bool)
    sizes = np.fromiter((sum(c for _, c in parts) for parts in groups.values()), dtype=np.int64, count=len(groups))
    first[np.concatenate([[0], np.cumsum(sizes)[:-1]])] = True
    if bool(((tt[1:] < tt[:-1]) & ~first[1:]).any()):
        return None
    boundary = first
    boundary[1:] |= tt[1:] != tt[:-1]
    idx = np.arange(n)
    ordered = (idx - np.maximum.accumulate(np.where(boundary, idx, 0))).astype(np.int32)
    if perm is None:
        return ordered
    seq = np.empty(n, dtype=np.int32)
    seq[perm] = ordered
    return seq


def seq_numbers(webid: pa.Array | pa.ChunkedArray, ts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Number events that share (webid, timestamp) 0, 1, ... in the order given (the server's order).

    Rows of one point need not be contiguous (pages of several streams interleave); their relative order is.
    """
    n = len(ts)
    if n == 0:
        return pa.array([], pa.int32())
    if isinstance(webid, pa.ChunkedArray):
        webid = webid.combine_chunks()
    t = ts.cast(pa.int64()).to_numpy(zero_copy_only=False)
    w = pc.dictionary_encode(webid).indices.to_numpy(zero_copy_only=False)
    order = np.lexsort((t, w))  # stable: server order kept among equal (webid, timestamp)
    ts_sorted, w_sorted = t[order], w[order]
    boundary = np.empty(n, dtype=bool)
    boundary[0] = True
    boundary[1:] = (ts_sorted[1:] != ts_sorted[:-1]) | (w_sorted[1:] != w_sorted[:-1])
    idx = np.arange(n)
    seq_sorted = idx - np.maximum.accumulate(np.where(boundary, idx, 0))
    seq = np.empty(n, dtype=np.int32)
    seq[order] = seq_sorted
    return pa.array(seq)
