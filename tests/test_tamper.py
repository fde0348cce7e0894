"""The tamper suite: every column of every table, changed, deleted, duplicated and reordered with raw SQL.

One realistic ledger is recorded through the library (a recorder key, evaluation calls, a split dataset
with one record that copies a call's output verbatim, two checkpoints with a parent and a teacher, a
revoked key), so its audit is `contaminated`: the tamperer's goal is to make that finding disappear.
Each scenario edits a private copy with `duckdb.connect` and must be noticed: `ledger verify` exits 1
naming the entry index (where the row belongs to one), and `ledger audit` says `inconclusive` (never
`clean`, never silently the old verdict). Damage below the ledger's schema (meta's schema version) is
refused as a corrupt database (exit 4), which also counts as noticed. Physical row order carries no
meaning, so rewriting a table in another order must verify.

test_verify.py checks verify's individual messages on a synthetic ledger; this suite sweeps the whole
matrix through the CLI and the audit, adds the insider attacks that need keys (forged, revoked, swapped,
duplicate and forward-referring entries with consistent trees and re-signed heads; rollback and rewritten
history against published heads), and key hygiene. The last test prints the tried/detected/survived
counts to the terminal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ledger import Ledger
from ledger.audit.run import audit
from ledger.errors import CorruptDatabaseError, LedgerError
from ledger.log import store
from ledger.spec import entries

sys.path.insert(0, str(Path(__file__).parent))
from hardening import CliPool, Result

from ledger.log import keyfiles
from ledger.spec import envelope as envelope_spec
from ledger.spec import keys
from ledger.spec import note as note_spec

ORIGIN = "tamper.test/log"
ANSWER = "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in the chloroplasts."
OTHER = "A haiku about autumn leaves drifting over a quiet pond at dusk, written for the style benchmark."


def response(external_id: str, text: str, model: str = "gpt-4o") -> dict[str, Any]:
    return {
        "id": external_id,
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }


@dataclass(frozen=True)
class Built:
    """The intact ledger and the entry indexes the scenarios aim at."""

    path: Path
    call: int  # the evaluation call whose output was copied
    other_call: int  # an annotation call to another provider
    dataset: int
    batches: tuple[int, int]  # the dataset's two batches; the copy is in the first
    checkpoint: int  # run/ckpt-1 (trained on the dataset)
    fine_tune: int  # the fine-tune's batch
    top: int  # run/ckpt-2: parent run/ckpt-1, a third-party teacher
    revoked: int  # bob's revoke entry
    size: int


def build(base: Path) -> Built:
    path = base / "ledger.duckdb"
    lg = Ledger.init(path, origin=ORIGIN)
    lg.new_key("trainer")
    tr = Ledger.open(path, key="trainer")
    call = tr.record_call(
        provider="openai",
        purpose="evaluation",
        request={"model": "gpt-4o", "messages": []},
        response=response("chatcmpl-eval-1", ANSWER),
    ).index
    other = tr.record_call(
        provider="acme",
        purpose="annotation",
        request=None,
        response=response("acme-7", OTHER, model="acme-large"),
    ).index
    records = [
        {
            "messages": [
                {
                    "role": "user",
                    "content": f"Question {i}: explain a process of nature in plain words.",
                },
                {
                    "role": "assistant",
                    "content": ANSWER
                    if i == 1
                    else f"Answer {i} written by our own team of editors.",
                },
            ]
        }
        for i in range(6)
    ]
    data = tr.record_batch(records, id="run/data", split=3).entries
    (base / "w1.bin").write_bytes(b"weights one")
    ckpt = tr.record_checkpoint(
        id="run/ckpt-1", weights=[base / "w1.bin"], batches=["run/data"]
    ).index
    ft = (
        tr.record_batch(
            [{"text": f"fine-tuning example number {i} about rivers and lakes"} for i in range(4)],
            id="run/ft",
        )
        .entries[0]
        .index
    )
    (base / "w2.bin").write_bytes(b"weights two")
    top = tr.record_checkpoint(
        id="run/ckpt-2",
        weights=[base / "w2.bin"],
        batches=["run/ft"],
        parents=["run/ckpt-1"],
        teachers=["openai:gpt-4o"],
    ).index
    lg.new_key("bob")
    revoked = lg.revoke_key("bob", "left the lab").revoked_at
    assert revoked is not None
    assert [e.kind for e in data] == ["dataset", "batch", "batch"]
    return Built(
        path,
        call,
        other,
        data[0].index,
        (data[1].index, data[2].index),
        ckpt,
        ft,
        top,
        revoked,
        lg.head().size,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    result = build(tmp_path_factory.mktemp("intact"))
    report = audit(Ledger.open(result.path), "run/ckpt-2")
    assert report.verdict == "contaminated" and not report.problems
    assert any(
        f.type == "exact" and f.call == result.call and f.batch == result.batches[0]
        for f in report.findings
    )
    return result


@pytest.fixture(scope="module")
def cli() -> Iterator[CliPool]:
    pool = CliPool(2)
    yield pool
    pool.close()


def copy_ledger(built: Built, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built.path, directory / "ledger.duckdb")
    shutil.copytree(
        built.path.with_name("ledger.keys"), directory / "ledger.keys", dirs_exist_ok=True
    )
    return directory / "ledger.duckdb"


# --- the matrix ---------------------------------------------------------------------------------------

Apply = Callable[[duckdb.DuckDBPyConnection, Built], None]


@dataclass(frozen=True)
class Scenario:
    """One edit. `index`: the entry verify must name (None: a row of no entry; "any": some problem)."""

    table: str
    column: str  # "*" for whole-row operations
    op: str  # change | swap | delete | duplicate | insert | reorder (physical, must stay valid)
    name: str
    apply: Apply
    index: int | None | str = "any"

    @property
    def id(self) -> str:
        return f"{self.table}.{self.column}:{self.op}:{self.name}"


def sql(
    *statements: str, params: Callable[[Built], Sequence[Sequence[Any]]] | None = None
) -> Apply:
    """Statements with `{name}` filled from the built ledger's fields, run in order."""

    def apply(conn: duckdb.DuckDBPyConnection, b: Built) -> None:
        fields = {
            "call": b.call,
            "other": b.other_call,
            "dataset": b.dataset,
            "b0": b.batches[0],
            "b1": b.batches[1],
            "ckpt": b.checkpoint,
            "ft": b.fine_tune,
            "top": b.top,
            "revoked": b.revoked,
            "last": b.size - 1,
            "size": b.size,
        }
        values = params(b) if params else [()] * len(statements)
        for statement, args in zip(statements, values):
            conn.execute(statement.format(**fields), list(args))

    return apply


