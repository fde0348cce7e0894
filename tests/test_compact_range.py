"""RFC 6962 compact ranges (spec/merkle.CompactRange): each worker summarises a contiguous slice of
leaf hashes in O(log n) hashes, and the driver merges the slices in order into the root.

The expected roots come from an independent recursive MTH written here from RFC 6962 section 2.1,
and from `pymerkle` (an implementation no one here wrote) for the largest tree.
"""

from __future__ import annotations

import hashlib
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import UsageError, VerificationError
from ledger.spec import merkle


def mth(hashes: tuple[bytes, ...]) -> bytes:
    """RFC 6962 MTH over leaf hashes, recursively (split at the largest power of two below n)."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(hashes[:k]) + mth(hashes[k:])).digest()


@cache
def leaves(n: int) -> tuple[bytes, ...]:
    return tuple(hashlib.sha256(b"\x00" + f"leaf {i}".encode()).digest() for i in range(n))


@cache
def roots(n: int) -> bytes:
    return mth(leaves(n))


def slice_range(begin: int, end: int) -> merkle.CompactRange:
    piece = merkle.CompactRange(begin)
    piece.extend(leaves(end)[begin:end])
    return piece


@pytest.mark.parametrize("n", [*range(0, 70), 127, 128, 129, 255, 256, 257, 300])
def test_every_two_way_split_merges_to_the_root(n: int) -> None:
    suffixes: dict[int, merkle.CompactRange] = {}
    for split in range(n + 1):
        suffixes[split] = slice_range(split, n)
    prefix = merkle.CompactRange()
    for split in range(n + 1):
        whole = merkle.CompactRange(0, prefix.end, prefix.hashes)  # a copy, via its wire form
        whole.merge(suffixes[split])
        assert whole.root() == roots(n), (n, split)
        assert whole == slice_range(0, n)
        if split < n:
            prefix.append(leaves(n)[split])


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 400).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(st.integers(0, n), max_size=8))
    )
)
def test_any_split_into_slices_merges_in_order_to_the_root(case: tuple[int, list[int]]) -> None:
    n, cuts = case
    bounds = [0, *sorted(cuts), n]
    pieces = [slice_range(a, b) for a, b in zip(bounds, bounds[1:])]
    for piece, (a, b) in zip(pieces, zip(bounds, bounds[1:])):
        assert (piece.begin, piece.end) == (a, b)
        assert len(piece.hashes) == len(merkle.compact_nodes(a, b))
        assert len(piece.hashes) <= 2 * max(1, (b - a).bit_length())
        wire = merkle.CompactRange(piece.begin, piece.end, piece.hashes)  # what a task sends back
        assert wire == piece
    total = pieces[0]
    for piece in pieces[1:]:
        total.merge(piece)
    assert total.root() == roots(n)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 200), st.integers(0, 200), st.integers(0, 200), st.integers(0, 200))
def test_merge_is_associative(a: int, b: int, c: int, d: int) -> None:
    p, q, r, s = sorted((a, b, c, d))
    left = slice_range(p, q)
    left.merge(slice_range(q, r))
    left.merge(slice_range(r, s))
    right = slice_range(q, r)
    right.merge(slice_range(r, s))
    other = slice_range(p, q)
    other.merge(right)
    assert left == other == slice_range(p, s)


def test_compact_nodes_are_aligned_and_cover_the_range() -> None:
    for begin in range(0, 70):
        for end in range(begin, 140):
            position = begin
            for level, idx in merkle.compact_nodes(begin, end):
                assert idx << level == position
                position += 1 << level
            assert position == end
    assert merkle.compact_nodes(5, 5) == []
    assert merkle.compact_nodes(3, 13) == [(0, 3), (2, 1), (2, 2), (0, 12)]


def test_a_large_tree_agrees_with_pymerkle() -> None:
    pymerkle = pytest.importorskip("pymerkle")
    data = [f"record {i}".encode() for i in range(1000)]
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for item in data:
        tree.append_entry(item)
    expected = tree.get_root()
    ranges = []
    for a, b in [(0, 1), (1, 333), (333, 512), (512, 999), (999, 1000)]:
        piece = merkle.CompactRange(a)
        piece.extend(merkle.leaf_hash(item) for item in data[a:b])
        ranges.append(piece)
    total = ranges[0]
    for piece in ranges[1:]:
        total.merge(piece)
    assert total.root() == expected


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(VerificationError, match=r"expected 2 hashes, found 1"):
        merkle.CompactRange(3, 6, [b"\x00" * 32])
    with pytest.raises(VerificationError, match="32-byte"):
        merkle.CompactRange(0, 1, [b"short"])
    with pytest.raises(UsageError, match="must be adjacent"):
        slice_range(0, 4).merge(slice_range(5, 6))
    with pytest.raises(UsageError, match="starts at 0"):
        slice_range(2, 4).root()
    with pytest.raises(UsageError, match="0 <= begin <= end"):
        merkle.compact_nodes(4, 3)
    assert merkle.CompactRange().root() == merkle.EMPTY_ROOT
