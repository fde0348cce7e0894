"""What every record reader is: the `RecordReader` protocol, the units of input it cuts a file
into, and opening files (one-line `InputError`s, gzip, digests).

A reader turns one file of its format into units (a block of whole lines, a batch of rows), says
how a unit's records read as values (`records`) and what the kernel gets to hash them
(`kernel_input`: an Arrow column or batch, its form, and the place of its first record). The
registry of readers is `ledger.ingest.formats`: a new input format is one module with one reader,
named there.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import pyarrow as pa  # type: ignore[import-untyped]

from ledger.engine.arrow_values import row_objects
from ledger.engine.kernel import ROWS, Origin
from ledger.engine.pool import SlotRing
from ledger.errors import InputError

__all__ = [
    "BOM",
    "FileEnd",
    "LineBlock",
    "RecordReader",
    "RingSpace",
    "RowBatch",
    "RowBatchReader",
    "Unit",
    "file_sha256",
    "file_size",
    "gzipped",
    "open_binary",
]

BOM: Final = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class LineBlock:
    """A run of whole lines of one line-based file, starting at line `first_line`."""

    name: str
    fmt: str
    first_line: int
    data: bytes | memoryview
    at_eof: bool  # the file's last block: its last line may lack a newline
    nbytes: int  # input bytes this block accounts for, for progress


@dataclass(frozen=True)
class RowBatch:
    """A run of rows of one file, starting at row `first_row`."""

    name: str
    fmt: str
    first_row: int
    batch: pa.RecordBatch
    nbytes: int  # estimated share of the file's bytes, for progress


@dataclass(frozen=True)
class FileEnd:
    """Marks the end of one input file in the stream of units, so chunks and empty checks are per file."""

    path: Path
    fmt: str


Unit = LineBlock | RowBatch


class RowBatchReader:
    """What every reader of columnar files (Parquet, Arrow IPC) shares: its units are `RowBatch`es,
    whose records are the rows as values and which the kernel hashes as rows."""

    def records(self, unit: Unit) -> list[tuple[int, object]]:
        assert isinstance(unit, RowBatch)
        return row_objects(unit.batch, unit.name, unit.first_row)

    def kernel_input(self, unit: Unit) -> tuple[pa.RecordBatch, str, Origin]:
        assert isinstance(unit, RowBatch)
        return unit.batch, ROWS, Origin(unit.name, unit.first_row, rows=True)

    def no_records(self, path: Path) -> str:
        return f"{path}: no rows"


@dataclass(frozen=True)
class RingSpace:
    """Where a reader may put blocks for the worker pool: `ring`'s slot `next_slot()` is free."""

    ring: SlotRing
    next_slot: Callable[[], int]


class RecordReader(Protocol):
    """One input format."""

    @property
    def format(self) -> str:
        """The format's name (`jsonl`, `txt`, `parquet`, ...), as `record batch` reports it."""

    @property
    def extensions(self) -> tuple[str, ...]:
        """File extensions that name the format, lowercase with their dot."""

    @property
    def compressible(self) -> bool:
        """Whether a `.gz` of the format is read through gzip."""

    def units(self, path: Path, sha: Any, space: RingSpace | None) -> Iterator[Unit | Any]:
        """The file's units in order. `sha`, if given, is fed the file's bytes as they are read;
        with `space`, a reader may read blocks straight into the pool's shared ring instead
        (yielding `ledger.ingest.blocks.InRing`s)."""

    def records(self, unit: Unit) -> Iterable[tuple[int, object]]:
        """The unit's records, numbered by line or row, as JSON values (`dict`, or `str` for text)."""

    def kernel_input(self, unit: Unit) -> tuple[pa.Array | pa.RecordBatch, str, Origin]:
        """What `ledger.engine.kernel.hash_columns` hashes the unit's records from."""

    def no_records(self, path: Path) -> str:
        """The error for a file of this format without records."""


def gzipped(path: Path) -> bool:
    """Whether records are read through gzip (by the `.gz` extension, as tools name such files)."""
    return path.suffix.lower() == ".gz"


def open_binary(path: Path) -> io.BufferedReader:
    """Open for reading, turning OS errors into one-line `InputError`s."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def file_size(path: Path) -> int:
    """Size in bytes; also fails fast (before earlier files are processed) on a missing input."""
    try:
        return path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks so memory stays flat for any size."""
    with open_binary(Path(path)) as f:
        try:
            return hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
