"""Tests for ledger.spec.keys, .envelope, .note and ledger.log.keyfiles: golden vectors,
independent DSSE and signed-note checks, round trips."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import warnings
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.exceptions import VerificationError as SslibVerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]

from ledger.errors import InputError, KeyFileError, LedgerError, UsageError, VerificationError
from ledger.log.keyfiles import load_key_file, write_key_file
from ledger.spec.envelope import (
    PAYLOAD_TYPE,
    Envelope,
    format_envelope,
    pae,
    parse_envelope,
    sign_entry,
    verify_envelope,
)
from ledger.spec.keys import PublicKey, SigningKey
from ledger.spec.note import (
    TreeHead,
    format_tree_head,
    is_valid_key_name,
    note_key_id,
    open_signed_note,
    parse_tree_head,
    parse_vkey,
    sign_note,
    sign_tree_head,
    verify_note,
    verify_tree_head,
    vkey,
)

VECTORS = json.loads((Path(__file__).parent / "conformance.json").read_text("utf-8"))["signing"]
SEED = bytes.fromhex(VECTORS["ed25519_private_seed_hex"])
KEY = SigningKey.from_seed(SEED)
OTHER_KEY = SigningKey.from_seed(bytes(range(100, 132)))
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Published examples from Go's golang.org/x/mod/sumdb/note (note.go docs and note_test.go).
GO_PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqd"
    "ngotpRZb6KE6RyyBwJnAM=\n"
)
GO_ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGw"
    "nWLox33WWd1RvMc+QQ=\n"
)

# Real tree heads served by sum.golang.org (signed by Google's Go checksum database) and its
# published verifier key: a C2SP checkpoint signed by software other than ours.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_ORIGIN = "go.sum database tree"
SUMDB_HEADS = [
    (
        (
            "go.sum database tree\n65209736\n5+uGFjx6xBZG8ip1+wi77v+grwbhhukIrxEUS8PXvRo=\n\n"
            "\u2014 sum.golang.org Az3grnbssgK7ubgFX36gVETtNv0U23qxyAhAMai2QUfeGa3nB/akvkMdlUErfcZz7l"
            "/R3cVtYspg3dxXABkGZZKdsQ8=\n"
        ),
        65209736,
    ),
    (
        (
            "go.sum database tree\n31700353\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n\n"
            "\u2014 sum.golang.org Az3grnmrIUEDFqHzAElIQCPNoRFRAAdFo47fooyWKMHb89k11GJh5zHIfNCOBmwn/C3Y"
            "I8oW9/C8DJ87F61QqspBYwM=\n"
        ),
        31700353,
    ),
]

# Go's unicode.IsSpace set, written out from the Unicode White_Space property (independent of
# str.isspace, which the module uses).
GO_SPACES = set("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}


def spec_valid_name(name: str) -> bool:
    """C2SP signed-note key name rule (plus the note-wide ban on control characters)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return (
        name != "" and "+" not in name and not any(ch in GO_SPACES or ord(ch) < 0x20 for ch in name)
    )


key_names = st.text(
    alphabet=st.characters(
        blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs"), blacklist_characters="+\x85"
    ),
    min_size=1,
    max_size=40,
)
roots = st.binary(min_size=32, max_size=32)
sizes = st.integers(min_value=0, max_value=2**63 - 1)
seeds = st.binary(min_size=32, max_size=32)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


def envelope_dict(leaf: bytes) -> dict[str, Any]:
    value = json.loads(leaf)
    assert isinstance(value, dict)
    return value


def sslib_key(key: SigningKey) -> SSlibKey:
    return SSlibKey.from_crypto(key.private.public_key(), keyid=key.public.keyid)


# --------------------------------------------------------------------------- golden vectors


def test_seed_gives_the_vector_public_key_and_keyid() -> None:
    assert KEY.public.b64 == VECTORS["public_key_b64"]
    assert KEY.public.keyid == VECTORS["keyid"]
    assert PublicKey.from_b64(VECTORS["public_key_b64"]) == KEY.public


