"""The `Ledger` facade: one object per ledger file, holding paths and key choices, never the file itself.

Every method delegates to a room: the log (`ledger.log`: appends, keys, heads, proofs, reading),
recording (`ledger.recording`) and the audit (`ledger.audit`). Nothing in the package imports this module
back; the names re-exported below keep older importers working while they move to the rooms.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.errors import UsageError
from ledger.log import heads, proofs, reader
from ledger.log import keys as key_admin
from ledger.log.append import LogWriter, Prepare, create
from ledger.log.signers import Signers, default_keys_dir
from ledger.log.types import (
    AppendResult,
    ConsistencyProof,
    Entry,
    InclusionProof,
    KeyInfo,
    TreeHeadInfo,
)

if TYPE_CHECKING:
    from ledger import recording
    from ledger.audit.report import AuditReport
    from ledger.spec.witness_policy import WitnessPolicy
    from ledger.witness.cosign import CosignResult

__all__ = ["DEFAULT_DB", "Ledger"]

DEFAULT_DB = "ledger.duckdb"


class Ledger:
    """A ledger file and how to sign for it. Cheap to create; opens the database per operation."""

    def __init__(self, path: Path, *, keys_dir: Path | None = None, key: str | None = None) -> None:
        self.path = Path(path)
        signers = Signers(
            Path(keys_dir) if keys_dir else default_keys_dir(self.path),
            key if key is not None else os.environ.get("LEDGER_KEY"),
        )
        self.writer = LogWriter(self.path, signers)
        """The log's append API for this file: recorders hand it their bodies."""
        self._origin: str | None = None

    @property
    def keys_dir(self) -> Path:
        return self.writer.signers.keys_dir

    @property
    def key(self) -> str | None:
        """The recorder key chosen (`--key`/LEDGER_KEY): a name in the key directory or a PEM path."""
        return self.writer.signers.choice

    # --- opening -----------------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        path: str | Path = DEFAULT_DB,
        *,
        origin: str | None = None,
        keys_dir: str | Path | None = None,
        passphrase: str | None = None,
    ) -> Ledger:
        """Create the file, a log key and a `default` recorder key (PEM files, 0600), and the first two
        entries: the log key's `key` entry, self-signed, and the recorder's, signed by the log key.

        All or nothing: on any failure neither the file nor the key files written here remain.
        """
        ledger = cls(Path(path), keys_dir=Path(keys_dir) if keys_dir else None)
        origin = origin or f"ledger.local/{secrets.token_hex(4)}"
        if not origin or any(c.isspace() for c in origin) or "+" in origin:
            raise UsageError(f"origin {origin!r}: must be non-empty with no spaces or '+'")
        create(ledger.path, ledger.keys_dir, origin, passphrase)
        return ledger

    @classmethod
    def open(
        cls,
        path: str | Path = DEFAULT_DB,
        *,
        key: str | None = None,
        keys_dir: str | Path | None = None,
    ) -> Ledger:
        ledger = cls(Path(path), keys_dir=Path(keys_dir) if keys_dir else None, key=key)
        ledger._origin = reader.origin(ledger.path)
        return ledger

    def session(self, read_only: bool = False) -> Any:
        return self.writer.session(read_only=read_only)

    @property
    def origin(self) -> str:
        if self._origin is None:
            self._origin = reader.origin(self.path)
        return self._origin

    # --- keys (logic in ledger.log.keys) -----------------------------------------------------------
    def keys(self) -> list[KeyInfo]:
        return reader.keys_of(self.path)

    def new_key(self, name: str, role: str = "recorder", passphrase: str | None = None) -> KeyInfo:
        """Write a new key file and append its `key` entry, signed by the log key."""
        return key_admin.new_key(self.writer, name, role, passphrase)

    def revoke_key(self, name_or_id: str, reason: str = "unspecified") -> KeyInfo:
        return key_admin.revoke_key(self.writer, name_or_id, reason)

    def rotate_key(self, name_or_id: str = "log", passphrase: str | None = None) -> KeyInfo:
        """Replace a key: a new key under the same name and role, then the old one revoked (`rotated`)."""
        return key_admin.rotate_key(self.writer, name_or_id, passphrase)

    def export_key(self, name_or_id: str = "log") -> KeyInfo:
        return key_admin.export_key(self.writer, name_or_id)

    # --- appending ---------------------------------------------------------------------------------
    def append_bodies(self, bodies: Sequence[Mapping[str, Any]]) -> AppendResult:
        """Append ready-made bodies signed with the recorder key (used by recorders and tests)."""
        prepare: Prepare = lambda tx: bodies  # noqa: E731 (append_bodies copies each body)
        return self.writer.append_bodies(prepare)

    # --- recording (logic in ledger.recording) -----------------------------------------------------
    def record_batch(
        self,
        records: Iterable[Mapping[str, Any] | str] | None = None,
        *,
        id: str,
        files: Sequence[Path | str] = (),
        split: int | None = None,
        text_fields: Sequence[str] | None = None,
        derived_from: Sequence[int | str] = (),
        dataset: str | None = None,
        min_segment_chars: int = 32,
        progress: Callable[[int], None] | None = None,
        tokenizer: Path | str | None = None,
        token_field: str | None = None,
        engine: str = "local",
        engine_conf: Mapping[str, str] | None = None,
    ) -> recording.BatchResult:
        """Record a training batch (or `split` batches) from records or files (a directory: its files in name order); idempotent per id.

        `records` are dicts or strings, or Arrow rows: a pyarrow `Table`/`RecordBatch`, a `datasets.Dataset`
        or a pandas `DataFrame`, hashed as the same rows in a Parquet file. With `tokenizer` (a
        `tokenizer.json`), token id lists under `token_field` (default `input_ids`) are decoded into texts.
        `engine` "spark" or "ray" hashes Parquet `files` (local paths or pyarrow filesystem URIs) on that
        engine's workers, `engine_conf` its settings (`ledger.engines.record_files`): the same entries."""
        from ledger import recording

        if engine != "local":
            from ledger import engines

            if records is not None:
                raise UsageError(f"engine {engine!r} reads Parquet files: pass files, not records")
            run = engines.record_files(
                self.writer, files, engine=engine, conf=engine_conf, id=id, split=split,
                text_fields=text_fields, derived_from=derived_from, dataset=dataset,
                min_segment_chars=min_segment_chars, tokenizer=tokenizer, token_field=token_field,
                progress=progress,
            )  # fmt: skip
            return run.result
        return recording.record_batch(
            self.writer, records, id=id, files=files, split=split, text_fields=text_fields,
            derived_from=derived_from, dataset=dataset, min_segment_chars=min_segment_chars, progress=progress,
            tokenizer=tokenizer, token_field=token_field,
        )  # fmt: skip

    def record_batches(
        self,
        batches: Iterable[tuple[str, Iterable[Mapping[str, Any] | str]]],
        *,
        text_fields: Sequence[str] | None = None,
        derived_from: Sequence[int | str] = (),
        dataset: str | None = None,
        min_segment_chars: int = 32,
        progress: Callable[[int], None] | None = None,
    ) -> recording.BatchResult:
        """Record many (id, records) batches in one transaction: one DuckDB open for buffered steps."""
        from ledger import recording

        return recording.record_batches(
            self.writer, batches, text_fields=text_fields, derived_from=derived_from, dataset=dataset,
            min_segment_chars=min_segment_chars, progress=progress,
        )  # fmt: skip

    def record_call(
        self,
        *,
        provider: str,
        purpose: str,
        request: object | None,
        response: object,
        model: str | None = None,
        endpoint: str | None = None,
        external_id: str | None = None,
        account: str | None = None,
        stream: bool = False,
        complete: bool = True,
    ) -> recording.CallResult:
        """Record one external model call; idempotent on (provider, external_id)."""
        from ledger import recording

        return recording.record_call(
            self.writer, provider=provider, purpose=purpose, request=request, response=response, model=model,
            endpoint=endpoint, external_id=external_id, account=account, stream=stream, complete=complete,
        )  # fmt: skip

    def import_calls(
        self,
        path: Path | str,
        fmt: str,
        *,
        provider: str | None,
        purpose: str,
        requests_path: Path | str | None = None,
        account: str | None = None,
        progress: Callable[[int], None] | None = None,
        chunk: int = 5000,
    ) -> recording.ImportReport:
        """Import a provider log, one transaction per `chunk` calls; re-running adds nothing."""
        from ledger import recording

        return recording.import_calls(
            self.writer, path, fmt, provider=provider, purpose=purpose, requests_path=requests_path,
            account=account, progress=progress, chunk=chunk,
        )  # fmt: skip

    def record_checkpoint(
        self,
        *,
        id: str,
        weights: Sequence[Path | str],
        batches: Sequence[str] = (),
        parents: Sequence[str] = (),
        teachers: Sequence[str] = (),
        config: Path | str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Entry:
        """Record a model checkpoint: weights hashed first, every reference checked on append."""
        from ledger import recording

        recorded = recording.record_checkpoint(
            self.writer, id=id, weights=weights, batches=batches, parents=parents, teachers=teachers,
            config=config, progress=progress,
        )  # fmt: skip
        return self.entry(recorded.index)

    def record_spool(self, directory: Path | str) -> recording.SpoolReport:
        """Append a training spool (`StepRecorder(spool=DIR)` on every rank), in order, idempotently."""
        from ledger import recording

        return recording.record_spool(self.writer, directory)

    # --- audit (logic in ledger.audit) -------------------------------------------------------------
    def audit(
        self,
        checkpoint: str | None = None,
        *,
        weights: Sequence[Path | str] = (),
        suspects: Path | str | None = None,
        fuzzy: bool = True,
        threshold: float | None = None,
        policy: Path | str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> AuditReport:
        """Audit a checkpoint's lineage for third-party outputs: `report.verdict`, `report.findings`."""
        from ledger.audit.run import audit

        return audit(
            self, checkpoint, weights=[Path(w) for w in weights], suspects=None if suspects is None else Path(suspects),
            fuzzy=fuzzy, threshold=threshold, policy=None if policy is None else Path(policy), progress=progress,
        )  # fmt: skip

    @property
    def last_audit_path(self) -> Path:
        return self.path.with_name(self.path.name + ".last-audit.json")

    def remember_audit(self, summary: Mapping[str, Any]) -> None:
        """Keep the latest audit's summary beside the file for `status`. Informational only: evidence is the
        log and bundles, so this file is not covered by any root and `verify` ignores it."""
        import json

        tmp = self.last_audit_path.with_name(self.last_audit_path.name + ".tmp")
        tmp.write_text(json.dumps(dict(summary), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.last_audit_path)

    def last_audit(self) -> dict[str, Any] | None:
        import json

        try:
            value = json.loads(self.last_audit_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def entry_count(self) -> int:
        """Entries stored, without trusting the tree head (for progress totals of `verify`)."""
        return reader.entry_count(self.path)

    def head(self) -> TreeHeadInfo:
        return heads.head(self.path)

    def entry(self, ref: str | int, kinds: Sequence[str] | None = None) -> Entry:
        return reader.entry(self.path, ref, kinds)

    def log(
        self,
        *,
        kinds: Sequence[str] | None = None,
        since: datetime | str | None = None,
        provider: str | None = None,
        purpose: str | None = None,
        start: int = 0,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[Entry]:
        """Entries in index order (or newest first), filtered; `since` is an instant or RFC 3339 text."""
        return reader.list_entries(
            self.path, kinds=kinds, since=since, provider=provider, purpose=purpose, start=start,
            limit=limit, descending=descending,
        )  # fmt: skip

    def status(self) -> dict[str, Any]:
        """Size, latest tree head, key counts, entries by kind and record-set totals, in one session."""
        return {**reader.status(self.path), "last_audit": self.last_audit()}

    def prove(self, ref: str | int) -> InclusionProof:
        """Inclusion proof of one entry against the latest tree head, from O(log n) stored nodes."""
        return proofs.prove(self.path, ref)

    def inclusion_proofs(
        self, indexes: Sequence[int]
    ) -> tuple[TreeHeadInfo, dict[int, InclusionProof]]:
        """Proofs for many entries against one tree head, read in one session."""
        return proofs.inclusion_proofs(self.path, indexes)

    def consistency(self, old_note: str, source: str = "the tree head") -> ConsistencyProof:
        """Prove the current log extends the tree head in `old_note` (its signature is checked too).

        A head of another ledger (another origin) is the wrong input, not tampering: InputError
        naming `source` (the file it came from)."""
        return proofs.consistency(self.path, old_note, source)

    # --- witnesses (logic in ledger.witness) -------------------------------------------------------
    def cosign_head(self, policy: WitnessPolicy, timeout: float | None = None) -> CosignResult:
        """Get the latest tree head cosigned by the policy's witnesses and store their cosignatures.

        ForkError when a witness proves a fork or rollback; WitnessQuorumError when the quorum fails."""
        from ledger.witness.cosign import cosign_latest

        return cosign_latest(self.path, policy, timeout)

    def witness_problem(self, policy: WitnessPolicy) -> str | None:
        """What the stored latest head lacks under the policy (its log key, its quorum), or None."""
        from ledger.witness.cosign import check_stored_head

        return check_stored_head(self.head(), policy)
