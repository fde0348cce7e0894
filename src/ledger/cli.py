"""The `ledger` command: parses arguments, calls the library, renders through `views`. No logic of its own."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO

import typer

try:  # current typer carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions  # type: ignore[no-redef,import-not-found,unused-ignore]

from ledger import views
from ledger.errors import LedgerError, LedgerWarning, OptionHintError, UsageError
from ledger.ledger import DEFAULT_DB, DEFAULT_RECORDER, Ledger, read_note_file

app = typer.Typer(
    name="ledger",
    help="A distillation provenance ledger: a signed, append-only log of model-API calls and training batches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
keys_app = typer.Typer(
    help="Manage signing keys (private keys stay in PEM files, never in the database).",
    no_args_is_help=True,
)
record_app = typer.Typer(
    help="Record calls, training batches and checkpoints.", no_args_is_help=True
)
import_app = typer.Typer(help="Bulk-import provider logs.", no_args_is_help=True)
export_app = typer.Typer(
    help="Export hashes (never content) for outside verifiers.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(record_app, name="record")
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")

Db = Annotated[
    Path, typer.Option("--db", envvar="LEDGER_DB", help="Ledger file.", show_default=True)
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
KeysDir = Annotated[
    Path | None,
    typer.Option(
        "--keys-dir", envvar="LEDGER_KEYS_DIR", help="Key directory (default: <db stem>.keys)."
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--key", envvar="LEDGER_KEY", help="Recorder key: a PEM path or a key name."),
]
DEFAULT_DB_PATH = Path(DEFAULT_DB)

# Every LEDGER_* variable the code reads, one line each (tests/test_legible.py fails when one is missing).
ENVIRONMENT = """\b
Environment variables:
  LEDGER_DB            ledger file, as --db (default: ./ledger.duckdb)
  LEDGER_KEYS_DIR      key directory, as --keys-dir (default: <db stem>.keys)
  LEDGER_KEY           recorder key, as --key (a PEM path or a key name)
  LEDGER_PASSPHRASE    passphrase that opens and encrypts key files
  LEDGER_LOCK_TIMEOUT  seconds to wait for a busy ledger file (default: 30)
  LEDGER_VERBOSE       1: as --verbose