def swap(table: str, column: str, where_a: str, where_b: str) -> Apply:
    """Exchange one column's values between two rows (a reorder that keeps every value present)."""
    return sql(
        f"""CREATE TEMP TABLE s AS SELECT (SELECT rowid FROM {table} WHERE {where_a}) ra, (SELECT rowid FROM {table} WHERE {where_b}) rb,
            (SELECT {column} FROM {table} WHERE {where_a}) a, (SELECT {column} FROM {table} WHERE {where_b}) b""",
        f"UPDATE {table} SET {column} = (SELECT b FROM s) WHERE rowid = (SELECT ra FROM s)",
        f"UPDATE {table} SET {column} = (SELECT a FROM s) WHERE rowid = (SELECT rb FROM s)",
    )


def edit_note(edit: Callable[[str], str]) -> Apply:
    def apply(conn: duckdb.DuckDBPyConnection, b: Built) -> None:
        (note_text,) = conn.execute("SELECT note FROM tree_head").fetchone() or ("",)
        conn.execute("UPDATE tree_head SET note = ?", [edit(str(note_text))])

    return apply


def _damage_signature(note_text: str) -> str:
    body, _, signature_line = note_text.rstrip("\n").rpartition("\n")
    head, _, sig = signature_line.rpartition(" ")
    raw = bytearray(base64.b64decode(sig))
    raw[10] ^= 0x01
    return f"{body}\n{head} {base64.b64encode(bytes(raw)).decode()}\n"


def rewrite_in_order(table: str, order: str) -> Apply:
    return sql(
        f"CREATE TEMP TABLE t AS SELECT * FROM {table} ORDER BY {order}",
        f"DELETE FROM {table}",
        f"INSERT INTO {table} SELECT * FROM t",
    )


def flip_payload_char(conn: duckdb.DuckDBPyConnection, b: Built, index: int) -> None:
    """Change one base64 character of the payload: still a well-formed envelope, another body."""
    (leaf,) = conn.execute("SELECT leaf FROM entries WHERE idx = ?", [index]).fetchone() or (b"",)
    text = bytes(leaf).decode()
    at = text.index('"payload":"') + len('"payload":"') + 40
    swapped = text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]
    conn.execute("UPDATE entries SET leaf = ? WHERE idx = ?", [swapped.encode(), index])


def E(column: str, op: str, name: str, apply: Apply, index: int | None | str = "any") -> Scenario:
    return Scenario("entries", column, op, name, apply, index)


