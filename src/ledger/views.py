"""Rendering: rich renderables for people and JSON-ready dicts for machines. The only module that prints."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
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
from ledger.wording import plural

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def print_json(document: Any) -> None:
    """One JSON document on stdout, nothing else (stable key order for diffs)."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def show(renderable: RenderableType) -> None:
    if out.is_terminal:
        # Tables and trees wrap to the screen (a cropped line loses an id); a lone text, such as a signed
        # note, is left to the terminal so that it copies as one line.
        out.print(renderable, soft_wrap=isinstance(renderable, Text))
    else:
        _print_piped(renderable)


def page(renderable: RenderableType, rows: int) -> None:
    """Long output goes through a pager on a terminal (as `git log` does); piped output is printed whole."""
    if out.is_terminal and rows + 4 > out.height:
        with out.pager(styles=True):
            out.print(renderable)
    else:
        show(renderable)


_TRAILING_BLANKS = re.compile(r" +((?:\x1b\[[0-9;]*m)*)$", re.MULTILINE)


def _print_piped(renderable: RenderableType) -> None:
    """Output for a pipe or a file: as wide as it needs to be (so no row is folded and grep finds every
    id whole) unless COLUMNS asks for a width, and no line ends in padding."""
    width = out.width
    if not os.environ.get("COLUMNS"):
        width = max(
            width, Measurement.get(out, out.options.update_width(1 << 16), renderable).maximum
        )
    console = Console(file=io.StringIO(), width=width, color_system="auto" if out.color_system else None,
                      force_terminal=out.is_terminal, no_color=out.no_color)  # fmt: skip
    with console.capture() as captured:
        console.print(renderable)
    out.file.write(_TRAILING_BLANKS.sub(r"\1", captured.get()))
    out.file.flush()


def _bounded() -> bool:
    """Output has a width to fit: a terminal's, or the one COLUMNS asks for (else piped output is as wide
    as it needs to be)."""
    return out.is_terminal or bool(os.environ.get("COLUMNS"))


def _id_column(table: Table, header: str, values: Sequence[str], **options: Any) -> None:
    """A column that holds identifiers. In a bounded width it is as wide as its longest word (an id), so
    the other columns give way first and the text around the ids wraps between words; an id is folded
    onto a next line (never cut with "…") only when the screen is narrower still."""
    width = None
    if _bounded():
        width = max(cell_len(word) for word in [header, *" ".join(values).split()])
    table.add_column(header, width=width, overflow="fold", no_wrap=False, **options)


def _fit(table: Table) -> Table:
    """Keep fixed-width id columns to three quarters of a bounded width: past that, the widest give up
    their fixed width (and fold like the rest) so that no other column is squeezed out of sight. A table
    of id columns only has no other column to make room for: it uses the whole width, and its widest
    column keeps what is left, so only ids longer than that fold."""
    if not _bounded():
        return table
    only_ids = all(c.width is not None for c in table.columns)
    fixed = sorted(
        (c for c in table.columns if c.width is not None), key=lambda c: c.width or 0, reverse=True
    )
    if only_ids:
        # a boxed table: one padding each side of a column, a rule between columns, the edges
        n = len(table.columns)
        room = out.width - (3 * n + 1 - (0 if table.pad_edge else 2))
        others = sum(c.width or 0 for c in fixed[1:])
        if fixed and (fixed[0].width or 0) + others > room and room - others >= 12:
            fixed[0].width = room - others
            return table
    budget = max(20, out.width * 3 // 4)
    total = sum((c.width or 0) + 2 for c in fixed)
    for column in fixed:
        if total <= budget:
            break
        total -= (column.width or 0) + 2
        column.width = None
    return table


def _grid() -> Table:
    """Label/value rows whose values (hashes, ids) fold rather than being cut."""
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    return table


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
    logger = logging.getLogger("ledger.log.store")
    for handler in [h for h in logger.handlers if isinstance(h, _FirstNotice)]:
        logger.removeHandler(handler)  # one per command, also when main() runs again in one process
    logger.addHandler(_FirstNotice())
    logger.setLevel(logging.INFO)


@contextmanager
def progress(
    description: str, total: int | None, *, enabled: bool, unit: str = "items"
) -> Iterator[Callable[[int], None]]:
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
    table = _grid()
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
    table = _grid()
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
    table = _grid()
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
    """One block per key: its name, role and status, then its full keyid and vkey (never shortened)."""
    table = _grid()
    for n, info in enumerate(infos):
        status = (
            Text(f"revoked at entry {info.revoked_at} ({info.revoke_reason})", style="red")
            if info.revoked
            else Text("active", style="green")
        )
        if n:
            table.add_row("", "")
        table.add_row(
            f"entry {info.index}", Text.assemble((info.name, "bold"), f"  {info.role}  ", status)
        )
        table.add_row("keyid", info.keyid)
        table.add_row("vkey", info.vkey(origin))
    return table


# --- entries --------------------------------------------------------------------------------------


def entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "index": entry.index,
        "kind": entry.kind,
        "time": entry.time,
        "signer": entry.signer,
        "body": entry.body,
    }


