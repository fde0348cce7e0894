"""Rendering: rich renderables for people and JSON-ready dicts for machines. The only module that prints."""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from ledger.ledger import ConsistencyProof, Entry, InclusionProof, KeyInfo, TreeHeadInfo

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def print_json(document: Any) -> None:
    """One JSON document on stdout, nothing else (stable key order for diffs)."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def show(renderable: RenderableType) -> None:
    out.print(renderable)


def page(renderable: RenderableType, rows: int) -> None:
    """Long output goes through a pager on a terminal (as `git log` does); piped output is printed whole."""
    if out.is_terminal and rows + 4 > out.height:
        with out.pager(styles=True):
            out.print(renderable)
    else:
        out.print(renderable)


def error(message: str) -> None:
    """One line whatever the message holds (a parser's or DuckDB's text may carry newlines)."""
    err.print(Text("error: " + " ".join(message.split())), highlight=False)


def warn(message: str) -> None:
    err.print(Text(f"warning: {message}", style="yellow"), highlight=False)


def note(message: str) -> None:
    """A line for people, on stderr so stdout stays the result."""
    err.print(Text(message), highlight=False)


class _FirstNotice(logging.Handler):
    """Shows the first record this process logs as a note; later ones (another open, a retry) are not news."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.pid = os.getpid()  # a forked worker inherits the handler, not the right to speak
        self.said = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.said and record.process == self.pid:
            self.said = True
            note(record.getMessage())


def note_lock_waits() -> None:
    """Say once on stderr when the command waits for another process's lock (the store logs each wait)."""
    logger = logging.getLogger("ledger.store")
    for handler in [h for h in logger.handlers if isinstance(h, _FirstNotice)]:
        logger.removeHandler(handler)  # one per command, also when main() runs again in one process
    logger.addHandler(_FirstNotice())
    logger.setLevel(logging.INFO)