SCENARIOS: list[Scenario] = [
    # entries: every column changed, swapped between two rows; rows deleted, duplicated, reordered
    E("idx", "change", "gap", sql("UPDATE entries SET idx = 99 WHERE idx = {b0}"), "b0"),
    E("idx", "change", "collide", sql("UPDATE entries SET idx = {b1} WHERE idx = {b0}"), "b0"),
    E(
        "idx",
        "swap",
        "two-batches",
        swap("entries", "idx", "idx = {b0}", "kind = 'batch' AND ref = 'run/data/000001'"),
        "b0",
    ),
    E("leaf", "change", "call-payload", lambda c, b: flip_payload_char(c, b, b.call), "call"),
    E("leaf", "change", "batch-payload", lambda c, b: flip_payload_char(c, b, b.batches[0]), "b0"),
    E("leaf", "change", "key-payload", lambda c, b: flip_payload_char(c, b, 1), 1),
    E(
        "leaf",
        "change",
        "trailing-space",
        sql("UPDATE entries SET leaf = leaf || ' '::BLOB WHERE idx = {ckpt}"),
        "ckpt",
    ),
    E(
        "leaf",
        "swap",
        "two-calls",
        swap("entries", "leaf", "idx = {call}", "idx = {other}"),
        "call",
    ),
    E(
        "kind",
        "change",
        "call-to-batch",
        sql("UPDATE entries SET kind = 'batch' WHERE idx = {call}"),
        "call",
    ),
    E(
        "kind",
        "swap",
        "dataset-batch",
        swap("entries", "kind", "idx = {dataset}", "idx = {b0}"),
        "dataset",
    ),
    E(
        "time",
        "change",
        "backdated",
        sql("UPDATE entries SET time = '2020-01-01T00:00:00Z' WHERE idx = {call}"),
        "call",
    ),
    E(
        "time",
        "swap",
        "two-entries",
        swap("entries", "time", "idx = {call}", "idx = {top}"),
        "call",
    ),
    E(
        "signer",
        "change",
        "other-key",
        sql(
            "UPDATE entries SET signer = (SELECT signer FROM entries WHERE idx = 0) WHERE idx = {call}"
        ),
        "call",
    ),
    E("signer", "swap", "log-recorder", swap("entries", "signer", "idx = 0", "idx = {call}"), 0),
    E(
        "ref",
        "change",
        "batch-id",
        sql("UPDATE entries SET ref = 'run/clean' WHERE idx = {b0}"),
        "b0",
    ),
    E(
        "ref",
        "change",
        "set-on-key",
        sql("UPDATE entries SET ref = 'run/data/000000' WHERE idx = 0"),
        0,
    ),
    E(
        "ref",
        "change",
        "null-call",
        sql("UPDATE entries SET ref = NULL WHERE idx = {call}"),
        "call",
    ),
    E("ref", "swap", "two-batches", swap("entries", "ref", "idx = {b0}", "idx = {b1}"), "b0"),
    E(
        "provider",
        "change",
        "relabel",
        sql("UPDATE entries SET provider = 'in-house' WHERE idx = {call}"),
        "call",
    ),
    E(
        "provider",
        "change",
        "set-on-batch",
        sql("UPDATE entries SET provider = 'openai' WHERE idx = {b0}"),
        "b0",
    ),
    E(
        "provider",
        "swap",
        "two-calls",
        swap("entries", "provider", "idx = {call}", "idx = {other}"),
        "call",
    ),
    E(
        "model",
        "change",
        "relabel",
        sql("UPDATE entries SET model = 'our-model' WHERE idx = {call}"),
        "call",
    ),
    E(
        "model",
        "swap",
        "two-calls",
        swap("entries", "model", "idx = {call}", "idx = {other}"),
        "call",
    ),
    E(
        "purpose",
        "change",
        "eval-to-training",
        sql("UPDATE entries SET purpose = 'training-data' WHERE idx = {call}"),
        "call",
    ),
    E(
        "purpose",
        "change",
        "null",
        sql("UPDATE entries SET purpose = NULL WHERE idx = {call}"),
        "call",
    ),
    E(
        "purpose",
        "swap",
        "two-calls",
        swap("entries", "purpose", "idx = {call}", "idx = {other}"),
        "call",
    ),
    E("*", "delete", "first", sql("DELETE FROM entries WHERE idx = 0"), "any"),
    E("*", "delete", "contaminated-batch", sql("DELETE FROM entries WHERE idx = {b0}"), "b0"),
    E("*", "delete", "the-call", sql("DELETE FROM entries WHERE idx = {call}"), "call"),
    E("*", "delete", "last", sql("DELETE FROM entries WHERE idx = {last}"), "last"),
    E(
        "*",
        "delete",
        "batch-and-its-rows",
        sql(
            "DELETE FROM entries WHERE idx = {b0}",
            "DELETE FROM records WHERE batch = {b0}",
            "DELETE FROM record_segments WHERE batch = {b0}",
        ),
        "b0",
    ),
    E(
        "*",
        "duplicate",
        "call",
        sql("INSERT INTO entries SELECT * FROM entries WHERE idx = {call}"),
        "call",
    ),
    E(
        "*",
        "duplicate",
        "last",
        sql("INSERT INTO entries SELECT * FROM entries WHERE idx = {last}"),
        "last",
    ),
    E(
        "*",
        "insert",
        "copy-as-next",
        sql(
            "INSERT INTO entries SELECT {size}, leaf, kind, time, signer, ref, provider, model, purpose FROM entries WHERE idx = {call}"
        ),
        "size",
    ),
    E("*", "reorder", "physical", rewrite_in_order("entries", "idx DESC")),
    # nodes
    Scenario(
        "nodes",
        "level",
        "change",
        "leaf-up",
        sql("UPDATE nodes SET level = 1 WHERE level = 0 AND idx = {call}"),
        "call",
    ),
    Scenario(
        "nodes",
        "level",
        "swap",
        "leaf-and-parent",
        swap("nodes", "level", "level = 0 AND idx = 0", "level = 1 AND idx = 0"),
        0,
    ),
    Scenario(
        "nodes",
        "idx",
        "change",
        "shift-last",
        sql("UPDATE nodes SET idx = idx + 1 WHERE level = 0 AND idx = {last}"),
        "last",
    ),
    Scenario(
        "nodes",
        "idx",
        "swap",
        "two-leaves",
        swap("nodes", "idx", "level = 0 AND idx = {call}", "level = 0 AND idx = {other}"),
        "call",
    ),
    Scenario(
        "nodes",
        "hash",
        "change",
        "leaf",
        sql("UPDATE nodes SET hash = unhex(sha256('x')) WHERE level = 0 AND idx = {b0}"),
        "b0",
    ),
    Scenario(
        "nodes",
        "hash",
        "change",
        "interior",
        sql("UPDATE nodes SET hash = unhex(sha256('x')) WHERE level = 2 AND idx = 1"),
        None,
    ),
    Scenario(
        "nodes",
        "hash",
        "swap",
        "two-leaves",
        swap("nodes", "hash", "level = 0 AND idx = {call}", "level = 0 AND idx = {other}"),
        "call",
    ),
    Scenario(
        "nodes",
        "*",
        "delete",
        "leaf",
        sql("DELETE FROM nodes WHERE level = 0 AND idx = {ckpt}"),
        "ckpt",
    ),
    Scenario(
        "nodes",
        "*",
        "delete",
        "interior",
        sql("DELETE FROM nodes WHERE level = 3 AND idx = 0"),
        None,
    ),
    Scenario("nodes", "*", "delete", "all", sql("DELETE FROM nodes"), "any"),
    Scenario(
        "nodes",
        "*",
        "duplicate",
        "leaf",
        sql("INSERT INTO nodes SELECT * FROM nodes WHERE level = 0 AND idx = 2"),
        2,
    ),
    Scenario(
        "nodes",
        "*",
        "insert",
        "future-leaf",
        sql("INSERT INTO nodes VALUES (0, {size}, unhex(sha256('x')))"),
        "size",
    ),
    Scenario("nodes", "*", "reorder", "physical", rewrite_in_order("nodes", "hash")),
    # tree_head (one row: nothing to swap with)
    Scenario(
        "tree_head", "size", "change", "smaller", sql("UPDATE tree_head SET size = size - 1"), None
    ),
    Scenario(
        "tree_head", "size", "change", "larger", sql("UPDATE tree_head SET size = size + 1"), None
    ),
    Scenario(
        "tree_head",
        "root",
        "change",
        "other",
        sql("UPDATE tree_head SET root = unhex(sha256('x'))"),
        None,
    ),
    Scenario("tree_head", "note", "change", "signature-bit", edit_note(_damage_signature), None),
    Scenario(
        "tree_head",
        "note",
        "change",
        "other-origin",
        sql("UPDATE tree_head SET note = replace(note, 'tamper.test/log', 'evil.test/log')"),
        None,
    ),
    Scenario("tree_head", "*", "delete", "row", sql("DELETE FROM tree_head"), None),
    Scenario(
        "tree_head",
        "*",
        "duplicate",
        "row",
        sql("INSERT INTO tree_head SELECT * FROM tree_head"),
        None,
    ),
    # meta
    Scenario(
        "meta",
        "key",
        "change",
        "origin",
        sql("UPDATE meta SET key = 'origin2' WHERE key = 'origin'"),
        None,
    ),
    Scenario(
        "meta",
        "value",
        "change",
        "origin",
        sql("UPDATE meta SET value = 'evil.test/log' WHERE key = 'origin'"),
        None,
    ),
    Scenario(
        "meta",
        "value",
        "change",
        "schema-newer",
        sql(f"UPDATE meta SET value = '{store.SCHEMA_VERSION + 1}' WHERE key = 'schema_version'"),
        "corrupt",
    ),
    Scenario(
        "meta",
        "value",
        "change",
        "schema-older",  # the tables are already newer: a writer's migration fails on them
        sql(
            f"UPDATE meta SET value = '{max(1, store.SCHEMA_VERSION - 1)}' WHERE key = 'schema_version'"
        ),
        "corrupt",
    ),
    Scenario(
        "meta",
        "value",
        "change",
        "schema-garbage",
        sql("UPDATE meta SET value = 'one' WHERE key = 'schema_version'"),
        "corrupt",
    ),
    Scenario(
        "meta",
        "key",
        "swap",
        "two-rows",
        swap("meta", "key", "key = 'origin'", "key = 'schema_version'"),
        "corrupt",
    ),
    Scenario(
        "meta",
        "value",
        "swap",
        "two-rows",
        swap("meta", "value", "key = 'origin'", "key = 'schema_version'"),
        "corrupt",
    ),
    Scenario("meta", "*", "delete", "origin", sql("DELETE FROM meta WHERE key = 'origin'"), None),
    Scenario(
        "meta",
        "*",
        "delete",
        "schema",
        sql("DELETE FROM meta WHERE key = 'schema_version'"),
        "corrupt",
    ),
    Scenario(
        "meta",
        "*",
        "duplicate",
        "origin",
        sql("INSERT INTO meta SELECT * FROM meta WHERE key = 'origin'"),
        None,
    ),
    Scenario(
        "meta",
        "*",
        "insert",
        "unknown-key",
        sql("INSERT INTO meta VALUES ('retention', 'forever')"),
        None,
    ),
    Scenario(
        "meta",
        "*",
        "insert",
        "second-origin",
        sql("INSERT INTO meta VALUES ('origin', 'evil.test/log')"),
        None,
    ),
    Scenario("meta", "*", "reorder", "physical", rewrite_in_order("meta", "key DESC")),
    # records (the copied output is record 1 of the first batch)
    Scenario(
        "records",
        "batch",
        "change",
        "move-row",
        sql("UPDATE records SET batch = {b1} WHERE batch = {b0} AND position = 1"),
        "b0",
    ),
    Scenario(
        "records",
        "batch",
        "swap",
        "two-batches",
        swap("records", "batch", "batch = {b0} AND position = 1", "batch = {b1} AND position = 1"),
        "b0",
    ),
    Scenario(
        "records",
        "position",
        "change",
        "beyond",
        sql("UPDATE records SET position = 7 WHERE batch = {b0} AND position = 1"),
        "b0",
    ),
    Scenario(
        "records",
        "position",
        "swap",
        "two-rows",
        swap(
            "records", "position", "batch = {b0} AND position = 0", "batch = {b0} AND position = 1"
        ),
        "b0",
    ),
    Scenario(
        "records",
        "digest",
        "change",
        "copied-record",
        sql("UPDATE records SET digest = unhex(sha256('x')) WHERE batch = {b0} AND position = 1"),
        "b0",
    ),
    Scenario(
        "records",
        "digest",
        "change",
        "short",
        sql("UPDATE records SET digest = 'x'::BLOB WHERE batch = {b1} AND position = 0"),
        "b1",
    ),
    Scenario(
        "records",
        "digest",
        "swap",
        "two-rows",
        swap("records", "digest", "batch = {b0} AND position = 0", "batch = {b0} AND position = 1"),
        "b0",
    ),
    Scenario(
        "records",
        "fingerprint",
        "change",
        "other",
        sql("UPDATE records SET fingerprint = 'x'::BLOB WHERE batch = {b0} AND position = 1"),
        "b0",
    ),
    Scenario(
        "records",
        "fingerprint",
        "change",
        "null",
        sql("UPDATE records SET fingerprint = NULL WHERE batch = {b0} AND position = 1"),
        "b0",
    ),
    Scenario(
        "records",
        "fingerprint",
        "swap",
        "two-rows",
        swap(
            "records",
            "fingerprint",
            "batch = {b0} AND position = 0",
            "batch = {b0} AND position = 1",
        ),
        "b0",
    ),
    Scenario(
        "records",
        "*",
        "delete",
        "copied-record",
        sql("DELETE FROM records WHERE batch = {b0} AND position = 1"),
        "b0",
    ),
    Scenario(
        "records", "*", "delete", "whole-batch", sql("DELETE FROM records WHERE batch = {b0}"), "b0"
    ),
    Scenario(
        "records",
        "*",
        "delete",
        "last-row",
        sql("DELETE FROM records WHERE batch = {ft} AND position = 3"),
        "ft",
    ),
    Scenario(
        "records",
        "*",
        "duplicate",
        "row",
        sql("INSERT INTO records SELECT * FROM records WHERE batch = {b1} AND position = 2"),
        "b1",
    ),
    Scenario(
        "records",
        "*",
        "insert",
        "for-a-checkpoint",
        sql(
            "INSERT INTO records SELECT {ckpt}, position, digest, fingerprint FROM records WHERE batch = {b0}"
        ),
        "ckpt",
    ),
    Scenario(
        "records",
        "*",
        "insert",
        "extra-position",
        sql(
            "INSERT INTO records SELECT batch, 3, digest, fingerprint FROM records WHERE batch = {b0} AND position = 0"
        ),
        "b0",
    ),
    Scenario("records", "*", "reorder", "physical", rewrite_in_order("records", "digest")),
    # record_segments
    Scenario(
        "record_segments",
        "batch",
        "change",
        "move-copied",
        sql("UPDATE record_segments SET batch = {b1} WHERE batch = {b0} AND position = 1"),
        "b0",
    ),
    Scenario(
        "record_segments",
        "batch",
        "swap",
        "two-batches",
        swap(
            "record_segments",
            "batch",
            "rowid = (SELECT min(rowid) FROM record_segments WHERE batch = {b0})",
            "rowid = (SELECT min(rowid) FROM record_segments WHERE batch = {b1})",
        ),
        "b0",
    ),
    Scenario(
        "record_segments",
        "position",
        "change",
        "to-other-record",
        sql("UPDATE record_segments SET position = 2 WHERE batch = {b0} AND position = 1"),
        "b0",
    ),
    Scenario(
        "record_segments",
        "position",
        "change",
        "orphan",
        sql("UPDATE record_segments SET position = 9 WHERE batch = {b0} AND position = 1"),
        "b0",
    ),
    Scenario(
        "record_segments",
        "position",
        "swap",
        "two-records",
        swap(
            "record_segments",
            "position",
            "rowid = (SELECT min(rowid) FROM record_segments WHERE batch = {b0} AND position = 1)",
            "rowid = (SELECT min(rowid) FROM record_segments WHERE batch = {b0} AND position = 0)",
        ),
        "b0",
    ),
    Scenario(
        "record_segments",
        "segment",
        "change",
        "the-copied-segment",
        sql(
            "UPDATE record_segments SET segment = unhex(sha256('x')) WHERE batch = {b0} AND position = 1"
        ),
        "b0",
    ),
    Scenario(
        "record_segments",
        "segment",
        "swap",
        "two-records",
        swap(
            "record_segments",
            "segment",
            "rowid = (SELECT min(rowid) FROM record_segments WHERE batch = {b0} AND position = 1)",
            "rowid = (SELECT min(rowid) FROM record_segments WHERE batch = {b0} AND position = 0)",
        ),
        "b0",
    ),
    Scenario(
        "record_segments",
        "*",
        "delete",
        "the-copied-segment",
        sql("DELETE FROM record_segments WHERE batch = {b0} AND position = 1"),
        "b0",
    ),
    Scenario("record_segments", "*", "delete", "all", sql("DELETE FROM record_segments"), "any"),
    Scenario(
        "record_segments",
        "*",
        "duplicate",
        "row",
        sql("INSERT INTO record_segments SELECT * FROM record_segments WHERE batch = {ft} LIMIT 1"),
        "ft",
    ),
    Scenario(
        "record_segments",
        "*",
        "insert",
        "planted",
        sql("INSERT INTO record_segments VALUES ({b1}, 0, unhex(sha256('planted')))"),
        "b1",
    ),
    Scenario(
        "record_segments",
        "*",
        "reorder",
        "physical",
        rewrite_in_order("record_segments", "segment DESC"),
    ),
]

