"""Recording at scale: training batches, external calls and model checkpoints.

The logic behind `Ledger.record_batch`, `record_call`, `import_calls` and `record_checkpoint`. Two rules
shape everything here:

- All expensive work (parsing, hashing, fingerprinting, streaming weights) happens *before* the database
  is opened, so a long hash never blocks `ledger head`, `verify` or another recorder.
- Each append is one short transaction (`Ledger._append`): references are resolved, ids checked and
  record rows bulk-inserted inside it, so a crash leaves either everything or nothing.

Record rows of a big batch are spilled to temporary Parquet files while hashing (memory stays flat for
any input size) and inserted with one `INSERT ... SELECT FROM read_parquet(...)`.
"""

from __future__ import annotations

import base64
import functools
import glob
import hashlib
import itertools
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from ledger import hashing, keys
from ledger.errors import DuplicateError, InputError, NotFoundError, OptionHintError, UsageError
from ledger.ingest import calls as ingest_calls
from ledger.ingest import records as ingest_records
from ledger.log import store
from ledger.spec import entries, fingerprint, merkle
from ledger.wording import plural

if TYPE_CHECKING:
    from ledger.ledger import KeyRing, Ledger

__all__ = [
    "BatchResult",
    "CallResult",
    "ImportReport",
    "Progress",
    "RecordedBatch",
    "RecordedCheckpoint",
    "import_calls",
    "record_batch",
    "record_batches",
    "record_call",
    "record_checkpoint",
]

Progress = Callable[[int], None]
Connection = duckdb.DuckDBPyConnection
Built = list[tuple[dict[str, Any], keys.SigningKey]]

HASH_CHUNK = 8192  # records hashed and fingerprinted per step
SPILL_ROWS = 1 << 16  # rows per write once a record set spills to Parquet
SPILL_BYTES = 64 << 20  # Arrow bytes of one table's rows kept in memory before it spills
READ_SIZE = 1 << 20  # weights are streamed in 1 MiB reads
INSERT_MEMORY_LIMIT = "256MB"  # DuckDB buffer cap while bulk-inserting a spilled record set
DISABLED_COMPRESSION = "dictionary,dict_fsst"  # DuckDB compressions not tried on record rows
MAX_FAILED_EXAMPLES = 10
_REF_KINDS = ("batch", "checkpoint", "dataset")


# --- results -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedBatch:
    """One appended (or already present) `batch` or `dataset` entry."""

    index: int
    id: str
    count: int
    records_root: str | None  # None for a dataset entry
    kind: str = "batch"
    without_text: int | None = None  # records with no segment (None: a dataset, or recorded before)


@dataclass(frozen=True)
class BatchResult:
    """What `record_batch` appended; `already_recorded` when an identical earlier run did it all."""

    entries: list[RecordedBatch]
    already_recorded: bool


@dataclass(frozen=True)
class CallResult:
    """The call entry's index; `duplicate` when (provider, external_id) was already recorded there."""

    index: int
    external_id: str | None
    duplicate: bool


@dataclass(frozen=True)
class ImportReport:
    """Counts of an import; failed lines are counted with a few `file:line: reason` examples."""

    added: int
    duplicates: int
    failed: int
    failed_examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RecordedCheckpoint:
    """The appended `checkpoint` entry, with batch references expanded from dataset ids."""

    index: int
    id: str
    weights: list[dict[str, str]]
    batches: list[str]
    parents: list[str]
    teachers: list[str | dict[str, str]]


def _no_progress(advance: int) -> None:
    """Default progress callback: recording never depends on anyone watching."""


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

    def summary(self) -> _PartSummary:
        return _PartSummary(
            self.count,
            self.records.root().hex(),
            self.fingerprints.root().hex(),
            tuple(self.files),
            self.without_text,
        )


@dataclass(frozen=True)
class _PartSummary:
    count: int
    records_root: str
    fingerprints_root: str
    files: tuple[int, ...]
    without_text: int = 0


_RECORD_SCHEMA = pa.schema(
    [
        ("part", pa.int64()),
        ("position", pa.int64()),
        ("digest", pa.binary()),
        ("fingerprint", pa.binary()),
    ]
)
_SEGMENT_SCHEMA = pa.schema(
    [("part", pa.int64()), ("position", pa.int64()), ("segment", pa.binary())]
)


