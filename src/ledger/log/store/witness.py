"""Witness cosignatures of tree heads (DESIGN.md "Witnesses"): the `cosignatures` table.

cosignatures(size, root, name, key_id, time, line): one row per witness key per tree head, `line` the
signed-note cosignature line as the witness returned it. No root covers these rows, nor needs to:
each line is a signature that whoever reads it checks against a witness policy's keys.

The table is not in `_SCHEMA`: ledgers made before witnesses have none, and a read-only open of such a
ledger must keep working, so it is created by the first write (`save_cosignatures`), and reads of a
ledger without it find no cosignatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from ledger.log import store

__all__ = ["StoredCosignature", "cosignatures", "last_cosigned_size", "save_cosignatures"]

_TABLE = """CREATE TABLE IF NOT EXISTS cosignatures(
    size BIGINT NOT NULL, root BLOB NOT NULL, name VARCHAR NOT NULL, key_id BLOB NOT NULL,
    time BIGINT NOT NULL, line VARCHAR NOT NULL)"""


@dataclass(frozen=True)
class StoredCosignature:
    name: str
    key_id: bytes
    time: int
    line: str


def _has_table(conn: duckdb.DuckDBPyConnection) -> bool:
    row = conn.execute(
        """SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database()
           AND schema_name = 'main' AND table_name = 'cosignatures'"""
    ).fetchall()
    return bool(row and row[0][0])


def cosignatures(
    conn: duckdb.DuckDBPyConnection, size: int, root: bytes
) -> list[StoredCosignature]:
    """The stored cosignatures of the tree head (size, root), by witness key name and time."""
    if not _has_table(conn):
        return []
    rows = conn.execute(
        "SELECT name, key_id, time, line FROM cosignatures WHERE size = ? AND root = ? "
        "ORDER BY name, key_id, time",
        [size, root],
    ).fetchall()
    return [StoredCosignature(str(n), bytes(k), int(t), str(line)) for n, k, t, line in rows]


def save_cosignatures(
    conn: duckdb.DuckDBPyConnection, size: int, root: bytes, rows: Sequence[StoredCosignature]
) -> None:
    """Keep these cosignatures of (size, root): one per witness key, the newest replacing an older one.

    One transaction; the table is created here the first time (see the module docstring)."""
    if not rows:
        return
    with store.transaction(conn):
        conn.execute(_TABLE)
        for row in rows:
            conn.execute(
                "DELETE FROM cosignatures WHERE size = ? AND root = ? AND name = ? AND key_id = ?",
                [size, root, row.name, row.key_id],
            )
            conn.execute(
                "INSERT INTO cosignatures VALUES (?, ?, ?, ?, ?, ?)",
                [size, root, row.name, row.key_id, row.time, row.line],
            )


def last_cosigned_size(conn: duckdb.DuckDBPyConnection, name: str, key_id: bytes) -> int | None:
    """The largest tree size this witness key cosigned for this ledger, if any (where to start a proof)."""
    if not _has_table(conn):
        return None
    row = conn.execute(
        "SELECT max(size) FROM cosignatures WHERE name = ? AND key_id = ?", [name, key_id]
    ).fetchall()
    return None if not row or row[0][0] is None else int(row[0][0])
