"""`ledger reconcile` and `audit --usage/--receipts`: the ledger's calls against the provider's records.

Reads the usage pages and receipts (`ingest.usage`), the provider's recorded calls (`log.store.reconcile`,
up to the latest tree head), and applies `spec.reconcile`. The offline verifier applies the same rules to
an exported log (`ledger.bundle.log_export`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ledger.errors import UsageError
from ledger.ingest.usage import read_receipts, read_usage
from ledger.log import store
from ledger.log.store import reconcile as queries
from ledger.spec.reconcile import Reconciliation, check_buckets, reconcile

__all__ = ["reconcile_ledger"]


class LedgerFile(Protocol):
    """What reconciliation needs of a ledger: where its file is."""

    @property
    def path(self) -> Path: ...


def reconcile_ledger(
    ledger: LedgerFile,
    *,
    usage: Sequence[Path] = (),
    receipts: Sequence[Path] = (),
    provider: str = "openai",
    size: int | None = None,
) -> Reconciliation:
    """Reconcile the ledger's calls of `provider` (entries below `size`, default: the tree head's size)
    with usage pages and receipts. Unreadable files raise InputError before the ledger is opened."""
    if not usage and not receipts:
        raise UsageError("reconcile needs --usage or --receipts files (or both)")
    buckets = check_buckets(read_usage(list(usage))) if usage else []
    served = read_receipts(list(receipts)) if receipts else None
    with store.session(ledger.path, read_only=True) as conn:
        if size is None:
            size = store.head(conn).size
        calls = queries.recorded_calls(conn, provider, size)
    return reconcile(provider, buckets, calls, served)
