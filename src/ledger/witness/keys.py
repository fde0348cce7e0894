"""A witness's identity on disk: its Ed25519 key (PEM, 0600) and, beside it, its vkey (which names it).

`ledger witness init --out DIR` writes `DIR/witness.pem` and `DIR/witness.vkey`; `serve --key
DIR/witness.pem` reads the name from the vkey beside the key and checks that the two belong together,
so a witness cannot cosign under a name whose vkey holds another key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ledger.errors import KeyFileError, LedgerError
from ledger.log.keyfiles import PASSPHRASE_ENV, load_key_file, write_key_file
from ledger.spec.keys import SigningKey
from ledger.spec.note import parse_witness_vkey, witness_vkey

__all__ = ["KEY_FILE", "VKEY_FILE", "WitnessIdentity", "create_witness", "load_witness"]

KEY_FILE = "witness.pem"
VKEY_FILE = "witness.vkey"


@dataclass(frozen=True)
class WitnessIdentity:
    """A witness's name, vkey, signing key and the files they live in."""

    name: str
    vkey: str
    key_path: Path
    vkey_path: Path
    key: SigningKey = field(repr=False, compare=False)


def create_witness(name: str, out: Path) -> WitnessIdentity:
    """Write a new witness key (encrypted with $LEDGER_PASSPHRASE when set) and its vkey in `out`.

    Neither file is ever overwritten: an existing one is a KeyFileError.
    """
    out = Path(out)
    key = SigningKey.generate()
    text = witness_vkey(name, key.public)  # checks the name first: nothing written for a bad one
    key_path, vkey_path = out / KEY_FILE, out / VKEY_FILE
    if vkey_path.exists():
        raise KeyFileError(f"{vkey_path}: already exists; refusing to overwrite it")
    write_key_file(key_path, key, os.environ.get(PASSPHRASE_ENV) or None)
    try:
        with open(vkey_path, "x", encoding="utf-8") as handle:
            handle.write(text + "\n")
    except OSError as exc:
        raise KeyFileError(f"{vkey_path}: cannot write the vkey: {exc.strerror or exc}") from None
    return WitnessIdentity(name, text, key_path, vkey_path, key)


def load_witness(key_path: Path) -> WitnessIdentity:
    """Load a witness key and the vkey beside it (`<key stem>.vkey`), checking they match."""
    key_path = Path(key_path)
    vkey_path = key_path.with_suffix(".vkey")
    key = load_key_file(key_path)
    try:
        text = vkey_path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KeyFileError(
            f"{vkey_path}: cannot read the witness vkey beside the key "
            f"(written by `ledger witness init`): {exc.strerror or exc}"
        ) from None
    try:
        name, _, public = parse_witness_vkey(text)
    except LedgerError as exc:
        raise KeyFileError(f"{vkey_path}: {exc}") from None
    if public != key.public:
        raise KeyFileError(f"{vkey_path}: the vkey holds another key than {key_path}")
    return WitnessIdentity(name, text, key_path, vkey_path, key)
