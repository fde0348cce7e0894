"""Full-log verification against real DuckDB ledgers tampered with raw SQL.

Each tamper test starts from a copy of one intact ledger (keys, calls, a batch with its record set, a
checkpoint, a revocation, a log key rotation), edits the file with plain `duckdb.connect`, and checks that
`verify_ledger` names the defect and the entry index. Record leaves and roots are checked against an
independent implementation written here (rfc8785 for JCS, a naive recursive RFC 6962 tree) and the
conformance vectors, never against values our own code produced.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import Ledger
from ledger.errors import InputError, LockedError, NotFoundError, VerificationError
from ledger.log import keyfiles, store
from ledger.log.verify import Problem, VerifyReport, check_record_set, record_leaves, verify_ledger
from ledger.log.verify import records as verify_records
from ledger.log.verify import report as verify_report
from ledger.log.verify import scan as verify_scan
from ledger.log.verify.rebuild import build_chunk, repeated_root
from ledger.spec import entries, jcs, keys
from ledger.spec import envelope as envelope_spec
from ledger.spec import note as note_spec

CONFORMANCE = json.loads((Path(__file__).parent / "conformance.json").read_text())
ORIGIN = "verify.test/log"

# --- an independent reference (DESIGN.md "Hashing (fixed)", RFC 6962 §2.1) ---------------------------


def ref_mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle Tree Hash, straight from the recursive definition."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_record_leaf(digest: bytes, segments: Sequence[bytes]) -> bytes:
    return rfc8785.dumps(
        {"sha256": digest.hex(), "segments": sorted(s.hex() for s in set(segments))}
    )


@dataclass(frozen=True)
class Rec:
    digest: bytes
    segments: tuple[bytes, ...]
    fingerprint: bytes


def make_records(seed: int, count: int) -> list[Rec]:
    rng = random.Random(seed)
    return [
        Rec(
            rng.randbytes(32),
            tuple(rng.randbytes(32) for _ in range(rng.randrange(0, 5))),
            rng.randbytes(rng.choice([0, 16, 40])),
        )
        for _ in range(count)
    ]


def insert_records(
    conn: duckdb.DuckDBPyConnection, batch: int, records: Sequence[Rec], shuffle: int | None = None
) -> None:
    rows = [(batch, p, r.digest, r.fingerprint) for p, r in enumerate(records)]
    segs = [(batch, p, s) for p, r in enumerate(records) for s in r.segments]
    if shuffle is not None:
        random.Random(shuffle).shuffle(rows)
        random.Random(shuffle).shuffle(segs)
    for table, values, names in (
        ("records", rows, ("batch", "position", "digest", "fingerprint")),
        ("record_segments", segs, ("batch", "position", "segment")),
    ):
        if values:
            columns = list(zip(*values, strict=True))
            arrow = pa.table({n: pa.array(c) for n, c in zip(names, columns, strict=True)})
            conn.register("new_rows", arrow)
            conn.execute(f"INSERT INTO {table} SELECT * FROM new_rows")
            conn.unregister("new_rows")


def batch_body(batch_id: str, records: Sequence[Rec], **extra: Any) -> dict[str, Any]:
    root = ref_mth([ref_record_leaf(r.digest, r.segments) for r in records]).hex()
    fp_root = ref_mth([r.fingerprint for r in records]).hex()
    return entries.batch_body(
        id=batch_id,
        count=len(records),
        records_root=root,
        fingerprints={"params": {"scheme": "test"}, "root": fp_root},
        **extra,
    )


def call(i: int, provider: str = "openai") -> dict[str, Any]:
    return entries.call_body(
        provider=provider,
        model="gpt-x",
        endpoint="/v1/chat/completions",
        purpose="evaluation",
        request=hashlib.sha256(b"q%d" % i).hexdigest(),
        response=hashlib.sha256(b"r%d" % i).hexdigest(),
        outputs=[hashlib.sha256(b"o%d" % i).hexdigest()],
        external_id=f"chatcmpl-{i}",
    )


# --- fixtures -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    path: Path
    batch: int  # index of the batch entry with records
    records: list[Rec]
    size: int


def _build(base: Path) -> Built:
    path = base / "ledger.duckdb"
    lg = Ledger.init(
        path, origin=ORIGIN
    )  # 0: log key, 1: the `default` recorder key ("alice" below)
    alice = Ledger.open(path)
    alice.append_bodies([call(i) for i in range(3)])  # 2, 3, 4
    records = make_records(1, 23)
    batch = alice.append_bodies([batch_body("run/b0", records, derived_from=[2])]).start  # 5
    alice.append_bodies([batch_body("run/empty", [])])  # 6
    with duckdb.connect(str(path)) as conn:
        insert_records(conn, batch, records, shuffle=7)
    alice.append_bodies(
        [
            entries.checkpoint_body(
                id="ckpt-1",
                weights=[{"path": "m.safetensors", "sha256": "ab" * 32}],
                batches=["run/b0"],
                teachers=[{"provider": "openai", "model": "gpt-x"}],
            )
        ]
    )  # 7
    lg.new_key("bob")  # 8
    lg.revoke_key("bob", "left")  # 9
    lg.rotate_key("log")  # 10 key, 11 revoke
    alice.append_bodies([call(10)])  # 12
    return Built(path, batch, records, 13)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return _build(tmp_path_factory.mktemp("intact"))


@pytest.fixture
def ledger(built: Built, tmp_path: Path) -> Ledger:
    """A private copy of the intact ledger (file and key directory) to tamper with."""
    shutil.copy(built.path, tmp_path / "ledger.duckdb")
    shutil.copytree(built.path.with_name("ledger.keys"), tmp_path / "ledger.keys")
    return Ledger.open(tmp_path / "ledger.duckdb")


def sql(lg: Ledger, *statements: str) -> None:
    with duckdb.connect(str(lg.path)) as conn:
        for statement in statements:
            conn.execute(statement)


def problems_at(report: VerifyReport, index: int | None) -> list[str]:
    return [p.what for p in report.problems if p.index == index]


def assert_problem(report: VerifyReport, index: int | None, *words: str) -> None:
    assert not report.ok
    found = problems_at(report, index)
    assert any(all(w in what for w in words) for what in found), (index, words, report.problems)


def rogue_append(lg: Ledger, signed: Sequence[tuple[dict[str, Any], keys.SigningKey]]) -> int:
    """Append entries as a writer holding the log key would, bypassing the Ledger's own rules."""
    log_key = keyfiles.load_key_file(lg.keys_dir / "log.pem")
    conn = store.connect(lg.path)
    try:
        with store.transaction(conn):
            stored = store.head(conn)
            leaves = [envelope_spec.sign_entry(body, key) for body, key in signed]
            facts = [entries.facts_of(body) for body, _ in signed]
            signers = [key.public.keyid for _, key in signed]
            root = store.append_entries(conn, stored.size, leaves, facts, signers)
            size = stored.size + len(leaves)
            store.write_head(
                conn,
                size,
                root,
                note_spec.sign_tree_head(note_spec.TreeHead(stored.origin, size, root), log_key),
            )
    finally:
        conn.close()
    return stored.size


