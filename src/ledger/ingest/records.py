"""Readers for training-data files: JSON Lines, Parquet and plain text, streamed in bounded memory.

Every reader turns a user's file into typed values (`dict` for JSONL and Parquet rows, `str` for text
lines) and reports bad input as one `InputError` line naming the file and the line or row, e.g.
`data.jsonl:17: not a JSON object (found array)`. The rules are DESIGN.md's "Inputs" paragraph:

- JSONL (`.jsonl`, `.ndjson`, `.json`, `.jsonlines`): each non-blank line is one JSON object; blank or
  whitespace-only lines are skipped; `\\r\\n` endings and a leading UTF-8 byte order mark are accepted.
- Parquet (`.parquet`, `.pq`): a row is the object of its columns, nulls kept. Timestamps become RFC 3339
  strings in UTC (`2024-05-01T12:00:00.25Z`; fraction digits only as needed; a timestamp without a time
  zone is taken as UTC), dates `YYYY-MM-DD`, times `HH:MM:SS[.fff]`; lists and structs become arrays and
  objects, maps with string keys objects. `float32` values are written as their shortest float32
  decimal form (so `0.1f` reads as `0.1`, like the JSONL it was likely made from), decimals as integers
  when their scale is 0 and as doubles when the double is exact. Binary, durations, unions and decimals
  with no exact double form have no JSON form: the first such value is an error naming row and column.
- Text (`.txt`): each line is one `str` record without its `\\n` or `\\r\\n`; empty lines are skipped.

An input with no records is an error. `iter_record_hashes` is the hot path of `ledger record batch`.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import decimal
import gc
import gzip
import hashlib
import io
import mmap
import multiprocessing
import os
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from ledger.errors import InputError, LedgerError, UsageError
from ledger.hashing import (
    RecordHash,
    RecordHashColumns,
    hash_record,
    hash_record_columns,
    hash_records,
    parse_json_line,
    parse_json_lines,
)
from ledger.spec.merkle import leaf_hash

__all__ = [
    "RECORD_FORMATS",
    "RecordColumns",
    "data_files",
    "detect_format",
    "file_sha256",
    "iter_fingerprinted_record_hashes",
    "iter_record_columns",
    "iter_record_hashes",
    "iter_records",
]

RECORD_FORMATS: Final = ("jsonl", "parquet", "txt")

_EXTENSIONS: Final = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".jsonlines": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
}
_BOM: Final = b"\xef\xbb\xbf"
# Unit of work for JSONL/text: big enough that per-task overhead vanishes, small enough that
# `2 * workers + 2` blocks in flight stay far below any memory concern.
_BLOCK_SIZE: Final = 4 << 20
_PARQUET_BATCH_ROWS: Final = 4096
# Below this much input a worker pool costs more to start than it saves.
_POOL_MIN_BYTES: Final = 24 << 20
# Errors that a JSON parser or the record hasher may raise for bad data (never for bugs of ours).
_DATA_ERRORS: Final = (LedgerError, ValueError, TypeError, OverflowError, RecursionError)


def detect_format(path: Path) -> str:
    """Name the record format of `path` from its extension, so that a typo fails before any work.

    JSON Lines and text may be gzip-compressed (`train.jsonl.gz`): the format is then named by the
    extension before `.gz`, and the records are read from the decompressed stream.
    """
    path = Path(path)
    if _gzipped(path):
        inner = Path(path.stem).suffix
        fmt = _EXTENSIONS.get(inner.lower())
        if fmt is None or fmt == "parquet":
            known = ", ".join(f"{ext}.gz" for ext, name in _EXTENSIONS.items() if name != "parquet")
            raise InputError(
                f"{path}: cannot tell the record format of a compressed file: expected one of "
                f"{known}, found {inner or 'no extension'}.gz"
            )
        return fmt
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(_EXTENSIONS)
        found = path.suffix or "no extension"
        raise InputError(
            f"{path}: cannot tell the record format: expected one of {known} (or .gz of JSON Lines "
            f"or text), found {found}"
        )
    return fmt


def data_files(paths: Sequence[Path]) -> list[tuple[str, Path]]:
    """(name to record, file) for each input: a file by its name, a directory's data files in name order.

    As `record checkpoint --weights` reads a directory: every file under it, recursively, sorted, named
    by its path relative to it; but names starting with `.` or `_` are skipped at any depth (hidden
    files, and the `_SUCCESS`-style markers Spark and Hadoop write, as Arrow datasets skip them).
    Every file must have a record format's extension; a directory with no file is InputError.
    """
    out: list[tuple[str, Path]] = []
    for path in map(Path, paths):
        if not path.is_dir():
            out.append((path.name, path))
            continue
        found = sorted(
            p
            for p in path.rglob("*")
            if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
            and p.is_file()
        )
        if not found:
            known = ", ".join(_EXTENSIONS)
            raise InputError(f"{path}: the directory holds no data file ({known}, or .gz of them)")
        for file in found:
            detect_format(file)  # a stray file fails here, naming it, before any hashing
            out.append((file.relative_to(path).as_posix(), file))
    return out


def _gzipped(path: Path) -> bool:
    """Whether records are read through gzip (by the `.gz` extension, as tools name such files)."""
    return path.suffix.lower() == ".gz"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks so memory stays flat for any size."""
    with _open_binary(Path(path)) as f:
        try:
            return hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def iter_records(
    path: Path, fmt: str | None = None, *, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[int, object]]:
    """Yield `(line or row number, record)`, 1-based, streaming; raise `InputError` on the first bad one.

    Records are `dict` for JSONL and Parquet and `str` for text; a file with no records is an error.
    `progress`, if given, is called with the number of input bytes done after each block of records.
    """
    path = Path(path)
    fmt = _checked_format(path, fmt)
    count = 0
    for unit in _iter_units(path, fmt, _PARQUET_BATCH_ROWS, None):
        for numbered in _records_of(unit):
            count += 1
            yield numbered
        if progress is not None:
            progress(unit.nbytes)
    if count == 0:
        raise InputError(_no_records_message(path, fmt))


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
    job = _Job(_fields(text_fields), min_chars, None, True)
    for hashes, _ in _iter_hashed(paths, job, chunk_size, workers, file_digests, progress):
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
    job = _Job(_fields(text_fields), min_chars, fingerprint, keep_texts)
    for hashes, fingerprints in _iter_hashed(
        paths, job, chunk_size, workers, file_digests, progress
    ):
        assert fingerprints is not None
        yield hashes, fingerprints


