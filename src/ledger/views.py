"""Rendering: rich renderables for people and JSON-ready dicts for machines. The only module that prints."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
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


def error(message: str) -> None:
    err.print(Text(f"error: {message}"), highlight=False)


def warn(message: str) -> None:
    err.print(Text(f"warning: {message}", style="yellow"), highlight=False)


def note(message: str) -> None:
    """A line for people, on stderr so stdout stays the result."""
    err.print(Text(message), highlight=False)


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
            {"index": b.index, "id": b.id, "count": b.count, "records_root": b.records_root} for b in result.entries
        ],
    }


def batch_result_view(result: Any) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, title="already recorded (nothing appended)" if result.already_recorded else None)
    for column in ("entry", "batch", "records", "records root"):
        table.add_column(column)
    for b in result.entries:
        table.add_row(str(b.index), b.id, str(b.count), b.records_root or Text("dataset (the batches below)", style="dim"))
    return table
