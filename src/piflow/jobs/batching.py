"""Request plumbing of the AF-side jobs (``af``, ``events``, ``view``): ``/batch`` calls whose transient failures are
sent again (:func:`send_batch`), many GETs through few ``/batch`` calls (:func:`fetch_many`, :func:`items_per_ask`),
and the pages of a ``startIndex``/``maxCount`` list, either with a child request per item fanned out in the same
``/batch`` (:func:`fanout_pages`) or plain (:func:`paged_items`).

It knows PI's paging and batch shapes, not the asset model: what the answers mean is the jobs' business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

import orjson

from piflow.client.api import BatchItem, keeping_links
from piflow.client.http import errors_of
from piflow.client.retry import Backoff, retriable
from piflow.errors import PiApiError, TransientError
from piflow.jobs.batch_direct import run_directly
from piflow.jobs.pi_json import Json
from piflow.jobs.streamset_direct import answer_directly, is_streamset, streamsets_missing

if TYPE_CHECKING:
    from piflow.client.api import PiClient

log = logging.getLogger(__name__)

A = TypeVar("A")  # the answer to one page request
P = TypeVar("P")  # what a page is yielded as
_FanoutParts = tuple[int, list[Json], list[BatchItem] | None]  # a fan-out page: start, items, children (None: refused)

PAGE_SIZE = 1000
BATCH_ITEMS = 500  # sub-requests per explicit /batch call
CHUNK = 100  # WebIDs or paths per points/multiple or streamsets/value sub-request


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


def transient_items(answers: Mapping[str, BatchItem]) -> dict[str, TransientError]:
    """The answers that failed transiently, each as the exception a plain request would have raised (pure)."""
    return {k: exc for k, a in answers.items() if (exc := item_error(a)) is not None and retriable(exc)}


async def send_batch(client: PiClient, body: Mapping[str, Mapping[str, Any]]) -> dict[str, BatchItem]:
    """One ``/batch`` call; items that failed transiently are sent again with the client's backoff, which
    honours their ``Retry-After``.

    A server without ``/batch`` (404, 405, 403, 501) gets the sub-requests as plain requests from then on; ids an
    answer left out are sent again once in a ``/batch``, then as plain requests, never dropped.
    """
    if client.caps.batch is False:
        return await run_directly(client, body)
    try:
        answers = await client.batch(body)
    except PiApiError as exc:
        if not _batch_refused(exc):
            raise
        client.caps.fallback("batch", f"the server refuses /batch (HTTP {exc.status}): making its sub-requests "
                                      "as plain requests")
        return await run_directly(client, body)
    client.caps.worked("batch")
    await _complete(client, body, answers)
    backoff = Backoff(client.http.retry, sleep=client.http.sleep)
    while True:
        failed = transient_items(answers)
        redo = closure(body, set(failed))
        delay = backoff.next_delay(*failed.values()) if redo else None
        if delay is None:
            return answers
        log.warning("batch: %d of %d items failed transiently, sending them again (attempt %d)", len(redo),
                    len(body), backoff.failures + 1)
        await backoff.wait(delay)
        again = {k: body[k] for k in redo}
        answers.update(await client.batch(again))
        await _complete(client, again, answers)


def _batch_refused(exc: PiApiError) -> bool:
    """The server has no usable ``/batch`` (rather than a failure of this one call)."""
    return exc.status in (403, 404, 405, 501) and not isinstance(exc, TransientError)


async def _complete(client: PiClient, body: Mapping[str, Mapping[str, Any]], answers: dict[str, BatchItem]) -> None:
    """Fill in the ids a ``/batch`` answer left out: once more through ``/batch``, then as plain requests."""
    missing = closure(body, {k for k in body if k not in answers})
    if not missing:
        return
    client.caps.note(f"the server's /batch answers leave request ids out ({len(missing)} of {len(body)} here): "
                     "sending those again, then as plain requests")
    answers.update(await client.batch({k: body[k] for k in missing}))
    still = closure(body, {k for k in body if k not in answers})
    if still:
        answers.update(await run_directly(client, {k: body[k] for k in still}))


def closure(body: Mapping[str, Mapping[str, Any]], seeds: set[str]) -> set[str]:
    """``seeds``, the requests that depend on them, and the parents all of those need (pure): what must be sent
    together for JSONPath parameters to resolve."""
    if not seeds:
        return set()
    redo = set(seeds)
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


async def fetch_many(client: PiClient, resources: Sequence[str], *, per_batch: int = BATCH_ITEMS,
                     parallel: int = 2) -> list[BatchItem]:
    """GET every resource through as few ``/batch`` calls as possible; answers in the order asked."""
    chunks = [resources[i:i + per_batch] for i in range(0, len(resources), per_batch)]
    gate = asyncio.Semaphore(max(1, parallel))

    async def one(chunk: Sequence[str]) -> list[BatchItem]:
        async with gate:
            answers = await send_batch(client, {str(i): {"Method": "GET", "Resource": r} for i, r in enumerate(chunk)})
        return [answers[str(i)] for i in range(len(chunk))]

    sets = [i for i, r in enumerate(resources) if is_streamset(r)] if client.caps.streamsets is not True else []
    if sets and client.caps.streamsets is None:  # one request tells, before hundreds are sent in vain
        if await streamsets_missing(client):
            client.caps.fallback("streamsets", "the server has no streamsets: reading each attribute's stream "
                                               "with its own call")
        else:
            client.caps.worked("streamsets")
    if sets and client.caps.streamsets is False:
        return await _without_streamsets(client, resources, per_batch, parallel, sets)
    parts = await asyncio.gather(*(one(c) for c in chunks))
    return [a for part in parts for a in part]


async def _without_streamsets(client: PiClient, resources: Sequence[str], per_batch: int, parallel: int,
                              sets: list[int]) -> list[BatchItem]:
    """The streamset resources answered from single streams, the others through ``/batch`` as usual."""
    others = [i for i in range(len(resources)) if i not in set(sets)]
    direct = await answer_directly(client, [resources[i] for i in sets])
    batched = await fetch_many(client, [resources[i] for i in others], per_batch=per_batch, parallel=parallel)
    out: list[BatchItem | None] = [None] * len(resources)
    for i, a in zip(sets, direct, strict=True):
        out[i] = a
    for i, a in zip(others, batched, strict=True):
        out[i] = a
    return [a for a in out if a is not None]


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


def next_link(doc: Any) -> str | None:
    """``Links.Next`` of a list answer: servers that page by links give the next page's URL there (pure)."""
    links = doc.get("Links") if isinstance(doc, dict) else None
    nxt = links.get("Next") if isinstance(links, dict) else None
    return nxt if isinstance(nxt, str) and nxt else None


