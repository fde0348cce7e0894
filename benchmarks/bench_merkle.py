"""Benchmark ledger.spec.merkle: roots, proofs from stored nodes, and bulk appends.

Each figure is printed with a baseline measured in the same run: pymerkle's SQLite bulk
append when pymerkle is installed, else bare hashlib leaf hashing. Times are this process's
CPU seconds (best of a few runs) so that other work on a shared 2-core machine does not
distort them; ``--wall`` uses wall-clock time instead.

    .venv/bin/python benchmarks/bench_merkle.py            # 1M and 10M leaves
    .venv/bin/python benchmarks/bench_merkle.py --quick    # 1M only, no 10M tree
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from ledger.spec import merkle

T = TypeVar("T")
clock = time.process_time


def best_of(runs: int, fn: Callable[[], T]) -> tuple[float, T]:
    """Fastest time of `runs` calls (the least disturbed by other work on the machine)."""
    best = float("inf")
    result: T
    for _ in range(runs):
        start = clock()
        result = fn()
        best = min(best, clock() - start)
    return best, result


def make_leaves(n: int) -> list[bytes]:
    """Distinct 32-byte leaves, the size of the hashes the ledger mostly commits to."""
    return [i.to_bytes(8, "big") * 4 for i in range(n)]


class LevelNodes(Mapping[tuple[int, int], bytes]):
    """All perfect nodes as one list per level: a node map for 10M leaves in ~1.5 GB."""

    def __init__(self, leaf_hashes: list[bytes]) -> None:
        self.levels = [leaf_hashes]
        level = leaf_hashes
        sha256 = hashlib.sha256
        while len(level) > 1:
            it = iter(level)
            level = [sha256(b"".join((b"\x01", a, b))).digest() for a, b in zip(it, it)]
            self.levels.append(level)

    def __getitem__(self, key: tuple[int, int]) -> bytes:
        level, idx = key
        try:
            return self.levels[level][idx]
        except IndexError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for level, hashes in enumerate(self.levels):
            for idx in range(len(hashes)):
                yield level, idx

    def __len__(self) -> int:
        return sum(len(hashes) for hashes in self.levels)


def proof_times(
    size: int, nodes: Mapping[tuple[int, int], bytes], count: int
) -> tuple[list[float], list[float]]:
    """Per-proof seconds: combining fetched nodes alone, and ranges + needed nodes + combine."""
    rng = random.Random(size)
    indexes = [rng.randrange(size) for _ in range(count)] + [0, size - 1]
    combine: list[float] = []
    full: list[float] = []
    for index in indexes:
        start = clock()
        wanted = merkle.needed_nodes(merkle.inclusion_ranges(index, size))
        fetched = {node: nodes[node] for node in wanted}  # what the store's one query returns
        middle = clock()
        proof = merkle.inclusion_proof(index, size, fetched)
        end = clock()
        combine.append(end - middle)
        full.append(end - start)
        assert len(proof) == len(merkle.inclusion_ranges(index, size))
    return combine, full


def report_proofs(label: str, size: int, nodes: Mapping[tuple[int, int], bytes]) -> None:
    combine, full = proof_times(size, nodes, 2000)
    rng = random.Random(1)
    index = rng.randrange(size)
    hashes_read = len(merkle.needed_nodes(merkle.inclusion_ranges(index, size)))
    print(
        f"inclusion proof @ {label}: combining fetched nodes {statistics.median(combine) * 1e6:.0f} us "
        f"median, {percentile(combine, 0.99) * 1e6:.0f} us p99; ranges + needed_nodes + combine "
        f"{statistics.median(full) * 1e6:.0f} us median, {percentile(full, 0.99) * 1e6:.0f} us p99, "
        f"{max(full) * 1e3:.2f} ms max ({hashes_read} nodes read for a random index)"
    )


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the samples fall."""
    return sorted(values)[min(len(values) - 1, int(len(values) * fraction))]


