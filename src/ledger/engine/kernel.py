"""The record-hashing kernel: Arrow in, Arrow out, engine-neutral (DESIGN.md "Engines").

`hash_batch(batch, options, form)` takes an Arrow record batch (or table) of records and returns an
Arrow table of what the recorder keeps per record: its digest, its record leaf's RFC 6962 leaf hash,
its sorted segment hashes, its near-duplicate fingerprint and that fingerprint's leaf hash
(`RECORD_SCHEMA`), byte-identical to what `ledger record batch` commits. The local worker pool runs
it on blocks of input files; an engine (Spark's `mapInArrow`, Ray's `map_batches`) can run the same
function on its own partitions. `hash_columns` is the same result as flat buffers (`RecordColumns`),
the form the local pool moves through shared memory.

The input `form` says what a row is:
- `ROWS`: the object of the row's columns (Parquet, a pyarrow table), converted as
  `ledger.engine.arrow_values` says;
- `JSON_LINES`: one column of binary or string values, each one line of JSON Lines (a trailing
  newline is ignored; blank lines are skipped, as in a file); every non-blank line must be an object;
- `TEXT_LINES`: one column of lines of text, each record the line without its `\\n` or `\\r\\n`
  (empty lines are skipped).

With `KernelOptions.tokenizer`, the token id lists of each record are decoded into texts of the
record (`ledger.engine.tokens`), in the worker, which loads the tokenizer once.

A bad record raises one `InputError` naming it by its place (`Origin`): `file:LINE` for lines,
`file: row N` for rows; the records before it in the batch are checked first, so it is the first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]

from ledger.engine.arrow_values import row_objects
from ledger.engine.json_lines import DATA_ERRORS, parse_object_line
from ledger.engine.tokens import TokenizerFile, decoder
from ledger.errors import InputError, UsageError
from ledger.spec.jcs import parse_json_lines
from ledger.spec.leaves import RecordHashColumns, hash_record, hash_record_columns
from ledger.spec.merkle import leaf_hash

__all__ = [
    "FORMS",
    "JSON_LINES",
    "RECORD_SCHEMA",
    "ROWS",
    "TEXT_LINES",
    "FingerprintBlobs",
    "KernelOptions",
    "Origin",
    "RecordColumns",
    "hash_batch",
    "hash_columns",
]

ROWS: Final = "rows"
JSON_LINES: Final = "json_lines"
TEXT_LINES: Final = "text_lines"
FORMS: Final = (ROWS, JSON_LINES, TEXT_LINES)

# Fingerprints of a block of records: every blob end to end, and the end offset of each.
FingerprintBlobs = Callable[[Sequence[Sequence[str]]], tuple[bytes, npt.NDArray[np.int64]]]

_HASH: Final = pa.binary(32)
RECORD_SCHEMA: Final = pa.schema(
    [
        pa.field("digest", _HASH, nullable=False),
        pa.field("leaf_hash", _HASH, nullable=False),
        pa.field("segments", pa.list_(_HASH), nullable=False),
        pa.field("fingerprint", pa.binary()),
        pa.field("fingerprint_hash", _HASH),
    ]
)
"""`hash_batch`'s output, one row per record in input order (fingerprints null without any)."""


@dataclass(frozen=True)
class KernelOptions:
    """How a batch's records are hashed: the batch's recording options, sent to each worker once.

    `fingerprint_blobs` gives a block's fingerprints laid end to end with their end offsets (as
    `ledger.spec.fingerprint.fingerprint_record_blobs` does); it must give each record the same
    value however records are grouped, and be picklable to run in another process. `keep_texts`
    keeps each record's normalized segment texts (`RecordColumns.texts`; they never leave a worker
    otherwise). `tokenizer` decodes the token ids under its field into texts of each record.
    """

    text_fields: tuple[str, ...] | None = None
    min_chars: int = 32
    fingerprint_blobs: FingerprintBlobs | None = None
    keep_texts: bool = False
    tokenizer: TokenizerFile | None = None

    def __post_init__(self) -> None:
        fields = self.text_fields
        if isinstance(fields, str):  # a bare string passed by mistake
            raise UsageError(
                f"text fields must be a list of dotted paths, found the string {fields!r}"
            )
        if fields is not None and not isinstance(fields, tuple):
            object.__setattr__(self, "text_fields", tuple(fields))


