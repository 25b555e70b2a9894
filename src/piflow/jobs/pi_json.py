"""Pure readers of PI Web API JSON shared by the AF-side jobs (``af``, ``events``, ``view``): the WebID at the end
of a link, a PI value as text and number, the error a stream-set item carries, and the ``Json``/``Row`` aliases.

Separate from the request plumbing and the row builders so that pure code can use them without importing any I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

Json = dict[str, Any]
Row = dict[str, Any]


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
