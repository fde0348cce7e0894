"""The audit's queries: lineage record segments joined against call outputs and suspects, fingerprint band
joins, coverage counts, record leaves rebuilt from the stored rows, and the `export records` copy.

Who served a call and what it was declared for come from the signed body (decoded in SQL), never from the
derived columns: an insider who relabels `entries.purpose` must not change what a finding says.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]

from ledger.engine.columns import int_column
from ledger.log import store

__all__ = [
    "Connection",
    "band_hits",
    "batch_indexes",
    "batch_leaves",
    "call_counts",
    "call_needle_rows",
    "checkpoint_weights",
    "exact_call_rows",
    "exact_suspect_rows",
    "export_leaves",
    "external_ids",
    "haystack_rows",
    "key_entry_indexes",
    "leaf_chunks",
    "needles",
    "record_fingerprints",
    "segment_count",
]

Connection = duckdb.DuckDBPyConnection

_PAYLOAD = store.PAYLOAD_JSON
_SIGNED_CALL_FACTS = (
    "try(json_extract_string(p, '$.provider')) AS provider, try(json_extract_string(p, '$.model')) AS model, "
    "try(json_extract_string(p, '$.purpose')) AS purpose"
)
_HAYSTACK_CHUNK = 1 << 16


def _batch_table(conn: Connection, batches: Sequence[int]) -> str:
    name = "_audit_batches"
    conn.register(name, pa.table({"batch": int_column(sorted(set(batches)))}))
    return name


def checkpoint_weights(conn: Connection, size: int) -> list[tuple[int, str, list[str]]]:
    """(index, id, weight file hashes) of every checkpoint entry below `size`, from the signed bodies."""
    rows = conn.execute(
        f"""SELECT idx, ref, try(json_extract_string({_PAYLOAD}, '$.weights[*].sha256')) FROM entries
            WHERE kind = 'checkpoint' AND idx < ? ORDER BY idx""",
        [size],
    ).fetchall()
    return [(int(idx), str(ref), list(found or [])) for idx, ref, found in rows]


def external_ids(conn: Connection, calls: set[int], size: int) -> dict[int, str]:
    """The signed `external_id` of each given call entry (calls without one are left out)."""
    if not calls:
        return {}
    rows = conn.execute(
        f"""SELECT idx, try(json_extract_string({_PAYLOAD}, '$.external_id')) FROM entries
            WHERE idx IN (SELECT unnest(?::BIGINT[])) AND idx < ?""",
        [sorted(calls), size],
    ).fetchall()
    return {int(idx): str(ext) for idx, ext in rows if ext is not None}


def exact_call_rows(conn: Connection, batches: Sequence[int], size: int) -> list[tuple[Any, ...]]:
    """(call, provider, model, purpose, batch, position, segment hex) for every lineage record segment
    equal to an output segment of a call below `size`; outputs come straight from the signed leaves."""
    if not batches:
        return []
    table = _batch_table(conn, batches)
    try:
        return conn.execute(
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


def exact_suspect_rows(
    conn: Connection, batches: Sequence[int], suspects: pa.Table
) -> list[tuple[Any, ...]]:
    """(suspect, line, batch, position, segment hex) for every lineage record segment in `suspects`
    (a table of suspect, line, segment)."""
    if not batches or not suspects.num_rows:
        return []
    table = _batch_table(conn, batches)
    conn.register("_audit_suspects", suspects)
    try:
        return conn.execute(
            f"""SELECT u.suspect, u.line, s.batch, s.position, lower(hex(s.segment))
                FROM record_segments s JOIN _audit_suspects u ON s.segment = u.segment
                WHERE s.batch IN (SELECT batch FROM {table})"""
        ).fetchall()
    finally:
        conn.unregister("_audit_suspects")
        conn.unregister(table)


def call_counts(conn: Connection, size: int) -> tuple[int, int, int]:
    """(calls, their output segments, calls with no output segment) below `size`, from the signed bodies."""
    counts = conn.execute(
        f"""SELECT count(*), coalesce(sum(n), 0), count(*) FILTER (WHERE coalesce(n, 0) = 0)
            FROM (SELECT len(try(json_extract_string({_PAYLOAD}, '$.outputs[*]'))) AS n
                  FROM entries WHERE kind = 'call' AND idx < ?)""",
        [size],
    ).fetchall()
    return (int(counts[0][0]), int(counts[0][1]), int(counts[0][2])) if counts else (0, 0, 0)


def segment_count(conn: Connection, batches: Sequence[int]) -> int:
    """Stored record segments of the given batches."""
    if not batches:
        return 0
    table = _batch_table(conn, batches)
    try:
        rows = conn.execute(
            f"SELECT count(*) FROM record_segments WHERE batch IN (SELECT batch FROM {table})"
        ).fetchall()
    finally:
        conn.unregister(table)
    return int(rows[0][0]) if rows else 0


def call_needle_rows(conn: Connection, size: int) -> list[tuple[Any, ...]]:
    """(index, provider, model, purpose, outputs, fingerprint values, params JSON) of every fingerprinted
    call below `size`, in index order."""
    return conn.execute(
        f"""SELECT idx, provider, model, purpose, try(json_extract_string(p, '$.outputs[*]')),
                   try(json_extract_string(p, '$.fingerprints.values[*]')), try(json_extract(p, '$.fingerprints.params'))
            FROM (SELECT idx, {_SIGNED_CALL_FACTS}, p FROM (SELECT idx, {_PAYLOAD} AS p FROM entries WHERE idx < ?)
                  WHERE try(json_extract_string(p, '$.kind')) = 'call')
            WHERE try(json_exists(p, '$.fingerprints'))
            ORDER BY idx""",
        [size],
    ).fetchall()


def haystack_rows(
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


@contextmanager
def needles(conn: Connection, rows: Any, bands: Any) -> Iterator[None]:
    """The needles' (row, band key) pairs, joinable by `band_hits` while the context lasts."""
    conn.register("_audit_needles", pa.table({"needle": rows, "band": bands}))
    try:
        yield
    finally:
        conn.unregister("_audit_needles")


