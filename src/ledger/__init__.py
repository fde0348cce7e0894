"""ledger: a distillation provenance ledger.

`Ledger` records external model calls, training batches and checkpoints into a signed, append-only
RFC 6962 log kept in DuckDB, and audits a checkpoint's lineage for third-party outputs.
"""

from __future__ import annotations

from ledger.errors import LedgerError
from ledger.ledger import Ledger

__all__ = ["Ledger", "LedgerError"]
__version__ = "0.1.0"
