"""How a reconciliation is shown: per bucket, what the provider served against what was recorded.

Runs of matching buckets collapse into one line; differing rows are highlighted (red: the provider
served more than was recorded; magenta: recorded calls it never served; yellow: token counts differ).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ledger.views.console import fit, id_column
from ledger.wording import plural

__all__ = ["export_log_json", "export_log_view", "reconcile_json", "reconcile_view"]

_STATUS_STYLE = {
    "match": "green",
    "unrecorded": "bold red",
    "unserved": "bold magenta",
    "tokens": "yellow",
}
_STATUS_SAYS = {
    "match": "match",
    "unrecorded": "UNRECORDED",
    "unserved": "NEVER SERVED",
    "tokens": "TOKENS DIFFER",
}
_VERDICT_SAYS = {
    "match": ("green", "every bucket and receipt matches the recorded calls"),
    "mismatch": ("bold red", "the provider's records and the ledger disagree"),
    "incomplete": ("yellow", "nothing differs, but some recorded calls could not be placed"),
}
MIN_RUN = 4  # matching buckets in a row shown as one line from this many
MAX_CALLS = 10  # recorded calls named per differing row (all in --json)


def reconcile_json(result: Any) -> dict[str, Any]:
    from ledger.spec.reconcile import reconciliation_json

    return reconciliation_json(result)


def _time(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


def _width(start: int, end: int) -> str:
    span = end - start
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if span % size == 0:
            return f"{span // size}{unit}"
    return f"{span}s"


def _pair(served: int, recorded: int, differs: bool) -> Text:
    if served == recorded:
        return Text(f"{served:,}")
    return Text(f"{served:,} / {recorded:,}", style="bold" if differs else "")


def _cells_table(result: Any) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD, title="served by the provider / recorded", title_justify="left"
    )
    table.add_column("bucket (UTC)", no_wrap=True)
    table.add_column("model", overflow="fold")
    table.add_column("batch", no_wrap=True)
    table.add_column("requests", justify="right", no_wrap=True)
    table.add_column("input tokens", justify="right", no_wrap=True)
    table.add_column("output tokens", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    by_bucket: dict[int, list[Any]] = {}
    for cell in result.cells:
        by_bucket.setdefault(cell.bucket, []).append(cell)
    run: list[int] = []

    def flush() -> None:
        if len(run) >= MIN_RUN:
            first, last = result.buckets[run[0]], result.buckets[run[-1]]
            requests = sum(c.requests for i in run for c in by_bucket.get(i, []))
            table.add_row(
                Text(f"{_time(first.start)} … {_time(last.end)}", style="dim"),
                Text(f"{len(run):,} buckets", style="dim"),
                "",
                Text(f"{requests:,}", style="dim"),
                "",
                "",
                Text("match", style="green"),
            )
        else:
            for i in run:
                add(i)
        run.clear()

    def add(i: int) -> None:
        bucket = result.buckets[i]
        label = f"{_time(bucket.start)} +{_width(bucket.start, bucket.end)}"
        for n, cell in enumerate(by_bucket.get(i, [])):
            status = cell.status
            differs = status != "match"
            style = _STATUS_STYLE[status]
            table.add_row(
                label if n == 0 else "",
                cell.model or "(all models)",
                "-" if cell.batch is None else ("yes" if cell.batch else "no"),
                _pair(cell.served_requests, cell.requests, differs),
                _pair(cell.served_input, cell.input_tokens, differs),
                _pair(cell.served_output, cell.output_tokens, differs),
                Text(_STATUS_SAYS[status], style=style),
            )

    for i in range(len(result.buckets)):
        if all(c.status == "match" for c in by_bucket.get(i, [])):
            run.append(i)
            continue
        flush()
        add(i)
    flush()
    return table


def _calls_table(title: str, calls: Sequence[Any], more: int = 0) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title=Text(title, style="bold yellow"), title_justify="left")
    table.add_column("entry", justify="right", no_wrap=True)
    id_column(table, "external id", [str(c.external_id) for c in calls])
    table.add_column("model", overflow="fold")
    table.add_column("created (UTC)", no_wrap=True)
    for call in calls:
        created = "-" if call.created is None else _time(call.created)
        table.add_row(str(call.entry), str(call.external_id), str(call.model), created)
    if more:
        table.add_row("", f"... {more:,} more", "", "")
    return fit(table)


def reconcile_view(result: Any) -> RenderableType:
    """Verdict, the per-bucket table, then every difference with its calls, and what was not judged."""
    style, says = _VERDICT_SAYS[result.verdict]
    window = result.window
    span = (
        "no usage buckets"
        if window is None
        else f"{_time(window[0])} … {_time(window[1])} UTC, {plural(len(result.buckets), 'bucket')}"
    )
    parts: list[RenderableType] = [
        Text.assemble((result.verdict.upper(), style), f"  {says}"),
        Text(f"{result.provider}: {plural(result.calls, 'recorded call')}; usage {span}"),
    ]
    if result.buckets:
        parts.append(_cells_table(result))
    for d in result.differences:
        if not d.calls:
            continue
        shown = ", ".join(f"#{i} {e or '(no id)'}" for i, e in d.calls[:MAX_CALLS])
        more = f" and {len(d.calls) - MAX_CALLS:,} more" if len(d.calls) > MAX_CALLS else ""
        parts.append(
            Text(
                f"{_time(d.start)} {d.model or '(all models)'}: recorded calls {shown}{more}",
                style=_STATUS_STYLE[d.kind],
            )
        )
    if result.merged:
        parts.append(
            Text(
                f"summed over {', '.join(result.merged)} (the export's grouping the ledger does not record)",
                style="dim",
            )
        )
    for start, end in result.holes:
        parts.append(
            Text(f"the export has no bucket for {_time(start)} … {_time(end)}", style="yellow")
        )
    if result.unplaced:
        parts.append(
            _calls_table(
                "not placed (no provider `created` time, or between buckets)", result.unplaced
            )
        )
    if result.outside:
        shown = result.outside_examples
        parts.append(
            _calls_table(
                f"{plural(result.outside, 'call')} outside the export's window (not judged)",
                shown,
                result.outside - len(shown),
            )
        )
    receipts = result.receipts
    if receipts is not None:
        window_text = (
            "no window (receipts without `created`)"
            if receipts.window is None
            else f"window {_time(receipts.window[0])} … {_time(receipts.window[1])} UTC, "
            f"{plural(receipts.in_window, 'recorded call')} in it"
        )
        parts.append(Text(f"receipts: {plural(receipts.receipts, 'id')}; {window_text}"))
        if receipts.unrecorded:
            table = Table(
                box=box.SIMPLE_HEAD,
                title=Text("served by the provider, never recorded", style="bold red"),
                title_justify="left",
            )
            id_column(table, "response id", [r.id for r in receipts.unrecorded])
            table.add_column("where", overflow="fold")
            for r in receipts.unrecorded:
                table.add_row(r.id, r.source)
            parts.append(fit(table))
        if receipts.unreceipted:
            parts.append(_calls_table("recorded, missing from the receipts", receipts.unreceipted))
    return Group(*parts)


def export_log_json(export: Any) -> dict[str, Any]:
    return {"size": export.size, "root": export.root.hex(), "files": [str(f) for f in export.files]}


def export_log_view(export: Any) -> RenderableType:
    files = ", ".join(str(f) for f in export.files)
    return Text(
        f"wrote {plural(export.size, 'entry leaf', 'entry leaves')} (root {export.root.hex()}) to {files}"
    )