def band_hits(conn: Connection, rows: Any, bands: Any) -> list[tuple[int, int]]:
    """Distinct (needle, haystack row) pairs sharing a band key, for haystack (row, band key) pairs."""
    conn.register("_audit_haystack", pa.table({"row": rows, "band": bands}))
    try:
        return conn.execute(
            """SELECT DISTINCT n.needle, h.row FROM _audit_haystack h
               JOIN _audit_needles n ON h.band = n.band"""
        ).fetchall()
    finally:
        conn.unregister("_audit_haystack")


def key_entry_indexes(conn: Connection) -> list[int]:
    """Key and revoke entries below the latest tree head."""
    rows = conn.execute(
        """SELECT idx FROM entries WHERE kind IN ('key', 'revoke')
           AND idx < (SELECT max(size) FROM tree_head) ORDER BY idx""",
    ).fetchall()
    return [int(r[0]) for r in rows]


def batch_indexes(conn: Connection) -> list[int]:
    """Every batch entry, in index order."""
    rows = conn.execute("SELECT idx FROM entries WHERE kind = 'batch' ORDER BY idx").fetchall()
    return [int(r[0]) for r in rows]


def record_fingerprints(conn: Connection, batch: int) -> list[bytes]:
    """A batch's record fingerprints in position order (empty bytes for a record without one)."""
    rows = conn.execute(
        "SELECT coalesce(fingerprint, ''::BLOB) FROM records WHERE batch = ? ORDER BY position",
        [batch],
    ).fetchall()
    return [bytes(r[0]) for r in rows]


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


def batch_leaves(conn: Connection, batch: int) -> list[bytes]:
    """A batch's record leaves in position order, rebuilt from its stored rows."""
    table = _batch_table(conn, [batch])
    try:
        rows = conn.execute(_LEAVES_SQL.format(batches=table)).fetchall()
    finally:
        conn.unregister(table)
    return [bytes(leaf) for _, _, leaf in rows]


def leaf_chunks(
    conn: Connection, batches: Sequence[int], chunk: int = 1 << 16
) -> Iterator[list[bytes]]:
    """The record leaves of `batches` (by batch, then position), rebuilt from the stored rows, streamed."""
    table = _batch_table(conn, batches)
    try:
        reader = conn.sql(_LEAVES_SQL.format(batches=table)).to_arrow_reader(chunk)
        for part in reader:
            yield [bytes(leaf) for leaf in part.column(2).to_pylist()]
    finally:
        conn.unregister(table)


def export_leaves(conn: Connection, batches: Sequence[int], path: Path) -> int:
    """Write the record leaves of `batches` as Parquet (columns batch, position, leaf); rows written."""
    table = _batch_table(conn, batches)
    try:
        target = str(path).replace("'", "''")
        written = conn.execute(
            f"COPY ({_LEAVES_SQL.format(batches=table)}) TO '{target}' (FORMAT parquet)"
        ).fetchall()
    finally:
        conn.unregister(table)
    return int(written[0][0]) if written else 0
