"""Recording batches, calls and checkpoints into real DuckDB ledgers.

Roots, digests and segments are checked against an independent implementation written here from
DESIGN.md (rfc8785 for JCS, unicodedata for normalization, a naive recursive RFC 6962 tree), never
against values our own code produced.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import Ledger, recording
from ledger.errors import DuplicateError, InputError, NotFoundError, UsageError
from ledger.recording import batches, calls
from ledger.recording import spill as spilling
from ledger.spec import fingerprint

CONFORMANCE = json.loads((Path(__file__).parent / "conformance.json").read_text())

# --- an independent reference implementation (DESIGN.md "Hashing (fixed)") -----------------------------


def ref_normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def ref_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from ref_strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from ref_strings(item)


def ref_segments(texts: Sequence[str], min_chars: int = 32) -> list[str]:
    found = {ref_normalize(t) for t in texts}
    return sorted(hashlib.sha256(n.encode()).hexdigest() for n in found if len(n) >= min_chars)


def _mark_big_ints(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53 - 1:
        return f"@big-int:{value}@"
    if isinstance(value, list):
        return [_mark_big_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _mark_big_ints(v) for k, v in value.items()}
    return value


def ref_jcs(value: Any) -> bytes:
    """rfc8785, with DESIGN's one extension: integers beyond 2**53-1 as their exact digits."""
    return re.sub(rb'"@big-int:(-?[0-9]+)@"', rb"\1", rfc8785.dumps(_mark_big_ints(value)))


def ref_digest(record: Any) -> str:
    data = record.encode() if isinstance(record, str) else ref_jcs(record)
    return hashlib.sha256(data).hexdigest()


def ref_leaf(record: Any, texts: Sequence[str] | None = None) -> bytes:
    chosen = list(ref_strings(record)) if texts is None else list(texts)
    body = {"sha256": ref_digest(record), "segments": ref_segments(chosen)}
    return rfc8785.dumps(body)


def ref_mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH, recursively, straight from the RFC."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_root(records: Sequence[Any]) -> str:
    return ref_mth([ref_leaf(r) for r in records]).hex()


# --- fixtures -------------------------------------------------------------------------------------------


def chat_record(i: int) -> dict[str, Any]:
    return {
        "id": 10**18 + i,  # a 64-bit id beyond 2**53: exact digits
        "messages": [
            {
                "role": "user",
                "content": f"Question {i}: what is the capital city of country number {i}?",
            },
            {
                "role": "assistant",
                "content": f"The capital of country {i} is a city with a long, long name.",
            },
        ],
        "meta": {"source": "unit-test", "tags": ["a", "b"], "score": i},
    }


