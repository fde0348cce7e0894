"""Audit bundles: `build` writes them (from the ledger), `verify` checks them offline, `export` writes and
reads the record leaves a verifier recomputes lineage roots from.

Importing this package, `ledger.bundle.verify` or `ledger.bundle.export` loads no DuckDB: the offline
verifier runs where no ledger is. Only `ledger.bundle.build` (and writing an export) reads the store.
"""
