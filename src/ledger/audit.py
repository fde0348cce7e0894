"""Audit: prove or disprove that third-party outputs entered a checkpoint's training lineage.

Three steps, as DESIGN.md "Audit" fixes them:

1. Integrity: the whole log up to its latest tree head verifies (`ledger.verify.verify_ledger`, which also
   recomputes every batch's record set against its signed `records_root`), and the lineage closes (no
   reference names a missing entry). Everything later reads only entries below the verified size.
2. Findings: `declared` (batches derived_from calls, third-party teachers), `exact` (a lineage record
   segment equals a recorded call's output segment or a suspect's, joined in DuckDB) and `near`
   (fingerprint LSH bands joined in DuckDB, then a similarity estimate). A policy turns calls to allowed
   providers/models into `allowed` findings.
3. Verdict: inconclusive > contaminated > suspect > clean (`ledger.spec.rules.verdict_of`), and the
   Coverage rule: lineage records without comparable text make `clean` inconclusive.

`build_bundle` turns a report into the portable proof bundle; `export_records` writes a lineage's record
leaves (hashes only) for a verifier who wants to check a `clean` verdict against its own suspects.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from ledger.bundle import BUNDLE_FORMAT, Suspects, read_policy, read_suspects
from ledger.errors import InputError, NotFoundError, UsageError
from ledger.lineage import Lineage, lineage, resolve_checkpoint
from ledger.log import store
from ledger.spec import merkle
from ledger.spec.problems import Problem
from ledger.spec.rules import CoverageGap, Policy, coverage_gaps, uncovered, verdict_of
from ledger.verify import VerifyReport, verify_ledger
from ledger.wording import plural

if TYPE_CHECKING:
    from ledger.ledger import Ledger

__all__ = [
    "AuditReport",
    "ExportCounts",
    "Finding",
    "audit",
    "build_bundle",
    "export_records",
    "finding_json",
    "report_json",
]

Connection = duckdb.DuckDBPyConnection
Progress = Callable[[int], None]

_TYPE_ORDER = {"declared": 0, "exact": 1, "near": 2, "allowed": 3}
_PAYLOAD = store.PAYLOAD_JSON
# Who served a call and what it was declared for come from the signed body, never from the derived
# columns: an insider who relabels `entries.purpose` must not change what a finding says.
_SIGNED_CALL_FACTS = (
    "try(json_extract_string(p, '$.provider')) AS provider, try(json_extract_string(p, '$.model')) AS model, "
    "try(json_extract_string(p, '$.purpose')) AS purpose"
)
_HAYSTACK_CHUNK = 1 << 16


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

    @property
    def uncovered(self) -> bool:
        """Lineage records without comparable text that no `[[opaque]]` rule excuses."""
        return uncovered(self.gaps)


@dataclass(frozen=True)
class ExportCounts:
    """What `export_records` wrote: one Parquet file per lineage batch."""

    batches: int
    records: int
    files: tuple[Path, ...]


# --- entry point -----------------------------------------------------------------------------------------


def audit(
    ledger: Ledger,
    checkpoint: str | None = None,
    *,
    weights: Sequence[Path] = (),
    suspects: Path | None = None,
    fuzzy: bool = True,
    threshold: float | None = None,
    policy: Path | Policy | None = None,
    progress: Progress | None = None,
) -> AuditReport:
    """Audit a checkpoint (by id or entry index, or by the hashes of its weight files).

    Raises NotFoundError for an unknown checkpoint, InputError for unreadable suspects/policy/weights,
    Calls and batches fingerprinted with different settings (an older scheme) are not near-compared:
    they are counted in `coverage` and named in `notes`.
    Tampering never raises: it is listed in `problems` and makes the verdict `inconclusive`.
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
    suspect_table = _suspect_table(suspect_list)
    weight_hashes = _weight_hashes(weights) if weights else []
    timings: dict[str, float] = {"inputs": time.perf_counter() - started}

    mark = time.perf_counter()
    with store.session(ledger.path, read_only=True) as conn:  # an unknown checkpoint fails fast
        stored = int(conn.execute("SELECT count(*) FROM entries").fetchall()[0][0])
        found = checkpoint if checkpoint is not None else _by_weights(conn, weight_hashes, stored)
        target = resolve_checkpoint(conn, found, stored)[0]
        lineage_batches = {
            n.index for n in lineage(conn, target, size=stored).batches if n.index is not None
        }
    # Every entry, signature and node is checked; record sets only where the verdict depends on them.
    verified = verify_ledger(ledger, progress=progress, record_sets=lineage_batches)
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
        exact = _exact_calls(conn, batches, size)
        exact += _exact_suspects(conn, batches, suspect_table)
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
        external_ids = _external_ids(conn, calls, size)
    gaps = coverage_gaps(
        (
            (n.index, n.id, int((n.body or {}).get("count", 0)), _texted(n.index, n.body, verified))
            for n in lin.batches
            if n.index is not None
        ),
        rules,
    )
    coverage.update(_gap_counts(gaps))

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
    verdict = verdict_of(
        (f.type for f in ordered), inconclusive=bool(problems), uncovered=uncovered(gaps)
    )
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
    )


