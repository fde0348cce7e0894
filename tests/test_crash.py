"""`kill -9` during big recordings: the file opens, verifies, holds no partial batch, and a re-run finishes.

Each scenario runs the installed `ledger` command on a generated input, once to completion on a reference
ledger (which also times it), then again and again on a second ledger, killing the whole process group
with SIGKILL at seeded random moments: anywhere in the run, or just after DuckDB's write-ahead log
appears (inside the append transaction, its commit, or the checkpoint on close). After every kill the
ledger must open, verify and hold only whole transactions; a final uninterrupted re-run must leave the
same state as the reference run. Set LEDGER_CRASH_SEED to replay a schedule, LEDGER_CRASH_KILLS to kill
more often (a soak run).
"""

from __future__ import annotations

import inspect
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ledger import Ledger

sys.path.insert(0, str(Path(__file__).parent))
from hardening import CliPool

LEDGER = str(Path(sys.executable).with_name("ledger"))
SEED = int(os.environ.get("LEDGER_CRASH_SEED", "20261122"))
KILLS = int(os.environ.get("LEDGER_CRASH_KILLS", "6"))
WORDS = [
    "the",
    "model",
    "answered",
    "that",
    "rivers",
    "carry",
    "sediment",
    "to",
    "sea",
    "while",
    "glaciers",
    "grind",
    "mountains",
    "into",
    "fine",
    "flour",
    "and",
    "winds",
    "lift",
    "dust",
    "across",
    "deserts",
    "so",
    "every",
    "landscape",
    "records",
    "forces",
    "acting",
    "on",
    "it",
]