TALLY: dict[str, dict[str, int]] = {}
OUTCOMES: dict[str, str] = {}


def resolve(index: int | None | str, b: Built) -> int | None | str:
    names = {
        "call": b.call,
        "other": b.other_call,
        "dataset": b.dataset,
        "b0": b.batches[0],
        "b1": b.batches[1],
        "ckpt": b.checkpoint,
        "ft": b.fine_tune,
        "top": b.top,
        "last": b.size - 1,
        "size": b.size,
    }
    return names.get(index, index) if isinstance(index, str) else index


def note(table: str, outcome: str, scenario_id: str) -> None:
    TALLY.setdefault(table, {"tried": 0, "detected": 0, "survived": 0, "benign": 0})
    TALLY[table]["tried"] += 1
    TALLY[table][outcome] += 1
    OUTCOMES[scenario_id] = outcome


@dataclass(frozen=True)
class Tampered:
    """What the CLI's verify and the audit said about one tampered copy."""

    verified: Result
    verdict: str | None  # None: not audited (see `audited`)
    refused: bool = False  # the audit refused the file as a corrupt database


def audited(scenario: Scenario) -> bool:
    """The audit reads the lineage's entries and record rows. Its integrity phase is the same full verify,
    so for the tree, head and meta tables verify's verdict stands for both (and the scenarios stay fast)."""
    return (
        scenario.op == "reorder"
        or scenario.index == "corrupt"
        or scenario.table in ("entries", "records", "record_segments")
    )