def _texted(index: int, body: Mapping[str, Any] | None, verified: VerifyReport) -> int:
    """Records of a batch with comparable text: as its entry commits to (verify checked the rows agree),
    or, for batches recorded before entries said so, as counted in the verified record rows."""
    body = body or {}
    bare = body.get("records_without_text")
    if isinstance(bare, int):
        return int(body.get("count", 0)) - bare
    return verified.records_with_text.get(index, 0)


def _gap_counts(gaps: Sequence[CoverageGap]) -> dict[str, int]:
    """The Coverage rule's counts: what the audit could not compare, and what the policy excused."""
    return {
        "records_without_text": sum(g.without_text for g in gaps),
        "batches_without_text": len(gaps),
        "batches_without_segments": sum(1 for g in gaps if g.without_text == g.records),
        "opaque_batches": sum(1 for g in gaps if g.opaque is not None),
        "opaque_records": sum(g.without_text for g in gaps if g.opaque is not None),
    }


def _record_key(f: Finding) -> tuple[Any, ...]:
    """An exact finding covers near ones for the same (call or suspect, batch, record)."""
    return (f.call, f.suspect, f.batch, f.record)


def _place(f: Finding, paths: Mapping[int | None, tuple[str, ...]], rules: Policy) -> Finding:
    """Attach the checkpoint path, and make calls the policy allows `allowed`."""
    path = paths.get(f.batch, ())
    if f.call is not None and rules.allows(f.provider, f.model):
        return Finding(**{**f.__dict__, "type": "allowed", "basis": f.type, "path": path})
    return Finding(**{**f.__dict__, "path": path})


def _external_ids(conn: Connection, calls: set[int], size: int) -> dict[int, str]:
    """The signed `external_id` of each given call entry (calls without one are left out)."""
    if not calls:
        return {}
    rows = conn.execute(
        f"""SELECT idx, try(json_extract_string({_PAYLOAD}, '$.external_id')) FROM entries
            WHERE idx IN (SELECT unnest(?::BIGINT[])) AND idx < ?""",
        [sorted(calls), size],
    ).fetchall()
    return {int(idx): str(ext) for idx, ext in rows if ext is not None}


def _weight_hashes(weights: Sequence[Path]) -> list[str]:
    from ledger.recording import hash_weights

    return [w["sha256"] for w in hash_weights([Path(w) for w in weights])]


