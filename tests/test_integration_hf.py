"""The Hugging Face Trainer callback against real Trainer runs on a tiny GPT-2 (CPU, seconds).

What the model consumed is captured independently at its forward pass, and compared with the record
digests of the ledger's lineage (`ledger export records`), checkpoint by checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from training_fixtures import (  # noqa: E402
    ForwardSpy,
    chat_dataset,
    entries,
    file_sha256,
    ledger_cli,
    lineage_digests,
    record_digest,
    tiny_gpt2,
    train_tokenizer,
)
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments  # noqa: E402

from ledger import Ledger  # noqa: E402
from ledger.errors import UsageError  # noqa: E402
from ledger.integrations.hf import LedgerCallback  # noqa: E402

BATCH = 4


def _args(out: Path, **overrides: Any) -> TrainingArguments:
    options: dict[str, Any] = {
        "output_dir": str(out),
        "per_device_train_batch_size": BATCH,
        "per_device_eval_batch_size": 8,
        "learning_rate": 1e-3,
        "logging_steps": 1000,
        "save_strategy": "steps",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 7,
    }
    options.update(overrides)
    return TrainingArguments(**options)


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def ds(tok: Any) -> Any:
    return chat_dataset(tok)


def _features(ids: list[int]) -> dict[str, Any]:
    """What the collator sees with remove_unused_columns=True: the model's own columns."""
    return {"input_ids": ids, "attention_mask": [1] * len(ids)}


class Run:
    """One recorded training run: the ledger, the output directory and what the model consumed."""

    def __init__(self, base: Path, tok: Any, ds: Any, **overrides: Any) -> None:
        self.db = base / "ledger.duckdb"
        self.out = base / "out"
        self.lg = Ledger.init(self.db, origin="test.local/hf")
        self.model = tiny_gpt2(tok)
        self.spy = ForwardSpy(self.model)
        self.cb = LedgerCallback(self.lg, run="sft-1", tokenizer=tok)
        self.collated = 0
        inner = DataCollatorForLanguageModeling(tok, mlm=False)

        def counting(features: list[Any]) -> Any:
            self.collated += 1
            return inner(features)

        self.trainer = Trainer(
            model=self.model,
            args=_args(self.out, **overrides),
            train_dataset=ds,
            eval_dataset=ds.select(range(16)),
            data_collator=self.cb.wrap(counting),
            callbacks=[self.cb],
        )

    def checkpoints_on_disk(self) -> list[str]:
        steps = sorted(int(p.name.split("-")[1]) for p in self.out.glob("checkpoint-*"))
        return [f"sft-1/checkpoint-{s}" for s in steps]


@pytest.fixture(scope="module")
def accumulated(tmp_path_factory: pytest.TempPathFactory, tok: Any, ds: Any) -> Run:
    """Five steps of two micro-batches, saves at 2, 4 and the end, an evaluation every 3 steps."""
    run = Run(
        tmp_path_factory.mktemp("accumulated"),
        tok,
        ds,
        gradient_accumulation_steps=2,
        max_steps=5,
        save_steps=2,
        eval_strategy="steps",
        eval_steps=3,
    )
    run.trainer.train()
    run.cb.close()
    return run


def test_lineage_of_the_last_checkpoint_is_exactly_what_the_model_consumed(
    accumulated: Run, tmp_path: Path
) -> None:
    run = accumulated
    consumed = [record_digest(_features(ids)) for ids in run.spy.rows]
    assert len(consumed) == 5 * 2 * BATCH
    # the loader collated ahead (and for evaluation): none of that extra is in the ledger
    assert run.collated > 5 * 2
    assert lineage_digests(run.db, "sft-1/checkpoint-5", tmp_path / "x") == consumed
    # and each earlier checkpoint holds exactly the prefix trained before it was saved
    assert (
        lineage_digests(run.db, "sft-1/checkpoint-2", tmp_path / "y") == consumed[: 2 * 2 * BATCH]
    )


def test_each_step_is_its_micro_batches_in_order(accumulated: Run) -> None:
    batches = entries(accumulated.db, "batch")
    assert [(b["step"], b["micro_batch"], b["rank"]) for b in batches] == [
        (step, k, 0) for step in range(1, 6) for k in range(2)
    ]
    assert all(b["count"] == BATCH for b in batches)
    assert [b["id"] for b in batches][:2] == [
        "sft-1/rank-00000/step-000000001/mb-0000",
        "sft-1/rank-00000/step-000000001/mb-0001",
    ]
    # the token ids were decoded with the tokenizer, which the bodies name by its hash
    assert {b["tokenizer"] for b in batches} == {accumulated.cb.hasher.tokenizer.sha256}


