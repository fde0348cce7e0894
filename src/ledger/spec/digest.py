"""SHA-256, the one digest algorithm of the ledger (DESIGN.md "Hashing (fixed)")."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

__all__ = ["sha256", "sha256_each", "sha256_hex"]

_sha256 = hashlib.sha256
_HASH_DIGEST: Final = type(_sha256()).digest


def sha256(data: bytes) -> bytes:
    """The raw 32-byte SHA-256 digest; the one digest algorithm of the ledger."""
    return _sha256(data).digest()


def sha256_hex(data: bytes) -> str:
    """SHA-256 as 64 lowercase hex characters, the written form of every digest."""
    return _sha256(data).hexdigest()


def sha256_each(items: Iterable[bytes]) -> list[bytes]:
    """The raw digest of each item, in order (one C-level loop, no Python call per item)."""
    return list(map(_HASH_DIGEST, map(_sha256, items)))
