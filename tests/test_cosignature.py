"""C2SP tlog-cosignature (Ed25519 cosignature/v1) in ledger.spec.note: witness vkeys, the signed
message, cosignature lines, verification among other signatures, and adding lines to a note.

Expected values are recomputed here from the spec's words with hashlib, base64 and `cryptography`,
not with the code under test."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InputError, UsageError
from ledger.spec.keys import PublicKey, SigningKey
from ledger.spec.note import (
    COSIGNATURE_TYPE,
    Cosignature,
    TreeHead,
    add_signatures,
    cosign,
    cosignature_message,
    format_tree_head,
    note_signature_lines,
    parse_vkey,
    parse_witness_vkey,
    sign_tree_head,
    verify_cosignatures,
    verify_tree_head,
    vkey,
    witness_key_id,
    witness_vkey,
)

LOG_KEY = SigningKey.from_seed(bytes(range(32)))
WITNESS_KEY = SigningKey.from_seed(bytes(range(32, 64)))
OTHER_WITNESS_KEY = SigningKey.from_seed(bytes(range(64, 96)))
HEAD = TreeHead("example.com/behind-the-sofa", 20852163, bytes(range(32)))
NOTE = sign_tree_head(HEAD, LOG_KEY)
BODY = format_tree_head(HEAD)
W1 = "witness.example.com/w1"


def _independent_key_id(name: str, raw: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + b"\x04" + raw).digest()[:4]


def _witness(key: SigningKey, name: str = W1) -> tuple[str, bytes, PublicKey]:
    return parse_witness_vkey(witness_vkey(name, key.public))


def test_witness_key_id_and_vkey_follow_the_spec() -> None:
    raw = WITNESS_KEY.public.raw
    assert COSIGNATURE_TYPE == b"\x04"
    assert witness_key_id(W1, WITNESS_KEY.public) == _independent_key_id(W1, raw)
    key_b64 = base64.b64encode(b"\x04" + raw).decode()
    expected = f"{W1}+{_independent_key_id(W1, raw).hex()}+{key_b64}"
    assert witness_vkey(W1, WITNESS_KEY.public) == expected
    name, key_id, public = parse_witness_vkey(expected + "\n")
    assert (name, key_id, public) == (W1, _independent_key_id(W1, raw), WITNESS_KEY.public)


def test_a_witness_vkey_is_not_a_log_vkey_and_back() -> None:
    with pytest.raises(InputError, match="type 1"):
        parse_witness_vkey(vkey(W1, WITNESS_KEY.public))
    with pytest.raises(InputError, match="algorithm 4"):
        parse_vkey(witness_vkey(W1, WITNESS_KEY.public))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "w1",
        "w1+zzzzzzzz+AAAA",
        "w 1+00000000+" + base64.b64encode(b"\x04" + bytes(32)).decode(),
        "w1+00000000+" + base64.b64encode(b"\x04" + bytes(31)).decode(),
        "w1+00000000+" + base64.b64encode(b"\x04" + bytes(32)).decode(),  # wrong key id
        "w1+00000000+not base64",
    ],
    ids=["empty", "no-plus", "bad-hex", "space-in-name", "short-key", "wrong-id", "bad-b64"],
)
def test_malformed_witness_vkeys_are_refused(text: str) -> None:
    with pytest.raises(InputError):
        parse_witness_vkey(text)


def test_witness_vkey_refuses_a_bad_name() -> None:
    with pytest.raises(UsageError):
        witness_vkey("a+b", WITNESS_KEY.public)


def test_the_signed_message_is_the_spec_example() -> None:
    # tlog-cosignature "Ed25519 signed message": header line, time line, then the checkpoint body
    expected = (
        b"cosignature/v1\ntime 1679315147\n"
        b"example.com/behind-the-sofa\n20852163\n" + base64.b64encode(bytes(range(32))) + b"\n"
    )
    assert cosignature_message(BODY, 1679315147) == expected
    assert cosignature_message(NOTE, 1679315147) == expected  # signature lines are not signed


def test_a_cosignature_line_carries_key_id_big_endian_time_and_an_ed25519_signature() -> None:
    cosignature = cosign(NOTE, WITNESS_KEY, W1, 1679315147)
    line = cosignature.line()
    assert line.startswith(f"\u2014 {W1} ") and line.endswith("\n")
    payload = base64.b64decode(line.split(" ")[2])
    assert len(payload) == 4 + 8 + 64
    assert payload[:4] == _independent_key_id(W1, WITNESS_KEY.public.raw)
    assert int.from_bytes(payload[4:12], "big") == 1679315147
    Ed25519PublicKey.from_public_bytes(WITNESS_KEY.public.raw).verify(
        payload[12:], b"cosignature/v1\ntime 1679315147\n" + BODY.encode()
    )


def test_a_cosigned_note_still_verifies_as_the_log_s_tree_head() -> None:
    cosigned = add_signatures(NOTE, [cosign(NOTE, WITNESS_KEY, W1, 1).line()])
    assert verify_tree_head(cosigned, vkey(HEAD.origin, LOG_KEY.public)) == HEAD


def test_verify_cosignatures_returns_only_valid_lines_of_known_witnesses() -> None:
    good = cosign(NOTE, WITNESS_KEY, W1, 1700000000)
    other = cosign(NOTE, OTHER_WITNESS_KEY, "w2", 1700000001)
    forged = Cosignature(W1, good.key_id, good.time + 1, good.signature)  # time not signed
    cosigned = add_signatures(NOTE, [forged.line(), other.line(), good.line()])
    found = verify_cosignatures(cosigned, [_witness(WITNESS_KEY)])
    assert found == [good]
    both = verify_cosignatures(
        cosigned,
        [_witness(WITNESS_KEY), _witness(OTHER_WITNESS_KEY, "w2")],
    )
    assert sorted(c.name for c in both) == ["w2", W1]
    assert verify_cosignatures(NOTE, [_witness(WITNESS_KEY)]) == []


def test_a_cosignature_over_another_head_does_not_verify() -> None:
    other_head = TreeHead(HEAD.origin, HEAD.size + 1, HEAD.root)
    stale = cosign(sign_tree_head(other_head, LOG_KEY), WITNESS_KEY, W1, 5)
    cosigned = add_signatures(NOTE, [stale.line()])
    assert verify_cosignatures(cosigned, [_witness(WITNESS_KEY)]) == []


def test_the_same_key_under_another_name_does_not_count() -> None:
    renamed = cosign(NOTE, WITNESS_KEY, "impostor", 5)
    cosigned = add_signatures(NOTE, [renamed.line()])
    assert verify_cosignatures(cosigned, [_witness(WITNESS_KEY)]) == []


def test_a_time_above_2_63_is_ignored_and_cannot_be_signed() -> None:
    good = cosign(NOTE, WITNESS_KEY, W1, 5)
    huge = Cosignature(W1, good.key_id, 2**63, good.signature)
    cosigned = add_signatures(NOTE, [huge.line()])
    assert verify_cosignatures(cosigned, [_witness(WITNESS_KEY)]) == []
    with pytest.raises(InputError):
        cosign(NOTE, WITNESS_KEY, W1, 2**63)
    with pytest.raises(InputError):
        cosign(NOTE, WITNESS_KEY, W1, -1)


def test_add_signatures_dedups_and_refuses_malformed_lines() -> None:
    line = cosign(NOTE, WITNESS_KEY, W1, 7).line()
    once = add_signatures(NOTE, [line])
    assert add_signatures(once, [line, line.rstrip("\n")]) == once
    assert once.count(line) == 1
    with pytest.raises(InputError):
        add_signatures(NOTE, ["not a signature line"])
    with pytest.raises(InputError):
        add_signatures(NOTE, [line + line])


def test_note_signature_lines_round_trips_cosignature_lines() -> None:
    cosignature = cosign(NOTE, WITNESS_KEY, W1, 9)
    body, lines = note_signature_lines(add_signatures(NOTE, [cosignature.line()]))
    assert body == BODY
    assert [name for name, _ in lines] == [HEAD.origin, W1]
    name, raw = lines[1]
    assert raw == cosignature.key_id + (9).to_bytes(8, "big") + cosignature.signature
    rebuilt = Cosignature(name, raw[:4], int.from_bytes(raw[4:12], "big"), raw[12:])
    assert rebuilt == cosignature and rebuilt.line() == cosignature.line()


@settings(max_examples=40, deadline=None)
@given(
    origin=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="+"),
        min_size=1,
        max_size=30,
    ),
    size=st.integers(0, 2**63 - 1),
    time=st.integers(0, 2**63 - 1),
)
def test_cosign_then_verify_round_trips(origin: str, size: int, time: int) -> None:
    note = sign_tree_head(TreeHead(origin, size, bytes(32)), LOG_KEY)
    cosignature = cosign(note, WITNESS_KEY, W1, time)
    cosigned = add_signatures(note, [cosignature.line()])
    assert verify_cosignatures(cosigned, [_witness(WITNESS_KEY)]) == [cosignature]