@dataclass(frozen=True)
class Origin:
    """Where a batch's records come from, to name a bad one: `name:LINE` or `name: row N`."""

    name: str = "<records>"
    first: int = 1
    """The 1-based line (or row) number of the batch's first row."""
    rows: bool = False
    """Numbered as rows (`name: row N`, Parquet) rather than as lines (`name:N`)."""
    at_eof: bool = False
    """The batch ends its input, whose last line may lack a newline (a hint for a bad last line)."""

    def where(self, number: int) -> str:
        return f"{self.name}: row {number}" if self.rows else f"{self.name}:{number}"


@dataclass(frozen=True)
class RecordColumns:
    """Consecutive records as flat buffers, with their Merkle leaf hashes (`hash_columns`).

    A few buffers per block of input instead of objects per record, so the caller's process (which
    must keep up with every worker) only builds roots and Arrow columns. Record `i` has the 32-byte
    `digests[32*i:32*i+32]`, `segment_counts[i]` sorted 32-byte segment hashes in `segments`, and
    fingerprint blob `fingerprints[fingerprint_ends[i-1]:fingerprint_ends[i]]`.
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
    """RFC 6962 leaf hash of each fingerprint blob, 32 bytes per record (empty without any)."""
    texts: list[list[str]] | None = None
    """With `KernelOptions.keep_texts`, each record's normalized segment texts, in segment order."""
    token_records: int = 0
    """With `KernelOptions.tokenizer`, how many records hold a value under the token field."""

    def to_arrow(self) -> pa.Table:
        """These records as a `RECORD_SCHEMA` table, the hash columns sharing these buffers."""
        n = self.count
        n_segments = len(self.segments) // 32
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(self.segment_counts, out=offsets[1:])
        segments = pa.ListArray.from_arrays(pa.array(offsets), _fixed(self.segments, n_segments))
        if len(self.fingerprint_hashes) == 32 * n:
            ends = np.zeros(n + 1, dtype=np.int32)
            ends[1:] = self.fingerprint_ends
            buffers = [None, pa.py_buffer(ends), pa.py_buffer(self.fingerprints)]
            fingerprints = pa.Array.from_buffers(pa.binary(), n, buffers)
            fingerprint_hashes = _fixed(self.fingerprint_hashes, n)
        else:
            fingerprints = pa.nulls(n, pa.binary())
            fingerprint_hashes = pa.nulls(n, _HASH)
        columns = [_fixed(self.digests, n), _fixed(self.leaf_hashes, n), segments]
        return pa.Table.from_arrays(
            [*columns, fingerprints, fingerprint_hashes], schema=RECORD_SCHEMA
        )

    def buffers(self) -> list[bytes]:
        """The columns as plain byte strings, in `from_buffers` order (texts are not included)."""
        return [
            self.digests,
            self.leaf_hashes,
            self.segment_counts.astype(np.int64).tobytes(),
            self.segments,
            self.fingerprints,
            self.fingerprint_ends.astype(np.int64).tobytes(),
            self.fingerprint_hashes,
            self.token_records.to_bytes(8, "little"),
        ]

    @classmethod
    def from_buffers(cls, count: int, parts: Sequence[bytes]) -> RecordColumns:
        """The `RecordColumns` of `count` records whose `buffers()` are `parts`."""
        digests, leaves, counts, segments, prints, ends, print_hashes, tokens = parts
        return cls(
            count,
            digests,
            leaves,
            np.frombuffer(counts, dtype=np.int64),
            segments,
            prints,
            np.frombuffer(ends, dtype=np.int64),
            print_hashes,
            token_records=int.from_bytes(tokens, "little"),
        )


def _fixed(data: bytes, n: int) -> pa.Array:
    return pa.Array.from_buffers(_HASH, n, [None, pa.py_buffer(data)])


def hash_batch(
    batch: pa.RecordBatch | pa.Table,
    options: KernelOptions,
    form: str = ROWS,
    origin: Origin | None = None,
) -> pa.Table:
    """The `RECORD_SCHEMA` table of every record of `batch`, in order (see the module's doc)."""
    return hash_columns(batch, options, form, origin).to_arrow()