def _by_weights(conn: Connection, hashes: Sequence[str], size: int) -> int:
    """The checkpoint whose weights include every given hash (the latest if several do)."""
    rows = conn.execute(
        f"""SELECT idx, ref, try(json_extract_string({_PAYLOAD}, '$.weights[*].sha256')) FROM entries
            WHERE kind = 'checkpoint' AND idx < ? ORDER BY idx""",
        [size],
    ).fetchall()
    wanted = set(hashes)
    matches = [(int(idx), str(ref)) for idx, ref, found in rows if wanted <= set(found or [])]
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
            provider, model = str(call.body.get("provider")), str(call.body.get("model"))
            allowed = rules.allows(provider, model)
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


# --- exact ----------------------------------------------------------------------------------------------


def _batch_table(conn: Connection, batches: Sequence[int]) -> str:
    name = "_audit_batches"
    conn.register(name, pa.table({"batch": pa.array(sorted(set(batches)), pa.int64())}))
    return name


def _exact_calls(conn: Connection, batches: Sequence[int], size: int) -> list[Finding]:
    """Lineage record segments equal to any recorded call's output segments, joined in DuckDB.

    Call outputs come straight from the signed leaves (decoded in SQL), not from any derived table.
    """
    if not batches:
        return []
    table = _batch_table(conn, batches)
    try:
        rows = conn.execute(
            f"""WITH outputs AS (
                    SELECT idx AS call, {_SIGNED_CALL_FACTS},
                           unnest(try(json_extract_string(p, '$.outputs[*]'))) AS output
                    FROM (SELECT idx, {_PAYLOAD} AS p FROM entries WHERE idx < ?)
                    WHERE try(json_extract_string(p, '$.kind')) = 'call'
                ), call_segments AS (
                    SELECT call, provider, model, purpose, try(unhex(output)) AS segment FROM outputs
                )
                SELECT c.call, c.provider, c.model, c.purpose, s.batch, s.position, lower(hex(s.segment))
                FROM record_segments s
                JOIN call_segments c ON s.segment = c.segment
                WHERE s.batch IN (SELECT batch FROM {table})""",
            [size],
        ).fetchall()
    finally:
        conn.unregister(table)
    found = [
        Finding(type="exact", call=int(call), batch=int(batch), record=int(position), segment=str(segment),
                similarity=1.0, purpose=purpose, provider=provider, model=model)
        for call, provider, model, purpose, batch, position, segment in rows
    ]  # fmt: skip
    return found


def _int_array(values: Sequence[int]) -> Any:
    """An int64 array; a range (a file of hashes only) without a Python loop."""
    if isinstance(values, range):
        return np.arange(values.start, values.stop, values.step, dtype=np.int64)
    return np.asarray(values, dtype=np.int64)


def _suspect_table(suspects: Suspects) -> pa.Table:
    """One row per (suspect, segment); a hash on several lines gives one finding per suspect."""
    counts = np.diff(_int_array(suspects.starts)).astype(np.int64)
    owners = np.repeat(np.arange(len(suspects), dtype=np.int64), counts)
    lines = np.repeat(_int_array(suspects.lines), counts)
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(32), suspects.rows, [None, pa.py_buffer(suspects.blob)]
    )
    return pa.table({"suspect": owners, "line": lines, "segment": fixed.cast(pa.binary())})


def _exact_suspects(conn: Connection, batches: Sequence[int], suspects: pa.Table) -> list[Finding]:
    if not batches or not suspects.num_rows:
        return []
    table = _batch_table(conn, batches)
    conn.register("_audit_suspects", suspects)
    try:
        rows = conn.execute(
            f"""SELECT u.suspect, u.line, s.batch, s.position, lower(hex(s.segment))
                FROM record_segments s JOIN _audit_suspects u ON s.segment = u.segment
                WHERE s.batch IN (SELECT batch FROM {table})"""
        ).fetchall()
    finally:
        conn.unregister("_audit_suspects")
        conn.unregister(table)
    return [
        Finding(type="exact", suspect=int(suspect), suspect_line=int(line), batch=int(batch), record=int(position),
                segment=str(segment), similarity=1.0)
        for suspect, line, batch, position, segment in rows
    ]  # fmt: skip


