"""The lineage closure over the ledger's store: the entry lookups `ledger.spec.lineage.closure` asks for.

The `ref` and `kind` columns only narrow a lookup; the closure re-checks every hit against its signed body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb

from ledger.errors import NotFoundError
from ledger.log import store
from ledger.spec.lineage import Lineage, StoredEntry, closure
from ledger.wording import plural

__all__ = ["StoreEntries", "lineage", "resolve_checkpoint"]

Connection = duckdb.DuckDBPyConnection


class StoreEntries:
    """Entries below `size` in the store behind `conn` (an `EntryLookup`)."""

    def __init__(self, conn: Connection, size: int) -> None:
        self.conn = conn
        self.size = size

    def by_ref(self, kind: str, refs: Sequence[str]) -> Mapping[str, Sequence[StoredEntry]]:
        rows = self.conn.execute(
            """SELECT ref, idx, leaf FROM entries
               WHERE idx < ? AND kind = ? AND list_contains(?::VARCHAR[], ref) ORDER BY idx""",
            [self.size, kind, list(refs)],
        ).fetchall()
        found: dict[str, list[StoredEntry]] = {}
        for ref, idx, leaf in rows:
            found.setdefault(str(ref), []).append(StoredEntry(int(idx), bytes(leaf), kind))
        return found

    def by_index(self, indexes: Sequence[int]) -> Mapping[int, Sequence[StoredEntry]]:
        rows = self.conn.execute(
            "SELECT idx, leaf, kind FROM entries WHERE idx < ? AND list_contains(?::BIGINT[], idx) ORDER BY idx",
            [self.size, list(indexes)],
        ).fetchall()
        found: dict[int, list[StoredEntry]] = {}
        for idx, leaf, kind in rows:
            found.setdefault(int(idx), []).append(StoredEntry(int(idx), bytes(leaf), str(kind)))
        return found


def resolve_checkpoint(
    conn: Connection, checkpoint: int | str, size: int
) -> tuple[int, bytes, str]:
    """A checkpoint entry below `size`, by entry index or by id: (index, leaf, id); NotFoundError if none."""
    if isinstance(checkpoint, int) or (isinstance(checkpoint, str) and checkpoint.isdigit()):
        index = int(checkpoint)
        if index >= size:
            raise NotFoundError(
                f"no entry at index {index} (the verified log has {plural(size, 'entry', 'entries')})"
            )
        stored = store.entry_at(conn, index)
        if stored.kind != "checkpoint":
            raise NotFoundError(f"entry {index} is a {stored.kind}, not a checkpoint")
        return index, stored.leaf, str(stored.ref)
    found = [e for e in store.find_ref(conn, checkpoint, ("checkpoint",)) if e.index < size]
    if not found:
        raise NotFoundError(f"no checkpoint with id {checkpoint!r}")
    return found[0].index, found[0].leaf, checkpoint


def lineage(conn: Connection, checkpoint: int | str, *, size: int | None = None) -> Lineage:
    """The lineage closure of a checkpoint (an entry index or an id), over entries below `size`.

    `size` bounds the log to what the caller verified (default: every stored entry). An unknown
    checkpoint raises NotFoundError; dangling references inside the closure are `problems`.
    """
    if size is None:
        size = store.entry_count(conn)
    index, leaf, checkpoint_id = resolve_checkpoint(conn, checkpoint, size)
    root = StoredEntry(index, leaf, "checkpoint")
    return closure(StoreEntries(conn, size), root, checkpoint_id, size)
