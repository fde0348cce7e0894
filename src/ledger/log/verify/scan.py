"""One pass over the entries in short sessions: leaves hashed and tree nodes recomputed and compared here,
each leaf examined (in the worker pool when there is one), and every result fed to the log-order checks.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ledger.engine.pool import Pending, WorkerPool
from ledger.log import store
from ledger.log.store import verify as queries
from ledger.log.store.verify import EntryRow
from ledger.log.verify.entries import Calls, Examined, LogOrder, Shape, examine_chunk
from ledger.log.verify.report import Connection
from ledger.log.verify.tree import compare_nodes
from ledger.spec import merkle, note

# Entries (with their tree nodes) read per session: about 0.1 s of holding the file.
SESSION_ENTRIES = 1 << 14
ENTRY_CHUNK = 2048  # entries per worker task


def _fetch_entries(conn: Connection, lo: int, hi: int) -> list[EntryRow]:
    """Entry rows with indexes lo..hi-1 in index order (a duplicated index ordered by leaf bytes)."""
    rows = queries.fetch_entries(conn, lo, hi)
    if len({row[0] for row in rows}) != len(rows):
        rows.sort(key=lambda row: (row[0], bytes(row[1])))
    return rows


def check_entries(
    path: Path,
    shape: Shape,
    hints: dict[str, bytes],
    sequence: LogOrder,
    calls: Calls,
    published: note.TreeHead | None,
    progress: Callable[[int], None] | None,
    pool: WorkerPool | None,
) -> tuple[bytes, bytes | None]:
    """Read the entries in sessions of `SESSION_ENTRIES` and check them with the session closed.

    Leaves are hashed here and every tree node they make is recomputed and compared with the stored one;
    parsing and signatures run in the worker pool if any (`entries.examine`), log-order checks in `entries.LogOrder`.
    Returns the root recomputed from the leaves and the root of the first `published.size` of them.
    """
    problems = sequence.problems
    want_prefix = published.size if published is not None else -1
    prefix_root = merkle.EMPTY_ROOT if want_prefix == 0 else None
    frontier: dict[tuple[int, int], bytes] = {}
    size = 0  # leaves hashed so far: rows in index order, a duplicated row counted twice
    root = merkle.EMPTY_ROOT
    in_flight = pool.in_flight if pool is not None else 0
    pending: deque[tuple[list[EntryRow], Pending[list[Examined]] | list[Examined]]] = deque()
    sha = hashlib.sha256
    after: int | None = None

    def settle() -> None:
        rows, result = pending.popleft()
        examined = result if isinstance(result, list) else result.result()
        for row, ex in zip(rows, examined):
            sequence.add(ex, row[1])
            calls.add(row)
        if progress is not None:
            progress(len(rows))

    lo = shape.first
    while lo <= shape.last:
        hi = min(lo + SESSION_ENTRIES, shape.last + 1)
        with store.session(path, read_only=True) as conn:
            rows = _fetch_entries(conn, lo, hi)
            stored = queries.node_rows(conn, lo, hi) if shape.intact else None
            if not rows:  # a gap in a damaged log: skip to the next stored index
                after = queries.first_index_between(conn, hi, shape.last)
        if not rows:
            lo = shape.last + 1 if after is None else after
            continue
        hashes = [sha(b"\x00" + row[1]).digest() for row in rows]
        created, root = merkle.append_nodes(frontier, size, hashes)
        made = {(level, idx): digest for level, idx, digest in created}
        if 0 < want_prefix - size <= len(hashes):
            prefix_root = merkle.root_from_nodes(want_prefix, frontier | made)
        size += len(hashes)
        frontier = {node: made.get(node) or frontier[node] for node in merkle.frontier_nodes(size)}
        if stored is not None:
            compare_nodes(created, stored, problems)
        for at in range(0, len(rows), ENTRY_CHUNK):
            part = rows[at : at + ENTRY_CHUNK]
            busy = sum(1 for _, r in pending if isinstance(r, Pending) and not r.done())
            if pool is not None and busy < in_flight:
                pending.append((part, pool.submit(examine_chunk, part, hints)))
            else:  # every worker is busy: this process checks the part itself rather than wait
                pending.append((part, examine_chunk(part, hints)))
            while pending and (isinstance(pending[0][1], list) or pending[0][1].done()):
                settle()
            while len(pending) > 2 * in_flight + 1:
                settle()
        lo = hi
    while pending:
        settle()
    return root, prefix_root
