"""Full-log verification (`ledger verify`) and the record-set recomputation the audit reuses.

Nothing stored is trusted: every leaf is re-parsed and its signature checked against the keys the log
itself introduced (revocations honoured), every derived column and tree node is recomputed from the
leaves, the stored tree head must describe exactly that log, and every batch's stored record set must
recompute to the `records_root` its signed entry commits to. Tampering is collected as `Problem`s (one
per defect, naming the entry index where there is one) so the user sees all of it at once; only
operational failures (missing, locked or unreadable file; a malformed published head) raise.

Concurrency (DESIGN.md): verification never holds the file for long. A first short session reads the
tree head and the shape of the log (size N); the entries 0..N-1, their tree nodes and the batches' record
sets are then read in bounded sessions (about 16k entries or 128k records each, well under a second),
each closed before its rows are checked, so recorders append in between. Those rows cannot change in an
append-only log, and every leaf read is bound to the head read at the start by the recomputed root; what
is appended meanwhile lies outside this run, which verifies the log up to size N. A last session checks
that the head is still N or a consistent extension of it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import multiprocessing
import os
import sys
from array import array
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from ledger import hashing, keys
from ledger.errors import CorruptDatabaseError, InputError, VerificationError
from ledger.ledger import KeyRing
from ledger.log import store
from ledger.spec import entries, merkle
from ledger.spec.problems import Problem
from ledger.wording import plural

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
Opener = Callable[[], AbstractContextManager[Connection]]

MAX_PROBLEMS = 1000  # beyond this a report says how many more there were instead of listing them
_QUERY_LIMIT = 100  # rows of one kind of defect fetched per query
# Entries (with their tree nodes) read per session: about 0.1 s of holding the file.
_SESSION_ENTRIES = 1 << 14
_ENTRY_CHUNK = 2048  # entries per worker task
_POOL_MIN_ENTRIES = 20_000  # below this, starting worker processes costs more than it saves
_POOL_MIN_RECORDS = 200_000
# Record rows per session and per worker task; a power of two, so slices of a batch are perfect subtrees.
_RECORD_CHUNK = 1 << 17
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

_SIG_OK, _SIG_BAD, _SIG_UNKNOWN = 0, 1, 2
_KIND_CODES = {kind: code for code, kind in enumerate(entries.KINDS, start=1)}


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of `verify_ledger`: the recomputed log size and root, and every problem found."""

    ok: bool
    size: int
    root: bytes
    problems: list[Problem] = field(default_factory=list)
    # batch entry index -> records with at least one segment, for every record set recomputed
    records_with_text: dict[int, int] = field(default_factory=dict)


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
    """What the stored rows of one batch look like, before any leaf is rebuilt; sums over a batch's slices."""

    rows: int = 0
    distinct: int = 0
    first: int = 0
    last: int = -1
    fingerprints: int = 0  # non-empty fingerprint values
    bad_digests: int = 0  # digests that are not 32 bytes
    orphan_segments: int = 0  # segment rows whose position has no record row
    bad_segments: int = 0  # segments that are not 32 bytes
    texted: int = 0  # distinct records with at least one segment (what an audit could compare)

    def merge(self, other: _RecordStats) -> _RecordStats:
        """Statistics of two disjoint position ranges of one batch taken together."""
        if not other.rows:
            span = (self.first, self.last)
        elif not self.rows:
            span = (other.first, other.last)
        else:
            span = (min(self.first, other.first), max(self.last, other.last))
        return _RecordStats(
            self.rows + other.rows,
            self.distinct + other.distinct,
            span[0],
            span[1],
            self.fingerprints + other.fingerprints,
            self.bad_digests + other.bad_digests,
            self.orphan_segments + other.orphan_segments,
            self.bad_segments + other.bad_segments,
            self.texted + other.texted,
        )


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


