"""`ledger record call|batch|checkpoint` and `ledger import calls`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.app import (
    DEFAULT_DB_PATH,
    Db,
    Json,
    KeyOpt,
    KeysDir,
    import_app,
    open_ledger,
    record_app,
)
from ledger.errors import UsageError
from ledger.views import console
from ledger.views import log as log_views
from ledger.views import recording as recording_views

# --- recording ------------------------------------------------------------------------------------


@record_app.command("call")
def record_call(
    provider: Annotated[str, typer.Option(help="Who served the call, e.g. openai.")],
    purpose: Annotated[str, typer.Option(help="evaluation | annotation | training-data | other")],
    response: Annotated[
        Path, typer.Option(help="Response JSON file (or a JSON array of stream chunks).")
    ],
    request: Annotated[Path | None, typer.Option(help="Request JSON file, as sent.")] = None,
    model: Annotated[str | None, typer.Option(help="Model (default: from the response).")] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="Endpoint (default: inferred from the response).")
    ] = None,
    account: Annotated[
        str | None, typer.Option(help="Account or project the call was billed to.")
    ] = None,
    db: Db = DEFAULT_DB_PATH,
    keys_dir: KeysDir = None,
    key: KeyOpt = None,
    json: Json = False,
) -> None:
    """Record one external model call from its request and response JSON files.

    Example: ledger record call --provider openai --purpose evaluation --request req.json --response resp.json
    """
    from ledger.ingest.calls import read_json_file, read_response_file

    body = read_response_file(response, provider)
    sent = read_json_file(request) if request is not None else None
    result = open_ledger(db, keys_dir, key).record_call(
        provider=provider,
        purpose=purpose,
        request=sent,
        response=body,
        model=model,
        endpoint=endpoint,
        account=account,
        stream=isinstance(body, list),
    )
    console.print_json(recording_views.call_result_json(result)) if json else console.show(
        recording_views.call_result_view(result)
    )


@import_app.command("calls")
def import_calls(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="Provider log: an OpenAI, Anthropic or Gemini batch output file, a chat log, or generic JSONL.",
        ),
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format", help="openai-batch | anthropic-batch | gemini-batch | openai-chat | jsonl"
        ),
    ],
    provider: Annotated[str, typer.Option(help="Provider for every call in the file.")],
    purpose: Annotated[str, typer.Option(help="Declared purpose for every call in the file.")],
    requests: Annotated[
        Path | None, typer.Option("--requests", help="The batch input file (for request hashes).")
    ] = None,
    account: Annotated[
        str | None, typer.Option(help="Account or project the calls were billed to.")
    ] = None,
    db: Db = DEFAULT_DB_PATH,
    keys_dir: KeysDir = None,
    key: KeyOpt = None,
    json: Json = False,
) -> None:
    """Import calls in bulk, streaming; idempotent on (provider, external id).

    Example: ledger import calls batch_output.jsonl --format openai-batch --requests batch_input.jsonl --provider openai --purpose evaluation
    """
    ledger = open_ledger(db, keys_dir, key)
    with console.progress(
        f"importing {file.name}", _size(file), enabled=not json, unit="bytes"
    ) as advance:
        report = ledger.import_calls(
            file,
            format,
            provider=provider,
            purpose=purpose,
            requests_path=requests,
            account=account,
            progress=advance,
        )
    console.print_json(recording_views.import_json(report)) if json else console.show(
        recording_views.import_view(report)
    )


def _batch_id_of(path: Path) -> str:
    """`train` for train.jsonl and for train.jsonl.gz; a directory's own name."""
    if path.is_dir():
        return path.resolve().name
    stem = Path(path.stem)
    return stem.stem if path.suffix.lower() == ".gz" else str(stem)


