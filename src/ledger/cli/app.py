"""The `ledger` command tree: the Typer apps, the options every command shares, and opening a ledger."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ledger import Ledger
from ledger.ledger import DEFAULT_DB
from ledger.views import console

if TYPE_CHECKING:
    from ledger.spec.witness_policy import WitnessPolicy

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
WitnessPolicyOpt = Annotated[
    Path | None,
    typer.Option(
        "--witness-policy",
        envvar="LEDGER_WITNESS_POLICY",
        metavar="FILE",
        help="C2SP tlog-policy file (log, witness NAME VKEY [URL], group, quorum).",
    ),
]
DEFAULT_DB_PATH = Path(DEFAULT_DB)
# The provider's own records (`reconcile`, `audit`).
Usage = Annotated[
    list[Path] | None,
    typer.Option(
        "--usage",
        metavar="FILE",
        help="Usage API pages (GET /v1/organization/usage/completions), repeatable.",
    ),
]
Receipts = Annotated[
    list[Path] | None,
    typer.Option(
        "--receipts",
        metavar="FILE",
        help='Response ids the provider served: JSONL of {"id": ...} or stored-completions pages; repeatable.',
    ),
]

# Every LEDGER_* variable the code reads, one line each (tests/test_legible.py fails when one is missing).
ENVIRONMENT = """\b
Environment variables:
  LEDGER_DB            ledger file, as --db (default: ./ledger.duckdb)
  LEDGER_KEYS_DIR      key directory, as --keys-dir (default: <db stem>.keys)
  LEDGER_KEY           recorder key, as --key (a PEM path or a key name)
  LEDGER_PASSPHRASE    passphrase that opens and encrypts key files
  LEDGER_LOCK_TIMEOUT  seconds to wait for a busy ledger file (default: 30)
  LEDGER_WITNESS_POLICY  witness policy file, as --witness-policy
  LEDGER_WITNESS_TIMEOUT seconds to wait for each witness request (default: 5)
  LEDGER_VERBOSE       1: as --verbose
"""


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.show(console.message(f"ledger {version('ledger')}"))
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


def read_witness_policy(path: Path) -> WitnessPolicy:
    """The C2SP tlog-policy file at `path`; any error is one `FILE:LINE: what` line (exit 4)."""
    from ledger.errors import InputError
    from ledger.spec.witness_policy import parse_witness_policy

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such witness policy file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the witness policy: {exc}") from None
    return parse_witness_policy(text, str(path))


def open_ledger(db: Path, keys_dir: Path | None = None, key: str | None = None) -> Ledger:
    return Ledger.open(db, keys_dir=keys_dir, key=key)
