"""DuckDB storage: schema, migrations, connections with a bounded lock wait, and the append transaction.

The store never holds the file between operations: each operation opens, works and closes, so a training
process that holds a `Ledger` never blocks `ledger head`, `verify` or another recorder for long.

Tables (every row is covered by the log, by the latest tree head, or derived from such rows and re-checked
by `verify`/`audit`):
- entries(idx, leaf, kind, time, signer, ref, provider, model, purpose): leaf bytes are the log; the other
  columns are derived from the leaf's body.
- nodes(level, idx, hash): hashes of every perfect subtree of the log tree, level 0 = leaf hashes.
- tree_head(size, root, note): the latest signed tree head only.
- records(batch, position, digest, fingerprint) and record_segments(batch, position, segment): a batch's
  record set; `records_root` in the batch entry commits to both, `fingerprints.root` to the fingerprints.
- meta(key, value): schema version and origin.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import duckdb

from ledger.errors import (
    CorruptDatabaseError,
    LedgerError,
    LockedError,
    NotFoundError,
    UsageError,
    VerificationError,
)
from ledger.spec import merkle
from ledger.spec.entries import EntryFacts
from ledger.wording import plural

SCHEMA_VERSION = 2
# The signed body of an entry leaf, decoded in SQL (the leaf is the JCS DSSE envelope, its payload base64
# JCS). Every step is try(): a tampered leaf (verify names it) decodes to NULL instead of aborting a
# whole query with a DuckDB error. Callers re-check anything they act on against the decoded body.
PAYLOAD_JSON: Final = (
    "try(decode(try(from_base64(try(json_extract_string(try(decode(leaf)), '$.payload'))))))"
)
DEFAULT_LOCK_TIMEOUT = 30.0

Connection = duckdb.DuckDBPyConnection
"""An open ledger database; other rooms name the type through the store, never through duckdb."""

# Proofs look up O(log n) nodes by position; an index on idx keeps that to milliseconds at millions of
# entries (a scan of `nodes` is ~50 ms at 1M). Each idx holds at most one node per level.
_NODES_INDEX = "CREATE INDEX nodes_by_idx ON nodes(idx)"

_SCHEMA = [
    "CREATE TABLE meta(key VARCHAR NOT NULL, value VARCHAR NOT NULL)",
    """CREATE TABLE entries(
        idx BIGINT NOT NULL, leaf BLOB NOT NULL, kind VARCHAR NOT NULL, time VARCHAR NOT NULL,
        signer VARCHAR NOT NULL, ref VARCHAR, provider VARCHAR, model VARCHAR, purpose VARCHAR)""",
    "CREATE TABLE nodes(level TINYINT NOT NULL, idx BIGINT NOT NULL, hash BLOB NOT NULL)",
    _NODES_INDEX,
    "CREATE TABLE tree_head(size BIGINT NOT NULL, root BLOB NOT NULL, note VARCHAR NOT NULL)",
    """CREATE TABLE records(batch BIGINT NOT NULL, position BIGINT NOT NULL, digest BLOB NOT NULL,
        fingerprint BLOB)""",
    "CREATE TABLE record_segments(batch BIGINT NOT NULL, position BIGINT NOT NULL, segment BLOB NOT NULL)",
]

# Migrations from version N to N+1, applied in order inside one transaction.
_MIGRATIONS: dict[int, list[str]] = {1: [_NODES_INDEX]}


def lock_timeout() -> float:
    raw = os.environ.get("LEDGER_LOCK_TIMEOUT")
    if raw is None:
        return DEFAULT_LOCK_TIMEOUT
    try:
        return max(0.0, float(raw))
    except ValueError as exc:
        raise LedgerError(f"LEDGER_LOCK_TIMEOUT={raw!r}: expected a number of seconds") from exc


@dataclass(frozen=True)
class StoredHead:
    origin: str
    size: int
    root: bytes
    note: str


@dataclass(frozen=True)
class StoredEntry:
    index: int
    leaf: bytes
    kind: str
    time: str
    signer: str
    ref: str | None


log = logging.getLogger(__name__)
"""Says (at INFO) when an open has to wait for another process's lock; the CLI shows it on stderr."""

