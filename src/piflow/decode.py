"""PI JSON values -> Arrow columns (pure, no I/O: the hot path, and safe to run in Spark executors).

REST pages (``streams/.../recorded``, ``streamsets/recorded``) and channel messages share one value shape, so
one decoder serves them all. Bodies are decoded with msgspec into typed structs (no dict per value); a body
that strict JSON rejects (PI can write ``NaN``) gets one tolerant second pass through the stdlib parser.

Every value keeps its meaning: numbers in ``value_double``, strings in ``value_string``, digital and system
states in ``state_code``/``state_name``/``is_system``. Nothing is coerced into a null double. A numeric point
whose value arrives as a string (``"12.5"``, ``"NaN"``) is parsed when the point type says it is numeric.
"""

from __future__ import annotations

import json
import math
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

NUMERIC_POINT_TYPES = frozenset({"Float16", "Float32", "Float64", "Int16", "Int32", "Int64"})


class PiState(msgspec.Struct, omit_defaults=True):
    """A digital or system state: ``{Name, Value, IsSystem}``."""

    Name: str | None = None
    Value: int | None = None
    IsSystem: bool = False


PiScalar = float | int | str | bool | PiState | None


class PiValue(msgspec.Struct):
    Timestamp: str | None = None
    Value: PiScalar = None
    UnitsAbbreviation: str | None = None
    Good: bool = True
    Questionable: bool = False
    Substituted: bool = False
    Annotated: bool = False
    Errors: Any = None


class StreamPage(msgspec.Struct):
    Items: list[PiValue] = msgspec.field(default_factory=list)
    UnitsAbbreviation: str | None = None
    WebException: Any = None


class StreamsetEntry(msgspec.Struct):
    WebId: str | None = None
    Name: str | None = None
    Path: str | None = None
    UnitsAbbreviation: str | None = None
    Items: list[PiValue] = msgspec.field(default_factory=list)


class StreamsetPage(msgspec.Struct):
    Items: list[StreamsetEntry] = msgspec.field(default_factory=list)
    WebException: Any = None


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
    webid: list[str] = field(default_factory=list)
    ts: list[str] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    dbl: list[float | None] = field(default_factory=list)
    txt: list[str | None] = field(default_factory=list)
    code: list[int | None] = field(default_factory=list)
    sname: list[str | None] = field(default_factory=list)
    system: list[bool] = field(default_factory=list)
    good: list[bool] = field(default_factory=list)
    questionable: list[bool] = field(default_factory=list)
    substituted: list[bool] = field(default_factory=list)
    annotated: list[bool] = field(default_factory=list)
    units: list[str | None] = field(default_factory=list)

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
        """Append one stream's values (in server order). ``where`` names the point/window for errors."""
        numeric = point_type in NUMERIC_POINT_TYPES
        timestamp_point = point_type == "Timestamp"
        a_ts, a_kind, a_dbl, a_txt = self.ts.append, self.kind.append, self.dbl.append, self.txt.append
        a_code, a_name, a_sys = self.code.append, self.sname.append, self.system.append
        for v in values:
            ts = v.Timestamp
            if not ts:
                raise DecodeError(f"a value without Timestamp in {where or webid}", point=webid)
            a_ts(ts)
            val = v.Value
            if isinstance(val, bool):
                a_kind(schema.KIND_NUMBER)
                a_dbl(1.0 if val else 0.0)
                a_txt(None)
                a_code(None)
                a_name(None)
                a_sys(False)
            elif isinstance(val, (float, int)):
                a_kind(schema.KIND_NUMBER)
                a_dbl(float(val))
                a_txt(None)
                a_code(None)
                a_name(None)
                a_sys(False)
            elif isinstance(val, str):
                number = _numeric_string(val) if numeric else None
                if number is not None:
                    a_kind(schema.KIND_NUMBER)
                    a_dbl(number)
                    a_txt(None)
                else:
                    a_kind(schema.KIND_TIMESTAMP if timestamp_point else schema.KIND_STRING)
                    a_dbl(None)
                    a_txt(val)
                a_code(None)
                a_name(None)
                a_sys(False)
            elif isinstance(val, PiState):
                a_kind(schema.KIND_SYSTEM if val.IsSystem else schema.KIND_DIGITAL)
                a_dbl(None)
                a_txt(None)
                a_code(val.Value)
                a_name(val.Name)
                a_sys(bool(val.IsSystem))
            else:
                a_kind(schema.KIND_NULL)
                a_dbl(None)
                a_txt(None)
                a_code(None)
                a_name(None)
                a_sys(False)
        n = len(values)
        self.webid.extend([webid] * n)
        self.good.extend([v.Good for v in values])
        self.questionable.extend([v.Questionable for v in values])
        self.substituted.extend([v.Substituted for v in values])
        self.annotated.extend([v.Annotated for v in values])
        self.units.extend([v.UnitsAbbreviation or default_units or None for v in values])

    def table(self, ingested_at: datetime | None = None, before_ns: int | None = None) -> pa.Table:
        """The rows as one table; ``before_ns`` drops events at or after it (half-open windows)."""
        try:
            ts_ns = pa.array(self.ts, pa.string()).cast(pa.timestamp("ns", tz="UTC"))
        except pa.ArrowInvalid as exc:
            bad = next((t for t in self.ts if not _parses(t)), "?")
            raise DecodeError(f"unparseable PI timestamp {bad!r}") from exc
        ts = pc.cast(ts_ns, schema.TS, safe=False)
        webid = pa.array(self.webid, pa.string())
        n = len(self.ts)
        ingested = ingested_at or datetime.now(UTC)
        table = pa.Table.from_arrays(
            [
                webid,
                ts,
                pa.array(np.zeros(n, dtype=np.int32)),
                pc.cast(ts, pa.date32()),
                pa.array(self.kind, pa.string()),
                pa.array(self.dbl, pa.float64()),
                pa.array(self.txt, pa.string()),
                pa.array(self.code, pa.int32()),
                pa.array(self.sname, pa.string()),
                pa.array(self.system, pa.bool_()),
                pa.array(self.good, pa.bool_()),
                pa.array(self.questionable, pa.bool_()),
                pa.array(self.substituted, pa.bool_()),
                pa.array(self.annotated, pa.bool_()),
                pa.array(self.units, pa.string()),
                pa.array([self.source] * n, pa.string()) if n else pa.array([], pa.string()),
                pa.array(np.full(n, _us(ingested), dtype="int64"), pa.int64()).cast(schema.TS),
            ],
            schema=schema.PI_VALUES,
        )
        if before_ns is not None:
            table = table.filter(pc.less(ts_ns.cast(pa.int64()), before_ns))
        if table.num_rows:
            table = table.set_column(2, schema.PI_VALUES.field("seq"), seq_numbers(table.column("webid"), table.column("timestamp")))
        return table


def _us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def _parses(text: str) -> bool:
    try:
        pa.array([text]).cast(pa.timestamp("ns", tz="UTC"))
    except pa.ArrowInvalid:
        return False
    return True


def _numeric_string(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if not math.isnan(value) or text.strip().lower() == "nan" else None


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
