"""Store: schema migrations and proofs from stored nodes."""

from __future__ import annotations

from pathlib import Path

import duckdb

from ledger import Ledger
from ledger.log import store
from ledger.spec import merkle


def _indexes(path: Path) -> set[str]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return {
            str(r[0]) for r in conn.execute("SELECT index_name FROM duckdb_indexes()").fetchall()
        }
    finally:
        conn.close()


def test_version_1_file_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "ledger.duckdb"
    lg = Ledger.init(path, origin="example.org/migrate")
    lg.new_key("trainer")
    conn = duckdb.connect(str(path))
    conn.execute("DROP INDEX nodes_by_idx")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    assert "nodes_by_idx" not in _indexes(path)

    proof = Ledger.open(path).prove(1)  # opening for an operation migrates the file
    merkle.verify_inclusion(proof.leaf_hash, 1, proof.size, proof.proof, proof.root)
    assert "nodes_by_idx" in _indexes(path)
    with store.session(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [
            (str(store.SCHEMA_VERSION),)
        ]


def test_proof_nodes_come_from_the_index_and_ignore_other_levels(tmp_path: Path) -> None:
    lg = Ledger.init(tmp_path / "ledger.duckdb", origin="example.org/nodes")
    for i in range(20):
        lg.new_key(f"k{i}")
    head = lg.head()
    for index in range(head.size):
        proof = lg.prove(index)
        merkle.verify_inclusion(proof.leaf_hash, index, head.size, proof.proof, head.root)


def test_expected_columns_are_what_the_schema_creates() -> None:
    """The written-out column list used to check every opened file matches what the schema builds."""
    with duckdb.connect() as memory:
        store.create_schema(memory, "example.org/columns")
        columns = memory.execute(
            """SELECT table_name, column_name, data_type FROM duckdb_columns()
               WHERE database_name = current_database() AND schema_name = 'main'"""
        ).fetchall()
        created = frozenset(tuple(row) for row in columns)
    assert created == store.EXPECTED_COLUMNS
