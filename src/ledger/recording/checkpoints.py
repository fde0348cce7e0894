"""Recording model checkpoints: the weights hashed first, then one `checkpoint` entry whose references
(batches, datasets, parents, checkpoint teachers) are all checked inside the append."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ledger.errors import DuplicateError, InputError, NotFoundError, UsageError
from ledger.ingest.weights import hash_file, hash_weights
from ledger.log import store
from ledger.log.append import LogWriter, Transaction
from ledger.log.store import recording as store_recording
from ledger.recording.refs import REF_KINDS, body_of, check_id
from ledger.recording.results import Progress, RecordedCheckpoint, no_progress
from ledger.spec import entries

_HEX64 = re.compile(r"^[0-9a-f]{64}$")

__all__ = ["record_checkpoint", "record_hashed_checkpoint"]


def _batches_of_datasets(conn: store.Connection, datasets: Sequence[str]) -> dict[str, list[str]]:
    """Batch ids per dataset (batches whose body says `dataset == id`), in index order."""
    if not datasets:
        return {}
    out: dict[str, list[str]] = {}
    for _, leaf in store_recording.leaves_of_datasets(conn, datasets):
        body = body_of(leaf)  # the SQL prefilter is re-checked on the decoded body
        if body.get("dataset") in datasets:
            out.setdefault(str(body["dataset"]), []).append(str(body["id"]))
    return out


def _expand_batches(conn: store.Connection, refs: Sequence[str]) -> tuple[list[str], list[str]]:
    """Batch ids for batch-or-dataset refs, de-duplicated in order; and the refs that name nothing."""
    known = set(store_recording.existing_by_ref(conn, list(refs), ("batch",)))
    by_dataset = _batches_of_datasets(conn, [r for r in refs if r not in known])
    expanded: list[str] = []
    missing: list[str] = []
    for ref in refs:
        if ref in known:
            expanded.append(ref)
        elif ref in by_dataset:
            expanded.extend(by_dataset[ref])
        else:
            missing.append(ref)
    return list(dict.fromkeys(expanded)), missing


def record_checkpoint(
    writer: LogWriter,
    *,
    id: str,
    weights: Sequence[Path | str],
    batches: Sequence[str] = (),
    parents: Sequence[str] = (),
    teachers: Sequence[str] = (),
    config: Path | str | None = None,
    progress: Progress | None = None,
) -> RecordedCheckpoint:
    """Hash weights (before opening the database), then append a `checkpoint` entry.

    Every batch, dataset, parent and checkpoint teacher must already be recorded: a dangling reference
    is a NotFoundError naming all of them. The id must be new (DuplicateError).
    """
    check_id(id)
    hashed = hash_weights(weights, progress)
    config_digest = hash_file(Path(config), no_progress) if config is not None else None
    return record_hashed_checkpoint(
        writer,
        id=id,
        weights=hashed,
        batches=batches,
        parents=parents,
        teachers=teachers,
        config=config_digest,
    )


def record_hashed_checkpoint(
    writer: LogWriter,
    *,
    id: str,
    weights: Sequence[Mapping[str, str]],
    batches: Sequence[str] = (),
    parents: Sequence[str] = (),
    teachers: Sequence[str] = (),
    config: str | None = None,
) -> RecordedCheckpoint:
    """`record_checkpoint` with the weights already hashed elsewhere (a rank's spool file):
    `weights` in the shape `hash_weights` returns, `config` a hex sha256."""
    check_id(id)
    if not weights:
        raise UsageError(f"checkpoint {id!r}: a checkpoint needs at least one weights file")
    hashed = [{"path": str(w["path"]), "sha256": str(w["sha256"])} for w in weights]
    for w in hashed:
        if not _HEX64.match(w["sha256"]):
            raise InputError(f"checkpoint {id!r}: weights {w['path']!r}: expected a hex sha256")
    config_digest = config
    outcome: dict[str, RecordedCheckpoint] = {}

    def prepare(tx: Transaction) -> list[dict[str, Any]]:
        conn = tx.conn
        taken = store_recording.existing_by_ref(conn, [id], REF_KINDS).get(id)
        if taken:
            index, kind, _ = taken[0]
            raise DuplicateError(f"checkpoint id {id!r} is already used by entry {index} ({kind})")
        batch_ids, missing = _expand_batches(conn, list(dict.fromkeys(batches)))
        missing = [f"batch or dataset {m!r}" for m in missing]
        known_checkpoints = set(
            store_recording.existing_by_ref(conn, [*parents, *teachers], ("checkpoint",))
        )
        missing += [f"parent checkpoint {p!r}" for p in parents if p not in known_checkpoints]
        if missing:
            raise NotFoundError(
                f"checkpoint {id!r} refers to unrecorded entries: {', '.join(missing)}"
            )
        teacher_values = [entries.parse_teacher(t, t in known_checkpoints) for t in teachers]
        body = entries.checkpoint_body(
            id=id,
            weights=hashed,
            parents=list(dict.fromkeys(parents)),
            batches=batch_ids,
            teachers=teacher_values,
            config=config_digest,
        )
        outcome["c"] = RecordedCheckpoint(
            tx.start, id, hashed, batch_ids, list(dict.fromkeys(parents)), list(teacher_values)
        )
        return [body]

    writer.append_bodies(prepare)
    return outcome["c"]
