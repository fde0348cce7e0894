"""Parquet (`.parquet`, `.pq`): a row is the object of its columns, nulls kept, converted as
`ledger.engine.arrow_values` says; streamed a batch of rows at a time (pyarrow reads one row
group's columns at a time)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from ledger.errors import InputError
from ledger.ingest.reader import RingSpace, RowBatch, RowBatchReader, file_size

__all__ = ["PARQUET_BATCH_ROWS", "ParquetReader"]

PARQUET_BATCH_ROWS = 4096


class ParquetReader(RowBatchReader):
    """Reads Parquet files into `dict` records, batches of rows at a time."""

    format = "parquet"
    extensions = (".parquet", ".pq")
    compressible = False  # Parquet compresses its own pages

    def units(self, path: Path, sha: Any, space: RingSpace | None) -> Iterator[RowBatch]:
        return iter_row_batches(path, PARQUET_BATCH_ROWS)


def iter_row_batches(path: Path, batch_rows: int) -> Iterator[RowBatch]:
    """Stream a Parquet file in record batches; pyarrow reads one row group's columns at a time."""
    name = str(path)
    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from exc
    except (OSError, ValueError, pa.ArrowException) as exc:  # ValueError: damaged metadata text
        raise InputError(f"{name}: not a readable Parquet file ({exc})") from exc
    row = 1
    total_rows = max(pf.metadata.num_rows, 1)
    size = file_size(path)
    try:
        batches = pf.iter_batches(batch_size=batch_rows)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (OSError, ValueError, pa.ArrowException) as exc:
                raise InputError(f"{name}: row {row}: cannot read ({exc})") from exc
            if batch.num_rows:
                before = size * (row - 1) // total_rows
                row += batch.num_rows
                nbytes = size * (row - 1) // total_rows - before
                yield RowBatch(name, "parquet", row - batch.num_rows, batch, nbytes)
    finally:
        pf.close()