# --- the intact ledger ----------------------------------------------------------------------------------


def test_intact_ledger_verifies(ledger: Ledger, built: Built) -> None:
    seen: list[int] = []
    report = verify_ledger(ledger, progress=seen.append)
    assert report.problems == [] and report.ok
    head = ledger.head()
    assert (report.size, report.root) == (head.size, head.root) == (built.size, head.root)
    assert sum(seen) == built.size
    with duckdb.connect(str(ledger.path), read_only=True) as conn:
        leaves = [
            bytes(r[0]) for r in conn.execute("SELECT leaf FROM entries ORDER BY idx").fetchall()
        ]
    assert report.root == ref_mth(leaves)


def test_worker_processes_give_the_same_report(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify_records, "RECORD_CHUNK", 4)  # several record units for the workers
    assert verify_ledger(ledger, workers=2).ok
    sql(
        ledger,
        "UPDATE entries SET model = 'other' WHERE idx = 3",
        "UPDATE entries SET leaf = leaf || ' '::BLOB WHERE idx = 7",
        "UPDATE records SET digest = unhex(sha256('x')) WHERE position = 13",
    )
    alone = verify_ledger(ledger, workers=1)
    pooled = verify_ledger(ledger, workers=2)
    assert alone == pooled and not alone.ok
    assert_problem(pooled, 3, "column model", "'gpt-x'", "'other'")
    assert_problem(pooled, 7, "not a canonical DSSE envelope")
    assert_problem(pooled, 5, "records_root")


