"""Spool files and `ledger record spool`: atomic writes, damaged or foreign files, idempotence."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from training_helpers import cli

from ledger.integrations.steps import StepRecorder


def _spool(directory: Path, run: str = "s", steps: int = 3, salt: str = "") -> None:
    weights = directory.parent / "w.bin"
    weights.write_bytes(b"weights")
    with StepRecorder(None, run=run, spool=directory) as rec:
        for step in range(steps):
            rec.submit(
                [f"{salt}Step {step} example {i}: a sentence long enough." for i in range(4)]
            )
        rec.checkpoint(f"{run}/ckpt", weights=[weights])


def _init(tmp_path: Path) -> Path:
    db = tmp_path / "ledger.duckdb"
    assert cli(db, "init", "--origin", "test.local/spool").returncode == 0
    return db


def _size(db: Path) -> int:
    return int(json.loads(cli(db, "head", "--json").stdout)["size"])


def test_a_damaged_file_is_one_error_line_and_nothing_is_appended(tmp_path: Path) -> None:
    db = _init(tmp_path)
    spool = tmp_path / "spool"
    _spool(spool)
    victim = spool / "rank-00000" / "000000001.parquet"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    done = cli(db, "record", "spool", str(spool))
    assert done.returncode == 4
    assert done.stderr.startswith(f"error: {victim}: ") and done.stderr.count("\n") == 1
    assert _size(db) == 2
    table = pq.read_table(io.BytesIO(data))
    entry = json.loads(table.schema.metadata[b"ledger.spool"])
    for field, value in [("records_root", "0" * 64), ("id", "s/rank-00000/step-000000007")]:
        forged = table.replace_schema_metadata(
            {b"ledger.spool": json.dumps({**entry, field: value}).encode()}
        )
        pq.write_table(forged, victim)
        done = cli(db, "record", "spool", str(spool))
        assert done.returncode == 4 and done.stderr.startswith(f"error: {victim}: "), done.stderr
    victim.write_bytes(data)
    (spool / "notes.txt").write_text("not a spool file")
    done = cli(db, "record", "spool", str(spool))
    assert done.returncode == 4 and "notes.txt" in done.stderr
    (spool / "notes.txt").unlink()
    assert cli(db, "record", "spool", str(spool)).returncode == 0
    assert _size(db) == 2 + 3 + 1


def test_rerunning_appends_nothing_and_other_content_is_refused(tmp_path: Path) -> None:
    db = _init(tmp_path)
    _spool(tmp_path / "a")
    first = json.loads(cli(db, "record", "spool", str(tmp_path / "a"), "--json").stdout)
    assert (first["batches"], first["checkpoints"], first["records"]) == (3, 1, 12)
    again = json.loads(cli(db, "record", "spool", str(tmp_path / "a"), "--json").stdout)
    assert (again["batches"], again["checkpoints"], again["skipped"]) == (0, 0, 4)
    _spool(tmp_path / "b", salt="Other ")  # the same ids, other examples
    done = cli(db, "record", "spool", str(tmp_path / "b"))
    assert done.returncode == 4 and "other content" in done.stderr
    assert _size(db) == 6


WRITER = r"""
import sys
from ledger.integrations.steps import StepRecorder
rec = StepRecorder(None, run="big", spool=sys.argv[1], queue_size=1)
step = 0
while True:
    rec.submit([f"Record {step}-{i}: " + "some text of the step " * 20 for i in range(4000)])
    step += 1
"""


def test_a_writer_killed_mid_write_leaves_no_half_file(tmp_path: Path) -> None:
    db = _init(tmp_path)
    spool = tmp_path / "spool"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(spool)])
    try:
        deadline = time.monotonic() + 120
        rank = spool / "rank-00000"
        while time.monotonic() < deadline:
            names = os.listdir(rank) if rank.is_dir() else []
            if len([n for n in names if n.endswith(".parquet")]) >= 2 and any(
                n.startswith(".") for n in names
            ):
                break  # a temporary file is being written right now
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = json.loads(cli(db, "record", "spool", str(spool), "--json").stdout)
    complete = sorted(n for n in os.listdir(spool / "rank-00000") if n.endswith(".parquet"))
    assert done["batches"] == len(complete) >= 2
    assert not [n for n in os.listdir(spool / "rank-00000") if n.startswith(".")]  # cleaned
