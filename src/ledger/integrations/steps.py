"""The step recorder: what each training step consumed, recorded off the training thread.

API (names stable; the torch, Hugging Face and Lightning integrations are built on it):

    rec = StepRecorder(lg, run="sft-1", tokenizer=tok)      # or StepRecorder(None, run=..., spool=DIR)
    rec.submit(examples)                  # one step: its examples in order (dicts, str, token ids)
    rec.submit(rec.hasher(examples))      # ... or the kernel table hashed elsewhere (a worker)
    rec.checkpoint("sft-1/ckpt-100", weights=["out/model.safetensors"])
    rec.close()                           # or `with StepRecorder(...) as rec:`

- `StepRecorder(ledger, *, run, spool=None, tokenizer=None, text_fields=None, token_field=None,
  on_error="raise", resume_from=None, start_step=0, rank=None, world_size=None, queue_size=1024)`.
  `ledger` is a `ledger.Ledger` (one process) or None with `spool=DIR` (any number of ranks; then
  `ledger record spool DIR`). Rank and world size default to torch.distributed's, else the `RANK`
  and `WORLD_SIZE` variables torchrun sets, else 0 and 1.
- `hasher` (an `ExampleHasher`, picklable): `hasher(examples) -> pyarrow.Table` of the kernel's
  rows; run it where the examples are (a DataLoader worker) so only hashes travel.
  `ledger.integrations.examples.hash_examples(examples, tokenizer=...)` is the same as a function.
- `submit(examples_or_table, *, step=None, micro_batch=None) -> str | None`: queue one step's batch
  and return its id (None when the step had no records). `step` defaults to `next_step`, which then
  becomes `step + 1`. Blocks while the queue is full (back-pressure, never a drop).
- `batch_id(step, micro_batch=None)`: `{run}/rank-{rank:05d}/step-{step:09d}`, with
  `/mb-{micro_batch:04d}` for micro-batches: unique per rank and micro-batch, sorting in step order.
  The batch body also carries `step`, `rank` (and `micro_batch`).
- `checkpoint(id, weights=(), *, parents=(), teachers=(), config=None)`: waits for the queued steps,
  then records a `checkpoint` entry (weights hashed now) with the batches since the previous
  checkpoint and that one as parent. Under many ranks call it on every rank with the same id;
  `weights` on the rank(s) that saved files; `ledger record spool` joins the parts.
- `flush()` waits for the queued steps; `close()` flushes and stops the background thread.
- `on_error="raise"`: a failure in the background is raised by the next `submit`/`checkpoint`/
  `flush`/`close` as `StepRecordingError` (its `__cause__` the failure); `"warn"`: logged as a
  warning on the `ledger.integrations.steps` logger, training goes on, and `lost` lists the batch ids
  (and checkpoint ids) that were not recorded.
- Read-only: `run`, `rank`, `world_size`, `next_step`, `pending` (batch ids not yet in a
  checkpoint), `last_checkpoint`, `recorded` (batches recorded), `lost`.

One background thread gathers the submitted steps for up to `GROUP_SECONDS` (or until a checkpoint,
`flush` or `close`), hashes the raw ones in one kernel call and appends them in one transaction (a
DuckDB open, commit and close costs ~0.1 CPU-s, which recorded step by step would take its share of
the cores the training step runs on); with a spool it writes one file per step
(`ledger.ingest.spool`). Steps after the last checkpoint that a killed process had not yet recorded
belong to no checkpoint, so no lineage misses them.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pyarrow as pa  # type: ignore[import-untyped]

from ledger.engine.kernel import RECORD_SCHEMA
from ledger.errors import LedgerError, UsageError
from ledger.ingest import spool as spool_format
from ledger.ingest.spool import batch_id
from ledger.ingest.weights import hash_file, hash_weights
from ledger.integrations.examples import ExampleHasher, example_hasher
from ledger.integrations.training import CheckpointChain
from ledger.recording.refs import check_id
from ledger.spec import fingerprint, merkle

if TYPE_CHECKING:
    from ledger.log.append import LogWriter

__all__ = ["OnError", "RecorderSettings", "StepRecorder", "StepRecordingError", "batch_id"]

log = logging.getLogger(__name__)

OnError = Literal["raise", "warn"]
# How long submitted steps gather before they are hashed and appended together (or until
# `queue_size` steps, a checkpoint, `flush` or `close`). An append opens the DuckDB file (~0.1 CPU-s
# with the commit and close); every 0.5 s that cost a 75 ms training step of a small GPT-2 7%
# (bench_training.py). A checkpoint never waits on this: it records what is gathered at once.
GROUP_SECONDS = 10.0
QUEUE_SIZE = 1024  # steps gathered at most; a further submit waits while the recorder is behind


class StepRecordingError(LedgerError):
    """Recording training steps failed in the background; the cause is attached."""


class HasWriter(Protocol):
    """What the recorder needs of a ledger (a `ledger.Ledger` is one)."""

    @property
    def writer(self) -> LogWriter: ...


@dataclass
class _Step:
    id: str
    step: int
    micro_batch: int | None
    examples: Sequence[Any] | None
    rows: pa.Table | None


@dataclass
class _Checkpoint:
    id: str
    weights: list[dict[str, str]]
    parents: tuple[str, ...]
    teachers: tuple[str, ...]
    config: str | None
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass
class _Barrier:
    done: threading.Event = field(default_factory=threading.Event)


_STOP = object()


class _Gathering:
    """The hand-over from the training thread to the recorder's thread.

    Items gather without waking the recorder: a thread woken at every step preempts the step's own
    threads (OpenMP workers wait for each other at every parallel region, so one preempted worker
    stalls the whole region for a scheduler slice). The recorder takes them all once `limit` items
    gathered, `seconds` passed since the first, or an urgent item came (a checkpoint, `flush`,
    `close`). A put blocks while `limit` items wait (back-pressure: the recorder is behind).
    """

    def __init__(self, limit: int, seconds: float) -> None:
        self._items: list[object] = []
        self._cond = threading.Condition()
        self._limit = max(1, limit)
        self._seconds = seconds
        self._due = 0.0
        self._urgent = False

    def put(self, item: object, *, urgent: bool = False) -> None:
        with self._cond:
            while len(self._items) >= self._limit and not urgent:
                self._cond.wait()
            if not self._items:
                self._due = time.monotonic() + self._seconds
            self._items.append(item)
            self._urgent = self._urgent or urgent
            if self._urgent or len(self._items) >= self._limit:
                self._cond.notify_all()

    def take(self) -> list[object]:
        with self._cond:
            while not (
                self._items
                and (
                    self._urgent or len(self._items) >= self._limit or time.monotonic() >= self._due
                )
            ):
                wait = max(0.0, self._due - time.monotonic()) if self._items else None
                self._cond.wait(timeout=wait)
            items, self._items, self._urgent = self._items, [], False
            self._cond.notify_all()  # a put waiting for room
            return items


@dataclass(frozen=True)
class RecorderSettings:
    """What a training-loop callback keeps to start a `StepRecorder` at each `train()`/`fit()`,
    checked when the callback is made rather than at the first step (`RecorderSettings.of`)."""

    ledger: HasWriter | None
    run: str
    spool: Path | str | None
    hasher: ExampleHasher
    on_error: OnError = "raise"
    resume_from: str | None = None
    queue_size: int = QUEUE_SIZE

    @classmethod
    def of(
        cls,
        ledger: HasWriter | None,
        *,
        run: str,
        spool: Path | str | None = None,
        tokenizer: object | None = None,
        text_fields: Sequence[str] | None = None,
        token_field: str | None = None,
        on_error: OnError = "raise",
        resume_from: str | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> RecorderSettings:
        _check_settings(run, ledger, spool, on_error, "LedgerCallback")
        hasher = example_hasher(tokenizer, text_fields, token_field)  # fails now, not mid-run
        return cls(ledger, run, spool, hasher, on_error, resume_from, queue_size)

    def start(self, *, resume_from: str | None, rank: int, world_size: int) -> StepRecorder:
        return StepRecorder(
            self.ledger,
            run=self.run,
            spool=self.spool,
            tokenizer=self.hasher.tokenizer,
            text_fields=self.hasher.text_fields,
            on_error=self.on_error,
            resume_from=resume_from,
            rank=rank,
            world_size=world_size,
            queue_size=self.queue_size,
        )


def _check_settings(
    run: str, ledger: HasWriter | None, spool: Path | str | None, on_error: str, who: str
) -> None:
    check_id(run)
    if (ledger is None) == (spool is None):
        raise UsageError(f"{who} records to a ledger or to spool=DIR: give one of them")
    if on_error not in ("raise", "warn"):
        raise UsageError(f"on_error {on_error!r}: expected 'raise' or 'warn'")


def _distributed() -> tuple[int, int]:
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class StepRecorder:
    """Records each training step's examples and each checkpoint (see the module's doc)."""

    def __init__(
        self,
        ledger: HasWriter | None,
        *,
        run: str,
        spool: Path | str | None = None,
        tokenizer: object | None = None,
        text_fields: Sequence[str] | None = None,
        token_field: str | None = None,
        on_error: OnError = "raise",
        resume_from: str | None = None,
        start_step: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        _check_settings(run, ledger, spool, on_error, "StepRecorder")
        found_rank, found_size = _distributed()
        self.rank = found_rank if rank is None else rank
        self.world_size = found_size if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise UsageError(f"rank {self.rank} of world size {self.world_size}")
        if ledger is not None and self.world_size > 1:
            raise UsageError(
                f"rank {self.rank} of {self.world_size}: many ranks record to spool=DIR "
                "(one DuckDB writer appends it: ledger record spool DIR)"
            )
        self.run = run
        self.on_error = on_error
        self.hasher: ExampleHasher = example_hasher(tokenizer, text_fields, token_field)
        self.next_step = start_step
        self.recorded = 0
        self._lost: list[str] = []
        self._chain = CheckpointChain(resume_from)
        self._writer = ledger.writer if ledger is not None else None
        self._spool = Path(spool) if spool is not None else None
        self._seq = (
            spool_format.next_seq(spool_format.rank_dir(self._spool, self.rank))
            if self._spool is not None
            else 0
        )
        self._error: BaseException | None = None
        self._closed = False
        self._gathering = _Gathering(queue_size, GROUP_SECONDS)
        self._thread = threading.Thread(target=self._work, name=f"ledger-steps-{run}", daemon=True)
        self._thread.start()

    # --- training thread ---------------------------------------------------------------------------
    @property
    def pending(self) -> tuple[str, ...]:
        return self._chain.pending

    @property
    def last_checkpoint(self) -> str | None:
        return self._chain.last_checkpoint

    @property
    def lost(self) -> tuple[str, ...]:
        return tuple(self._lost)

    def batch_id(self, step: int, micro_batch: int | None = None) -> str:
        return batch_id(self.run, step, self.rank, micro_batch)

    def submit(
        self,
        examples: Sequence[Any] | pa.Table,
        *,
        step: int | None = None,
        micro_batch: int | None = None,
    ) -> str:
        """Queue one step's examples (or their kernel table); the batch id it will be recorded as."""
        self._check()
        step = self.next_step if step is None else step
        bid = self.batch_id(step, micro_batch)
        self.next_step = step + 1
        if isinstance(examples, pa.Table):
            if not examples.schema.equals(RECORD_SCHEMA):
                raise UsageError("submit: a table must be the kernel's rows (hasher(examples))")
            item = _Step(bid, step, micro_batch, None, examples)
        else:
            item = _Step(bid, step, micro_batch, examples, None)
        self._gathering.put(item)
        return bid

    def checkpoint(
        self,
        id: str,
        weights: Sequence[Path | str] = (),
        *,
        parents: Sequence[str] = (),
        teachers: Sequence[str] = (),
        config: Path | str | None = None,
    ) -> None:
        """Record a checkpoint after the queued steps (waits for them)."""
        self._check()
        check_id(id)
        if not weights and self._spool is None:
            raise UsageError(f"checkpoint {id!r}: a checkpoint needs at least one weights file")
        item = _Checkpoint(
            id,
            hash_weights(weights) if weights else [],
            tuple(parents),
            tuple(teachers),
            hash_file(Path(config), lambda n: None) if config is not None else None,
        )
        self._gathering.put(item, urgent=True)
        item.done.wait()
        self._check()

    def flush(self) -> None:
        """Wait until every queued step is recorded."""
        self._check()
        barrier = _Barrier()
        self._gathering.put(barrier, urgent=True)
        barrier.done.wait()
        self._check()

    def close(self) -> None:
        """Record what is queued, stop the background thread; raise a failure as `on_error` says."""
        if not self._closed:
            self._closed = True
            self._gathering.put(_STOP, urgent=True)
            self._thread.join()
        self._raise()

    def __enter__(self) -> StepRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:  # the loop failed: record what it queued, but its own error wins
            try:
                self.close()
            except LedgerError:
                log.exception("recording the steps failed too")

    def _check(self) -> None:
        if self._closed:
            raise UsageError(f"the step recorder of {self.run!r} is closed")
        self._raise()

    def _raise(self) -> None:
        if self._error is not None and self.on_error == "raise":
            raise StepRecordingError(
                f"recording the training steps of {self.run!r} failed: {self._error}"
            ) from self._error

    # --- background thread -------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            steps: list[_Step] = []
            for item in self._gathering.take():  # in the order submitted
                if isinstance(item, _Step):
                    steps.append(item)
                    continue
                if steps:
                    self._record_steps(steps)
                    steps = []
                if isinstance(item, _Checkpoint):
                    self._record_checkpoint(item)
                elif isinstance(item, _Barrier):
                    item.done.set()
                elif item is _STOP:
                    return
            if steps:
                self._record_steps(steps)

    def _failed(self, what: Sequence[str], exc: BaseException) -> None:
        if self._error is None or self.on_error == "warn":
            self._error = exc
        self._lost.extend(what)
        if self.on_error == "warn":
            log.warning("ledger: could not record %s: %s", ", ".join(what[:3]), exc)

    def _record_steps(self, steps: list[_Step]) -> None:
        if self._error is not None and self.on_error == "raise":
            self._lost.extend(s.id for s in steps)  # the recorder stopped at its first failure
            return
        raw = [s for s in steps if s.rows is None]
        try:
            for s, rows in zip(raw, self.hasher.hash_steps([s.examples or [] for s in raw])):
                s.rows = rows
        except Exception:  # noqa: S110 - hashed step by step below, which names the bad step
            pass
        hashed: list[tuple[_Step, pa.Table]] = []
        for i, s in enumerate(steps):  # a step that cannot be hashed is lost alone
            try:
                rows = s.rows if s.rows is not None else self.hasher(s.examples or [])
            except Exception as exc:
                self._failed([s.id], exc)
                if self.on_error == "raise":  # stop at the first failure; later steps are lost
                    self._lost.extend(later.id for later in steps[i + 1 :])
                    break
                continue
            if rows.num_rows:
                hashed.append((s, rows))
        try:
            if self._spool is not None:
                for s, rows in hashed:
                    self._write_batch(s, rows)
                    self._chain.add(s.id)
                    self.recorded += 1
                return
            from ledger.recording.spool import append_steps

            assert self._writer is not None
            append_steps(self._writer, [self._hashed_step(s, rows) for s, rows in hashed])
        except Exception as exc:  # every failure goes to the training thread, as on_error says
            self._failed([s.id for s, _ in hashed if s.id not in self._chain.pending], exc)
            return
        for s, _ in hashed:
            self._chain.add(s.id)
        self.recorded += len(hashed)

    def _extra(self, s: _Step) -> dict[str, Any]:
        extra: dict[str, Any] = {"step": s.step, "rank": self.rank}
        if s.micro_batch is not None:
            extra["micro_batch"] = s.micro_batch
        return extra

    def _hashed_step(self, s: _Step, rows: pa.Table) -> Any:
        from ledger.recording.spool import HashedStep

        tok = self.hasher.tokenizer
        return HashedStep(
            s.id,
            rows,
            self._extra(s),
            self.hasher.text_fields,
            self.hasher.min_segment_chars,
            None if tok is None else tok.sha256,
            None if tok is None else tok.field,
        )

    def _write_batch(self, s: _Step, rows: pa.Table) -> None:
        assert self._spool is not None
        segments = rows.column("segments").to_pylist()
        tok = self.hasher.tokenizer
        entry = spool_format.SpoolFile(
            kind="batch",
            id=s.id,
            run=self.run,
            rank=self.rank,
            world_size=self.world_size,
            seq=self._seq,
            step=s.step,
            micro_batch=s.micro_batch,
            count=rows.num_rows,
            records_root=merkle.root(rows.column("leaf_hash").to_pylist()).hex(),
            fingerprints_root=merkle.root(rows.column("fingerprint_hash").to_pylist()).hex(),
            records_without_text=sum(1 for segs in segments if not segs),
            text_fields=self.hasher.text_fields,
            min_segment_chars=self.hasher.min_segment_chars,
            tokenizer=None if tok is None else tok.sha256,
            token_field=None if tok is None else tok.field,
            fingerprint_params=fingerprint.DEFAULT_PARAMS.to_json(),
        )
        spool_format.write_spool_file(self._spool, entry, rows)
        self._seq += 1

    def _record_checkpoint(self, item: _Checkpoint) -> None:
        try:
            if self._error is not None and self.on_error == "raise":
                self._lost.append(item.id)
                return
            parents = self._chain.parents(item.parents)
            if self._spool is not None:
                entry = spool_format.SpoolFile(
                    kind="checkpoint",
                    id=item.id,
                    run=self.run,
                    rank=self.rank,
                    world_size=self.world_size,
                    seq=self._seq,
                    step=self.next_step,
                    weights=tuple((w["path"], w["sha256"]) for w in item.weights),
                    batches=self._chain.pending,
                    parents=tuple(parents),
                    teachers=item.teachers,
                    config=item.config,
                )
                spool_format.write_spool_file(self._spool, entry)
                self._seq += 1
            else:
                from ledger.recording.checkpoints import record_hashed_checkpoint

                assert self._writer is not None
                record_hashed_checkpoint(
                    self._writer,
                    id=item.id,
                    weights=item.weights,
                    batches=list(self._chain.pending),
                    parents=parents,
                    teachers=item.teachers,
                    config=item.config,
                )
            self._chain.saved(item.id)
        except Exception as exc:
            self._failed([item.id], exc)
        finally:
            item.done.set()
