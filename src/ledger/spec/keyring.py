"""The one key ring: `key` and `revoke` entry bodies replayed in index order.

Which key was introduced where, which is revoked since when, which log key is current, and whether a
signer may sign the entry at an index. Pure: bodies in, answers out. The log (signing and appending), the
verifier of a stored log and the offline bundle verifier all ask it; each words its own messages from
the `RingProblem`s it returns, so the rule lives here once.

Two ways to replay:
- `KeyRing.replay(bodies)` trusts its input (the log appending to a log it has just re-checked): every
  key entry is added, every revoke of a known key applied.
- `ring.apply(index, body)` checks as it goes (verifiers): an entry that breaks a rule is returned as a
  `RingProblem` and leaves the ring unchanged; `ring.signer_problems(index, signer, kind)` says why a
  signer may not sign an entry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from ledger.errors import NotFoundError, VerificationError
from ledger.spec import keys, note

__all__ = ["PROBLEM_CODES", "KeyInfo", "KeyRing", "RingProblem", "public_key_bytes"]


@dataclass(frozen=True)
class KeyInfo:
    keyid: str
    name: str
    role: str
    public_key: str  # base64 raw 32 bytes
    index: int  # the key entry's index
    revoked_at: int | None = None  # index of the revoke entry
    revoke_reason: str | None = None

    @property
    def public(self) -> keys.PublicKey:
        return keys.PublicKey.from_b64(self.public_key)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def vkey(self, origin: str) -> str:
        """Note verifier keys carry the name they sign as: the origin for log keys."""
        return note.vkey(origin if self.role == "log" else self.name, self.public)

    def active_at(self, index: int) -> bool:
        return self.index < index and (self.revoked_at is None or index < self.revoked_at)


PROBLEM_CODES: Final = (
    "bad-key",  # a key entry whose public key is not canonical base64 of 32 bytes hashing to its keyid
    "key-exists",  # a key entry for a keyid an earlier key entry introduced (`known` is that one)
    "revoke-unknown",  # a revoke entry naming a keyid no earlier key entry introduced
    "revoke-again",  # a revoke entry for a key already revoked (`known.revoked_at` says where)
    "signer-unknown",  # a signer no earlier key entry introduced (entry 0 may introduce its own)
    "signer-revoked",  # a signer revoked before the entry (`known.revoked_at` says where)
    "signer-not-log",  # a key or revoke entry signed by a key whose role is not `log`
)


@dataclass(frozen=True)
class RingProblem:
    """A key-ring rule broken at entry `index`; `code` is one of PROBLEM_CODES, `keyid` the key it is
    about (the signer for `signer-*`), `known` that key as the ring knew it before the entry."""

    code: str
    index: int
    keyid: str
    known: KeyInfo | None = None


def public_key_bytes(body: Mapping[str, Any]) -> bytes | None:
    """The raw key of a key body if `public_key` is canonical base64 of 32 bytes whose SHA-256 is its
    `keyid`, else None."""
    text = body.get("public_key")
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    if len(raw) != 32 or base64.b64encode(raw).decode("ascii") != text:
        return None
    return raw if hashlib.sha256(raw).hexdigest() == body.get("keyid") else None


@dataclass
class KeyRing:
    """Keys as the log introduces and retires them, in index order."""

    by_id: dict[str, KeyInfo] = field(default_factory=dict)

    # --- replay ------------------------------------------------------------------------------------
    @classmethod
    def replay(cls, bodies: Iterable[tuple[int, Mapping[str, Any]]]) -> KeyRing:
        """The ring after (index, body) pairs in index order, trusted (see the module docstring)."""
        ring = cls()
        for index, body in bodies:
            if body["kind"] == "key":
                ring.add(body, index)
            elif body["kind"] == "revoke" and body["keyid"] in ring.by_id:
                ring.revoke(str(body["keyid"]), index, str(body.get("reason", "")))
        return ring

    def add(self, body: Mapping[str, Any], index: int) -> None:
        """Introduce the key of a `key` body at `index` (unchecked: see `apply`)."""
        self.by_id[str(body["keyid"])] = KeyInfo(
            str(body["keyid"]), str(body["name"]), str(body["role"]), str(body["public_key"]), index
        )

    def revoke(self, keyid: str, index: int, reason: str) -> None:
        """Retire a known key at `index` (unchecked: see `apply`)."""
        self.by_id[keyid] = replace(self.by_id[keyid], revoked_at=index, revoke_reason=reason)

    def apply(self, index: int, body: Mapping[str, Any]) -> RingProblem | None:
        """Replay one entry body at `index` with the rules checked; other kinds change nothing.

        Returns None when applied, else the rule it breaks (the ring is then unchanged)."""
        kind = body.get("kind")
        if kind not in ("key", "revoke"):
            return None
        keyid = str(body.get("keyid"))
        known = self.by_id.get(keyid)
        if kind == "key":
            if public_key_bytes(body) is None:
                return RingProblem("bad-key", index, keyid)
            if known is not None:
                return RingProblem("key-exists", index, keyid, known)
            self.add(body, index)
            return None
        if known is None:
            return RingProblem("revoke-unknown", index, keyid)
        if known.revoked_at is not None:
            return RingProblem("revoke-again", index, keyid, known)
        self.revoke(keyid, index, str(body.get("reason", "")))
        return None

    def signer_problems(self, index: int, signer: str, kind: str) -> list[RingProblem]:
        """Why `signer` may not sign the `kind` entry at `index` (empty: it may).

        Ask before applying the entry itself, except for entry 0, the log key's self-signed key entry:
        apply it first, since it introduces its own signer."""
        info = self.by_id.get(signer)
        if info is None or (info.index >= index and not (index == 0 == info.index)):
            return [RingProblem("signer-unknown", index, signer, info)]
        found = []
        if info.revoked_at is not None and index > info.revoked_at:
            found.append(RingProblem("signer-revoked", index, signer, info))
        if kind in ("key", "revoke") and info.role != "log":
            found.append(RingProblem("signer-not-log", index, signer, info))
        return found

    # --- questions ---------------------------------------------------------------------------------
    def get(self, keyid: str) -> KeyInfo | None:
        return self.by_id.get(keyid)

    def keys(self) -> list[KeyInfo]:
        """Every key, in the order the log introduced them."""
        return sorted(self.by_id.values(), key=lambda k: k.index)

    def log_keys(self) -> list[KeyInfo]:
        """Every log key the log ever had, newest first (a published head outlives a rotation)."""
        return [k for k in sorted(self.by_id.values(), key=lambda k: -k.index) if k.role == "log"]

    def current_log_key(self) -> KeyInfo:
        active = [k for k in self.by_id.values() if k.role == "log" and not k.revoked]
        if not active:
            raise VerificationError("the log has no active log key")
        return max(active, key=lambda k: k.index)

    def find(self, name_or_id: str) -> KeyInfo:
        """A key by keyid, else the newest active key of that name, else by a keyid prefix (8+ hex)."""
        if name_or_id in self.by_id:
            return self.by_id[name_or_id]
        named = [k for k in self.by_id.values() if k.name == name_or_id and not k.revoked]
        if not named:
            named = [
                k
                for k in self.by_id.values()
                if k.keyid.startswith(name_or_id) and len(name_or_id) >= 8
            ]
        if not named:
            raise NotFoundError(f"no key named or with keyid {name_or_id!r}")
        return max(named, key=lambda k: k.index)

    def named(self, name: str, role: str) -> list[KeyInfo]:
        """Every key of that name and role, revoked ones included, in index order."""
        return [k for k in self.keys() if k.name == name and k.role == role]

    def successor(self, info: KeyInfo) -> KeyInfo | None:
        """The key a rotation put in place of `info`: a rotation appends the new key entry just before
        revoking the old one (reason `rotated`)."""
        if info.revoked_at is None or info.revoke_reason != "rotated":
            return None
        return next((k for k in self.by_id.values() if k.index == info.revoked_at - 1), None)
