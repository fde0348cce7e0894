"""The keys that sign for a ledger: its key directory, the log key, and the recorder key chosen.

Private keys never enter the database: they are PEM files in the key directory (`LEDGER_KEYS_DIR`, else
`<db stem>.keys` beside the file). The log (the key ring) says which keys are registered and active; this
module finds the matching files, loads them once per process, and rolls forward a rotation that was
killed between its commit and its file renames.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ledger.errors import DuplicateError, KeyFileError, LogKeySigningWarning
from ledger.log import keyfiles
from ledger.spec.keyring import KeyInfo, KeyRing
from ledger.spec.keys import SigningKey

__all__ = [
    "DEFAULT_RECORDER",
    "LOG_KEY_FILE",
    "Signers",
    "default_keys_dir",
    "finish_rotation",
    "passphrase_of",
]

LOG_KEY_FILE = "log.pem"
DEFAULT_RECORDER = "default"  # the recorder key `ledger init` makes; entries are signed by it unless told otherwise


def passphrase_of(given: str | None) -> str | None:
    """New key files are encrypted with LEDGER_PASSPHRASE when it is set."""
    return given if given is not None else (os.environ.get("LEDGER_PASSPHRASE") or None)


def default_keys_dir(db_path: Path) -> Path:
    env = os.environ.get("LEDGER_KEYS_DIR")
    if env:
        return Path(env)
    return db_path.with_name(db_path.stem + ".keys")


class Signers:
    """A key directory and the recorder key chosen (`--key`/LEDGER_KEY, else `default`).

    Mutable on purpose: it caches loaded keys (an encrypted PEM costs a key derivation per load, and a
    training loop appends every step) and warns once about signing with the log key."""

    def __init__(self, keys_dir: Path, choice: str | None = None) -> None:
        self.keys_dir = keys_dir
        self.choice = choice
        self._key_cache: dict[tuple[Any, ...], SigningKey] = {}
        self._warned_log_key = False

    def key_path(self, spec: str) -> Path:
        """A key given as a file path, or as a name in the key directory."""
        candidate = Path(spec)
        if candidate.suffix == ".pem" or candidate.exists() or os.sep in spec:
            return candidate
        return self.keys_dir / f"{spec}.pem"

    def load(self, path: Path) -> SigningKey:
        """Load a key file once per process while it is unchanged: a training loop appends every step, and
        an encrypted PEM costs a key derivation per load."""
        try:
            stat = path.stat()
        except OSError:
            return keyfiles.load_key_file(path)  # raises the one-line KeyFileError
        cache_key = (
            str(path.resolve()),
            stat.st_mtime_ns,
            stat.st_size,
            stat.st_ino,
            os.environ.get("LEDGER_PASSPHRASE"),
        )
        cached = self._key_cache.get(cache_key)
        if cached is None:
            cached = keyfiles.load_key_file(path)
            self._key_cache[cache_key] = cached
        return cached

    def log_key(self, ring: KeyRing) -> SigningKey:
        """The current log key's file (`log.pem`), checked against the ring."""
        current = ring.current_log_key()
        path = self.keys_dir / LOG_KEY_FILE
        key = self.load(path)
        if key.public.keyid != current.keyid and finish_rotation(path, key, current.keyid):
            key = self.load(path)
        if key.public.keyid != current.keyid:
            raise KeyFileError(
                f"{path}: expected the log key {current.keyid[:16]}…, found key {key.public.keyid[:16]}…"
            )
        return key

    def recorder_key(self, ring: KeyRing, log_key: SigningKey) -> SigningKey:
        """The key that signs entries: `--key`/LEDGER_KEY, else the `default` recorder key, else (a ledger
        made before `ledger init` wrote `default`) the log key, with a LogKeySigningWarning."""
        if self.choice:
            return self._registered_key(self.key_path(self.choice), ring)
        default = _default_recorder(ring)
        if default is None:
            if not self._warned_log_key:  # once per Ledger: a training loop appends every step
                self._warned_log_key = True
                warnings.warn(
                    f"this ledger has no `{DEFAULT_RECORDER}` recorder key (made before `ledger init` wrote one); "
                    f"signing with the log key. Create one: ledger keys new --name {DEFAULT_RECORDER}",
                    LogKeySigningWarning,
                    stacklevel=2,
                )
            return log_key
        path = self.keys_dir / f"{DEFAULT_RECORDER}.pem"
        if not path.exists() and not path.is_symlink():
            raise KeyFileError(
                f"{path}: not found; the ledger signs entries with its `{DEFAULT_RECORDER}` recorder key "
                f"({default.keyid[:16]}…): restore the file, or choose a key with --key/LEDGER_KEY"
            )
        key = self._registered_key(path, ring)
        if key.public.keyid != default.keyid:
            raise KeyFileError(
                f"{path}: expected the `{DEFAULT_RECORDER}` recorder key {default.keyid[:16]}…, "
                f"found key {key.public.keyid[:16]}…"
            )
        return key

    def _registered_key(self, path: Path, ring: KeyRing) -> SigningKey:
        """A recorder key file whose key the log introduced and has not revoked (a rotation killed before its
        file renames is rolled forward first)."""
        key = self.load(path)
        info = ring.get(key.public.keyid)
        if info is not None:
            successor = ring.successor(info)
            if successor is not None and finish_rotation(path, key, successor.keyid):
                key = self.load(path)
                info = ring.get(key.public.keyid)
        if info is None:
            raise KeyFileError(
                f"{path}: this key is not registered in the ledger (run `ledger keys new`)"
            )
        if info.revoked:
            raise KeyFileError(
                f"{path}: key {info.name} ({info.keyid[:16]}…) was revoked at entry {info.revoked_at}"
            )
        return key

    def retire_revoked_key_file(self, path: Path, ring: KeyRing) -> Path:
        """Move aside a key file whose key this log has revoked, so its name can be given to a new key
        (`<name>.<keyid8>.revoked.pem`); any other file there is never touched."""
        duplicate = DuplicateError(f"{path}: a key file with that name already exists")
        try:
            old = self.load(path)
        except KeyFileError:
            raise duplicate from None
        info = ring.get(old.public.keyid)
        if info is None or not info.revoked:
            raise duplicate
        target = path.with_name(f"{path.stem}.{info.keyid[:8]}.revoked.pem")
        if target.exists():
            raise duplicate
        os.replace(path, target)
        return target