def test_key_entry_body_gives_the_vector_payload_pae_and_leaf() -> None:
    body = VECTORS["key_entry_body"]
    leaf = sign_entry(body, KEY)
    assert leaf == VECTORS["leaf"].encode("utf-8")
    assert hashlib.sha256(b"\x00" + leaf).hexdigest() == VECTORS["leaf_hash"]
    envelope = parse_envelope(leaf)
    assert envelope.payload == VECTORS["payload_jcs"].encode("utf-8")
    assert pae(PAYLOAD_TYPE, envelope.payload).hex() == VECTORS["pae_hex"]
    assert envelope_dict(leaf) == VECTORS["envelope"]
    assert envelope.body() == body
    assert envelope.signer == VECTORS["keyid"]
    verify_envelope(envelope, KEY.public)


def test_tree_head_vector_note_and_vkey() -> None:
    vector = VECTORS["tree_head"]
    head = TreeHead(vector["origin"], vector["size"], bytes.fromhex(vector["root"]))
    assert sign_tree_head(head, KEY) == vector["note"]
    assert vkey(vector["origin"], KEY.public) == vector["vkey"]
    assert verify_tree_head(vector["note"], vector["vkey"]) == head
    assert verify_tree_head(vector["note"], (vector["origin"], KEY.public)) == head
    opened, signatures = open_signed_note(vector["note"])
    assert opened == head
    name, key_id, signature = signatures[0]
    assert (name, key_id.hex()) == (vector["origin"], vector["vkey"].split("+")[1])
    assert KEY.public.verify(signature, format_tree_head(head).encode())
    assert head.root_hex == vector["root"] == VECTORS["leaf_hash"]


def test_pae_matches_the_dsse_spec_example() -> None:
    # The DSSE protocol document's worked example.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


# --------------------------------------------------------------------------- securesystemslib


def test_securesystemslib_verifies_our_envelope() -> None:
    leaf = sign_entry(VECTORS["key_entry_body"], KEY)
    theirs = SslibEnvelope.from_dict(envelope_dict(leaf))
    assert theirs.payload_type == PAYLOAD_TYPE
    assert theirs.pae() == pae(PAYLOAD_TYPE, parse_envelope(leaf).payload)
    accepted = theirs.verify([sslib_key(KEY)], 1)
    assert list(accepted) == [KEY.public.keyid]


def test_securesystemslib_rejects_our_envelope_under_another_key_or_tampered() -> None:
    leaf = sign_entry(VECTORS["key_entry_body"], KEY)
    impostor = SSlibKey.from_crypto(OTHER_KEY.private.public_key(), keyid=KEY.public.keyid)
    with pytest.raises(SslibVerificationError):
        SslibEnvelope.from_dict(envelope_dict(leaf)).verify([impostor], 1)
    doc = envelope_dict(leaf)
    doc["payload"] = base64.b64encode(b'{"kind":"key"}').decode()
    with pytest.raises(SslibVerificationError):
        SslibEnvelope.from_dict(doc).verify([sslib_key(KEY)], 1)


@FAST
@given(body=bodies)
def test_we_verify_securesystemslib_signed_envelopes(body: dict[str, Any]) -> None:
    payload = rfc8785.dumps(body)  # independent JCS
    theirs = SslibEnvelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
    theirs.sign(CryptoSigner(KEY.private, sslib_key(KEY)))
    leaf = rfc8785.dumps(theirs.to_dict())
    envelope = parse_envelope(leaf)
    verify_envelope(envelope, KEY.public)
    assert envelope.body() == body
    assert leaf == sign_entry(body, KEY)  # Ed25519 is deterministic


# --------------------------------------------------------------------------- envelopes


@FAST
@given(body=bodies)
def test_envelope_round_trip(body: dict[str, Any]) -> None:
    leaf = sign_entry(body, KEY)
    envelope = parse_envelope(leaf)
    assert format_envelope(envelope) == leaf
    assert envelope.body() == body
    assert envelope.payload == rfc8785.dumps(body)
    verify_envelope(envelope, KEY.public)
    with pytest.raises(VerificationError, match=OTHER_KEY.public.keyid):
        verify_envelope(envelope, OTHER_KEY.public)


