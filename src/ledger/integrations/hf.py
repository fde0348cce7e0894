"""The Hugging Face `Trainer`: record the examples of each step taken and every checkpoint it saves.

    cb = LedgerCallback(lg, run="sft-1", tokenizer=tokenizer)          # or LedgerCallback(None, ..., spool=DIR)
    trainer = Trainer(model, args, train_dataset=ds, data_collator=cb.wrap(collator), callbacks=[cb])

A callback never sees the batch, and the loader collates ahead of the step (accelerate looks one
batch ahead; the Trainer fetches all `gradient_accumulation_steps` micro-batches of a step before the
first forward pass). So the wrapped collator only queues the examples it is given (the features
before collation: what the collator saw, so with `remove_unused_columns=True` the columns the model
takes, with `False` every column), and the callback takes them off that queue in order as the
Trainer consumes them: one per `on_substep_end`, one more at `on_step_end`, which submits the step's
micro-batches to a `StepRecorder` (hashed and appended off the training thread). A micro-batch that
was collated but never trained on (the look-ahead when training stops) is never recorded.

Each save (`checkpoint-N/`, `on_save`) records the checkpoint `{run}/checkpoint-N` with the hashes
of its weights files (`*.safetensors`, `pytorch_model*.bin` and their shard indexes), `config.json`
as its config, the batches since the previous save, and that save as parent. Resuming
(`trainer.train(resume_from_checkpoint=...)`) names `{run}/checkpoint-N` of the resumed step as the
parent, so the chain goes on (`resume_from=` names another id).

Evaluation batches pass through the same collator: between the step that asks for an evaluation
and `on_evaluate`, and outside `train()`, collated batches are not queued.

DataLoader workers (`dataloader_num_workers > 0`) collate in other processes, in parallel: there the
wrapped collator hashes the features itself (only hashes travel) and sends them to the trainer's
process keyed by the collated model input (`batch_key`: the bytes of `input_ids`, or of
`pixel_values`, `input_values`, `input_features`). A forward pre-hook on the model looks up each
training forward pass's key, so micro-batches are queued in the order the model consumed them,
whatever order the workers finished in; the callback then takes them off the queue as above.
"""

from __future__ import annotations

import collections
import hashlib
import multiprocessing
import queue as queue_module
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ledger.errors import UsageError
from ledger.integrations.examples import ExampleHasher
from ledger.integrations.steps import (
    QUEUE_SIZE,
    HasWriter,
    OnError,
    RecorderSettings,
    StepRecorder,
)

__all__ = ["LedgerCallback", "RecordingCollator", "batch_key", "weight_files"]

WEIGHT_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.bin",
)


def weight_files(directory: Path) -> list[Path]:
    """The model weights a `Trainer` saved in `checkpoint-N/` (not its optimizer or RNG state)."""
    found = {p for pattern in WEIGHT_PATTERNS for p in directory.glob(pattern) if p.is_file()}
    return sorted(found)


KEY_FIELDS = ("input_ids", "pixel_values", "input_values", "input_features")
WORKER_TIMEOUT = 120.0  # seconds the trainer waits for a worker's hashes of a batch it already has


def batch_key(batch: Mapping[str, Any]) -> bytes | None:
    """What names a collated micro-batch on both sides of a DataLoader worker: the sha256 of its
    first model input in `KEY_FIELDS` (name, shape, dtype and bytes); None without one."""
    for name in KEY_FIELDS:
        value = batch.get(name)
        if value is not None and hasattr(value, "detach"):
            import torch

            tensor = value.detach().to("cpu").contiguous()
            head = f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode()
            return hashlib.sha256(
                head + tensor.view(-1).view(torch.uint8).numpy().tobytes()
            ).digest()
    return None


def _in_worker() -> bool:
    from torch.utils.data import get_worker_info

    return get_worker_info() is not None


