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


def _first_count(keys: tuple[str, ...]) -> str:
    """The first of the usage object's `keys` holding an integer, as SQL (spec: first key found wins)."""
    parts = [f"try_cast(json_extract(body, '$.usage.{key}') AS BIGINT)" for key in keys]
    checks = [
        f"json_type(json_extract(body, '$.usage.{key}')) IN ('BIGINT', 'UBIGINT')" for key in keys
    ]
    cases = " ".join(f"WHEN {check} THEN {part}" for check, part in zip(checks, parts))
    return f"CASE {cases} ELSE NULL END"


def recorded_calls(conn: Connection, provider: str, size: int) -> list[RecordedCall]:
    """Every call entry of `provider` below `size`, in index order, as reconciliation reads it."""
    created = "json_extract(body, '$.created')"
    table = conn.sql(
        f"""WITH calls AS (
                SELECT idx, model, {PAYLOAD_JSON}::JSON AS body FROM entries
                WHERE kind = 'call' AND provider = ? AND idx < ?)
            SELECT idx,
                   json_extract_string(body, '$.external_id') AS external_id,
                   model,
                   CASE WHEN json_type({created}) IN ('BIGINT', 'UBIGINT')
                        THEN try_cast({created} AS BIGINT) END AS created,
                   json_extract(body, '$.{BATCH_KEY}') IS NOT NULL
                       AND json_type(json_extract(body, '$.{BATCH_KEY}')) <> 'NULL' AS batch,
                   {_first_count(INPUT_TOKEN_KEYS)} AS input_tokens,
                   {_first_count(OUTPUT_TOKEN_KEYS)} AS output_tokens,
                   json_extract_string(body, '$.endpoint') AS endpoint
            FROM calls ORDER BY idx""",
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
