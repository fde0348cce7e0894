"""The registry of record readers: which format a file is, and which reader reads it.

To add an input format, write a module with a `RecordReader` (`ledger.ingest.reader`) and add it to
`READERS`; detection, directories, `iter_records` and the hashing pipeline then take it up.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ledger.errors import InputError, UsageError
from ledger.ingest.arrow import ArrowReader
from ledger.ingest.jsonl import JsonlReader
from ledger.ingest.parquet import ParquetReader
from ledger.ingest.reader import RecordReader, gzipped
from ledger.ingest.saved_datasets import METADATA_FILES, saved_dataset_files
from ledger.ingest.text import TextReader

__all__ = [
    "READERS",
    "RECORD_FORMATS",
    "checked_format",
    "data_files",
    "detect_format",
    "reader_for",
]

READERS: Final[tuple[RecordReader, ...]] = (
    JsonlReader(),
    ParquetReader(),
    TextReader(),
    ArrowReader(),
)
RECORD_FORMATS: Final = tuple(reader.format for reader in READERS)

_BY_FORMAT: Final = {reader.format: reader for reader in READERS}
_EXTENSIONS: Final = {ext: reader.format for reader in READERS for ext in reader.extensions}
_COMPRESSIBLE: Final = frozenset(reader.format for reader in READERS if reader.compressible)


def reader_for(fmt: str) -> RecordReader:
    """The reader of a format named in `RECORD_FORMATS`."""
    return _BY_FORMAT[fmt]


def checked_format(path: Path, fmt: str | None) -> str:
    """Resolve `fmt` (None = by extension) and reject names that are not record formats."""
    if fmt is None:
        return detect_format(path)
    if fmt not in RECORD_FORMATS:
        raise UsageError(
            f"unknown record format {fmt!r}: expected one of {', '.join(RECORD_FORMATS)}"
        )
    return fmt


def detect_format(path: Path) -> str:
    """Name the record format of `path` from its extension, so that a typo fails before any work.

    JSON Lines and text may be gzip-compressed (`train.jsonl.gz`): the format is then named by the
    extension before `.gz`, and the records are read from the decompressed stream.
    """
    path = Path(path)
    if gzipped(path):
        inner = Path(path.stem).suffix
        fmt = _EXTENSIONS.get(inner.lower())
        if fmt is None or fmt not in _COMPRESSIBLE:
            known = ", ".join(
                f"{ext}.gz" for ext, name in _EXTENSIONS.items() if name in _COMPRESSIBLE
            )
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

    As `record checkpoint --weights` reads a directory: every file under it, recursively, sorted by
    its path relative to it compared directory by directory, each name by code point (`a/z.parquet`
    before `a-b/x.parquet` before `b.arrow`; zero-padded shard names such as `part-00001` therefore
    read in shard order), named by that relative path; but names starting with `.` or `_` are skipped at any depth (hidden
    files, and the `_SUCCESS`-style markers Spark and Hadoop write, as Arrow datasets skip them).
    Every file must have a record format's extension; a directory with no file is InputError.
    A folder written by `datasets`' `Dataset.save_to_disk` is its Arrow shards in the order its
    `state.json` lists them (`ledger.ingest.saved_datasets`); a `DatasetDict` folder is a UsageError.
    """
    out: list[tuple[str, Path]] = []
    for path in map(Path, paths):
        if not path.is_dir():
            out.append((path.name, path))
            continue
        saved = saved_dataset_files(path)
        if saved is not None:
            for file in saved:
                detect_format(file)
                out.append((file.relative_to(path).as_posix(), file))
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
            if file.name in METADATA_FILES and file.parent != path:
                raise InputError(
                    f"{file.parent}: a folder saved by Hugging Face datasets (it holds "
                    f"{file.name}) inside {path}: give that folder on its own"
                )
            detect_format(file)  # a stray file fails here, naming it, before any hashing
            out.append((file.relative_to(path).as_posix(), file))
    return out