def _coverage(
    conn: Connection, lin: Lineage, batches: Sequence[int], size: int, suspects: Suspects
) -> dict[str, int]:
    """What the audit looked at: lineage sizes, every recorded call compared, the suspects."""
    counts = conn.execute(
        f"""SELECT count(*), coalesce(sum(n), 0), count(*) FILTER (WHERE coalesce(n, 0) = 0)
            FROM (SELECT len(try(json_extract_string({_PAYLOAD}, '$.outputs[*]'))) AS n
                  FROM entries WHERE kind = 'call' AND idx < ?)""",
        [size],
    ).fetchall()
    call_count, call_segments, bare_calls = (
        (int(counts[0][0]), int(counts[0][1]), int(counts[0][2])) if counts else (0, 0, 0)
    )
    segments = 0
    if batches:
        table = _batch_table(conn, batches)
        try:
            rows = conn.execute(
                f"SELECT count(*) FROM record_segments WHERE batch IN (SELECT batch FROM {table})"
            ).fetchall()
        finally:
            conn.unregister(table)
        segments = int(rows[0][0]) if rows else 0
    return {
        "checkpoints": len(lin.checkpoints),
        "batches": len(lin.batches),
        "records": sum(int((n.body or {}).get("count", 0)) for n in lin.batches),
        "segments": segments,
        "calls": call_count,
        "call_segments": call_segments,
        "calls_without_segments": bare_calls,
        "declared_calls": len(lin.calls),
        "teachers": len(lin.teachers),
        "suspects": len(suspects),
        "suspect_segments": len(set(suspects.row_hashes())),
        "suspects_without_segments": sum(
            1 for a, b in itertools.pairwise(suspects.starts) if a == b
        ),
    }


# --- near -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Needle:
    """One fingerprinted output segment: a call's or a suspect's."""

    fingerprint: bytes
    segment: str
    call: int | None = None
    provider: str | None = None
    model: str | None = None
    purpose: str | None = None
    suspect: int | None = None
    suspect_line: int | None = None


def _batch_groups(lin: Lineage) -> tuple[dict[Any, list[int]], list[str]]:
    """Lineage batches by the fingerprint params they were recorded with (ledgers recorded with an
    older scheme keep theirs); batches without fingerprints are noted apart."""
    from ledger.spec import fingerprint

    groups: dict[Any, list[int]] = {}
    bare: list[int] = []
    for node in lin.batches:
        fps = (node.body or {}).get("fingerprints")
        if not isinstance(fps, Mapping) or not isinstance(fps.get("params"), Mapping):
            bare.append(int(node.index or 0))
            continue
        try:
            params = fingerprint.FingerprintParams.from_json(dict(fps["params"]))
        except InputError as exc:
            raise InputError(f"batch entry {node.index}: {exc}") from exc
        groups.setdefault(params, []).append(int(node.index or 0))
    carry = "carries" if len(bare) == 1 else "carry"
    bare_batches = plural(len(bare), "lineage batch", "lineage batches")
    notes = (
        [f"{bare_batches} {carry} no fingerprints: not searched for near matches"] if bare else []
    )
    return groups, notes


