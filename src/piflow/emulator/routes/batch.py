"""``POST /batch``: many PI Web API requests in one round trip, with parent/child dependencies.

The body is a dict keyed by request id; each item has ``Method``, ``Resource`` (absolute URL with its query;
the host is ignored, only this server is reachable), optional ``Content`` (a JSON string), ``Headers``,
``ParentIds``, ``Parameters`` (JSONPath expressions into the parents' responses, substituted for ``{0}``,
``{1}``...) and ``RequestTemplate`` (``{"Resource": ...}``: one request per selected value). Items without
parents run concurrently; a child runs once all its parents have answered. The reply is 207 with
``{id: {Status, Headers, Content}}``.

Faithful details: a child of a failed parent (status >= 400) gets 409; a JSONPath selecting nothing gives
400; an unknown ``Method`` gives 400 for that item only. A parameter selecting several values in a plain
(non-template) request repeats the query parameter that holds its placeholder (``webId={0}`` ->
``webId=A&webId=B``), as PI does. A template's reply is ``{"Items": [{Status, Headers, Content}, ...]}``
with Status 200 when every fanned-out request succeeded and 207 otherwise. With several parameters in a
template, lists of equal length are zipped and single values broadcast.

Under the ``partial`` batch profile some ids are left out of the answer (see
:func:`piflow.emulator.profile.omitted_ids`); all items still run.

Sub-requests go through the whole app in-process (``asgi_call``) (so authentication applies, with the caller's
``Authorization`` forwarded) and carry ``X-Emulator-Batch-Child: 1`` so that fault injection treats the
batch as one request.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from piflow.emulator import asgi_call
from piflow.emulator.plumbing import request_state
from piflow.emulator.profile import batch_answer
from piflow.emulator.responses import json_response, pi_error

router = APIRouter()

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
BATCH_CHILD_HEADER = "X-Emulator-Batch-Child"
MAX_PARALLEL = 8
_QUERY_SAFE = "\\/:*?|,;$@!'()[]{}"
_STEP_RE = re.compile(
    r"""\.(?P<name>[^.\[\]\s]+)"""
    r"""|\[\s*(?:(?P<idx>-?\d+)|(?P<star>\*)|'(?P<sq>[^']*)'|"(?P<dq>[^"]*)"|(?P<lo>-?\d*)\s*:\s*(?P<hi>-?\d*))\s*\]"""
)
_FORWARDED = ("authorization", "x-requested-with")


@dataclass(frozen=True)
class SubResponse:
    status: int
    headers: dict[str, str]
    content: Any

    def as_json(self) -> dict[str, Any]:
        return {"Status": self.status, "Headers": self.headers, "Content": self.content}


Send = Callable[[str, str, dict[str, str], bytes | None], Awaitable[SubResponse]]


# ---- JSONPath (pure) -----------------------------------------------------------------------------------
def _child(node: Any, key: str) -> list[Any]:
    if not isinstance(node, dict):
        return []
    if key in node:
        return [node[key]]
    low = key.lower()
    return [v for k, v in node.items() if isinstance(k, str) and k.lower() == low][:1]


def _step(node: Any, m: re.Match[str]) -> list[Any]:
    name = m.group("name")
    if name == "*" or m.group("star") is not None:
        return list(node.values()) if isinstance(node, dict) else list(node) if isinstance(node, list) else []
    if name is not None:
        return _child(node, name)
    key = m.group("sq") if m.group("sq") is not None else m.group("dq")
    if key is not None:
        return _child(node, key)
    if not isinstance(node, list):
        return []
    if m.group("idx") is not None:
        i = int(m.group("idx"))
        return [node[i]] if -len(node) <= i < len(node) else []
    lo, hi = m.group("lo"), m.group("hi")
    return node[int(lo) if lo else None:int(hi) if hi else None]


