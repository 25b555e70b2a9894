"""Typed PI Web API calls used by the jobs: discovery, paging, WebIDs, raw recorded pages and ``/batch``.

Recorded-value paging is deliberately absent: :meth:`PiClient.recorded_page` and
:meth:`PiClient.streamset_recorded_page` return one decoded page (:mod:`piflow.decode`'s typed structs), and
the jobs layer decides how to continue after a full page.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, TypedDict, Unpack

import orjson

from piflow import decode
from piflow.client.auth import Auth
from piflow.client.capabilities import Capabilities
from piflow.client.http import Params, PiHttp, error_for_status, errors_of
from piflow.client.retry import Clock, RetryPolicy, Sleep, parse_retry_after
from piflow.errors import BadResponseError, PiApiError
from piflow.pitime import format_ticks, to_ticks
from piflow.webids import point_path_only

Json = dict[str, Any]


class HttpOptions(TypedDict, total=False):
    """Keyword options passed through to :class:`PiHttp`."""

    verify: bool | str
    timeout_s: float
    max_connections: int
    retry: RetryPolicy
    user_agent: str
    transport: Any
    max_rps: float | None
    sleep: Sleep
    clock: Clock


def pi_time(t: datetime | str) -> str:
    """A PI time argument: datetimes (timezone-aware) as ISO UTC with 'Z'; strings (``*-1d``) as given."""
    if isinstance(t, str):
        return t
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t.isoformat()}: give a timezone-aware (UTC) time")
    return format_ticks(to_ticks(t))


def split_point_path(path: str) -> tuple[str, str]:
    r"""``\\SERVER\TAG`` -> (``SERVER``, ``TAG``); ValueError for anything else."""
    parts = path.lstrip("\\").split("\\")
    if not path.startswith("\\\\") or len(parts) != 2 or not all(parts):
        raise ValueError(f"not a PI point path (\\\\SERVER\\TAG): {path!r}")
    return parts[0], parts[1]


@dataclass(frozen=True)
class BatchItem:
    """One answer inside a ``/batch`` reply (207 with one ``{Status, Headers, Content}`` per request id)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    content: Any = None
    id: str = ""
    resource: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def raise_for_status(self, point: str | None = None) -> None:
        """Raise the same exception a plain request with this status would have raised (nothing if fine)."""
        if self.ok:
            if isinstance(self.content, dict) and "WebException" in self.content:
                raise _batch_web_exception(self).located(point=point)
            return
        errors = errors_of(orjson.dumps(self.content)) if self.content is not None else []
        retry_after = parse_retry_after(_header(self.headers, "Retry-After"))
        exc = error_for_status(self.status, errors, url=self.resource, retry_after=retry_after,
                               reason=f"batch request '{self.id}' failed")
        raise exc.located(point=point)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def _batch_web_exception(item: BatchItem) -> BadResponseError:
    detail = item.content.get("WebException")
    errs = detail.get("Errors", []) if isinstance(detail, dict) else []
    return BadResponseError(f"batch request '{item.id}' carries a WebException",
                            status=item.status, url=item.resource, errors=[str(e) for e in errs])


def _batch_item(key: str, raw: Any, resource: str | None) -> BatchItem:
    if not isinstance(raw, dict) or not isinstance(raw.get("Status"), int):
        raise BadResponseError(f"batch answer for '{key}' is not {{Status, Headers, Content}}", url=resource)
    content = raw.get("Content")
    if isinstance(content, str) and content[:1] in ("{", "["):
        with contextlib.suppress(orjson.JSONDecodeError):
            content = orjson.loads(content)
    headers = raw.get("Headers") or {}
    return BatchItem(status=raw["Status"], headers={str(k): str(v) for k, v in headers.items()},
                     content=content, id=key, resource=resource)


