"""What an outside verifier recomputes: pure rules and formats, no DuckDB, no I/O (docs/architecture.md).

One module per fixed format (`jcs`, `text`, `leaves`, `merkle`, `fingerprint`, `keys`, `envelope`,
`note`, `entries`) and each rule once (`keyring`, `lineage`, `rules`, `problems`).
"""