def tamper_and_check(scenario: Scenario, built: Built, cli: CliPool, directory: Path) -> Tampered:
    db = copy_ledger(built, directory)
    with duckdb.connect(str(db)) as conn:
        scenario.apply(conn, built)
    verified = cli.run(["verify", "--db", str(db), "--json"], directory)
    if not audited(scenario):
        reading_never_crashes(db)
        return Tampered(verified, None)
    try:
        return Tampered(verified, audit(Ledger(db), "run/ckpt-2").verdict)
    except CorruptDatabaseError:
        return Tampered(verified, None, refused=True)


@pytest.fixture(scope="module")
def matrix(
    built: Built, cli: CliPool, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Tampered]:
    """Every scenario, two at a time (the CLI runs in its own processes, so both cores work)."""
    base = tmp_path_factory.mktemp("matrix")
    with ThreadPoolExecutor(2) as pool:
        found = pool.map(
            lambda item: tamper_and_check(item[1], built, cli, base / str(item[0])),
            enumerate(SCENARIOS),
        )
        return {s.id: result for s, result in zip(SCENARIOS, found)}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_tamper_matrix(scenario: Scenario, built: Built, matrix: dict[str, Tampered]) -> None:
    result = matrix[scenario.id]
    verified, verdict = result.verified, result.verdict
    want = resolve(scenario.index, built)
    if scenario.op == "reorder":  # physical order means nothing: must still verify, audit unchanged
        note(scenario.table, "benign", scenario.id)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verdict == "contaminated"
        return
    if want == "corrupt":  # below the schema: refused as a corrupt database, one line, exit 4
        note(scenario.table, "detected", scenario.id)
        assert (
            verified.returncode == 4
            and verified.stderr.startswith("error: ")
            and "schema" in verified.stderr
        ), verified
        # a read-only audit may still read the tables; then its verdict must be the true one
        assert result.refused or verdict in ("contaminated", "inconclusive"), verdict
        return
    survived = verified.returncode == 0 and verdict != "inconclusive"
    note(scenario.table, "survived" if survived else "detected", scenario.id)
    assert verified.returncode == 1, (
        f"verify exit {verified.returncode}: {verified.stdout[-500:]} {verified.stderr}"
    )
    document = json.loads(verified.stdout)
    assert document["ok"] is False and document["problems"]
    if want != "any":
        named = {p["index"] for p in document["problems"]}
        assert want in named, (want, document["problems"][:6])
    assert verdict in (None, "inconclusive"), verdict


def reading_never_crashes(db: Path) -> None:
    """On a tampered file every reading command fails as a LedgerError, if at all."""
    lg = Ledger(db)
    for read in (lg.status, lg.keys, lambda: lg.log(), lambda: lg.prove("run/ckpt-2")):
        try:
            read()
        except LedgerError:
            pass


def test_the_matrix_covers_every_table_and_column(built: Built) -> None:
    """A table or column added later must join the matrix (and verify), or this fails: nothing unchecked is kept."""
    with duckdb.connect(str(built.path), read_only=True) as conn:
        stored = set(
            conn.execute(
                "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = current_database() "
                "AND schema_name = 'main'"
            ).fetchall()
        )
    tables = {t for t, _ in stored}
    for table in tables:
        ops = {s.op for s in SCENARIOS if s.table == table}
        assert {"delete", "duplicate"} <= ops or table == "tree_head" and "delete" in ops, (
            table,
            ops,
        )
        if sum(1 for t, _ in stored if t == table) > 0 and table != "tree_head":
            assert {"change", "swap"} <= ops, (table, ops)
    for table, column in stored:
        changed = {s.op for s in SCENARIOS if (s.table, s.column) == (table, column)}
        assert "change" in changed, (table, column)
        if table != "tree_head":  # one row: nothing to swap with
            assert "swap" in changed, (table, column)


