"""How recording results are shown: one call, an import, a batch."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ledger.views.console import fit, id_column
from ledger.wording import plural


def call_result_json(result: Any) -> dict[str, Any]:
    return {"index": result.index, "external_id": result.external_id, "duplicate": result.duplicate}


def call_result_view(result: Any) -> RenderableType:
    if result.duplicate:
        return Text(
            f"already recorded: call {result.external_id} is entry {result.index}", style="yellow"
        )
    return Text(
        f"recorded call {result.external_id or ''} as entry {result.index}".replace("  ", " "),
        style="green",
    )


def import_json(report: Any) -> dict[str, Any]:
    return {
        "added": report.added,
        "duplicates": report.duplicates,
        "failed": report.failed,
        "failed_examples": list(report.failed_examples),
        "without_request": report.without_request,
        "without_request_examples": list(report.without_request_examples),
    }


def import_view(report: Any) -> RenderableType:
    lines = [Text(f"imported {plural(report.added, 'call')}", style="green")]
    if report.duplicates:
        lines.append(Text(f"{report.duplicates} already recorded (skipped)", style="yellow"))
    if report.failed:
        calls = "a call" if report.failed == 1 else "calls"
        lines.append(
            Text(f"{plural(report.failed, 'failed line')} not recorded as {calls}", style="yellow")
        )
        lines.extend(Text(f"  {example}") for example in report.failed_examples)
    if report.without_request:
        lines.append(
            Text(
                f"{plural(report.without_request, 'call')} with no line in the requests file "
                "(recorded with request null)",
                style="yellow",
            )
        )
        lines.extend(Text(f"  {where}") for where in report.without_request_examples)
    if not report.added and not report.failed and report.duplicates:
        lines.append(Text("nothing new: every call in the file was already in the ledger"))
    return Group(*lines)


def batch_result_json(result: Any) -> dict[str, Any]:
    return {
        "already_recorded": result.already_recorded,
        "batches": [
            {
                "index": b.index,
                "id": b.id,
                "count": b.count,
                "records_root": b.records_root,
                "records_without_text": b.without_text,
            }
            for b in result.entries
        ],
    }


def batch_result_view(result: Any) -> RenderableType:
    table = Table(
        box=box.SIMPLE_HEAD,
        title="already recorded (nothing appended)" if result.already_recorded else None,
    )
    id_column(table, "entry", [str(b.index) for b in result.entries])
    id_column(table, "batch", [b.id for b in result.entries])
    id_column(table, "records", [str(b.count) for b in result.entries])
    table.add_column("records root", overflow="fold")
    for b in result.entries:
        table.add_row(
            str(b.index),
            b.id,
            str(b.count),
            b.records_root or Text("dataset (the batches below)", style="dim"),
        )
    bare = [b for b in result.entries if b.without_text]
    if not bare:
        return fit(table)
    records = sum(b.without_text or 0 for b in bare)
    warning = Text(
        f"{plural(records, 'record')} in {plural(len(bare), 'batch', 'batches')} "
        f"{'carries' if records == 1 else 'carry'} no comparable text "
        "(no segment): an audit cannot compare them and says inconclusive unless a policy's [[opaque]] "
        "table declares the batch out of scope",
        style="yellow",
    )
    return Group(fit(table), warning)


def spool_json(report: Any) -> dict[str, Any]:
    return {
        "batches": report.batches,
        "checkpoints": report.checkpoints,
        "skipped": report.skipped,
        "waiting": list(report.waiting),
        "files": report.files,
        "records": report.records,
    }


def spool_view(report: Any) -> RenderableType:
    lines = [
        Text(
            f"recorded {plural(report.batches, 'batch', 'batches')} and "
            f"{plural(report.checkpoints, 'checkpoint')} from {plural(report.files, 'spool file')}",
            style="green",
        )
    ]
    if report.skipped:
        lines.append(Text(f"{report.skipped} already recorded (skipped)", style="yellow"))
    if report.waiting:
        lines.append(
            Text(
                f"{plural(len(report.waiting), 'checkpoint')} waiting for the parts of other ranks: "
                + ", ".join(report.waiting[:5]),
                style="yellow",
            )
        )
    return Group(*lines)
