"""ledger: a distillation provenance ledger.

`Ledger` records external model calls, training batches and checkpoints into a signed, append-only
RFC 6962 log kept in DuckDB, and audits a checkpoint's lineage for third-party outputs.

`Ledger` is imported on first use, so that `ledger.bundle` (offline bundle verification) works
without DuckDB installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledger.errors import LedgerError

if TYPE_CHECKING:
    from ledger.ledger import Ledger

__all__ = ["Ledger", "LedgerError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Ledger":
        from ledger.ledger import Ledger

        return Ledger
    raise AttributeError(f"module 'ledger' has no attribute {name!r}")
