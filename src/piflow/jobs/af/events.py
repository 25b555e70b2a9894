"""``piflow events``: event frames into ``pi_event_frames`` and their attribute values into
``pi_event_frame_attributes``, incrementally.

Each run searches ``Overlapped`` frames of a time window sorted by start time (so paging is stable while new
frames appear at the end) and merges them on WebID: a frame is one row however many runs see it. The window
starts where the previous run of the same database and filters ended, minus ``overlap`` (late-created frames),
and that end is committed as a Delta transaction version in the same commit as the frames, so state and data
cannot disagree. A frame still in progress has ``end_time`` null and ``in_progress`` true; every run re-reads
such frames (by WebID, in ``/batch``, when the search did not return them) until they close, and the row is
updated in place. Attribute values are read (one ``streamsets/{frame}/value`` per frame, fanned out in
``/batch``) only for frames that are new, changed or still open.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from piflow import af_schema
from piflow.errors import ConfigError, PiApiError
from piflow.jobs.af.databases import Database, database_matches, list_databases, no_such_database
from piflow.jobs.batching import fetch_many, item_error, paged_items, resource
from piflow.jobs.common import (
    all_or_none,
    resolve_time,
    server_now,
)
from piflow.jobs.merged_tables import merge_changes, read_rows, write_changes
from piflow.jobs.pi_json import Json, Row, stream_error
from piflow.jobs.runs import RunResult, job_run
from piflow.pi_values import classify
from piflow.pitime import format_ticks, from_ticks, parse_interval, parse_iso_ticks, to_ticks
from piflow.progress import Progress
from piflow.sinks.delta import DeltaSink, Snapshot

if TYPE_CHECKING:
    from piflow.client.api import PiClient
    from piflow.config import PiflowSettings

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
IN_PROGRESS_YEAR = "9999"
_FRAME = ("WebId;Id;Name;Description;Path;TemplateName;CategoryNames;StartTime;EndTime;Severity;RefElementWebIds;"
          "IsAcknowledged;CanBeAcknowledged;IsAnnotated;IsLocked;AreValuesCaptured")
FRAME_FIELDS = ";".join(f"Items.{f}" for f in _FRAME.split(";"))
ONE_FRAME_FIELDS = _FRAME
VALUE_FIELDS = "Items.WebId;Items.Name;Items.Path;Items.UnitsAbbreviation;Items.Value;Items.Exception;Items.Errors"
TYPE_FIELDS = "Items.WebId;Items.Type"

_FRAME_COMPARED = tuple(n for n in af_schema.PI_EVENT_FRAMES.names if n not in ("webid", "first_seen", "last_seen"))
_ATTR_COMPARED = tuple(n for n in af_schema.PI_EVENT_FRAME_ATTRIBUTES.names
                       if n not in ("webid", "first_seen", "last_seen"))


@dataclass(frozen=True)
class Filters:
    """The search filters; together with the database they name the watermark of a run."""

    template: str | None = None
    category: str | None = None
    name: str | None = None
    referenced_element: str | None = None

    def params(self) -> list[tuple[str, str]]:
        pairs = (("templateName", self.template), ("categoryName", self.category), ("nameFilter", self.name),
                 ("referencedElementNameFilter", self.referenced_element))
        return [(k, v) for k, v in pairs if v]

    def app_id(self, db: Database) -> str:
        """The Delta transaction id that carries this scope's watermark (microseconds since the epoch)."""
        key = "|".join([db.server, db.name, *((v or "").upper() for v in
                                              (self.template, self.category, self.name, self.referenced_element))])
        return "piflow.events." + hashlib.sha256(key.upper().encode("utf-8")).hexdigest()[:24]


# ---- rows (pure) ---------------------------------------------------------------------------------------------------
def pi_datetime(text: Any) -> datetime | None:
    """A PI timestamp as a UTC datetime (7th fractional digit truncated); None for nothing and for PI's
    in-progress end (9999-12-31)."""
    if type(text) is str and text[-1:] == "Z" and not text.startswith(IN_PROGRESS_YEAR):
        try:  # the fast path for what PI prints (UTC, ``...Z``; 7 digits are truncated to 6 by Python)
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    if not isinstance(text, str) or not text.strip() or text.startswith(IN_PROGRESS_YEAR):
        return None
    try:  # anything else through the general parser
        dt = datetime.fromisoformat(text)
    except ValueError:
        return from_ticks(parse_iso_ticks(text))
    if dt.tzinfo is None:
        return from_ticks(parse_iso_ticks(text))
    return dt if dt.utcoffset() == timedelta(0) and dt.tzinfo is UTC else dt.astimezone(UTC)