async def _lookahead_pages(fetch: Callable[[int | str], Coroutine[Any, Any, A]],
                           read: Callable[[int, A], tuple[list[Any], P]], what: str, *, page_size: int,
                           lookahead: int, link: Callable[[A], str | None]) -> AsyncGenerator[P, None]:
    """The pages of a ``startIndex``/``maxCount`` list in order: ``fetch(start)`` asks for one page, ``read(start,
    answer)`` turns its answer into (the list's items on that page, what to yield); the short page and the
    repeated first WebId are judged on those items.

    Up to ``lookahead`` requests are in flight (the server prepares the next page while this one is decoded); the
    list ends at the first short page. A page whose first WebId is the previous page's raises: the server ignores
    ``startIndex``. An answer with ``link(answer)`` (``Links.Next``) switches to following the links one page
    at a time, to the first page without one. The shared loop of :func:`fanout_pages` and :func:`paged_items`.
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
            answer = await task
            items, page = read(start, answer)
            first = items[0].get("WebId") if items and isinstance(items[0], dict) else None
            if first is not None and first == previous_first:
                raise PiApiError(f"{what}: the server returned the same page again; it ignores startIndex")
            previous_first = first
            nxt = link(answer)
            if nxt is not None:
                for _, t in inflight:  # asked by startIndex, which a server that pages by links may ignore
                    t.cancel()
                await asyncio.gather(*(t for _, t in inflight), return_exceptions=True)
                inflight.clear()
                yield page
                count = start + len(items)
                while nxt is not None:
                    answer = await fetch(nxt)
                    items, page = read(count, answer)
                    count += len(items)
                    yield page
                    nxt = link(answer)
                finished = True
                break
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

    def fetch(start: int | str) -> Coroutine[Any, Any, dict[str, BatchItem]]:
        page = start if isinstance(start, str) else resource(
            list_path, [*keeping_links(params), ("startIndex", start), ("maxCount", page_size)])
        body: dict[str, dict[str, Any]] = {
            "page": {"Method": "GET", "Resource": page},
            "children": {"Method": "GET", "ParentIds": ["page"], "Parameters": ["$.page.Content.Items[*].WebId"],
                         "RequestTemplate": {"Resource": child}},
        }
        return send_batch(client, body)

    def read(start: int, answers: dict[str, BatchItem]) -> tuple[list[Json], _FanoutParts]:
        items, subs = split_fanout(answers["page"], answers["children"], f"{what} (startIndex {start})")
        return items, (start, items, subs)

    # aclosing: when this generator stops (an error, or a caller that stops early), the pages in flight are
    # cancelled at once, not whenever the inner generator is collected.
    def link(answers: dict[str, BatchItem]) -> str | None:
        return next_link(answers["page"].content) if answers["page"].ok else None

    async with contextlib.aclosing(_lookahead_pages(fetch, read, what, page_size=page_size,
                                                    lookahead=lookahead, link=link)) as pages:
        async for start, items, subs in pages:
            fallback = subs is None
            if subs is None:
                subs = await fetch_many(client, [child.replace("{0}", str(i.get("WebId"))) for i in items])
            yield FanoutPage(start, items, subs, fallback)


def paged_items(client: PiClient, path: str, params: Sequence[tuple[str, str | int | float | bool]], *,
                page_size: int = PAGE_SIZE, lookahead: int = 2) -> AsyncIterator[list[Json]]:
    """The pages of a ``startIndex``/``maxCount`` list in order, with up to ``lookahead`` requests in flight (so
    the server prepares the next page while this one is decoded); ends at the first short page."""

    def fetch(start: int | str) -> Coroutine[Any, Any, Any]:
        if isinstance(start, str):
            return client.http.get_json(start)
        return client.http.get_json(path, [*keeping_links(params), ("startIndex", start), ("maxCount", page_size)])

    def read(start: int, doc: Any) -> tuple[list[Any], list[Json]]:
        items = doc.get("Items") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise PiApiError(f"{path} (startIndex {start}): the answer has no Items list")
        return items, [i for i in items if isinstance(i, dict)]

    return _lookahead_pages(fetch, read, path, page_size=page_size, lookahead=lookahead, link=next_link)


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
