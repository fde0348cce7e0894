"""The one key ring (`ledger.spec.keyring`): replaying key and revoke bodies, and the rules it checks.

Bodies are built with real keys and the entry builders; the log's own ring (read back from a real
ledger) must agree with a replay of its bodies.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ledger import Ledger
from ledger.errors import NotFoundError, VerificationError
from ledger.spec import entries
from ledger.spec.keyring import PROBLEM_CODES, KeyRing, public_key_bytes
from ledger.spec.keys import SigningKey


def key_body(seed: int, name: str, role: str) -> dict[str, Any]:
    key = SigningKey.from_seed(bytes([seed]) * 32)
    return entries.key_body(key.public.keyid, key.public.b64, name, role)


LOG = key_body(1, "test.local/ring", "log")
ALICE = key_body(2, "alice", "recorder")
LOG2 = key_body(3, "test.local/ring", "log")
BOB = key_body(4, "bob", "recorder")


def story() -> list[tuple[int, Mapping[str, Any]]]:
    """A log that introduces alice, rotates the log key, and revokes alice."""
    return [
        (0, LOG),
        (1, ALICE),
        (2, LOG2),
        (3, entries.revoke_body(LOG["keyid"], "rotated")),
        (4, BOB),
        (5, entries.revoke_body(ALICE["keyid"], "compromised")),
    ]


def test_replay_tracks_introductions_revocations_and_the_current_log_key() -> None:
    ring = KeyRing.replay(story())
    assert [k.name for k in ring.keys()] == ["test.local/ring", "alice", "test.local/ring", "bob"]
    assert ring.current_log_key().keyid == LOG2["keyid"]
    assert [k.keyid for k in ring.log_keys()] == [LOG2["keyid"], LOG["keyid"]]
    alice = ring.find(ALICE["keyid"])
    assert ring.named("alice", "recorder") == [alice]  # find by name skips revoked keys
    assert (alice.revoked_at, alice.revoke_reason) == (5, "compromised")
    assert alice.active_at(3) and not alice.active_at(5) and not alice.active_at(1)
    assert ring.find(BOB["keyid"][:8]).name == "bob"
    old_log = ring.find(LOG["keyid"])
    successor = ring.successor(old_log)
    assert successor is not None and successor.keyid == LOG2["keyid"]
    assert ring.successor(alice) is None  # revoked, not rotated
    with pytest.raises(NotFoundError):
        ring.find("carol")
    with pytest.raises(NotFoundError):
        ring.find(BOB["keyid"][:7])  # a prefix must be 8 hex digits or more


def test_a_ring_without_an_active_log_key_says_so() -> None:
    ring = KeyRing.replay([(0, LOG), (1, entries.revoke_body(LOG["keyid"], "gone"))])
    with pytest.raises(VerificationError, match="no active log key"):
        ring.current_log_key()


def test_checked_replay_agrees_with_the_trusted_one_on_a_valid_log() -> None:
    checked = KeyRing()
    for index, body in story():
        assert checked.apply(index, body) is None
    assert checked.by_id == KeyRing.replay(story()).by_id


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({**BOB, "keyid": ALICE["keyid"]}, "bad-key"),  # the public key does not hash to the keyid
        ({**BOB, "public_key": BOB["public_key"].rstrip("=")}, "bad-key"),  # not canonical base64
        (ALICE, "key-exists"),
        (entries.revoke_body(BOB["keyid"], "x"), "revoke-unknown"),
    ],
)
def test_checked_replay_refuses_a_broken_rule_and_leaves_the_ring_unchanged(
    body: dict[str, Any], code: str
) -> None:
    ring = KeyRing.replay([(0, LOG), (1, ALICE)])
    before = dict(ring.by_id)
    problem = ring.apply(2, body)
    assert problem is not None and problem.code == code and problem.index == 2
    assert code in PROBLEM_CODES
    assert ring.by_id == before


def test_a_second_revocation_names_the_first() -> None:
    ring = KeyRing.replay([(0, LOG), (1, ALICE), (2, entries.revoke_body(ALICE["keyid"], "a"))])
    problem = ring.apply(3, entries.revoke_body(ALICE["keyid"], "b"))
    assert problem is not None and problem.code == "revoke-again"
    assert problem.known is not None and problem.known.revoked_at == 2
    assert ring.find(ALICE["keyid"]).revoke_reason == "a"


def test_signer_rules() -> None:
    ring = KeyRing()
    assert ring.apply(0, LOG) is None
    assert ring.signer_problems(0, LOG["keyid"], "key") == []  # entry 0 introduces its own signer
    assert ring.apply(1, ALICE) is None
    assert ring.signer_problems(1, ALICE["keyid"], "call")[0].code == "signer-unknown"
    assert ring.signer_problems(2, ALICE["keyid"], "call") == []
    assert [p.code for p in ring.signer_problems(2, ALICE["keyid"], "revoke")] == ["signer-not-log"]
    assert ring.signer_problems(2, BOB["keyid"], "call")[0].code == "signer-unknown"
    assert ring.apply(3, entries.revoke_body(ALICE["keyid"], "x")) is None
    assert ring.signer_problems(3, ALICE["keyid"], "call") == []  # the revoke entry's own index
    late = ring.signer_problems(4, ALICE["keyid"], "key")
    assert [p.code for p in late] == ["signer-revoked", "signer-not-log"]
    assert late[0].known is not None and late[0].known.revoked_at == 3


def test_public_key_bytes_checks_the_keyid() -> None:
    raw = public_key_bytes(ALICE)
    assert raw is not None and len(raw) == 32
    assert public_key_bytes({**ALICE, "keyid": BOB["keyid"]}) is None
    assert public_key_bytes({**ALICE, "public_key": 7}) is None


def test_the_logs_ring_is_a_replay_of_its_key_entries(tmp_path: Path) -> None:
    lg = Ledger.init(tmp_path / "ledger.duckdb", keys_dir=tmp_path / "keys", origin="ring.test/a")
    lg.new_key("bob")
    lg.rotate_key("log")
    lg.revoke_key("bob", "left")
    bodies = [(e.index, e.body) for e in lg.log(kinds=("key", "revoke"))]
    assert lg.keys() == KeyRing.replay(bodies).keys()
    checked = KeyRing()
    for index, body in bodies:
        assert checked.apply(index, body) is None
    assert checked.keys() == lg.keys()
    assert lg.export_key("log").keyid == checked.current_log_key().keyid