def frame_row(obj: Json, db: Database, now: datetime) -> Row:
    """One ``pi_event_frames`` row from a PI event frame object."""
    try:
        start, end = pi_datetime(obj.get("StartTime")), pi_datetime(obj.get("EndTime"))
    except ValueError as exc:
        raise PiApiError(f"event frame {obj.get('Path') or obj.get('WebId')}: unreadable StartTime or EndTime "
                         f"({obj.get('StartTime')!r}, {obj.get('EndTime')!r}): {exc}") from None
    if start is None:
        raise PiApiError(f"event frame {obj.get('Path') or obj.get('WebId')} has no StartTime")
    refs = [str(w) for w in obj.get("RefElementWebIds") or []]
    return {
        "webid": str(obj["WebId"]), "id": obj.get("Id"), "server": db.server, "database": db.name,
        "name": str(obj.get("Name") or ""), "path": obj.get("Path"), "description": obj.get("Description") or None,
        "template": obj.get("TemplateName") or None, "categories": list(obj.get("CategoryNames") or []),
        "severity": obj.get("Severity"), "start_time": start, "end_time": end, "in_progress": end is None,
        "primary_element_webid": refs[0] if refs else None, "ref_element_webids": refs,
        "is_acknowledged": obj.get("IsAcknowledged"), "can_be_acknowledged": obj.get("CanBeAcknowledged"),
        "is_annotated": obj.get("IsAnnotated"), "is_locked": obj.get("IsLocked"),
        "are_values_captured": obj.get("AreValuesCaptured"), "is_deleted": False, "first_seen": now,
        "last_seen": now,
    }


def value_columns(value: Any, value_type: str | None = None) -> dict[str, Any]:
    """A PI value as the value columns of ``pi_values`` (kind, double, string, state), classified as there:
    ``value_type`` is the attribute's AF type, which says whether a string is a timestamp or a number (pure)."""
    c = classify(value, value_type)
    return {"value_kind": c.kind, "value_double": c.double, "value_string": c.string, "state_code": c.state_code,
            "state_name": c.state_name}


def frame_attribute_rows(frame_webid: str, items: Iterable[Json], now: datetime) -> list[Row]:
    """``pi_event_frame_attributes`` rows from a ``streamsets/{frame}/value`` answer whose items carry their
    attribute's ``Type`` (see :func:`read_attribute_values`)."""
    rows = []
    for it in items:
        if not it.get("WebId"):
            continue
        raw = it.get("Value")
        value: Json = raw if isinstance(raw, dict) else {}
        rows.append({
            "webid": str(it["WebId"]), "frame_webid": frame_webid, "name": str(it.get("Name") or ""),
            "path": it.get("Path") or None, "units": it.get("UnitsAbbreviation") or value.get("UnitsAbbreviation")
            or None, "timestamp": pi_datetime(value.get("Timestamp")),
            **value_columns(value.get("Value"), it.get("Type")),
            "good": value.get("Good"), "error": stream_error(it), "is_deleted": False, "first_seen": now,
            "last_seen": now,
        })
    return rows


def needs_attributes(changes: Iterable[Row], current: Iterable[Row], known: set[str]) -> list[str]:
    """Frames whose attribute values must be (re-)read: new or changed, still open, or never read (pure)."""
    out = {r["webid"] for r in changes if not r["is_deleted"]}
    out |= {r["webid"] for r in current if r["in_progress"] or r["webid"] not in known}
    return sorted(out)


def open_frames(existing: Iterable[Row], dbs: Sequence[Database], seen: set[str]) -> list[Row]:
    """Rows still in progress in the table, of the databases read, that the search did not return (pure)."""
    pairs = {(d.server.upper(), d.name.upper()) for d in dbs}
    return [r for r in existing if r["in_progress"] and not r["is_deleted"] and r["webid"] not in seen
            and (str(r["server"]).upper(), str(r["database"]).upper()) in pairs]


# ---- reading -------------------------------------------------------------------------------------------------------
@dataclass
class EventsRead:
    frames: list[Row] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # open frames that no longer exist on the server
    windows: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)  # app id -> window
    since: datetime | None = None  # the earliest window start: existing rows from here on may be replaced


