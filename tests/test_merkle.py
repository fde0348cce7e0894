"""Merkle trees against the golden vectors, a naive RFC 6962 §2.1 transcription, and outside libraries."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ledger.errors import LedgerError, UsageError, VerificationError
from ledger.spec import merkle

VECTORS = json.loads((Path(__file__).parent / "conformance.json").read_text())["rfc6962"]
RFC_LEAVES = [bytes.fromhex(h) for h in VECTORS["leaves_hex"]]

MAX_SIZE = 300
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- A naive RFC 6962 §2.1, written from the RFC's text, over raw leaves -----------------------


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than n, found by counting up (not by bit tricks)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(d: Sequence[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return sha(b"")
    if n == 1:
        return sha(b"\x00" + d[0])
    k = split_point(n)
    return sha(b"\x01" + naive_mth(d[:k]) + naive_mth(d[k:]))


def naive_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = split_point(n)
    if m < k:
        return naive_path(m, d[:k]) + [naive_mth(d[k:])]
    return naive_path(m - k, d[k:]) + [naive_mth(d[:k])]


def naive_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [naive_mth(d)]
    k = split_point(n)
    if m <= k:
        return naive_subproof(m, d[:k], b) + [naive_mth(d[k:])]
    return naive_subproof(m - k, d[k:], False) + [naive_mth(d[:k])]


def naive_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    return naive_subproof(m, d, True)


# --- Fixtures -------------------------------------------------------------------------------------


def make_leaves(n: int, salt: int = 0) -> list[bytes]:
    """Distinct leaves, so that a wrong index or size can never legitimately verify."""
    return [f"leaf-{salt}-{i}".encode() for i in range(n)]


@cache
def tree(n: int) -> tuple[list[bytes], list[bytes], dict[tuple[int, int], bytes]]:
    """Leaves, leaf hashes and the node map (built by append_nodes from scratch) of size n."""
    leaves = make_leaves(n)
    hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
    return leaves, hashes, merkle.nodes_from_leaves(hashes)


@cache
def naive_root(n: int) -> bytes:
    return naive_mth(make_leaves(n))


class RecordingMap(Mapping[tuple[int, int], bytes]):
    """A node map that remembers which keys were read, to prove O(log n) lookups."""

    def __init__(self, inner: Mapping[tuple[int, int], bytes]) -> None:
        self.inner = inner
        self.reads: set[tuple[int, int]] = set()

    def __getitem__(self, key: tuple[int, int]) -> bytes:
        self.reads.add(key)
        return self.inner[key]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


# --- Golden vectors -------------------------------------------------------------------------------


def test_hash_primitives_match_rfc_definitions() -> None:
    assert merkle.EMPTY_ROOT.hex() == VECTORS["roots"]["0"]
    assert merkle.leaf_hash(b"ab") == hashlib.sha256(b"\x00ab").digest()
    assert (
        merkle.node_hash(b"L" * 32, b"R" * 32)
        == hashlib.sha256(b"\x01" + b"L" * 32 + b"R" * 32).digest()
    )


@pytest.mark.parametrize("size", sorted(int(s) for s in VECTORS["roots"]))
def test_vector_roots(size: int) -> None:
    expected = bytes.fromhex(VECTORS["roots"][str(size)])
    hashes = [merkle.leaf_hash(leaf) for leaf in RFC_LEAVES[:size]]
    assert merkle.root(hashes) == expected
    assert merkle.root_of_leaves(iter(RFC_LEAVES[:size])) == expected
    builder = merkle.RootBuilder()
    builder.extend(hashes)
    assert builder.root() == expected
    assert naive_mth(RFC_LEAVES[:size]) == expected  # the naive oracle agrees with the vectors too


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=lambda c: f"{c['index']}of{c['size']}")
def test_vector_inclusion(case: dict[str, object]) -> None:
    index, size = int(case["index"]), int(case["size"])  # type: ignore[call-overload]
    expected = [bytes.fromhex(h) for h in case["proof"]]  # type: ignore[attr-defined]
    hashes = [merkle.leaf_hash(leaf) for leaf in RFC_LEAVES[:size]]
    nodes = merkle.nodes_from_leaves(hashes)
    assert merkle.inclusion_proof(index, size, nodes) == expected
    assert merkle.inclusion_proof_from_leaves(index, hashes) == expected
    merkle.verify_inclusion(
        hashes[index], index, size, expected, bytes.fromhex(VECTORS["roots"][str(size)])
    )


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=lambda c: f"{c['old']}to{c['new']}")
def test_vector_consistency(case: dict[str, object]) -> None:
    old, new = int(case["old"]), int(case["new"])  # type: ignore[call-overload]
    expected = [bytes.fromhex(h) for h in case["proof"]]  # type: ignore[attr-defined]
    nodes = merkle.nodes_from_leaves([merkle.leaf_hash(leaf) for leaf in RFC_LEAVES])
    assert merkle.consistency_proof(old, new, nodes) == expected
    merkle.verify_consistency(
        old,
        new,
        bytes.fromhex(VECTORS["roots"][str(old)]),
        bytes.fromhex(VECTORS["roots"][str(new)]),
        expected,
    )


# --- Against the naive transcription ------------------------------------------------------------


def test_roots_equal_naive_for_every_size() -> None:
    for n in range(MAX_SIZE + 1):
        _, hashes, nodes = tree(n)
        expected = naive_root(n)
        assert merkle.root(hashes) == expected, n
        assert merkle.root_from_nodes(n, nodes) == expected, n


def test_every_inclusion_and_consistency_proof_small_trees() -> None:
    """Exhaustive for n <= 40: every index, every old size, equal to the RFC's PATH and PROOF."""
    for n in range(1, 41):
        leaves, hashes, nodes = tree(n)
        for m in range(n):
            proof = merkle.inclusion_proof(m, n, nodes)
            assert proof == naive_path(m, leaves), (m, n)
            merkle.verify_inclusion(hashes[m], m, n, proof, naive_root(n))
        for old in range(1, n + 1):
            proof = merkle.consistency_proof(old, n, nodes)
            assert proof == naive_proof(old, leaves), (old, n)
            merkle.verify_consistency(old, n, naive_root(old), naive_root(n), proof)


