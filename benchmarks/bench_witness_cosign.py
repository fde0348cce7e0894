"""Time to get a tree head cosigned by three local witnesses, against a plain `ledger head`.

    .venv/bin/python benchmarks/bench_witness_cosign.py [--rounds 20]

Three `ledger witness serve` processes listen on loopback; a fresh ledger appends one entry per round,
then its latest head is cosigned (`Ledger.cosign_head`: three parallel HTTP submissions with a
consistency proof from the size each witness last cosigned, the cosignatures verified and stored).
The baseline is `Ledger.head()` (one DuckDB session reading the stored head) on the same ledger in
the same run. Medians of `--rounds`; then the same two commands as whole CLI processes (`ledger head
--witness-policy` against `ledger head`), where interpreter start-up dominates both.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ledger import Ledger
from ledger.spec.witness_policy import parse_witness_policy

LEDGER = str(Path(sys.executable).with_name("ledger"))


def start_witnesses(
    root: Path, log_vkey: str, count: int = 3
) -> list[tuple[str, str, subprocess.Popen[str]]]:
    out = []
    for i in range(count):
        directory = root / f"w{i}"
        name = f"w{i}.bench"
        init = subprocess.run(
            [LEDGER, "witness", "init", "--name", name, "--out", str(directory)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        vkey = next(w for w in init.stdout.split() if w.startswith(name + "+"))
        proc = subprocess.Popen(
            [LEDGER, "witness", "serve", "--key", str(directory / "witness.pem"), "--log", log_vkey,
             "--state", str(directory / "state"), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        out.append((vkey, "", proc))
    ready = []
    for vkey, _, proc in out:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        ready.append((vkey, line.split()[-1], proc))
    return ready


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lg = Ledger.init(root / "ledger.duckdb", origin="bench.example/witnessed")
        log_vkey = lg.export_key("log").vkey(lg.origin)
        witnesses = start_witnesses(root, log_vkey)
        try:
            lines = [f"log {log_vkey}"]
            lines += [f"witness w{i} {vkey} {url}" for i, (vkey, url, _) in enumerate(witnesses)]
            lines += ["group all3 all w0 w1 w2", "quorum all3"]
            policy_file = root / "bench.policy"
            policy_file.write_text("\n".join(lines) + "\n")
            policy = parse_witness_policy(policy_file.read_text(), str(policy_file))
            lg.cosign_head(policy)  # the witnesses' first view of the log
            cosign, plain = [], []
            for i in range(args.rounds):
                lg.new_key(f"k{i}")
                cosign.append(timed(lambda: lg.cosign_head(policy)))
                plain.append(timed(lg.head))
            c, p = statistics.median(cosign), statistics.median(plain)
            print(f"in-process, median of {args.rounds}: cosigned by 3 witnesses {c * 1000:.1f} ms, "
                  f"plain head {p * 1000:.1f} ms, ratio {c / p:.1f}x")  # fmt: skip
            db = ["--db", str(root / "ledger.duckdb")]
            rounds = max(3, args.rounds // 4)
            cli_cosign = [
                timed(lambda: subprocess.run([LEDGER, "head", *db, "--witness-policy", str(policy_file)],
                                             capture_output=True, check=True))
                for _ in range(rounds)
            ]  # fmt: skip
            cli_plain = [
                timed(
                    lambda: subprocess.run([LEDGER, "head", *db], capture_output=True, check=True)
                )
                for _ in range(rounds)
            ]
            cc, cp = statistics.median(cli_cosign), statistics.median(cli_plain)
            print(f"CLI processes, median of {rounds}: `ledger head --witness-policy` {cc * 1000:.0f} ms, "
                  f"`ledger head` {cp * 1000:.0f} ms, ratio {cc / cp:.2f}x")  # fmt: skip
        finally:
            for _, _, proc in witnesses:
                proc.terminate()
                proc.wait(timeout=10)


if __name__ == "__main__":
    main()