def test_pool_splits_a_batch_smaller_than_a_unit_between_its_workers(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fits one unit is cut into smaller aligned slices when a pool verifies it, so
    every worker gets some; the roots of those slices still rebuild the signed records root."""
    monkeypatch.setattr(verify_records, "RECORD_CHUNK", 64)  # the 23-record batch fits one unit
    monkeypatch.setattr(verify_records, "MIN_POOL_CHUNK", 4)
    planned: list[list[Any]] = []
    plan = verify_records.plan_units

    def spy(*args: Any, **kwargs: Any) -> list[Any]:
        planned.append(plan(*args, **kwargs))
        return planned[-1]

    monkeypatch.setattr(verify_records, "plan_units", spy)
    assert verify_ledger(ledger, workers=1).ok
    assert len(planned[-1]) == 1  # no pool: one unit holds every batch
    assert verify_ledger(ledger, workers=2).ok
    slices = [u for u in planned[-1] if u.batch_lo == u.batch_hi == 5]
    assert len(slices) == 3  # 23 records in slices of 8
    sql(ledger, "UPDATE records SET digest = unhex(sha256('x')) WHERE position = 17")
    alone, pooled = verify_ledger(ledger, workers=1), verify_ledger(ledger, workers=2)
    assert alone == pooled and not pooled.ok
    assert_problem(pooled, 5, "records_root")


def test_small_record_chunks_plan_the_same_roots(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # split the 23-record batch, group small ones
    monkeypatch.setattr(verify_records, "RECORD_CHUNK", 4)
    assert verify_ledger(ledger).ok
    sql(ledger, "UPDATE records SET digest = unhex(sha256('x')) WHERE position = 21")
    assert_problem(verify_ledger(ledger), 5, "records_root")


def test_broken_batch_between_sound_ones(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches fetched together (5 and a new one) must not trip over a broken batch between them (6)."""
    records = make_records(4, 5)
    alice = Ledger.open(ledger.path, key="default")
    index = alice.append_bodies([batch_body("run/b2", records)]).start
    with duckdb.connect(str(ledger.path)) as conn:
        insert_records(conn, index, records)
        conn.execute("INSERT INTO records VALUES (6, 0, 'short'::BLOB, NULL)")
    report = verify_ledger(ledger)
    assert [p.index for p in report.problems] == [6, 6]
    assert_problem(report, 6, "32-byte record digests")
    with (
        duckdb.connect(str(ledger.path)) as conn,
        pytest.raises(VerificationError, match="32-byte"),
    ):
        list(record_leaves(conn, 6))


def test_physical_row_order_does_not_matter(ledger: Ledger) -> None:
    sql(
        ledger,
        "CREATE TABLE e2 AS SELECT * FROM entries ORDER BY random()",
        "DELETE FROM entries",
        "INSERT INTO entries SELECT * FROM e2",
        "DROP TABLE e2",
        "CREATE TABLE s2 AS SELECT * FROM record_segments ORDER BY segment DESC",
        "DELETE FROM record_segments",
        "INSERT INTO record_segments SELECT * FROM s2",
        "DROP TABLE s2",
    )
    assert verify_ledger(ledger).ok


# --- entries --------------------------------------------------------------------------------------------


def test_altered_leaf_is_named(ledger: Ledger) -> None:
    sql(
        ledger,
        'UPDATE entries SET leaf = encode(replace(decode(leaf), \'"sig":"\', \'"sig":"A\')) WHERE idx = 3',
    )
    report = verify_ledger(ledger)
    assert_problem(report, 3, "canonical")
    assert_problem(report, 3, "tree node of entry 3", "expected the leaf hash")
    assert_problem(report, None, "tree head", "expected root")


def test_forged_signature(ledger: Ledger) -> None:
    """A leaf re-signed by a stranger under alice's keyid: canonical, but the signature does not verify."""
    stranger = keys.SigningKey.generate()
    alice = keyfiles.load_key_file(ledger.keys_dir / "default.pem")
    body = ledger.entry(4).body | {"model": "forged"}
    envelope = envelope_spec.parse_envelope(envelope_spec.sign_entry(body, stranger))
    forged = envelope_spec.format_envelope(
        envelope_spec.Envelope(
            envelope.payload,
            envelope.payload_type,
            ((alice.public.keyid, envelope.signatures[0][1]),),
        )
    )
    with duckdb.connect(str(ledger.path)) as conn:
        conn.execute("UPDATE entries SET leaf = ?, model = 'forged' WHERE idx = 4", [forged])
    report = verify_ledger(ledger)
    assert_problem(report, 4, "signature by key", "does not verify")


def test_altered_derived_columns(ledger: Ledger) -> None:
    sql(
        ledger,
        "UPDATE entries SET purpose = 'training-data' WHERE idx = 2",
        "UPDATE entries SET signer = 'ff' WHERE idx = 12",
        "UPDATE entries SET ref = 'run/other' WHERE idx = 5",
    )
    report = verify_ledger(ledger)
    assert_problem(report, 2, "column purpose", "'evaluation'", "'training-data'")
    assert_problem(report, 12, "column signer", "'ff'")
    assert_problem(report, 5, "column ref", "'run/b0'")
    assert not [
        p for p in report.problems if p.index is None
    ]  # leaves, tree and head are untouched


def test_deleted_entry(ledger: Ledger) -> None:
    sql(ledger, "DELETE FROM entries WHERE idx = 4")
    report = verify_ledger(ledger)
    assert_problem(report, 4, "expected entry 4", "no row")
    assert_problem(report, None, "tree head", "expected size 12")


def test_deleted_last_entry(ledger: Ledger) -> None:
    sql(ledger, "DELETE FROM entries WHERE idx = 12")
    report = verify_ledger(ledger)
    assert_problem(report, None, "tree head", "expected size 12", "found 13")
    assert_problem(report, 12, "tree node of entry 12", "expected no such node", "extra")


def test_duplicated_entry(ledger: Ledger) -> None:
    sql(ledger, "INSERT INTO entries SELECT * FROM entries WHERE idx = 3")
    report = verify_ledger(ledger)
    assert_problem(report, 3, "stored once", "found 2 rows")
    assert_problem(report, 3, "unique call", "entry 3")


def test_reordered_entries(ledger: Ledger) -> None:
    sql(ledger, "UPDATE entries SET idx = CASE idx WHEN 2 THEN 3 ELSE 2 END WHERE idx IN (2, 3)")
    report = verify_ledger(ledger)
    assert_problem(report, 2, "tree node of entry 2", "expected the leaf hash")
    assert_problem(report, 3, "tree node of entry 3", "expected the leaf hash")
    assert_problem(report, None, "tree head", "expected root")


def test_first_entry_must_be_self_signed_log_key(tmp_path: Path) -> None:
    lg = Ledger.init(tmp_path / "l.duckdb", origin=ORIGIN)
    log_key = keyfiles.load_key_file(lg.keys_dir / "log.pem")
    other = keys.SigningKey.generate()
    body = entries.key_body(other.public.keyid, other.public.b64, ORIGIN, "log")
    with duckdb.connect(str(lg.path)) as conn:
        conn.execute(
            "UPDATE entries SET leaf = ?, signer = ? WHERE idx = 0",
            [envelope_spec.sign_entry(body, log_key), log_key.public.keyid],
        )
    report = verify_ledger(lg)
    assert_problem(report, 0, "self-signed")


def test_entry_signed_by_revoked_key(ledger: Ledger) -> None:
    bob = keyfiles.load_key_file(ledger.keys_dir / "bob.pem")
    index = rogue_append(ledger, [(call(99), bob)])
    report = verify_ledger(ledger)
    assert [p.index for p in report.problems] == [index]
    assert_problem(report, index, "bob", "revoked")


def test_entry_signed_by_unknown_key(ledger: Ledger) -> None:
    index = rogue_append(ledger, [(call(98), keys.SigningKey.generate())])
    assert_problem(verify_ledger(ledger), index, "introduced by an earlier key entry")


def test_key_entry_signed_by_recorder(ledger: Ledger) -> None:
    alice = keyfiles.load_key_file(ledger.keys_dir / "default.pem")
    new = keys.SigningKey.generate()
    index = rogue_append(
        ledger, [(entries.key_body(new.public.keyid, new.public.b64, "eve", "recorder"), alice)]
    )
    assert_problem(verify_ledger(ledger), index, "signed by a log key", "recorder key default")


def test_swapped_public_key_in_key_entry(ledger: Ledger) -> None:
    """A key entry claiming alice's keyid with another public key, properly signed by the log key."""
    log_key = keyfiles.load_key_file(ledger.keys_dir / "log.pem")
    alice = keyfiles.load_key_file(ledger.keys_dir / "default.pem")
    mallory = keys.SigningKey.generate()
    body = entries.key_body(alice.public.keyid, mallory.public.b64, "alice2", "recorder")
    index = rogue_append(ledger, [(body, log_key)])
    assert_problem(verify_ledger(ledger), index, "sha256(public_key)")


def test_swapped_public_key_by_raw_sql(ledger: Ledger) -> None:
    mallory = keys.SigningKey.generate()
    alice_b64 = ledger.entry(1).body["public_key"]
    with duckdb.connect(str(ledger.path)) as conn:
        (leaf,) = conn.execute("SELECT leaf FROM entries WHERE idx = 1").fetchone()
        envelope = envelope_spec.parse_envelope(bytes(leaf))
        body = envelope.body() | {"public_key": mallory.public.b64}
        assert body["public_key"] != alice_b64
        payload = rfc8785.dumps(body)
        swapped = envelope_spec.format_envelope(
            envelope_spec.Envelope(payload, envelope.payload_type, envelope.signatures)
        )
        conn.execute("UPDATE entries SET leaf = ? WHERE idx = 1", [swapped])
    report = verify_ledger(ledger)
    assert_problem(report, 1, "does not verify")
    assert_problem(report, 1, "sha256(public_key)")


def test_revoke_of_unknown_key_and_double_revoke(ledger: Ledger) -> None:
    log_key = keyfiles.load_key_file(ledger.keys_dir / "log.pem")
    bob = keyfiles.load_key_file(ledger.keys_dir / "bob.pem")
    start = rogue_append(
        ledger,
        [
            (entries.revoke_body("ab" * 32, "x"), log_key),
            (entries.revoke_body(bob.public.keyid, "again"), log_key),
        ],
    )
    report = verify_ledger(ledger)
    assert_problem(report, start, "unknown key")
    assert_problem(report, start + 1, "already revoked at entry 9")


def test_dangling_and_forward_references(ledger: Ledger) -> None:
    alice = keyfiles.load_key_file(ledger.keys_dir / "default.pem")
    start = rogue_append(
        ledger,
        [
            (
                entries.batch_body(
                    id="run/b1",
                    count=0,
                    records_root=hashlib.sha256(b"").hexdigest(),
                    derived_from=[5],
                ),
                alice,
            ),
            (
                entries.checkpoint_body(
                    id="ckpt-2",
                    weights=[],
                    parents=["ckpt-9"],
                    batches=["run/zz", "run/b1"],
                    teachers=["ckpt-1", "ckpt-3"],
                ),
                alice,
            ),
            (
                entries.batch_body(
                    id="run/b0", count=0, records_root=hashlib.sha256(b"").hexdigest()
                ),
                alice,
            ),
            (entries.checkpoint_body(id="ckpt-1", weights=[]), alice),
            (call(1), alice),
        ],
    )
    report = verify_ledger(ledger)
    assert_problem(
        report, start, "derived_from 5", "expected an earlier call entry", "found batch entry"
    )
    assert_problem(report, start + 1, "parent 'ckpt-9'")
    assert_problem(report, start + 1, "batch 'run/zz'")
    assert_problem(report, start + 1, "teacher 'ckpt-3'")
    assert not any("'run/b1'" in w or "'ckpt-1'" in w for w in problems_at(report, start + 1))
    assert_problem(report, start + 2, "unique batch id", "'run/b0'", "entry 5")
    assert_problem(report, start + 3, "unique checkpoint id", "entry 7")
    assert_problem(report, start + 4, "unique call", "chatcmpl-1", "entry 3")


# --- tree nodes, tree head, meta ------------------------------------------------------------------------


def test_altered_leaf_node(ledger: Ledger) -> None:
    sql(ledger, "UPDATE nodes SET hash = unhex(sha256('x')) WHERE level = 0 AND idx = 6")
    assert_problem(verify_ledger(ledger), 6, "tree node of entry 6", "expected the leaf hash")


def test_altered_interior_node(ledger: Ledger) -> None:
    """Nodes are compared with the tree recomputed from the leaves: only the altered node is named,
    not its intact parent (whose stored children no longer hash to it)."""
    sql(ledger, "UPDATE nodes SET hash = unhex(sha256('x')) WHERE level = 2 AND idx = 1")
    report = verify_ledger(ledger)
    with duckdb.connect(str(ledger.path), read_only=True) as conn:
        leaves = [
            bytes(r[0]) for r in conn.execute("SELECT leaf FROM entries ORDER BY idx").fetchall()
        ]
    assert_problem(
        report,
        None,
        "level 2, index 1",
        "entries 4..7",
        "hash of its children",
        ref_mth(leaves[4:8]).hex(),
    )
    assert [p.index for p in report.problems] == [None]


def test_missing_duplicate_and_extra_nodes(ledger: Ledger) -> None:
    sql(
        ledger,
        "DELETE FROM nodes WHERE level = 1 AND idx = 3",
        "INSERT INTO nodes SELECT * FROM nodes WHERE level = 0 AND idx = 9",
        "INSERT INTO nodes VALUES (0, 13, unhex(sha256('x'))), (4, 0, unhex(sha256('y')))",
    )
    report = verify_ledger(ledger)
    assert_problem(report, None, "level 1, index 3", "missing")
    assert_problem(report, 9, "tree node of entry 9", "stored once")
    assert_problem(report, 13, "tree node of entry 13", "extra")
    assert_problem(report, None, "level 4, index 0", "extra")


def test_tree_head_row_tampering(ledger: Ledger) -> None:
    sql(ledger, "UPDATE tree_head SET size = 12")
    report = verify_ledger(ledger)
    assert_problem(report, None, "tree head", "expected size 13", "found 12")
    assert_problem(report, None, "tree head note", "size 12")


def test_tree_head_rewritten_and_resigned_by_a_stranger(ledger: Ledger) -> None:
    head = ledger.head()
    stranger = keys.SigningKey.generate()
    note = note_spec.sign_tree_head(note_spec.TreeHead(ORIGIN, head.size, head.root), stranger)
    with duckdb.connect(str(ledger.path)) as conn:
        conn.execute("UPDATE tree_head SET note = ?", [note])
    assert_problem(verify_ledger(ledger), None, "tree head note", "current log key")


def test_tree_head_missing_or_duplicated(ledger: Ledger) -> None:
    sql(ledger, "INSERT INTO tree_head SELECT * FROM tree_head")
    assert_problem(verify_ledger(ledger), None, "one stored tree head", "found 2")
    sql(ledger, "DELETE FROM tree_head")
    assert_problem(verify_ledger(ledger), None, "one stored tree head", "found 0")


def test_meta_tampering(ledger: Ledger) -> None:
    sql(ledger, "UPDATE meta SET value = 'evil.example/log' WHERE key = 'origin'")
    assert_problem(verify_ledger(ledger), None, "tree head note", "'evil.example/log'")
    sql(ledger, "INSERT INTO meta VALUES ('origin', 'another')")
    assert_problem(verify_ledger(ledger), None, "meta", "one origin row", "found 2")


# --- record sets ----------------------------------------------------------------------------------------


def test_record_tampering(ledger: Ledger, built: Built) -> None:
    b = built.batch
    cases = {
        f"UPDATE records SET digest = unhex(sha256('x')) WHERE batch = {b} AND position = 3": "records_root",
        f"DELETE FROM records WHERE batch = {b} AND position = 22": "positions 0..22 once each",
        f"INSERT INTO records SELECT * FROM records WHERE batch = {b} AND position = 0": "found 24 record rows",
        f"UPDATE records SET position = 23 - position WHERE batch = {b} AND position IN (4, 19)": "records_root",
        "DELETE FROM record_segments WHERE rowid IN (SELECT min(rowid) FROM record_segments)": "records_root",
        "INSERT INTO record_segments SELECT * FROM record_segments LIMIT 1": "records_root",
        f"INSERT INTO record_segments VALUES ({b}, 99, unhex(sha256('x')))": "no record",
        f"UPDATE records SET fingerprint = 'x'::BLOB WHERE batch = {b} AND position = 5": "fingerprints root",
        f"UPDATE records SET digest = 'short'::BLOB WHERE batch = {b} AND position = 5": "32-byte record digests",
        "INSERT INTO records VALUES (6, 0, unhex(sha256('x')), NULL)": "expected no record rows (count 0), found 1",
        "INSERT INTO records VALUES (3, 0, unhex(sha256('x')), NULL)": "non-batch entry",
    }
    for statement, words in cases.items():
        copy = ledger.path.with_name("case.duckdb")
        shutil.copy(ledger.path, copy)
        with duckdb.connect(str(copy)) as conn:
            conn.execute(statement)
        report = verify_ledger(Ledger(copy, keys_dir=ledger.keys_dir))
        index = 6 if "(6, 0" in statement else 3 if "(3, 0" in statement else b
        assert_problem(report, index, words)
        assert all(p.index is not None for p in report.problems), statement
        copy.unlink()


def test_uncommitted_fingerprints(tmp_path: Path) -> None:
    lg = Ledger.init(tmp_path / "l.duckdb", origin=ORIGIN)
    records = make_records(3, 4)
    body = entries.batch_body(
        id="b",
        count=4,
        records_root=ref_mth([ref_record_leaf(r.digest, r.segments) for r in records]).hex(),
    )
    index = lg.append_bodies([body]).start
    with duckdb.connect(str(lg.path)) as conn:
        insert_records(conn, index, [Rec(r.digest, r.segments, b"") for r in records])
    assert verify_ledger(lg).ok
    with duckdb.connect(str(lg.path)) as conn:
        conn.execute("UPDATE records SET fingerprint = 'x'::BLOB WHERE position = 1")
    assert_problem(verify_ledger(lg), index, "commits to none", "found 1")


# --- --since: rollback, rewrite, foreign heads ----------------------------------------------------------


def test_since_an_older_head(ledger: Ledger) -> None:
    old = ledger.head().note
    Ledger.open(ledger.path, key="default").append_bodies([call(50)])
    assert verify_ledger(ledger, since_note=old).ok
    assert verify_ledger(ledger, since_note=ledger.head().note).ok


def test_rollback_against_published_head(ledger: Ledger, tmp_path: Path) -> None:
    older = tmp_path / "older.duckdb"
    shutil.copy(ledger.path, older)
    Ledger.open(ledger.path, key="default").append_bodies([call(51)])
    published = ledger.head().note
    report = verify_ledger(Ledger(older, keys_dir=ledger.keys_dir), since_note=published)
    assert_problem(
        report, None, "published tree head", "at least its 14 entries", "found 13", "rolled back"
    )


def test_rewritten_history_against_published_head(ledger: Ledger, tmp_path: Path) -> None:
    fork = tmp_path / "fork.duckdb"
    shutil.copy(ledger.path, fork)
    Ledger.open(ledger.path, key="default").append_bodies([call(52)])
    published = ledger.head().note
    forked = Ledger(fork, keys_dir=ledger.keys_dir, key="default")
    forked.append_bodies([call(53), call(54)])
    report = verify_ledger(forked, since_note=published)
    assert report.problems == [Problem(None, report.problems[0].what)]
    assert_problem(report, None, "first 14 entries", "history was rewritten")


def test_since_foreign_signed_note(ledger: Ledger) -> None:
    head = ledger.head()
    foreign = note_spec.sign_tree_head(
        note_spec.TreeHead(ORIGIN, head.size, head.root), keys.SigningKey.generate()
    )
    assert_problem(
        verify_ledger(ledger, since_note=foreign),
        None,
        "published tree head",
        "signature by a log key",
    )
    other_origin = note_spec.sign_tree_head(
        note_spec.TreeHead("else.where/log", head.size, head.root),
        keyfiles.load_key_file(ledger.keys_dir / "log.pem"),
    )
    with pytest.raises(
        InputError, match="origin is 'else.where/log', the ledger's is 'verify.test/log'"
    ):
        verify_ledger(
            ledger, since_note=other_origin
        )  # another log's head: the wrong file, not tampering


def test_since_head_signed_by_a_rotated_log_key(ledger: Ledger, built: Built) -> None:
    """Heads outlive rotations: one signed by the old log key still counts as published."""
    with duckdb.connect(str(ledger.path), read_only=True) as conn:
        leaves = [
            bytes(r[0])
            for r in conn.execute("SELECT leaf FROM entries WHERE idx < 10 ORDER BY idx").fetchall()
        ]
    retired = next(ledger.keys_dir.glob("log.*.retired.pem"))
    note = note_spec.sign_tree_head(
        note_spec.TreeHead(ORIGIN, 10, ref_mth(leaves)), keyfiles.load_key_file(retired)
    )
    assert verify_ledger(ledger, since_note=note).ok


@pytest.mark.parametrize(
    ("session", "sizes"), [(3, [0, 1, 2, 3, 4, 8, 12, 13]), (1, [6]), (8, [11])]
)
def test_every_published_size_across_session_boundaries(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, session: int, sizes: Sequence[int]
) -> None:
    """Sessions of any size (aligned or not) give the same tree: each stored node is compared with the
    recomputed one, and a published head at any size is matched by the prefix root (RFC 6962 reference)."""
    monkeypatch.setattr(verify_scan, "SESSION_ENTRIES", session)
    with duckdb.connect(str(ledger.path), read_only=True) as conn:
        leaves = [
            bytes(r[0]) for r in conn.execute("SELECT leaf FROM entries ORDER BY idx").fetchall()
        ]
    log_key = keyfiles.load_key_file(ledger.keys_dir / "log.pem")
    for size in sizes:
        note = note_spec.sign_tree_head(
            note_spec.TreeHead(ORIGIN, size, ref_mth(leaves[:size])), log_key
        )
        report = verify_ledger(ledger, since_note=note)
        assert report.ok, (size, report.problems)
    forged = note_spec.sign_tree_head(note_spec.TreeHead(ORIGIN, 7, ref_mth(leaves[1:8])), log_key)
    assert_problem(verify_ledger(ledger, since_note=forged), None, "first 7 entries", "rewritten")
    sql(ledger, "UPDATE nodes SET hash = unhex(sha256('x')) WHERE level = 1 AND idx = 5")
    assert_problem(verify_ledger(ledger), None, "level 1, index 5", "entries 10..11")


def test_malformed_published_head_is_an_input_error(ledger: Ledger) -> None:
    with pytest.raises(InputError, match="published tree head"):
        verify_ledger(ledger, since_note="not a note\n")


# --- through the CLI ------------------------------------------------------------------------------------


def test_cli_verify_exit_codes_and_json(ledger: Ledger) -> None:
    """`ledger verify --json`: exit 0 and an empty list when intact, exit 1 naming the entry when not."""
    import jsonschema

    schema = json.loads(
        (Path(__file__).parent.parent / "schemas" / "verify.schema.json").read_text()
    )
    command = [
        str(Path(sys.executable).with_name("ledger")),
        "verify",
        "--db",
        str(ledger.path),
        "--json",
    ]
    env = {**os.environ, "LEDGER_KEYS_DIR": str(ledger.keys_dir), "LEDGER_LOCK_TIMEOUT": "5"}
    intact = subprocess.run(
        command, check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert intact.returncode == 0, intact.stderr
    document = json.loads(intact.stdout)
    jsonschema.validate(document, schema)
    assert document["ok"] is True and document["problems"] == [] and document["size"] == 13
    assert document["root"] == ledger.head().root.hex()
    sql(ledger, "UPDATE entries SET purpose = 'other' WHERE idx = 4")
    tampered = subprocess.run(
        command, check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert tampered.returncode == 1, tampered.stderr
    document = json.loads(tampered.stdout)
    jsonschema.validate(document, schema)
    assert document["ok"] is False and [p["index"] for p in document["problems"]] == [4]


# --- operational failures -------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        verify_ledger(Ledger(tmp_path / "nothing.duckdb"))


def test_locked_file(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ok', flush=True); time.sleep(30)",
            str(ledger.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        monkeypatch.setenv("LEDGER_LOCK_TIMEOUT", "0.2")
        started = time.monotonic()
        with pytest.raises(LockedError):
            verify_ledger(ledger)
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()


# --- record leaves and record sets (shared with the audit) ----------------------------------------------


@pytest.fixture
def memory_store() -> Iterator[duckdb.DuckDBPyConnection]:
    conn = duckdb.connect()
    store.create_schema(conn, "mem")
    yield conn
    conn.close()


def test_record_leaves_match_conformance_vectors(memory_store: duckdb.DuckDBPyConnection) -> None:
    vectors = CONFORMANCE["records"]
    records = [
        Rec(
            bytes.fromhex(v["sha256"]),
            tuple(bytes.fromhex(s) for s in reversed(v["segments"])),
            b"",
        )
        for v in vectors
    ]
    insert_records(memory_store, 7, records, shuffle=3)
    assert [leaf.decode() for leaf in record_leaves(memory_store, 7)] == [
        v["record_leaf"] for v in vectors
    ]
    body = {"count": len(records), "records_root": CONFORMANCE["records_root"]}
    assert check_record_set(memory_store, 7, body) == []
    wrong = {"count": len(records), "records_root": "00" * 32}
    assert [p.index for p in check_record_set(memory_store, 7, wrong)] == [7]


segment_sets = st.lists(st.binary(min_size=32, max_size=32), max_size=6, unique=True)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    records=st.lists(
        st.tuples(st.binary(min_size=32, max_size=32), segment_sets, st.binary(max_size=20)),
        max_size=40,
    ),
    shuffle=st.integers(0, 1000),
    other=st.integers(0, 5),
)
def test_record_sets_against_reference(
    memory_store: duckdb.DuckDBPyConnection,
    records: list[tuple[bytes, list[bytes], bytes]],
    shuffle: int,
    other: int,
) -> None:
    memory_store.execute("DELETE FROM records")
    memory_store.execute("DELETE FROM record_segments")
    recs = [Rec(d, tuple(s), f) for d, s, f in records]
    insert_records(memory_store, 5, recs, shuffle=shuffle)
    insert_records(
        memory_store, 4, make_records(other, other)
    )  # a neighbour batch must not leak in
    expected = [ref_record_leaf(r.digest, r.segments) for r in recs]
    assert list(record_leaves(memory_store, 5)) == expected
    body = {
        "count": len(recs),
        "records_root": ref_mth(expected).hex(),
        "fingerprints": {"root": ref_mth([r.fingerprint for r in recs]).hex()},
    }
    assert check_record_set(memory_store, 5, body) == []
    if recs:
        memory_store.execute(
            "DELETE FROM records WHERE batch = 5 AND position = ?", [len(recs) - 1]
        )
        found = check_record_set(memory_store, 5, body)
        assert found and {p.index for p in found} == {5}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(counts=st.lists(st.integers(0, 20), min_size=1, max_size=5), chunk_bits=st.integers(1, 4))
def test_grouped_and_sliced_batches_against_reference(
    memory_store: duckdb.DuckDBPyConnection, counts: list[int], chunk_bits: int
) -> None:
    """Many batches fetched in groups and big ones in aligned slices give each batch its own root."""
    memory_store.execute("DELETE FROM records")
    memory_store.execute("DELETE FROM record_segments")
    commitments = {}
    for batch, count in enumerate(counts, start=1):
        recs = make_records(batch * 100 + count, count)
        insert_records(memory_store, batch, recs, shuffle=batch)
        body = batch_body(f"b{batch}", recs)
        commitments[batch] = verify_records.commitment_of(body)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verify_records, "RECORD_CHUNK", 1 << chunk_bits)
        assert (
            verify_records.check_record_sets(lambda: nullcontext(memory_store), commitments, None)
            == []
        )
        broken = max(commitments, key=lambda b: counts[b - 1])
        if counts[broken - 1]:
            memory_store.execute(
                "UPDATE records SET digest = unhex(sha256('x')) WHERE batch = ? AND position = 0",
                [broken],
            )
            found = verify_records.check_record_sets(
                lambda: nullcontext(memory_store), commitments, None
            )
            assert [p.index for p in found] == [broken] and "records_root" in found[0].what


@given(
    counts=st.lists(st.integers(0, 40), max_size=8),
    gaps=st.lists(st.integers(1, 3), min_size=8, max_size=8),
    chunk_bits=st.integers(1, 4),
    tail=st.integers(0, 3),
)
def test_units_tile_every_key_and_position(
    counts: list[int], gaps: list[int], chunk_bits: int, tail: int
) -> None:
    """With a cover, every (batch key, position) in it falls in exactly one unit: stray rows cannot hide
    between units, and each batch's positions are covered by its slices without overlap."""
    batches, key = [], 0
    for count, gap in zip(counts, gaps):
        key += gap
        batches.append((key, count))
    cover = (0, key + tail)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verify_records, "RECORD_CHUNK", 1 << chunk_bits)
        units = verify_records.plan_units(batches, cover)
    probes = [-(2**63), -1, 0, 1, (1 << chunk_bits) - 1, 1 << chunk_bits, 39, 40, 2**63 - 1]
    for batch in range(cover[0], cover[1] + 1):
        for position in probes:
            holders = [
                u
                for u in units
                if u.batch_lo <= batch <= u.batch_hi and u.pos_lo <= position <= u.pos_hi
            ]
            assert len(holders) == 1, (batch, position, units)
    for batch, count in batches:
        assert any((batch, count) in u.counts for u in units)
        mine = [u for u in units if (batch, count) in u.counts]
        spans = sorted(u.expected(count) for u in mine)
        assert [lo for lo, _ in spans[1:]] == [hi for _, hi in spans[:-1]]  # back to back
        assert (spans[0][0], spans[-1][1]) == (0, count)


def test_stray_rows_anywhere_are_named(ledger: Ledger, built: Built) -> None:
    """Record rows under keys that are no batch entry: before, between and after batches, past the end
    of the log, negative, and segments alone."""
    sql(
        ledger,
        "INSERT INTO records VALUES (0, 0, unhex(sha256('a')), NULL), (12, 0, unhex(sha256('b')), NULL)",
        "INSERT INTO records VALUES (99, 0, unhex(sha256('c')), NULL), (-4, 1, unhex(sha256('d')), NULL)",
        "INSERT INTO record_segments VALUES (7, 0, unhex(sha256('e')))",
    )
    report = verify_ledger(ledger)
    assert sorted(p.index for p in report.problems) == [-4, 0, 7, 12, 99]
    assert all("expected record rows only for batch entries" in p.what for p in report.problems)
    assert_problem(report, 7, "0 record rows and 1 segment rows")


def test_record_set_problems_name_the_batch(memory_store: duckdb.DuckDBPyConnection) -> None:
    recs = make_records(9, 6)
    insert_records(memory_store, 2, recs)
    good = {
        "count": 6,
        "records_root": ref_mth([ref_record_leaf(r.digest, r.segments) for r in recs]).hex(),
        "fingerprints": {"root": ref_mth([r.fingerprint for r in recs]).hex()},
    }
    assert check_record_set(memory_store, 2, good) == []
    assert_words = [p.what for p in check_record_set(memory_store, 2, {**good, "count": 7})]
    assert len(assert_words) == 1 and "expected record positions 0..6" in assert_words[0]
    memory_store.execute(
        "UPDATE record_segments SET segment = unhex(sha256('z')) WHERE position = 1"
    )
    found = check_record_set(memory_store, 2, good)
    if any(r.segments for r in recs[1:2]):
        assert [p.index for p in found] == [2] and "records_root" in found[0].what


def test_problem_list_is_capped(monkeypatch: pytest.MonkeyPatch, ledger: Ledger) -> None:
    monkeypatch.setattr(verify_report, "MAX_PROBLEMS", 3)
    sql(ledger, "UPDATE entries SET model = 'x'")
    report = verify_ledger(ledger)
    assert len(report.problems) == 4 and report.problems[-1].what.endswith(
        "more problems not listed"
    )


def test_fresh_ledger_verifies(tmp_path: Path) -> None:
    lg = Ledger.init(tmp_path / "fresh.duckdb", origin=ORIGIN)
    report = verify_ledger(lg)
    assert report.ok and report.size == 2  # the log key and the `default` recorder key
    assert verify_ledger(lg, since_note=lg.head().note).ok


@pytest.mark.skipif(os.environ.get("LEDGER_SKIP_SLOW") == "1", reason="slow")
def test_recorded_batches_verify(tmp_path: Path) -> None:
    """Record sets written by the recording code (JSONL with split) recompute to their committed roots."""
    pytest.importorskip("ledger.spec.fingerprint")
    lg = Ledger.init(tmp_path / "r.duckdb", origin=ORIGIN)
    data = tmp_path / "data.jsonl"
    lines = [
        json.dumps(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": f"question number {i} about the weather in Paris today",
                    },
                    {
                        "role": "assistant",
                        "content": f"answer {i}: " + "sunny with light wind " * (i % 4),
                    },
                ]
            }
        )
        for i in range(50)
    ]
    data.write_text("\n".join(lines) + "\n")
    lg.record_batch(id="ds", files=[data], split=16)
    report = verify_ledger(lg)
    assert report.ok, report.problems
    sql(lg, "UPDATE record_segments SET segment = unhex(sha256('x')) WHERE rowid = 7")
    report = verify_ledger(lg)
    assert not report.ok and all("records_root" in p.what for p in report.problems)


