"""`ledger reconcile` and `export log`: completeness against the provider's own records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.app import (
    DEFAULT_DB_PATH,
    Db,
    Json,
    Receipts,
    Usage,
    app,
    export_app,
    open_ledger,
)
from ledger.views import console
from ledger.views import reconcile as reconcile_views

_RECONCILE_EXIT = {"match": 0, "mismatch": 1, "incomplete": 3}

Provider = Annotated[str, typer.Option("--provider", help="Whose calls to reconcile.")]


@app.command()
def reconcile(
    usage: Usage = None,
    receipts: Receipts = None,
    provider: Provider = "openai",
    db: Db = DEFAULT_DB_PATH,
    json: Json = False,
) -> None:
    """Reconcile recorded calls with the provider's usage and receipts (exit 0 match, 1 mismatch, 3 calls not placed).

    Example: ledger reconcile --usage usage-2026-01.json --receipts stored.jsonl
    """
    from ledger.audit.reconcile import reconcile_ledger

    result = reconcile_ledger(
        open_ledger(db), usage=usage or (), receipts=receipts or (), provider=provider
    )
    console.print_json(reconcile_views.reconcile_json(result)) if json else console.show(
        reconcile_views.reconcile_view(result)
    )
    raise typer.Exit(_RECONCILE_EXIT[result.verdict])


@export_app.command("log")
def export_log(
    outdir: Annotated[
        Path,
        typer.Argument(metavar="OUTDIR", help="Directory to write log.parquet and log.json into."),
    ],
    db: Db = DEFAULT_DB_PATH,
    json: Json = False,
) -> None:
    """Write every entry's leaf up to the tree head as Parquet (index, leaf) for the provider's own check.

    Example: ledger export log for-provider/ && ledger verify-bundle b.json --key lab.vkey --log for-provider/ --usage u.json
    """
    from ledger.bundle.log_export import export_log as export

    written = export(open_ledger(db), outdir)
    console.print_json(reconcile_views.export_log_json(written)) if json else console.show(
        reconcile_views.export_log_view(written)
    )