def jsonpath(doc: Any, expr: str) -> list[Any]:
    """Evaluate the JSONPath subset PI batch uses: ``$``, ``.name``, ``['name']``, ``[n]``, ``[*]``, ``.*``,
    ``[a:b]``. Returns every selected value (possibly none); ValueError on syntax outside the subset."""
    text = expr.strip()
    if not text.startswith("$"):
        raise ValueError(f"a JSONPath expression must start with '$': {expr!r}")
    nodes = [doc]
    pos = 1
    while pos < len(text):
        m = _STEP_RE.match(text, pos)
        if m is None:
            raise ValueError(f"unsupported JSONPath syntax at position {pos} of {expr!r}")
        nodes = [child for node in nodes for child in _step(node, m)]
        pos = m.end()
    return nodes


# ---- resources (pure) ----------------------------------------------------------------------------------
def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode("utf-8")


def fill(resource: str, selections: list[list[Any]]) -> str:
    """Substitute ``{i}`` with the values of parameter ``i``. In the query values are percent-encoded, and a
    parameter with several values repeats the query parameter holding it; in the path (where a whole URL
    may be substituted) values go in as they are and must be single."""
    path, sep, query = resource.partition("?")
    for i, values in enumerate(selections):
        ph = "{" + str(i) + "}"
        if len(values) == 1:
            path = path.replace(ph, _text(values[0]))
            query = query.replace(ph, quote(_text(values[0]), safe=_QUERY_SAFE))
            continue
        if ph in path:
            raise ValueError(f"parameter {i} selects {len(values)} values but is used in the resource path")
        pieces: list[str] = []
        for piece in query.split("&"):
            if ph in piece:
                pieces.extend(piece.replace(ph, quote(_text(v), safe=_QUERY_SAFE)) for v in values)
            else:
                pieces.append(piece)
        query = "&".join(pieces)
    return path + sep + query


def fan_out(resource: str, selections: list[list[Any]]) -> list[str]:
    """The resources of a ``RequestTemplate``: one per selected value (equal-length lists are zipped)."""
    sizes = {len(s) for s in selections if len(s) != 1}
    if len(sizes) > 1:
        raise ValueError("the template parameters select different numbers of values")
    n = sizes.pop() if sizes else 1
    return [fill(resource, [[s[0]] if len(s) == 1 else [s[i]] for s in selections]) for i in range(n)]


def local_target(resource: str) -> str:
    """Path and query of a resource on this server (scheme and host are ignored, as PI only reaches itself)."""
    parts = urlsplit(resource.strip())
    path = parts.path
    if not parts.scheme and not parts.netloc and not path.startswith("/"):
        path = "/piwebapi/" + path
    return path + ("?" + parts.query if parts.query else "")