# --- insiders who hold keys ---------------------------------------------------------------------------


def insider_append(db: Path, leaves: Sequence[bytes]) -> int:
    """Append signed leaves with a correct tree and a head re-signed by the log key: only content checks can object."""
    log_key = keyfiles.load_key_file(db.with_name("ledger.keys") / "log.pem")
    conn = store.connect(db)
    try:
        with store.transaction(conn):
            stored = store.head(conn)
            bodies = [envelope_spec.parse_envelope(leaf).body() for leaf in leaves]
            facts = [entries.facts_of(body) for body in bodies]
            signers = [envelope_spec.parse_envelope(leaf).signatures[0][0] for leaf in leaves]
            root = store.append_entries(conn, stored.size, list(leaves), facts, signers)
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


def call_body(external_id: str, provider: str = "openai") -> dict[str, Any]:
    return entries.call_body(
        provider=provider,
        model="gpt-4o",
        endpoint="/v1/chat/completions",
        purpose="evaluation",
        request=None,
        response=hashlib.sha256(external_id.encode()).hexdigest(),
        outputs=[],
        external_id=external_id,
    )


def checkpoint_body(
    checkpoint_id: str, batches: Sequence[str] = (), parents: Sequence[str] = ()
) -> dict[str, Any]:
    return entries.checkpoint_body(
        id=checkpoint_id,
        weights=[{"path": "w.bin", "sha256": "ab" * 32}],
        parents=list(parents),
        batches=list(batches),
        teachers=[],
    )


def forge(body: dict[str, Any], claimed: keys.SigningKey) -> bytes:
    """An entry under `claimed`'s keyid, signed by someone else."""
    real = envelope_spec.parse_envelope(envelope_spec.sign_entry(body, keys.SigningKey.generate()))
    return envelope_spec.format_envelope(
        envelope_spec.Envelope(
            real.payload, real.payload_type, ((claimed.public.keyid, real.signatures[0][1]),)
        )
    )


def key_of(db: Path, name: str) -> keys.SigningKey:
    return keyfiles.load_key_file(db.with_name("ledger.keys") / f"{name}.pem")


Insider = Callable[
    [Path, Built], tuple[int, str | None]
]  # returns (index verify must name, checkpoint to audit)


def forged_signature(db: Path, b: Built) -> tuple[int, str | None]:
    trainer = key_of(db, "trainer")
    return insider_append(
        db, [forge(checkpoint_body("run/forged", batches=["run/ft"]), trainer)]
    ), "run/forged"


def signed_by_revoked_key(db: Path, b: Built) -> tuple[int, str | None]:
    bob = key_of(db, "bob")
    return insider_append(
        db, [envelope_spec.sign_entry(checkpoint_body("run/by-bob", batches=["run/ft"]), bob)]
    ), "run/by-bob"


def signed_by_unknown_key(db: Path, b: Built) -> tuple[int, str | None]:
    stranger = keys.SigningKey.generate()
    return insider_append(
        db,
        [envelope_spec.sign_entry(checkpoint_body("run/stranger", batches=["run/ft"]), stranger)],
    ), "run/stranger"


def swapped_public_key(db: Path, b: Built) -> tuple[int, str | None]:
    """A new key entry reusing trainer's keyid with mallory's key (signed by the log key), then mallory signs."""
    trainer, mallory, log_key = key_of(db, "trainer"), keys.SigningKey.generate(), key_of(db, "log")
    key_entry = envelope_spec.sign_entry(
        entries.key_body(trainer.public.keyid, mallory.public.b64, "trainer2", "recorder"), log_key
    )
    start = insider_append(db, [key_entry])
    fake = envelope_spec.sign_entry(checkpoint_body("run/mallory", batches=["run/ft"]), mallory)
    signed = envelope_spec.parse_envelope(fake)
    leaf = envelope_spec.format_envelope(
        envelope_spec.Envelope(
            signed.payload, signed.payload_type, ((trainer.public.keyid, signed.signatures[0][1]),)
        )
    )
    insider_append(db, [leaf])
    return start, "run/mallory"


def duplicate_batch_id(db: Path, b: Built) -> tuple[int, str | None]:
    trainer = key_of(db, "trainer")
    body = entries.batch_body(id="run/ft", count=0, records_root=hashlib.sha256(b"").hexdigest())
    return insider_append(db, [envelope_spec.sign_entry(body, trainer)]), None


def duplicate_checkpoint_id(db: Path, b: Built) -> tuple[int, str | None]:
    trainer = key_of(db, "trainer")
    return insider_append(
        db, [envelope_spec.sign_entry(checkpoint_body("run/ckpt-1", batches=["run/ft"]), trainer)]
    ), None


def duplicate_call(db: Path, b: Built) -> tuple[int, str | None]:
    trainer = key_of(db, "trainer")
    return insider_append(
        db, [envelope_spec.sign_entry(call_body("chatcmpl-eval-1"), trainer)]
    ), None


def forward_batch_reference(db: Path, b: Built) -> tuple[int, str | None]:
    trainer = key_of(db, "trainer")
    later = entries.batch_body(
        id="run/later", count=0, records_root=hashlib.sha256(b"").hexdigest()
    )
    start = insider_append(
        db,
        [
            envelope_spec.sign_entry(checkpoint_body("run/early", batches=["run/later"]), trainer),
            envelope_spec.sign_entry(later, trainer),
        ],
    )
    return start, "run/early"


def forward_parent_reference(db: Path, b: Built) -> tuple[int, str | None]:
    trainer = key_of(db, "trainer")
    start = insider_append(
        db,
        [
            envelope_spec.sign_entry(checkpoint_body("run/child", parents=["run/parent"]), trainer),
            envelope_spec.sign_entry(checkpoint_body("run/parent", batches=["run/ft"]), trainer),
        ],
    )
    return start, "run/child"


