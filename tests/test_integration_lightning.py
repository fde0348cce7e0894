"""The Lightning callback against real `lightning` Trainer runs (CPU, a model over byte values of texts).

What each training step consumed is captured independently in `training_step`, and compared with
the record digests of the ledger's lineage (`ledger export records`); the checkpoint chain with the
`.ckpt` files `ModelCheckpoint` wrote.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from training_fixtures import (  # noqa: E402
    chat_texts,
    entries,
    file_sha256,
    ledger_cli,
    lineage_digests,
)

from ledger import Ledger  # noqa: E402
from ledger.integrations.lightning import LedgerCallback, batch_examples  # noqa: E402

BATCH = 4


def text_digest(text: str) -> str:
    """DESIGN "Hashing": a plain-text record is hashed as its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TextModel(L.LightningModule):
    """Mean byte embedding to a scalar, regressed on the text's length: tiny, and it trains."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.EmbeddingBag(256, 8)
        self.head = torch.nn.Linear(8, 1)
        self.consumed: list[str] = []

    def training_step(self, batch: list[str], batch_idx: int) -> torch.Tensor:
        self.consumed.extend(batch)
        codes = [torch.tensor(list(t.encode("utf-8")), dtype=torch.long) for t in batch]
        offsets = torch.tensor([0] + [len(c) for c in codes[:-1]]).cumsum(0)
        out = self.head(self.embed(torch.cat(codes), offsets)).squeeze(1)
        target = torch.tensor([len(t) / 100.0 for t in batch])
        return torch.nn.functional.mse_loss(out, target)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader() -> DataLoader[str]:
    texts = chat_texts(40)
    return DataLoader(texts, batch_size=BATCH, shuffle=True, collate_fn=list)  # type: ignore[arg-type]


def _trainer(ckpt_dir: Path, cb: LedgerCallback, **options: Any) -> L.Trainer:
    saver = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=2, save_top_k=-1)
    return L.Trainer(
        callbacks=[cb, saver],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        **options,
    )


def _checkpoints_on_disk(ckpt_dir: Path) -> dict[str, str]:
    """`{ledger id stored in the file: file name}` for every .ckpt file written."""
    out = {}
    for path in sorted(ckpt_dir.glob("*.ckpt")):
        stored = torch.load(path, map_location="cpu", weights_only=False)["ledger"]
        out[stored["checkpoint"]] = path.name
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("lightning")
    lg = Ledger.init(base / "ledger.duckdb", origin="test.local/lightning")
    torch.manual_seed(3)
    model = TextModel()
    cb = LedgerCallback(lg, run="pl-1")
    _trainer(base / "ckpt", cb, max_steps=6, accumulate_grad_batches=2).fit(model, _loader())
    return {"lg": lg, "db": lg.path, "ckpt": base / "ckpt", "model": model}


def test_lineage_of_the_last_checkpoint_is_exactly_what_was_consumed(
    run: dict[str, Any], tmp_path: Path
) -> None:
    consumed = [text_digest(t) for t in run["model"].consumed]
    assert len(consumed) == 6 * 2 * BATCH
    assert lineage_digests(run["db"], "pl-1/step-6", tmp_path / "x") == consumed
    assert lineage_digests(run["db"], "pl-1/step-2", tmp_path / "y") == consumed[: 2 * 2 * BATCH]


def test_steps_are_their_micro_batches(run: dict[str, Any]) -> None:
    batches = entries(run["db"], "batch")
    assert [(b["step"], b["micro_batch"]) for b in batches] == [
        (s, k) for s in range(1, 7) for k in range(2)
    ]
    assert all(b["count"] == BATCH for b in batches)


def test_the_checkpoint_chain_matches_the_files_written(run: dict[str, Any]) -> None:
    checkpoints = entries(run["db"], "checkpoint")
    on_disk = _checkpoints_on_disk(run["ckpt"])
    assert [c["id"] for c in checkpoints] == ["pl-1/step-2", "pl-1/step-4", "pl-1/step-6"]
    assert sorted(on_disk) == [c["id"] for c in checkpoints]
    assert [c["parents"] for c in checkpoints] == [[], ["pl-1/step-2"], ["pl-1/step-4"]]
    for c in checkpoints:
        name = on_disk[c["id"]]
        assert c["weights"] == [{"path": name, "sha256": file_sha256(run["ckpt"] / name)}]
        assert len(c["batches"]) == 4


def test_a_planted_evaluation_output_makes_the_checkpoint_contaminated(
    run: dict[str, Any],
) -> None:
    text = run["model"].consumed[-1]
    call = run["lg"].record_call(
        provider="openai",
        purpose="evaluation",
        request={"model": "gpt-x", "messages": [{"role": "user", "content": "eval prompt"}]},
        response={
            "id": "chatcmpl-planted-pl",
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
    proc = ledger_cli("audit", "pl-1/step-6", "--json", db=run["db"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "contaminated"
    assert {f["call"] for f in report["findings"] if f["type"] == "exact"} == {call.index}


def test_resuming_from_a_file_continues_the_chain(tmp_path: Path) -> None:
    lg = Ledger.init(tmp_path / "ledger.duckdb", origin="test.local/lightning-resume")
    first = TextModel()
    _trainer(tmp_path / "ckpt", LedgerCallback(lg, run="pl-2"), max_steps=4).fit(first, _loader())
    resumed_from = tmp_path / "ckpt" / _checkpoints_on_disk(tmp_path / "ckpt")["pl-2/step-4"]
    second = TextModel()
    cb = LedgerCallback(lg, run="pl-2")
    _trainer(tmp_path / "ckpt", cb, max_steps=8).fit(second, _loader(), ckpt_path=resumed_from)
    checkpoints = entries(lg.path, "checkpoint")
    assert [(c["id"], c["parents"]) for c in checkpoints] == [
        ("pl-2/step-2", []),
        ("pl-2/step-4", ["pl-2/step-2"]),
        ("pl-2/step-6", ["pl-2/step-4"]),
        ("pl-2/step-8", ["pl-2/step-6"]),
    ]
    consumed = [text_digest(t) for t in first.consumed + second.consumed]
    assert len(consumed) == 8 * BATCH
    assert lineage_digests(lg.path, "pl-2/step-8", tmp_path / "x") == consumed


def test_tuple_batches_become_one_record_per_example() -> None:
    x, y = torch.arange(6).reshape(3, 2), torch.tensor([0.5, 1.5, 2.5])
    assert batch_examples((x, y)) == [
        {"0": [0, 1], "1": 0.5},
        {"0": [2, 3], "1": 1.5},
        {"0": [4, 5], "1": 2.5},
    ]
    assert batch_examples(["a text", "another"]) == ["a text", "another"]


DDP_FIT = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import lightning as L, torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader
from test_integration_lightning import TextModel, BATCH
from training_fixtures import chat_texts
from ledger.integrations.lightning import LedgerCallback

base = Path(sys.argv[2])
torch.manual_seed(3)
model = TextModel()
cb = LedgerCallback(None, run="pl-ddp", spool=base / "spool")
saver = ModelCheckpoint(dirpath=base / "ckpt", every_n_train_steps=2, save_top_k=-1)
trainer = L.Trainer(callbacks=[cb, saver], logger=False, enable_progress_bar=False,
                    enable_model_summary=False, accelerator="cpu", devices=2, num_nodes=1,
                    strategy="ddp", max_steps=4)
trainer.fit(model, DataLoader(chat_texts(40), batch_size=BATCH, collate_fn=list))
(base / f"seen.{trainer.global_rank}").write_text(json.dumps(model.consumed))
"""


