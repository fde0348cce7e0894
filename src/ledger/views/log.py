"""How the log itself is shown: tree heads, proofs, keys, entries, `status` and `verify`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ledger.log.types import ConsistencyProof, Entry, InclusionProof, TreeHeadInfo
from ledger.spec.keyring import KeyInfo
from ledger.views.audit import VERDICT_STYLE
from ledger.views.console import b64, fit, grid, id_column
from ledger.wording import plural


def head_json(head: TreeHeadInfo) -> dict[str, Any]:
    """The head; `note` carries the stored witness cosignatures, which `cosignatures` lists."""
    return {
        "origin": head.origin, "size": head.size, "root": head.root.hex(), "note": head.cosigned_note,
        "cosignatures": [
            {"name": c.name, "keyid": c.key_id.hex(), "time": c.time} for c in head.cosignatures
        ],
    }  # fmt: skip


def head_view(head: TreeHeadInfo) -> RenderableType:
    table = grid()
    table.add_row("origin", head.origin)
    table.add_row("size", str(head.size))
    table.add_row("root", head.root.hex())
    if head.cosignatures:
        table.add_row("cosigned by", ", ".join(dict.fromkeys(c.name for c in head.cosignatures)))
    return Group(
        Panel(table, title="tree head", box=box.ROUNDED), Text(head.cosigned_note.rstrip("\n"))
    )


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
    table = grid()
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
    table = grid()
    table.add_row("old", f"{proof.old_size}  {proof.old_root.hex()}")
    table.add_row("new", f"{proof.new_size}  {proof.new_root.hex()}")
    for i, p in enumerate(proof.proof):
        table.add_row("proof" if i == 0 else "", p.hex())
    return Panel(table, title="consistency proof (verified: the log only grew)", box=box.ROUNDED)


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
    table = grid()
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
    id_column(table, "#", [str(entry.index) for entry in items], justify="right")
    id_column(table, "kind", [entry.kind for entry in items])
    id_column(table, "time", [entry.time[:19].replace("T", " ") for entry in items])
    id_column(table, "signer", [names.get(entry.signer, entry.signer) for entry in items])
    id_column(table, "entry", [f"{ref} {details}" for ref, details in refs])
    for entry, (ref, details) in zip(items, refs):
        table.add_row(
            str(entry.index),
            Text(entry.kind, style=_KIND_STYLE.get(entry.kind, "")),
            entry.time[:19].replace("T", " "),
            names.get(entry.signer, entry.signer),
            Text.assemble((ref, "bold"), f"\n{details}" if details else ""),
        )
    return fit(table)


def show_view(entry: Entry, proof: InclusionProof | None) -> RenderableType:
    table = grid()
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
    table = grid()
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
        style = VERDICT_STYLE.get(str(last.get("verdict")), "")
        table.add_row(
            "last audit",
            Text(
                f"{last.get('verdict')}: {last.get('checkpoint')} at size {last.get('size')} "
                f"({plural(int(last.get('findings') or 0), 'finding')}, {last.get('time', '')[:19]})",
                style=style,
            ),
        )
    return Panel(table, title="ledger status", box=box.ROUNDED)


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
