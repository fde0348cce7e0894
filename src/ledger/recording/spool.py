"""Training steps hashed elsewhere, appended here: a step recorder's queued steps and a spool's files.

`append_steps` appends batches whose rows the kernel computed in another thread or process (one
transaction per run of batches with the same hashing settings). `record_spool` appends a spool
directory that training ranks wrote (`ledger.ingest.spool`) from this one process:

- every file is read and checked first; a damaged or foreign file is an InputError naming it and
  nothing is appended;
- order: batches by (step, micro-batch, rank), each checkpoint placed after the batches of the steps
  before its save (checkpoints saved at the same step in the order the ranks wrote them);
- a checkpoint is appended once every rank of its world wrote its part (the parts' batches joined in
  rank order, their weights joined, their parents identical); until then it is reported as waiting;
- idempotent: an id already recorded with the same content is skipped, with other content it is a
  DuplicateError; re-running appends nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]

from ledger.engine.tokens import TokenizerFile
from ledger.errors import DuplicateError, InputError
from ledger.ingest import spool as spool_files
from ledger.ingest.spool import SpoolFile
from ledger.log.append import LogWriter
from ledger.log.store import recording as store_recording
from ledger.recording.batches import append_hashed, hashed_tables
from ledger.recording.checkpoints import record_hashed_checkpoint
from ledger.recording.refs import REF_KINDS, body_of
from ledger.recording.results import BatchResult, RecordedBatch
from ledger.recording.spill import SpillDir
from ledger.spec import fingerprint

__all__ = ["STEPS_PER_APPEND", "HashedStep", "SpoolReport", "append_steps", "record_spool"]

STEPS_PER_APPEND = 1024  # a spool's batches per transaction (their rows are held until it commits)


@dataclass(frozen=True)
class HashedStep:
    """One step's batch: its id, the kernel's rows, extra body fields and how it was hashed."""

    id: str
    rows: pa.Table
    extra: Mapping[str, Any] = field(default_factory=dict)
    text_fields: tuple[str, ...] | None = None
    min_segment_chars: int = 32
    tokenizer: str | None = None
    token_field: str | None = None

    def settings(self) -> tuple[Any, ...]:
        return (self.text_fields, self.min_segment_chars, self.tokenizer, self.token_field)


def append_steps(writer: LogWriter, steps: Sequence[HashedStep]) -> list[RecordedBatch]:
    """Append the steps' batch entries and rows in order, one transaction per run of steps hashed
    with the same settings; idempotent like `record_batch`."""
    out: list[RecordedBatch] = []
    start = 0
    while start < len(steps):
        end = start + 1
        while end < len(steps) and steps[end].settings() == steps[start].settings():
            end += 1
        out.extend(_append_run(writer, steps[start:end]).entries)
        start = end
    return out


def _append_run(writer: LogWriter, steps: Sequence[HashedStep]) -> BatchResult:
    first = steps[0]
    tokenizer = (
        None
        if first.tokenizer is None
        else TokenizerFile("", first.tokenizer, first.token_field or "input_ids")
    )
    spill_dir = SpillDir(writer.path)
    try:
        hashed = hashed_tables([s.rows for s in steps], spill_dir)
        return append_hashed(
            writer,
            hashed,
            [s.id for s in steps],
            None,
            None,
            list(first.text_fields) if first.text_fields else None,
            (),
            first.min_segment_chars,
            tokenizer,
            [s.extra for s in steps],
        )
    finally:
        spill_dir.cleanup()


@dataclass(frozen=True)
class SpoolReport:
    """What `record_spool` did: entries appended, ids skipped as already recorded, checkpoints
    still waiting for the parts of some ranks, and the files read."""

    batches: int
    checkpoints: int
    skipped: int
    waiting: list[str]
    files: int
    records: int


@dataclass
class _Checkpoint:
    id: str
    parts: list[SpoolFile]

    @property
    def world_size(self) -> int:
        return self.parts[0].world_size

    def complete(self) -> bool:
        return len({p.rank for p in self.parts}) == self.world_size

    def merged(self) -> dict[str, Any]:
        """The checkpoint the parts make together (InputError when they disagree)."""
        parts = sorted(self.parts, key=lambda p: p.rank)
        where = ", ".join(str(p.path) for p in parts)
        if len({p.rank for p in parts}) != len(parts):
            raise InputError(f"{where}: checkpoint {self.id!r} has two parts from one rank")
        for name in ("parents", "teachers", "world_size", "run"):
            if len({repr(getattr(p, name)) for p in parts}) != 1:
                raise InputError(f"{where}: the ranks' parts of {self.id!r} differ in {name}")
        # the config is a file saved beside the weights: the ranks that saved none have none
        configs = {p.config for p in parts if p.config is not None}
        if len(configs) > 1:
            raise InputError(f"{where}: the ranks' parts of {self.id!r} differ in config")
        weights: dict[str, str] = {}
        for part in parts:
            for path, digest in part.weights:
                if weights.setdefault(path, digest) != digest:
                    raise InputError(f"{part.path}: weights {path!r} differ between ranks")
        if not weights:
            raise InputError(f"{where}: no rank gave weights for checkpoint {self.id!r}")
        batches = [b for p in parts for b in p.batches]
        return {
            "id": self.id,
            "weights": [{"path": p, "sha256": h} for p, h in weights.items()],
            "batches": list(dict.fromkeys(batches)),
            "parents": list(parts[0].parents),
            "teachers": list(parts[0].teachers),
            "config": next(iter(configs), None),
        }

    def key(self) -> tuple[int, int, int, int]:
        return (max(p.step for p in self.parts), -1, min(p.seq for p in self.parts), 0)


def _batch_key(entry: SpoolFile) -> tuple[int, int, int, int]:
    micro = -1 if entry.micro_batch is None else entry.micro_batch
    return (entry.step, 0, micro, entry.rank)


def _read_all(directory: Path) -> tuple[list[SpoolFile], dict[str, _Checkpoint], int]:
    """Every file checked (rows against roots); batches and checkpoint parts by id."""
    batches: dict[str, SpoolFile] = {}
    checkpoints: dict[str, _Checkpoint] = {}
    records = 0
    default_params = fingerprint.DEFAULT_PARAMS.to_json()
    for path in spool_files.spool_files(directory):
        entry, rows = spool_files.read_spool_file(path, verify=True)
        if entry.kind == "batch":
            if entry.fingerprint_params != default_params:
                raise InputError(f"{path}: fingerprints made with other parameters")
            if entry.id in batches:
                raise InputError(f"{path}: batch {entry.id!r} is also {batches[entry.id].path}")
            batches[entry.id] = entry
            records += rows.num_rows
        else:
            checkpoints.setdefault(entry.id, _Checkpoint(entry.id, [])).parts.append(entry)
    return list(batches.values()), checkpoints, records


def _existing(writer: LogWriter, ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    with writer.session(read_only=True) as conn:
        found = store_recording.existing_by_ref(conn, list(ids), REF_KINDS)
    return {ref: body_of(rows[0][2]) for ref, rows in found.items()}


def _same_batch(old: Mapping[str, Any], entry: SpoolFile) -> bool:
    return (
        old.get("kind") == "batch"
        and old.get("count") == entry.count
        and old.get("records_root") == entry.records_root
        and (old.get("fingerprints") or {}).get("root") == entry.fingerprints_root
    )


def _same_checkpoint(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return (
        old.get("kind") == "checkpoint"
        and sorted(map(repr, old.get("weights", []))) == sorted(map(repr, new["weights"]))
        and list(old.get("batches", [])) == new["batches"]
        and list(old.get("parents", [])) == new["parents"]
    )


def record_spool(writer: LogWriter, directory: Path | str) -> SpoolReport:
    """Append a spool directory's batches and complete checkpoints (see the module's doc)."""
    directory = Path(directory)
    batches, parts, records = _read_all(directory)
    files = len(batches) + sum(len(c.parts) for c in parts.values())
    complete = {i: c for i, c in parts.items() if c.complete()}
    waiting = sorted(set(parts) - set(complete))
    merged = {i: c.merged() for i, c in complete.items()}
    # a checkpoint descending from one still waiting waits too
    changed = True
    while changed:
        changed = False
        for cid in list(merged):
            if any(p in waiting for p in merged[cid]["parents"]):
                waiting.append(cid)
                del merged[cid]
                changed = True
    existing = _existing(writer, [b.id for b in batches] + list(merged))
    conflicts: list[str] = []
    new_batches: list[SpoolFile] = []
    for entry in batches:
        old = existing.get(entry.id)
        if old is None:
            new_batches.append(entry)
        elif not _same_batch(old, entry):
            conflicts.append(f"{entry.path}: {entry.id!r} is already recorded with other content")
    new_checkpoints: list[str] = []
    for cid, body in merged.items():
        old = existing.get(cid)
        if old is None:
            new_checkpoints.append(cid)
        elif not _same_checkpoint(old, body):
            conflicts.append(f"checkpoint {cid!r} is already recorded with other content")
    if conflicts:
        raise DuplicateError("cannot record the spool: " + "; ".join(conflicts[:5]))
    events: list[tuple[tuple[int, int, int, int], str, object]] = [
        (_batch_key(b), "batch", b) for b in new_batches
    ]
    events += [(complete[c].key(), "checkpoint", c) for c in new_checkpoints]
    events.sort(key=lambda e: e[0])
    _append_events(writer, [(kind, item) for _, kind, item in events], merged)
    skipped = len(batches) - len(new_batches) + len(merged) - len(new_checkpoints)
    return SpoolReport(
        len(new_batches), len(new_checkpoints), skipped, sorted(set(waiting)), files, records
    )


def _append_events(
    writer: LogWriter, events: Iterable[tuple[str, object]], merged: Mapping[str, Mapping[str, Any]]
) -> None:
    run: list[SpoolFile] = []

    def flush() -> None:
        if run:
            append_steps(writer, [_step_of(entry) for entry in run])
            run.clear()

    for kind, item in events:
        if kind == "batch":
            assert isinstance(item, SpoolFile)
            run.append(item)
            if len(run) >= STEPS_PER_APPEND:
                flush()
            continue
        flush()
        body = merged[str(item)]
        record_hashed_checkpoint(
            writer,
            id=body["id"],
            weights=body["weights"],
            batches=body["batches"],
            parents=body["parents"],
            teachers=body["teachers"],
            config=body["config"],
        )
    flush()


def _step_of(entry: SpoolFile) -> HashedStep:
    assert entry.path is not None
    checked, rows = spool_files.read_spool_file(entry.path, verify=False)
    if checked != entry:
        raise InputError(f"{entry.path}: the file changed while the spool was recorded")
    extra: dict[str, Any] = {"step": entry.step, "rank": entry.rank}
    if entry.micro_batch is not None:
        extra["micro_batch"] = entry.micro_batch
    return HashedStep(
        entry.id,
        rows,
        extra,
        entry.text_fields,
        entry.min_segment_chars,
        entry.tokenizer,
        entry.token_field,
    )
