"""The audit room: `run` (the `audit` orchestration), `exact` and `near` matching, `coverage`, `inputs`
(suspects and policy files), `report` (findings and their JSON).

Importing this package, `ledger.audit.inputs` or `ledger.audit.report` loads no DuckDB, so that the
offline bundle verifier can read suspects files with the audit's own reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Re-export shim for the issue #12 move; removed once every importer uses the new rooms. The names
# load on first use (PEP 562), so that this package stays importable without DuckDB.
if TYPE_CHECKING:
    from ledger.audit.report import AuditReport as AuditReport
    from ledger.audit.report import Finding as Finding
    from ledger.audit.report import finding_json as finding_json
    from ledger.audit.report import report_json as report_json
    from ledger.audit.run import audit as audit
    from ledger.bundle.build import build_bundle as build_bundle
    from ledger.bundle.export import ExportCounts as ExportCounts
    from ledger.bundle.export import export_records as export_records

_REPORT = frozenset({"AuditReport", "Finding", "finding_json", "report_json"})
_EXPORT = frozenset({"ExportCounts", "export_records"})


def __getattr__(name: str) -> Any:
    if name in _REPORT:
        from ledger.audit import report

        return getattr(report, name)
    if name == "audit":
        from ledger.audit import run

        return run.audit
    if name == "build_bundle":
        from ledger.bundle import build

        return build.build_bundle
    if name in _EXPORT:
        from ledger.bundle import export

        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
