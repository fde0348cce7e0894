"""Training-loop recording: step time of a small model with and without recording, and the recorder's
throughput in examples/s per rank.

    .venv/bin/python benchmarks/bench_training.py [--steps 300] [--rounds 5] [--batch 8]
        [--layers 4 --width 256]    # the default small GPT-2; --layers 1 --width 32 is the tests' tiny one

1. Step time: a Hugging Face `Trainer` on a small GPT-2 built from a config (`--layers`, `--width`;
   a BPE tokenizer trained locally; nothing is downloaded), CPU, no saves. Rounds alternate a run
   without recording and a run with `LedgerCallback` (collator wrapper + callback, StepRecorder
   appending to a DuckDB ledger on disk in its background thread). A step is the time between two
   `on_step_end`s after a warm-up: the whole loop (fetching and collating, the wrapped collator,
   forward, backward, optimizer, callbacks), so the recorder's cost is inside it wherever it falls.
   Wall time and CPU time (every thread of the process: the recorder's too) are both reported as
   medians over rounds, overhead = with / without - 1, and the recorder thread's own CPU time per
   step (what recording costs whatever the load: a run's steps gather for up to 10 s, so a run must
   last several such windows for its appends to count, hence 300 steps).
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
    """When each optimizer step ended: the time between two ends is a whole step as the loop runs
    it (fetching and collating the batch, the wrapped collator, forward, backward, the optimizer,
    every callback), so the recorder's cost is inside it wherever it falls."""

    def __init__(self) -> None:
        self.ends: list[tuple[float, float]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ends.append((time.perf_counter(), time.process_time()))

    def step_time(self, warm_up: int) -> tuple[float, float]:
        """Wall and CPU seconds (every thread of the process) per step after `warm_up` steps."""
        (w0, c0), (w1, c1) = self.ends[warm_up], self.ends[-1]
        n = len(self.ends) - 1 - warm_up
        return (w1 - w0) / n, (c1 - c0) / n


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
) -> tuple[float, float, float]:
    """Mean wall and CPU time (s) of a step after a warm-up of 5 steps, with or without the ledger
    callback (CPU time counts the recorder's thread too; it moves less with other load), and the
    recorder thread's own CPU time per step."""
    import torch

    torch.manual_seed(0)
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
        model=model_of(tok, *size),
        args=args,
        train_dataset=ds,
        data_collator=collator,
        callbacks=callbacks,
    )
    trainer.train()  # its on_train_end flushes: every step is recorded when it returns
    recorder_cpu = 0.0
    if cb is not None:
        recorder_cpu = thread_cpu("ledger-steps-bench")
        cb.close()
    wall, cpu = timer.step_time(5)
    return wall, cpu, recorder_cpu / len(timer.ends)


def thread_cpu(name: str) -> float:
    """CPU seconds the live thread `name` has used (the recorder's: hashing and appending)."""
    import threading

    (thread,) = [t for t in threading.enumerate() if t.name == name]
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


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
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tput-steps", type=int, default=1000)
    parser.add_argument(
        "--layers", type=int, default=4, help="GPT-2 layers (the tests' fixture: 1)"
    )
    parser.add_argument("--width", type=int, default=256, help="GPT-2 n_embd (fixture: 32)")
    opts = parser.parse_args()
    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        tok = train_tokenizer(base / "tok")
        size = (opts.layers, opts.width)
        ds = chat_dataset(tok, n=max(64, opts.steps * opts.batch))
        one_run(base, tok, ds, 10, opts.batch, False, size)  # warm the imports and caches
        without: list[tuple[float, float, float]] = []
        with_: list[tuple[float, float, float]] = []
        for r in range(opts.rounds):
            without.append(one_run(base, tok, ds, opts.steps, opts.batch, False, size))
            with_.append(one_run(base, tok, ds, opts.steps, opts.batch, True, size))
            print(f"round {r}: step {without[-1][0] * 1e3:.2f} ms without, "
                  f"{with_[-1][0] * 1e3:.2f} ms with (CPU {without[-1][1] * 1e3:.2f} / "
                  f"{with_[-1][1] * 1e3:.2f} ms)")  # fmt: skip
        for k, what in ((0, "wall"), (1, "CPU")):
            a = statistics.median(t[k] for t in without)
            b = statistics.median(t[k] for t in with_)
            print(f"step {what} time (GPT-2 {size[0]}x{size[1]}, median of {opts.rounds} rounds, "
                  f"{opts.steps} steps of {opts.batch}): {a * 1e3:.2f} ms without, "
                  f"{b * 1e3:.2f} ms with; ratio {b / a:.4f} (overhead {100 * (b / a - 1):+.2f}%)")  # fmt: skip
        own = statistics.median(t[2] for t in with_)
        step_cpu = statistics.median(t[1] for t in without)
        print(f"recorder thread CPU (hashing and appending, load-independent): {own * 1e3:.3f} ms "
              f"a step, {100 * own / step_cpu:.2f}% of a step's CPU without recording")  # fmt: skip
        for spool in (False, True):
            rates = [throughput(base, opts.tput_steps, opts.batch, spool) for _ in range(3)]
            where = "spool files" if spool else "a DuckDB ledger"
            print(f"recorder to {where}: {statistics.median(rates):,.0f} examples/s per rank "
                  f"(median of 3, {opts.tput_steps} steps of {opts.batch})")  # fmt: skip


if __name__ == "__main__":
    main()