@contextmanager
def progress(description: str, total: int | None, *, enabled: bool, unit: str = "items") -> Iterator[Callable[[int], None]]:
    """A rich progress bar on a terminal; a no-op callback when piped or with --json."""
    if not enabled or not err.is_terminal:
        yield lambda advance: None
        return
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn()]
    columns.append(DownloadColumn() if unit == "bytes" else MofNCompleteColumn())
    columns.append(TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda advance: bar.advance(task, advance)


# --- tree heads, proofs ---------------------------------------------------------------------------


def head_json(head: TreeHeadInfo) -> dict[str, Any]:
    return {"origin": head.origin, "size": head.size, "root": head.root.hex(), "note": head.note}


def head_view(head: TreeHeadInfo) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    table.add_row("origin", head.origin)
    table.add_row("size", str(head.size))
    table.add_row("root", head.root.hex())
    return Group(Panel(table, title="tree head", box=box.ROUNDED), Text(head.note.rstrip("\n")))


def proof_json(proof: InclusionProof) -> dict[str, Any]:
    return {
        "index": proof.index,
        "leaf": b64(proof.leaf),
        "leaf_hash": proof.leaf_hash.hex(),
        "size": proof.size,
        "root": proof.root.hex(),
        "proof": [p.hex() for p in proof.proof],
    }


def proof_view(proof: InclusionProof) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    table.add_row("entry", str(proof.index))
    table.add_row("leaf hash", proof.leaf_hash.hex())
    table.add_row("tree size", str(proof.size))
    table.add_row("root", proof.root.hex())
    for i, p in enumerate(proof.proof):
        table.add_row("proof" if i == 0 else "", p.hex())
    return Panel(table, title="inclusion proof (verified)", box=box.ROUNDED)


def consistency_json(proof: ConsistencyProof) -> dict[str, Any]:
    return {
        "old_size": proof.old_size,
        "old_root": proof.old_root.hex(),
        "new_size": proof.new_size,
        "new_root": proof.new_root.hex(),
        "proof": [p.hex() for p in proof.proof],
    }


def consistency_view(proof: ConsistencyProof) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    table.add_row("old", f"{proof.old_size}  {proof.old_root.hex()}")
    table.add_row("new", f"{proof.new_size}  {proof.new_root.hex()}")
    for i, p in enumerate(proof.proof):
        table.add_row("proof" if i == 0 else "", p.hex())
    return Panel(table, title="consistency proof (verified: the log only grew)", box=box.ROUNDED)


# --- keys -----------------------------------------------------------------------------------------


def key_json(info: KeyInfo, origin: str) -> dict[str, Any]:
    return {
        "keyid": info.keyid,
        "name": info.name,
        "role": info.role,
        "public_key": info.public_key,
        "vkey": info.vkey(origin),
        "revoked": info.revoked,
        "index": info.index,
        "revoked_at": info.revoked_at,
        "revoke_reason": info.revoke_reason,
    }


def keys_view(infos: Sequence[KeyInfo], origin: str) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("entry", "name", "role", "keyid", "status", "vkey"):
        table.add_column(column)
    for info in infos:
        status = Text(f"revoked at {info.revoked_at} ({info.revoke_reason})", style="red") if info.revoked else Text("active", style="green")
        table.add_row(str(info.index), info.name, info.role, info.keyid[:16] + "…", status, info.vkey(origin))
    return table


# --- entries --------------------------------------------------------------------------------------


def entry_json(entry: Entry) -> dict[str, Any]:
    return {"index": entry.index, "kind": entry.kind, "time": entry.time, "signer": entry.signer, "body": entry.body}


def summary(entry: Entry) -> str:
    body = entry.body
    kind = entry.kind
    if kind == "call":
        return f"{body.get('provider')}/{body.get('model')} {body.get('purpose')} outputs={len(body.get('outputs', []))}" + (
            f" id={body['external_id']}" if body.get("external_id") else ""
        )
    if kind == "batch":
        extra = f" derived_from={body['derived_from']}" if body.get("derived_from") else ""
        return f"{body['id']} records={body['count']}{extra}"
    if kind == "checkpoint":
        return f"{body['id']} batches={len(body['batches'])} parents={len(body['parents'])} teachers={len(body['teachers'])}"
    if kind == "key":
        return f"{body['name']} ({body['role']}) {str(body['keyid'])[:16]}…"
    if kind == "revoke":
        return f"{str(body['keyid'])[:16]}… {body.get('reason', '')}"
    return str(body.get("id", ""))


_KIND_STYLE = {"call": "cyan", "batch": "magenta", "checkpoint": "bold green", "key": "yellow", "revoke": "red", "dataset": "blue"}


def log_view(items: Sequence[Entry]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("#", justify="right")
    table.add_column("kind")
    table.add_column("time")
    table.add_column("signer")
    table.add_column("summary")
    for entry in items:
        table.add_row(
            str(entry.index),
            Text(entry.kind, style=_KIND_STYLE.get(entry.kind, "")),
            entry.time[:19].replace("T", " "),
            entry.signer[:8],
            summary(entry),
        )
    return table


def show_view(entry: Entry, proof: InclusionProof | None) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    table.add_row("index", str(entry.index))
    table.add_row("kind", Text(entry.kind, style=_KIND_STYLE.get(entry.kind, "")))
    table.add_row("time", entry.time)
    table.add_row("signer", entry.signer)
    table.add_row("leaf hash", entry.leaf_hash.hex())
    if proof is not None:
        table.add_row("inclusion", Text(f"proven in tree of size {proof.size} ({len(proof.proof)} hashes)", style="green"))
    body = json.dumps(entry.body, indent=2, ensure_ascii=False)
    return Group(Panel(table, title=f"entry {entry.index}", box=box.ROUNDED), Panel(Text(body), title="body", box=box.ROUNDED))


def status_view(document: Mapping[str, Any]) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    table.add_row("ledger", str(document["db"]))
    table.add_row("origin", str(document["origin"]))
    table.add_row("size", f"{document['size']} entries")
    table.add_row("root", str(document["root"]))
    counts = ", ".join(f"{k}: {v}" for k, v in document["counts"].items())
    table.add_row("entries", counts)
    keys = document["keys"]
    table.add_row("keys", f"{keys['active']} active, {keys['revoked']} revoked")
    if document.get("records") is not None:
        table.add_row("records", f"{document['records']} record leaves, {document['segments']} segments")
    last = document.get("last_audit")
    if last:
        style = _VERDICT_STYLE.get(str(last.get("verdict")), "")
        table.add_row("last audit", Text(f"{last.get('verdict')}: {last.get('checkpoint')} at size {last.get('size')} "
                                         f"({last.get('findings')} findings, {last.get('time', '')[:19]})", style=style))
    return Panel(table, title="ledger status", box=box.ROUNDED)


def message(text: str, style: str = "") -> RenderableType:
    return Text(text, style=style)


def verify_json(report: Any) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "size": report.size,
        "root": report.root.hex(),
        "problems": [{"index": p.index, "what": p.what} for p in report.problems],
    }


def verify_view(report: Any) -> RenderableType:
    if report.ok:
        return Text(f"intact: {report.size} entries, root {report.root.hex()}", style="bold green")
    table = Table(box=box.SIMPLE_HEAD, title=Text(f"TAMPERING FOUND: {len(report.problems)} problem(s)", style="bold red"))
    table.add_column("entry", justify="right")
    table.add_column("problem")
    for problem in report.problems:
        table.add_row("-" if problem.index is None else str(problem.index), problem.what)
    return table


# --- recording results ----------------------------------------------------------------------------


def call_result_json(result: Any) -> dict[str, Any]:
    return {"index": result.index, "external_id": result.external_id, "duplicate": result.duplicate}


def call_result_view(result: Any) -> RenderableType:
    if result.duplicate:
        return Text(f"already recorded: call {result.external_id} is entry {result.index}", style="yellow")
    return Text(f"recorded call {result.external_id or ''} as entry {result.index}".replace("  ", " "), style="green")


def import_json(report: Any) -> dict[str, Any]:
    return {
        "added": report.added,
        "duplicates": report.duplicates,
        "failed": report.failed,
        "failed_examples": list(report.failed_examples),
    }


def import_view(report: Any) -> RenderableType:
    lines = [Text(f"imported {report.added} call(s)", style="green")]
    if report.duplicates:
        lines.append(Text(f"{report.duplicates} already recorded (skipped)", style="yellow"))
    if report.failed:
        lines.append(Text(f"{report.failed} failed line(s) not recorded as calls", style="yellow"))
        lines.extend(Text(f"  {example}") for example in report.failed_examples)
    if not report.added and not report.failed and report.duplicates:
        lines.append(Text("nothing new: every call in the file was already in the ledger"))
    return Group(*lines)


def batch_result_json(result: Any) -> dict[str, Any]:
    return {
        "already_recorded": result.already_recorded,
        "batches": [
            {"index": b.index, "id": b.id, "count": b.count, "records_root": b.records_root,
             "records_without_text": b.without_text}
            for b in result.entries
        ],
    }


def batch_result_view(result: Any) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, title="already recorded (nothing appended)" if result.already_recorded else None)
    for column in ("entry", "batch", "records", "records root"):
        table.add_column(column)
    for b in result.entries:
        table.add_row(str(b.index), b.id, str(b.count), b.records_root or Text("dataset (the batches below)", style="dim"))
    bare = [b for b in result.entries if b.without_text]
    if not bare:
        return table
    records = sum(b.without_text or 0 for b in bare)
    warning = Text(
        f"{_count(records, 'record')} in {_count(len(bare), 'batch', 'batches')} carry no comparable text "
        "(no segment): an audit cannot compare them and says inconclusive unless a policy's [[opaque]] "
        "table declares the batch out of scope",
        style="yellow",
    )
    return Group(table, warning)


