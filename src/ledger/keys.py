"""Ed25519 keys, key files, DSSE entry envelopes and C2SP signed-note tree heads.

Everything here is pure except `write_key_file` and `load_key_file`. The formats are fixed by
DESIGN.md ("Entries" and "Tree heads"): an entry's leaf bytes are the JCS form of a DSSE envelope,
and a tree head is a C2SP tlog-checkpoint inside a C2SP signed note, so that outside DSSE and
signed-note tools (e.g. Go's golang.org/x/mod/sumdb/note) can check them without this package.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ledger.errors import InputError, KeyFileError, UsageError, VerificationError
from ledger.hashing import canonical_json, parse_json_line

__all__ = [
    "PAYLOAD_TYPE",
    "Envelope",
    "PublicKey",
    "SigningKey",
    "TreeHead",
    "format_envelope",
    "format_tree_head",
    "is_valid_key_name",
    "load_key_file",
    "note_key_id",
    "open_signed_note",
    "pae",
    "parse_envelope",
    "parse_tree_head",
    "parse_vkey",
    "sign_entry",
    "sign_note",
    "sign_tree_head",
    "verify_envelope",
    "verify_note",
    "verify_tree_head",
    "vkey",
    "write_key_file",
]

PAYLOAD_TYPE = "application/vnd.ledger.entry.v1+json"
PASSPHRASE_ENV = "LEDGER_PASSPHRASE"

ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
NOTE_SIGNATURE_TYPE_ED25519 = b"\x01"
MAX_NOTE_SIGNATURES = 100  # Go's sumdb/note limit; C2SP asks verifiers to accept at least 16.
MAX_TREE_SIZE = 2**63 - 1  # tree sizes are int64 in Go's tlog and in DuckDB's BIGINT.

_KEYID_RE = re.compile(r"[0-9a-f]{64}")
_KEY_HASH_RE = re.compile(r"[0-9a-fA-F]{8}")
_TREE_SIZE_RE = re.compile(r"0|[1-9][0-9]*")
_SIG_PREFIX = "\u2014 "  # em dash, space
_ENCRYPTED_PEM_MARKER = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
# Strings JCS writes exactly as they are (no escapes), so an envelope of them can be laid out by hand.
_PLAIN_KEYID = re.compile(r"[0-9A-Za-z]*")
# The one-signature leaf exactly as `sign_entry` writes it, around its payload, keyid and signature.
_LEAF_OPEN = b'{"payload":"'
_LEAF_TYPE = b'","payloadType":"' + PAYLOAD_TYPE.encode("ascii") + b'","signatures":[{"keyid":"'
_LEAF_SIG = b'","sig":"'
_LEAF_CLOSE = b'"}]}'
_SIG_B64_SIZE = 88  # base64 of 64 bytes
_LEAF_TAIL = len(_LEAF_TYPE) + 64 + len(_LEAF_SIG) + _SIG_B64_SIZE + len(_LEAF_CLOSE)
_HEX_DIGITS = b"0123456789abcdef"
_B64_VALUES = {
    c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}


# --------------------------------------------------------------------------- base64


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode_canonical(text: str) -> bytes | None:
    """Decode standard padded base64, or None unless `text` is the one canonical encoding.

    Canonical-only matters for anything hashed or signed: otherwise "...AB==" and "...AA==" (the
    same bytes) would give two different leaves, or two different notes, for one statement.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    return raw if _b64(raw) == text else None