@FAST
@given(data=st.data())
def test_any_single_byte_change_to_a_leaf_is_rejected(data: st.DataObject) -> None:
    leaf = bytearray(sign_entry(VECTORS["key_entry_body"], KEY))
    position = data.draw(st.integers(0, len(leaf) - 1))
    replacement = data.draw(st.integers(0, 255).filter(lambda b: b != leaf[position]))
    leaf[position] = replacement
    with pytest.raises(VerificationError):
        verify_envelope(parse_envelope(bytes(leaf)), KEY.public)


def _leaf_with(**changes: Any) -> bytes:
    doc = dict(VECTORS["envelope"])
    doc.update(changes)
    return rfc8785.dumps(doc)


NON_CANONICAL_LEAVES = {
    "whitespace": VECTORS["leaf"].replace(",", ", ").encode(),
    "keys_out_of_order": json.dumps(
        {k: VECTORS["envelope"][k] for k in ("signatures", "payload", "payloadType")},
        separators=(",", ":"),
    ).encode(),
    "escaped_slash": VECTORS["leaf"].replace("/", "\\/", 1).encode(),
    "trailing_newline": VECTORS["leaf"].encode() + b"\n",
    "wrong_payload_type": _leaf_with(payloadType="application/vnd.in-toto+json"),
    "extra_field": _leaf_with(extra=1),
    "payload_not_base64": _leaf_with(payload="not base64!"),
    "payload_non_canonical_base64": _leaf_with(payload=VECTORS["envelope"]["payload"][:-2] + "1="),
    "payload_not_jcs": _leaf_with(payload=base64.b64encode(b'{"v": 1, "kind": "key"}').decode()),
    "payload_an_array": _leaf_with(payload=base64.b64encode(b"[1]").decode()),
    "payload_not_json": _leaf_with(payload=base64.b64encode(b"{nope").decode()),
    "no_signatures": _leaf_with(signatures=[]),
    "signature_non_canonical_base64": _leaf_with(
        signatures=[
            {
                "keyid": VECTORS["keyid"],
                "sig": VECTORS["envelope"]["signatures"][0]["sig"][:-3] + "AB==",
            }
        ]
    ),
    "signature_wrong_length": _leaf_with(
        signatures=[{"keyid": VECTORS["keyid"], "sig": base64.b64encode(bytes(63)).decode()}]
    ),
    "keyid_uppercase": _leaf_with(
        signatures=[
            {"keyid": VECTORS["keyid"].upper(), "sig": VECTORS["envelope"]["signatures"][0]["sig"]}
        ]
    ),
    "duplicate_keyid": _leaf_with(signatures=VECTORS["envelope"]["signatures"] * 2),
    "not_utf8": b"\xff" + VECTORS["leaf"].encode(),
    "not_an_object": b"[]",
}


@pytest.mark.parametrize("defect", sorted(NON_CANONICAL_LEAVES))
def test_non_canonical_leaves_are_rejected(defect: str) -> None:
    with pytest.raises(VerificationError, match="not a canonical DSSE envelope"):
        parse_envelope(NON_CANONICAL_LEAVES[defect])


def test_parse_envelope_names_the_entry_index() -> None:
    with pytest.raises(VerificationError, match="^entry 7: ") as caught:
        parse_envelope(b"{}", index=7)
    assert caught.value.index == 7


def test_bad_signature_is_rejected_with_the_keyid() -> None:
    envelope = parse_envelope(sign_entry({"kind": "call"}, KEY))
    ((keyid, _sig),) = envelope.signatures
    forged = Envelope(envelope.payload, envelope.payload_type, ((keyid, bytes(64)),))
    with pytest.raises(VerificationError, match=f"by key {keyid} does not verify") as caught:
        verify_envelope(forged, KEY.public, index=3)
    assert caught.value.index == 3
    swapped = Envelope(b'{"kind":"batch"}', envelope.payload_type, envelope.signatures)
    with pytest.raises(VerificationError):
        verify_envelope(swapped, KEY.public)


# --------------------------------------------------------------------------- keys