# --- the entry fast paths in keys (what `verify` spends its non-signature time on) -----------------------

B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
SIGNER = keys.SigningKey.from_seed(bytes(range(32)))


@st.composite
def base64_spellings(draw: st.DrawFn) -> str:
    """Canonical encodings, the same bytes with padding bits set, and arbitrary near-base64 text."""
    raw = draw(st.binary(max_size=10))
    text = base64.b64encode(raw).decode()
    kind = draw(st.sampled_from(["canonical", "padding bits", "junk"]))
    if kind == "padding bits" and text.endswith("="):
        at = len(text.rstrip("=")) - 1
        text = (
            text[:at]
            + B64_ALPHABET[B64_ALPHABET.index(text[at]) | draw(st.integers(1, 15))]
            + text[at + 1 :]
        )
    elif kind == "junk":
        text = draw(st.text(alphabet=B64_ALPHABET + "=!- \n", max_size=12))
    return text


@given(base64_spellings())
def test_byte_base64_check_agrees_with_the_text_one(text: str) -> None:
    """The bit test used on leaves accepts exactly what re-encoding accepts (the canonical spelling)."""
    from ledger.spec.keys import b64decode_canonical, b64decode_canonical_bytes

    assert b64decode_canonical_bytes(text.encode()) == b64decode_canonical(text)
    if b64decode_canonical(text) is not None:
        assert base64.b64encode(base64.b64decode(text)).decode() == text


