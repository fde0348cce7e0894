"""Audit bundles: built from real audits, verified offline, re-checked by independent tools, and attacked.

Independent checks use only the fixed formats: a transcription of RFC 9162's inclusion-proof check,
securesystemslib for the DSSE envelopes, and `cryptography` for the signed note. Exported record leaves
are rebuilt from the story's raw records with rfc8785 (tests/audit_scenarios.py).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from audit_scenarios import (
    CLEAN_TEXTS,
    VERIFIER_SECRET,
    Story,
    in_process,
    ref_record_leaf,
    shared_story,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]

from ledger.audit.run import audit
from ledger.bundle.build import build_bundle
from ledger.bundle.export import export_records
from ledger.bundle.verify import load_bundle, verify_bundle
from ledger.errors import InputError
from ledger.spec import keys
from ledger.spec import note as note_spec

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
LEDGER = str(Path(sys.executable).with_name("ledger"))


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    return shared_story(tmp_path_factory)


@pytest.fixture(scope="module")
def vkey(story: Story) -> str:
    lg = story.ledger()
    return lg.export_key("log").vkey(lg.origin)


@pytest.fixture(scope="module")
def bundles(story: Story) -> dict[str, dict[str, Any]]:
    lg = story.ledger()
    return {
        name: build_bundle(lg, audit(lg, name))
        for name in ("c3", "clean-ckpt", "student", "masked-ckpt")
    }


def problems(bundle: dict[str, Any], vkey: str, **kwargs: Any) -> list[str]:
    report = verify_bundle(bundle, vkey, **kwargs)
    return [f"{p.where}: {p.what}" for p in report.problems]


# --- independent re-checks ----------------------------------------------------------------------------


def rfc9162_verify_inclusion(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, transcribed."""
    if index >= size:
        return False
    fn, sn = index, size - 1
    r = hashlib.sha256(b"\x00" + leaf).digest()
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def open_note(note: str, vkey: str) -> tuple[int, bytes]:
    """Check a C2SP signed tree head with `cryptography` alone; return (size, root)."""
    name, key_hash, key_b64 = vkey.split("+", 2)
    key = base64.b64decode(key_b64)
    assert key[0] == 1
    text, _, signatures = note.partition("\n\n")
    text += "\n"
    (line,) = signatures.strip("\n").split("\n")
    assert line.startswith(f"\u2014 {name} ")
    raw = base64.b64decode(line.rsplit(" ", 1)[1])
    assert raw[:4].hex() == key_hash
    Ed25519PublicKey.from_public_bytes(key[1:]).verify(raw[4:], text.encode())
    origin, size, root_b64 = text.rstrip("\n").split("\n")
    assert origin == name
    return int(size), base64.b64decode(root_b64)


def test_contaminated_bundle_verifies_and_independent_tools_agree(
    bundles: dict[str, Any], vkey: str, story: Story
) -> None:
    bundle = bundles["c3"]
    jsonschema.validate(bundle, json.loads((SCHEMAS / "audit-bundle.schema.json").read_text()))
    report = verify_bundle(bundle, vkey)
    assert report.ok, report.problems
    assert report.verdict == "contaminated" and report.checkpoint == "c3"

    size, root = open_note(bundle["tree_head"], vkey)
    keys_by_id = {k["keyid"]: k for k in bundle["keys"]}
    indexes = {e["index"] for e in bundle["entries"]}
    assert {story.eval_call, story.batches["early"], *story.checkpoints.values()} >= {
        story.checkpoints["c3"]
    }
    assert {story.eval_call, story.batches["early"], story.checkpoints["base"]} <= indexes
    for item in bundle["entries"]:
        leaf = base64.b64decode(item["leaf"])
        proof = [bytes.fromhex(p) for p in item["proof"]]
        assert rfc9162_verify_inclusion(leaf, item["index"], size, proof, root)
        envelope = SslibEnvelope.from_dict(json.loads(leaf))
        (signature,) = envelope.signatures.values()
        key = keys_by_id[signature.keyid]
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"]))
        assert list(envelope.verify([SSlibKey.from_crypto(public, keyid=key["keyid"])], 1)) == [
            key["keyid"]
        ]

    bodies = {e["index"]: json.loads(base64.b64decode(json.loads(base64.b64decode(e["leaf"]))["payload"]))
              for e in bundle["entries"]}  # fmt: skip
    (record,) = bundle["records"]
    batch = bodies[record["batch"]]
    leaf = base64.b64decode(record["leaf"])
    assert leaf == ref_record_leaf(story.records["early"][2])
    assert rfc9162_verify_inclusion(
        leaf, record["position"], batch["count"], [bytes.fromhex(p) for p in record["proof"]],
        bytes.fromhex(batch["records_root"]),
    )  # fmt: skip
    exact = [f for f in bundle["findings"] if f["type"] == "exact"]
    assert exact and all(f["segment"] in bodies[f["call"]]["outputs"] for f in exact)
    assert all(f["segment"] in json.loads(leaf)["segments"] for f in exact)