def forward_derived_from(db: Path, b: Built) -> tuple[int, str | None]:
    trainer = key_of(db, "trainer")
    size = Ledger(db).head().size
    body = entries.batch_body(
        id="run/derived", count=0, records_root=hashlib.sha256(b"").hexdigest()
    )
    body["derived_from"] = [size + 1]
    start = insider_append(
        db,
        [
            envelope_spec.sign_entry(body, trainer),
            envelope_spec.sign_entry(call_body("chatcmpl-late"), trainer),
        ],
    )
    return start, None


def key_entry_by_recorder(db: Path, b: Built) -> tuple[int, str | None]:
    trainer, new = key_of(db, "trainer"), keys.SigningKey.generate()
    return insider_append(
        db,
        [
            envelope_spec.sign_entry(
                entries.key_body(new.public.keyid, new.public.b64, "eve", "recorder"), trainer
            )
        ],
    ), None


def revoke_by_recorder(db: Path, b: Built) -> tuple[int, str | None]:
    trainer, log_key = key_of(db, "trainer"), key_of(db, "log")
    return insider_append(
        db, [envelope_spec.sign_entry(entries.revoke_body(log_key.public.keyid, "coup"), trainer)]
    ), None


INSIDERS: dict[str, Insider] = {
    "forged-signature": forged_signature,
    "signed-by-revoked-key": signed_by_revoked_key,
    "signed-by-unknown-key": signed_by_unknown_key,
    "swapped-public-key": swapped_public_key,
    "duplicate-batch-id": duplicate_batch_id,
    "duplicate-checkpoint-id": duplicate_checkpoint_id,
    "duplicate-call": duplicate_call,
    "forward-batch-reference": forward_batch_reference,
    "forward-parent-reference": forward_parent_reference,
    "forward-derived-from": forward_derived_from,
    "key-entry-by-recorder": key_entry_by_recorder,
    "revoke-by-recorder": revoke_by_recorder,
}


@pytest.mark.parametrize("attack", list(INSIDERS))
def test_insider_with_keys(attack: str, built: Built, cli: CliPool, tmp_path: Path) -> None:
    """Entries a key holder can append with a consistent tree and head: verify names them, audit is inconclusive."""
    db = copy_ledger(built, tmp_path)
    index, target = INSIDERS[attack](db, built)
    verified = cli.run(["verify", "--db", str(db), "--json"], tmp_path)
    document = json.loads(verified.stdout) if verified.stdout else {}
    detected = verified.returncode == 1 and index in {
        p["index"] for p in document.get("problems", [])
    }
    verdict = audit(Ledger(db), target or "run/ckpt-2").verdict
    note("insider", "detected" if detected or verdict == "inconclusive" else "survived", attack)
    assert detected, (verified.returncode, document.get("problems", [])[:5], verified.stderr)
    if target is not None:
        assert verdict == "inconclusive"


# --- published tree heads: rollback and rewritten history --------------------------------------------


def test_rollback_and_rewrite_against_published_heads(
    built: Built, cli: CliPool, tmp_path: Path
) -> None:
    """Without a published head a lab can roll back or rebuild its file; with one, verify and consistency object."""
    db = copy_ledger(built, tmp_path / "lab")
    older = tmp_path / "older.duckdb"
    shutil.copyfile(db, older)
    lab = tmp_path / "lab"
    (tmp_path / "more.jsonl").write_text(
        '{"text": "one more training example about the tides of the sea"}\n'
    )
    assert (
        cli.run(
            [
                "record",
                "batch",
                str(tmp_path / "more.jsonl"),
                "--id",
                "run/more",
                "--key",
                "trainer",
                "--db",
                str(db),
            ],
            lab,
        ).returncode
        == 0
    )
    published = tmp_path / "published.txt"
    assert cli.run(["head", "--out", str(published), "--db", str(db)], lab).returncode == 0

    # 1. rollback: the file is replaced by the older copy
    shutil.copyfile(older, db)
    plain = cli.run(["verify", "--db", str(db)], lab)
    since = cli.run(["verify", "--since", str(published), "--db", str(db), "--json"], lab)
    consistency = cli.run(["consistency", "--from", str(published), "--db", str(db)], lab)
    note(
        "published-head",
        "survived" if plain.returncode == 0 else "detected",
        "rollback without a published head",
    )
    note(
        "published-head",
        "detected" if since.returncode == 1 else "survived",
        "rollback vs published head",
    )
    assert plain.returncode == 0  # a consistent older file: only a head held elsewhere can tell
    assert since.returncode == 1 and "rolled back" in since.stdout
    assert consistency.returncode == 1 and consistency.stderr.startswith("error: ")

    # 2. rewrite: the contaminated dataset is replaced by a clean one under the same ids, and the log grows
    # past the published size; everything is re-signed with the lab's own keys.
    clean_dir = tmp_path / "clean"
    clean = Ledger.init(clean_dir / "ledger.duckdb", origin=ORIGIN)
    shutil.rmtree(clean_dir / "ledger.keys")
    shutil.copytree(lab / "ledger.keys", clean_dir / "ledger.keys")
    shutil.copyfile(older, clean.path)
    with duckdb.connect(
        str(clean.path)
    ) as conn:  # cut the log back to before the dataset, rows and all
        cut = built.dataset
        for statement in (
            "DELETE FROM entries WHERE idx >= ?",
            "DELETE FROM nodes WHERE (idx + 1) << level > ?",
            "DELETE FROM records WHERE batch >= ?",
            "DELETE FROM record_segments WHERE batch >= ?",
        ):
            conn.execute(statement, [cut])
        root = store.stored_root(conn, cut)
        note_text = note_spec.sign_tree_head(
            note_spec.TreeHead(ORIGIN, cut, root), key_of(clean.path, "log")
        )
        store.write_head(conn, cut, root, note_text)
    rewriter = Ledger.open(clean.path, key="trainer")
    rewriter.record_batch(
        [{"text": f"an honest record number {i} written by our editors"} for i in range(6)],
        id="run/data",
        split=3,
    )
    rewriter.record_checkpoint(
        id="run/ckpt-1", weights=[built.path.with_name("w1.bin")], batches=["run/data"]
    )
    padding = 0
    while rewriter.head().size < int(published.read_text().split("\n")[1]):
        rewriter.record_batch([{"text": f"padding {padding}"}], id=f"run/pad-{padding}")
        padding += 1
    plain = cli.run(["verify", "--db", str(clean.path)], clean_dir)
    since = cli.run(
        ["verify", "--since", str(published), "--db", str(clean.path), "--json"], clean_dir
    )
    note(
        "published-head",
        "survived" if plain.returncode == 0 else "detected",
        "rewrite without a published head",
    )
    note(
        "published-head",
        "detected" if since.returncode == 1 else "survived",
        "rewrite vs published head",
    )
    assert (
        plain.returncode == 0 and audit(rewriter, "run/ckpt-1").verdict == "clean"
    )  # the known limit
    assert since.returncode == 1 and "history was rewritten" in since.stdout


