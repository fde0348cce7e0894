# Re-export shim for the issue #12 move; removed once every importer uses the new rooms.
"""`ledger verify` moved to `ledger.log.verify` (checks by what they check; SQL in `ledger.log.store.verify`)."""

from ledger.log.verify import MAX_PROBLEMS as MAX_PROBLEMS
from ledger.log.verify import Problem as Problem
from ledger.log.verify import VerifyReport as VerifyReport
from ledger.log.verify import check_record_set as check_record_set
from ledger.log.verify import record_leaves as record_leaves
from ledger.log.verify import verify_ledger as verify_ledger

__all__ = [
    "MAX_PROBLEMS",
    "Problem",
    "VerifyReport",
    "check_record_set",
    "record_leaves",
    "verify_ledger",
]
