"""Record leaves rebuilt from stored rows with numpy, and roots over them (what `records_root` commits to)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from ledger.engine.columns import int_column
from ledger.errors import VerificationError
from ledger.log.verify.columns import as_fixed32, as_int64, byte_lengths
from ledger.spec import leaves as leaves_spec
from ledger.spec import merkle


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


def fingerprint_hashes(column: pa.Array) -> list[bytes]:
    """RFC 6962 leaf hashes of fingerprint values (NULL is the empty fingerprint, as recording writes it).

    Values of one length, the usual case, are laid out behind their 0x00 prefixes by numpy in one block,
    so the loop only hashes slices.
    """
    n = len(column)
    if n == 0:
        return []
    lengths = byte_lengths(column)
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
class RecordChunk:
    """Rebuilt record leaves of a range of (batch, position) keys, in key order."""

    batches: np.ndarray
    positions: np.ndarray
    groups: list[leaves_spec.LeafGroup]
    fingerprints: pa.Array  # in the same key order

    def leaf_hashes(self) -> list[bytes]:
        return leaves_spec.record_leaf_hashes(self.groups, len(self.batches))

    def leaves(self) -> list[bytes]:
        out: list[bytes] = [b""] * len(self.batches)
        for group in self.groups:
            for row, leaf in zip(group.rows.tolist(), group.leaves(), strict=True):
                out[row] = leaf
        return out


KEY_SHIFT = 32  # composite key = batch << 32 | position; positions are checked to fit first


def build_chunk(records: pa.Table, segs: pa.Table) -> RecordChunk:
    """Rebuild the leaves of fetched record rows (any order) with their segments (SQL fetched, numpy builds)."""
    rb, rp = as_int64(records.column("batch")), as_int64(records.column("position"))
    sb, sp = as_int64(segs.column("batch")), as_int64(segs.column("position"))
    digests = as_fixed32(records.column("digest"))
    segments = as_fixed32(segs.column("segment"))
    fingerprints = records.column("fingerprint").combine_chunks()
    if len(rp) and (
        rp.min() < 0 or rp.max() >= 1 << KEY_SHIFT or rb.min() < 0 or rb.max() >= 1 << 30
    ):
        raise VerificationError(
            f"expected record keys (batch < 2^30, position < 2^32), found batches "
            f"{rb.min()}..{rb.max()} and positions {rp.min()}..{rp.max()}"
        )
    rkey = (rb << KEY_SHIFT) | rp
    if len(rkey) > 1 and not np.all(rkey[:-1] <= rkey[1:]):
        order = np.argsort(rkey, kind="stable")
        rkey, rb, rp, digests = rkey[order], rb[order], rp[order], digests[order]
        fingerprints = fingerprints.take(int_column(order))
    skey = (sb << KEY_SHIFT) | np.clip(sp, 0, (1 << KEY_SHIFT) - 1)
    segments, ordered = _sort_within_records(skey, segments)
    if not ordered and not _segments_sorted(skey, segments):
        words = segments.view(">u8").reshape(len(segments), 4)
        order = np.lexsort((words[:, 3], words[:, 2], words[:, 1], words[:, 0], skey))
        skey, segments = skey[order], np.ascontiguousarray(segments[order])
    starts = np.searchsorted(skey, rkey, "left")
    counts = np.searchsorted(skey, rkey, "right") - starts
    groups = leaves_spec.record_leaf_groups(digests, counts, starts, segments)
    return RecordChunk(rb, rp, groups, fingerprints)


def fast_root(hashes: Sequence[bytes]) -> bytes:
    """merkle.root, in O(log n) when every leaf hash is the same (a batch without fingerprints)."""
    if len(hashes) > 1 and hashes.count(hashes[0]) == len(hashes):
        return repeated_root(hashes[0], len(hashes))
    return merkle.root(hashes)


@lru_cache(maxsize=256)
def repeated_root(leaf: bytes, n: int) -> bytes:
    """RFC 6962 root of n (>= 1) copies of one leaf hash: equal subtrees have equal roots, so each of the
    O(log n) distinct subtree sizes is hashed once."""
    if n == 1:
        return leaf
    k = 1 << ((n - 1).bit_length() - 1)
    return merkle.node_hash(repeated_root(leaf, k), repeated_root(leaf, n - k))