_LOCK_HOLDER = re.compile(r"\(PID (\d+)\)")


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Could not set lock" in text or "Conflicting lock" in text)


def connect(
    path: Path, *, create: bool = False, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open the ledger file, waiting with back-off while another process holds it."""
    if not create and not path.exists():
        raise NotFoundError(f"{path}: no ledger here (run `ledger init` or pass --db)")
    if create and path.exists():
        raise LedgerError(f"{path}: a file already exists there")
    deadline = time.monotonic() + lock_timeout()
    delay = 0.01
    told = False
    while True:
        try:
            conn = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.Error as exc:
            if not _is_lock_error(exc):
                raise CorruptDatabaseError(
                    f"{path}: cannot open as a ledger database: {_first_line(exc)}"
                ) from exc
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"{path}: still locked by another process after {lock_timeout():g}s "
                    "(set LEDGER_LOCK_TIMEOUT to wait longer)"
                ) from exc
            if not told:
                told = True
                holder = _LOCK_HOLDER.search(str(exc))
                log.info(
                    "waiting for %s: locked by another process%s; up to LEDGER_LOCK_TIMEOUT=%g s",
                    path,
                    f" (PID {holder.group(1)})" if holder else "",
                    lock_timeout(),
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
    if not create:
        try:
            _check_schema(conn, path, read_only)
        except BaseException:
            conn.close()
            raise
    return conn


def _one(result: duckdb.DuckDBPyConnection) -> tuple[Any, ...] | None:
    """The first row, fetching to the end: a half-read result blocks `register` on the connection."""
    rows = result.fetchall()
    return tuple(rows[0]) if rows else None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _check_schema(conn: duckdb.DuckDBPyConnection, path: Path, read_only: bool = False) -> None:
    try:
        row = _one(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'"))
    except duckdb.Error as exc:
        raise CorruptDatabaseError(f"{path}: not a ledger database (no meta table)") from exc
    if row is None:
        raise CorruptDatabaseError(f"{path}: not a ledger database (no schema version)")
    try:
        version = int(str(row[0]))
    except ValueError:
        version = 0
    if (
        version < 1
    ):  # no ledger ever had such a version: a damaged meta row, not something to migrate
        raise CorruptDatabaseError(
            f"{path}: expected a schema version 1..{SCHEMA_VERSION}, found {str(row[0])[:40]!r}"
        )
    if version > SCHEMA_VERSION:
        raise CorruptDatabaseError(
            f"{path}: schema version {version} is newer than this ledger ({SCHEMA_VERSION})"
        )
    if version < SCHEMA_VERSION and not read_only:  # a read-only open works on the old schema
        try:
            migrate(conn, version)
        except duckdb.Error as exc:
            raise CorruptDatabaseError(
                f"{path}: cannot migrate schema version {version}: {_first_line(exc)}"
            ) from exc
    try:  # binding one empty query over every expected column costs well under a millisecond
        conn.execute(_probe_sql()).fetchall()
    except duckdb.Error:
        found = {tuple(r) for r in conn.execute(_COLUMNS_SQL).fetchall()}
        missing = sorted(EXPECTED_COLUMNS - found) or sorted(EXPECTED_COLUMNS)
        names = ", ".join(f"{table}.{column} {kind}" for table, column, kind in missing[:4])
        raise CorruptDatabaseError(
            f"{path}: not a ledger database (expected columns {names}, found none)"
        ) from None


_COLUMNS_SQL = """SELECT table_name, column_name, data_type FROM duckdb_columns()
                  WHERE database_name = current_database() AND schema_name = 'main'"""


@functools.cache
def _probe_sql() -> str:
    tables: dict[str, list[str]] = {}
    for table, column, _ in sorted(EXPECTED_COLUMNS):
        tables.setdefault(table, []).append(f'"{column}"')
    return "SELECT 1 FROM " + ", ".join(
        f'(SELECT {", ".join(columns)} FROM "{table}" LIMIT 0) AS "_{table}"'
        for table, columns in tables.items()
    )


EXPECTED_COLUMNS: Final = frozenset(
    (table, column, kind)
    for table, columns in {
        "meta": {"key": "VARCHAR", "value": "VARCHAR"},
        "entries": {
            "idx": "BIGINT",
            "leaf": "BLOB",
            "kind": "VARCHAR",
            "time": "VARCHAR",
            "signer": "VARCHAR",
            "ref": "VARCHAR",
            "provider": "VARCHAR",
            "model": "VARCHAR",
            "purpose": "VARCHAR",
        },
        "nodes": {"level": "TINYINT", "idx": "BIGINT", "hash": "BLOB"},
        "tree_head": {"size": "BIGINT", "root": "BLOB", "note": "VARCHAR"},
        "records": {
            "batch": "BIGINT",
            "position": "BIGINT",
            "digest": "BLOB",
            "fingerprint": "BLOB",
        },
        "record_segments": {"batch": "BIGINT", "position": "BIGINT", "segment": "BLOB"},
    }.items()
    for column, kind in columns.items()
)
"""The tables and columns every query relies on, as `_SCHEMA` creates them: a file without them fails
one clear way, not many odd ones. Written out so that opening a ledger does not build a scratch
database to learn them (tests check the two agree)."""


def migrate(conn: duckdb.DuckDBPyConnection, version: int) -> None:
    conn.execute("BEGIN TRANSACTION")
    try:
        for step in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS.get(step, []):
                conn.execute(statement)
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)]
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


@contextmanager
def session(path: Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    conn = connect(path, read_only=read_only)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: a failure (or a kill) before COMMIT leaves the file as it was."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def create_schema(conn: duckdb.DuckDBPyConnection, origin: str) -> None:
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("schema_version", str(SCHEMA_VERSION)), ("origin", origin)],
    )


def create(
    path: Path,
    origin: str,
    leaves: Sequence[bytes],
    facts: Sequence[EntryFacts],
    signers: Sequence[str],
    sign_head: Callable[[bytes], str],
) -> None:
    """A new ledger file at `path` holding the first entries and their tree head (`sign_head(root)` signs
    it), in one transaction, checkpointed before it is closed."""
    conn = connect(path, create=True)
    try:
        with transaction(conn):
            create_schema(conn, origin)
            root = append_entries(conn, 0, leaves, facts, signers)
            write_head(conn, len(leaves), root, sign_head(root))
        conn.execute("CHECKPOINT")
    finally:
        conn.close()


def origin(conn: duckdb.DuckDBPyConnection) -> str:
    row = _one(conn.execute("SELECT value FROM meta WHERE key = 'origin'"))
    if row is None:
        raise CorruptDatabaseError("the ledger has no origin")
    return str(row[0])


def head(conn: duckdb.DuckDBPyConnection) -> StoredHead:
    rows = conn.execute("SELECT size, root, note FROM tree_head").fetchall()
    if len(rows) != 1:
        raise VerificationError(f"expected exactly one stored tree head, found {len(rows)}")
    size, root, note = rows[0]
    return StoredHead(origin(conn), int(size), bytes(root), str(note))


def entry_count(conn: duckdb.DuckDBPyConnection) -> int:
    row = _one(conn.execute("SELECT count(*) FROM entries"))
    return int(row[0]) if row else 0


def fetch_nodes(
    conn: duckdb.DuckDBPyConnection, wanted: set[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """The stored perfect-subtree hashes for `wanted`, in one query; a missing or duplicated one is tampering."""
    if not wanted:
        return {}
    idxs = sorted({idx for _, idx in wanted})
    rows = conn.execute("SELECT level, idx, hash FROM nodes WHERE idx = ANY(?)", [idxs]).fetchall()
    found: dict[tuple[int, int], bytes] = {}
    for level, idx, digest in rows:
        key = (int(level), int(idx))
        if key not in wanted:
            continue
        if key in found:
            raise VerificationError(f"tree node {key} is stored twice")
        found[key] = bytes(digest)
    missing = wanted - found.keys()
    if missing:
        raise VerificationError(f"tree nodes missing from the store: {sorted(missing)[:3]}")
    return found


def stored_root(conn: duckdb.DuckDBPyConnection, size: int) -> bytes:
    if size == 0:
        return merkle.EMPTY_ROOT
    nodes = fetch_nodes(conn, merkle.needed_nodes([(0, size)]))
    return merkle.range_hash(0, size, nodes)


def check_head(conn: duckdb.DuckDBPyConnection) -> StoredHead:
    """Compare-and-swap guard: the stored head must describe exactly the stored log before we extend it."""
    stored = head(conn)
    count = entry_count(conn)
    if count != stored.size:
        raise VerificationError(
            f"the tree head covers {plural(stored.size, 'entry', 'entries')} but the log holds {count}"
        )
    root = stored_root(conn, stored.size)
    if root != stored.root:
        raise VerificationError(
            f"stored tree nodes give root {root.hex()}, the tree head says {stored.root.hex()}"
        )
    return stored


def append_entries(
    conn: duckdb.DuckDBPyConnection,
    start: int,
    leaves: Sequence[bytes],
    facts: Sequence[EntryFacts],
    signers: Sequence[str],
) -> bytes:
    """Insert entries start.. and their tree nodes; return the new root. Caller holds the transaction."""
    import pyarrow as pa  # type: ignore[import-untyped]

    # Columns from their buffers: pa.array of Python values would import pandas (engine.columns).
    from ledger.engine.columns import bytes_column, int_column

    leaf_hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
    frontier = fetch_nodes(conn, set(merkle.frontier_nodes(start)))
    new_nodes, new_root = merkle.append_nodes(frontier, start, leaf_hashes)
    table = pa.table(
        {
            "idx": int_column(range(start, start + len(leaves)), "int64"),
            "leaf": bytes_column(leaves, text=False),
            "kind": bytes_column([f.kind for f in facts], text=True),
            "time": bytes_column([f.time for f in facts], text=True),
            "signer": bytes_column(signers, text=True),
            "ref": bytes_column([f.ref for f in facts], text=True),
            "provider": bytes_column([f.provider for f in facts], text=True),
            "model": bytes_column([f.model for f in facts], text=True),
            "purpose": bytes_column([f.purpose for f in facts], text=True),
        }
    )
    node_table = pa.table(
        {
            "level": int_column([n[0] for n in new_nodes], "int8"),
            "idx": int_column([n[1] for n in new_nodes], "int64"),
            "hash": bytes_column([n[2] for n in new_nodes], text=False),
        }
    )
    conn.register("_new_entries", table)
    conn.register("_new_nodes", node_table)
    try:
        conn.execute("INSERT INTO entries SELECT * FROM _new_entries")
        conn.execute("INSERT INTO nodes SELECT * FROM _new_nodes")
    finally:
        conn.unregister("_new_entries")
        conn.unregister("_new_nodes")
    return new_root


def write_head(conn: duckdb.DuckDBPyConnection, size: int, root: bytes, note: str) -> None:
    conn.execute("DELETE FROM tree_head")
    conn.execute("INSERT INTO tree_head VALUES (?, ?, ?)", [size, root, note])


def _entry(row: Sequence[Any]) -> StoredEntry:
    return StoredEntry(int(row[0]), bytes(row[1]), str(row[2]), str(row[3]), str(row[4]), row[5])


_ENTRY_COLUMNS = "idx, leaf, kind, time, signer, ref"


def entry_at(conn: duckdb.DuckDBPyConnection, index: int) -> StoredEntry:
    rows = conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE idx = ?", [index]).fetchall()
    if not rows:
        raise NotFoundError(f"no entry at index {index}")
    if len(rows) > 1:
        raise VerificationError(f"entry index {index} is stored {len(rows)} times", index)
    return _entry(rows[0])


def find_ref(
    conn: duckdb.DuckDBPyConnection, ref: str, kinds: Sequence[str] | None = None
) -> list[StoredEntry]:
    sql = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE ref = ?"
    params: list[Any] = [ref]
    if kinds:
        sql += " AND list_contains(?::VARCHAR[], kind)"
        params.append(list(kinds))
    return [_entry(r) for r in conn.execute(sql + " ORDER BY idx", params).fetchall()]


def resolve(
    conn: duckdb.DuckDBPyConnection, ref: str, kinds: Sequence[str] | None = None
) -> StoredEntry:
    """A REF is an entry index, a batch/checkpoint/dataset id, a call's external id, or a call's
    custom id (a Batch line's own id) where one call alone has it; looked up in that order."""
    if ref.isdigit():
        entry = entry_at(conn, int(ref))
        if kinds and entry.kind not in kinds:
            raise NotFoundError(f"entry {ref} is a {entry.kind}, not a {' or '.join(kinds)}")
        return entry
    found = find_ref(conn, ref, kinds or ("batch", "checkpoint", "dataset", "call"))
    if (
        len(found) > 1
    ):  # calls of two providers with one external id, or a call id equal to a batch id
        named = ", ".join(f"{e.kind} entry {e.index}" for e in found[:10])
        raise UsageError(
            f"{ref!r} names {len(found)} entries ({named}); give the entry index instead"
        )
    if found:
        return found[0]
    if not kinds or "call" in kinds:
        by_custom_id = calls_with_custom_id(conn, ref)
        if len(by_custom_id) > 1:
            raise UsageError(ambiguous_custom_id(ref, by_custom_id))
        if by_custom_id:
            return entry_at(conn, by_custom_id[0])
    what = " or ".join(kinds) if kinds else "entry"
    raise NotFoundError(f"no {what} with id {ref!r}")


def calls_with_custom_id(conn: duckdb.DuckDBPyConnection, custom_id: str) -> list[int]:
    """Indexes of the call entries whose body has this `custom_id`, in index order.

    The custom id is not a stored column: it is read from each call's signed body, so this scans the
    calls; it runs only for a REF that named nothing cheaper.
    """
    rows = conn.execute(
        f"""SELECT idx FROM entries WHERE kind = 'call'
            AND try(json_extract_string({PAYLOAD_JSON}, '$.custom_id')) = ? ORDER BY idx""",
        [custom_id],
    ).fetchall()
    return [int(r[0]) for r in rows]


def ambiguous_custom_id(custom_id: str, indexes: Sequence[int], shown: int = 10) -> str:
    """What to say when several calls have the custom id given as a REF."""
    listed = ", ".join(str(i) for i in indexes[:shown])
    if len(indexes) > shown:
        listed += f" and {len(indexes) - shown} more"
    return (
        f"{len(indexes)} calls (entries {listed}) have the custom id {custom_id!r}; "
        "give the entry index instead"
    )


def iter_entries(
    conn: duckdb.DuckDBPyConnection,
    *,
    kinds: Sequence[str] | None = None,
    since: datetime | None = None,
    provider: str | None = None,
    purpose: str | None = None,
    start: int = 0,
    limit: int | None = None,
    descending: bool = False,
    chunk: int = 10_000,
) -> Iterator[StoredEntry]:
    """Entries in index order, filtered, fetched in chunks so memory stays flat.

    `since` compares instants: entry times are RFC 3339 text, read as TIMESTAMPTZ.
    """
    where = ["idx >= ?"]
    params: list[Any] = [start]
    if kinds:
        where.append("list_contains(?::VARCHAR[], kind)")
        params.append(list(kinds))
    if since is not None:
        where.append("TRY_CAST(time AS TIMESTAMPTZ) >= ?::TIMESTAMPTZ")
        params.append(since)
    if provider:
        where.append("provider = ?")
        params.append(provider)
    if purpose:
        where.append("purpose = ?")
        params.append(purpose)
    order = "DESC" if descending else "ASC"
    sql = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE {' AND '.join(where)} ORDER BY idx {order}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    result = conn.execute(sql, params)
    while True:
        rows = result.fetchmany(chunk)
        if not rows:
            return
        for row in rows:
            yield _entry(row)


def counts_by_kind(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    rows = conn.execute("SELECT kind, count(*) FROM entries GROUP BY kind ORDER BY kind").fetchall()
    return {str(k): int(n) for k, n in rows}


def table_counts(conn: duckdb.DuckDBPyConnection) -> Mapping[str, int]:
    out = {}
    for table in ("entries", "nodes", "records", "record_segments"):
        row = _one(conn.execute(f"SELECT count(*) FROM {table}"))
        out[table] = int(row[0]) if row else 0
    return out