def pymerkle_append_rate(leaves: Sequence[bytes]) -> tuple[float, float] | None:
    """pymerkle SqliteTree bulk append (leaves/s) and its inclusion proof time, or None."""
    try:
        import pymerkle  # type: ignore[import-untyped]
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        tree = pymerkle.SqliteTree(str(Path(tmp) / "bench.db"))
        start = clock()
        tree.append_entries(leaves)
        append_s = clock() - start
        rng = random.Random(2)
        tree.prove_inclusion(1)  # warm its subroot cache, as a long-running log would have
        start = clock()
        for _ in range(5):
            tree.prove_inclusion(rng.randrange(len(leaves)) + 1)
        prove_s = (clock() - start) / 5
        tree.close()
    return len(leaves) / append_s, prove_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="skip the 10M-leaf tree")
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--wall", action="store_true", help="wall-clock instead of CPU time")
    args = parser.parse_args()
    n = args.size
    global clock
    if args.wall:
        clock = time.perf_counter

    leaves = make_leaves(n)
    sha256 = hashlib.sha256
    hashlib_s, leaf_hashes = best_of(
        3, lambda: [sha256(b"\x00" + leaf).digest() for leaf in leaves]
    )
    print(f"leaves: {n:,} x 32 bytes")
    print(f"baseline hashlib leaf hashing only: {n / hashlib_s:,.0f} leaves/s")

    root_s, tree_root = best_of(3, lambda: merkle.root(leaf_hashes))
    print(f"root() over leaf hashes:            {n / root_s:,.0f} leaves/s ({root_s:.3f} s)")
    full_s, full_root = best_of(3, lambda: merkle.root_of_leaves(leaves))
    assert full_root == tree_root
    print(f"root_of_leaves() incl. leaf hashing: {n / full_s:,.0f} leaves/s ({full_s:.3f} s)")

    def builder_root() -> bytes:
        builder = merkle.RootBuilder()
        builder.extend(leaf_hashes)
        return builder.root()

    build_s, built = best_of(3, builder_root)
    assert built == tree_root
    print(f"RootBuilder.extend over leaf hashes: {n / build_s:,.0f} leaves/s")

    theirs = pymerkle_append_rate(leaves)
    if theirs is None:
        print(
            f"pymerkle not installed; ratio to hashlib-only leaf hashing: "
            f"root() {hashlib_s / root_s:.2f}x, root_of_leaves() {hashlib_s / full_s:.2f}x"
        )
    else:
        rate, prove_s = theirs
        print(f"pymerkle SqliteTree bulk append:     {rate:,.0f} leaves/s (same leaves)")
        print(
            f"ratio to pymerkle bulk append: root() {n / root_s / rate:.1f}x, "
            f"root_of_leaves() {n / full_s / rate:.1f}x (target >= 3x)"
        )
        print(f"pymerkle inclusion proof @ {n:,}: {prove_s * 1e3:.1f} ms")

    append_s, (created, append_root) = best_of(1, lambda: merkle.append_nodes({}, 0, leaf_hashes))
    assert append_root == tree_root
    print(f"append_nodes from empty, {n:,} leaves: {n / append_s:,.0f} leaves/s")
    nodes = {(level, idx): digest for level, idx, digest in created}
    del created

    report_proofs(f"{n:,}", n, nodes)

    bulk = min(100_000, n // 2)
    old = n - bulk
    frontier = {node: nodes[node] for node in merkle.frontier_nodes(old)}
    bulk_s, (_, bulk_root) = best_of(
        3, lambda: merkle.append_nodes(frontier, old, leaf_hashes[old:])
    )
    assert bulk_root == tree_root
    print(f"append_nodes {bulk:,} leaves onto {old:,}: {bulk / bulk_s:,.0f} leaves/s")

    small_s = 0.0
    size = old
    stored = dict(frontier)
    for _ in range(1000):
        start = clock()
        wanted = {node: stored[node] for node in merkle.frontier_nodes(size)}
        made, _ = merkle.append_nodes(wanted, size, leaf_hashes[size : size + 10])
        small_s += clock() - start
        stored.update({(lv, i): h for lv, i, h in made})
        size += 10
    print(f"append_nodes 1000 appends of 10 leaves: {small_s / 1000 * 1e6:.1f} us per append")
    del nodes, stored

    if not args.quick:
        big = 10_000_000
        start = clock()
        big_hashes = [sha256(b"\x00" + i.to_bytes(8, "big") * 4).digest() for i in range(big)]
        level_nodes = LevelNodes(big_hashes)
        print(f"(built the 10M-leaf node map in {clock() - start:.1f} s)")
        report_proofs("10,000,000", big, level_nodes)


if __name__ == "__main__":
    main()
