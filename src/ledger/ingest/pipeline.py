"""Record files, read and hashed: every format's reader feeding the one kernel on the one pool.

`iter_records` reads a file's records as values; `iter_record_columns` (the hot path of `ledger
record batch`), `iter_record_hashes` and `iter_fingerprinted_record_hashes` hash them with
`ledger.engine.kernel`, inline or on a `ledger.engine.pool.WorkerPool` when the input is big enough
to pay for one. Every reader cuts its files into units; a bad record raises one `InputError` naming
the file and the line or row; an input with no records is an error.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]

from ledger.engine.kernel import FingerprintBlobs, KernelOptions, RecordColumns, hash_columns
from ledger.engine.pool import (
    Placed,
    Ready,
    Taken,
    WorkerPool,
    place_result,
    worker_inputs,
    worker_job,
)
from ledger.engine.tokens import TokenizerFile
from ledger.errors import InputError, UsageError
from ledger.ingest.arrow import ArrowSource
from ledger.ingest.blocks import InRing, ring_slot_size
from ledger.ingest.formats import checked_format, detect_format, reader_for
from ledger.ingest.reader import (
    FileEnd,
    LineBlock,
    RingSpace,
    RowBatch,
    Unit,
    file_sha256,
    file_size,
)
from ledger.spec.leaves import RecordHash

__all__ = [
    "POOL_MIN_BYTES",
    "RESULT_SLOT_SIZE",
    "FingerprintBlobs",
    "RecordColumns",
    "iter_arrow_columns",
    "iter_fingerprinted_record_hashes",
    "iter_record_columns",
    "iter_record_hashes",
    "iter_records",
]

# Below this much input a worker pool costs more to start than it saves.
POOL_MIN_BYTES = 24 << 20
# Room for a block's columns in the shared result ring: ~1.5 MB for 4 MB of chat records; a block
# of tiny records may need more, and its columns then travel pickled through the pool's pipe.
RESULT_SLOT_SIZE = 8 << 20


def iter_records(
    path: Path, fmt: str | None = None, *, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[int, object]]:
    """Yield `(line or row number, record)`, 1-based, streaming; raise `InputError` on the first bad one.

    Records are `dict` for JSONL and Parquet and `str` for text; a file with no records is an error.
    `progress`, if given, is called with the number of input bytes done after each block of records.
    """
    path = Path(path)
    reader = reader_for(checked_format(path, fmt))
    count = 0
    for unit in reader.units(path, None, None):
        for numbered in reader.records(unit):
            count += 1
            yield numbered
        if progress is not None:
            progress(unit.nbytes)
    if count == 0:
        raise InputError(reader.no_records(path))


def iter_record_hashes(
    paths: Sequence[Path],
    text_fields: Sequence[str] | None = None,
    min_chars: int = 32,
    chunk_size: int = 8192,
    workers: int | None = None,
    *,
    file_digests: dict[Path, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[list[RecordHash]]:
    """Yield the `RecordHash` of every record of `paths`, in input order, in lists of `chunk_size`.

    A chunk never spans two files (the last chunk of each file may be short). Parsing and hashing run
    in a pool of `workers` processes (default `os.cpu_count()`, 1 runs inline) when the input is big
    enough to pay for it; at most a few blocks are in flight, so memory stays flat for any file size.
    A bad record raises the same `InputError` (file:line) as `iter_records`, after the chunks before it.
    If `file_digests` is given it receives each file's hex SHA-256, computed from the bytes actually
    read (JSONL and text) so that the `source` digest and the records cannot disagree. `progress`, if
    given, is called with the number of input bytes done (estimated from row counts for Parquet).
    """
    options = KernelOptions(_fields(text_fields), min_chars, None, True)
    for hashes, _ in _iter_hashed(paths, options, chunk_size, workers, file_digests, progress):
        yield hashes


def iter_fingerprinted_record_hashes(
    paths: Sequence[Path],
    fingerprint: Callable[[Sequence[Sequence[str]]], list[bytes]],
    text_fields: Sequence[str] | None = None,
    min_chars: int = 32,
    chunk_size: int = 8192,
    workers: int | None = None,
    *,
    keep_texts: bool = False,
    file_digests: dict[Path, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[list[RecordHash], list[bytes]]]:
    """As `iter_record_hashes`, with `fingerprint(texts of each record)` computed in the workers too.

    Yields `(hashes, fingerprints)` with one fingerprint per record. Near-duplicate fingerprints cost
    more CPU than hashing, so computing them beside the hash keeps the caller's process free; and
    unless `keep_texts`, the segment texts (the bulk of a result) never travel back at all.
    `fingerprint` must give each record the same value however records are grouped (for example
    `functools.partial(ledger.spec.fingerprint.fingerprint_records, params=...)`); off Linux it must be
    picklable.
    """
    options = KernelOptions(_fields(text_fields), min_chars, _Blobs(fingerprint), keep_texts)
    for hashes, fingerprints in _iter_hashed(
        paths, options, chunk_size, workers, file_digests, progress
    ):
        assert fingerprints is not None
        yield hashes, fingerprints


def iter_record_columns(
    paths: Sequence[Path],
    fingerprint_blobs: FingerprintBlobs,
    text_fields: Sequence[str] | None = None,
    min_chars: int = 32,
    workers: int | None = None,
    *,
    file_digests: dict[Path, str] | None = None,
    progress: Callable[[int], None] | None = None,
    tokenizer: TokenizerFile | None = None,
) -> Iterator[RecordColumns]:
    """As `iter_fingerprinted_record_hashes`, as `RecordColumns` of one input block each, in order.

    The same records, digests, segments and fingerprints, the same errors, and the same pool,
    `file_digests` and `progress` rules; a block never spans two files and is never empty.
    `fingerprint_blobs` gives a block's fingerprints laid end to end with their end offsets (as
    `ledger.spec.fingerprint.fingerprint_record_blobs` does), so no object per record is made.
    With `tokenizer`, the token ids of each record are decoded into texts in the workers.
    """
    options = KernelOptions(_fields(text_fields), min_chars, fingerprint_blobs, False, tokenizer)
    count = 0
    for item, columns in _iter_done(paths, options, workers, file_digests):
        if isinstance(item, FileEnd):
            if count == 0:
                raise InputError(reader_for(item.fmt).no_records(item.path))
            count = 0
            continue
        if progress is not None:
            progress(item.nbytes)
        assert columns is not None
        count += columns.count
        if columns.count:
            yield columns


def iter_arrow_columns(
    source: ArrowSource,
    fingerprint_blobs: FingerprintBlobs,
    text_fields: Sequence[str] | None = None,
    min_chars: int = 32,
    workers: int | None = None,
    *,
    progress: Callable[[int], None] | None = None,
    tokenizer: TokenizerFile | None = None,
) -> Iterator[RecordColumns]:
    """As `iter_record_columns` for rows held in memory as Arrow (`ledger.ingest.arrow`): the same
    kernel input as Parquet rows, on the pool when the table is big. `progress` counts rows."""
    options = KernelOptions(_fields(text_fields), min_chars, fingerprint_blobs, False, tokenizer)
    wanted = workers if workers is not None else (os.cpu_count() or 1)
    if wanted <= 1 or source.nbytes < POOL_MIN_BYTES:
        done: Iterator[tuple[Unit | FileEnd, RecordColumns | None]] = (
            (unit, _hash_unit(unit, options)) for unit in source.units()
        )
    else:
        done = _pool_run(lambda space: source.units(), options, wanted)
    for unit, columns in done:
        assert isinstance(unit, RowBatch) and columns is not None
        if progress is not None:
            progress(unit.batch.num_rows)
        if columns.count:
            yield columns


def _fields(text_fields: Sequence[str] | None) -> tuple[str, ...] | None:
    """Text fields as an immutable tuple (also catches a bare string passed by mistake)."""
    if isinstance(text_fields, str):
        raise UsageError(
            f"text fields must be a list of dotted paths, found the string {text_fields!r}"
        )
    return tuple(text_fields) if text_fields is not None else None


@dataclass(frozen=True)
class _Blobs:
    """A list-of-fingerprints function as the kernel's `FingerprintBlobs` (picklable if it is)."""

    fingerprint: Callable[[Sequence[Sequence[str]]], list[bytes]]

    def __call__(self, texts: Sequence[Sequence[str]]) -> tuple[bytes, npt.NDArray[np.int64]]:
        prints = self.fingerprint(texts)
        ends = np.cumsum([len(p) for p in prints], dtype=np.int64)
        return b"".join(prints), ends


