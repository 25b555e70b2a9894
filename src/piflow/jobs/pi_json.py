"""Pure readers of PI Web API JSON shared by the AF-side jobs (``af``, ``events``, ``view``): the WebID at the end
of a link, the error a stream-set item carries, and the ``Json``/``Row`` aliases. A PI value as text and number
is :func:`piflow.pi_values.value_text` (re-exported here), one classification with every other table's.

Pure: code without I/O (the row builders, tests) uses them.
"""

from __future__ import annotations

from typing import Any

from piflow.pi_values import value_text as value_text

Json = dict[str, Any]
Row = dict[str, Any]


def link_webid(obj: Json, name: str) -> str | None:
    """The WebID at the end of a ``Links`` entry (``.../points/F1DP...`` -> ``F1DP...``)."""
    links = obj.get("Links")
    url = links.get(name) if isinstance(links, dict) else None
    if not isinstance(url, str) or "/" not in url:
        return None
    return url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or None


def stream_error(item: Json) -> str | None:
    """The error a stream-set item carries (``Exception.Errors``, ``Errors`` or in its value), if any."""
    for holder in (item.get("Exception"), item, item.get("Value")):
        if isinstance(holder, dict):
            errs = holder.get("Errors")
            if isinstance(errs, list) and errs:
                return "; ".join(str(e) for e in errs)
    return None
