"""Parquet shards hashed by an engine's tasks and appended by the driver (DESIGN.md "Engines").

The engine-neutral half of `ledger record batch --engine spark|ray`; `ledger.engines.spark` and
`ledger.engines.ray` only schedule `run_item` on their workers.

- The driver plans the work from the shards' Parquet footers alone (`plan`): one item per row group
  (its file, its first row, its first position in the batch: shards in the order given, rows within
  a shard) and one item per file for the file's sha256 (the batch's `source`), so no byte of data
  passes through the driver.
- A task (`run_item`) reads its row group itself with pyarrow, exactly as a single-process
  `ledger record batch` reads it (an engine's own reader re-types columns: Spark reads uint64 as
  decimal, drops a timestamp's time zone, refuses nanosecond timestamps, so digests would differ),
  hashes it with the one kernel (`engine.ranges.hash_range`), cut at multiples of `split`, writes its
  record and segment rows as Parquet partitions in the spill layout (`recording.spill.RECORD_SCHEMA`,
  `SEGMENT_SCHEMA`) into the run's spill directory, and returns only its summaries: one `WIRE` row
  per contiguous range (compact ranges, O(log n) hashes), or one row naming the bad row it met.
- The driver merges the summaries in order per batch (`Collector`, one `RangeMerger` per part) and
  appends them with the partitions through `recording.batches.append_hashed` in one short
  transaction: the entries are those of a single-process run on the same shards.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.fs as pafs  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from ledger.engine.arrow_values import row_objects
from ledger.engine.kernel import KernelOptions, Origin
from ledger.engine.ranges import RangeMerger, RangeSummary, hash_range, recording_options
from ledger.engine.tokens import TokenizerFile
from ledger.errors import InputError, LedgerError, UsageError
from ledger.ingest import formats
from ledger.log.append import LogWriter
from ledger.recording.batches import (
    HashedBatches,
    PartSummary,
    append_batch,
    check_batch_options,
)
from ledger.recording.refs import resolve_calls
from ledger.recording.results import BatchResult, Progress, no_progress
from ledger.recording.spill import RECORD_SCHEMA, SEGMENT_SCHEMA, SpillDir
from ledger.spec import fingerprint
from ledger.spec import text as text_spec
from ledger.spec.merkle import CompactRange

__all__ = [
    "BATCH_ROWS",
    "WIRE",
    "Collector",
    "EngineRun",
    "Job",
    "Runner",
    "Shard",
    "plan",
    "record_run",
    "record_shards",
    "hash_rows",
    "run_item",
]

BATCH_ROWS: Final = 65536  # rows a task reads and hashes at a time (a row group may be larger)

WIRE: Final = pa.schema(
    [
        ("kind", pa.string()),  # "range", "sha256" or "error"
        ("file", pa.int64()),
        ("part", pa.int64()),
        ("begin", pa.int64()),  # a range: its first position in its part; an error: the item's
        ("end", pa.int64()),
        ("record_hashes", pa.list_(pa.binary())),
        ("fingerprint_hashes", pa.list_(pa.binary())),
        ("without_text", pa.int64()),
        ("token_records", pa.int64()),
        ("text_seen", pa.bool_()),
        ("text", pa.string()),  # the file's sha256, or the error
    ]
)
"""What a task returns: one row per range, file digest or error (Spark has no fixed-size binary)."""

WIRE_DDL: Final = (
    "kind string, file long, part long, begin long, end long, record_hashes array<binary>, "
    "fingerprint_hashes array<binary>, without_text long, token_records long, text_seen boolean, "
    "text string"
)
"""`WIRE` as a Spark DDL schema (`mapInArrow`)."""


def filesystem(location: str) -> tuple[Any, str]:
    """The pyarrow filesystem and path of a local path or of any URI pyarrow knows (file://,
    s3://, gs://, hdfs://, abfs://)."""
    if "://" in location:
        try:
            return pafs.FileSystem.from_uri(location)  # type: ignore[no-any-return]
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise InputError(f"{location}: cannot open ({exc})") from exc
    return pafs.LocalFileSystem(), os.path.abspath(location)


@dataclass(frozen=True)
class Shard:
    """One input file of the batch: what the batch's `source` calls it, where it is, its rows."""

    name: str
    location: str
    rows: int
    offset: int  # its first record's position in the batch
    groups: tuple[int, ...]  # rows per row group


@dataclass(frozen=True)
class Job:
    """What every task needs, shipped to the workers once (picklable)."""

    locations: tuple[str, ...]
    spill: str
    split: int | None
    text_fields: tuple[str, ...] | None
    min_chars: int
    tokenizer: TokenizerFile | None = None
    tokenizer_bytes: bytes | None = None
    params: fingerprint.FingerprintParams = fingerprint.DEFAULT_PARAMS

    def options(self) -> KernelOptions:
        """The kernel options, with the tokenizer file written where this worker can read it."""
        return recording_options(self.text_fields, self.min_chars, self.params, _local(self))


def _local(job: Job) -> TokenizerFile | None:
    spec = job.tokenizer
    if spec is None or job.tokenizer_bytes is None or os.path.isfile(spec.path):
        return spec
    copy = Path(tempfile.gettempdir()) / f"ledger-tokenizer-{spec.sha256}.json"
    if not copy.is_file():
        partial = copy.with_name(f"{copy.name}.{os.getpid()}")
        partial.write_bytes(job.tokenizer_bytes)
        partial.replace(copy)
    return TokenizerFile(str(copy), spec.sha256, spec.field)


def plan(inputs: Sequence[tuple[str, str]]) -> tuple[list[Shard], list[dict[str, int | str]]]:
    """The shards (name, location) in batch order from their footers, and the items of the run:
    one per non-empty row group, one per file for its sha256."""
    shards: list[Shard] = []
    items: list[dict[str, int | str]] = []
    offset = 0
    for index, (name, location) in enumerate(inputs):
        fs, path = filesystem(location)
        try:
            with fs.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
        except FileNotFoundError as exc:
            raise InputError(f"{location}: cannot read ({exc.strerror or exc})") from exc
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise InputError(f"{location}: not a readable Parquet file ({exc})") from exc
        groups = tuple(meta.row_group(g).num_rows for g in range(meta.num_row_groups))
        shards.append(Shard(name, location, meta.num_rows, offset, groups))
        items.append({"kind": "sha256", "file": index})
        row = 0
        for group, rows in enumerate(groups):
            if rows:
                items.append(
                    {
                        "kind": "rows",
                        "file": index,
                        "group": group,
                        "row": row,
                        "begin": offset + row,
                    }
                )
            row += rows
        offset += meta.num_rows
    return shards, items


# --- tasks --------------------------------------------------------------------------------------------


def run_item(job: Job, item: Mapping[str, Any]) -> pa.Table:
    """Do one item of the plan on a worker: `WIRE` rows (a bad row comes back as an error row)."""
    file, location = int(item["file"]), job.locations[int(item["file"])]
    try:
        if item["kind"] == "sha256":
            return _wire([{"kind": "sha256", "file": file, "text": _sha256(location)}])
        return _wire(list(_hash_group(job, item)))
    except LedgerError as exc:
        where = int(item.get("begin", -1))
        return _wire([{"kind": "error", "file": file, "begin": where, "text": str(exc)}])
    except (OSError, ValueError, pa.ArrowException) as exc:
        where = int(item.get("begin", -1))
        text = f"{location}: row {int(item.get('row', 0)) + 1}: cannot read ({exc})"
        return _wire([{"kind": "error", "file": file, "begin": where, "text": text}])


def _wire(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=WIRE)


def _sha256(location: str) -> str:
    fs, path = filesystem(location)
    digest = hashlib.sha256()
    try:
        with fs.open_input_stream(path) as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"{location}: cannot read ({exc})") from exc
    return digest.hexdigest()


