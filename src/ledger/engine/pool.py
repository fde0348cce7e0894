"""The one worker pool: ordered, bounded parallel work in forked processes, knowing no file format
and no database.

A `WorkerPool` starts its processes at once (fork on Linux, so a caller's script needs no
`if __name__ == "__main__"` guard and the workers inherit what was imported), hands each worker a
`job` once instead of once per task, and runs module-level functions on it:

- `submit(fn, *args)` gives a `Pending` result (`done()`, `result()`), for callers that schedule
  themselves (e.g. check a part inline when every worker is busy);
- `map(fn, tasks)` runs `fn(task)` on each task of a lazy iterable and yields the results in task
  order, with at most `in_flight` pending, so memory stays flat however many tasks there are. An
  item that is a `Ready` carries a result already known (a marker, work done inline) and keeps its
  place in the order without going to a worker.

Bulk bytes need not travel through the pool's pipes (pickling them cost the caller's process more
than anything else it did per task). On Linux a pool made with `slot_size` and `result_slot_size`
shares two `SlotRing`s of anonymous memory with its workers, one slot per task in flight: task
number `k` owns slot `k % slots` of both (`next_slot()` names the next one), so the caller writes a
task's input into `inputs` before handing it over and the worker reads it with `worker_inputs()`;
a worker returns big results with `place_result(slot, parts)`, and `map` hands the caller the copied
`Taken` parts. A slot is reused only after the task that owned it was taken.

Workers are lean: the inherited heap is frozen for the collector, automatic collection is off
(tasks free their acyclic data by reference counting; a young-generation pass runs after each task)
and glibc keeps freed memory for the next task. A worker's `LedgerError` is raised again in the
caller without the remote traceback.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import mmap
import multiprocessing
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from ledger.errors import LedgerError, UsageError

__all__ = [
    "Pending",
    "Placed",
    "Ready",
    "SlotRing",
    "Taken",
    "WorkerPool",
    "place_result",
    "worker_inputs",
    "worker_job",
]

_T = TypeVar("_T")
_R = TypeVar("_R")


class SlotRing:
    """Anonymous shared memory cut into `slots` equal slots of `slot_size` bytes.

    Made before the workers fork, it is the same memory in every process.
    """

    def __init__(self, slots: int, slot_size: int) -> None:
        self.slots = slots
        self.slot_size = slot_size
        self.memory = mmap.mmap(-1, slots * slot_size)

    def start(self, slot: int) -> int:
        """Offset of `slot` in `memory`."""
        return slot * self.slot_size

    def put(self, slot: int, data: bytes | memoryview) -> int:
        """Copy `data` to the front of `slot`; returns its size."""
        start = self.start(slot)
        self.memory[start : start + len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # a view still held by a traceback
            self.memory.close()


@dataclass(frozen=True)
class Ready(Generic[_R]):
    """A result already known, kept in its place among the pending ones of `WorkerPool.map`."""

    value: _R


@dataclass(frozen=True)
class Placed:
    """What a worker returns for parts it laid end to end in its result slot (`place_result`)."""

    slot: int
    sizes: tuple[int, ...]
    meta: object


@dataclass(frozen=True)
class Taken:
    """Parts a worker placed in the result ring, copied out by the caller's process."""

    parts: tuple[bytes, ...]
    meta: object


class Pending(Generic[_R]):
    """A result of `WorkerPool.submit`: wait with `result()`, poll with `done()`."""

    def __init__(self, async_result: Any, results: SlotRing | None) -> None:
        self._async = async_result
        self._results = results

    def done(self) -> bool:
        return bool(self._async.ready())

    def result(self) -> _R:
        try:
            value = self._async.get()
        except LedgerError as exc:
            raise exc.with_traceback(None) from None
        if isinstance(value, Placed):
            value = _take(self._results, value)
        return value  # type: ignore[no-any-return]


def _take(results: SlotRing | None, placed: Placed) -> Taken:
    """Copy placed parts out of the result ring before their slot is reused."""
    assert results is not None
    at = results.start(placed.slot)
    parts = []
    for size in placed.sizes:
        parts.append(results.memory[at : at + size])
        at += size
    return Taken(tuple(parts), placed.meta)


