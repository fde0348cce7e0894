"""What an audit found: findings, the report, and their fixed JSON forms (`ledger audit --json`, bundles).

No I/O: the bundle builder and the views read reports through this module without loading the audit's
machinery. The finding schema itself (fields, order, which are optional) is `ledger.spec.rules.FINDING_FIELDS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.spec.lineage import Lineage
from ledger.spec.problems import Problem
from ledger.spec.rules import FINDING_FIELDS, FINDING_TYPES, CoverageGap, Policy, uncovered

__all__ = ["AuditReport", "Finding", "finding_json", "report_json"]

_TYPE_ORDER = {kind: n for n, kind in enumerate(FINDING_TYPES)}


@dataclass(frozen=True)
class Finding:
    """One piece of evidence that third-party output entered the lineage.

    `call` and `batch` are entry indexes, `record` a 0-based position in the batch, `segment` the hex
    segment hash (for `near`: the call's or suspect's output segment that the record resembles).
    `suspect` is the suspect's index in the suspects file. `path` holds the checkpoint ids from the
    audited checkpoint down to the one that trained on the batch (or named the teacher). `allowed`
    findings keep what they would otherwise have been in `basis`. `batch_id` and `external_id` name
    the batch and the call by the ids people know them by (the batch body's `id`, the call's
    `external_id`); they are read from the signed entries and never part of the finding's identity.
    """

    type: str
    call: int | None = None
    batch: int | None = None
    record: int | None = None
    segment: str | None = None
    similarity: float | None = None
    purpose: str | None = None
    provider: str | None = None
    model: str | None = None
    suspect: int | None = None
    path: tuple[str, ...] = ()
    basis: str | None = None
    suspect_line: int | None = None
    batch_id: str | None = None
    external_id: str | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """DESIGN.md: one finding per (type, call or suspect, batch, record position, segment)."""
        source = ("call", self.call) if self.call is not None else ("suspect", self.suspect)
        teacher = (
            (self.provider, self.model) if self.call is None and self.suspect is None else None
        )
        return (self.type, self.basis, source, self.batch, self.record, self.segment, teacher)

    def sort_key(self) -> tuple[Any, ...]:
        return (
            _TYPE_ORDER.get(self.type, 9),
            -1 if self.call is None else self.call,
            -1 if self.suspect is None else self.suspect,
            -1 if self.batch is None else self.batch,
            -1 if self.record is None else self.record,
            self.segment or "",
            self.provider or "",
            self.model or "",
        )


@dataclass(frozen=True)
class AuditReport:
    """The outcome of `audit`. `problems` (integrity failures, dangling references) force `inconclusive`."""

    verdict: str
    checkpoint: str
    checkpoint_index: int
    findings: tuple[Finding, ...]
    coverage: Mapping[str, int]
    timings: Mapping[str, float]
    problems: tuple[Problem, ...]
    lineage: Lineage = field(repr=False)
    size: int = 0
    root: bytes = b""
    policy: Policy = field(default_factory=Policy)
    fuzzy: bool = True
    threshold: float | None = None
    notes: tuple[str, ...] = ()
    gaps: tuple[CoverageGap, ...] = ()
    reconciliation: Mapping[str, Any] | None = None  # `spec.reconcile.reconciliation_summary`

    @property
    def uncovered(self) -> bool:
        """Lineage records without comparable text that no `[[opaque]]` rule excuses."""
        return uncovered(self.gaps)


def finding_json(f: Finding) -> dict[str, Any]:
    """A finding as `ledger audit --json` and bundles print it (`FINDING_FIELDS`: fixed fields first)."""
    out: dict[str, Any] = {}
    for spec in FINDING_FIELDS:
        value = getattr(f, spec.name)
        if spec.kind == "path":
            value = list(value)
        if value is not None or spec.always:
            out[spec.name] = value
    return out


def report_json(report: AuditReport) -> dict[str, Any]:
    """The fixed `ledger audit --json` document (schemas/audit.schema.json)."""
    return {
        "verdict": report.verdict,
        "checkpoint": report.checkpoint,
        "checkpoint_index": report.checkpoint_index,
        "size": report.size,
        "root": report.root.hex(),
        "findings": [finding_json(f) for f in report.findings],
        "coverage": dict(report.coverage),
        "timings": {k: round(v, 6) for k, v in report.timings.items()},
        "problems": [{"index": p.index, "what": p.what} for p in report.problems],
        "policy": report.policy.to_json(),
        "opaque": report.policy.opaque_json(),
        "coverage_gaps": [gap.to_json() for gap in report.gaps],
        "fuzzy": report.fuzzy,
        "threshold": report.threshold,
        "notes": list(report.notes),
        **(
            {} if report.reconciliation is None else {"reconciliation": dict(report.reconciliation)}
        ),
    }