# Fingerprints of a block of records: every blob end to end, and the end offset of each.
FingerprintBlobs = Callable[[Sequence[Sequence[str]]], tuple[bytes, npt.NDArray[np.int64]]]


@dataclass(frozen=True)
class RecordColumns:
    """Consecutive records of one file as flat buffers, with their Merkle leaf hashes.

    The bulk form of `iter_fingerprinted_record_hashes`: a few buffers per block of input instead of
    objects per record, so the caller's process (which must keep up with every worker) only builds
    roots and Arrow columns. Record `i` has the 32-byte `digests[32*i:32*i+32]`, `segment_counts[i]`
    sorted 32-byte segment hashes in `segments`, and fingerprint blob
    `fingerprints[fingerprint_ends[i-1]:fingerprint_ends[i]]`.
    """

    count: int
    digests: bytes
    leaf_hashes: bytes
    """RFC 6962 leaf hash of each record leaf (`RecordHash.leaf`), 32 bytes per record."""
    segment_counts: npt.NDArray[np.int64]
    segments: bytes
    fingerprints: bytes
    fingerprint_ends: npt.NDArray[np.int64]
    fingerprint_hashes: bytes
    """RFC 6962 leaf hash of each fingerprint blob, 32 bytes per record."""


def iter_record_columns(
    paths: Sequence[Path],
    fingerprint_blobs: FingerprintBlobs,
    text_fields: Sequence[str] | None = None,
    min_chars: int = 32,
    workers: int | None = None,
    *,
    file_digests: dict[Path, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[RecordColumns]:
    """As `iter_fingerprinted_record_hashes`, as `RecordColumns` of one input block each, in order.

    The same records, digests, segments and fingerprints, the same errors, and the same pool,
    `file_digests` and `progress` rules; a block never spans two files and is never empty.
    `fingerprint_blobs` gives a block's fingerprints laid end to end with their end offsets (as
    `ledger.spec.fingerprint.fingerprint_record_blobs` does), so no object per record is made.
    """
    job = _Job(_fields(text_fields), min_chars, None, False, fingerprint_blobs)
    count = 0
    done = _iter_done(paths, job, workers, file_digests, _columns_of, _work_columns, _same)
    for item, columns in done:
        if isinstance(item, _FileEnd):
            if count == 0:
                raise InputError(_no_records_message(item.path, item.fmt))
            count = 0
            continue
        if progress is not None:
            progress(item.nbytes)
        assert columns is not None
        count += columns.count
        if columns.count:
            yield columns


@dataclass(frozen=True)
class _Job:
    """What every unit is hashed with; sent to each worker once."""

    text_fields: tuple[str, ...] | None
    min_chars: int
    fingerprint: Callable[[Sequence[Sequence[str]]], list[bytes]] | None
    keep_texts: bool
    fingerprint_blobs: FingerprintBlobs | None = None
    """For `iter_record_columns`: every record's blob end to end, and the end offset of each."""


# One unit's result: its hashes, and the fingerprints if the job asks for them.
_Result = tuple[list[RecordHash], list[bytes] | None]
_U = TypeVar("_U")  # a unit, or where to find one
_R = TypeVar("_R")  # what a unit is processed into
_H = TypeVar("_H")  # a unit's hashes, as objects or as columns
_W = TypeVar("_W")  # the same as it travels back from a worker


def _fields(text_fields: Sequence[str] | None) -> tuple[str, ...] | None:
    """Text fields as an immutable tuple (also catches a bare string passed by mistake)."""
    if isinstance(text_fields, str):
        raise UsageError(
            f"text fields must be a list of dotted paths, found the string {text_fields!r}"
        )
    return tuple(text_fields) if text_fields is not None else None


def _iter_hashed(
    paths: Sequence[Path],
    job: _Job,
    chunk_size: int,
    workers: int | None,
    file_digests: dict[Path, str] | None,
    progress: Callable[[int], None] | None,
) -> Iterator[_Result]:
    """Check options and inputs up front, then hash inline or in a pool and regroup into chunks."""
    if chunk_size < 1:
        raise UsageError(f"chunk size must be at least 1, found {chunk_size}")
    done = _iter_done(paths, job, workers, file_digests, _process, _work, _unwire)
    yield from _rechunk(done, chunk_size, progress)


def _iter_done(
    paths: Sequence[Path],
    job: _Job,
    workers: int | None,
    file_digests: dict[Path, str] | None,
    process: Callable[[_Unit, _Job], _R],
    work: Callable[[_Unit | _InRing], _W],
    unwire: Callable[[_W], _R],
) -> Iterator[tuple[_Unit | _FileEnd, _R | None]]:
    """Every unit with `process(unit, job)`, in input order: inline, or in a pool as
    `unwire(work(unit))`. Options and inputs are checked before any work; each file's units are
    followed by its `_FileEnd`, paired with None.
    """
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be at least 1, found {workers}")
    plan = [(Path(p), detect_format(Path(p))) for p in paths]
    total = sum(_file_size(p) for p, _ in plan)
    wanted = workers if workers is not None else (os.cpu_count() or 1)
    if wanted <= 1 or total < _POOL_MIN_BYTES:
        for item in _iter_plan(plan, file_digests):
            assert not isinstance(item, _InRing)
            yield item, None if isinstance(item, _FileEnd) else process(item, job)
    else:
        for item, wire in _pool_map(plan, file_digests, job, wanted, work):
            yield item, None if wire is None else unwire(wire)


# --- units of work ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    """A run of whole lines of one JSONL or text file, starting at line `first_line`."""

    name: str
    fmt: str
    first_line: int
    data: bytes
    at_eof: bool  # the file's last block: its last line may lack a newline
    nbytes: int  # input bytes this block accounts for, for progress


@dataclass(frozen=True)
class _Rows:
    """A run of Parquet rows of one file, starting at row `first_row`."""

    name: str
    first_row: int
    batch: pa.RecordBatch
    nbytes: int  # estimated share of the file's bytes, for progress


@dataclass(frozen=True)
class _FileEnd:
    """Marks the end of one input file in the stream of units, so chunks and empty checks are per file."""

    path: Path
    fmt: str


_Unit = _Block | _Rows


def _checked_format(path: Path, fmt: str | None) -> str:
    """Resolve `fmt` (None = by extension) and reject names that are not record formats."""
    if fmt is None:
        return detect_format(path)
    if fmt not in RECORD_FORMATS:
        raise UsageError(
            f"unknown record format {fmt!r}: expected one of {', '.join(RECORD_FORMATS)}"
        )
    return fmt


def _open_binary(path: Path) -> io.BufferedReader:
    """Open for reading, turning OS errors into one-line `InputError`s."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _file_size(path: Path) -> int:
    """Size in bytes; also fails fast (before earlier files are processed) on a missing input."""
    try:
        return path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _no_records_message(path: Path, fmt: str) -> str:
    """The error for an input without records; an empty batch is almost always a mistake."""
    what = "rows" if fmt == "parquet" else "records (the file is empty or holds only blank lines)"
    return f"{path}: no {what}"


def _iter_plan(
    plan: Sequence[tuple[Path, str]],
    file_digests: dict[Path, str] | None,
    ring: _BlockRing | None = None,
) -> Iterator[_Unit | _InRing | _FileEnd]:
    """Units of every file in order, each file followed by its `_FileEnd`; blocks of plain text
    files are read straight into `ring`, if given."""
    for path, fmt in plan:
        sha = hashlib.sha256() if file_digests is not None and fmt != "parquet" else None
        if ring is not None and fmt != "parquet" and not _gzipped(path):
            yield from _iter_ring_blocks(path, fmt, sha, ring)
        else:
            yield from _iter_units(path, fmt, _PARQUET_BATCH_ROWS, sha)
        if file_digests is not None:
            file_digests[path] = sha.hexdigest() if sha is not None else file_sha256(path)
        yield _FileEnd(path, fmt)


def _iter_units(path: Path, fmt: str, batch_rows: int, sha: Any) -> Iterator[_Unit]:
    """Blocks of lines (JSONL, text) or batches of rows (Parquet) of one file."""
    if fmt == "parquet":
        return _iter_row_batches(path, batch_rows)
    return _iter_blocks(path, fmt, sha)


def _iter_blocks(path: Path, fmt: str, sha: Any, block_size: int | None = None) -> Iterator[_Block]:
    """Read big binary blocks and cut them at the last newline; a line longer than a block is joined."""
    with _open_binary(path) as raw:
        source = _InputBytes(raw, sha)
        f = gzip.GzipFile(fileobj=source, mode="rb") if _gzipped(path) else source
        yield from _read_blocks(str(path), fmt, f, source, block_size or _BLOCK_SIZE)


def _read_blocks(
    name: str,
    fmt: str,
    f: Any,
    source: _InputBytes,
    block_size: int,
    line: int = 1,
    pending: list[bytes] | None = None,
    accounted: int = 0,
    first: bool = True,
) -> Iterator[_Block]:
    """`_iter_blocks` from `f` on: from line `line`, with `pending` bytes of it already read and
    `accounted` input bytes already given to earlier blocks; `first` if nothing was read yet (a
    byte order mark may start the data)."""
    pending = pending or []
    while True:
        try:
            data = f.read(block_size)
        except (OSError, EOFError, zlib.error) as exc:  # EOFError, zlib.error: broken gzip
            reason = getattr(exc, "strerror", None) or exc
            raise InputError(f"{name}:{line}: cannot read ({reason})") from exc
        if first:
            first = False
            data = data.removeprefix(_BOM)
        if not data:
            break
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            pending.append(data)
            continue
        whole = b"".join((*pending, data[:cut])) if pending else data[:cut]
        pending = [data[cut:]] if cut < len(data) else []
        yield _Block(name, fmt, line, whole, False, source.count - accounted)
        accounted = source.count
        line += _count_newlines(whole)
    if pending:
        yield _Block(name, fmt, line, b"".join(pending), True, source.count - accounted)


class _BlockRing:
    """Shared memory for the blocks in flight to forked workers: each block put there takes the
    next slot in turn, free again by then because at most `slots - 1` blocks are ever pending."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.slot_size = _ring_slot_size()
        self.memory = mmap.mmap(-1, slots * self.slot_size)
        self._used = 0

    def next_slot(self) -> int:
        """The slot the next block goes to (taken by `put` or `placed`)."""
        return self._used % self.slots

    def put(self, block: _Block) -> _InRing:
        """Copy a block into the next slot."""
        slot = self.next_slot()
        start = slot * self.slot_size
        self.memory[start : start + len(block.data)] = block.data
        self._used += 1
        return _InRing(replace(block, data=b""), slot, len(block.data))

    def placed(self, block: _Block, size: int, offset: int) -> _InRing:
        """Mark the next slot as holding `block`'s bytes, read there in place."""
        slot = self.next_slot()
        self._used += 1
        return _InRing(block, slot, size, offset)


def _iter_ring_blocks(
    path: Path, fmt: str, sha: Any, ring: _BlockRing
) -> Iterator[_Block | _InRing]:
    """`_iter_blocks` of a plain file, read straight into the ring's next slot: no block is
    allocated, sliced or copied in this process. The partial line after a block's last newline
    moves to the front of the next slot; a line too long for a slot takes `_iter_blocks`' way."""
    name = str(path)
    size = ring.slot_size
    memory = ring.memory
    with _open_binary(path) as raw:
        source = _InputBytes(raw, sha)
        line, accounted, offset = 1, 0, 0
        carry = b""
        while True:
            start = ring.next_slot() * size
            memory[start : start + len(carry)] = carry
            room = min(_BLOCK_SIZE, size - len(carry))
            target = memoryview(memory)[start + len(carry) : start + len(carry) + room]
            try:
                got = source.readinto(target)
            except OSError as exc:
                raise InputError(f"{name}:{line}: cannot read ({exc.strerror or exc})") from exc
            finally:
                target.release()
            end = start + len(carry) + got
            if accounted == 0 and source.count == got >= 3 and memory[start : start + 3] == _BOM:
                offset = len(_BOM)
            if got == 0:
                if end > start + offset:  # the last line, without its newline
                    data = memory[start + offset : end]
                    yield _Block(name, fmt, line, data, True, source.count - accounted)
                return
            cut = memory.rfind(b"\n", start + offset, end) + 1
            if cut == 0:  # no newline yet: a line longer than the room left in a slot
                head = memory[start + offset : end]
                yield from _read_blocks(
                    name, fmt, source, source, _BLOCK_SIZE, line, [head], accounted, first=False
                )
                return
            block = _Block(name, fmt, line, b"", False, source.count - accounted)
            yield ring.placed(block, cut - start - offset, offset)
            accounted = source.count
            line += _count_newlines(memory, start + offset, cut)
            carry = memory[cut:end]
            offset = 0


class _InputBytes:
    """A file's bytes as they are read, counted (for progress) and fed to its digest (the source's
    sha256); for gzip input these are the compressed bytes, so the file is read once."""

    mode = "rb"

    def __init__(self, raw: io.BufferedReader, sha: Any) -> None:
        self._raw = raw
        self._sha = sha
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if self._sha is not None:
            self._sha.update(data)
        self.count += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        got = self._raw.readinto(buffer)
        if self._sha is not None:
            self._sha.update(buffer[:got])
        self.count += got
        return got

    def seek(self, offset: int, /) -> int:
        """Never needed: records are read front to back once (gzip seeks only to rewind)."""
        raise io.UnsupportedOperation("input is read front to back once")


def _count_newlines(data: bytes | mmap.mmap, start: int = 0, end: int | None = None) -> int:
    """Lines in a block (`data[start:end]`); numpy counts a byte about four times faster than
    `bytes.count`."""
    end = len(data) if end is None else end
    codes = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
    return int(np.count_nonzero(codes == 0x0A))


def _iter_row_batches(path: Path, batch_rows: int) -> Iterator[_Rows]:
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
    size = _file_size(path)
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
                yield _Rows(
                    name, row - batch.num_rows, batch, size * (row - 1) // total_rows - before
                )
    finally:
        pf.close()


def _records_of(unit: _Unit) -> Iterable[tuple[int, object]]:
    """Numbered records of one unit (no hashing); lines stream, a Parquet batch converts at once."""
    if isinstance(unit, _Rows):
        return _rows_of(unit)
    if unit.fmt == "txt":
        return _text_lines(unit)
    return _json_records(unit)


def _hash_unit(unit: _Unit, text_fields: Sequence[str] | None, min_chars: int) -> list[RecordHash]:
    """Parse and hash one unit, all its records at once; the first bad record (in input order,
    whether it fails to parse or to hash) is an `InputError` naming its line or row."""
    return _hashed_unit(unit, text_fields, min_chars, _hash_records)


def _hash_records(
    records: Sequence[object],
    text_fields: Sequence[str] | None,
    min_chars: int,
    lines: Sequence[bytes] | None,
) -> list[RecordHash]:
    assert lines is None  # records parsed exactly
    return hash_records(records, text_fields, min_chars)


def _hash_columns(
    records: Sequence[object],
    text_fields: Sequence[str] | None,
    min_chars: int,
    lines: Sequence[bytes] | None,
) -> RecordHashColumns:
    return hash_record_columns(records, text_fields, min_chars, lines=lines)


def _hashed_unit(
    unit: _Unit,
    text_fields: Sequence[str] | None,
    min_chars: int,
    hash_all: Callable[[Sequence[object], Sequence[str] | None, int, Sequence[bytes] | None], _H],
    *,
    exact_ints: bool = True,
) -> _H:
    """`hash_all` of the unit's records, with `_hash_unit`'s rule for naming the first bad one.

    Without `exact_ints`, a JSONL block parsed in bulk skips the big-integer scan and `hash_all`
    gets its lines, to parse again the few records that need it (`hash_record_columns`).
    """
    lines: list[bytes] | None = None
    jsonl = unit if isinstance(unit, _Block) and unit.fmt == "jsonl" else None
    bulk = _bulk_json(jsonl, exact_ints) if jsonl is not None else None
    if bulk is not None:
        records, lines = bulk
        numbered: list[tuple[int, object]] | None = None  # numbered only to name a bad record
    else:
        numbered = []
        try:
            numbered.extend(_json_lines(jsonl) if jsonl is not None else _records_of(unit))
        except InputError:
            _hash_each(unit, numbered, text_fields, min_chars)  # an earlier record may fail to hash
            raise
        records = [record for _, record in numbered]
    try:
        return hash_all(records, text_fields, min_chars, None if exact_ints else lines)
    except _DATA_ERRORS:
        if numbered is None:
            assert isinstance(unit, _Block)
            numbered = list(zip(range(unit.first_line, unit.first_line + len(records)), records))
        _hash_each(unit, numbered, text_fields, min_chars)  # find the record to name
        raise


def _hash_each(
    unit: _Unit,
    numbered: Sequence[tuple[int, object]],
    text_fields: Sequence[str] | None,
    min_chars: int,
) -> None:
    """Hash records one by one, raising the first failure as an `InputError` naming its place."""
    for number, record in numbered:
        try:
            hash_record(record, text_fields, min_chars)
        except _DATA_ERRORS as exc:
            raise InputError(f"{_location(unit, number)}: {exc}") from exc


def _location(unit: _Unit, number: int) -> str:
    """`file:line` for line formats, `file: row N` for Parquet."""
    if isinstance(unit, _Rows):
        return f"{unit.name}: row {number}"
    return f"{unit.name}:{number}"


# --- JSONL and text lines ------------------------------------------------------------------------


def _split_lines(unit: _Block) -> list[bytes]:
    """The block's lines without their `\\n`."""
    lines = unit.data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def _bulk_json(unit: _Block, exact_ints: bool = True) -> tuple[list[object], list[bytes]] | None:
    """The block's records parsed at once, with its lines, when every line is a JSON object; None
    when a blank or bad line needs `_json_lines`, which skips or names it. Without `exact_ints`
    (see `parse_json_lines`), integers beyond 64 bits may come out as floats."""
    lines = _split_lines(unit)
    parsed = _json_objects(unit.data, lines, exact_ints)
    return None if parsed is None else (parsed, lines)


def _json_objects(
    data: bytes, lines: Sequence[bytes | memoryview], exact_ints: bool
) -> list[object] | None:
    """`parse_json_lines`, or None unless every line parses to a JSON object."""
    try:
        parsed = parse_json_lines(data, lines, exact_ints=exact_ints)
    except _DATA_ERRORS:
        return None
    return parsed if all(type(record) is dict for record in parsed) else None


def _json_records(unit: _Block) -> Iterable[tuple[int, object]]:
    """The block's numbered records: parsed in bulk when every line is a JSON object, else line by
    line (`_json_lines`)."""
    bulk = _bulk_json(unit)
    if bulk is None:
        return _json_lines(unit)
    records = bulk[0]
    return zip(range(unit.first_line, unit.first_line + len(records)), records, strict=True)


def _json_lines(unit: _Block) -> Iterator[tuple[int, object]]:
    """Each non-blank line parsed as a JSON object (exact big integers, via `ledger.hashing`)."""
    lines = _split_lines(unit)
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if not line or line.isspace():
            continue
        number = unit.first_line + i
        yield number, _parse_object_line(unit.name, number, line, unit.at_eof and i == last)


def _parse_object_line(
    name: str, number: int, line: bytes, unterminated: bool = False
) -> dict[str, Any]:
    """One JSONL line as a JSON object, or an `InputError` naming `name:number` and what is wrong."""
    try:
        record = parse_json_line(line)
    except _DATA_ERRORS as exc:
        raise InputError(f"{name}:{number}: {_unparsable(line, exc, unterminated)}") from exc
    if not isinstance(record, dict):
        hint = ""
        if number == 1 and name.lower().endswith(".json"):
            hint = " (a .json input is read as JSON Lines: one object per line)"
        raise InputError(f"{name}:{number}: not a JSON object (found {_json_kind(record)}){hint}")
    return record


def _unparsable(line: bytes, exc: BaseException, unterminated: bool) -> str:
    """Say why a line did not parse: bad UTF-8 first (the likelier root cause), else the JSON error."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"invalid UTF-8 at byte {bad.start + 1} of the line"
    detail = str(exc).replace("line 1 column", "column") or type(exc).__name__
    why = f"invalid JSON ({detail})"
    if unterminated:
        why += "; the last line has no newline: is the file truncated?"
    return why


def _json_kind(value: object) -> str:
    """JSON's name for the type of a parsed value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return type(value).__name__


def _text_lines(unit: _Block) -> Iterator[tuple[int, object]]:
    """Each non-empty line as a `str` without its `\\n` or `\\r\\n`."""
    for i, line in enumerate(_split_lines(unit)):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{unit.name}:{unit.first_line + i}: invalid UTF-8 at byte {exc.start + 1} of the line"
            ) from exc
        yield unit.first_line + i, text


# --- Parquet rows ----------------------------------------------------------------------------------


class _NoJsonForm(Exception):
    """A Parquet value that has no JSON form; `path` is the field path inside the column."""

    def __init__(self, message: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


_Convert = Callable[[Any], object]
_EPOCH: Final = dt.datetime(1970, 1, 1)
_EPOCH_DATE: Final = dt.date(1970, 1, 1)
_PER_SECOND: Final = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_DIGITS: Final = {"s": 0, "ms": 3, "us": 6, "ns": 9}


def _rows_of(unit: _Rows) -> list[tuple[int, object]]:
    """Turn a record batch into numbered row objects, converting column by column (fast path)."""
    batch = unit.batch
    names = batch.schema.names
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(
            f"{unit.name}: column {dup!r} appears twice; a row cannot be a JSON object"
        )
    if not names:
        return [(unit.first_row + i, {}) for i in range(batch.num_rows)]
    columns = [_column_values(unit, name, col) for name, col in zip(names, batch.columns)]
    first = unit.first_row
    return [(first + i, dict(zip(names, values))) for i, values in enumerate(zip(*columns))]


def _column_values(unit: _Rows, name: str, column: pa.Array) -> list[object]:
    """One column's values as JSON values; temporal types are read as integers to stay exact."""
    if isinstance(column, pa.ExtensionArray):
        column = column.storage
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    typ = column.type
    convert = _converter(typ)
    storage = _storage_type(typ)
    if storage != typ:
        column = column.cast(storage)
    try:
        values: list[object] = column.to_pylist()
    except UnicodeDecodeError as exc:  # Parquet does not check that string data is UTF-8
        last = unit.first_row + len(column) - 1
        raise InputError(
            f"{unit.name}: rows {unit.first_row}..{last}, column {name!r}: text is not valid UTF-8 ({exc.reason})"
        ) from None
    if convert is None:
        return values
    out: list[object] = []
    append = out.append
    for i, value in enumerate(values):
        if value is None:
            append(None)
            continue
        try:
            append(convert(value))
        except _NoJsonForm as exc:
            where = ".".join((name, *exc.path))
            raise InputError(
                f"{unit.name}: row {unit.first_row + i}, column {where!r}: {exc}"
            ) from None
    return out


def _storage_type(typ: pa.DataType) -> pa.DataType:
    """The type to cast to before `to_pylist`: temporal values as integers, containers recursively."""
    if pa.types.is_dictionary(typ):
        return _storage_type(typ.value_type)
    if pa.types.is_timestamp(typ) or pa.types.is_time64(typ) or pa.types.is_date64(typ):
        return pa.int64()
    if pa.types.is_duration(typ):
        return pa.int64()
    if pa.types.is_date32(typ) or pa.types.is_time32(typ):
        return pa.int32()
    if pa.types.is_list(typ):
        return pa.list_(_storage_type(typ.value_type))
    if pa.types.is_large_list(typ):
        return pa.large_list(_storage_type(typ.value_type))
    if pa.types.is_fixed_size_list(typ):
        return pa.list_(_storage_type(typ.value_type), typ.list_size)
    if pa.types.is_map(typ):
        return pa.map_(_storage_type(typ.key_type), _storage_type(typ.item_type))
    if pa.types.is_struct(typ):
        return pa.struct([pa.field(f.name, _storage_type(f.type), f.nullable) for f in typ])
    return typ


def _converter(typ: pa.DataType) -> _Convert | None:
    """How to turn a non-null storage value of `typ` into a JSON value; None when it already is one."""
    t = pa.types
    if t.is_dictionary(typ):
        return _converter(typ.value_type)
    if (
        t.is_null(typ)
        or t.is_boolean(typ)
        or t.is_integer(typ)
        or t.is_float64(typ)
        or t.is_string(typ)
        or t.is_large_string(typ)
        or getattr(t, "is_string_view", lambda _: False)(typ)
    ):
        return None
    if t.is_float32(typ):
        return _float32_value
    if t.is_float16(typ):
        return _float16_value
    if t.is_timestamp(typ):
        return _timestamp_converter(typ.unit)
    if t.is_date32(typ):
        return _date32_text
    if t.is_date64(typ):
        return _date64_text
    if t.is_time32(typ) or t.is_time64(typ):
        return _time_converter(typ.unit)
    if t.is_decimal(typ):
        return _integer_decimal if typ.scale <= 0 else _double_decimal
    if t.is_list(typ) or t.is_large_list(typ) or t.is_fixed_size_list(typ):
        return _list_converter(_converter(typ.value_type))
    if t.is_map(typ):
        return _map_converter(_converter(typ.key_type), _converter(typ.item_type))
    if t.is_struct(typ):
        return _struct_converter([(f.name, _converter(f.type)) for f in typ])
    return _refuser(typ)


def _refuser(typ: pa.DataType) -> _Convert:
    """A converter for a type with no JSON form (binary, duration, union, ...): any non-null value fails."""
    kind = "binary" if "binary" in str(typ) else str(typ)

    def refuse(_value: object) -> object:
        raise _NoJsonForm(f"{kind} values have no JSON form")

    return refuse


def _float32_value(value: float) -> float:
    """The double read from float32's shortest decimal form: `0.1f` becomes `0.1`, not 0.10000000149."""
    return float(str(np.float32(value)))


def _float16_value(value: float) -> float:
    """As `_float32_value`, for half precision."""
    return float(str(np.float16(value)))


def _timestamp_converter(unit: str) -> _Convert:
    """RFC 3339 in UTC from integer ticks since the epoch (exact for nanoseconds, unlike datetime)."""
    per_second, digits = _PER_SECOND[unit], _DIGITS[unit]

    def convert(ticks: int) -> str:
        seconds, fraction = divmod(ticks, per_second)
        try:
            t = _EPOCH + dt.timedelta(seconds=seconds)
        except OverflowError:
            raise _NoJsonForm(f"timestamp {ticks} {unit} is outside years 1 to 9999") from None
        text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        if fraction:
            text += "." + f"{fraction:0{digits}d}".rstrip("0")
        return text + "Z"

    return convert


def _time_converter(unit: str) -> _Convert:
    """RFC 3339 partial-time `HH:MM:SS[.fff]` from integer ticks since midnight."""
    per_second, digits = _PER_SECOND[unit], _DIGITS[unit]

    def convert(ticks: int) -> str:
        seconds, fraction = divmod(ticks, per_second)
        minutes, second = divmod(seconds, 60)
        hour, minute = divmod(minutes, 60)
        text = f"{hour:02d}:{minute:02d}:{second:02d}"
        if fraction:
            text += "." + f"{fraction:0{digits}d}".rstrip("0")
        return text

    return convert


def _date32_text(days: int) -> str:
    """RFC 3339 full-date from days since the epoch."""
    try:
        return (_EPOCH_DATE + dt.timedelta(days=days)).isoformat()
    except OverflowError:
        raise _NoJsonForm(f"date {days} days from 1970-01-01 is outside years 1 to 9999") from None


def _date64_text(millis: int) -> str:
    """RFC 3339 full-date from milliseconds since the epoch."""
    return _date32_text(millis // 86_400_000)


def _integer_decimal(value: decimal.Decimal) -> int:
    """A scale-0 decimal is an integer: written exactly, like a big JSONL integer."""
    return int(value)


def _double_decimal(value: decimal.Decimal) -> float:
    """A decimal with a fraction becomes a double only when that double reads back as the same number."""
    number = float(value)
    if not np.isfinite(number) or decimal.Decimal(repr(number)) != value:
        raise _NoJsonForm(f"decimal {value} has no exact double (JSON number) form")
    return number


def _list_converter(item: _Convert | None) -> _Convert | None:
    """Convert list items; None when the items need nothing."""
    if item is None:
        return None

    def convert(values: list[object]) -> list[object]:
        out: list[object] = []
        for i, v in enumerate(values):
            try:
                out.append(None if v is None else item(v))
            except _NoJsonForm as exc:
                raise _NoJsonForm(str(exc), (f"[{i}]", *exc.path)) from None
        return out

    return convert


def _struct_converter(fields: list[tuple[str, _Convert | None]]) -> _Convert | None:
    """Convert the fields of a struct that need it; None when none do."""
    active = [(name, conv) for name, conv in fields if conv is not None]
    if not active:
        return None

    def convert(value: dict[str, object]) -> dict[str, object]:
        out = dict(value)
        for name, conv in active:
            v = out.get(name)
            if v is not None:
                try:
                    out[name] = conv(v)
                except _NoJsonForm as exc:
                    raise _NoJsonForm(str(exc), (name, *exc.path)) from None
        return out

    return convert


def _map_converter(key: _Convert | None, item: _Convert | None) -> _Convert:
    """A map becomes a JSON object: keys must be distinct strings."""

    def convert(pairs: list[tuple[object, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for k, v in pairs:
            k = key(k) if key is not None else k
            if not isinstance(k, str):
                raise _NoJsonForm(
                    f"map key {k!r} is not a string, so the map has no JSON object form"
                )
            if k in out:
                raise _NoJsonForm(f"map key {k!r} appears twice")
            try:
                out[k] = v if v is None or item is None else item(v)
            except _NoJsonForm as exc:
                raise _NoJsonForm(str(exc), (k, *exc.path)) from None
        return out

    return convert


# --- the worker pool -------------------------------------------------------------------------------

_worker_job = _Job(None, 32, None, True)
_worker_ring: mmap.mmap | None = None
_worker_results: mmap.mmap | None = None


def _init_worker(job: _Job, ring: mmap.mmap | None, results: mmap.mmap | None = None) -> None:
    """Receive the job (and the shared block ring, if any) once per worker instead of once per task."""
    global _worker_job, _worker_ring, _worker_results
    # A forked worker inherits the caller's whole heap; frozen, the collector no longer walks it
    # (nor touches, and so copies, its pages). A unit's records are acyclic and freed by reference
    # counting, so automatic collection (~10% of a worker's time) is off and `_collected` runs a
    # cheap young-generation pass after each unit instead.
    gc.freeze()
    gc.disable()
    _keep_freed_memory()
    _worker_job = job
    _worker_ring = ring
    _worker_results = results


# glibc's mallopt parameters: allocations below the first come from the heap rather than fresh
# mmap()s, and up to the second of freed heap is kept instead of being returned to the system.
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_WORKER_MMAP_THRESHOLD: Final = 32 << 20
_WORKER_TRIM_THRESHOLD: Final = 256 << 20


def _keep_freed_memory() -> None:
    """Let a worker reuse the memory of its last block for the next one (glibc only).

    Every block allocates the same few large buffers (its bytes, line lists, numpy temporaries);
    by default glibc maps each afresh and unmaps it when freed, so every block paid again for
    zeroed pages: ~7% of a worker's time. Elsewhere (musl, macOS) this does nothing.
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


@dataclass(frozen=True)
class _InRing:
    """A block whose bytes wait in slot `slot` of the shared ring (from `offset`) rather than in
    the task itself."""

    block: _Block
    slot: int
    size: int
    offset: int = 0


def _unpack(task: _Unit | _InRing) -> _Unit:
    """The unit a task names, its bytes copied out of the shared ring if they travelled there."""
    if not isinstance(task, _InRing):
        return task
    assert _worker_ring is not None
    start = task.slot * _ring_slot_size() + task.offset
    return replace(task.block, data=_worker_ring[start : start + task.size])


# Room for a block's columns in the shared result ring: ~1.5 MB for 4 MB of chat records; a block
# of tiny records may need more, and its columns then travel pickled through the pool's pipe.
_RESULT_SLOT_SIZE: Final = 8 << 20


@dataclass(frozen=True)
class _InResults:
    """A block's `RecordColumns` laid end to end in slot `slot` of the shared result ring."""

    slot: int
    count: int
    sizes: tuple[int, ...]  # of the buffers, in `_COLUMN_BUFFERS` order


_COLUMN_BUFFERS: Final = (
    "digests",
    "leaf_hashes",
    "segment_counts",
    "segments",
    "fingerprints",
    "fingerprint_ends",
    "fingerprint_hashes",
)
_COLUMN_ARRAYS: Final = frozenset({"segment_counts", "fingerprint_ends"})  # int64 numpy arrays


def _place_columns(columns: RecordColumns, slot: int) -> _InResults | RecordColumns:
    """Copy a block's columns into its result slot, if they fit, and describe where they lie.

    Returning a few numbers instead of ~1.5 MB through the pool's pipe saves both processes
    pickling, ~25 pipe round trips per block and three copies (~5% of the CPU of recording).
    """
    assert _worker_results is not None
    parts = [getattr(columns, name) for name in _COLUMN_BUFFERS]
    parts = [p.astype(np.int64).tobytes() if isinstance(p, np.ndarray) else p for p in parts]
    sizes = tuple(map(len, parts))
    if sum(sizes) > _RESULT_SLOT_SIZE:
        return columns
    at = slot * _RESULT_SLOT_SIZE
    for part, size in zip(parts, sizes, strict=True):
        _worker_results[at : at + size] = part
        at += size
    return _InResults(slot, columns.count, sizes)


def _columns_from(results: mmap.mmap, placed: _InResults) -> RecordColumns:
    """The `RecordColumns` a worker placed in the result ring, copied out before the slot is reused."""
    at = placed.slot * _RESULT_SLOT_SIZE
    values: dict[str, object] = {}
    for name, size in zip(_COLUMN_BUFFERS, placed.sizes, strict=True):
        data = results[at : at + size]
        values[name] = np.frombuffer(data, dtype=np.int64) if name in _COLUMN_ARRAYS else data
        at += size
    return RecordColumns(count=placed.count, **values)  # type: ignore[arg-type]


def _ring_slot_size() -> int:
    """Room for a block: a read plus the partial line carried over from the previous one."""
    return _BLOCK_SIZE + (_BLOCK_SIZE >> 2)


def _process(unit: _Unit, job: _Job) -> _Result:
    """Hash one unit, then fingerprint its records' texts and drop the texts if the job says so."""
    hashes = _hash_unit(unit, job.text_fields, job.min_chars)
    fingerprints = None
    if job.fingerprint is not None:
        fingerprints = job.fingerprint([h.texts for h in hashes])
        if len(fingerprints) != len(hashes):
            raise ValueError(
                f"fingerprint gave {len(fingerprints)} values for {len(hashes)} records"
            )
    if not job.keep_texts:
        hashes = [RecordHash(h.digest, h.segments, ()) for h in hashes]
    return hashes, fingerprints


_Wire = tuple[list[tuple[bytes, tuple[bytes, ...], tuple[str, ...]]], list[bytes] | None]


def _work(unit: _Unit | _InRing) -> _Wire:
    """Pool task: process one unit with the job given at start-up.

    Results travel as plain tuples: pickle moves builtin containers about twice as fast as
    dataclass instances, and the caller's process is the one that must keep up with every worker.
    """
    hashes, fingerprints = _collected(_process, _unpack(unit))
    return [(h.digest, h.segments, h.texts) for h in hashes], fingerprints


def _unwire(wire: _Wire) -> _Result:
    return [RecordHash(d, s, t) for d, s, t in wire[0]], wire[1]


def _columns_of(unit: _Unit, job: _Job) -> RecordColumns:
    """Hash and fingerprint one unit into flat buffers, with the leaf hashes of both trees."""
    hashed = _hashed_unit(unit, job.text_fields, job.min_chars, _hash_columns, exact_ints=False)
    return _fingerprinted(hashed, job)


def _ring_columns(task: _InRing, job: _Job) -> RecordColumns:
    """`_columns_of` a JSONL block in the worker's ring, its lines parsed where they lie: no copy
    of the block, no `bytes` per line. Any bad line or record sends the block the usual way, which
    names it."""
    assert _worker_ring is not None
    start = task.slot * _ring_slot_size() + task.offset
    codes = np.frombuffer(_worker_ring, dtype=np.uint8, count=task.size, offset=start)
    ends = np.flatnonzero(codes == 0x0A)
    bounds = (ends + start).tolist()
    if not bounds or bounds[-1] != start + task.size - 1:
        bounds.append(start + task.size)  # a last line without its newline
    view = memoryview(_worker_ring)
    try:
        firsts = [start, *[end + 1 for end in bounds[:-1]]]
        lines = list(map(view.__getitem__, map(slice, firsts, bounds)))
        records = _json_objects(b"", lines, exact_ints=False)  # only the exact scan reads data
        hashed = None
        if records is not None:
            hashed = hash_record_columns(records, job.text_fields, job.min_chars, lines=lines)
    except _DATA_ERRORS:
        hashed = None
    finally:
        view.release()
    if hashed is None:  # a bad line or record: the usual path names it
        return _columns_of(_unpack(task), job)
    return _fingerprinted(hashed, job)


def _fingerprinted(hashed: RecordHashColumns, job: _Job) -> RecordColumns:
    """A unit's hashes with its records' fingerprints and the leaf hashes of both trees."""
    assert job.fingerprint_blobs is not None
    blobs, ends = job.fingerprint_blobs(hashed.texts)
    if len(ends) != hashed.count:
        raise ValueError(f"fingerprint gave {len(ends)} values for {hashed.count} records")
    view = memoryview(blobs)  # slices of a view cost no copy
    bounds = ends.tolist()
    blob_views = map(view.__getitem__, map(slice, [0, *bounds[:-1]], bounds))
    return RecordColumns(
        count=hashed.count,
        digests=hashed.digests,
        leaf_hashes=hashed.leaf_hashes,
        segment_counts=hashed.segment_counts,
        segments=hashed.segments,
        fingerprints=blobs,
        fingerprint_ends=ends,
        fingerprint_hashes=b"".join(map(leaf_hash, blob_views)),
    )


def _work_columns(unit: _Unit | _InRing) -> RecordColumns | _InResults:
    """Pool task of `iter_record_columns`: a few buffers per unit travel back, not objects, through
    the shared result ring when the unit came through the block ring."""
    if isinstance(unit, _InRing) and unit.block.fmt == "jsonl":
        columns = _collected(_ring_columns, unit)
    else:
        columns = _collected(_columns_of, _unpack(unit))
    if isinstance(unit, _InRing) and _worker_results is not None:
        return _place_columns(columns, unit.slot)
    return columns


def _collected(process: Callable[[_U, _Job], _R], unit: _U) -> _R:
    """`process(unit, job)` in a worker, then collect whatever cycles the unit left behind."""
    try:
        return process(unit, _worker_job)
    finally:
        gc.collect(1)


def _same(columns: RecordColumns | _InResults) -> RecordColumns:
    assert isinstance(columns, RecordColumns)  # `_take` copied placed columns out of the ring
    return columns


class _Done:
    """An already-finished result (a file's end), queued in order among the pool's pending ones."""

    def get(self) -> None:
        return None


def _pool_map(
    plan: Sequence[tuple[Path, str]],
    file_digests: dict[Path, str] | None,
    job: _Job,
    workers: int,
    work: Callable[[_Unit | _InRing], _W],
) -> Iterator[tuple[_Unit | _FileEnd, _W | None]]:
    """Run `work` on the units of `plan` in a process pool, yielding results in input order with
    a bounded number in flight (None for a `_FileEnd`).

    On Linux the workers are forked: unlike `spawn`/`forkserver` that needs no `if __name__ ==
    "__main__"` guard in the caller's script (those re-import it in every worker), and the workers
    touch only orjson, hashlib, numpy and pyarrow, which are fork-safe. Elsewhere the platform's
    default start method applies. Errors raised in a worker come back as the same one-line
    `InputError`.

    Forked workers also share two rings of anonymous shared memory, one slot per block in flight:
    a block is read into its slot (or copied there) instead of being pickled through a pipe
    (which cost the caller's process more than anything else it does per block), and its
    columns come back the same way.
    """
    fork = sys.platform == "linux"
    ctx = multiprocessing.get_context("fork" if fork else None)
    limit = 2 * workers + 2
    slots = limit + 1  # a block's slots are reused only after its result was taken
    ring = _BlockRing(slots) if fork else None
    results = mmap.mmap(-1, slots * _RESULT_SLOT_SIZE) if fork else None
    shared = ring.memory if ring is not None else None
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(job, shared, results))
    pending: deque[tuple[_Unit | _FileEnd, Any]] = deque()
    try:
        for item in _iter_plan(plan, file_digests, ring):
            if isinstance(item, _FileEnd):
                pending.append((item, _Done()))
            else:
                task: _Unit | _InRing = item
                unit = item.block if isinstance(item, _InRing) else item
                if (
                    ring is not None
                    and isinstance(item, _Block)
                    and len(item.data) <= ring.slot_size
                ):
                    task = ring.put(item)
                pending.append((unit, pool.apply_async(work, (task,))))
            while len(pending) > limit:
                yield _take(pending, results)
        while pending:
            yield _take(pending, results)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
        for memory in (shared, results):
            if memory is not None:
                with contextlib.suppress(BufferError):  # a view still held by a traceback
                    memory.close()


def _take(
    pending: deque[tuple[_Unit | _FileEnd, Any]], results: mmap.mmap | None
) -> tuple[_Unit | _FileEnd, Any]:
    """Wait for the oldest result (copied out of the result ring if it lies there); re-raise a
    worker's `InputError` without the remote traceback."""
    item, result = pending.popleft()
    try:
        value = result.get()
    except InputError as exc:
        raise InputError(str(exc)) from None
    if isinstance(value, _InResults):
        assert results is not None
        value = _columns_from(results, value)
    return item, value


def _rechunk(
    done: Iterable[tuple[_Unit | _FileEnd, _Result | None]],
    chunk_size: int,
    progress: Callable[[int], None] | None,
) -> Iterator[_Result]:
    """Regroup per-unit results into `chunk_size` lists per file; reject files without records."""
    hashes: list[RecordHash] = []
    prints: list[bytes] | None = None
    count = 0
    for item, result in done:
        if isinstance(item, _FileEnd):
            if count == 0:
                raise InputError(_no_records_message(item.path, item.fmt))
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
