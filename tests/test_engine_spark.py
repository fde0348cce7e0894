"""`ledger record batch --engine spark` (DESIGN.md "Engines") on real Parquet shards in a local Spark
session: the same entries as `--engine local`, audited like them; bad input is exit 4 with the ledger
unchanged. The Python adapter records shards on a session the pipeline holds. Skipped only where
pyspark or a Java runtime is not installed (`make test` installs `ledger[spark]`; .ci/run a JRE)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import engine_cases as cases
import pytest

from ledger import Ledger
from ledger.errors import UsageError

pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs a Java runtime", allow_module_level=True)

from ledger.engines import spark as spark_engine  # noqa: E402

CONF = ("spark.master=local[2]", "spark.ui.enabled=false")
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")


@pytest.fixture()
def shop(tmp_path: Path) -> cases.Shop:
    return cases.Shop(tmp_path)


def test_spark_records_the_batch_a_single_process_records_and_the_audit_finds_copies(
    shop: cases.Shop,
) -> None:
    cases.check_same_batch_and_audit(shop, "spark", CONF)


def test_spark_split_and_tokenizer_match_a_single_process(shop: cases.Shop) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    trainer = tokenizers.trainers.WordLevelTrainer(special_tokens=["[UNK]"])
    words = [f"document {k}-{i} about mosses and silt {i}" for k in range(3) for i in range(130)]
    tokenizer.train_from_iterator(words, trainer)
    tokenizer.decoder = tokenizers.decoders.WordPiece()
    cases.check_split_and_tokenizer(shop, "spark", tokenizer)


def test_spark_bad_row_and_missing_file_are_exit_4_ledger_unchanged(shop: cases.Shop) -> None:
    cases.check_bad_row_and_missing_file(shop, "spark")


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors run this interpreter
    session = (
        SparkSession.builder.master("local[2]")
        .appName("ledger-tests")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    yield session
    session.stop()


def test_a_pipeline_records_shards_on_its_own_session_in_many_ranges(
    spark: Any, tmp_path: Path
) -> None:
    files = [str(tmp_path / f) for f in cases.shards(tmp_path)]
    ours = Ledger.init(tmp_path / "e.duckdb", origin="example.org/e", keys_dir=tmp_path / "ke")
    ref = Ledger.init(tmp_path / "l.duckdb", origin="example.org/l", keys_dir=tmp_path / "kl")
    run = spark_engine.record_parquet(ours, spark, files, id="data", split=128)
    expected = ref.record_batch(id="data", files=files, split=128)
    assert run.ranges > 5 and run.items > 5  # many row groups, each its own task's range
    assert [(b.id, b.count, b.records_root) for b in run.result.entries] == [
        (b.id, b.count, b.records_root) for b in expected.entries
    ]
    assert len(expected.entries) == 5  # the dataset entry and 4 batches


def test_a_pipeline_records_its_own_dataframe_in_the_order_of_a_unique_column(
    spark: Any, tmp_path: Path
) -> None:
    table = cases.frame_rows(400)
    frame = spark.createDataFrame(table.to_pandas()).repartition(4)
    ours = Ledger.init(tmp_path / "e.duckdb", origin="example.org/e", keys_dir=tmp_path / "ke")
    ref = Ledger.init(tmp_path / "l.duckdb", origin="example.org/l", keys_dir=tmp_path / "kl")
    run = spark_engine.record_dataframe(ours, frame, id="frame", order_by="doc", split=150)
    expected = ref.record_batch(frame.orderBy("doc").toArrow(), id="frame", split=150)
    assert run.items > 1  # several partitions, each placed by its first key
    cases.same_entries(run, expected)
    # a repeated key is refused by the same check as on Ray (test_engine_ray.py)
    with pytest.raises(UsageError, match="order_by"):
        spark_engine.record_dataframe(ours, frame, id="none", order_by=[])
