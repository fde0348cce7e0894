"""`ledger record batch --engine`: what the engines refuse, before any engine starts (exit 2, one
`error:` line, the ledger unchanged). Real subprocesses of the installed `ledger`; a missing extra is
simulated by a package on PYTHONPATH that cannot be imported, so these run with or without the
extras installed."""

from __future__ import annotations

from pathlib import Path

import engine_cases as cases
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest


@pytest.fixture()
def shop(tmp_path: Path) -> cases.Shop:
    pq.write_table(pa.table({"text": ["a document long enough to be one segment of text"]}),
                   tmp_path / "a.parquet")  # fmt: skip
    (tmp_path / "a.jsonl").write_text('{"text": "a line"}\n', encoding="utf-8")
    return cases.Shop(tmp_path)


def refused(shop: cases.Shop, *args: str, env: dict[str, str] | None = None) -> str:
    before = shop.size("engine")
    result = shop.run("engine", "record", "batch", *args, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert shop.size("engine") == before
    return lines[0]


@pytest.mark.parametrize("engine", ["spark", "ray"])
def test_a_missing_extra_names_the_pip_install(shop: cases.Shop, engine: str) -> None:
    fake = shop.root / "no-engines"
    package = "pyspark" if engine == "spark" else "ray"
    (fake / package).mkdir(parents=True)
    (fake / package / "__init__.py").write_text("raise ImportError('not installed')\n")
    line = refused(shop, "a.parquet", "--engine", engine, env={"PYTHONPATH": str(fake)})
    assert line == f"error: --engine {engine} needs {package}: pip install 'ledger[{engine}]'"


def test_what_the_engines_cannot_do_is_refused(shop: cases.Shop) -> None:
    assert "expected one of local, spark, ray" in refused(shop, "a.parquet", "--engine", "dask")
    assert "KEY=VALUE" in refused(shop, "a.parquet", "--engine", "ray", "--engine-conf", "x")
    line = refused(shop, "a.parquet", "--engine-conf", "spark.master=local[2]")
    assert "--engine spark or ray" in line
    line = refused(shop, "a.jsonl", "--engine", "spark")
    assert "a.jsonl: the engines read Parquet shards" in line
    line = refused(shop, "a.parquet", "--engine", "ray", "--engine-conf", "ray.bogus=1")
    assert "ray.num_cpus" in line


def test_a_cluster_run_needs_a_shared_spill_location(shop: cases.Shop) -> None:
    pytest.importorskip("ray")
    line = refused(shop, "a.parquet", "--engine", "ray", env={"RAY_ADDRESS": "ray://nowhere:10001"})
    assert "--engine-conf ledger.spill=PATH_OR_URI" in line