def split_window(start: datetime, end: datetime, parts: int,
                 shortest: timedelta = timedelta(hours=1)) -> list[tuple[datetime, datetime]]:
    """``[start, end]`` cut into at most ``parts`` equal slices no shorter than ``shortest`` (pure)."""
    span = end - start
    n = max(1, min(parts, int(span / shortest) if span > shortest else 1))
    cuts = [start + span * i / n for i in range(n)] + [end]
    return list(itertools.pairwise(cuts))


def _newer(old: Row | None, new: Row) -> bool:
    """Whether ``new`` should replace ``old`` for the same frame seen by two slices (a frame that closed
    between the two reads is kept closed)."""
    return old is None or not (new["in_progress"] and not old["in_progress"])


async def search_frames(client: PiClient, db: Database, start: datetime, end: datetime, filters: Filters,
                        page_size: int, progress: Progress, now: datetime, lookahead: int = 2,
                        parts: int = 1) -> list[Row]:
    """Every frame overlapping ``[start, end]``. With ``parts`` > 1 the window is searched as that many
    slices at once: each slice pages from its own start, where one long search pages ever deeper (a server
    runs the search again for every page, so deep pages cost more), and the slices keep the server busy
    while pages are decoded here. A frame overlapping two slices is returned by both and kept once."""
    rows: dict[str, Row] = {}

    async def one(a: datetime, b: datetime) -> None:
        params: list[tuple[str, str | int | float | bool]] = [
            ("searchMode", "Overlapped"), ("startTime", format_ticks(to_ticks(a))),
            ("endTime", format_ticks(to_ticks(b))), ("sortField", "StartTime"), ("sortOrder", "Ascending"),
            *filters.params(), ("selectedFields", FRAME_FIELDS),
        ]
        async for page in paged_items(client, f"assetdatabases/{db.webid}/eventframes", params,
                                      page_size=page_size, lookahead=lookahead):
            for obj in page:
                row = frame_row(obj, db, now)
                if _newer(rows.get(row["webid"]), row):
                    rows[row["webid"]] = row
            progress.advance(len(page))

    await all_or_none(one(a, b) for a, b in split_window(start, end, parts))
    return list(rows.values())


async def reread_frames(client: PiClient, rows: Sequence[Row], dbs: Sequence[Database],
                        now: datetime) -> tuple[list[Row], list[str]]:
    """Read open frames again by WebID; (their current rows, WebIDs of those the server no longer knows)."""
    by_pair = {(d.server.upper(), d.name.upper()): d for d in dbs}
    asks = [resource(f"eventframes/{r['webid']}", [("selectedFields", ONE_FRAME_FIELDS)]) for r in rows]
    out, gone = [], []
    for row, answer in zip(rows, await fetch_many(client, asks), strict=True):
        if answer.status == 404:
            gone.append(row["webid"])
            continue
        exc = item_error(answer, f"event frame {row['path'] or row['webid']}")
        if exc is not None:
            raise exc
        db = by_pair[(str(row["server"]).upper(), str(row["database"]).upper())]
        out.append(frame_row(answer.content, db, now))
    return out, gone


async def read_attribute_values(client: PiClient, frames: Sequence[str]) -> dict[str, list[Json]]:
    """``streamsets/{frame}/value`` of every frame, each item with its attribute's ``Type`` from
    ``eventframes/{frame}/attributes`` (the type says what a string value is, as a point type does for
    ``pi_values``), all fanned out through ``/batch``; frames that are gone are left out."""
    asks = [resource(f"streamsets/{w}/value", [("selectedFields", VALUE_FIELDS)]) for w in frames]
    asks += [resource(f"eventframes/{w}/attributes", [("maxCount", 10_000), ("selectedFields", TYPE_FIELDS)])
             for w in frames]
    answers = await fetch_many(client, asks)
    out: dict[str, list[Json]] = {}
    for webid, answer, typed in zip(frames, answers[:len(frames)], answers[len(frames):], strict=True):
        if answer.status == 404 or typed.status == 404:
            log.warning("event frame %s vanished before its attribute values were read", webid)
            continue
        for item, what in ((answer, "attribute values"), (typed, "attribute types")):
            exc = item_error(item, f"{what} of event frame {webid}")
            if exc is not None:
                raise exc
        types = {str(a.get("WebId")): a.get("Type") for a in _items(typed.content)}
        out[webid] = [{**i, "Type": types.get(str(i.get("WebId")))} for i in _items(answer.content)]
    return out


def _items(content: Any) -> list[Json]:
    items = content.get("Items") if isinstance(content, dict) else None
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


