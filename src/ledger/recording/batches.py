"""Recording training batches: hash records (an iterable or files), then append their entries and rows.

Two rules shape everything here:

- All expensive work (parsing, hashing, fingerprinting) happens *before* the database is opened, so a
  long hash never blocks `ledger head`, `verify` or another recorder.
- Each append is one short transaction (`LogWriter.append_bodies`): references are resolved, ids checked
  and record rows bulk-inserted inside it, so a crash leaves either everything or nothing.

Record rows of a big batch wait in a `Spill` (memory while small, Parquet beyond) until the append.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]

from ledger.engine import kernel, ranges, tokens
from ledger.engine.columns import int_column
from ledger.errors import DuplicateError, InputError, UsageError
from ledger.ingest import formats, pipeline
from ledger.ingest import reader as reader_ingest
from ledger.ingest.arrow import ArrowSource, arrow_source
from ledger.log.append import LogWriter, Transaction
from ledger.log.store import recording as store_recording
from ledger.recording.refs import REF_KINDS, body_of, check_id, resolve_calls
from ledger.recording.results import BatchResult, Progress, RecordedBatch, no_progress
from ledger.recording.spill import RECORD_SCHEMA, SEGMENT_SCHEMA, Spill, SpillDir
from ledger.spec import entries, fingerprint, merkle
from ledger.spec import leaves as leaves_spec
from ledger.spec import text as text_spec

__all__ = [
    "HASH_CHUNK",
    "HashedBatches",
    "PartSummary",
    "append_batch",
    "append_hashed",
    "check_batch_options",
    "hash_batches",
    "hashed_tables",
    "kernel_fingerprints",
    "record_batch",
    "record_batches",
]

HASH_CHUNK = 8192  # records hashed and fingerprinted per step


# --- batches: hashing phase (no database) -------------------------------------------------------------


@dataclass
class _Part:
    """One batch being built: its running roots and the files its records came from."""

    records: merkle.RootBuilder = field(default_factory=merkle.RootBuilder)
    fingerprints: merkle.RootBuilder = field(default_factory=merkle.RootBuilder)
    files: list[int] = field(default_factory=list)
    without_text: int = 0  # records with no segment

    @property
    def count(self) -> int:
        return self.records.size

    def summary(self) -> PartSummary:
        return PartSummary(
            self.count,
            self.records.root().hex(),
            self.fingerprints.root().hex(),
            tuple(self.files),
            self.without_text,
        )


@dataclass(frozen=True)
class PartSummary:
    """One batch's totals as its entry states them; engines and spool readers build these too."""

    count: int
    records_root: str
    fingerprints_root: str
    files: tuple[int, ...]
    without_text: int = 0


@dataclass
class HashedBatches:
    """Everything the append transaction needs, computed before the database is opened."""

    parts: list[PartSummary]
    sources: list[dict[str, str]]
    records: pa.Table | Path
    segments: pa.Table | Path
    params: fingerprint.FingerprintParams


