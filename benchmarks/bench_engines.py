"""Engines (DESIGN.md "Engines"): records/s of the one kernel in one process, on the local pool, on
Spark local[2] and on Ray with 2 workers, start-up reported apart; the scaling ratio against
N x one process; the driver's peak RSS at two sizes (each in a fresh subprocess).

    python benchmarks/bench_engines.py            # rates on 400k records, RSS at 1M and 4M
    python benchmarks/bench_engines.py --quick    # rates on 100k, RSS at 100k and 400k

Records are chat-like rows (an id, a ~90-character text, a tag list) in Parquet shards of 64k-row
row groups. "kernel, one process" is `engine.ranges.hash_range` over every row group in turn (no
append); the other rows are whole `record batch` runs (hash + spill + one append transaction):
`Ledger.record_batch` (the local pool) and `ledger.engines.{spark,ray}.record_parquet` on an already
started engine, several times: the first run pays the workers' start (Python workers, imports);
"warm" is the best later run. The scaling ratio is an engine's warm records/s over (its workers x
the one-process kernel). Peak RSS is the driver process's (`VmHWM`): the Spark JVM and the Ray workers are other
processes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from ledger import Ledger
from ledger.engine.ranges import hash_range, recording_options

WORKERS = 2
GROUP_ROWS = 65536
SHARD_ROWS = 4 * GROUP_ROWS


def make_shards(root: Path, records: int) -> list[str]:
    """`records` chat-like rows in shards of 4 row groups; reused when already written."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    done = 0
    k = 0
    while done < records:
        n = min(SHARD_ROWS, records - done)
        path = root / f"part-{k:05d}.parquet"
        if not path.exists():
            ids = pa.array(np.arange(done, done + n, dtype=np.int64))
            text = pc.binary_join_element_wise(
                "a training document about rivers, bridges and weather number ",
                pc.cast(ids, pa.string()),
                " with its own sentence.",
                "",
            )
            tags = pa.array([["chat", "en"]] * n, pa.list_(pa.string()))
            pq.write_table(
                pa.table({"id": ids, "text": text, "tags": tags}), path, row_group_size=GROUP_ROWS
            )
        paths.append(str(path))
        done += n
        k += 1
    return paths


def kernel_one_process(paths: list[str]) -> float:
    options = recording_options()
    started = time.perf_counter()
    position = 0
    for path in paths:
        pf = pq.ParquetFile(path)
        for group in range(pf.num_row_groups):
            rows = pf.read_row_group(group)
            hash_range(rows, options, position)
            position += rows.num_rows
    return position / (time.perf_counter() - started)


def spark_session() -> Any:
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    warnings.filterwarnings("ignore", message=".*PySpark does not yet fully support pandas.*")
    spark = (
        SparkSession.builder.master(f"local[{WORKERS}]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def ray_start() -> Any:
    import ray

    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    return ray


def record(engine: str, paths: list[str], work: Path, handle: Any) -> tuple[int, float]:
    """(records, seconds) of one whole `record batch` on `engine` into a fresh ledger."""
    db = work / f"{engine}-{time.monotonic_ns()}.duckdb"
    ledger = Ledger.init(db, origin="bench.local/engines", keys_dir=work / f"keys-{db.stem}")
    started = time.perf_counter()
    if engine == "local":
        result = ledger.record_batch(id="b", files=paths)
    elif engine == "spark":
        from ledger.engines import spark

        result = spark.record_parquet(ledger, handle, paths, id="b").result
    else:
        from ledger.engines import ray

        result = ray.record_parquet(ledger, paths, id="b").result
    seconds = time.perf_counter() - started
    return result.entries[-1].count, seconds


def start(engine: str) -> tuple[Any, float]:
    started = time.perf_counter()
    handle = spark_session() if engine == "spark" else ray_start() if engine == "ray" else None
    return handle, time.perf_counter() - started


def stop(engine: str, handle: Any) -> None:
    if engine == "spark":
        handle.stop()
    elif engine == "ray":
        handle.shutdown()


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss would carry the parent's peak across fork+exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(engine: str, records: int, data: Path) -> None:
    """In a fresh process: record `records` on `engine`, print the driver's peak RSS (MB)."""
    paths = make_shards(data / f"n{records}", records)  # already written by the parent
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        handle, _ = start(engine)
        try:
            count, seconds = record(engine, paths, Path(tmp), handle)
        finally:
            stop(engine, handle)
    peak = peak_rss_mb()
    print(json.dumps({"records": count, "seconds": seconds, "rss_mb": peak}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--records", type=int, help="records for the rates")
    parser.add_argument("--engines", default="local,spark,ray")
    parser.add_argument("--data", type=Path, help="where the shards are written (kept)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs per engine (warm = best after the first)"
    )
    parser.add_argument("--no-rss", action="store_true", help="skip the peak RSS runs")
    parser.add_argument(
        "--rss-child", nargs=2, metavar=("ENGINE", "RECORDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    data = args.data or Path(tempfile.gettempdir()) / "ledger-bench-engines"
    if args.rss_child:
        rss_child(args.rss_child[0], int(args.rss_child[1]), data)
        return 0
    records = args.records or (100_000 if args.quick else 400_000)
    sizes = (100_000, 400_000) if args.quick else (1_000_000, 4_000_000)
    engines = args.engines.split(",")
    paths = make_shards(data / f"n{records}", records)
    one = kernel_one_process(paths)
    print(f"records: {records:,} chat rows in {len(paths)} shards ({GROUP_ROWS:,}-row groups)")
    print(f"{'run':<34}{'start-up s':>11}{'1st run/s':>11}{'warm/s':>11}{'warm vs N x 1':>15}")
    print(f"{'kernel, one process (no append)':<34}{'-':>11}{'-':>11}{one:>11,.0f}{'-':>15}")
    for engine in engines:
        handle, startup = start(engine)
        rates = []
        try:
            for _ in range(args.rounds):
                with tempfile.TemporaryDirectory(dir=data) as tmp:
                    count, seconds = record(engine, paths, Path(tmp), handle)
                rates.append(count / seconds)
        finally:
            stop(engine, handle)
        warm = max(rates[1:] or rates)
        name = {"local": "record batch, local pool", "spark": f"Spark local[{WORKERS}]"}
        label = name.get(engine, f"Ray, {WORKERS} workers")
        print(
            f"{label:<34}{startup:>11.1f}{rates[0]:>11,.0f}{warm:>11,.0f}"
            f"{warm / (WORKERS * one):>15.2f}"
        )
    if args.no_rss:
        return 0
    print(f"\ndriver peak RSS (fresh process per run; MB):\n{'engine':<10}", end="")
    print("".join(f"{n:>14,}" for n in sizes))
    for n in sizes:
        make_shards(data / f"n{n}", n)  # here, so that no child counts writing them
    for engine in engines:
        row = []
        for n in sizes:
            out = subprocess.run(
                [sys.executable, __file__, "--data", str(data), "--rss-child", engine, str(n)],
                capture_output=True,
                text=True,
                check=True,
            )
            row.append(json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"])
        print(f"{engine:<10}" + "".join(f"{mb:>14,.0f}" for mb in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