# --- keys: never in the database, 0600, rotation and revocation end to end -------------------------


def secrets_of(keys_dir: Path) -> list[bytes]:
    """Byte strings that would betray a private key: PEM bodies, raw seeds (binary, hex and base64)."""
    found: list[bytes] = []
    for pem in keys_dir.glob("*.pem"):
        data = pem.read_bytes()
        found += [line for line in data.splitlines() if line and b"-----" not in line]
        key = keyfiles.load_key_file(pem)
        seed = key.private.private_bytes_raw()
        found += [seed, seed.hex().encode(), base64.b64encode(seed)]
    return found


def test_keys_rotation_revocation_and_hygiene(cli: CliPool, tmp_path: Path) -> None:
    db = tmp_path / "ledger.duckdb"
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a training record that is long enough to be a segment"}\n')

    def ok(*args: str) -> dict[str, Any] | list[Any]:
        result = cli.run([*args, "--db", str(db), "--json"], tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        return json.loads(result.stdout) if result.stdout.strip() else {}

    def refused(*args: str, words: Sequence[str]) -> None:
        result = cli.run([*args, "--db", str(db)], tmp_path)
        assert result.returncode == 4 and len(result.stderr.splitlines()) == 1, (
            args,
            result.stderr,
        )
        assert all(w in result.stderr for w in words), (words, result.stderr)

    ok("init", "--origin", ORIGIN)
    assert (
        cli.run(["head", "--out", str(tmp_path / "h0.txt"), "--db", str(db)], tmp_path).returncode
        == 0
    )
    ok("keys", "new", "--name", "trainer")
    ok("record", "batch", str(data), "--id", "b1", "--key", "trainer")
    old_trainer = tmp_path / "ledger.keys" / "trainer.pem"
    old_copy = tmp_path / "old-trainer.pem"
    shutil.copyfile(old_trainer, old_copy)
    old_copy.chmod(0o600)
    ok("keys", "rotate", "trainer")
    assert list((tmp_path / "ledger.keys").glob("trainer.*.retired.pem"))
    refused(
        "record",
        "batch",
        str(data),
        "--id",
        "b2",
        "--key",
        str(old_copy),
        words=["old-trainer.pem", "revoked"],
    )
    ok("record", "batch", str(data), "--id", "b2", "--key", "trainer")
    ok("keys", "revoke", "trainer", "--reason", "laptop lost")
    refused(
        "record",
        "batch",
        str(data),
        "--id",
        "b3",
        "--key",
        "trainer",
        words=["trainer.pem", "revoked"],
    )
    ok("keys", "rotate", "log")
    refused(
        "record",
        "batch",
        str(data),
        "--id",
        "b3",
        "--key",
        str(tmp_path / "ledger.keys" / "missing.pem"),
        words=["missing.pem"],
    )
    listed = ok("keys", "list")
    assert isinstance(listed, list)
    assert [(k["role"], k["revoked"]) for k in listed] == [
        ("log", True),
        ("recorder", False),  # `default`, from init
        ("recorder", True),
        ("recorder", True),
        ("log", False),
    ]
    head = ok("head")
    assert isinstance(head, dict)
    note_spec.verify_tree_head(head["note"], listed[-1]["vkey"])  # signed by the new log key
    assert (
        cli.run(
            ["verify", "--since", str(tmp_path / "h0.txt"), "--db", str(db)], tmp_path
        ).returncode
        == 0
    )
    assert (
        cli.run(
            ["consistency", "--from", str(tmp_path / "h0.txt"), "--db", str(db)], tmp_path
        ).returncode
        == 0
    )

    keys_dir = tmp_path / "ledger.keys"
    assert stat.S_IMODE(keys_dir.stat().st_mode) & 0o077 == 0
    for pem in keys_dir.iterdir():
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600, pem
    stored = db.read_bytes() + (
        db.with_name(db.name + ".wal").read_bytes()
        if db.with_name(db.name + ".wal").exists()
        else b""
    )
    leaked = [
        s for s in secrets_of(keys_dir) + [old_copy.read_bytes().splitlines()[1]] if s in stored
    ]
    assert not leaked
    with duckdb.connect(str(db), read_only=True) as conn:  # and no column anywhere holds a PEM
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE data_type IN ('VARCHAR', 'BLOB') "
            "AND database_name = current_database() AND schema_name = 'main'"
        ).fetchall():
            (hits,) = conn.execute(
                f"SELECT count(*) FROM {table} WHERE CAST({column} AS VARCHAR) LIKE '%PRIVATE KEY%'"
            ).fetchone() or (0,)
            assert hits == 0, (table, column)


# --- the summary --------------------------------------------------------------------------------------


def test_zz_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Print tried / detected / survived per table (the only survivors may be those needing a published head)."""
    if not TALLY:
        pytest.skip("no scenario ran")
    width = max(len(t) for t in TALLY)
    lines = [f"tamper scenarios  {'table'.ljust(width)}  tried  detected  survived  benign"]
    totals = {"tried": 0, "detected": 0, "survived": 0, "benign": 0}
    for table, counts in TALLY.items():
        lines.append(
            f"                  {table.ljust(width)}  {counts['tried']:5d}  {counts['detected']:8d}  "
            f"{counts['survived']:8d}  {counts['benign']:6d}"
        )
        totals = {k: totals[k] + counts[k] for k in totals}
    lines.append(
        f"                  {'total'.ljust(width)}  {totals['tried']:5d}  {totals['detected']:8d}  "
        f"{totals['survived']:8d}  {totals['benign']:6d}"
    )
    survivors = sorted(k for k, v in OUTCOMES.items() if v == "survived")
    lines.append(f"survived: {'; '.join(survivors) or 'none'}")
    with capsys.disabled():  # past pytest's output capture, so the counts show in every run
        print("\n" + "\n".join(lines), file=sys.stderr)
    assert survivors == sorted(k for k in survivors if "without a published head" in k)
