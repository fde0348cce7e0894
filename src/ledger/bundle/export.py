"""`ledger export records`: a lineage's record leaves (hashes only) as Parquet, and the verifier's reader.

The writer reads the ledger's store; the reader (`read_export`, used by the offline `verify-bundle`)
reads only Parquet, so the store is imported where the export is written and the verifier never loads
DuckDB.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ledger.bundle.parts import Problems
from ledger.errors import InputError
from ledger.spec import entries, merkle

__all__ = ["ExportCounts", "LedgerFile", "export_records", "output_dir", "read_export"]


def read_export(
    records_dir: Path, wanted: Mapping[int, entries.BatchBody], p: Problems
) -> dict[int, list[bytes]]:
    """Leaves per lineage batch from `ledger export records` Parquet files, checked against each batch root."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    files = sorted(Path(records_dir).rglob("*.parquet"))
    if not files:
        raise InputError(
            f"{records_dir}: no Parquet files (expected the output of `ledger export records`)"
        )
    rows: dict[int, dict[int, list[bytes]]] = {b: {} for b in wanted}
    for path in files:
        try:
            table = pq.read_table(path, columns=["batch", "position", "leaf"])
        except (OSError, KeyError, ValueError) as exc:
            p.add(f"records {path.name}", f"unreadable export file: {exc}")
            continue
        for batch, position, leaf in zip(
            table.column("batch").to_pylist(),
            table.column("position").to_pylist(),
            table.column("leaf").to_pylist(),
        ):
            if batch in rows:
                rows[batch].setdefault(int(position), []).append(bytes(leaf))
    out: dict[int, list[bytes]] = {}
    for batch, body in sorted(wanted.items()):
        count = int(body.count)
        got = rows[batch]
        dupes = sorted(pos for pos, leaves in got.items() if len(leaves) > 1)
        extra = sorted(pos for pos in got if not 0 <= pos < count)
        missing = count - sum(1 for pos in got if 0 <= pos < count)
        where = f"records batch {batch}"
        if dupes:
            p.add(
                where,
                f"position {dupes[0]} appears {len(got[dupes[0]])} times in the export ({len(dupes)} such)",
            )
        if extra:
            p.add(
                where, f"expected positions 0..{count - 1}, found extra row at position {extra[0]}"
            )
        if missing:
            p.add(
                where,
                f"expected {count} rows (the signed count), {missing} are missing from the export",
            )
        if dupes or extra or missing:
            continue
        leaves = [got[pos][0] for pos in range(count)]
        found = merkle.root([merkle.leaf_hash(leaf) for leaf in leaves])
        if found.hex() != body.records_root:
            p.add(
                where,
                f"expected records_root {body.records_root} (signed), found {found.hex()} from the "
                "exported rows: a row was altered",
            )
            continue
        out[batch] = leaves
    return out


def output_dir(outdir: Path) -> Path:
    """The export's directory, created if need be; an InputError naming it when that fails."""
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"{outdir}: cannot create the output directory: {exc.strerror or exc}"
        ) from None
    return outdir


class LedgerFile(Protocol):
    """What an export needs of a ledger: where its file is."""

    @property
    def path(self) -> Path: ...


@dataclass(frozen=True)
class ExportCounts:
    """What `export_records` wrote: one Parquet file per lineage batch."""

    batches: int
    records: int
    files: tuple[Path, ...]


def export_records(ledger: LedgerFile, outdir: Path, checkpoint: str | None = None) -> ExportCounts:
    """Write record leaves (hashes only) as Parquet `records.parquet`: columns batch, position, leaf.

    With a checkpoint, its lineage's batches; without, every batch in the log. The leaves are rebuilt
    from the stored rows as they are, so a verifier's recomputed roots show any tampering.
    """
    # The store (and DuckDB) is loaded here, not at import: `read_export` serves the offline verifier.
    from ledger.log import store
    from ledger.log.store import audit as queries
    from ledger.log.store.lineage import lineage

    outdir = output_dir(outdir)
    path = outdir / "records.parquet"
    with store.session(ledger.path, read_only=True) as conn:
        size = store.entry_count(conn)
        if checkpoint is not None:
            batches = [
                int(n.index)
                for n in lineage(conn, checkpoint, size=size).batches
                if n.index is not None
            ]
        else:
            batches = queries.batch_indexes(conn)
        written = queries.export_leaves(conn, batches, path)
    return ExportCounts(len(batches), written, (path,))
