"""The log's public values: entries read back, tree heads, proofs and what an append did.

Frozen dataclasses, no I/O; `KeyInfo` comes from the key ring (`ledger.spec.keyring`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.spec import merkle
from ledger.spec.keyring import KeyInfo

__all__ = [
    "AppendResult",
    "ConsistencyProof",
    "CosignatureInfo",
    "Entry",
    "InclusionProof",
    "KeyInfo",
    "TreeHeadInfo",
]


@dataclass(frozen=True)
class CosignatureInfo:
    """A witness's cosignature of a tree head, as stored: its key name, key id, time and note line."""

    name: str
    key_id: bytes
    time: int
    line: str


@dataclass(frozen=True)
class TreeHeadInfo:
    origin: str
    size: int
    root: bytes
    note: str
    """The note as the log signed it (its one signature line)."""
    cosignatures: tuple[CosignatureInfo, ...] = ()
    """Witness cosignatures stored with this head (DESIGN.md "Witnesses")."""

    @property
    def cosigned_note(self) -> str:
        """The note with the stored cosignature lines appended (signed-note verifiers ignore lines
        of keys they do not know, so it verifies wherever the plain note does)."""
        lines = [c.line for c in self.cosignatures if c.line not in self.note]
        return self.note + "".join(dict.fromkeys(lines))


@dataclass(frozen=True)
class Entry:
    index: int
    kind: str
    time: str
    signer: str
    ref: str | None
    leaf: bytes
    body: dict[str, Any]

    @property
    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.leaf)


@dataclass(frozen=True)
class InclusionProof:
    index: int
    leaf: bytes
    leaf_hash: bytes
    size: int
    root: bytes
    proof: list[bytes]


@dataclass(frozen=True)
class ConsistencyProof:
    old_size: int
    old_root: bytes
    new_size: int
    new_root: bytes
    proof: list[bytes]


@dataclass(frozen=True)
class AppendResult:
    start: int
    count: int
    head: TreeHeadInfo
