"""The key ring as verify replays it: key and revoke entries in log order, with the rules a verifier applies.

Kept in this one module, apart from the other order-dependent checks (`entries.LogOrder`), so that the one
key ring of issue #12 (`ledger.spec.keyring`) can replace `KeyReplay` here without touching anything else.
It imports nothing from the `ledger.ledger` facade (whose `KeyRing` it mirrors), so verify stays out of
the facade's import cycle.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ledger import keys
from ledger.errors import VerificationError
from ledger.log.verify.report import ProblemList


@lru_cache(maxsize=64)
def public_key(raw: bytes) -> keys.PublicKey:
    """A log has a handful of keys: build each (and its keyid) once, not once per entry."""
    return keys.PublicKey(raw)


def public_key_of(body: Mapping[str, Any]) -> bytes | None:
    """The raw key of a key body if its keyid really is its SHA-256, else None."""
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


@dataclass(frozen=True)
class KnownKey:
    """A key as the log introduced it (entry `index`) and, if so, revoked it (entry `revoked_at`)."""

    keyid: str
    name: str
    role: str
    raw: bytes  # the raw 32-byte Ed25519 public key; its SHA-256 is `keyid`
    index: int
    revoked_at: int | None = None

    @property
    def public(self) -> keys.PublicKey:
        return public_key(self.raw)


class KeyReplay:
    """Keys and revocations replayed in log order; each step reports what breaks the key rules.

    The first entry must be the log key's self-signed key entry; later key and revoke entries must be
    signed by a log key; every signer must be introduced by an earlier key entry and not revoked before
    the entry it signs.
    """

    def __init__(self, problems: ProblemList) -> None:
        self.by_id: dict[str, KnownKey] = {}
        self.problems = problems

    def first(self, kind: str, signer: str, body: Mapping[str, Any]) -> bytes | None:
        """Entry 0: the log key's self-signed key entry starts the ring. Returns that key, None if it is not one."""
        if kind != "key" or body.get("role") != "log" or body.get("keyid") != signer:
            self.problems.add(
                0,
                f"entry 0: expected the log key's self-signed key entry, found a {kind} entry "
                f"(role {body.get('role')!r}) signed by {signer}",
            )
            return None
        raw = public_key_of(body)
        if raw is None:
            self.problems.add(
                0,
                "entry 0: expected keyid = sha256(public_key), found a key that does not hash to it",
            )
            return None
        self._add(body, raw, 0)
        return raw

    def signer(self, index: int, kind: str, signer: str) -> bytes | None:
        """Whether `signer` may sign entry `index` of `kind`; returns its key when the ring knows it by then."""
        info = self.by_id.get(signer)
        if info is None or info.index >= index:
            self.problems.add(
                index,
                f"entry {index}: expected a signer introduced by an earlier key entry, "
                f"found key {signer[:16]}… unknown at this point",
            )
            return None
        if info.revoked_at is not None and index > info.revoked_at:
            self.problems.add(
                index,
                f"entry {index}: expected a signer not revoked before it, found key {info.name} "
                f"({signer[:16]}…) revoked at entry {info.revoked_at}",
            )
        if kind in ("key", "revoke") and info.role != "log":
            self.problems.add(
                index,
                f"entry {index}: expected a {kind} entry signed by a log key, "
                f"found {info.role} key {info.name}",
            )
        return info.raw

    def key(self, index: int, body: Mapping[str, Any]) -> None:
        """A later key entry: a new key whose keyid is its SHA-256 joins the ring."""
        keyid = str(body["keyid"])
        raw = public_key_of(body)
        if raw is None:
            self.problems.add(
                index,
                f"entry {index}: expected keyid = sha256(public_key), found key {keyid[:16]}… "
                "whose public key does not hash to it",
            )
            return
        known = self.by_id.get(keyid)
        if known is not None:
            self.problems.add(
                index,
                f"entry {index}: expected a new key, found key {keyid[:16]}… "
                f"already introduced at entry {known.index}",
            )
            return
        self._add(body, raw, index)

    def revoke(self, index: int, body: Mapping[str, Any]) -> None:
        """A revoke entry: a known key not yet revoked is revoked from this index on."""
        keyid = str(body["keyid"])
        known = self.by_id.get(keyid)
        if known is None:
            self.problems.add(
                index,
                f"entry {index}: expected to revoke a known key, found unknown key {keyid[:16]}…",
            )
        elif known.revoked_at is not None:
            self.problems.add(
                index,
                f"entry {index}: key {keyid[:16]}… was already revoked at entry {known.revoked_at}",
            )
        else:
            self.by_id[keyid] = KnownKey(
                known.keyid, known.name, known.role, known.raw, known.index, index
            )

    def current_log_key(self) -> KnownKey:
        """The newest log key not revoked: the one that signs tree heads now."""
        active = [k for k in self.by_id.values() if k.role == "log" and k.revoked_at is None]
        if not active:
            raise VerificationError("the log has no active log key")
        return max(active, key=lambda k: k.index)

    def log_keys_newest_first(self) -> list[KnownKey]:
        """Every log key the log ever introduced, revoked ones included, newest first."""
        return sorted((k for k in self.by_id.values() if k.role == "log"), key=lambda k: -k.index)

    def _add(self, body: Mapping[str, Any], raw: bytes, index: int) -> None:
        keyid = str(body["keyid"])
        self.by_id[keyid] = KnownKey(keyid, str(body["name"]), str(body["role"]), raw, index)