def test_ranks_under_torchrun_spool_and_one_process_appends_them(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "fit.py"
    script.write_text(DDP_FIT, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(Path(__file__).parent), str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    db = tmp_path / "ledger.duckdb"
    assert ledger_cli("init", "--origin", "test.local/pl-ddp", db=db).returncode == 0
    appended = ledger_cli("record", "spool", str(tmp_path / "spool"), "--json", db=db)
    assert appended.returncode == 0, appended.stderr
    report = json.loads(appended.stdout)
    assert (report["batches"], report["checkpoints"], report["waiting"]) == (8, 2, [])
    seen = [json.loads((tmp_path / f"seen.{r}").read_text()) for r in (0, 1)]
    assert [len(s) for s in seen] == [4 * BATCH, 4 * BATCH]
    consumed = sorted(text_digest(t) for rank in seen for t in rank)
    assert sorted(lineage_digests(db, "pl-ddp/step-4", tmp_path / "x")) == consumed
    on_disk = _checkpoints_on_disk(tmp_path / "ckpt")
    assert sorted(on_disk) == ["pl-ddp/step-2", "pl-ddp/step-4"]
    last = [c for c in entries(db, "checkpoint") if c["id"] == "pl-ddp/step-4"][0]
    assert [w["sha256"] for w in last["weights"]] == [
        file_sha256(tmp_path / "ckpt" / on_disk["pl-ddp/step-4"])
    ]
    assert last["parents"] == ["pl-ddp/step-2"]