"""


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        views.show(views.message(f"ledger {version('ledger')}"))
        raise typer.Exit()


@app.callback(epilog=ENVIRONMENT)
def _global_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="On an error, also print the chain of causes. Accepted anywhere on the line.",
        ),
    ] = False,
) -> None:
    """A distillation provenance ledger: a signed, append-only log of model-API calls and training batches."""


def _open(db: Path, keys_dir: Path | None = None, key: str | None = None) -> Ledger:
    return Ledger.open(db, keys_dir=keys_dir, key=key)


# --- set-up and keys ------------------------------------------------------------------------------


@app.command()
def init(
    db: Db = DEFAULT_DB_PATH,
    origin: Annotated[
        str | None, typer.Option(help="Log origin (default: ledger.local/<random>).")
    ] = None,
    keys_dir: KeysDir = None,
    json: Json = False,
) -> None:
    """Create a ledger: the file, its log key, a recorder key named `default`, and their key entries.

    Example: ledger init --origin example.org/ledger
    """
    ledger = Ledger.init(db, origin=origin, keys_dir=keys_dir)
    head = ledger.head()
    infos = ledger.keys()
    recorder = next(k for k in infos if k.name == DEFAULT_RECORDER and k.role == "recorder")
    if json:
        views.print_json(
            {**views.head_json(head), "db": str(db), "keys_dir": str(ledger.keys_dir),
             "recorder_key": {"name": recorder.name, "keyid": recorder.keyid}}
        )  # fmt: skip
    else:
        views.show(views.message(
            f"created {db} (origin {head.origin}); log key (signs tree heads and keys) and recorder key "
            f"`{recorder.name}` (signs entries) in {ledger.keys_dir}/"
        ))  # fmt: skip


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Option("--name", help="Key name.")],
    role: Annotated[str, typer.Option("--role", help="recorder (signs entries).")] = "recorder",
    db: Db = DEFAULT_DB_PATH,
    keys_dir: KeysDir = None,
    json: Json = False,
) -> None:
    """Write a new key file (0600) and append its key entry, signed by the log key.

    Example: ledger keys new --name trainer
    """
    ledger = _open(db, keys_dir)
    info = ledger.new_key(name, role)
    _render_key(ledger, info, json)


def _render_key(ledger: Ledger, info: Any, json: bool) -> None:
    if json:
        views.print_json(views.key_json(info, ledger.origin))
    else:
        views.show(views.keys_view([info], ledger.origin))


@keys_app.command("list")
def keys_list(db: Db = DEFAULT_DB_PATH, json: Json = False) -> None:
    """List every key the log has introduced, with its status and verifier key.

    Example: ledger keys list --json
    """
    ledger = _open(db)
    infos = ledger.keys()
    if json:
        views.print_json([views.key_json(k, ledger.origin) for k in infos])
    else:
        views.show(views.keys_view(infos, ledger.origin))


@keys_app.command("rotate")
def keys_rotate(
    name: Annotated[
        str, typer.Argument(metavar="KEY", help="Key name or keyid; 'log' for the log key.")
    ] = "log",
    db: Db = DEFAULT_DB_PATH,
    keys_dir: KeysDir = None,
    json: Json = False,
) -> None:
    """Replace a key with a new one of the same name and role, and revoke the old one.

    Example: ledger keys rotate trainer
    """
    ledger = _open(db, keys_dir)
    _render_key(ledger, ledger.rotate_key(name), json)


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(metavar="KEY", help="Key name or keyid.")],
    reason: Annotated[str, typer.Option(help="Why the key is retired.")] = "unspecified",
    db: Db = DEFAULT_DB_PATH,
    keys_dir: KeysDir = None,
    json: Json = False,
) -> None:
    """Retire a recorder key: entries it signs after this point are invalid.

    Example: ledger keys revoke trainer --reason "laptop lost"
    """
    ledger = _open(db, keys_dir)
    _render_key(ledger, ledger.revoke_key(name, reason), json)


@keys_app.command("export")
def keys_export(
    name: Annotated[
        str, typer.Argument(metavar="KEY", help="Key name or keyid; 'log' for the log key.")
    ] = "log",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the verifier key string to this file.")
    ] = None,
    db: Db = DEFAULT_DB_PATH,
    json: Json = False,
) -> None:
    """Print a key's verifier key string (vkey), which outside verifiers pass to verify-bundle --key.

    Example: ledger keys export log --out ledger.vkey
    """
    ledger = _open(db)
    info = ledger.export_key(name)
    vkey = info.vkey(ledger.origin)
    if out is not None:
        out.write_text(vkey + "\n", encoding="utf-8")
    if json:
        views.print_json(views.key_json(info, ledger.origin))
    else:
        views.show(views.message(vkey))


# --- the log --------------------------------------------------------------------------------------


@app.command()
def head(
    db: Db = DEFAULT_DB_PATH,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the signed note text to this file.")
    ] = None,
    json: Json = False,
) -> None:
    """Print the latest signed tree head (a C2SP signed note).

    Example: ledger head --out head-2026-11-22.txt
    """
    tree_head = _open(db).head()
    if out is not None:
        out.write_text(tree_head.note, encoding="utf-8")
    if json:
        views.print_json(views.head_json(tree_head))
    elif out is None:
        views.show(views.head_view(tree_head))
    else:
        views.note(f"wrote tree head of size {tree_head.size} to {out}")


@app.command()
def prove(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="REF", help="Entry index, batch/checkpoint id, or call external id."
        ),
    ],
    db: Db = DEFAULT_DB_PATH,
    json: Json = False,
) -> None:
    """Print an inclusion proof of one entry against the latest tree head.

    Example: ledger prove run7/ckpt-1000 --json
    """
    proof = _open(db).prove(ref)
    views.print_json(views.proof_json(proof)) if json else views.show(views.proof_view(proof))


@app.command()
def consistency(
    from_: Annotated[
        Path, typer.Option("--from", help="A tree head published earlier (note text file).")
    ],
    db: Db = DEFAULT_DB_PATH,
    json: Json = False,
) -> None:
    """Prove the log is an append-only extension of a tree head published earlier.

    Example: ledger consistency --from head-2026-11-01.txt
    """
    proof = _open(db).consistency(read_note_file(from_), str(from_))
    views.print_json(views.consistency_json(proof)) if json else views.show(
        views.consistency_view(proof)
    )


@app.command()
def log(
    db: Db = DEFAULT_DB_PATH,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", metavar="KIND", help="Only entries of this kind (repeatable)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only entries at or after this RFC 3339 time (2026-12-01T10:00:00Z, +02:00 for Z) or date (2026-12-01: 00:00 UTC)."
        ),
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Only calls to this provider.")] = None,
    purpose: Annotated[
        str | None, typer.Option(help="Only calls with this declared purpose.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many entries.")] = None,
    start: Annotated[int, typer.Option(help="First entry index.")] = 0,
    tail: Annotated[bool, typer.Option("--tail", help="Newest entries first.")] = False,
    json: Json = False,
) -> None:
    """List log entries, filtered.

    Example: ledger log --kind call --purpose evaluation --limit 20
    """
    from ledger.spec.entries import parse_time

    after = parse_time(since, "--since") if since is not None else None
    ledger = _open(db)
    items = ledger.log(
        kinds=kind,
        since=after,
        provider=provider,
        purpose=purpose,
        start=start,
        limit=limit,
        descending=tail,
    )
    if json:
        views.print_json([views.entry_json(e) for e in items])
    else:
        views.page(views.log_view(items, views.signer_names(ledger.keys())), rows=2 * len(items))


@app.command()
def show(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="REF", help="Entry index, batch/checkpoint id, or call external id."
        ),
    ],
    db: Db = DEFAULT_DB_PATH,
    json: Json = False,
) -> None:
    """Show one decoded entry with its signer and inclusion status.

    Example: ledger show 12
    """
    ledger = _open(db)
    entry = ledger.entry(ref)
    if json:
        views.print_json(views.entry_json(entry))
    else:
        views.show(views.show_view(entry, ledger.prove(entry.index)))


@app.command()
def status(db: Db = DEFAULT_DB_PATH, json: Json = False) -> None:
    """A short dashboard: size, latest tree head, keys, counts by kind.

    Example: ledger status
    """
    document = _open(db).status()
    views.print_json(document) if json else views.show(views.status_view(document))


@app.command()
def verify(
    db: Db = DEFAULT_DB_PATH,
    since: Annotated[
        Path | None,
        typer.Option("--since", help="A tree head published earlier: check the log extends it."),
    ] = None,
    json: Json = False,
) -> None:
    """Recompute every leaf, signature, tree node and root; exit 1 on any tampering.

    Example: ledger verify --since head-2026-11-01.txt
    """
    from ledger.verify import verify_ledger

    ledger = Ledger(
        db
    )  # not Ledger.open: a damaged meta table is for verify to report (exit 1), not to refuse
    since_note = read_note_file(since) if since is not None else None
    with views.progress("verifying", ledger.entry_count(), enabled=not json) as advance:
        report = verify_ledger(ledger, since_note, progress=advance, since_name=str(since))
    document = views.verify_json(report)
    views.print_json(document) if json else views.show(views.verify_view(report))
    raise typer.Exit(0 if report.ok else 1)


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

    body = read_response_file(response)
    sent = read_json_file(request) if request is not None else None
    result = _open(db, keys_dir, key).record_call(
        provider=provider,
        purpose=purpose,
        request=sent,
        response=body,
        model=model,
        endpoint=endpoint,
        account=account,
        stream=isinstance(body, list),
    )
    views.print_json(views.call_result_json(result)) if json else views.show(
        views.call_result_view(result)
    )


@import_app.command("calls")
def import_calls(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="Provider log: an OpenAI batch output file, a chat log, or generic JSONL.",
        ),
    ],
    format: Annotated[str, typer.Option("--format", help="openai-batch | openai-chat | jsonl")],
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
    ledger = _open(db, keys_dir, key)
    with views.progress(
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
    views.print_json(views.import_json(report)) if json else views.show(views.import_view(report))


def _batch_id_of(path: Path) -> str:
    """`train` for train.jsonl and for train.jsonl.gz; a directory's own name."""
    if path.is_dir():
        return path.resolve().name
    stem = Path(path.stem)
    return stem.stem if path.suffix.lower() == ".gz" else str(stem)


