"""Verify's worker processes: how many, and starting and stopping them.

Everything verify knows about its pool is here (issue #12 moves every pool to `ledger.engine`): callers
only `submit` to a `Pool` and read the `Future`s it returns.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

Pool = ProcessPoolExecutor

POOL_MIN_ENTRIES = 20_000  # below this, starting worker processes costs more than it saves
POOL_MIN_RECORDS = 200_000


def choose_workers(entries: int, records: int, workers: int | None) -> int:
    """The number of processes for a log of `entries` entries and `records` record rows; `workers`, when
    given, wins (1 = this process only)."""
    if workers is not None:
        return max(1, workers)
    if not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2:
        return 1
    big = entries >= POOL_MIN_ENTRIES or records >= POOL_MIN_RECORDS
    return min(2, os.cpu_count() or 1) if big else 1


def start_pool(workers: int) -> Pool | None:
    """Worker processes, forked while no session is open so no DuckDB thread of ours is copied into them.

    fork (Linux) rather than spawn: spawn would re-run an unguarded `__main__` of the caller's script.
    Each worker opens its own short sessions (record sets); entry rows are sent to it by this process.
    """
    if workers < 2:
        return None
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    pool = ProcessPoolExecutor(workers, multiprocessing.get_context(method))
    for future in [pool.submit(_ready) for _ in range(workers)]:  # start every process now
        future.result()
    return pool


def stop_pool(pool: Pool | None) -> None:
    """Stop the workers, dropping tasks not yet started (a failed run does not wait for them)."""
    if pool is not None:
        pool.shutdown(cancel_futures=True)


def _ready() -> bool:
    return True
