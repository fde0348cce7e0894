"""Arrow data where labs keep it: Arrow IPC / Feather files, and tables held in memory.

Files (`.arrow`, `.arrows`, `.feather`, `.ipc`): the IPC file format (Feather V2 is the same) and the
IPC stream format (what Hugging Face `datasets` writes to its cache and `save_to_disk`), told apart
by their bytes; the deprecated Feather V1 is not read. A row is the object of its columns, exactly as a Parquet row
(`ledger.engine.arrow_values`), so the same rows give the same records root in any of them.

In memory (`arrow_source`): a `pyarrow.Table`, `RecordBatch` or `RecordBatchReader`, a Hugging
Face `datasets.Dataset` (read through its Arrow table in slices, with its selection and order:
`select`, `shuffle`, `filter`), a pandas `DataFrame` (`pyarrow.Table.from_pandas`, the index left
out) and any object with `__arrow_c_stream__` (polars, DuckDB relations). pandas and `datasets`
are never imported here: such objects are known by their class's module and name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pyarrow as pa  # type: ignore[import-untyped]

from ledger.engine.arrow_values import row_objects
from ledger.errors import InputError
from ledger.ingest.reader import RingSpace, RowBatch, RowBatchReader

__all__ = ["ARROW_BATCH_ROWS", "ArrowReader", "ArrowSource", "arrow_source"]

ARROW_BATCH_ROWS: Final = 4096
_DATASET_SLICE_ROWS: Final = 65536  # rows taken from a `datasets.Dataset` at a time
_READ_ERRORS: Final = (OSError, ValueError, pa.ArrowException)


class ArrowReader(RowBatchReader):
    """Reads Arrow IPC (file or stream) and Feather files into `dict` records, batches of rows at a time."""

    format = "arrow"
    extensions = (".arrow", ".arrows", ".feather", ".ipc")
    compressible = False  # IPC buffers carry their own compression

    def units(self, path: Path, sha: Any, space: RingSpace | None) -> Iterator[RowBatch]:
        name = str(path)
        row = 1
        for batch, nbytes in _file_batches(path, sha):
            rows = max(batch.num_rows, 1)
            for start, part in _slices(batch):
                share = nbytes * (start + part.num_rows) // rows - nbytes * start // rows
                yield RowBatch(name, self.format, row, part, share)
                row += part.num_rows


def _slices(batch: pa.RecordBatch) -> Iterator[tuple[int, pa.RecordBatch]]:
    """A batch cut into runs of at most `ARROW_BATCH_ROWS` rows (views, no copy), with their starts."""
    for start in range(0, batch.num_rows, ARROW_BATCH_ROWS):
        yield start, batch.slice(start, ARROW_BATCH_ROWS)


def _file_batches(path: Path, sha: Any) -> Iterator[tuple[pa.RecordBatch, int]]:
    """The file's record batches, each with the input bytes it accounts for, memory-mapped."""
    name = str(path)
    try:
        source = pa.memory_map(name)
    except FileNotFoundError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from exc
    except _READ_ERRORS as exc:
        raise InputError(f"{name}: cannot read ({exc})") from exc
    with source:
        size: int = source.size()
        if sha is not None:  # the `source` digest is of the bytes the records are read from
            sha.update(memoryview(source.read_buffer()))
            source.seek(0)
        try:
            file_reader = pa.ipc.open_file(source)
        except _READ_ERRORS:
            file_reader = None
        if file_reader is not None:
            count = file_reader.num_record_batches
            for i in range(count):
                batch = _read(name, i, lambda i=i: file_reader.get_batch(i))
                yield batch, size * (i + 1) // count - size * i // count
            return
        source.seek(0)
        try:
            stream = pa.ipc.open_stream(source)
        except _READ_ERRORS:
            stream = None
        if stream is None:
            raise InputError(
                f"{name}: not a readable Arrow IPC file or stream (Feather V2; Feather V1 is not read)"
            )
        at = 0
        for i in range(1 << 62):
            batch = _read(name, i, stream.read_next_batch)
            if batch is None:
                return
            now = source.tell()
            yield batch, now - at
            at = now


