"""Apache Spark adapter: hash Parquet shards with the one kernel on Spark's executors.

`record_files(writer, paths, conf=...)` is `ledger record batch PATH... --engine spark`; a pipeline
that holds its own session calls `record_parquet(ledger, spark, paths, id=...)`. Spark only
schedules: the plan's items (`ledger.engines.shards`: one per row group, one per file's sha256)
are numbered by `spark.range` (contiguous slices, one task each) and `mapInArrow` runs
`shards.run_item` on each; every task reads its row group with pyarrow. Spark's own Parquet reader was not used for the rows: it re-types
columns before `mapInArrow` sees them (uint64 becomes decimal(20,0), uint32 int64, a timestamp's
time zone becomes the session's, a null column int32; nanosecond timestamps are refused), so record
digests would differ from a single-process run.

The session: an active one is reused; else one is built from the `spark.*` keys of `conf`, on
`local[*]` unless `spark.master` is in `conf`, in the environment (`MASTER`) or in Spark's
`spark-defaults.conf`. A local session runs its Python workers with this interpreter
(`PYSPARK_PYTHON`), which has `ledger` installed; a cluster's executors need `ledger[spark]`
installed themselves, and a spill location they share (`ledger.spill`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]

from ledger.engines import frames
from ledger.engines.shards import WIRE_DDL, EngineRun, Job, Runner, record_shards, run_item
from ledger.errors import LedgerError, UsageError

__all__ = ["record_dataframe", "record_files", "record_parquet", "runner", "session"]

_MISSING = "--engine spark needs pyspark: pip install 'ledger[spark]'"


def _quiet() -> None:
    # pyspark 4 warns that pandas 3 is not fully supported; mapInArrow does not use pandas.
    warnings.filterwarnings("ignore", message=".*PySpark does not yet fully support pandas.*")


def _configured_master() -> bool:
    if os.environ.get("MASTER") or os.environ.get("PYSPARK_GATEWAY_PORT"):  # spark-submit
        return True
    for home in (os.environ.get("SPARK_CONF_DIR"), os.environ.get("SPARK_HOME")):
        if not home:
            continue
        for conf in (Path(home) / "spark-defaults.conf", Path(home) / "conf/spark-defaults.conf"):
            try:
                lines = conf.read_text().splitlines()
            except OSError:
                continue
            if any(line.split()[:1] == ["spark.master"] for line in lines):
                return True
    return False


# What a session this command starts logs: errors only (Spark's default prints its start-up on stderr).
_LOG4J2 = """rootLogger.level = error
rootLogger.appenderRef.stderr.ref = stderr
logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = error
appender.console.type = Console
appender.console.name = stderr
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n
"""


def _log_config() -> str:
    """A log4j2 file for the driver JVM (written once into the temporary directory)."""
    path = Path(tempfile.gettempdir()) / "ledger-spark-log4j2.properties"
    if not path.is_file() or path.read_text() != _LOG4J2:
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        temp.write_text(_LOG4J2)
        os.replace(temp, path)
    return f"-Dlog4j2.configurationFile={path.as_uri()}"


def session(conf: Mapping[str, str]) -> tuple[Any, bool]:
    """The Spark session to run on, and whether this call started it (and should stop it)."""
    try:
        from pyspark.sql import SparkSession  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise UsageError(_MISSING) from exc
    _quiet()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    builder = SparkSession.builder.appName("ledger record batch")
    builder = builder.config("spark.ui.showConsoleProgress", "false")
    if "spark.driver.extraJavaOptions" not in conf:  # the JVM starts with this session
        builder = builder.config("spark.driver.extraJavaOptions", _log_config())
    for key, value in conf.items():
        if key.startswith("spark."):
            builder = builder.config(key, value)
    master = conf.get("spark.master")
    if master is None and not _configured_master():
        master = "local[*]"
        builder = builder.master(master)
    if master is not None and master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # pyspark raises its own runtime errors (no Java, a bad master)
        raise LedgerError(f"cannot start Spark: {_first_line(exc)}") from exc
    spark.sparkContext.setLogLevel("ERROR")
    return spark, True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_local(spark: Any) -> bool:
    try:
        return str(spark.sparkContext.master).startswith("local")
    except Exception:  # Spark Connect has no SparkContext: the cluster is remote
        return False


def _parallelism(spark: Any) -> int:
    try:
        return max(int(spark.sparkContext.defaultParallelism), 1)
    except Exception:
        return 2


def runner(spark: Any) -> Runner:
    """Run a plan's items on `spark`: `spark.range` numbers them, `mapInArrow` runs `run_item` on
    each (the items travel with the task), the `WIRE` rows are collected."""

    def run(job: Job, items: list[dict[str, int | str]]) -> Iterable[pa.Table]:
        def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                for index in batch.column("id").to_pylist():
                    yield from run_item(job, items[index]).to_batches()

        # Item numbers, cut into contiguous slices (one per task while there are few items).
        slices = min(len(items), 4 * _parallelism(spark))
        frame = spark.range(0, len(items), 1, slices)
        try:
            return [frame.mapInArrow(task, WIRE_DDL).toArrow()]
        except Exception as exc:  # a lost executor, a worker without ledger installed
            raise LedgerError(f"the Spark job failed: {_first_line(exc)}") from exc

    return run


def _spill(conf: Mapping[str, str], local: bool, where: str) -> str | None:
    spill = conf.get("ledger.spill")
    if spill is None and not local:
        raise UsageError(
            f"--engine spark on {where} needs a spill location every executor can write and this "
            "machine can read: --engine-conf ledger.spill=PATH_OR_URI"
        )
    return spill


def _check_keys(conf: Mapping[str, str]) -> None:
    for key in conf:
        if not key.startswith("spark.") and key != "ledger.spill":
            raise UsageError(
                f"--engine-conf {key}: the Spark engine takes spark.* keys and ledger.spill"
            )


def record_parquet(
    ledger: Any, spark: Any, paths: Sequence[str | Path], *, id: str, **options: Any
) -> EngineRun:
    """Record Parquet shards (local paths or pyarrow filesystem URIs, in batch order) as one batch
    hashed on `spark`'s executors; `options` are `ledger record batch`'s (`split`, `text_fields`,
    `derived_from`, `dataset`, `min_segment_chars`, `tokenizer`, `token_field`) and `spill`
    (required unless the session is local). `ledger` is a `Ledger` or its `LogWriter`."""
    _quiet()
    writer = getattr(ledger, "writer", ledger)
    if options.get("spill") is None and not _is_local(spark):
        _spill({}, False, "a cluster")
    return record_shards(writer, paths, lambda: runner(spark), id=id, **options)


def record_files(
    writer: Any, paths: Sequence[str | Path], *, conf: Mapping[str, str], **options: Any
) -> EngineRun:
    """`ledger record batch PATH... --engine spark [--engine-conf KEY=VALUE...]`: the session starts
    once the inputs are checked and stops at the end if this call started it."""
    _check_keys(conf)
    started: list[Any] = []

    def start() -> Runner:
        spark, owned = session(conf)
        if owned:
            started.append(spark)
        _spill(conf, _is_local(spark), f"spark.master={_master(spark)}")
        return runner(spark)

    try:
        return record_shards(writer, paths, start, spill=conf.get("ledger.spill"), **options)
    finally:
        for spark in started:
            spark.stop()


def _master(spark: Any) -> str:
    try:
        return str(spark.sparkContext.master)
    except Exception:
        return "a remote cluster"


def record_dataframe(
    ledger: Any,
    frame: Any,
    *,
    id: str,
    order_by: str | Sequence[str],
    **options: Any,
) -> EngineRun:
    """Record a pipeline's own Spark DataFrame as one batch (or `split` batches), hashed on the
    executors: positions follow the unique `order_by` column(s) (`ledger.engines.frames`); every
    column is part of the record, as Spark hands the rows to Arrow. The same entries as
    `Ledger.record_batch(frame.orderBy(*order_by).toArrow(), id=...)`. `options` as in
    `record_parquet`."""
    from pyspark import TaskContext  # type: ignore[import-not-found, unused-ignore]

    _quiet()
    order = frames.order_columns(order_by)
    writer = getattr(ledger, "writer", ledger)
    if options.get("spill") is None and not _is_local(frame.sparkSession):
        _spill({}, False, "a cluster")
    ordered = frame.orderBy(*order).persist()

    def count_pass() -> list[dict[str, Any]]:
        def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            context = TaskContext.get()
            chunk = context.partitionId() if context is not None else 0
            yield from frames.bounds(batches, order, chunk).to_batches()

        table = ordered.mapInArrow(task, frames.BOUNDS_DDL).toArrow()
        return list(table.to_pylist())

    def hash_pass(job: Job, where: frames.Offsets) -> list[pa.Table]:
        def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            yield from frames.hash_chunk(job, batches, order, where).to_batches()

        return [ordered.mapInArrow(task, WIRE_DDL).toArrow()]

    try:
        return frames.record_frame(writer, count_pass, hash_pass, id=id, **options)
    finally:
        ordered.unpersist()
