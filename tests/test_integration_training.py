"""BatchRecorder against a real ledger file: step ids, checkpoint batches and parents, retries."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path

import pytest
import rfc8785

from ledger import Ledger
from ledger.errors import NotFoundError, UsageError
from ledger.integrations.training import BatchRecorder


def _leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def _naive_root(hashes: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH, transcribed directly: split at the largest power of two below n."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return hashlib.sha256(b"\x01" + _naive_root(hashes[:k]) + _naive_root(hashes[k:])).digest()


def _records(step: int, n: int = 3) -> list[dict[str, object]]:
    return [
        {"step": step, "i": i, "text": f"Training text number {i} of Step {step}, long."}
        for i in range(n)
    ]


def _segment(text: str) -> str:
    """DESIGN "Hashing": NFKC, casefold, collapse whitespace; a segment has >= 32 code points."""
    norm = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    assert len(norm) >= 32
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()


def _expected_root(records: list[dict[str, object]]) -> str:
    """Record leaf = JCS({"sha256": digest, "segments": [...]}), root per RFC 6962."""
    leaves = []
    for record in records:
        digest = hashlib.sha256(rfc8785.dumps(record)).hexdigest()
        leaf = rfc8785.dumps({"sha256": digest, "segments": [_segment(str(record["text"]))]})
        leaves.append(_leaf_hash(leaf))
    return _naive_root(leaves).hex()


@pytest.fixture
def lg(tmp_path: Path) -> Ledger:
    return Ledger.init(tmp_path / "ledger.duckdb", origin="test.local/training")


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights-v1" * 100)
    return path


def test_steps_become_batches_and_checkpoints_chain(lg: Ledger, weights: Path) -> None:
    recorder = BatchRecorder(lg, "run7")
    for step in (1, 2, 3):
        result = recorder.record(step, _records(step))
        assert [b.id for b in result.entries] == [f"run7/step-{step:06d}"]
    assert recorder.pending == ("run7/step-000001", "run7/step-000002", "run7/step-000003")

    first = recorder.checkpoint(3, [weights])
    assert first.body["id"] == "run7/ckpt-3"
    assert first.body["batches"] == ["run7/step-000001", "run7/step-000002", "run7/step-000003"]
    assert first.body["parents"] == []
    assert first.body["weights"][0]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert recorder.pending == ()

    recorder.record(4, _records(4))
    second = recorder.checkpoint(4, [weights], id="run7/final")
    # only the batches since the last checkpoint, and the lineage reaches the rest through its parent
    assert second.body["batches"] == ["run7/step-000004"]
    assert second.body["parents"] == ["run7/ckpt-3"]

    batch = lg.entry("run7/step-000002")
    assert batch.body["count"] == 3
    assert batch.body["records_root"] == _expected_root(_records(2))


def test_rerecording_a_step_is_idempotent(lg: Ledger) -> None:
    recorder = BatchRecorder(lg, "run8")
    recorder.record(5, _records(5))
    size = lg.head().size
    again = recorder.record(5, _records(5))  # e.g. a restarted data loader
    assert again.already_recorded
    assert lg.head().size == size
    assert recorder.pending == ("run8/step-000005",)


def test_failed_checkpoint_keeps_pending_batches_for_a_retry(
    lg: Ledger, weights: Path, tmp_path: Path
) -> None:
    recorder = BatchRecorder(lg, "run9", resume_from="run9/ckpt-never-recorded")
    recorder.record(
        0, ["a plain text record that is long enough", "and a second one, long enough too"]
    )
    with pytest.raises(NotFoundError, match="ckpt-never-recorded"):
        recorder.checkpoint(0, [weights])
    assert recorder.pending == ("run9/step-000000",)
    recorder.last_checkpoint = None
    entry = recorder.checkpoint(0, [weights])
    assert entry.body["batches"] == ["run9/step-000000"]


def test_derived_from_and_dataset_are_passed_through(lg: Ledger) -> None:
    call = lg.record_call(
        provider="openai",
        purpose="training-data",
        request={"model": "m", "messages": [{"role": "user", "content": "q"}]},
        response=json.loads(
            '{"id": "chatcmpl-1", "object": "chat.completion", "model": "m", "choices": '
            '[{"index": 0, "message": {"role": "assistant", "content": "an answer long enough to be a segment"}}]}'
        ),
    )
    text = "A training text that is long enough to be a segment."
    other = "Another long string value that is not a text field at all."
    records = [{"text": text, "other": other}]
    recorder = BatchRecorder(lg, "run10", dataset="corpus-a", text_fields=["text"])
    recorder.record(1, records, derived_from=["chatcmpl-1"])
    body = lg.entry("run10/step-000001").body
    assert body["derived_from"] == [call.index]
    assert body["dataset"] == "corpus-a"
    leaf = rfc8785.dumps(
        {
            "sha256": hashlib.sha256(rfc8785.dumps(records[0])).hexdigest(),
            "segments": [_segment(text)],  # only the `text` field's segment
        }
    )
    assert body["records_root"] == _leaf_hash(leaf).hex()


def test_bad_run_id_and_step(lg: Ledger) -> None:
    with pytest.raises(UsageError):
        BatchRecorder(lg, "has space")
    with pytest.raises(UsageError):
        BatchRecorder(lg, "run").batch_id(-1)


def test_records_without_any_segment(lg: Ledger) -> None:
    """Numeric records (no text of 32+ characters) are batches too: leaves with empty segments."""
    records = [{"step": 1, "loss": 0.5, "tag": "short"}, {"step": 2, "loss": 0.25, "tag": "short"}]
    BatchRecorder(lg, "run11").record(1, records)
    leaves = [
        _leaf_hash(
            rfc8785.dumps({"sha256": hashlib.sha256(rfc8785.dumps(r)).hexdigest(), "segments": []})
        )
        for r in records
    ]
    assert lg.entry("run11/step-000001").body["records_root"] == _naive_root(leaves).hex()
