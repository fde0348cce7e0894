"""Tree nodes: the stored `nodes` table must hold exactly the perfect subtree hashes of the stored leaves.

An intact log is checked range by range while its entries are read (`compare_nodes`, fed by `scan.py`);
a log whose indexes are damaged is checked over whole tables at once, by SQL rehashing (`check_tree`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from ledger.log.store import verify as queries
from ledger.log.store.verify import QUERY_LIMIT
from ledger.log.verify.columns import as_fixed32, as_int64, byte_lengths
from ledger.log.verify.report import Connection, ProblemList
from ledger.wording import plural


def extra_nodes(conn: Connection, size: int, problems: ProblemList) -> None:
    """Nodes at positions no perfect subtree of a log of `size` entries has (read where `size` holds)."""
    for level, idx in queries.misplaced_nodes(conn, size):
        problems.add(
            _node_index(level, idx),
            f"{_node_name(level, idx)}: expected no such node in a log of "
            f"{plural(size, 'entry', 'entries')}, found one (extra)",
        )


def compare_nodes(
    created: Sequence[tuple[int, int, bytes]], stored: pa.Table, problems: ProblemList
) -> None:
    """Each node recomputed from a range of leaves must be stored exactly once, with that hash.

    numpy compares the whole range at once; only defects become Python objects.
    """
    c_key = np.fromiter(((level << 56) | idx for level, idx, _ in created), np.int64, len(created))
    c_hash = np.frombuffer(b"".join(h for _, _, h in created), np.uint8).reshape(len(created), 32)
    s_key = (as_int64(stored.column("level")) << 56) | as_int64(stored.column("idx"))
    lengths = byte_lengths(stored.column("hash"))
    whole = lengths == 32
    s_hash = (
        as_fixed32(stored.column("hash"))
        if bool(whole.all())
        else np.zeros((len(s_key), 32), np.uint8)
    )
    keys_, times = np.unique(s_key, return_counts=True)
    repeated = zip(keys_[times > 1].tolist(), times[times > 1].tolist())
    for key, count in list(repeated)[:QUERY_LIMIT]:
        level, idx = key >> 56, key & ((1 << 56) - 1)
        problems.add(
            _node_index(level, idx),
            f"{_node_name(level, idx)}: expected it stored once, found {count} rows",
        )
    for key in c_key[~np.isin(c_key, keys_)][:QUERY_LIMIT].tolist():
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
    for row in np.flatnonzero(wrong)[:QUERY_LIMIT].tolist():
        key = int(s_key[row])
        level, idx = key >> 56, key & ((1 << 56) - 1)
        want = bytes(c_hash[at[row]]).hex()
        got = bytes(found[row]).hex() if found[row] is not None else "NULL"
        what = "the leaf hash" if level == 0 else "the hash of its children"
        problems.add(
            _node_index(level, idx),
            f"{_node_name(level, idx)}: expected {what} {want} (recomputed from the leaves), found {got}",
        )


def check_tree(conn: Connection, size: int, problems: ProblemList) -> bool:
    """Stored tree nodes must be exactly the perfect subtree hashes of the stored leaves; SQL rehashes them.

    The whole-table form, for a log whose indexes are damaged (no recorder can append to it anyway);
    an intact log is checked range by range against nodes recomputed from its leaves (`compare_nodes`).
    """
    before = problems.seen()
    for level, idx, times in queries.duplicate_nodes(conn):
        problems.add(
            _node_index(level, idx),
            f"{_node_name(level, idx)}: expected it stored once, found {times} rows",
        )
    extra_nodes(conn, size, problems)
    present = queries.nodes_per_level(conn, size)
    for level in range(size.bit_length()):
        if int(present.get(level, 0)) == size >> level:
            continue
        for idx in queries.missing_nodes(conn, level, size >> level):
            problems.add(
                _node_index(level, idx),
                f"{_node_name(level, idx)}: expected it stored, found none (missing)",
            )
    for idx, want, got in queries.leaf_nodes_not_hashing_their_entry(conn):
        problems.add(
            int(idx),
            f"{_node_name(0, idx)}: expected the leaf hash {bytes(want).hex()}, "
            f"found {bytes(got).hex()}",
        )
    for level, idx, want, got in queries.nodes_not_hashing_their_children(conn):
        problems.add(
            _node_index(level, idx),
            f"{_node_name(level, idx)}: expected the hash of its children "
            f"{bytes(want).hex()}, found {bytes(got).hex()}",
        )
    return problems.seen() == before


def _node_name(level: int, idx: int) -> str:
    if level == 0:
        return f"tree node of entry {idx}"
    if 0 < level <= 62:
        return f"tree node (level {level}, index {idx}) over entries {idx << level}..{((idx + 1) << level) - 1}"
    return f"tree node (level {level}, index {idx})"


def _node_index(level: int, idx: int = -1) -> int | None:
    """A leaf node names its entry; an interior node covers many, so it names none."""
    return int(idx) if level == 0 and idx >= 0 else None