def _fixed32(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A binary column whose values are all 32 bytes (checked beforehand) as an (n, 32) uint8 array."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if n and array.null_count == 0 and pa.types.is_binary(array.type):
        # Offsets 32 apart mean the values lie back to back: view them in place instead of casting.
        offsets = np.frombuffer(array.buffers()[1], np.int32, count=n + 1, offset=4 * array.offset)
        if bool(np.all(np.diff(offsets) == 32)):
            data = np.frombuffer(array.buffers()[2], np.uint8, count=32 * n, offset=int(offsets[0]))
            return data.reshape(n, 32)
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


def _int64(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.int64)


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


def _sort_within_records(skey: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, bool]:
    """Segments sorted by their first 8 bytes within each record, when rows come in key order with the
    same number of segments per record (the usual layout): a row-wise argsort of (records, k) instead of
    a 5-key lexsort over every row. True means the result is in (key, segment) order; False (another
    layout, or a tie in those bytes) returns the rows as they are for the caller's full check and sort."""
    n = len(skey)
    if n < 2 or not bool(np.all(skey[:-1] <= skey[1:])):
        return segments, n < 2
    starts = np.flatnonzero(np.concatenate(([True], skey[1:] != skey[:-1])))
    k = n // len(starts)
    if k < 2 or k * len(starts) != n or not bool(np.all(np.diff(starts) == k)):
        return segments, False
    first = segments[:, :8].copy().view(">u8").reshape(len(starts), k)
    order = np.argsort(first, axis=1)
    ranked = np.take_along_axis(first, order, axis=1)
    if not bool(np.all(ranked[:, :-1] < ranked[:, 1:])):
        return segments, False  # equal leading bytes in a record: leave it to the full sort
    return segments[(order + (k * np.arange(len(starts)))[:, None]).ravel()], True


def _lengths(column: pa.ChunkedArray) -> np.ndarray:
    """Byte lengths of a binary column, -1 for NULL (never a valid hash length)."""
    return _int64(pc.fill_null(pc.binary_length(column), -1))


def _fingerprint_hashes(column: pa.Array) -> list[bytes]:
    """RFC 6962 leaf hashes of fingerprint values (NULL is the empty fingerprint, as recording writes it).

    Values of one length, the usual case, are laid out behind their 0x00 prefixes by numpy in one block,
    so the loop only hashes slices.
    """
    n = len(column)
    if n == 0:
        return []
    lengths = _lengths(column)
    width = int(lengths[0])
    sha = hashlib.sha256
    if width > 0 and column.null_count == 0 and bool(np.all(lengths == width)):
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        offset = int(
            np.frombuffer(array.buffers()[1], np.int32, count=1, offset=4 * array.offset)[0]
        )
        data = np.frombuffer(array.buffers()[2], np.uint8, count=n * width, offset=offset)
        block = np.zeros((n, width + 1), np.uint8)
        block[:, 1:] = data.reshape(n, width)
        raw = block.data.cast("B")
        step = width + 1
        return [sha(raw[i : i + step]).digest() for i in range(0, n * step, step)]
    if column.null_count == n:  # no fingerprints: one hash, repeated
        return [sha(b"\x00").digest()] * n
    return [sha(b"\x00" + (value or b"")).digest() for value in column.to_pylist()]


@dataclass(frozen=True)
class _RecordChunk:
    """Rebuilt record leaves of a range of (batch, position) keys, in key order."""

    batches: np.ndarray
    positions: np.ndarray
    groups: list[hashing.LeafGroup]
    fingerprints: pa.Array  # in the same key order

    def leaf_hashes(self) -> list[bytes]:
        return hashing.record_leaf_hashes(self.groups, len(self.batches))

    def leaves(self) -> list[bytes]:
        out: list[bytes] = [b""] * len(self.batches)
        for group in self.groups:
            for row, leaf in zip(group.rows.tolist(), group.leaves(), strict=True):
                out[row] = leaf
        return out


_KEY_SHIFT = 32  # composite key = batch << 32 | position; positions are checked to fit first


def _build_chunk(records: pa.Table, segs: pa.Table) -> _RecordChunk:
    """Rebuild the leaves of fetched record rows (any order) with their segments (SQL fetched, numpy builds)."""
    rb, rp = _int64(records.column("batch")), _int64(records.column("position"))
    sb, sp = _int64(segs.column("batch")), _int64(segs.column("position"))
    digests = _fixed32(records.column("digest"))
    segments = _fixed32(segs.column("segment"))
    fingerprints = records.column("fingerprint").combine_chunks()
    if len(rp) and (
        rp.min() < 0 or rp.max() >= 1 << _KEY_SHIFT or rb.min() < 0 or rb.max() >= 1 << 30
    ):
        raise VerificationError(
            f"expected record keys (batch < 2^30, position < 2^32), found batches "
            f"{rb.min()}..{rb.max()} and positions {rp.min()}..{rp.max()}"
        )
    rkey = (rb << _KEY_SHIFT) | rp
    if len(rkey) > 1 and not np.all(rkey[:-1] <= rkey[1:]):
        order = np.argsort(rkey, kind="stable")
        rkey, rb, rp, digests = rkey[order], rb[order], rp[order], digests[order]
        fingerprints = fingerprints.take(pa.array(order))
    skey = (sb << _KEY_SHIFT) | np.clip(sp, 0, (1 << _KEY_SHIFT) - 1)
    segments, ordered = _sort_within_records(skey, segments)
    if not ordered and not _segments_sorted(skey, segments):
        words = segments.view(">u8").reshape(len(segments), 4)
        order = np.lexsort((words[:, 3], words[:, 2], words[:, 1], words[:, 0], skey))
        skey, segments = skey[order], np.ascontiguousarray(segments[order])
    starts = np.searchsorted(skey, rkey, "left")
    counts = np.searchsorted(skey, rkey, "right") - starts
    groups = hashing.record_leaf_groups(digests, counts, starts, segments)
    return _RecordChunk(rb, rp, groups, fingerprints)


@dataclass(frozen=True)
class _Commitment:
    """What a batch entry commits to about its record set."""

    count: int
    records_root: str
    fingerprints_root: str | None  # None when the entry commits to no fingerprints
    without_text: int | None = None  # records with no segment; None in batches recorded before it


def _commitment(body: Mapping[str, Any]) -> _Commitment:
    fingerprints = body.get("fingerprints")
    fp_root = fingerprints.get("root") if isinstance(fingerprints, Mapping) else None
    bare = body.get("records_without_text")
    return _Commitment(
        int(body["count"]),
        str(body["records_root"]),
        None if fp_root is None else str(fp_root),
        None if bare is None else int(bare),
    )


@dataclass(frozen=True)
class _Unit:
    """One session's rows: batch keys batch_lo..batch_hi with positions pos_lo..pos_hi (both inclusive).

    `counts` are the batch entries among those keys with the record count each commits to. A covering
    unit (a whole-log verify) tiles its key range, so rows under any other key belong to no batch entry
    and are reported; a unit of chosen batches (an audit's lineage) reads only their keys, because the
    batches in between belong to other runs and are none of its business. A batch bigger than a unit is
    cut into aligned 2^k-position slices (the first and last open-ended, so no stray position escapes),
    and its records root is the RFC 6962 root over the slices' roots taken as leaf hashes.
    """

    batch_lo: int
    batch_hi: int
    pos_lo: int
    pos_hi: int
    counts: tuple[tuple[int, int], ...]
    covering: bool = True

    def expected(self, count: int) -> tuple[int, int]:
        """The positions [lo, hi) of a batch of `count` records this unit must find, each once."""
        lo, hi = max(0, self.pos_lo), min(count, self.pos_hi + 1)
        return lo, max(lo, hi)


def _plan_units(batches: Sequence[tuple[int, int]], cover: tuple[int, int] | None) -> list[_Unit]:
    """Units over batches in index order: small batches together, a big one in position slices.

    With `cover` = (lo, hi) the units' key ranges tile lo..hi, so record rows stored under a key that is
    no batch entry are found too.
    """
    units: list[_Unit] = []
    group: list[tuple[int, int]] = []
    total = 0
    cursor = cover[0] if cover is not None else 0  # lowest key not yet in a unit

    def flush(upto: int) -> None:
        nonlocal cursor, group, total
        if cover is not None and cursor <= upto:
            units.append(_Unit(cursor, upto, _INT64_MIN, _INT64_MAX, tuple(group)))
        elif cover is None and group:
            units.append(
                _Unit(group[0][0], group[-1][0], _INT64_MIN, _INT64_MAX, tuple(group), False)
            )
        cursor = max(cursor, upto + 1)
        group, total = [], 0

    for batch, count in batches:
        if count > _RECORD_CHUNK:
            flush(batch - 1)
            for lo in range(0, count, _RECORD_CHUNK):
                first = _INT64_MIN if lo == 0 else lo
                last = _INT64_MAX if lo + _RECORD_CHUNK >= count else lo + _RECORD_CHUNK - 1
                units.append(_Unit(batch, batch, first, last, ((batch, count),), cover is not None))
            cursor = batch + 1
            continue
        if group and total + count > _RECORD_CHUNK:
            flush(group[-1][0])
        group.append((batch, count))
        total += count
    if cover is not None:
        flush(cover[1])
    elif group:
        flush(group[-1][0])
    return units


def _fetch_unit(conn: Connection, unit: _Unit) -> tuple[pa.Table, pa.Table]:
    """A unit's record and segment rows as Arrow tables, fetched in full (the session can close after)."""
    params = [unit.batch_lo, unit.batch_hi, unit.pos_lo, unit.pos_hi]
    where = "WHERE batch BETWEEN ? AND ? AND position BETWEEN ? AND ?"
    if (
        not unit.covering
    ):  # only the chosen batches: rows of other runs' batches in between stay unread
        where += f" AND batch IN ({', '.join(str(int(b)) for b, _ in unit.counts)})"
    records = conn.sql(
        f"SELECT batch, position, digest, fingerprint FROM records {where}", params=params
    ).to_arrow_table()
    segs = conn.sql(
        f"SELECT batch, position, segment FROM record_segments {where}", params=params
    ).to_arrow_table()
    return records, segs


# batch, first position, records root and fingerprints root of one slice of a batch
_Piece = tuple[int, int, bytes, bytes]


@dataclass(frozen=True)
class _UnitResult:
    """What one unit found: statistics per batch entry, roots of its sound slices, rows of no batch entry."""

    stats: tuple[tuple[int, _RecordStats], ...]
    pieces: tuple[_Piece, ...]
    strays: tuple[tuple[int, int, int], ...]  # key, record rows, segment rows


def _local(keys_: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of each value in the sorted `keys_`, or -1 where it is not one of them."""
    if not len(keys_):
        return np.full(len(values), -1, np.int64)
    if len(keys_) == 1:  # a slice of one big batch: a comparison, not a search
        return np.where(values == keys_[0], 0, -1)
    at = np.searchsorted(keys_, values)
    hit = keys_[np.minimum(at, len(keys_) - 1)] == values
    return np.where(hit & (at < len(keys_)), at, -1)


def _pair_keys(
    rl: np.ndarray, rp: np.ndarray, sl: np.ndarray, sp: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """int64 keys ordered as (batch, position) for record and segment rows, for any stored positions."""
    both = np.concatenate([rp, sp])
    if not len(both) or (both.min() >= 0 and both.max() < 1 << _KEY_SHIFT):
        return (rl << _KEY_SHIFT) | rp, (sl << _KEY_SHIFT) | sp
    distinct, rank = np.unique(both, return_inverse=True)  # damaged positions: rank them instead
    width = len(distinct)
    return rl * width + rank[: len(rp)], sl * width + rank[len(rp) :]


def _strays(rb: np.ndarray, sb: np.ndarray) -> tuple[tuple[int, int, int], ...]:
    if not len(rb) and not len(sb):
        return ()
    found: dict[int, list[int]] = {}
    for column, values in ((0, rb), (1, sb)):
        keys_, counts = np.unique(values, return_counts=True)
        for key, count in zip(keys_.tolist(), counts.tolist()):
            found.setdefault(key, [0, 0])[column] = count
    return tuple((key, rows, segs) for key, (rows, segs) in sorted(found.items()))


def _unit_result(unit: _Unit, records: pa.Table, segs: pa.Table) -> _UnitResult:
    """Statistics of every batch in the unit, and the roots of those whose rows here are exactly right.

    Everything is counted with numpy over the whole unit at once; leaves are rebuilt only for batches
    whose rows are sound (so malformed values never reach the leaf builder).
    """
    keys_ = np.array([b for b, _ in unit.counts], np.int64)
    n = len(keys_)
    rb, rp = _int64(records.column("batch")), _int64(records.column("position"))
    sb, sp = _int64(segs.column("batch")), _int64(segs.column("position"))
    rl, sl = _local(keys_, rb), _local(keys_, sb)
    rkeep, skeep = rl >= 0, sl >= 0
    strays = _strays(rb[~rkeep], sb[~skeep]) if unit.covering else ()
    rl_k, rp_k, sl_k, sp_k = rl[rkeep], rp[rkeep], sl[skeep], sp[skeep]
    rows = np.bincount(rl_k, minlength=n)
    bad_digests = np.bincount(rl_k[_lengths(records.column("digest"))[rkeep] != 32], minlength=n)
    fingerprints = np.bincount(
        rl_k[_lengths(records.column("fingerprint"))[rkeep] > 0], minlength=n
    )
    bad_segments = np.bincount(sl_k[_lengths(segs.column("segment"))[skeep] != 32], minlength=n)
    rkey, skey = _pair_keys(rl_k, rp_k, sl_k, sp_k)
    if len(rkey) > 1 and not np.all(rkey[:-1] < rkey[1:]):
        order = np.argsort(rkey, kind="stable")
        rkey, rl_k, rp_k = rkey[order], rl_k[order], rp_k[order]
    new = np.ones(len(rkey), bool)
    new[1:] = rkey[1:] != rkey[:-1]
    distinct = np.bincount(rl_k[new], minlength=n)
    unique = rkey[new]
    if len(unique):
        at = np.minimum(np.searchsorted(unique, skey), len(unique) - 1)
        owned = unique[at] == skey
        orphans = np.bincount(sl_k[~owned], minlength=n)
        has_text = np.zeros(len(unique), bool)
        has_text[at[owned]] = True
        texted = np.bincount(rl_k[new][has_text], minlength=n)
    else:
        orphans = np.bincount(sl_k, minlength=n)
        texted = np.zeros(n, np.int64)
    begins = np.searchsorted(rl_k, np.arange(n), "left")
    ends = np.searchsorted(rl_k, np.arange(n), "right")
    stats: list[tuple[int, _RecordStats]] = []
    build: list[int] = []  # batches rebuilt here
    for i, (batch, count) in enumerate(unit.counts):
        has = int(ends[i]) > int(begins[i])
        s = _RecordStats(
            int(rows[i]),
            int(distinct[i]),
            int(rp_k[begins[i]]) if has else 0,
            int(rp_k[ends[i] - 1]) if has else -1,
            int(fingerprints[i]),
            int(bad_digests[i]),
            int(orphans[i]),
            int(bad_segments[i]),
            int(texted[i]),
        )
        stats.append((batch, s))
        lo, hi = unit.expected(count)
        sound = (
            s.rows == s.distinct == hi - lo
            and (s.first, s.last) == ((lo, hi - 1) if hi > lo else (0, -1))
            and not (s.bad_digests or s.bad_segments or s.orphan_segments)
        )
        if sound and hi > lo:
            build.append(batch)
    built = set(build)
    everything = not strays and all(s.rows == 0 or b in built for b, s in stats)
    return _UnitResult(tuple(stats), _pieces(unit, records, segs, build, everything), strays)


def _pieces(
    unit: _Unit, records: pa.Table, segs: pa.Table, build: list[int], everything: bool
) -> tuple[_Piece, ...]:
    """Records and fingerprints roots of the `build` batches' rows in this unit (one slice each)."""
    if not build:
        return ()
    if not everything:
        wanted = pa.array(build, pa.int64())
        records = records.filter(pc.is_in(records.column("batch"), value_set=wanted))
        segs = segs.filter(pc.is_in(segs.column("batch"), value_set=wanted))
    chunk = _build_chunk(records, segs)
    hashes = chunk.leaf_hashes()
    fp_hashes = _fingerprint_hashes(chunk.fingerprints)
    bounds = (np.flatnonzero(np.diff(chunk.batches)) + 1).tolist()
    counts = dict(unit.counts)
    return tuple(
        (
            int(chunk.batches[lo]),
            unit.expected(counts[int(chunk.batches[lo])])[0],
            _root(hashes[lo:hi]),
            _root(fp_hashes[lo:hi]),
        )
        for lo, hi in zip([0, *bounds], [*bounds, len(hashes)])
    )


def _root(hashes: Sequence[bytes]) -> bytes:
    """merkle.root, in O(log n) when every leaf hash is the same (a batch without fingerprints)."""
    if len(hashes) > 1 and hashes.count(hashes[0]) == len(hashes):
        return _repeated_root(hashes[0], len(hashes))
    return merkle.root(hashes)


@lru_cache(maxsize=256)
def _repeated_root(leaf: bytes, n: int) -> bytes:
    """RFC 6962 root of n (>= 1) copies of one leaf hash: equal subtrees have equal roots, so each of the
    O(log n) distinct subtree sizes is hashed once."""
    if n == 1:
        return leaf
    k = 1 << ((n - 1).bit_length() - 1)
    return merkle.node_hash(_repeated_root(leaf, k), _repeated_root(leaf, n - k))


def _unit_in_worker(path: str, unit: _Unit) -> _UnitResult:
    """Worker side: a session of its own for just the fetch, closed before the rows are checked."""
    with store.session(Path(path), read_only=True) as conn:
        records, segs = _fetch_unit(conn, unit)
    return _unit_result(unit, records, segs)


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
    opener: Opener,
    commitments: Mapping[int, _Commitment],
    cover: tuple[int, int] | None,
    pool: ProcessPoolExecutor | None = None,
    path: Path | None = None,
    workers: int = 1,
    texted: dict[int, int] | None = None,
) -> list[Problem]:
    """Fetch every unit in a short session of its own (in the worker pool when there is one), then judge
    each batch from its summed statistics first (cheap, names the defect) and its rebuilt roots second.

    `texted`, when given, receives each batch's number of records with at least one segment, counted
    from the very rows whose roots were checked (the audit's coverage rule reads it).
    """
    batches = [(batch, commitments[batch].count) for batch in sorted(commitments)]
    stats: dict[int, _RecordStats] = {}
    pieces: dict[int, list[_Piece]] = {}
    strays: dict[int, tuple[int, int]] = {}
    pending: deque[Future[_UnitResult] | _UnitResult] = deque()

    def settle() -> None:
        done = pending.popleft()
        result = done if isinstance(done, _UnitResult) else done.result()
        for batch, s in result.stats:
            stats[batch] = stats[batch].merge(s) if batch in stats else s
        for piece in result.pieces:
            pieces.setdefault(piece[0], []).append(piece)
        for key, rows, segs in result.strays:
            had = strays.get(key, (0, 0))
            strays[key] = (had[0] + rows, had[1] + segs)

    for unit in _plan_units(batches, cover):
        if pool is not None and path is not None:
            pending.append(pool.submit(_unit_in_worker, str(path), unit))
        else:
            with opener() as conn:
                records, segs = _fetch_unit(conn, unit)
            pending.append(_unit_result(unit, records, segs))
        while len(pending) > (2 * workers if pool is not None else 0):
            settle()
    while pending:
        settle()
    problems = _stray_problems(strays, "a non-batch entry")
    for batch, count in batches:
        want = commitments[batch]
        s = stats.get(batch, _RecordStats())
        if texted is not None:
            texted[batch] = s.texted
        found = _stats_problems(batch, count, s)
        if want.fingerprints_root is None and s.fingerprints:
            found.append(
                Problem(
                    batch,
                    f"batch entry {batch}: expected no fingerprints (the entry commits to none), "
                    f"found {s.fingerprints} stored fingerprint values",
                )
            )
        if not found:
            got = sorted(pieces.get(batch, []), key=lambda p: p[1])
            records_root = merkle.root([p[2] for p in got])
            fp_root = merkle.root([p[3] for p in got])
            found = _root_problems(batch, want, records_root, fp_root)
            if not found and want.without_text not in (None, count - s.texted):
                # the root is sound, so the signer stated a count its own records contradict
                found.append(
                    Problem(
                        batch,
                        f"batch entry {batch}: expected {want.without_text} records without text "
                        f"(signed), found {count - s.texted} in its committed record set",
                    )
                )
        problems.extend(found)
    return problems


def _beyond_log(conn: Connection, cover: tuple[int, int]) -> list[Problem]:
    """Record rows under keys outside the log as it stands at the start (the units cover the rest)."""
    found: dict[int, list[int]] = {}
    for column, table in ((0, "records"), (1, "record_segments")):
        for key, count in conn.execute(
            f"""SELECT batch, count(*) FROM {table} WHERE batch < ? OR batch > ?
                GROUP BY batch ORDER BY batch LIMIT {_QUERY_LIMIT}""",
            list(cover),
        ).fetchall():
            found.setdefault(int(key), [0, 0])[column] = int(count)
    return _stray_problems(found, "a key the log has no entry for")


def _stray_problems(found: Mapping[int, Sequence[int]], under: str) -> list[Problem]:
    """One problem per key holding record rows that no batch entry commits to: (record, segment) rows."""
    return [
        Problem(
            key,
            f"entry {key}: expected record rows only for batch entries, found {rows} record rows "
            f"and {segs} segment rows under {under}",
        )
        for key, (rows, segs) in sorted(found.items())
    ]


def _strays_between(
    conn: Connection, cover: tuple[int, int], batches: Collection[int]
) -> list[Problem]:
    """Record rows under keys inside the log that are no batch entry, found by one anti-join per table.

    A whole-log verify finds them while tiling every key; an audit reads only its lineage's record
    sets, and this keeps it from vouching for a file that holds rows no batch commits to.
    """
    conn.register("_verify_batches", pa.table({"batch": pa.array(sorted(batches), pa.int64())}))
    found: dict[int, list[int]] = {}
    try:
        for column, table in ((0, "records"), (1, "record_segments")):
            for key, count in conn.execute(
                f"""SELECT r.batch, count(*) FROM {table} r ANTI JOIN _verify_batches b ON r.batch = b.batch
                    WHERE r.batch BETWEEN ? AND ? GROUP BY r.batch ORDER BY r.batch LIMIT {_QUERY_LIMIT}""",
                list(cover),
            ).fetchall():
                found.setdefault(int(key), [0, 0])[column] = int(count)
    finally:
        conn.unregister("_verify_batches")
    return _stray_problems(found, "a non-batch entry")


def record_leaves(conn: Connection, batch_index: int) -> Iterator[bytes]:
    """Rebuild each record leaf of a batch from its stored rows, in position order, a chunk at a time.

    Leaves are JCS `{"segments":[...],"sha256":"..."}` with segments sorted as the records root commits to
    them; the rows are not validated here (`check_record_set` does that).
    """
    ((last,),) = conn.execute(
        "SELECT coalesce(max(position), -1) FROM records WHERE batch = ?", [batch_index]
    ).fetchall()
    for lo in range(0, last + 1, _RECORD_CHUNK):
        unit = _Unit(batch_index, batch_index, lo, lo + _RECORD_CHUNK - 1, ())
        yield from _build_chunk(*_fetch_unit(conn, unit)).leaves()


def check_record_set(conn: Connection, batch_index: int, body: Mapping[str, Any]) -> list[Problem]:
    """Check one batch's stored record set against its signed body: positions, records root, fingerprints root."""
    return _check_record_sets(lambda: nullcontext(conn), {batch_index: _commitment(body)}, None)


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
        keys.verify_envelope(envelope, _public_key(raw), index=index)
    except VerificationError as exc:
        problems.append(Problem(index, str(exc)))
        return _SIG_BAD
    return _SIG_OK


@lru_cache(maxsize=64)
def _public_key(raw: bytes) -> keys.PublicKey:
    """A log has a handful of keys: build each (and its keyid) once, not once per entry."""
    return keys.PublicKey(raw)


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


@dataclass(frozen=True)
class _Shape:
    """The entry rows as the first session finds them; `intact` when their indexes are 0..count-1 once each."""

    count: int
    first: int
    last: int
    intact: bool


def _check_indexes(conn: Connection, problems: _Problems) -> _Shape:
    """Entry indexes must be exactly 0..n-1, each once."""
    ((count, distinct, first, last),) = conn.execute(
        "SELECT count(*), count(DISTINCT idx), min(idx), max(idx) FROM entries"
    ).fetchall()
    if count == 0:
        problems.add(0, "entry 0: expected the log key's key entry, found an empty log")
        return _Shape(0, 0, -1, True)
    shape = _Shape(
        int(count), int(first), int(last), count == distinct and first == 0 and last == count - 1
    )
    if shape.intact:
        return shape
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
    return shape


def _extra_nodes(conn: Connection, size: int, problems: _Problems) -> None:
    """Nodes at positions no perfect subtree of a log of `size` entries has (read where `size` holds)."""
    for level, idx in conn.execute(
        f"""SELECT level, idx FROM nodes
            WHERE CASE WHEN level BETWEEN 0 AND 62 THEN idx < 0 OR idx >= (?::BIGINT >> level::BIGINT) ELSE true END
            ORDER BY level, idx LIMIT {_QUERY_LIMIT}""",
        [size],
    ).fetchall():
        problems.add(
            _node_index(level, idx),
            f"{_node_name(level, idx)}: expected no such node in a log of "
            f"{plural(size, 'entry', 'entries')}, found one (extra)",
        )


def _fetch_nodes(conn: Connection, lo: int, hi: int) -> pa.Table:
    """The stored nodes that appending entries lo..hi-1 creates: level l, idx in [lo >> l, hi >> l)."""
    return conn.sql(
        """SELECT level, idx, hash FROM nodes WHERE level BETWEEN 0 AND 62
           AND idx >= (?::BIGINT >> level::BIGINT) AND idx < (?::BIGINT >> level::BIGINT)""",
        params=[lo, hi],
    ).to_arrow_table()


def _compare_nodes(
    created: Sequence[tuple[int, int, bytes]], stored: pa.Table, problems: _Problems
) -> None:
    """Each node recomputed from a range of leaves must be stored exactly once, with that hash.

    numpy compares the whole range at once; only defects become Python objects.
    """
    c_key = np.fromiter(((level << 56) | idx for level, idx, _ in created), np.int64, len(created))
    c_hash = np.frombuffer(b"".join(h for _, _, h in created), np.uint8).reshape(len(created), 32)
    s_key = (_int64(stored.column("level")) << 56) | _int64(stored.column("idx"))
    lengths = _lengths(stored.column("hash"))
    whole = lengths == 32
    s_hash = (
        _fixed32(stored.column("hash"))
        if bool(whole.all())
        else np.zeros((len(s_key), 32), np.uint8)
    )
    keys_, times = np.unique(s_key, return_counts=True)
    repeated = zip(keys_[times > 1].tolist(), times[times > 1].tolist())
    for key, count in list(repeated)[:_QUERY_LIMIT]:
        level, idx = key >> 56, key & ((1 << 56) - 1)
        problems.add(
            _node_index(level, idx),
            f"{_node_name(level, idx)}: expected it stored once, found {count} rows",
        )
    for key in c_key[~np.isin(c_key, keys_)][:_QUERY_LIMIT].tolist():
        level, idx = key >> 56, key & ((1 << 56) - 1)
        problems.add(
            _node_index(level, idx),
            f"{_node_name(level, idx)}: expected it stored, found none (missing)",
        )
    if not len(s_key):
        return
    at = np.minimum(np.searchsorted(c_key, s_key), len(c_key) - 1)
    wrong = ~whole | np.any(s_hash != c_hash[at], axis=1)
    if not wrong.any():
        return
    found = stored.column("hash").to_pylist()
    for row in np.flatnonzero(wrong)[:_QUERY_LIMIT].tolist():
        key = int(s_key[row])
        level, idx = key >> 56, key & ((1 << 56) - 1)
        want = bytes(c_hash[at[row]]).hex()
        got = bytes(found[row]).hex() if found[row] is not None else "NULL"
        what = "the leaf hash" if level == 0 else "the hash of its children"
        problems.add(
            _node_index(level, idx),
            f"{_node_name(level, idx)}: expected {what} {want} (recomputed from the leaves), found {got}",
        )


def _check_tree(conn: Connection, size: int, problems: _Problems) -> bool:
    """Stored tree nodes must be exactly the perfect subtree hashes of the stored leaves; SQL rehashes them.

    The whole-table form, for a log whose indexes are damaged (no recorder can append to it anyway);
    an intact log is checked range by range against nodes recomputed from its leaves (`_compare_nodes`).
    """
    before = len(problems.items) + problems.dropped
    for level, idx, times in conn.execute(
        f"""SELECT level, idx, count(*) FROM nodes GROUP BY level, idx HAVING count(*) > 1
            ORDER BY level, idx LIMIT {_QUERY_LIMIT}"""
    ).fetchall():
        problems.add(
            _node_index(level, idx),
            f"{_node_name(level, idx)}: expected it stored once, found {times} rows",
        )
    _extra_nodes(conn, size, problems)
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


@dataclass(frozen=True)
class _HeadRows:
    """The meta and tree head rows as the first session finds them."""

    meta: dict[str, int]  # key -> number of rows
    origin: str | None
    heads: list[tuple[int, bytes, str]]


def _read_head(conn: Connection) -> _HeadRows:
    meta = {
        str(k): int(n)
        for k, n in conn.execute("SELECT key, count(*) FROM meta GROUP BY key").fetchall()
    }
    rows = conn.execute(
        "SELECT value FROM meta WHERE key = 'origin' ORDER BY value LIMIT 1"
    ).fetchall()
    heads = conn.execute("SELECT size, root, note FROM tree_head").fetchall()
    return _HeadRows(
        meta,
        str(rows[0][0]) if rows else None,
        [(int(size), bytes(root), str(note)) for size, root, note in heads],
    )


def _check_head(
    rows: _HeadRows, size: int, root: bytes, ring: KeyRing, problems: _Problems
) -> bool:
    """The stored tree head must describe the recomputed log and be signed by the current log key.

    Returns whether it does (so the end of the run may compare against it).
    """
    before = len(problems.items) + problems.dropped
    meta = rows.meta
    for key in ("schema_version", "origin"):
        if meta.get(key, 0) != 1:
            problems.add(None, f"meta: expected one {key} row, found {meta.get(key, 0)}")
    unknown = sorted(str(k) for k in meta if k not in ("schema_version", "origin"))
    if unknown:  # no root covers them: a row nothing checks must not exist
        problems.add(
            None,
            f"meta: expected only schema_version and origin, found {', '.join(map(repr, unknown[:5]))}",
        )
    if len(rows.heads) != 1:
        problems.add(None, f"tree head: expected one stored tree head, found {len(rows.heads)}")
    for head_size, head_root, note in rows.heads:
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
        _check_note(note, rows.origin, head_size, head_root, ring, problems)
    return len(problems.items) + problems.dropped == before


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


class _Calls:
    """(provider, external_id) of every call row as a 64-bit hash, in arrays: duplicates are found by
    numpy at the end instead of keeping a dict of a million strings. Candidates are confirmed exactly."""

    def __init__(self) -> None:
        self.hashes = array("q")
        self.indexes = array("q")

    def add(self, row: _Row) -> None:
        if row[3] == "call" and row[5] is not None:
            self.hashes.append(hash((row[6], row[5])))
            self.indexes.append(int(row[0]))

    def candidates(self) -> list[int]:
        """Indexes of the rows whose hash another row shares, first groups (by lowest index) first."""
        hashes = np.frombuffer(self.hashes, np.int64)
        indexes = np.frombuffer(self.indexes, np.int64)
        if len(hashes) < 2:
            return []
        order = np.lexsort((indexes, hashes))
        hashes, indexes = hashes[order], indexes[order]
        same = hashes[1:] == hashes[:-1]
        if not same.any():
            return []
        shared = np.zeros(len(hashes), bool)
        shared[1:] |= same
        shared[:-1] |= same
        groups: dict[int, list[int]] = {}
        for h, i in zip(hashes[shared].tolist(), indexes[shared].tolist()):
            groups.setdefault(h, []).append(i)
        first = sorted(groups.values(), key=min)[: 4 * _QUERY_LIMIT]
        return sorted({i for group in first for i in group})


def _check_calls_unique(conn: Connection, calls: _Calls, problems: _Problems) -> None:
    """Calls are idempotent on (provider, external_id); the columns used here are checked against bodies."""
    wanted = calls.candidates()
    if not wanted:
        return
    groups: dict[tuple[Any, Any], list[int]] = {}
    for index, provider, ref in conn.execute(
        """SELECT idx, provider, ref FROM entries WHERE kind = 'call' AND ref IS NOT NULL
           AND idx IN (SELECT unnest(?::BIGINT[])) ORDER BY idx""",
        [wanted],
    ).fetchall():
        groups.setdefault((provider, ref), []).append(int(index))
    repeated = sorted((g for g in groups.items() if len(g[1]) > 1), key=lambda g: min(g[1]))
    for (provider, ref), indexes in repeated[:_QUERY_LIMIT]:
        for index in indexes[1:]:
            problems.add(
                index,
                f"entry {index}: expected a unique call ({provider}, external_id {ref!r}), "
                f"found it already recorded at entry {indexes[0]}",
            )


def _nodes_print(conn: Connection, size: int) -> tuple[int, int]:
    """An order-free digest (XOR of DuckDB's 64-bit row hashes) and count of the nodes of a log of `size`
    entries. Appends never add such nodes, so equal prints at the start and the end of a run mean no node
    that was checked changed while the run read other parts of the file."""
    ((digest, count),) = conn.execute(
        """SELECT coalesce(bit_xor(hash(level, idx, hash)), 0), count(*) FROM nodes
           WHERE level BETWEEN 0 AND 62 AND idx >= 0 AND idx < (?::BIGINT >> level::BIGINT)""",
        [size],
    ).fetchall()
    return int(digest), int(count)


def _recheck(conn: Connection, start: _Start, root: bytes, problems: _Problems) -> None:
    """At the end: the log must still hold the entries verified, its tree nodes must be the ones checked,
    and the head must be at N = the verified size or beyond, its stored nodes giving the verified root at
    N. Recorders appending meanwhile are fine; anything else that changed during the run is reported."""
    shape = start.shape
    size = shape.count
    if _nodes_print(conn, size) != start.nodes_print:
        problems.add(
            None,
            f"tree nodes: expected the nodes of the first {plural(size, 'entry', 'entries')} checked during the run to be "
            "unchanged at its end, found them altered: the log changed during verification",
        )
    ((count,),) = conn.execute(
        "SELECT count(*) FROM entries WHERE idx BETWEEN ? AND ?", [shape.first, shape.last]
    ).fetchall()
    if count != size:
        problems.add(
            None,
            f"log: expected the {plural(size, 'entry', 'entries')} verified to be still stored at the end of the run, "
            f"found {count}: the log changed during verification",
        )
    heads = conn.execute("SELECT size FROM tree_head").fetchall()
    if len(heads) != 1 or int(heads[0][0]) < size:
        found = ", ".join(str(h[0]) for h in heads) or "none"
        problems.add(
            None,
            f"tree head: expected a head of size >= {size} at the end of the run, found {found}: "
            "the head changed during verification",
        )
        return
    try:
        now = store.stored_root(conn, size)
    except VerificationError as exc:
        problems.add(None, f"tree nodes: changed during verification: {exc}")
        return
    if now != root:
        problems.add(
            None,
            f"tree nodes: expected the root {root.hex()} of the first {plural(size, 'entry', 'entries')} at the end of "
            f"the run, found {now.hex()}: the log changed during verification",
        )


def _parse_published(since_note: str, since_name: str) -> keys.TreeHead:
    try:
        head, _ = keys.open_signed_note(since_note)
    except InputError as exc:
        raise InputError(f"{since_name}: {exc}") from exc
    return head


def _check_published(
    since_note: str,
    published: keys.TreeHead,
    origin: str,
    size: int,
    prefix_root: bytes | None,
    ring: KeyRing,
    problems: _Problems,
) -> None:
    """The log must be an append-only extension of a head published earlier, signed by one of its log keys.

    The origins must already agree (see `verify_ledger`).
    """
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
            f"published tree head: expected the log to hold at least its {plural(published.size, 'entry', 'entries')}, "
            f"found {size}: the log was rolled back",
        )
    elif prefix_root != published.root:
        found = prefix_root.hex() if prefix_root is not None else "none"
        problems.add(
            None,
            f"published tree head: expected the first {plural(published.size, 'entry', 'entries')} to have root "
            f"{published.root.hex()}, found {found}: history was rewritten",
        )


