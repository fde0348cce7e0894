"""Lightning: record the batches of each optimizer step and every checkpoint file the Trainer writes.

    cb = LedgerCallback(lg, run="pl-1", tokenizer=tokenizer)        # or LedgerCallback(None, ..., spool=DIR)
    trainer = L.Trainer(..., callbacks=[cb, ModelCheckpoint(...)])

`on_train_batch_end` sees each micro-batch as the step consumed it; the callback splits it back into
examples (`examples=` overrides how) and holds it until `trainer.global_step` moves, then submits the
step's micro-batches to a `StepRecorder` (hashed and appended off the training thread), as one batch
or, with `accumulate_grad_batches > 1`, one per micro-batch.

Checkpoints: the callback wraps the strategy's `CheckpointIO`, so every `.ckpt` file written (by
`ModelCheckpoint` or `trainer.save_checkpoint`) is hashed once written and recorded as the checkpoint
`{run}/step-N` (N the global step; `.1`, `.2` ... for further saves of the same step) with the batches
since the previous one and that one as parent. The id is stored in the file (`checkpoint["ledger"]`),
so `trainer.fit(..., ckpt_path=FILE)` continues the chain from the checkpoint that file is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback

from ledger.errors import NotFoundError, UsageError
from ledger.integrations.examples import uncollate
from ledger.integrations.steps import (
    QUEUE_SIZE,
    HasWriter,
    OnError,
    RecorderSettings,
    StepRecorder,
)

__all__ = ["LedgerCallback", "batch_examples"]

KEY = "ledger"  # where a checkpoint file holds its ledger id: checkpoint["ledger"]["checkpoint"]


def batch_examples(batch: object) -> list[Any]:
    """A collated batch as its examples: a mapping of columns or a list of texts as `uncollate`
    says; a tuple or list of equal-length tensors (`(x, y)`) as one `{"0": x[i], "1": y[i]}` each."""
    if isinstance(batch, (tuple, list)) and batch and not isinstance(batch[0], (str, int, float)):
        columns = [uncollate(part) for part in batch]
        sizes = {len(c) for c in columns}
        if len(sizes) == 1:
            (size,) = sizes
            return [{str(j): c[i] for j, c in enumerate(columns)} for i in range(size)]
    return uncollate(batch)


class _Observed(CheckpointIO):
    """The strategy's CheckpointIO, unchanged, telling the callback about each file it wrote."""

    def __init__(self, inner: CheckpointIO, callback: LedgerCallback) -> None:
        super().__init__()
        self.inner = inner
        self.callback = callback

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        stored = checkpoint.get(KEY)
        if isinstance(stored, Mapping) and stored.get("run") == self.callback.run:
            checkpoint_id = str(stored["checkpoint"])
        else:  # written without the callbacks' on_save_checkpoint
            checkpoint_id = self.callback.saving(checkpoint)
        self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)
        self.callback.saved(checkpoint_id, Path(path))

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if weights_only is None:  # older CheckpointIO plugins take no weights_only
            loaded: dict[str, Any] = self.inner.load_checkpoint(path, map_location=map_location)
            return loaded
        return self.inner.load_checkpoint(
            path, map_location=map_location, weights_only=weights_only
        )

    def remove_checkpoint(self, path: Any) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()


class LedgerCallback(Callback):
    """Records the steps a Lightning `Trainer` takes and the checkpoint files it writes."""

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
        examples: Callable[[Any], Sequence[Any]] = batch_examples,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.settings = RecorderSettings.of(
            lg, run=run, spool=spool, tokenizer=tokenizer, text_fields=text_fields,
            token_field=token_field, on_error=on_error, resume_from=resume_from,
            queue_size=queue_size,
        )  # fmt: skip
        self.run = run
        self.resume_from = resume_from  # or the id stored in the checkpoint fit() resumes from
        self.examples = examples
        self.recorder: StepRecorder | None = None
        self._micro_batches: list[Sequence[Any]] = []
        self._step = 0
        self._accumulation = 1
        self._saved_steps: dict[int, int] = {}

    # --- Trainer hooks -----------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        strategy = trainer.strategy
        if not isinstance(strategy.checkpoint_io, _Observed):
            strategy.checkpoint_io = _Observed(strategy.checkpoint_io, self)

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        stored = checkpoint.get(KEY)
        if (
            self.resume_from is None
            and isinstance(stored, Mapping)
            and stored.get("run") == self.run
        ):
            self.resume_from = str(stored["checkpoint"])

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint_id = self.saving(checkpoint)
        if not trainer.is_global_zero and self.settings.spool is not None:
            self._recorder().checkpoint(checkpoint_id)  # this rank's part: its batches, no files

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.recorder is not None:
            self.recorder.close()
        self.recorder = self.settings.start(
            resume_from=self.resume_from, rank=trainer.global_rank, world_size=trainer.world_size
        )
        self._micro_batches = []
        self._step = trainer.global_step
        self._accumulation = int(trainer.accumulate_grad_batches)

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._micro_batches.append(self.examples(batch))
        if trainer.global_step != self._step:  # this micro-batch completed an optimizer step
            self._step = trainer.global_step
            self._submit(self._step)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # micro-batches whose accumulation never reached an optimizer step trained nothing
        self._micro_batches = []
        self._recorder().flush()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        strategy = trainer.strategy
        if isinstance(strategy.checkpoint_io, _Observed):
            strategy.checkpoint_io = strategy.checkpoint_io.inner
        self.close()

    def close(self) -> None:
        """Stop the recorder's background thread (`teardown` does this after `fit`)."""
        if self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            recorder.close()

    # --- checkpoint files (called by _Observed) ----------------------------------------------------
    def saving(self, checkpoint: dict[str, Any]) -> str:
        """The id the checkpoint about to be written will be recorded as; stored in it."""
        step = self._step
        n = self._saved_steps.get(step, 0)
        checkpoint_id = f"{self.run}/step-{step}" + (f".{n}" if n else "")
        while self._taken(checkpoint_id):  # a resumed run saving again at a step saved before
            n += 1
            checkpoint_id = f"{self.run}/step-{step}.{n}"
        self._saved_steps[step] = n + 1
        checkpoint[KEY] = {"run": self.run, "checkpoint": checkpoint_id}
        return checkpoint_id

    def saved(self, checkpoint_id: str, path: Path) -> None:
        self._recorder().checkpoint(checkpoint_id, [path])

    # --- helpers -----------------------------------------------------------------------------------
    def _taken(self, checkpoint_id: str) -> bool:
        """Whether the ledger already holds this id (a spool is checked when it is appended)."""
        lookup = getattr(self.settings.ledger, "entry", None)
        if lookup is None:
            return False
        try:
            lookup(checkpoint_id)
        except NotFoundError:
            return False
        return True

    def _submit(self, step: int) -> None:
        recorder = self._recorder()
        micro_batches, self._micro_batches = self._micro_batches, []
        if self._accumulation == 1 and len(micro_batches) == 1:
            recorder.submit(micro_batches[0], step=step)
        else:
            for k, examples in enumerate(micro_batches):
                recorder.submit(examples, step=step, micro_batch=k)

    def _recorder(self) -> StepRecorder:
        if self.recorder is None:
            raise UsageError("LedgerCallback: the Trainer has not started training")
        return self.recorder
