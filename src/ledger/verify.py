"""Full-log verification (`ledger verify`) and the record-set recomputation the audit reuses.

Nothing stored is trusted: every leaf is re-parsed and its signature checked against the keys the log
itself introduced (revocations honoured), every derived column and tree node is recomputed from the
leaves, the stored tree head must describe exactly that log, and every batch's stored record set must
recompute to the `records_root` its signed entry commits to. Tampering is collected as `Problem`s (one
per defect, naming the entry index where there is one) so the user sees all of it at once; only
operational failures (missing, locked or unreadable file; a malformed published head) raise.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from ledger import entries, keys, merkle, store
from ledger.errors import CorruptDatabaseError, InputError, VerificationError
from ledger.ledger import KeyRing

if TYPE_CHECKING:
    from ledger.ledger import Ledger

__all__ = [
    "MAX_PROBLEMS",
    "Problem",
    "VerifyReport",
    "check_record_set",
    "record_leaves",
    "verify_ledger",
]

Connection = duckdb.DuckDBPyConnection

MAX_PROBLEMS = 1000  # beyond this a report says how many more there were instead of listing them
_QUERY_LIMIT = 100  # rows of one kind of defect fetched per query
_ENTRY_CHUNK = 2048  # entries per fetch and per worker task
_POOL_MIN_ENTRIES = 20_000  # below this, starting worker processes costs more than it saves
_POOL_MIN_RECORDS = 200_000
_RECORD_CHUNK = (
    1 << 16
)  # record rows per fetch; a power of two, so slices of a batch are perfect subtrees
_POSITION_END = 1 << 62

_SIG_OK, _SIG_BAD, _SIG_UNKNOWN = 0, 1, 2
_KIND_CODES = {kind: code for code, kind in enumerate(entries.KINDS, start=1)}


@dataclass(frozen=True)
class Problem:
    """One defect found by verification: `what` says what was expected and what was found."""

    index: int | None
    what: str


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of `verify_ledger`: the recomputed log size and root, and every problem found."""

    ok: bool
    size: int
    root: bytes
    problems: list[Problem] = field(default_factory=list)


