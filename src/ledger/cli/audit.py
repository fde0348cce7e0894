"""`ledger audit`, `lineage`, `verify-bundle` and `export records`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.app import (
    DEFAULT_DB_PATH,
    Db,
    Json,
    Receipts,
    Usage,
    WitnessPolicyOpt,
    app,
    export_app,
    open_ledger,
    read_witness_policy,
)
from ledger.errors import UsageError
from ledger.views import audit as audit_views
from ledger.views import bundle as bundle_views
from ledger.views import console
from ledger.views import lineage as lineage_views

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
    usage: Usage = None,
    receipts: Receipts = None,
    provider: Annotated[
        str, typer.Option("--provider", help="Whose calls --usage/--receipts reconcile.")
    ] = "openai",
    witness_policy: WitnessPolicyOpt = None,
    db: Db = DEFAULT_DB_PATH,
    json: Json = False,
) -> None:
    """Prove or disprove that third-party outputs entered a checkpoint's lineage (exit 0 clean, 1 contaminated, 3 inconclusive or suspect).

    With --bundle and --witness-policy, the latest tree head is first cosigned by the policy's witness
    quorum (as `ledger head --witness-policy`), and the bundle carries that cosigned head.

    Example: ledger audit run7/ckpt-1000 --suspects outputs.jsonl --bundle audit-bundle.json
    """
    from ledger.audit.run import audit as run_audit
    from ledger.bundle.build import build_bundle

    ledger = open_ledger(db)
    witnesses = read_witness_policy(witness_policy) if bundle and witness_policy else None
    # a fork, a rollback or a missing quorum stops the command before the audit's work
    cosigned = ledger.cosign_head(witnesses).head if witnesses is not None else None
    with console.progress("verifying the log", ledger.entry_count(), enabled=not json) as advance:
        report = run_audit(ledger, checkpoint, weights=weights or (), suspects=suspects, fuzzy=fuzzy,
                           threshold=threshold, policy=policy, progress=advance, usage=usage or (),
                           receipts=receipts or (), provider=provider)  # fmt: skip
    ledger.remember_audit(audit_views.audit_summary(report))
    if bundle is not None:
        cosign = None
        if witnesses is not None:
            quorum = witnesses
            cosign = lambda: ledger.cosign_head(quorum).head  # noqa: E731
        document = build_bundle(ledger, report, cosign, cosigned)
        bundle.write_text(console.json_text(document), encoding="utf-8")
    console.print_json(audit_views.audit_json(report)) if json else console.show(
        audit_views.audit_view(report)
    )
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
    from ledger.audit.run import audit as run_audit
    from ledger.log.store.lineage import lineage as closure

    renderers = {
        "tree": lineage_views.lineage_tree,
        "dot": lineage_views.lineage_dot,
        "mermaid": lineage_views.lineage_mermaid,
        "json": None,
    }
    if format not in renderers:
        raise UsageError(f"--format {format!r}: expected one of {', '.join(renderers)}")
    ledger = open_ledger(db)
    report = run_audit(ledger, checkpoint, fuzzy=False) if audit_ else None
    if report is None:
        with ledger.session(read_only=True) as conn:
            lin = closure(conn, checkpoint)
    else:
        lin = report.lineage
    if json or format == "json":
        console.print_json(lineage_views.lineage_json(lin))
    elif format == "tree":
        console.show(lineage_views.lineage_tree(lin, report))
    else:
        sys.stdout.write(
            lineage_views.lineage_dot(lin, report)
            if format == "dot"
            else lineage_views.lineage_mermaid(lin, report)
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
        str | None,
        typer.Option(
            "--key",
            help="The ledger's verifier key (vkey string) or a file holding it (default: the "
            "--witness-policy's log key).",
        ),
    ] = None,
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
    log: Annotated[
        Path | None,
        typer.Option(
            "--log",
            help="Directory from `ledger export log`: recompute the tree head from every leaf.",
        ),
    ] = None,
    usage: Usage = None,
    witness_policy: Annotated[
        Path | None,
        typer.Option(
            "--witness-policy",
            metavar="FILE",
            help="C2SP tlog-policy file: the tree head must carry its witness quorum's cosignatures.",
        ),
    ] = None,
    json: Json = False,
) -> None:
    """Check an audit bundle offline (no ledger file needed); exit 1 if a check fails, 4 if the bundle or key is unusable.

    Example: ledger verify-bundle audit-bundle.json --key lab.vkey --records exported/ --suspects mine.jsonl
    """
    from ledger.bundle.verify import BundleReport, load_bundle, policy_vkey, read_vkey
    from ledger.bundle.verify import verify_bundle as check
    from ledger.errors import VerificationError
    from ledger.spec.problems import Problem

    if key is None and witness_policy is None:
        raise UsageError("pass --key (the ledger's verifier key) or --witness-policy")
    vkey = read_vkey(key) if key is not None else None
    policy = read_witness_policy(witness_policy) if witness_policy is not None else None
    document = load_bundle(bundle)
    if vkey is None:
        assert policy is not None
        vkey = policy_vkey(document, policy)
    if usage and log is None:
        raise UsageError("--usage needs --log (the exported log whose calls it reconciles)")
    if suspects is not None and records is None:
        console.warn("--suspects without --records checks your suspects only against the findings the bundle "
                   "carries, not the lineage's whole record set (ledger export records gives that)")  # fmt: skip
    try:
        report = check(document, vkey, records_dir=records, suspects=suspects,
                       witness_policy=policy, log_dir=log, usage=usage or ())  # fmt: skip
    except VerificationError as exc:
        report = BundleReport(False, (Problem.at(str(bundle), str(exc)),), None)
    console.print_json(bundle_views.bundle_report_json(report)) if json else console.show(
        bundle_views.bundle_report_view(report)
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
    from ledger.bundle.export import export_records as export

    counts = export(open_ledger(db), outdir, checkpoint)
    console.print_json(bundle_views.export_json(counts)) if json else console.show(
        bundle_views.export_view(counts)
    )