# ---- the job -------------------------------------------------------------------------------------------------------
def watermark(snap: Snapshot, app_id: str) -> datetime | None:
    """Where the last run of this database and these filters ended (None before the first run)."""
    version = snap.transaction_version(app_id)
    return None if version is None else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=version)


def _window(snap: Snapshot, app_id: str, settings: PiflowSettings, overlap: timedelta,
            now: datetime) -> tuple[datetime, datetime]:
    end = resolve_time("end", settings.end, now)
    mark = watermark(snap, app_id)
    start = resolve_time("start", settings.start, now) if mark is None else mark - overlap
    return min(start, end), end


def _existing_frames(snap: Snapshot, since: datetime | None) -> list[Row]:
    """Rows the search can touch: open ones and those ending or starting inside the window."""
    if snap.table is None:
        return []
    if since is None:
        return read_rows(snap)
    f = ds.field("in_progress") | (ds.field("end_time") >= since) | (ds.field("start_time") >= since)
    rows: list[Row] = snap.read(filter=f).to_pylist()
    return rows


def _existing_attributes(snap: Snapshot, frames: Sequence[str]) -> list[Row]:
    if snap.table is None or not frames:
        return []
    table = snap.read()
    keep = pc.is_in(table.column("frame_webid").cast(pa.string()), value_set=pa.array(list(frames), pa.string()))
    rows: list[Row] = table.filter(keep).to_pylist()
    return rows


def _element_notes(sink: DeltaSink, frames: Sequence[Row]) -> tuple[int, int]:
    """(frames whose referenced element is tombstoned in pi_af_elements, frames whose element is unknown)."""
    if sink.table("pi_af_elements") is None or not frames:
        return 0, 0
    table = sink.read("pi_af_elements", columns=["webid", "is_deleted"]).to_pylist()
    deleted = {r["webid"] for r in table if r["is_deleted"]}
    known = {r["webid"] for r in table}
    removed = sum(1 for f in frames if any(w in deleted for w in f["ref_element_webids"]))
    unknown = sum(1 for f in frames if any(w not in known for w in f["ref_element_webids"]))
    return removed, unknown


