"""Apache Spark adapter (first cut): hash Parquet shards with the one kernel on Spark's executors.

`hash_parquet(spark, paths, options)` reads the shards as one DataFrame with each row's
`_metadata.file_path` and `_metadata.row_index` (Spark 4), runs `engine.ranges.hash_range` in
`mapInArrow` on every run of consecutive rows of one file, and merges the ranges' summaries on the
driver into the batch's roots: a record's position is (the shard's offset in the order given, from the
shards' Parquet footers) + its row index. Executors send back a few hashes per run, never the leaf
hashes. Spark is imported by the caller (this module only needs the session it is given); executors
need `ledger` installed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from ledger.engine.kernel import KernelOptions, Origin
from ledger.engine.ranges import RangeMerger, RangeSummary, hash_range
from ledger.errors import InputError

__all__ = ["hash_parquet", "shard_offsets"]

_FILE = "__ledger_file_path"
_ROW = "__ledger_row_index"
# The ranges' wire form as Spark types it: Spark has no fixed-size binary, so hashes are `binary`.
_WIRE = pa.schema(
    [
        ("begin", pa.int64()),
        ("end", pa.int64()),
        ("record_hashes", pa.list_(pa.binary())),
        ("fingerprint_hashes", pa.list_(pa.binary())),
        ("without_text", pa.int64()),
        ("token_records", pa.int64()),
    ]
)
_WIRE_DDL = (
    "begin long, end long, record_hashes array<binary>, fingerprint_hashes array<binary>, "
    "without_text long, token_records long"
)


def shard_offsets(paths: Sequence[str | Path]) -> tuple[dict[str, int], int]:
    """Each shard's first position in the batch (keyed by its normalized local path), and the total
    number of rows, from the Parquet footers only."""
    offsets: dict[str, int] = {}
    total = 0
    for path in paths:
        key = _key(str(path))
        if key in offsets:
            raise InputError(f"{path}: the same shard is given twice")
        offsets[key] = total
        total += pq.ParquetFile(path).metadata.num_rows
    return offsets, total


def _key(path: str) -> str:
    """A shard's name as Spark's `_metadata.file_path` (a URI) and as the caller's path agree on."""
    if "://" in path or path.startswith("file:"):
        parsed = urlparse(path)
        if parsed.scheme == "file":
            return str(Path(unquote(parsed.path)).resolve())
        return path
    return str(Path(path).resolve())


def hash_parquet(spark: Any, paths: Sequence[str | Path], options: KernelOptions) -> RangeSummary:
    """The summary of ``[0, n)`` of the batch made of `paths`' rows, in order, hashed on `spark`."""
    offsets, total = shard_offsets(paths)
    frame = spark.read.parquet(*[str(p) for p in paths])
    columns = frame.columns
    frame = frame.selectExpr(
        *[f"`{c}`" for c in columns],
        f"_metadata.file_path AS {_FILE}",
        f"_metadata.row_index AS {_ROW}",
    )

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for summary in _summaries(batch, offsets, options):
                yield summary.to_arrow().cast(_WIRE).to_batches()[0]

    ranges = frame.mapInArrow(task, _WIRE_DDL).toArrow()
    merger = RangeMerger()
    for summary in RangeSummary.from_arrow(ranges):
        merger.add(summary)
    merged = merger.result()
    if merged.count != total:
        raise InputError(
            f"Spark hashed {merged.count} rows of the {total} the shards' footers hold"
        )
    return merged


def _summaries(
    batch: pa.RecordBatch, offsets: dict[str, int], options: KernelOptions
) -> Iterator[RangeSummary]:
    """One summary per run of consecutive rows of one file in `batch` (merged where adjacent)."""
    files = batch.column(_FILE).to_pylist()
    rows = np.asarray(batch.column(_ROW))
    data = batch.drop_columns([_FILE, _ROW])
    positions = np.fromiter(
        (offsets[_key(f)] for f in files), dtype=np.int64, count=len(files)
    ) + rows.astype(np.int64)
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = [0, *breaks.tolist()]
    ends = [*breaks.tolist(), len(files)]
    current: RangeSummary | None = None
    for start, end in zip(starts, ends):
        if start == end:
            continue
        origin = Origin(files[start], int(rows[start]) + 1, rows=True)
        _, summary = hash_range(
            data.slice(start, end - start), options, int(positions[start]), origin=origin
        )
        if current is not None and current.end == summary.begin:
            current.merge(summary)
            continue
        if current is not None:
            yield current
        current = summary
    if current is not None:
        yield current
