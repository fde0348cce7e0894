"""Coverage: what the audit looked at and what it could not compare (DESIGN.md "Audit", Coverage).

The rule itself (which gaps turn `clean` into `inconclusive`) is `ledger.spec.rules`; this module counts.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from ledger.audit.inputs import Suspects
from ledger.log.store import audit as queries
from ledger.log.store.audit import Connection
from ledger.spec import entries
from ledger.spec.lineage import Lineage
from ledger.spec.rules import CoverageGap

__all__ = ["coverage", "gap_counts", "texted"]


def coverage(
    conn: Connection, lin: Lineage, batches: Sequence[int], size: int, suspects: Suspects
) -> dict[str, int]:
    """What the audit looked at: lineage sizes, every recorded call compared, the suspects."""
    call_count, call_segments, bare_calls = queries.call_counts(conn, size)
    segments = queries.segment_count(conn, batches)
    return {
        "checkpoints": len(lin.checkpoints),
        "batches": len(lin.batches),
        "records": sum(records(n.entry) for n in lin.batches),
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


def records(body: entries.Body | None) -> int:
    """The signed record count of a lineage batch node's typed body (0 for anything else)."""
    return int(body.count) if isinstance(body, entries.BatchBody) else 0


def texted(index: int, body: entries.Body | None, records_with_text: Mapping[int, int]) -> int:
    """Records of a batch with comparable text: as its entry commits to (verify checked the rows agree),
    or, for batches recorded before entries said so, as counted in the verified record rows."""
    if isinstance(body, entries.BatchBody) and body.records_without_text is not None:
        return int(body.count) - body.records_without_text
    return records_with_text.get(index, 0)


def gap_counts(gaps: Sequence[CoverageGap]) -> dict[str, int]:
    """The Coverage rule's counts: what the audit could not compare, and what the policy excused."""
    return {
        "records_without_text": sum(g.without_text for g in gaps),
        "batches_without_text": len(gaps),
        "batches_without_segments": sum(1 for g in gaps if g.without_text == g.records),
        "opaque_batches": sum(1 for g in gaps if g.opaque is not None),
        "opaque_records": sum(g.without_text for g in gaps if g.opaque is not None),
    }