class WorkerPool:
    """`workers` processes, started now; use as a context manager (or call `close()`).

    `job` is given to every worker once (`worker_job()`); off Linux it must be picklable, as must
    the functions and tasks. `in_flight` (default `2 * workers + 2`) bounds `map`'s pending tasks.
    `slot_size`/`result_slot_size` > 0 give the shared `inputs`/`results` rings (Linux only: else
    they are None and everything travels through the pipes).
    """

    def __init__(
        self,
        workers: int,
        job: object = None,
        *,
        in_flight: int | None = None,
        slot_size: int = 0,
        result_slot_size: int = 0,
    ) -> None:
        if workers < 1:
            raise UsageError(f"workers must be at least 1, found {workers}")
        fork = sys.platform.startswith("linux")
        self.workers = workers
        self.in_flight = in_flight if in_flight is not None else 2 * workers + 2
        self.slots = self.in_flight + 1  # a slot is reused only after its task was taken
        self.inputs = SlotRing(self.slots, slot_size) if fork and slot_size > 0 else None
        self.results = (
            SlotRing(self.slots, result_slot_size) if fork and result_slot_size > 0 else None
        )
        self._submitted = 0
        ctx = multiprocessing.get_context("fork" if fork else None)
        shared = (
            self.inputs.memory if self.inputs is not None else None,
            self.results.memory if self.results is not None else None,
            result_slot_size,
        )
        self._pool = ctx.Pool(workers, initializer=_init_worker, initargs=(job, *shared))

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (pending work is abandoned) and free the shared memory."""
        self._pool.terminate()
        self._pool.join()
        for ring in (self.inputs, self.results):
            if ring is not None:
                ring.close()

    def next_slot(self) -> int:
        """The ring slot that the next submitted task owns."""
        return self._submitted % self.slots

    def submit(self, fn: Callable[..., _R], *args: object) -> Pending[_R]:
        """Run `fn(*args)` in a worker; `fn` must be a module-level function."""
        self._submitted += 1
        return Pending(self._pool.apply_async(_run, (fn, args)), self.results)

    def map(self, fn: Callable[[_T], _R], tasks: Iterable[_T | Ready[_R]]) -> Iterator[_R]:
        """`fn(task)` of every task in order (a `Ready` item's own value), at most `in_flight` pending.

        `tasks` is read lazily, one item after each result is taken: a task's ring slot
        (`next_slot()` when it is made) is free by then. A worker's `Placed` comes back `Taken`.
        """
        pending: deque[Ready[_R] | Pending[_R]] = deque()
        for task in tasks:
            pending.append(task if isinstance(task, Ready) else self.submit(fn, task))
            while len(pending) > self.in_flight:
                yield _settle(pending.popleft())
        while pending:
            yield _settle(pending.popleft())


def _settle(item: Ready[_R] | Pending[_R]) -> _R:
    return item.value if isinstance(item, Ready) else item.result()


# --- in a worker -----------------------------------------------------------------------------------

_worker_job: object = None
_worker_inputs: mmap.mmap | None = None
_worker_results: mmap.mmap | None = None
_worker_result_slot = 0


def worker_job() -> object:
    """The `job` this worker's pool was made with."""
    return _worker_job


def worker_inputs() -> mmap.mmap | None:
    """This worker's view of the pool's `inputs` ring (None without one)."""
    return _worker_inputs


def place_result(slot: int, parts: Sequence[bytes | memoryview], meta: object) -> Placed | None:
    """Lay `parts` end to end in result slot `slot`, if the pool has a result ring and they fit.

    Returning the few numbers of a `Placed` instead of megabytes through the pipe saves both
    processes pickling, pipe round trips and copies.
    """
    if _worker_results is None:
        return None
    sizes = tuple(map(len, parts))
    if sum(sizes) > _worker_result_slot:
        return None
    at = slot * _worker_result_slot
    for part, size in zip(parts, sizes, strict=True):
        _worker_results[at : at + size] = part
        at += size
    return Placed(slot, sizes, meta)


def _init_worker(
    job: object, inputs: mmap.mmap | None, results: mmap.mmap | None, result_slot: int
) -> None:
    """Receive the job and the shared rings once per worker instead of once per task."""
    global _worker_job, _worker_inputs, _worker_results, _worker_result_slot
    # A forked worker inherits the caller's whole heap; frozen, the collector no longer walks it
    # (nor touches, and so copies, its pages). A task's data is acyclic and freed by reference
    # counting, so automatic collection (~10% of a worker's time) is off and `_run` runs a
    # cheap young-generation pass after each task instead.
    gc.freeze()
    gc.disable()
    _keep_freed_memory()
    _worker_job = job
    _worker_inputs = inputs
    _worker_results = results
    _worker_result_slot = result_slot


def _run(fn: Callable[..., _R], args: tuple[object, ...]) -> _R:
    """`fn(*args)` in a worker, then collect whatever cycles the task left behind."""
    try:
        return fn(*args)
    finally:
        gc.collect(1)


# glibc's mallopt parameters: allocations below the first come from the heap rather than fresh
# mmap()s, and up to the second of freed heap is kept instead of being returned to the system.
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_WORKER_MMAP_THRESHOLD: Final = 32 << 20
_WORKER_TRIM_THRESHOLD: Final = 256 << 20


def _keep_freed_memory() -> None:
    """Let a worker reuse the memory of its last task for the next one (glibc only).

    Every task of a kind allocates the same few large buffers; by default glibc maps each afresh
    and unmaps it when freed, so every task paid again for zeroed pages: ~7% of a worker's time.
    Elsewhere (musl, macOS) this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, _WORKER_MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _WORKER_TRIM_THRESHOLD)
