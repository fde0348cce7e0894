"""PyTorch: a DataLoader that records what each step consumed.

    loader = RecordingLoader(DataLoader(ds, batch_size=8, shuffle=True), lg, run="pretrain-1")
    for batch in loader:                       # exactly what the DataLoader yields
        ...
        loader.checkpoint("pretrain-1/ckpt-100", weights=["out/model.safetensors"])
    loader.close()                             # or `with RecordingLoader(...) as loader:`

The DataLoader's `collate_fn` is wrapped: wherever it runs (a worker process with `num_workers`), it
also hashes the step's examples (the list it is given, before collating) with the recorder's
`ExampleHasher`, and only the hashes travel with the batch; the iterator strips them off and hands
them to a `StepRecorder`, which appends them off the training thread (or writes spool files under
`spool=DIR`, one directory per rank under torchrun). Each yielded batch is one step. Works with the
default collate or a custom one, a `batch_sampler`, and `batch_size=None` (each item one step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]

from ledger.integrations.examples import ExampleHasher, uncollate
from ledger.integrations.steps import HasWriter, OnError, StepRecorder

__all__ = ["RecordingLoader"]


class _Hashed:
    """A collated batch with its examples' kernel rows (or, when hashing failed in the worker, the
    examples themselves, so the recorder meets the same failure and handles it per `on_error`)."""

    __slots__ = ("batch", "examples", "rows")

    def __init__(self, batch: Any, rows: pa.Table | None, examples: Sequence[Any] | None) -> None:
        self.batch = batch
        self.rows = rows
        self.examples = examples

    def pin_memory(self, *args: Any) -> _Hashed:
        """The pin-memory thread pins the batch, not the hashes."""
        from torch.utils.data._utils import pin_memory as pinning

        pin: Any = pinning.pin_memory  # untyped in torch
        return _Hashed(pin(self.batch, *args), self.rows, self.examples)


class _HashingCollate:
    """The DataLoader's collate function, also hashing the examples it is given (picklable)."""

    def __init__(self, collate: Callable[[Any], Any], hasher: ExampleHasher, single: bool) -> None:
        self.collate = collate
        self.hasher = hasher
        self.single = single  # batch_size=None: each item is one example, not a list of them

    def __call__(self, examples: Any) -> _Hashed:
        batch = self.collate(examples)
        listed = [examples] if self.single else list(examples)
        try:
            return _Hashed(batch, self.hasher(listed), None)
        except Exception:
            return _Hashed(batch, None, listed)


class RecordingLoader:
    """Iterates a `torch.utils.data.DataLoader` unchanged while recording each step's examples.

    Keywords are `StepRecorder`'s (`run`, `spool`, `tokenizer`, `text_fields`, `token_field`,
    `on_error`, `resume_from`, `start_step`, ...); other attributes are the DataLoader's.
    """

    def __init__(
        self,
        loader: Any,
        ledger: HasWriter | None,
        *,
        run: str,
        spool: Path | str | None = None,
        tokenizer: object | None = None,
        text_fields: Sequence[str] | None = None,
        on_error: OnError = "raise",
        **options: Any,
    ) -> None:
        self.loader = loader
        self.recorder = StepRecorder(
            ledger,
            run=run,
            spool=spool,
            tokenizer=tokenizer,
            text_fields=text_fields,
            on_error=on_error,
            **options,
        )
        collate = loader.collate_fn
        if not isinstance(collate, _HashingCollate):
            single = loader.batch_size is None and loader.batch_sampler is None
            loader.collate_fn = _HashingCollate(collate, self.recorder.hasher, single)

    def __iter__(self) -> Iterator[Any]:
        for item in self.loader:
            if isinstance(item, _Hashed):
                self.recorder.submit(item.rows if item.rows is not None else item.examples or [])
                yield item.batch
            else:  # a collate function replaced after wrapping: split the batch here
                self.recorder.submit(uncollate(item))
                yield item

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    @property
    def step(self) -> int:
        """Steps taken so far (the next batch is this step)."""
        return self.recorder.next_step

    def checkpoint(
        self,
        id: str,
        weights: Sequence[Path | str] = (),
        *,
        parents: Sequence[str] = (),
        teachers: Sequence[str] = (),
        config: Path | str | None = None,
    ) -> None:
        """Record a checkpoint covering the steps since the previous one (see `StepRecorder`)."""
        self.recorder.checkpoint(id, weights, parents=parents, teachers=teachers, config=config)

    def close(self) -> None:
        self.recorder.close()

    def __enter__(self) -> RecordingLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.recorder.__exit__(*exc)
