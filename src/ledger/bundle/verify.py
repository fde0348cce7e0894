"""Offline verification of audit bundles: `verify_bundle` re-checks a bundle with nothing but the verifier key.

A bundle (DESIGN.md "Bundle layout") carries a signed tree head, the log entries an audit relied on with
their inclusion proofs, and the matched record leaves with proofs against their batch's `records_root`.
`verify_bundle` re-checks all of it: no DuckDB, no ledger file. So it imports only the pure modules (spec,
keys, hashing; fingerprint for near findings), the audit's input readers and never `ledger.ledger` or
`ledger.log.store`.

What it can and cannot establish: every entry and record it is shown is genuine and in the log under the
signed head; the lineage it is shown is closed (every reference resolves inside the bundle); each finding
is backed by the entries and leaves it names; the verdict follows from the findings. It cannot see entries
the bundle leaves out that no shown entry refers to (a call never declared nor matched), nor revocations
left out. With `records_dir` (from `ledger export records`) it recomputes every lineage batch root from the
exported leaves, so a verifier's own suspects can be checked against the complete, committed record set:
that is what makes a `clean` verdict refutable.

The rules themselves (verdict, coverage, policy, the finding schema, the lineage closure) are in
`ledger.spec`, because the audit and the offline verifier must apply the very same ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.audit.inputs import Suspect, Suspects, read_suspects
from ledger.bundle.export import read_export
from ledger.bundle.parts import BUNDLE_FORMAT, Problems, opt_str
from ledger.bundle.verifier import Verifier
from ledger.errors import InputError, LedgerError
from ledger.spec import note
from ledger.spec.cosigned import check_cosigned, policy_log_for
from ledger.spec.problems import Problem
from ledger.spec.reconcile import Reconciliation
from ledger.spec.rules import VERDICTS, Policy, uncovered, verdict_of
from ledger.spec.witness_policy import WitnessPolicy

__all__ = [
    "BUNDLE_FORMAT",
    "BundleReport",
    "SuspectHit",
    "load_bundle",
    "policy_vkey",
    "read_vkey",
    "verify_bundle",
]


def read_vkey(value: str) -> str:
    """A verifier key given as the vkey string itself or as a file holding one; malformed is InputError."""
    candidate = Path(value)
    if "+" not in value or candidate.is_file():
        try:
            text = candidate.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise InputError(
                f"{value}: neither a verifier key (name+hash+key) nor a file holding one"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{value}: cannot read the verifier key: {exc}") from None
        try:
            note.parse_vkey(text)
        except InputError as exc:
            raise InputError(f"{value}: {exc}") from None
        return text
    note.parse_vkey(value)
    return value.strip()


def load_bundle(path: Path) -> dict[str, Any]:
    """Read a bundle file; a missing file, or content that is not a JSON object, is InputError.

    Nothing can be checked in such a file (unusable input); a JSON object that fails a check is a
    problem `verify_bundle` reports.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such bundle file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the bundle: {exc.strerror or exc}") from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except (
        UnicodeDecodeError,
        ValueError,
        RecursionError,
    ) as exc:  # RecursionError: absurd nesting
        raise InputError(
            f"{path}: not a bundle: not valid JSON ({exc}); truncated or altered?"
        ) from None
    if not isinstance(document, dict):
        raise InputError(
            f"{path}: not a bundle: expected a JSON object, found {type(document).__name__}"
        )
    return document


@dataclass(frozen=True)
class SuspectHit:
    """A verifier's suspect found in the exported records: suspect `suspect` (0-based, on 1-based file
    line `line`) is segment `segment` of record `record` (its position) in lineage batch entry `batch`."""

    suspect: int
    line: int
    batch: int
    batch_id: str
    record: int
    segment: str


@dataclass(frozen=True)
class BundleReport:
    """`ok` only when every check passed; `verdict` is the bundle's claim (None if unreadable).

    `suspect_hits` lists where the verifier's own suspects were found (with `--records` and `--suspects`).
    """

    ok: bool
    problems: tuple[Problem, ...]
    verdict: str | None
    checkpoint: str | None = None
    size: int | None = None
    checked: Mapping[str, int] = field(default_factory=dict)
    suspect_hits: tuple[SuspectHit, ...] = ()
    reconciliation: Reconciliation | None = None  # with --log and --usage: the provider's own check


def _segment_count(leaf: bytes) -> int:
    """Segments in a committed (canonical) record leaf: quoted hashes before the closing bracket."""
    inner = leaf[13 : leaf.index(b"]", 13)]
    return 0 if not inner else inner.count(b",") + 1