def _json_values(big: bool) -> st.SearchStrategy[Any]:
    limit = 2**70 if big else 2**53 - 1
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-limit, limit)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=6),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=4), children, max_size=3)
        ),
        max_leaves=8,
    )


@settings(max_examples=200, deadline=None)
@given(
    body=st.dictionaries(st.text(max_size=6), _json_values(big=False), max_size=4),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=2),
)
def test_leaf_fast_path_gives_what_the_general_parse_gives(
    body: dict[str, Any], edits: list[tuple[int, int]]
) -> None:
    """parse_envelope with and without its fast path: same envelope and body, or the same refusal."""
    from ledger.spec import envelope as dsse

    try:
        leaf = bytearray(envelope_spec.sign_entry(body, SIGNER))
    except jcs.HashInputError:
        return
    for at, value in edits:
        leaf[at % len(leaf)] = value
    outcomes = []
    for fast in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            if not fast:
                # the fast path switched off, so the general parse answers alone
                patch.setattr(dsse, "split_canonical_leaf", lambda _leaf: None)
            try:
                envelope = envelope_spec.parse_envelope(bytes(leaf), index=3)
                outcomes.append((envelope, envelope.body()))
            except VerificationError as exc:
                outcomes.append((type(exc), exc.index))
    assert outcomes[0] == outcomes[1]
    split = dsse.split_canonical_leaf(bytes(leaf))  # the fast path's own answer
    if split is not None:
        assert envelope_spec.format_envelope(split) == bytes(leaf)
        assert rfc8785.dumps(json.loads(bytes(leaf))) == bytes(leaf)