def test_the_checkpoint_chain_matches_the_saved_directories(accumulated: Run) -> None:
    run = accumulated
    checkpoints = entries(run.db, "checkpoint")
    assert (
        [c["id"] for c in checkpoints]
        == run.checkpoints_on_disk()
        == [
            "sft-1/checkpoint-2",
            "sft-1/checkpoint-4",
            "sft-1/checkpoint-5",
        ]
    )
    assert [c["parents"] for c in checkpoints] == [
        [],
        ["sft-1/checkpoint-2"],
        ["sft-1/checkpoint-4"],
    ]
    assert [len(c["batches"]) for c in checkpoints] == [4, 4, 2]  # the micro-batches since the last
    for c in checkpoints:
        directory = run.out / c["id"].split("/")[1]
        assert c["weights"] == [
            {"path": "model.safetensors", "sha256": file_sha256(directory / "model.safetensors")}
        ]
        assert c["config"] == file_sha256(directory / "config.json")


def test_a_planted_evaluation_output_makes_the_checkpoint_contaminated(
    accumulated: Run, tok: Any
) -> None:
    run = accumulated
    text = tok.decode(run.spy.rows[-1])  # a text trained on in the last step
    assert text.startswith("User: please explain")
    before = ledger_cli("audit", "sft-1/checkpoint-5", "--json", db=run.db)
    assert before.returncode == 0, before.stdout + before.stderr  # nothing planted yet: clean
    call = run.lg.record_call(
        provider="openai",
        purpose="evaluation",
        request={"model": "gpt-x", "messages": [{"role": "user", "content": "eval prompt"}]},
        response={
            "id": "chatcmpl-planted",
            "object": "chat.completion",
            "model": "gpt-x",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        },
    )
    proc = ledger_cli("audit", "sft-1/checkpoint-5", "--json", db=run.db)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "contaminated"
    exact = [f for f in report["findings"] if f["type"] == "exact"]
    assert exact and {f["call"] for f in exact} == {call.index}
    assert {f["purpose"] for f in exact} == {"evaluation"}
    # an earlier checkpoint, saved before that step, did not consume it (the fixture's texts share a
    # template, so near matches may make it suspect; never an exact finding)
    early = ledger_cli("audit", "sft-1/checkpoint-2", "--json", db=run.db)
    assert early.returncode in (0, 3), early.stdout + early.stderr
    assert not [f for f in json.loads(early.stdout)["findings"] if f["type"] == "exact"]


def test_without_removing_columns_the_records_are_every_column(
    tmp_path: Path, tok: Any, ds: Any
) -> None:
    """remove_unused_columns=False: the collator sees `text` and `id` too, and so do the records."""
    by_ids = {tuple(row["input_ids"]): row for row in ds}
    inner = DataCollatorForLanguageModeling(tok, mlm=False)

    def model_columns(features: list[dict[str, Any]]) -> Any:
        return inner([{k: f[k] for k in ("input_ids", "attention_mask")} for f in features])

    lg = Ledger.init(tmp_path / "ledger.duckdb", origin="test.local/hf-columns")
    model = tiny_gpt2(tok)
    spy = ForwardSpy(model)
    cb = LedgerCallback(lg, run="sft-2", tokenizer=tok)
    trainer = Trainer(
        model=model,
        args=_args(tmp_path / "out", max_steps=3, save_steps=3, remove_unused_columns=False),
        train_dataset=ds,
        data_collator=cb.wrap(model_columns),
        callbacks=[cb],
    )
    trainer.train()
    cb.close()
    consumed = [record_digest(by_ids[tuple(ids)]) for ids in spy.rows]
    assert len(consumed) == 3 * BATCH and all("text" in by_ids[tuple(r)] for r in spy.rows)
    assert lineage_digests(lg.path, "sft-2/checkpoint-3", tmp_path / "x") == consumed
    batches = entries(lg.path, "batch")
    assert [(b["step"], "micro_batch" in b) for b in batches] == [
        (1, False),
        (2, False),
        (3, False),
    ]


def test_resuming_continues_the_chain(tmp_path: Path, tok: Any, ds: Any) -> None:
    first = Run(tmp_path / "a", tok, ds, max_steps=4, save_steps=2)
    first.trainer.train()
    first.cb.close()
    # a new process: a fresh model, callback and Trainer on the same ledger and output directory
    model = tiny_gpt2(tok, seed=1)
    spy = ForwardSpy(model)
    cb = LedgerCallback(first.lg, run="sft-1", tokenizer=tok)
    trainer = Trainer(
        model=model,
        args=_args(first.out, max_steps=7, save_steps=2),
        train_dataset=ds,
        data_collator=cb.wrap(DataCollatorForLanguageModeling(tok, mlm=False)),
        callbacks=[cb],
    )
    trainer.train(resume_from_checkpoint=str(first.out / "checkpoint-4"))
    cb.close()
    checkpoints = entries(first.db, "checkpoint")
    assert [(c["id"], c["parents"]) for c in checkpoints] == [
        ("sft-1/checkpoint-2", []),
        ("sft-1/checkpoint-4", ["sft-1/checkpoint-2"]),
        ("sft-1/checkpoint-6", ["sft-1/checkpoint-4"]),
        ("sft-1/checkpoint-7", ["sft-1/checkpoint-6"]),
    ]
    assert [c["id"] for c in checkpoints] == first.checkpoints_on_disk()
    consumed = [record_digest(_features(ids)) for ids in first.spy.rows + spy.rows]
    assert len(consumed) == 7 * BATCH
    assert lineage_digests(first.db, "sft-1/checkpoint-7", tmp_path / "x") == consumed
    steps = [b["step"] for b in entries(first.db, "batch")]
    assert steps == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("accumulation", [1, 2])