# One unit's result as objects: its hashes, and the fingerprints if the job asks for them.
_Result = tuple[list[RecordHash], list[bytes] | None]


def _iter_hashed(
    paths: Sequence[Path],
    options: KernelOptions,
    chunk_size: int,
    workers: int | None,
    file_digests: dict[Path, str] | None,
    progress: Callable[[int], None] | None,
) -> Iterator[_Result]:
    """Check options and inputs up front, then hash inline or in a pool and regroup into chunks."""
    if chunk_size < 1:
        raise UsageError(f"chunk size must be at least 1, found {chunk_size}")
    done = _iter_done(paths, options, workers, file_digests)
    objects = ((item, None if c is None else _objects(c, options)) for item, c in done)
    yield from _rechunk(objects, chunk_size, progress)


def _objects(columns: RecordColumns, options: KernelOptions) -> _Result:
    """A unit's columns as `RecordHash` objects (with texts only if kept) and fingerprints."""
    digests, segments = columns.digests, columns.segments
    texts = columns.texts
    hashes = []
    at = 0
    for i, n in enumerate(columns.segment_counts.tolist()):
        record_segments = tuple(segments[32 * (at + k) : 32 * (at + k + 1)] for k in range(n))
        kept = tuple(texts[i]) if texts is not None else ()
        hashes.append(RecordHash(digests[32 * i : 32 * i + 32], record_segments, kept))
        at += n
    prints = None
    if options.fingerprint_blobs is not None:
        bounds = columns.fingerprint_ends.tolist()
        blobs = columns.fingerprints
        starts = [0, *bounds[:-1]] if bounds else []  # a unit may hold no record (a BOM line)
        prints = [blobs[a:b] for a, b in zip(starts, bounds, strict=True)]
    return hashes, prints


