"""Ranges of a batch hashed apart and merged (`ledger.engine.ranges`): the roots of a recording,
bit-identical to `Ledger.record_batch` on the same Parquet shards."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ledger import Ledger
from ledger.engine.kernel import RECORD_SCHEMA, KernelOptions, Origin, hash_batch
from ledger.engine.ranges import (
    RANGE_SCHEMA,
    RangeMerger,
    RangeSummary,
    compact_range,
    hash_range,
    merge_ranges,
    recording_options,
    summarize,
)
from ledger.errors import InputError, UsageError
from ledger.spec.merkle import root

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("score", pa.float64()),
        ("tags", pa.list_(pa.string())),
    ]
)
TEXT = "a paragraph of training text long enough to be one segment of its own, number "


def record(shard: int, i: int) -> dict[str, object]:
    # every 7th record holds no comparable text (too short): it counts in `records_without_text`
    text = (
        f"short {i}"
        if i % 7 == 0
        else f"{TEXT}{shard}-{i}. " + "More words follow here. " * (i % 5)
    )
    return {"id": f"{shard}-{i}", "text": text, "score": i / 3, "tags": ["a", None][: i % 3]}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three real Parquet shards of uneven sizes, written in several row groups each."""
    folder = tmp_path_factory.mktemp("shards")
    paths = []
    for shard, rows in enumerate([300, 1, 457]):
        path = folder / f"part-{shard:05d}.parquet"
        table = pa.Table.from_pylist([record(shard, i) for i in range(rows)], schema=SCHEMA)
        pq.write_table(table, path, row_group_size=64)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def recorded(shards: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The batch entry `ledger` writes for the shards in one process."""
    path = tmp_path_factory.mktemp("ledger") / "ledger.duckdb"
    Ledger.init(path, origin="test.local/ranges")
    lg = Ledger.open(path)
    lg.record_batch(id="shards", files=shards)
    return lg.entry("shards").body


def split_points(total: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, total), rng.randint(1, 12)))
    return [0, *cuts, total]


def test_merged_ranges_give_the_roots_of_a_single_process_recording(
    shards: list[Path], recorded: dict[str, object]
) -> None:
    options = recording_options()
    rows = pa.concat_tables([pq.read_table(p) for p in shards])
    for seed in range(6):
        points = split_points(rows.num_rows, seed)
        summaries = []
        for begin, end in zip(points, points[1:]):
            _, summary = hash_range(rows.slice(begin, end - begin), options, begin)
            # each range travels to the driver in its wire form
            wire = summary.to_arrow()
            assert wire.schema == RANGE_SCHEMA
            summaries.extend(RangeSummary.from_arrow(wire))
        random.Random(seed).shuffle(summaries)  # tasks finish in any order
        merged = merge_ranges(summaries)
        assert merged.count == recorded["count"] == rows.num_rows
        assert merged.records_root().hex() == recorded["records_root"]
        assert merged.fingerprints_root().hex() == recorded["fingerprints"]["root"]
        assert merged.without_text == recorded["records_without_text"] > 0


def test_per_shard_ranges_with_the_kernels_own_batches(
    shards: list[Path], recorded: dict[str, object]
) -> None:
    """What an engine task does: read a shard's row groups, hash each batch as the range of its
    positions (shard offset + row index), and send the summary."""
    options = recording_options()
    merger = RangeMerger()
    offset = 0
    for path in shards:
        file = pq.ParquetFile(path)
        row = 0
        for batch in file.iter_batches(batch_size=50):
            origin = Origin(str(path), row + 1, rows=True)
            table, summary = hash_range(batch, options, offset + row, origin=origin)
            assert table.schema == RECORD_SCHEMA
            assert summarize(table, offset + row) == summary
            merger.add(summary)
            row += batch.num_rows
        offset += file.metadata.num_rows
    merged = merger.result()
    assert merged.records_root().hex() == recorded["records_root"]
    assert merged.fingerprints_root().hex() == recorded["fingerprints"]["root"]


def test_a_range_hashes_exactly_as_the_kernel_on_the_whole_file(shards: list[Path]) -> None:
    options = recording_options()
    whole = hash_batch(pq.read_table(shards[2]), options)
    parts = [hash_range(pq.read_table(shards[2]).slice(a, 100), options, a)[0] for a in (0, 100)]
    assert pa.concat_tables(parts).equals(whole.slice(0, 200))


def test_compact_range_of_joined_hashes_matches_the_tree() -> None:
    leaves = [bytes([i % 256]) * 32 for i in range(300)]
    for begin, end in [(0, 300), (5, 6), (37, 211), (128, 256), (0, 0)]:
        joined = b"".join(leaves[begin:end])
        built = compact_range(begin, joined)
        assert (built.begin, built.end) == (begin, end)
        rest = compact_range(end, b"".join(leaves[end:]))
        head = compact_range(0, b"".join(leaves[:begin]))
        head.merge(built)
        head.merge(rest)
        assert head.root() == root(leaves)


def test_a_gap_or_an_overlap_is_refused() -> None:
    leaf = b"\x01" * 32
    one = compact_range(0, leaf * 3)
    two = compact_range(4, leaf * 2)

    merger = RangeMerger()
    merger.add(RangeSummary(one, compact_range(0, leaf * 3)))
    merger.add(RangeSummary(two, compact_range(4, leaf * 2)))
    with pytest.raises(UsageError, match=r"gap: records \[3, 4\)"):
        merger.result()
    with pytest.raises(UsageError, match="overlaps"):
        merger.add(RangeSummary(compact_range(2, leaf), compact_range(2, leaf)))
    with pytest.raises(UsageError, match="same positions"):
        RangeSummary(compact_range(0, leaf), compact_range(1, leaf))


def test_ranges_need_fingerprints_and_name_a_bad_row(shards: list[Path]) -> None:
    with pytest.raises(UsageError, match="needs fingerprints"):
        hash_range(pq.read_table(shards[1]), KernelOptions(), 0)
    bad = pa.table({"text": [TEXT, TEXT], "score": [1.0, float("nan")]})
    with pytest.raises(InputError, match=r"part-7\.parquet: row 12"):
        hash_range(bad, recording_options(), 10, origin=Origin("part-7.parquet", 11, rows=True))
