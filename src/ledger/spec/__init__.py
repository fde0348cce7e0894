"""What an outside verifier recomputes: pure rules and formats, no DuckDB, no I/O (DESIGN.md "Architecture").

Modules move here one concern at a time (issue #12); `rules` (verdicts, coverage, policy) is the first.
"""