def hash_columns(
    batch: pa.RecordBatch | pa.Table | pa.Array,
    options: KernelOptions,
    form: str = ROWS,
    origin: Origin | None = None,
) -> RecordColumns:
    """`hash_batch` as flat buffers; for the line forms `batch` may also be the column itself."""
    origin = origin or Origin(rows=form == ROWS)
    hashed: tuple[RecordHashColumns, int]
    if form == ROWS:
        hashed = _hash_rows(_record_batch(batch), options, origin)
    elif form in (JSON_LINES, TEXT_LINES):
        views = line_views(_line_column(batch))
        if form == JSON_LINES:
            hashed = _hash_json_lines(views, options, origin)
        else:
            hashed = _hash_numbered(list(_text_lines(views, origin)), options, origin)
    else:
        raise UsageError(f"unknown kernel input form {form!r}: expected one of {', '.join(FORMS)}")
    return _fingerprinted(*hashed, options)


def line_views(column: pa.Array) -> list[memoryview]:
    """Each value of a binary or string column as a view of its bytes, a trailing `\\n` left out
    (no copy: the views share the column's buffer). A null is an empty (blank) line."""
    if not (
        pa.types.is_binary(column.type)
        or pa.types.is_large_binary(column.type)
        or pa.types.is_string(column.type)
        or pa.types.is_large_string(column.type)
    ):
        raise UsageError(f"expected a column of lines (binary or string), found {column.type}")
    n = len(column)
    if n == 0:
        return []
    _, offsets_buffer, data_buffer = column.buffers()
    large = pa.types.is_large_binary(column.type) or pa.types.is_large_string(column.type)
    raw = np.frombuffer(offsets_buffer, dtype=np.int64 if large else np.int32)
    offsets = raw[column.offset : column.offset + n + 1].astype(np.int64)
    data = memoryview(data_buffer) if data_buffer is not None else memoryview(b"")
    starts = offsets[:-1]
    ends = offsets[1:].copy()
    if len(data):
        filled = ends > starts
        codes = np.frombuffer(data, dtype=np.uint8)
        ends[filled] -= codes[ends[filled] - 1] == 0x0A
    if column.null_count:
        valid = np.asarray(column.is_valid())
        ends[~valid] = starts[~valid]
    return list(map(data.__getitem__, map(slice, starts.tolist(), ends.tolist())))


def _line_column(batch: pa.RecordBatch | pa.Table | pa.Array) -> pa.Array:
    if isinstance(batch, (pa.RecordBatch, pa.Table)):
        if batch.num_columns != 1:
            raise UsageError(f"expected one column of lines, found {batch.num_columns} columns")
        batch = batch.column(0)
    if isinstance(batch, pa.ChunkedArray):
        batch = batch.combine_chunks()
    return batch


def _record_batch(batch: pa.RecordBatch | pa.Table | pa.Array) -> pa.RecordBatch:
    if isinstance(batch, pa.Table):
        columns = [column.combine_chunks() for column in batch.columns]
        return pa.RecordBatch.from_arrays(columns, schema=batch.schema)
    if not isinstance(batch, pa.RecordBatch):
        raise UsageError(f"expected a record batch of rows, found {type(batch).__name__}")
    return batch


def _hash_json_lines(
    lines: list[memoryview], options: KernelOptions, origin: Origin
) -> tuple[RecordHashColumns, int]:
    """JSON lines parsed at once when every line is an object (the integers beyond 64 bits then
    parsed again exactly by the hashing), else line by line, naming a bad one."""
    records = _json_objects(lines)
    if records is not None:

        def numbered() -> list[tuple[int, object]]:
            return list(zip(range(origin.first, origin.first + len(records)), records))

        extra, found = _token_texts(numbered(), options, origin) if options.tokenizer else (None, 0)
        try:
            columns = hash_record_columns(
                records, options.text_fields, options.min_chars, lines=lines, extra_texts=extra
            )
        except DATA_ERRORS:
            _hash_each(origin, numbered(), options)  # find the record to name
            raise
        return columns, found
    return _hash_numbered(_json_numbered(lines, origin), options, origin)