def _iter_done(
    paths: Sequence[Path],
    options: KernelOptions,
    workers: int | None,
    file_digests: dict[Path, str] | None,
) -> Iterator[tuple[Unit | FileEnd, RecordColumns | None]]:
    """Every unit with its `RecordColumns`, in input order: inline, or on the worker pool. Options
    and inputs are checked before any work; each file's units are followed by its `FileEnd`,
    paired with None.
    """
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be at least 1, found {workers}")
    plan = [(Path(p), detect_format(Path(p))) for p in paths]
    total = sum(file_size(p) for p, _ in plan)
    wanted = workers if workers is not None else (os.cpu_count() or 1)
    # A byte of token ids costs ~10x the CPU of a byte of JSON text to decode and hash.
    least = POOL_MIN_BYTES // 8 if options.tokenizer is not None else POOL_MIN_BYTES
    if wanted <= 1 or total < least:
        for item in _iter_plan(plan, file_digests, None):
            assert not isinstance(item, InRing)
            yield item, None if isinstance(item, FileEnd) else _hash_unit(item, options)
    else:
        yield from _pool_map(plan, file_digests, options, wanted)


def _iter_plan(
    plan: Sequence[tuple[Path, str]],
    file_digests: dict[Path, str] | None,
    space: RingSpace | None,
) -> Iterator[Unit | InRing | FileEnd]:
    """Units of every file in order, each file followed by its `FileEnd`; a reader may read
    blocks straight into the pool's ring, if given."""
    for path, fmt in plan:
        reader = reader_for(fmt)
        # Line formats feed the digest as they read; Parquet is read by pyarrow, so hashed apart.
        sha = hashlib.sha256() if file_digests is not None and fmt != "parquet" else None
        yield from reader.units(path, sha, space)
        if file_digests is not None:
            file_digests[path] = sha.hexdigest() if sha is not None else file_sha256(path)
        yield FileEnd(path, fmt)


def _hash_unit(unit: Unit, options: KernelOptions) -> RecordColumns:
    """The kernel on one unit, as its format's reader presents it."""
    batch, form, origin = reader_for(unit.fmt).kernel_input(unit)
    return hash_columns(batch, options, form, origin)


def _work(task: Unit | InRing) -> RecordColumns | Placed:
    """Pool task: hash one unit with the options given at start-up; a block that came through the
    input ring is read where it lies and its columns go back through the result ring if they fit."""
    options = worker_job()
    assert isinstance(options, KernelOptions)
    if not isinstance(task, InRing):
        return _hash_unit(task, options)
    inputs = worker_inputs()
    assert inputs is not None
    columns = _hash_unit(task.unpack(inputs), options)
    if columns.texts is None:
        placed = place_result(task.slot, columns.buffers(), columns.count)
        if placed is not None:
            return placed
    return columns


