"""Audit bundles: `build` writes them (from the ledger), `verify` checks them offline, `export` writes and
reads the record leaves a verifier recomputes lineage roots from.

Importing this package, `ledger.bundle.verify` or `ledger.bundle.export` loads no DuckDB: the offline
verifier runs where no ledger is. Only `ledger.bundle.build` (and writing an export) reads the store.
"""

# Re-export shim for the issue #12 move; removed once every importer uses the new rooms.
from ledger.audit.inputs import Suspect as Suspect
from ledger.audit.inputs import Suspects as Suspects
from ledger.audit.inputs import read_policy as read_policy
from ledger.audit.inputs import read_suspects as read_suspects
from ledger.bundle.verify import BUNDLE_FORMAT as BUNDLE_FORMAT
from ledger.bundle.verify import BundleProblem as BundleProblem
from ledger.bundle.verify import BundleReport as BundleReport
from ledger.bundle.verify import SuspectHit as SuspectHit
from ledger.bundle.verify import load_bundle as load_bundle
from ledger.bundle.verify import read_vkey as read_vkey
from ledger.bundle.verify import verify_bundle as verify_bundle
