"""Data where labs keep it: Arrow tables, `datasets.Dataset`s and DataFrames handed to
`Ledger.record_batch`, and Arrow IPC / Feather files and directories of shards given to
`ledger record batch`, all hashed exactly as the same rows in a Parquet file (DESIGN.md "Inputs")."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.feather as feather  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from ledger import Ledger
from ledger.errors import InputError, UsageError
from ledger.ingest.arrow import ArrowSource, arrow_source
from ledger.ingest.pipeline import iter_arrow_columns
from ledger.spec import fingerprint

LEDGER = str(Path(sys.executable).with_name("ledger"))
UTC = dt.timezone.utc


def _rows(n: int) -> pa.Table:
    """Rows of the types labs store: text, big integers, floats, timestamps, lists, structs, nulls."""
    return pa.table(
        {
            "text": [
                None
                if i % 7 == 3
                else f"record {i}: the river bends past the old mill and the hills"
                for i in range(n)
            ],
            "n": [i * 2**40 + i for i in range(n)],  # beyond 2**53: exact digits
            "score": [None if i % 5 == 0 else i / 8 for i in range(n)],
            "when": pa.array(
                [dt.datetime(2024, 5, 1, tzinfo=UTC) + dt.timedelta(seconds=i) for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "tags": [["sft", f"t{i % 3}"] if i % 4 else [] for i in range(n)],
            "meta": [{"source": f"crawl-{i % 2}", "ok": i % 3 == 0} for i in range(n)],
        }
    )


def _run(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run([LEDGER, *args], cwd=cwd, env={**env, "COLUMNS": "200"},
                          capture_output=True, text=True, check=False, timeout=180)  # fmt: skip


def _cli_root(lab: Path, *args: str) -> str:
    result = _run(["record", "batch", *args, "--db", "lab.duckdb", "--json"], lab)
    assert result.returncode == 0, result.stderr
    (batch,) = json.loads(result.stdout)["batches"]
    return str(batch["records_root"])


def _root(lg: Ledger, id: str, records: object) -> str:
    (entry,) = lg.record_batch(records, id=id).entries  # type: ignore[arg-type]
    assert entry.records_root is not None
    return entry.records_root


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    Ledger.init(tmp_path / "lab.duckdb", origin="lab.test/arrow")
    return tmp_path


@pytest.fixture
def hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """The real `datasets` library, offline, its caches under tmp_path."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    try:
        import datasets  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - it is in the test extra
        pytest.skip("the `datasets` library is not installed (pip install -e '.[test]')")
    datasets.disable_progress_bars()
    return datasets


def test_a_table_records_as_its_parquet_file_does(lab: Path, hf: object) -> None:
    import pandas as pd

    datasets: object = hf
    table = _rows(300)
    pq.write_table(table, lab / "rows.parquet", row_group_size=64)
    lg = Ledger.open(lab / "lab.duckdb")
    (entry,) = lg.record_batch(id="parquet", files=[lab / "rows.parquet"]).entries
    expected = entry.records_root
    ds = datasets.Dataset.from_parquet(str(lab / "rows.parquet"), cache_dir=str(lab / "hf"))  # type: ignore[attr-defined]
    df = table.to_pandas()
    assert isinstance(df, pd.DataFrame)
    roots = {
        "table": _root(lg, "table", table),
        "chunked table": _root(
            lg, "chunked", pa.concat_tables([table.slice(0, 100), table.slice(100)])
        ),
        "record batch": _root(lg, "batch", table.combine_chunks().to_batches()[0]),
        "dataset": _root(lg, "dataset", ds),
        "dataframe": _root(lg, "dataframe", df),
    }
    assert roots == dict.fromkeys(roots, expected)
    # The DataFrame's index is not a column: a filtered frame keeps its old index labels.
    kept = df.iloc[::2]
    assert list(kept.index[:2]) == [0, 2]
    assert _root(lg, "filtered", kept) == _root(
        lg, "every-other", table.take(list(range(0, 300, 2)))
    )