# --- audit, lineage, bundles ----------------------------------------------------------------------

_VERDICT_STYLE = {"clean": "bold green", "contaminated": "bold red", "suspect": "bold yellow", "inconclusive": "bold yellow"}
_VERDICT_SAYS = {
    "clean": "no recorded third-party output found in the lineage (disproven with respect to this ledger)",
    "contaminated": "third-party output entered the lineage (proven)",
    "suspect": "near duplicates of third-party output only",
    "inconclusive": "integrity failed or the lineage is incomplete: nothing can be proven or disproven",
}
_FINDING_STYLE = {"declared": "red", "exact": "red", "near": "yellow", "allowed": "green"}


def json_text(document: Any) -> str:
    """Compact JSON for files other tools read: every byte is meaningful (a bundle has no slack)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False) + "\n"


def audit_json(report: Any) -> dict[str, Any]:
    from ledger.audit import report_json

    return report_json(report)


def _node_label(lin: Any, index: int | None) -> str:
    if index is None:
        return "-"
    node = lin.by_index().get(index)
    return f"{node.id} (#{index})" if node is not None else f"#{index}"


def _finding_source(finding: Any) -> tuple[tuple[int, int, str], str]:
    """A sort key and a label: findings are grouped by the call (or suspect, or teacher) they name."""
    if finding.call is not None:
        label = f"call #{finding.call}\n{finding.provider}/{finding.model}\npurpose: {finding.purpose}"
        return (0, finding.call, ""), label
    if finding.suspect is not None:
        line = f"\nline {finding.suspect_line}" if finding.suspect_line is not None else ""
        return (1, finding.suspect, ""), f"suspect #{finding.suspect}{line}"
    return (2, 0, f"{finding.provider}:{finding.model}"), f"teacher\n{finding.provider}:{finding.model}"


def audit_view(report: Any, limit: int = 20) -> RenderableType:
    """Verdict first, then findings grouped by call with the path that carries them, then coverage."""
    parts: list[RenderableType] = [
        Text.assemble(
            (f"{report.verdict.upper()}", _VERDICT_STYLE.get(report.verdict, "")),
            f"  checkpoint {report.checkpoint} (entry {report.checkpoint_index}): {_verdict_says(report)}",
        )
    ]
    parts.extend(_gaps_view(report))
    if report.problems:
        table = Table(box=box.SIMPLE_HEAD, title=Text("integrity problems", style="bold yellow"), title_justify="left")
        table.add_column("entry", justify="right")
        table.add_column("problem")
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
        table = Table(box=box.SIMPLE_HEAD, title=Text(f"{len(report.findings)} finding(s)", style="bold"), title_justify="left")
        for column in ("source", "type", "batch", "record", "segment", "similarity", "path"):
            table.add_column(column)
        for _, (label, findings) in sorted(groups.items()):
            shown = findings[:limit]
            for n, f in enumerate(shown):
                kind = f.type if f.basis is None else f"{f.type} ({f.basis})"
                table.add_row(
                    label if n == 0 else "",
                    Text(kind, style=_FINDING_STYLE.get(f.type, "")),
                    _node_label(report.lineage, f.batch),
                    "-" if f.record is None else str(f.record),
                    "-" if f.segment is None else f.segment[:16] + "…",
                    "-" if f.similarity is None else f"{f.similarity:.3f}",
                    " → ".join(f.path),
                    end_section=n == len(shown) - 1 and len(findings) <= limit,
                )
            if len(findings) > limit:
                table.add_row("", f"... {len(findings) - limit} more", "", "", "", "", "", end_section=True)
        parts.append(table)
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
            f"{_count(records, 'record')} in {_count(batches, 'lineage batch', 'lineage batches')} "
            "carry no comparable text: nothing was compared for them, so nothing is disproven"
        )
    says = _VERDICT_SAYS.get(report.verdict, "")
    opaque = sum(1 for g in getattr(report, "gaps", ()) if g.opaque is not None)
    if opaque:
        says += f"; {_count(opaque, 'batch', 'batches')} declared out of scope by the policy (below)"
    return says


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _gaps_view(report: Any) -> list[RenderableType]:
    """Lineage batches holding records without comparable text; opaque ones with the policy's reason."""
    gaps = getattr(report, "gaps", ())
    if not gaps:
        return []
    table = Table(box=box.SIMPLE_HEAD, title=Text("records without comparable text", style="bold yellow"), title_justify="left")
    table.add_column("entry", justify="right")
    table.add_column("batch", overflow="fold")
    table.add_column("without text", justify="right")
    table.add_column("of", justify="right")
    table.add_column("scope", overflow="fold")
    for gap in gaps:
        scope = Text("not compared", style="yellow") if gap.opaque is None else Text(f"opaque: {gap.opaque}", style="dim")
        table.add_row(str(gap.batch), gap.batch_id, str(gap.without_text), str(gap.records), scope)
    return [table]