# ---- scheduling (pure) ---------------------------------------------------------------------------------
def _item_problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "A batch request must be a JSON object."
    method = item.get("Method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        return f"The method '{method}' is not supported."
    template = item.get("RequestTemplate")
    resource = template.get("Resource") if isinstance(template, dict) else item.get("Resource")
    if not isinstance(resource, str) or not resource.strip():
        return "A batch request needs a Resource (or a RequestTemplate with a Resource)."
    if local_target(resource).rstrip("/").lower().endswith("/batch"):
        return "A batch request cannot contain another batch request."
    for key in ("ParentIds", "Parameters"):
        value = item.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return f"{key} must be a list of strings."
    headers = item.get("Headers")
    if headers is not None and not isinstance(headers, dict):
        return "Headers must be an object."
    return None


def schedule(body: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Ids in an order where parents come first, and the items that cannot run with why (answered 400)."""
    problems: dict[str, str] = {}
    parents: dict[str, list[str]] = {}
    for rid, item in body.items():
        problem = _item_problem(item)
        ids = [] if problem else list(item.get("ParentIds") or [])
        missing = [p for p in ids if p not in body]
        if problem is None and missing:
            problem = f"The parent request(s) {', '.join(missing)} do not exist in this batch."
        if problem is None and rid in ids:
            problem = "A request cannot be its own parent."
        if problem:
            problems[rid] = problem
            ids = []
        parents[rid] = ids
    children: dict[str, list[str]] = {rid: [] for rid in body}
    waiting = {rid: len(set(ps)) for rid, ps in parents.items()}
    for rid, ps in parents.items():
        for p in set(ps):
            children[p].append(rid)
    order = [rid for rid in body if waiting[rid] == 0]
    i = 0
    while i < len(order):
        for child in children[order[i]]:
            waiting[child] -= 1
            if waiting[child] == 0:
                order.append(child)
        i += 1
    for rid in body:
        if waiting[rid] > 0:
            problems[rid] = "The request is part of a circular dependency."
            order.append(rid)
    return order, problems


def _error(status: int, *messages: str) -> dict[str, Any]:
    return SubResponse(status, {}, {"Errors": list(messages)}).as_json()


# ---- execution -----------------------------------------------------------------------------------------
async def run_batch(body: dict[str, Any], send: Send, *, base_headers: dict[str, str] | None = None,
                    max_parallel: int = MAX_PARALLEL) -> dict[str, dict[str, Any]]:
    """Run every item (independent ones concurrently, at most ``max_parallel`` requests at once)."""
    order, problems = schedule(body)
    gate = asyncio.Semaphore(max_parallel)
    tasks: dict[str, asyncio.Task[dict[str, Any]]] = {}

    async def limited(method: str, target: str, headers: dict[str, str], content: bytes | None) -> SubResponse:
        async with gate:
            return await send(method, target, headers, content)

    async def run_one(rid: str) -> dict[str, Any]:
        if rid in problems:
            return _error(400, problems[rid])
        item = body[rid]
        parent_ids = list(item.get("ParentIds") or [])
        answers = await asyncio.gather(*(tasks[p] for p in parent_ids))
        failed = [p for p, a in zip(parent_ids, answers, strict=True) if a["Status"] >= 400]
        if failed:
            return _error(409, f"The parent request(s) {', '.join(failed)} failed.")
        doc = dict(zip(parent_ids, answers, strict=True))
        return await _execute(item, doc, limited, base_headers or {})

    for rid in order:
        tasks[rid] = asyncio.create_task(run_one(rid))
    await asyncio.gather(*tasks.values())
    return {rid: tasks[rid].result() for rid in body}


async def _execute(item: dict[str, Any], doc: dict[str, Any], send: Send,
                   base_headers: dict[str, str]) -> dict[str, Any]:
    selections = []
    for expr in item.get("Parameters") or []:
        try:
            values = jsonpath(doc, expr)
        except ValueError as exc:
            return _error(400, str(exc))
        if not values:
            return _error(400, f"The JSONPath expression '{expr}' did not select anything.")
        selections.append(values)
    method = str(item.get("Method", "GET")).upper()
    headers = {**base_headers, **{str(k): str(v) for k, v in (item.get("Headers") or {}).items()},
               BATCH_CHILD_HEADER: "1"}
    raw = item.get("Content")
    content = None if raw is None else raw.encode("utf-8") if isinstance(raw, str) else orjson.dumps(raw)
    if content is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    template = item.get("RequestTemplate")
    try:
        if isinstance(template, dict):
            resources = fan_out(str(template["Resource"]), selections)
        else:
            resources = [fill(str(item["Resource"]), selections)]
    except ValueError as exc:
        return _error(400, str(exc))
    if not isinstance(template, dict):
        return (await send(method, local_target(resources[0]), headers, content)).as_json()
    answers = await asyncio.gather(*(send(method, local_target(r), headers, content) for r in resources))
    status = 200 if all(a.status < 400 for a in answers) else 207
    return SubResponse(status, {}, {"Items": [a.as_json() for a in answers]}).as_json()


def _canonical(name: str) -> str:
    return "-".join(p.capitalize() for p in name.split("-"))


def _decode(body: bytes) -> Any:
    if not body:
        return ""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", errors="replace")


@router.post("/batch")
async def batch(request: Request) -> Response:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise pi_error(400, "The batch request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise pi_error(400, "The batch request body must be a JSON object keyed by request id.")
    forwarded = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
    app, outer = request.app, request.scope

    async def send(method: str, target: str, headers: dict[str, str], content: bytes | None) -> SubResponse:
        reply = await asgi_call.call(app, asgi_call.request_scope(outer, method, target, headers, content), content)
        kept = {_canonical(k): v for k, v in reply.headers if k.lower() != "content-length"}
        return SubResponse(reply.status, kept, _decode(reply.body))

    results = await run_batch(body, send, base_headers=forwarded)
    return json_response(batch_answer(request_state(request), results), 207)
