"""Inclusion and consistency proofs against the latest tree head, from O(log n) stored tree nodes.

Every proof is checked against the head before it is returned: a proof that does not verify is the
store's tampering (VerificationError), never a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ledger.errors import InputError, VerificationError
from ledger.log import store
from ledger.log.heads import head_info, verify_note_with_ring
from ledger.log.reader import key_ring
from ledger.log.store import witness as cosignature_rows
from ledger.log.types import ConsistencyProof, InclusionProof, TreeHeadInfo
from ledger.spec import merkle, note

__all__ = ["consistency", "consistency_from_size", "inclusion_proofs", "prove", "witness_view"]


def prove(path: Path, ref: str | int) -> InclusionProof:
    """Inclusion proof of one entry against the latest tree head, from O(log n) stored nodes."""
    with store.session(path) as conn:
        stored = store.head(conn)
        found = store.resolve(conn, str(ref))
        nodes = store.fetch_nodes(
            conn, merkle.needed_nodes(merkle.inclusion_ranges(found.index, stored.size))
        )
    proof = merkle.inclusion_proof(found.index, stored.size, nodes)
    leaf_hash = merkle.leaf_hash(found.leaf)
    merkle.verify_inclusion(leaf_hash, found.index, stored.size, proof, stored.root)
    return InclusionProof(found.index, found.leaf, leaf_hash, stored.size, stored.root, proof)


def inclusion_proofs(
    path: Path, indexes: Sequence[int]
) -> tuple[TreeHeadInfo, dict[int, InclusionProof]]:
    """Proofs for many entries against one tree head, read in one session."""
    with store.session(path) as conn:
        stored = store.head(conn)
        wanted: set[tuple[int, int]] = set()
        for index in indexes:
            wanted |= merkle.needed_nodes(merkle.inclusion_ranges(index, stored.size))
        nodes = store.fetch_nodes(conn, wanted)
        leaves = {i: store.entry_at(conn, i).leaf for i in indexes}
        info = head_info(conn, stored)
    out = {}
    for index in indexes:
        proof = merkle.inclusion_proof(index, stored.size, nodes)
        leaf_hash = merkle.leaf_hash(leaves[index])
        out[index] = InclusionProof(
            index, leaves[index], leaf_hash, stored.size, stored.root, proof
        )
    return info, out


def consistency(path: Path, old_note: str, source: str = "the tree head") -> ConsistencyProof:
    """Prove the current log extends the tree head in `old_note` (its signature is checked too).

    A head of another ledger (another origin) is the wrong input, not tampering: InputError
    naming `source` (the file it came from)."""
    with store.session(path) as conn:
        stored = store.head(conn)
        ring = key_ring(conn)
        origin = note.open_signed_note(old_note)[0].origin
        if origin != stored.origin:
            raise InputError(
                f"{source}: this head's origin is {origin!r}, the ledger's is {stored.origin!r}: "
                "a tree head of another ledger (wrong file or --db?)"
            )
        old = verify_note_with_ring(old_note, ring, stored.origin)
        if old.size > stored.size:
            raise VerificationError(
                f"the given tree head has size {old.size}, larger than the log's {stored.size}: rollback?"
            )
        nodes = store.fetch_nodes(
            conn,
            merkle.needed_nodes(merkle.consistency_ranges(old.size, stored.size) + [(0, old.size)])
            if old.size
            else set(),
        )
    if old.size == 0:
        proof: list[bytes] = []
    else:
        proof = merkle.consistency_proof(old.size, stored.size, nodes)
        local_old_root = merkle.range_hash(0, old.size, nodes)
        if local_old_root != old.root:
            raise VerificationError(
                f"the log's first {old.size} entries have root {local_old_root.hex()}, "
                f"the published tree head says {old.root.hex()}"
            )
    merkle.verify_consistency(old.size, stored.size, old.root, stored.root, proof)
    return ConsistencyProof(old.size, old.root, stored.size, stored.root, proof)


def _checked_consistency(
    conn: store.Connection, old_size: int, size: int, root: bytes
) -> list[bytes]:
    if not 0 <= old_size <= size:
        raise InputError(f"expected an old tree size in 0..{size}, found {old_size}")
    if old_size == 0:
        return []
    nodes = store.fetch_nodes(
        conn, merkle.needed_nodes(merkle.consistency_ranges(old_size, size) + [(0, old_size)])
    )
    proof = merkle.consistency_proof(old_size, size, nodes)
    merkle.verify_consistency(old_size, size, merkle.range_hash(0, old_size, nodes), root, proof)
    return proof


def consistency_from_size(path: Path, old_size: int, size: int, root: bytes) -> list[bytes]:
    """The consistency proof from the log's first `old_size` entries to its tree head (`size`, `root`),
    checked against the stored nodes before it is returned (a witness that refuses it refuses our tree).

    `size` may lie below the latest head (the log only grows): stored nodes never change."""
    with store.session(path, read_only=True) as conn:
        return _checked_consistency(conn, old_size, size, root)


def witness_view(
    path: Path, keys: Sequence[tuple[str, bytes]]
) -> tuple[TreeHeadInfo, dict[tuple[str, bytes], int], dict[int, list[bytes]]]:
    """In one session: the latest head (with its cosignatures), the largest size each witness key
    (name, key id) cosigned for this ledger, and the consistency proof to the head from each of those
    sizes (what a submission to that witness starts from)."""
    with store.session(path) as conn:
        info = head_info(conn, store.head(conn))
        found = {key: cosignature_rows.last_cosigned_size(conn, *key) for key in keys}
        last = {key: min(size, info.size) for key, size in found.items() if size is not None}
        proofs = {
            old: _checked_consistency(conn, old, info.size, info.root)
            for old in {0, *last.values()}
        }
    return info, last, proofs