@FAST
@given(st.data())
def test_inclusion_equals_naive(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, MAX_SIZE))
    m = data.draw(st.integers(0, n - 1))
    leaves, hashes, nodes = tree(n)
    expected = naive_path(m, leaves)
    assert merkle.inclusion_proof(m, n, nodes) == expected
    assert merkle.inclusion_proof_from_leaves(m, hashes) == expected
    merkle.verify_inclusion(hashes[m], m, n, expected, naive_root(n))


@FAST
@given(st.data())
def test_consistency_equals_naive(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, MAX_SIZE))
    old = data.draw(st.integers(0, n))
    leaves, _, nodes = tree(n)
    proof = merkle.consistency_proof(old, n, nodes)
    assert proof == (naive_proof(old, leaves) if old else [])
    merkle.verify_consistency(old, n, naive_root(old), naive_root(n), proof)


@FAST
@given(st.lists(st.binary(max_size=40), max_size=MAX_SIZE))
def test_root_of_arbitrary_leaves(leaves: list[bytes]) -> None:
    expected = naive_mth(leaves)
    assert merkle.root_of_leaves(leaves) == expected
    assert merkle.root([merkle.leaf_hash(leaf) for leaf in leaves]) == expected


# --- Streaming roots ----------------------------------------------------------------------------