def _taint(lin: Any, report: Any | None) -> tuple[dict[str, set[str]], set[str]]:
    """Node id -> finding types that taint it (and the checkpoints on their paths); unverifiable node ids."""
    tainted: dict[str, set[str]] = {}
    unverifiable = {n.id for n in lin.nodes if n.missing}
    if report is None:
        return tainted, unverifiable
    by_index = lin.by_index()
    for f in report.findings:
        if f.type == "allowed":
            continue
        targets = list(f.path)
        for index in (f.batch, f.call):
            if index is not None and index in by_index:
                targets.append(by_index[index].id)
        if f.call is None and f.suspect is None and f.batch is None:
            targets.append(f"{f.provider}:{f.model}")
        for node_id in targets:
            tainted.setdefault(node_id, set()).add(f.type)
    if report.problems:
        unverifiable |= {by_index[p.index].id for p in report.problems if p.index in by_index}
    # batches the audit could not compare (no text, no opaque rule) are as unverified as tampered ones
    unverifiable |= {by_index[g.batch].id for g in getattr(report, "gaps", ()) if g.opaque is None and g.batch in by_index}
    return tainted, unverifiable


def _lineage_label(node: Any, tainted: dict[str, set[str]], unverifiable: set[str], colored: bool) -> Text:
    body = node.body or {}
    details = []
    if node.index is not None:
        details.append(f"#{node.index}")
    if body.get("time"):
        details.append(str(body["time"])[:19].replace("T", " "))
    if node.kind == "batch" and body:
        details.append(f"{body.get('count')} records")
    if node.kind == "call" and body:
        details.append(f"{body.get('provider')}/{body.get('model')} {body.get('purpose')}")
    if node.kind == "checkpoint" and body:
        details.append(f"{len(body.get('batches', []))} batches")
    text = Text.assemble((f"{node.kind} ", "dim"), (node.id, "bold"), f"  {'  '.join(details)}")
    if node.id in unverifiable:
        text.stylize("yellow")
        text.append("  unverifiable" + ("  (missing)" if node.missing else ""), style="yellow")
    elif node.id in tainted:
        text.stylize("red")
        text.append(f"  tainted: {', '.join(sorted(tainted[node.id]))}", style="bold red")
    elif colored:
        text.stylize("green")
    return text


