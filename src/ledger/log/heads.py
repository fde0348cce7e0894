"""Tree heads: the latest one stored, published ones read back and checked against the key ring."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ledger.errors import InputError, VerificationError
from ledger.log import store
from ledger.log.store import witness as cosignature_rows
from ledger.log.types import CosignatureInfo, TreeHeadInfo
from ledger.spec import note as note_spec
from ledger.spec.keyring import KeyRing

__all__ = [
    "head",
    "head_info",
    "read_note_file",
    "save_cosignatures",
    "verify_note_with_ring",
]


def head(path: Path) -> TreeHeadInfo:
    """The latest signed tree head (it covers the whole log: every append signs a new one), with the
    witness cosignatures stored for it."""
    with store.session(path) as conn:
        return head_info(conn, store.head(conn))


def head_info(conn: store.Connection, stored: store.StoredHead) -> TreeHeadInfo:
    """A stored head with its stored cosignatures (none for a ledger made before witnesses)."""
    rows = cosignature_rows.cosignatures(conn, stored.size, stored.root)
    return TreeHeadInfo(
        stored.origin, stored.size, stored.root, stored.note,
        tuple(CosignatureInfo(r.name, r.key_id, r.time, r.line) for r in rows),
    )  # fmt: skip


def save_cosignatures(
    path: Path, size: int, root: bytes, found: Iterable[CosignatureInfo]
) -> TreeHeadInfo:
    """Store witness cosignatures of the tree head (size, root) with it (the table is made on first
    use); return the latest head with its cosignatures, read in the same session."""
    rows = [cosignature_rows.StoredCosignature(c.name, c.key_id, c.time, c.line) for c in found]
    with store.session(path) as conn:
        cosignature_rows.save_cosignatures(conn, size, root, rows)
        return head_info(conn, store.head(conn))


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
