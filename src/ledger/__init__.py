"""ledger: a distillation provenance ledger."""

from __future__ import annotations

from ledger.errors import LedgerError

__all__ = ["LedgerError"]
__version__ = "0.1.0"
