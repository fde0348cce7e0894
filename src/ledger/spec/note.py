"""C2SP signed notes and the tree heads inside them (DESIGN.md "Tree heads (fixed)").

A tree head is a C2SP tlog-checkpoint (origin, size, base64 root) inside a C2SP signed note with an
Ed25519 signature line; the verifier key string is Go's ``golang.org/x/mod/sumdb/note`` vkey. So
outside signed-note tools can check a head without this package. Pure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ledger.errors import InputError, UsageError, VerificationError
from ledger.spec.keys import (
    ED25519_PUBLIC_KEY_SIZE,
    PublicKey,
    SigningKey,
    b64decode_canonical,
    b64encode,
)

__all__ = [
    "COSIGNATURE_TYPE",
    "MAX_TREE_SIZE",
    "Cosignature",
    "TreeHead",
    "add_signatures",
    "cosign",
    "cosignature_message",
    "format_tree_head",
    "is_valid_key_name",
    "note_key_id",
    "note_signature_lines",
    "open_signed_note",
    "parse_tree_head",
    "parse_vkey",
    "parse_witness_vkey",
    "sign_note",
    "sign_tree_head",
    "verify_cosignatures",
    "verify_note",
    "verify_tree_head",
    "vkey",
    "witness_key_id",
    "witness_vkey",
]

NOTE_SIGNATURE_TYPE_ED25519 = b"\x01"
MAX_NOTE_SIGNATURES = 100  # Go's sumdb/note limit; C2SP asks verifiers to accept at least 16.
MAX_TREE_SIZE = 2**63 - 1  # tree sizes are int64 in Go's tlog and in DuckDB's BIGINT.

_KEY_HASH_RE = re.compile(r"[0-9a-fA-F]{8}")
_TREE_SIZE_RE = re.compile(r"0|[1-9][0-9]*")
_SIG_PREFIX = "\u2014 "  # em dash, space


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
    return f"{name}+{key_id}+{b64encode(NOTE_SIGNATURE_TYPE_ED25519 + public.raw)}"


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
    key = b64decode_canonical(key_b64)
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
    return f"{head.origin}\n{head.size}\n{b64encode(head.root)}\n"


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
    root = b64decode_canonical(root_text)
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
    return f"{text}\n{_SIG_PREFIX}{name} {b64encode(key_id + signature)}\n"


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
        if b64decode_canonical(signature.b64) is None:
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


# --------------------------------------------------------------------------- cosignatures
# C2SP tlog-cosignature, Ed25519 `cosignature/v1`: a witness's note signature over
# "cosignature/v1\ntime <T>\n" + the checkpoint body, carried as keyid || u64be(T) || signature.

COSIGNATURE_TYPE = b"\x04"
_COSIGNATURE_HEADER = b"cosignature/v1\n"
_MAX_COSIGNATURE_TIME = 2**63 - 1
_COSIGNATURE_SIZE = 4 + 8 + 64


def witness_key_id(name: str, public: PublicKey) -> bytes:
    """The 4-byte cosigner key id: SHA-256(name || 0x0A || 0x04 || raw key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + COSIGNATURE_TYPE + public.raw).digest()[:4]


def witness_vkey(name: str, public: PublicKey) -> str:
    """A witness's verifier key `<name>+<8 hex key id>+<base64(0x04 || key)>` (signed-note vkey)."""
    if not is_valid_key_name(name):
        raise UsageError(f"expected a witness name without spaces or '+', found {name!r:.80}")
    key_id = witness_key_id(name, public).hex()
    return f"{name}+{key_id}+{b64encode(COSIGNATURE_TYPE + public.raw)}"


def parse_witness_vkey(text: str) -> tuple[str, bytes, PublicKey]:
    """Parse a witness vkey (signature type 0x04) into (name, 4-byte key id, key), checking the id."""
    text = text.strip()
    name, _, rest = text.partition("+")
    key_hash, _, key_b64 = rest.partition("+")
    shown = f"{text!r:.120}"
    if not is_valid_key_name(name):
        raise InputError(f"expected a witness vkey '<name>+<8 hex>+<base64 key>', found {shown}")
    if not _KEY_HASH_RE.fullmatch(key_hash):
        raise InputError(f"expected an 8-hex-digit key id in the witness vkey, found {shown}")
    key = b64decode_canonical(key_b64)
    if key is None or not key:
        raise InputError(f"expected base64 key data in the witness vkey, found {shown}")
    if key[:1] != COSIGNATURE_TYPE:
        raise InputError(
            f"expected an Ed25519 cosignature/v1 witness vkey (type 4), found type {key[0]} in {shown}"
        )
    if len(key) != 1 + ED25519_PUBLIC_KEY_SIZE:
        raise InputError(
            f"expected a 32-byte Ed25519 key in the witness vkey, found {len(key) - 1} bytes"
        )
    public = PublicKey(key[1:])
    key_id = witness_key_id(name, public)
    if key_id.hex() != key_hash.lower():
        raise InputError(
            f"witness vkey id {key_hash} does not match its name and key (expected {key_id.hex()})"
        )
    return name, key_id, public