@FAST
@given(st.integers(0, MAX_SIZE), st.lists(st.integers(0, MAX_SIZE), max_size=6))
def test_root_builder_any_mix_of_add_and_extend(n: int, cuts: list[int]) -> None:
    _, hashes, _ = tree(n)
    builder = merkle.RootBuilder()
    position = 0
    for cut in sorted(c for c in cuts if c <= n):
        if cut - position == 1:
            builder.add(hashes[position])
        else:
            builder.extend(iter(hashes[position:cut]))
        position = cut
        assert builder.size == cut
        assert builder.root() == naive_root(cut)
    builder.extend(hashes[position:])
    assert builder.size == n
    assert builder.root() == naive_root(n)


@FAST
@given(st.integers(0, MAX_SIZE), st.lists(st.integers(0, MAX_SIZE), max_size=6), st.booleans())
def test_root_builder_extend_joined_equals_extend(n: int, cuts: list[int], mixed: bool) -> None:
    """Leaf hashes laid end to end, in pieces of any size, mixed with `add` and `extend`."""
    _, hashes, _ = tree(n)
    builder = merkle.RootBuilder()
    position = 0
    for k, cut in enumerate(sorted(c for c in cuts if c <= n)):
        if mixed and k % 2:
            builder.extend(hashes[position:cut])
        else:
            builder.extend_joined(b"".join(hashes[position:cut]))
        position = cut
        assert builder.size == cut
        assert builder.root() == naive_root(cut)
    builder.extend_joined(b"".join(hashes[position:]))
    assert builder.size == n
    assert builder.root() == naive_root(n)


def test_root_builder_crosses_chunk_boundaries() -> None:
    """Sizes around 2**16 exercise the aligned-chunk path, starting from unaligned sizes."""
    n = (1 << 16) * 2 + 5
    hashes = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    expected = merkle.root(hashes)
    builder = merkle.RootBuilder()
    builder.extend(hashes[:3])
    builder.extend(hashes[3 : (1 << 16) + 1])
    builder.add(hashes[(1 << 16) + 1])
    builder.extend(iter(hashes[(1 << 16) + 2 :]))
    assert builder.root() == expected
    joined = merkle.RootBuilder()
    joined.extend_joined(b"".join(hashes[:5]))
    joined.extend_joined(b"".join(hashes[5:]))
    assert joined.root() == expected
    assert merkle.root_of_leaves(i.to_bytes(4, "big") for i in range(n)) == expected
    assert merkle.root_from_nodes(n, merkle.nodes_from_leaves(hashes)) == expected


# --- Node bookkeeping: append_nodes, frontier, needed nodes --------------------------------------


def scratch_nodes(n: int) -> dict[tuple[int, int], bytes]:
    """Every perfect node of a tree of size n, each straight from the naive MTH of its leaves."""
    leaves = make_leaves(n)
    out: dict[tuple[int, int], bytes] = {}
    level = 0
    while (1 << level) <= n:
        for idx in range(n >> level):
            out[(level, idx)] = naive_mth(leaves[idx << level : (idx + 1) << level])
        level += 1
    return out


@cache
def scratch_old(n: int) -> frozenset[tuple[int, int]]:
    return frozenset(scratch_nodes(n))


@FAST
@given(st.integers(0, 200), st.lists(st.integers(0, 200), max_size=8))
def test_append_nodes_incremental_equals_scratch(n: int, cuts: list[int]) -> None:
    _, hashes, _ = tree(n)
    stored: dict[tuple[int, int], bytes] = {}
    old = 0
    for cut in [*sorted(c for c in cuts if c <= n), n]:
        reader = RecordingMap(stored)
        created, new_root = merkle.append_nodes(reader, old, hashes[old:cut])
        assert reader.reads <= set(merkle.frontier_nodes(old)), "read beyond the frontier"
        keys = [(level, idx) for level, idx, _ in created]
        assert len(keys) == len(set(keys))
        assert not set(keys) & stored.keys(), "re-created an existing node"
        stored.update({(level, idx): digest for level, idx, digest in created})
        assert new_root == naive_root(cut)
        old = cut
    assert stored == scratch_nodes(n)


