"""RFC 6962 / RFC 9162 Merkle trees: roots, node bookkeeping, inclusion and consistency proofs.

Pure functions, no I/O. Storage keeps the hash of every *perfect* subtree as a node
``(level, idx)`` covering leaves ``[idx * 2**level, (idx + 1) * 2**level)``; every other
RFC 6962 subtree is a right edge whose hash folds a few perfect nodes. So proof generation
is split in two steps: *which* nodes a proof needs (``inclusion_ranges`` / ``consistency_ranges``
then ``needed_nodes``, O(log n) of them) and *combining* the fetched hashes (``inclusion_proof`` /
``consistency_proof``). A log of 10M entries never rehashes or reads 10M rows for a proof.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice, repeat

from ledger.errors import UsageError, VerificationError
from ledger.wording import plural

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "RootBuilder",
    "compact_nodes",
    "append_nodes",
    "consistency_proof",
    "consistency_ranges",
    "frontier_nodes",
    "inclusion_proof",
    "inclusion_proof_from_leaves",
    "inclusion_ranges",
    "leaf_hash",
    "needed_nodes",
    "node_hash",
    "nodes_from_leaves",
    "perfect_nodes",
    "range_hash",
    "root",
    "root_from_nodes",
    "root_of_leaves",
    "verify_consistency",
    "verify_inclusion",
]

Node = tuple[int, int]
"""A perfect subtree ``(level, idx)``: the leaves ``[idx * 2**level, (idx + 1) * 2**level)``."""

HASH_SIZE = 32
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_join = b"".join
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
# Streaming roots hash chunks of 2**16 leaves level by level: big enough to amortise the
# Python loop, small enough that memory stays a few MB whatever the input size.
_CHUNK_LEVEL = 16


def leaf_hash(leaf: bytes | memoryview) -> bytes:
    """RFC 6962 leaf hash ``sha256(0x00 || leaf)``; the prefix keeps leaves and nodes apart."""
    return _sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash ``sha256(0x01 || left || right)``."""
    return _sha256(_join((_NODE_PREFIX, left, right))).digest()


def _hash_pairs(level: Sequence[bytes]) -> list[bytes]:
    """Hash adjacent pairs of one tree level; an odd last element is left to the caller."""
    it = iter(level)
    return [_sha256(_join((_NODE_PREFIX, a, b))).digest() for a, b in zip(it, it)]


