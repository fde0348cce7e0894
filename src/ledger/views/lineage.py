"""How a lineage is drawn: a tree for terminals, DOT and Mermaid for documents, JSON for tools."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from ledger.spec import entries
from ledger.wording import plural


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
    unverifiable |= {
        by_index[g.batch].id
        for g in getattr(report, "gaps", ())
        if g.opaque is None and g.batch in by_index
    }
    return tainted, unverifiable


def _lineage_label(
    node: Any, tainted: dict[str, set[str]], unverifiable: set[str], colored: bool
) -> Text:
    entry = node.entry  # the typed body; None for teachers and missing nodes
    details = []
    if node.index is not None:
        details.append(f"#{node.index}")
    if entry is not None and entry.time:
        details.append(entry.time[:19].replace("T", " "))
    if isinstance(entry, entries.BatchBody):
        details.append(plural(int(entry.count), "record"))
    if isinstance(entry, entries.CallBody):
        details.append(f"{entry.provider}/{entry.model} {entry.purpose}")
    if isinstance(entry, entries.CheckpointBody):
        details.append(plural(len(entry.batches), "batch", "batches"))
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
    color = {
        "tainted": "red",
        "unverifiable": "orange",
        "clean": "darkgreen" if report is not None else "black",
    }
    shape = {"checkpoint": "box", "batch": "folder", "call": "ellipse", "teacher": "octagon"}
    lines = ["digraph lineage {", "  rankdir=TB;", '  node [fontname="Helvetica"];']
    for n in lin.nodes:
        label = f"{n.kind}\\n{n.id}" + (f"\\n#{n.index}" if n.index is not None else "")
        status = _graph_status(n.id, tainted, unverifiable)
        lines.append(
            f'  {json.dumps(n.id)} [label="{label.replace(chr(34), chr(39))}", shape={shape.get(n.kind, "box")}, color={color[status]}];'
        )
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
    from ledger.spec.lineage import lineage_json as to_json

    return to_json(lin)