def test_envelope_body_is_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from ledger.spec import envelope as dsse

    body = call(1)
    envelope = envelope_spec.parse_envelope(envelope_spec.sign_entry(body, SIGNER))
    monkeypatch.setattr(dsse, "parse_json_line", lambda _data: pytest.fail("parsed again"))
    assert envelope.body() == body and envelope.body() is envelope.body()


# --- concurrency: verify reads in short sessions ---------------------------------------------------------

RECORDER = """
import json, os, sys, time
from ledger import Ledger
from ledger.spec import entries
lg = Ledger.open(sys.argv[1])
n = 0
while not os.path.exists(sys.argv[2]):
    lg.append_bodies([entries.call_body(provider="p", model="m", endpoint="/e", purpose="other",
                      request="ab" * 32, response="cd" * 32, outputs=[], external_id=f"late-{n}")])
    n += 1
    print(json.dumps(time.time()), flush=True)
    time.sleep(0.02)
"""


def test_recorder_appends_while_verify_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recorder in another process appends throughout a verify that takes longer than its lock wait.

    Checking is slowed (a sleeping progress callback) and sessions made small, so a verify that held
    the file for its whole run would make the recorder fail after LEDGER_LOCK_TIMEOUT=1 s.
    """
    lg = Ledger.init(tmp_path / "busy.duckdb", origin=ORIGIN)
    lg.append_bodies([call(i) for i in range(300)])
    records = make_records(5, 40)
    index = lg.append_bodies([batch_body("busy/b0", records)]).start
    with duckdb.connect(str(lg.path)) as conn:  # rows out of band, as the fixture does
        insert_records(conn, index, records)
    monkeypatch.setattr(verify_scan, "SESSION_ENTRIES", 32)
    monkeypatch.setattr(verify_scan, "ENTRY_CHUNK", 32)
    monkeypatch.setattr(verify_records, "RECORD_CHUNK", 8)
    stop = tmp_path / "stop"
    recorder = subprocess.Popen(
        [sys.executable, "-c", RECORDER, str(lg.path), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LEDGER_LOCK_TIMEOUT": "1", "LEDGER_KEYS_DIR": str(lg.keys_dir)},
    )
    try:
        assert recorder.stdout is not None and recorder.stdout.readline()  # it has appended once
        started = time.time()
        report = verify_ledger(lg, progress=lambda _n: time.sleep(0.15), workers=2)
        ended = time.time()
        stop.touch()
        out, err = recorder.communicate(timeout=60)
    finally:
        stop.touch()
        recorder.kill()
    assert recorder.returncode == 0, err
    assert ended - started > 1.5  # longer than the recorder's lock wait
    during = [t for t in map(float, out.split()) if started < t < ended]
    assert len(during) >= 3, (started, ended, out)
    assert report.ok, report.problems
    with duckdb.connect(str(lg.path), read_only=True) as conn:
        leaves = [
            bytes(r[0]) for r in conn.execute("SELECT leaf FROM entries ORDER BY idx").fetchall()
        ]
    assert 302 <= report.size < len(leaves)  # verified up to the head found at the start
    assert report.root == ref_mth(leaves[: report.size])
    assert verify_ledger(lg).ok  # and everything appended meanwhile verifies too


def test_tampering_while_verify_runs_is_reported(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verified node altered between two sessions (after it was checked) fails the end re-check."""
    monkeypatch.setattr(verify_scan, "SESSION_ENTRIES", 4)
    done: list[int] = []

    def tamper(n: int) -> None:
        done.append(n)
        if len(done) == 1:  # entries 0..3 are checked; no session is open now
            sql(ledger, "UPDATE nodes SET hash = unhex(sha256('x')) WHERE level = 2 AND idx = 0")

    report = verify_ledger(ledger, progress=tamper)
    assert_problem(report, None, "changed during verification")


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 5),
    st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=4),
    st.randoms(use_true_random=False),
)
def test_build_chunk_sorts_segments_within_records_like_jcs(
    records: int, k: int, pool: list[bytes], rnd: Any
) -> None:
    """The fast within-record sort (and its tie fallback: segments from a tiny pool share leading bytes)
    must give the leaves an independent per-record sort gives."""
    digests = [rnd.choice(pool) for _ in range(records)]
    segs = [[bytes(a ^ b for a, b in zip(rnd.choice(pool), bytes(31) + bytes([rnd.randrange(2)])))
             for _ in range(k)] for _ in range(records)]  # fmt: skip
    rec = pa.table({"batch": [3] * records, "position": list(range(records)),
                     "digest": pa.array(digests, pa.binary()), "fingerprint": pa.nulls(records, pa.binary())})  # fmt: skip
    flat = [(p, s) for p in range(records) for s in segs[p]]
    seg = pa.table({"batch": [3] * len(flat), "position": [p for p, _ in flat],
                     "segment": pa.array([s for _, s in flat], pa.binary())})  # fmt: skip
    want = [
        json.dumps(
            {"segments": sorted(s.hex() for s in segs[p]), "sha256": digests[p].hex()},
            separators=(",", ":"),
        ).encode()
        for p in range(records)
    ]
    assert build_chunk(rec, seg).leaves() == want


@given(st.binary(min_size=32, max_size=32), st.integers(1, 300))
def test_repeated_root_matches_merkle_root(leaf: bytes, n: int) -> None:
    from ledger.spec import merkle

    assert repeated_root(leaf, n) == merkle.root([leaf] * n)
