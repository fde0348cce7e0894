# Re-export shim for the issue #12 move; removed once every importer uses the new rooms.
"""Old home of keys, key files, DSSE envelopes and signed-note tree heads.

Now: ``ledger.spec.keys`` (PublicKey, SigningKey), ``ledger.spec.envelope`` (DSSE),
``ledger.spec.note`` (signed notes, tree heads, vkeys), ``ledger.log.keyfiles`` (key file I/O).
"""

from ledger.log.keyfiles import PASSPHRASE_ENV as PASSPHRASE_ENV
from ledger.log.keyfiles import load_key_file as load_key_file
from ledger.log.keyfiles import write_key_file as write_key_file
from ledger.spec.envelope import PAYLOAD_TYPE as PAYLOAD_TYPE
from ledger.spec.envelope import Envelope as Envelope
from ledger.spec.envelope import format_envelope as format_envelope
from ledger.spec.envelope import pae as pae
from ledger.spec.envelope import parse_envelope as parse_envelope
from ledger.spec.envelope import sign_entry as sign_entry
from ledger.spec.envelope import verify_envelope as verify_envelope
from ledger.spec.keys import ED25519_PUBLIC_KEY_SIZE as ED25519_PUBLIC_KEY_SIZE
from ledger.spec.keys import ED25519_SIGNATURE_SIZE as ED25519_SIGNATURE_SIZE
from ledger.spec.keys import PublicKey as PublicKey
from ledger.spec.keys import SigningKey as SigningKey
from ledger.spec.note import MAX_NOTE_SIGNATURES as MAX_NOTE_SIGNATURES
from ledger.spec.note import MAX_TREE_SIZE as MAX_TREE_SIZE
from ledger.spec.note import NOTE_SIGNATURE_TYPE_ED25519 as NOTE_SIGNATURE_TYPE_ED25519
from ledger.spec.note import TreeHead as TreeHead
from ledger.spec.note import format_tree_head as format_tree_head
from ledger.spec.note import is_valid_key_name as is_valid_key_name
from ledger.spec.note import note_key_id as note_key_id
from ledger.spec.note import open_signed_note as open_signed_note
from ledger.spec.note import parse_tree_head as parse_tree_head
from ledger.spec.note import parse_vkey as parse_vkey
from ledger.spec.note import sign_note as sign_note
from ledger.spec.note import sign_tree_head as sign_tree_head
from ledger.spec.note import verify_note as verify_note
from ledger.spec.note import verify_tree_head as verify_tree_head
from ledger.spec.note import vkey as vkey
