"""Tree heads: the stored head must describe the recomputed log and be signed by its current log key; a
head published earlier (`verify --since`) must be a prefix of it; and at the end of a run the head must
still be the verified one or a consistent extension of it.
"""

from __future__ import annotations

from ledger.errors import InputError, VerificationError
from ledger.log import store
from ledger.log.store import verify as queries
from ledger.log.store.verify import HeadRows
from ledger.log.verify.entries import Shape
from ledger.log.verify.report import Connection, ProblemList
from ledger.spec import note as note_spec
from ledger.spec.keyring import KeyRing
from ledger.wording import plural


def check_head(
    rows: HeadRows, size: int, root: bytes, ring: KeyRing, problems: ProblemList
) -> bool:
    """The stored tree head must describe the recomputed log and be signed by the current log key.

    Returns whether it does (so the end of the run may compare against it).
    """
    before = problems.seen()
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
    return problems.seen() == before


def _check_note(
    note: str, origin: str | None, size: int, root: bytes, ring: KeyRing, problems: ProblemList
) -> None:
    try:
        parsed, _ = note_spec.open_signed_note(note)
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
        note_spec.verify_tree_head(note, (origin, current.public), origin=origin)
    except (VerificationError, InputError) as exc:
        problems.add(None, f"tree head note: expected a signature by the current log key, {exc}")


def recheck(
    conn: Connection, shape: Shape, nodes_print: tuple[int, int], root: bytes, problems: ProblemList
) -> None:
    """At the end: the log must still hold the entries verified, its tree nodes must be the ones checked,
    and the head must be at N = the verified size or beyond, its stored nodes giving the verified root at
    N. Recorders appending meanwhile are fine; anything else that changed during the run is reported."""
    size = shape.count
    if queries.nodes_print(conn, size) != nodes_print:
        problems.add(
            None,
            f"tree nodes: expected the nodes of the first {plural(size, 'entry', 'entries')} checked during the run to be "
            "unchanged at its end, found them altered: the log changed during verification",
        )
    count = queries.count_entries_between(conn, shape.first, shape.last)
    if count != size:
        problems.add(
            None,
            f"log: expected the {plural(size, 'entry', 'entries')} verified to be still stored at the end of the run, "
            f"found {count}: the log changed during verification",
        )
    heads = queries.head_sizes(conn)
    if len(heads) != 1 or heads[0] < size:
        found = ", ".join(str(h) for h in heads) or "none"
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


def parse_published(since_note: str, since_name: str) -> note_spec.TreeHead:
    try:
        head, _ = note_spec.open_signed_note(since_note)
    except InputError as exc:
        raise InputError(f"{since_name}: {exc}") from exc
    return head


def check_published(
    since_note: str,
    published: note_spec.TreeHead,
    origin: str,
    size: int,
    prefix_root: bytes | None,
    ring: KeyRing,
    problems: ProblemList,
) -> None:
    """The log must be an append-only extension of a head published earlier, signed by one of its log keys.

    The origins must already agree (see `verify_ledger`).
    """
    errors = []
    for info in ring.log_keys():
        try:
            note_spec.verify_tree_head(since_note, (origin, info.public), origin=origin)
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
