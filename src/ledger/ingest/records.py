# Re-export shim for the issue #12 move; removed once every importer uses the new rooms.
"""Readers for training-data files, now in `ledger.ingest.formats` (which format, which reader),
`ledger.ingest.reader` (the protocol, opening files), `ledger.ingest.pipeline` (reading and hashing
files) and `ledger.engine.kernel` (the record-hashing kernel)."""

from ledger.engine.kernel import FingerprintBlobs as FingerprintBlobs
from ledger.engine.kernel import RecordColumns as RecordColumns
from ledger.ingest.formats import RECORD_FORMATS as RECORD_FORMATS
from ledger.ingest.formats import data_files as data_files
from ledger.ingest.formats import detect_format as detect_format
from ledger.ingest.pipeline import (
    iter_fingerprinted_record_hashes as iter_fingerprinted_record_hashes,
)
from ledger.ingest.pipeline import iter_record_columns as iter_record_columns
from ledger.ingest.pipeline import iter_record_hashes as iter_record_hashes
from ledger.ingest.pipeline import iter_records as iter_records
from ledger.ingest.reader import file_sha256 as file_sha256

__all__ = [
    "RECORD_FORMATS",
    "FingerprintBlobs",
    "RecordColumns",
    "data_files",
    "detect_format",
    "file_sha256",
    "iter_fingerprinted_record_hashes",
    "iter_record_columns",
    "iter_record_hashes",
    "iter_records",
]