@record_app.command("batch")
def record_batch(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE...",
            help="JSONL, Parquet or text files (JSONL and text may be .gz), in order; a directory's files in name order.",
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
            help="A call (index or external id) these records come from (repeatable).",
        ),
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset id this batch belongs to.")] = None,
    min_segment_chars: Annotated[
        int, typer.Option(help="Shortest normalized text that counts as a segment.")
    ] = 32,
    db: Db = DEFAULT_DB_PATH,
    keys_dir: KeysDir = None,
    key: KeyOpt = None,
    json: Json = False,
) -> None:
    """Record a training-data batch: every record's hash and text segments, under one records root.

    Example: ledger record batch train.jsonl --id run7/data --split 10000
    """
    from ledger.ingest.records import data_files

    ledger = _open(db, keys_dir, key)
    total = sum(_size(f) for _, f in data_files(files))
    with views.progress("hashing records", total, enabled=not json, unit="bytes") as advance:
        result = ledger.record_batch(
            id=id or _batch_id_of(files[0]),
            files=files,
            split=split,
            text_fields=text_field or None,
            derived_from=derived_from or (),
            dataset=dataset,
            min_segment_chars=min_segment_chars,
            progress=advance,
        )
    views.print_json(views.batch_result_json(result)) if json else views.show(
        views.batch_result_view(result)
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
    ledger = _open(db, keys_dir, key)
    total = sum(_size(w) for w in weights)
    with views.progress("hashing weights", total, enabled=not json, unit="bytes") as advance:
        entry = ledger.record_checkpoint(
            id=id,
            weights=weights,
            batches=batch or (),
            parents=parent or (),
            teachers=teacher or (),
            config=config,
            progress=advance,
        )
    views.print_json(views.entry_json(entry)) if json else views.show(
        views.message(f"recorded checkpoint {id} as entry {entry.index}")
    )


def _size(path: Path) -> int:
    """Bytes under a path, for progress bars (0 when it cannot be read: the library reports that)."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


# --- audit, lineage, bundles ------------------------------------------------------------------------

_AUDIT_EXIT = {"clean": 0, "contaminated": 1, "suspect": 3, "inconclusive": 3}


@app.command()
def audit(
    checkpoint: Annotated[
        str | None,
        typer.Argument(
            metavar="CHECKPOINT", help="Checkpoint id or entry index (or use --weights)."
        ),
    ] = None,
    weights: Annotated[
        list[Path] | None,
        typer.Option(
            "--weights",
            metavar="FILE",
            help="Audit the checkpoint whose weights include these files (repeatable).",
        ),
    ] = None,
    suspects: Annotated[
        Path | None,
        typer.Option(
            help='Suspect outputs: JSONL of strings, {"text": ...} or {"sha256": ...}; or .txt lines.'
        ),
    ] = None,
    fuzzy: Annotated[
        bool,
        typer.Option(
            "--fuzzy/--no-fuzzy", help="Also look for near duplicates (masked, edited, embedded)."
        ),
    ] = True,
    threshold: Annotated[
        float | None, typer.Option(help="Similarity at which a near duplicate is a finding.")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            help="TOML policy: [[allow]] provider, model glob; [[opaque]] batch glob, reason."
        ),
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Write the portable proof bundle to this file.")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 (not 3) when only near duplicates are found.")
    ] = False,
    db: Db = DEFAULT_DB_PATH,
    json: Json = False,
) -> None:
    """Prove or disprove that third-party outputs entered a checkpoint's lineage (exit 0 clean, 1 contaminated, 3 inconclusive or suspect).

    Example: ledger audit run7/ckpt-1000 --suspects outputs.jsonl --bundle audit-bundle.json
    """
    from ledger.audit import audit as run_audit
    from ledger.audit import build_bundle

    ledger = _open(db)
    with views.progress("verifying the log", ledger.entry_count(), enabled=not json) as advance:
        report = run_audit(ledger, checkpoint, weights=weights or (), suspects=suspects, fuzzy=fuzzy,
                           threshold=threshold, policy=policy, progress=advance)  # fmt: skip
    ledger.remember_audit(views.audit_summary(report))
    if bundle is not None:
        bundle.write_text(views.json_text(build_bundle(ledger, report)), encoding="utf-8")
    views.print_json(views.audit_json(report)) if json else views.show(views.audit_view(report))
    raise typer.Exit(1 if strict and report.verdict == "suspect" else _AUDIT_EXIT[report.verdict])


@app.command()
def lineage(
    checkpoint: Annotated[
        str, typer.Argument(metavar="CHECKPOINT", help="Checkpoint id or entry index.")
    ],
    format: Annotated[str, typer.Option("--format", help="tree | json | dot | mermaid")] = "tree",
    audit_: Annotated[
        bool,
        typer.Option(
            "--audit",
            help="Audit first and color tainted paths (red), clean (green), unverifiable (yellow).",
        ),
    ] = False,
    db: Db = DEFAULT_DB_PATH,
    json: Json = False,
) -> None:
    """Show what a checkpoint was built from: parents, batches, the calls they declare, teachers.

    Example: ledger lineage run7/ckpt-1000 --format mermaid
    """
    from ledger.audit import audit as run_audit
    from ledger.lineage import lineage as closure

    renderers = {
        "tree": views.lineage_tree,
        "dot": views.lineage_dot,
        "mermaid": views.lineage_mermaid,
        "json": None,
    }
    if format not in renderers:
        raise UsageError(f"--format {format!r}: expected one of {', '.join(renderers)}")
    ledger = _open(db)
    report = run_audit(ledger, checkpoint, fuzzy=False) if audit_ else None
    if report is None:
        with ledger.session(read_only=True) as conn:
            lin = closure(conn, checkpoint)
    else:
        lin = report.lineage
    if json or format == "json":
        views.print_json(views.lineage_json(lin))
    elif format == "tree":
        views.show(views.lineage_tree(lin, report))
    else:
        sys.stdout.write(
            views.lineage_dot(lin, report)
            if format == "dot"
            else views.lineage_mermaid(lin, report)
        )


@app.command("verify-bundle")
def verify_bundle(
    bundle: Annotated[
        Path,
        typer.Argument(
            metavar="BUNDLE", help="An audit bundle written by `ledger audit --bundle`."
        ),
    ],
    key: Annotated[
        str,
        typer.Option("--key", help="The ledger's verifier key (vkey string) or a file holding it."),
    ],
    records: Annotated[
        Path | None,
        typer.Option(
            "--records",
            help="Directory from `ledger export records`: recompute every lineage root.",
        ),
    ] = None,
    suspects: Annotated[
        Path | None,
        typer.Option(
            help="Your own suspects (JSONL or .txt) to check against the exported records."
        ),
    ] = None,
    json: Json = False,
) -> None:
    """Check an audit bundle offline (no ledger file needed); exit 1 if a check fails, 4 if the bundle or key is unusable.

    Example: ledger verify-bundle audit-bundle.json --key lab.vkey --records exported/ --suspects mine.jsonl
    """
    from ledger.bundle import BundleProblem, BundleReport, load_bundle, read_vkey
    from ledger.bundle import verify_bundle as check
    from ledger.errors import VerificationError

    vkey = read_vkey(key)
    if suspects is not None and records is None:
        views.warn("--suspects without --records checks your suspects only against the findings the bundle "
                   "carries, not the lineage's whole record set (ledger export records gives that)")  # fmt: skip
    try:
        report = check(load_bundle(bundle), vkey, records_dir=records, suspects=suspects)
    except VerificationError as exc:
        report = BundleReport(False, (BundleProblem(str(bundle), str(exc)),), None)
    views.print_json(views.bundle_report_json(report)) if json else views.show(
        views.bundle_report_view(report)
    )
    raise typer.Exit(0 if report.ok else 1)


@export_app.command("records")
def export_records(
    outdir: Annotated[
        Path, typer.Argument(metavar="OUTDIR", help="Directory to write records.parquet into.")
    ],
    checkpoint: Annotated[
        str | None,
        typer.Option("--checkpoint", help="Only this checkpoint's lineage (default: every batch)."),
    ] = None,
    db: Db = DEFAULT_DB_PATH,
    json: Json = False,
) -> None:
    """Write record leaves (hashes only, never content) as Parquet: columns batch, position, leaf.

    Example: ledger export records exported/ --checkpoint run7/ckpt-1000
    """
    from ledger.audit import export_records as export

    counts = export(_open(db), outdir, checkpoint)
    views.print_json(views.export_json(counts)) if json else views.show(views.export_view(counts))


def _option(keyword: str) -> str:
    """The command-line option for a keyword argument an OptionHintError names."""
    return {"requests_path": "--requests"}.get(keyword, "--" + keyword.replace("_", "-"))


_python_showwarning = warnings.showwarning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """The library's warnings become one `warning: ...` line on stderr (stdout stays the result)."""
    if issubclass(category, LedgerWarning):
        views.warn(str(message))
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def main() -> NoReturn:
    """Entry point: the one place where errors become one-line messages and exit codes."""
    # --verbose may follow any command (`ledger audit X --verbose`), so it is taken out here; the global
    # option of the same name only documents it in --help.
    verbose = "--verbose" in sys.argv[1:] or os.environ.get("LEDGER_VERBOSE") == "1"
    argv = [a for a in sys.argv[1:] if a != "--verbose"]
    views.note_lock_waits()
    warnings.showwarning = _show_warning
    try:
        code = app(args=argv, prog_name="ledger", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:
        sys.stdout.write((exc.ctx.get_help() if exc.ctx else str(exc)) + "\n")
        sys.exit(0)
    except click_exceptions.UsageError as exc:
        views.error(exc.format_message())
        sys.exit(2)
    except click_exceptions.ClickException as exc:
        views.error(exc.format_message())
        sys.exit(exc.exit_code if exc.exit_code else 2)
    except typer.Abort:
        views.error("aborted")
        sys.exit(130)
    except LedgerError as exc:
        views.error(
            exc.naming(_option(exc.keyword)) if isinstance(exc, OptionHintError) else str(exc)
        )
        if verbose:
            cause = exc.__cause__
            while cause is not None:
                views.error(f"  caused by {type(cause).__name__}: {cause}")
                cause = cause.__cause__
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        views.error("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - a bug or an unanticipated OS failure: still one line
        views.error(
            f"unexpected {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        )
        if verbose:
            import traceback

            traceback.print_exc()
        sys.exit(4)
    sys.exit(code if isinstance(code, int) else 0)