class PiClient:
    """The PI Web API as the jobs need it. Owns a :class:`PiHttp` (or wraps one it is given).

    ``PiClient("https://pi.example.com/piwebapi", BasicAuth(...), retry=RetryPolicy(...))`` or
    ``PiClient(existing_http)``. Use as ``async with``.
    """

    def __init__(self, base_url_or_http: str | PiHttp, auth: Auth | None = None,
                 **options: Unpack[HttpOptions]) -> None:
        if isinstance(base_url_or_http, PiHttp):
            self.http = base_url_or_http
        else:
            self.http = PiHttp(base_url_or_http, auth, **options)
        self._points_by_path: dict[str, Json] = {}
        self._webids: dict[tuple[str, bool], str] = {}
        self._servers: dict[str, Json] = {}
        self.caps = Capabilities()

    async def __aenter__(self) -> PiClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    # ---- system and discovery ------------------------------------------------------------------------------
    async def system_status(self) -> Json:
        return _obj(await self.http.get_json("system/status"), "system/status")

    async def dataservers(self) -> list[Json]:
        return _items(await self.http.get_json("dataservers"), "dataservers")

    async def dataserver_by_name(self, name: str) -> Json:
        key = name.lstrip("\\").upper()
        if key not in self._servers:
            doc = await self.http.get_json("dataservers", [("path", f"\\\\{name.lstrip(chr(92))}")])
            self._servers[key] = _obj(doc, "dataservers?path")
        return self._servers[key]

    async def iter_list(self, path: str, params: Params = (), page_size: int = 1000) -> AsyncIterator[Json]:
        """Every item of a ``startIndex``/``maxCount`` list, page after page until a short page (or, on a server
        that answers with ``Links.Next``, from link to link until a page without one).

        ``page_size`` must not exceed what the server returns per page (1000 for searches), since a page
        shorter than asked for is what ends the listing.
        """
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        start, first_of_last_page = 0, None
        link: str | None = None
        while True:
            doc = await (self.http.get_json(link) if link else self.http.get_json(
                path, [*keeping_links(params), ("startIndex", start), ("maxCount", page_size)]))
            page = _items(doc, path)
            first = page[0].get("WebId") if page and isinstance(page[0], dict) else None
            if first is not None and first == first_of_last_page:
                raise PiApiError(f"{path}: the server returned the same page again; it ignores startIndex")
            first_of_last_page = first
            for item in page:
                yield item
            by_links = link is not None
            links = doc.get("Links") if isinstance(doc, dict) else None
            link = links.get("Next") if isinstance(links, dict) and isinstance(links.get("Next"), str) else None
            if link:  # a server that pages by links: follow them to the end, whatever the page length
                continue
            if by_links or len(page) < page_size:
                return
            start += len(page)

    def iter_points(self, server_webid: str, name_filter: str = "*", page_size: int = 1000,
                    selected_fields: str | None = None) -> AsyncIterator[Json]:
        """All points of a data server whose name matches ``name_filter`` (PI wildcards), paged."""
        params: list[tuple[str, str | int | float | bool]] = [("nameFilter", name_filter)]
        if selected_fields:
            params.append(("selectedFields", selected_fields))
        return self.iter_list(f"dataservers/{server_webid}/points", params, page_size)

    async def point_by_path(self, path: str) -> Json:
        r"""The point at ``\\SERVER\TAG`` (cached; NotFoundError if the server does not know it)."""
        key = path.upper()
        if key not in self._points_by_path:
            point = _obj(await self.http.get_json("points", [("path", path)]), "points?path")
            self._points_by_path[key] = point
            if isinstance(point.get("WebId"), str):
                self._webids[(key, True)] = point["WebId"]
        return self._points_by_path[key]

    async def points_multiple(self, webids: Sequence[str], chunk_size: int = 100) -> list[Json]:
        """``points/multiple`` items (``{Identifier, Object, Exception}``), chunked to keep URLs short."""
        out: list[Json] = []
        for i in range(0, len(webids), chunk_size):
            chunk = webids[i:i + chunk_size]
            out.extend(_items(await self.http.get_json("points/multiple", [("webId", w) for w in chunk]),
                              "points/multiple"))
        return out

    async def webid_for_path(self, path: str, *, resolve: bool = False) -> str:
        r"""WebID of point ``\\SERVER\TAG``: computed offline (PathOnly) or, with ``resolve``, asked of PI."""
        key = (path.upper(), resolve)
        if key not in self._webids:
            if resolve:
                point = await self.point_by_path(path)
                if not isinstance(point.get("WebId"), str):
                    raise BadResponseError(f"point {path} came back without a WebId", url=self.http.base_url)
                self._webids[key] = point["WebId"]
            else:
                server, tag = split_point_path(path)
                self._webids[key] = point_path_only(server, tag)
        return self._webids[key]

    # ---- values (raw bytes for the decoder) ---------------------------------------------------------------
    async def recorded_bytes(
        self, webid: str, start: datetime | str, end: datetime | str, max_count: int = 1000,
        selected_fields: str | None = None, boundary_type: str = "Inside",
    ) -> bytes:
        """One page of ``streams/{webid}/recorded`` as checked raw JSON bytes."""
        params = _time_params(start, end, max_count, selected_fields, boundary_type)
        return await self.http.get_bytes(f"streams/{webid}/recorded", params)

    async def recorded_page(
        self, webid: str, start: datetime | str, end: datetime | str, max_count: int = 1000,
        selected_fields: str | None = None,
    ) -> decode.StreamPage:
        """One page of ``streams/{webid}/recorded``, decoded (a body that does not decode is retried)."""
        params = _time_params(start, end, max_count, selected_fields, "Inside")
        return await self.http.get_decoded(f"streams/{webid}/recorded", params, decode.decode_stream_page)

    async def streamset_recorded_page(
        self, webids: Sequence[str], start: datetime | str, end: datetime | str, max_count: int = 1000,
        selected_fields: str | None = None,
    ) -> decode.StreamsetPage:
        """One ``streamsets/recorded`` call, decoded (a body that does not decode is retried)."""
        if not webids:
            raise ValueError("streamset_recorded_page needs at least one WebID")
        params: list[tuple[str, str | int | float | bool]] = [("webId", w) for w in webids]
        params += _time_params(start, end, max_count, selected_fields, "Inside")
        return await self.http.get_decoded("streamsets/recorded", params, decode.decode_streamset_page)

    # ---- batch --------------------------------------------------------------------------------------------
    async def batch(self, requests: Mapping[str, Mapping[str, Any]]) -> dict[str, BatchItem]:
        """POST ``/batch``; relative ``Resource`` paths are made absolute. One :class:`BatchItem` per id the
        server answered: some servers leave ids out, so callers compare the keys with what they sent
        (:func:`piflow.jobs.batching.send_batch` sends the missing ones again)."""
        body = {key: self._absolute(req) for key, req in requests.items()}
        doc = await self.http.post_json("batch", body)
        if not isinstance(doc, dict):
            raise BadResponseError("the batch answer is not an object keyed by request id",
                                   url=self.http.url_for("batch"))
        return {k: _batch_item(k, doc[k], _resource_of(body[k])) for k in body if k in doc}

    def _absolute(self, req: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(req)
        if isinstance(out.get("Resource"), str):
            out["Resource"] = self.http.url_for(out["Resource"])
        template = out.get("RequestTemplate")
        if isinstance(template, Mapping) and isinstance(template.get("Resource"), str):
            out["RequestTemplate"] = {**template, "Resource": self.http.url_for(template["Resource"])}
        return out


def keeping_links(params: Params) -> list[tuple[str, str | int | float | bool]]:
    """``params`` with ``Links.Next`` added to any ``selectedFields``: a server that pages by links puts the next
    page there, and a selection without it would end every list after its first page."""
    def keep(fields: str) -> str:
        return fields if {"Links", "Links.Next"} & set(fields.split(";")) else f"{fields};Links.Next"

    return [(k, keep(str(v)) if k == "selectedFields" else v) for k, v in params]


def _resource_of(req: Mapping[str, Any]) -> str | None:
    res = req.get("Resource")
    if res is None and isinstance(req.get("RequestTemplate"), Mapping):
        res = req["RequestTemplate"].get("Resource")
    return res if isinstance(res, str) else None


def _time_params(start: datetime | str, end: datetime | str, max_count: int, selected_fields: str | None,
                 boundary_type: str) -> list[tuple[str, str | int | float | bool]]:
    params: list[tuple[str, str | int | float | bool]] = [
        ("startTime", pi_time(start)), ("endTime", pi_time(end)), ("boundaryType", boundary_type),
        ("maxCount", max_count),
    ]
    if selected_fields:
        params.append(("selectedFields", selected_fields))
    return params


def _obj(doc: Any, what: str) -> Json:
    if not isinstance(doc, dict):
        raise BadResponseError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _items(doc: Any, what: str) -> list[Json]:
    items = _obj(doc, what).get("Items")
    if not isinstance(items, list):
        raise BadResponseError(f"{what}: the answer has no Items list")
    return items