def _b64decode_canonical_bytes(text: bytes) -> bytes | None:
    """`_b64decode_canonical` for bytes, without re-encoding to compare.

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
        return _b64(self.raw)

    @classmethod
    def from_b64(cls, text: str) -> PublicKey:
        """Parse the base64 form of a key entry's `public_key`; only the canonical encoding."""
        raw = _b64decode_canonical(text) if isinstance(text, str) else None
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
    def _of(cls, private: Ed25519PrivateKey) -> SigningKey:
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(private=private, public=PublicKey(raw))

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key from the operating system's randomness."""
        return cls._of(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """The key whose RFC 8032 private seed is `seed` (32 bytes); used by test vectors."""
        if len(seed) != 32:
            raise InputError(f"expected a 32-byte Ed25519 seed, found {len(seed)} bytes")
        return cls._of(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message`."""
        return self.private.sign(message)


# --------------------------------------------------------------------------- key files


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
    _fsync_dir(path.parent)


def _write_new_file(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(directory: Path) -> None:
    """Make the new directory entry durable; not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    return SigningKey._of(private)


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


# --------------------------------------------------------------------------- DSSE envelopes


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what an entry's signature actually covers."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


@dataclass(frozen=True)
class Envelope:
    """A parsed DSSE envelope; `payload` is the JCS body bytes, signatures are (keyid, sig)."""

    payload: bytes
    payload_type: str
    signatures: tuple[tuple[str, bytes], ...]
    # The body `parse_envelope` already decoded to check the payload, so `body()` need not parse it again.
    _body: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def signer(self) -> str:
        """The keyid of the first signature: the entry's signer (entries carry one signature)."""
        return self.signatures[0][0]

    def body(self) -> dict[str, Any]:
        """The decoded entry body (big integers exact, per the JCS extension).

        An envelope from `parse_envelope` returns the body it decoded while parsing (the same dict on
        every call: treat it as read-only) rather than parsing the payload again.
        """
        if self._body is not None:
            return self._body
        try:
            value = parse_json_line(self.payload)
        except ValueError as exc:
            raise InputError(f"entry payload is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise InputError(f"expected an entry body object, found {type(value).__name__}")
        return value


def format_envelope(envelope: Envelope) -> bytes:
    """The leaf bytes of an envelope: JCS of its DSSE JSON form (inverse of parse_envelope).

    Our own envelopes hold only ASCII letters, digits, '+', '/', '=' and '.' in their strings, which
    JCS writes as they are, with the keys in the order below; such envelopes are laid out directly
    (several times faster than the general JCS writer, and tested equal to it).
    """
    if envelope.payload_type == PAYLOAD_TYPE and all(
        _PLAIN_KEYID.fullmatch(keyid) for keyid, _ in envelope.signatures
    ):
        signatures = ",".join(
            f'{{"keyid":"{keyid}","sig":"{_b64(sig)}"}}' for keyid, sig in envelope.signatures
        )
        return (
            f'{{"payload":"{_b64(envelope.payload)}","payloadType":"{PAYLOAD_TYPE}",'
            f'"signatures":[{signatures}]}}'
        ).encode("ascii")
    return canonical_json(
        {
            "payload": _b64(envelope.payload),
            "payloadType": envelope.payload_type,
            "signatures": [{"keyid": k, "sig": _b64(s)} for k, s in envelope.signatures],
        }
    )


def sign_entry(body: Mapping[str, Any], key: SigningKey) -> bytes:
    """Sign an entry body with `key` and return the log leaf bytes (a canonical DSSE envelope)."""
    payload = canonical_json(dict(body))
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    return format_envelope(Envelope(payload, PAYLOAD_TYPE, ((key.public.keyid, signature),)))


def _not_canonical(what: str, index: int | None) -> VerificationError:
    where = f"entry {index}: " if index is not None else ""
    return VerificationError(
        f"{where}entry leaf is not a canonical DSSE envelope: {what}", index=index
    )


def parse_envelope(leaf: bytes, *, index: int | None = None) -> Envelope:
    """Parse leaf bytes that must be exactly what `sign_entry` writes, or raise.

    Strict on purpose: a leaf is hashed into the log, so any second spelling of the same envelope
    (other key order, whitespace, escapes, base64 padding bits, a non-JCS payload) is tampering.
    The signature itself is checked by `verify_envelope`. The decoded body is kept in the envelope,
    so `body()` costs nothing more.
    """
    fast = _split_canonical_leaf(leaf)
    if fast is not None:
        return _with_body(fast, index)
    try:
        doc = parse_json_line(leaf)
    except ValueError as exc:
        raise _not_canonical(f"not JSON ({exc})", index) from None
    if not isinstance(doc, dict) or set(doc) != {"payload", "payloadType", "signatures"}:
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise _not_canonical(
            f"expected keys ['payload', 'payloadType', 'signatures'], found {found}", index
        )
    payload_type = doc["payloadType"]
    if payload_type != PAYLOAD_TYPE:
        raise _not_canonical(
            f"expected payloadType {PAYLOAD_TYPE!r}, found {payload_type!r}", index
        )
    payload_b64 = doc["payload"]
    payload = _b64decode_canonical(payload_b64) if isinstance(payload_b64, str) else None
    if payload is None:
        raise _not_canonical("payload is not canonical base64", index)
    signatures = _parse_signatures(doc["signatures"], index)
    envelope = Envelope(payload, payload_type, signatures)
    if format_envelope(envelope) != leaf:
        raise _not_canonical("re-serialising it gives different bytes", index)
    return _with_body(envelope, index)


def _split_canonical_leaf(leaf: bytes) -> Envelope | None:
    """The parts of a leaf laid out exactly as `format_envelope` writes one signature, else None.

    A leaf that is the fixed text around a canonical base64 payload, a lowercase hex keyid and a
    canonical base64 64-byte signature is byte for byte `format_envelope` of those parts, so the JSON
    parse and re-serialisation can be skipped. Anything else (including an envelope with several
    signatures) takes the general path, which also names what is wrong.
    """
    end = len(leaf) - _LEAF_TAIL
    if end < len(_LEAF_OPEN) or not leaf.startswith(_LEAF_OPEN) or not leaf.endswith(_LEAF_CLOSE):
        return None
    keyid_at = end + len(_LEAF_TYPE)
    sig_at = keyid_at + 64 + len(_LEAF_SIG)
    if (
        leaf[end:keyid_at] != _LEAF_TYPE
        or leaf[keyid_at + 64 : sig_at] != _LEAF_SIG
        or leaf[keyid_at : keyid_at + 64].translate(None, _HEX_DIGITS)
    ):
        return None
    payload = _b64decode_canonical_bytes(leaf[len(_LEAF_OPEN) : end])
    sig = _b64decode_canonical_bytes(leaf[sig_at : sig_at + _SIG_B64_SIZE])
    if payload is None or sig is None or len(sig) != ED25519_SIGNATURE_SIZE:
        return None
    return Envelope(payload, PAYLOAD_TYPE, ((leaf[keyid_at : keyid_at + 64].decode("ascii"), sig),))


def _with_body(envelope: Envelope, index: int | None) -> Envelope:
    """The envelope with its body decoded, once, after checking the payload is the body's JCS."""
    try:
        body = envelope.body()
        canonical = canonical_json(body)
    except InputError as exc:
        raise _not_canonical(f"payload is not a JSON object ({exc})", index) from None
    if canonical != envelope.payload:
        raise _not_canonical("payload is not the JCS serialisation of its body", index)
    object.__setattr__(envelope, "_body", body)  # a fresh envelope of ours: nobody has seen it yet
    return envelope


def _parse_signatures(value: object, index: int | None) -> tuple[tuple[str, bytes], ...]:
    if not isinstance(value, list) or not value:
        raise _not_canonical("expected a non-empty signatures list", index)
    signatures: list[tuple[str, bytes]] = []
    for position, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"keyid", "sig"}:
            raise _not_canonical(f"signature {position}: expected keys ['keyid', 'sig']", index)
        keyid, sig_b64 = item["keyid"], item["sig"]
        if not isinstance(keyid, str) or not _KEYID_RE.fullmatch(keyid):
            raise _not_canonical(
                f"signature {position}: expected a 64-hex-digit keyid, found {keyid!r:.80}", index
            )
        sig = _b64decode_canonical(sig_b64) if isinstance(sig_b64, str) else None
        if sig is None or len(sig) != ED25519_SIGNATURE_SIZE:
            raise _not_canonical(
                f"signature {position}: expected a canonical base64 64-byte signature", index
            )
        if any(keyid == seen for seen, _ in signatures):
            raise _not_canonical(f"signature {position}: keyid {keyid} appears twice", index)
        signatures.append((keyid, sig))
    return tuple(signatures)


def verify_envelope(envelope: Envelope, public_key: PublicKey, *, index: int | None = None) -> None:
    """Check that `public_key` signed the envelope (DSSE PAE over type and payload), or raise."""
    where = f"entry {index}: " if index is not None else ""
    keyid = public_key.keyid
    sigs = [sig for kid, sig in envelope.signatures if kid == keyid]
    if not sigs:
        found = ", ".join(kid for kid, _ in envelope.signatures)
        raise VerificationError(
            f"{where}expected a signature by key {keyid}, found signatures by {found}",
            index=index,
        )
    message = pae(envelope.payload_type, envelope.payload)
    if not public_key.verify(sigs[0], message):
        raise VerificationError(
            f"{where}signature by key {keyid} does not verify over the entry payload",
            index=index,
        )


# --------------------------------------------------------------------------- signed notes


@dataclass(frozen=True)
class TreeHead:
    """The log's signed statement "the tree named `origin` has `size` leaves and root `root`"."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin or min(self.origin) < " ":
            raise InputError(
                f"expected a non-empty one-line tree head origin, found {self.origin!r:.80}"
            )
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise InputError(f"expected an integer tree size, found {self.size!r}")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise InputError(f"expected a tree size in 0..2^63-1, found {self.size}")
        if not isinstance(self.root, bytes) or len(self.root) != 32:
            raise InputError(f"expected a 32-byte tree root, found {self.root!r:.80}")

    @property
    def root_hex(self) -> str:
        """The root as lowercase hex, the form `ledger head --json` prints."""
        return self.root.hex()


def is_valid_key_name(name: str) -> bool:
    """A signed-note key name: non-empty, no Unicode spaces, no '+', no control characters."""
    return (
        bool(name)
        and not any(ch.isspace() or ch == "+" or ch < " " for ch in name)
        and _is_utf8(name)
    )


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def note_key_id(name: str, public: PublicKey) -> bytes:
    """The 4-byte signed-note key id: SHA-256(name || 0x0A || 0x01 || raw key)[:4]."""
    return hashlib.sha256(
        name.encode("utf-8") + b"\n" + NOTE_SIGNATURE_TYPE_ED25519 + public.raw
    ).digest()[:4]


def vkey(name: str, public: PublicKey) -> str:
    """The verifier key string `<name>+<8 hex key id>+<base64(0x01 || key)>` (Go's note format)."""
    if not is_valid_key_name(name):
        raise UsageError(f"expected a key name without spaces or '+', found {name!r:.80}")
    key_id = note_key_id(name, public).hex()
    return f"{name}+{key_id}+{_b64(NOTE_SIGNATURE_TYPE_ED25519 + public.raw)}"


def parse_vkey(text: str) -> tuple[str, bytes, PublicKey]:
    """Parse a verifier key string into (name, 4-byte key id, public key), checking the key id.

    Surrounding whitespace is ignored (a vkey file usually ends with a newline).
    """
    text = text.strip()
    name, _, rest = text.partition("+")
    key_hash, _, key_b64 = rest.partition("+")
    shown = f"{text!r:.120}"
    if not is_valid_key_name(name):
        raise InputError(f"expected a verifier key '<name>+<8 hex>+<base64 key>', found {shown}")
    if not _KEY_HASH_RE.fullmatch(key_hash):
        raise InputError(f"expected an 8-hex-digit key id in the verifier key, found {shown}")
    key = _b64decode_canonical(key_b64)
    if key is None or not key:
        raise InputError(f"expected base64 key data in the verifier key, found {shown}")
    if key[:1] != NOTE_SIGNATURE_TYPE_ED25519:
        raise InputError(
            f"expected an Ed25519 verifier key (algorithm 1), found algorithm {key[0]} in {shown}"
        )
    if len(key) != 1 + ED25519_PUBLIC_KEY_SIZE:
        raise InputError(
            f"expected a 32-byte Ed25519 key in the verifier key, found {len(key) - 1} bytes"
        )
    public = PublicKey(key[1:])
    key_id = note_key_id(name, public)
    if key_id.hex() != key_hash.lower():
        raise InputError(
            f"verifier key id {key_hash} does not match its name and key (expected {key_id.hex()})"
        )
    return name, key_id, public


def format_tree_head(head: TreeHead) -> str:
    """The checkpoint note text: origin, size and base64 root, each ending in a newline."""
    return f"{head.origin}\n{head.size}\n{_b64(head.root)}\n"


def parse_tree_head(text: str) -> TreeHead:
    """Parse checkpoint note text strictly: exactly the three lines `format_tree_head` writes.

    Extension lines are refused: the ledger never writes them and they are not auditable.
    """
    if not text.endswith("\n"):
        raise InputError("expected tree head text ending in a newline, found none")
    lines = text[:-1].split("\n")
    if len(lines) != 3:
        raise InputError(f"expected 3 tree head lines (origin, size, root), found {len(lines)}")
    origin, size_text, root_text = lines
    if not origin or any(ch < " " for ch in origin):
        raise InputError(f"tree head line 1: expected an origin, found {origin!r:.80}")
    if not _TREE_SIZE_RE.fullmatch(size_text) or int(size_text) > MAX_TREE_SIZE:
        raise InputError(
            f"tree head line 2: expected a decimal tree size without leading zeros, "
            f"found {size_text!r:.80}"
        )
    root = _b64decode_canonical(root_text)
    if root is None or len(root) != 32:
        raise InputError(
            f"tree head line 3: expected a base64 32-byte root hash, found {root_text!r:.80}"
        )
    return TreeHead(origin, int(size_text), root)


@dataclass(frozen=True)
class _NoteSignature:
    name: str
    key_id: bytes
    signature: bytes
    b64: str


def _split_note(note: str) -> tuple[str, list[_NoteSignature]]:
    """Split a signed note into its text and signature lines, as Go's note.Open does."""

    def bad(what: str) -> InputError:
        return InputError(f"expected a signed note (text, blank line, signature lines): {what}")

    if not isinstance(note, str):
        raise bad(f"found {type(note).__name__}")
    if not _is_utf8(note):
        raise bad("it is not valid UTF-8")
    for ch in note:
        if ch < " " and ch != "\n":
            raise bad(f"it contains control character {ch!r}")
    split = note.rfind("\n\n")
    if split < 0:
        raise bad("no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise bad("the signature block is empty or does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_NOTE_SIGNATURES:
        raise bad(f"more than {MAX_NOTE_SIGNATURES} signatures")
    signatures: list[_NoteSignature] = []
    for number, line in enumerate(lines, start=1):
        if not line.startswith(_SIG_PREFIX):
            raise bad(f"signature line {number} does not start with '\u2014 ': {line!r:.80}")
        name, _, sig_b64 = line[len(_SIG_PREFIX) :].partition(" ")
        try:
            raw = base64.b64decode(sig_b64.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error, ValueError):
            raw = b""
        if not is_valid_key_name(name) or len(raw) < 5:
            raise bad(f"signature line {number} is not '\u2014 <name> <base64>': {line!r:.80}")
        signatures.append(_NoteSignature(name, raw[:4], raw[4:], sig_b64))
    return text, signatures


def sign_note(text: str, key: SigningKey, name: str) -> str:
    """A signed note of `text` with one Ed25519 signature line by `key` under `name`."""
    if not text.endswith("\n"):
        raise InputError("expected note text ending in a newline")
    if not is_valid_key_name(name):
        raise UsageError(f"expected a key name without spaces or '+', found {name!r:.80}")
    signature = key.sign(text.encode("utf-8"))
    key_id = note_key_id(name, key.public)
    return f"{text}\n{_SIG_PREFIX}{name} {_b64(key_id + signature)}\n"


def sign_tree_head(head: TreeHead, key: SigningKey) -> str:
    """The whole signed note for `head`, signed by `key` under the key name `head.origin`."""
    return sign_note(format_tree_head(head), key, head.origin)


def open_signed_note(note: str) -> tuple[TreeHead, list[tuple[str, bytes, bytes]]]:
    """Parse a signed tree head without verifying it: (head, [(name, key id, signature)]).

    Only for display and routing; trust nothing here before `verify_tree_head`.
    """
    text, signatures = _split_note(note)
    return parse_tree_head(text), [(s.name, s.key_id, s.signature) for s in signatures]


def _resolve_verifier(verifier: str | tuple[str, PublicKey]) -> tuple[str, bytes, PublicKey]:
    """A verifier as (name, 4-byte key id, key), from a vkey string or a (name, key) pair."""
    if isinstance(verifier, str):
        return parse_vkey(verifier)
    name, public = verifier
    return name, note_key_id(name, public), public


def verify_note(note: str, verifier: str | tuple[str, PublicKey]) -> str:
    """Verify a signed note against one key (a vkey string or (name, key)); return its text.

    As the signed-note spec requires, lines from other keys (witness cosignatures, a rotated
    key) are ignored, and every line from this key (same name and key id) must verify.
    """
    name, key_id, public = _resolve_verifier(verifier)
    text, signatures = _split_note(note)
    expected = f"{name}+{key_id.hex()}"
    mine = [s for s in signatures if s.name == name and s.key_id == key_id]
    if not mine:
        found = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in signatures)
        hint = (
            " (same name, other key: was the key rotated?)"
            if any(s.name == name for s in signatures)
            else ""
        )
        raise VerificationError(
            f"expected a signature by {expected}, found signatures by {found}{hint}"
        )
    message = text.encode("utf-8")
    for signature in mine:
        # Go accepts non-canonical base64 here; for our own key we do not, so that a note has
        # one spelling and a stored head can be compared byte for byte with a published one.
        if _b64decode_canonical(signature.b64) is None:
            raise VerificationError(f"signature by {expected} is not canonical base64")
        if not public.verify(signature.signature, message):
            raise VerificationError(f"signature by {expected} does not verify over the note text")
    return text


def verify_tree_head(
    note: str, verifier: str | tuple[str, PublicKey], *, origin: str | None = None
) -> TreeHead:
    """Verify a signed tree head against the log's key and return the head it states.

    The origin must equal `origin`, or by default the key name (DESIGN.md: the key name is the
    origin), so a head signed by the same key for another log is not accepted as this one's.
    Malformed text is InputError; a missing or bad signature, or a wrong origin, VerificationError.
    """
    name, _, public = _resolve_verifier(verifier)
    head = parse_tree_head(verify_note(note, (name, public)))
    expected_origin = name if origin is None else origin
    if head.origin != expected_origin:
        raise VerificationError(
            f"expected a tree head for origin {expected_origin!r}, found {head.origin!r}"
        )
    return head