@FAST
@given(st.integers(0, 200), st.integers(0, 200))
def test_append_needs_only_the_frontier(old: int, extra: int) -> None:
    _, hashes, nodes = tree(old + extra)
    frontier = {node: nodes[node] for node in merkle.frontier_nodes(old)}
    created, new_root = merkle.append_nodes(frontier, old, hashes[old:])
    assert new_root == naive_root(old + extra)
    assert {(lv, i): h for lv, i, h in created} == {
        k: v for k, v in nodes.items() if k not in scratch_old(old)
    }


def test_append_nodes_reports_a_missing_frontier_node() -> None:
    _, hashes, _ = tree(8)
    with pytest.raises(VerificationError, match=r"level 0, index 4"):
        merkle.append_nodes({(2, 0): b"x" * 32}, 5, hashes[5:])


@FAST
@given(st.data())
def test_needed_nodes_suffice_and_are_logarithmic(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, MAX_SIZE))
    m = data.draw(st.integers(0, n - 1))
    old = data.draw(st.integers(1, n))
    leaves, _, nodes = tree(n)
    limit = 2 * math.ceil(math.log2(n)) + 2 if n > 1 else 1
    inc = merkle.needed_nodes(merkle.inclusion_ranges(m, n))
    con = merkle.needed_nodes(merkle.consistency_ranges(old, n))
    assert len(inc) <= limit and len(con) <= limit
    assert merkle.inclusion_proof(m, n, {k: nodes[k] for k in inc}) == naive_path(m, leaves)
    assert merkle.consistency_proof(old, n, {k: nodes[k] for k in con}) == naive_proof(old, leaves)


def test_ten_million_leaf_proof_touches_few_nodes() -> None:
    """The node count is structural: a 10M proof needs O(log n) nodes, never a scan."""
    size = 10_000_000
    for index in (0, 1, 4_999_999, 9_999_998, 9_999_999):
        wanted = merkle.needed_nodes(merkle.inclusion_ranges(index, size))
        assert len(wanted) <= 2 * 24 + 2
        assert all((idx + 1) << level <= size for level, idx in wanted), "a node beyond the tree"
    wanted = merkle.needed_nodes(merkle.consistency_ranges(3_333_333, size))
    assert len(wanted) <= 2 * 24 + 2


@FAST
@given(st.integers(0, 5000), st.integers(1, 5000))
def test_perfect_nodes_tile_the_range(start_block: int, width: int) -> None:
    """A valid range's nodes are aligned, disjoint, left to right and cover it exactly."""
    align = 1 << (width - 1).bit_length()
    start = start_block * align
    nodes = merkle.perfect_nodes(start, start + width)
    position = start
    for level, idx in nodes:
        assert idx << level == position
        position += 1 << level
    assert position == start + width
    assert [level for level, _ in nodes] == sorted({level for level, _ in nodes}, reverse=True)


@pytest.mark.parametrize(("start", "end"), [(2, 5), (1, 3), (3, 2), (-1, 1), (4, 9)])
def test_perfect_nodes_rejects_ranges_that_are_no_subtree(start: int, end: int) -> None:
    with pytest.raises(UsageError, match=rf"\[{start}, {end}\)"):
        merkle.perfect_nodes(start, end)


def test_frontier_nodes_cover_the_tree() -> None:
    assert merkle.frontier_nodes(0) == []
    assert merkle.frontier_nodes(6) == [(2, 0), (1, 2)]
    assert merkle.frontier_nodes(8) == [(3, 0)]
    assert merkle.frontier_nodes(7) == [(2, 0), (1, 2), (0, 6)]


def test_range_hash_of_missing_node_names_it() -> None:
    with pytest.raises(VerificationError, match=r"level 1, index 2.*\[4, 6\)"):
        merkle.range_hash(0, 6, {(2, 0): b"\x00" * 32})