def _json_objects(lines: Sequence[memoryview]) -> list[object] | None:
    """`parse_json_lines` without the exact big-integer scan, or None unless every line parses to
    a JSON object (only that scan reads the block's data, so none is passed)."""
    try:
        parsed = parse_json_lines(b"", lines, exact_ints=False)
    except DATA_ERRORS:
        return None
    return parsed if all(type(record) is dict for record in parsed) else None


def _json_numbered(lines: Sequence[memoryview], origin: Origin) -> Iterator[tuple[int, object]]:
    """Each non-blank line parsed as a JSON object (exact big integers), numbered."""
    last = len(lines) - 1
    for i, view in enumerate(lines):
        line = bytes(view)
        if not line or line.isspace():
            continue
        number = origin.first + i
        yield number, parse_object_line(origin.name, number, line, origin.at_eof and i == last)


def _text_lines(lines: Sequence[memoryview], origin: Origin) -> Iterator[tuple[int, object]]:
    """Each non-empty line as a `str` without its `\\n` or `\\r\\n`."""
    for i, view in enumerate(lines):
        line = bytes(view)
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{origin.name}:{origin.first + i}: invalid UTF-8 at byte {exc.start + 1} of the line"
            ) from exc
        yield origin.first + i, text


def _hash_rows(
    batch: pa.RecordBatch, options: KernelOptions, origin: Origin
) -> tuple[RecordHashColumns, int]:
    return _hash_numbered(row_objects(batch, origin.name, origin.first), options, origin)


def _hash_numbered(
    numbered_records: Iterator[tuple[int, object]] | list[tuple[int, object]],
    options: KernelOptions,
    origin: Origin,
) -> tuple[RecordHashColumns, int]:
    """Hash numbered records, all at once; the first bad record (in input order, whether it fails
    to parse or to hash) is an `InputError` naming its line or row."""
    numbered: list[tuple[int, object]] = []
    try:
        numbered.extend(numbered_records)
    except InputError:
        _hash_each(origin, numbered, options)  # an earlier record may fail to hash
        raise
    records = [record for _, record in numbered]
    extra, found = _token_texts(numbered, options, origin)
    try:
        columns = hash_record_columns(
            records, options.text_fields, options.min_chars, extra_texts=extra
        )
    except DATA_ERRORS:
        _hash_each(origin, numbered, options)  # find the record to name
        raise
    return columns, found


def _token_texts(
    numbered: Sequence[tuple[int, object]], options: KernelOptions, origin: Origin
) -> tuple[list[list[str]] | None, int]:
    """With a tokenizer, the decoded texts of each record and how many records hold token ids;
    a bad token list is an `InputError` naming its record (after any earlier record that fails
    to hash)."""
    if options.tokenizer is None:
        return None, 0
    texts_of = decoder(options.tokenizer).texts
    out: list[list[str]] = []
    found = 0
    for i, (number, record) in enumerate(numbered):
        try:
            texts = texts_of(record)
        except (ValueError, TypeError, OverflowError) as exc:
            _hash_each(origin, numbered[:i], options)
            raise InputError(f"{origin.where(number)}: {exc}") from exc
        if texts is None:
            out.append([])
        else:
            found += 1
            out.append(texts)
    return out, found


def _hash_each(
    origin: Origin, numbered: Sequence[tuple[int, object]], options: KernelOptions
) -> None:
    """Hash records one by one, raising the first failure as an `InputError` naming its place."""
    for number, record in numbered:
        try:
            hash_record(record, options.text_fields, options.min_chars)
        except DATA_ERRORS as exc:
            raise InputError(f"{origin.where(number)}: {exc}") from exc


def _fingerprinted(
    hashed: RecordHashColumns, token_records: int, options: KernelOptions
) -> RecordColumns:
    """A unit's hashes with its records' fingerprints and the leaf hashes of both trees."""
    texts = hashed.texts if options.keep_texts else None
    if options.fingerprint_blobs is None:
        empty = np.zeros(hashed.count, dtype=np.int64)
        return RecordColumns(
            hashed.count,
            hashed.digests,
            hashed.leaf_hashes,
            hashed.segment_counts,
            hashed.segments,
            b"",
            empty,
            b"",
            texts,
            token_records,
        )
    blobs, ends = options.fingerprint_blobs(hashed.texts)
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
        texts=texts,
        token_records=token_records,
    )
