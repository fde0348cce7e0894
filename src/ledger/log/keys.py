"""Key management: new recorder keys, revocations, rotations, and exporting a key's public half.

Each change is one append (`key` and `revoke` entries are signed by the log key) plus the key files it
writes, renames or removes; a failure before the commit puts the files back as they were.
"""

from __future__ import annotations

import os
from pathlib import Path

from ledger.errors import DuplicateError, UsageError
from ledger.log.append import LogWriter, Signed, Transaction
from ledger.log.keyfiles import write_key_file
from ledger.log.reader import key_ring, keys_of
from ledger.log.signers import LOG_KEY_FILE, passphrase_of
from ledger.spec import entries
from ledger.spec.keyring import KeyInfo
from ledger.spec.keys import SigningKey

__all__ = ["export_key", "new_key", "revoke_key", "rotate_key"]


def new_key(
    writer: LogWriter, name: str, role: str = "recorder", passphrase: str | None = None
) -> KeyInfo:
    """Write a new key file and append its `key` entry, signed by the log key."""
    if role == "log":
        raise UsageError("a second log key is made with `ledger keys rotate`, not `keys new`")
    if not name or any(c.isspace() for c in name) or "/" in name:
        raise UsageError(f"key name {name!r}: must be non-empty, with no spaces or '/'")
    path = writer.signers.keys_dir / f"{name}.pem"
    new = SigningKey.generate()
    written: list[Path] = []
    retired: list[Path] = []

    def build(tx: Transaction) -> list[Signed]:
        if any(k.name == name and not k.revoked for k in tx.ring.by_id.values()):
            raise DuplicateError(f"a key named {name!r} is already active in the ledger")
        log_key = tx.log_key()
        if path.exists() or path.is_symlink():
            retired.append(writer.signers.retire_revoked_key_file(path, tx.ring))
        write_key_file(path, new, passphrase_of(passphrase))
        written.append(path)
        return [(entries.key_body(new.public.keyid, new.public.b64, name, role), log_key)]

    try:
        result = writer.append(build)
    except BaseException:
        if written and path.exists():
            path.unlink()
        if retired:
            os.replace(retired[0], path)
        raise
    return KeyInfo(new.public.keyid, name, role, new.public.b64, result.start)


def revoke_key(writer: LogWriter, name_or_id: str, reason: str = "unspecified") -> KeyInfo:
    """Append a `revoke` entry for a recorder key (a log key is replaced with `rotate_key`)."""

    def build(tx: Transaction) -> list[Signed]:
        info = tx.ring.find(name_or_id)
        if info.revoked:
            raise DuplicateError(f"key {info.name} ({info.keyid[:16]}…) is already revoked")
        if info.role == "log":
            raise UsageError("the log key is replaced with `ledger keys rotate`, not revoked alone")
        return [(entries.revoke_body(info.keyid, reason), tx.log_key())]

    result = writer.append(build)
    return next(k for k in keys_of(writer.path) if k.revoked_at == result.start)


def rotate_key(
    writer: LogWriter, name_or_id: str = "log", passphrase: str | None = None
) -> KeyInfo:
    """Replace a key: a new key under the same name and role, then the old one revoked (`rotated`).

    The new key file is staged beside the old one and renamed into place after the commit; a process
    killed in between is rolled forward the next time the key is loaded (`signers.finish_rotation`)."""
    new = SigningKey.generate()
    staged: dict[str, Path] = {}

    def build(tx: Transaction) -> list[Signed]:
        ring = tx.ring
        old = ring.current_log_key() if name_or_id == "log" else ring.find(name_or_id)
        old_log = tx.log_key()
        keys_dir = writer.signers.keys_dir
        path = keys_dir / (LOG_KEY_FILE if old.role == "log" else f"{old.name}.pem")
        staging = path.with_name(path.name + f".{new.public.keyid[:8]}.new")
        write_key_file(staging, new, passphrase_of(passphrase))
        staged["new"], staged["final"] = staging, path
        staged["old"] = path.with_name(f"{path.stem}.{old.keyid[:8]}.retired.pem")
        body = entries.key_body(new.public.keyid, new.public.b64, old.name, old.role)
        revoke_signer = new if old.role == "log" else old_log
        return [(body, old_log), (entries.revoke_body(old.keyid, "rotated"), revoke_signer)]

    try:
        result = writer.append(build)
    except BaseException:
        if "new" in staged:
            staged["new"].unlink(missing_ok=True)
        raise
    if staged["final"].exists():
        os.replace(staged["final"], staged["old"])
    os.replace(staged["new"], staged["final"])
    return next(k for k in keys_of(writer.path) if k.index == result.start)


def export_key(writer: LogWriter, name_or_id: str = "log") -> KeyInfo:
    """A key as the log knows it (`log`: the current log key), for its vkey or public key."""
    with writer.session() as conn:
        ring = key_ring(conn)
    return ring.current_log_key() if name_or_id == "log" else ring.find(name_or_id)
