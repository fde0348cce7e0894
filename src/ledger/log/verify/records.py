"""Record sets: every batch's stored rows must recompute to the roots its signed entry commits to.

Rows are read in units (`plan_units`): small batches together, a big one in aligned position slices, each
unit fetched in a short session of its own and then judged from numpy statistics before any leaf is
rebuilt (`rebuild.py`), so malformed values name their defect instead of reaching the leaf builder.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from ledger.engine.columns import int_column
from ledger.engine.pool import WorkerPool, worker_job
from ledger.log import store
from ledger.log.store import verify as queries
from ledger.log.verify.columns import as_int64, byte_lengths
from ledger.log.verify.rebuild import KEY_SHIFT, build_chunk, fast_root, fingerprint_hashes
from ledger.log.verify.report import Connection, Opener
from ledger.spec import merkle
from ledger.spec.problems import Problem

# Record rows per session and per worker task; a power of two, so slices of a batch are perfect subtrees.
RECORD_CHUNK = 1 << 17
# With a pool, units shrink (halving, down to this) until there are more units than workers, so a
# batch of 100k records keeps both workers busy instead of one.
MIN_POOL_CHUNK = 1 << 15
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


@dataclass(frozen=True)
class RecordStats:
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

    def merge(self, other: RecordStats) -> RecordStats:
        """Statistics of two disjoint position ranges of one batch taken together."""
        if not other.rows:
            span = (self.first, self.last)
        elif not self.rows:
            span = (other.first, other.last)
        else:
            span = (min(self.first, other.first), max(self.last, other.last))
        return RecordStats(
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


def _stats_problems(batch: int, count: int, stats: RecordStats) -> list[Problem]:
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


@dataclass(frozen=True)
class Commitment:
    """What a batch entry commits to about its record set."""

    count: int
    records_root: str
    fingerprints_root: str | None  # None when the entry commits to no fingerprints
    without_text: int | None = None  # records with no segment; None in batches recorded before it


def commitment_of(body: Mapping[str, Any]) -> Commitment:
    fingerprints = body.get("fingerprints")
    fp_root = fingerprints.get("root") if isinstance(fingerprints, Mapping) else None
    bare = body.get("records_without_text")
    return Commitment(
        int(body["count"]),
        str(body["records_root"]),
        None if fp_root is None else str(fp_root),
        None if bare is None else int(bare),
    )


@dataclass(frozen=True)
class Unit:
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


def plan_units(
    batches: Sequence[tuple[int, int]], cover: tuple[int, int] | None, chunk: int | None = None
) -> list[Unit]:
    """Units over batches in index order: small batches together, a big one in position slices.

    With `cover` = (lo, hi) the units' key ranges tile lo..hi, so record rows stored under a key that is
    no batch entry are found too. `chunk` (a power of two; default `RECORD_CHUNK`) bounds a unit's rows.
    """
    chunk = RECORD_CHUNK if chunk is None else chunk
    units: list[Unit] = []
    group: list[tuple[int, int]] = []
    total = 0
    cursor = cover[0] if cover is not None else 0  # lowest key not yet in a unit

    def flush(upto: int) -> None:
        nonlocal cursor, group, total
        if cover is not None and cursor <= upto:
            units.append(Unit(cursor, upto, _INT64_MIN, _INT64_MAX, tuple(group)))
        elif cover is None and group:
            units.append(
                Unit(group[0][0], group[-1][0], _INT64_MIN, _INT64_MAX, tuple(group), False)
            )
        cursor = max(cursor, upto + 1)
        group, total = [], 0

    for batch, count in batches:
        if count > chunk:
            flush(batch - 1)
            for lo in range(0, count, chunk):
                first = _INT64_MIN if lo == 0 else lo
                last = _INT64_MAX if lo + chunk >= count else lo + chunk - 1
                units.append(Unit(batch, batch, first, last, ((batch, count),), cover is not None))
            cursor = batch + 1
            continue
        if group and total + count > chunk:
            flush(group[-1][0])
        group.append((batch, count))
        total += count
    if cover is not None:
        flush(cover[1])
    elif group:
        flush(group[-1][0])
    return units


def _fetch_unit(conn: Connection, unit: Unit) -> tuple[pa.Table, pa.Table]:
    """A unit's record and segment rows as Arrow tables, fetched in full (the session can close after)."""
    # only the chosen batches of a non-covering unit: rows of other runs' batches in between stay unread
    only = None if unit.covering else [b for b, _ in unit.counts]
    return queries.record_rows(conn, unit.batch_lo, unit.batch_hi, unit.pos_lo, unit.pos_hi, only)


