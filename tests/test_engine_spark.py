"""The Spark adapter (`ledger.engine.spark`) on real Parquet shards in a `local[2]` session: the
merged ranges give the roots `Ledger.record_batch` writes for the same shards. Skipped where pyspark
(or a JDK) is not installed."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ledger import Ledger
from ledger.engine.ranges import recording_options

pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs a JDK", allow_module_level=True)

from ledger.engine.spark import hash_parquet  # noqa: E402

SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("score", pa.float64()), ("n", pa.int64())]
)
TEXT = "a paragraph of training text long enough to be one segment of its own, number "


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors run this interpreter
    session = (
        SparkSession.builder.master("local[2]")
        .appName("ledger-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.files.maxPartitionBytes", "4096")  # several tasks per shard
        .getOrCreate()
    )
    yield session
    session.stop()


def test_spark_ranges_give_the_roots_of_a_single_process_recording(
    spark: Any, tmp_path: Path
) -> None:
    shards = []
    for shard, rows in enumerate([700, 3, 1200]):
        path = tmp_path / f"part {shard:05d}.parquet"  # a space: file URIs are percent-encoded
        records = [
            {
                "id": f"{shard}-{i}",
                "text": f"{TEXT}{shard}-{i}" if i % 9 else "short",
                "score": i / 7,
                "n": i,
            }
            for i in range(rows)
        ]
        pq.write_table(pa.Table.from_pylist(records, schema=SCHEMA), path, row_group_size=100)
        shards.append(path)
    shards = [shards[2], shards[0], shards[1]]  # the order given, not the names' order
    Ledger.init(tmp_path / "ledger.duckdb", origin="test.local/spark")
    lg = Ledger.open(tmp_path / "ledger.duckdb")
    lg.record_batch(id="shards", files=shards)
    body = lg.entry("shards").body
    merged = hash_parquet(spark, shards, recording_options())
    assert merged.count == body["count"] == 1903
    assert merged.records_root().hex() == body["records_root"]
    assert merged.fingerprints_root().hex() == body["fingerprints"]["root"]
    assert merged.without_text == body["records_without_text"]
