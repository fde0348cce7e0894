"""The `ledger` command: parses arguments, calls the library, renders through `views`. No logic of its own.

`app` holds the command tree; `log`, `record`, `audit` and `witness` register their commands on it
(imported here in the order `--help` lists them); `main` is the one place where errors become messages and exit codes."""

from __future__ import annotations

import os
import sys
import warnings
from typing import NoReturn, TextIO

import typer

from ledger.cli.app import app
from ledger.errors import LedgerError, LedgerWarning, OptionHintError
from ledger.views import console

try:  # current typer carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions  # type: ignore[no-redef,import-not-found,unused-ignore]

# The order `--help` lists the commands in: each module registers its commands on `app` as it loads.
# isort: off
from ledger.cli import log as _log_commands  # noqa: F401
from ledger.cli import record as _record_commands  # noqa: F401
from ledger.cli import audit as _audit_commands  # noqa: F401
from ledger.cli import witness as _witness_commands  # noqa: F401
# isort: on

__all__ = ["app", "main"]


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
        console.warn(str(message))
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def main() -> NoReturn:
    """Entry point: the one place where errors become one-line messages and exit codes."""
    # --verbose may follow any command (`ledger audit X --verbose`), so it is taken out here; the global
    # option of the same name only documents it in --help.
    verbose = "--verbose" in sys.argv[1:] or os.environ.get("LEDGER_VERBOSE") == "1"
    argv = [a for a in sys.argv[1:] if a != "--verbose"]
    console.note_lock_waits()
    warnings.showwarning = _show_warning
    try:
        code = app(args=argv, prog_name="ledger", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:
        sys.stdout.write((exc.ctx.get_help() if exc.ctx else str(exc)) + "\n")
        sys.exit(0)
    except click_exceptions.UsageError as exc:
        console.error(exc.format_message())
        sys.exit(2)
    except click_exceptions.ClickException as exc:
        console.error(exc.format_message())
        sys.exit(exc.exit_code if exc.exit_code else 2)
    except typer.Abort:
        console.error("aborted")
        sys.exit(130)
    except LedgerError as exc:
        console.error(
            exc.naming(_option(exc.keyword)) if isinstance(exc, OptionHintError) else str(exc)
        )
        if verbose:
            cause = exc.__cause__
            while cause is not None:
                console.error(f"  caused by {type(cause).__name__}: {cause}")
                cause = cause.__cause__
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.error("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - a bug or an unanticipated OS failure: still one line
        console.error(
            f"unexpected {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        )
        if verbose:
            import traceback

            traceback.print_exc()
        sys.exit(4)
    sys.exit(code if isinstance(code, int) else 0)
