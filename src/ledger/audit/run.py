"""Audit: prove or disprove that third-party outputs entered a checkpoint's training lineage.

Three steps, as DESIGN.md "Audit" fixes them:

1. Integrity: the whole log up to its latest tree head verifies (`ledger.log.verify.verify_ledger`, which also
   recomputes every batch's record set against its signed `records_root`), and the lineage closes (no
   reference names a missing entry). Everything later reads only entries below the verified size.
2. Findings: `declared` (batches derived_from calls, third-party teachers), `exact` (a lineage record
   segment equals a recorded call's output segment or a suspect's, joined in DuckDB: `ledger.audit.exact`)
   and `near` (fingerprint LSH bands joined in DuckDB, then a similarity estimate: `ledger.audit.near`).
   A policy turns calls to allowed providers/models into `allowed` findings.
3. Verdict: inconclusive > contaminated > suspect > clean (`ledger.spec.rules.verdict_of`), and the
   Coverage rule: lineage records without comparable text make `clean` inconclusive.

`ledger.bundle.build` turns a report into the portable proof bundle; `ledger.bundle.export` writes a
lineage's record leaves (hashes only) for a verifier who wants to check a `clean` verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, cast

from ledger.audit.coverage import coverage as _coverage
from ledger.audit.coverage import gap_counts, records, texted
from ledger.audit.exact import exact_calls, exact_suspects, suspect_table
from ledger.audit.inputs import Suspects, read_policy, read_suspects
from ledger.audit.near import near as _near
from ledger.audit.reconcile import reconcile_ledger
from ledger.audit.report import AuditReport, Finding
from ledger.errors import NotFoundError, UsageError
from ledger.ingest.usage import read_receipts, read_usage
from ledger.ingest.weights import hash_weights
from ledger.log import store
from ledger.log.store import audit as queries
from ledger.log.store.audit import Connection
from ledger.log.store.lineage import lineage, resolve_checkpoint
from ledger.log.verify import verify_ledger
from ledger.spec import entries
from ledger.spec.lineage import Lineage
from ledger.spec.problems import Problem
from ledger.spec.reconcile import reconciliation_summary
from ledger.spec.rules import Policy, coverage_gaps, uncovered, verdict_of

__all__ = ["LedgerFile", "Progress", "audit"]

Progress = Callable[[int], None]


class LedgerFile(Protocol):
    """What the audit needs of a ledger: where its file is (it opens its own read-only sessions)."""

    @property
    def path(self) -> Path: ...


# --- entry point -----------------------------------------------------------------------------------------


def audit(
    ledger: LedgerFile,
    checkpoint: str | None = None,
    *,
    weights: Sequence[Path] = (),
    suspects: Path | None = None,
    fuzzy: bool = True,
    threshold: float | None = None,
    policy: Path | Policy | None = None,
    progress: Progress | None = None,
    usage: Sequence[Path] = (),
    receipts: Sequence[Path] = (),
    provider: str = "openai",
) -> AuditReport:
    """Audit a checkpoint (by id or entry index, or by the hashes of its weight files).

    Raises NotFoundError for an unknown checkpoint, InputError for unreadable suspects/policy/weights,
    Calls and batches fingerprinted with different settings (an older scheme) are not near-compared:
    they are counted in `coverage` and named in `notes`.
    Tampering never raises: it is listed in `problems` and makes the verdict `inconclusive`.
    With `usage` or `receipts` (the provider's records), `provider`'s calls are reconciled with them
    (`ledger.audit.reconcile`): a discrepancy turns `clean` into `inconclusive`, its reasons in `notes`.
    """
    started = time.perf_counter()
    if (checkpoint is None) == (not weights):
        raise UsageError("audit needs a checkpoint id or --weights files (one of the two)")
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise UsageError(f"threshold {threshold}: expected a similarity in (0, 1]")
    rules = (
        policy
        if isinstance(policy, Policy)
        else read_policy(policy)
        if policy is not None
        else Policy()
    )
    suspect_list = read_suspects(suspects) if suspects is not None else Suspects([], [0], b"")
    suspect_rows = suspect_table(suspect_list)
    weight_hashes = _weight_hashes(weights) if weights else []
    if usage or receipts:  # unreadable provider files fail before the work starts
        read_usage(list(usage))
        read_receipts(list(receipts))
    timings: dict[str, float] = {"inputs": time.perf_counter() - started}

    mark = time.perf_counter()
    with store.session(ledger.path, read_only=True) as conn:  # an unknown checkpoint fails fast
        stored = store.entry_count(conn)
        found = checkpoint if checkpoint is not None else _by_weights(conn, weight_hashes, stored)
        target = resolve_checkpoint(conn, found, stored)[0]
        lineage_batches = {
            n.index for n in lineage(conn, target, size=stored).batches if n.index is not None
        }
    # Every entry, signature and node is checked; record sets only where the verdict depends on them.
    # verify_ledger reads only the ledger's path (its `Ledger` annotation is the facade's, which the audit
    # must not import): the cast goes once verification takes the path itself.
    verified = verify_ledger(cast(Any, ledger), progress=progress, record_sets=lineage_batches)
    problems: list[Problem] = list(verified.problems)
    size = verified.size
    notes: list[str] = []
    with store.session(ledger.path, read_only=True) as conn:
        lin = lineage(conn, target, size=max(size, target + 1))
        problems.extend(lin.problems)
        timings["integrity"] = time.perf_counter() - mark

        mark = time.perf_counter()
        batches = [n.index for n in lin.batches if n.index is not None]
        findings = _declared(lin, rules)
        exact = exact_calls(conn, batches, size)
        exact += exact_suspects(conn, batches, suspect_rows)
        timings["matching"] = time.perf_counter() - mark

        mark = time.perf_counter()
        near: list[Finding] = []
        not_near: dict[str, int] = {}
        if fuzzy:
            near, near_notes, not_near = _near(conn, lin, batches, size, suspect_list, threshold)
            notes.extend(near_notes)
            covered = {_record_key(f) for f in exact}
            near = [f for f in near if _record_key(f) not in covered]
        timings["near"] = time.perf_counter() - mark
        coverage = {**_coverage(conn, lin, batches, size, suspect_list), **not_near}
        calls = {f.call for f in [*findings, *exact, *near] if f.call is not None}
        external_ids = queries.external_ids(conn, calls, size)
    gaps = coverage_gaps(
        (
            (
                n.index,
                n.id,
                records(n.entry),
                texted(n.index, n.entry, verified.records_with_text),
            )
            for n in lin.batches
            if n.index is not None
        ),
        rules,
    )
    coverage.update(gap_counts(gaps))

    paths = {n.index: n.path for n in lin.batches}
    for f in [*exact, *near]:
        findings.append(_place(f, paths, rules))
    batch_ids = {n.index: n.id for n in lin.batches if n.index is not None}
    findings = [
        replace(f, batch_id=batch_ids.get(f.batch) if f.batch is not None else None,
                external_id=external_ids.get(f.call) if f.call is not None else None)
        for f in findings
    ]  # fmt: skip
    unique = {f.key: f for f in findings}
    ordered = tuple(sorted(unique.values(), key=Finding.sort_key))
    reconciled = None
    if usage or receipts:
        reconciled = reconcile_ledger(
            ledger, usage=usage, receipts=receipts, provider=provider, size=size
        )
        notes.extend(f"reconcile: {reason}" for reason in reconciled.reasons())
    verdict = verdict_of(
        (f.type for f in ordered), inconclusive=bool(problems), uncovered=uncovered(gaps),
        unreconciled=reconciled is not None and reconciled.verdict != "match",
    )  # fmt: skip
    timings["total"] = time.perf_counter() - started
    return AuditReport(
        verdict=verdict,
        checkpoint=lin.checkpoint,
        checkpoint_index=lin.index,
        findings=ordered,
        coverage=coverage,
        timings=timings,
        problems=tuple(problems),
        lineage=lin,
        size=size,
        root=verified.root,
        policy=rules,
        fuzzy=fuzzy,
        threshold=threshold,
        notes=tuple(notes),
        gaps=tuple(gaps),
        reconciliation=None if reconciled is None else reconciliation_summary(reconciled),
    )


def _record_key(f: Finding) -> tuple[Any, ...]:
    """An exact finding covers near ones for the same (call or suspect, batch, record)."""
    return (f.call, f.suspect, f.batch, f.record)


def _place(f: Finding, paths: Mapping[int | None, tuple[str, ...]], rules: Policy) -> Finding:
    """Attach the checkpoint path, and make calls the policy allows `allowed`."""
    path = paths.get(f.batch, ())
    if f.call is not None and rules.allows(f.provider, f.model):
        return Finding(**{**f.__dict__, "type": "allowed", "basis": f.type, "path": path})
    return Finding(**{**f.__dict__, "path": path})


def _weight_hashes(weights: Sequence[Path]) -> list[str]:
    return [w["sha256"] for w in hash_weights([Path(w) for w in weights])]


def _by_weights(conn: Connection, hashes: Sequence[str], size: int) -> int:
    """The checkpoint whose weights include every given hash (the latest if several do)."""
    wanted = set(hashes)
    matches = [
        (idx, ref)
        for idx, ref, found in queries.checkpoint_weights(conn, size)
        if wanted <= set(found)
    ]
    if not matches:
        raise NotFoundError(
            f"no recorded checkpoint has weights with sha256 {', '.join(h[:16] + '…' for h in hashes)}"
        )
    if len({ref for _, ref in matches}) > 1:
        names = ", ".join(repr(ref) for _, ref in matches[:5])
        raise UsageError(
            f"these weights belong to several checkpoints ({names}): audit one of them by id"
        )
    return matches[-1][0]


# --- declared -------------------------------------------------------------------------------------------


def _declared(lin: Lineage, rules: Policy) -> list[Finding]:
    """Every derived_from call of a lineage batch, and every third-party teacher."""
    out: list[Finding] = []
    nodes = {n.id: n for n in lin.nodes}
    for edge in lin.edges:
        if edge.kind == "derived_from":
            batch, call = nodes[edge.source], nodes[edge.target]
            if call.missing or call.body is None or batch.missing:
                continue
            provider, model = (
                (call.entry.provider, call.entry.model)
                if isinstance(call.entry, entries.CallBody)
                else ("None", "None")  # another kind under a call's node id (a lineage problem)
            )
            allowed = rules.allows(provider, model)
            # the purpose as signed: the bundle verifier compares it with the call entry's
            out.append(Finding(
                type="allowed" if allowed else "declared", call=call.index, batch=batch.index,
                purpose=call.body.get("purpose"), provider=provider, model=model, path=batch.path,
                basis="declared" if allowed else None,
            ))  # fmt: skip
        elif edge.kind == "teacher" and nodes[edge.target].kind == "teacher":
            teacher = nodes[edge.target]
            body = teacher.body or {}
            provider, model = str(body.get("provider")), str(body.get("model"))
            allowed = rules.allows(provider, model)
            out.append(Finding(
                type="allowed" if allowed else "declared", provider=provider, model=model,
                path=nodes[edge.source].path, basis="declared" if allowed else None,
            ))  # fmt: skip
    return out
