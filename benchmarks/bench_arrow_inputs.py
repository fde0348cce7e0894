"""Recording Arrow rows held in memory vs the same rows written to Parquet and recorded as a file.

    .venv/bin/python benchmarks/bench_arrow_inputs.py [--rows 500000] [--rounds 3]

A `--rows` table of short SFT-style records (an instruction, a response of ~40 words, an id, a
source tag) is recorded with `Ledger.record_batch(table)`, and written to Parquet then recorded
with `Ledger.record_batch(files=[...])` (write time included and shown apart). Both give the same
records root (checked). Prints rows/s of each and the ratio in-memory / file; best of `--rounds`,
each round a fresh ledger.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from ledger import Ledger

WORDS = (
    "the model answer question data training provenance ledger record batch checkpoint output "
    "evaluation summary river history science language network gradient loss hills weather"
).split()


def table_of(rows: int, seed: int = 7) -> pa.Table:
    rng = random.Random(seed)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    return pa.table(
        {
            "id": list(range(rows)),
            "instruction": [text(12) for _ in range(rows)],
            "response": [text(40) for _ in range(rows)],
            "source": [f"crawl-{i % 17}" for i in range(rows)],
        }
    )


def timed(fn: object) -> tuple[float, str]:
    start = time.perf_counter()
    root = fn()  # type: ignore[operator]
    return time.perf_counter() - start, root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    table = table_of(args.rows)
    print(f"{args.rows} rows, {table.nbytes / 1e6:.1f} MB in Arrow")
    best_table = best_file = best_write = float("inf")
    roots = set()
    for k in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            lg = Ledger.init(work / "a.duckdb", keys_dir=work / "keys")

            def in_memory() -> str:
                return str(lg.record_batch(table, id=f"t{k}").entries[0].records_root)

            def from_file() -> str:
                start = time.perf_counter()
                pq.write_table(table, work / "rows.parquet")
                nonlocal best_write
                best_write = min(best_write, time.perf_counter() - start)
                return str(
                    lg.record_batch(id=f"f{k}", files=[work / "rows.parquet"])
                    .entries[0]
                    .records_root
                )

            t_table, root_table = timed(in_memory)
            t_file, root_file = timed(from_file)
            roots |= {root_table, root_file}
            best_table, best_file = min(best_table, t_table), min(best_file, t_file)
            print(f"round {k + 1}: table {t_table:.2f}s, parquet (write + record) {t_file:.2f}s")
    assert len(roots) == 1, roots
    print(f"record_batch(table):          {args.rows / best_table:,.0f} rows/s")
    print(
        f"write Parquet + record file:  {args.rows / best_file:,.0f} rows/s "
        f"(the write alone {best_write:.2f}s)"
    )
    print(f"ratio table / file:           {best_file / best_table:.2f}x")


if __name__ == "__main__":
    main()
