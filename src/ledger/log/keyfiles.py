"""Key files: Ed25519 PKCS#8 PEM private keys on disk, owner-only, never overwritten.

The log side's I/O around the pure keys of ``ledger.spec.keys``: `write_key_file` creates a key file
atomically with mode 0600, `load_key_file` reads one back (optionally encrypted with a passphrase,
by default from $LEDGER_PASSPHRASE) and refuses files others can read.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.errors import KeyFileError, UsageError
from ledger.ingest.durable import fsync_dir
from ledger.spec.keys import SigningKey

__all__ = ["PASSPHRASE_ENV", "load_key_file", "write_key_file"]

PASSPHRASE_ENV = "LEDGER_PASSPHRASE"

_ENCRYPTED_PEM_MARKER = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


def write_key_file(path: Path, key: SigningKey, passphrase: str | None = None) -> None:
    """Write `key` as a PKCS#8 PEM file readable by its owner only, never replacing a file.

    The content is written to a 0600 temporary file in the same directory and then hard-linked
    into place, so the key file appears complete or not at all and is never group/world readable,
    even for a moment; an existing file at `path` is a KeyFileError, never overwritten.
    """
    path = Path(path)
    if passphrase == "":
        raise UsageError(f"{path}: an empty passphrase cannot encrypt a key file")
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
    )
    pem = key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    parent = path.parent
    try:
        if not parent.exists():
            parent.mkdir(mode=0o700, parents=True)
        if path.exists() or path.is_symlink():
            raise KeyFileError(f"{path}: key file already exists; refusing to overwrite it")
        _create_exclusive(path, pem)
    except FileExistsError:
        raise KeyFileError(f"{path}: key file already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write key file: {exc.strerror or exc}") from None


def _create_exclusive(path: Path, data: bytes) -> None:
    """Create `path` holding `data` with mode 0600, atomically where the filesystem allows."""
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-key-", dir=path.parent)  # mode 0600, O_EXCL
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        try:
            os.link(tmp_name, path)  # fails with FileExistsError instead of replacing
        except FileExistsError:
            raise
        except OSError:
            # No hard links on this filesystem: fall back to an exclusive create (not atomic
            # against a crash mid-write, but still 0600 from the first byte and never replacing).
            _write_new_file(path, data)
    finally:
        os.unlink(tmp_name)
    fsync_dir(path.parent)


def _write_new_file(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def load_key_file(path: Path, passphrase: str | None = None) -> SigningKey:
    """Read an Ed25519 PKCS#8 PEM key file written by `write_key_file` (or by OpenSSL).

    `passphrase` None falls back to $LEDGER_PASSPHRASE. Files with group or other permission
    bits are refused, as ssh does, because the key signs the log. Every failure is a one-line
    KeyFileError naming the file; no message ever carries key material.
    """
    path = Path(path)
    if passphrase is None:
        passphrase = os.environ.get(PASSPHRASE_ENV) or None
    data = _read_private_file(path)
    encrypted = _ENCRYPTED_PEM_MARKER in data
    if encrypted and passphrase is None:
        raise KeyFileError(
            f"{path}: key file is encrypted; give a passphrase (or set {PASSPHRASE_ENV})"
        )
    password = passphrase.encode("utf-8") if encrypted and passphrase is not None else None
    try:
        private = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if encrypted:
            raise KeyFileError(
                f"{path}: wrong passphrase for the encrypted key file (or the file is damaged)"
            ) from None
        raise KeyFileError(f"{path}: expected an Ed25519 PKCS#8 PEM private key") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(
            f"{path}: expected an Ed25519 private key, found {type(private).__name__}"
        )
    return SigningKey.from_private(private)


def _read_private_file(path: Path) -> bytes:
    """Read the whole file, checking permissions on the opened descriptor (no TOCTOU gap)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path}: expected a regular key file")
        mode = stat.S_IMODE(info.st_mode)
        if os.name == "posix" and mode & 0o077:
            raise KeyFileError(
                f"{path}: key file permissions are {mode:04o}; expected 0600 "
                f"(no group or other access); fix with: chmod 600 {path}"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