# --- inputs ------------------------------------------------------------------------------------------


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_chat_records(path: Path, count: int, rng: random.Random) -> None:
    """JSONL chat records of about 0.8 KB, each with two texts long enough to be segments."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            record = {
                "id": i,
                "messages": [
                    {"role": "user", "content": sentence(rng, 50)},
                    {"role": "assistant", "content": f"{sentence(rng, 70)} ({i})"},
                ],
            }
            out.write(json.dumps(record) + "\n")


def write_batch_output(path: Path, count: int, rng: random.Random) -> list[str]:
    """An OpenAI Batch API output file; about 2% of lines failed. Returns the external ids of the calls."""
    ids: list[str] = []
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            line: dict[str, Any] = {"id": f"batch_req_{i:06d}", "custom_id": f"request-{i}"}
            roll = rng.random()
            if roll < 0.01:
                line |= {"response": None, "error": {"code": "batch_expired", "message": "expired"}}
            elif roll < 0.02:
                line |= {
                    "response": {
                        "status_code": 429,
                        "request_id": f"req_{i}",
                        "body": {"error": {"message": "rate limited", "type": "requests"}},
                    },
                    "error": None,
                }
            else:
                body = {
                    "id": f"chatcmpl-crash-{i:06d}",
                    "object": "chat.completion",
                    "created": 1_700_000_000 + i,
                    "model": "gpt-4o-mini-2024-07-18",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {
                                "role": "assistant",
                                "content": f"{sentence(rng, 45)} [{i}]",
                            },
                        }
                    ],
                    "usage": {"prompt_tokens": 21, "completion_tokens": 45, "total_tokens": 66},
                }
                line |= {
                    "response": {"status_code": 200, "request_id": f"req_{i}", "body": body},
                    "error": None,
                }
                ids.append(f"chatcmpl-crash-{i:06d}")
            out.write(json.dumps(line) + "\n")
    return ids


# --- running and killing -----------------------------------------------------------------------------


def ledger_env() -> dict[str, str]:
    return {**os.environ, "LEDGER_LOCK_TIMEOUT": "30", "COLUMNS": "200"}


def run(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEDGER, *args],
        check=False,
        cwd=cwd,
        env=ledger_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def timed_run(args: Sequence[str], cwd: Path, db: Path) -> tuple[float, float]:
    """Run to completion; return (seconds, seconds until the write-ahead log first appeared)."""
    wal = db.with_name(db.name + ".wal")
    started = time.monotonic()
    proc = subprocess.Popen(
        [LEDGER, *args],
        cwd=cwd,
        env=ledger_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    first_wal = -1.0
    while proc.poll() is None:
        if first_wal < 0 and wal.exists():
            first_wal = time.monotonic() - started
        time.sleep(0.002)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    return elapsed, first_wal if first_wal >= 0 else elapsed


@dataclass(frozen=True)
class Kill:
    """One kill of the schedule: `at` seconds after start, or `after_wal` seconds after the WAL appears."""

    at: float | None = None
    after_wal: float | None = None

    def __str__(self) -> str:
        return (
            f"at {self.at:.3f}s"
            if self.at is not None
            else f"{self.after_wal:.3f}s after the WAL appeared"
        )


def schedule(rng: random.Random, duration: float, count: int) -> list[Kill]:
    """Half uniform over the whole run (stratified so early and late moments both occur), half near commit."""
    kills: list[Kill] = []
    uniform = (count + 1) // 2
    for k in range(uniform):
        kills.append(Kill(at=duration * (k + rng.random()) / uniform))
    kills += [Kill(after_wal=rng.uniform(0.0, 0.12)) for _ in range(count - uniform)]
    rng.shuffle(kills)
    return kills


def run_and_kill(args: Sequence[str], cwd: Path, db: Path, kill: Kill) -> int | None:
    """Start the command and SIGKILL its whole process group per `kill`; None if it was killed."""
    wal = db.with_name(db.name + ".wal")
    proc = subprocess.Popen(
        [LEDGER, *args],
        cwd=cwd,
        env=ledger_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        started = time.monotonic()
        if kill.at is not None:
            while proc.poll() is None and time.monotonic() - started < kill.at:
                time.sleep(0.002)
        else:
            while proc.poll() is None and not wal.exists():
                time.sleep(0.001)
            time.sleep(kill.after_wal or 0.0)
        if proc.poll() is not None:
            return proc.returncode
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- what a ledger holds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    batches: dict[str, tuple[str, int, str | None]]  # id -> (kind, count, records_root)
    calls: list[str]  # external ids in index order
    record_rows: dict[int, int]  # batch entry index -> records rows
    segment_rows: int


def read_state(db: Path) -> State:
    lg = Ledger.open(db)
    batches: dict[str, tuple[str, int, str | None]] = {}
    rows_wanted: dict[int, int] = {}
    calls: list[str] = []
    for entry in lg.log(kinds=("batch", "dataset", "call")):
        if entry.kind == "call":
            calls.append(str(entry.body.get("external_id")))
            continue
        batch_id = str(entry.body["id"])
        assert batch_id not in batches, f"{batch_id} recorded twice"
        batches[batch_id] = (entry.kind, int(entry.body["count"]), entry.body.get("records_root"))
        if entry.kind == "batch":
            rows_wanted[entry.index] = int(entry.body["count"])
    with duckdb.connect(str(db), read_only=True) as conn:
        record_rows = {
            int(b): int(n)
            for b, n in conn.execute(
                "SELECT batch, count(*) FROM records GROUP BY batch"
            ).fetchall()
        }
        (segment_rows,) = conn.execute("SELECT count(*) FROM record_segments").fetchone() or (0,)
    # rows only for committed batch entries, and exactly as many as each entry counts
    assert record_rows == {b: n for b, n in rows_wanted.items() if n}, (record_rows, rows_wanted)
    return State(batches, calls, record_rows, int(segment_rows))


@pytest.fixture(scope="module")
def cli() -> Iterator[CliPool]:
    """The checks after each kill run through the CLI too, in forked servers (the kills hit real processes)."""
    pool = CliPool(1)
    yield pool
    pool.close()


def assert_intact(cli: CliPool, db: Path, context: str) -> State:
    """`ledger verify` (a read-only open, which must replay whatever WAL a kill left) exits 0; then the rows."""
    verified = cli.run(
        ["verify", "--db", str(db), "--json"], db.parent, {"LEDGER_LOCK_TIMEOUT": "30"}
    )
    assert verified.returncode == 0, (
        f"{context}: exit {verified.returncode}: {verified.stdout[-600:]} {verified.stderr}"
    )
    assert json.loads(verified.stdout)["ok"] is True
    return read_state(db)


def fresh_copy(empty: Path, db: Path) -> None:
    """Start the next kill from the empty ledger again, so that every kill hits real work."""
    for leftover in (db, db.with_name(db.name + ".wal")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(empty, db)


# --- scenarios ---------------------------------------------------------------------------------------


def setup_ledgers(tmp_path: Path) -> tuple[Path, Path]:
    """A reference ledger and the one to crash, plus a pristine copy of the latter (same keys)."""
    for name in ("reference", "crashed"):
        assert (
            run(
                ["init", "--db", f"{name}.duckdb", "--origin", "crash.test/log"], tmp_path
            ).returncode
            == 0
        )
    empty = tmp_path / "crashed.empty"
    shutil.copyfile(tmp_path / "crashed.duckdb", empty)
    return tmp_path / "crashed.duckdb", empty


def test_kill_record_batch_at_random_moments(cli: CliPool, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data = tmp_path / "train.jsonl"
    write_chat_records(data, 6000, rng)
    db, empty = setup_ledgers(tmp_path)
    command = ["record", "batch", str(data), "--id", "run1/data", "--split", "1500", "--json"]
    duration, wal_at = timed_run(
        [*command, "--db", "reference.duckdb"], tmp_path, tmp_path / "reference.duckdb"
    )
    reference = assert_intact(cli, tmp_path / "reference.duckdb", "reference run")
    assert [k for k, _, _ in reference.batches.values()] == ["dataset"] + ["batch"] * 4
    assert sum(reference.record_rows.values()) == 6000

    outcomes: list[str] = []
    for number, kill in enumerate(schedule(rng, duration, KILLS)):
        context = f"seed {SEED}, kill {number} {kill} (reference took {duration:.2f}s, WAL at {wal_at:.2f}s)"
        code = run_and_kill([*command, "--db", str(db)], tmp_path, db, kill)
        assert code in (None, 0), f"{context}: exit {code}"
        state = assert_intact(cli, db, context)
        # all or nothing: the dataset entry and its four batches commit together, with all their rows
        assert state == reference or (
            not state.batches and not state.record_rows and not state.segment_rows
        ), context
        outcomes.append(
            "finished"
            if code == 0
            else "killed after commit"
            if state.batches
            else "killed before commit"
        )
        if state.batches:
            fresh_copy(empty, db)
    final = run([*command, "--db", str(db)], tmp_path)
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["already_recorded"] is False
    assert read_state(db) == reference
    rerun = run([*command, "--db", str(db)], tmp_path)
    assert rerun.returncode == 0 and json.loads(rerun.stdout)["already_recorded"] is True
    assert assert_intact(cli, db, "after the re-runs") == reference
    print(f"record batch kills (seed {SEED}): {dict(Counter(outcomes))}", file=sys.stderr)


def test_kill_import_calls_at_random_moments(cli: CliPool, tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    output = tmp_path / "batch_output.jsonl"
    expected = write_batch_output(output, 7000, rng)
    failed = 7000 - len(expected)
    db, empty = setup_ledgers(tmp_path)
    command = [
        "import",
        "calls",
        str(output),
        "--format",
        "openai-batch",
        "--provider",
        "openai",
        "--purpose",
        "evaluation",
        "--json",
    ]
    duration, wal_at = timed_run(
        [*command, "--db", "reference.duckdb"], tmp_path, tmp_path / "reference.duckdb"
    )
    reference = assert_intact(cli, tmp_path / "reference.duckdb", "reference run")
    assert reference.calls == expected

    chunk = int(inspect.signature(Ledger.import_calls).parameters["chunk"].default)
    assert chunk < len(expected), "the file must need several transactions"
    outcomes: list[int] = []
    for number, kill in enumerate(schedule(rng, duration, KILLS)):
        context = f"seed {SEED + 1}, kill {number} {kill} (reference took {duration:.2f}s, WAL at {wal_at:.2f}s)"
        code = run_and_kill([*command, "--db", str(db)], tmp_path, db, kill)
        assert code in (None, 0), f"{context}: exit {code}"
        count = len(assert_intact(cli, db, context).calls)
        # whole transactions only: the calls are a prefix of the file, a whole number of chunks long
        assert read_state(db).calls == expected[:count], context
        assert count % chunk == 0 or count == len(expected), f"{context}: {count} calls"
        outcomes.append(count)
        if count == len(expected):
            fresh_copy(empty, db)
    present = len(read_state(db).calls)
    final = run([*command, "--db", str(db)], tmp_path)
    assert final.returncode == 0, final.stderr
    report = json.loads(final.stdout)
    assert (report["added"], report["duplicates"], report["failed"]) == (
        len(expected) - present,
        present,
        failed,
    )
    again = run([*command, "--db", str(db)], tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["added"] == 0
    assert assert_intact(cli, db, "after the re-runs") == reference
    print(
        f"import calls kills (seed {SEED + 1}): calls present after each kill {outcomes}",
        file=sys.stderr,
    )


# --- key rotation: the key files are renamed after the commit ------------------------------------------

KILL_AT_RENAME = """
import os, signal, sys
from ledger.cli import main