@record_app.command("batch")
def record_batch(
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE...",
            help="JSONL, Parquet, Arrow IPC/Feather or text files (JSONL and text may be .gz), in order; a directory's files in name order (a datasets save_to_disk folder: its shards in state.json order). With --engine: Parquet files, local or any pyarrow filesystem URI (s3://...).",
        ),
    ],
    id: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="Batch id (default: the first file's name without extensions, or the directory's name).",
        ),
    ] = None,
    split: Annotated[
        int | None, typer.Option(help="Cut into batches of N records: ids <id>/000000, ...")
    ] = None,
    text_field: Annotated[
        list[str] | None,
        typer.Option(
            "--text-field",
            metavar="FIELD.PATH",
            help="Only these dotted fields are text (repeatable).",
        ),
    ] = None,
    derived_from: Annotated[
        list[str] | None,
        typer.Option(
            "--derived-from",
            metavar="CALL",
            help="A call (index, external id or custom id) these records come from (repeatable).",
        ),
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset id this batch belongs to.")] = None,
    min_segment_chars: Annotated[
        int, typer.Option(help="Shortest normalized text that counts as a segment.")
    ] = 32,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            help="A Hugging Face tokenizer.json: token id lists are decoded into texts, cut at special tokens."
        ),
    ] = None,
    token_field: Annotated[
        str | None,
        typer.Option(
            metavar="FIELD.PATH", help="Dotted field of the token ids (default: input_ids)."
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="local (this machine's worker pool), spark or ray: hash Parquet shards on that engine's workers (pip install 'ledger[spark]' / 'ledger[ray]')."
        ),
    ] = "local",
    engine_conf: Annotated[
        list[str] | None,
        typer.Option(
            "--engine-conf",
            metavar="KEY=VALUE",
            help="Engine setting (repeatable): spark.* keys (spark.master=...), ray.num_cpus / ray.address, ledger.spill=PATH_OR_URI (where tasks write record partitions; shared by every worker on a cluster).",
        ),
    ] = None,
    db: Db = DEFAULT_DB_PATH,
    keys_dir: KeysDir = None,
    key: KeyOpt = None,
    json: Json = False,
) -> None:
    """Record a training-data batch: every record's hash and text segments, under one records root.

    Example: ledger record batch train.jsonl --id run7/data --split 10000
    """
    from ledger.engines import ENGINES, parse_conf
    from ledger.ingest.formats import data_files

    if engine not in ENGINES:
        raise UsageError(f"--engine {engine}: expected one of {', '.join(ENGINES)}")
    conf = parse_conf(engine_conf or [])
    if engine == "local" and conf:
        raise UsageError("--engine-conf applies to --engine spark or ray")
    ledger = open_ledger(db, keys_dir, key)
    if engine == "local":
        inputs: list[Path] | list[str] = [Path(f) for f in files]
        first = Path(files[0])
        total: int | None = sum(_size(f) for _, f in data_files([Path(f) for f in files]))
        what, unit = "hashing records", "bytes"
    else:  # records arrive as the tasks finish (Ray streams them; Spark returns at the end)
        uri = "://" in files[0]
        inputs, first, total = files, Path(files[0].rsplit("/", 1)[-1] if uri else files[0]), None
        what, unit = f"hashing records on {engine}", "items"
    with console.progress(what, total, enabled=not json, unit=unit) as advance:
        result = ledger.record_batch(
            id=id or _batch_id_of(first),
            files=inputs,
            split=split,
            text_fields=text_field or None,
            derived_from=derived_from or (),
            dataset=dataset,
            min_segment_chars=min_segment_chars,
            progress=advance,
            tokenizer=tokenizer,
            token_field=token_field,
            engine=engine,
            engine_conf=conf or None,
        )
    console.print_json(recording_views.batch_result_json(result)) if json else console.show(
        recording_views.batch_result_view(result)
    )


@record_app.command("checkpoint")
def record_checkpoint(
    id: Annotated[str, typer.Option("--id", help="Checkpoint id, e.g. run7/ckpt-1000.")],
    weights: Annotated[
        list[Path],
        typer.Option(
            "--weights", metavar="PATH", help="Weight file or directory of shards (repeatable)."
        ),
    ],
    batch: Annotated[
        list[str] | None,
        typer.Option("--batch", metavar="ID", help="Batch or dataset id trained on (repeatable)."),
    ] = None,
    parent: Annotated[
        list[str] | None,
        typer.Option("--parent", metavar="ID", help="Parent checkpoint id (repeatable)."),
    ] = None,
    teacher: Annotated[
        list[str] | None,
        typer.Option(
            "--teacher",
            metavar="PROVIDER:MODEL|ID",
            help="PROVIDER:MODEL or a checkpoint id (repeatable).",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Training config file (its sha256 is recorded).")
    ] = None,
    db: Db = DEFAULT_DB_PATH,
    keys_dir: KeysDir = None,
    key: KeyOpt = None,
    json: Json = False,
) -> None:
    """Record a model checkpoint: its weight hashes, parents, batches and teachers.

    Example: ledger record checkpoint --id run7/ckpt-1000 --weights out/ckpt-1000/ --batch run7/data --parent base
    """
    ledger = open_ledger(db, keys_dir, key)
    total = sum(_size(w) for w in weights)
    with console.progress("hashing weights", total, enabled=not json, unit="bytes") as advance:
        entry = ledger.record_checkpoint(
            id=id,
            weights=weights,
            batches=batch or (),
            parents=parent or (),
            teachers=teacher or (),
            config=config,
            progress=advance,
        )
    console.print_json(log_views.entry_json(entry)) if json else console.show(
        console.message(f"recorded checkpoint {id} as entry {entry.index}")
    )


@record_app.command("spool")
def record_spool(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Spool directory the training ranks wrote.")
    ],
    db: Db = DEFAULT_DB_PATH,
    keys_dir: KeysDir = None,
    key: KeyOpt = None,
    json: Json = False,
) -> None:
    """Append a training spool (every rank's steps and checkpoints) in order; re-running adds nothing.

    Example: ledger record spool out/spool
    """
    report = open_ledger(db, keys_dir, key).record_spool(directory)
    console.print_json(recording_views.spool_json(report)) if json else console.show(
        recording_views.spool_view(report)
    )


def _size(path: Path) -> int:
    """Bytes under a path, for progress bars (0 when it cannot be read: the library reports that)."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0
