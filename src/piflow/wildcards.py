"""PI name filters (``nameFilter``, the ``points`` setting) as one matcher for the jobs and the emulator (pure).

PI's query-string syntax (PI Web API reference, topic "Query String"): ``*`` matches any run of characters,
``?`` one character, ``[abc]`` one character of the set, ``[!abc]`` one not in it, and ``\\`` makes the next
character literal (``A\\[1]`` is the name ``A[1]``); matching is case-insensitive and covers the whole name; a
null or empty filter matches everything. ``fnmatch`` differs (no escape, ranges such as ``[a-z]``); PI documents
no ranges, so ``-`` in a set is just a member: a local selection that took in more names than the server's would
tombstone rows the server still has.
"""

from __future__ import annotations

import re
from functools import lru_cache

_EVERYTHING = re.compile(r".*", re.DOTALL)


def matches_everything(pattern: str | None) -> bool:
    """True when a filter lets every name through (so a caller may skip matching altogether)."""
    return pattern is None or pattern.strip() in ("", "*")


@lru_cache(maxsize=1024)
def wildcard(pattern: str | None) -> re.Pattern[str]:
    """The filter as a regular expression for ``fullmatch`` (case-insensitive)."""
    if pattern is None or matches_everything(pattern):
        return _EVERYTHING
    text = pattern.strip()
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 1
            out.append(re.escape(text[i] if i < len(text) else "\\"))  # a trailing backslash is itself
        elif ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[" and (found := _char_set(text, i)) is not None:
            out.append(found[0])
            i = found[1]
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _char_set(text: str, start: int) -> tuple[str, int] | None:
    """``[...]`` or ``[!...]`` at ``text[start]`` as a regex class and the index after it; None when it is not
    closed (then ``[`` is an ordinary character). A ``]`` right after the opening is a member."""
    i = start + 1
    negate = text.startswith("!", i)
    i += negate
    members: list[str] = []
    while i < len(text) and (text[i] != "]" or not members):
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        members.append(text[i])
        i += 1
    if i >= len(text):
        return None
    return ("[^" if negate else "[") + "".join(re.escape(c) for c in members) + "]", i + 1


def name_matches(pattern: str | None, name: str) -> bool:
    """Whether ``name`` passes the PI name filter ``pattern``."""
    return wildcard(pattern).fullmatch(name) is not None