def _call_needles(conn: Connection, size: int) -> dict[Any, list[_Needle]]:
    """Every recorded call's output fingerprints (`values[i]` belongs to `outputs[i]`), by params."""
    from ledger.spec import fingerprint

    rows = conn.execute(
        f"""SELECT idx, provider, model, purpose, try(json_extract_string(p, '$.outputs[*]')),
                   try(json_extract_string(p, '$.fingerprints.values[*]')), try(json_extract(p, '$.fingerprints.params'))
            FROM (SELECT idx, {_SIGNED_CALL_FACTS}, p FROM (SELECT idx, {_PAYLOAD} AS p FROM entries WHERE idx < ?)
                  WHERE try(json_extract_string(p, '$.kind')) = 'call')
            WHERE try(json_exists(p, '$.fingerprints'))
            ORDER BY idx""",
        [size],
    ).fetchall()
    parsed: dict[str, Any] = {}
    by_params: dict[Any, list[_Needle]] = {}
    for idx, provider, model, purpose, outputs, values, params in rows:
        if params not in parsed:
            try:
                parsed[params] = fingerprint.FingerprintParams.from_json(json.loads(params))
            except (InputError, TypeError, ValueError) as exc:
                raise InputError(f"call entry {idx}: {exc}") from exc
        outputs, values = list(outputs or []), list(values or [])
        if len(outputs) != len(values):
            raise InputError(
                f"call entry {idx}: {len(values)} fingerprints for {len(outputs)} outputs"
            )
        needles = by_params.setdefault(parsed[params], [])
        for segment, value in zip(outputs, values):
            needles.append(
                _Needle(base64.b64decode(value), segment, int(idx), provider, model, purpose)
            )
    return by_params


def _not_comparable(
    groups: Mapping[Any, Sequence[int]], calls: Mapping[Any, Sequence[_Needle]]
) -> tuple[dict[str, int], list[str]]:
    """Calls and lineage batches whose fingerprints are of different params, so never near-compared.

    Call texts are not stored, so a call recorded with one scheme cannot be fingerprinted again in
    another: such pairs are counted and named, never skipped silently (exact matching covers them).
    """
    calls_out: set[int] = set()
    batches_out: set[int] = set()
    notes: list[str] = []
    for call_params, needles in calls.items():
        ids = {n.call for n in needles if n.call is not None}
        others = [b for p, bs in groups.items() if p != call_params for b in bs]
        if not ids or not others:
            continue
        calls_out |= ids
        batches_out.update(others)
        schemes = sorted({p.scheme for p in groups if p != call_params})
        notes.append(
            f"{plural(len(ids), 'call')} fingerprinted with {call_params.scheme} could not be "
            f"near-compared with {plural(len(others), 'lineage batch', 'lineage batches')} "
            "fingerprinted with other settings "
            f"({', '.join(schemes)}): fingerprints compare only within one scheme and call texts "
            "are not stored to fingerprint again; exact matching still covers them"
        )
    counts = {
        "calls_not_near_comparable": len(calls_out),
        "batches_not_near_comparable": len(batches_out),
    }
    return counts, notes


def _suspect_needles(suspects: Suspects, reference: Any) -> list[_Needle]:
    from ledger.spec import fingerprint

    pairs = []
    for index in sorted(suspects.texts):
        suspect = suspects[index]
        pairs += [(suspect, seg.hex(), text) for seg, text in zip(suspect.segments, suspect.texts)]
    if not pairs:
        return []
    fps = fingerprint.fingerprint_texts([text for _, _, text in pairs], reference)
    return [
        _Needle(fp, segment, suspect=s.index, suspect_line=s.line)
        for (s, segment, _), fp in zip(pairs, fps)
    ]


def _haystack_rows(
    conn: Connection, batches: Sequence[int]
) -> Iterator[tuple[list[int], list[int], list[bytes]]]:
    """(batches, positions, fingerprint blobs) of lineage records, a chunk at a time.

    Streams from its own cursor, so the caller can query `conn` between chunks.
    """
    cursor = conn.cursor()
    table = _batch_table(cursor, batches)
    try:
        reader = cursor.sql(
            f"""SELECT batch, position, fingerprint FROM records
                WHERE batch IN (SELECT batch FROM {table}) AND octet_length(fingerprint) > 0"""
        ).to_arrow_reader(_HAYSTACK_CHUNK)
        for chunk in reader:
            yield (
                chunk.column(0).to_pylist(),
                chunk.column(1).to_pylist(),
                chunk.column(2).to_pylist(),
            )
    finally:
        cursor.close()


