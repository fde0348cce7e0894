"""Building the portable proof bundle of an audit (DESIGN.md "Bundle layout"; schemas/audit-bundle.schema.json).

The entries an audit relied on, with inclusion proofs against the latest tree head, and the matched
record leaves (with their fingerprints for near findings), with proofs against their batch's root.
`ledger.bundle.verify` checks what this writes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ledger.audit.report import AuditReport, report_json
from ledger.bundle.parts import BUNDLE_FORMAT
from ledger.errors import WitnessQuorumError
from ledger.log import store
from ledger.log.store import audit as queries
from ledger.spec import entries, envelope, merkle

__all__ = ["ProofSource", "build_bundle"]

MAX_COSIGN_ROUNDS = 3


class _Head(Protocol):
    @property
    def size(self) -> int: ...
    @property
    def root(self) -> bytes: ...
    @property
    def note(self) -> str: ...
    @property
    def cosigned_note(self) -> str: ...


class _Proof(Protocol):
    @property
    def leaf(self) -> bytes: ...
    @property
    def leaf_hash(self) -> bytes: ...
    @property
    def proof(self) -> list[bytes]: ...


class ProofSource(Protocol):
    """What a bundle needs of a ledger: its file, and inclusion proofs of entries against its latest head."""

    @property
    def path(self) -> Path: ...

    def inclusion_proofs(self, indexes: Sequence[int]) -> tuple[_Head, Mapping[int, _Proof]]: ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bundle_entries(
    ledger: ProofSource, report: AuditReport
) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    """Lineage, finding, key and revoke entries with inclusion proofs against the latest tree head."""
    wanted = set(report.lineage.entry_indexes())
    wanted |= {f.call for f in report.findings if f.call is not None}
    wanted |= {f.batch for f in report.findings if f.batch is not None}
    with store.session(ledger.path, read_only=True) as conn:
        wanted |= set(queries.key_entry_indexes(conn))
    head, proofs = ledger.inclusion_proofs(sorted(wanted))
    key_bodies: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    for index in sorted(wanted):
        proof = proofs[index]
        merkle.verify_inclusion(proof.leaf_hash, index, head.size, proof.proof, head.root)
        items.append(
            {"index": index, "leaf": _b64(proof.leaf), "proof": [p.hex() for p in proof.proof]}
        )
        body = envelope.parse_envelope(proof.leaf, index=index).body()
        if body["kind"] == "key":
            key_bodies.append(body)
    return head, items, key_bodies


def _bundle_records(ledger: ProofSource, report: AuditReport) -> list[dict[str, Any]]:
    """Each matched record leaf (and, for near findings, its fingerprint) with proofs against its batch."""
    wanted: dict[int, dict[int, bool]] = {}
    for f in report.findings:
        if f.batch is not None and f.record is not None:
            near = f.type == "near" or f.basis == "near"
            wanted.setdefault(f.batch, {})[f.record] = (
                wanted.get(f.batch, {}).get(f.record, False) or near
            )
    out: list[dict[str, Any]] = []
    if not wanted:
        return out
    bodies = {n.index: n.entry for n in report.lineage.batches}
    with store.session(ledger.path, read_only=True) as conn:
        for batch in sorted(wanted):
            leaves = queries.batch_leaves(conn, batch)
            nodes = merkle.nodes_from_leaves([merkle.leaf_hash(leaf) for leaf in leaves])
            body = bodies[batch]
            root = body.records_root if isinstance(body, entries.BatchBody) else None
            if merkle.root_from_nodes(len(leaves), nodes).hex() != root:
                continue  # the stored set no longer matches its root (an inconclusive audit): nothing to prove
            fp_nodes = None
            if any(wanted[batch].values()):
                fps = queries.record_fingerprints(conn, batch)
                fp_nodes = merkle.nodes_from_leaves([merkle.leaf_hash(fp) for fp in fps])
            for position, near in sorted(wanted[batch].items()):
                item: dict[str, Any] = {
                    "batch": batch, "position": position, "leaf": _b64(leaves[position]),
                    "proof": [p.hex() for p in merkle.inclusion_proof(position, len(leaves), nodes)],
                }  # fmt: skip
                if near and fp_nodes is not None:
                    item["fingerprint"] = _b64(fps[position])
                    item["fingerprint_proof"] = [
                        p.hex() for p in merkle.inclusion_proof(position, len(fps), fp_nodes)
                    ]
                out.append(item)
    return out


def build_bundle(
    ledger: ProofSource,
    report: AuditReport,
    cosign: Callable[[], _Head] | None = None,
    cosigned: _Head | None = None,
) -> dict[str, Any]:
    """The portable proof bundle (DESIGN.md "Bundle layout"; schemas/audit-bundle.schema.json).

    Proofs are against the latest tree head, which covers at least the audited log; the bundle carries
    it with the witness cosignatures stored for it. With `cosign` (which gets the latest head cosigned
    by a witness quorum and returns it), the head the proofs are against is that cosigned head:
    `cosigned` is one got already; when the log grew since, the head is cosigned again.
    """
    head, items, key_bodies = _bundle_entries(ledger, report)
    note = head.cosigned_note
    if cosign is not None:
        for _ in range(MAX_COSIGN_ROUNDS):
            if cosigned is not None and (cosigned.size, cosigned.root) == (head.size, head.root):
                note = cosigned.cosigned_note
                break
            cosigned = cosign()
            if (cosigned.size, cosigned.root) != (head.size, head.root):  # appended meanwhile
                head, items, key_bodies = _bundle_entries(ledger, report)
        else:
            raise WitnessQuorumError(
                f"the log grew during each of {MAX_COSIGN_ROUNDS} rounds of cosigning: "
                "no cosigned head to prove the bundle against; try again"
            )
    document = report_json(report)
    return {
        "format": BUNDLE_FORMAT,
        "tree_head": note,
        "keys": key_bodies,
        "checkpoint": report.checkpoint,
        "entries": items,
        "records": _bundle_records(ledger, report),
        "verdict": report.verdict,
        "findings": document["findings"],
        "coverage": document["coverage"],
        "problems": document["problems"],
        "policy": document["policy"],
        "opaque": document["opaque"],
        "coverage_gaps": document["coverage_gaps"],
        "audited_size": report.size,
        **({"reconciliation": document["reconciliation"]} if "reconciliation" in document else {}),
    }
