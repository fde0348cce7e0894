"""The queries recording needs inside its append transaction: ids and references already in the log,
calls already recorded, and the bulk insert of a batch's record rows.

Every result is fetched to the end: a half-read result blocks the next `register` on the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]

from ledger.log.store import PAYLOAD_JSON

__all__ = [
    "INSERT_MEMORY_LIMIT",
    "calls_with_external_id",
    "existing_by_ref",
    "existing_call",
    "existing_calls",
    "insert_record_rows",
    "insert_segment_rows",
    "kind_at",
    "leaves_of_datasets",
]

Connection = duckdb.DuckDBPyConnection

INSERT_MEMORY_LIMIT = "256MB"  # DuckDB buffer cap while bulk-inserting a spilled record set
DISABLED_COMPRESSION = "dictionary,dict_fsst"  # DuckDB compressions not tried on record rows


def existing_by_ref(
    conn: Connection, refs: Sequence[str], kinds: Sequence[str]
) -> dict[str, list[tuple[int, str, bytes]]]:
    """Entries of `kinds` answering to any of `refs`: ref -> [(index, kind, leaf)] in index order."""
    if not refs:
        return {}
    rows = conn.execute(
        """SELECT ref, idx, kind, leaf FROM entries
           WHERE list_contains(?::VARCHAR[], ref) AND list_contains(?::VARCHAR[], kind)
           ORDER BY idx""",
        [list(refs), list(kinds)],
    ).fetchall()
    found: dict[str, list[tuple[int, str, bytes]]] = {}
    for ref, idx, kind, leaf in rows:
        found.setdefault(str(ref), []).append((int(idx), str(kind), bytes(leaf)))
    return found


def kind_at(conn: Connection, index: int) -> str | None:
    """The kind of the entry at `index`; None when there is none."""
    rows = conn.execute("SELECT kind FROM entries WHERE idx = ?", [index]).fetchall()
    return None if not rows else str(rows[0][0])


def calls_with_external_id(conn: Connection, external_id: str) -> list[tuple[int, str]]:
    """(index, provider) of every call entry with that external id, in index order."""
    rows = conn.execute(
        "SELECT idx, provider FROM entries WHERE kind = 'call' AND ref = ? ORDER BY idx",
        [external_id],
    ).fetchall()
    return [(int(idx), str(provider)) for idx, provider in rows]


def existing_call(conn: Connection, provider: str, external_id: str) -> int | None:
    """The first call entry recorded for (provider, external_id), if any."""
    row = conn.execute(
        "SELECT min(idx) FROM entries WHERE kind = 'call' AND provider = ? AND ref = ?",
        [provider, external_id],
    ).fetchall()
    return None if not row or row[0][0] is None else int(row[0][0])


def existing_calls(conn: Connection, provider: str, external_ids: Sequence[str]) -> set[str]:
    """Which of `external_ids` already name a call entry of `provider`."""
    rows = conn.execute(
        """SELECT DISTINCT ref FROM entries WHERE kind = 'call' AND provider = ?
           AND list_contains(?::VARCHAR[], ref)""",
        [provider, list(external_ids)],
    ).fetchall()
    return {str(r[0]) for r in rows}


def leaves_of_datasets(conn: Connection, datasets: Sequence[str]) -> list[tuple[int, bytes]]:
    """(index, leaf) of the batch entries whose body names one of `datasets`, in index order.

    The body is decoded in SQL as a prefilter only: callers re-check it on the decoded leaf."""
    rows = conn.execute(
        f"""SELECT idx, leaf FROM entries WHERE kind = 'batch' AND list_contains(?::VARCHAR[],
               try(json_extract_string({PAYLOAD_JSON}, '$.dataset')))
           ORDER BY idx""",
        [list(datasets)],
    ).fetchall()
    return [(int(idx), bytes(leaf)) for idx, leaf in rows]


def insert_record_rows(conn: Connection, rows: pa.Table | Path, base: int) -> None:
    """Insert record rows (part, position, digest, fingerprint) as batch `base + part`."""
    _insert_rows(conn, "records", "position, digest, fingerprint", rows, base)


def insert_segment_rows(conn: Connection, rows: pa.Table | Path, base: int) -> None:
    """Insert segment rows (part, position, segment) as batch `base + part`."""
    _insert_rows(conn, "record_segments", "position, segment", rows, base)


def _insert_rows(
    conn: Connection, table: str, columns: str, rows: pa.Table | Path, base: int
) -> None:
    """Bulk insert spilled rows, turning a part number into the batch entry's index."""
    # Hashes and fingerprints are random bytes that dictionary compression cannot shrink, but
    # trying it (here and when the file is checkpointed on close) cost more than the rest of the
    # transaction together. Like memory_limit, the setting belongs to the open database instance
    # and ends when it closes; it changes how rows are stored, never what they hold.
    conn.execute(f"SET disabled_compression_methods = '{DISABLED_COMPRESSION}'")
    if isinstance(rows, Path):
        # A spilled record set can be GBs: cap DuckDB's buffers (it spills to its temp directory) and
        # let it insert in any order (positions are columns), so memory stays flat in input size.
        conn.execute(f"SET memory_limit = '{INSERT_MEMORY_LIMIT}'")
        conn.execute("SET preserve_insertion_order = false")
        conn.execute(
            f"INSERT INTO {table} SELECT part + ?, {columns} FROM read_parquet(?)",
            [base, str(rows)],
        )
        return
    if not rows.num_rows:
        return
    name = f"_ledger_new_{table}"
    conn.register(name, rows)
    try:
        conn.execute(f"INSERT INTO {table} SELECT part + ?, {columns} FROM {name}", [base])
    finally:
        conn.unregister(name)