def needle_band_rows(fps: Sequence[bytes], params: Any) -> tuple[Any, Any]:
    """(fingerprint row, band key) for every band of each needle fingerprint, in one numpy pass.

    The same keys as `fingerprint.needle_bands` per fingerprint (a needle is its values, in order).
    """
    from ledger.spec import fingerprint

    size = params.value_dtype.itemsize
    if any(len(fp) % size for fp in fps):
        raise InputError(
            f"a call fingerprint is not a whole number of {params.value_bits}-bit values"
        )
    counts = np.fromiter((len(fp) // size for fp in fps), dtype=np.int64, count=len(fps))
    values = np.frombuffer(b"".join(fps), dtype=params.value_dtype)
    width = len(values) - params.band_rows + 1
    if width <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    row_of_value = np.repeat(np.arange(len(fps), dtype=np.int64), counts)
    keys = fingerprint._band_keys(values, params)
    inside = row_of_value[:width] == row_of_value[params.band_rows - 1 :]
    return row_of_value[:width][inside], keys[inside]


def haystack_band_rows(blobs: Sequence[bytes], params: Any) -> tuple[Any, Any]:
    """(blob row, band key) for every band of every text of each record blob, in one numpy pass.

    The same keys as `fingerprint.haystack_bands` per blob (tests hold them equal), without a numpy
    round per record: the texts' values are concatenated in the blob layout that module documents
    (`uint32 n`, `n` uint32 counts, the values), banded once, and windows that would straddle two
    texts are dropped.
    """
    from ledger.spec import fingerprint

    counts_parts: list[bytes] = []
    value_parts: list[bytes] = []
    texts_per_row: list[int] = []
    for blob in blobs:
        n = int.from_bytes(blob[:4], "little") if blob else 0
        texts_per_row.append(n)
        counts_parts.append(blob[4 : 4 + 4 * n])
        value_parts.append(blob[4 + 4 * n :])
    counts = np.frombuffer(b"".join(counts_parts), dtype="<u4").astype(np.int64)
    values = np.frombuffer(b"".join(value_parts), dtype=params.value_dtype)
    if int(counts.sum()) != len(values):
        raise InputError(
            "a record fingerprint does not match its own text counts: made with other settings?"
        )
    width = len(values) - params.band_rows + 1
    if width <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    row_of_text = np.repeat(np.arange(len(blobs), dtype=np.int64), texts_per_row)
    text_of_value = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    keys = fingerprint._band_keys(values, params)
    inside = text_of_value[:width] == text_of_value[params.band_rows - 1 :]
    return row_of_text[text_of_value[:width][inside]], keys[inside]


def _near(
    conn: Connection,
    lin: Lineage,
    batches: Sequence[int],
    size: int,
    suspects: Suspects,
    threshold: float | None,
) -> tuple[list[Finding], list[str], dict[str, int]]:
    """Near duplicates: LSH band keys of needles and lineage records joined in DuckDB, then similarity.

    Lineage batches are searched a group at a time, each group with the needles of its own params:
    calls recorded with those params, and the suspects fingerprinted with them.
    """
    none = {"calls_not_near_comparable": 0, "batches_not_near_comparable": 0}
    if not batches:
        return [], [], none
    groups, notes = _batch_groups(lin)
    if not groups:
        return [], notes, none
    calls = _call_needles(conn, size)
    counts, skipped = _not_comparable(groups, calls)
    notes.extend(skipped)
    out: list[Finding] = []
    for params, group in groups.items():
        needles = calls.get(params, []) + _suspect_needles(suspects, params)
        if needles:
            out += _near_group(conn, needles, group, params, threshold)
    return out, notes, counts


def _near_group(
    conn: Connection,
    needles: Sequence[_Needle],
    searched: Sequence[int],
    params: Any,
    threshold: float | None,
) -> list[Finding]:
    """Near findings of `needles` in the records of the batches `searched`, all made with `params`."""
    from ledger.spec import fingerprint

    limit = fingerprint.DEFAULT_THRESHOLD if threshold is None else threshold
    needle_rows, needle_keys = needle_band_rows([n.fingerprint for n in needles], params)
    conn.register("_audit_needles", pa.table({"needle": needle_rows, "band": needle_keys}))
    blobs: dict[tuple[int, int], bytes] = {}
    candidates: set[tuple[int, int, int]] = set()
    try:
        for batch_col, position_col, blob_col in _haystack_rows(conn, searched):
            rows, keys = haystack_band_rows(blob_col, params)
            conn.register("_audit_haystack", pa.table({"row": rows, "band": keys}))
            try:
                hits = conn.execute(
                    """SELECT DISTINCT n.needle, h.row FROM _audit_haystack h
                       JOIN _audit_needles n ON h.band = n.band"""
                ).fetchall()
            finally:
                conn.unregister("_audit_haystack")
            for n, row in hits:
                key = (int(batch_col[row]), int(position_col[row]))
                blobs[key] = blob_col[row]
                candidates.add((int(n), *key))
    finally:
        conn.unregister("_audit_needles")
    out: list[Finding] = []
    for n, batch, position in sorted(candidates):
        needle = needles[n]
        score = float(fingerprint.similarity(needle.fingerprint, blobs[(batch, position)], params))
        if score >= limit:
            out.append(Finding(
                type="near", call=needle.call, batch=batch, record=position, segment=needle.segment,
                similarity=score, purpose=needle.purpose, provider=needle.provider, model=needle.model,
                suspect=needle.suspect, suspect_line=needle.suspect_line,
            ))  # fmt: skip
    return out


# --- JSON -----------------------------------------------------------------------------------------------


def finding_json(f: Finding) -> dict[str, Any]:
    """A finding as `ledger audit --json` and bundles print it (fixed fields first)."""
    out: dict[str, Any] = {
        "type": f.type, "call": f.call, "batch": f.batch, "record": f.record, "segment": f.segment,
        "similarity": f.similarity, "purpose": f.purpose, "provider": f.provider, "model": f.model,
        "suspect": f.suspect, "path": list(f.path),
    }  # fmt: skip
    if f.basis is not None:
        out["basis"] = f.basis
    if f.suspect_line is not None:
        out["suspect_line"] = f.suspect_line
    out["batch_id"] = f.batch_id
    out["external_id"] = f.external_id
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
    }


# --- bundles and exports --------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bundle_entries(
    ledger: Ledger, report: AuditReport
) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    """Lineage, finding, key and revoke entries with inclusion proofs against the latest tree head."""
    from ledger import keys

    wanted = set(report.lineage.entry_indexes())
    wanted |= {f.call for f in report.findings if f.call is not None}
    wanted |= {f.batch for f in report.findings if f.batch is not None}
    with store.session(ledger.path, read_only=True) as conn:
        rows = conn.execute(
            """SELECT idx FROM entries WHERE kind IN ('key', 'revoke')
               AND idx < (SELECT max(size) FROM tree_head) ORDER BY idx""",
        ).fetchall()
    wanted |= {int(r[0]) for r in rows}
    head, proofs = ledger.inclusion_proofs(sorted(wanted))
    key_bodies: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    for index in sorted(wanted):
        proof = proofs[index]
        merkle.verify_inclusion(proof.leaf_hash, index, head.size, proof.proof, head.root)
        items.append(
            {"index": index, "leaf": _b64(proof.leaf), "proof": [p.hex() for p in proof.proof]}
        )
        body = keys.parse_envelope(proof.leaf, index=index).body()
        if body["kind"] == "key":
            key_bodies.append(body)
    return head, items, key_bodies