# --------------------------------------------------------------------------- the driver


@dataclass(frozen=True)
class _Start:
    """What the first, short session reads: everything later is judged against this state."""

    shape: _Shape
    head: _HeadRows
    hints: dict[str, bytes]
    records: int  # stored record rows, to choose the worker count
    cover: tuple[int, int]  # the batch keys record rows may have (the log's index range)
    nodes_print: tuple[int, int]  # see _nodes_print


def _read_start(path: Path, problems: _Problems) -> _Start:
    """The log's shape, tree head, key hints and the checks that need one consistent view of whole tables."""
    with store.session(path, read_only=True) as conn:
        shape = _check_indexes(conn, problems)
        head = _read_head(conn)
        hints = _key_hints(conn)
        if shape.intact:
            _extra_nodes(conn, shape.count, problems)
        else:
            _check_tree(conn, shape.count, problems)
        cover = (min(0, shape.first), shape.last)
        problems.extend(_beyond_log(conn, cover))
        ((records,),) = conn.execute("SELECT count(*) FROM records").fetchall()
        nodes_print = _nodes_print(conn, shape.count)
    return _Start(shape, head, hints, int(records), cover, nodes_print)


def verify_ledger(
    ledger: Ledger,
    since_note: str | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    workers: int | None = None,
    record_sets: Collection[int] | None = None,
    since_name: str = "published tree head",
) -> VerifyReport:
    """Verify the log up to the tree head found at the start; collect every problem instead of stopping.

    `record_sets` limits the record-set recomputation to these batch entries (an audit needs only its
    lineage's); every entry, signature and tree node is still checked. None checks every batch and that
    no record row lies outside one.

    The file is read in short sessions (see the module docstring), so recorders keep appending while
    this runs; the report's `size` and `root` are what was verified. `since_note` is a tree head
    published earlier: the log must extend it; a head of another log (another origin) is an InputError
    when the log itself is intact (the wrong file, not tampering), `since_name` naming it. `progress` is called with the number of entries just
    checked. `workers` is the number of processes checking signatures and rebuilding record sets
    (default: one per CPU, up to 2, for logs of at least 20k entries or 200k records on Linux; 1 = this
    process only).
    """
    published = _parse_published(since_note, since_name) if since_note is not None else None
    problems = _Problems()
    origin: str | None = None
    path = ledger.path
    pool: ProcessPoolExecutor | None = None
    try:
        start = _read_start(path, problems)
        workers = _choose_workers(start, workers)
        pool = _start_pool(workers)  # forked while no session is open
        size = start.shape.count
        sequence = _Sequence(size, problems)
        calls = _Calls()
        root, prefix_root = _check_entries(
            path, start, sequence, calls, published, progress, pool, workers
        )
        head_ok = _check_head(start.head, size, root, sequence.ring, problems)
        texted: dict[int, int] = {}
        problems.extend(
            _check_record_sets(
                lambda: store.session(path, read_only=True),
                sequence.commitments
                if record_sets is None
                else {b: c for b, c in sequence.commitments.items() if b in record_sets},
                start.cover if record_sets is None else None,
                pool,
                path,
                workers,
                texted,
            )
        )
        with store.session(path, read_only=True) as conn:
            if record_sets is not None:
                problems.extend(_strays_between(conn, start.cover, sequence.commitments))
            _check_calls_unique(conn, calls, problems)
            if head_ok and start.shape.intact:
                _recheck(conn, start, root, problems)
        origin = start.head.origin
        if published is not None and since_note is not None and published.origin == origin:
            _check_published(
                since_note,
                published,
                published.origin,
                size,
                prefix_root,
                sequence.ring,
                problems,
            )
    except duckdb.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptDatabaseError(f"{path}: cannot read the ledger: {first_line}") from exc
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    found = problems.result()
    if published is not None and published.origin != origin:
        if not found:  # an intact log that is not the one the head was published for
            raise InputError(
                f"{since_name}: this head's origin is {published.origin!r}, the ledger's is "
                f"{origin!r}: a tree head of another ledger (wrong file or --db?)"
            )
        found.append(
            Problem(
                None,
                f"{since_name}: expected origin {origin!r}, found {published.origin!r}",
            )
        )
    return VerifyReport(not found, size, root, found, texted)


