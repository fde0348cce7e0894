"""Training-loop recording: step time of a small model with and without recording, and the recorder's
throughput in examples/s per rank.

    .venv/bin/python benchmarks/bench_training.py [--steps 60] [--rounds 5] [--batch 8]

1. Step time: a Hugging Face `Trainer` on a tiny GPT-2 built from a config (one layer, 32-dim, a BPE
   tokenizer trained locally; nothing is downloaded), CPU, no saves. Rounds alternate a run without
   recording and a run with `LedgerCallback` (collator wrapper + callback, StepRecorder appending to a
   DuckDB ledger on disk in its background thread). Each run's step time is measured from
   `on_step_begin` to `on_step_end` over the steps after a warm-up, so the ratio compares the same
   thing; the median over rounds is reported, and overhead = with / without - 1.
2. Throughput: a `StepRecorder` fed steps of `--batch` raw chat examples as fast as it takes them
   (hashing and appending, or spool writing, in its background thread), examples/s until `close`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from training_fixtures import chat_dataset, chat_texts, tiny_gpt2, train_tokenizer  # noqa: E402
from transformers import (  # noqa: E402
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from ledger import Ledger  # noqa: E402
from ledger.integrations.hf import LedgerCallback  # noqa: E402
from ledger.integrations.steps import StepRecorder  # noqa: E402


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, from on_step_begin to on_step_end."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.times.append(time.perf_counter() - self._t0)


def model_of(tok: Any, layers: int, width: int) -> Any:
    """The fixtures' tiny GPT-2 (layers=1, width=32), or a wider/deeper one of the same shape."""
    if (layers, width) == (1, 32):
        return tiny_gpt2(tok)
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=width, n_layer=layers,
                        n_head=max(2, width // 64), pad_token_id=tok.pad_token_id)  # fmt: skip
    return GPT2LMHeadModel(config)


def one_run(
    base: Path, tok: Any, ds: Any, steps: int, batch: int, record: bool, size: tuple[int, int]
) -> float:
    """Mean step time (s) after a warm-up of 5 steps, with or without the ledger callback."""
    timer = StepTimer()
    inner = DataCollatorForLanguageModeling(tok, mlm=False)
    callbacks: list[Any] = [timer]
    collator: Any = inner
    cb = None
    if record:
        lg = Ledger.init(
            base / f"ledger-{time.monotonic_ns()}.duckdb", origin="bench.local/training"
        )
        cb = LedgerCallback(lg, run="bench", tokenizer=tok)
        callbacks.insert(0, cb)
        collator = cb.wrap(inner)
    args = TrainingArguments(
        output_dir=str(base / "out"),
        per_device_train_batch_size=batch,
        max_steps=steps,
        save_strategy="no",
        logging_steps=10_000,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=tiny_gpt2(tok),
        args=args,
        train_dataset=ds,
        data_collator=collator,
        callbacks=callbacks,
    )
    trainer.train()
    if cb is not None:
        cb.close()
    return statistics.fmean(timer.times[5:])


def throughput(base: Path, steps: int, batch: int, spool: bool) -> float:
    texts = chat_texts(batch * 16)
    examples = [[{"text": texts[(s * batch + i) % len(texts)], "step": s} for i in range(batch)]
                for s in range(steps)]  # fmt: skip
    if spool:
        rec = StepRecorder(None, run="tput", spool=base / f"spool-{time.monotonic_ns()}")
    else:
        lg = Ledger.init(base / f"tput-{time.monotonic_ns()}.duckdb", origin="bench.local/tput")
        rec = StepRecorder(lg, run="tput")
    t0 = time.perf_counter()
    for step_examples in examples:
        rec.submit(step_examples)
    rec.close()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tput-steps", type=int, default=2000)
    parser.add_argument("--layers", type=int, default=1, help="GPT-2 layers (fixture: 1)")
    parser.add_argument("--width", type=int, default=32, help="GPT-2 n_embd (fixture: 32)")
    opts = parser.parse_args()
    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        tok = train_tokenizer(base / "tok")
        size = (opts.layers, opts.width)
        ds = chat_dataset(tok, n=max(64, opts.steps * opts.batch))
        one_run(base, tok, ds, 10, opts.batch, False, size)  # warm the imports and caches
        without, with_ = [], []
        for r in range(opts.rounds):
            without.append(one_run(base, tok, ds, opts.steps, opts.batch, False, size))
            with_.append(one_run(base, tok, ds, opts.steps, opts.batch, True, size))
            print(
                f"round {r}: step {without[-1] * 1e3:.2f} ms without, {with_[-1] * 1e3:.2f} ms with"
            )
        a, b = statistics.median(without), statistics.median(with_)
        print(f"step time (GPT-2 {size[0]}x{size[1]}, median of {opts.rounds} rounds, {opts.steps} steps of {opts.batch}): "
              f"{a * 1e3:.2f} ms without, {b * 1e3:.2f} ms with; ratio {b / a:.4f} "
              f"(overhead {100 * (b / a - 1):+.2f}%)")  # fmt: skip
        for spool in (False, True):
            rates = [throughput(base, opts.tput_steps, opts.batch, spool) for _ in range(3)]
            where = "spool files" if spool else "a DuckDB ledger"
            print(f"recorder to {where}: {statistics.median(rates):,.0f} examples/s per rank "
                  f"(median of 3, {opts.tput_steps} steps of {opts.batch})")  # fmt: skip


if __name__ == "__main__":
    main()
