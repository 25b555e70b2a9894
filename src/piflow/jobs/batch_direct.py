"""A ``/batch`` body carried out as plain requests, for servers without ``/batch`` or whose answer left ids out.

The answers have the shape ``/batch`` gives (one :class:`BatchItem` per id, ``RequestTemplate`` children as
``{"Items": [{Status, Headers, Content}, ...]}``), so the jobs read them the same way whichever path served
them. Requests run parent first, as PI runs them; a child of a failed parent is answered 409, as PI does. Only
what piflow sends is supported: GETs, and templates fed by one JSONPath parameter
(``$.page.Content.Items[*].WebId``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from piflow.client.api import BatchItem
from piflow.errors import PiApiError

if TYPE_CHECKING:
    from piflow.client.api import PiClient

_STEP = re.compile(r"([^.\[\]]+)(\[(\*|\d+)\])?")


def json_path(path: str, answers: Mapping[str, BatchItem]) -> list[Any]:
    """The values a batch JSONPath parameter selects: ``$.<id>.Content.<key>[*].<key>`` (pure).

    ``$.<id>`` names an earlier answer; ``Content`` is its body, ``Status`` its status; ``[*]`` spreads a
    list and ``[n]`` picks one item. Anything missing selects nothing.
    """
    if not path.startswith("$."):
        raise ValueError(f"not a batch JSONPath: {path!r}")
    steps = path[2:].split(".")
    parent = answers.get(steps[0])
    if parent is None:
        return []
    values: list[Any] = [{"Content": parent.content, "Status": parent.status, "Headers": parent.headers}]
    for step in steps[1:]:
        m = _STEP.fullmatch(step)
        if m is None:
            raise ValueError(f"unsupported JSONPath step {step!r} in {path!r}")
        key, index = m.group(1), m.group(3)
        picked = [v[key] for v in values if isinstance(v, dict) and key in v]
        if index == "*":
            picked = [x for v in picked if isinstance(v, list) for x in v]
        elif index is not None:
            picked = [v[int(index)] for v in picked if isinstance(v, list) and int(index) < len(v)]
        values = picked
    return values


async def run_directly(client: PiClient, body: Mapping[str, Mapping[str, Any]]) -> dict[str, BatchItem]:
    """Every request of ``body`` as its own GET (parents first; at most the client's connection count at once,
    within its rate limit). Answers with a status are kept as items; a failure without one (the network, after
    the client's retries) is raised."""
    gate = asyncio.Semaphore(max(1, client.http.max_connections))
    done: dict[str, BatchItem] = {}
    pending = dict(body)
    while pending:
        ready = [k for k, req in pending.items() if all(p in done for p in req.get("ParentIds") or [])]
        if not ready:
            raise PiApiError(f"batch request ids {sorted(pending)[:5]} wait for parents that are never sent")
        answers = await asyncio.gather(*(_one(client, gate, k, pending[k], done) for k in ready))
        for key, answer in zip(ready, answers, strict=True):
            done[key] = answer
            del pending[key]
    return done


async def _one(client: PiClient, gate: asyncio.Semaphore, key: str, req: Mapping[str, Any],
               done: Mapping[str, BatchItem]) -> BatchItem:
    method = str(req.get("Method", "GET")).upper()
    if method != "GET":
        raise PiApiError(f"batch request '{key}': {method} cannot be sent without /batch")
    parents = [done[p] for p in req.get("ParentIds") or []]
    if any(not p.ok for p in parents):
        return BatchItem(409, content={"Errors": ["A parent request failed."]}, id=key)
    template = req.get("RequestTemplate")
    if isinstance(template, Mapping):
        resource = str(template.get("Resource", ""))
        params = [json_path(str(p), done) for p in req.get("Parameters") or []]
        if len(params) != 1:
            raise PiApiError(f"batch request '{key}': a template needs exactly one parameter here")
        children = await asyncio.gather(*(_get(client, gate, resource.replace("{0}", str(v)), key)
                                          for v in params[0]))
        items = [{"Status": c.status, "Headers": c.headers, "Content": c.content} for c in children]
        return BatchItem(200, content={"Items": items}, id=key, resource=resource)
    return await _get(client, gate, str(req.get("Resource", "")), key)


async def _get(client: PiClient, gate: asyncio.Semaphore, resource: str, key: str) -> BatchItem:
    async with gate:
        try:
            content = await client.http.get_json(resource)
        except PiApiError as exc:
            if exc.status is None:
                raise
            wait = getattr(exc, "retry_after", None)
            headers = {"Retry-After": f"{wait:g}"} if isinstance(wait, float | int) else {}
            return BatchItem(exc.status, headers=headers, content={"Errors": exc.errors or [exc.message]},
                             id=key, resource=resource)
    return BatchItem(200, content=content, id=key, resource=client.http.url_for(resource))