def _suspects_in_export(
    leaves: Mapping[int, list[bytes]], suspects: Suspects
) -> list[tuple[Suspect, int, int, str]]:
    """(suspect, batch, position, segment) for every suspect segment in a committed exported leaf."""
    wanted: dict[bytes, int] = {}
    for owner, digest in zip(suspects.row_owners(), suspects.row_hashes()):
        wanted.setdefault(b'"' + digest.hex().encode("ascii") + b'"', owner)
    hits = []
    for batch, batch_leaves in sorted(leaves.items()):
        for position, leaf in enumerate(batch_leaves):
            # A committed leaf is canonical: b'{"segments":["h1","h2"],"sha256":"d"}'.
            inner = leaf[13 : leaf.index(b"]", 13)]
            if not inner:
                continue
            for quoted in set(inner.split(b",")) & wanted.keys():
                hits.append(
                    (suspects[wanted[quoted]], batch, position, quoted[1:-1].decode("ascii"))
                )
    return hits


def policy_vkey(bundle: Mapping[str, Any], policy: WitnessPolicy) -> str:
    """The policy's log key for the bundle's tree head: the one that signs it, else the first one for
    its origin (whose failure the verification then names); InputError when the policy has no log."""
    tree_head = bundle.get("tree_head")
    if isinstance(tree_head, str):
        try:
            return policy_log_for(tree_head, policy)[1].vkey
        except LedgerError:
            pass
        try:
            origin = note.open_signed_note(tree_head)[0].origin
        except LedgerError:
            origin = None
        for log in policy.logs:
            if log.name == origin:
                return log.vkey
    if not policy.logs:
        raise InputError("the witness policy lists no log key to check the bundle's tree head with")
    return policy.logs[0].vkey


def _check_witnesses(bundle: Mapping[str, Any], policy: WitnessPolicy, p: Problems) -> int:
    """The bundle's tree head under the policy: a policy log key signs it and a quorum cosigns it."""
    try:
        judged = check_cosigned(str(bundle.get("tree_head")), policy)
    except LedgerError as exc:
        p.add("tree_head", f"witness policy: {exc}")
        return 0
    if not judged.quorum:
        names = ", ".join(sorted(judged.cosigned)) or "none"
        p.add("tree_head", f"witness {judged.missing} (valid cosignatures by: {names})")
    return len(judged.cosigned)


