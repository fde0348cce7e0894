"""The key rules verify applies while replaying key and revoke entries in log order (`LogOrder`, which
asks the one key ring, `ledger.spec.keyring`, and words what it reports).

No ledger file: entries are signed in memory with real keys and fed to `LogOrder` as `examine` would
hand them over. test_verify.py checks the same rules again through tampered ledgers.
"""

from __future__ import annotations

from typing import Any

import pytest

from ledger.errors import VerificationError
from ledger.log.verify.entries import SIG_UNKNOWN, Examined, LogOrder
from ledger.log.verify.report import ProblemList
from ledger.spec import entries
from ledger.spec.envelope import sign_entry
from ledger.spec.keys import SigningKey


def key(name: str, role: str, seed: int) -> tuple[SigningKey, dict[str, Any]]:
    signing = SigningKey.from_seed(bytes([seed]) * 32)
    return signing, entries.key_body(signing.public.keyid, signing.public.b64, name, role)


class Log:
    """A `LogOrder` fed entries signed for real; their signatures are left for it to check (as when
    the hint pass did not know the key), so every known signer's signature is checked too."""

    def __init__(self) -> None:
        self.problems = ProblemList()
        self.order = LogOrder(16, self.problems)

    def add(self, index: int, body: dict[str, Any], by: SigningKey) -> None:
        kind = str(body["kind"])
        leaf = sign_entry(body, by)
        kept = None if kind == "call" else body
        self.order.add(Examined(index, kind, by.public.keyid, SIG_UNKNOWN, kept, ()), leaf)

    def found(self) -> list[tuple[int | None, str]]:
        return [(p.index, p.what) for p in self.problems.result()]


def call(n: int) -> dict[str, Any]:
    return entries.call_body(
        provider="p",
        model="m",
        endpoint="/e",
        purpose="other",
        request="ab" * 32,
        response="cd" * 32,
        outputs=[],
        external_id=f"c{n}",
    )


def short(keyid: str) -> str:
    return f"{keyid[:16]}…"


def test_replayed_keys_and_their_rules() -> None:
    log = Log()
    log_key, log_body = key("log", "log", 1)
    rec, rec_body = key("default", "recorder", 2)
    carol, carol_body = key("carol", "recorder", 3)
    rec_id, carol_id = rec.public.keyid, carol.public.keyid
    log.add(0, log_body, log_key)
    log.add(1, rec_body, log_key)
    assert log.found() == []

    log.add(1, call(1), rec)  # introduced at 1: may sign from 2 on
    log.add(2, carol_body, log_key)
    log.add(3, call(3), rec)
    log.add(4, entries.revoke_body(carol_id, "x"), rec)  # known, but a recorder key may not revoke
    log.add(5, rec_body, log_key)  # introduced twice
    log.add(6, entries.revoke_body(rec_id, "left"), log_key)
    log.add(7, entries.revoke_body(rec_id, "again"), log_key)
    log.add(8, entries.revoke_body("ab" * 32, "who"), log_key)
    log.add(9, call(9), rec)  # after its revocation
    forged = {**carol_body, "keyid": "cd" * 32}
    log.add(10, forged, log_key)
    assert log.found() == [
        (
            1,
            "entry 1: expected a signer introduced by an earlier key entry, "
            f"found key {short(rec_id)} unknown at this point",
        ),
        (4, "entry 4: expected a revoke entry signed by a log key, found recorder key default"),
        (
            5,
            f"entry 5: expected a new key, found key {short(rec_id)} already introduced at entry 1",
        ),
        (7, f"entry 7: key {short(rec_id)} was already revoked at entry 6"),
        (8, f"entry 8: expected to revoke a known key, found unknown key {short('ab' * 32)}"),
        (
            9,
            "entry 9: expected a signer not revoked before it, found key default "
            f"({short(rec_id)}) revoked at entry 6",
        ),
        (
            10,
            f"entry 10: expected keyid = sha256(public_key), found key {short('cd' * 32)} "
            "whose public key does not hash to it",
        ),
    ]
    ring = log.order.ring
    assert ring.current_log_key().public == log_key.public
    assert [k.keyid for k in ring.log_keys()] == [log_key.public.keyid]
    revoked = ring.get(carol_id)  # a revoke signed by the wrong key is still replayed
    assert revoked is not None and revoked.revoked_at == 4


def test_a_signature_left_unchecked_is_checked_with_the_replayed_key() -> None:
    log = Log()
    log_key, log_body = key("log", "log", 1)
    rec, rec_body = key("default", "recorder", 2)
    log.add(0, log_body, log_key)
    log.add(1, rec_body, log_key)
    leaf = sign_entry(call(2), log_key)  # signed by the log key, claimed by the recorder key
    log.order.add(Examined(2, "call", rec.public.keyid, SIG_UNKNOWN, None, ()), leaf)
    [(index, what)] = log.found()
    assert index == 2 and "signature" in what


def test_first_entry_must_be_the_self_signed_log_key() -> None:
    log = Log()
    rec, rec_body = key("default", "recorder", 2)
    log_key, log_body = key("log", "log", 1)
    log.add(0, rec_body, rec)
    log.add(0, call(0), rec)
    log.add(0, log_body, SigningKey.from_seed(b"\xef" * 32))  # signed by another key
    rec_id = rec.public.keyid
    other = SigningKey.from_seed(b"\xef" * 32).public.keyid
    assert log.found() == [
        (
            0,
            "entry 0: expected the log key's self-signed key entry, found a key entry "
            f"(role 'recorder') signed by {rec_id}",
        ),
        (
            0,
            "entry 0: expected the log key's self-signed key entry, found a call entry "
            f"(role None) signed by {rec_id}",
        ),
        (
            0,
            "entry 0: expected the log key's self-signed key entry, found a key entry "
            f"(role 'log') signed by {other}",
        ),
    ]
    with pytest.raises(VerificationError, match="no active log key"):
        log.order.ring.current_log_key()


def test_first_entry_key_must_hash_to_its_keyid() -> None:
    log = Log()
    log_key, log_body = key("log", "log", 1)
    _, other_body = key("other", "log", 2)
    log.add(0, {**log_body, "public_key": other_body["public_key"]}, log_key)
    assert log.found() == [
        (0, "entry 0: expected keyid = sha256(public_key), found a key that does not hash to it")
    ]
    assert log.order.ring.keys() == []


def test_rotated_log_keys_newest_first() -> None:
    log = Log()
    old, old_body = key("log", "log", 1)
    new, new_body = key("log", "log", 2)
    log.add(0, old_body, old)
    log.add(3, new_body, old)
    log.add(4, entries.revoke_body(old.public.keyid, "rotated"), new)
    assert log.found() == []
    ring = log.order.ring
    assert ring.current_log_key().public == new.public
    assert [k.keyid for k in ring.log_keys()] == [new.public.keyid, old.public.keyid]  # revoked too
