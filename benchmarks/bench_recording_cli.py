"""Recording as users run it: `ledger record batch FILE` as a fresh process, against `sha256sum`.

    .venv/bin/python benchmarks/bench_recording_cli.py [--mb 120] [--rounds 5] [--ledger PATH] [--against PATH]

Each round runs `sha256sum FILE` and then `ledger record batch FILE` (the installed console script,
a process of its own: interpreter start-up, imports, the worker pool, hashing, the DuckDB append,
signing and the checkpoint on close all count) into a ledger made by `ledger init` just before (not
timed; its time is printed apart). The file is ~1.1 KB chat records (`bench_recording.make_jsonl`),
read from the page cache by both. Prints the median MB/s of each, the median of the per-round
ratios (target >= 25%), and the time `ledger --version` takes (the floor of any command: start-up
and imports). `--against OTHER` times a second `ledger` command (another checkout's) in the same
rounds, for an A/B of two versions under the same load.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_recording import make_jsonl  # noqa: E402


def _ledger_command(given: str | None) -> str:
    """The installed `ledger` script: beside this interpreter (a venv), else on PATH."""
    if given:
        return given
    beside = Path(sys.executable).with_name("ledger")
    if beside.exists():
        return str(beside)
    found = shutil.which("ledger")
    if found is None:
        raise SystemExit("no `ledger` command found: pass --ledger")
    return found


CPU: dict[str, list[float]] = {}
"""CPU seconds (user + system, the command's workers included) of each timed run, by program."""


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU.setdefault(" ".join(command[:3]), []).append(cpu)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=120.0, help="size of the JSONL file (MB)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    parser.add_argument("--ledger", default=None, help="the `ledger` command (default: installed)")
    parser.add_argument("--against", default=None, help="a second `ledger` command to compare")
    parser.add_argument("--file", type=Path, default=None, help="record this file instead")
    parser.add_argument("--dir", type=Path, default=None, help="working directory")
    args = parser.parse_args()
    ledger = _ledger_command(args.ledger)
    work = Path(tempfile.mkdtemp(prefix="bench-recording-cli-", dir=args.dir))
    try:
        data = args.file or work / "chat.jsonl"
        n = make_jsonl(data, args.mb) if args.file is None else None
        size = data.stat().st_size
        records = f", {n:,} records of {size / n:.0f} B" if n else ""
        print(f"cpus: {os.cpu_count()}  python: {sys.version.split()[0]}  ledger: {ledger}")
        print(f"file: {size / 1e6:.0f} MB{records}")
        timed(["sha256sum", str(data)])  # warms the page cache for both contenders
        env = {**os.environ, "LEDGER_DB": "", "LEDGER_KEYS_DIR": "", "LEDGER_KEY": ""}
        for name in ("LEDGER_DB", "LEDGER_KEYS_DIR", "LEDGER_KEY"):
            env.pop(name)
        shas: list[float] = []
        records_s: list[float] = []
        inits: list[float] = []
        starts: list[float] = []
        others: list[float] = []
        for k in range(args.rounds):
            shas.append(timed(["sha256sum", str(data)]))
            for command, times in ((ledger, records_s), (args.against, others)):
                if command is None:
                    continue
                db = work / f"round{k}.duckdb"
                init = [command, "init", "--db", str(db), "--origin", "bench.local/cli"]
                elapsed = timed(init, env)
                if command == ledger:
                    inits.append(elapsed)
                record = [command, "record", "batch", str(data), "--db", str(db), "--id", "b"]
                times.append(timed(record, env))
                db.unlink()
                shutil.rmtree(work / f"round{k}.keys", ignore_errors=True)
            starts.append(timed([ledger, "--version"], env))
        sha_rate = statistics.median(size / s for s in shas)
        rec_rate = statistics.median(size / s for s in records_s)
        ratios = [s / r for s, r in zip(shas, records_s, strict=True)]
        print(f"sha256sum            {sha_rate / 1e6:8.1f} MB/s   (median of {args.rounds})")
        print(
            f"ledger record batch  {rec_rate / 1e6:8.1f} MB/s   (median of {args.rounds}; "
            f"{statistics.median(records_s):.2f} s wall)"
        )
        print(
            f"ratio                {statistics.median(ratios):8.1%}    median of per-round ratios "
            + ", ".join(f"{r:.1%}" for r in ratios)
            + "  (target >= 25%)"
        )
        if others:
            other_ratios = [s / r for s, r in zip(shas, others, strict=True)]
            print(
                f"against {args.against}: {statistics.median(size / s for s in others) / 1e6:.1f} MB/s, "
                f"ratio {statistics.median(other_ratios):.1%} (same rounds)"
            )
        cpu = statistics.median(CPU[" ".join([ledger, "record", "batch"])])
        sha_cpu = statistics.median(CPU[" ".join(["sha256sum", str(data)])])
        cores = os.cpu_count() or 1
        print(
            f"CPU (load-independent): record batch {cpu:.2f} CPU-s ({size / cpu / 1e6:.1f} MB per "
            f"CPU-s), sha256sum {sha_cpu:.2f} CPU-s; on {cores} idle cores at best "
            f"{min(1.0, cores * sha_cpu / cpu):.1%}"
        )
        if others:
            other_cpu = statistics.median(CPU[" ".join([args.against, "record", "batch"])])
            print(f"                          {args.against}: {other_cpu:.2f} CPU-s")
        print(
            f"apart: ledger init {statistics.median(inits):.2f} s, "
            f"ledger --version {statistics.median(starts):.2f} s (start-up floor)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