def test_dataloader_workers_hash_in_the_workers_and_the_steps_are_the_steps_taken(
    tmp_path: Path, tok: Any, ds: Any, accumulation: int
) -> None:
    """Two workers collate in parallel: their hashes are matched to the forward passes, in order."""
    run = Run(
        tmp_path,
        tok,
        ds,
        dataloader_num_workers=2,
        gradient_accumulation_steps=accumulation,
        max_steps=4,
        save_steps=2,
        eval_strategy="steps",
        eval_steps=3,
    )
    run.trainer.train()
    run.cb.close()
    consumed = [record_digest(_features(ids)) for ids in run.spy.rows]
    assert len(consumed) == 4 * accumulation * BATCH
    assert run.collated == 0  # every batch was collated in a worker
    assert lineage_digests(run.db, "sft-1/checkpoint-4", tmp_path / "x") == consumed
    assert run.checkpoints_on_disk() == ["sft-1/checkpoint-2", "sft-1/checkpoint-4"]


def test_a_collator_that_is_not_wrapped_is_named(tmp_path: Path, tok: Any, ds: Any) -> None:
    lg = Ledger.init(tmp_path / "ledger.duckdb", origin="test.local/hf-unwrapped")
    cb = LedgerCallback(lg, run="sft-4", tokenizer=tok)
    trainer = Trainer(
        model=tiny_gpt2(tok),
        args=_args(tmp_path / "out", max_steps=2),
        train_dataset=ds,
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
        callbacks=[cb],
    )
    with pytest.raises(UsageError, match=r"data_collator=callback.wrap\(collator\)"):
        trainer.train()
    cb.close()


DDP_TRAIN = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from training_fixtures import ForwardSpy, chat_dataset, tiny_gpt2, train_tokenizer
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
from ledger.integrations.hf import LedgerCallback

base = Path(sys.argv[2])
tok = train_tokenizer(base / "tok")
model = tiny_gpt2(tok)
spy = ForwardSpy(model)
cb = LedgerCallback(None, run="ddp-sft", tokenizer=tok, spool=base / "spool")
args = TrainingArguments(output_dir=str(base / "out"), per_device_train_batch_size=4, max_steps=4,
                         save_strategy="steps", save_steps=2, report_to=[], use_cpu=True,
                         ddp_backend="gloo", disable_tqdm=True, seed=7, logging_steps=1000)
trainer = Trainer(model=model, args=args, train_dataset=chat_dataset(tok),
                  data_collator=cb.wrap(DataCollatorForLanguageModeling(tok, mlm=False)),
                  callbacks=[cb])
trainer.train()
cb.close()
(base / f"seen.{args.process_index}").write_text(json.dumps(spy.rows))
"""


def test_ranks_under_torchrun_spool_and_one_process_appends_them(tmp_path: Path, tok: Any) -> None:
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(DDP_TRAIN, encoding="utf-8")
    tests = Path(__file__).parent
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(tests), str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    db = tmp_path / "ledger.duckdb"
    assert ledger_cli("init", "--origin", "test.local/hf-ddp", db=db).returncode == 0
    appended = ledger_cli("record", "spool", str(tmp_path / "spool"), "--json", db=db)
    assert appended.returncode == 0, appended.stderr
    report = json.loads(appended.stdout)
    assert (report["batches"], report["checkpoints"], report["waiting"]) == (8, 2, [])
    seen = [json.loads((tmp_path / f"seen.{r}").read_text()) for r in (0, 1)]
    assert [len(s) for s in seen] == [4 * BATCH, 4 * BATCH]
    consumed = sorted(record_digest(_features(ids)) for rank in seen for ids in rank)
    assert sorted(lineage_digests(db, "ddp-sft/checkpoint-4", tmp_path / "x")) == consumed
    last = entries(db, "checkpoint")[-1]
    weights = tmp_path / "out" / "checkpoint-4" / "model.safetensors"
    assert last["parents"] == ["ddp-sft/checkpoint-2"]
    assert [w["sha256"] for w in last["weights"]] == [file_sha256(weights)]
    again = ledger_cli("record", "spool", str(tmp_path / "spool"), "--json", db=db)
    assert again.returncode == 0 and json.loads(again.stdout)["batches"] == 0