def test_proof_generation_rejects_bad_arguments() -> None:
    with pytest.raises(UsageError, match="found 3"):
        merkle.inclusion_ranges(3, 3)
    with pytest.raises(UsageError, match="old 5 and new 4"):
        merkle.consistency_ranges(5, 4)
    with pytest.raises(UsageError):
        merkle.inclusion_proof_from_leaves(0, [])
    assert merkle.consistency_ranges(0, 9) == [] and merkle.consistency_ranges(9, 9) == []


# --- Verification rejects every mutation ----------------------------------------------------------


def inclusion_case(data: st.DataObject) -> tuple[int, int, list[bytes], list[bytes]]:
    n = data.draw(st.integers(1, MAX_SIZE), label="size")
    m = data.draw(st.integers(0, n - 1), label="index")
    _, hashes, nodes = tree(n)
    return n, m, hashes, merkle.inclusion_proof(m, n, nodes)


@FAST
@given(st.data())
def test_inclusion_rejects_flipped_byte(data: st.DataObject) -> None:
    n, m, hashes, proof = inclusion_case(data)
    target = data.draw(st.integers(-2, len(proof) - 1), label="which")  # -2 leaf, -1 root
    byte = data.draw(st.integers(0, 31))
    bit = 1 << data.draw(st.integers(0, 7))

    def flip(h: bytes) -> bytes:
        return h[:byte] + bytes([h[byte] ^ bit]) + h[byte + 1 :]

    leaf, root = hashes[m], naive_root(n)
    if target == -2:
        leaf = flip(leaf)
    elif target == -1:
        root = flip(root)
    else:
        proof = [*proof]
        proof[target] = flip(proof[target])
    with pytest.raises(VerificationError, match="expected root"):
        merkle.verify_inclusion(leaf, m, n, proof, root)


@FAST
@given(st.data())
def test_inclusion_rejects_dropped_or_added_hash(data: st.DataObject) -> None:
    n, m, hashes, proof = inclusion_case(data)
    drop = data.draw(st.booleans(), label="drop")
    if proof and drop:
        del proof[data.draw(st.integers(0, len(proof) - 1))]
    else:
        proof.insert(
            data.draw(st.integers(0, len(proof))), data.draw(st.binary(min_size=32, max_size=32))
        )
    with pytest.raises(VerificationError, match=r"hash(es)?, expected"):
        merkle.verify_inclusion(hashes[m], m, n, proof, naive_root(n))


@FAST
@given(st.data())
def test_inclusion_rejects_wrong_index(data: st.DataObject) -> None:
    n, m, hashes, proof = inclusion_case(data)
    other = data.draw(st.integers(0, n + 3).filter(lambda i: i != m), label="other index")
    with pytest.raises(VerificationError):
        merkle.verify_inclusion(hashes[m], other, n, proof, naive_root(n))


@FAST
@given(st.data())
def test_inclusion_rejects_wrong_size(data: st.DataObject) -> None:
    """A claimed size is checked against the root of that size (as a signed tree head pairs them)."""
    n, m, hashes, proof = inclusion_case(data)
    other = data.draw(st.integers(0, MAX_SIZE).filter(lambda s: s != n), label="other size")
    with pytest.raises(VerificationError):
        merkle.verify_inclusion(hashes[m], m, other, proof, naive_root(other))


def test_inclusion_proof_does_not_bind_the_size_alone() -> None:
    """RFC 6962 property the callers must respect: the size comes from the signed tree head.

    Leaf 0's proof in a tree of 5 also "verifies" for a claimed size of 6 against the same root,
    because both sizes give the same left-to-right hashing order.
    """
    _, hashes, nodes = tree(5)
    proof = merkle.inclusion_proof(0, 5, nodes)
    merkle.verify_inclusion(hashes[0], 0, 6, proof, naive_root(5))


