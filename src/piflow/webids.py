"""WebID 2.0 encoding and decoding (pure).

A WebID is ``<type><version><marker>[owner]<payload>``. Only PathOnly WebIDs can be computed without asking
the server, which is why the client can resolve ``\\\\SERVER\\TAG`` to a WebID offline and the emulator must
accept such computed IDs. Full WebIDs of PI points, as real servers send them, are
``F1DP`` + server GUID (22 chars) + point id (6 chars) + encoded path.
"""

from __future__ import annotations

import base64
import binascii
import struct
import uuid
from dataclasses import dataclass

# Marker -> object kind; the owner part (a parent GUID) is present in Full WebIDs of these kinds.
MARKERS: dict[str, str] = {
    "DP": "point",
    "DS": "dataserver",
    "RS": "assetserver",
    "RD": "assetdatabase",
    "Em": "element",
    "Ab": "attribute",
    "Fm": "eventframe",
    "ET": "elementtemplate",
    "AT": "attributetemplate",
}
# Full WebIDs of these kinds carry the owner GUID (database, or server for a database) before their own.
_OWNED_BY_GUID = {"RD", "Em", "Ab", "Fm", "ET", "AT"}


def b64(data: bytes) -> str:
    """URL-safe base64 without padding, as PI uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    # validate=True: a character outside the URL-safe alphabet is an error, not silently skipped.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def encode_path(path: str) -> str:
    """The name part: UTF-8 of the upper-cased path without its leading backslashes."""
    return b64(path.lstrip("\\").upper().encode("utf-8"))


def encode_guid(guid: uuid.UUID) -> str:
    return b64(guid.bytes_le)


def decode_guid(text: str) -> uuid.UUID:
    return uuid.UUID(bytes_le=unb64(text))


def path_only(marker: str, path: str) -> str:
    """A PathOnly WebID a client can compute, e.g. ``path_only("DP", r"\\\\SRV\\TAG")``."""
    return f"P1{marker}{encode_path(path)}"


def point_path_only(server: str, tag: str) -> str:
    return path_only("DP", f"\\\\{server}\\{tag}")


def full_point(server_guid: uuid.UUID, point_id: int, path: str) -> str:
    return f"F1DP{encode_guid(server_guid)}{b64(struct.pack('<i', point_id))}{encode_path(path)}"


def full_object(marker: str, guid: uuid.UUID, path: str, owner: uuid.UUID | None = None) -> str:
    owner_part = encode_guid(owner) if owner is not None else ""
    return f"F1{marker}{owner_part}{encode_guid(guid)}{encode_path(path)}"


@dataclass(frozen=True)
class ParsedWebId:
    kind_code: str  # F, I, P, L, D
    marker: str
    path: str | None  # upper-cased path without leading backslashes, when present
    guid: uuid.UUID | None = None
    owner: uuid.UUID | None = None
    point_id: int | None = None

    @property
    def kind(self) -> str:
        return MARKERS.get(self.marker, "unknown")


def parse(webid: str) -> ParsedWebId:
    """Decode a WebID 2.0 string; raises ValueError on anything malformed."""
    if len(webid) < 4 or webid[1] != "1":
        raise ValueError(f"not a WebID 2.0 string: {webid!r}")
    kind, marker, rest = webid[0], webid[2:4], webid[4:]
    if marker not in MARKERS:
        raise ValueError(f"unknown WebID marker {marker!r}")
    try:
        if kind == "P":
            return ParsedWebId(kind, marker, unb64(rest).decode("utf-8"))
        if kind == "F":
            if marker == "DP":
                guid = decode_guid(rest[:22])
                point_id = struct.unpack("<i", unb64(rest[22:28]))[0]
                return ParsedWebId(kind, marker, unb64(rest[28:]).decode("utf-8"), guid, None, point_id)
            owner = None
            if marker in _OWNED_BY_GUID:
                owner, rest = decode_guid(rest[:22]), rest[22:]
            guid = decode_guid(rest[:22])
            return ParsedWebId(kind, marker, unb64(rest[22:]).decode("utf-8"), guid, owner)
        if kind in ("I", "D"):
            return ParsedWebId(kind, marker, None, decode_guid(rest[-22:]))
    except (ValueError, UnicodeDecodeError, struct.error, binascii.Error) as exc:
        raise ValueError(f"malformed WebID {webid!r}") from exc
    raise ValueError(f"unsupported WebID type {kind!r}")


def parse_marked(webid: str, marker: str) -> ParsedWebId | None:
    """The parsed WebID when it is well formed and names a ``marker`` object (``Em``, ``DP`` ...), else None:
    what a lookup by WebID needs before it searches."""
    try:
        parsed = parse(webid)
    except ValueError:
        return None
    return parsed if parsed.marker == marker else None
