"""Ranges of a batch's records, hashed anywhere and merged into the batch's roots (DESIGN.md "Engines").

A batch's records have positions 0..n-1: (shards in the order given, rows within a shard). A task
hashes a contiguous range of positions with the one kernel (`hash_range`: `kernel.hash_batch` plus a
`RangeSummary`) and sends back only the range's summary: the RFC 6962 compact ranges of its record
leaves and of its fingerprint leaves (O(log n) hashes each, `spec.merkle.CompactRange`), and the counts
the batch entry needs. A driver merges summaries in order (`RangeMerger`, in any arrival order) into
the batch's `records_root` and fingerprints root, bit-identical to a single-process recording, without
ever holding every leaf hash.

`recording_options` builds the kernel's options from a batch's recording options (text fields,
minimum segment length, fingerprint parameters, tokenizer) exactly as `ledger record batch` does; the
options are picklable, so an engine ships them to its workers once.

A summary travels as one row of `RANGE_SCHEMA` (`RangeSummary.to_arrow` / `from_arrow`), the form
Spark's `mapInArrow` and Ray's `map_batches` return.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from ledger.engine.kernel import ROWS, KernelOptions, Origin, hash_columns
from ledger.engine.tokens import TokenizerFile
from ledger.errors import UsageError
from ledger.spec import fingerprint
from ledger.spec.merkle import CompactRange, compact_nodes, root

__all__ = [
    "RANGE_SCHEMA",
    "RangeMerger",
    "RangeSummary",
    "hash_range",
    "compact_range",
    "merge_ranges",
    "record_fingerprint_blobs",
    "recording_options",
    "summarize",
]

_HASH: Final = pa.binary(32)
RANGE_SCHEMA: Final = pa.schema(
    [
        pa.field("begin", pa.int64(), nullable=False),
        pa.field("end", pa.int64(), nullable=False),
        pa.field("record_hashes", pa.list_(_HASH), nullable=False),
        pa.field("fingerprint_hashes", pa.list_(_HASH), nullable=False),
        pa.field("without_text", pa.int64(), nullable=False),
        pa.field("token_records", pa.int64(), nullable=False),
    ]
)
"""One row per range: the wire form of `RangeSummary` (compact range hashes, left to right)."""


def record_fingerprint_blobs(
    texts_per_record: Sequence[Sequence[str]],
    params: fingerprint.FingerprintParams = fingerprint.DEFAULT_PARAMS,
) -> tuple[bytes, npt.NDArray[np.int64]]:
    """The fingerprint blobs `ledger record batch` keeps, end to end with their end offsets; records
    without segment texts get an empty blob (module level, so a partial of it pickles)."""
    if not any(texts_per_record):
        return b"", np.zeros(len(texts_per_record), dtype=np.int64)
    return fingerprint.fingerprint_record_blobs(texts_per_record, params)


def recording_options(
    text_fields: Sequence[str] | None = None,
    min_chars: int = 32,
    params: fingerprint.FingerprintParams = fingerprint.DEFAULT_PARAMS,
    tokenizer: TokenizerFile | None = None,
) -> KernelOptions:
    """The kernel options of a batch recorded with these options (fingerprints always computed)."""
    if isinstance(text_fields, str):
        raise UsageError(
            f"text fields must be a list of dotted paths, found the string {text_fields!r}"
        )
    fields = tuple(text_fields) if text_fields is not None else None
    blobs = functools.partial(record_fingerprint_blobs, params=params)
    return KernelOptions(fields, min_chars, blobs, False, tokenizer)


@dataclass
class RangeSummary:
    """What a task sends back for the records ``[begin, end)`` of a batch: compact ranges of their
    record leaves and fingerprint leaves, the records without any segment, and (with a tokenizer)
    the records that held token ids."""

    records: CompactRange
    fingerprints: CompactRange
    without_text: int = 0
    token_records: int = 0

    def __post_init__(self) -> None:
        if (self.records.begin, self.records.end) != (
            self.fingerprints.begin,
            self.fingerprints.end,
        ):
            raise UsageError(
                f"a range's record leaves [{self.records.begin}, {self.records.end}) and fingerprint "
                f"leaves [{self.fingerprints.begin}, {self.fingerprints.end}) must cover the same "
                "positions"
            )

    @classmethod
    def empty(cls, at: int = 0) -> RangeSummary:
        return cls(CompactRange(at), CompactRange(at))

    @property
    def begin(self) -> int:
        return self.records.begin

    @property
    def end(self) -> int:
        return self.records.end

    @property
    def count(self) -> int:
        return self.end - self.begin

    def merge(self, right: RangeSummary) -> None:
        """Absorb the range that starts where this one ends."""
        self.records.merge(right.records)
        self.fingerprints.merge(right.fingerprints)
        self.without_text += right.without_text
        self.token_records += right.token_records

    def records_root(self) -> bytes:
        return self.records.root()

    def fingerprints_root(self) -> bytes:
        return self.fingerprints.root()

    def to_arrow(self) -> pa.Table:
        """This summary as one `RANGE_SCHEMA` row."""
        return pa.Table.from_pylist(
            [
                {
                    "begin": self.begin,
                    "end": self.end,
                    "record_hashes": self.records.hashes,
                    "fingerprint_hashes": self.fingerprints.hashes,
                    "without_text": self.without_text,
                    "token_records": self.token_records,
                }
            ],
            schema=RANGE_SCHEMA,
        )

    @classmethod
    def from_arrow(cls, table: pa.Table | pa.RecordBatch) -> list[RangeSummary]:
        """The summaries held in `RANGE_SCHEMA` rows (checked: each range's hashes must fit it)."""
        out = []
        for row in table.to_pylist():
            begin, end = int(row["begin"]), int(row["end"])
            out.append(
                cls(
                    CompactRange(begin, end, row["record_hashes"]),
                    CompactRange(begin, end, row["fingerprint_hashes"]),
                    int(row["without_text"]),
                    int(row["token_records"]),
                )
            )
        return out


def summarize(
    records: pa.Table | pa.RecordBatch, begin: int, token_records: int = 0
) -> RangeSummary:
    """The summary of `kernel.hash_batch`'s output for the records from position `begin` on."""
    leaves = _joined(records.column("leaf_hash"))
    prints_column = records.column("fingerprint_hash")
    if prints_column.null_count:
        raise UsageError("a range summary needs fingerprints: hash with `recording_options`")
    return _summary(
        begin,
        leaves,
        _joined(prints_column),
        np.asarray(pc.list_value_length(records.column("segments"))),
        token_records,
    )


def hash_range(
    batch: pa.RecordBatch | pa.Table,
    options: KernelOptions,
    begin: int,
    form: str = ROWS,
    origin: Origin | None = None,
) -> tuple[pa.Table, RangeSummary]:
    """`kernel.hash_batch` on the records at positions ``[begin, begin + n)`` of a batch, with the
    range's summary (the one kernel: nothing else hashes records). `options` must compute
    fingerprints (see `recording_options`)."""
    if options.fingerprint_blobs is None:
        raise UsageError("a range summary needs fingerprints: hash with `recording_options`")
    columns = hash_columns(batch, options, form, origin)
    summary = _summary(
        begin,
        columns.leaf_hashes,
        columns.fingerprint_hashes,
        columns.segment_counts,
        columns.token_records,
    )
    return columns.to_arrow(), summary


def _summary(
    begin: int,
    leaf_hashes: bytes,
    fingerprint_hashes: bytes,
    segment_counts: npt.NDArray[np.int64] | npt.NDArray[np.int32],
    token_records: int,
) -> RangeSummary:
    records = compact_range(begin, leaf_hashes)
    prints = compact_range(begin, fingerprint_hashes)
    bare = int(np.count_nonzero(np.asarray(segment_counts) == 0))
    return RangeSummary(records, prints, bare, token_records)


def compact_range(begin: int, joined: bytes) -> CompactRange:
    """The compact range of the leaf hashes `joined` (32 bytes each, end to end) placed from
    position `begin`: each node's hash is the root of its (perfect) slice of leaves."""
    count = len(joined) // 32
    view = memoryview(joined)
    hashes = []
    for level, index in compact_nodes(begin, begin + count):
        start = (index << level) - begin
        leaves = [bytes(view[32 * i : 32 * i + 32]) for i in range(start, start + (1 << level))]
        hashes.append(root(leaves))
    return CompactRange(begin, begin + count, hashes)


def _joined(column: pa.ChunkedArray | pa.Array) -> bytes:
    """A fixed-size binary(32) column's values end to end."""
    if isinstance(column, pa.ChunkedArray):
        return b"".join(_joined(chunk) for chunk in column.chunks)
    if not len(column):
        return b""
    data = column.buffers()[1]
    return bytes(memoryview(data)[32 * column.offset : 32 * (column.offset + len(column))])


class RangeMerger:
    """Merge range summaries arriving in any order into the summary of ``[0, n)``: a summary is held
    only until every range before it has come, so memory grows with the ranges out of order, never
    with the records."""

    def __init__(self) -> None:
        self._done = RangeSummary.empty(0)
        self._waiting: dict[int, RangeSummary] = {}

    def add(self, summary: RangeSummary) -> None:
        if summary.begin < self._done.end or summary.begin in self._waiting:
            raise UsageError(
                f"range [{summary.begin}, {summary.end}) overlaps a range already merged"
            )
        self._waiting[summary.begin] = summary
        while self._done.end in self._waiting:
            self._done.merge(self._waiting.pop(self._done.end))

    def result(self) -> RangeSummary:
        """The merged summary; every range from 0 must have come, with no gap."""
        if self._waiting:
            first = min(self._waiting)
            raise UsageError(
                f"ranges leave a gap: records [{self._done.end}, {first}) were never summarized"
            )
        return self._done


def merge_ranges(summaries: Iterable[RangeSummary]) -> RangeSummary:
    """The summary of ``[0, n)`` from summaries of its contiguous ranges, in any order."""
    merger = RangeMerger()
    for summary in summaries:
        merger.add(summary)
    return merger.result()