def small_record(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "text": f"record {i}: a training sentence that is long enough to count as a segment",
    }


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fresh ledger per module; tests get copies (creating one costs a few DuckDB opens)."""
    path = tmp_path_factory.mktemp("template") / "ledger.duckdb"
    Ledger.init(path, origin="test.local/recording")
    return path


@pytest.fixture()
def lg(template: Path, tmp_path: Path) -> Ledger:
    shutil.copy(template, tmp_path / template.name)
    shutil.copytree(template.with_name("ledger.keys"), tmp_path / "ledger.keys")
    return Ledger.open(tmp_path / template.name)


def rows(lg: Ledger, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    conn = duckdb.connect(str(lg.path))
    try:
        return conn.execute(sql, list(params)).fetchall()
    finally:
        conn.close()


def write_jsonl(path: Path, records: Sequence[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --- batches --------------------------------------------------------------------------------------------


def test_batch_from_iterable_commits_root_rows_and_segments(lg: Ledger) -> None:
    records = [chat_record(i) for i in range(20)]
    result = lg.record_batch(records, id="run7/step-000001")
    assert not result.already_recorded
    [entry] = result.entries
    assert entry.count == 20
    assert entry.records_root == ref_root(records)
    body = lg.entry(entry.index).body
    assert body["kind"] == "batch" and body["id"] == "run7/step-000001"
    assert body["records_root"] == ref_root(records) and body["count"] == 20
    # fingerprints: one blob per record over its segment texts in segment-hash order, committed by a root
    texts = [
        sorted(
            {ref_normalize(t) for t in ref_strings(r) if len(ref_normalize(t)) >= 32},
            key=lambda n: hashlib.sha256(n.encode()).digest(),
        )
        for r in records
    ]
    blobs = fingerprint.fingerprint_records(texts)
    assert body["fingerprints"] == {
        "params": fingerprint.DEFAULT_PARAMS.to_json(),
        "root": ref_mth(blobs).hex(),
    }
    stored = rows(
        lg,
        "SELECT position, digest, fingerprint FROM records WHERE batch = ? ORDER BY 1",
        [entry.index],
    )
    assert [(p, bytes(d).hex()) for p, d, _ in stored] == [
        (i, ref_digest(r)) for i, r in enumerate(records)
    ]
    assert [bytes(f) for _, _, f in stored] == blobs
    segs = rows(lg, "SELECT position, segment FROM record_segments WHERE batch = ?", [entry.index])
    for i, record in enumerate(records):
        mine = sorted(bytes(s).hex() for p, s in segs if p == i)
        assert mine == ref_segments(list(ref_strings(record)))


def test_text_fields_limit_segments_but_not_the_digest(lg: Ledger) -> None:
    records = [chat_record(i) for i in range(3)]
    result = lg.record_batch(records, id="fields", text_fields=["messages.content"])
    texts = [[m["content"] for m in r["messages"]] for r in records]
    expected = ref_mth([ref_leaf(r, t) for r, t in zip(records, texts)]).hex()
    assert result.entries[0].records_root == expected
    assert lg.entry("fields").body["text_fields"] == ["messages.content"]


def test_same_records_from_jsonl_parquet_and_iterable_give_one_root(
    lg: Ledger, tmp_path: Path
) -> None:
    records = [chat_record(i) for i in range(50)]
    jsonl = write_jsonl(tmp_path / "data.jsonl", records)
    parquet = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet)
    a = lg.record_batch(id="from-jsonl", files=[jsonl]).entries[0]
    b = lg.record_batch(id="from-parquet", files=[parquet]).entries[0]
    c = lg.record_batch(records, id="from-iterable").entries[0]
    assert a.records_root == b.records_root == c.records_root == ref_root(records)
    source = lg.entry("from-jsonl").body["source"]
    assert source == [
        {"file": "data.jsonl", "sha256": hashlib.sha256(jsonl.read_bytes()).hexdigest()}
    ]
    packed = tmp_path / "data.jsonl.gz"
    packed.write_bytes(gzip.compress(jsonl.read_bytes()))
    d = lg.record_batch(id="from-gzip", files=[packed]).entries[0]
    assert d.records_root == a.records_root
    assert lg.entry("from-gzip").body["source"] == [
        {"file": "data.jsonl.gz", "sha256": hashlib.sha256(packed.read_bytes()).hexdigest()}
    ]


def test_txt_lines_are_records(lg: Ledger, tmp_path: Path) -> None:
    lines = [
        "First line of plain text, long enough to be a segment.",
        "short",
        "Third line, ÉCOLE and ﬁ ligature",
    ]
    path = tmp_path / "lines.txt"
    path.write_bytes(("\r\n".join(lines[:2]) + "\n\n" + lines[2] + "\n").encode())
    entry = lg.record_batch(id="text", files=[path]).entries[0]
    assert entry.count == 3
    assert entry.records_root == ref_mth([ref_leaf(line) for line in lines]).hex()


def test_conformance_records_root(lg: Ledger) -> None:
    from ledger.spec.jcs import (
        parse_json_line,  # exact big ints and 1.0-vs-1, as the vectors require
    )

    records = [parse_json_line(v["record_json"]) for v in CONFORMANCE["records"]]
    entry = lg.record_batch(records, id="vectors").entries[0]
    assert entry.records_root == CONFORMANCE["records_root"]
    stored = rows(lg, "SELECT digest FROM records WHERE batch = ? ORDER BY position", [entry.index])
    assert [bytes(d).hex() for (d,) in stored] == [v["sha256"] for v in CONFORMANCE["records"]]


def test_split_ids_dataset_and_checkpoint_by_dataset(lg: Ledger, tmp_path: Path) -> None:
    records = [small_record(i) for i in range(25)]
    path = write_jsonl(tmp_path / "train.jsonl", records)
    result = lg.record_batch(id="run7/data", files=[path], split=10)
    kinds = [(e.kind, e.id, e.count) for e in result.entries]
    assert kinds == [
        ("dataset", "run7/data", 25),
        ("batch", "run7/data/000000", 10),
        ("batch", "run7/data/000001", 10),
        ("batch", "run7/data/000002", 5),
    ]
    for k, entry in enumerate(result.entries[1:]):
        assert entry.records_root == ref_root(records[10 * k : 10 * k + 10])
        body = lg.entry(entry.index).body
        assert body["dataset"] == "run7/data"
        positions = rows(
            lg, "SELECT position FROM records WHERE batch = ? ORDER BY 1", [entry.index]
        )
        assert [p for (p,) in positions] == list(range(entry.count))
    assert result.entries[0].index < result.entries[1].index  # batches refer back to their dataset
    w = tmp_path / "model.safetensors"
    w.write_bytes(b"weights")
    ckpt = lg.record_checkpoint(id="run7/ckpt-1", weights=[w], batches=["run7/data"])
    assert ckpt.body["batches"] == ["run7/data/000000", "run7/data/000001", "run7/data/000002"]


def test_dataset_label_without_split_is_expanded_too(lg: Ledger, tmp_path: Path) -> None:
    lg.record_batch([small_record(1)], id="b1", dataset="mix")
    lg.record_batch([small_record(2)], id="b2", dataset="mix")
    lg.record_batch([small_record(3)], id="b3", dataset="other")
    w = tmp_path / "w.bin"
    w.write_bytes(b"w")
    ckpt = lg.record_checkpoint(id="c", weights=[w], batches=["mix", "b1", "b3"])
    assert ckpt.body["batches"] == ["b1", "b2", "b3"]


def test_derived_from_by_index_and_external_id(lg: Ledger) -> None:
    vector = CONFORMANCE["call"]
    call = lg.record_call(
        provider="openai",
        purpose="evaluation",
        request=vector["request"],
        response=vector["response"],
    )
    other = dict(vector["response"], id="chatcmpl-other")
    call2 = lg.record_call(provider="openai", purpose="training-data", request=None, response=other)
    result = lg.record_batch(
        [small_record(1)],
        id="distilled",
        derived_from=[call.index, "chatcmpl-other", str(call.index)],
    )
    assert lg.entry(result.entries[0].index).body["derived_from"] == sorted(
        {call.index, call2.index}
    )


def test_unknown_or_wrong_references_leave_the_ledger_unchanged(lg: Ledger, tmp_path: Path) -> None:
    before = lg.head()
    with pytest.raises(NotFoundError, match="chatcmpl-nope"):
        lg.record_batch([small_record(1)], id="x", derived_from=["chatcmpl-nope"])
    with pytest.raises(NotFoundError, match="entry 99"):
        lg.record_batch([small_record(1)], id="x", derived_from=[99])
    with pytest.raises(NotFoundError, match="key entry"):
        lg.record_batch([small_record(1)], id="x", derived_from=[0])
    path = write_jsonl(tmp_path / "d.jsonl", [small_record(1)])
    with pytest.raises(NotFoundError):  # checked before hashing a file, too
        lg.record_batch(id="x", files=[path], derived_from=["nope"])
    assert lg.head() == before
    assert rows(lg, "SELECT count(*) FROM records") == [(0,)]


def test_rerun_is_idempotent_and_a_changed_batch_is_a_duplicate(lg: Ledger, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [small_record(i) for i in range(30)])
    first = lg.record_batch(id="ds", files=[path], split=7)
    size = lg.head().size
    again = lg.record_batch(id="ds", files=[path], split=7)
    assert again.already_recorded and again.entries == first.entries
    assert lg.head().size == size
    assert rows(lg, "SELECT count(*) FROM records") == [(30,)]
    write_jsonl(path, [small_record(i) for i in range(31)])
    with pytest.raises(DuplicateError, match="ds"):
        lg.record_batch(id="ds", files=[path], split=7)
    with pytest.raises(DuplicateError):
        lg.record_batch([small_record(0)], id="ds/000000")
    with pytest.raises(
        DuplicateError
    ):  # a batch id may not shadow a dataset id (REFs stay unambiguous)
        lg.record_batch([small_record(0)], id="ds")
    assert lg.head().size == size


def test_empty_input_is_an_input_error_and_changes_nothing(lg: Ledger, tmp_path: Path) -> None:
    before = lg.head()
    with pytest.raises(InputError):
        lg.record_batch([], id="empty")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="empty.jsonl"):
        lg.record_batch(id="empty", files=[empty])
    with pytest.raises(InputError, match="record 1"):
        lg.record_batch([small_record(0), {"x": float("nan")}], id="nan")
    assert lg.head() == before


def test_bad_arguments_are_usage_errors(lg: Ledger, tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        lg.record_batch([small_record(0)], id="12345")
    with pytest.raises(UsageError):
        lg.record_batch([small_record(0)], id="x", split=0)
    with pytest.raises(UsageError):
        lg.record_batch(id="x")
    with pytest.raises(UsageError):
        lg.record_batch([small_record(0)], id="x", split=5, dataset="y")


def test_spilled_rows_equal_in_memory_rows(
    lg: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [chat_record(i) for i in range(300)]
    small = lg.record_batch(records, id="mem", split=128).entries
    monkeypatch.setattr(spilling, "SPILL_ROWS", 50)
    monkeypatch.setattr(spilling, "SPILL_BYTES", 0)
    monkeypatch.setattr(batches, "HASH_CHUNK", 37)
    flushes: list[int] = []
    # Counting flushes needs the private step: whether rows went through Parquet is not observable otherwise.
    flush = spilling.Spill._flush

    def counted(self: spilling.Spill) -> None:
        flushes.append(self._buffered)
        flush(self)

    monkeypatch.setattr(spilling.Spill, "_flush", counted)
    spilled = lg.record_batch(records, id="disk", split=128).entries
    assert len(flushes) >= 300 // 50  # the records went through Parquet
    assert [e.records_root for e in small] == [e.records_root for e in spilled]
    sql = """SELECT r.position, r.digest, r.fingerprint FROM records r JOIN entries e ON e.idx = r.batch
             WHERE e.ref = ? ORDER BY r.position"""
    for a, b in zip(small[1:], spilled[1:]):
        assert rows(lg, sql, [a.id]) == rows(lg, sql, [b.id])
    assert not list(tmp_path.glob(".ledger.duckdb.spill-*"))  # the temporary Parquet files are gone


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 70), split=st.one_of(st.none(), st.integers(1, 30)), chunk=st.integers(1, 40)
)
def test_hashing_phase_cuts_roots_like_the_reference(
    n: int, split: int | None, chunk: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches, "HASH_CHUNK", chunk)
    records = [small_record(i) for i in range(n)]
    spill = spilling.SpillDir(tmp_path / "x.duckdb")
    hashed = recording.hash_batches(
        records=records,
        files=(),
        split=split,
        text_fields=None,
        min_segment_chars=32,
        spill_dir=spill,
        progress=lambda _: None,
    )
    step = split or n
    slices = [records[i : i + step] for i in range(0, n, step)]
    assert [p.count for p in hashed.parts] == [len(s) for s in slices]
    assert [p.records_root for p in hashed.parts] == [ref_root(s) for s in slices]
    assert isinstance(hashed.records, pa.Table)
    parts = hashed.records.column("part").to_pylist()
    positions = hashed.records.column("position").to_pylist()
    assert [(p, q) for p, q in zip(parts, positions)] == [(i // step, i % step) for i in range(n)]


def test_hashing_happens_before_the_database_is_opened(lg: Ledger, tmp_path: Path) -> None:
    """While a file is being hashed, another process can open the ledger for writing."""
    path = write_jsonl(tmp_path / "d.jsonl", [small_record(i) for i in range(10)])
    probe = f"import duckdb; duckdb.connect({str(lg.path)!r}).close()"
    outcomes: list[int] = []

    def progress(advance: int) -> None:
        if not outcomes:
            outcomes.append(
                subprocess.run(
                    [sys.executable, "-c", probe], check=False, capture_output=True
                ).returncode
            )

    lg.record_batch(id="d", files=[path], progress=progress)
    assert outcomes == [0]


# --- calls ----------------------------------------------------------------------------------------------


def test_call_body_matches_the_conformance_vectors(lg: Ledger) -> None:
    vector = CONFORMANCE["call"]
    result = lg.record_call(
        provider="openai",
        purpose="evaluation",
        request=vector["request"],
        response=vector["response"],
    )
    assert not result.duplicate and result.external_id == vector["external_id"]
    body = lg.entry(result.index).body
    assert (
        body["request"]
        == vector["request_sha256"]
        == hashlib.sha256(rfc8785.dumps(vector["request"])).hexdigest()
    )
    assert body["response"] == vector["response_sha256"]
    assert body["outputs"] == vector["outputs"]
    assert body["model"] == "gpt-4o-2024-08-06" and body["endpoint"] == "/v1/chat/completions"
    assert body["external_id"] == "chatcmpl-vec1" and body["purpose"] == "evaluation"
    # values[i] is the fingerprint of the segment whose hash is outputs[i]
    texts = [c["message"]["content"] or "" for c in vector["response"]["choices"]]
    texts += [
        t["function"]["arguments"]
        for c in vector["response"]["choices"]
        for t in c["message"].get("tool_calls", [])
    ]
    by_hash = {
        hashlib.sha256(n.encode()).hexdigest(): n
        for t in texts
        for n in map(ref_normalize, [t, *re.split(r"\n\s*\n", t)])
    }
    expected = fingerprint.fingerprint_texts([by_hash[h] for h in body["outputs"]])
    assert [base64.b64decode(v) for v in body["fingerprints"]["values"]] == expected
    assert (
        fingerprint.FingerprintParams.from_json(body["fingerprints"]["params"])
        == fingerprint.DEFAULT_PARAMS
    )
    again = lg.record_call(
        provider="openai",
        purpose="evaluation",
        request=vector["request"],
        response=vector["response"],
    )
    assert again.duplicate and again.index == result.index
    other = lg.record_call(
        provider="azure", purpose="evaluation", request=None, response=vector["response"]
    )
    assert not other.duplicate and lg.entry(other.index).body["request"] is None


def paragraph_hashes(text: str) -> set[str]:
    pieces = [text, *re.split(r"\n\s*\n", text)]
    return {
        hashlib.sha256(n.encode()).hexdigest() for n in map(ref_normalize, pieces) if len(n) >= 32
    }


def test_streamed_call_hashes_chunks_and_joins_deltas(lg: Ledger) -> None:
    text = "A streamed answer that arrives in pieces.\n\nIts second paragraph is long enough too."
    pieces = [text[:10], text[10:50], text[50:]]
    chunks = [
        {
            "id": "chatcmpl-s1",
            "object": "chat.completion.chunk",
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}],
        }
        for p in pieces
    ] + [
        {
            "id": "chatcmpl-s1",
            "object": "chat.completion.chunk",
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25},
        }
    ]
    result = lg.record_call(
        provider="openai",
        purpose="other",
        request={"model": "gpt-4o-mini"},
        response=chunks,
        stream=True,
    )
    body = lg.entry(result.index).body
    assert body["response"] == hashlib.sha256(rfc8785.dumps(chunks)).hexdigest()
    assert set(body["outputs"]) == paragraph_hashes(text)
    assert body["usage"]["total_tokens"] == 25 and body["external_id"] == "chatcmpl-s1"
    abandoned = lg.record_call(
        provider="openai",
        purpose="other",
        request=None,
        response=chunks[:1] + [],
        stream=True,
        complete=False,
        external_id="chatcmpl-s2",
    )
    assert lg.entry(abandoned.index).body["complete"] is False


def test_completions_and_responses_shapes(lg: Ledger) -> None:
    text = "A legacy completion text that is certainly long enough."
    legacy = {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": "gpt-3.5-turbo-instruct",
        "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
    }
    responses = {
        "id": "resp_1",
        "object": "response",
        "model": "gpt-4.1",
        "output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}],
    }
    a = lg.entry(
        lg.record_call(provider="openai", purpose="other", request=None, response=legacy).index
    ).body
    b = lg.entry(
        lg.record_call(provider="openai", purpose="other", request=None, response=responses).index
    ).body
    assert a["endpoint"] == "/v1/completions" and b["endpoint"] == "/v1/responses"
    assert a["outputs"] == b["outputs"] == sorted(paragraph_hashes(text))


def test_call_without_model_or_with_bad_purpose_is_refused(lg: Ledger) -> None:
    with pytest.raises(UsageError, match="purpose"):
        lg.record_call(
            provider="openai", purpose="fun", request=None, response=CONFORMANCE["call"]["response"]
        )
    with pytest.raises(InputError, match="model"):
        lg.record_call(provider="x", purpose="other", request=None, response={"choices": []})
    assert lg.head().size == 2  # the two key entries `init` writes


def openai_batch_files(tmp_path: Path, n: int) -> tuple[Path, Path]:
    """A realistic Batch API input/output pair, with an error line and a non-200 line."""
    inputs, outputs = [], []
    for i in range(n):
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"Summarise document {i}."}],
            "max_tokens": 200,
        }
        inputs.append(
            {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
        content = (
            f"Document {i} is summarised here in a sentence that is long enough to be a segment."
        )
        outputs.append(
            {
                "id": f"batch_req_{i:04d}",
                "custom_id": f"req-{i}",
                "response": {
                    "status_code": 200,
                    "request_id": f"r{i}",
                    "body": {
                        "id": f"chatcmpl-{i:04d}",
                        "object": "chat.completion",
                        "created": 1711652795,
                        "model": "gpt-4o-mini-2024-07-18",
                        "choices": [
                            {
                                "index": 0,
                                "message": {
                                    "role": "assistant",
                                    "content": content,
                                    "refusal": None,
                                },
                                "logprobs": None,
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
                        "system_fingerprint": "fp_abc",
                    },
                },
                "error": None,
            }
        )
    outputs.insert(
        3,
        {
            "id": "batch_req_e1",
            "custom_id": "req-x",
            "response": None,
            "error": {
                "code": "batch_expired",
                "message": "This request could not be executed before the completion window expired.",
            },
        },
    )
    outputs.insert(
        7,
        {
            "id": "batch_req_e2",
            "custom_id": "req-y",
            "error": None,
            "response": {
                "status_code": 400,
                "request_id": "r-bad",
                "body": {
                    "error": {
                        "message": "Invalid model",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            },
        },
    )
    outputs.append(outputs[5])  # the same call twice in one file
    return write_jsonl(tmp_path / "batch_input.jsonl", inputs), write_jsonl(
        tmp_path / "batch_output.jsonl", outputs
    )


def test_import_openai_batch_twice_adds_nothing_the_second_time(lg: Ledger, tmp_path: Path) -> None:
    requests, output = openai_batch_files(tmp_path, 23)
    seen: list[int] = []
    first = lg.import_calls(
        output,
        "openai-batch",
        provider="openai",
        purpose="evaluation",
        requests_path=requests,
        chunk=5,
        progress=seen.append,
    )
    assert (first.added, first.duplicates, first.failed) == (23, 1, 2)
    assert len(first.failed_examples) == 2 and "batch_output.jsonl:4" in first.failed_examples[0]
    assert sum(seen) == output.stat().st_size
    size = lg.head().size
    assert size == 2 + 23
    second = lg.import_calls(
        output,
        "openai-batch",
        provider="openai",
        purpose="evaluation",
        requests_path=requests,
        chunk=5,
    )
    assert (second.added, second.duplicates, second.failed) == (0, 24, 2)
    assert lg.head().size == size
    call = lg.entry("chatcmpl-0007")
    line = json.loads(requests.read_text().splitlines()[7])
    assert call.body["request"] == hashlib.sha256(rfc8785.dumps(line["body"])).hexdigest()
    assert call.body["purpose"] == "evaluation" and call.body["usage"]["total_tokens"] == 32


def test_import_resumes_after_a_partial_run(lg: Ledger, tmp_path: Path) -> None:
    """A run that stopped after some chunks is completed by re-running it, without duplicates."""
    requests, output = openai_batch_files(tmp_path, 12)
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(output.read_text().splitlines(keepends=True)[:6]))
    lg.import_calls(
        partial, "openai-batch", provider="openai", purpose="evaluation", requests_path=requests
    )
    rest = lg.import_calls(
        output, "openai-batch", provider="openai", purpose="evaluation", requests_path=requests
    )
    assert rest.added == 12 - 5 and rest.duplicates == 5 + 1
    assert rows(lg, "SELECT count(*), count(DISTINCT ref) FROM entries WHERE kind = 'call'") == [
        (12, 12)
    ]


# --- checkpoints ----------------------------------------------------------------------------------------


def test_checkpoint_from_a_directory_of_shards(lg: Ledger, tmp_path: Path) -> None:
    shards = tmp_path / "ckpt-1000"
    (shards / "sub").mkdir(parents=True)
    files = {
        "model-00002-of-00002.safetensors": b"b" * 3_000_000,
        "model-00001-of-00002.safetensors": b"a" * 10,
        "sub/config.json": b"{}",
    }
    for name, data in files.items():
        (shards / name).write_bytes(data)
    config = tmp_path / "train.yaml"
    config.write_text("lr: 0.001\n")
    lg.record_batch([small_record(1)], id="b1")
    base = lg.record_checkpoint(id="base", weights=[shards / "sub" / "config.json"])
    seen: list[int] = []
    entry = lg.record_checkpoint(
        id="run7/ckpt-1000",
        weights=[shards],
        batches=["b1"],
        parents=["base"],
        teachers=["base", "openai:gpt-4o"],
        config=config,
        progress=seen.append,
    )
    body = entry.body
    assert body["weights"] == [
        {"path": n, "sha256": hashlib.sha256(files[n]).hexdigest()} for n in sorted(files)
    ]
    assert base.body["weights"] == [
        {"path": "config.json", "sha256": hashlib.sha256(b"{}").hexdigest()}
    ]
    assert body["parents"] == ["base"] and body["batches"] == ["b1"]
    assert body["teachers"] == ["base", {"provider": "openai", "model": "gpt-4o"}]
    assert body["config"] == hashlib.sha256(b"lr: 0.001\n").hexdigest()
    assert sum(seen) == sum(len(d) for d in files.values())


def test_checkpoint_references_must_exist_and_ids_must_be_new(lg: Ledger, tmp_path: Path) -> None:
    w = tmp_path / "w.bin"
    w.write_bytes(b"w")
    lg.record_batch([small_record(1)], id="b1")
    size = lg.head().size
    with pytest.raises(NotFoundError) as err:
        lg.record_checkpoint(
            id="c", weights=[w], batches=["b1", "b-missing"], parents=["p-missing"]
        )
    assert "b-missing" in str(err.value) and "p-missing" in str(err.value)
    with pytest.raises(UsageError, match="PROVIDER:MODEL"):
        lg.record_checkpoint(id="c", weights=[w], teachers=["not-a-checkpoint"])
    with pytest.raises(InputError, match="nowhere"):
        lg.record_checkpoint(id="c", weights=[tmp_path / "nowhere"])
    assert lg.head().size == size
    lg.record_checkpoint(id="c", weights=[w])
    with pytest.raises(DuplicateError):
        lg.record_checkpoint(id="c", weights=[w])
    with pytest.raises(DuplicateError):
        lg.record_checkpoint(id="b1", weights=[w])


def test_record_batches_appends_buffered_steps_in_one_transaction(
    lg: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger.log import store

    steps = [
        (f"run8/step-{k:06d}", [small_record(10 * k + i) for i in range(k + 1)]) for k in range(4)
    ]
    opened: list[Path] = []
    connect = store.connect
    monkeypatch.setattr(
        store, "connect", lambda path, **kw: opened.append(path) or connect(path, **kw)
    )
    result = lg.record_batches(steps, dataset="run8")
    assert len(opened) == 1  # one open, one transaction, for every step
    monkeypatch.undo()
    assert [(e.id, e.count, e.records_root) for e in result.entries] == [
        (step_id, len(records), ref_root(records)) for step_id, records in steps
    ]
    for entry in result.entries:
        assert lg.entry(entry.index).body["dataset"] == "run8"
        positions = rows(
            lg, "SELECT position FROM records WHERE batch = ? ORDER BY 1", [entry.index]
        )
        assert [p for (p,) in positions] == list(range(entry.count))
    size = lg.head().size
    assert lg.record_batches(steps, dataset="run8").already_recorded
    with pytest.raises(InputError, match="step-9"):
        lg.record_batches([("run8/step-8", [small_record(1)]), ("run8/step-9", [])])
    assert lg.head().size == size


def test_records_without_segments_have_empty_fingerprints(lg: Ledger, tmp_path: Path) -> None:
    records = [{"id": i, "label": "short"} for i in range(5)]
    path = write_jsonl(tmp_path / "ids.jsonl", records)
    entry = lg.record_batch(id="ids", files=[path]).entries[0]
    assert entry.records_root == ref_root(records)
    assert lg.entry("ids").body["fingerprints"]["root"] == ref_mth([b""] * 5).hex()
    assert rows(lg, "SELECT count(*) FROM record_segments") == [(0,)]


def test_a_killed_recorders_spill_files_are_removed_by_the_next(
    lg: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    stale = tmp_path / f".ledger.duckdb.spill-{socket.gethostname()}-{dead}-abc"
    stale.mkdir()
    (stale / "records.parquet").write_bytes(b"partial")
    alive = tmp_path / f".ledger.duckdb.spill-{socket.gethostname()}-{os.getpid()}-def"
    alive.mkdir()
    monkeypatch.setattr(spilling, "SPILL_ROWS", 10)
    monkeypatch.setattr(spilling, "SPILL_BYTES", 0)
    lg.record_batch([small_record(i) for i in range(20)], id="spilled")
    assert not stale.exists() and alive.exists()


@settings(max_examples=60, deadline=None)
@given(
    paragraphs=st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80), max_size=4
    ),
    seps=st.lists(
        st.sampled_from(["\n\n", "\n \n", "\r\n\r\n", "\n\t\n\n", " "]), min_size=4, max_size=4
    ),
)
def test_call_outputs_are_the_texts_and_their_paragraphs(
    paragraphs: list[str], seps: list[str]
) -> None:
    text = "".join(p + s for p, s in zip(paragraphs, seps))
    response = {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
    }
    call = calls.CallInput("p", "other", None, response)
    prepared = calls.prepare_call(call, 32)
    assert prepared.body["outputs"] == sorted(paragraph_hashes(text))
    assert [
        hashlib.sha256(t.encode()).hexdigest() for t in prepared.fingerprint_texts
    ] == prepared.body["outputs"]


def test_a_single_record_is_not_mistaken_for_many(lg: Ledger) -> None:
    with pytest.raises(UsageError, match="iterable"):
        lg.record_batch(small_record(1), id="one")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="iterable"):
        lg.record_batch("a text", id="one")


def test_a_file_hashed_by_the_pool_gives_the_rows_of_the_same_records_in_memory(
    lg: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bulk file path (worker pool, shared block ring, columns, spills) against the object path."""
    from ledger.ingest import blocks, pipeline

    records = [chat_record(i) for i in range(400)] + [small_record(i) for i in range(50)]
    path = write_jsonl(tmp_path / "pooled.jsonl", records)
    monkeypatch.setattr(pipeline, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(blocks, "BLOCK_SIZE", 8192)
    monkeypatch.setattr(spilling, "SPILL_ROWS", 100)
    monkeypatch.setattr(spilling, "SPILL_BYTES", 0)
    pooled = lg.record_batch(id="pooled", files=[path], split=128).entries
    monkeypatch.undo()
    memory = lg.record_batch(records, id="memory", split=128).entries
    assert [e.records_root for e in pooled] == [e.records_root for e in memory]
    assert pooled[1].records_root == ref_root(records[:128])
    bodies = [lg.entry(e.index).body for e in (*pooled[1:], *memory[1:])]
    roots = [b["fingerprints"]["root"] for b in bodies]
    assert roots[: len(roots) // 2] == roots[len(roots) // 2 :]
    for table, columns in (("records", "digest, fingerprint"), ("record_segments", "segment")):
        sql = f"""SELECT r.position, {columns} FROM {table} r JOIN entries e ON e.idx = r.batch
                  WHERE e.ref = ? ORDER BY r.position, {columns}"""
        for a, b in zip(pooled[1:], memory[1:]):
            assert rows(lg, sql, [a.id]) == rows(lg, sql, [b.id])


@pytest.mark.parametrize("pooled", [False, True])
def test_a_jsonl_file_keeps_integers_beyond_64_bits_exact(
    lg: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pooled: bool
) -> None:
    """Blocks are parsed in bulk without a big-integer scan; the records that need it are parsed
    again exactly before hashing (orjson would have made these integers floats)."""
    from ledger.ingest import pipeline

    vectors = [v["record_json"] for v in CONFORMANCE["records"]]
    big = [
        '{"id": 123456789012345678901234567890, "text": "an identifier wider than any machine word"}',
        '{"deep": [{"n": -98765432109876543210}, 18446744073709551616, 1e19, 9.3e18], "k": 2}',
        '{"max": 18446744073709551615, "min": -9223372036854775808, "under": -9223372036854775809}',
    ]
    lines = [*vectors, *big] * 3
    path = tmp_path / "ints.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if pooled:
        monkeypatch.setattr(pipeline, "POOL_MIN_BYTES", 0)
    entry = lg.record_batch(id="ints", files=[path]).entries[0]
    assert entry.records_root == ref_root([json.loads(line) for line in lines])


def test_rows_stay_in_memory_up_to_spill_bytes_then_spill(
    lg: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory is bounded by SPILL_BYTES per table: beyond it, rows leave every SPILL_ROWS."""
    monkeypatch.setattr(spilling, "SPILL_ROWS", 40)
    monkeypatch.setattr(spilling, "SPILL_BYTES", 20_000)
    spill = spilling.Spill(spilling.RECORD_SCHEMA, spilling.SpillDir(tmp_path / "x.duckdb"), "r")
    peak = 0
    for start in range(0, 1000, 10):
        spill.add(
            [
                pa.array([0] * 10, pa.int64()),
                pa.array(range(start, start + 10), pa.int64()),
                pa.array([os.urandom(32) for _ in range(10)], pa.binary()),
                pa.array([os.urandom(100) for _ in range(10)], pa.binary()),
            ]
        )
        peak = max(peak, spill._buffered_bytes)
    assert peak < 20_000 + 40 * 200  # the first spill, then never more than SPILL_ROWS rows held
    out = spill.finish()
    assert isinstance(out, Path)
    assert pq.read_table(out).column("position").to_pylist() == list(range(1000))
    small = spilling.Spill(spilling.RECORD_SCHEMA, spilling.SpillDir(tmp_path / "y.duckdb"), "r")
    small.add(
        [pa.array([0], pa.int64()), pa.array([0], pa.int64()), pa.array([b"d"]), pa.array([b"f"])]
    )
    assert isinstance(small.finish(), pa.Table)  # never spilled: goes to DuckDB from memory