def test_declared_near_and_clean_bundles_verify(bundles: dict[str, Any], vkey: str) -> None:
    for name, verdict in (
        ("student", "contaminated"),
        ("masked-ckpt", "suspect"),
        ("clean-ckpt", "clean"),
    ):
        report = verify_bundle(bundles[name], vkey)
        assert report.ok, (name, report.problems)
        assert report.verdict == verdict
    near_records = bundles["masked-ckpt"]["records"]
    assert near_records and all("fingerprint" in r for r in near_records)


def test_bundles_never_import_duckdb(bundles: dict[str, Any], vkey: str, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(bundles["masked-ckpt"]))
    code = (
        "import sys; sys.modules['duckdb'] = None\n"
        "from ledger.bundle.verify import load_bundle, verify_bundle\n"
        f"r = verify_bundle(load_bundle({str(path)!r}), {vkey!r})\n"
        "assert r.ok, r.problems; print(r.verdict)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "suspect"


# --- tampering ---------------------------------------------------------------------------------------


def test_claims_that_do_not_follow_are_refused(bundles: dict[str, Any], vkey: str) -> None:
    student = copy.deepcopy(bundles["student"])
    student["findings"] = []
    student["verdict"] = "clean"
    found = problems(student, vkey)
    assert any("declares call" in p for p in found)

    c3 = copy.deepcopy(bundles["c3"])
    c3["verdict"] = "clean"
    assert any("expected contaminated" in p for p in problems(c3, vkey))

    c3 = copy.deepcopy(bundles["c3"])
    c3["findings"][0]["purpose"] = "training-data"
    assert any("expected purpose 'evaluation'" in p for p in problems(c3, vkey))

    c3 = copy.deepcopy(bundles["c3"])
    early = next(e for e in c3["entries"] if e["index"] == c3["records"][0]["batch"])
    c3["entries"].remove(early)  # hide the batch that carries the evidence
    assert problems(c3, vkey)

    masked = copy.deepcopy(bundles["masked-ckpt"])
    masked["findings"][0]["similarity"] = 0.99
    assert any("recomputed from the proven fingerprints" in p for p in problems(masked, vkey))


def test_wrong_key_fails_at_the_tree_head(bundles: dict[str, Any], story: Story) -> None:
    other = note_spec.vkey("audit.test/log", keys.SigningKey.generate().public)
    found = problems(bundles["c3"], other)
    assert len(found) == 1 and found[0].startswith("tree_head:")


def compact(bundle: dict[str, Any]) -> bytes:
    return (json.dumps(bundle, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def regions(raw: bytes, bundle: dict[str, Any]) -> list[tuple[int, int]]:
    """Byte ranges of the parts whose every byte is checked: head, keys, entries, records, findings, verdict."""
    text = raw.decode()
    out = []
    for key in ("tree_head", "keys", "entries", "records", "findings", "verdict", "checkpoint"):
        value = json.dumps(bundle[key], separators=(",", ":"), ensure_ascii=False)
        start = len(text[: text.index(f'"{key}":' + value)].encode())
        out.append((start, start + len(f'"{key}":'.encode() + value.encode())))
    return out


@settings(
    max_examples=int(os.environ.get("FLIP_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_flipped_byte_in_the_evidence_is_caught(
    bundles: dict[str, Any], vkey: str, data: st.DataObject
) -> None:
    bundle = bundles["masked-ckpt"] if data.draw(st.booleans()) else bundles["c3"]
    raw = compact(bundle)
    start, end = data.draw(st.sampled_from(regions(raw, bundle)))
    position = data.draw(st.integers(start, end - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != raw[position]))
    flipped = raw[:position] + bytes([value]) + raw[position + 1 :]
    try:
        document = json.loads(flipped.decode())
    except (UnicodeDecodeError, ValueError):
        return  # not JSON: `load_bundle` refuses it as unusable input and the CLI exits 4
    assert not verify_bundle(document, vkey).ok, (
        position,
        raw[position - 20 : position + 20],
        value,
    )


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # os.environ, not the C environment: an imported `readline` exports COLUMNS=80 there, which would
    # bound the piped output's width and fold the messages these tests read.
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [LEDGER, *args], capture_output=True, text=True, check=False, timeout=120, env=env
    )


def test_cli_one_flipped_byte_exits_1(bundles: dict[str, Any], vkey: str, tmp_path: Path) -> None:
    (tmp_path / "lab.vkey").write_text(vkey + "\n")
    raw = compact(bundles["c3"])
    intact = tmp_path / "intact.json"
    intact.write_bytes(raw)
    good = in_process("verify-bundle", str(intact), "--key", str(tmp_path / "lab.vkey"), "--json")
    assert good.returncode == 0, good.stdout + good.stderr
    jsonschema.validate(
        json.loads(good.stdout), json.loads((SCHEMAS / "verify-bundle.schema.json").read_text())
    )
    leaf = bundles["c3"]["entries"][3]["leaf"]
    at = raw.index(leaf.encode()) + len(leaf) // 2
    flipped = tmp_path / "flipped.json"
    flipped.write_bytes(raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :])
    bad = run("verify-bundle", str(flipped), "--key", vkey)
    assert bad.returncode == 1
    assert "BUNDLE DOES NOT VERIFY" in bad.stdout
    broken = tmp_path / "broken.json"
    broken.write_bytes(raw[:10] + b"\xff" + raw[11:])
    assert (
        in_process("verify-bundle", str(broken), "--key", vkey).returncode == 4
    )  # not JSON: unusable


def test_not_json_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_bytes(b'{"format": "ledger.audit-bundle/v1", "entr')
    with pytest.raises(InputError, match="not valid JSON"):
        load_bundle(path)


# --- a clean verdict, checked against the verifier's own suspects -----------------------------------------


@pytest.fixture(scope="module")
def exported(story: Story, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    export_records(story.ledger(), out, "clean-ckpt")
    return out


def test_offline_verifier_modules_load_no_duckdb(
    bundles: dict[str, Any], vkey: str, exported: Path, tmp_path: Path
) -> None:
    """The offline verifier's rooms, the export reader and the suspects reader included, never load
    DuckDB: checked in a fresh interpreter after a full check with --records and --suspects."""
    bundle = tmp_path / "clean.json"
    bundle.write_bytes(compact(bundles["clean-ckpt"]))
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"text": VERIFIER_SECRET}) + "\n")
    code = (
        "import sys\n"
        "import ledger, ledger.bundle, ledger.bundle.verify, ledger.bundle.export, ledger.audit.inputs\n"
        "import ledger.spec.lineage, ledger.spec.rules\n"
        "from ledger.bundle.verify import load_bundle, verify_bundle\n"
        f"r = verify_bundle(load_bundle({str(bundle)!r}), {vkey!r}, records_dir={str(exported)!r}, "
        f"suspects={str(mine)!r})\n"
        "assert r.suspect_hits and not r.ok, r  # the export and the suspects were really read\n"
        "print(sorted(m for m in sys.modules if m == 'duckdb' or m.startswith('duckdb.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_clean_bundle_export_and_verifier_suspects(bundles: dict[str, Any], vkey: str, exported: Path,
                                                   tmp_path: Path) -> None:  # fmt: skip
    bundle = tmp_path / "clean.json"
    bundle.write_bytes(compact(bundles["clean-ckpt"]))
    mine = tmp_path / "mine.jsonl"
    mine.write_text(
        json.dumps({"text": "nothing like this was ever in the training data, surely"}) + "\n"
    )
    ok = in_process(
        "verify-bundle",
        str(bundle),
        "--key",
        vkey,
        "--records",
        str(exported),
        "--suspects",
        str(mine),
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    mine.write_text(json.dumps({"text": VERIFIER_SECRET}) + "\n")
    refuted = run(
        "verify-bundle",
        str(bundle),
        "--key",
        vkey,
        "--records",
        str(exported),
        "--suspects",
        str(mine),
    )
    assert refuted.returncode == 1
    assert "suspect #0" in refuted.stdout and "expected contaminated" in refuted.stdout.replace(
        "\n", " "
    )


def test_altered_exports_are_caught(
    bundles: dict[str, Any], vkey: str, exported: Path, tmp_path: Path
) -> None:
    table = pq.read_table(exported)
    rows = list(zip(*(table.column(c).to_pylist() for c in ("batch", "position", "leaf"))))
    assert [leaf for _, _, leaf in rows] == [ref_record_leaf(r) for r in shared_records(bundles)]

    def check(altered: list[tuple[int, int, bytes]]) -> list[str]:
        out = tmp_path / f"alt{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        pq.write_table(pa.table({"batch": pa.array([r[0] for r in altered], pa.int64()),
                                 "position": pa.array([r[1] for r in altered], pa.int64()),
                                 "leaf": pa.array([r[2] for r in altered], pa.binary())}), out / "r.parquet")  # fmt: skip
        return problems(bundles["clean-ckpt"], vkey, records_dir=out)

    assert check(rows) == []
    assert any("missing" in p for p in check(rows[:-1]))
    assert any("appears 2 times" in p for p in check([*rows, rows[0]]))
    assert any("extra row" in p for p in check([*rows, (rows[0][0], 99, rows[0][2])]))
    hidden = ref_record_leaf({"messages": [{"role": "user", "content": "x"}]})
    assert any("was altered" in p for p in check([rows[0], (rows[1][0], 1, hidden), rows[2]]))


