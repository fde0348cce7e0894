"""Reading the log back: entries by REF or filtered, counts, the key ring, the ledger's status.

Each function opens the file for one short session (see `ledger.log.store`): nothing here holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ledger.errors import UsageError
from ledger.log import store
from ledger.log.types import Entry
from ledger.spec import entries
from ledger.spec import envelope as envelope_spec
from ledger.spec.keyring import KeyInfo, KeyRing

__all__ = [
    "entry",
    "entry_count",
    "key_ring",
    "keys_of",
    "list_entries",
    "origin",
    "status",
    "to_entry",
]


def to_entry(stored: store.StoredEntry) -> Entry:
    envelope = envelope_spec.parse_envelope(stored.leaf, index=stored.index)
    return Entry(
        stored.index,
        stored.kind,
        stored.time,
        stored.signer,
        stored.ref,
        stored.leaf,
        envelope.body(),
    )


def key_ring(conn: store.Connection) -> KeyRing:
    """The key ring replayed from the stored `key` and `revoke` entries."""
    return KeyRing.replay(
        (stored.index, envelope_spec.parse_envelope(stored.leaf, index=stored.index).body())
        for stored in store.iter_entries(conn, kinds=("key", "revoke"))
    )


def origin(path: Path) -> str:
    """The origin chosen at `ledger init` (it names the log in every tree head)."""
    with store.session(path) as conn:
        return store.origin(conn)


def keys_of(path: Path) -> list[KeyInfo]:
    """Every key the log introduced, in index order."""
    with store.session(path) as conn:
        return key_ring(conn).keys()


def entry_count(path: Path) -> int:
    """Entries stored, without trusting the tree head (for progress totals of `verify`)."""
    with store.session(path) as conn:
        return store.entry_count(conn)


def entry(path: Path, ref: str | int, kinds: Sequence[str] | None = None) -> Entry:
    with store.session(path) as conn:
        return to_entry(store.resolve(conn, str(ref), kinds))


def list_entries(
    path: Path,
    *,
    kinds: Sequence[str] | None = None,
    since: datetime | str | None = None,
    provider: str | None = None,
    purpose: str | None = None,
    start: int = 0,
    limit: int | None = None,
    descending: bool = False,
) -> list[Entry]:
    """Entries in index order (or newest first), filtered; `since` is an instant or RFC 3339 text."""
    if isinstance(since, str):
        since = entries.parse_time(since, "since")
    elif since is not None and since.tzinfo is None:
        raise UsageError(
            f"since {since.isoformat()}: expected an aware datetime (entry times are UTC)"
        )
    with store.session(path) as conn:
        return [
            to_entry(e)
            for e in store.iter_entries(
                conn,
                kinds=kinds,
                since=since,
                provider=provider,
                purpose=purpose,
                start=start,
                limit=limit,
                descending=descending,
            )
        ]


def status(path: Path) -> dict[str, Any]:
    """Size, latest tree head, key counts, entries by kind and record-set totals, in one session."""
    with store.session(path) as conn:
        stored = store.head(conn)
        counts = store.counts_by_kind(conn)
        tables = store.table_counts(conn)
        ring = key_ring(conn)
    infos = list(ring.by_id.values())
    return {
        "db": str(path),
        "origin": stored.origin,
        "size": stored.size,
        "root": stored.root.hex(),
        "note": stored.note,
        "counts": counts,
        "keys": {
            "active": sum(not k.revoked for k in infos),
            "revoked": sum(k.revoked for k in infos),
        },
        "records": tables["records"],
        "segments": tables["record_segments"],
    }