@pytest.mark.parametrize(
    ("leaf", "proof", "message"),
    [
        (b"\x00" * 31, [], "leaf hash to be a 32-byte"),
        ("not bytes", [], "found str"),
        (b"\x00" * 32, [b"\x00" * 33], "inclusion proof hash 0"),
    ],
)
def test_inclusion_rejects_malformed_hashes(leaf: object, proof: list[bytes], message: str) -> None:
    n = 1 if not proof else 2
    with pytest.raises(VerificationError, match=message):
        merkle.verify_inclusion(leaf, 0, n, proof, naive_root(n))  # type: ignore[arg-type]


def consistency_case(data: st.DataObject) -> tuple[int, int, list[bytes]]:
    n = data.draw(st.integers(2, MAX_SIZE), label="new size")
    old = data.draw(st.integers(1, n - 1), label="old size")
    _, _, nodes = tree(n)
    return old, n, merkle.consistency_proof(old, n, nodes)


@FAST
@given(st.data())
def test_consistency_rejects_flipped_byte(data: st.DataObject) -> None:
    old, n, proof = consistency_case(data)
    target = data.draw(st.integers(-2, len(proof) - 1), label="which")  # -2 old root, -1 new root
    byte = data.draw(st.integers(0, 31))
    old_root, new_root = naive_root(old), naive_root(n)

    def flip(h: bytes) -> bytes:
        return h[:byte] + bytes([h[byte] ^ 0x80]) + h[byte + 1 :]

    if target == -2:
        old_root = flip(old_root)
    elif target == -1:
        new_root = flip(new_root)
    else:
        proof[target] = flip(proof[target])
    with pytest.raises(VerificationError, match="does not match"):
        merkle.verify_consistency(old, n, old_root, new_root, proof)


@FAST
@given(st.data())
def test_consistency_rejects_dropped_or_added_hash(data: st.DataObject) -> None:
    old, n, proof = consistency_case(data)
    if data.draw(st.booleans(), label="drop"):
        del proof[data.draw(st.integers(0, len(proof) - 1))]
    else:
        proof.insert(
            data.draw(st.integers(0, len(proof))), data.draw(st.binary(min_size=32, max_size=32))
        )
    with pytest.raises(VerificationError, match=r"hash(es)?, expected"):
        merkle.verify_consistency(old, n, naive_root(old), naive_root(n), proof)


@FAST
@given(st.data())
def test_consistency_rejects_wrong_sizes(data: st.DataObject) -> None:
    old, n, proof = consistency_case(data)
    wrong_old = data.draw(st.integers(0, n + 2), label="claimed old")
    wrong_new = data.draw(st.integers(1, MAX_SIZE), label="claimed new")
    assume((wrong_old, wrong_new) != (old, n))
    with pytest.raises(VerificationError):
        merkle.verify_consistency(
            wrong_old, wrong_new, naive_root(wrong_old), naive_root(wrong_new), proof
        )


@FAST
@given(st.data())
def test_consistency_rejects_swapped_or_foreign_roots(data: st.DataObject) -> None:
    old, n, proof = consistency_case(data)
    with pytest.raises(VerificationError):
        merkle.verify_consistency(old, n, naive_root(n), naive_root(old), proof)
    # A different history of the same sizes: a forked log must not be consistent.
    forked = make_leaves(n, salt=1)
    with pytest.raises(VerificationError):
        merkle.verify_consistency(old, n, naive_mth(forked[:old]), naive_root(n), proof)


def test_consistency_edge_sizes() -> None:
    merkle.verify_consistency(0, 7, merkle.EMPTY_ROOT, naive_root(7), [])
    merkle.verify_consistency(7, 7, naive_root(7), naive_root(7), [])
    with pytest.raises(VerificationError, match="empty tree"):
        merkle.verify_consistency(0, 7, naive_root(3), naive_root(7), [])
    with pytest.raises(VerificationError, match="equal size 7"):
        merkle.verify_consistency(7, 7, naive_root(7), naive_root(6), [])
    with pytest.raises(VerificationError, match="old size"):
        merkle.verify_consistency(8, 7, naive_root(8), naive_root(7), [])
    with pytest.raises(VerificationError, match="0 hashes, expected"):
        merkle.verify_consistency(3, 7, naive_root(3), naive_root(7), [])


