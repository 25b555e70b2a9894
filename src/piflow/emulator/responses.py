"""JSON responses in PI's shapes, serialised with orjson (shared by every route module)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import HTTPException
from fastapi.responses import Response


def json_response(body: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json", headers=headers)


def raw_json(body: bytes, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A body that a fast serialiser already produced as JSON bytes."""
    return Response(body, status_code=status_code, media_type="application/json", headers=headers)


def pi_error(status_code: int, *messages: str, headers: Mapping[str, str] | None = None) -> HTTPException:
    """An exception the app turns into ``{"Errors": [...]}`` with the given status."""
    return HTTPException(status_code=status_code, detail=list(messages), headers=dict(headers or {}))


def error_response(status_code: int, *messages: str, headers: Mapping[str, str] | None = None) -> Response:
    return json_response({"Errors": list(messages)}, status_code, headers)
