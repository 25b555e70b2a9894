"""Reading the asset model of one database from the server (the I/O half of ``piflow af``): every element and its
attributes through fan-out ``/batch`` pages, then the PI point references the server did not resolve and the
values of static attributes. :mod:`piflow.jobs.af.rows` turns what is read here into rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from piflow.client.api import keeping_links
from piflow.errors import NotFoundError, PiApiError
from piflow.jobs.af.databases import Database, DatabaseRead
from piflow.jobs.af.rows import AttributePoint
from piflow.jobs.batching import (
    CHUNK,
    PAGE_SIZE,
    FanoutPage,
    fanout_pages,
    fetch_many,
    items_per_ask,
    next_link,
    page_items,
    resource,
)
from piflow.jobs.pi_json import Json
from piflow.progress import NullProgress, Progress

if TYPE_CHECKING:
    from piflow.client.api import PiClient

log = logging.getLogger(__name__)

ELEMENT_FIELDS = ("Items.WebId;Items.Id;Items.Name;Items.Description;Items.Path;Items.TemplateName;"
                  "Items.HasChildren;Items.CategoryNames;Items.Links.Parent")
ATTRIBUTE_FIELDS = ("Items.WebId;Items.Id;Items.Name;Items.Description;Items.Path;Items.Type;Items.TypeQualifier;"
                    "Items.DefaultUnitsName;Items.DefaultUnitsNameAbbreviation;Items.DataReferencePlugIn;"
                    "Items.ConfigString;Items.IsConfigurationItem;Items.IsExcluded;Items.IsHidden;"
                    "Items.HasChildren;Items.CategoryNames;Items.Step;Items.Links.Point;Items.Links.Parent")
POINT_FIELDS = "Items.Identifier;Items.Object.WebId;Items.Object.Path;Items.Exception"
VALUE_FIELDS = "Items.WebId;Items.Value;Items.Exception;Items.Errors"


def attributes_resource(webid: str, start: int, page_size: int) -> str:
    return resource(f"elements/{webid}/attributes", keeping_links([
        ("searchFullHierarchy", True), ("startIndex", start), ("maxCount", page_size),
        ("selectedFields", ATTRIBUTE_FIELDS)]))


async def read_database(client: PiClient, db: Database, *, page_size: int = PAGE_SIZE, lookahead: int = 2,
                        progress: Progress | None = None) -> DatabaseRead:
    """Every element of ``db`` and every attribute of each (all pages of both)."""
    out = DatabaseRead(db)
    progress = progress or NullProgress()
    child = attributes_resource("{0}", 0, page_size)
    params = [("searchFullHierarchy", True), ("selectedFields", ELEMENT_FIELDS)]
    seen: set[str] = set()
    full: list[tuple[str, str | None]] = []
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
                     page_size: int) -> list[tuple[str, str | None]]:
    """Keep a page's elements and attributes; returns the elements whose attribute page was full, each with the
    link to its next page when the server pages by links."""
    answers = list(page.children)
    failed = [i for i, a in enumerate(answers) if not a.ok and a.status != 404]
    if failed:  # one more go, with explicit requests (transient failures are retried inside)
        again = await fetch_many(client, [attributes_resource(page.items[i]["WebId"], 0, page_size) for i in failed])
        for i, a in zip(failed, again, strict=True):
            answers[i] = a
    full: list[tuple[str, str | None]] = []
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
        link = next_link(answer.content)
        if link is not None or len(attrs) >= page_size:
            full.append((webid, link))
    return full


async def _more_attribute_pages(client: PiClient, out: DatabaseRead, pending: list[tuple[str, str | None]],
                                page_size: int) -> None:
    """Elements with more attributes than a page: read the next pages (by ``Links.Next`` where the server gives
    it, else by ``startIndex``) until a short page, or the last link."""
    start = page_size
    while pending:
        answers = await fetch_many(client, [link or attributes_resource(w, start, page_size) for w, link in pending])
        nxt = []
        for (webid, link), answer in zip(pending, answers, strict=True):
            items = page_items(answer, f"attributes of element {webid} (startIndex {start})")
            first = items[0].get("WebId") if items else None
            if first is not None and first == out.attributes[webid][0].get("WebId"):
                raise PiApiError(f"attributes of element {webid}: the server returned the first page again; it "
                                 "ignores startIndex", url=answer.resource)
            out.attributes[webid].extend(items)
            following = next_link(answer.content)
            if following is not None or (link is None and len(items) >= page_size):
                nxt.append((webid, following))
        pending, start = nxt, start + page_size


async def resolve_points(client: PiClient, paths: Sequence[str], webids: Sequence[str],
                         chunk: int = CHUNK) -> dict[str, AttributePoint]:
    """``points/multiple`` by path (and by WebID for the rest), chunked into ``/batch`` calls.

    Keys are upper-cased paths and WebIDs as given; a point the server does not know maps to an AttributePoint with
    an error and no WebID."""
    asks = [("path", p) for p in paths] + [("webId", w) for w in webids]
    if not asks:
        return {}
    items = await items_per_ask(client, "points/multiple", asks, POINT_FIELDS, chunk=chunk, each="point")
    return {ident.upper() if kind == "path" else ident: _point_ref(kind, ident, item)
            for (kind, ident), item in zip(asks, items, strict=True)}


def _point_ref(kind: str, ident: str, item: Any) -> AttributePoint:
    obj = item.get("Object") if isinstance(item, dict) else None
    if isinstance(obj, dict) and obj.get("WebId"):
        path = obj.get("Path") or (ident if kind == "path" else None)
        return AttributePoint(str(obj["WebId"]), None if path is None else str(path))
    exc = item.get("Exception") if isinstance(item, dict) else None
    errs = exc.get("Errors") if isinstance(exc, dict) else None
    why = "; ".join(str(e) for e in errs) if isinstance(errs, list) and errs else "not found"
    what = ident if kind == "path" else f"with WebID {ident}"
    return AttributePoint(None, ident if kind == "path" else None, f"PI point {what} does not exist ({why})")


async def read_static_values(client: PiClient, webids: Sequence[str], chunk: int = CHUNK) -> dict[str, Json]:
    """Current values of static attributes with ad hoc ``streamsets/value`` calls, chunked into ``/batch``."""
    if not webids:
        return {}
    items = await items_per_ask(client, "streamsets/value", [("webId", w) for w in webids], VALUE_FIELDS,
                                chunk=chunk, each="attribute")
    return {w: item if isinstance(item, dict) else {} for w, item in zip(webids, items, strict=True)}
