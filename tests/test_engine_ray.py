"""`ledger record batch --engine ray` (DESIGN.md "Engines") on real Parquet shards on a local Ray
cluster: the same entries as `--engine local`, audited like them; bad input is exit 4 with the ledger
unchanged. The Python adapter records shards on a cluster the pipeline started. Skipped only where
ray is not installed (`make test` installs `ledger[ray]`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import engine_cases as cases
import pyarrow as pa
import pytest

from ledger import Ledger
from ledger.errors import InputError

pytest.importorskip("ray")

from ledger.engines import ray as ray_engine  # noqa: E402

CONF = ("ray.num_cpus=2",)


@pytest.fixture()
def shop(tmp_path: Path) -> cases.Shop:
    return cases.Shop(tmp_path)


def test_ray_records_the_batch_a_single_process_records_and_the_audit_finds_copies(
    shop: cases.Shop,
) -> None:
    cases.check_same_batch_and_audit(shop, "ray", CONF)


def test_ray_split_tokenizer_uris_and_a_uri_spill_match_a_single_process(shop: cases.Shop) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    trainer = tokenizers.trainers.WordLevelTrainer(special_tokens=["[UNK]"])
    words = [f"document {k}-{i} about mosses and silt {i}" for k in range(3) for i in range(130)]
    tokenizer.train_from_iterator(words, trainer)
    tokenizer.decoder = tokenizers.decoders.WordPiece()
    cases.check_split_and_tokenizer(shop, "ray", tokenizer, remote_spill=True)


def test_ray_bad_row_and_missing_file_are_exit_4_ledger_unchanged(shop: cases.Shop) -> None:
    cases.check_bad_row_and_missing_file(shop, "ray")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_a_pipeline_records_shards_on_its_own_cluster_in_many_ranges(
    cluster: Any, tmp_path: Path
) -> None:
    files = [str(tmp_path / f) for f in cases.shards(tmp_path)]
    ours = Ledger.init(tmp_path / "e.duckdb", origin="example.org/e", keys_dir=tmp_path / "ke")
    ref = Ledger.init(tmp_path / "l.duckdb", origin="example.org/l", keys_dir=tmp_path / "kl")
    advanced: list[int] = []
    run = ray_engine.record_parquet(ours, files, id="data", split=128, progress=advanced.append)
    expected = ref.record_batch(id="data", files=files, split=128)
    assert run.ranges > 5 and run.items > 5  # many row groups, each its own task's range
    # progress advanced as the tasks' ranges arrived, to every record
    assert sum(advanced) == sum(b.count for b in expected.entries[1:]) and len(advanced) > 1
    assert [(b.id, b.count, b.records_root) for b in run.result.entries] == [
        (b.id, b.count, b.records_root) for b in expected.entries
    ]
    assert len(expected.entries) == 5  # the dataset entry and 4 batches


def test_a_pipeline_records_its_own_dataset_in_the_order_of_a_unique_column(
    cluster: Any, tmp_path: Path
) -> None:
    table = cases.frame_rows(400)
    dataset = cluster.data.from_arrow(table).repartition(4)
    ours = Ledger.init(tmp_path / "e.duckdb", origin="example.org/e", keys_dir=tmp_path / "ke")
    ref = Ledger.init(tmp_path / "l.duckdb", origin="example.org/l", keys_dir=tmp_path / "kl")
    run = ray_engine.record_dataset(ours, dataset, id="frame", order_by="doc", split=150)
    expected = ref.record_batch(table.sort_by("doc"), id="frame", split=150)
    cases.same_entries(run, expected)
    with pytest.raises(InputError, match="appears twice"):
        twice = cluster.data.from_arrow(pa.concat_tables([table, table.slice(0, 1)]))
        ray_engine.record_dataset(ours, twice, id="twice", order_by="doc")
