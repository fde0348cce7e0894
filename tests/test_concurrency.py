"""Several processes on one ledger file: they take turns (bounded wait), or fail with one line and exit 4.

DuckDB lets one process open a file for writing, so the library opens per operation and waits for a busy
file with back-off up to LEDGER_LOCK_TIMEOUT seconds. Real processes race here: training-loop-like
Python processes holding `Ledger` objects, the installed `ledger` command in a loop, readers verifying
while others append. Whatever the interleaving, every entry must be there exactly once and the ledger
must verify.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ledger import Ledger
from ledger.log.verify import verify_ledger

LEDGER = str(Path(sys.executable).with_name("ledger"))
ORIGIN = "concurrency.test/log"


def env(**overrides: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return {**base, "LEDGER_LOCK_TIMEOUT": "60", **overrides}


def cli(args: Sequence[str], cwd: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEDGER, *args],
        check=False,
        cwd=cwd,
        env=env(**overrides),
        capture_output=True,
        text=True,
        timeout=180,
    )


def python(code: str, *args: str, **overrides: str) -> subprocess.Popen[str]:
    """A separate Python process (a trainer, a recorder) running `code` with `args` in sys.argv."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env(**overrides),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@contextmanager
def holding_the_file(db: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process with the file open for writing (as a long DuckDB session would have it)."""
    holder = python(
        """
        import sys, duckdb
        conn = duckdb.connect(sys.argv[1])
        print("holding", flush=True)
        sys.stdin.readline()
        conn.close()
        print("released", flush=True)
    """,
        str(db),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()


TRAINER = """
    import sys, time
    from pathlib import Path
    from ledger import Ledger
    db, name, steps, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    lg = Ledger.open(db)  # held for the whole run, as a training loop would
    while not go.exists():
        time.sleep(0.005)
    for step in range(steps):
        records = [{"text": f"{name} step {step} example {i}: the river carries silt down to the sea"} for i in range(8)]
        result = lg.record_batch(records, id=f"{name}/step-{step:06d}")
        print(result.entries[0].index, flush=True)
"""

CALLER = """
    import sys, time
    from pathlib import Path
    from ledger import Ledger
    db, name, calls, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    lg = Ledger.open(db)
    while not go.exists():
        time.sleep(0.005)
    for n in range(calls):
        text = f"Answer {n} from the evaluation model, long enough to be a segment of its own."
        response = {"id": f"{name}-{n}", "object": "chat.completion", "model": "gpt-4o",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
        print(lg.record_call(provider="openai", purpose="evaluation", request=None, response=response).index, flush=True)
"""


def test_parallel_recorders_all_succeed_and_nothing_is_lost(tmp_path: Path) -> None:
    db = tmp_path / "ledger.duckdb"
    Ledger.init(db, origin=ORIGIN)
    go = tmp_path / "go"
    steps = 10
    procs = {
        "trainer-a": python(TRAINER, str(db), "trainer-a", str(steps), str(go)),
        "trainer-b": python(TRAINER, str(db), "trainer-b", str(steps), str(go)),
        "caller": python(CALLER, str(db), "caller", str(steps), str(go)),
    }
    for i in range(3):
        (tmp_path / f"cli-{i}.jsonl").write_text(
            "".join(
                json.dumps({"text": f"command line batch {i} record {j} about the tides"}) + "\n"
                for j in range(5)
            )
        )
    time.sleep(0.5)  # let every process import and open its Ledger
    go.touch()
    cli_results = [
        cli(["record", "batch", f"cli-{i}.jsonl", "--id", f"cli/b{i}", "--db", str(db)], tmp_path)
        for i in range(3)
    ]
    readers = [
        cli(["verify", "--db", str(db)], tmp_path),
        cli(["head", "--db", str(db), "--json"], tmp_path),
    ]
    outcomes = {name: finish(proc) for name, proc in procs.items()}

    for name, (code, _, err) in outcomes.items():
        assert code == 0, (name, err)
    assert all(r.returncode == 0 for r in cli_results + readers), [
        r.stderr for r in cli_results + readers
    ]
    lg = Ledger.open(db)
    ids = Counter(str(e.ref) for e in lg.log(kinds=("batch", "call")))
    expected = {f"trainer-{t}/step-{s:06d}" for t in "ab" for s in range(steps)}
    expected |= {f"caller-{n}" for n in range(steps)} | {f"cli/b{i}" for i in range(3)}
    assert set(ids) == expected and set(ids.values()) == {1}
    assert lg.head().size == 2 + len(expected)  # after the log key and `default` key entries
    assert verify_ledger(lg).ok
    # each process saw its own appends in order, interleaved with the others'
    for name, (_, out, _) in outcomes.items():
        indexes = [int(line) for line in out.split()]
        assert indexes == sorted(indexes) and len(indexes) == steps, name


def test_a_busy_file_is_waited_for(tmp_path: Path) -> None:
    db = tmp_path / "ledger.duckdb"
    Ledger.init(db, origin=ORIGIN)
    (tmp_path / "d.jsonl").write_text('{"text": "a record recorded once the file is free again"}\n')
    with holding_the_file(db) as holder:
        recorder = subprocess.Popen(
            [LEDGER, "record", "batch", "d.jsonl", "--id", "waited", "--db", str(db)],
            cwd=tmp_path,
            env=env(LEDGER_LOCK_TIMEOUT="60"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        assert recorder.poll() is None  # still waiting for the holder
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        _, err = recorder.communicate(timeout=120)
    assert recorder.returncode == 0, err
    assert Ledger.open(db).entry("waited").kind == "batch"


def test_a_wait_past_the_timeout_is_one_line_and_exit_4(tmp_path: Path) -> None:
    db = tmp_path / "ledger.duckdb"
    lg = Ledger.init(db, origin=ORIGIN)
    before = lg.head().note
    (tmp_path / "d.jsonl").write_text(
        '{"text": "a record that cannot be recorded while the file is held"}\n'
    )
    with holding_the_file(db):
        for args in (
            ["record", "batch", "d.jsonl", "--id", "late"],
            ["head"],
            ["verify"],
            ["keys", "new", "--name", "x"],
        ):
            started = time.monotonic()
            result = cli([*args, "--db", str(db)], tmp_path, LEDGER_LOCK_TIMEOUT="0.5")
            elapsed = time.monotonic() - started
            *notice, last = (
                result.stderr.splitlines()
            )  # "waiting for ...", said once, then the error
            assert result.returncode == 4, (args, result.stderr)
            assert len(notice) <= 1 and all(n.startswith("waiting for ") for n in notice), notice
            assert last.startswith("error: ") and "Traceback" not in result.stderr, last
            assert "locked" in last and "LEDGER_LOCK_TIMEOUT" in last and "ledger.duckdb" in last
            assert 0.5 <= elapsed < 20, elapsed
    assert Ledger.open(db).head().note == before
    assert not (tmp_path / "ledger.keys" / "x.pem").exists()  # no key file without its key entry
    assert (
        cli(["record", "batch", "d.jsonl", "--id", "late", "--db", str(db)], tmp_path).returncode
        == 0
    )


def test_a_training_process_holding_a_ledger_blocks_no_one(tmp_path: Path) -> None:
    """The library opens and closes per operation: a live `Ledger` object holds no lock between calls."""
    db = tmp_path / "ledger.duckdb"
    Ledger.init(db, origin=ORIGIN)
    trainer = python(
        """
        import sys
        from ledger import Ledger
        lg = Ledger.open(sys.argv[1])
        lg.record_batch([{"text": "step zero of a long training run about mountain weather"}], id="run/step-0")
        print("recorded", flush=True)
        sys.stdin.readline()  # ... a long training step ...
        lg.record_batch([{"text": "step one of a long training run about mountain weather"}], id="run/step-1")
        print("recorded", flush=True)
    """,
        str(db),
    )
    try:
        assert trainer.stdout is not None and trainer.stdout.readline().strip() == "recorded"
        (tmp_path / "d.jsonl").write_text(
            '{"text": "recorded by another process while the trainer runs"}\n'
        )
        for args in (
            ["head", "--json"],
            ["verify"],
            ["record", "batch", "d.jsonl", "--id", "other"],
            ["status"],
        ):
            started = time.monotonic()
            result = cli([*args, "--db", str(db)], tmp_path, LEDGER_LOCK_TIMEOUT="1")
            assert result.returncode == 0, (args, result.stderr)
            assert time.monotonic() - started < 30
        assert trainer.stdin is not None
        trainer.stdin.write("\n")
        trainer.stdin.flush()
        code, out, err = finish(trainer)
        assert code == 0 and out.split() == ["recorded"], err
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.communicate()
    lg = Ledger.open(db)
    assert [e.ref for e in lg.log(kinds=("batch",))] == ["run/step-0", "other", "run/step-1"]
    assert verify_ledger(lg).ok
