"""Hooks for training loops: one batch entry per step, one checkpoint entry per save.

A checkpoint's lineage must reach every batch that trained it. `BatchRecorder` lists the batches
recorded since the previous checkpoint and names that checkpoint as a parent, so the lineage closure
(parents, then their batches) covers the whole run without re-listing old batches each time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ledger.errors import UsageError

if TYPE_CHECKING:  # annotations only: importing this module loads no DuckDB
    from ledger.log.types import Entry
    from ledger.recording.results import BatchResult

__all__ = ["BatchRecorder", "CheckpointChain", "Recorder"]


class Recorder(Protocol):
    """What `BatchRecorder` needs of a ledger (a `ledger.Ledger` is one)."""

    def record_batch(
        self,
        records: Iterable[Mapping[str, Any] | str] | None = None,
        *,
        id: str,
        text_fields: Sequence[str] | None = None,
        derived_from: Sequence[int | str] = (),
        dataset: str | None = None,
    ) -> BatchResult: ...

    def record_checkpoint(
        self,
        *,
        id: str,
        weights: Sequence[Path | str],
        batches: Sequence[str] = (),
        parents: Sequence[str] = (),
        teachers: Sequence[str] = (),
        config: Path | str | None = None,
    ) -> Entry: ...


class CheckpointChain:
    """Which batches no checkpoint covers yet and which checkpoint came last: the one rule by which
    every training recorder (`BatchRecorder`, `ledger.integrations.steps.StepRecorder`) names a
    checkpoint's `batches` and `parents`.

    A checkpoint lists only the batches since the previous one and names that one as a parent, so
    the lineage closure covers the whole run without re-listing old batches each time.
    """

    def __init__(self, resume_from: str | None = None) -> None:
        self.last_checkpoint = resume_from
        self._pending: list[str] = []

    @property
    def pending(self) -> tuple[str, ...]:
        """Batch ids recorded since the last checkpoint, in order."""
        return tuple(self._pending)

    def add(self, batch_id: str) -> None:
        if batch_id not in self._pending:
            self._pending.append(batch_id)

    def discard(self, batch_ids: Iterable[str]) -> None:
        """Forget batches that were never recorded (a checkpoint must not name them)."""
        gone = set(batch_ids)
        self._pending = [b for b in self._pending if b not in gone]

    def parents(self, given: Sequence[str] = ()) -> list[str]:
        """The parents of the next checkpoint: the previous checkpoint first, then `given`."""
        chosen = list(given)
        if self.last_checkpoint and self.last_checkpoint not in chosen:
            chosen.insert(0, self.last_checkpoint)
        return chosen

    def saved(self, checkpoint_id: str) -> None:
        """The checkpoint is recorded: it covers the pending batches and is the next parent."""
        self._pending.clear()
        self.last_checkpoint = checkpoint_id


class BatchRecorder:
    """Records the batches of one training run and the checkpoints they lead to.

    Mutable on purpose: it remembers which batches are not yet covered by a checkpoint and which
    checkpoint came last. Pass `resume_from` when a run restarts from a recorded checkpoint.
    """

    def __init__(
        self,
        ledger: Recorder,
        run_id: str,
        *,
        text_fields: Sequence[str] | None = None,
        dataset: str | None = None,
        resume_from: str | None = None,
    ) -> None:
        if not run_id or any(c.isspace() for c in run_id):
            raise UsageError(f"run_id: expected a non-empty id without spaces, found {run_id!r}")
        self.ledger = ledger
        self.run_id = run_id
        self.text_fields = tuple(text_fields) if text_fields is not None else None
        self.dataset = dataset
        self.chain = CheckpointChain(resume_from)

    @property
    def last_checkpoint(self) -> str | None:
        return self.chain.last_checkpoint

    @last_checkpoint.setter
    def last_checkpoint(self, checkpoint_id: str | None) -> None:
        self.chain.last_checkpoint = checkpoint_id

    @property
    def pending(self) -> tuple[str, ...]:
        """Batch ids recorded since the last checkpoint, in order."""
        return self.chain.pending

    def batch_id(self, step: int) -> str:
        """Zero-padded so ids sort in step order (`run7/step-000123`)."""
        if step < 0:
            raise UsageError(f"step: expected a non-negative integer, found {step}")
        return f"{self.run_id}/step-{step:06d}"

    def checkpoint_id(self, step: int) -> str:
        return f"{self.run_id}/ckpt-{step}"

    def record(
        self,
        step: int,
        records: Iterable[Mapping[str, Any] | str],
        *,
        derived_from: Sequence[int | str] = (),
    ) -> BatchResult:
        """Record the records trained on at `step`; re-recording the same step with the same records
        (a restarted run) appends nothing."""
        batch_id = self.batch_id(step)
        result = self.ledger.record_batch(
            records,
            id=batch_id,
            derived_from=derived_from,
            text_fields=self.text_fields,
            dataset=self.dataset,
        )
        self.chain.add(batch_id)
        return result

    def checkpoint(
        self,
        step: int,
        weights: Sequence[Path | str],
        *,
        id: str | None = None,
        parents: Sequence[str] = (),
        teachers: Sequence[str] = (),
        config: Path | str | None = None,
    ) -> Entry:
        """Record a checkpoint trained on the batches since the previous one, with the previous
        checkpoint as a parent. On failure nothing is forgotten, so the call can be retried."""
        checkpoint_id = id or self.checkpoint_id(step)
        entry = self.ledger.record_checkpoint(
            id=checkpoint_id,
            weights=weights,
            batches=list(self.chain.pending),
            parents=self.chain.parents(parents),
            teachers=teachers,
            config=config,
        )
        self.chain.saved(checkpoint_id)
        return entry
