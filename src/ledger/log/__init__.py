"""The transparency log kept in DuckDB: `store/` holds every SQL statement and the only `duckdb` import.

This package imports nothing on its own, so `import ledger.log.x` never loads DuckDB unless `x` needs it.
"""