def verify_bundle(
    bundle: Mapping[str, Any],
    vkey: str,
    records_dir: Path | None = None,
    suspects: Path | Suspects | None = None,
    *,
    witness_policy: WitnessPolicy | None = None,
    log_dir: Path | None = None,
    usage: Sequence[Path] = (),
    provider: str = "openai",
) -> BundleReport:
    """Check an audit bundle offline against the verifier key; collect every problem (never raise for them).

    With `records_dir`, every lineage batch root is recomputed from the exported leaves; with `suspects`
    too, a suspect found in that complete record set refutes a `clean` (or `suspect`) verdict. With
    `log_dir` (from `ledger export log`) the tree head's root is recomputed from every leaf, and with
    `usage` the provider's usage pages are reconciled against every call entry (a difference is a
    problem). With `witness_policy`, the tree head must also be signed by one of the policy's log keys
    and cosigned by its quorum of witnesses (DESIGN.md "Witnesses").
    Unusable inputs (a malformed `vkey`, the suspects file, the records directory) raise InputError.
    """
    note.parse_vkey(vkey)
    p = Problems()
    cosigned = None if witness_policy is None else _check_witnesses(bundle, witness_policy, p)
    verdict = bundle.get("verdict")
    claimed = verdict if isinstance(verdict, str) else None
    suspect_list = read_suspects(suspects) if isinstance(suspects, (str, Path)) else suspects
    if bundle.get("format") != BUNDLE_FORMAT:
        p.add("format", f"expected {BUNDLE_FORMAT!r}, found {bundle.get('format')!r}")
    if claimed not in VERDICTS:
        p.add("verdict", f"expected one of {', '.join(VERDICTS)}, found {verdict!r}")
    v = Verifier(bundle, p)
    if not v.head(vkey):
        return BundleReport(False, tuple(p.items), claimed, opt_str(bundle.get("checkpoint")))
    v.load_entries()
    v.signatures(vkey)
    v.key_list()
    checkpoint = v.lineage()
    v.load_records()
    try:
        policy = Policy.from_json(bundle.get("policy", []))
    except InputError as exc:
        p.add("policy", str(exc))
        policy = Policy()
    try:
        policy = policy.with_opaque_json(bundle.get("opaque", []))
    except InputError as exc:
        p.add("opaque", str(exc))
    segments = None
    if suspect_list is not None:
        segments = frozenset(h.hex() for h in suspect_list.row_hashes())
    listed_problems = bundle.get("problems") or []
    lenient = claimed == "inconclusive" and bool(listed_problems)
    types = v.findings(policy, segments, lenient=lenient)
    v.coverage()
    gaps = v.gaps(policy)
    inconclusive = v.incomplete or bool(listed_problems)
    if claimed in VERDICTS:
        expected = verdict_of(types, inconclusive=inconclusive, uncovered=uncovered(gaps),
                              unreconciled=_unreconciled(bundle))  # fmt: skip
        if expected != claimed:
            reason = (
                "the lineage is incomplete or the audit listed problems"
                if inconclusive
                else "the findings and the coverage gaps"
            )
            p.add("verdict", f"expected {expected} (from {reason}), found {claimed}")
    checked = {"entries": len(v.entries), "records": len(v.records), "findings": len(types)}
    if cosigned is not None:
        checked["cosignatures"] = cosigned
    if gaps:
        checked["coverage_gaps"] = len(gaps)
        checked["opaque_batches"] = sum(1 for g in gaps if g.opaque is not None)
    if v.unproven:
        checked["unproven_findings"] = v.unproven
    found: list[SuspectHit] = []
    if records_dir is not None:
        wanted = {b: v.batch(b) for b in v.lineage_batches}
        leaves = read_export(Path(records_dir), wanted, p)
        checked["exported_records"] = sum(len(x) for x in leaves.values())
        for (batch, position), (leaf, _) in v.records.items():
            if batch in leaves and leaves[batch][position] != leaf:
                p.add(
                    f"records batch {batch}",
                    f"position {position}: the export and the bundle disagree",
                )
        coverage = bundle.get("coverage")
        if not v.incomplete and len(leaves) == len(wanted) and isinstance(coverage, Mapping):
            counted = sum(
                _segment_count(leaf) for batch_leaves in leaves.values() for leaf in batch_leaves
            )
            if coverage.get("segments") != counted:
                p.add(
                    "coverage",
                    f"expected {counted} segments (counted in the export), found {coverage.get('segments')!r}",
                )
            listed = {g.batch: g.without_text for g in gaps}
            for batch, batch_leaves in sorted(leaves.items()):
                bare = sum(1 for leaf in batch_leaves if _segment_count(leaf) == 0)
                if bare != listed.get(batch, 0):
                    p.add(
                        f"records batch {batch}",
                        f"expected {listed.get(batch, 0)} records without text (the bundle's "
                        f"coverage gaps), found {bare} in the export",
                    )
        if suspect_list is not None:
            hits = _suspects_in_export(leaves, suspect_list)
            checked["suspect_hits"] = len(hits)
            found = [
                SuspectHit(s.index, s.line, batch, v.batch(batch).id, position, segment)
                for s, batch, position, segment in hits
            ]
            found.sort(key=lambda h: (h.batch, h.record, h.suspect, h.segment))
            if claimed in ("clean", "suspect"):
                for hit in found[:20]:
                    p.add(
                        "verdict",
                        f"the verifier's suspect #{hit.suspect} (line {hit.line}) is segment "
                        f"{hit.segment} of record {hit.record} in lineage batch {hit.batch_id!r} "
                        f"(entry {hit.batch}): expected contaminated, found {claimed}",
                    )
    reconciled = None
    if log_dir is not None:
        reconciled = _reconcile_log(v, Path(log_dir), usage, provider, p, checked)
    return BundleReport(
        not p.items, tuple(p.items), claimed, checkpoint, v.size, checked, tuple(found), reconciled
    )


def _unreconciled(bundle: Mapping[str, Any]) -> bool:
    """Whether the audit reconciled with the provider's records and found a gap (`audit --usage`)."""
    section = bundle.get("reconciliation")
    return isinstance(section, Mapping) and section.get("verdict") != "match"


def _reconcile_log(
    v: Verifier,
    log_dir: Path,
    usage: Sequence[Path],
    provider: str,
    p: Problems,
    checked: dict[str, int],
) -> Reconciliation | None:
    """Recompute the signed root from the exported log; reconcile `usage` with every call entry in it."""
    from ledger.bundle.log_export import read_log_export
    from ledger.ingest.usage import read_usage
    from ledger.spec.reconcile import check_buckets, reconcile

    buckets = check_buckets(read_usage(list(usage))) if usage else None
    calls = read_log_export(log_dir, v.size, v.root, provider, p)
    if calls is None:
        return None
    checked["log_entries"] = v.size
    checked["log_calls"] = len(calls)
    if buckets is None:
        return None
    result = reconcile(provider, buckets, calls)
    for reason in result.reasons():
        p.add("usage", reason)
    for d in result.differences[:20]:
        p.add(
            "usage",
            f"bucket {d.start}..{d.end} model {d.model} batch {d.batch}: served {d.served['requests']} "
            f"requests ({d.served['input_tokens']} in, {d.served['output_tokens']} out), recorded "
            f"{d.recorded['requests']} ({d.recorded['input_tokens']} in, {d.recorded['output_tokens']} out)",
        )
    return result
