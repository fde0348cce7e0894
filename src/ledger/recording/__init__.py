"""Recording: training batches, external calls and model checkpoints, hashed first, then appended.

Each recorder builds entry bodies and hands them to the log's append (`ledger.log.append.LogWriter`);
the queries it needs inside that transaction live in `ledger.log.store.recording`.
"""

from __future__ import annotations

from ledger.recording.batches import hash_batches, record_batch, record_batches
from ledger.recording.calls import import_calls, record_call
from ledger.recording.checkpoints import record_checkpoint
from ledger.recording.refs import resolve_calls
from ledger.recording.results import (
    BatchResult,
    CallResult,
    ImportReport,
    Progress,
    RecordedBatch,
    RecordedCheckpoint,
)
from ledger.recording.spool import SpoolReport, record_spool

__all__ = [
    "BatchResult",
    "CallResult",
    "ImportReport",
    "Progress",
    "RecordedBatch",
    "RecordedCheckpoint",
    "SpoolReport",
    "hash_batches",
    "import_calls",
    "record_batch",
    "record_batches",
    "record_call",
    "record_checkpoint",
    "record_spool",
    "resolve_calls",
]
