"""DSSE entry envelopes (DESIGN.md "Entries (fixed envelope, extensible bodies)").

An entry's leaf bytes are the JCS form of a DSSE envelope whose payload is the JCS of the entry body,
signed with Ed25519 over DSSE's pre-authentication encoding, so that any DSSE library can check an
entry without this package. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.errors import InputError, VerificationError
from ledger.spec.jcs import canonical_json, parse_json_line
from ledger.spec.keys import (
    ED25519_SIGNATURE_SIZE,
    PublicKey,
    SigningKey,
    b64decode_canonical,
    b64decode_canonical_bytes,
    b64encode,
)

__all__ = [
    "PAYLOAD_TYPE",
    "Envelope",
    "format_envelope",
    "pae",
    "parse_envelope",
    "sign_entry",
    "verify_envelope",
]

PAYLOAD_TYPE = "application/vnd.ledger.entry.v1+json"

_KEYID_RE = re.compile(r"[0-9a-f]{64}")
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
            f'{{"keyid":"{keyid}","sig":"{b64encode(sig)}"}}' for keyid, sig in envelope.signatures
        )
        return (
            f'{{"payload":"{b64encode(envelope.payload)}","payloadType":"{PAYLOAD_TYPE}",'
            f'"signatures":[{signatures}]}}'
        ).encode("ascii")
    return canonical_json(
        {
            "payload": b64encode(envelope.payload),
            "payloadType": envelope.payload_type,
            "signatures": [{"keyid": k, "sig": b64encode(s)} for k, s in envelope.signatures],
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
    fast = split_canonical_leaf(leaf)
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
    payload = b64decode_canonical(payload_b64) if isinstance(payload_b64, str) else None
    if payload is None:
        raise _not_canonical("payload is not canonical base64", index)
    signatures = _parse_signatures(doc["signatures"], index)
    envelope = Envelope(payload, payload_type, signatures)
    if format_envelope(envelope) != leaf:
        raise _not_canonical("re-serialising it gives different bytes", index)
    return _with_body(envelope, index)


def split_canonical_leaf(leaf: bytes) -> Envelope | None:
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
    payload = b64decode_canonical_bytes(leaf[len(_LEAF_OPEN) : end])
    sig = b64decode_canonical_bytes(leaf[sig_at : sig_at + _SIG_B64_SIZE])
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
        sig = b64decode_canonical(sig_b64) if isinstance(sig_b64, str) else None
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
