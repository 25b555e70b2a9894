"""Deterministic hashes of the AF model: GUIDs that are stable across processes, and the integer mixer that the
model's generated values come from.

The element tree, the templates, the attribute definitions and the event frames all derive their identities
from these few pure functions.
"""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache

_M64 = (1 << 64) - 1


def mix_int(*parts: int) -> int:
    """``model.mix1`` in plain integers (same results, no numpy round trip per call)."""
    acc = 0
    for p in parts:
        z = ((acc ^ (p & _M64)) + 0x9E3779B97F4A7C15) & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        acc = z ^ (z >> 31)
    return acc


def stable_guid(seed: int, *parts: str) -> uuid.UUID:
    """A GUID that is a pure function of the seed and the parts (stable across processes)."""
    data = "|".join([str(seed), *parts]).encode("utf-8")
    return uuid.UUID(bytes=hashlib.blake2b(data, digest_size=16).digest())


@lru_cache(maxsize=4096)
def _h8(seed: int, text: str) -> bytes:
    return hashlib.blake2b(f"{seed}|{text}".encode(), digest_size=8).digest()


def child_guid(seed: int, owner: uuid.UUID, rel: str) -> uuid.UUID:
    """GUID of an attribute: the owner's first 8 bytes (to find the owner again) + a hash of its name."""
    return uuid.UUID(bytes=owner.bytes[:8] + _h8(seed, rel.upper()))
