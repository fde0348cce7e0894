"""Cases every engine must pass (DESIGN.md "Engines"): `ledger record batch --engine E` on real
Parquet shards gives the entries of `--engine local` on a second ledger; copies of a recorded
output are found by the audit; a bad row and a missing file are exit 4 with the ledger unchanged.

The CLI runs as the installed `ledger` script, against DuckDB files on disk; test_engine_spark.py and
test_engine_ray.py call these with their engine.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

LEDGER = str(Path(sys.executable).with_name("ledger"))
TEACHER_TEXT = (
    "The committee concluded that the reservoir's spillway gates must be inspected every spring, "
    "because silt carried down by the April floods jams the lower hinges."
)


class Shop:
    """Two ledgers in one directory: `engine.duckdb` (the engine's) and `local.duckdb` (reference)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name in ("engine", "local"):
            self.ok(name, "init", "--origin", f"example.org/{name}")

    def run(
        self, db: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        extra = env or {}
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env.update(
            {
                "LEDGER_DB": str(self.root / f"{db}.duckdb"),
                "LEDGER_LOCK_TIMEOUT": "5",
                "COLUMNS": "200",
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            }
        )
        env.pop("PYSPARK_PYTHON", None)  # the CLI must set it for a local session itself
        env.update(extra)
        return subprocess.run(
            [LEDGER, *args], capture_output=True, text=True, env=env, timeout=300, cwd=self.root
        )

    def ok(self, db: str, *args: str) -> str:
        result = self.run(db, *args)
        assert result.returncode == 0, (args, result.stderr[-3000:], result.stdout[-2000:])
        return result.stdout

    def entries(self, db: str) -> list[dict[str, Any]]:
        """The batch and dataset entries' kinds and bodies, without their time (the two ledgers'
        keys, and so their key and call entries' signers, differ)."""
        out = []
        for entry in json.loads(self.ok(db, "log", "--json")):
            if entry["kind"] not in ("batch", "dataset"):
                continue
            body = dict(entry["body"])
            body.pop("time", None)
            out.append({"kind": entry["kind"], "body": body})
        return out

    def size(self, db: str) -> int:
        return int(json.loads(self.ok(db, "status", "--json"))["size"])

    def record_call(self, db: str, text: str = TEACHER_TEXT) -> None:
        response = {
            "id": "chatcmpl-eval-1", "object": "chat.completion", "created": 1764979200,
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
        }  # fmt: skip
        (self.root / "response.json").write_text(json.dumps(response), encoding="utf-8")
        self.ok(db, "record", "call", "--provider", "openai", "--purpose", "evaluation",
                "--response", "response.json")  # fmt: skip


def chat_rows(n: int, seed: int, planted: int | None = None) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        text = f"shard {seed} row {i}: a training document about rivers, bridges and the weather {i * 7}"
        if planted is not None and i == planted:
            text = TEACHER_TEXT
        row: dict[str, Any] = {"id": i, "text": text if i % 7 else None, "score": i / 3}
        row["tags"] = [f"t{i % 3}", "x"] if i % 5 else []
        rows.append(row)
    return rows


def wide_table(n: int) -> pa.Table:
    """Types an engine's own reader re-types: uint64 beyond int64, a timestamp with a time zone,
    dictionary and large strings, nested struct and list, map, an all-null column."""
    zone = dt.timezone.utc
    return pa.table(
        {
            "text": pa.array(
                [f"wide row {i}: the quick brown fox jumps over the lazy dog" for i in range(n)],
                pa.large_string(),
            ),
            "u64": pa.array([2**63 + i for i in range(n)], pa.uint64()),
            "u32": pa.array([4_000_000_000 + i for i in range(n)], pa.uint32()),
            "ts": pa.array(
                [dt.datetime(2024, 1, 2, 3, 4, 5, i, tzinfo=zone) for i in range(n)],
                pa.timestamp("us", tz="Europe/Paris"),
            ),
            "tsn": pa.array(list(range(n)), pa.timestamp("ns")),
            "kind": pa.array([f"k{i % 3}" for i in range(n)]).dictionary_encode(),
            "meta": pa.array(
                [{"a": i, "b": [i, i + 1]} if i % 4 else None for i in range(n)],
                pa.struct([("a", pa.int64()), ("b", pa.list_(pa.int64()))]),
            ),
            "attrs": pa.array([[("k", i)] for i in range(n)], pa.map_(pa.string(), pa.int64())),
            "nothing": pa.array([None] * n, pa.null()),
        }
    )


def write(path: Path, rows: list[dict[str, Any]] | pa.Table, group: int = 64) -> Path:
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
    pq.write_table(table, path, row_group_size=group)
    return path


def shards(root: Path) -> list[str]:
    """Three shards given out of name order, one with a space in its name, small row groups (many
    tasks), a wide-typed one, and a copy of the teacher's output planted in one."""
    write(root / "c.parquet", chat_rows(300, 1, planted=123))
    write(root / "a shard.parquet", chat_rows(5, 2))
    write(root / "b.parquet", wide_table(200), group=50)
    return ["c.parquet", "a shard.parquet", "b.parquet"]


def record_both(
    shop: Shop,
    engine: str,
    *args: str,
    conf: tuple[str, ...] = (),
    uris: bool = False,
) -> dict[str, Any]:
    """Record with `engine` and with `local`; the two logs must hold the same bodies. With `uris`,
    the engine is given the `.parquet` arguments as file:// URIs."""
    extra = [f"--engine-conf={c}" for c in conf]
    given = [(shop.root / a).as_uri() if uris and a.endswith(".parquet") else a for a in args]
    out = json.loads(
        shop.ok("engine", "record", "batch", *given, "--engine", engine, *extra, "--json")
    )
    shop.ok("local", "record", "batch", *args, "--json")
    ours, theirs = shop.entries("engine"), shop.entries("local")
    assert ours and ours == theirs
    return dict(out)


def check_same_batch_and_audit(shop: Shop, engine: str, conf: tuple[str, ...] = ()) -> None:
    for db in ("engine", "local"):
        shop.record_call(db)
    files = shards(shop.root)
    out = record_both(shop, engine, *files, "--id", "run1/data", "--text-field", "text",
                      "--derived-from", "2", conf=conf)  # fmt: skip
    body = shop.entries("engine")[-1]["body"]
    assert (
        body["count"] == 505 and body["records_without_text"] == 43 + 1
    )  # every 7th row of c and a
    assert [s["file"] for s in body["source"]] == files
    assert out["batches"][0]["count"] == 505
    (shop.root / "w.bin").write_bytes(b"weights")
    shop.ok("engine", "record", "checkpoint", "--id", "run1/k", "--weights", "w.bin",
            "--batch", "run1/data")  # fmt: skip
    audit = shop.run("engine", "audit", "run1/k", "--json")
    assert audit.returncode == 1, audit.stderr
    report = json.loads(audit.stdout)
    assert report["verdict"] == "contaminated"
    exact = {f["record"] for f in report["findings"] if f["type"] == "exact"}
    assert exact == {123}  # the copy planted in c.parquet, the first shard


def check_split_and_tokenizer(
    shop: Shop, engine: str, tokenizer: Any, remote_spill: bool = False
) -> None:
    """--split cuts across shard and row-group boundaries; token ids are decoded on the workers.
    With `remote_spill`, the shards are given as file:// URIs and the spill is a file:// URI (the
    object-store path: pyarrow filesystems, partitions fetched before the append)."""
    tokenizer.save(str(shop.root / "tokenizer.json"))
    for k, n in enumerate((130, 3, 90)):
        rows = [
            {"input_ids": tokenizer.encode(f"document {k}-{i} about mosses and silt {i}").ids}
            for i in range(n)
        ]
        write(shop.root / f"tok-{k}.parquet", rows, group=32)
    files = ["tok-0.parquet", "tok-1.parquet", "tok-2.parquet"]
    spill = shop.root / "shared-spill"
    spill.mkdir()
    conf = (f"ledger.spill={spill.as_uri()}",) if remote_spill else ()
    record_both(shop, engine, *files, "--id", "tok", "--split", "100", "--tokenizer",
                "tokenizer.json", "--min-segment-chars", "8", conf=conf,
                uris=remote_spill)  # fmt: skip
    assert list(spill.iterdir()) == []  # the run's partitions are removed
    found = [(e["kind"], e["body"]["count"]) for e in shop.entries("engine")]
    assert found == [("dataset", 223), ("batch", 100), ("batch", 100), ("batch", 23)]
    bodies = [e["body"] for e in shop.entries("engine")[1:]]
    assert all(b["records_without_text"] == 0 and b["tokenizer"] for b in bodies)


def check_bad_row_and_missing_file(shop: Shop, engine: str) -> None:
    write(shop.root / "good.parquet", chat_rows(100, 3))
    bad = pa.table({"x": pa.array([1.0, 2.0, float("nan"), 4.0] * 20)})
    write(shop.root / "bad.parquet", bad, group=16)
    before = shop.size("engine")
    result = shop.run(
        "engine", "record", "batch", "good.parquet", "bad.parquet", "--engine", engine
    )
    local = shop.run("local", "record", "batch", "good.parquet", "bad.parquet")
    assert local.returncode == 4
    assert result.returncode == 4, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error == [line for line in local.stderr.splitlines() if line.startswith("error: ")]
    assert "bad.parquet: row 3" in error[0]
    missing = shop.run(
        "engine", "record", "batch", "good.parquet", "gone.parquet", "--engine", engine
    )
    assert missing.returncode == 4
    assert missing.stderr.startswith("error: gone.parquet: cannot read"), missing.stderr
    assert shop.size("engine") == before


def frame_rows(n: int) -> pa.Table:
    """A pipeline's table: unique ids given out of order (the order column), text, a nested list."""
    ids = [(i * 37) % n for i in range(n)]  # a permutation of 0..n-1 (n prime to 37)
    return pa.table(
        {
            "doc": pa.array(ids, pa.int64()),
            "text": [f"pipeline document {i}: notes on glaciers, moss and river silt" for i in ids],
            "tags": [[f"t{i % 3}"] for i in ids],
        }
    )


def same_entries(run: Any, expected: Any) -> None:
    assert [(b.id, b.count, b.records_root, b.without_text) for b in run.result.entries] == [
        (b.id, b.count, b.records_root, b.without_text) for b in expected.entries
    ]