def die(*args, **kwargs):  # the first rename after the rotation's commit: the worst moment to die
    os.kill(os.getpid(), signal.SIGKILL)

os.replace = die
sys.argv = ["ledger", *sys.argv[1:]]
main()
"""


def test_kill_between_a_key_rotation_commit_and_its_file_renames(tmp_path: Path) -> None:
    """The new key is committed but still staged on disk: the next command finishes the rotation."""
    data = tmp_path / "d.jsonl"
    write_chat_records(data, 3, random.Random(SEED + 3))
    assert (
        run(["init", "--db", "ledger.duckdb", "--origin", "crash.test/log"], tmp_path).returncode
        == 0
    )
    assert (
        run(["keys", "new", "--name", "trainer", "--db", "ledger.duckdb"], tmp_path).returncode == 0
    )
    keys_dir = tmp_path / "ledger.keys"
    for name, file in (("log", "log.pem"), ("trainer", "trainer.pem")):
        killed = subprocess.run(
            [sys.executable, "-c", KILL_AT_RENAME, "keys", "rotate", name, "--db", "ledger.duckdb"],
            check=False,
            cwd=tmp_path,
            env=ledger_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert list(keys_dir.glob(f"{file}.*.new")), (
            "the new key should be staged, not yet in place"
        )
        assert run(["verify", "--db", "ledger.duckdb"], tmp_path).returncode == 0
        recorded = run(
            [
                "record",
                "batch",
                str(data),
                "--id",
                f"after-{name}",
                "--key",
                "trainer",
                "--db",
                "ledger.duckdb",
            ],
            tmp_path,
        )
        assert recorded.returncode == 0, recorded.stderr
        assert (
            not list(keys_dir.glob("*.new"))
            and len(list(keys_dir.glob(f"{Path(file).stem}.*.retired.pem"))) == 1
        )
    listed = json.loads(run(["keys", "list", "--db", "ledger.duckdb", "--json"], tmp_path).stdout)
    assert [(k["name"], k["role"], k["revoked"]) for k in listed] == [
        ("crash.test/log", "log", True),
        ("default", "recorder", False),
        ("trainer", "recorder", True),
        ("crash.test/log", "log", False),
        ("trainer", "recorder", False),
    ]
    assert run(["verify", "--db", "ledger.duckdb"], tmp_path).returncode == 0
