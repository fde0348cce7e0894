"""RecordingLoader with a real torch DataLoader, a DuckDB file on disk, the real CLI, and torchrun."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler  # noqa: E402
from training_helpers import cli, digest, lineage_digests  # noqa: E402

from ledger import Ledger  # noqa: E402
from ledger.integrations.torch import RecordingLoader  # noqa: E402

TEACHER = (
    "The committee concluded that the reservoir's spillway gates must be inspected every spring, "
    "because silt carried down by the April floods jams the lower hinges."
)
PLANTED = 7  # the example that is an evaluation call's output


def _dataset(n: int = 30) -> list[dict[str, Any]]:
    return [
        {"id": i, "text": TEACHER if i == PLANTED else f"Example {i}: a plain training sentence."}
        for i in range(n)
    ]


def _lab(tmp_path: Path) -> Path:
    db = tmp_path / "ledger.duckdb"
    assert cli(db, "init", "--origin", "test.local/torch").returncode == 0
    response = {
        "id": "chatcmpl-eval-1", "object": "chat.completion", "created": 1764979200,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": TEACHER}}],
    }  # fmt: skip
    (tmp_path / "response.json").write_text(json.dumps(response), encoding="utf-8")
    done = cli(db, "record", "call", "--provider", "openai", "--purpose", "evaluation",
               "--response", "response.json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return db


def pairs_collate(examples: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
    """A custom collate (module level, so worker processes can load it)."""
    return [e["id"] for e in examples], [e["text"] for e in examples]


def _ids(batch: Any) -> list[int]:
    return batch["id"].tolist() if isinstance(batch, dict) else list(batch[0])


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_yields_what_the_dataloader_yields_and_records_it(
    tmp_path: Path, workers: int
) -> None:
    db = _lab(tmp_path)
    ds = _dataset()
    collate = pairs_collate if workers else None

    def plain() -> DataLoader[Any]:
        return DataLoader(
            ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3),
            num_workers=workers, collate_fn=collate,
        )  # fmt: skip

    expected = list(plain())
    consumed: list[dict[str, Any]] = []
    weights = tmp_path / "model.safetensors"
    with RecordingLoader(plain(), Ledger.open(db), run="pre") as loader:
        got = []
        for step, batch in enumerate(loader):
            got.append(batch)
            consumed += [ds[i] for i in _ids(batch)]
            if step == 2:
                weights.write_bytes(b"step 3")
                loader.checkpoint("pre/ckpt-3", weights=[weights])
        weights.write_bytes(b"end")
        loader.checkpoint("pre/ckpt-end", weights=[weights])
    assert len(got) == len(expected) == 8
    for a, b in zip(got, expected, strict=True):
        if isinstance(a, dict):
            assert torch.equal(a["id"], b["id"]) and a["text"] == b["text"]
        else:
            assert a == b
    assert sorted(lineage_digests(db, "pre/ckpt-end")) == sorted(digest(e) for e in consumed)
    end = json.loads(cli(db, "show", "pre/ckpt-end", "--json").stdout)["body"]
    assert end["parents"] == ["pre/ckpt-3"]
    assert end["batches"][0] == "pre/rank-00000/step-000000003"
    audit = cli(db, "audit", "pre/ckpt-end", "--json")
    assert audit.returncode == 1 and json.loads(audit.stdout)["verdict"] == "contaminated"


def _tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator([TEACHER, "Example text: a plain training sentence."] * 3, trainer)
    return tok


def pad_collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    width = max(len(e["input_ids"]) for e in examples)
    padded = [
        torch.nn.functional.pad(e["input_ids"], (0, width - len(e["input_ids"]))) for e in examples
    ]
    return {"input_ids": torch.stack(padded)}


def test_token_tensors_with_a_batch_sampler_are_decoded_with_the_tokenizer(tmp_path: Path) -> None:
    db = _lab(tmp_path)
    tok = _tokenizer()
    texts = [d["text"] for d in _dataset(12)]
    ds = [{"input_ids": torch.tensor(tok.encode(t).ids)} for t in texts]
    sampler = BatchSampler(SequentialSampler(ds), batch_size=5, drop_last=False)
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"w")
    loader = RecordingLoader(
        DataLoader(ds, batch_sampler=sampler, collate_fn=pad_collate), Ledger.open(db),
        run="tok", tokenizer=tok,
    )  # fmt: skip
    steps = sum(1 for _ in loader)
    loader.checkpoint("tok/ckpt", weights=[weights])
    loader.close()
    assert steps == 3
    wanted = [digest({"input_ids": tok.encode(t).ids}) for t in texts]
    assert lineage_digests(db, "tok/ckpt") == wanted  # one rank: step order is record order
    body = json.loads(cli(db, "show", "tok/rank-00000/step-000000000", "--json").stdout)["body"]
    assert body["tokenizer"] == hashlib.sha256(tok.to_str().encode()).hexdigest()
    assert cli(db, "audit", "tok/ckpt").returncode == 1  # the planted text, found via its tokens


DDP_SCRIPT = r"""
import json, os, sys
import torch, torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from ledger.integrations.torch import RecordingLoader