def _bundle_records(ledger: Ledger, report: AuditReport) -> list[dict[str, Any]]:
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
    bodies = {n.index: n.body or {} for n in report.lineage.batches}
    with store.session(ledger.path, read_only=True) as conn:
        for batch in sorted(wanted):
            leaves = _batch_leaves(conn, batch)
            nodes = merkle.nodes_from_leaves([merkle.leaf_hash(leaf) for leaf in leaves])
            body = bodies[batch]
            if merkle.root_from_nodes(len(leaves), nodes).hex() != body.get("records_root"):
                continue  # the stored set no longer matches its root (an inconclusive audit): nothing to prove
            fp_nodes = None
            if any(wanted[batch].values()):
                rows = conn.execute(
                    "SELECT coalesce(fingerprint, ''::BLOB) FROM records WHERE batch = ? ORDER BY position",
                    [batch],
                ).fetchall()
                fps = [bytes(r[0]) for r in rows]
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


def build_bundle(ledger: Ledger, report: AuditReport) -> dict[str, Any]:
    """The portable proof bundle (DESIGN.md "Bundle layout"; schemas/audit-bundle.schema.json).

    Proofs are against the latest tree head, which covers at least the audited log.
    """
    head, items, key_bodies = _bundle_entries(ledger, report)
    document = report_json(report)
    return {
        "format": BUNDLE_FORMAT,
        "tree_head": head.note,
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
    }