def entry_ref(entry: Entry) -> tuple[str, str]:
    """What names an entry (a batch or checkpoint id, provider/model, a key's name or keyid), in full,
    and the details that follow it."""
    body = entry.body
    kind = entry.kind
    if kind == "call":
        external = f" id={body['external_id']}" if body.get("external_id") else ""
        return (
            f"{body.get('provider')}/{body.get('model')}",
            f"{body.get('purpose')} outputs={len(body.get('outputs', []))}{external}",
        )
    if kind == "batch":
        extra = f" derived_from={body['derived_from']}" if body.get("derived_from") else ""
        return str(body["id"]), f"records={body['count']}{extra}"
    if kind == "checkpoint":
        return (
            str(body["id"]),
            f"batches={len(body['batches'])} parents={len(body['parents'])} teachers={len(body['teachers'])}",
        )
    if kind == "key":
        return str(body["name"]), f"{body['role']} key"
    if kind == "revoke":
        return str(body["keyid"]), f"revoked: {body.get('reason', '')}"
    return str(body.get("id", "")), ""


def summary(entry: Entry) -> str:
    return " ".join(part for part in entry_ref(entry) if part)


def signer_names(infos: Sequence[KeyInfo]) -> dict[str, str]:
    """keyid -> the key's name (`log key` for the log's, whose name is the long origin), with `(key #N)`
    when rotation left several keys of that name."""
    names = {info.keyid: "log key" if info.role == "log" else info.name for info in infos}
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {
        i.keyid: names[i.keyid]
        if counts[names[i.keyid]] == 1
        else f"{names[i.keyid]} (key #{i.index})"
        for i in infos
    }


_KIND_STYLE = {
    "call": "cyan",
    "batch": "magenta",
    "checkpoint": "bold green",
    "key": "yellow",
    "revoke": "red",
    "dataset": "blue",
}


def log_view(items: Sequence[Entry], signers: Mapping[str, str] | None = None) -> RenderableType:
    """One row per entry: what names it in full on the first line of the last column, details below.

    `signers` maps keyids to key names; an unknown signer is shown by its full keyid.
    """
    names = signers or {}
    refs = [entry_ref(entry) for entry in items]
    refs = [
        (names.get(ref, ref) if e.kind == "revoke" else ref, details)
        for e, (ref, details) in zip(items, refs)
    ]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    _id_column(table, "#", [str(entry.index) for entry in items], justify="right")
    _id_column(table, "kind", [entry.kind for entry in items])
    _id_column(table, "time", [entry.time[:19].replace("T", " ") for entry in items])
    _id_column(table, "signer", [names.get(entry.signer, entry.signer) for entry in items])
    _id_column(table, "entry", [f"{ref} {details}" for ref, details in refs])
    for entry, (ref, details) in zip(items, refs):
        table.add_row(
            str(entry.index),
            Text(entry.kind, style=_KIND_STYLE.get(entry.kind, "")),
            entry.time[:19].replace("T", " "),
            names.get(entry.signer, entry.signer),
            Text.assemble((ref, "bold"), f"\n{details}" if details else ""),
        )
    return _fit(table)


def show_view(entry: Entry, proof: InclusionProof | None) -> RenderableType:
    table = _grid()
    table.add_row("index", str(entry.index))
    table.add_row("kind", Text(entry.kind, style=_KIND_STYLE.get(entry.kind, "")))
    table.add_row("time", entry.time)
    table.add_row("signer", entry.signer)
    table.add_row("leaf hash", entry.leaf_hash.hex())
    if proof is not None:
        table.add_row(
            "inclusion",
            Text(
                f"proven in tree of size {proof.size} ({plural(len(proof.proof), 'hash', 'hashes')})",
                style="green",
            ),
        )
    body = json.dumps(entry.body, indent=2, ensure_ascii=False)
    return Group(
        Panel(table, title=f"entry {entry.index}", box=box.ROUNDED),
        Panel(Text(body), title="body", box=box.ROUNDED),
    )