def lineage_tree(lin: Any, report: Any | None = None) -> RenderableType:
    """The lineage as a rich tree: red tainted paths with the finding types, green clean, yellow unverifiable."""
    from rich.tree import Tree

    tainted, unverifiable = _taint(lin, report)
    nodes = {n.id: n for n in lin.nodes}
    children: dict[str, list[Any]] = {}
    for edge in lin.edges:
        children.setdefault(edge.source, []).append(edge)
    shown: set[str] = set()
    colored = report is not None

    def grow(branch: Any, node_id: str, how: str | None) -> None:
        node = nodes[node_id]
        label = _lineage_label(node, tainted, unverifiable, colored)
        if how and how != node.kind:
            label = Text.assemble((f"{how}: ", "dim"), label)
        if node_id in shown and children.get(node_id):
            branch.add(Text.assemble(label, (" (shown above)", "dim")))
            return
        shown.add(node_id)
        sub = branch.add(label)
        for edge in children.get(node_id, []):
            grow(sub, edge.target, edge.kind)

    title = _lineage_label(nodes[lin.checkpoint], tainted, unverifiable, colored)
    tree = Tree(title)
    shown.add(lin.checkpoint)
    for edge in children.get(lin.checkpoint, []):
        grow(tree, edge.target, edge.kind)
    if lin.problems:
        return Group(tree, *[Text(f"! {p.what}", style="yellow") for p in lin.problems])
    return tree


def _graph_status(node_id: str, tainted: dict[str, set[str]], unverifiable: set[str]) -> str:
    if node_id in unverifiable:
        return "unverifiable"
    return "tainted" if node_id in tainted else "clean"