def _read(name: str, index: int, read: Any) -> pa.RecordBatch | None:
    """One record batch (None at the end of a stream), a damaged one an `InputError`."""
    try:
        batch: pa.RecordBatch = read()
    except StopIteration:
        return None
    except _READ_ERRORS as exc:
        raise InputError(f"{name}: record batch {index + 1}: cannot read ({exc})") from exc
    return batch


# --- tables in memory ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrowSource:
    """Rows held in memory as Arrow: what `record_batch` hashes them from, as Parquet rows.

    `name` heads error messages (`pandas.DataFrame: row 3, column 'x': ...`; rows numbered from 0,
    as Python indexes them); `nbytes` estimates the data's size, to choose inline or pooled hashing.
    """

    name: str
    obj: Any
    nbytes: int

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows in order, in record batches of at most `ARROW_BATCH_ROWS` rows."""
        for batch in _batches_of(self.obj):
            for _, part in _slices(batch):
                yield part

    def records(self) -> Iterator[object]:
        """The rows as the objects they are hashed as."""
        for unit in self.units():
            for _, record in row_objects(unit.batch, self.name, unit.first_row):
                yield record

    def units(self) -> Iterator[RowBatch]:
        """The rows as the units the `arrow` reader's kernel input takes, numbered from 0."""
        row = 0
        for batch in self.batches():
            yield RowBatch(self.name, ArrowReader.format, row, batch, batch.num_rows)
            row += batch.num_rows


def _batches_of(obj: Any) -> Iterator[pa.RecordBatch]:
    if isinstance(obj, pa.RecordBatch):
        yield obj
    elif isinstance(obj, pa.Table):
        yield from obj.to_batches()
    elif isinstance(obj, pa.RecordBatchReader):
        yield from obj
    else:  # a `datasets.Dataset`: its selected rows as Arrow, a slice at a time
        arrow = obj.with_format("arrow")
        for start in range(0, len(obj), _DATASET_SLICE_ROWS):
            yield from arrow[start : start + _DATASET_SLICE_ROWS].to_batches()


def _is_class(obj: object, module: str, name: str) -> bool:
    """Whether `obj` is an instance of `module`'s class `name` (or of a subclass), without importing it."""
    return any(
        c.__name__ == name and c.__module__.split(".")[0] == module for c in type(obj).__mro__
    )


def arrow_source(obj: object) -> ArrowSource | None:
    """The Arrow rows of `obj`, or None when it is not a table (a plain iterable of records)."""
    if isinstance(obj, (pa.Table, pa.RecordBatch)):
        return ArrowSource(f"pyarrow.{type(obj).__name__}", obj, obj.nbytes)
    if isinstance(obj, pa.RecordBatchReader):
        return ArrowSource("pyarrow.RecordBatchReader", obj, 1 << 62)  # streamed: assume big
    if _is_class(obj, "datasets", "Dataset"):
        data = obj.data  # type: ignore[attr-defined]
        share = len(obj) / max(data.num_rows, 1)  # type: ignore[arg-type]
        return ArrowSource("datasets.Dataset", obj, int(data.nbytes * share))
    if _is_class(obj, "pandas", "DataFrame"):
        try:
            table = pa.Table.from_pandas(obj, preserve_index=False)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise InputError(f"pandas.DataFrame: cannot read as Arrow ({exc})") from exc
        return ArrowSource("pandas.DataFrame", table, table.nbytes)
    if hasattr(type(obj), "__arrow_c_stream__"):
        try:
            table = pa.table(obj)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise InputError(f"{type(obj).__name__}: cannot read as Arrow ({exc})") from exc
        return ArrowSource(type(obj).__name__, table, table.nbytes)
    return None
