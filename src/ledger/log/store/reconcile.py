"""The queries reconciliation asks: every call of a provider as `spec.reconcile.RecordedCall` columns,
read in SQL from the signed payload; and the whole log's leaves written as Parquet (`ledger export log`).

The SQL only extracts the fields `spec.reconcile` names (its token keys and batch key); which bucket and
row a call falls in is decided there, once, for the ledger and the offline verifier alike.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from ledger.log.store import PAYLOAD_JSON
from ledger.spec.reconcile import BATCH_KEY, INPUT_TOKEN_KEYS, OUTPUT_TOKEN_KEYS, RecordedCall

__all__ = ["export_log_leaves", "recorded_calls"]

Connection = duckdb.DuckDBPyConnection


# The body fields read, in one JSON parse per call: json_extract with a list of paths.
_PATHS = (
    "$.external_id",
    "$.created",
    f"$.{BATCH_KEY}",
    "$.endpoint",
    *(f"$.usage.{key}" for key in INPUT_TOKEN_KEYS),
    *(f"$.usage.{key}" for key in OUTPUT_TOKEN_KEYS),
)
_INT = "('BIGINT', 'UBIGINT')"


def _first_count(first: int, count: int) -> str:
    """The first of `count` usage fields (1-based list positions from `first`) holding an integer, as
    SQL (spec: the first key found wins)."""
    cases = " ".join(
        f"WHEN json_type(f[{i}]) IN {_INT} THEN try_cast(f[{i}] AS BIGINT)"
        for i in range(first, first + count)
    )
    return f"CASE {cases} ELSE NULL END"


def recorded_calls(conn: Connection, provider: str, size: int) -> list[RecordedCall]:
    """Every call entry of `provider` below `size`, in index order, as reconciliation reads it."""
    paths = ", ".join(f"'{p}'" for p in _PATHS)
    n_in, n_out = len(INPUT_TOKEN_KEYS), len(OUTPUT_TOKEN_KEYS)
    table = conn.sql(
        f"""SELECT idx, f[1] ->> '$' AS external_id, model,
                   CASE WHEN json_type(f[2]) IN {_INT} THEN try_cast(f[2] AS BIGINT) END AS created,
                   coalesce(json_type(f[3]), 'NULL') <> 'NULL' AS batch,
                   {_first_count(5, n_in)} AS input_tokens,
                   {_first_count(5 + n_in, n_out)} AS output_tokens,
                   f[4] ->> '$' AS endpoint
            FROM (SELECT idx, model, json_extract({PAYLOAD_JSON}, [{paths}]) AS f FROM entries
                  WHERE kind = 'call' AND provider = ? AND idx < ?)
            ORDER BY idx""",
        params=[provider, size],
    ).to_arrow_table()
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return [RecordedCall._make(row) for row in zip(*columns)]


def export_log_leaves(conn: Connection, size: int, path: Path) -> int:
    """Write the leaves of entries 0..size-1 as Parquet (columns index INT64, leaf BINARY, index order)."""
    target = str(path).replace("'", "''")
    written = conn.execute(
        f"""COPY (SELECT idx::BIGINT AS "index", leaf::BLOB AS leaf FROM entries WHERE idx < {int(size)}
                  ORDER BY idx) TO '{target}' (FORMAT parquet)"""
    ).fetchall()
    return int(written[0][0]) if written else 0
