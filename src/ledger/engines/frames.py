"""A pipeline's own table (a Spark DataFrame, a Ray Dataset) recorded as one batch, hashed where it is.

A distributed table has no row order of its own (partitions are computed in any order, re-split at
will), so a batch's positions would not be reproducible. The caller names the order: `order_by`
columns whose values are unique. The engine sorts by them (Spark's `orderBy`, Ray's `sort`: ranges
of keys, each in one chunk, chunks in key order) and the run takes two passes over the sorted table:

1. each chunk (a Spark partition, a Ray block) reports its first key and its row count, and checks
   that its keys rise strictly (a repeated or null key is an InputError: the order would not be
   defined); the driver turns the counts into each chunk's first position;
2. each chunk finds its first position by its first key and hashes its rows from there with the one
   kernel (`shards.hash_rows`: spill partitions, compact ranges), exactly as `ledger record batch`
   hashes the same rows, sorted, given as an Arrow table. A chunk whose first key or count changed
   between the passes (the table was recomputed differently) is an error, never a different root.

The record is every column of a row, the order columns included (select the columns first to
record fewer).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute  # type: ignore[import-untyped]  # noqa: F401  (pa.compute)

from ledger.engines.shards import (
    BATCH_ROWS,
    WIRE,
    Collector,
    EngineRun,
    Job,
    hash_rows,
    record_run,
)
from ledger.errors import InputError, UsageError
from ledger.log.append import LogWriter
from ledger.recording.batches import check_batch_options
from ledger.recording.refs import resolve_calls
from ledger.spec import text as text_spec

__all__ = [
    "BOUNDS",
    "BOUNDS_DDL",
    "Offsets",
    "bounds",
    "hash_chunk",
    "order_columns",
    "record_frame",
]

BOUNDS: Final = pa.schema(
    [("chunk", pa.int64()), ("first", pa.string()), ("count", pa.int64()), ("error", pa.string())]
)
"""Pass 1's answer per chunk: its first key (JSON), its rows, or what is wrong with its keys."""
BOUNDS_DDL: Final = "chunk long, first string, count long, error string"

NAME: Final = "the table"  # how a bad row is named: `the table: row N` (N = position + 1)

Offsets = dict[str, tuple[int, int]]
"""A chunk's first key (JSON) -> (its first position, its rows)."""


def order_columns(order_by: str | Sequence[str] | None) -> list[str]:
    if order_by is None or not order_by:
        raise UsageError(
            "order_by: name the column(s) whose unique values order the records (a distributed "
            "table has no row order of its own, so the batch's root would not be reproducible)"
        )
    return [order_by] if isinstance(order_by, str) else list(order_by)


def _key_text(key: tuple[Any, ...]) -> str:
    return json.dumps(list(key), default=repr, separators=(",", ":"))


def _keys(batch: pa.RecordBatch, order: Sequence[str]) -> list[tuple[Any, ...]]:
    missing = [c for c in order if c not in batch.schema.names]
    if missing:
        raise UsageError(f"order_by: no column {missing[0]!r} in the table")
    return list(zip(*[batch.column(c).to_pylist() for c in order]))


def bounds(
    batches: Iterable[pa.RecordBatch], order: Sequence[str], chunk: int, keys: bool = False
) -> pa.Table:
    """Pass 1 on one chunk's batches: one `BOUNDS` row; with `keys`, followed by the order columns
    of the chunk's first row (typed, so the driver can sort chunks whose order it is not told)."""
    head: pa.RecordBatch | None = None
    first: tuple[Any, ...] | None = None
    last: tuple[Any, ...] | None = None
    count = 0
    error = None
    try:
        for batch in batches:
            for key in _keys(batch, order):
                if any(v is None for v in key):
                    raise InputError(f"order_by {', '.join(order)}: a row has no value (null)")
                if last is not None and not last < key:
                    raise InputError(
                        f"order_by {', '.join(order)}: the value {_key_text(key)} appears twice; "
                        "the order columns must be unique"
                    )
                first = key if first is None else first
                last = key
                count += 1
            if head is None and batch.num_rows:
                head = batch.slice(0, 1)
    except (InputError, UsageError, TypeError) as exc:
        error = str(exc)
    text = None if first is None else _key_text(first)
    row = pa.Table.from_pylist(
        [{"chunk": chunk, "first": text, "count": count, "error": error}], schema=BOUNDS
    )
    if keys and head is not None and error is None:
        for name in order:
            row = row.append_column(f"key.{name}", head.column(name))
    return row