def status_view(document: Mapping[str, Any]) -> RenderableType:
    table = _grid()
    table.add_row("ledger", str(document["db"]))
    table.add_row("origin", str(document["origin"]))
    table.add_row("size", plural(document["size"], "entry", "entries"))
    table.add_row("root", str(document["root"]))
    counts = ", ".join(f"{k}: {v}" for k, v in document["counts"].items())
    table.add_row("entries", counts)
    keys = document["keys"]
    table.add_row("keys", f"{keys['active']} active, {keys['revoked']} revoked")
    if document.get("records") is not None:
        table.add_row(
            "records",
            f"{plural(document['records'], 'record leaf', 'record leaves')}, {plural(document['segments'], 'segment')}",
        )
    last = document.get("last_audit")
    if last:
        style = _VERDICT_STYLE.get(str(last.get("verdict")), "")
        table.add_row(
            "last audit",
            Text(
                f"{last.get('verdict')}: {last.get('checkpoint')} at size {last.get('size')} "
                f"({plural(int(last.get('findings') or 0), 'finding')}, {last.get('time', '')[:19]})",
                style=style,
            ),
        )
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
        return Text(
            f"intact: {plural(report.size, 'entry', 'entries')}, root {report.root.hex()}",
            style="bold green",
        )
    table = Table(
        box=box.SIMPLE_HEAD,
        title=Text(f"TAMPERING FOUND: {plural(len(report.problems), 'problem')}", style="bold red"),
    )
    table.add_column("entry", justify="right", no_wrap=True)
    table.add_column("problem", overflow="fold")
    for problem in report.problems:
        table.add_row("-" if problem.index is None else str(problem.index), problem.what)
    return table


# --- recording results ----------------------------------------------------------------------------


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
    _id_column(table, "entry", [str(b.index) for b in result.entries])
    _id_column(table, "batch", [b.id for b in result.entries])
    _id_column(table, "records", [str(b.count) for b in result.entries])
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
        return _fit(table)
    records = sum(b.without_text or 0 for b in bare)
    warning = Text(
        f"{plural(records, 'record')} in {plural(len(bare), 'batch', 'batches')} "
        f"{'carries' if records == 1 else 'carry'} no comparable text "
        "(no segment): an audit cannot compare them and says inconclusive unless a policy's [[opaque]] "
        "table declares the batch out of scope",
        style="yellow",
    )
    return Group(_fit(table), warning)


# --- audit, lineage, bundles ----------------------------------------------------------------------

_VERDICT_STYLE = {
    "clean": "bold green",
    "contaminated": "bold red",
    "suspect": "bold yellow",
    "inconclusive": "bold yellow",
}
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
    _id_column(table, "type", kinds)
    _id_column(table, "batch, record", places)
    table.add_column("segment", overflow="fold")
    table.add_column("path", overflow="fold")
    for f, kind, place in zip(findings, kinds, places):
        segment = "-" if f.segment is None else f.segment
        if f.similarity is not None:
            segment += f"\nsimilarity {f.similarity:.3f}"
        table.add_row(
            Text(kind, style=_FINDING_STYLE.get(f.type, "")), place, segment, " → ".join(f.path)
        )
    return _fit(table)


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
    _id_column(table, "batch", [gap.batch_id for gap in gaps])
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
    return [_fit(table)]


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
    body = node.body or {}
    details = []
    if node.index is not None:
        details.append(f"#{node.index}")
    if body.get("time"):
        details.append(str(body["time"])[:19].replace("T", " "))
    if node.kind == "batch" and body:
        details.append(plural(int(body.get("count") or 0), "record"))
    if node.kind == "call" and body:
        details.append(f"{body.get('provider')}/{body.get('model')} {body.get('purpose')}")
    if node.kind == "checkpoint" and body:
        details.append(plural(len(body.get("batches", [])), "batch", "batches"))
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
    _id_column(table, "suspect", [f"#{h.suspect} line {h.line}" for h in shown])
    _id_column(table, "batch", [f"{h.batch_id} #{h.batch}" for h in shown])
    _id_column(table, "record", [str(h.record) for h in shown], justify="right")
    table.add_column("segment", overflow="fold")
    for h in shown:
        table.add_row(
            f"#{h.suspect}\nline {h.line}", f"{h.batch_id}\n#{h.batch}", str(h.record), h.segment
        )
    if len(hits) > limit:
        table.add_row("", f"... {len(hits) - limit} more (all in --json)", "", "")
    return _fit(table)


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


_VERDICT_STYLE = {
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