def test_public_key_rejects_bad_input() -> None:
    for text in [
        "",
        "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg",
        "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbh=",
        base64.b64encode(bytes(31)).decode(),
        "!!!!",
        "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=\n",
    ]:
        with pytest.raises(InputError):
            PublicKey.from_b64(text)
    with pytest.raises(InputError, match="32-byte"):
        PublicKey(bytes(33))
    with pytest.raises(InputError):
        SigningKey.from_seed(bytes(31))


@FAST
@given(seed=seeds, message=st.binary(max_size=64))
def test_sign_and_verify_agree_with_cryptography(seed: bytes, message: bytes) -> None:
    key = SigningKey.from_seed(seed)
    signature = key.sign(message)
    reference = Ed25519PrivateKey.from_private_bytes(seed)
    assert signature == reference.sign(message)
    assert key.public.verify(signature, message)
    assert not key.public.verify(signature, message + b"x")
    assert not key.public.verify(signature[:-1], message)
    assert PublicKey.from_b64(key.public.b64) == key.public


def test_signing_key_repr_and_equality_hide_the_private_key() -> None:
    assert SEED.hex() not in repr(KEY) and "private" not in repr(KEY)
    assert SigningKey.from_seed(SEED) == KEY
    assert SigningKey.generate() != SigningKey.generate()


# --------------------------------------------------------------------------- key files


def _secret_forms(key: SigningKey) -> list[str]:
    raw = key.private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return [raw.hex(), base64.b64encode(raw).decode(), "PRIVATE KEY-----", "MC4CAQAw"]


def test_key_file_round_trip_mode_0600_even_with_umask_0(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "nested" / "log.pem"
    old = os.umask(0)
    try:
        write_key_file(path, KEY)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert sorted(p.name for p in path.parent.iterdir()) == ["log.pem"]  # no temp file left
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_key_file(path)
    assert loaded == KEY
    assert KEY.public.verify(loaded.sign(b"m"), b"m")


def test_passphrase_round_trip_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.pem"
    write_key_file(path, KEY, passphrase="correct horse")
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    monkeypatch.delenv("LEDGER_PASSPHRASE", raising=False)
    assert load_key_file(path, "correct horse") == KEY
    with pytest.raises(KeyFileError, match="encrypted"):
        load_key_file(path)
    monkeypatch.setenv("LEDGER_PASSPHRASE", "correct horse")
    assert load_key_file(path) == KEY
    # An unencrypted key loads even when a passphrase is around (e.g. set for another key).
    plain = tmp_path / "plain.pem"
    write_key_file(plain, OTHER_KEY)
    assert load_key_file(plain) == OTHER_KEY


def test_wrong_passphrase_is_one_line_without_key_material(tmp_path: Path) -> None:
    path = tmp_path / "log.pem"
    write_key_file(path, KEY, passphrase="correct horse")
    with pytest.raises(KeyFileError) as caught:
        load_key_file(path, "battery staple")
    message = str(caught.value)
    assert str(path) in message and "passphrase" in message and "\n" not in message
    for secret in [*_secret_forms(KEY), "correct horse", "battery staple"]:
        assert secret not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "log.pem"
    write_key_file(path, KEY)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_file(path, OTHER_KEY)
    assert path.read_bytes() == before
    link = tmp_path / "dangling.pem"
    link.symlink_to(tmp_path / "nowhere.pem")
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_file(link, OTHER_KEY)
    assert not (tmp_path / "nowhere.pem").exists()
    with pytest.raises(UsageError):
        write_key_file(tmp_path / "empty.pem", KEY, passphrase="")


def _pem(private: Any) -> bytes:
    return private.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    ("defect", "content", "expected"),
    [
        ("ec_key", _pem(ec.generate_private_key(ec.SECP256R1())), "Ed25519"),
        ("ed448_key", _pem(Ed448PrivateKey.generate()), "Ed25519"),
        ("garbage", b"hello\n", "Ed25519 PKCS#8 PEM"),
        ("truncated_pem", _pem(KEY.private)[:60], "Ed25519 PKCS#8 PEM"),
        ("empty", b"", "Ed25519 PKCS#8 PEM"),
    ],
)
def test_load_rejects_files_that_are_not_ed25519_keys(
    tmp_path: Path, defect: str, content: bytes, expected: str
) -> None:
    path = tmp_path / f"{defect}.pem"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=expected) as caught:
        load_key_file(path)
    assert str(path) in str(caught.value)