class _BatchHasher:
    """Cut a stream of RecordHash chunks into batches of `split` records, with roots and row spills."""

    def __init__(
        self, split: int | None, params: fingerprint.FingerprintParams, spill_dir: SpillDir
    ) -> None:
        self._split = split
        self._params = params
        self._done: list[PartSummary] = []  # finished batches keep only their roots
        self._part = _Part()
        self._total = 0
        self._records = Spill(RECORD_SCHEMA, spill_dir, "records")
        self._segments = Spill(SEGMENT_SCHEMA, spill_dir, "segments")

    @property
    def total(self) -> int:
        return self._total

    def add(
        self,
        chunk: Sequence[leaves_spec.RecordHash],
        file_index: int | None,
        fps: Sequence[bytes] | None = None,
    ) -> None:
        """Take the next records (with their fingerprint blobs if computed elsewhere)."""
        if not chunk:
            return
        if fps is None:
            fps = _fingerprint_records([r.texts for r in chunk], self._params)
        leaf_hashes = b"".join([merkle.leaf_hash(r.leaf) for r in chunk])
        fp_hashes = b"".join([merkle.leaf_hash(fp) for fp in fps])
        counts = np.fromiter((len(r.segments) for r in chunk), dtype=np.int64, count=len(chunk))
        part_of, position_of = self._feed_roots(leaf_hashes, fp_hashes, file_index, counts)
        self._records.add(
            [
                int_column(part_of),
                int_column(position_of),
                pa.array([r.digest for r in chunk], pa.binary()),
                pa.array(fps, pa.binary()),
            ]
        )
        if counts.any():
            segments = list(itertools.chain.from_iterable(r.segments for r in chunk))
            self._segments.add(
                [
                    int_column(np.repeat(part_of, counts)),
                    int_column(np.repeat(position_of, counts)),
                    pa.array(segments, pa.binary()),
                ]
            )
        self._total += len(chunk)

    def add_columns(self, columns: kernel.RecordColumns, file_index: int | None) -> None:
        """Take the next records of a file as computed by the reader: no object per record here."""
        n = columns.count
        counts = columns.segment_counts
        part_of, position_of = self._feed_roots(
            columns.leaf_hashes, columns.fingerprint_hashes, file_index, counts
        )
        fp_offsets = np.zeros(n + 1, dtype=np.int32)
        fp_offsets[1:] = columns.fingerprint_ends
        self._records.add(
            [
                int_column(part_of),
                int_column(position_of),
                _binary_array(columns.digests, np.arange(0, 32 * n + 1, 32, dtype=np.int32)),
                _binary_array(columns.fingerprints, fp_offsets),
            ]
        )
        n_segments = len(columns.segments) // 32
        if n_segments:
            self._segments.add(
                [
                    int_column(np.repeat(part_of, counts)),
                    int_column(np.repeat(position_of, counts)),
                    _binary_array(
                        columns.segments, np.arange(0, 32 * n_segments + 1, 32, dtype=np.int32)
                    ),
                ]
            )
        self._total += n

    def cut(self) -> None:
        """End the current batch here (a training step's records end); later records start a new one."""
        if self._part.count:
            self._done.append(self._part.summary())
            self._part = _Part()

    def _feed_roots(
        self,
        leaf_hashes: bytes,
        fp_hashes: bytes,
        file_index: int | None,
        segment_counts: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Extend the running roots with the records' leaf hashes (32 bytes each, end to end),
        starting a new batch every `split` records, and count the records without a segment;
        (part, position) per record."""
        bare = np.cumsum(np.concatenate([[0], np.asarray(segment_counts) == 0]))
        parts: list[npt.NDArray[np.int64]] = []
        positions: list[npt.NDArray[np.int64]] = []
        count = len(leaf_hashes) // 32
        start = 0
        while start < count:
            if self._split and self._part.count == self._split:
                self.cut()
            part = self._part
            room = (self._split - part.count) if self._split else count - start
            end = min(count, start + room)
            parts.append(np.full(end - start, len(self._done), dtype=np.int64))
            positions.append(np.arange(part.count, part.count + end - start, dtype=np.int64))
            part.records.extend_joined(leaf_hashes[32 * start : 32 * end])
            part.fingerprints.extend_joined(fp_hashes[32 * start : 32 * end])
            part.without_text += int(bare[end] - bare[start])
            if file_index is not None and file_index not in part.files:
                part.files.append(file_index)
            start = end
        return np.concatenate(parts), np.concatenate(positions)

    def finish(self, sources: list[dict[str, str]]) -> HashedBatches:
        summaries = [*self._done, self._part.summary()] if self._part.count else list(self._done)
        return HashedBatches(
            summaries, sources, self._records.finish(), self._segments.finish(), self._params
        )


def _binary_array(data: bytes, offsets: npt.NDArray[np.int32]) -> pa.Array:
    """An Arrow binary column over `data` cut at `offsets`, without an object per value."""
    return pa.Array.from_buffers(
        pa.binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _fingerprint_records(
    texts_per_record: Sequence[Sequence[str]], params: fingerprint.FingerprintParams
) -> list[bytes]:
    """Record fingerprint blobs; records without segment texts get `b""` (module level: picklable)."""
    if not any(texts_per_record):
        return [b""] * len(texts_per_record)
    return fingerprint.fingerprint_records(texts_per_record, params)


def kernel_fingerprints(
    params: fingerprint.FingerprintParams = fingerprint.DEFAULT_PARAMS,
) -> kernel.FingerprintBlobs:
    """The fingerprints every recording path gives the kernel (`KernelOptions.fingerprint_blobs`);
    picklable, so a worker process elsewhere (a DataLoader worker, a rank) hashes exactly as here."""
    return functools.partial(ranges.record_fingerprint_blobs, params=params)


def _table_columns(table: pa.Table) -> kernel.RecordColumns:
    """A kernel output table (`kernel.RECORD_SCHEMA`) back as flat buffers, for `add_columns`."""
    n = table.num_rows
    batch = table.combine_chunks()

    def fixed(name: str) -> bytes:
        column = batch.column(name).combine_chunks()
        if column.null_count:
            raise InputError(f"kernel rows: null values in column {name!r}")
        data = column.buffers()[1]
        return bytes(data)[32 * column.offset : 32 * (column.offset + n)] if n else b""

    segments = batch.column("segments").combine_chunks()
    counts = np.asarray(segments.value_lengths().fill_null(0), dtype=np.int64)
    flat = segments.flatten()
    flat_bytes = bytes(flat.buffers()[1])[32 * flat.offset : 32 * (flat.offset + len(flat))]
    prints = batch.column("fingerprint").combine_chunks()
    if prints.null_count == n:
        blobs, ends, print_hashes = b"", np.zeros(n, dtype=np.int64), b""
    else:
        values = [b"" if v is None else v for v in prints.to_pylist()]
        blobs = b"".join(values)
        ends = np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=n))
        print_hashes = fixed("fingerprint_hash")
    return kernel.RecordColumns(
        n, fixed("digest"), fixed("leaf_hash"), counts, flat_bytes, blobs, ends, print_hashes
    )


def hashed_tables(
    tables: Sequence[pa.Table],
    spill_dir: SpillDir,
    params: fingerprint.FingerprintParams = fingerprint.DEFAULT_PARAMS,
) -> HashedBatches:
    """Batches hashed elsewhere by the kernel (one `kernel.RECORD_SCHEMA` table per batch, each
    with records) as one `HashedBatches` for `append_hashed`: roots recomputed here from the rows."""
    hasher = _BatchHasher(None, params, spill_dir)
    for i, table in enumerate(tables):
        if not table.num_rows:
            raise InputError(f"batch {i}: no records")
        hasher.add_columns(_table_columns(table), None)
        hasher.cut()
    return hasher.finish([])


def _iter_record_chunks(
    records: Iterable[Mapping[str, Any] | str],
    text_fields: Sequence[str] | None,
    min_chars: int,
    tokenizer: tokens.TokenizerFile | None = None,
    seen: list[int] | None = None,
) -> Iterator[list[leaves_spec.RecordHash]]:
    """Hash an in-memory iterable in chunks; a bad record is an InputError naming its position.
    With `tokenizer`, each record's token ids are decoded into texts, counting in `seen[0]` the
    records that hold some."""
    texts_of = tokens.decoder(tokenizer).texts if tokenizer is not None else None
    it = iter(records)
    position = 0
    while True:
        items = list(itertools.islice(it, HASH_CHUNK))
        if not items:
            return
        out = []
        for item in items:
            record = item if isinstance(item, (str, dict)) else _as_record(item, position)
            try:
                extra = texts_of(record) if texts_of is not None else None
                if extra is not None and seen is not None:
                    seen[0] += 1
                out.append(leaves_spec.hash_record(record, text_fields, min_chars, extra or ()))
            except InputError as exc:
                raise InputError(f"record {position}: {exc}") from exc
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:
                raise InputError(f"record {position}: cannot hash: {exc}") from exc
            position += 1
        yield out


def _as_record(item: object, position: int) -> object:
    if isinstance(item, Mapping):
        return dict(item)
    raise InputError(f"record {position}: expected a mapping or a str, found {type(item).__name__}")


def hash_batches(
    *,
    records: Iterable[Mapping[str, Any] | str] | ArrowSource | None,
    files: Sequence[Path],
    split: int | None,
    text_fields: Sequence[str] | None,
    min_segment_chars: int,
    spill_dir: SpillDir,
    progress: Progress,
    params: fingerprint.FingerprintParams = fingerprint.DEFAULT_PARAMS,
    names: Sequence[str] | None = None,
    tokenizer: tokens.TokenizerFile | None = None,
) -> HashedBatches:
    """The hashing phase of `record_batch`: roots, fingerprints and spilled rows, no database access.

    Progress advances in records for an iterable or a table and in input bytes for files. `names` are
    what the batch's `source` calls the files (default: their file names). With `tokenizer`, every
    input (the records, each file) must hold token ids under its field in some record.
    """
    hasher = _BatchHasher(split, params, spill_dir)
    sources: list[dict[str, str]] = []
    blobs = functools.partial(ranges.record_fingerprint_blobs, params=params)
    if isinstance(records, ArrowSource):  # hashed from Arrow, exactly as Parquet rows
        token_records = 0
        for columns in pipeline.iter_arrow_columns(
            records, blobs, text_fields, min_segment_chars, progress=progress, tokenizer=tokenizer
        ):
            hasher.add_columns(columns, None)
            token_records += columns.token_records
        if tokenizer is not None and not token_records:
            raise InputError(_no_tokens("the table", tokenizer, hasher.total))
    elif records is not None:
        seen = [0]
        for chunk in _iter_record_chunks(records, text_fields, min_segment_chars, tokenizer, seen):
            hasher.add(chunk, None)
            progress(len(chunk))
        if tokenizer is not None and not seen[0]:
            raise InputError(_no_tokens("the records", tokenizer, hasher.total))
    for file_index, path in enumerate(files):
        digests: dict[Path, str] = {}
        before, token_records = hasher.total, 0
        # Fingerprints and leaf hashes cost more CPU than the rest: the reader's workers compute them.
        for columns in pipeline.iter_record_columns(
            [path],
            blobs,
            text_fields,
            min_segment_chars,
            file_digests=digests,
            progress=progress,
            tokenizer=tokenizer,
        ):
            hasher.add_columns(columns, file_index)
            token_records += columns.token_records
        if tokenizer is not None and not token_records:
            raise InputError(_no_tokens(str(path), tokenizer, hasher.total - before))
        digest = digests.get(path) or reader_ingest.file_sha256(path)
        sources.append({"file": names[file_index] if names else path.name, "sha256": digest})
    if hasher.total == 0:
        raise InputError("no records to record: the input is empty")
    return hasher.finish(sources)


def _no_tokens(where: str, tokenizer: tokens.TokenizerFile, count: int) -> str:
    return (
        f"{where}: token field {tokenizer.field!r} is missing in every one of the {count} records "
        "(check the dotted path with --token-field)"
    )


# --- batches: append phase -----------------------------------------------------------------------------


def _check_iterable(records: object) -> None:
    """A lone record passed where an iterable of records belongs would be split into characters or keys."""
    if isinstance(records, (str, bytes, Mapping)):
        kind = type(records).__name__
        raise UsageError(
            f"records must be an iterable of records (dicts or str), found a single {kind}"
        )


def _batch_ids(id: str, parts: int, split: int | None) -> list[str]:
    return [f"{id}/{k:06d}" for k in range(parts)] if split else [id]


def _batch_signature(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What must agree for a re-run to count as the same batch (time and source names may differ)."""
    return (
        body.get("count"),
        body.get("records_root"),
        body.get("dataset"),
        tuple(body.get("derived_from", ())),
        (body.get("fingerprints") or {}).get("root"),
    )


def _dataset_signature(body: Mapping[str, Any]) -> tuple[Any, ...]:
    return (body.get("batches"), body.get("count"), body.get("split"))


def record_batch(
    writer: LogWriter,
    records: Iterable[Mapping[str, Any] | str] | pa.Table | None = None,
    *,
    id: str,
    files: Sequence[Path | str] = (),
    split: int | None = None,
    text_fields: Sequence[str] | None = None,
    derived_from: Sequence[int | str] = (),
    dataset: str | None = None,
    min_segment_chars: int = text_spec.MIN_SEGMENT_CHARS,
    progress: Progress | None = None,
    fingerprint_params: fingerprint.FingerprintParams = fingerprint.DEFAULT_PARAMS,
    tokenizer: Path | str | None = None,
    token_field: str | None = None,
) -> BatchResult:
    """Hash records (an iterable or files), then append their batch entries and rows in one transaction.

    `records` may also be Arrow rows: a pyarrow `Table`/`RecordBatch`, a `datasets.Dataset`, a
    pandas `DataFrame` (`ledger.ingest.arrow.arrow_source`), hashed as the same rows in Parquet.
    Idempotent: re-running after success appends nothing (`already_recorded`); the same id with other
    content is a DuplicateError. With `split`, batches `<id>/<k:06d>` of `split` records each follow a
    `dataset` entry `<id>`, all or nothing. `fingerprint_params` other than the default (an older
    scheme, e.g. `fingerprint.V2_PARAMS`) are for tests and for lineages that must stay comparable
    with calls recorded under that scheme. With `tokenizer` (a Hugging Face `tokenizer.json`), the
    token id lists under `token_field` (default `input_ids`) are decoded into texts of each record,
    cut at the special tokens; the batch body carries the file's sha256 as `tokenizer`.
    """
    check_id(id)
    listed = formats.data_files([Path(p) for p in files])
    paths = [file for _, file in listed]
    if records is None and not files:
        raise UsageError("record_batch needs records or files")
    if records is not None and files:
        raise UsageError("record_batch takes records or files, not both")
    table = arrow_source(records) if records is not None else None
    if table is None:
        _check_iterable(records)
    tokenizer_file = check_batch_options(
        id, split, dataset, min_segment_chars, tokenizer, token_field
    )
    fields = list(text_fields) if text_fields else None
    if paths and derived_from:
        # A typo in a reference should fail before hours of hashing, not after (re-checked on append).
        with writer.session() as conn:
            resolve_calls(conn, derived_from)
    spill_dir = SpillDir(writer.path)
    watch = _FieldWatch(fields)
    try:
        hashed = hash_batches(
            records=table or (watch.wrap(records) if records is not None else None),
            files=paths,
            names=[name for name, _ in listed],
            split=split,
            text_fields=fields,
            min_segment_chars=min_segment_chars,
            spill_dir=spill_dir,
            progress=progress or no_progress,
            params=fingerprint_params,
            tokenizer=tokenizer_file,
        )
        if fields is not None and all(p.without_text == p.count for p in hashed.parts):
            watch.check(paths, sum(p.count for p in hashed.parts), table)
        return append_batch(
            writer, hashed, id, split, dataset, fields, derived_from, min_segment_chars,
            tokenizer_file,
        )  # fmt: skip
    finally:
        spill_dir.cleanup()


def check_batch_options(
    id: str,
    split: int | None,
    dataset: str | None,
    min_segment_chars: int,
    tokenizer: Path | str | None,
    token_field: str | None,
) -> tokens.TokenizerFile | None:
    """`record_batch`'s checks of its options (UsageError) wherever the records are hashed (here or
    on an engine), and the tokenizer file opened."""
    check_id(id)
    if split is not None and (isinstance(split, bool) or split < 1):
        raise UsageError(f"split {split!r}: expected a positive number of records per batch")
    if split is not None and dataset is not None and dataset != id:
        raise UsageError(f"with split, the dataset is the id {id!r}; found dataset {dataset!r}")
    if min_segment_chars < 1:
        raise UsageError(f"min_segment_chars {min_segment_chars}: expected at least 1")
    if token_field is not None and tokenizer is None:
        raise UsageError("a token field is read only with a tokenizer")
    return tokens.TokenizerFile.open(tokenizer, token_field) if tokenizer is not None else None


def append_batch(
    writer: LogWriter,
    hashed: HashedBatches,
    id: str,
    split: int | None,
    dataset: str | None,
    text_fields: Sequence[str] | None,
    derived_from: Sequence[int | str],
    min_segment_chars: int,
    tokenizer: tokens.TokenizerFile | None,
) -> BatchResult:
    """Append one `record_batch`'s hashed records, wherever they were hashed: the batch `id`, or
    with `split` the dataset entry `id` then its batches `<id>/<k:06d>`, in one transaction."""
    ids = _batch_ids(id, len(hashed.parts), split)
    header = None
    if split:
        total = sum(p.count for p in hashed.parts)
        header = entries.dataset_body(
            id=id, batches=len(ids), count=total, split=split, source=hashed.sources
        )
    return append_hashed(
        writer,
        hashed,
        ids,
        header,
        id if split else dataset,
        list(text_fields) if text_fields else None,
        derived_from,
        min_segment_chars,
        tokenizer,
    )


class _FieldWatch:
    """Notices whether `text_fields` name text in any record at all: a path that matches nothing (a typo,
    token ids) would record a batch no audit can compare, so it is refused instead.

    In-memory records are watched as they stream past (until the first hit); files are re-read only when
    the whole batch came out without a segment, which is the only case where the question arises.
    """

    def __init__(self, fields: Sequence[str] | None) -> None:
        self.fields = fields
        self.seen = fields is None

    def wrap(self, records: Iterable[Mapping[str, Any] | str]) -> Iterator[Mapping[str, Any] | str]:
        for record in records:
            if not self.seen and isinstance(record, Mapping):
                self.seen = any(True for _ in text_spec.record_texts(dict(record), self.fields))
            yield record

    def check(self, paths: Sequence[Path], count: int, table: ArrowSource | None = None) -> None:
        """Raise InputError when no record has a string under any of the text fields."""
        if table is not None:
            for record in table.records():
                if any(True for _ in text_spec.record_texts(record, self.fields)):
                    self.seen = True
                    break
        for path in paths:
            if self.seen:
                break
            for _, record in pipeline.iter_records(path):
                if isinstance(record, str) or any(
                    True for _ in text_spec.record_texts(record, self.fields)
                ):
                    self.seen = True
                    break
        if not self.seen:
            where = ", ".join(str(p) for p in paths) if paths else "the records"
            fields = ", ".join(repr(f) for f in self.fields or ())
            raise InputError(
                f"{where}: text field {fields} matches no text in any of the {count} records "
                "(check the dotted path; token ids have no text)"
            )


def record_batches(
    writer: LogWriter,
    batches: Iterable[tuple[str, Iterable[Mapping[str, Any] | str]]],
    *,
    text_fields: Sequence[str] | None = None,
    derived_from: Sequence[int | str] = (),
    dataset: str | None = None,
    min_segment_chars: int = text_spec.MIN_SEGMENT_CHARS,
    progress: Progress | None = None,
) -> BatchResult:
    """Record many batches, e.g. a training loop's buffered steps, in one transaction.

    Opening the DuckDB file dominates the cost of a small `record_batch`; this pays it once for all
    the batches. All or nothing, idempotent like `record_batch`; every batch must have records.
    """
    if min_segment_chars < 1:
        raise UsageError(f"min_segment_chars {min_segment_chars}: expected at least 1")
    fields = list(text_fields) if text_fields else None
    advance = progress or no_progress
    spill_dir = SpillDir(writer.path)
    try:
        hasher = _BatchHasher(None, fingerprint.DEFAULT_PARAMS, spill_dir)
        watch = _FieldWatch(fields)
        ids: list[str] = []
        for batch_id, records in batches:
            check_id(batch_id)
            _check_iterable(records)
            if batch_id in ids:
                raise UsageError(f"batch id {batch_id!r} appears twice in one call")
            before = hasher.total
            for chunk in _iter_record_chunks(watch.wrap(records), fields, min_segment_chars):
                hasher.add(chunk, None)
                advance(len(chunk))
            if hasher.total == before:
                raise InputError(f"batch {batch_id!r}: no records")
            hasher.cut()
            ids.append(batch_id)
        if not ids:
            raise UsageError("record_batches needs at least one batch")
        hashed = hasher.finish([])
        if fields is not None and all(p.without_text == p.count for p in hashed.parts):
            watch.check([], hasher.total)
        return append_hashed(
            writer, hashed, ids, None, dataset, fields, derived_from, min_segment_chars
        )
    finally:
        spill_dir.cleanup()


def append_hashed(
    writer: LogWriter,
    hashed: HashedBatches,
    ids: Sequence[str],
    header: dict[str, Any] | None,
    dataset_id: str | None,
    text_fields: list[str] | None,
    derived_from: Sequence[int | str],
    min_segment_chars: int,
    tokenizer: tokens.TokenizerFile | None = None,
    extras: Sequence[Mapping[str, Any]] | None = None,
) -> BatchResult:
    """One transaction: resolve references, check ids, insert the rows, append `header` and batches.

    The append phase of every recording path: `record_batch` and `record_batches` hash in this
    process; an engine run or a training spool hands in rows hashed elsewhere (`HashedBatches`:
    `records`/`segments` may be a Parquet path or glob, parts numbered from 0 in `ids` order).
    `extras` adds fields to each batch's body (a training step's `step` and `rank`).
    """
    fp_params = hashed.params.to_json()
    outcome: dict[str, Any] = {}

    def prepare(tx: Transaction) -> list[dict[str, Any]]:
        derived = resolve_calls(tx.conn, derived_from)
        bodies = [
            entries.batch_body(
                id=batch_id,
                count=part.count,
                records_root=part.records_root,
                dataset=dataset_id,
                derived_from=derived,
                source=[hashed.sources[i] for i in part.files],
                fingerprints={"params": fp_params, "root": part.fingerprints_root},
                text_fields=text_fields,
                min_segment_chars=min_segment_chars,
                records_without_text=part.without_text,
                tokenizer=None if tokenizer is None else tokenizer.sha256,
                token_field=None if tokenizer is None else tokenizer.field,
            )
            for batch_id, part in zip(ids, hashed.parts)
        ]
        for body, extra in zip(bodies, extras or ()):
            body.update({k: v for k, v in extra.items() if k not in body})
        if header is not None:
            bodies.insert(0, header)
        existing = store_recording.existing_by_ref(
            tx.conn, [str(b["id"]) for b in bodies], REF_KINDS
        )
        if existing:
            outcome["entries"] = _match_existing(bodies, existing)
            return []
        tx.recorder_key()  # a key that cannot sign fails before the rows go in
        first_batch = tx.start + (1 if header is not None else 0)
        store_recording.insert_record_rows(tx.conn, hashed.records, first_batch)
        store_recording.insert_segment_rows(tx.conn, hashed.segments, first_batch)
        outcome["entries"] = [
            _recorded(tx.start + offset, body) for offset, body in enumerate(bodies)
        ]
        return bodies

    result = writer.append_bodies(prepare)
    return BatchResult(list(outcome["entries"]), already_recorded=result.count == 0)


def _recorded(index: int, body: Mapping[str, Any]) -> RecordedBatch:
    bare = body.get("records_without_text")
    return RecordedBatch(
        index,
        str(body["id"]),
        int(body["count"]),
        body.get("records_root"),
        str(body["kind"]),
        None if bare is None else int(bare),
    )


def _match_existing(
    bodies: Sequence[Mapping[str, Any]], existing: Mapping[str, list[tuple[int, str, bytes]]]
) -> list[RecordedBatch]:
    """A re-run of an identical recording is a no-op; anything else colliding with an id is an error."""
    matched: list[RecordedBatch] = []
    conflicts: list[str] = []
    for body in bodies:
        ref = str(body["id"])
        found = existing.get(ref, [])
        if not found:
            conflicts.append(f"{ref!r} is new but other ids of this recording exist already")
            continue
        index, kind, leaf = found[0]
        old = body_of(leaf)
        same = (
            kind == body["kind"]
            and len(found) == 1
            and (
                _batch_signature(old) == _batch_signature(body)
                if kind == "batch"
                else _dataset_signature(old) == _dataset_signature(body)
            )
        )
        if not same:
            conflicts.append(f"{ref!r} is already entry {index} ({kind}) with different content")
            continue
        matched.append(_recorded(index, old))
    if conflicts:
        raise DuplicateError("cannot record: " + "; ".join(conflicts[:5]))
    return matched