class RecordingCollator:
    """A data collator that queues a copy of each training micro-batch's features for its callback;
    in a DataLoader worker it hashes them and sends the hashes to the trainer's process."""

    def __init__(self, collator: Callable[[list[Any]], Any], callback: LedgerCallback) -> None:
        self.collator = collator
        self.callback: LedgerCallback | None = callback
        self._worker: tuple[bool, ExampleHasher, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """What a spawned worker needs (the callback, with its ledger and thread, stays home)."""
        cb = self.callback
        worker = self._worker if cb is None else (cb.recording, cb.hasher, cb.channel)
        return {"collator": self.collator, "callback": None, "_worker": worker}

    def __call__(self, features: list[Any]) -> Any:
        cb = self.callback
        recording, hasher, channel = (
            self._worker if cb is None else (cb.recording, cb.hasher, cb.channel)
        ) or (False, None, None)
        if not recording:
            return self.collator(features)
        # a shallow copy: some collators pop fields off the features they are given
        examples = [dict(f) if isinstance(f, Mapping) else f for f in features]
        batch = self.collator(features)
        if channel is not None and _in_worker():
            key = batch_key(batch) if isinstance(batch, Mapping) else None
            try:
                hashed: Any = hasher(examples) if hasher is not None else examples
            except Exception:  # the examples travel instead; the recorder applies on_error
                hashed = examples
            channel.put((key, hashed))
        elif cb is not None:
            cb.queue.append(examples)
        return batch


class LedgerCallback(TrainerCallback):
    """Records the steps a `Trainer` takes and the checkpoints it saves (see the module's doc).

    `lg` is a `ledger.Ledger`, or None with `spool=DIR` (many ranks; `ledger record spool DIR`).
    `tokenizer` decodes token ids into the records' texts. `on_error` as `StepRecorder` says.
    """

    def __init__(
        self,
        lg: HasWriter | None,
        *,
        run: str,
        tokenizer: object | None = None,
        spool: Path | str | None = None,
        on_error: OnError = "raise",
        text_fields: Sequence[str] | None = None,
        token_field: str | None = None,
        resume_from: str | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.settings = RecorderSettings.of(
            lg, run=run, spool=spool, tokenizer=tokenizer, text_fields=text_fields,
            token_field=token_field, on_error=on_error, resume_from=resume_from,
            queue_size=queue_size,
        )  # fmt: skip
        self.run = run
        self.hasher = self.settings.hasher
        self.recorder: StepRecorder | None = None
        self.queue: collections.deque[Any] = collections.deque()
        self.channel: Any = None  # workers' hashes, keyed by batch_key (dataloader workers only)
        self._arrived: dict[bytes | None, collections.deque[Any]] = {}
        self._hook: Any = None
        self.training = False
        self.evaluating = False
        self._step: list[list[Any]] = []
        self._accumulation = 1

    @property
    def recording(self) -> bool:
        """True while the collator is feeding training steps (not evaluation, not outside train())."""
        return self.training and not self.evaluating

    def wrap(self, collator: Callable[[list[Any]], Any] | None = None) -> RecordingCollator:
        """The collator to give the `Trainer` (default: transformers' `default_data_collator`)."""
        if collator is None:
            from transformers import default_data_collator

            collator = default_data_collator
        return RecordingCollator(collator, self)

    def checkpoint_id(self, step: int) -> str:
        return f"{self.run}/checkpoint-{step}"

    # --- Trainer events ----------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        loader = kwargs.get("train_dataloader")
        if state.global_step > 0 and _iterable(loader) and not args.ignore_data_skip:
            raise UsageError(
                "LedgerCallback: resuming an IterableDataset collates the skipped batches again; "
                "set ignore_data_skip=True (the batches then trained on are recorded)"
            )
        if self.recorder is not None:
            self.recorder.close()
        parent = self.settings.resume_from
        if parent is None and state.global_step > 0:  # resumed from checkpoint-N
            parent = self.checkpoint_id(state.global_step)
        self.recorder = self.settings.start(
            resume_from=parent, rank=args.process_index, world_size=args.world_size
        )
        self.queue.clear()
        self._step = []
        self._accumulation = args.gradient_accumulation_steps
        self._arrived.clear()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if args.dataloader_num_workers > 0:
            model = kwargs.get("model")
            if model is None or not hasattr(model, "register_forward_pre_hook"):
                raise UsageError(
                    "LedgerCallback: with dataloader workers the callback matches batches at the "
                    "model's forward pass, and the Trainer gave it no model"
                )
            if self.channel is None:
                self.channel = multiprocessing.get_context().Queue()
            self._hook = model.register_forward_pre_hook(self._forward, with_kwargs=True)
        self.training = True
        self.evaluating = bool(args.eval_on_start)

    def on_substep_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._step.append(self._consumed())

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._step.append(self._consumed())
        recorder = self._recorder()
        micro_batches, self._step = self._step, []
        if self._accumulation == 1 and len(micro_batches) == 1:
            recorder.submit(micro_batches[0], step=state.global_step)
        else:
            for k, examples in enumerate(micro_batches):
                recorder.submit(examples, step=state.global_step, micro_batch=k)
        # the evaluation this step asks for collates its own batches next
        self.evaluating = bool(control.should_evaluate)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.evaluating = bool(control.should_evaluate)

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.evaluating = False

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        directory = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
        weights = weight_files(directory) if args.should_save else []
        if args.should_save and not weights:
            raise UsageError(f"{directory}: the Trainer saved no weights file LedgerCallback knows")
        config = directory / "config.json"
        self._recorder().checkpoint(
            self.checkpoint_id(state.global_step),
            weights,
            config=config if weights and config.is_file() else None,
        )

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.training = False
        self.queue.clear()  # collated ahead and never trained on
        self._arrived.clear()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._recorder().flush()

    def close(self) -> None:
        """Stop the recorder's background thread (after `train()`; a new `train()` starts another)."""
        if self.recorder is not None:
            self.recorder.close()

    # --- helpers -----------------------------------------------------------------------------------
    def _recorder(self) -> StepRecorder:
        if self.recorder is None:
            raise UsageError("LedgerCallback: the Trainer has not called on_train_begin")
        return self.recorder

    def _forward(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        """A training forward pass: queue the hashes a worker sent for this very micro-batch."""
        if not (module.training and self.recording):
            return
        key = batch_key(kwargs)
        if key is None:
            raise UsageError(
                "LedgerCallback: with dataloader workers, micro-batches are matched by their "
                f"model input ({', '.join(KEY_FIELDS)}), and this model was called without one; "
                "set dataloader_num_workers=0"
            )
        while not self._arrived.get(key):
            try:
                sent, hashed = self.channel.get(timeout=WORKER_TIMEOUT)
            except queue_module.Empty:
                raise UsageError(
                    f"LedgerCallback: no hashes came from the DataLoader workers for a micro-batch "
                    f"within {WORKER_TIMEOUT:.0f} s; give the Trainer data_collator=callback.wrap(collator)"
                ) from None
            self._arrived.setdefault(sent, collections.deque()).append(hashed)
        self.queue.append(self._arrived[key].popleft())

    def _consumed(self) -> Any:
        if not self.queue:
            raise UsageError(
                "LedgerCallback: a step was taken on a batch the wrapped collator never saw; "
                "give the Trainer data_collator=callback.wrap(collator)"
            )
        return self.queue.popleft()


def _iterable(loader: object) -> bool:
    from torch.utils.data import IterableDataset

    return isinstance(getattr(loader, "dataset", None), IterableDataset)