def _cuts(begin: int, count: int, split: int | None) -> Iterator[tuple[int, int]]:
    """[start, stop) pieces of positions [begin, begin + count) that stay within one part."""
    start, stop = begin, begin + count
    while start < stop:
        end = min(stop, (start // split + 1) * split) if split else stop
        yield start, end
        start = end


def _hash_group(job: Job, item: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Hash one row group, write its rows to the spill, yield its ranges (adjacent ones merged)."""
    file, group = int(item["file"]), int(item["group"])
    location = job.locations[file]
    fs, path = filesystem(location)
    with fs.open_input_file(path) as f:
        batches = pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS, row_groups=[group])
        tag = f"{file:06d}-{group:06d}"
        yield from hash_rows(
            job, batches, int(item["begin"]), location, int(item["row"]), tag, file
        )


def hash_rows(
    job: Job,
    batches: Iterable[pa.RecordBatch],
    position: int,
    name: str,
    row: int,
    tag: str,
    file: int = -1,
) -> Iterator[dict[str, Any]]:
    """Hash consecutive records from batch position `position` on (`name: row N` names a bad one,
    counting from `row`), cut at multiples of the job's split; write their rows to the spill as
    `records-<tag>` and `segments-<tag>`; yield one `WIRE` row per range (adjacent ones merged)."""
    options = job.options()
    records: list[pa.Table] = []
    segments: list[pa.Table] = []
    ranges: list[tuple[int, RangeSummary, bool]] = []
    for batch in batches:
        for start, stop in _cuts(position, batch.num_rows, job.split):
            part, local = divmod(start, job.split) if job.split else (0, start)
            piece = batch.slice(start - position, stop - start)
            origin = Origin(name, row + start - position + 1, rows=True)
            table, summary = hash_range(piece, options, local, origin=origin)
            records.append(_record_rows(table, part, local))
            segments.append(_segment_rows(table, part, local))
            seen = summary.without_text < summary.count or _has_text(piece, job.text_fields)
            last = ranges[-1] if ranges else None
            if last is not None and last[0] == part and last[1].end == summary.begin:
                last[1].merge(summary)
                ranges[-1] = (part, last[1], last[2] or seen)
            else:
                ranges.append((part, summary, seen))
        position += batch.num_rows
        row += batch.num_rows
    if not records:
        return
    _write(job.spill, f"records-{tag}", pa.concat_tables(records))
    _write(job.spill, f"segments-{tag}", pa.concat_tables(segments))
    for part, summary, seen in ranges:
        yield {
            "kind": "range",
            "file": file,
            "part": part,
            "begin": summary.begin,
            "end": summary.end,
            "record_hashes": summary.records.hashes,
            "fingerprint_hashes": summary.fingerprints.hashes,
            "without_text": summary.without_text,
            "token_records": summary.token_records,
            "text_seen": seen,
        }


def _has_text(rows: pa.RecordBatch, fields: Sequence[str] | None) -> bool:
    """Whether any record holds text under `fields` (asked only of ranges with no segment at all)."""
    if fields is None:
        return True
    return any(
        any(True for _ in text_spec.record_texts(record, list(fields)))
        for _, record in row_objects(rows, "<rows>", 1)
        if isinstance(record, dict)
    )


def _record_rows(table: pa.Table, part: int, begin: int) -> pa.Table:
    n = table.num_rows
    return pa.Table.from_arrays(
        [
            pa.array(np.full(n, part, dtype=np.int64)),
            pa.array(np.arange(begin, begin + n, dtype=np.int64)),
            table.column("digest").cast(pa.binary()),
            table.column("fingerprint").cast(pa.binary()),
        ],
        schema=RECORD_SCHEMA,
    )


def _segment_rows(table: pa.Table, part: int, begin: int) -> pa.Table:
    column = table.column("segments").combine_chunks()
    counts = np.asarray(pc.list_value_length(column).fill_null(0), dtype=np.int64)
    positions = np.repeat(np.arange(begin, begin + table.num_rows, dtype=np.int64), counts)
    return pa.Table.from_arrays(
        [
            pa.array(np.full(len(positions), part, dtype=np.int64)),
            pa.array(positions),
            pc.list_flatten(column).cast(pa.binary()),
        ],
        schema=SEGMENT_SCHEMA,
    )


def _write(spill: str, name: str, table: pa.Table) -> None:
    """One Parquet partition of the run (hashes are random bytes: no dictionary, no compression)."""
    fs, base = filesystem(spill)
    pq.write_table(
        table,
        f"{base.rstrip('/')}/{name}.parquet",
        filesystem=fs,
        compression="none",
        use_dictionary=False,
        write_statistics=False,
    )


# --- driver -------------------------------------------------------------------------------------------


@dataclass
class Collector:
    """The driver's side: merges the tasks' `WIRE` rows, in any arrival order, into the parts'
    summaries; holds O(log n) hashes per range still waiting for its left neighbour."""

    shards: list[Shard]
    split: int | None
    mergers: dict[int, RangeMerger] = field(default_factory=dict)
    digests: dict[int, str] = field(default_factory=dict)
    errors: list[tuple[int, int, str]] = field(default_factory=list)
    token_records: dict[int, int] = field(default_factory=dict)
    text_seen: bool = False
    ranges: int = 0
    records: int = 0  # records in the ranges merged so far
    total: int | None = None  # records of a run without shards (a DataFrame)

    def add(self, rows: pa.Table | pa.RecordBatch) -> None:
        for row in rows.to_pylist():
            file = int(row["file"])
            if row["kind"] == "sha256":
                self.digests[file] = str(row["text"])
            elif row["kind"] == "error":
                self.errors.append((file, int(row["begin"]), str(row["text"])))
            else:
                begin, end = int(row["begin"]), int(row["end"])
                summary = RangeSummary(
                    CompactRange(begin, end, list(row["record_hashes"])),
                    CompactRange(begin, end, list(row["fingerprint_hashes"])),
                    int(row["without_text"]),
                    int(row["token_records"]),
                )
                self.mergers.setdefault(int(row["part"]), RangeMerger()).add(summary)
                self.token_records[file] = self.token_records.get(file, 0) + summary.token_records
                self.text_seen = self.text_seen or bool(row["text_seen"])
                self.ranges += 1
                self.records += end - begin

    def finish(self, job: Job) -> HashedBatches:
        """The batches' totals, as a single-process run states them; the first problem in batch
        order (a bad row, a file without token ids) is an InputError."""
        problems = [(file, begin, text) for file, begin, text in self.errors]
        if job.tokenizer is not None and not self.shards and not sum(self.token_records.values()):
            problems.append((-1, 0, _no_tokens("the table", job.tokenizer, self.total or 0)))
        if job.tokenizer is not None:
            for index, shard in enumerate(self.shards):
                if not self.token_records.get(index):
                    text = _no_tokens(shard.location, job.tokenizer, shard.rows)
                    problems.append((index, shard.offset + shard.rows, text))
        if problems:
            raise InputError(min(problems)[2])
        total = self.total if self.total is not None else sum(s.rows for s in self.shards)
        if total == 0:
            raise InputError("no records to record: the input is empty")
        step = self.split or total
        parts = []
        for part in range((total + step - 1) // step):
            merged = self.mergers[part].result() if part in self.mergers else RangeSummary.empty()
            first, last = part * step, min(total, (part + 1) * step)
            if merged.count != last - first:
                raise InputError(
                    f"the engine hashed {merged.count} of the {last - first} records at positions "
                    f"[{first}, {last}): a task's output was lost"
                )
            files = tuple(
                i
                for i, s in enumerate(self.shards)
                if s.rows and s.offset < last and s.offset + s.rows > first
            )
            parts.append(
                PartSummary(
                    merged.count,
                    merged.records_root().hex(),
                    merged.fingerprints_root().hex(),
                    files,
                    merged.without_text,
                )
            )
        if job.text_fields and not self.text_seen and all(p.without_text == p.count for p in parts):
            where = ", ".join(s.location for s in self.shards) or "the records"
            fields = ", ".join(repr(f) for f in job.text_fields)
            raise InputError(
                f"{where}: text field {fields} matches no text in any of the {total} records "
                "(check the dotted path; token ids have no text)"
            )
        missing = [s.location for i, s in enumerate(self.shards) if i not in self.digests]
        if missing:
            raise InputError(f"{missing[0]}: the engine returned no sha256 for the file")
        sources = [{"file": s.name, "sha256": self.digests[i]} for i, s in enumerate(self.shards)]
        spill = job.spill.rstrip("/")
        return HashedBatches(
            parts,
            sources,
            Path(f"{spill}/records-*.parquet"),
            Path(f"{spill}/segments-*.parquet"),
            job.params,
        )


def _no_tokens(where: str, tokenizer: TokenizerFile, count: int) -> str:
    return (
        f"{where}: token field {tokenizer.field!r} is missing in every one of the {count} records "
        "(check the dotted path with --token-field)"
    )


Runner = Callable[[Job, list[dict[str, int | str]]], Iterable[pa.Table | pa.RecordBatch]]
"""An engine: runs `run_item(job, item)` for every item on its workers; yields their `WIRE` rows."""


@dataclass(frozen=True)
class EngineRun:
    """A batch recorded by an engine: the entries, and how the work was cut."""

    result: BatchResult
    items: int  # row groups and file digests scheduled
    ranges: int  # ranges the tasks returned


def inputs_of(paths: Sequence[str | Path]) -> list[tuple[str, str]]:
    """(name the batch's `source` gives it, location) per Parquet shard, in batch order: a local
    directory is its files in name order (as `ledger record batch`); a URI names one file."""
    out: list[tuple[str, str]] = []
    for path in paths:
        text = str(path)
        if "://" in text:
            out.append((text.rstrip("/").rsplit("/", 1)[-1], text))
            _parquet_only(text)
            continue
        for name, file in formats.data_files([Path(text)]):
            _parquet_only(str(file))
            out.append((name, str(file)))
    return out


def _parquet_only(location: str) -> None:
    if not location.lower().endswith((".parquet", ".pq")):
        raise UsageError(
            f"{location}: the engines read Parquet shards (.parquet, .pq); record JSON Lines, text "
            "or Arrow files with --engine local (the default)"
        )


def record_shards(
    writer: LogWriter,
    paths: Sequence[str | Path],
    start: Callable[[], Runner],
    *,
    id: str,
    split: int | None = None,
    text_fields: Sequence[str] | None = None,
    derived_from: Sequence[int | str] = (),
    dataset: str | None = None,
    min_segment_chars: int = text_spec.MIN_SEGMENT_CHARS,
    tokenizer: Path | str | None = None,
    token_field: str | None = None,
    spill: str | None = None,
    progress: Progress | None = None,
) -> EngineRun:
    """`ledger record batch` on Parquet shards, hashed by the workers of the engine `start()` starts
    (once the options, shards and references have been checked): the same entries as a
    single-process run. `spill` is where tasks write the record partitions: a path or URI every
    worker can write and this process can read (default: a temporary directory next to the ledger,
    for workers on this machine)."""
    spec = check_batch_options(id, split, dataset, min_segment_chars, tokenizer, token_field)
    if not paths:
        raise UsageError("record_batch needs files")
    fields = tuple(text_fields) if text_fields else None
    shards, items = plan(inputs_of(paths))
    if derived_from:
        with writer.session() as conn:
            resolve_calls(conn, derived_from)
    result, ranges = record_run(
        writer,
        lambda job: start()(job, items),
        Collector(shards, split),
        id=id,
        split=split,
        text_fields=fields,
        derived_from=derived_from,
        dataset=dataset,
        min_segment_chars=min_segment_chars,
        tokenizer=spec,
        spill=spill,
        progress=progress,
    )
    return EngineRun(result, len(items), ranges)


def record_run(
    writer: LogWriter,
    work: Callable[[Job], Iterable[pa.Table | pa.RecordBatch]],
    collector: Collector,
    *,
    id: str,
    split: int | None,
    text_fields: tuple[str, ...] | None,
    derived_from: Sequence[int | str],
    dataset: str | None,
    min_segment_chars: int,
    tokenizer: TokenizerFile | None,
    spill: str | None,
    progress: Progress | None = None,
) -> tuple[BatchResult, int]:
    """Run `work(job)` (the tasks' `WIRE` rows) with the spill set up, merge its rows into
    `collector`, append the batches; the result and the number of ranges merged. `progress`
    advances by the records of each range as it arrives."""
    advance = progress or no_progress
    local = SpillDir(writer.path)
    remote = None
    try:
        if spill is None:
            where = str(local())
        else:
            remote = f"{spill.rstrip('/')}/ledger-{socket.gethostname()}-{uuid.uuid4().hex}"
            fs, base = filesystem(remote)
            fs.create_dir(base, recursive=True)
            where = remote
        job = Job(
            tuple(s.location for s in collector.shards),
            where,
            split,
            text_fields,
            min_segment_chars,
            tokenizer,
            Path(tokenizer.path).read_bytes() if tokenizer is not None else None,
        )
        for rows in work(job):
            before = collector.records
            collector.add(rows)
            advance(collector.records - before)
        hashed = collector.finish(job)
        if remote is not None and "://" in remote:  # DuckDB reads local files: fetch the partitions
            fs, base = filesystem(remote)
            pafs.copy_files(base, str(local()), source_filesystem=fs)
            hashed.records = local() / "records-*.parquet"
            hashed.segments = local() / "segments-*.parquet"
        result = append_batch(
            writer, hashed, id, split, dataset, text_fields, derived_from, min_segment_chars,
            tokenizer,
        )  # fmt: skip
        return result, collector.ranges
    finally:
        local.cleanup()
        if remote is not None:
            try:
                fs, base = filesystem(remote)
                fs.delete_dir(base)
            except (OSError, LedgerError):
                pass
