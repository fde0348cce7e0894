"""Ray Data adapter: hash Parquet shards with the one kernel on Ray's workers.

`record_files(writer, paths, conf=...)` is `ledger record batch PATH... --engine ray`; a pipeline
already connected to Ray calls `record_parquet(ledger, paths, id=...)`. The plan's items
(`ledger.engines.shards`: one per row group, one per file's sha256) become a dataset
(`ray.data.from_items`, enough blocks for every worker) and `map_batches(..., batch_format="pyarrow")`
runs `shards.run_item` on each; every task reads its row group with pyarrow. `ray.data.read_parquet`
was not used for the rows: its blocks carry the file (`include_paths`) but no row index and are
re-blocked freely, so record positions would not survive.

Ray: an initialized connection is reused; else `ray.init` starts a local cluster unless
`RAY_ADDRESS` (or `ray.address` in `conf`) names one. `ray.num_cpus`, `ray.num_gpus`,
`ray.namespace` and `ray.object_store_memory` in `conf` go to `ray.init`. On a remote cluster the
workers need `ledger[ray]` installed and a spill location they share (`ledger.spill`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]

from ledger.engines import frames
from ledger.engines.shards import EngineRun, Job, Runner, record_shards, run_item
from ledger.errors import LedgerError, UsageError

__all__ = ["record_dataset", "record_files", "record_parquet", "runner"]

_MISSING = "--engine ray needs ray: pip install 'ledger[ray]'"
_INIT_KEYS = {"address": str, "num_cpus": int, "num_gpus": int, "namespace": str}
_INIT_KEYS["object_store_memory"] = int


def _ray() -> Any:
    try:
        import ray  # type: ignore[import-not-found, unused-ignore]
        import ray.data  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise UsageError(_MISSING) from exc
    return ray


def _init_kwargs(conf: Mapping[str, str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for key, value in conf.items():
        if key == "ledger.spill":
            continue
        name = key.removeprefix("ray.")
        if not key.startswith("ray.") or name not in _INIT_KEYS:
            known = ", ".join(f"ray.{k}" for k in _INIT_KEYS)
            raise UsageError(f"--engine-conf {key}: the Ray engine takes {known} and ledger.spill")
        try:
            kwargs[name] = _INIT_KEYS[name](value)
        except ValueError as exc:
            raise UsageError(f"--engine-conf {key}={value}: expected a number") from exc
    return kwargs


class _Items:
    """`map_batches` callable: each row names one item of the plan."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def __call__(self, items: pa.Table) -> pa.Table:
        return pa.concat_tables(
            [run_item(self.job, json.loads(text)) for text in items.column("item").to_pylist()]
        )


def runner() -> Runner:
    """Run a plan's items on the connected Ray cluster (at least 4 blocks per CPU's worth)."""
    ray = _ray()

    def run(job: Job, items: list[dict[str, int | str]]) -> Iterator[pa.Table]:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        cpus = int(ray.cluster_resources().get("CPU", 1))
        rows = [{"item": json.dumps(item)} for item in items]
        data = ray.data.from_items(rows, override_num_blocks=min(len(rows), max(4 * cpus, 1)))
        hashed = data.map_batches(_Items(job), batch_format="pyarrow", batch_size=1)
        try:
            yield from hashed.iter_batches(batch_format="pyarrow", batch_size=None)
        except Exception as exc:  # a lost worker, a worker without ledger installed
            text = str(exc).strip().splitlines()
            raise LedgerError(f"the Ray job failed: {text[0] if text else exc!r}") from exc

    return run


def record_parquet(
    ledger: Any, paths: Sequence[str | Path], *, id: str, **options: Any
) -> EngineRun:
    """Record Parquet shards (local paths or pyarrow filesystem URIs, in batch order) as one batch
    hashed on the Ray cluster this process is connected to (`ray.init` first); `options` are
    `ledger record batch`'s and `spill` (a location every worker shares, for a remote cluster).
    `ledger` is a `Ledger` or its `LogWriter`."""
    writer = getattr(ledger, "writer", ledger)
    return record_shards(writer, paths, runner, id=id, **options)


def record_files(
    writer: Any, paths: Sequence[str | Path], *, conf: Mapping[str, str], **options: Any
) -> EngineRun:
    """`ledger record batch PATH... --engine ray [--engine-conf KEY=VALUE...]`: a local cluster
    starts once the inputs are checked (and stops at the end) unless one is connected or named."""
    kwargs = _init_kwargs(conf)
    ray = _ray()
    address = kwargs.get("address") or os.environ.get("RAY_ADDRESS")
    spill = conf.get("ledger.spill")
    if address and address != "local" and spill is None:
        raise UsageError(
            f"--engine ray on the cluster at {address} needs a spill location every worker can "
            "write and this machine can read: --engine-conf ledger.spill=PATH_OR_URI"
        )
    started: list[bool] = []

    def start() -> Runner:
        if not ray.is_initialized():
            kwargs.setdefault("include_dashboard", False)
            kwargs.setdefault("logging_level", logging.ERROR)
            kwargs.setdefault("log_to_driver", False)
            try:
                ray.init(**kwargs)
            except Exception as exc:
                raise LedgerError(f"cannot start Ray: {exc}") from exc
            started.append(True)
            # Ray Data logs every dataset's start and end on stderr; the command says what it did
            logging.getLogger("ray.data").setLevel(logging.ERROR)
        return runner()

    try:
        return record_shards(writer, paths, start, spill=spill, **options)
    finally:
        if started:
            ray.shutdown()


class _Bounds:
    def __init__(self, order: list[str]) -> None:
        self.order = order

    def __call__(self, block: pa.Table) -> pa.Table:
        return frames.bounds(block.to_batches(), self.order, 0, keys=True)


class _HashChunk:
    def __init__(self, job: Job, order: list[str], where: frames.Offsets) -> None:
        self.job, self.order, self.where = job, order, where

    def __call__(self, block: pa.Table) -> pa.Table:
        return frames.hash_chunk(self.job, iter(block.to_batches()), self.order, self.where)


def record_dataset(
    ledger: Any,
    dataset: Any,
    *,
    id: str,
    order_by: str | Sequence[str],
    **options: Any,
) -> EngineRun:
    """Record a pipeline's own Ray Dataset as one batch (or `split` batches), hashed on the
    workers: positions follow the unique `order_by` column(s) (`ledger.engines.frames`: the dataset
    is sorted and materialized, each block reports its first key and rows, then hashes from its
    first position); every column is part of the record. The same entries as
    `Ledger.record_batch` of the sorted dataset's rows as one Arrow table; `options` as in
    `record_parquet`."""
    ray = _ray()
    order = frames.order_columns(order_by)
    writer = getattr(ledger, "writer", ledger)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    ordered = dataset.sort(order).materialize()

    def count_pass() -> list[dict[str, Any]]:
        found = ordered.map_batches(_Bounds(order), batch_format="pyarrow", batch_size=None)
        tables = list(found.iter_batches(batch_format="pyarrow", batch_size=None))
        rows = pa.concat_tables(tables, promote_options="default")
        return frames.chunk_order(rows, order)  # the blocks in key order

    def hash_pass(job: Job, where: frames.Offsets) -> Iterator[pa.Table]:
        hashed = ordered.map_batches(
            _HashChunk(job, order, where), batch_format="pyarrow", batch_size=None
        )
        yield from hashed.iter_batches(batch_format="pyarrow", batch_size=None)

    return frames.record_frame(writer, count_pass, hash_pass, id=id, **options)