def export_records(ledger: Ledger, outdir: Path, checkpoint: str | None = None) -> ExportCounts:
    """Write record leaves (hashes only) as Parquet `records.parquet`: columns batch, position, leaf.

    With a checkpoint, its lineage's batches; without, every batch in the log. The leaves are rebuilt
    from the stored rows as they are, so a verifier's recomputed roots show any tampering.
    """
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"{outdir}: cannot create the output directory: {exc.strerror or exc}"
        ) from None
    path = outdir / "records.parquet"
    with store.session(ledger.path, read_only=True) as conn:
        size = int(conn.execute("SELECT count(*) FROM entries").fetchall()[0][0])
        if checkpoint is not None:
            batches = [
                int(n.index)
                for n in lineage(conn, checkpoint, size=size).batches
                if n.index is not None
            ]
        else:
            rows = conn.execute(
                "SELECT idx FROM entries WHERE kind = 'batch' ORDER BY idx"
            ).fetchall()
            batches = [int(r[0]) for r in rows]
        table = _batch_table(conn, batches)
        try:
            target = str(path).replace("'", "''")
            written = conn.execute(
                f"COPY ({_LEAVES_SQL.format(batches=table)}) TO '{target}' (FORMAT parquet)"
            ).fetchall()
        finally:
            conn.unregister(table)
    return ExportCounts(len(batches), int(written[0][0]) if written else 0, (path,))


# Record leaves rebuilt in SQL: JCS {"segments": [sorted hex], "sha256": hex}. Blob order is byte order,
# which is the order of the lowercase hex strings, so ORDER BY segment gives the committed order.
_LEAVES_SQL = """
    SELECT r.batch, r.position,
           encode('{{"segments":[' || coalesce(string_agg('"' || lower(hex(s.segment)) || '"', ','
                                                          ORDER BY s.segment), '')
                  || '],"sha256":"' || lower(hex(r.digest)) || '"}}') AS leaf
    FROM records r LEFT JOIN record_segments s ON s.batch = r.batch AND s.position = r.position
    WHERE r.batch IN (SELECT batch FROM {batches})
    GROUP BY r.batch, r.position, r.digest
    ORDER BY r.batch, r.position"""


def _batch_leaves(conn: Connection, batch: int) -> list[bytes]:
    """A batch's record leaves in position order, rebuilt from its stored rows."""
    table = _batch_table(conn, [batch])
    try:
        rows = conn.execute(_LEAVES_SQL.format(batches=table)).fetchall()
    finally:
        conn.unregister(table)
    return [bytes(leaf) for _, _, leaf in rows]
