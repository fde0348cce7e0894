"""`ledger export log`: every entry's leaf as Parquet, and the offline reader the provider's check uses.

`OUTDIR/log.parquet` holds columns `index` (INT64) and `leaf` (BINARY), one row per entry in index order;
`OUTDIR/log.json` names the tree head the export stops at (origin, size, root, the signed note). The
reader recomputes a tree head's root from all rows, so a missing, extra or altered row is found, and
decodes the call entries for `spec.reconcile`. Reading loads pyarrow, never DuckDB.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.bundle.export import LedgerFile, output_dir
from ledger.bundle.parts import Problems
from ledger.errors import InputError
from ledger.spec import merkle
from ledger.spec.reconcile import RecordedCall, recorded_call

__all__ = ["LOG_FILE", "MANIFEST_FILE", "LogExport", "export_log", "read_log_export"]

LOG_FILE = "log.parquet"
MANIFEST_FILE = "log.json"


@dataclass(frozen=True)
class LogExport:
    """What `export_log` wrote: `size` rows up to the tree head with `root`."""

    size: int
    root: bytes
    files: tuple[Path, ...]


def export_log(ledger: LedgerFile, outdir: Path) -> LogExport:
    """Write every entry's leaf up to the latest tree head (`log.parquet`) and the head (`log.json`)."""
    from ledger.log import store  # the store (and DuckDB) only where an export is written
    from ledger.log.store import reconcile as queries

    outdir = output_dir(outdir)
    path, manifest = outdir / LOG_FILE, outdir / MANIFEST_FILE
    with store.session(ledger.path, read_only=True) as conn:
        head = store.head(conn)
        written = queries.export_log_leaves(conn, head.size, path)
    document = {
        "origin": head.origin,
        "size": head.size,
        "root": head.root.hex(),
        "tree_head": head.note,
    }
    manifest.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return LogExport(written, head.root, (path, manifest))


def _leaves(log_dir: Path, p: Problems) -> list[bytes] | None:
    """The rows of `log.parquet` in index order, or None (with a problem) when the indexes are not 0..n-1."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    path = Path(log_dir) / LOG_FILE
    if not path.is_file():
        raise InputError(f"{log_dir}: no {LOG_FILE} (expected the output of `ledger export log`)")
    try:
        table = pq.read_table(path, columns=["index", "leaf"])
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not a log export (columns index, leaf): {exc}") from None
    indexes = table.column("index").to_pylist()
    leaves = table.column("leaf").to_pylist()
    order = sorted(range(len(indexes)), key=lambda i: indexes[i])
    for want, at in enumerate(order):
        if indexes[at] != want:
            found = indexes[at]
            what = "appears twice" if want and found == want - 1 else f"found {found}"
            p.add("log", f"row of entry {want}: {what} (expected indexes 0..{len(indexes) - 1})")
            return None
    return [bytes(leaves[at]) for at in order]


def _body(leaf: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(leaf)["payload"]
        body = json.loads(base64.b64decode(payload, validate=True))
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return body if isinstance(body, dict) else None


def read_log_export(
    log_dir: Path, size: int, root: bytes, provider: str, p: Problems
) -> list[RecordedCall] | None:
    """The `provider`'s call entries of an exported log whose rows give exactly the tree head (size, root).

    Every mismatch is a problem in `p` and returns None: nothing of an export that is not the log is used.
    """
    leaves = _leaves(log_dir, p)
    if leaves is None:
        return None
    if len(leaves) != size:
        kind = "missing" if len(leaves) < size else "extra"
        p.add(
            "log",
            f"expected {size} rows (the tree head's size), found {len(leaves)}: "
            f"{abs(size - len(leaves))} {kind} (export the log at the bundle's tree head)",
        )
        return None
    found = merkle.root([merkle.leaf_hash(leaf) for leaf in leaves])
    if found != root:
        p.add(
            "log",
            f"expected root {root.hex()} (the signed tree head), found {found.hex()} from the rows: a row was altered",
        )
        return None
    calls: list[RecordedCall] = []
    for index, leaf in enumerate(leaves):
        body = _body(leaf)
        if body is None:
            p.add("log", f"entry {index}: the leaf is not a DSSE envelope of a JSON body")
            continue
        if body.get("kind") == "call" and body.get("provider") == provider:
            calls.append(recorded_call(index, body))
    return calls