@dataclass(frozen=True)
class Cosignature:
    """One witness's cosignature/v1: "as of `time`, this is the largest consistent tree I saw"."""

    name: str
    key_id: bytes
    time: int
    signature: bytes

    def line(self) -> str:
        """The note signature line `— <name> <base64(key id || u64be(time) || signature)>\\n`."""
        payload = self.key_id + self.time.to_bytes(8, "big") + self.signature
        return f"{_SIG_PREFIX}{self.name} {b64encode(payload)}\n"


def _checkpoint_body(checkpoint: str) -> str:
    """The note text of `checkpoint`: itself when unsigned, else the text before the signatures."""
    if "\n\n" in checkpoint:
        return _split_note(checkpoint)[0]
    if not checkpoint.endswith("\n"):
        raise InputError("expected checkpoint text ending in a newline")
    return checkpoint


def _check_time(time: int) -> None:
    if (
        isinstance(time, bool)
        or not isinstance(time, int)
        or not 0 <= time <= _MAX_COSIGNATURE_TIME
    ):
        raise InputError(f"expected a cosignature time in 0..2^63-1, found {time!r:.40}")


def cosignature_message(checkpoint: str, time: int) -> bytes:
    """The signed message: `cosignature/v1\\ntime <time>\\n` then the checkpoint body.

    `checkpoint` is the note text, or a whole signed note (its signature lines are not signed).
    """
    _check_time(time)
    body = _checkpoint_body(checkpoint)
    return _COSIGNATURE_HEADER + f"time {time}\n".encode() + body.encode("utf-8")


def cosign(checkpoint: str, key: SigningKey, name: str, time: int) -> Cosignature:
    """`key`'s cosignature/v1 over `checkpoint` under witness name `name` at POSIX time `time`."""
    if not is_valid_key_name(name):
        raise UsageError(f"expected a witness name without spaces or '+', found {name!r:.80}")
    signature = key.sign(cosignature_message(checkpoint, time))
    return Cosignature(name, witness_key_id(name, key.public), time, signature)


def note_signature_lines(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Split a signed note: (text, [(key name, decoded base64 of the line: key id first)])."""
    text, signatures = _split_note(note)
    return text, [(s.name, s.key_id + s.signature) for s in signatures]


def verify_cosignatures(
    note: str, witnesses: Iterable[tuple[str, bytes, PublicKey]]
) -> list[Cosignature]:
    """The valid cosignature/v1 lines in `note` by the given witnesses (name, key id, key).

    Lines by other keys, and lines that do not verify, are ignored as signed-note verifiers
    ignore unknown signatures: a caller counts what is returned against its quorum. A malformed
    note is InputError. One cosignature per witness at most (the first valid one).
    """
    text, signatures = _split_note(note)
    body = text.encode("utf-8")
    known = {(name, key_id): public for name, key_id, public in witnesses}
    found: list[Cosignature] = []
    seen: set[tuple[str, bytes]] = set()
    for sig in signatures:
        ident = (sig.name, sig.key_id)
        public = known.get(ident)
        if public is None or ident in seen or len(sig.signature) != _COSIGNATURE_SIZE - 4:
            continue
        time = int.from_bytes(sig.signature[:8], "big")
        if time > _MAX_COSIGNATURE_TIME:
            continue
        message = _COSIGNATURE_HEADER + f"time {time}\n".encode() + body
        if public.verify(sig.signature[8:], message):
            seen.add(ident)
            found.append(Cosignature(sig.name, sig.key_id, time, sig.signature[8:]))
    return found


def add_signatures(note: str, lines: Iterable[str]) -> str:
    """`note` with the signature `lines` appended (each `— <name> <base64>`), identical lines once.

    The result is re-split so that a malformed line is refused here rather than by a verifier later.
    """
    text, _ = _split_note(note)
    block = note[len(text) + 1 :]
    present = set(block.splitlines())
    extra: list[str] = []
    for line in lines:
        line = line[:-1] if line.endswith("\n") else line
        if "\n" in line:
            raise InputError(f"expected one signature line, found several: {line!r:.80}")
        if line and line not in present:
            present.add(line)
            extra.append(line)
    combined = text + "\n" + block + "".join(f"{line}\n" for line in extra)
    _split_note(combined)
    return combined