def _largest_power_below(width: int) -> int:
    """RFC 6962's split point k: the largest power of two strictly smaller than ``width`` (> 1)."""
    return 1 << ((width - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH over leaf hashes (not raw leaves); the empty tree is ``EMPTY_ROOT``.

    Built level by level, carrying an odd last node up unchanged: this pairs exactly the
    nodes that RFC 6962's largest-power-of-two split pairs, at C speed per level.
    """
    level: Sequence[bytes] = leaf_hashes
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        upper = _hash_pairs(level)
        if len(level) & 1:
            upper.append(level[-1])
        level = upper
    return bytes(level[0])


def _leaf_hashes(leaves: Iterable[bytes]) -> list[bytes]:
    """Leaf hashes of a chunk of raw leaves, in one comprehension for speed."""
    return [_sha256(_LEAF_PREFIX + leaf).digest() for leaf in leaves]


def root_of_leaves(leaves: Iterable[bytes]) -> bytes:
    """RFC 6962 root over raw leaves, hashing them on the way; memory stays O(chunk + log n)."""
    builder = RootBuilder()
    it = iter(leaves)
    while chunk := _leaf_hashes(islice(it, 1 << _CHUNK_LEVEL)):
        builder.extend(chunk)
    return builder.root()


def compact_nodes(begin: int, end: int) -> list[Node]:
    """The perfect nodes, left to right, that cover ``[begin, end)`` exactly, each as large as its
    alignment allows: sizes rise then fall, so there are at most 2 log2(end - begin) of them."""
    if not 0 <= begin <= end:
        raise UsageError(f"expected a leaf range 0 <= begin <= end, found [{begin}, {end})")
    nodes: list[Node] = []
    position = begin
    while position < end:
        level = (end - position).bit_length() - 1
        if position:
            level = min(level, _trailing_zeros(position))
        nodes.append((level, position >> level))
        position += 1 << level
    return nodes


class CompactRange:
    """An RFC 6962 compact range: the hashes of `compact_nodes(begin, end)`, which summarise the leaf
    hashes ``[begin, end)`` in O(log n) space.

    Ranges of adjacent positions merge (associatively) into the range of their union, and a range
    that starts at 0 gives the tree root. So workers can each hash a contiguous slice of a batch and
    return a few hashes; the driver merges them in order into `records_root` without ever holding
    every leaf hash. Serialise a range as (begin, end, hashes): the node positions follow from those.
    """

    __slots__ = ("_begin", "_end", "_nodes")

    def __init__(
        self, begin: int = 0, end: int | None = None, hashes: Sequence[bytes] = ()
    ) -> None:
        end = begin if end is None else end
        expected = compact_nodes(begin, end)
        if len(hashes) != len(expected):
            raise VerificationError(
                f"compact range [{begin}, {end}): expected {plural(len(expected), 'hash', 'hashes')}, "
                f"found {len(hashes)}"
            )
        for digest in hashes:
            _check_hash("compact range hash", digest)
        self._begin, self._end = begin, end
        self._nodes: list[tuple[int, bytes]] = [
            (level, bytes(digest)) for (level, _), digest in zip(expected, hashes)
        ]

    @property
    def begin(self) -> int:
        return self._begin

    @property
    def end(self) -> int:
        return self._end

    @property
    def hashes(self) -> list[bytes]:
        """The node hashes, left to right (what to send to the driver, with begin and end)."""
        return [digest for _, digest in self._nodes]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return (self._begin, self._end, self._nodes) == (other._begin, other._end, other._nodes)

    def __repr__(self) -> str:
        return f"CompactRange({self._begin}, {self._end}, <{len(self._nodes)} hashes>)"

    def append(self, leaf_hash: bytes) -> None:
        """Extend the range by one leaf hash on the right."""
        self._push(0, _check_hash("leaf hash", leaf_hash))

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for digest in leaf_hashes:
            self.append(digest)

    def merge(self, right: CompactRange) -> None:
        """Absorb the range that starts where this one ends (this one becomes their union)."""
        if right._begin != self._end:
            raise UsageError(
                f"compact ranges must be adjacent: [{self._begin}, {self._end}) cannot take "
                f"[{right._begin}, {right._end})"
            )
        for level, digest in right._nodes:
            self._push(level, digest)

    def root(self) -> bytes:
        """The RFC 6962 root of the leaves ``[0, end)``; the range must start at 0."""
        if self._begin != 0:
            raise UsageError(f"a root needs a range that starts at 0, found one at {self._begin}")
        if not self._nodes:
            return EMPTY_ROOT
        digest = self._nodes[-1][1]
        for _, left in reversed(self._nodes[:-1]):
            digest = node_hash(left, digest)
        return digest

    def _push(self, level: int, digest: bytes) -> None:
        """Append a perfect node of 2**level leaves at position `end` (aligned to its size), then
        join it with its left sibling while there is one: what is left is again `compact_nodes`."""
        position = self._end
        self._end += 1 << level
        nodes = self._nodes
        while nodes and nodes[-1][0] == level and (position >> level) & 1:
            digest = node_hash(nodes.pop()[1], digest)
            position -= 1 << level
            level += 1
        nodes.append((level, digest))


class RootBuilder(CompactRange):
    """Streaming RFC 6962 root over an unbounded sequence of leaf hashes, in O(log n) memory: the
    compact range of the leaves from 0, with fast paths that hash aligned chunks level by level.

    It keeps the perfect subtrees that cover the leaves seen so far (one per set bit of the
    size, largest first), which is all a root needs.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(0)

    @property
    def size(self) -> int:
        """Number of leaf hashes added so far."""
        return self._end

    def add(self, leaf_hash: bytes) -> None:
        """Append one leaf hash (trusted: recorded here, not read from a proof)."""
        self._push(0, leaf_hash)

    def extend(self, hashes: Iterable[bytes]) -> None:
        """Append many leaf hashes; aligned chunks are hashed level by level for speed."""
        it = iter(hashes)
        while True:
            size = self._end
            # The largest perfect subtree that may start at `size` is bounded by its alignment.
            level = _CHUNK_LEVEL if size == 0 else min(_CHUNK_LEVEL, _trailing_zeros(size))
            piece = list(islice(it, 1 << level))
            if len(piece) == 1 << level:
                self._push(level, root(piece))
                continue
            position = 0
            for sub in range(level - 1, -1, -1):
                if len(piece) >> sub & 1:
                    self._push(sub, root(piece[position : position + (1 << sub)]))
                    position += 1 << sub
            return

    def extend_joined(self, joined: bytes) -> None:
        """`extend` with leaf hashes laid end to end, 32 bytes each: the lowest nodes hash straight
        from the buffer, so no object is made per leaf (~30% cheaper for a block of records)."""
        count, done = len(joined) // 32, 0
        while done < count:
            size = self._end
            level = _CHUNK_LEVEL if size == 0 else min(_CHUNK_LEVEL, _trailing_zeros(size))
            width = min(1 << level, count - done)
            for sub in range(level, -1, -1):  # the whole chunk, or the perfect pieces of the rest
                if width >> sub & 1:
                    self._push(sub, _perfect_root_joined(joined, done, 1 << sub))
                    done += 1 << sub


def _perfect_root_joined(joined: bytes, start: int, width: int) -> bytes:
    """Root of the perfect subtree over the `width` (a power of two) leaf hashes from leaf `start`
    of `joined`."""
    if width == 1:
        return joined[32 * start : 32 * start + 32]
    at, end = 32 * start, 32 * (start + width)
    return root([_sha256(_NODE_PREFIX + joined[i : i + 64]).digest() for i in range(at, end, 64)])


def _trailing_zeros(value: int) -> int:
    """Number of trailing zero bits of a positive integer."""
    return (value & -value).bit_length() - 1


def perfect_nodes(start: int, end: int) -> list[Node]:
    """The perfect nodes, left to right, whose hashes fold (right to left) to MTH of ``[start, end)``.

    The range must have RFC 6962 subtree shape: ``start`` a multiple of the smallest power of
    two >= its width, i.e. a perfect subtree or the right edge of the tree of size ``end``.
    """
    width = end - start
    if start < 0 or width < 0:
        raise UsageError(f"expected a leaf range 0 <= start <= end, found [{start}, {end})")
    if width == 0:
        return []
    top = (width - 1).bit_length()
    if start & ((1 << top) - 1):
        raise UsageError(
            f"expected a leaf range of RFC 6962 subtree shape (start a multiple of {1 << top}), "
            f"found [{start}, {end})"
        )
    nodes: list[Node] = []
    position = start
    for level in range(top, -1, -1):
        if width >> level & 1:
            nodes.append((level, position >> level))
            position += 1 << level
    return nodes


def _lookup(nodes: Mapping[Node, bytes], node: Node) -> bytes:
    """One node hash from a caller's map; a gap means the stored tree is incomplete."""
    try:
        return nodes[node]
    except KeyError:
        level, idx = node
        raise VerificationError(
            f"tree node (level {level}, index {idx}) covering leaves "
            f"[{idx << level}, {(idx + 1) << level}) is missing from the node map"
        ) from None


def range_hash(start: int, end: int, nodes: Mapping[Node, bytes]) -> bytes:
    """MTH of the leaf range ``[start, end)`` from stored perfect nodes (empty range: ``EMPTY_ROOT``)."""
    parts = perfect_nodes(start, end)
    if not parts:
        return EMPTY_ROOT
    digest = _lookup(nodes, parts[-1])
    for node in reversed(parts[:-1]):
        digest = node_hash(_lookup(nodes, node), digest)
    return digest


def root_from_nodes(size: int, nodes: Mapping[Node, bytes]) -> bytes:
    """Root of the tree of ``size`` leaves from stored nodes (the ``frontier_nodes`` of that size)."""
    return range_hash(0, size, nodes)


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes form RFC 6962 PATH(index, D[size]), in proof order (bottom up)."""
    if not 0 <= index < size:
        raise UsageError(f"expected a leaf index in [0, {size}), found {index}")
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        split = start + _largest_power_below(end - start)
        if index < split:
            ranges.append((split, end))
            end = split
        else:
            ranges.append((start, split))
            start = split
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes form RFC 6962 PROOF(old_size, D[new_size]), in proof order.

    Empty when ``old_size`` is 0 or equals ``new_size``: nothing needs proving then.
    """
    if not 0 <= old_size <= new_size:
        raise UsageError(
            f"expected tree sizes 0 <= old <= new, found old {old_size} and new {new_size}"
        )
    ranges: list[tuple[int, int]] = []
    if old_size == 0:
        return ranges
    start, end = 0, new_size
    old_is_left_subtree = True  # SUBPROOF's flag b: the old tree is a node of the new one
    while old_size - start != end - start:
        split = start + _largest_power_below(end - start)
        if old_size <= split:
            ranges.append((split, end))
            end = split
        else:
            ranges.append((start, split))
            start = split
            old_is_left_subtree = False
    if not old_is_left_subtree:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def needed_nodes(ranges: Iterable[tuple[int, int]]) -> set[Node]:
    """Every perfect node the given leaf ranges fold from: what to fetch from storage."""
    wanted: set[Node] = set()
    for start, end in ranges:
        wanted.update(perfect_nodes(start, end))
    return wanted


def inclusion_proof(index: int, size: int, nodes: Mapping[Node, bytes]) -> list[bytes]:
    """RFC 6962 inclusion proof from stored nodes (at least ``needed_nodes(inclusion_ranges(...))``)."""
    return [range_hash(start, end, nodes) for start, end in inclusion_ranges(index, size)]


def consistency_proof(old_size: int, new_size: int, nodes: Mapping[Node, bytes]) -> list[bytes]:
    """RFC 6962 consistency proof from stored nodes (at least those of ``consistency_ranges``)."""
    return [range_hash(start, end, nodes) for start, end in consistency_ranges(old_size, new_size)]


def inclusion_proof_from_leaves(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Inclusion proof over a record set held in memory: O(n) hashing, for one proof.

    For many proofs over the same set, build ``nodes_from_leaves`` once and call
    ``inclusion_proof`` per index instead.
    """
    return [
        root(leaf_hashes[start:end]) for start, end in inclusion_ranges(index, len(leaf_hashes))
    ]


def nodes_from_leaves(leaf_hashes: Sequence[bytes]) -> dict[Node, bytes]:
    """Every perfect node of the tree over ``leaf_hashes``, ready for any proof against it."""
    new_nodes, _ = append_nodes({}, 0, leaf_hashes)
    return {(level, idx): digest for level, idx, digest in new_nodes}


def frontier_nodes(size: int) -> list[Node]:
    """The perfect nodes covering ``[0, size)``, largest first: all ``append_nodes`` reads."""
    if size < 0:
        raise UsageError(f"expected a tree size >= 0, found {size}")
    return [
        (level, (size >> level) - 1)
        for level in range(size.bit_length() - 1, -1, -1)
        if size >> level & 1
    ]


def append_nodes(
    frontier: Mapping[Node, bytes], old_size: int, new_leaf_hashes: Sequence[bytes]
) -> tuple[list[tuple[int, int, bytes]], bytes]:
    """Every perfect node ``(level, idx, hash)`` created by appending leaves, and the new root.

    ``frontier`` must hold ``frontier_nodes(old_size)`` of the existing tree (extra entries
    are ignored). Nodes come level by level, leaves (level 0) first. The work is one pass of
    pair hashing per level, so a bulk append costs about one hash per new node.
    """
    if old_size < 0:
        raise UsageError(f"expected a tree size >= 0, found {old_size}")
    new_size = old_size + len(new_leaf_hashes)
    created: list[tuple[int, int, bytes]] = []
    per_level: list[list[bytes]] = []  # new nodes of each level; level L starts at old_size >> L
    current: list[bytes] = list(new_leaf_hashes)
    first = old_size
    level = 0
    while current:
        created.extend(zip(repeat(level), range(first, first + len(current)), current))
        per_level.append(current)
        if first & 1:
            # The left sibling of the first new node is old: it is on the frontier.
            current = [_lookup(frontier, (level, first - 1)), *current]
        current = _hash_pairs(current)
        first >>= 1
        level += 1
    digest: bytes | None = None
    for level_, idx in reversed(frontier_nodes(new_size)):
        offset = idx - (old_size >> level_)
        part = per_level[level_][offset] if offset >= 0 else _lookup(frontier, (level_, idx))
        digest = part if digest is None else node_hash(part, digest)
    return created, EMPTY_ROOT if digest is None else digest


def _check_hash(what: str, value: object) -> bytes:
    """Untrusted proof material must be 32-byte digests before any hashing."""
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        found = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise VerificationError(
            f"expected {what} to be a {HASH_SIZE}-byte SHA-256 digest, found {found}"
        )
    return value


def _same(a: bytes, b: bytes) -> bool:
    """Constant-time digest comparison."""
    return hmac.compare_digest(a, b)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check an inclusion proof per RFC 9162 §2.1.3.2; raise ``VerificationError`` if it fails.

    The proof binds index and root only; the tree size is trusted from the signed tree head
    that carries ``root``, so callers must take ``size`` from there, never from the prover.
    """
    _check_hash("the leaf hash", leaf_hash)
    _check_hash("the root", root)
    if not 0 <= index < size:
        raise VerificationError(
            f"inclusion proof names leaf {index}, expected an index in [0, {size})", index
        )
    expected_len = len(inclusion_ranges(index, size))
    if len(proof) != expected_len:
        raise VerificationError(
            f"inclusion proof for leaf {index} of tree size {size} has {plural(len(proof), 'hash', 'hashes')}, "
            f"expected {expected_len}",
            index,
        )
    fn, sn = index, size - 1
    digest = leaf_hash
    for position, element in enumerate(proof):
        sibling = _check_hash(f"inclusion proof hash {position}", element)
        if sn == 0:
            raise VerificationError(
                f"inclusion proof for leaf {index} of tree size {size} is too long", index
            )
        if fn & 1 or fn == sn:
            digest = node_hash(sibling, digest)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            digest = node_hash(digest, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0 or not _same(digest, root):
        raise VerificationError(
            f"inclusion proof does not match: expected root {root.hex()}, computed {digest.hex()} "
            f"(leaf {index}, tree size {size})",
            index,
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree ``new_root`` extends ``old_root`` per RFC 9162 §2.1.4.2; raise if not.

    Equal sizes need equal roots and an empty proof; an old size of 0 needs ``EMPTY_ROOT`` and
    an empty proof (every tree extends the empty one).
    """
    _check_hash("the old root", old_root)
    _check_hash("the new root", new_root)
    if not 0 <= old_size <= new_size:
        raise VerificationError(
            f"consistency proof from size {old_size} to size {new_size}: "
            "expected the old size to be between 0 and the new size"
        )
    expected_len = len(consistency_ranges(old_size, new_size))
    if len(proof) != expected_len:
        raise VerificationError(
            f"consistency proof from size {old_size} to size {new_size} has {plural(len(proof), 'hash', 'hashes')}, "
            f"expected {expected_len}"
        )
    hashes = [_check_hash(f"consistency proof hash {i}", p) for i, p in enumerate(proof)]
    if old_size == 0:
        if not _same(old_root, EMPTY_ROOT):
            raise VerificationError(
                f"consistency proof does not match: expected the empty tree's root "
                f"{EMPTY_ROOT.hex()} for size 0, found {old_root.hex()}"
            )
        return
    if old_size == new_size:
        if not _same(old_root, new_root):
            raise VerificationError(
                f"consistency proof does not match: trees of equal size {old_size} have "
                f"different roots {old_root.hex()} and {new_root.hex()}"
            )
        return
    old_digest, new_digest, sn = _consistency_roots(old_size, new_size, old_root, hashes)
    if sn != 0:
        raise VerificationError(
            f"consistency proof from size {old_size} to size {new_size} has the wrong shape"
        )
    if not _same(old_digest, old_root):
        raise VerificationError(
            f"consistency proof does not match: expected old root {old_root.hex()}, "
            f"computed {old_digest.hex()} (size {old_size} to {new_size})"
        )
    if not _same(new_digest, new_root):
        raise VerificationError(
            f"consistency proof does not match: expected new root {new_root.hex()}, "
            f"computed {new_digest.hex()} (size {old_size} to {new_size})"
        )


def _consistency_roots(
    old_size: int, new_size: int, old_root: bytes, proof: list[bytes]
) -> tuple[bytes, bytes, int]:
    """RFC 9162 §2.1.4.2 steps 2-6 for 0 < old < new: both recomputed roots and the final sn."""
    path: Iterator[bytes] = iter([old_root, *proof] if old_size & (old_size - 1) == 0 else proof)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = next(path)
    for element in path:
        if sn == 0:
            raise VerificationError(
                f"consistency proof from size {old_size} to size {new_size} is too long"
            )
        if fn & 1 or fn == sn:
            fr = node_hash(element, fr)
            sr = node_hash(element, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, element)
        fn >>= 1
        sn >>= 1
    return fr, sr, sn
