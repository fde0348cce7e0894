"""The engine room: the public record-hashing kernel (Arrow in, Arrow out) and the one worker pool."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ledger.engine.kernel import (
    JSON_LINES,
    RECORD_SCHEMA,
    ROWS,
    TEXT_LINES,
    KernelOptions,
    Origin,
    RecordColumns,
    hash_batch,
    hash_columns,
)
from ledger.engine.pool import Ready, WorkerPool, worker_job
from ledger.errors import InputError, UsageError
from ledger.ingest.pipeline import iter_record_columns
from ledger.spec.fingerprint import fingerprint_record_blobs
from ledger.spec.leaves import hash_record, record_leaf
from ledger.spec.merkle import leaf_hash

CONFORMANCE = json.loads((Path(__file__).parent / "conformance.json").read_text(encoding="utf-8"))
OPTIONS = KernelOptions(fingerprint_blobs=fingerprint_record_blobs)
TEXT = "a paragraph of training text long enough to be one segment, number "
RECORDS = [{"text": TEXT + str(i), "n": i, "tags": ["x", None]} for i in range(50)]


def expected_rows(records: list[object]) -> list[dict[str, object]]:
    """The kernel's output computed one record at a time with the hashing primitives."""
    rows: list[dict[str, object]] = []
    for record in records:
        h = hash_record(record)
        blobs, ends = fingerprint_record_blobs([h.texts])
        rows.append(
            {
                "digest": h.digest,
                "leaf_hash": leaf_hash(record_leaf(h.digest, h.segments)),
                "segments": list(h.segments),
                "fingerprint": blobs[: int(ends[0])],
                "fingerprint_hash": leaf_hash(blobs[: int(ends[0])]),
            }
        )
    return rows


def test_rows_and_json_lines_of_the_same_records_hash_the_same() -> None:
    table = pa.Table.from_pylist(RECORDS)
    lines = pa.array([json.dumps(r).encode() + b"\n" for r in RECORDS], pa.binary())
    by_rows = hash_batch(table, OPTIONS, ROWS)
    by_lines = hash_batch(pa.record_batch([lines], names=["line"]), OPTIONS, JSON_LINES)
    assert by_rows.schema == RECORD_SCHEMA
    assert by_rows.equals(by_lines)
    assert by_rows.to_pylist() == expected_rows(list(RECORDS))


def test_the_kernel_matches_the_conformance_vectors() -> None:
    vectors = CONFORMANCE["records"]
    lines = pa.array([v["record_json"] for v in vectors], pa.string())
    out = hash_batch(pa.table({"json": lines}), KernelOptions(), JSON_LINES).to_pylist()
    for vector, row in zip(vectors, out, strict=True):
        assert row["digest"].hex() == vector["sha256"]
        assert row["leaf_hash"].hex() == vector["record_leaf_hash"]
        assert row["fingerprint"] is None and row["fingerprint_hash"] is None


def test_text_lines_skip_empty_lines_and_drop_line_endings() -> None:
    lines = pa.array([b"first line\r\n", b"\n", b"second line"], pa.binary())
    out = hash_columns(lines, KernelOptions(), TEXT_LINES)
    assert out.digests == hash_record("first line").digest + hash_record("second line").digest


def test_a_bad_record_is_named_by_its_origin() -> None:
    lines = pa.array([b'{"a": 1}', b"", b"[1]"], pa.binary())
    with pytest.raises(InputError, match=r"^data\.jsonl:12: not a JSON object \(found array\)$"):
        hash_columns(lines, OPTIONS, JSON_LINES, Origin("data.jsonl", 10))
    rows = pa.table({"blob": pa.array([None, b"\x00"], pa.binary())})
    with pytest.raises(InputError, match=r"^t\.parquet: row 5, column 'blob': binary"):
        hash_columns(rows, OPTIONS, ROWS, Origin("t.parquet", 4, rows=True))
    with pytest.raises(UsageError, match="unknown kernel input form"):
        hash_columns(rows, OPTIONS, "csv")
    with pytest.raises(UsageError, match="found the string"):
        KernelOptions(text_fields="messages.content")  # type: ignore[arg-type]


def test_columns_round_trip_through_their_buffers() -> None:
    columns = hash_columns(pa.Table.from_pylist(RECORDS), OPTIONS)
    again = RecordColumns.from_buffers(columns.count, columns.buffers())
    assert again.to_arrow().equals(columns.to_arrow())


def test_files_hashed_by_the_pipeline_equal_the_kernel_on_a_table(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), path, row_group_size=7)
    blocks = list(iter_record_columns([path], fingerprint_record_blobs, workers=1))
    joined = pa.concat_tables([b.to_arrow() for b in blocks])
    assert joined.equals(hash_batch(pa.Table.from_pylist(RECORDS), OPTIONS))


def scaled(factor: int, value: int) -> int:
    if value < 0:
        raise InputError(f"negative value {value}")
    job = worker_job()
    assert isinstance(job, int)
    return job * factor * value


def test_the_pool_keeps_order_bounds_pending_work_and_raises_a_worker_error() -> None:
    with WorkerPool(2, 10, in_flight=3) as pool:
        tasks = [1, Ready(-1), 2, 3, 4, 5]
        assert list(pool.map(functools.partial(scaled, 2), tasks)) == [20, -1, 40, 60, 80, 100]
        pending = pool.submit(scaled, 3, 7)
        assert pending.result() == 210 and pending.done()
        with pytest.raises(InputError, match="^negative value -1$") as info:
            list(pool.map(functools.partial(scaled, 1), [1, -1, 2]))
        assert info.value.__cause__ is None


def test_columns_from_buffers_equal_pyarrow_arrays() -> None:
    import numpy as np

    from ledger.engine.columns import bytes_column, int_column, int_values

    assert int_column(np.arange(5)).equals(pa.array(range(5), pa.int64()))
    assert int_column([3, -1, 2], "int8").equals(pa.array([3, -1, 2], pa.int8()))
    assert int_column(np.arange(10)[::3]).to_pylist() == [0, 3, 6, 9]  # a strided view
    assert int_column([]).equals(pa.array([], pa.int64()))
    texts = ["call", None, "é", ""]
    assert bytes_column(texts, text=True).equals(pa.array(texts, pa.large_string()))
    blobs = [b"\x00\x01", None, None, b"", b"x" * 40]
    assert bytes_column(blobs, text=False).equals(pa.array(blobs, pa.large_binary()))
    sliced = pa.chunked_array([pa.array([7, 8, 9], pa.int64()).slice(1), pa.array([1], pa.int64())])
    assert int_values(sliced).tolist() == [8, 9, 1]
    assert int_values(pa.array([1, -2], pa.int8())).dtype == np.int64


def test_recording_and_verifying_import_no_pandas(tmp_path: Path) -> None:
    """pyarrow imports pandas (when installed) for `pa.array` and `to_numpy`: ~0.15 s of every
    command and of every verify worker. Recording, appending and verifying never ask for it."""
    import subprocess
    import sys

    pytest.importorskip("pandas")  # else the test proves nothing
    data = tmp_path / "chat.jsonl"
    data.write_text(
        "".join(json.dumps({"text": f"record number {i} " * 4}) + "\n" for i in range(50))
    )
    probe = """
import sys
from pathlib import Path
from ledger import Ledger
from ledger.log.verify import verify_ledger
lg = Ledger.init(Path(sys.argv[1]), origin="test.local/pandas")
lg.record_batch(id="b", files=[Path(sys.argv[2])])
assert verify_ledger(lg, workers=1).ok
print("pandas" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "l.duckdb"), str(data)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert out == ["False"]
