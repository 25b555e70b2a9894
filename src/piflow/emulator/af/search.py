"""Name matching for the AF routes: the supported subset of the element-search query, its values matched as PI
name filters (:mod:`piflow.wildcards`, shared with the jobs so that server and client agree on a filter). Pure
text matching, used by the element search.
"""

from __future__ import annotations

import re

from piflow.emulator.af.records import ElementInfo
from piflow.wildcards import wildcard

_QUERY_FIELDS = {"name": "name", "template": "template", "templatename": "template", "category": "category",
                 "categoryname": "category", "description": "description"}
_TERM_RE = re.compile(r"""\s*(?:([A-Za-z]+)\s*:=?\s*)?("[^"]*"|'[^']*'|[^\s"']+)""")


def parse_query(query: str) -> list[tuple[str, re.Pattern[str]]]:
    """Parse the supported AF search subset into (field, wildcard) terms; ValueError on anything else."""
    terms: list[tuple[str, re.Pattern[str]]] = []
    pos = 0
    text = query.strip()
    while pos < len(text):
        m = _TERM_RE.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse query {query!r}")
        field_name, value = m.group(1), m.group(2)
        if value[0] in "\"'":
            value = value[1:-1]
        key = _QUERY_FIELDS.get((field_name or "name").lower())
        if key is None:
            raise ValueError(f"unsupported search field {field_name!r} (supported: name, template, category, "
                             "description)")
        terms.append((key, wildcard(value)))
        pos = m.end()
    return terms


def term_matches(e: ElementInfo, field_name: str, pattern: re.Pattern[str]) -> bool:
    if field_name == "name":
        return pattern.fullmatch(e.name) is not None
    if field_name == "template":
        return pattern.fullmatch(e.template_name) is not None
    if field_name == "category":
        return any(pattern.fullmatch(c) for c in e.category_names)
    return pattern.fullmatch(e.description) is not None