def shared_records(bundles: dict[str, Any]) -> list[Any]:
    from audit_scenarios import chat_record

    return [chat_record("Say something plain.", t) for t in CLEAN_TEXTS[:3]]


def test_inconclusive_audit_still_gives_a_verifiable_bundle(
    story: Story, vkey: str, tmp_path: Path
) -> None:
    import duckdb

    private = story.copy(tmp_path / "copy")
    conn = duckdb.connect(str(private.path))
    conn.execute(
        f"DELETE FROM record_segments WHERE batch = {private.batches['early']} AND position = 2"
    )
    conn.close()
    lg = private.ledger()
    report = audit(lg, "c3")
    assert report.verdict == "inconclusive"
    bundle = build_bundle(lg, report)
    assert bundle["problems"]
    result = verify_bundle(bundle, vkey)
    assert result.ok and result.verdict == "inconclusive"
    # the evidence row is gone, but the record's committed fingerprint still resembles the call
    assert {(f.type, f.record) for f in report.findings if f.call == private.eval_call} == {
        ("near", 2)
    }
    bundle["problems"] = []  # a bundle that hides why it is inconclusive does not verify
    assert any(p.startswith("verdict: expected suspect") for p in problems(bundle, vkey))


def _signed_entries(*specs: tuple[dict[str, Any], Any]) -> dict[int, Any]:
    """Bundle entries at 0, 1, ...: each body signed by its key, as the offline verifier reads them."""
    from ledger.bundle.parts import BundleEntry
    from ledger.spec import entries as entry_bodies
    from ledger.spec import envelope as dsse

    out = {}
    for index, (body, key) in enumerate(specs):
        leaf = dsse.sign_entry(body, key)
        env = dsse.parse_envelope(leaf)
        out[index] = BundleEntry(
            index, leaf, body, env.signatures[0][0], env, entry_bodies.typed(body, index)
        )
    return out


