"""Tree heads: the latest one stored, published ones read back and checked against the key ring."""

from __future__ import annotations

from pathlib import Path

from ledger.errors import InputError, VerificationError
from ledger.log import store
from ledger.log.types import TreeHeadInfo
from ledger.spec import note as note_spec
from ledger.spec.keyring import KeyRing

__all__ = ["head", "read_note_file", "verify_note_with_ring"]


def head(path: Path) -> TreeHeadInfo:
    """The latest signed tree head (it covers the whole log: every append signs a new one)."""
    with store.session(path) as conn:
        stored = store.head(conn)
    return TreeHeadInfo(stored.origin, stored.size, stored.root, stored.note)


def verify_note_with_ring(note: str, ring: KeyRing, origin: str) -> note_spec.TreeHead:
    """A published tree head verifies with any log key the ledger ever had (heads outlive rotations)."""
    parsed, _ = note_spec.open_signed_note(note)
    if parsed.origin != origin:
        raise VerificationError(
            f"tree head origin {parsed.origin!r} is not this ledger's {origin!r}"
        )
    last_error: Exception | None = None
    for info in ring.log_keys():
        try:
            return note_spec.verify_tree_head(note, (origin, info.public))
        except VerificationError as exc:
            last_error = exc
    raise VerificationError(
        f"the tree head is not signed by any log key of this ledger ({last_error})"
    )


def read_note_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read tree head: {exc}") from exc
