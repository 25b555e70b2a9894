"""``piflow af``: the AF hierarchy into ``pi_af_elements`` and ``pi_af_attributes`` without N+1 round trips.

Per database, one ``/batch`` per page of 1000 elements carries the page itself (``searchFullHierarchy=true``, a
flat depth-first list) and, through a ``RequestTemplate`` on ``$.page.Content.Items[*].WebId``, the attributes of
every element of that page. A PI point reference comes resolved by the server (the attribute's ``Point`` link
holds the point's Full WebID, the one ``pi_points`` holds); only dangling or substituted references are asked
with ``points/multiple``, and static values are read with ``streamsets/value``, chunked into a few more
``/batch`` calls. 10,000 elements cost about 20 requests instead of 10,000.

Rows are merged on WebID like ``discover`` does: only new or changed rows are written, objects that vanished
from a database that was read completely get a tombstone (``is_deleted``), so a re-run over an unchanged model
commits nothing. A database that disappears *during* a run is left untouched (a clear message says so); the
next run tombstones it.

The request plumbing here (:func:`send_batch`, :func:`fetch_many`, :func:`fanout_pages`, :func:`paged_items`)
is shared with ``piflow events`` and ``piflow view``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

import orjson
import pyarrow as pa

from piflow import af_schema
from piflow.client.api import BatchItem
from piflow.client.http import errors_of
from piflow.errors import NotFoundError, PiApiError
from piflow.jobs.common import RunRecorder, RunResult, merge_changes, open_client, take_client_counters
from piflow.progress import NullProgress, Progress
from piflow.sinks.delta import DeltaSink

if TYPE_CHECKING:
    from piflow.client.api import PiClient
    from piflow.config import PiflowSettings

log = logging.getLogger(__name__)

Json = dict[str, Any]
Row = dict[str, Any]
A = TypeVar("A")  # the answer to one page request
P = TypeVar("P")  # what a page is yielded as
_FanoutParts = tuple[int, list[Json], list[BatchItem] | None]  # a fan-out page: start, items, children (None: refused)

PAGE_SIZE = 1000
BATCH_ITEMS = 500  # sub-requests per explicit /batch call
CHUNK = 100  # WebIDs or paths per points/multiple or streamsets/value sub-request
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})

ELEMENT_FIELDS = ("Items.WebId;Items.Id;Items.Name;Items.Description;Items.Path;Items.TemplateName;"
                  "Items.HasChildren;Items.CategoryNames;Items.Links.Parent")
ATTRIBUTE_FIELDS = ("Items.WebId;Items.Id;Items.Name;Items.Description;Items.Path;Items.Type;Items.TypeQualifier;"
                    "Items.DefaultUnitsName;Items.DefaultUnitsNameAbbreviation;Items.DataReferencePlugIn;"
                    "Items.ConfigString;Items.IsConfigurationItem;Items.IsExcluded;Items.IsHidden;"
                    "Items.HasChildren;Items.CategoryNames;Items.Step;Items.Links.Point;Items.Links.Parent")
POINT_FIELDS = "Items.Identifier;Items.Object.WebId;Items.Object.Path;Items.Exception"
VALUE_FIELDS = "Items.WebId;Items.Value;Items.Exception;Items.Errors"

_ELEMENT_COMPARED = ("id", "server", "database", "database_webid", "name", "path", "description", "parent_webid",
                     "depth", "template", "categories", "has_children", "is_deleted")
_ATTRIBUTE_COMPARED = tuple(n for n in af_schema.PI_AF_ATTRIBUTES.names if n not in ("webid", "first_seen",
                                                                                     "last_seen"))


# =====================================================================================================================
# Batch plumbing (shared with events and view)
# =====================================================================================================================
def resource(path: str, params: Iterable[tuple[str, Any]] = ()) -> str:
    """A relative resource with its query string, as a ``/batch`` item carries it."""
    pairs = [(k, _param_text(v)) for k, v in params]
    return f"{path}?{urlencode(pairs, quote_via=quote, safe='')}" if pairs else path


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def item_error(item: BatchItem, what: str = "") -> PiApiError | None:
    """The exception a plain request with this answer would have raised (None when it succeeded)."""
    try:
        item.raise_for_status()
    except PiApiError as exc:
        if what:
            exc.message = f"{what}: {exc.message}"
            exc.args = (exc.message,)
        return exc
    return None


def sub_items(content: Any) -> list[BatchItem] | None:
    """The fanned-out answers inside a ``RequestTemplate`` reply (None when the shape is not that)."""
    items = content.get("Items") if isinstance(content, dict) else None
    if not isinstance(items, list):
        return None
    out = []
    for i, raw in enumerate(items):
        if not isinstance(raw, dict) or not isinstance(raw.get("Status"), int):
            return None
        body = raw.get("Content")
        if isinstance(body, str) and body[:1] in ("{", "["):
            with contextlib.suppress(orjson.JSONDecodeError):
                body = orjson.loads(body)
        headers = raw.get("Headers") or {}
        out.append(BatchItem(status=raw["Status"], headers={str(k): str(v) for k, v in headers.items()},
                             content=body, id=str(i)))
    return out


def retry_closure(body: Mapping[str, Mapping[str, Any]], answers: Mapping[str, BatchItem]) -> set[str]:
    """Ids to send again after transient failures: the failed ones, their children (answered 409) and the
    parents those need for their JSONPath parameters (pure)."""
    redo = {k for k, a in answers.items() if a.status in TRANSIENT}
    if not redo:
        return set()
    parents = {k: list(v.get("ParentIds") or []) for k, v in body.items()}
    grew = True
    while grew:
        grew = False
        for k, ps in parents.items():
            if k not in redo and any(p in redo for p in ps):
                redo.add(k)
                grew = True
    stack = list(redo)
    while stack:
        for p in parents.get(stack.pop(), []):
            if p not in redo:
                redo.add(p)
                stack.append(p)
    return redo


async def send_batch(client: PiClient, body: Mapping[str, Mapping[str, Any]]) -> dict[str, BatchItem]:
    """One ``/batch`` call; items that failed transiently (429, 5xx) are sent again with backoff."""
    answers = await client.batch(body)
    policy = client.http.retry
    attempt = 1
    while True:
        redo = retry_closure(body, answers)
        if not redo or not policy.should_retry(attempt):
            return answers
        log.warning("batch: %d of %d items failed transiently, sending them again (attempt %d)", len(redo),
                    len(body), attempt + 1)
        await asyncio.sleep(policy.delay(attempt, None))
        attempt += 1
        answers.update(await client.batch({k: body[k] for k in redo}))


async def fetch_many(client: PiClient, resources: Sequence[str], *, per_batch: int = BATCH_ITEMS,
                     parallel: int = 2) -> list[BatchItem]:
    """GET every resource through as few ``/batch`` calls as possible; answers in the order asked."""
    chunks = [resources[i:i + per_batch] for i in range(0, len(resources), per_batch)]
    gate = asyncio.Semaphore(max(1, parallel))

    async def one(chunk: Sequence[str]) -> list[BatchItem]:
        async with gate:
            answers = await send_batch(client, {str(i): {"Method": "GET", "Resource": r} for i, r in enumerate(chunk)})
        return [answers[str(i)] for i in range(len(chunk))]

    parts = await asyncio.gather(*(one(c) for c in chunks))
    return [a for part in parts for a in part]


@dataclass
class FanoutPage:
    """One page of a list and, aligned with its items, the answer to the child request of every item."""

    start: int
    items: list[Json]
    children: list[BatchItem]
    fallback: bool = False  # the template was refused and the children were read with explicit requests


def page_items(item: BatchItem, what: str) -> list[Json]:
    """The ``Items`` of a list answer inside a batch; raises the PI error when the page request failed."""
    exc = item_error(item, what)
    if exc is not None:
        raise exc
    items = item.content.get("Items") if isinstance(item.content, dict) else None
    if not isinstance(items, list):
        raise PiApiError(f"{what}: the answer has no Items list", url=item.resource)
    return [i for i in items if isinstance(i, dict)]


def split_fanout(page: BatchItem, children: BatchItem, what: str) -> tuple[list[Json], list[BatchItem] | None]:
    """(page items, their child answers) or None for the children when the fan-out itself was refused.

    An empty page selects nothing, so PI answers the template with 400: that is the end of the list, not an
    error. A child answer of 409 (failed parent) cannot happen here, since a failed page raises first.
    """
    items = page_items(page, what)
    if not items:
        if children.status >= 400:
            log.debug("%s: empty page; the fan-out answered %d (nothing selected), as PI does", what, children.status)
        return [], []
    subs = sub_items(children.content) if children.status < 400 else None
    if subs is None or len(subs) != len(items):
        errs = "; ".join(errors_of(orjson.dumps(children.content))) if children.content is not None else ""
        log.warning("%s: the batch answered %d to the fan-out over %d items (%s); reading them with explicit "
                    "requests instead", what, children.status, len(items), errs or "unexpected shape")
        return items, None
    return items, subs


async def _lookahead_pages(fetch: Callable[[int], Coroutine[Any, Any, A]],
                           read: Callable[[int, A], tuple[list[Any], P]], what: str, *, page_size: int,
                           lookahead: int) -> AsyncGenerator[P, None]:
    """The pages of a ``startIndex``/``maxCount`` list in order: ``fetch(start)`` asks for one page, ``read(start,
    answer)`` turns its answer into (the list's items on that page, what to yield); the short page and the
    repeated first WebId are judged on those items.

    Up to ``lookahead`` requests are in flight (the server prepares the next page while this one is decoded); the
    list ends at the first short page. A page whose first WebId is the previous page's raises: the server ignores
    ``startIndex``. The shared loop of :func:`fanout_pages` and :func:`paged_items`.
    """
    inflight: deque[tuple[int, asyncio.Task[A]]] = deque()
    next_start = 0

    def launch() -> None:
        nonlocal next_start
        inflight.append((next_start, asyncio.create_task(fetch(next_start))))
        next_start += page_size

    previous_first: Any = None
    finished = False
    try:
        for _ in range(max(1, lookahead)):
            launch()
        while inflight:
            start, task = inflight.popleft()
            items, page = read(start, await task)
            first = items[0].get("WebId") if items and isinstance(items[0], dict) else None
            if first is not None and first == previous_first:
                raise PiApiError(f"{what}: the server returned the same page again; it ignores startIndex")
            previous_first = first
            yield page
            if len(items) < page_size:
                finished = True
                break
            launch()
    finally:
        # Pages past the end are let finish (cancelling them drops connections the server then complains
        # about); on an error, or when the caller stops early, they are cancelled.
        if not finished:
            for _, task in inflight:
                task.cancel()
        await asyncio.gather(*(t for _, t in inflight), return_exceptions=True)


async def fanout_pages(client: PiClient, list_path: str, params: Sequence[tuple[str, Any]], child: str, *,
                       page_size: int = PAGE_SIZE, lookahead: int = 2, what: str = "") -> AsyncIterator[FanoutPage]:
    """Every page of a ``startIndex``/``maxCount`` list with the child request ``child`` (``{0}`` = an item's
    WebId) answered for each item in the same ``/batch``. Up to ``lookahead`` pages are in flight; the pages
    past the end come back empty and are dropped."""
    what = what or list_path

    def fetch(start: int) -> Coroutine[Any, Any, dict[str, BatchItem]]:
        body: dict[str, dict[str, Any]] = {
            "page": {"Method": "GET",
                     "Resource": resource(list_path, [*params, ("startIndex", start), ("maxCount", page_size)])},
            "children": {"Method": "GET", "ParentIds": ["page"], "Parameters": ["$.page.Content.Items[*].WebId"],
                         "RequestTemplate": {"Resource": child}},
        }
        return send_batch(client, body)

    def read(start: int, answers: dict[str, BatchItem]) -> tuple[list[Json], _FanoutParts]:
        items, subs = split_fanout(answers["page"], answers["children"], f"{what} (startIndex {start})")
        return items, (start, items, subs)

    # aclosing: when this generator stops (an error, or a caller that stops early), the pages in flight are
    # cancelled at once, not whenever the inner generator is collected.
    async with contextlib.aclosing(_lookahead_pages(fetch, read, what, page_size=page_size,
                                                    lookahead=lookahead)) as pages:
        async for start, items, subs in pages:
            fallback = subs is None
            if subs is None:
                subs = await fetch_many(client, [child.replace("{0}", str(i.get("WebId"))) for i in items])
            yield FanoutPage(start, items, subs, fallback)


def paged_items(client: PiClient, path: str, params: Sequence[tuple[str, str | int | float | bool]], *,
                page_size: int = PAGE_SIZE, lookahead: int = 2) -> AsyncIterator[list[Json]]:
    """The pages of a ``startIndex``/``maxCount`` list in order, with up to ``lookahead`` requests in flight (so
    the server prepares the next page while this one is decoded); ends at the first short page."""

    def fetch(start: int) -> Coroutine[Any, Any, Any]:
        return client.http.get_json(path, [*params, ("startIndex", start), ("maxCount", page_size)])

    def read(start: int, doc: Any) -> tuple[list[Any], list[Json]]:
        items = doc.get("Items") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise PiApiError(f"{path} (startIndex {start}): the answer has no Items list")
        return items, [i for i in items if isinstance(i, dict)]

    return _lookahead_pages(fetch, read, path, page_size=page_size, lookahead=lookahead)


def link_webid(obj: Json, name: str) -> str | None:
    """The WebID at the end of a ``Links`` entry (``.../points/F1DP...`` -> ``F1DP...``)."""
    links = obj.get("Links")
    url = links.get(name) if isinstance(links, dict) else None
    if not isinstance(url, str) or "/" not in url:
        return None
    return url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or None


def value_text(value: Any) -> tuple[str | None, float | None]:
    """A PI value as (text, number): states by name, booleans as true/false and 1/0 (pure)."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return ("true" if value else "false"), float(value)
    if isinstance(value, int | float):
        return (str(value) if isinstance(value, int) else repr(float(value))), float(value)
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and "Name" in value:
        return str(value.get("Name")), None
    return orjson.dumps(value).decode("utf-8"), None


def stream_error(item: Json) -> str | None:
    """The error a stream-set item carries (``Exception.Errors``, ``Errors`` or in its value), if any."""
    for holder in (item.get("Exception"), item, item.get("Value")):
        if isinstance(holder, dict):
            errs = holder.get("Errors")
            if isinstance(errs, list) and errs:
                return "; ".join(str(e) for e in errs)
    return None


# =====================================================================================================================
# Table plumbing (shared)
# =====================================================================================================================
def read_rows(sink: DeltaSink, name: str) -> list[Row]:
    """Every row of a table as dicts (none when the table does not exist yet)."""
    if sink.table(name) is None:
        return []
    rows: list[Row] = sink.read(name).to_pylist()
    return rows


def write_changes(sink: DeltaSink, name: str, rows: list[Row], schema: pa.Schema, key: Sequence[str],
                  transactions: Iterable[tuple[str, int]] = ()) -> int:
    """Merge the rows on ``key`` in one commit (a plain append when the table does not exist yet: nothing to
    match, and much faster for a first load)."""
    if not rows:
        return 0
    data = pa.Table.from_pylist(rows, schema=schema)
    if sink.table(name) is None:
        sink.append(name, data, transactions=transactions)
    else:
        sink.upsert(name, data, key, transactions=transactions)
    return len(rows)


# =====================================================================================================================
# Databases
# =====================================================================================================================
@dataclass(frozen=True)
class Database:
    server: str
    webid: str
    name: str
    path: str


async def list_databases(client: PiClient) -> tuple[list[Database], set[str]]:
    """Every database of every asset server, and the names of the servers that answered."""
    out: list[Database] = []
    servers: set[str] = set()
    async for srv in client.iter_list("assetservers", [("selectedFields", "Items.WebId;Items.Name")]):
        servers.add(str(srv.get("Name")))
        async for db in client.iter_list(f"assetservers/{srv['WebId']}/assetdatabases",
                                         [("selectedFields", "Items.WebId;Items.Name;Items.Path")]):
            out.append(Database(str(srv.get("Name")), str(db["WebId"]), str(db["Name"]), str(db.get("Path") or "")))
    return out, servers


def database_matches(db_server: str, db_name: str, wanted: str | None) -> bool:
    r"""``wanted`` is a database name (``Plant``) or path (``\\AFSERVER\Plant``), case-insensitive."""
    if wanted is None:
        return True
    text = wanted.strip().lstrip("\\")
    if "\\" in text:
        server, _, name = text.partition("\\")
        return server.upper() == db_server.upper() and name.upper() == db_name.upper()
    return text.upper() == db_name.upper()


def no_such_database(wanted: str, dbs: Sequence[Database]) -> NotFoundError:
    known = ", ".join(f"\\\\{d.server}\\{d.name}" for d in dbs) or "none"
    return NotFoundError(f"asset database {wanted!r} not found (the asset servers have: {known})")


# =====================================================================================================================
# Reading one database
# =====================================================================================================================
@dataclass
class DatabaseRead:
    db: Database
    elements: list[Json] = field(default_factory=list)
    attributes: dict[str, list[Json]] = field(default_factory=dict)  # element WebId -> its attributes
    vanished: str | None = None  # why the database could not be read (it went away during the run)
    removed_elements: int = 0  # elements listed but gone before their attributes were read
    fallbacks: int = 0


def attributes_resource(webid: str, start: int, page_size: int) -> str:
    return resource(f"elements/{webid}/attributes", [("searchFullHierarchy", True), ("startIndex", start),
                                                     ("maxCount", page_size), ("selectedFields", ATTRIBUTE_FIELDS)])


async def read_database(client: PiClient, db: Database, *, page_size: int = PAGE_SIZE, lookahead: int = 2,
                        progress: Progress | None = None) -> DatabaseRead:
    """Every element of ``db`` and every attribute of each (all pages of both)."""
    out = DatabaseRead(db)
    progress = progress or NullProgress()
    child = attributes_resource("{0}", 0, page_size)
    params = [("searchFullHierarchy", True), ("selectedFields", ELEMENT_FIELDS)]
    seen: set[str] = set()
    full: list[str] = []
    try:
        async for page in fanout_pages(client, f"assetdatabases/{db.webid}/elements", params, child,
                                       page_size=page_size, lookahead=lookahead, what=f"elements of {db.path}"):
            out.fallbacks += page.fallback
            full += await _take_page(client, out, page, seen, page_size)
            progress.advance(len(page.items))
    except NotFoundError as exc:
        if not await _database_gone(client, db):
            raise
        out.vanished = str(exc)
        return out
    await _more_attribute_pages(client, out, full, page_size)
    return out


async def _database_gone(client: PiClient, db: Database) -> bool:
    """Whether a 404 met while reading ``db`` means the database itself is gone (asked once, to be sure)."""
    try:
        await client.http.get_json(f"assetdatabases/{db.webid}", [("selectedFields", "WebId")])
    except NotFoundError:
        return True
    return False


async def _take_page(client: PiClient, out: DatabaseRead, page: FanoutPage, seen: set[str],
                     page_size: int) -> list[str]:
    """Keep a page's elements and attributes; returns the elements whose attribute page was full."""
    answers = list(page.children)
    failed = [i for i, a in enumerate(answers) if not a.ok and a.status != 404]
    if failed:  # one more go, with explicit requests (transient failures are retried inside)
        again = await fetch_many(client, [attributes_resource(page.items[i]["WebId"], 0, page_size) for i in failed])
        for i, a in zip(failed, again, strict=True):
            answers[i] = a
    full: list[str] = []
    for elem, answer in zip(page.items, answers, strict=True):
        webid = str(elem["WebId"])
        if webid in seen:
            continue
        if answer.status == 404:
            out.removed_elements += 1
            log.warning("element %s was removed while its attributes were being read; it is treated as gone",
                        elem.get("Path"))
            continue
        attrs = page_items(answer, f"attributes of element {elem.get('Path')}")
        seen.add(webid)
        out.elements.append(elem)
        out.attributes[webid] = attrs
        if len(attrs) >= page_size:
            full.append(webid)
    return full


async def _more_attribute_pages(client: PiClient, out: DatabaseRead, pending: list[str], page_size: int) -> None:
    """Elements with more attributes than a page: read the next pages until a short one."""
    start = page_size
    while pending:
        answers = await fetch_many(client, [attributes_resource(w, start, page_size) for w in pending])
        nxt = []
        for webid, answer in zip(pending, answers, strict=True):
            items = page_items(answer, f"attributes of element {webid} (startIndex {start})")
            out.attributes[webid].extend(items)
            if len(items) >= page_size:
                nxt.append(webid)
        pending, start = nxt, start + page_size


# =====================================================================================================================
# PI point references and static values
# =====================================================================================================================
def point_path_hint(config: str | None) -> str | None:
    r"""The ``\\SERVER\TAG`` a PI Point config string names, when it can be read without the server (pure):
    options after ``;`` and a ``?id`` suffix are dropped; substitutions (``%Element%``) give None."""
    if not config:
        return None
    text = config.split(";", 1)[0].split("?", 1)[0].strip()
    if "%" in text or not text.startswith("\\\\"):
        return None
    parts = text[2:].split("\\")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        return None
    return text


@dataclass(frozen=True)
class PointRef:
    webid: str | None
    path: str | None
    error: str | None = None


def point_queries(attrs: Iterable[Json]) -> tuple[list[str], list[str]]:
    """What is left to ask the server (pure): the paths of references the server gave no ``Point`` link for
    (dangling ones, to say why), and the linked WebIDs whose path the config string does not spell out."""
    paths: dict[str, str] = {}
    webids: dict[str, str] = {}
    for a in attrs:
        if not is_point_reference(a):
            continue
        hint = point_path_hint(a.get("ConfigString"))
        link = link_webid(a, "Point")
        if link is None and hint is not None:
            paths.setdefault(hint.upper(), hint)
        elif link is not None and hint is None:
            webids.setdefault(link, link)
    return list(paths.values()), list(webids.values())


def is_point_reference(attr: Json) -> bool:
    return str(attr.get("DataReferencePlugIn") or "").strip().upper() == "PI POINT"


async def items_per_ask(client: PiClient, path: str, asks: Sequence[tuple[str, str]], fields: str, *,
                        chunk: int = CHUNK, each: str = "item") -> list[Any]:
    """One answer item per ask, in order: the asks (query parameters such as ``("webId", w)``) chunked into
    ``path`` calls sent through ``/batch``. Raises when a call fails or does not hold one item per ask."""
    groups = [asks[i:i + chunk] for i in range(0, len(asks), chunk)]
    resources = [resource(path, [*g, ("selectedFields", fields)]) for g in groups]
    out: list[Any] = []
    for group, answer in zip(groups, await fetch_many(client, resources), strict=True):
        exc = item_error(answer, path)
        if exc is not None:
            raise exc
        items = answer.content.get("Items") if isinstance(answer.content, dict) else None
        if not isinstance(items, list) or len(items) != len(group):
            raise PiApiError(f"{path}: the answer does not hold one item per {each} asked for", url=answer.resource)
        out.extend(items)
    return out


async def resolve_points(client: PiClient, paths: Sequence[str], webids: Sequence[str],
                         chunk: int = CHUNK) -> dict[str, PointRef]:
    """``points/multiple`` by path (and by WebID for the rest), chunked into ``/batch`` calls.

    Keys are upper-cased paths and WebIDs as given; a point the server does not know maps to a PointRef with
    an error and no WebID."""
    asks = [("path", p) for p in paths] + [("webId", w) for w in webids]
    if not asks:
        return {}
    items = await items_per_ask(client, "points/multiple", asks, POINT_FIELDS, chunk=chunk, each="point")
    return {ident.upper() if kind == "path" else ident: _point_ref(kind, ident, item)
            for (kind, ident), item in zip(asks, items, strict=True)}


def _point_ref(kind: str, ident: str, item: Any) -> PointRef:
    obj = item.get("Object") if isinstance(item, dict) else None
    if isinstance(obj, dict) and obj.get("WebId"):
        path = obj.get("Path") or (ident if kind == "path" else None)
        return PointRef(str(obj["WebId"]), None if path is None else str(path))
    exc = item.get("Exception") if isinstance(item, dict) else None
    errs = exc.get("Errors") if isinstance(exc, dict) else None
    why = "; ".join(str(e) for e in errs) if isinstance(errs, list) and errs else "not found"
    what = ident if kind == "path" else f"with WebID {ident}"
    return PointRef(None, ident if kind == "path" else None, f"PI point {what} does not exist ({why})")


def point_of(attr: Json, refs: Mapping[str, PointRef]) -> PointRef:
    """The point of a PI Point attribute (pure): the server's own resolution (the attribute's ``Point`` link, a
    Full WebID as ``pi_points`` holds it) with the path its config string names, else what ``points/multiple``
    answered for the path or the link."""
    hint = point_path_hint(attr.get("ConfigString"))
    link = link_webid(attr, "Point")
    if link is not None and hint is not None:
        return PointRef(link, hint)
    key = link if link is not None else hint.upper() if hint is not None else None
    if key is not None:
        return refs.get(key, PointRef(None, hint, f"PI point {hint or link} was not resolved"))
    return PointRef(None, None, f"the PI Point reference {attr.get('ConfigString')!r} names no point the server "
                                "could resolve")


def is_static(attr: Json) -> bool:
    return not str(attr.get("DataReferencePlugIn") or "").strip()


async def read_static_values(client: PiClient, webids: Sequence[str], chunk: int = CHUNK) -> dict[str, Json]:
    """Current values of static attributes with ad hoc ``streamsets/value`` calls, chunked into ``/batch``."""
    if not webids:
        return {}
    items = await items_per_ask(client, "streamsets/value", [("webId", w) for w in webids], VALUE_FIELDS,
                                chunk=chunk, each="attribute")
    return {w: item if isinstance(item, dict) else {} for w, item in zip(webids, items, strict=True)}


# =====================================================================================================================
# Rows (pure)
# =====================================================================================================================
def element_rows(read: DatabaseRead, now: datetime) -> list[Row]:
    """``pi_af_elements`` rows of one database; parents from paths (a flat list carries no tree)."""
    db = read.db
    by_path = {str(e.get("Path") or "").upper(): str(e["WebId"]) for e in read.elements}
    prefix = db.path.rstrip("\\") + "\\"
    rows = []
    for e in read.elements:
        path = str(e.get("Path") or "")
        rel = path[len(prefix):] if path.upper().startswith(prefix.upper()) else path.lstrip("\\")
        parent_path = path.rsplit("\\", 1)[0]
        parent = None
        if "\\" in rel:
            parent = by_path.get(parent_path.upper()) or link_webid(e, "Parent")
        rows.append({
            "webid": str(e["WebId"]), "id": e.get("Id"), "server": db.server, "database": db.name,
            "database_webid": db.webid, "name": str(e.get("Name") or ""), "path": path,
            "description": e.get("Description") or None, "parent_webid": parent, "depth": rel.count("\\"),
            "template": e.get("TemplateName") or None, "categories": list(e.get("CategoryNames") or []),
            "has_children": e.get("HasChildren"), "is_deleted": False, "first_seen": now, "last_seen": now,
        })
    return rows


def attribute_rows(read: DatabaseRead, points: Mapping[str, PointRef], values: Mapping[str, Json],
                   now: datetime) -> list[Row]:
    """``pi_af_attributes`` rows of one database (parents from paths, points and static values resolved)."""
    rows = []
    for e in read.elements:
        ewebid = str(e["WebId"])
        attrs = read.attributes.get(ewebid, [])
        by_path = {str(a.get("Path") or "").upper(): str(a["WebId"]) for a in attrs}
        epath = str(e.get("Path") or "").upper()
        for a in attrs:
            rows.append(_attribute_row(a, ewebid, epath, by_path, read.db, points, values, now))
    return rows


def _attribute_row(a: Json, ewebid: str, epath: str, by_path: Mapping[str, str], db: Database,
                   points: Mapping[str, PointRef], values: Mapping[str, Json], now: datetime) -> Row:
    path = str(a.get("Path") or "")
    head = path.rpartition("|")[0]
    parent = None if head.upper() == epath else (by_path.get(head.upper()) or link_webid(a, "Parent"))
    row: Row = {
        "webid": str(a["WebId"]), "id": a.get("Id"), "element_webid": ewebid, "parent_webid": parent,
        "server": db.server, "database": db.name, "name": str(a.get("Name") or ""), "path": path,
        "description": a.get("Description") or None, "type": a.get("Type") or None,
        "type_qualifier": a.get("TypeQualifier") or None, "units": a.get("DefaultUnitsNameAbbreviation") or None,
        "units_name": a.get("DefaultUnitsName") or None, "data_reference": a.get("DataReferencePlugIn") or None,
        "config_string": a.get("ConfigString") or None, "static_value": None, "static_value_double": None,
        "point_path": None, "point_webid": None, "error": None, "categories": list(a.get("CategoryNames") or []),
        "is_configuration_item": a.get("IsConfigurationItem"), "is_excluded": a.get("IsExcluded"),
        "is_hidden": a.get("IsHidden"), "has_children": a.get("HasChildren"), "step": a.get("Step"),
        "is_deleted": False, "first_seen": now, "last_seen": now,
    }
    if is_point_reference(a):
        ref = point_of(a, points)
        row.update(point_webid=ref.webid, point_path=ref.path, error=ref.error)
    elif is_static(a) and row["webid"] in values:
        item = values[row["webid"]]
        err = stream_error(item)
        value = item.get("Value")
        text, number = value_text(value.get("Value") if isinstance(value, dict) else None)
        row.update(static_value=text, static_value_double=number, error=err)
    return row


# =====================================================================================================================
# The job
# =====================================================================================================================
def _scope(pairs: set[tuple[str, str]]) -> Callable[[Row], bool]:
    return lambda r: (str(r["server"]).upper(), str(r["database"]).upper()) in pairs


def vanished_databases(existing: Iterable[Row], listed: Sequence[Database], servers: set[str],
                       wanted: str | None) -> dict[tuple[str, str], tuple[str, str]]:
    """Databases with live rows that the asset servers no longer list (pure): upper-cased (server, database)
    -> the names as the rows spell them."""
    known = {(d.server.upper(), d.name.upper()) for d in listed}
    up_servers = {s.upper() for s in servers}
    out = {}
    for r in existing:
        pair = (str(r["server"]).upper(), str(r["database"]).upper())
        if (not r["is_deleted"] and pair not in known and pair[0] in up_servers
                and database_matches(r["server"], r["database"], wanted)):
            out[pair] = (str(r["server"]), str(r["database"]))
    return out


async def _read_all(client: PiClient, dbs: Sequence[Database], page_size: int, lookahead: int, progress: Progress,
                    seconds: dict[str, float]) -> tuple[list[DatabaseRead], dict[str, PointRef], dict[str, Json]]:
    t0 = time.monotonic()
    reads = []
    for db in dbs:
        progress.start(None, f"af {db.path}")
        read = await read_database(client, db, page_size=page_size, lookahead=lookahead, progress=progress)
        if read.vanished:
            log.warning("asset database %s disappeared during the run (%s); its rows are left unchanged",
                        db.path, read.vanished)
        reads.append(read)
    t1 = time.monotonic()
    attrs = [a for r in reads for lst in r.attributes.values() for a in lst]
    paths, links = point_queries(attrs)
    statics = [str(a["WebId"]) for a in attrs if is_static(a)]
    progress.start(len(paths) + len(links) + len(statics), "af: PI point references and static values")
    points, values = await asyncio.gather(resolve_points(client, paths, links), read_static_values(client, statics))
    seconds.update(elements_and_attributes=t1 - t0, points_and_values=time.monotonic() - t1)
    return reads, points, values


def _messages(reads: Sequence[DatabaseRead], gone: Iterable[tuple[str, str]], broken: int) -> list[str]:
    notes = []
    for r in reads:
        if r.vanished:
            notes.append(f"asset database {r.db.path} disappeared during the run; its rows were left unchanged "
                         "and will be tombstoned by the next run")
        if r.removed_elements:
            notes.append(f"{r.removed_elements} elements of {r.db.path} were removed during the run")
    for server, name in sorted(gone):
        notes.append(f"asset database \\\\{server}\\{name} no longer exists: its elements and attributes were "
                     "tombstoned")
    if broken:
        notes.append(f"{broken} attributes reference PI points that do not exist (kept with point_webid null; "
                     "see the error column)")
    return notes


async def run_af(settings: PiflowSettings, progress: Progress | None = None, *, database: str | None = None,
                 page_size: int = PAGE_SIZE) -> RunResult:
    """Read the asset model of one database (or all) into ``pi_af_elements`` and ``pi_af_attributes``."""
    progress = progress or NullProgress()
    sink = DeltaSink(settings.target)
    result = RunResult(job="af")
    seconds: dict[str, float] = {}
    with RunRecorder(sink, result):
        async with open_client(settings) as client:
            try:
                listed, servers = await list_databases(client)
                dbs = [d for d in listed if database_matches(d.server, d.name, database)]
                old_elements = read_rows(sink, "pi_af_elements")
                gone = vanished_databases(old_elements, listed, servers, database)
                if database is not None and not dbs and not gone:
                    raise no_such_database(database, listed)
                lookahead = max(1, min(settings.concurrency, 2))  # each batch is up to 1000 sub-requests
                reads, points, values = await _read_all(client, dbs, page_size, lookahead, progress, seconds)
            finally:
                take_client_counters(result, client)
        now = datetime.now(UTC)
        done = {(r.db.server.upper(), r.db.name.upper()) for r in reads if not r.vanished} | set(gone)
        current_e = [row for r in reads if not r.vanished for row in element_rows(r, now)]
        current_a = [row for r in reads if not r.vanished for row in attribute_rows(r, points, values, now)]
        e_changes = merge_changes(old_elements, current_e, _ELEMENT_COMPARED, _scope(done), now)
        a_changes = merge_changes(read_rows(sink, "pi_af_attributes"), current_a,
                                  _ATTRIBUTE_COMPARED, _scope(done), now)
        write_changes(sink, "pi_af_elements", e_changes, af_schema.PI_AF_ELEMENTS, af_schema.PI_AF_ELEMENTS_KEY)
        write_changes(sink, "pi_af_attributes", a_changes, af_schema.PI_AF_ATTRIBUTES,
                      af_schema.PI_AF_ATTRIBUTES_KEY)
        seconds["compare_and_write"] = (datetime.now(UTC) - now).total_seconds()
        broken = sum(1 for r in current_a if r["data_reference"] and r["error"] and r["point_webid"] is None
                     and is_point_reference({"DataReferencePlugIn": r["data_reference"]}))
        notes = _messages(reads, gone.values(), broken)
        for note in notes:
            progress.note(note)
        result.points = len(current_e)
        result.values_written = len(e_changes) + len(a_changes)
        result.message = "; ".join(notes)
        result.details = {
            "databases": [r.db.path for r in reads], "elements": len(current_e), "attributes": len(current_a),
            "elements_changed": len(e_changes), "attributes_changed": len(a_changes),
            "elements_tombstoned": sum(1 for c in e_changes if c["is_deleted"]),
            "attributes_tombstoned": sum(1 for c in a_changes if c["is_deleted"]),
            "broken_point_references": broken, "fallbacks": sum(r.fallbacks for r in reads),
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
        }
        progress.close()
    return result