def _default_recorder(ring: KeyRing) -> KeyInfo | None:
    """The active `default` recorder key; None when the log never had one (a ledger made before `ledger
    init` wrote it). One that was revoked and not replaced is an error: signing with the log key instead
    would put the root of trust back on every recording host, the very thing the recorder key avoids."""
    named = ring.named(DEFAULT_RECORDER, "recorder")
    if not named:
        return None
    active = [k for k in named if not k.revoked]
    if active:
        return max(active, key=lambda k: k.index)
    last = max(named, key=lambda k: k.index)
    raise KeyFileError(
        f"the `{DEFAULT_RECORDER}` recorder key ({last.keyid[:16]}…) was revoked at entry {last.revoked_at}; "
        f"make a new one (ledger keys new --name {DEFAULT_RECORDER}) or choose a key with --key/LEDGER_KEY"
    )


def finish_rotation(path: Path, old: SigningKey, new_keyid: str) -> bool:
    """Roll forward a rotation killed after its commit but before its file renames (the new key is staged).

    The log already names the staged key, so the only consistent move is the renames `rotate_key` would
    have done: the old file to `.retired.pem`, the staged one into place. False when nothing is staged.
    """
    staged = path.with_name(path.name + f".{new_keyid[:8]}.new")
    if not staged.is_file() or keyfiles.load_key_file(staged).public.keyid != new_keyid:
        return False
    os.replace(path, path.with_name(f"{path.stem}.{old.public.keyid[:8]}.retired.pem"))
    os.replace(staged, path)
    return True
