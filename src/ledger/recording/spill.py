"""Where a big batch's record rows wait between hashing and the append: memory while small, Parquet beyond.

Record rows of a big batch are spilled to temporary Parquet files while hashing (memory stays flat for
any input size) and inserted with one `INSERT ... SELECT FROM read_parquet(...)` in the append.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from ledger.ingest.durable import process_alive

__all__ = ["RECORD_SCHEMA", "SEGMENT_SCHEMA", "SPILL_BYTES", "SPILL_ROWS", "Spill", "SpillDir"]

SPILL_ROWS = 1 << 16  # rows per write once a record set spills to Parquet
SPILL_BYTES = 64 << 20  # Arrow bytes of one table's rows kept in memory before it spills

RECORD_SCHEMA = pa.schema(
    [
        ("part", pa.int64()),
        ("position", pa.int64()),
        ("digest", pa.binary()),
        ("fingerprint", pa.binary()),
    ]
)
SEGMENT_SCHEMA = pa.schema(
    [("part", pa.int64()), ("position", pa.int64()), ("segment", pa.binary())]
)


class Spill:
    """Rows of one table, buffered in memory while small and streamed to a Parquet file beyond that.

    Up to `SPILL_BYTES` of rows (those of a ~150 MB input) stay in memory and go to DuckDB straight
    from Arrow, which inserts them faster than it reads them back from Parquet, and nothing is
    written twice. Beyond that rows leave for Parquet every `SPILL_ROWS`, so a 10 GB input costs no
    more memory than a 200 MB one.
    """

    def __init__(self, schema: pa.Schema, directory: Callable[[], Path], name: str) -> None:
        self._schema = schema
        self._directory = directory
        self._name = name
        self._batches: list[pa.RecordBatch] = []
        self._buffered = 0
        self._buffered_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self.path: Path | None = None
        self.rows = 0

    def add(self, columns: list[pa.Array]) -> None:
        batch = pa.RecordBatch.from_arrays(columns, schema=self._schema)
        if not batch.num_rows:
            return
        self._batches.append(batch)
        self._buffered += batch.num_rows
        self._buffered_bytes += batch.nbytes
        self.rows += batch.num_rows
        if self._buffered >= SPILL_ROWS and (
            self._writer is not None or self._buffered_bytes >= SPILL_BYTES
        ):
            self._flush()

    def _flush(self) -> None:
        if self._writer is None:
            self.path = self._directory() / f"{self._name}.parquet"
            # Hashes and fingerprints are random bytes: dictionaries, statistics and compression
            # would cost time and save nothing in a file that lives for one transaction.
            self._writer = pq.ParquetWriter(
                self.path,
                self._schema,
                compression="none",
                use_dictionary=False,
                write_statistics=False,
            )
        self._writer.write_table(pa.Table.from_batches(self._batches, schema=self._schema))
        self._batches, self._buffered, self._buffered_bytes = [], 0, 0

    def finish(self) -> pa.Table | Path:
        """The rows: an Arrow table if they never spilled, else the closed Parquet file."""
        if self._writer is None:
            return pa.Table.from_batches(self._batches, schema=self._schema)
        if self._batches:
            self._flush()
        self._writer.close()
        assert self.path is not None
        return self.path


class SpillDir:
    """A temporary directory for spilled rows, created on first use, next to the DB or in TMPDIR.

    Next to the database because the rows end up there anyway (TMPDIR is often a small tmpfs). The name
    carries host and pid, so leftovers of a killed recorder are removed by the next one.
    """

    def __init__(self, near: Path) -> None:
        self._near = near
        self.path: Path | None = None

    def _prefix(self) -> str:
        return f".{self._near.name}.spill-{socket.gethostname()}-"

    def __call__(self) -> Path:
        if self.path is None:
            self._remove_stale()
            try:
                prefix = f"{self._prefix()}{os.getpid()}-"
                self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=self._near.parent))
            except OSError:
                self.path = Path(tempfile.mkdtemp(prefix="ledger-spill-"))
        return self.path

    def _remove_stale(self) -> None:
        """Delete spill directories of this host's recorders that no longer run (killed mid-hash)."""
        prefix = self._prefix()
        try:
            candidates = list(self._near.parent.glob(glob.escape(prefix) + "*"))
        except OSError:
            return
        for candidate in candidates:
            pid_text = candidate.name[len(prefix) :].split("-", 1)[0]
            if pid_text.isdigit() and not process_alive(int(pid_text)):
                shutil.rmtree(candidate, ignore_errors=True)

    def cleanup(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
