"""How an audit is shown: the verdict, what it means, findings and coverage gaps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ledger.views.console import fit, id_column
from ledger.wording import plural

_VERDICT_SAYS = {
    "clean": "no recorded third-party output found in the lineage (disproven with respect to this ledger)",
    "contaminated": "third-party output entered the lineage (proven)",
    "suspect": "near duplicates of third-party output only",
    "inconclusive": "integrity failed or the lineage is incomplete: nothing can be proven or disproven",
}


_FINDING_STYLE = {"declared": "red", "exact": "red", "near": "yellow", "allowed": "green"}


def audit_json(report: Any) -> dict[str, Any]:
    from ledger.audit.report import report_json

    return report_json(report)


def _node_label(lin: Any, index: int | None) -> str:
    if index is None:
        return "-"
    node = lin.by_index().get(index)
    return f"{node.id} (#{index})" if node is not None else f"#{index}"


def _finding_place(lin: Any, finding: Any) -> str:
    """The batch (full id, entry index) and record a finding is about."""
    if finding.batch is None:
        return "-"
    record = "" if finding.record is None else f" record {finding.record}"
    batch_id = getattr(finding, "batch_id", None)
    if batch_id is None:
        return _node_label(lin, finding.batch) + record
    return f"{batch_id}\n#{finding.batch}{record}"


def _finding_source(finding: Any) -> tuple[tuple[int, int, str], str]:
    """A sort key and a label: findings are grouped by the call (or suspect, or teacher) they name."""
    if finding.call is not None:
        label = (
            f"call #{finding.call}  {finding.provider}/{finding.model}  purpose: {finding.purpose}"
        )
        external = getattr(finding, "external_id", None)
        return (0, finding.call, ""), label + (f"  id {external}" if external else "")
    if finding.suspect is not None:
        line = f"  line {finding.suspect_line}" if finding.suspect_line is not None else ""
        return (1, finding.suspect, ""), f"suspect #{finding.suspect}{line}"
    return (
        2,
        0,
        f"{finding.provider}:{finding.model}",
    ), f"teacher  {finding.provider}:{finding.model}"


def _findings_table(lin: Any, findings: Sequence[Any]) -> Table:
    """The findings of one call, suspect or teacher: where each is and what matched."""
    places = [_finding_place(lin, f) for f in findings]
    kinds = [f.type if f.basis is None else f"{f.type} ({f.basis})" for f in findings]
    table = Table(box=box.SIMPLE_HEAD)
    id_column(table, "type", kinds)
    id_column(table, "batch, record", places)
    table.add_column("segment", overflow="fold")
    table.add_column("path", overflow="fold")
    for f, kind, place in zip(findings, kinds, places):
        segment = "-" if f.segment is None else f.segment
        if f.similarity is not None:
            segment += f"\nsimilarity {f.similarity:.3f}"
        table.add_row(
            Text(kind, style=_FINDING_STYLE.get(f.type, "")), place, segment, " → ".join(f.path)
        )
    return fit(table)


def audit_view(report: Any, limit: int = 20) -> RenderableType:
    """Verdict first, then findings grouped by call with the path that carries them, then coverage."""
    parts: list[RenderableType] = [
        Text.assemble(
            (f"{report.verdict.upper()}", VERDICT_STYLE.get(report.verdict, "")),
            f"  checkpoint {report.checkpoint} (entry {report.checkpoint_index}): {_verdict_says(report)}",
        )
    ]
    parts.extend(_gaps_view(report))
    if report.problems:
        table = Table(
            box=box.SIMPLE_HEAD,
            title=Text("integrity problems", style="bold yellow"),
            title_justify="left",
        )
        table.add_column("entry", justify="right", no_wrap=True)
        table.add_column("problem", overflow="fold")
        for problem in report.problems[:50]:
            table.add_row("-" if problem.index is None else str(problem.index), problem.what)
        if len(report.problems) > 50:
            table.add_row("", f"... {len(report.problems) - 50} more")
        parts.append(table)
    groups: dict[tuple[int, int, str], tuple[str, list[Any]]] = {}
    for finding in report.findings:
        key, label = _finding_source(finding)
        groups.setdefault(key, (label, []))[1].append(finding)
    if groups:
        parts.append(Text(plural(len(report.findings), "finding"), style="bold"))
        for _, (label, findings) in sorted(groups.items()):
            parts.append(Text(label, style="bold"))
            parts.append(_findings_table(report.lineage, findings[:limit]))
            if len(findings) > limit:
                parts.append(Text(f"  ... {len(findings) - limit} more (all in --json)"))
    coverage = Table.grid(padding=(0, 2))
    for name, value in report.coverage.items():
        coverage.add_row(name.replace("_", " "), str(value))
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in report.timings.items())
    parts.append(Panel(coverage, title="coverage", box=box.ROUNDED, expand=False))
    parts.append(Text(f"timings: {timings}", style="dim"))
    parts.extend(Text(note, style="yellow") for note in report.notes)
    return Group(*parts)


def _verdict_says(report: Any) -> str:
    """Why the verdict is what it is; an inconclusive one says which rule made it so."""
    if report.verdict == "inconclusive" and not report.problems and report.uncovered:
        records = sum(g.without_text for g in report.gaps if g.opaque is None)
        batches = sum(1 for g in report.gaps if g.opaque is None)
        return (
            f"{plural(records, 'record')} in {plural(batches, 'lineage batch', 'lineage batches')} "
            f"{'carries' if records == 1 else 'carry'} no comparable text: nothing was compared for them, so nothing is disproven"
        )
    reconciled = getattr(report, "reconciliation", None)
    if (
        report.verdict == "inconclusive"
        and not report.problems
        and not report.uncovered
        and reconciled
    ):
        return (
            "the provider's own records disagree with the recorded calls (reasons below), so the call "
            "list may be incomplete and a clean proves nothing"
        )
    says = _VERDICT_SAYS.get(report.verdict, "")
    opaque = sum(1 for g in getattr(report, "gaps", ()) if g.opaque is not None)
    if opaque:
        says += (
            f"; {plural(opaque, 'batch', 'batches')} declared out of scope by the policy (below)"
        )
    return says


def _gaps_view(report: Any) -> list[RenderableType]:
    """Lineage batches holding records without comparable text; opaque ones with the policy's reason."""
    gaps = getattr(report, "gaps", ())
    if not gaps:
        return []
    table = Table(
        box=box.SIMPLE_HEAD,
        title=Text("records without comparable text", style="bold yellow"),
        title_justify="left",
    )
    table.add_column("entry", justify="right")
    id_column(table, "batch", [gap.batch_id for gap in gaps])
    table.add_column("without text", justify="right")
    table.add_column("of", justify="right")
    table.add_column("scope", overflow="fold")
    for gap in gaps:
        scope = (
            Text("not compared", style="yellow")
            if gap.opaque is None
            else Text(f"opaque: {gap.opaque}", style="dim")
        )
        table.add_row(str(gap.batch), gap.batch_id, str(gap.without_text), str(gap.records), scope)
    return [fit(table)]


VERDICT_STYLE = {
    "clean": "green",
    "contaminated": "bold red",
    "suspect": "yellow",
    "inconclusive": "yellow",
}


def audit_summary(report: Any) -> dict[str, Any]:
    """What `status` shows of the latest audit."""
    from ledger.spec.entries import now_rfc3339

    return {
        "verdict": report.verdict,
        "checkpoint": report.checkpoint,
        "size": getattr(report, "size", None),
        "findings": len(report.findings),
        "time": now_rfc3339(),
    }
