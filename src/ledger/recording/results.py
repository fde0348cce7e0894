"""What recording returns: the entries a batch, call, import or checkpoint appended (or found)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "BatchResult",
    "CallResult",
    "ImportReport",
    "Progress",
    "RecordedBatch",
    "RecordedCheckpoint",
    "no_progress",
]

Progress = Callable[[int], None]


@dataclass(frozen=True)
class RecordedBatch:
    """One appended (or already present) `batch` or `dataset` entry."""

    index: int
    id: str
    count: int
    records_root: str | None  # None for a dataset entry
    kind: str = "batch"
    without_text: int | None = None  # records with no segment (None: a dataset, or recorded before)


@dataclass(frozen=True)
class BatchResult:
    """What `record_batch` appended; `already_recorded` when an identical earlier run did it all."""

    entries: list[RecordedBatch]
    already_recorded: bool


@dataclass(frozen=True)
class CallResult:
    """The call entry's index; `duplicate` when (provider, external_id) was already recorded there."""

    index: int
    external_id: str | None
    duplicate: bool


@dataclass(frozen=True)
class ImportReport:
    """Counts of an import; failed lines are counted with a few `file:line: reason` examples."""

    added: int
    duplicates: int
    failed: int
    failed_examples: list[str] = field(default_factory=list)
    # Calls whose id has no line in the --requests file: recorded with request null, and said so.
    without_request: int = 0
    without_request_examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RecordedCheckpoint:
    """The appended `checkpoint` entry, with batch references expanded from dataset ids."""

    index: int
    id: str
    weights: list[dict[str, str]]
    batches: list[str]
    parents: list[str]
    teachers: list[str | dict[str, str]]


def no_progress(advance: int) -> None:
    """Default progress callback: recording never depends on anyone watching."""
