"""How an offline bundle check and a records export are shown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ledger.views.console import fit, id_column
from ledger.wording import plural


def bundle_report_json(report: Any) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "verdict": report.verdict,
        "checkpoint": report.checkpoint,
        "size": report.size,
        "checked": dict(report.checked),
        "problems": [{"where": p.where, "what": p.what} for p in report.problems],
        "suspect_hits": [
            {"suspect": h.suspect, "suspect_line": h.line, "batch": h.batch, "batch_id": h.batch_id,
             "record": h.record, "segment": h.segment}
            for h in report.suspect_hits
        ],
    }  # fmt: skip


def _suspect_hits_view(hits: Sequence[Any], limit: int = 50) -> RenderableType:
    """Where the verifier's own suspects were found in the exported records."""
    title = Text(f"your suspects found in the lineage: {plural(len(hits), 'hit')}", style="bold")
    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left")
    shown = list(hits[:limit])
    id_column(table, "suspect", [f"#{h.suspect} line {h.line}" for h in shown])
    id_column(table, "batch", [f"{h.batch_id} #{h.batch}" for h in shown])
    id_column(table, "record", [str(h.record) for h in shown], justify="right")
    table.add_column("segment", overflow="fold")
    for h in shown:
        table.add_row(
            f"#{h.suspect}\nline {h.line}", f"{h.batch_id}\n#{h.batch}", str(h.record), h.segment
        )
    if len(hits) > limit:
        table.add_row("", f"... {len(hits) - limit} more (all in --json)", "", "")
    return fit(table)


def bundle_report_view(report: Any) -> RenderableType:
    checked = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in report.checked.items())
    hits = [_suspect_hits_view(report.suspect_hits)] if report.suspect_hits else []
    if report.ok:
        return Group(Text(
            f"bundle verifies: checkpoint {report.checkpoint} is {report.verdict} (tree size {report.size}; "
            f"checked {checked})",
            style="bold green",
        ), *hits)  # fmt: skip
    title = Text(
        f"BUNDLE DOES NOT VERIFY: {plural(len(report.problems), 'problem')}", style="bold red"
    )
    table = Table(box=box.SIMPLE_HEAD, title=title)
    table.add_column("where", overflow="fold")
    table.add_column("problem", overflow="fold")
    for problem in report.problems:
        table.add_row(problem.where, problem.what)
    return Group(table, *hits)


def export_json(counts: Any) -> dict[str, Any]:
    return {
        "batches": counts.batches,
        "records": counts.records,
        "files": [str(f) for f in counts.files],
    }


def export_view(counts: Any) -> RenderableType:
    files = ", ".join(str(f) for f in counts.files)
    leaves = plural(counts.records, "record leaf", "record leaves")
    return Text(
        f"exported {leaves} of {plural(counts.batches, 'batch', 'batches')} to {files}",
        style="green",
    )