# batch, first position, records root and fingerprints root of one slice of a batch

_Piece = tuple[int, int, bytes, bytes]


@dataclass(frozen=True)
class UnitResult:
    """What one unit found: statistics per batch entry, roots of its sound slices, rows of no batch entry."""

    stats: tuple[tuple[int, RecordStats], ...]
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
    if not len(both) or (both.min() >= 0 and both.max() < 1 << KEY_SHIFT):
        return (rl << KEY_SHIFT) | rp, (sl << KEY_SHIFT) | sp
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


def _unit_result(unit: Unit, records: pa.Table, segs: pa.Table) -> UnitResult:
    """Statistics of every batch in the unit, and the roots of those whose rows here are exactly right.

    Everything is counted with numpy over the whole unit at once; leaves are rebuilt only for batches
    whose rows are sound (so malformed values never reach the leaf builder).
    """
    keys_ = np.array([b for b, _ in unit.counts], np.int64)
    n = len(keys_)
    rb, rp = as_int64(records.column("batch")), as_int64(records.column("position"))
    sb, sp = as_int64(segs.column("batch")), as_int64(segs.column("position"))
    rl, sl = _local(keys_, rb), _local(keys_, sb)
    rkeep, skeep = rl >= 0, sl >= 0
    strays = _strays(rb[~rkeep], sb[~skeep]) if unit.covering else ()
    rl_k, rp_k, sl_k, sp_k = rl[rkeep], rp[rkeep], sl[skeep], sp[skeep]
    rows = np.bincount(rl_k, minlength=n)
    bad_digests = np.bincount(
        rl_k[byte_lengths(records.column("digest"))[rkeep] != 32], minlength=n
    )
    fingerprints = np.bincount(
        rl_k[byte_lengths(records.column("fingerprint"))[rkeep] > 0], minlength=n
    )
    bad_segments = np.bincount(sl_k[byte_lengths(segs.column("segment"))[skeep] != 32], minlength=n)
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
    stats: list[tuple[int, RecordStats]] = []
    build: list[int] = []  # batches rebuilt here
    for i, (batch, count) in enumerate(unit.counts):
        has = int(ends[i]) > int(begins[i])
        s = RecordStats(
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
    return UnitResult(tuple(stats), _pieces(unit, records, segs, build, everything), strays)


def _pieces(
    unit: Unit, records: pa.Table, segs: pa.Table, build: list[int], everything: bool
) -> tuple[_Piece, ...]:
    """Records and fingerprints roots of the `build` batches' rows in this unit (one slice each)."""
    if not build:
        return ()
    if not everything:
        wanted = int_column(build)
        records = records.filter(pc.is_in(records.column("batch"), value_set=wanted))
        segs = segs.filter(pc.is_in(segs.column("batch"), value_set=wanted))
    chunk = build_chunk(records, segs)
    hashes = chunk.leaf_hashes()
    fp_hashes = fingerprint_hashes(chunk.fingerprints)
    bounds = (np.flatnonzero(np.diff(chunk.batches)) + 1).tolist()
    counts = dict(unit.counts)
    return tuple(
        (
            int(chunk.batches[lo]),
            unit.expected(counts[int(chunk.batches[lo])])[0],
            fast_root(hashes[lo:hi]),
            fast_root(fp_hashes[lo:hi]),
        )
        for lo, hi in zip([0, *bounds], [*bounds, len(hashes)])
    )


def _unit_in_worker(unit: Unit) -> UnitResult:
    """Worker side: a session of its own on the pool's job (the ledger's path) for just the fetch,
    closed before the rows are checked."""
    with store.session(Path(str(worker_job())), read_only=True) as conn:
        records, segs = _fetch_unit(conn, unit)
    return _unit_result(unit, records, segs)


def _unit_here(opener: Opener, unit: Unit) -> UnitResult:
    """This process's side: the same, through `opener`."""
    with opener() as conn:
        records, segs = _fetch_unit(conn, unit)
    return _unit_result(unit, records, segs)


def _root_problems(
    batch: int, want: Commitment, records_root: bytes, fp_root: bytes
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


def _pool_chunk(batches: Sequence[tuple[int, int]], pool: WorkerPool | None) -> int:
    """The unit size: `RECORD_CHUNK`, halved (down to `MIN_POOL_CHUNK`) while a pool would get no
    more units than it has workers."""
    chunk = RECORD_CHUNK
    if pool is None:
        return chunk
    total = sum(count for _, count in batches)
    while chunk > MIN_POOL_CHUNK and total <= pool.workers * chunk:
        chunk //= 2
    return chunk


def check_record_sets(
    opener: Opener,
    commitments: Mapping[int, Commitment],
    cover: tuple[int, int] | None,
    pool: WorkerPool | None = None,
    texted: dict[int, int] | None = None,
) -> list[Problem]:
    """Fetch every unit in a short session of its own (in the worker pool when there is one, whose job
    is the ledger's path), then judge each batch from its summed statistics first (cheap, names the
    defect) and its rebuilt roots second.

    `texted`, when given, receives each batch's number of records with at least one segment, counted
    from the very rows whose roots were checked (the audit's coverage rule reads it).
    """
    batches = [(batch, commitments[batch].count) for batch in sorted(commitments)]
    stats: dict[int, RecordStats] = {}
    pieces: dict[int, list[_Piece]] = {}
    strays: dict[int, tuple[int, int]] = {}
    units = plan_units(batches, cover, _pool_chunk(batches, pool))
    results = (
        pool.map(_unit_in_worker, units)
        if pool is not None
        else (_unit_here(opener, unit) for unit in units)
    )
    for result in results:
        for batch, s in result.stats:
            stats[batch] = stats[batch].merge(s) if batch in stats else s
        for piece in result.pieces:
            pieces.setdefault(piece[0], []).append(piece)
        for key, rows, segs in result.strays:
            had = strays.get(key, (0, 0))
            strays[key] = (had[0] + rows, had[1] + segs)
    problems = _stray_problems(strays, "a non-batch entry")
    for batch, count in batches:
        want = commitments[batch]
        s = stats.get(batch, RecordStats())
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


def strays_beyond_log(conn: Connection, cover: tuple[int, int]) -> list[Problem]:
    """Record rows under keys outside the log as it stands at the start (the units cover the rest)."""
    return _stray_problems(
        queries.record_rows_outside(conn, *cover), "a key the log has no entry for"
    )


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


def strays_between(
    conn: Connection, cover: tuple[int, int], batches: Collection[int]
) -> list[Problem]:
    """Record rows under keys inside the log that are no batch entry, found by one anti-join per table.

    A whole-log verify finds them while tiling every key; an audit reads only its lineage's record
    sets, and this keeps it from vouching for a file that holds rows no batch commits to.
    """
    found = queries.record_rows_not_under(conn, cover[0], cover[1], batches)
    return _stray_problems(found, "a non-batch entry")


def record_leaves(conn: Connection, batch_index: int) -> Iterator[bytes]:
    """Rebuild each record leaf of a batch from its stored rows, in position order, a chunk at a time.

    Leaves are JCS `{"segments":[...],"sha256":"..."}` with segments sorted as the records root commits to
    them; the rows are not validated here (`check_record_set` does that).
    """
    last = queries.last_position(conn, batch_index)
    for lo in range(0, last + 1, RECORD_CHUNK):
        unit = Unit(batch_index, batch_index, lo, lo + RECORD_CHUNK - 1, ())
        yield from build_chunk(*_fetch_unit(conn, unit)).leaves()


def check_record_set(conn: Connection, batch_index: int, body: Mapping[str, Any]) -> list[Problem]:
    """Check one batch's stored record set against its signed body: positions, records root, fingerprints root."""
    return check_record_sets(lambda: nullcontext(conn), {batch_index: commitment_of(body)}, None)