def test_a_dataset_selection_records_the_selected_rows_in_order(lab: Path, hf: object) -> None:
    datasets: object = hf
    table = pa.table(
        {
            "text": [f"record {i} of a curated instruction set about hills" for i in range(40)],
            "i": list(range(40)),
        }
    )
    ds = datasets.Dataset.from_dict(table.to_pydict())  # type: ignore[attr-defined]
    lg = Ledger.open(lab / "lab.duckdb")
    picked = [7, 3, 3, 39, 0]
    assert _root(lg, "select", ds.select(picked)) == _root(
        lg, "select-rows", table.take(picked).to_pylist()
    )
    shuffled = ds.shuffle(seed=0)
    order = list(shuffled["i"])
    assert order != sorted(order)
    shuffled_root = _root(lg, "shuffle", shuffled)
    assert shuffled_root == _root(lg, "shuffle-table", table.take(order))
    kept = ds.filter(lambda row: row["i"] % 3 == 0)
    assert _root(lg, "filter", kept) == _root(lg, "filter-table", table.take(list(range(0, 40, 3))))
    # The whole dataset in its stored order is a different batch from either.
    assert _root(lg, "whole", ds) == _root(lg, "whole-table", table) != shuffled_root


def test_arrow_files_record_as_the_parquet_file_of_the_same_rows(lab: Path, hf: object) -> None:
    datasets: object = hf
    table = _rows(500)
    pq.write_table(table, lab / "rows.parquet", row_group_size=128)
    with pa.ipc.new_file(lab / "rows.arrow", table.schema) as writer:
        for batch in table.to_batches(max_chunksize=100):
            writer.write_batch(batch)
    with pa.ipc.new_stream(lab / "rows.arrows", table.schema) as writer:
        for batch in table.to_batches(max_chunksize=77):
            writer.write_batch(batch)
    feather.write_feather(table, lab / "rows.feather")  # Feather V2, lz4-compressed buffers
    feather.write_feather(table, lab / "plain.ipc", compression="uncompressed")
    ds = datasets.Dataset.from_parquet(str(lab / "rows.parquet"), cache_dir=str(lab / "hf"))  # type: ignore[attr-defined]
    (cache,) = [Path(f["filename"]) for f in ds.cache_files]  # the stream format, as HF writes it
    expected = _cli_root(lab, "rows.parquet", "--id", "parquet")
    for i, name in enumerate(
        ["rows.arrow", "rows.arrows", "rows.feather", "plain.ipc", str(cache)]
    ):
        assert _cli_root(lab, name, "--id", f"arrow-{i}") == expected, name
    body = Ledger.open(lab / "lab.duckdb").entry("arrow-2").body
    digest = hashlib.sha256((lab / "rows.feather").read_bytes()).hexdigest()
    assert body["source"] == [{"file": "rows.feather", "sha256": digest}]
    assert body["count"] == 500


def test_a_directory_of_shards_reads_in_sorted_path_order(lab: Path) -> None:
    table = _rows(90)
    pq.write_table(table, lab / "whole.parquet")
    shards = lab / "shards"
    (shards / "a").mkdir(parents=True)
    (shards / "a-b").mkdir()
    # Sorted directory by directory: a/ before a-b/ (although "a-" < "a/" as plain strings).
    pq.write_table(table.slice(0, 30), shards / "a" / "z.parquet")
    feather.write_feather(table.slice(30, 30), shards / "a-b" / "part-00000.feather")
    with pa.ipc.new_stream(shards / "a-b" / "part-00001.arrow", table.schema) as writer:
        writer.write_table(table.slice(60, 20))
    with pa.ipc.new_file(shards / "b.arrow", table.schema) as writer:
        writer.write_table(table.slice(80))
    (shards / "_SUCCESS").write_text("")
    result = _run(["record", "batch", "shards", "--db", "lab.duckdb", "--json"], lab)
    assert result.returncode == 0, result.stderr
    (batch,) = json.loads(result.stdout)["batches"]
    assert batch["records_root"] == _cli_root(lab, "whole.parquet", "--id", "whole")
    body = Ledger.open(lab / "lab.duckdb").entry("shards").body
    assert [s["file"] for s in body["source"]] == [
        "a/z.parquet",
        "a-b/part-00000.feather",
        "a-b/part-00001.arrow",
        "b.arrow",
    ]


