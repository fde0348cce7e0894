"""The audit room: `run` (the `audit` orchestration), `exact` and `near` matching, `coverage`, `inputs`
(suspects and policy files), `report` (findings and their JSON).

Importing this package, `ledger.audit.inputs` or `ledger.audit.report` loads no DuckDB, so that the
offline bundle verifier can read suspects files with the audit's own reader.
"""
