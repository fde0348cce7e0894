"""The key rules verify applies while replaying key and revoke entries in log order (`KeyReplay`).

Pure: bodies built in memory, no ledger file. These are the rules the one key ring (issue #12) must keep
when it replaces `KeyReplay`; test_verify.py checks them again through tampered ledgers.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

from ledger import keys
from ledger.errors import VerificationError
from ledger.log.verify.keyreplay import KeyReplay
from ledger.log.verify.report import ProblemList
from ledger.spec import entries


def key(name: str, role: str, seed: bytes | None = None) -> tuple[str, bytes, dict[str, Any]]:
    raw = hashlib.sha256(seed or os.urandom(16)).digest()  # any 32 bytes name a key for these rules
    public = keys.PublicKey(raw)
    return public.keyid, raw, entries.key_body(public.keyid, public.b64, name, role)


def test_replayed_keys_and_their_rules() -> None:
    problems = ProblemList()
    ring = KeyReplay(problems)
    log_id, log_raw, log_body = key("log", "log")
    rec_id, rec_raw, rec_body = key("default", "recorder")
    assert ring.first("key", log_id, log_body) == log_raw
    assert ring.signer(1, "key", log_id) == log_raw
    ring.key(1, rec_body)
    assert problems.result() == []

    assert ring.signer(1, "call", rec_id) is None  # introduced at 1: may sign from 2 on
    assert ring.signer(2, "call", rec_id) == rec_raw
    assert ring.signer(3, "revoke", rec_id) == rec_raw  # known, but a recorder key may not revoke
    ring.key(4, rec_body)  # introduced twice
    ring.revoke(5, entries.revoke_body(rec_id, "left"))
    ring.revoke(6, entries.revoke_body(rec_id, "again"))
    ring.revoke(7, entries.revoke_body("ab" * 32, "who"))
    ring.signer(8, "call", rec_id)  # after its revocation
    forged = {**rec_body, "keyid": "cd" * 32}
    ring.key(9, forged)
    found = [(p.index, p.what) for p in problems.result()]
    assert [index for index, _ in found] == [1, 3, 4, 6, 7, 8, 9]
    for (_, what), words in zip(
        found,
        [
            "unknown at this point",
            "expected a revoke entry signed by a log key, found recorder key default",
            "already introduced at entry 1",
            "already revoked at entry 5",
            "expected to revoke a known key",
            "revoked at entry 5",
            "does not hash to it",
        ],
    ):
        assert words in what
    assert ring.current_log_key().raw == log_raw
    assert [k.keyid for k in ring.log_keys_newest_first()] == [log_id]


def test_first_entry_must_be_the_self_signed_log_key() -> None:
    problems = ProblemList()
    ring = KeyReplay(problems)
    rec_id, _, rec_body = key("default", "recorder")
    assert ring.first("key", rec_id, rec_body) is None
    assert ring.first("call", rec_id, {}) is None
    log_id, _, log_body = key("log", "log")
    assert ring.first("key", "ef" * 32, log_body) is None  # signed by another key
    assert len(problems.result()) == 3
    assert all(p.index == 0 and "self-signed key entry" in p.what for p in problems.result())
    with pytest.raises(VerificationError, match="no active log key"):
        ring.current_log_key()


def test_rotated_log_keys_newest_first() -> None:
    ring = KeyReplay(ProblemList())
    old_id, _, old_body = key("log", "log", b"old")
    new_id, new_raw, new_body = key("log", "log", b"new")
    ring.first("key", old_id, old_body)
    ring.key(3, new_body)
    ring.revoke(4, entries.revoke_body(old_id, "rotated"))
    assert ring.current_log_key().raw == new_raw
    assert [k.keyid for k in ring.log_keys_newest_first()] == [new_id, old_id]  # revoked ones too