def _choose_workers(start: _Start, workers: int | None) -> int:
    if workers is not None:
        return max(1, workers)
    if not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2:
        return 1
    big = start.shape.count >= _POOL_MIN_ENTRIES or start.records >= _POOL_MIN_RECORDS
    return min(2, os.cpu_count() or 1) if big else 1


def _start_pool(workers: int) -> ProcessPoolExecutor | None:
    """Worker processes, forked while no session is open so no DuckDB thread of ours is copied into them.

    fork (Linux) rather than spawn: spawn would re-run an unguarded `__main__` of the caller's script.
    Each worker opens its own short sessions (record sets); entry rows are sent to it by this process.
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


def _fetch_entries(conn: Connection, lo: int, hi: int) -> list[_Row]:
    """Entry rows with indexes lo..hi-1 in index order (a duplicated index ordered by leaf bytes)."""
    rows: list[_Row] = conn.execute(
        """SELECT idx, leaf, signer, kind, time, ref, provider, model, purpose FROM entries
           WHERE idx >= ? AND idx < ? ORDER BY idx""",
        [lo, hi],
    ).fetchall()
    if len({row[0] for row in rows}) != len(rows):
        rows.sort(key=lambda row: (row[0], bytes(row[1])))
    return rows


def _check_entries(
    path: Path,
    start: _Start,
    sequence: _Sequence,
    calls: _Calls,
    published: keys.TreeHead | None,
    progress: Callable[[int], None] | None,
    pool: ProcessPoolExecutor | None,
    workers: int,
) -> tuple[bytes, bytes | None]:
    """Read the entries in sessions of `_SESSION_ENTRIES` and check them with the session closed.

    Leaves are hashed here and every tree node they make is recomputed and compared with the stored one;
    parsing and signatures run in the worker pool if any (`_examine`), log-order checks in `_Sequence`.
    Returns the root recomputed from the leaves and the root of the first `published.size` of them.
    """
    shape = start.shape
    problems = sequence.problems
    want_prefix = published.size if published is not None else -1
    prefix_root = merkle.EMPTY_ROOT if want_prefix == 0 else None
    frontier: dict[tuple[int, int], bytes] = {}
    size = 0  # leaves hashed so far: rows in index order, a duplicated row counted twice
    root = merkle.EMPTY_ROOT
    in_flight = 2 * workers if pool is not None else 0
    pending: deque[tuple[list[_Row], Future[list[_Examined]] | list[_Examined]]] = deque()
    sha = hashlib.sha256
    after: int | None = None

    def settle() -> None:
        rows, result = pending.popleft()
        examined = result if isinstance(result, list) else result.result()
        for row, ex in zip(rows, examined):
            sequence.add(ex, row[1])
            calls.add(row)
        if progress is not None:
            progress(len(rows))

    lo = shape.first
    while lo <= shape.last:
        hi = min(lo + _SESSION_ENTRIES, shape.last + 1)
        with store.session(path, read_only=True) as conn:
            rows = _fetch_entries(conn, lo, hi)
            stored = _fetch_nodes(conn, lo, hi) if shape.intact else None
            if not rows:  # a gap in a damaged log: skip to the next stored index
                ((after,),) = conn.execute(
                    "SELECT min(idx) FROM entries WHERE idx >= ? AND idx <= ?", [hi, shape.last]
                ).fetchall()
        if not rows:
            lo = shape.last + 1 if after is None else int(after)
            continue
        hashes = [sha(b"\x00" + row[1]).digest() for row in rows]
        created, root = merkle.append_nodes(frontier, size, hashes)
        made = {(level, idx): digest for level, idx, digest in created}
        if 0 < want_prefix - size <= len(hashes):
            prefix_root = merkle.root_from_nodes(want_prefix, frontier | made)
        size += len(hashes)
        frontier = {node: made.get(node) or frontier[node] for node in merkle.frontier_nodes(size)}
        if stored is not None:
            _compare_nodes(created, stored, problems)
        for at in range(0, len(rows), _ENTRY_CHUNK):
            part = rows[at : at + _ENTRY_CHUNK]
            busy = sum(1 for _, r in pending if isinstance(r, Future) and not r.done())
            if pool is not None and busy < in_flight:
                pending.append((part, pool.submit(_examine_chunk, part, start.hints)))
            else:  # every worker is busy: this process checks the part itself rather than wait
                pending.append((part, _examine_chunk(part, start.hints)))
            while pending and (isinstance(pending[0][1], list) or pending[0][1].done()):
                settle()
            while len(pending) > 2 * in_flight + 1:
                settle()
        lo = hi
    while pending:
        settle()
    return root, prefix_root
