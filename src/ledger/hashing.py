# Re-export shim for the issue #12 move; removed once every importer uses the new rooms.
"""Old home of canonical JSON, normalization, segments, record digests and response shapes.

Now: ``ledger.spec.digest`` (sha256), ``ledger.spec.jcs`` (canonical JSON, parsing),
``ledger.spec.text`` (normalize, segments, call outputs), ``ledger.spec.leaves`` (record digests,
leaves, bulk columns, request/response digests), ``ledger.providers.openai`` (response shapes).
"""

from ledger.providers.openai import response_texts as response_texts
from ledger.providers.openai import stream_texts as stream_texts
from ledger.spec.digest import sha256 as sha256
from ledger.spec.digest import sha256_hex as sha256_hex
from ledger.spec.jcs import HashInputError as HashInputError
from ledger.spec.jcs import canonical_json as canonical_json
from ledger.spec.jcs import format_number as format_number
from ledger.spec.jcs import parse_json_line as parse_json_line
from ledger.spec.jcs import parse_json_lines as parse_json_lines
from ledger.spec.leaves import LeafGroup as LeafGroup
from ledger.spec.leaves import RecordHash as RecordHash
from ledger.spec.leaves import RecordHashColumns as RecordHashColumns
from ledger.spec.leaves import hash_record as hash_record
from ledger.spec.leaves import hash_record_columns as hash_record_columns
from ledger.spec.leaves import hash_records as hash_records
from ledger.spec.leaves import record_digest as record_digest
from ledger.spec.leaves import record_leaf as record_leaf
from ledger.spec.leaves import record_leaf_groups as record_leaf_groups
from ledger.spec.leaves import record_leaf_hashes as record_leaf_hashes
from ledger.spec.leaves import request_response_digest as request_response_digest
from ledger.spec.text import MIN_SEGMENT_CHARS as MIN_SEGMENT_CHARS
from ledger.spec.text import call_outputs as call_outputs
from ledger.spec.text import normalize as normalize
from ledger.spec.text import record_segments as record_segments
from ledger.spec.text import record_texts as record_texts
from ledger.spec.text import segment_hash as segment_hash
from ledger.spec.text import text_segments as text_segments
