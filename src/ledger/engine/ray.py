"""Ray Data adapter (first cut): hash Parquet shards with the one kernel on Ray's workers.

`hash_parquet(paths, options)` plans one task per Parquet row group from the shards' footers (so each
task knows its rows' positions exactly: the shard's offset in the order given + the row group's first
row), runs them with `ray.data.from_items(...).map_batches(..., batch_format="pyarrow")`, where each
worker reads its row group with pyarrow and runs `engine.ranges.hash_range`, and merges the returned
summaries on the driver. `ray.data.read_parquet` was not used: its blocks carry the file path
(`include_paths`) but no row index, so positions would not survive its block splitting. Ray must be
initialised by the caller (a local cluster, or `RAY_ADDRESS`); workers need `ledger` installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from ledger.engine.kernel import KernelOptions, Origin
from ledger.engine.ranges import RangeMerger, RangeSummary, hash_range
from ledger.errors import InputError

__all__ = ["hash_parquet", "row_group_plan"]


def row_group_plan(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One item per row group of the shards, in batch order: path, row group, first position and
    first row (1-based, for error messages). Reads the footers only."""
    plan = []
    position = 0
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        row = 0
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            if rows:
                plan.append(
                    {"path": str(path), "group": group, "begin": position + row, "row": row}
                )
            row += rows
        position += meta.num_rows
    return plan


class _HashRowGroups:
    """`map_batches` callable: each item names a row group to read and hash as its range."""

    def __init__(self, options: KernelOptions) -> None:
        self.options = options

    def __call__(self, items: pa.Table) -> pa.Table:
        out = []
        for item in items.to_pylist():
            rows = pq.ParquetFile(item["path"]).read_row_group(item["group"])
            origin = Origin(item["path"], item["row"] + 1, rows=True)
            _, summary = hash_range(rows, self.options, item["begin"], origin=origin)
            out.append(summary.to_arrow())
        return pa.concat_tables(out)


def hash_parquet(
    paths: Sequence[str | Path], options: KernelOptions, blocks: int | None = None
) -> RangeSummary:
    """The summary of ``[0, n)`` of the batch made of `paths`' rows, in order, hashed on Ray.
    `blocks` (default: the cluster's CPUs, at least) sets how many tasks share the row groups."""
    import ray  # type: ignore[import-not-found, unused-ignore]  # the caller's cluster
    import ray.data  # type: ignore[import-not-found, unused-ignore]

    plan = row_group_plan(paths)
    total = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
    if not plan:
        raise InputError("no rows in the shards")
    cpus = int(ray.cluster_resources().get("CPU", 1))
    wanted = min(len(plan), blocks or max(cpus * 4, 1))
    data = ray.data.from_items(plan, override_num_blocks=wanted)
    hashed = data.map_batches(_HashRowGroups(options), batch_format="pyarrow", batch_size=1)
    merger = RangeMerger()
    for batch in hashed.iter_batches(batch_format="pyarrow", batch_size=None):
        for summary in RangeSummary.from_arrow(batch):
            merger.add(summary)
    merged = merger.result()
    if merged.count != total:
        raise InputError(f"Ray hashed {merged.count} rows of the {total} the shards' footers hold")
    return merged