def test_errors_are_ledger_errors_with_the_leaf_index() -> None:
    _, hashes, nodes = tree(9)
    with pytest.raises(LedgerError) as caught:
        merkle.verify_inclusion(hashes[4], 4, 9, merkle.inclusion_proof(4, 9, nodes), naive_root(8))
    assert isinstance(caught.value, VerificationError) and caught.value.index == 4
    assert naive_root(8).hex() in str(caught.value)


# --- Independent implementations from PyPI -------------------------------------------------------


@FAST
@given(st.data())
def test_against_pymerkle(data: st.DataObject) -> None:
    pymerkle = pytest.importorskip("pymerkle")
    n = data.draw(st.integers(1, 120))
    m = data.draw(st.integers(0, n - 1))
    leaves, hashes, nodes = tree(n)
    other = pymerkle.InmemoryTree.init_from_entries(leaves)
    assert other.get_root() == merkle.root(hashes)
    # pymerkle's path starts with the leaf's own hash, then the RFC 6962 audit path.
    theirs = other.prove_inclusion(m + 1, n)
    assert theirs.path[0] == hashes[m]
    assert list(theirs.path[1:]) == merkle.inclusion_proof(m, n, nodes)


@FAST
@given(st.data())
def test_verifiers_agree_with_rekor_verifier(data: st.DataObject) -> None:
    """rekor-verifier ports transparency-dev's Go verifier: accept and reject exactly when we do."""
    rekor = pytest.importorskip("rekor_verifier.merkle_proof")
    n = data.draw(st.integers(1, MAX_SIZE))
    m = data.draw(st.integers(0, n - 1))
    old = data.draw(st.integers(0, n))
    _, hashes, nodes = tree(n)
    inc = merkle.inclusion_proof(m, n, nodes)
    con = merkle.consistency_proof(old, n, nodes)
    mutate = data.draw(st.sampled_from(["none", "flip", "drop", "size"]))
    if mutate == "flip" and inc:
        inc[0] = bytes([inc[0][0] ^ 1]) + inc[0][1:]
    if mutate == "flip" and con:
        con[-1] = bytes([con[-1][0] ^ 1]) + con[-1][1:]
    if mutate == "drop":
        inc, con = inc[:-1], con[1:]
    claimed = n + 1 if mutate == "size" else n

    def ours_inclusion() -> bool:
        try:
            merkle.verify_inclusion(hashes[m], m, claimed, inc, naive_root(claimed))
        except VerificationError:
            return False
        return True

    def theirs_inclusion() -> bool:
        try:
            rekor.verify_inclusion(
                rekor.DEFAULT_HASHER,
                m,
                claimed,
                hashes[m].hex(),
                [p.hex() for p in inc],
                naive_root(claimed).hex(),
            )
        except (ValueError, rekor.RootMismatchError):
            return False
        return True

    def ours_consistency() -> bool:
        try:
            merkle.verify_consistency(old, claimed, naive_root(old), naive_root(claimed), con)
        except VerificationError:
            return False
        return True

    def theirs_consistency() -> bool:
        try:
            rekor.verify_consistency(
                rekor.DEFAULT_HASHER,
                old,
                claimed,
                [p.hex() for p in con],
                naive_root(old).hex(),
                naive_root(claimed).hex(),
            )
        except (ValueError, rekor.RootMismatchError):
            return False
        return True

    assert ours_inclusion() == theirs_inclusion()
    assert ours_consistency() == theirs_consistency()
    if mutate == "none":
        assert ours_inclusion() and ours_consistency()