def test_load_reports_missing_unreadable_and_loose_permissions(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not found"):
        load_key_file(tmp_path / "absent.pem")
    with pytest.raises(KeyFileError, match="regular"):
        load_key_file(tmp_path)
    loose = tmp_path / "loose.pem"
    loose.write_bytes(_pem(KEY.private))
    loose.chmod(0o644)
    with pytest.raises(KeyFileError, match="0644.*chmod 600") as caught:
        load_key_file(loose)
    for secret in _secret_forms(KEY):
        assert secret not in str(caught.value)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.pem"
        locked.write_bytes(_pem(KEY.private))
        locked.chmod(0o000)
        with pytest.raises(KeyFileError, match="cannot read"):
            load_key_file(locked)


def test_all_key_file_errors_are_ledger_errors() -> None:
    assert issubclass(KeyFileError, LedgerError)


# --------------------------------------------------------------------------- signed notes


def test_go_note_vectors_sign_and_verify() -> None:
    seed = base64.b64decode(GO_PETER_SKEY.split("+", 4)[4])[1:]
    peter = SigningKey.from_seed(seed)
    assert vkey("PeterNeumann", peter.public) == GO_PETER_VKEY
    assert sign_note(GO_TEXT, peter, "PeterNeumann") == GO_TEXT + "\n" + GO_PETER_SIG
    both = GO_TEXT + "\n" + GO_PETER_SIG + GO_ENOCH_SIG
    assert verify_note(both, GO_PETER_VKEY) == GO_TEXT  # Enoch's line ignored
    assert verify_note(both, GO_ENOCH_VKEY) == GO_TEXT
    with pytest.raises(VerificationError, match="EnochRoot\\+af0cfe78"):
        verify_note(GO_TEXT + "\n" + GO_PETER_SIG, GO_ENOCH_VKEY)


def test_go_note_invalid_and_malformed_messages() -> None:
    corrupt = GO_PETER_SIG[:60] + "ABCD" + GO_PETER_SIG[60:]
    with pytest.raises(VerificationError, match="does not verify"):
        verify_note(GO_TEXT + "\n" + corrupt, GO_PETER_VKEY)
    # A good and a bad line by the same key: reject the whole note, as Go does.
    with pytest.raises(VerificationError):
        verify_note(GO_TEXT + "\n" + GO_PETER_SIG + corrupt, GO_PETER_VKEY)
    malformed = [
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + GO_PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + GO_PETER_SIG,
        "\ud800" + GO_TEXT + "\n" + GO_PETER_SIG,
        GO_TEXT + "\n\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
        "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        GO_TEXT + "\n" + GO_PETER_SIG + "Unexpected line.\n",
        GO_TEXT + "\n" + GO_PETER_SIG * 101,
        GO_TEXT.replace("\n", "\r\n") + "\r\n" + GO_PETER_SIG,
    ]
    for note in malformed:
        with pytest.raises(InputError, match="expected a signed note"):
            verify_note(note, GO_PETER_VKEY)


def test_go_vkey_manglings_are_rejected() -> None:
    name, key_id, public = parse_vkey(GO_PETER_VKEY)
    assert (name, key_id.hex()) == ("PeterNeumann", "c74f20a3")
    assert vkey(name, public) == GO_PETER_VKEY
    assert parse_vkey(GO_PETER_VKEY + "\n") == (name, key_id, public)
    raw = GO_PETER_VKEY
    for i in range(len(raw) + 1):
        for j in range(i + 1, len(raw) + 1):
            if (i, j) != (0, len(raw)) and raw[i:j].strip() != raw:
                with pytest.raises(InputError):
                    parse_vkey(raw[i:j])
    for i in range(len(raw)):
        mangled = raw[:i] + chr(ord(raw[i]) + 1) + raw[i + 1 :]
        with pytest.raises(InputError):
            parse_vkey(mangled)
    # Go's own fixtures: wrong key length and unknown algorithm, each with an adjusted key hash.
    for bad in [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ]:
        with pytest.raises(InputError):
            parse_vkey(bad)


@pytest.mark.parametrize(("note", "size"), SUMDB_HEADS)
def test_real_sum_golang_org_tree_heads_verify(note: str, size: int) -> None:
    head = verify_tree_head(note, SUMDB_VKEY, origin=SUMDB_ORIGIN)
    assert (head.origin, head.size) == (SUMDB_ORIGIN, size)
    assert format_tree_head(head) == note.split("\n\n")[0] + "\n"
    # By default the origin must be the key name, which is not Go's convention.
    with pytest.raises(VerificationError, match="origin"):
        verify_tree_head(note, SUMDB_VKEY)
    tampered = note.replace(f"\n{size}\n", f"\n{size + 1}\n")
    with pytest.raises(VerificationError):
        verify_tree_head(tampered, SUMDB_VKEY, origin=SUMDB_ORIGIN)


@FAST
@given(origin=key_names, size=sizes, root=roots, seed=seeds)
def test_tree_head_round_trips(origin: str, size: int, root: bytes, seed: bytes) -> None:
    head = TreeHead(origin, size, root)
    text = format_tree_head(head)
    assert parse_tree_head(text) == head
    key = SigningKey.from_seed(seed)
    note = sign_tree_head(head, key)
    assert note.startswith(text + "\n\u2014 " + origin + " ")
    assert verify_tree_head(note, vkey(origin, key.public)) == head
    opened, signatures = open_signed_note(note)
    assert opened == head
    assert [(n, k) for n, k, _ in signatures] == [(origin, note_key_id(origin, key.public))]
    expected_id = hashlib.sha256(origin.encode() + b"\n\x01" + key.public.raw).digest()[:4]
    assert note_key_id(origin, key.public) == expected_id


@FAST
@given(name=key_names, seed=seeds)
def test_vkey_round_trips(name: str, seed: bytes) -> None:
    public = SigningKey.from_seed(seed).public
    text = vkey(name, public)
    assert parse_vkey(text) == (name, note_key_id(name, public), public)
    prefix, key_id, data = text.split("+", 2)
    assert (prefix, base64.b64decode(data)) == (name, b"\x01" + public.raw)
    assert key_id == note_key_id(name, public).hex()


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=6))
def test_key_name_rule_matches_the_spec(name: str) -> None:
    assert is_valid_key_name(name) == spec_valid_name(name)


