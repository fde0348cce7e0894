"""Near matching: lineage records that are near-duplicates of a call's or a suspect's output segment.

Fingerprint LSH band keys of the needles (call and suspect segments) and of the haystack (lineage
records) are computed here with numpy, joined in DuckDB (`ledger.log.store.audit`), and each candidate
pair is scored with `ledger.spec.fingerprint.similarity`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ledger.audit.inputs import Suspects
from ledger.audit.report import Finding
from ledger.errors import InputError
from ledger.log.store import audit as queries
from ledger.log.store.audit import Connection
from ledger.spec import entries
from ledger.spec.lineage import Lineage
from ledger.wording import plural

__all__ = ["haystack_band_rows", "near", "needle_band_rows"]


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
        fps = node.entry.fingerprints if isinstance(node.entry, entries.BatchBody) else None
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

    rows = queries.call_needle_rows(conn, size)
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
    keys = fingerprint.band_keys(values, params)
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
    keys = fingerprint.band_keys(values, params)
    inside = text_of_value[:width] == text_of_value[params.band_rows - 1 :]
    return row_of_text[text_of_value[:width][inside]], keys[inside]


def near(
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
    blobs: dict[tuple[int, int], bytes] = {}
    candidates: set[tuple[int, int, int]] = set()
    with queries.needles(conn, needle_rows, needle_keys):
        for batch_col, position_col, blob_col in queries.haystack_rows(conn, searched):
            rows, keys = haystack_band_rows(blob_col, params)
            for n, row in queries.band_hits(conn, rows, keys):
                key = (int(batch_col[row]), int(position_col[row]))
                blobs[key] = blob_col[row]
                candidates.add((int(n), *key))
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
