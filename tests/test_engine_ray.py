"""The Ray adapter (`ledger.engine.ray`) on real Parquet shards with a 2-CPU local Ray: the merged
ranges give the roots `Ledger.record_batch` writes for the same shards. Skipped without ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ledger import Ledger
from ledger.engine.ranges import recording_options

ray = pytest.importorskip("ray")

from ledger.engine.ray import hash_parquet, row_group_plan  # noqa: E402

SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("tags", pa.list_(pa.string()))])
TEXT = "a paragraph of training text long enough to be one segment of its own, number "


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_ranges_give_the_roots_of_a_single_process_recording(
    local_ray: None, tmp_path: Path
) -> None:
    shards = []
    for shard, rows in enumerate([640, 1, 333]):
        path = tmp_path / f"part-{shard:05d}.parquet"
        records = [
            {
                "id": f"{shard}-{i}",
                "text": f"{TEXT}{shard}-{i}" if i % 5 else "",
                "tags": ["t"] * (i % 3),
            }
            for i in range(rows)
        ]
        pq.write_table(pa.Table.from_pylist(records, schema=SCHEMA), path, row_group_size=90)
        shards.append(path)
    shards.reverse()  # the order given, not the names' order
    assert len(row_group_plan(shards)) == 4 + 1 + 8
    Ledger.init(tmp_path / "ledger.duckdb", origin="test.local/ray")
    lg = Ledger.open(tmp_path / "ledger.duckdb")
    lg.record_batch(id="shards", files=shards)
    body = lg.entry("shards").body
    merged = hash_parquet(shards, recording_options())
    assert merged.count == body["count"] == 974
    assert merged.records_root().hex() == body["records_root"]
    assert merged.fingerprints_root().hex() == body["fingerprints"]["root"]
    assert merged.without_text == body["records_without_text"]