@FAST
@given(data=st.data())
def test_any_single_character_change_to_a_note_is_rejected(data: st.DataObject) -> None:
    note = VECTORS["tree_head"]["note"]
    position = data.draw(st.integers(0, len(note) - 1))
    replacement = data.draw(
        st.sampled_from("AaZz09+/=\n \u2014.-x").filter(lambda ch: ch != note[position])
    )
    mutated = note[:position] + replacement + note[position + 1 :]
    with pytest.raises((VerificationError, InputError)):
        verify_tree_head(mutated, VECTORS["tree_head"]["vkey"])


def test_witness_cosignatures_and_rotated_keys() -> None:
    vector = VECTORS["tree_head"]
    note = vector["note"]
    text = note.split("\n\n")[0] + "\n"
    witness = sign_note(text, OTHER_KEY, "witness.example/w1").split("\n\n")[1]
    cosigned = note + witness
    head = verify_tree_head(cosigned, vector["vkey"])
    assert head.size == vector["size"]
    assert len(open_signed_note(cosigned)[1]) == 2
    assert verify_note(cosigned, vkey("witness.example/w1", OTHER_KEY.public)) == text
    # The same name with another key: ignored, then reported as missing with a hint.
    rotated = sign_tree_head(parse_tree_head(text), OTHER_KEY)
    with pytest.raises(VerificationError, match=f"{vector['vkey'].split('+')[1]}.*rotated"):
        verify_tree_head(rotated, vector["vkey"])
    # A non-canonical spelling of our own signature is refused.
    sig_b64 = note.rsplit(" ", 1)[1].strip()
    respelled = note.replace(sig_b64, sig_b64[:-2] + chr(ord(sig_b64[-2]) + 1) + "=")
    assert base64.b64decode(sig_b64[:-2] + chr(ord(sig_b64[-2]) + 1) + "=") == base64.b64decode(
        sig_b64
    )
    with pytest.raises(VerificationError, match="canonical"):
        verify_tree_head(respelled, vector["vkey"])


