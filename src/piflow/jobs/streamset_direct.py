"""``streamsets/...`` answers built from ``streams/...`` calls, for servers that have no streamsets.

The AF-side jobs ask for one streamset per element or event frame (``streamsets/{owner}/value``,
``streamsets/{owner}/interpolated``) and for ad hoc sets of attributes (``streamsets/value?webId=...``). A
gateway or another implementation of the PI Web API may offer only single streams; then the owner's
attributes are listed (``elements/{owner}/attributes``, else ``eventframes/{owner}/attributes``) and each is
read with its own call. The answer has the streamset shape, so the jobs read it unchanged: one item per
stream with ``WebId``, ``Name``, ``Path`` and either its values or an ``Exception``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from piflow.client.api import BatchItem
from piflow.errors import BadRequestError, NotFoundError, PiApiError
from piflow.webids import parse_marked

if TYPE_CHECKING:
    from piflow.client.api import PiClient

Json = dict[str, Any]
_OWNER = re.compile(r"streamsets/([^/?]+)/([A-Za-z]+)")
_ADHOC = re.compile(r"streamsets/([A-Za-z]+)")
_DROPPED = frozenset({"selectedFields", "webId", "webIdType"})  # selectedFields name streamset paths


def is_streamset(resource: str) -> bool:
    return resource.split("?", 1)[0].startswith("streamsets/")


async def streamsets_missing(client: PiClient) -> bool:
    """True when the server has no streamsets: an ad hoc call without any WebID is a 400 (a parameter is
    missing) on a server that has them, and a 404 (no such route) on one that does not."""
    try:
        await client.http.get_json("streamsets/value")
    except PiApiError as exc:
        return exc.status in (404, 405, 501)
    return False


async def answer_directly(client: PiClient, resources: Sequence[str]) -> list[BatchItem]:
    """Each streamset resource answered from single-stream calls (in order; at most the client's connection
    count of calls at once)."""
    gate = asyncio.Semaphore(max(1, client.http.max_connections))
    return list(await asyncio.gather(*(_answer(client, gate, r) for r in resources)))


async def _answer(client: PiClient, gate: asyncio.Semaphore, resource: str) -> BatchItem:
    path, _, query = resource.partition("?")
    params = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in _DROPPED]
    webids = [v for k, v in parse_qsl(query) if k == "webId"]
    owner = _OWNER.fullmatch(path)
    if owner is not None:
        listed = await _attributes(client, gate, owner.group(1), resource)
        if isinstance(listed, BatchItem):
            return listed
        streams, action = listed, owner.group(2)
    elif (adhoc := _ADHOC.fullmatch(path)) is not None:
        streams, action = [{"WebId": w} for w in webids], adhoc.group(1)
    else:
        raise PiApiError(f"{resource}: not a streamset resource piflow can read without streamsets")
    items = await asyncio.gather(*(_stream(client, gate, s, action, params) for s in streams))
    failed = next((i for i in items if isinstance(i, BatchItem)), None)
    if failed is not None:  # a call the whole set would have failed with (too many items, say)
        return failed
    return BatchItem(200, content={"Items": list(items)}, resource=resource)


async def _attributes(client: PiClient, gate: asyncio.Semaphore, owner: str, resource: str) -> list[Json] | BatchItem:
    """The top-level attributes of an element or an event frame (the streams of its streamset). A WebID 2.0
    names its kind; any other is tried as an element, then as an event frame."""
    last: PiApiError | None = None
    kinds = ("eventframes", "elements") if parse_marked(owner, "Fm") is not None else ("elements", "eventframes")
    for kind in kinds:
        try:
            async with gate:
                doc = await client.http.get_json(f"{kind}/{owner}/attributes",
                                                 [("selectedFields", "Items.WebId;Items.Name;Items.Path")])
        except PiApiError as exc:
            if exc.status != 404:
                return _error_item(exc, resource)
            last = exc
            continue
        items = doc.get("Items") if isinstance(doc, dict) else None
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
    assert last is not None
    return _error_item(last, resource)


async def _stream(client: PiClient, gate: asyncio.Semaphore, attr: Json, action: str,
                  params: list[tuple[str, str]]) -> Json | BatchItem:
    webid = str(attr.get("WebId"))
    header = {"WebId": webid, "Name": attr.get("Name", ""), "Path": attr.get("Path", "")}
    try:
        async with gate:
            doc = await client.http.get_json(f"streams/{webid}/{action}", params)
    except PiApiError as exc:
        if isinstance(exc, NotFoundError | BadRequestError):  # this stream only, as a streamset reports it
            return {**header, "Exception": {"Errors": exc.errors or [exc.message]}}
        return _error_item(exc, f"streams/{webid}/{action}")  # what the whole set would fail with
    if not isinstance(doc, dict):
        return {**header, "Exception": {"Errors": ["the answer is not a JSON object"]}}
    if "Items" in doc:  # a list of values (interpolated, recorded, ...)
        return {**header, "UnitsAbbreviation": doc.get("UnitsAbbreviation", ""), "Items": doc["Items"]}
    return {**header, "Value": doc}  # one value (value, end)


def _error_item(exc: PiApiError, resource: str) -> BatchItem:
    if exc.status is None:
        raise exc
    return BatchItem(exc.status, content={"Errors": exc.errors or [exc.message]}, resource=resource)
