"""StepRecorder against a real ledger file: ids, order, rows, checkpoint chain, failures."""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path

import pytest
from training_helpers import digest, lineage_digests

from ledger import Ledger
from ledger.errors import UsageError
from ledger.integrations.examples import hash_examples, uncollate
from ledger.integrations.steps import StepRecorder, StepRecordingError, batch_id


def _examples(step: int, n: int = 3) -> list[dict[str, object]]:
    return [
        {"step": step, "i": i, "text": f"Training text number {i} of step {step}, long enough."}
        for i in range(n)
    ]


@pytest.fixture
def lg(tmp_path: Path) -> Ledger:
    return Ledger.init(tmp_path / "ledger.duckdb", origin="test.local/steps")


def test_steps_and_checkpoints_make_a_chain_holding_every_example(
    lg: Ledger, tmp_path: Path
) -> None:
    weights = tmp_path / "model.safetensors"
    consumed: list[str] = []
    with StepRecorder(lg, run="run1") as rec:
        for step in range(5):
            examples = _examples(step)
            consumed += [digest(e) for e in examples]
            rec.submit(examples if step % 2 else rec.hasher(examples))
            if step == 2:
                weights.write_bytes(b"weights at step 2")
                rec.checkpoint("run1/ckpt-3", weights=[weights])
        weights.write_bytes(b"weights at step 5")
        rec.checkpoint("run1/ckpt-5", weights=[weights])
    first = lg.entry("run1/ckpt-3").body
    last = lg.entry("run1/ckpt-5").body
    assert first["batches"] == [batch_id("run1", s) for s in range(3)]
    assert last["batches"] == ["run1/rank-00000/step-000000003", "run1/rank-00000/step-000000004"]
    assert last["parents"] == ["run1/ckpt-3"]
    assert last["weights"][0]["sha256"] == hashlib.sha256(b"weights at step 5").hexdigest()
    body = lg.entry("run1/rank-00000/step-000000004").body
    assert (body["step"], body["rank"], body["count"]) == (4, 0, 3)
    assert sorted(lineage_digests(lg.path, "run1/ckpt-5")) == sorted(consumed)
    assert lg.audit("run1/ckpt-5").verdict == "clean"


def test_resume_continues_the_chain(lg: Ledger, tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"w1")
    with StepRecorder(lg, run="r") as rec:
        rec.submit(_examples(0))
        rec.checkpoint("r/ckpt-1", weights=[weights])
    with StepRecorder(lg, run="r", resume_from="r/ckpt-1", start_step=1) as rec:
        assert rec.submit(_examples(1)) == "r/rank-00000/step-000000001"
        weights.write_bytes(b"w2")
        rec.checkpoint("r/ckpt-2", weights=[weights])
    body = lg.entry("r/ckpt-2").body
    assert body["parents"] == ["r/ckpt-1"]
    assert body["batches"] == ["r/rank-00000/step-000000001"]


def test_a_failure_is_raised_on_the_next_call_with_its_cause(lg: Ledger) -> None:
    rec = StepRecorder(lg, run="bad")
    rec.submit([{"x": float("inf")}, "fine text"])  # JSON has no infinity: the hashing fails
    with pytest.raises(StepRecordingError) as caught:
        rec.flush()
    assert caught.value.__cause__ is not None
    with pytest.raises(StepRecordingError):
        rec.close()
    assert rec.lost == ("bad/rank-00000/step-000000000",)
    assert lg.entry_count() == 2  # init's key entries only


def test_warn_logs_reports_what_was_lost_and_goes_on(
    lg: Ledger, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"w")
    with caplog.at_level(logging.WARNING, logger="ledger.integrations.steps"):
        with StepRecorder(lg, run="w", on_error="warn") as rec:
            rec.submit([{"x": float("nan")}])
            rec.submit(_examples(1))
            rec.checkpoint("w/ckpt", weights=[weights])
    assert rec.lost == ("w/rank-00000/step-000000000",)
    assert "could not record w/rank-00000/step-000000000" in caplog.text
    assert lg.entry("w/ckpt").body["batches"] == ["w/rank-00000/step-000000001"]


def test_the_hasher_pickles_and_uncollate_gives_examples(tmp_path: Path) -> None:
    rec = StepRecorder(None, run="p", spool=tmp_path / "spool")
    again = pickle.loads(pickle.dumps(rec.hasher))
    examples = _examples(0)
    assert again(examples).equals(hash_examples(examples))
    assert uncollate({"a": [1, 2], "b": ["x", "y"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    rec.close()


def test_many_ranks_need_a_spool(lg: Ledger) -> None:
    with pytest.raises(UsageError, match="spool"):
        StepRecorder(lg, run="x", rank=1, world_size=2)
    with pytest.raises(UsageError):
        StepRecorder(None, run="x")


def test_steps_hashed_together_equal_steps_hashed_alone(lg: Ledger, tmp_path: Path) -> None:
    rec_hasher = StepRecorder(None, run="h", spool=tmp_path / "spool").hasher
    steps = [_examples(s, n=1 + s % 4) for s in range(9)]
    steps[4] = [[5, 6, 7], {"ids": [1, 2]}]  # token ids and a record in one step
    together = rec_hasher.hash_steps(steps)
    assert [t.num_rows for t in together] == [len(s) for s in steps]
    for table, step in zip(together, steps):
        assert table.equals(rec_hasher(step))
    texts = [["first text of a step, long enough to segment", ""], ["second", "third"]]
    assert [t.num_rows for t in rec_hasher.hash_steps(texts)] == [1, 2]  # the empty text is no row


def test_a_bad_step_in_a_group_is_lost_alone(lg: Ledger, tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"w")
    with StepRecorder(lg, run="g", on_error="warn") as rec:
        for step in range(6):  # submitted faster than the recorder gathers: one group
            rec.submit([{"x": float("nan")}] if step == 3 else _examples(step))
        rec.checkpoint("g/ckpt", weights=[weights])
    assert rec.lost == ("g/rank-00000/step-000000003",)
    assert lg.entry("g/ckpt").body["batches"] == [batch_id("g", s) for s in (0, 1, 2, 4, 5)]


def test_a_small_queue_holds_the_training_thread_back_and_loses_nothing(lg: Ledger) -> None:
    """With room for 3 steps, submit waits while the recorder appends: every step is recorded."""
    with StepRecorder(lg, run="q", queue_size=3) as rec:
        ids = [rec.submit(_examples(step, n=2)) for step in range(20)]
    assert rec.recorded == 20 and rec.lost == ()
    assert [lg.entry(i).body["step"] for i in ids] == list(range(20))
