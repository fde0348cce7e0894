# Re-export shim for the issue #12 move; removed once every importer uses the new rooms.
"""The lineage closure now lives in `ledger.spec.lineage` (pure) and `ledger.log.store.lineage` (its store)."""

from ledger.log.store.lineage import lineage as lineage
from ledger.log.store.lineage import resolve_checkpoint as resolve_checkpoint
from ledger.spec.lineage import EDGE_KINDS as EDGE_KINDS
from ledger.spec.lineage import NODE_KINDS as NODE_KINDS
from ledger.spec.lineage import Lineage as Lineage
from ledger.spec.lineage import LineageEdge as LineageEdge
from ledger.spec.lineage import LineageNode as LineageNode
from ledger.spec.lineage import call_node_id as call_node_id
from ledger.spec.lineage import lineage_json as lineage_json