class _Problems:
    """Collects problems up to MAX_PROBLEMS and counts the rest, so a wrecked file cannot exhaust memory."""

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.dropped = 0

    def add(self, index: int | None, what: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(Problem(index, what))
        else:
            self.dropped += 1

    def extend(self, problems: Sequence[Problem]) -> None:
        for problem in problems:
            self.add(problem.index, problem.what)

    def result(self) -> list[Problem]:
        if not self.dropped:
            return list(self.items)
        return [*self.items, Problem(None, f"{self.dropped} more problems not listed")]


# --------------------------------------------------------------------------- record sets


@dataclass(frozen=True)
class _RecordStats:
    """What one aggregate query says about a batch's stored rows, before any leaf is rebuilt."""

    rows: int = 0
    distinct: int = 0
    first: int = 0
    last: int = -1
    fingerprints: int = 0  # non-empty fingerprint values
    bad_digests: int = 0  # digests that are not 32 bytes
    orphan_segments: int = 0  # segment rows whose position has no record row
    bad_segments: int = 0  # segments that are not 32 bytes


def _record_stats(conn: Connection, batch: int | None) -> dict[int, _RecordStats]:
    """Per-batch row statistics of records and record_segments (all batches when `batch` is None)."""
    where, params = ("WHERE batch = ?", [batch]) if batch is not None else ("", [])
    found: dict[int, dict[str, int]] = {}
    rows = conn.execute(
        f"""SELECT batch, count(*), count(DISTINCT position), min(position), max(position),
                   count(*) FILTER (WHERE octet_length(fingerprint) > 0),
                   count(*) FILTER (WHERE octet_length(digest) != 32)
            FROM records {where} GROUP BY batch""",
        params,
    ).fetchall()
    for b, n, distinct, first, last, fps, bad in rows:
        found[int(b)] = {
            "rows": int(n),
            "distinct": int(distinct),
            "first": int(first),
            "last": int(last),
            "fingerprints": int(fps),
            "bad_digests": int(bad),
        }
    seg_where = "WHERE s.batch = ?" if batch is not None else ""
    rows = conn.execute(
        f"""SELECT s.batch, count(*) FILTER (WHERE r.position IS NULL),
                   count(*) FILTER (WHERE octet_length(s.segment) != 32)
            FROM record_segments s
            LEFT JOIN (SELECT DISTINCT batch, position FROM records {where}) r
              ON r.batch = s.batch AND r.position = s.position
            {seg_where} GROUP BY s.batch""",
        params + params,
    ).fetchall()
    for b, orphans, bad in rows:
        entry = found.setdefault(int(b), {})
        entry["orphan_segments"], entry["bad_segments"] = int(orphans), int(bad)
    return {b: _RecordStats(**values) for b, values in found.items()}


def _stats_problems(batch: int, count: int, stats: _RecordStats) -> list[Problem]:
    """Problems visible from row statistics alone; an empty list means the leaves can be rebuilt."""
    problems: list[Problem] = []
    if count == 0 and stats.rows:
        problems.append(
            Problem(
                batch, f"batch entry {batch}: expected no record rows (count 0), found {stats.rows}"
            )
        )
    elif (
        stats.rows != count
        or stats.distinct != count
        or (count and (stats.first, stats.last) != (0, count - 1))
    ):
        span = f"positions {stats.first}..{stats.last}" if stats.rows else "no positions"
        problems.append(
            Problem(
                batch,
                f"batch entry {batch}: expected record positions 0..{count - 1} once each (count {count}), "
                f"found {stats.rows} record rows with {stats.distinct} distinct {span}",
            )
        )
    if stats.bad_digests:
        problems.append(
            Problem(
                batch,
                f"batch entry {batch}: expected 32-byte record digests, found "
                f"{stats.bad_digests} of another length",
            )
        )
    if stats.bad_segments:
        problems.append(
            Problem(
                batch,
                f"batch entry {batch}: expected 32-byte segment hashes, found "
                f"{stats.bad_segments} of another length",
            )
        )
    if stats.orphan_segments:
        problems.append(
            Problem(
                batch,
                f"batch entry {batch}: expected every segment row to belong to a record, "
                f"found {stats.orphan_segments} naming positions with no record",
            )
        )
    return problems


_LEAF_HEAD = np.frombuffer(
    b'\x00{"segments":', np.uint8
)  # 0x00 = RFC 6962 leaf prefix, sliced off for leaves
_LEAF_MIDDLE = np.frombuffer(b'],"sha256":"', np.uint8)
_LEAF_END = np.frombuffer(b'"}', np.uint8)


def _hex_rows(raw: np.ndarray) -> np.ndarray:
    """(n, w) bytes as (n, 2w) lowercase hex digits (bytes.hex runs at memory speed)."""
    hexed = np.frombuffer(binascii.hexlify(np.ascontiguousarray(raw).tobytes()), np.uint8)
    return hexed.reshape(len(raw), 2 * raw.shape[1])


def _fixed32(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A binary column whose values are all 32 bytes (checked beforehand) as an (n, 32) uint8 array."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    try:
        fixed = array.cast(pa.binary(32))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise VerificationError(
            f"expected 32-byte hashes in the record set, found others ({exc})"
        ) from None
    if len(fixed) == 0:
        return np.zeros((0, 32), np.uint8)
    data = np.frombuffer(
        fixed.buffers()[1], np.uint8, count=32 * len(fixed), offset=32 * fixed.offset
    )
    return data.reshape(len(fixed), 32)


def _int64(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.combine_chunks().to_numpy(zero_copy_only=False), dtype=np.int64)


@dataclass(frozen=True)
class _LeafGroup:
    """Leaves of equal width (same segment count) laid out back to back, each with the 0x00 prefix."""

    rows: np.ndarray  # the record rows (in key order) these leaves belong to
    data: bytes
    width: int


def _assemble_leaves(
    digests: np.ndarray, counts: np.ndarray, starts: np.ndarray, segments: np.ndarray
) -> list[_LeafGroup]:
    """Build record leaves `{"segments":["hex",...],"sha256":"hex"}` for many records at once.

    Records with the same segment count have the same leaf length, so each such group is one 2-D
    uint8 array filled column block by column block: numpy does the work, not a Python loop per record.
    `starts[i]` is where record i's (sorted) segments begin in `segments`; `counts[i]` how many it has.
    """
    hex_digests = _hex_rows(digests)
    tokens = np.empty((len(segments), 67), np.uint8)  # ',"<64 hex>"' per segment
    tokens[:, 0] = ord(",")
    tokens[:, 1] = tokens[:, 66] = ord('"')
    tokens[:, 2:66] = _hex_rows(segments)
    groups: list[_LeafGroup] = []
    for k in np.unique(counts).tolist():
        rows = np.flatnonzero(counts == k)
        body = 67 * k if k else 1  # k segments, or the '[' of an empty list
        width = 13 + body + 78
        block = np.empty((len(rows), width), np.uint8)
        block[:, :13] = _LEAF_HEAD
        if k:
            picks = starts[rows][:, None] + np.arange(k)
            block[:, 13 : 13 + body] = tokens[picks].reshape(len(rows), body)
        block[:, 13] = ord("[")
        at = 13 + body
        block[:, at : at + 12] = _LEAF_MIDDLE
        block[:, at + 12 : at + 76] = hex_digests[rows]
        block[:, at + 76 :] = _LEAF_END
        groups.append(_LeafGroup(rows, block.tobytes(), width))
    return groups


def _segments_sorted(keys_: np.ndarray, segments: np.ndarray) -> bool:
    """Whether rows are ordered by (key, segment bytes), duplicates allowed."""
    if len(keys_) < 2:
        return True
    words = segments.view(">u8").reshape(len(segments), 4)
    a, b = words[:-1], words[1:]
    differ = a != b
    first = differ.argmax(axis=1)
    pick = np.arange(len(a))
    not_greater = ~differ.any(axis=1) | (a[pick, first] < b[pick, first])
    ka, kb = keys_[:-1], keys_[1:]
    return bool(np.all((ka < kb) | ((ka == kb) & not_greater)))


@dataclass(frozen=True)
class _RecordChunk:
    """Rebuilt record leaves of a range of (batch, position) keys, in key order."""

    batches: np.ndarray
    positions: np.ndarray
    groups: list[_LeafGroup]
    fingerprints: list[bytes | None]

    def leaf_hashes(self) -> list[bytes]:
        out: list[bytes] = [b""] * len(self.batches)
        sha = hashlib.sha256
        for group in self.groups:
            view = memoryview(group.data)
            width = group.width
            hashes = [sha(view[i : i + width]).digest() for i in range(0, len(group.data), width)]
            for row, digest in zip(group.rows.tolist(), hashes):
                out[row] = digest
        return out

    def leaves(self) -> list[bytes]:
        out: list[bytes] = [b""] * len(self.batches)
        for group in self.groups:
            data, width = group.data, group.width
            for row, start in zip(group.rows.tolist(), range(0, len(data), width)):
                out[row] = data[start + 1 : start + width]
        return out


_KEY_SHIFT = 32  # composite key = batch << 32 | position; positions are checked to fit first


def _fetch_record_chunk(
    conn: Connection,
    batch_lo: int,
    batch_hi: int,
    pos_lo: int,
    pos_hi: int,
    keep: np.ndarray | None,
) -> _RecordChunk:
    """Fetch one range of records and their segments and rebuild their leaves (SQL filters, numpy builds)."""
    params = [batch_lo, batch_hi, pos_lo, pos_hi]
    where = "WHERE batch BETWEEN ? AND ? AND position >= ? AND position < ?"
    records = conn.sql(
        f"SELECT batch, position, digest, fingerprint FROM records {where}", params=params
    ).to_arrow_table()
    segs = conn.sql(
        f"SELECT batch, position, segment FROM record_segments {where}", params=params
    ).to_arrow_table()
    if keep is not None:  # drop batches that failed their checks before touching their values
        records = records.filter(pa.array(np.isin(_int64(records.column("batch")), keep)))
        segs = segs.filter(pa.array(np.isin(_int64(segs.column("batch")), keep)))
    rb, rp = _int64(records.column("batch")), _int64(records.column("position"))
    sb, sp = _int64(segs.column("batch")), _int64(segs.column("position"))
    digests = _fixed32(records.column("digest"))
    segments = _fixed32(segs.column("segment"))
    fingerprints = records.column("fingerprint").to_pylist()
    if len(rp) and (
        rp.min() < 0 or rp.max() >= 1 << _KEY_SHIFT or rb.min() < 0 or rb.max() >= 1 << 30
    ):
        raise VerificationError(f"record keys out of range in batches {batch_lo}..{batch_hi}")
    rkey = (rb << _KEY_SHIFT) | rp
    if len(rkey) > 1 and not np.all(rkey[:-1] <= rkey[1:]):
        order = np.argsort(rkey, kind="stable")
        rkey, rb, rp, digests = rkey[order], rb[order], rp[order], digests[order]
        fingerprints = [fingerprints[i] for i in order.tolist()]
    skey = (sb << _KEY_SHIFT) | np.clip(sp, 0, (1 << _KEY_SHIFT) - 1)
    if not _segments_sorted(skey, segments):
        words = segments.view(">u8").reshape(len(segments), 4)
        order = np.lexsort((words[:, 3], words[:, 2], words[:, 1], words[:, 0], skey))
        skey, segments = skey[order], np.ascontiguousarray(segments[order])
    starts = np.searchsorted(skey, rkey, "left")
    counts = np.searchsorted(skey, rkey, "right") - starts
    groups = _assemble_leaves(digests, counts, starts, segments)
    return _RecordChunk(rb, rp, groups, fingerprints)


def _plan_chunks(
    batches: Sequence[tuple[int, int]],
) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
    """Fetch units over batches in index order: several small batches together, a big one in position ranges."""
    group: list[int] = []
    total = 0
    for batch, count in batches:
        if count > _RECORD_CHUNK:
            if group:
                yield group[0], group[-1], 0, _POSITION_END, np.array(group, np.int64)
                group, total = [], 0
            for lo in range(0, count, _RECORD_CHUNK):
                yield batch, batch, lo, lo + _RECORD_CHUNK, np.array([batch], np.int64)
            continue
        if group and total + count > _RECORD_CHUNK:
            yield group[0], group[-1], 0, _POSITION_END, np.array(group, np.int64)
            group, total = [], 0
        group.append(batch)
        total += count
    if group:
        yield group[0], group[-1], 0, _POSITION_END, np.array(group, np.int64)


@dataclass(frozen=True)
class _Commitment:
    """What a batch entry commits to about its record set."""

    count: int
    records_root: str
    fingerprints_root: str | None  # None when the entry commits to no fingerprints


def _commitment(body: Mapping[str, Any]) -> _Commitment:
    fingerprints = body.get("fingerprints")
    fp_root = fingerprints.get("root") if isinstance(fingerprints, Mapping) else None
    return _Commitment(
        int(body["count"]), str(body["records_root"]), None if fp_root is None else str(fp_root)
    )


@dataclass(frozen=True)
class _Unit:
    """One fetch: the rows of `keep` batches in [batch_lo, batch_hi] with positions in [pos_lo, pos_hi)."""

    batch_lo: int
    batch_hi: int
    pos_lo: int
    pos_hi: int
    keep: tuple[int, ...]


def _units(batches: Sequence[tuple[int, int]]) -> Iterator[_Unit]:
    for batch_lo, batch_hi, pos_lo, pos_hi, keep in _plan_chunks(batches):
        yield _Unit(batch_lo, batch_hi, pos_lo, pos_hi, tuple(keep.tolist()))


_Piece = tuple[
    int, int, bytes, bytes
]  # batch, rows, records root and fingerprints root of those rows


def _unit_pieces(conn: Connection, unit: _Unit) -> list[_Piece]:
    """Roots of each batch's rows in one unit. A unit is a whole batch or an aligned 2^k-row slice of one,
    so a batch's root is the RFC 6962 root over its pieces' roots taken as leaf hashes."""
    keep = np.array(unit.keep, np.int64)
    chunk = _fetch_record_chunk(conn, unit.batch_lo, unit.batch_hi, unit.pos_lo, unit.pos_hi, keep)
    hashes = chunk.leaf_hashes()
    if not hashes:
        return []
    sha = (
        hashlib.sha256
    )  # a NULL fingerprint is the empty one, as recording writes b"" for no texts
    fp_hashes = [sha(b"\x00" + (f or b"")).digest() for f in chunk.fingerprints]
    bounds = (np.flatnonzero(np.diff(chunk.batches)) + 1).tolist()
    return [
        (int(chunk.batches[lo]), hi - lo, merkle.root(hashes[lo:hi]), merkle.root(fp_hashes[lo:hi]))
        for lo, hi in zip([0, *bounds], [*bounds, len(hashes)])
    ]


_worker_connections: dict[str, Connection] = {}


def _unit_pieces_in_worker(path: str, unit: _Unit) -> list[_Piece]:
    """Worker side: each worker process keeps its own read-only connection for the whole verification."""
    conn = _worker_connections.get(path)
    if conn is None:
        conn = _worker_connections[path] = store.connect(Path(path), read_only=True)
    return _unit_pieces(conn, unit)


def _recompute_roots(
    conn: Connection,
    batches: Sequence[tuple[int, int]],
    pool: ProcessPoolExecutor | None = None,
    path: Path | None = None,
    workers: int = 1,
) -> Iterator[tuple[int, bytes, bytes]]:
    """(batch, records root, fingerprints root) for each batch whose rows passed the statistics checks.

    Units run in the worker pool when there is one (each worker reads the file itself), else here.
    """
    pieces: dict[int, list[_Piece]] = {}
    counts = dict(batches)
    for batch, count in batches:
        if count == 0:
            yield batch, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT
    pending: deque[Future[list[_Piece]] | list[_Piece]] = deque()

    def settle() -> Iterator[tuple[int, bytes, bytes]]:
        done = pending.popleft()
        for piece in done if isinstance(done, list) else done.result():
            have = pieces.setdefault(piece[0], [])
            have.append(piece)
            if sum(p[1] for p in have) == counts[piece[0]]:
                del pieces[piece[0]]
                yield piece[0], merkle.root([p[2] for p in have]), merkle.root([p[3] for p in have])

    for unit in _units([(b, c) for b, c in batches if c]):
        if pool is not None and path is not None:
            pending.append(pool.submit(_unit_pieces_in_worker, str(path), unit))
        else:
            pending.append(_unit_pieces(conn, unit))
        while len(pending) > 2 * workers:
            yield from settle()
    while pending:
        yield from settle()


def _root_problems(
    batch: int, want: _Commitment, records_root: bytes, fp_root: bytes
) -> list[Problem]:
    problems = []
    if records_root.hex() != want.records_root:
        problems.append(
            Problem(
                batch,
                f"batch entry {batch}: expected records_root {want.records_root} (signed), "
                f"found {records_root.hex()} recomputed from the stored record set",
            )
        )
    if want.fingerprints_root is not None and fp_root.hex() != want.fingerprints_root:
        problems.append(
            Problem(
                batch,
                f"batch entry {batch}: expected fingerprints root {want.fingerprints_root} "
                f"(signed), found {fp_root.hex()} recomputed from the stored fingerprints",
            )
        )
    return problems


def _check_record_sets(
    conn: Connection,
    commitments: Mapping[int, _Commitment],
    batch: int | None,
    pool: ProcessPoolExecutor | None = None,
    path: Path | None = None,
    workers: int = 1,
) -> list[Problem]:
    """Statistics first (cheap, names the defect), then rebuild and compare the roots of the sound batches."""
    problems: list[Problem] = []
    stats = _record_stats(conn, batch)
    for stored_batch in sorted(stats.keys() - commitments.keys()):
        s = stats[stored_batch]
        problems.append(
            Problem(
                stored_batch,
                f"entry {stored_batch}: expected record rows only for batch entries, "
                f"found {s.rows} record and segment rows for a non-batch entry",
            )
        )
    sound: list[tuple[int, int]] = []
    for index in sorted(commitments):
        want = commitments[index]
        s = stats.get(index, _RecordStats())
        found = _stats_problems(index, want.count, s)
        if want.fingerprints_root is None and s.fingerprints:
            found.append(
                Problem(
                    index,
                    f"batch entry {index}: expected no fingerprints (the entry commits to none), "
                    f"found {s.fingerprints} stored fingerprint values",
                )
            )
        problems.extend(found)
        if not found:
            sound.append((index, want.count))
    for index, records_root, fp_root in _recompute_roots(conn, sound, pool, path, workers):
        problems.extend(_root_problems(index, commitments[index], records_root, fp_root))
    return problems


def record_leaves(conn: Connection, batch_index: int) -> Iterator[bytes]:
    """Rebuild each record leaf of a batch from its stored rows, in position order, a chunk at a time.

    Leaves are JCS `{"segments":[...],"sha256":"..."}` with segments sorted as the records root commits to
    them; the rows are not validated here (`check_record_set` does that).
    """
    ((last,),) = conn.execute(
        "SELECT coalesce(max(position), -1) FROM records WHERE batch = ?", [batch_index]
    ).fetchall()
    for lo in range(0, last + 1, _RECORD_CHUNK):
        chunk = _fetch_record_chunk(conn, batch_index, batch_index, lo, lo + _RECORD_CHUNK, None)
        yield from chunk.leaves()


def check_record_set(conn: Connection, batch_index: int, body: Mapping[str, Any]) -> list[Problem]:
    """Check one batch's stored record set against its signed body: positions, records root, fingerprints root."""
    return _check_record_sets(conn, {batch_index: _commitment(body)}, batch_index)


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True, slots=True)
class _Examined:
    """What one leaf says on its own; the order-dependent checks happen in `_Sequence`."""

    index: int
    kind: str | None  # None when the leaf or its body is unusable
    signer: str | None
    signature: int  # _SIG_OK, _SIG_BAD or _SIG_UNKNOWN (no key known to check it with)
    body: (
        dict[str, Any] | None
    )  # kept for every kind but calls, which nothing later refers to by body
    problems: tuple[Problem, ...]


_Row = tuple[Any, ...]  # idx, leaf, signer, kind, time, ref, provider, model, purpose
_COLUMNS = ("kind", "time", "ref", "provider", "model", "purpose")


def _examine(row: _Row, key_hints: Mapping[str, bytes]) -> _Examined:
    """Parse one stored row, compare its derived columns with its body, and check its signature if we can.

    `key_hints` maps keyids to public keys whose SHA-256 is that keyid, so a hint can never name the
    wrong key; whether the key was allowed to sign at this index is decided later, in log order.
    """
    index, leaf = int(row[0]), bytes(row[1])
    problems: list[Problem] = []
    try:
        envelope = keys.parse_envelope(leaf, index=index)
        body = envelope.body()
        entries.check_body(body, index)
    except (VerificationError, InputError) as exc:
        return _Examined(index, None, None, _SIG_BAD, None, (Problem(index, str(exc)),))
    if len(envelope.signatures) != 1:
        problems.append(
            Problem(
                index, f"entry {index}: expected one signature, found {len(envelope.signatures)}"
            )
        )
    signer = envelope.signatures[0][0]
    facts = entries.facts_of(body)
    for column, stored in zip(_COLUMNS, row[3:]):
        expected = getattr(facts, column)
        if stored != expected:
            problems.append(
                Problem(
                    index,
                    f"entry {index}: column {column}: expected {expected!r} "
                    f"(from the signed body), found {stored!r}",
                )
            )
    if row[2] != signer:
        problems.append(
            Problem(
                index,
                f"entry {index}: column signer: expected {signer} "
                f"(the envelope's keyid), found {row[2]!r}",
            )
        )
    raw = key_hints.get(signer)
    status = _SIG_UNKNOWN
    if raw is not None:
        status = _verify_signature(envelope, raw, index, problems)
    kind = str(body["kind"])
    return _Examined(index, kind, signer, status, None if kind == "call" else body, tuple(problems))


def _verify_signature(
    envelope: keys.Envelope, raw: bytes, index: int, problems: list[Problem]
) -> int:
    try:
        keys.verify_envelope(envelope, keys.PublicKey(raw), index=index)
    except VerificationError as exc:
        problems.append(Problem(index, str(exc)))
        return _SIG_BAD
    return _SIG_OK


def _examine_chunk(rows: list[_Row], hints: dict[str, bytes]) -> list[_Examined]:
    return [_examine(row, hints) for row in rows]


def _public_key_of(body: Mapping[str, Any]) -> bytes | None:
    """The raw key of a key body if its keyid really is its SHA-256, else None."""
    text = body.get("public_key")
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    if len(raw) != 32 or base64.b64encode(raw).decode("ascii") != text:
        return None
    return raw if hashlib.sha256(raw).hexdigest() == body.get("keyid") else None


def _key_hints(conn: Connection) -> dict[str, bytes]:
    """Public keys of the entries the kind column calls keys. Only a speed hint: `_Sequence` decides."""
    hints: dict[str, bytes] = {}
    for (leaf,) in conn.execute("SELECT leaf FROM entries WHERE kind = 'key'").fetchall():
        try:
            body = keys.parse_envelope(bytes(leaf)).body()
        except (VerificationError, InputError):
            continue
        raw = _public_key_of(body)
        if raw is not None:
            hints[str(body["keyid"])] = raw
    return hints


class _Sequence:
    """The checks that depend on log order: keys and revocations, signers, references, unique ids."""

    def __init__(self, size: int, problems: _Problems) -> None:
        self.ring = KeyRing()
        self.kinds = bytearray(size)
        self.batch_ids: dict[str, int] = {}
        self.checkpoint_ids: dict[str, int] = {}
        self.commitments: dict[int, _Commitment] = {}
        self.problems = problems

    def add(self, ex: _Examined, leaf: bytes) -> None:
        self.problems.extend(ex.problems)
        if ex.kind is None or ex.signer is None:
            return
        index, body = ex.index, ex.body
        if index == 0:
            self._first(ex, leaf)
        else:
            self._signer(ex, leaf)
            if ex.kind == "key" and body is not None:
                self._key(index, body)
            elif ex.kind == "revoke" and body is not None:
                self._revoke(index, body)
        if ex.kind == "batch" and body is not None:
            self._batch(index, body)
        elif ex.kind == "checkpoint" and body is not None:
            self._checkpoint(index, body)
        if 0 <= index < len(self.kinds):
            self.kinds[index] = _KIND_CODES[ex.kind]

    def _first(self, ex: _Examined, leaf: bytes) -> None:
        body = ex.body or {}
        if ex.kind != "key" or body.get("role") != "log" or body.get("keyid") != ex.signer:
            self.problems.add(
                0,
                f"entry 0: expected the log key's self-signed key entry, found a {ex.kind} entry "
                f"(role {body.get('role')!r}) signed by {ex.signer}",
            )
            return
        raw = _public_key_of(body)
        if raw is None:
            self.problems.add(
                0,
                "entry 0: expected keyid = sha256(public_key), found a key that does not hash to it",
            )
            return
        if ex.signature == _SIG_UNKNOWN:
            self._late_signature(0, leaf, raw)
        self.ring.add(body, 0)

    def _signer(self, ex: _Examined, leaf: bytes) -> None:
        index, signer = ex.index, str(ex.signer)
        info = self.ring.by_id.get(signer)
        if info is None or info.index >= index:
            self.problems.add(
                index,
                f"entry {index}: expected a signer introduced by an earlier key entry, "
                f"found key {signer[:16]}… unknown at this point",
            )
            return
        if info.revoked_at is not None and index > info.revoked_at:
            self.problems.add(
                index,
                f"entry {index}: expected a signer not revoked before it, found key {info.name} "
                f"({signer[:16]}…) revoked at entry {info.revoked_at}",
            )
        if ex.kind in ("key", "revoke") and info.role != "log":
            self.problems.add(
                index,
                f"entry {index}: expected a {ex.kind} entry signed by a log key, "
                f"found {info.role} key {info.name}",
            )
        if ex.signature == _SIG_UNKNOWN:
            self._late_signature(index, leaf, info.public.raw)

    def _late_signature(self, index: int, leaf: bytes, raw: bytes) -> None:
        """The hint pass missed this key (its kind column was altered): check the signature here."""
        found: list[Problem] = []
        _verify_signature(keys.parse_envelope(leaf, index=index), raw, index, found)
        self.problems.extend(found)

    def _key(self, index: int, body: Mapping[str, Any]) -> None:
        keyid = str(body["keyid"])
        if _public_key_of(body) is None:
            self.problems.add(
                index,
                f"entry {index}: expected keyid = sha256(public_key), found key {keyid[:16]}… "
                "whose public key does not hash to it",
            )
            return
        known = self.ring.by_id.get(keyid)
        if known is not None:
            self.problems.add(
                index,
                f"entry {index}: expected a new key, found key {keyid[:16]}… "
                f"already introduced at entry {known.index}",
            )
            return
        self.ring.add(body, index)

    def _revoke(self, index: int, body: Mapping[str, Any]) -> None:
        keyid = str(body["keyid"])
        known = self.ring.by_id.get(keyid)
        if known is None:
            self.problems.add(
                index,
                f"entry {index}: expected to revoke a known key, found unknown key {keyid[:16]}…",
            )
        elif known.revoked_at is not None:
            self.problems.add(
                index,
                f"entry {index}: key {keyid[:16]}… was already revoked at entry {known.revoked_at}",
            )
        else:
            self.ring.revoke(keyid, index, str(body.get("reason", "")))

    def _batch(self, index: int, body: Mapping[str, Any]) -> None:
        batch_id = str(body["id"])
        if batch_id in self.batch_ids:
            self.problems.add(
                index,
                f"entry {index}: expected a unique batch id, found {batch_id!r} "
                f"already used by entry {self.batch_ids[batch_id]}",
            )
        else:
            self.batch_ids[batch_id] = index
        for ref in body.get("derived_from", []):
            kind = self.kinds[ref] if 0 <= ref < min(index, len(self.kinds)) else 0
            if kind != _KIND_CODES["call"]:
                found = entries.KINDS[kind - 1] + " entry" if kind else "no valid entry"
                self.problems.add(
                    index,
                    f"entry {index}: derived_from {ref}: expected an earlier call entry, "
                    f"found {found}",
                )
        self.commitments[index] = _commitment(body)

    def _checkpoint(self, index: int, body: Mapping[str, Any]) -> None:
        checkpoint_id = str(body["id"])
        refs: list[tuple[str, Any, dict[str, int]]] = [
            *(("parent", p, self.checkpoint_ids) for p in _as_list(body["parents"])),
            *(("batch", b, self.batch_ids) for b in _as_list(body["batches"])),
            *(
                ("teacher", t, self.checkpoint_ids)
                for t in _as_list(body["teachers"])
                if not isinstance(t, Mapping)
            ),
        ]
        for what, ref, known in refs:
            if not isinstance(ref, str) or ref not in known:
                kind = "checkpoint" if known is self.checkpoint_ids else "batch"
                self.problems.add(
                    index,
                    f"entry {index}: {what} {ref!r}: expected the id of an earlier {kind}, "
                    "found none",
                )
        if checkpoint_id in self.checkpoint_ids:
            self.problems.add(
                index,
                f"entry {index}: expected a unique checkpoint id, found {checkpoint_id!r} "
                f"already used by entry {self.checkpoint_ids[checkpoint_id]}",
            )
        else:
            self.checkpoint_ids[checkpoint_id] = index


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


# --------------------------------------------------------------------------- whole-log checks


def _check_indexes(conn: Connection, problems: _Problems) -> int:
    """Entry indexes must be exactly 0..n-1, each once; returns the number of stored rows."""
    ((count, distinct, first, last),) = conn.execute(
        "SELECT count(*), count(DISTINCT idx), min(idx), max(idx) FROM entries"
    ).fetchall()
    if count == 0:
        problems.add(0, "entry 0: expected the log key's key entry, found an empty log")
        return 0
    if count == distinct and first == 0 and last == count - 1:
        return int(count)
    for index, times in conn.execute(
        f"SELECT idx, count(*) FROM entries GROUP BY idx HAVING count(*) > 1 ORDER BY idx LIMIT {_QUERY_LIMIT}"
    ).fetchall():
        problems.add(int(index), f"entry {index}: expected it stored once, found {times} rows")
    if int(first) != 0:
        problems.add(
            min(int(first), 0),
            f"expected entry indexes from 0, found the first at {first}",
        )
    for lo, hi in conn.execute(
        f"""SELECT idx + 1, nxt - 1 FROM (SELECT idx, lead(idx) OVER (ORDER BY idx) AS nxt
                                          FROM (SELECT DISTINCT idx FROM entries))
            WHERE nxt > idx + 1 ORDER BY idx LIMIT {_QUERY_LIMIT}"""
    ).fetchall():
        span = f"entry {lo}" if lo == hi else f"entries {lo}..{hi}"
        problems.add(int(lo), f"expected {span} in the log, found no row (deleted?)")
    return int(count)


def _check_tree(conn: Connection, size: int, problems: _Problems) -> bool:
    """Stored tree nodes must be exactly the perfect subtree hashes of the stored leaves; SQL rehashes them."""
    before = len(problems.items) + problems.dropped
    for level, idx, times in conn.execute(
        f"""SELECT level, idx, count(*) FROM nodes GROUP BY level, idx HAVING count(*) > 1
            ORDER BY level, idx LIMIT {_QUERY_LIMIT}"""
    ).fetchall():
        problems.add(
            _node_index(level, idx),
            f"{_node_name(level, idx)}: expected it stored once, found {times} rows",
        )
    for level, idx in conn.execute(
        f"""SELECT level, idx FROM nodes
            WHERE CASE WHEN level BETWEEN 0 AND 62 THEN idx < 0 OR idx >= (?::BIGINT >> level::BIGINT) ELSE true END
            ORDER BY level, idx LIMIT {_QUERY_LIMIT}""",
        [size],
    ).fetchall():
        problems.add(
            _node_index(level, idx),
            f"{_node_name(level, idx)}: expected no such node in a log of "
            f"{size} entries, found one (extra)",
        )
    present = dict(
        conn.execute(
            """SELECT level, count(DISTINCT idx) FROM nodes
               WHERE level BETWEEN 0 AND 62 AND idx >= 0 AND idx < (?::BIGINT >> level::BIGINT) GROUP BY level""",
            [size],
        ).fetchall()
    )
    for level in range(size.bit_length()):
        if int(present.get(level, 0)) == size >> level:
            continue
        missing = conn.execute(
            f"""SELECT r.i FROM range(0, ?) r(i) ANTI JOIN (SELECT idx FROM nodes WHERE level = ?) n ON n.idx = r.i
                ORDER BY r.i LIMIT {_QUERY_LIMIT}""",
            [size >> level, level],
        ).fetchall()
        for (idx,) in missing:
            problems.add(
                _node_index(level, idx),
                f"{_node_name(level, idx)}: expected it stored, found none (missing)",
            )
    for idx, want, got in conn.execute(
        f"""SELECT n.idx, unhex(sha256(unhex('00') || e.leaf)), n.hash FROM nodes n JOIN entries e ON e.idx = n.idx
            WHERE n.level = 0 AND n.hash != unhex(sha256(unhex('00') || e.leaf)) ORDER BY n.idx LIMIT {_QUERY_LIMIT}"""
    ).fetchall():
        problems.add(
            int(idx),
            f"{_node_name(0, idx)}: expected the leaf hash {bytes(want).hex()}, "
            f"found {bytes(got).hex()}",
        )
    for level, idx, want, got in conn.execute(
        f"""SELECT p.level, p.idx, unhex(sha256(unhex('01') || l.hash || r.hash)), p.hash FROM nodes p
            JOIN nodes l ON l.level = p.level - 1 AND l.idx = 2 * p.idx
            JOIN nodes r ON r.level = p.level - 1 AND r.idx = 2 * p.idx + 1
            WHERE p.level > 0 AND p.hash != unhex(sha256(unhex('01') || l.hash || r.hash))
            ORDER BY p.level, p.idx LIMIT {_QUERY_LIMIT}"""
    ).fetchall():
        problems.add(
            _node_index(level, idx),
            f"{_node_name(level, idx)}: expected the hash of its children "
            f"{bytes(want).hex()}, found {bytes(got).hex()}",
        )
    return len(problems.items) + problems.dropped == before


def _node_name(level: int, idx: int) -> str:
    if level == 0:
        return f"tree node of entry {idx}"
    if 0 < level <= 62:
        return f"tree node (level {level}, index {idx}) over entries {idx << level}..{((idx + 1) << level) - 1}"
    return f"tree node (level {level}, index {idx})"


def _node_index(level: int, idx: int = -1) -> int | None:
    """A leaf node names its entry; an interior node covers many, so it names none."""
    return int(idx) if level == 0 and idx >= 0 else None


def _check_head(
    conn: Connection, size: int, root: bytes, ring: KeyRing, problems: _Problems
) -> str | None:
    """The stored tree head must describe the recomputed log and be signed by the current log key."""
    meta = dict(conn.execute("SELECT key, count(*) FROM meta GROUP BY key").fetchall())
    for key in ("schema_version", "origin"):
        if meta.get(key, 0) != 1:
            problems.add(None, f"meta: expected one {key} row, found {meta.get(key, 0)}")
    unknown = sorted(str(k) for k in meta if k not in ("schema_version", "origin"))
    if unknown:  # no root covers them: a row nothing checks must not exist
        problems.add(None, f"meta: expected only schema_version and origin, found {', '.join(map(repr, unknown[:5]))}")
    rows = conn.execute(
        "SELECT value FROM meta WHERE key = 'origin' ORDER BY value LIMIT 1"
    ).fetchall()
    origin = str(rows[0][0]) if rows else None
    heads = conn.execute("SELECT size, root, note FROM tree_head").fetchall()
    if len(heads) != 1:
        problems.add(None, f"tree head: expected one stored tree head, found {len(heads)}")
    for head_size, head_root, note in heads:
        head_root = bytes(head_root)
        if head_size != size:
            problems.add(
                None, f"tree head: expected size {size} (the entries stored), found {head_size}"
            )
        if head_root != root:
            problems.add(
                None,
                f"tree head: expected root {root.hex()} (recomputed from the leaves), "
                f"found {head_root.hex()}",
            )
        _check_note(str(note), origin, int(head_size), head_root, ring, problems)
    return origin


def _check_note(
    note: str, origin: str | None, size: int, root: bytes, ring: KeyRing, problems: _Problems
) -> None:
    try:
        parsed, _ = keys.open_signed_note(note)
    except InputError as exc:
        problems.add(None, f"tree head note: {exc}")
        return
    if (parsed.origin, parsed.size, parsed.root) != (origin, size, root):
        problems.add(
            None,
            f"tree head note: expected origin {origin!r}, size {size}, root {root.hex()}; "
            f"found {parsed.origin!r}, {parsed.size}, {parsed.root.hex()}",
        )
    if origin is None:
        return
    try:
        current = ring.current_log_key()
        keys.verify_tree_head(note, (origin, current.public), origin=origin)
    except (VerificationError, InputError) as exc:
        problems.add(None, f"tree head note: expected a signature by the current log key, {exc}")


def _check_calls_unique(conn: Connection, problems: _Problems) -> None:
    """Calls are idempotent on (provider, external_id); the columns used here are checked against bodies."""
    for provider, ref, indexes in conn.execute(
        f"""SELECT provider, ref, list(idx ORDER BY idx) FROM entries WHERE kind = 'call' AND ref IS NOT NULL
            GROUP BY provider, ref HAVING count(*) > 1 ORDER BY min(idx) LIMIT {_QUERY_LIMIT}"""
    ).fetchall():
        for index in indexes[1:]:
            problems.add(
                int(index),
                f"entry {index}: expected a unique call ({provider}, external_id {ref!r}), "
                f"found it already recorded at entry {indexes[0]}",
            )


def _parse_published(since_note: str) -> keys.TreeHead:
    try:
        head, _ = keys.open_signed_note(since_note)
    except InputError as exc:
        raise InputError(f"published tree head: {exc}") from exc
    return head


def _check_published(
    since_note: str,
    published: keys.TreeHead,
    origin: str | None,
    size: int,
    prefix_root: bytes | None,
    ring: KeyRing,
    problems: _Problems,
) -> None:
    """The log must be an append-only extension of a head published earlier, signed by one of its log keys."""
    if published.origin != origin:
        problems.add(
            None, f"published tree head: expected origin {origin!r}, found {published.origin!r}"
        )
        return
    errors = []
    for info in sorted(ring.by_id.values(), key=lambda k: -k.index):
        if info.role != "log":
            continue
        try:
            keys.verify_tree_head(since_note, (origin, info.public), origin=origin)
            break
        except VerificationError as exc:
            errors.append(str(exc))
    else:
        problems.add(
            None,
            "published tree head: expected a signature by a log key of this ledger, found none "
            f"({errors[-1] if errors else 'the ledger has no log key'})",
        )
        return
    if published.size > size:
        problems.add(
            None,
            f"published tree head: expected the log to hold at least its {published.size} entries, "
            f"found {size}: the log was rolled back",
        )
    elif prefix_root != published.root:
        found = prefix_root.hex() if prefix_root is not None else "none"
        problems.add(
            None,
            f"published tree head: expected the first {published.size} entries to have root "
            f"{published.root.hex()}, found {found}: history was rewritten",
        )


# --------------------------------------------------------------------------- the driver


def verify_ledger(
    ledger: Ledger,
    since_note: str | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    workers: int | None = None,
) -> VerifyReport:
    """Verify the whole ledger in one read-only session; collect every problem instead of stopping at one.

    `since_note` is a tree head published earlier: the log must extend it. `progress` is called with the
    number of entries just checked. `workers` is the number of processes checking signatures and
    rebuilding record sets (default: one per CPU, up to 2, for logs of at least 20k entries or 200k
    records on Linux; 1 = this process only).
    """
    published = _parse_published(since_note) if since_note is not None else None
    problems = _Problems()
    workers = _choose_workers(ledger, workers)
    pool = _start_pool(workers)
    try:
        with store.session(ledger.path, read_only=True) as conn:
            size = _check_indexes(conn, problems)
            sequence = _Sequence(size, problems)
            root, prefix_root = _check_entries(conn, sequence, published, progress, pool, workers)
            _check_calls_unique(conn, problems)
            _check_tree(conn, size, problems)
            origin = _check_head(conn, size, root, sequence.ring, problems)
            problems.extend(
                _check_record_sets(conn, sequence.commitments, None, pool, ledger.path, workers)
            )
            if published is not None and since_note is not None:
                _check_published(
                    since_note, published, origin, size, prefix_root, sequence.ring, problems
                )
    except duckdb.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptDatabaseError(f"{ledger.path}: cannot read the ledger: {first_line}") from exc
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    found = problems.result()
    return VerifyReport(not found, size, root, found)


def _choose_workers(ledger: Ledger, workers: int | None) -> int:
    if workers is not None:
        return max(1, workers)
    if not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2:
        return 1
    with store.session(ledger.path, read_only=True) as conn:
        ((count, records),) = conn.execute(
            "SELECT (SELECT count(*) FROM entries), (SELECT count(*) FROM records)"
        ).fetchall()
    big = int(count) >= _POOL_MIN_ENTRIES or int(records) >= _POOL_MIN_RECORDS
    return min(2, os.cpu_count() or 1) if big else 1


def _start_pool(workers: int) -> ProcessPoolExecutor | None:
    """Worker processes, forked before the session opens so no DuckDB thread of ours is copied into them.

    fork (Linux) rather than spawn: spawn would re-run an unguarded `__main__` of the caller's script.
    """
    if workers < 2:
        return None
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    pool = ProcessPoolExecutor(workers, multiprocessing.get_context(method))
    for future in [pool.submit(_ready) for _ in range(workers)]:  # start every process now
        future.result()
    return pool


def _ready() -> bool:
    return True


def _check_entries(
    conn: Connection,
    sequence: _Sequence,
    published: keys.TreeHead | None,
    progress: Callable[[int], None] | None,
    pool: ProcessPoolExecutor | None,
    workers: int,
) -> tuple[bytes, bytes | None]:
    """Stream entries in index order through `_examine` (in the worker pool if any) and `_Sequence`.

    Returns the root recomputed from the leaves and the root of the first `published.size` of them.
    """
    hints = _key_hints(conn)
    builder = merkle.RootBuilder()
    want_prefix = published.size if published is not None else -1
    prefix_root = merkle.EMPTY_ROOT if want_prefix == 0 else None
    in_flight = 2 * workers if pool is not None else 0
    pending: deque[tuple[list[Any], Future[list[_Examined]] | list[_Examined]]] = deque()

    def settle() -> None:
        rows, result = pending.popleft()
        examined = result if isinstance(result, list) else result.result()
        for row, ex in zip(rows, examined):
            sequence.add(ex, bytes(row[1]))
        if progress is not None:
            progress(len(rows))

    result = conn.execute(
        "SELECT idx, leaf, signer, kind, time, ref, provider, model, purpose FROM entries ORDER BY idx, leaf"
    )
    while rows := result.fetchmany(_ENTRY_CHUNK):
        hashes = [merkle.leaf_hash(bytes(row[1])) for row in rows]
        split = want_prefix - builder.size
        if 0 < split <= len(hashes):
            builder.extend(hashes[:split])
            prefix_root = builder.root()
            hashes = hashes[split:]
        builder.extend(hashes)
        busy = sum(1 for _, r in pending if isinstance(r, Future) and not r.done())
        if pool is not None and busy < in_flight:
            pending.append((rows, pool.submit(_examine_chunk, rows, hints)))
        else:  # every worker is busy: this process checks the chunk itself rather than wait
            pending.append((rows, [_examine(row, hints) for row in rows]))
        while pending and (isinstance(pending[0][1], list) or pending[0][1].done()):
            settle()
        while len(pending) > 2 * in_flight + 1:
            settle()
    while pending:
        settle()
    return builder.root(), prefix_root
