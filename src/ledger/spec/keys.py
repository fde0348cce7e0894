"""Ed25519 keys: public keys named by their DSSE key id, signing keys, and canonical base64.

Pure: key FILES are read and written by ``ledger.log.keyfiles``. A key's ``keyid`` (lowercase hex
SHA-256 of the raw 32-byte public key) names it in DSSE envelopes and key entries (DESIGN.md
"Entries"); the signed-note key id of a key and name is ``ledger.spec.note.note_key_id``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ledger.errors import InputError

__all__ = [
    "ED25519_PUBLIC_KEY_SIZE",
    "ED25519_SIGNATURE_SIZE",
    "PublicKey",
    "SigningKey",
    "b64decode_canonical",
    "b64decode_canonical_bytes",
    "b64encode",
]

ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64

_B64_VALUES = {
    c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}


# --------------------------------------------------------------------------- base64


def b64encode(data: bytes) -> str:
    """Standard padded base64 as ASCII text: how keys, payloads and signatures are written."""
    return base64.b64encode(data).decode("ascii")


def b64decode_canonical(text: str) -> bytes | None:
    """Decode standard padded base64, or None unless `text` is the one canonical encoding.

    Canonical-only matters for anything hashed or signed: otherwise "...AB==" and "...AA==" (the
    same bytes) would give two different leaves, or two different notes, for one statement.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    return raw if b64encode(raw) == text else None


def b64decode_canonical_bytes(text: bytes) -> bytes | None:
    """`b64decode_canonical` for bytes, without re-encoding to compare.

    Strict decoding refuses every character outside the alphabet and every misplaced or missing '=';
    what is left is the unused low bits of the last character before the padding, which must be zero.
    """
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    # strict mode still accepts surplus padding after a full quantum ("0000="): require the one length
    if len(text) != 4 * ((len(raw) + 2) // 3) or text.count(b"=") != (-len(raw)) % 3:
        return None
    if text.endswith(b"=="):
        return raw if _B64_VALUES[text[-3]] & 0x0F == 0 else None
    if text.endswith(b"="):
        return raw if _B64_VALUES[text[-2]] & 0x03 == 0 else None
    return raw


# --------------------------------------------------------------------------- keys


@lru_cache(maxsize=256)
def _ed25519_public(raw: bytes) -> Ed25519PublicKey:
    """Loaded public keys are cached because a log is verified against a handful of keys."""
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class PublicKey:
    """A raw 32-byte Ed25519 public key; its `keyid` names it in DSSE envelopes and key entries."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != ED25519_PUBLIC_KEY_SIZE:
            found = len(self.raw) if isinstance(self.raw, bytes) else type(self.raw).__name__
            raise InputError(f"expected a 32-byte Ed25519 public key, found {found}")

    @cached_property
    def keyid(self) -> str:
        """Lowercase hex SHA-256 of the raw key, as DESIGN.md fixes for DSSE `keyid`."""
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def b64(self) -> str:
        """Standard base64 of the raw key: the `public_key` field of a key entry."""
        return b64encode(self.raw)

    @classmethod
    def from_b64(cls, text: str) -> PublicKey:
        """Parse the base64 form of a key entry's `public_key`; only the canonical encoding."""
        raw = b64decode_canonical(text) if isinstance(text, str) else None
        if raw is None:
            raise InputError(f"expected a base64 Ed25519 public key, found {text!r:.80}")
        if len(raw) != ED25519_PUBLIC_KEY_SIZE:
            raise InputError(f"expected a 32-byte Ed25519 public key, found {len(raw)} bytes")
        return cls(raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether `signature` is this key's Ed25519 signature of `message` (RFC 8032)."""
        if len(signature) != ED25519_SIGNATURE_SIZE:
            return False
        try:
            _ed25519_public(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key with its public half; equality and repr use the public key only."""

    private: Ed25519PrivateKey = field(compare=False, repr=False)
    public: PublicKey

    @classmethod
    def from_private(cls, private: Ed25519PrivateKey) -> SigningKey:
        """The signing key of a loaded `cryptography` Ed25519 private key."""
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(private=private, public=PublicKey(raw))

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key from the operating system's randomness."""
        return cls.from_private(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """The key whose RFC 8032 private seed is `seed` (32 bytes); used by test vectors."""
        if len(seed) != 32:
            raise InputError(f"expected a 32-byte Ed25519 seed, found {len(seed)} bytes")
        return cls.from_private(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message`."""
        return self.private.sign(message)