class _Spill:
    """Rows of one table, buffered in memory while small and streamed to a Parquet file beyond that.

    Up to `SPILL_BYTES` of rows (those of a ~150 MB input) stay in memory and go to DuckDB straight
    from Arrow, which inserts them faster than it reads them back from Parquet, and nothing is
    written twice. Beyond that rows leave for Parquet every `SPILL_ROWS`, so a 10 GB input costs no
    more memory than a 200 MB one.
    """

    def __init__(self, schema: pa.Schema, directory: Callable[[], Path], name: str) -> None:
        self._schema = schema
        self._directory = directory
        self._name = name
        self._batches: list[pa.RecordBatch] = []
        self._buffered = 0
        self._buffered_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self.path: Path | None = None
        self.rows = 0

    def add(self, columns: list[pa.Array]) -> None:
        batch = pa.RecordBatch.from_arrays(columns, schema=self._schema)
        if not batch.num_rows:
            return
        self._batches.append(batch)
        self._buffered += batch.num_rows
        self._buffered_bytes += batch.nbytes
        self.rows += batch.num_rows
        if self._buffered >= SPILL_ROWS and (
            self._writer is not None or self._buffered_bytes >= SPILL_BYTES
        ):
            self._flush()

    def _flush(self) -> None:
        if self._writer is None:
            self.path = self._directory() / f"{self._name}.parquet"
            # Hashes and fingerprints are random bytes: dictionaries, statistics and compression
            # would cost time and save nothing in a file that lives for one transaction.
            self._writer = pq.ParquetWriter(
                self.path,
                self._schema,
                compression="none",
                use_dictionary=False,
                write_statistics=False,
            )
        self._writer.write_table(pa.Table.from_batches(self._batches, schema=self._schema))
        self._batches, self._buffered, self._buffered_bytes = [], 0, 0

    def finish(self) -> pa.Table | Path:
        """The rows: an Arrow table if they never spilled, else the closed Parquet file."""
        if self._writer is None:
            return pa.Table.from_batches(self._batches, schema=self._schema)
        if self._batches:
            self._flush()
        self._writer.close()
        assert self.path is not None
        return self.path


@dataclass
class _HashedBatches:
    """Everything the append transaction needs, computed before the database is opened."""

    parts: list[_PartSummary]
    sources: list[dict[str, str]]
    records: pa.Table | Path
    segments: pa.Table | Path
    params: fingerprint.FingerprintParams


