"""A tiny causal language model and its tokenizer, built locally: nothing is downloaded.

The tokenizer is a byte-level BPE trained on the texts below with `tokenizers`; the model is a GPT-2
of one layer built from a config. Both are small enough that a `Trainer` step on CPU takes
milliseconds, and the same texts make a chat-like `datasets.Dataset`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOPICS = [
    "the weather in the mountains",
    "how a compiler turns source into machine code",
    "why bread rises in a warm kitchen",
    "the rules of a chess endgame with two rooks",
    "what a Merkle tree proves about a log",
    "how to water tomatoes in a dry summer",
    "the history of the printing press in Europe",
    "why the sky looks blue at noon and red at dusk",
    "how a bicycle stays upright when it moves",
    "the difference between a virus and a bacterium",
    "how tides follow the moon around the earth",
    "what makes a good unit test for a parser",
]


def chat_texts(n: int = 48) -> list[str]:
    """`n` distinct chat-like texts, each long enough to give a segment (>= 32 characters)."""
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        out.append(
            f"User: please explain {topic} (question {i}).\n"
            f"Assistant: here is a short answer about {topic}, number {i}, in plain words."
        )
    return out


def train_tokenizer(out_dir: Path) -> Any:
    """A byte-level BPE trained on `chat_texts`, saved as `tokenizer.json`, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(chat_texts(), trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "tokenizer.json"
    tok.save(str(path))
    fast = PreTrainedTokenizerFast(
        tokenizer_file=str(path),
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    return fast


def tiny_gpt2(tokenizer: Any, seed: int = 0) -> Any:
    """A one-layer GPT-2 (32-dim embeddings, 2 heads) with random weights from a fixed seed."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def chat_dataset(tokenizer: Any, n: int = 48, max_length: int = 48) -> Any:
    """A `datasets.Dataset` with `text`, `id` and the tokenized `input_ids`/`attention_mask`."""
    from datasets import Dataset

    texts = chat_texts(n)
    ds = Dataset.from_dict({"text": texts, "id": list(range(n))})

    def tokenize(row: dict[str, Any]) -> dict[str, Any]:
        enc = tokenizer(row["text"], truncation=True, max_length=max_length)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    return ds.map(tokenize)


# --- checking a run against the ledger -------------------------------------------------------------

LEDGER = str(Path(__import__("sys").executable).with_name("ledger"))


def ledger_cli(*args: str, db: Path) -> Any:
    """`ledger ARGS` as a real subprocess of the installed command, on the ledger file `db`."""
    import subprocess

    env = {**os.environ, "LEDGER_DB": str(db), "LEDGER_LOCK_TIMEOUT": "5"}
    return subprocess.run([LEDGER, *args], capture_output=True, text=True, env=env, timeout=120)


def record_digest(record: Any) -> str:
    """DESIGN "Hashing": a JSON record's digest is sha256(JCS(record)), computed here with `rfc8785`."""
    import hashlib

    import rfc8785

    return hashlib.sha256(rfc8785.dumps(record)).hexdigest()


def lineage_digests(db: Path, checkpoint: str, out: Path) -> list[str]:
    """The record digests of `checkpoint`'s lineage in training order (batch entry, then position),
    read from `ledger export records --checkpoint` (the record leaves hold the digests)."""
    import json

    import pyarrow.parquet as pq

    proc = ledger_cli("export", "records", str(out), "--checkpoint", checkpoint, db=db)
    assert proc.returncode == 0, proc.stderr
    rows = pq.read_table(out).to_pylist()
    rows.sort(key=lambda r: (r["batch"], r["position"]))
    return [json.loads(r["leaf"])["sha256"] for r in rows]


def entries(db: Path, kind: str) -> list[dict[str, Any]]:
    """The bodies of every entry of `kind`, in log order (`ledger log --json`)."""
    import json

    proc = ledger_cli("log", "--kind", kind, "--json", db=db)
    assert proc.returncode == 0, proc.stderr
    return [e["body"] for e in json.loads(proc.stdout)]


def file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


class ForwardSpy:
    """What the model was actually trained on, seen at its forward pass: each row's token ids without
    padding (the attention mask says which are real), in order, while the model is in training mode."""

    def __init__(self, model: Any) -> None:
        self.rows: list[list[int]] = []
        self.calls = 0
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if not module.training:
            return
        self.calls += 1
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        for row, keep in zip(ids.tolist(), mask.tolist()):
            self.rows.append([t for t, k in zip(row, keep) if k])
