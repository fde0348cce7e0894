"""Engines: record Parquet shards with Apache Spark or Ray Data (DESIGN.md "Engines").

`ledger.engines.spark` and `ledger.engines.ray` schedule the one kernel on an engine's workers
(`ledger.engines.shards` holds what is common: the plan, the task, the driver's merge and append).
`record_files` is `ledger record batch PATH... --engine spark|ray`. Nothing here imports pyspark or
ray until an engine is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ledger.engines.shards import EngineRun
from ledger.errors import UsageError

__all__ = ["ENGINES", "EngineRun", "parse_conf", "record_files"]

ENGINES = ("local", "spark", "ray")


def parse_conf(pairs: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` strings (`--engine-conf`, repeatable) as a dict; a pair without `=` is a UsageError."""
    conf: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"--engine-conf {pair!r}: expected KEY=VALUE, e.g. spark.master=local[4]"
            )
        conf[key.strip()] = value
    return conf


def record_files(
    writer: Any,
    paths: Sequence[str | Path],
    *,
    engine: str,
    conf: Mapping[str, str] | None = None,
    **options: Any,
) -> EngineRun:
    """Record Parquet shards as one batch (or `split` batches) on `engine` ("spark" or "ray"):
    the entries of `ledger record batch` on the same shards. `conf`: `spark.*` keys go to the Spark
    session, `ray.*` keys to `ray.init`, `ledger.spill` names the spill location (a path or URI all
    workers share). Returns the `EngineRun`."""
    conf = dict(conf or {})
    if engine == "spark":
        from ledger.engines import spark

        return spark.record_files(writer, paths, conf=conf, **options)
    if engine == "ray":
        from ledger.engines import ray

        return ray.record_files(writer, paths, conf=conf, **options)
    raise UsageError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
