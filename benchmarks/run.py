"""Run every benchmark in this folder, one after another, and print their reports.

Each script measures its own baseline in the same run and prints ratios against it, so the figures
are comparable across machines. `make bench` runs the quick set; `--full` uses each script's full sizes
(10M-leaf trees, 10M segments, 1M-entry logs: tens of minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (script, quick arguments, full arguments)
BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    ("bench_hashing.py", ["--records", "20000", "--rounds", "3"], []),
    ("bench_merkle.py", ["--quick"], []),
    ("bench_recording.py", ["--mb", "50"], []),
    ("bench_recording_cli.py", ["--mb", "120", "--rounds", "3"], ["--mb", "120", "--rounds", "7"]),
    ("bench_arrow_inputs.py", ["--rows", "100000", "--rounds", "2"], []),
    ("bench_engines.py", ["--quick"], []),
    ("bench_log.py", ["--skip-big"], []),
    ("bench_audit.py", [], ["--scale", "1.0"]),
    ("bench_witness.py", [], ["--logs", "32", "--clients", "8", "--heads", "100"]),
    ("bench_reconcile.py", ["--calls", "50000", "--rounds", "2"], []),
    ("bench_witness_cosign.py", ["--rounds", "10"], ["--rounds", "40"]),
    ("near_eval.py", ["--outputs", "300", "--distractors", "2000", "--man-files", "500"], []),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="full sizes (slow)")
    parser.add_argument("only", nargs="*", help="run only these scripts (e.g. bench_merkle.py)")
    args = parser.parse_args()
    failures = 0
    for script, quick, full in BENCHMARKS:
        if args.only and script not in args.only:
            continue
        command = [sys.executable, str(HERE / script), *(full if args.full else quick)]
        print(f"\n=== {script} {' '.join(command[2:])}", flush=True)
        started = time.monotonic()
        code = subprocess.call(command)
        print(f"=== {script}: exit {code}, {time.monotonic() - started:.1f} s wall", flush=True)
        failures += code != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
