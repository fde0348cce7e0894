"""Full-log verification (`ledger verify`) and the record-set recomputation the audit reuses.

Nothing stored is trusted: every leaf is re-parsed and its signature checked against the keys the log
itself introduced (revocations honoured), every derived column and tree node is recomputed from the
leaves, the stored tree head must describe exactly that log, and every batch's stored record set must
recompute to the `records_root` its signed entry commits to. Tampering is collected as `Problem`s (one
per defect, naming the entry index where there is one) so the user sees all of it at once; only
operational failures (missing, locked or unreadable file; a malformed published head) raise.

Concurrency (DESIGN.md): verification never holds the file for long. A first short session reads the
tree head and the shape of the log (size N); the entries 0..N-1, their tree nodes and the batches' record
sets are then read in bounded sessions (about 16k entries or 128k records each, well under a second),
each closed before its rows are checked, so recorders append in between. Those rows cannot change in an
append-only log, and every leaf read is bound to the head read at the start by the recomputed root; what
is appended meanwhile lies outside this run, which verifies the log up to size N. A last session checks
that the head is still N or a consistent extension of it.

The checks live by what they check: `entries` (leaves, signatures, log order; keys replayed by the one
key ring, `ledger.spec.keyring`), `tree` (stored nodes), `heads` (stored, published and final tree heads),
`records` (record sets); `scan` reads the entries, the worker processes are the one pool
(`ledger.engine.pool.WorkerPool`), and every SQL statement is in `ledger.log.store.verify`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ledger.engine.pool import WorkerPool
from ledger.errors import CorruptDatabaseError, InputError
from ledger.log import store
from ledger.log.store import verify as queries
from ledger.log.store.verify import DatabaseError, HeadRows
from ledger.log.verify import heads, scan, tree
from ledger.log.verify.entries import (
    Calls,
    LogOrder,
    Shape,
    check_calls_unique,
    check_indexes,
    key_hints,
)
from ledger.log.verify.records import (
    check_record_set,
    check_record_sets,
    record_leaves,
    strays_between,
    strays_beyond_log,
)
from ledger.log.verify.report import MAX_PROBLEMS, ProblemList, VerifyReport
from ledger.spec.problems import Problem

__all__ = [
    "MAX_PROBLEMS",
    "Problem",
    "VerifyReport",
    "check_record_set",
    "record_leaves",
    "verify_ledger",
]


POOL_MIN_ENTRIES = 20_000  # below this, starting worker processes costs more than it saves
POOL_MIN_RECORDS = 100_000


def choose_workers(entries: int, records: int, workers: int | None) -> int:
    """The number of processes for a log of `entries` entries and `records` record rows; `workers`, when
    given, wins (1 = this process only)."""
    if workers is not None:
        return max(1, workers)
    if not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2:
        return 1
    big = entries >= POOL_MIN_ENTRIES or records >= POOL_MIN_RECORDS
    return min(2, os.cpu_count() or 1) if big else 1


class LedgerFile(Protocol):
    """What verification needs of a `Ledger`: the path of its file (it opens its own sessions)."""

    @property
    def path(self) -> Path: ...


@dataclass(frozen=True)
class _Start:
    """What the first, short session reads: everything later is judged against this state."""

    shape: Shape
    head: HeadRows
    hints: dict[str, bytes]
    records: int  # stored record rows, to choose the worker count
    cover: tuple[int, int]  # the batch keys record rows may have (the log's index range)
    nodes_print: tuple[int, int]  # see queries.nodes_print


def _read_start(path: Path, problems: ProblemList) -> _Start:
    """The log's shape, tree head, key hints and the checks that need one consistent view of whole tables."""
    with store.session(path, read_only=True) as conn:
        shape = check_indexes(conn, problems)
        head = queries.head_rows(conn)
        hints = key_hints(conn)
        if shape.intact:
            tree.extra_nodes(conn, shape.count, problems)
        else:
            tree.check_tree(conn, shape.count, problems)
        cover = (min(0, shape.first), shape.last)
        problems.extend(strays_beyond_log(conn, cover))
        records = queries.record_count(conn)
        nodes_print = queries.nodes_print(conn, shape.count)
    return _Start(shape, head, hints, records, cover, nodes_print)


def verify_ledger(
    ledger: LedgerFile,
    since_note: str | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    workers: int | None = None,
    record_sets: Collection[int] | None = None,
    since_name: str = "published tree head",
) -> VerifyReport:
    """Verify the log up to the tree head found at the start; collect every problem instead of stopping.

    `record_sets` limits the record-set recomputation to these batch entries (an audit needs only its
    lineage's); every entry, signature and tree node is still checked. None checks every batch and that
    no record row lies outside one.

    The file is read in short sessions (see the module docstring), so recorders keep appending while
    this runs; the report's `size` and `root` are what was verified. `since_note` is a tree head
    published earlier: the log must extend it; a head of another log (another origin) is an InputError
    when the log itself is intact (the wrong file, not tampering), `since_name` naming it. `progress` is called with the number of entries just
    checked. `workers` is the number of processes checking signatures and rebuilding record sets
    (default: one per CPU, up to 2, for logs of at least 20k entries or 100k records on Linux; 1 = this
    process only).
    """
    published = heads.parse_published(since_note, since_name) if since_note is not None else None
    problems = ProblemList()
    origin: str | None = None
    path = ledger.path
    pool: WorkerPool | None = None
    try:
        start = _read_start(path, problems)
        workers = choose_workers(start.shape.count, start.records, workers)
        # Forked while no session is open, so no DuckDB thread of ours is copied into the workers; each
        # opens its own short sessions on the job (the path) for record sets, entry rows are sent to it.
        pool = WorkerPool(workers, job=str(path), in_flight=2 * workers) if workers >= 2 else None
        size = start.shape.count
        sequence = LogOrder(size, problems)
        calls = Calls()
        root, prefix_root = scan.check_entries(
            path,
            start.shape,
            start.hints,
            sequence,
            calls,
            published,
            progress,
            pool,
        )
        head_ok = heads.check_head(start.head, size, root, sequence.ring, problems)
        texted: dict[int, int] = {}
        problems.extend(
            check_record_sets(
                lambda: store.session(path, read_only=True),
                sequence.commitments
                if record_sets is None
                else {b: c for b, c in sequence.commitments.items() if b in record_sets},
                start.cover if record_sets is None else None,
                pool,
                texted,
            )
        )
        with store.session(path, read_only=True) as conn:
            if record_sets is not None:
                problems.extend(strays_between(conn, start.cover, sequence.commitments))
            check_calls_unique(conn, calls, problems)
            if head_ok and start.shape.intact:
                heads.recheck(conn, start.shape, start.nodes_print, root, problems)
        origin = start.head.origin
        if published is not None and since_note is not None and published.origin == origin:
            heads.check_published(
                since_note,
                published,
                published.origin,
                size,
                prefix_root,
                sequence.ring,
                problems,
            )
    except DatabaseError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptDatabaseError(f"{path}: cannot read the ledger: {first_line}") from exc
    finally:
        if pool is not None:  # a failed run does not wait for tasks not yet done
            pool.close()
    found = problems.result()
    if published is not None and published.origin != origin:
        if not found:  # an intact log that is not the one the head was published for
            raise InputError(
                f"{since_name}: this head's origin is {published.origin!r}, the ledger's is "
                f"{origin!r}: a tree head of another ledger (wrong file or --db?)"
            )
        found.append(
            Problem(
                None,
                f"{since_name}: expected origin {origin!r}, found {published.origin!r}",
            )
        )
    return VerifyReport(not found, size, root, found, texted)