class _SpillDir:
    """A temporary directory for spilled rows, created on first use, next to the DB or in TMPDIR.

    Next to the database because the rows end up there anyway (TMPDIR is often a small tmpfs). The name
    carries host and pid, so leftovers of a killed recorder are removed by the next one.
    """

    def __init__(self, near: Path) -> None:
        self._near = near
        self.path: Path | None = None

    def _prefix(self) -> str:
        return f".{self._near.name}.spill-{socket.gethostname()}-"

    def __call__(self) -> Path:
        if self.path is None:
            self._remove_stale()
            try:
                prefix = f"{self._prefix()}{os.getpid()}-"
                self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=self._near.parent))
            except OSError:
                self.path = Path(tempfile.mkdtemp(prefix="ledger-spill-"))
        return self.path

    def _remove_stale(self) -> None:
        """Delete spill directories of this host's recorders that no longer run (killed mid-hash)."""
        prefix = self._prefix()
        try:
            candidates = list(self._near.parent.glob(glob.escape(prefix) + "*"))
        except OSError:
            return
        for candidate in candidates:
            pid_text = candidate.name[len(prefix) :].split("-", 1)[0]
            if pid_text.isdigit() and not _process_alive(int(pid_text)):
                shutil.rmtree(candidate, ignore_errors=True)

    def cleanup(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _BatchHasher:
    """Cut a stream of RecordHash chunks into batches of `split` records, with roots and row spills."""

    def __init__(
        self, split: int | None, params: fingerprint.FingerprintParams, spill_dir: _SpillDir
    ) -> None:
        self._split = split
        self._params = params
        self._done: list[_PartSummary] = []  # finished batches keep only their roots
        self._part = _Part()
        self._total = 0
        self._records = _Spill(_RECORD_SCHEMA, spill_dir, "records")
        self._segments = _Spill(_SEGMENT_SCHEMA, spill_dir, "segments")

    @property
    def total(self) -> int:
        return self._total

    def add(
        self,
        chunk: Sequence[hashing.RecordHash],
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
                pa.array(part_of),
                pa.array(position_of),
                pa.array([r.digest for r in chunk], pa.binary()),
                pa.array(fps, pa.binary()),
            ]
        )
        if counts.any():
            segments = list(itertools.chain.from_iterable(r.segments for r in chunk))
            self._segments.add(
                [
                    pa.array(np.repeat(part_of, counts)),
                    pa.array(np.repeat(position_of, counts)),
                    pa.array(segments, pa.binary()),
                ]
            )
        self._total += len(chunk)

    def add_columns(self, columns: ingest_records.RecordColumns, file_index: int) -> None:
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
                pa.array(part_of),
                pa.array(position_of),
                _binary_array(columns.digests, np.arange(0, 32 * n + 1, 32, dtype=np.int32)),
                _binary_array(columns.fingerprints, fp_offsets),
            ]
        )
        n_segments = len(columns.segments) // 32
        if n_segments:
            self._segments.add(
                [
                    pa.array(np.repeat(part_of, counts)),
                    pa.array(np.repeat(position_of, counts)),
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

    def finish(self, sources: list[dict[str, str]]) -> _HashedBatches:
        summaries = [*self._done, self._part.summary()] if self._part.count else list(self._done)
        return _HashedBatches(
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


def _fingerprint_record_blobs(
    texts_per_record: Sequence[Sequence[str]], params: fingerprint.FingerprintParams
) -> tuple[bytes, npt.NDArray[np.int64]]:
    """`_fingerprint_records` laid end to end, with each blob's end offset (module level: picklable)."""
    if not any(texts_per_record):
        return b"", np.zeros(len(texts_per_record), dtype=np.int64)
    return fingerprint.fingerprint_record_blobs(texts_per_record, params)


def _iter_record_chunks(
    records: Iterable[Mapping[str, Any] | str], text_fields: Sequence[str] | None, min_chars: int
) -> Iterator[list[hashing.RecordHash]]:
    """Hash an in-memory iterable in chunks; a bad record is an InputError naming its position."""
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
                out.append(hashing.hash_record(record, text_fields, min_chars))
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
    records: Iterable[Mapping[str, Any] | str] | None,
    files: Sequence[Path],
    split: int | None,
    text_fields: Sequence[str] | None,
    min_segment_chars: int,
    spill_dir: _SpillDir,
    progress: Progress,
    params: fingerprint.FingerprintParams = fingerprint.DEFAULT_PARAMS,
    names: Sequence[str] | None = None,
) -> _HashedBatches:
    """The hashing phase of `record_batch`: roots, fingerprints and spilled rows, no database access.

    Progress advances in records for an iterable and in input bytes for files. `names` are what the
    batch's `source` calls the files (default: their file names).
    """
    hasher = _BatchHasher(split, params, spill_dir)
    sources: list[dict[str, str]] = []
    if records is not None:
        for chunk in _iter_record_chunks(records, text_fields, min_segment_chars):
            hasher.add(chunk, None)
            progress(len(chunk))
    for file_index, path in enumerate(files):
        digests: dict[Path, str] = {}
        # Fingerprints and leaf hashes cost more CPU than the rest: the reader's workers compute them.
        for columns in ingest_records.iter_record_columns(
            [path],
            functools.partial(_fingerprint_record_blobs, params=params),
            text_fields,
            min_segment_chars,
            file_digests=digests,
            progress=progress,
        ):
            hasher.add_columns(columns, file_index)
        digest = digests.get(path) or ingest_records.file_sha256(path)
        sources.append({"file": names[file_index] if names else path.name, "sha256": digest})
    if hasher.total == 0:
        raise InputError("no records to record: the input is empty")
    return hasher.finish(sources)


# --- batches: append phase -----------------------------------------------------------------------------


def _check_id(id: str, what: str = "id") -> str:
    """Ids are REFs: non-empty, no surrounding space, and never all digits (that is an entry index)."""
    if not isinstance(id, str) or not id or id != id.strip():
        raise UsageError(f"{what} {id!r}: expected a non-empty string without surrounding spaces")
    if id.isdigit():
        raise UsageError(
            f"{what} {id!r}: an all-digit id would read as an entry index; add a prefix"
        )
    return id


def _check_iterable(records: object) -> None:
    """A lone record passed where an iterable of records belongs would be split into characters or keys."""
    if isinstance(records, (str, bytes, Mapping)):
        kind = type(records).__name__
        raise UsageError(
            f"records must be an iterable of records (dicts or str), found a single {kind}"
        )


def _batch_ids(id: str, parts: int, split: int | None) -> list[str]:
    return [f"{id}/{k:06d}" for k in range(parts)] if split else [id]


def _body_of(leaf: bytes) -> dict[str, Any]:
    return keys.parse_envelope(leaf).body()


def _existing_by_ref(
    conn: Connection, refs: Sequence[str], kinds: Sequence[str]
) -> dict[str, list[tuple[int, str, bytes]]]:
    """Entries of `kinds` answering to any of `refs`: ref -> [(index, kind, leaf)] in index order."""
    if not refs:
        return {}
    rows = conn.execute(
        """SELECT ref, idx, kind, leaf FROM entries
           WHERE list_contains(?::VARCHAR[], ref) AND list_contains(?::VARCHAR[], kind)
           ORDER BY idx""",
        [list(refs), list(kinds)],
    ).fetchall()
    found: dict[str, list[tuple[int, str, bytes]]] = {}
    for ref, idx, kind, leaf in rows:
        found.setdefault(str(ref), []).append((int(idx), str(kind), bytes(leaf)))
    return found


def resolve_calls(conn: Connection, refs: Sequence[int | str]) -> list[int]:
    """Turn derived_from items (entry indexes or call external ids) into call entry indexes."""
    out: list[int] = []
    missing: list[str] = []
    for ref in refs:
        if isinstance(ref, bool):
            raise UsageError(
                f"derived_from item {ref!r}: expected an entry index or a call external id"
            )
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            rows = conn.execute("SELECT kind FROM entries WHERE idx = ?", [int(ref)]).fetchall()
            if not rows:
                missing.append(f"entry {ref}")
            elif rows[0][0] != "call":
                raise NotFoundError(
                    f"derived_from {ref}: expected a call entry, found a {rows[0][0]} entry"
                )
            else:
                out.append(int(ref))
            continue
        rows = conn.execute(
            "SELECT idx, provider FROM entries WHERE kind = 'call' AND ref = ? ORDER BY idx",
            [str(ref)],
        ).fetchall()
        providers = {str(r[1]) for r in rows}
        if not rows:
            missing.append(f"call {ref!r}")
        elif len(providers) > 1:
            raise UsageError(
                f"derived_from {ref!r}: calls of several providers ({', '.join(sorted(providers))}) "
                "have this external id; give the entry index instead"
            )
        else:
            out.append(int(rows[0][0]))
    if missing:
        raise NotFoundError(f"derived_from names no recorded call: {', '.join(missing)}")
    return sorted(set(out))


def _batch_signature(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What must agree for a re-run to count as the same batch (time and source names may differ)."""
    return (
        body.get("count"),
        body.get("records_root"),
        body.get("dataset"),
        tuple(body.get("derived_from", ())),
        (body.get("fingerprints") or {}).get("root"),
    )


def _dataset_body(
    id: str, batches: int, count: int, split: int, sources: Sequence[Mapping[str, str]]
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "dataset",
        "v": entries.VERSION,
        "time": entries.now_rfc3339(),
        "id": id,
        "batches": batches,
        "count": count,
        "split": split,
    }
    if sources:
        body["source"] = [dict(s) for s in sources]
    return body


def _dataset_signature(body: Mapping[str, Any]) -> tuple[Any, ...]:
    return (body.get("batches"), body.get("count"), body.get("split"))


def _insert_rows(
    conn: Connection, table: str, columns: str, rows: pa.Table | Path, base: int
) -> None:
    """Bulk insert spilled rows, turning a part number into the batch entry's index."""
    # Hashes and fingerprints are random bytes that dictionary compression cannot shrink, but
    # trying it (here and when the file is checkpointed on close) cost more than the rest of the
    # transaction together. Like memory_limit, the setting belongs to the open database instance
    # and ends when it closes; it changes how rows are stored, never what they hold.
    conn.execute(f"SET disabled_compression_methods = '{DISABLED_COMPRESSION}'")
    if isinstance(rows, Path):
        # A spilled record set can be GBs: cap DuckDB's buffers (it spills to its temp directory) and
        # let it insert in any order (positions are columns), so memory stays flat in input size.
        conn.execute(f"SET memory_limit = '{INSERT_MEMORY_LIMIT}'")
        conn.execute("SET preserve_insertion_order = false")
        conn.execute(
            f"INSERT INTO {table} SELECT part + ?, {columns} FROM read_parquet(?)",
            [base, str(rows)],
        )
        return
    if not rows.num_rows:
        return
    name = f"_ledger_new_{table}"
    conn.register(name, rows)
    try:
        conn.execute(f"INSERT INTO {table} SELECT part + ?, {columns} FROM {name}", [base])
    finally:
        conn.unregister(name)


def record_batch(
    ledger: Ledger,
    records: Iterable[Mapping[str, Any] | str] | None = None,
    *,
    id: str,
    files: Sequence[Path | str] = (),
    split: int | None = None,
    text_fields: Sequence[str] | None = None,
    derived_from: Sequence[int | str] = (),
    dataset: str | None = None,
    min_segment_chars: int = hashing.MIN_SEGMENT_CHARS,
    progress: Progress | None = None,
    fingerprint_params: fingerprint.FingerprintParams = fingerprint.DEFAULT_PARAMS,
) -> BatchResult:
    """Hash records (an iterable or files), then append their batch entries and rows in one transaction.

    Idempotent: re-running after success appends nothing (`already_recorded`); the same id with other
    content is a DuplicateError. With `split`, batches `<id>/<k:06d>` of `split` records each follow a
    `dataset` entry `<id>`, all or nothing. `fingerprint_params` other than the default (an older
    scheme, e.g. `fingerprint.V2_PARAMS`) are for tests and for lineages that must stay comparable
    with calls recorded under that scheme.
    """
    _check_id(id)
    listed = ingest_records.data_files([Path(p) for p in files])
    paths = [file for _, file in listed]
    if records is None and not files:
        raise UsageError("record_batch needs records or files")
    if records is not None and files:
        raise UsageError("record_batch takes records or files, not both")
    _check_iterable(records)
    if split is not None and (isinstance(split, bool) or split < 1):
        raise UsageError(f"split {split!r}: expected a positive number of records per batch")
    if split is not None and dataset is not None and dataset != id:
        raise UsageError(f"with split, the dataset is the id {id!r}; found dataset {dataset!r}")
    if min_segment_chars < 1:
        raise UsageError(f"min_segment_chars {min_segment_chars}: expected at least 1")
    fields = list(text_fields) if text_fields else None
    if paths and derived_from:
        # A typo in a reference should fail before hours of hashing, not after (re-checked on append).
        with ledger.session() as conn:
            resolve_calls(conn, derived_from)
    spill_dir = _SpillDir(ledger.path)
    watch = _FieldWatch(fields)
    try:
        hashed = hash_batches(
            records=watch.wrap(records) if records is not None else None,
            files=paths,
            names=[name for name, _ in listed],
            split=split,
            text_fields=fields,
            min_segment_chars=min_segment_chars,
            spill_dir=spill_dir,
            progress=progress or _no_progress,
            params=fingerprint_params,
        )
        if fields is not None and all(p.without_text == p.count for p in hashed.parts):
            watch.check(paths, sum(p.count for p in hashed.parts))
        ids = _batch_ids(id, len(hashed.parts), split)
        header = None
        if split:
            total = sum(p.count for p in hashed.parts)
            header = _dataset_body(id, len(ids), total, split, hashed.sources)
        return _append_batches(
            ledger,
            hashed,
            ids,
            header,
            id if split else dataset,
            fields,
            derived_from,
            min_segment_chars,
        )
    finally:
        spill_dir.cleanup()


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
                self.seen = any(True for _ in hashing.record_texts(dict(record), self.fields))
            yield record

    def check(self, paths: Sequence[Path], count: int) -> None:
        """Raise InputError when no record has a string under any of the text fields."""
        for path in paths:
            if self.seen:
                break
            for _, record in ingest_records.iter_records(path):
                if isinstance(record, str) or any(
                    True for _ in hashing.record_texts(record, self.fields)
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
    ledger: Ledger,
    batches: Iterable[tuple[str, Iterable[Mapping[str, Any] | str]]],
    *,
    text_fields: Sequence[str] | None = None,
    derived_from: Sequence[int | str] = (),
    dataset: str | None = None,
    min_segment_chars: int = hashing.MIN_SEGMENT_CHARS,
    progress: Progress | None = None,
) -> BatchResult:
    """Record many batches, e.g. a training loop's buffered steps, in one transaction.

    Opening the DuckDB file dominates the cost of a small `record_batch`; this pays it once for all
    the batches. All or nothing, idempotent like `record_batch`; every batch must have records.
    """
    if min_segment_chars < 1:
        raise UsageError(f"min_segment_chars {min_segment_chars}: expected at least 1")
    fields = list(text_fields) if text_fields else None
    advance = progress or _no_progress
    spill_dir = _SpillDir(ledger.path)
    try:
        hasher = _BatchHasher(None, fingerprint.DEFAULT_PARAMS, spill_dir)
        watch = _FieldWatch(fields)
        ids: list[str] = []
        for batch_id, records in batches:
            _check_id(batch_id)
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
        return _append_batches(
            ledger, hashed, ids, None, dataset, fields, derived_from, min_segment_chars
        )
    finally:
        spill_dir.cleanup()


def _append_batches(
    ledger: Ledger,
    hashed: _HashedBatches,
    ids: Sequence[str],
    header: dict[str, Any] | None,
    dataset_id: str | None,
    text_fields: list[str] | None,
    derived_from: Sequence[int | str],
    min_segment_chars: int,
) -> BatchResult:
    """One transaction: resolve references, check ids, insert the rows, append `header` and batches."""
    fp_params = hashed.params.to_json()
    outcome: dict[str, Any] = {}

    def build(conn: Connection, start: int, ring: KeyRing) -> Built:
        derived = resolve_calls(conn, derived_from)
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
            )
            for batch_id, part in zip(ids, hashed.parts)
        ]
        if header is not None:
            bodies.insert(0, header)
        existing = _existing_by_ref(conn, [str(b["id"]) for b in bodies], _REF_KINDS)
        if existing:
            outcome["entries"] = _match_existing(bodies, existing)
            return []
        signer = ledger.signer_for(ring)
        first_batch = start + (1 if header is not None else 0)
        _insert_rows(conn, "records", "position, digest, fingerprint", hashed.records, first_batch)
        _insert_rows(conn, "record_segments", "position, segment", hashed.segments, first_batch)
        outcome["entries"] = [_recorded(start + offset, body) for offset, body in enumerate(bodies)]
        return [(body, signer) for body in bodies]

    result = ledger._append(build)
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
        old = _body_of(leaf)
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


# --- calls -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CallInput:
    """One call as given by a caller or a log file, before hashing."""

    provider: str
    purpose: str
    request: object | None
    response: object
    model: str | None = None
    endpoint: str | None = None
    external_id: str | None = None
    account: str | None = None
    stream: bool = False
    complete: bool = True
    usage: object | None = None


def _chunks_of(call: _CallInput) -> list[Mapping[str, Any]]:
    """A stream's chunks, each a JSON object."""
    if not isinstance(call.response, (list, tuple)):
        found = type(call.response).__name__
        raise UsageError(f"a streamed response must be a list of chunk objects, found {found}")
    for i, chunk in enumerate(call.response):
        if not isinstance(chunk, Mapping):
            raise InputError(
                f"stream chunk {i}: expected a JSON object, found {type(chunk).__name__}"
            )
    return list(call.response)


def _model_of(call: _CallInput) -> str:
    model = call.model or ingest_calls.infer_model(call.response, call.request)
    if not model:
        raise OptionHintError(
            "cannot tell the call's model from the response or the request", "model"
        )
    return model


def _endpoint_of(call: _CallInput) -> str:
    endpoint = call.endpoint or ingest_calls.infer_endpoint(call.response, call.request)
    if not endpoint:
        raise OptionHintError(
            "cannot tell the call's endpoint from the response or the request", "endpoint"
        )
    return endpoint


@dataclass(frozen=True)
class _PreparedCall:
    """A call's body without its fingerprints, plus the texts to fingerprint (aligned with outputs)."""

    body: dict[str, Any]
    fingerprint_texts: list[str]


def _prepare_call(call: _CallInput, min_chars: int) -> _PreparedCall:
    """Hash one call: request/response digests, output segments and their normalized texts."""
    entries.check_purpose(call.purpose)
    if call.stream:
        chunks = _chunks_of(call)
        texts = hashing.stream_texts(chunks)
        response_digest = hashing.request_response_digest(chunks)
    else:
        if not isinstance(call.response, Mapping):
            found = type(call.response).__name__
            raise InputError(
                f"a response must be a JSON object (stream=True for chunks), found {found}"
            )
        error = ingest_calls.error_response(call.response)
        if error is not None:
            raise InputError(
                f"the response is an API error response ({error}), not a model output; nothing to record"
            )
        texts = hashing.response_texts(call.response)
        response_digest = hashing.request_response_digest(call.response)
    assert response_digest is not None
    # The same segments as hashing.call_outputs(texts), kept with their texts for fingerprinting.
    segments: dict[str, str] = {}
    for text in texts:
        for digest, normalized in hashing.text_segments(text, min_chars):
            segments[digest.hex()] = normalized
    outputs = sorted(segments)
    usage = call.usage if call.usage is not None else ingest_calls.response_usage(call.response)
    external_id = call.external_id or ingest_calls.response_id(call.response)
    body = entries.call_body(
        provider=call.provider,
        model=_model_of(call),
        endpoint=_endpoint_of(call),
        purpose=call.purpose,
        request=hashing.request_response_digest(call.request),
        response=response_digest,
        outputs=outputs,
        external_id=external_id,
        account=call.account,
        usage=usage,
        complete=call.complete,
    )
    return _PreparedCall(body, [segments[h] for h in outputs])


def _with_fingerprints(
    prepared: Sequence[_PreparedCall], params: fingerprint.FingerprintParams
) -> list[dict[str, Any]]:
    """Fingerprint every call's output segments in one vectorised pass; `values[i]` is `outputs[i]`'s."""
    texts = [t for p in prepared for t in p.fingerprint_texts]
    fps = fingerprint.fingerprint_texts(texts, params) if texts else []
    out: list[dict[str, Any]] = []
    at = 0
    params_json = params.to_json()
    for p in prepared:
        values = [
            base64.b64encode(fp).decode("ascii") for fp in fps[at : at + len(p.fingerprint_texts)]
        ]
        at += len(p.fingerprint_texts)
        out.append({**p.body, "fingerprints": {"params": params_json, "values": values}})
    return out


def _existing_call(conn: Connection, provider: str, external_id: str) -> int | None:
    row = (
        conn.execute(
            "SELECT min(idx) FROM entries WHERE kind = 'call' AND provider = ? AND ref = ?",
            [provider, external_id],
        ).fetchall()
    )  # fetched to the end: a half-read result blocks the next `register` on this connection
    return None if not row or row[0][0] is None else int(row[0][0])


def record_call(
    ledger: Ledger,
    *,
    provider: str,
    purpose: str,
    request: object | None,
    response: object,
    model: str | None = None,
    endpoint: str | None = None,
    external_id: str | None = None,
    account: str | None = None,
    stream: bool = False,
    complete: bool = True,
    min_segment_chars: int = hashing.MIN_SEGMENT_CHARS,
    fingerprint_params: fingerprint.FingerprintParams = fingerprint.DEFAULT_PARAMS,
) -> CallResult:
    """Append one `call` entry; idempotent on (provider, external_id). `fingerprint_params`: as
    for `record_batch`."""
    if not provider:
        raise UsageError("provider: expected a non-empty name")
    call = _CallInput(
        provider,
        purpose,
        request,
        response,
        model,
        endpoint,
        external_id,
        account,
        stream,
        complete,
    )
    body = _with_fingerprints([_prepare_call(call, min_segment_chars)], fingerprint_params)[0]
    ext = body.get("external_id")
    outcome: dict[str, int] = {}

    def build(conn: Connection, start: int, ring: KeyRing) -> Built:
        if ext is not None:
            found = _existing_call(conn, provider, str(ext))
            if found is not None:
                outcome["index"] = found
                return []
        outcome["index"] = start
        return [(body, ledger.signer_for(ring))]

    result = ledger._append(build)
    return CallResult(
        outcome["index"], None if ext is None else str(ext), duplicate=result.count == 0
    )


def _call_input(
    item: ingest_calls.CallRecord, provider: str | None, purpose: str, account: str | None
) -> _CallInput:
    chosen = provider or item.provider
    if not chosen:
        raise InputError("no provider in the line and none given")
    return _CallInput(
        provider=chosen,
        purpose=purpose,
        request=item.request,
        response=item.response,
        model=item.model,
        endpoint=item.endpoint,
        external_id=item.external_id,
        account=account or item.account,
        stream=item.stream,
        complete=item.complete,
        usage=item.usage,
    )


def import_calls(
    ledger: Ledger,
    path: Path | str,
    fmt: str,
    *,
    provider: str | None,
    purpose: str,
    requests_path: Path | str | None = None,
    account: str | None = None,
    progress: Progress | None = None,
    chunk: int = 5000,
    min_segment_chars: int = hashing.MIN_SEGMENT_CHARS,
) -> ImportReport:
    """Stream a provider log into `call` entries, `chunk` calls per transaction.

    A crash loses at most the current chunk; a re-run skips what is already recorded (idempotent on
    (provider, external_id)), so it completes the work without duplicates. `provider` applies to every
    call (None: each line's own). Failed lines are counted and reported, never recorded.
    """
    entries.check_purpose(purpose)
    if chunk < 1:
        raise UsageError(f"chunk {chunk}: expected at least 1 call per transaction")
    report = {"added": 0, "duplicates": 0, "failed": 0}
    examples: list[str] = []
    pending: list[_PreparedCall] = []
    requests = Path(requests_path) if requests_path is not None else None
    try:
        for item in ingest_calls.iter_calls(Path(path), fmt, requests, progress=progress):
            if isinstance(item, ingest_calls.FailedCall):
                report["failed"] += 1
                if len(examples) < MAX_FAILED_EXAMPLES:
                    examples.append(f"{item.location}: {item.reason}")
                continue
            try:
                call = _call_input(item, provider, purpose, account)
                pending.append(_prepare_call(call, min_segment_chars))
            except OptionHintError as exc:  # import has no such option: the line itself must say
                raise InputError(f"{item.location}: {exc.text}") from exc
            except InputError as exc:
                raise InputError(f"{item.location}: {exc}") from exc
            if len(pending) >= chunk:
                _append_calls(ledger, pending, report)
                pending = []
    except InputError as exc:
        # Bad input leaves the ledger as it was, but for whole chunks committed before the bad line
        # (their transactions are done); a re-run after fixing the line skips those.
        if report["added"]:
            raise InputError(
                f"{exc} ({plural(report['added'], 'call')} before it recorded in earlier transactions; "
                "re-running after fixing the line skips them)"
            ) from exc
        raise
    if pending:
        _append_calls(ledger, pending, report)
    return ImportReport(report["added"], report["duplicates"], report["failed"], examples)


def _append_calls(ledger: Ledger, pending: Sequence[_PreparedCall], report: dict[str, int]) -> None:
    """One transaction: skip calls already in the ledger or earlier in this chunk, append the rest."""
    bodies = _with_fingerprints(pending, fingerprint.DEFAULT_PARAMS)

    def build(conn: Connection, start: int, ring: KeyRing) -> Built:
        by_provider: dict[str, list[str]] = {}
        for body in bodies:
            if "external_id" in body:
                by_provider.setdefault(str(body["provider"]), []).append(str(body["external_id"]))
        seen = {(p, e) for p, ids in by_provider.items() for e in _existing_calls(conn, p, ids)}
        fresh = []
        for body in bodies:
            ext = body.get("external_id")
            if ext is not None:
                key = (str(body["provider"]), str(ext))
                if key in seen:
                    continue
                seen.add(key)
            fresh.append(body)
        report["duplicates"] += len(bodies) - len(fresh)
        report["added"] += len(fresh)
        if not fresh:
            return []
        signer = ledger.signer_for(ring)
        return [(body, signer) for body in fresh]

    before = dict(report)
    try:
        ledger._append(build)
    except BaseException:
        report.update(before)
        raise


def _existing_calls(conn: Connection, provider: str, external_ids: Sequence[str]) -> set[str]:
    rows = conn.execute(
        """SELECT DISTINCT ref FROM entries WHERE kind = 'call' AND provider = ?
           AND list_contains(?::VARCHAR[], ref)""",
        [provider, list(external_ids)],
    ).fetchall()
    return {str(r[0]) for r in rows}


# --- checkpoints -----------------------------------------------------------------------------------------


def _hash_file(path: Path, progress: Progress) -> str:
    """Stream a file through SHA-256 in 1 MiB reads, reporting bytes as they go."""
    digest = hashlib.sha256()
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                digest.update(view[:n])
                progress(n)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return digest.hexdigest()


def _weight_files(paths: Sequence[Path]) -> list[tuple[str, Path]]:
    """(recorded path, file) for every weights file: a file by its name, a directory's files relative to it."""
    out: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            if not files:
                raise InputError(f"{path}: the weights directory holds no files")
            out.extend((p.relative_to(path).as_posix(), p) for p in files)
        elif path.is_file():
            out.append((path.name, path))
        else:
            raise InputError(f"{path}: no such weights file or directory")
    names = [name for name, _ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(
            f"weights paths collide: {', '.join(dupes[:5])} (give one directory instead)"
        )
    return out


def hash_weights(
    weights: Sequence[Path | str], progress: Progress | None = None
) -> list[dict[str, str]]:
    """`[{"path", "sha256"}]` for weights files and directories (sorted within a directory)."""
    if not weights:
        raise UsageError("a checkpoint needs at least one weights file or directory")
    advance = progress or _no_progress
    return [
        {"path": name, "sha256": _hash_file(p, advance)}
        for name, p in _weight_files([Path(w) for w in weights])
    ]


def _batches_of_datasets(conn: Connection, datasets: Sequence[str]) -> dict[str, list[str]]:
    """Batch ids per dataset (batches whose body says `dataset == id`), in index order."""
    if not datasets:
        return {}
    rows = conn.execute(
        f"""SELECT idx, leaf FROM entries WHERE kind = 'batch' AND list_contains(?::VARCHAR[],
               try(json_extract_string({store.PAYLOAD_JSON}, '$.dataset')))
           ORDER BY idx""",
        [list(datasets)],
    ).fetchall()
    out: dict[str, list[str]] = {}
    for _, leaf in rows:
        body = _body_of(bytes(leaf))  # the SQL prefilter is re-checked on the decoded body
        if body.get("dataset") in datasets:
            out.setdefault(str(body["dataset"]), []).append(str(body["id"]))
    return out


def _expand_batches(conn: Connection, refs: Sequence[str]) -> tuple[list[str], list[str]]:
    """Batch ids for batch-or-dataset refs, de-duplicated in order; and the refs that name nothing."""
    known = set(_existing_by_ref(conn, list(refs), ("batch",)))
    by_dataset = _batches_of_datasets(conn, [r for r in refs if r not in known])
    expanded: list[str] = []
    missing: list[str] = []
    for ref in refs:
        if ref in known:
            expanded.append(ref)
        elif ref in by_dataset:
            expanded.extend(by_dataset[ref])
        else:
            missing.append(ref)
    return list(dict.fromkeys(expanded)), missing


def record_checkpoint(
    ledger: Ledger,
    *,
    id: str,
    weights: Sequence[Path | str],
    batches: Sequence[str] = (),
    parents: Sequence[str] = (),
    teachers: Sequence[str] = (),
    config: Path | str | None = None,
    progress: Progress | None = None,
) -> RecordedCheckpoint:
    """Hash weights (before opening the database), then append a `checkpoint` entry.

    Every batch, dataset, parent and checkpoint teacher must already be recorded: a dangling reference
    is a NotFoundError naming all of them. The id must be new (DuplicateError).
    """
    _check_id(id)
    hashed = hash_weights(weights, progress)
    config_digest = _hash_file(Path(config), _no_progress) if config is not None else None
    outcome: dict[str, RecordedCheckpoint] = {}

    def build(conn: Connection, start: int, ring: KeyRing) -> Built:
        taken = _existing_by_ref(conn, [id], _REF_KINDS).get(id)
        if taken:
            index, kind, _ = taken[0]
            raise DuplicateError(f"checkpoint id {id!r} is already used by entry {index} ({kind})")
        batch_ids, missing = _expand_batches(conn, list(dict.fromkeys(batches)))
        missing = [f"batch or dataset {m!r}" for m in missing]
        known_checkpoints = set(_existing_by_ref(conn, [*parents, *teachers], ("checkpoint",)))
        missing += [f"parent checkpoint {p!r}" for p in parents if p not in known_checkpoints]
        if missing:
            raise NotFoundError(
                f"checkpoint {id!r} refers to unrecorded entries: {', '.join(missing)}"
            )
        teacher_values = [entries.parse_teacher(t, t in known_checkpoints) for t in teachers]
        body = entries.checkpoint_body(
            id=id,
            weights=hashed,
            parents=list(dict.fromkeys(parents)),
            batches=batch_ids,
            teachers=teacher_values,
            config=config_digest,
        )
        outcome["c"] = RecordedCheckpoint(
            start, id, hashed, batch_ids, list(dict.fromkeys(parents)), list(teacher_values)
        )
        return [(body, ledger.signer_for(ring))]

    ledger._append(build)
    return outcome["c"]
