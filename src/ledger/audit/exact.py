"""Exact matching: lineage record segments equal to a recorded call's output segment or a suspect's.

The joins run in DuckDB (`ledger.log.store.audit`); this module turns their rows into findings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from ledger.audit.inputs import Suspects
from ledger.audit.report import Finding
from ledger.engine.columns import int_column
from ledger.log.store import audit as queries
from ledger.log.store.audit import Connection

__all__ = ["exact_calls", "exact_suspects", "suspect_table"]


def exact_calls(conn: Connection, batches: Sequence[int], size: int) -> list[Finding]:
    """Lineage record segments equal to any recorded call's output segments, joined in DuckDB.

    Call outputs come straight from the signed leaves (decoded in SQL), not from any derived table.
    """
    rows = queries.exact_call_rows(conn, batches, size)
    found = [
        Finding(type="exact", call=int(call), batch=int(batch), record=int(position), segment=str(segment),
                similarity=1.0, purpose=purpose, provider=provider, model=model)
        for call, provider, model, purpose, batch, position, segment in rows
    ]  # fmt: skip
    return found


def _int_array(values: Sequence[int]) -> Any:
    """An int64 array; a range (a file of hashes only) without a Python loop."""
    if isinstance(values, range):
        return np.arange(values.start, values.stop, values.step, dtype=np.int64)
    return np.asarray(values, dtype=np.int64)


def suspect_table(suspects: Suspects) -> pa.Table:
    """One row per (suspect, segment); a hash on several lines gives one finding per suspect."""
    counts = np.diff(_int_array(suspects.starts)).astype(np.int64)
    owners = np.repeat(np.arange(len(suspects), dtype=np.int64), counts)
    lines = np.repeat(_int_array(suspects.lines), counts)
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(32), suspects.rows, [None, pa.py_buffer(suspects.blob)]
    )
    return pa.table(  # from buffers: pa.array of numpy would import pandas (engine.columns)
        {
            "suspect": int_column(owners),
            "line": int_column(lines),
            "segment": fixed.cast(pa.binary()),
        }
    )


def exact_suspects(conn: Connection, batches: Sequence[int], suspects: pa.Table) -> list[Finding]:
    """Lineage record segments among the suspects' (a `suspect_table`)."""
    rows = queries.exact_suspect_rows(conn, batches, suspects)
    return [
        Finding(type="exact", suspect=int(suspect), suspect_line=int(line), batch=int(batch), record=int(position),
                segment=str(segment), similarity=1.0)
        for suspect, line, batch, position, segment in rows
    ]  # fmt: skip
