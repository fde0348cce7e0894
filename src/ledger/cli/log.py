"""`ledger init`, `keys`, and the commands that read the log: `head`, `prove`, `consistency`, `log`,
`show`, `status`, `verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ledger import Ledger
from ledger.cli.app import (
    DEFAULT_DB_PATH,
    Db,
    Json,
    KeysDir,
    WitnessPolicyOpt,
    app,
    keys_app,
    open_ledger,
    read_witness_policy,
)
from ledger.log.heads import read_note_file
from ledger.log.signers import DEFAULT_RECORDER
from ledger.views import console
from ledger.views import log as log_views

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
        console.print_json(
            {**log_views.head_json(head), "db": str(db), "keys_dir": str(ledger.keys_dir),
             "recorder_key": {"name": recorder.name, "keyid": recorder.keyid}}
        )  # fmt: skip
    else:
        console.show(console.message(
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
    ledger = open_ledger(db, keys_dir)
    info = ledger.new_key(name, role)
    _render_key(ledger, info, json)


def _render_key(ledger: Ledger, info: Any, json: bool) -> None:
    if json:
        console.print_json(log_views.key_json(info, ledger.origin))
    else:
        console.show(log_views.keys_view([info], ledger.origin))


@keys_app.command("list")
def keys_list(db: Db = DEFAULT_DB_PATH, json: Json = False) -> None:
    """List every key the log has introduced, with its status and verifier key.

    Example: ledger keys list --json
    """
    ledger = open_ledger(db)
    infos = ledger.keys()
    if json:
        console.print_json([log_views.key_json(k, ledger.origin) for k in infos])
    else:
        console.show(log_views.keys_view(infos, ledger.origin))


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
    ledger = open_ledger(db, keys_dir)
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
    ledger = open_ledger(db, keys_dir)
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
    ledger = open_ledger(db)
    info = ledger.export_key(name)
    vkey = info.vkey(ledger.origin)
    if out is not None:
        out.write_text(vkey + "\n", encoding="utf-8")
    if json:
        console.print_json(log_views.key_json(info, ledger.origin))
    else:
        console.show(console.message(vkey))


# --- the log --------------------------------------------------------------------------------------


@app.command()
def head(
    db: Db = DEFAULT_DB_PATH,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the signed note text to this file.")
    ] = None,
    witness_policy: WitnessPolicyOpt = None,
    json: Json = False,
) -> None:
    """Print the latest signed tree head (a C2SP signed note, with the witness cosignatures stored for it).

    With --witness-policy, first submit it to every witness with a URL and store their cosignatures:
    exit 0 when the quorum is met, 1 when a witness proves the log forked or rolled back, 4 otherwise.

    Example: ledger head --witness-policy witnesses.policy --out head-2026-11-22.txt
    """
    ledger = open_ledger(db)
    if witness_policy is not None:
        tree_head = ledger.cosign_head(read_witness_policy(witness_policy)).head
    else:
        tree_head = ledger.head()
    if out is not None:
        out.write_text(tree_head.cosigned_note, encoding="utf-8")
    if json:
        console.print_json(log_views.head_json(tree_head))
    elif out is None:
        console.show(log_views.head_view(tree_head))
    else:
        console.note(f"wrote tree head of size {tree_head.size} to {out}")


@app.command()
def prove(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="REF", help="Entry index, batch/checkpoint id, or call external or custom id."
        ),
    ],
    db: Db = DEFAULT_DB_PATH,
    json: Json = False,
) -> None:
    """Print an inclusion proof of one entry against the latest tree head.

    Example: ledger prove run7/ckpt-1000 --json
    """
    proof = open_ledger(db).prove(ref)
    console.print_json(log_views.proof_json(proof)) if json else console.show(
        log_views.proof_view(proof)
    )


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
    proof = open_ledger(db).consistency(read_note_file(from_), str(from_))
    console.print_json(log_views.consistency_json(proof)) if json else console.show(
        log_views.consistency_view(proof)
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
    ledger = open_ledger(db)
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
        console.print_json([log_views.entry_json(e) for e in items])
    else:
        console.page(
            log_views.log_view(items, log_views.signer_names(ledger.keys())), rows=2 * len(items)
        )


@app.command()
def show(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="REF", help="Entry index, batch/checkpoint id, or call external or custom id."
        ),
    ],
    db: Db = DEFAULT_DB_PATH,
    json: Json = False,
) -> None:
    """Show one decoded entry with its signer and inclusion status.

    Example: ledger show 12
    """
    ledger = open_ledger(db)
    entry = ledger.entry(ref)
    if json:
        console.print_json(log_views.entry_json(entry))
    else:
        console.show(log_views.show_view(entry, ledger.prove(entry.index)))


@app.command()
def status(db: Db = DEFAULT_DB_PATH, json: Json = False) -> None:
    """A short dashboard: size, latest tree head, keys, counts by kind.

    Example: ledger status
    """
    document = open_ledger(db).status()
    console.print_json(document) if json else console.show(log_views.status_view(document))


@app.command()
def verify(
    db: Db = DEFAULT_DB_PATH,
    since: Annotated[
        Path | None,
        typer.Option("--since", help="A tree head published earlier: check the log extends it."),
    ] = None,
    witness_policy: WitnessPolicyOpt = None,
    json: Json = False,
) -> None:
    """Recompute every leaf, signature, tree node and root; exit 1 on any tampering.

    With --witness-policy, the stored latest tree head must also be signed by the policy's log key
    and cosigned by its quorum of witnesses (exit 1 if not).

    Example: ledger verify --since head-2026-11-01.txt
    """
    from ledger.log.verify import verify_ledger

    ledger = Ledger(
        db
    )  # not Ledger.open: a damaged meta table is for verify to report (exit 1), not to refuse
    since_note = read_note_file(since) if since is not None else None
    policy = read_witness_policy(witness_policy) if witness_policy is not None else None
    with console.progress("verifying", ledger.entry_count(), enabled=not json) as advance:
        report = verify_ledger(ledger, since_note, progress=advance, since_name=str(since))
    if policy is not None and (problem := ledger.witness_problem(policy)) is not None:
        report = report.with_problem(f"witnesses: {problem}")
    document = log_views.verify_json(report)
    console.print_json(document) if json else console.show(log_views.verify_view(report))
    raise typer.Exit(0 if report.ok else 1)