def chunk_order(rows: pa.Table, order: Sequence[str]) -> list[dict[str, Any]]:
    """Pass 1's rows (from `bounds(..., keys=True)`, in any order) numbered in key order."""
    errors = [r for r in rows.select(["error"]).to_pylist() if r["error"]]
    if errors:
        raise InputError(str(errors[0]["error"]))
    filled = rows.filter(pa.compute.greater(rows.column("count"), 0))
    ordered = filled.sort_by([(f"key.{name}", "ascending") for name in order])
    return [{**r, "chunk": k} for k, r in enumerate(ordered.select(BOUNDS.names).to_pylist())]


def offsets(rows: Iterable[dict[str, Any]]) -> tuple[Offsets, int]:
    """Each chunk's first position from pass 1's rows (in chunk order), and the table's rows."""
    out: Offsets = {}
    total = 0
    for row in sorted(rows, key=lambda r: int(r["chunk"])):
        if row["error"]:
            raise InputError(str(row["error"]))
        if not row["count"]:
            continue
        first = str(row["first"])
        if first in out:
            raise InputError(f"order_by: the value {first} appears twice; the order must be unique")
        out[first] = (total, int(row["count"]))
        total += int(row["count"])
    return out, total


def hash_chunk(
    job: Job, batches: Iterator[pa.RecordBatch], order: Sequence[str], where: Offsets
) -> pa.Table:
    """Pass 2 on one chunk: its `WIRE` rows (ranges, or an error if the chunk changed)."""
    batches = (b for b in batches if b.num_rows)
    head = next(batches, None)
    if head is None:
        return WIRE.empty_table()
    first = _key_text(_keys(head, order)[0])
    if first not in where:
        return _changed(first)
    begin, count = where[first]
    seen = [0]

    def counted() -> Iterator[pa.RecordBatch]:
        for batch in (head, *batches):
            for piece in pa.Table.from_batches([batch]).to_batches(max_chunksize=BATCH_ROWS):
                seen[0] += piece.num_rows
                yield piece

    try:
        rows = list(hash_rows(job, counted(), begin, NAME, begin, f"{begin:012d}"))
    except InputError as exc:
        return pa.Table.from_pylist(
            [{"kind": "error", "file": -1, "begin": begin, "text": str(exc)}], schema=WIRE
        )
    if seen[0] != count:
        return _changed(first)
    return pa.Table.from_pylist(rows, schema=WIRE)


def _changed(first: str) -> pa.Table:
    text = (
        f"the chunk starting at {first} differs between the two passes (the table was recomputed "
        "differently): persist or materialize it first"
    )
    return pa.Table.from_pylist(
        [{"kind": "error", "file": -1, "begin": -1, "text": text}], schema=WIRE
    )


def record_frame(
    writer: LogWriter,
    count_pass: Callable[[], list[dict[str, Any]]],
    hash_pass: Callable[[Job, Offsets], Iterable[pa.Table | pa.RecordBatch]],
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
) -> EngineRun:
    """Record a sorted distributed table as one batch (or `split` batches): `count_pass()` gives
    pass 1's `BOUNDS` rows, `hash_pass(job, offsets)` pass 2's `WIRE` rows."""
    spec = check_batch_options(id, split, dataset, min_segment_chars, tokenizer, token_field)
    if derived_from:
        with writer.session() as conn:
            resolve_calls(conn, derived_from)
    chunks = count_pass()
    where, total = offsets(chunks)
    if not total:
        raise InputError("no records to record: the input is empty")
    result, ranges = record_run(
        writer,
        lambda job: hash_pass(job, where),
        Collector([], split, total=total),
        id=id,
        split=split,
        text_fields=tuple(text_fields) if text_fields else None,
        derived_from=derived_from,
        dataset=dataset,
        min_segment_chars=min_segment_chars,
        tokenizer=spec,
        spill=spill,
    )
    return EngineRun(result, len(chunks), ranges)
