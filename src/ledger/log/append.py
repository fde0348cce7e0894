"""The one append transaction: sign bodies, insert entries and tree nodes, write the signed tree head.

Every append is one transaction: re-check the stored head against the stored log (compare-and-swap), let
the caller check what it must and insert its rows, add the entries and their tree nodes, sign a new tree
head with the log key, commit. A crash at any point leaves the previous state. The file is opened for the
transaction only, so a training process holding a `LogWriter` never blocks readers or other recorders.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.errors import KeyFileError, LedgerError
from ledger.log import keyfiles, store
from ledger.log.reader import key_ring
from ledger.log.signers import DEFAULT_RECORDER, LOG_KEY_FILE, Signers, passphrase_of
from ledger.log.types import AppendResult, TreeHeadInfo
from ledger.spec import entries, envelope
from ledger.spec import note as note_spec
from ledger.spec.keyring import KeyRing
from ledger.spec.keys import SigningKey

__all__ = ["Build", "LogWriter", "Prepare", "Signed", "Transaction", "create"]

Signed = tuple[dict[str, Any], SigningKey]


@dataclass
class Transaction:
    """What a caller sees inside an append: the open connection (for the store's queries and its own row
    inserts), the index the first appended entry gets, the key ring as of `start`, and the signing keys."""

    conn: store.Connection
    start: int
    ring: KeyRing
    signers: Signers
    _log_key: SigningKey | None = field(default=None, repr=False)

    def log_key(self) -> SigningKey:
        """The current log key (loaded once per transaction)."""
        if self._log_key is None:
            self._log_key = self.signers.log_key(self.ring)
        return self._log_key

    def recorder_key(self) -> SigningKey:
        """The key that signs recorded entries (see `Signers.recorder_key`)."""
        return self.signers.recorder_key(self.ring, self.log_key())


Build = Callable[[Transaction], Sequence[Signed]]
"""Inside the transaction: the bodies to append with the key that signs each ([] appends nothing)."""
Prepare = Callable[[Transaction], Sequence[Mapping[str, Any]]]
"""Inside the transaction: the bodies to append, signed by the recorder key ([] appends nothing)."""


class LogWriter:
    """One ledger file and the keys that sign for it. Cheap to create; opens the database per append."""

    def __init__(self, path: Path, signers: Signers) -> None:
        self.path = path
        self.signers = signers

    def session(self, read_only: bool = False) -> AbstractContextManager[store.Connection]:
        return store.session(self.path, read_only=read_only)

    def append(self, build: Build) -> AppendResult:
        """Run `build` inside one transaction, append what it returns, sign the new tree head, commit."""
        with self.session() as conn, store.transaction(conn):
            stored = store.check_head(conn)
            tx = Transaction(conn, stored.size, key_ring(conn), self.signers)
            built = list(build(tx))
            if not built:
                return AppendResult(
                    stored.size,
                    0,
                    TreeHeadInfo(stored.origin, stored.size, stored.root, stored.note),
                )
            ring = tx.ring
            leaves, facts, signers = [], [], []
            for offset, (body, signer) in enumerate(built):
                index = stored.size + offset
                typed = entries.typed(body, index)  # checks the body (check_body) first
                leaves.append(envelope.sign_entry(body, signer))
                facts.append(entries.facts_of(body))
                signers.append(signer.public.keyid)
                if isinstance(typed, entries.KeyBody):
                    ring.add(body, index)
                elif isinstance(typed, entries.RevokeBody):
                    ring.revoke(typed.keyid, index, typed.reason)
            size = stored.size + len(leaves)
            root = store.append_entries(conn, stored.size, leaves, facts, signers)
            head_signer = self._head_signer(ring, built)
            note = note_spec.sign_tree_head(
                note_spec.TreeHead(stored.origin, size, root), head_signer
            )
            store.write_head(conn, size, root, note)
        return AppendResult(stored.size, len(leaves), TreeHeadInfo(stored.origin, size, root, note))

    def append_bodies(self, prepare: Prepare) -> AppendResult:
        """`append` for recorded entries: every body `prepare` returns is signed by the recorder key."""

        def build(tx: Transaction) -> list[Signed]:
            bodies = prepare(tx)
            if not bodies:
                return []
            signer = tx.recorder_key()
            return [(dict(body), signer) for body in bodies]

        return self.append(build)

    def _head_signer(self, ring: KeyRing, built: Sequence[Signed]) -> SigningKey:
        """The tree head is signed by the log key current after the append (a rotation's new key)."""
        current = ring.current_log_key()
        for _, signer in built:
            if signer.public.keyid == current.keyid:
                return signer
        return self.signers.log_key(ring)


def create(path: Path, keys_dir: Path, origin: str, passphrase: str | None = None) -> None:
    """Create the file, a log key and a `default` recorder key (PEM files, 0600), and the first two
    entries: the log key's `key` entry, self-signed, and the recorder's, signed by the log key.

    All or nothing: the database is built under a temporary name and renamed into place, and on any
    failure the key files written here are removed again.
    """
    key_path = keys_dir / LOG_KEY_FILE
    recorder_path = keys_dir / f"{DEFAULT_RECORDER}.pem"
    if path.exists():
        raise LedgerError(f"{path}: a ledger (or another file) already exists there")
    if key_path.exists():
        raise KeyFileError(f"{key_path}: a log key already exists; choose another --keys-dir")
    if recorder_path.exists():
        raise KeyFileError(
            f"{recorder_path}: a recorder key already exists; choose another --keys-dir"
        )
    log_key, recorder = SigningKey.generate(), SigningKey.generate()
    bodies = [
        entries.key_body(log_key.public.keyid, log_key.public.b64, origin, "log"),
        entries.key_body(recorder.public.keyid, recorder.public.b64, DEFAULT_RECORDER, "recorder"),
    ]
    leaves = [envelope.sign_entry(body, log_key) for body in bodies]
    tmp = path.with_name(path.name + ".init-tmp")
    tmp.unlink(missing_ok=True)
    written: list[Path] = []
    try:
        for file, key in ((key_path, log_key), (recorder_path, recorder)):
            keyfiles.write_key_file(file, key, passphrase_of(passphrase))
            written.append(file)
        store.create(
            tmp,
            origin,
            leaves,
            [entries.facts_of(b) for b in bodies],
            [log_key.public.keyid] * len(leaves),
            lambda root: note_spec.sign_tree_head(
                note_spec.TreeHead(origin, len(leaves), root), log_key
            ),
        )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for file in written:
            file.unlink(missing_ok=True)
        raise
