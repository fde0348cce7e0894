"""Helpers shared by the training-loop suites: the real `ledger` CLI, and a checkpoint's lineage as
the ledger exports it (`ledger export records --checkpoint`), to compare with what was consumed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import rfc8785

LEDGER = str(Path(sys.executable).with_name("ledger"))


def cli(db: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `ledger` with `--db`-less env pointing at `db` (its keys beside it)."""
    env = {**os.environ, "LEDGER_DB": str(db), "LEDGER_LOCK_TIMEOUT": "10", "COLUMNS": "200"}
    env.pop("LEDGER_KEYS_DIR", None)
    return subprocess.run(
        [LEDGER, *args],
        cwd=cwd or db.parent,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def lineage_digests(db: Path, checkpoint: str) -> list[str]:
    """The record digests of every batch in the checkpoint's lineage, as `ledger export records`
    writes them (each leaf is JCS({"sha256", "segments"}))."""
    out = db.parent / f"export-{hashlib.sha256(checkpoint.encode()).hexdigest()[:8]}"
    done = cli(db, "export", "records", str(out), "--checkpoint", checkpoint)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out / "records.parquet")
    return [json.loads(bytes(leaf))["sha256"] for leaf in table.column("leaf").to_pylist()]


def digest(example: object) -> str:
    """DESIGN "Hashing": a JSON record's digest is sha256(JCS(record)); a text, its UTF-8 bytes."""
    if isinstance(example, str):
        return hashlib.sha256(example.encode("utf-8")).hexdigest()
    return hashlib.sha256(rfc8785.dumps(example)).hexdigest()