def test_origin_must_match_the_key_name_unless_given() -> None:
    head = TreeHead("ledger.example/other", 3, bytes(32))
    note = sign_note(format_tree_head(head), KEY, "ledger.example/vectors")
    verifier = vkey("ledger.example/vectors", KEY.public)
    with pytest.raises(VerificationError, match="expected a tree head for origin"):
        verify_tree_head(note, verifier)
    assert verify_tree_head(note, verifier, origin="ledger.example/other") == head


MALFORMED_TREE_HEADS = {
    "no_final_newline": "o\n1\n" + base64.b64encode(bytes(32)).decode(),
    "leading_zero": "o\n01\n" + base64.b64encode(bytes(32)).decode() + "\n",
    "plus_sign": "o\n+1\n" + base64.b64encode(bytes(32)).decode() + "\n",
    "negative": "o\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n",
    "unicode_digit": "o\n\uff11\n" + base64.b64encode(bytes(32)).decode() + "\n",
    "space_in_size": "o\n 1\n" + base64.b64encode(bytes(32)).decode() + "\n",
    "too_big": f"o\n{2**63}\n" + base64.b64encode(bytes(32)).decode() + "\n",
    "extension_line": "o\n1\n" + base64.b64encode(bytes(32)).decode() + "\next\n",
    "two_lines": "o\n1\n",
    "empty_origin": "\n1\n" + base64.b64encode(bytes(32)).decode() + "\n",
    "short_root": "o\n1\n" + base64.b64encode(bytes(31)).decode() + "\n",
    "non_canonical_root": "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n",
    "hex_root": "o\n1\n" + bytes(32).hex() + "\n",
}


@pytest.mark.parametrize("defect", sorted(MALFORMED_TREE_HEADS))
def test_malformed_tree_heads_are_rejected(defect: str) -> None:
    with pytest.raises(InputError, match="tree head"):
        parse_tree_head(MALFORMED_TREE_HEADS[defect])


def test_tree_head_values_are_validated() -> None:
    for origin, size, root in [
        ("", 1, bytes(32)),
        ("a\nb", 1, bytes(32)),
        ("o", -1, bytes(32)),
        ("o", 2**63, bytes(32)),
        ("o", 1, bytes(31)),
        ("o", True, bytes(32)),
    ]:
        with pytest.raises(InputError):
            TreeHead(origin, size, root)
    head = TreeHead("has space", 0, bytes(32))  # a legal origin, but not a key name
    with pytest.raises(UsageError):
        sign_tree_head(head, KEY)
    with pytest.raises(UsageError):
        vkey("a+b", KEY.public)


# --------------------------------------------------------------------------- arbitrary input

note_like = st.lists(
    st.sampled_from(["o", "1", "0", "01", "A" * 43 + "=", "", "\u2014 o ", "\u2014 ", "x+y", " "])
    | st.text(max_size=12),
    max_size=8,
).map("\n".join)


@FAST
@given(text=note_like)
def test_parse_tree_head_accepts_only_what_format_writes(text: str) -> None:
    try:
        head = parse_tree_head(text)
    except InputError:
        return
    assert format_tree_head(head) == text


@FAST
@given(note=note_like)
def test_arbitrary_notes_fail_only_with_ledger_errors(note: str) -> None:
    with pytest.raises((InputError, VerificationError)):
        verify_tree_head(note, VECTORS["tree_head"]["vkey"])
    try:
        open_signed_note(note)
    except InputError:
        pass


@FAST
@given(leaf=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_leaves_fail_only_with_verification_errors(leaf: bytes) -> None:
    with pytest.raises(VerificationError, match="not a canonical DSSE envelope"):
        parse_envelope(leaf)


@FAST
@given(text=st.text(max_size=120))
def test_arbitrary_vkeys_fail_only_with_input_errors(text: str) -> None:
    with pytest.raises(InputError):
        parse_vkey(text)