async def _read(client: PiClient, sink: DeltaSink, settings: PiflowSettings, dbs: Sequence[Database],
                filters: Filters, overlap: timedelta, page_size: int,
                progress: Progress) -> tuple[EventsRead, tuple[Snapshot, list[Row]]]:
    """Search every database's window, then re-read the open frames the searches did not return; also gives
    the existing rows those frames may replace (and the snapshot they were read from)."""
    server_time = await server_now(client)
    out = EventsRead()
    snap = sink.snapshot("pi_event_frames")
    windows = [(db, filters.app_id(db), *_window(snap, filters.app_id(db), settings, overlap, server_time))
               for db in dbs]
    out.since = min((w[2] for w in windows), default=None)
    existing = _existing_frames(snap, out.since)
    now = datetime.now(UTC)
    seen: dict[str, Row] = {}
    for db, app_id, start, end in windows:
        out.windows[app_id] = (start, end)
        progress.start(None, f"events {db.path} [{start.isoformat()}, {end.isoformat()}]")
        parts = max(1, settings.concurrency // 2)
        for row in await search_frames(client, db, start, end, filters, page_size, progress, now, parts=parts):
            seen[row["webid"]] = row
    still_open = open_frames(existing, dbs, set(seen))
    if still_open:
        progress.note(f"re-reading {len(still_open)} event frames that were in progress")
        again, out.gone = await reread_frames(client, still_open, dbs, now)
        for row in again:
            seen[row["webid"]] = row
    out.frames = list(seen.values())
    return out, (snap, existing)


async def run_events(
    settings: PiflowSettings, progress: Progress | None = None, *, database: str | None = None,
    template: str | None = None, category: str | None = None, name: str | None = None,
    referenced_element: str | None = None, overlap: str = "1h", attributes: bool = True,
    page_size: int = PAGE_SIZE,
) -> RunResult:
    """Read event frames (and their attribute values) of one database (or all) incrementally."""
    try:
        lap = parse_interval(overlap)
    except ValueError as exc:
        raise ConfigError("overlap", str(exc)) from exc
    filters = Filters(template, category, name, referenced_element)
    async with job_run("events", settings, progress) as run:
        sink, result, progress, client = run.sink, run.result, run.progress, run.client
        listed, _ = await list_databases(client)
        dbs = [d for d in listed if database_matches(d.server, d.name, database)]
        if database is not None and not dbs:
            raise no_such_database(database, listed)
        read, frames_read = await _read(client, sink, settings, dbs, filters, lap, page_size, progress)
        now = datetime.now(UTC)
        changes = frame_changes(frames_read[1], read, now)
        attr_diff = None
        if attributes:
            attr_diff = await _attribute_changes(client, sink, changes, read.frames, progress, now)
        await run.close_client()
        meta = {"piflow.job": "events", "piflow.run_id": result.run_id}
        attrs_written = [] if attr_diff is None else write_changes(
            sink, "pi_event_frame_attributes", attr_diff.changes, af_schema.PI_EVENT_FRAME_ATTRIBUTES,
            af_schema.PI_EVENT_FRAME_ATTRIBUTES_KEY, existing=attr_diff.existing, first=attr_diff.first,
            metadata=meta)

        def marks(snap: Snapshot) -> list[tuple[str, int]]:
            """Each search's end as its watermark, which never moves back."""
            return [(app_id, max(_us(end), _us(watermark(snap, app_id) or end)))
                    for app_id, (_, end) in read.windows.items()]

        written = write_changes(
            sink, "pi_event_frames", lambda rows: frame_changes(rows, read, now), af_schema.PI_EVENT_FRAMES,
            af_schema.PI_EVENT_FRAMES_KEY, existing=lambda snap: _existing_frames(snap, read.since),
            first=frames_read, transactions=marks, metadata=meta)
        _report(result, sink, read, written, attrs_written, progress)
    return result


def frame_changes(existing: Iterable[Row], read: EventsRead, now: datetime) -> list[Row]:
    """Changed or new frames, and tombstones for open frames the server no longer knows (pure)."""
    gone = set(read.gone)
    return merge_changes(existing, read.frames, _FRAME_COMPARED, lambda r: r["webid"] in gone, now)


class AttributeDiff(NamedTuple):
    """How to compare the attribute values read with ``pi_event_frame_attributes`` (see write_changes)."""

    changes: Callable[[list[Row]], list[Row]]
    existing: Callable[[Snapshot], list[Row]]
    first: tuple[Snapshot, list[Row]]


async def _attribute_changes(client: PiClient, sink: DeltaSink, changes: Sequence[Row], frames: Sequence[Row],
                             progress: Progress, now: datetime) -> AttributeDiff | None:
    """Read the attribute values the changed frames need (None when none does)."""
    webids = [f["webid"] for f in frames]
    snap = sink.snapshot("pi_event_frame_attributes")
    existing = _existing_attributes(snap, webids)
    todo = needs_attributes(changes, frames, {r["frame_webid"] for r in existing})
    if not todo:
        return None
    progress.start(len(todo), "events: attribute values")
    values = await read_attribute_values(client, todo)
    current = [row for w, items in values.items() for row in frame_attribute_rows(w, items, now)]
    reread = set(values)
    return AttributeDiff(
        changes=lambda rows: merge_changes(rows, current, _ATTR_COMPARED, lambda r: r["frame_webid"] in reread, now),
        existing=lambda s: _existing_attributes(s, webids), first=(snap, existing))


def _us(dt: datetime) -> int:
    return to_ticks(dt) // 10


def _report(result: RunResult, sink: DeltaSink, read: EventsRead, changes: Sequence[Row],
            attr_changes: Sequence[Row], progress: Progress) -> None:
    removed, unknown = _element_notes(sink, read.frames)
    notes = []
    if read.gone:
        notes.append(f"{len(read.gone)} event frames that were in progress no longer exist on the server "
                     "(tombstoned)")
    if removed:
        notes.append(f"{removed} event frames reference AF elements that were removed (frames kept with the old "
                     "element WebID; the elements are tombstoned in pi_af_elements)")
    for note in notes:
        progress.note(note)
        log.warning("%s", note)
    starts = [w[0] for w in read.windows.values()]
    ends = [w[1] for w in read.windows.values()]
    result.window_start = min(starts) if starts else None
    result.window_end = max(ends) if ends else None
    result.points = len(read.frames)
    result.values_written = len(changes) + len(attr_changes)
    result.message = "; ".join(notes)
    result.details = {
        "frames": len(read.frames), "frames_changed": len(changes),
        "in_progress": sum(1 for f in read.frames if f["in_progress"]),
        "attributes_changed": len(attr_changes), "frames_gone": len(read.gone),
        "frames_with_removed_element": removed, "frames_with_unknown_element": unknown,
    }