def _back(value: object) -> RecordColumns:
    """A worker's columns, copied out of the result ring if they came through it."""
    if isinstance(value, Taken):
        assert isinstance(value.meta, int)
        return RecordColumns.from_buffers(value.meta, value.parts)
    assert isinstance(value, RecordColumns)
    return value


def _pool_map(
    plan: Sequence[tuple[Path, str]],
    file_digests: dict[Path, str] | None,
    options: KernelOptions,
    workers: int,
) -> Iterator[tuple[Unit | FileEnd, RecordColumns | None]]:
    """The units of `plan` hashed on a `WorkerPool`, in input order, a bounded number in flight.

    Errors raised in a worker come back as the same one-line `InputError`. Blocks of line formats
    travel through the pool's shared input ring (read there in place when the reader can) and
    their columns come back through its result ring, instead of being pickled through pipes.
    """
    yield from _pool_run(lambda space: _iter_plan(plan, file_digests, space), options, workers)


def _pool_run(
    read: Callable[[RingSpace | None], Iterator[Unit | InRing | FileEnd]],
    options: KernelOptions,
    workers: int,
) -> Iterator[tuple[Unit | FileEnd, RecordColumns | None]]:
    """`_pool_map` over the units `read(space)` gives."""
    with WorkerPool(
        workers, options, slot_size=ring_slot_size(), result_slot_size=RESULT_SLOT_SIZE
    ) as pool:
        space = RingSpace(pool.inputs, pool.next_slot) if pool.inputs is not None else None
        items: deque[Unit | FileEnd] = deque()

        def tasks() -> Iterator[Any]:  # units, ring blocks and `Ready` file ends
            for item in read(space):
                if isinstance(item, InRing):
                    items.append(item.block)
                    yield item
                    continue
                items.append(item)
                if isinstance(item, FileEnd):
                    yield Ready(None)
                elif (
                    space is not None
                    and isinstance(item, LineBlock)
                    and len(item.data) <= space.ring.slot_size
                ):
                    slot = pool.next_slot()
                    size = space.ring.put(slot, item.data)
                    block = LineBlock(item.name, item.fmt, item.first_line, b"", item.at_eof, 0)
                    yield InRing(block, slot, size)
                elif isinstance(item, RowBatch):
                    yield _compact(item)
                else:
                    yield item

        for value in pool.map(_work, tasks()):
            yield items.popleft(), None if value is None else _back(value)


def _compact(unit: RowBatch) -> RowBatch:
    """A unit whose batch is a view of a bigger one (an Arrow file's or a table's slice) with its
    own copy of its rows: pickled to a worker, a view would carry the whole buffers it views."""
    batch = unit.batch
    if batch.get_total_buffer_size() <= 2 * batch.nbytes + 4096:
        return unit
    rows = pa.Table.from_batches([batch]).take(np.arange(batch.num_rows)).combine_chunks()
    (copy,) = rows.to_batches() or [batch.slice(0, 0)]
    return RowBatch(unit.name, unit.fmt, unit.first_row, copy, unit.nbytes)


def _rechunk(
    done: Iterable[tuple[Unit | FileEnd, _Result | None]],
    chunk_size: int,
    progress: Callable[[int], None] | None,
) -> Iterator[_Result]:
    """Regroup per-unit results into `chunk_size` lists per file; reject files without records."""
    hashes: list[RecordHash] = []
    prints: list[bytes] | None = None
    count = 0
    for item, result in done:
        if isinstance(item, FileEnd):
            if count == 0:
                raise InputError(reader_for(item.fmt).no_records(item.path))
            if hashes:
                yield hashes, prints
            hashes, prints, count = [], None, 0
            continue
        if progress is not None:
            progress(item.nbytes)
        assert result is not None
        unit_hashes, unit_prints = result
        count += len(unit_hashes)
        hashes.extend(unit_hashes)
        if unit_prints is not None:
            if prints is None:
                prints = []
            prints.extend(unit_prints)
        while len(hashes) >= chunk_size:
            yield hashes[:chunk_size], (prints[:chunk_size] if prints is not None else None)
            del hashes[:chunk_size]
            if prints is not None:
                del prints[:chunk_size]
