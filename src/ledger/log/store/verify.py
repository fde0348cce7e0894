"""The SQL of `ledger verify` (`ledger.log.verify`): each function fetches one kind of row or runs one check.

The verifier holds the logic and never sees SQL; it passes the connections of `store.session` through as
opaque objects. Queries that look for defects return at most `QUERY_LIMIT` rows of one kind, so a wrecked
file cannot make a report (or this process) unbounded. Every result is fetched in full before returning:
a result left unfetched would block the connection's next statement.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]

from ledger.engine.columns import int_column

Connection = duckdb.DuckDBPyConnection
# What a failing read raises: the verifier turns it into CorruptDatabaseError without importing duckdb.
DatabaseError = duckdb.Error

QUERY_LIMIT = 100  # rows of one kind of defect fetched per query

# --------------------------------------------------------------------------- entries


def index_summary(conn: Connection) -> tuple[int, int, int | None, int | None]:
    """Entry rows, distinct indexes, lowest and highest index (None, None in an empty log)."""
    ((count, distinct, first, last),) = conn.execute(
        "SELECT count(*), count(DISTINCT idx), min(idx), max(idx) FROM entries"
    ).fetchall()
    return (
        int(count),
        int(distinct),
        None if first is None else int(first),
        None if last is None else int(last),
    )


def duplicate_indexes(conn: Connection) -> list[tuple[int, int]]:
    """(index, rows) of entry indexes stored more than once, lowest first."""
    return [
        (int(index), int(times))
        for index, times in conn.execute(
            f"SELECT idx, count(*) FROM entries GROUP BY idx HAVING count(*) > 1 ORDER BY idx LIMIT {QUERY_LIMIT}"
        ).fetchall()
    ]


def index_gaps(conn: Connection) -> list[tuple[int, int]]:
    """(first, last) missing index of each gap between stored entry indexes, lowest first."""
    return [
        (int(lo), int(hi))
        for lo, hi in conn.execute(
            f"""SELECT idx + 1, nxt - 1 FROM (SELECT idx, lead(idx) OVER (ORDER BY idx) AS nxt
                                          FROM (SELECT DISTINCT idx FROM entries))
            WHERE nxt > idx + 1 ORDER BY idx LIMIT {QUERY_LIMIT}"""
        ).fetchall()
    ]


def key_entry_leaves(conn: Connection) -> list[bytes]:
    """The leaves of the rows whose kind column says `key` (a column verify checks against each body)."""
    return [
        bytes(leaf)
        for (leaf,) in conn.execute("SELECT leaf FROM entries WHERE kind = 'key'").fetchall()
    ]


# idx, leaf, signer, kind, time, ref, provider, model, purpose
EntryRow = tuple[Any, ...]


def fetch_entries(conn: Connection, lo: int, hi: int) -> list[EntryRow]:
    """Entry rows with indexes lo..hi-1 in index order: idx, leaf, then the derived columns
    signer, kind, time, ref, provider, model, purpose."""
    rows: list[EntryRow] = conn.execute(
        """SELECT idx, leaf, signer, kind, time, ref, provider, model, purpose FROM entries
           WHERE idx >= ? AND idx < ? ORDER BY idx""",
        [lo, hi],
    ).fetchall()
    return rows


def first_index_between(conn: Connection, lo: int, hi: int) -> int | None:
    """The lowest stored entry index in lo..hi (inclusive), None when there is none."""
    ((after,),) = conn.execute(
        "SELECT min(idx) FROM entries WHERE idx >= ? AND idx <= ?", [lo, hi]
    ).fetchall()
    return None if after is None else int(after)


def count_entries_between(conn: Connection, lo: int, hi: int) -> int:
    """Entry rows with indexes lo..hi (inclusive)."""
    ((count,),) = conn.execute(
        "SELECT count(*) FROM entries WHERE idx BETWEEN ? AND ?", [lo, hi]
    ).fetchall()
    return int(count)


def call_refs(conn: Connection, indexes: Sequence[int]) -> list[tuple[int, Any, Any]]:
    """(idx, provider, ref) of the call rows among `indexes` that have a ref, in index order."""
    return [
        (int(index), provider, ref)
        for index, provider, ref in conn.execute(
            """SELECT idx, provider, ref FROM entries WHERE kind = 'call' AND ref IS NOT NULL
           AND idx IN (SELECT unnest(?::BIGINT[])) ORDER BY idx""",
            [list(indexes)],
        ).fetchall()
    ]


# --------------------------------------------------------------------------- tree nodes


def misplaced_nodes(conn: Connection, size: int) -> list[tuple[int, int]]:
    """(level, idx) of stored nodes at positions no perfect subtree of a log of `size` entries has."""
    return [
        (int(level), int(idx))
        for level, idx in conn.execute(
            f"""SELECT level, idx FROM nodes
            WHERE CASE WHEN level BETWEEN 0 AND 62 THEN idx < 0 OR idx >= (?::BIGINT >> level::BIGINT) ELSE true END
            ORDER BY level, idx LIMIT {QUERY_LIMIT}""",
            [size],
        ).fetchall()
    ]


def node_rows(conn: Connection, lo: int, hi: int) -> pa.Table:
    """The stored nodes that appending entries lo..hi-1 creates: level l, idx in [lo >> l, hi >> l)."""
    return conn.sql(
        """SELECT level, idx, hash FROM nodes WHERE level BETWEEN 0 AND 62
           AND idx >= (?::BIGINT >> level::BIGINT) AND idx < (?::BIGINT >> level::BIGINT)""",
        params=[lo, hi],
    ).to_arrow_table()


def duplicate_nodes(conn: Connection) -> list[tuple[int, int, int]]:
    """(level, idx, rows) of nodes stored more than once."""
    return [
        (int(level), int(idx), int(times))
        for level, idx, times in conn.execute(
            f"""SELECT level, idx, count(*) FROM nodes GROUP BY level, idx HAVING count(*) > 1
            ORDER BY level, idx LIMIT {QUERY_LIMIT}"""
        ).fetchall()
    ]


def nodes_per_level(conn: Connection, size: int) -> dict[int, int]:
    """Level -> distinct stored node positions that a log of `size` entries has at that level."""
    return {
        int(level): int(count)
        for level, count in conn.execute(
            """SELECT level, count(DISTINCT idx) FROM nodes
               WHERE level BETWEEN 0 AND 62 AND idx >= 0 AND idx < (?::BIGINT >> level::BIGINT) GROUP BY level""",
            [size],
        ).fetchall()
    }


def missing_nodes(conn: Connection, level: int, count: int) -> list[int]:
    """Positions 0..count-1 at `level` with no stored node, lowest first."""
    return [
        int(idx)
        for (idx,) in conn.execute(
            f"""SELECT r.i FROM range(0, ?) r(i) ANTI JOIN (SELECT idx FROM nodes WHERE level = ?) n ON n.idx = r.i
                ORDER BY r.i LIMIT {QUERY_LIMIT}""",
            [count, level],
        ).fetchall()
    ]


def leaf_nodes_not_hashing_their_entry(conn: Connection) -> list[tuple[int, bytes, bytes]]:
    """(idx, RFC 6962 leaf hash of the entry's leaf, stored hash) of level-0 nodes that differ, by SQL sha256()."""
    return [
        (int(idx), bytes(want), bytes(got))
        for idx, want, got in conn.execute(
            f"""SELECT n.idx, unhex(sha256(unhex('00') || e.leaf)), n.hash FROM nodes n JOIN entries e ON e.idx = n.idx
            WHERE n.level = 0 AND n.hash != unhex(sha256(unhex('00') || e.leaf)) ORDER BY n.idx LIMIT {QUERY_LIMIT}"""
        ).fetchall()
    ]


def nodes_not_hashing_their_children(conn: Connection) -> list[tuple[int, int, bytes, bytes]]:
    """(level, idx, RFC 6962 hash of the two stored children, stored hash) of interior nodes that differ."""
    return [
        (int(level), int(idx), bytes(want), bytes(got))
        for level, idx, want, got in conn.execute(
            f"""SELECT p.level, p.idx, unhex(sha256(unhex('01') || l.hash || r.hash)), p.hash FROM nodes p
            JOIN nodes l ON l.level = p.level - 1 AND l.idx = 2 * p.idx
            JOIN nodes r ON r.level = p.level - 1 AND r.idx = 2 * p.idx + 1
            WHERE p.level > 0 AND p.hash != unhex(sha256(unhex('01') || l.hash || r.hash))
            ORDER BY p.level, p.idx LIMIT {QUERY_LIMIT}"""
        ).fetchall()
    ]


def nodes_print(conn: Connection, size: int) -> tuple[int, int]:
    """An order-free digest (XOR of DuckDB's 64-bit row hashes) and count of the nodes of a log of `size`
    entries. Appends never add such nodes, so equal prints at the start and the end of a run mean no node
    that was checked changed while the run read other parts of the file."""
    ((digest, count),) = conn.execute(
        """SELECT coalesce(bit_xor(hash(level, idx, hash)), 0), count(*) FROM nodes
           WHERE level BETWEEN 0 AND 62 AND idx >= 0 AND idx < (?::BIGINT >> level::BIGINT)""",
        [size],
    ).fetchall()
    return int(digest), int(count)


# --------------------------------------------------------------------------- tree head and meta


@dataclass(frozen=True)
class HeadRows:
    """The meta and tree head rows as one session finds them."""

    meta: dict[str, int]  # key -> number of rows
    origin: str | None
    heads: list[tuple[int, bytes, str]]


def head_rows(conn: Connection) -> HeadRows:
    """Every meta key with its row count, the (lowest) origin, and every stored tree head row."""
    meta = {
        str(k): int(n)
        for k, n in conn.execute("SELECT key, count(*) FROM meta GROUP BY key").fetchall()
    }
    rows = conn.execute(
        "SELECT value FROM meta WHERE key = 'origin' ORDER BY value LIMIT 1"
    ).fetchall()
    heads = conn.execute("SELECT size, root, note FROM tree_head").fetchall()
    return HeadRows(
        meta,
        str(rows[0][0]) if rows else None,
        [(int(size), bytes(root), str(note)) for size, root, note in heads],
    )


def head_sizes(conn: Connection) -> list[int]:
    """The size of every stored tree head row (one in a sound file)."""
    return [int(size) for (size,) in conn.execute("SELECT size FROM tree_head").fetchall()]


# --------------------------------------------------------------------------- record sets


def record_count(conn: Connection) -> int:
    """Stored record rows, all batches together."""
    ((records,),) = conn.execute("SELECT count(*) FROM records").fetchall()
    return int(records)


def last_position(conn: Connection, batch: int) -> int:
    """The highest stored record position of a batch, -1 when it has none."""
    ((last,),) = conn.execute(
        "SELECT coalesce(max(position), -1) FROM records WHERE batch = ?", [batch]
    ).fetchall()
    return int(last)


def record_rows(
    conn: Connection,
    batch_lo: int,
    batch_hi: int,
    pos_lo: int,
    pos_hi: int,
    only: Collection[int] | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Record rows (batch, position, digest, fingerprint) and segment rows (batch, position, segment) with
    keys batch_lo..batch_hi and positions pos_lo..pos_hi, as Arrow tables in storage order; with `only`,
    just those batch keys (rows of other batches in between stay unread)."""
    params = [batch_lo, batch_hi, pos_lo, pos_hi]
    where = "WHERE batch BETWEEN ? AND ? AND position BETWEEN ? AND ?"
    if only is not None:
        where += f" AND batch IN ({', '.join(str(int(b)) for b in only)})"
    records = conn.sql(
        f"SELECT batch, position, digest, fingerprint FROM records {where}", params=params
    ).to_arrow_table()
    segs = conn.sql(
        f"SELECT batch, position, segment FROM record_segments {where}", params=params
    ).to_arrow_table()
    return records, segs


def record_rows_outside(conn: Connection, lo: int, hi: int) -> dict[int, list[int]]:
    """Batch key -> [record rows, segment rows] for keys below `lo` or above `hi`."""
    found: dict[int, list[int]] = {}
    for column, table in ((0, "records"), (1, "record_segments")):
        for key, count in conn.execute(
            f"""SELECT batch, count(*) FROM {table} WHERE batch < ? OR batch > ?
                GROUP BY batch ORDER BY batch LIMIT {QUERY_LIMIT}""",
            [lo, hi],
        ).fetchall():
            found.setdefault(int(key), [0, 0])[column] = int(count)
    return found


def record_rows_not_under(
    conn: Connection, lo: int, hi: int, batches: Collection[int]
) -> dict[int, list[int]]:
    """Batch key -> [record rows, segment rows] for keys in lo..hi that are not in `batches`, by one
    anti-join per table."""
    conn.register("_verify_batches", pa.table({"batch": int_column(sorted(batches))}))
    found: dict[int, list[int]] = {}
    try:
        for column, table in ((0, "records"), (1, "record_segments")):
            for key, count in conn.execute(
                f"""SELECT r.batch, count(*) FROM {table} r ANTI JOIN _verify_batches b ON r.batch = b.batch
                    WHERE r.batch BETWEEN ? AND ? GROUP BY r.batch ORDER BY r.batch LIMIT {QUERY_LIMIT}""",
                [lo, hi],
            ).fetchall():
                found.setdefault(int(key), [0, 0])[column] = int(count)
    finally:
        conn.unregister("_verify_batches")
    return found