spool, out = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo")
rank = dist.get_rank()
teacher = sys.argv[3]
ds = [{"id": i, "text": teacher if i == 7 else f"Example {i}: a plain training sentence."}
      for i in range(30)]
sampler = DistributedSampler(ds, shuffle=True, seed=5)
loader = RecordingLoader(DataLoader(ds, batch_size=4, sampler=sampler), None, run="ddp", spool=spool)
seen = []
weights = os.path.join(os.path.dirname(out), "model.bin")
for epoch in range(2):
    sampler.set_epoch(epoch)
    for batch in loader:
        seen += batch["id"].tolist()
    if rank == 0:
        with open(weights, "wb") as f:
            f.write(f"epoch {epoch}".encode())
    dist.barrier()
    loader.checkpoint(f"ddp/ckpt-{epoch}", weights=[weights] if rank == 0 else [])
loader.close()
with open(f"{out}.{rank}", "w") as f:
    json.dump(seen, f)
dist.destroy_process_group()
"""


def test_torchrun_ranks_spool_and_one_process_appends_them(tmp_path: Path) -> None:
    db = _lab(tmp_path)
    script = tmp_path / "train.py"
    script.write_text(DDP_SCRIPT, encoding="utf-8")
    spool = tmp_path / "spool"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29517", str(script), str(spool), str(tmp_path / "seen"), TEACHER],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in spool.iterdir()) == ["rank-00000", "rank-00001"]
    first = cli(db, "record", "spool", str(spool), "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["batches"], report["checkpoints"], report["waiting"]) == (16, 2, [])
    ds = _dataset()
    seen = [i for r in (0, 1) for i in json.loads((tmp_path / f"seen.{r}").read_text())]
    assert len(seen) == 2 * 30  # two epochs over the whole set, split between the ranks
    assert sorted(lineage_digests(db, "ddp/ckpt-1")) == sorted(digest(ds[i]) for i in seen)
    last = json.loads(cli(db, "show", "ddp/ckpt-1", "--json").stdout)["body"]
    assert last["parents"] == ["ddp/ckpt-0"]
    assert last["weights"][0]["sha256"] == hashlib.sha256(b"epoch 1").hexdigest()
    assert {b.split("/")[1] for b in last["batches"]} == {"rank-00000", "rank-00001"}
    size = json.loads(cli(db, "head", "--json").stdout)["size"]
    again = json.loads(cli(db, "record", "spool", str(spool), "--json").stdout)
    assert (again["batches"], again["checkpoints"], again["skipped"]) == (0, 0, 18)
    assert json.loads(cli(db, "head", "--json").stdout)["size"] == size
    assert cli(db, "audit", "ddp/ckpt-1").returncode == 1