def test_bundle_signatures_follow_the_one_key_ring() -> None:
    """Revoked signers, a recorder signing a key entry, an unknown signer, a forged signature and a tree
    head key that is no log key: each named, with the key ring the log and `verify` replay."""
    from ledger.bundle.parts import Problems
    from ledger.bundle.signatures import check_signatures
    from ledger.spec import entries as entry_bodies

    log, rec, stranger = (
        keys.SigningKey.generate(),
        keys.SigningKey.generate(),
        keys.SigningKey.generate(),
    )

    def key(k: Any, name: str, role: str) -> dict[str, Any]:
        return entry_bodies.key_body(k.public.keyid, k.public.b64, name, role)

    batch = entry_bodies.batch_body(id="b", count=0, records_root="ab" * 32)
    found = _signed_entries(
        (key(log, "origin", "log"), log),
        (key(rec, "trainer", "recorder"), log),
        (batch, rec),  # fine
        (entry_bodies.revoke_body(rec.public.keyid, "lost"), log),
        (batch, rec),  # after its key was revoked
        (key(stranger, "x", "recorder"), rec),  # revoked and not a log key
        (batch, stranger),  # introduced at 5 by a key that may not: still introduced
        (batch, keys.SigningKey.generate()),  # never introduced
    )
    forged = found[2]
    other = _signed_entries((batch, stranger))[0]
    found[2] = type(forged)(
        2, forged.leaf, forged.body, forged.signer, other.envelope, forged.typed
    )
    problems = Problems()
    check_signatures(found, note_spec.vkey("origin", rec.public), problems)
    said = [(p.where, p.what) for p in problems.items]
    short = rec.public.keyid[:16]
    assert ("entry 4", f"signed by key {short}…, revoked at entry 3") in said
    assert ("entry 5", f"signed by key {short}…, revoked at entry 3") in said
    assert ("entry 5", "a key entry must be signed by a log key, found a recorder key") in said
    assert any(
        w == "entry 7" and "no earlier key entry in the bundle introduces" in t for w, t in said
    )
    assert any(w == "entry 2" for w, _ in said)  # the envelope is not the signer's
    assert not any(w in ("entry 0", "entry 1", "entry 3", "entry 6") for w, _ in said)
    assert said[-1] == (
        "keys",
        "the tree head's key is not a log key that the bundle's key entries introduce",
    )