def test_a_binary_column_is_one_error_naming_column_and_row(lab: Path) -> None:
    table = pa.table(
        {"text": ["a", "b", "c"], "blob": pa.array([None, None, b"\x00\x01"], pa.binary())}
    )
    with pa.ipc.new_file(lab / "bad.arrow", table.schema) as writer:
        writer.write_table(table)
    lg = Ledger.open(lab / "lab.duckdb")
    before = lg.entry_count()
    result = _run(["record", "batch", "bad.arrow", "--db", "lab.duckdb"], lab)
    lines = result.stderr.splitlines()
    assert result.returncode == 4 and result.stdout == "", (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: bad.arrow: row 3, column 'blob'"), lines
    assert "Traceback" not in result.stderr
    with pytest.raises(InputError, match=r"^pyarrow.Table: row 2, column 'blob'"):
        lg.record_batch(table, id="bad")
    assert Ledger.open(lab / "lab.duckdb").entry_count() == before


def test_unreadable_and_empty_arrow_inputs(lab: Path) -> None:
    (lab / "junk.arrow").write_bytes(b"PAR1 this is not Arrow at all")
    result = _run(["record", "batch", "junk.arrow", "--db", "lab.duckdb"], lab)
    assert result.returncode == 4, result.stderr
    assert result.stderr.startswith("error: junk.arrow: not a readable Arrow IPC file or stream"), (
        result.stderr
    )
    schema = pa.schema([("text", pa.string())])
    with pa.ipc.new_stream(lab / "empty.arrow", schema):
        pass
    result = _run(["record", "batch", "empty.arrow", "--db", "lab.duckdb"], lab)
    assert result.returncode == 4 and result.stderr.strip() == "error: empty.arrow: no rows", (
        result.stderr
    )
    lg = Ledger.open(lab / "lab.duckdb")
    with pytest.raises(InputError, match="no records"):
        lg.record_batch(schema.empty_table(), id="empty")
    # A lone dict is still refused; a DataFrame is never read as its column names.
    with pytest.raises(UsageError, match="single dict"):
        lg.record_batch({"text": "x"}, id="lone")  # type: ignore[arg-type]


def test_big_tables_hash_the_same_on_the_pool(lab: Path) -> None:
    """Slices of one big batch go to the workers as their own rows (never the whole buffers)."""
    table = _rows(10_000).combine_chunks()  # one record batch, cut into slices
    blobs = functools.partial(
        fingerprint.fingerprint_record_blobs, params=fingerprint.DEFAULT_PARAMS
    )
    inline = list(iter_arrow_columns(ArrowSource("t", table, 0), blobs, workers=1))
    pooled = list(iter_arrow_columns(ArrowSource("t", table, 1 << 40), blobs, workers=2))
    assert len(inline) == len(pooled) > 1
    for a, b in zip(inline, pooled):
        assert a.buffers() == b.buffers()
    source = arrow_source(table)
    assert source is not None and source.name == "pyarrow.Table"
    assert arrow_source([{"text": "x"}]) is None


# --- folders written by `datasets`' save_to_disk -----------------------------------------------------


def _shards(folder: Path) -> list[str]:
    state = json.loads((folder / "state.json").read_text())
    return [item["filename"] for item in state["_data_files"]]


def test_a_saved_dataset_folder_records_as_the_dataset(lab: Path, hf: object) -> None:
    datasets: Any = hf
    ds = datasets.Dataset(_rows(300))
    ds.save_to_disk(str(lab / "saved"), num_shards=4)
    picked = ds.shuffle(seed=3).select(range(0, 300, 2))  # save_to_disk writes the selection
    picked.save_to_disk(str(lab / "picked"), num_shards=2)
    lg = Ledger.open(lab / "lab.duckdb")
    expected = _root(lg, "in-memory", ds)
    assert _cli_root(lab, "saved") == expected
    assert _root(lg, "loaded", datasets.load_from_disk(str(lab / "saved"))) == expected
    body = Ledger.open(lab / "lab.duckdb").entry("saved").body
    assert [s["file"] for s in body["source"]] == _shards(lab / "saved")  # no state.json, no info
    assert len(body["source"]) == 4 and body["count"] == 300
    assert _cli_root(lab, "picked") == _root(lg, "picked-in-memory", picked) != expected


def test_shards_read_in_state_json_order_not_name_order(lab: Path, hf: object) -> None:
    datasets: Any = hf
    ds = datasets.Dataset(_rows(90))
    folder = lab / "renamed"
    ds.save_to_disk(str(folder), num_shards=3)
    # The first shard renamed so that it sorts last: state.json still lists it first.
    state = json.loads((folder / "state.json").read_text())
    (folder / "data-00000-of-00003.arrow").rename(folder / "zz-first.arrow")
    state["_data_files"][0]["filename"] = "zz-first.arrow"
    (folder / "state.json").write_text(json.dumps(state))
    # A file state.json does not list is not part of the dataset (load_from_disk ignores it too).
    with pa.ipc.new_stream(folder / "data-stray.arrow", ds.data.schema) as writer:
        writer.write_table(_rows(5))
    reloaded = datasets.load_from_disk(str(folder))
    lg = Ledger.open(lab / "lab.duckdb")
    expected = _root(lg, "in-memory", ds)
    assert _root(lg, "reloaded", reloaded) == expected
    assert _cli_root(lab, "renamed") == expected
    by_name = sorted(p.name for p in folder.glob("*.arrow") if p.name != "data-stray.arrow")
    assert by_name[-1] == "zz-first.arrow"
    in_name_order = _cli_root(lab, *(f"renamed/{name}" for name in by_name), "--id", "by-name")
    assert in_name_order != expected
    body = Ledger.open(lab / "lab.duckdb").entry("renamed").body
    assert [s["file"] for s in body["source"]] == [
        "zz-first.arrow",
        "data-00001-of-00003.arrow",
        "data-00002-of-00003.arrow",
    ]


def test_a_dataset_dict_folder_is_refused_naming_its_splits(lab: Path, hf: object) -> None:
    datasets: Any = hf
    ds = datasets.Dataset(_rows(60))
    splits = datasets.DatasetDict({"train": ds.select(range(50)), "test": ds.select(range(50, 60))})
    splits.save_to_disk(str(lab / "splits"))
    lg = Ledger.open(lab / "lab.duckdb")
    before = lg.entry_count()
    result = _run(["record", "batch", "splits", "--db", "lab.duckdb"], lab)
    assert result.returncode == 2 and result.stdout == "", (result.returncode, result.stderr)
    assert result.stderr.splitlines() == [
        "error: splits: a Hugging Face DatasetDict folder (splits: train, test) holds several "
        "datasets: give one split's folder, such as splits/train"
    ]
    # A folder holding one further down: the error names that folder.
    (lab / "data").mkdir()
    splits["test"].save_to_disk(str(lab / "data" / "test"))
    result = _run(["record", "batch", "data", "--db", "lab.duckdb"], lab)
    assert result.returncode == 4, result.stderr
    assert result.stderr.startswith("error: data/test: a folder saved by Hugging Face datasets")
    assert Ledger.open(lab / "lab.duckdb").entry_count() == before
    # One split's folder records as that split.
    assert _cli_root(lab, "splits/train") == _root(lg, "train-in-memory", splits["train"])
    assert Ledger.open(lab / "lab.duckdb").entry("train").body["count"] == 50


def test_a_broken_state_json_names_the_file(lab: Path, hf: object) -> None:
    datasets: Any = hf
    folder = lab / "saved"
    datasets.Dataset(_rows(20)).save_to_disk(str(folder), num_shards=2)
    state = json.loads((folder / "state.json").read_text())
    before = Ledger.open(lab / "lab.duckdb").entry_count()
    cases = [
        ([{"filename": "data-00009-of-00002.arrow"}], "_data_files[0]: data-00009-of-00002.arrow is not in saved"),
        ([{"filename": "../escape.arrow"}], '_data_files[0]: expected a file name inside the folder, found "../escape.arrow"'),
        ([{"filename": "data-00000-of-00002.arrow"}] * 2, "_data_files[1]: data-00000-of-00002.arrow is listed twice"),
        ([], "expected a non-empty list '_data_files' (a Dataset.save_to_disk state)"),
    ]  # fmt: skip
    for files, expected in cases:
        (folder / "state.json").write_text(json.dumps({**state, "_data_files": files}))
        result = _run(["record", "batch", "saved", "--db", "lab.duckdb"], lab)
        assert result.returncode == 4, result.stderr
        assert result.stderr.splitlines() == [f"error: saved/state.json: {expected}"]
    (folder / "state.json").write_text("{not json")
    result = _run(["record", "batch", "saved", "--db", "lab.duckdb"], lab)
    assert result.returncode == 4
    assert result.stderr.startswith("error: saved/state.json: invalid JSON")
    assert Ledger.open(lab / "lab.duckdb").entry_count() == before