def lineage_dot(lin: Any, report: Any | None = None) -> str:
    """Graphviz DOT text of the lineage (colored when an audit report is given)."""
    tainted, unverifiable = _taint(lin, report)
    color = {"tainted": "red", "unverifiable": "orange", "clean": "darkgreen" if report is not None else "black"}
    shape = {"checkpoint": "box", "batch": "folder", "call": "ellipse", "teacher": "octagon"}
    lines = ["digraph lineage {", "  rankdir=TB;", '  node [fontname="Helvetica"];']
    for n in lin.nodes:
        label = f"{n.kind}\\n{n.id}" + (f"\\n#{n.index}" if n.index is not None else "")
        status = _graph_status(n.id, tainted, unverifiable)
        lines.append(f'  {json.dumps(n.id)} [label="{label.replace(chr(34), chr(39))}", shape={shape.get(n.kind, "box")}, color={color[status]}];')
    for e in lin.edges:
        lines.append(f'  {json.dumps(e.source)} -> {json.dumps(e.target)} [label="{e.kind}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def lineage_mermaid(lin: Any, report: Any | None = None) -> str:
    """Mermaid flowchart text of the lineage, for docs and pull requests."""
    tainted, unverifiable = _taint(lin, report)
    ids = {n.id: f"n{i}" for i, n in enumerate(lin.nodes)}
    lines = ["flowchart TD"]
    for n in lin.nodes:
        label = f"{n.kind}: {n.id}" + (f" #{n.index}" if n.index is not None else "")
        lines.append(f'  {ids[n.id]}["{label.replace(chr(34), "#quot;")}"]')
    for e in lin.edges:
        lines.append(f"  {ids[e.source]} -->|{e.kind}| {ids[e.target]}")
    if report is not None or unverifiable:
        lines += ["  classDef tainted stroke:#d00,color:#d00", "  classDef clean stroke:#080",
                  "  classDef unverifiable stroke:#d80,color:#d80"]  # fmt: skip
        for n in lin.nodes:
            status = _graph_status(n.id, tainted, unverifiable)
            if report is not None or status == "unverifiable":
                lines.append(f"  class {ids[n.id]} {status}")
    return "\n".join(lines) + "\n"


def lineage_json(lin: Any) -> dict[str, Any]:
    from ledger.lineage import lineage_json as to_json

    return to_json(lin)


def bundle_report_json(report: Any) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "verdict": report.verdict,
        "checkpoint": report.checkpoint,
        "size": report.size,
        "checked": dict(report.checked),
        "problems": [{"where": p.where, "what": p.what} for p in report.problems],
    }


def bundle_report_view(report: Any) -> RenderableType:
    checked = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in report.checked.items())
    if report.ok:
        return Text(
            f"bundle verifies: checkpoint {report.checkpoint} is {report.verdict} (tree size {report.size}; "
            f"checked {checked})",
            style="bold green",
        )
    table = Table(box=box.SIMPLE_HEAD, title=Text(f"BUNDLE DOES NOT VERIFY: {len(report.problems)} problem(s)", style="bold red"))
    table.add_column("where")
    table.add_column("problem")
    for problem in report.problems:
        table.add_row(problem.where, problem.what)
    return table


def export_json(counts: Any) -> dict[str, Any]:
    return {"batches": counts.batches, "records": counts.records, "files": [str(f) for f in counts.files]}


def export_view(counts: Any) -> RenderableType:
    files = ", ".join(str(f) for f in counts.files)
    return Text(f"exported {counts.records} record leaves of {counts.batches} batches to {files}", style="green")


_VERDICT_STYLE = {"clean": "green", "contaminated": "bold red", "suspect": "yellow", "inconclusive": "yellow"}


def audit_summary(report: Any) -> dict[str, Any]:
    """What `status` shows of the latest audit."""
    from ledger.entries import now_rfc3339

    return {
        "verdict": report.verdict,
        "checkpoint": report.checkpoint,
        "size": getattr(report, "size", None),
        "findings": len(report.findings),
        "time": now_rfc3339(),
    }
