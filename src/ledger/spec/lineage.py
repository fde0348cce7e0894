"""The lineage closure: everything a model checkpoint was built from, as the log records it (the ONE copy).

Starting at one checkpoint, follow `parents` and checkpoint `teachers` (other checkpoints), `batches`
(training batches) and each batch's `derived_from` (external calls), and collect third-party teachers
(`{"provider", "model"}`). A reference that names no entry is recorded as a problem, never raised: it
makes an audit inconclusive, and the audit still lists what it could check.

Pure: the entries come from an `EntryLookup`, which the audit backs with the ledger's store
(`ledger.log.store.lineage`) and the offline bundle verifier with the entries a bundle carries. Bodies are
decoded from the leaf bytes (the signed log) unless the lookup hands over bodies it already decoded and
checked; what a lookup files an entry under (kind, ref) is re-checked against its body. Signatures are the
verifiers' job, not this module's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger.errors import LedgerError, NotFoundError, VerificationError
from ledger.spec import entries, envelope
from ledger.spec.problems import Problem

__all__ = [
    "EDGE_KINDS",
    "NODE_KINDS",
    "EntryLookup",
    "Lineage",
    "LineageEdge",
    "LineageNode",
    "StoredEntry",
    "call_node_id",
    "closure",
    "lineage_json",
]

NODE_KINDS = ("checkpoint", "batch", "call", "teacher")
EDGE_KINDS = ("parent", "batch", "derived_from", "teacher")


def call_node_id(index: int) -> str:
    """Calls have no id of their own (external ids repeat across providers): name them by entry index."""
    return f"call:{index}"


@dataclass(frozen=True)
class LineageNode:
    """One checkpoint, batch, call or third-party teacher in a lineage.

    `path` is the chain of checkpoint ids from the audited checkpoint down to the checkpoint that
    names this node (for a checkpoint: down to itself; for a call: that of the first batch naming it).
    `missing` nodes were referenced but no matching entry exists (`index` is then the referenced
    index for calls, None otherwise); third-party teachers have no entry either but are not missing.
    `body` is the signed body (a teacher's `{provider, model}`), `entry` its typed view (None for
    teachers and missing nodes).
    """

    id: str
    kind: str
    index: int | None
    path: tuple[str, ...]
    missing: bool = False
    body: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    leaf: bytes | None = field(default=None, compare=False, repr=False)
    entry: entries.Body | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LineageEdge:
    """`source` depends on `target`: checkpoint->parent, checkpoint->batch, batch->call, checkpoint->teacher."""

    source: str
    target: str
    kind: str


@dataclass(frozen=True)
class Lineage:
    """The closure of one checkpoint; `problems` (dangling or ambiguous references) make it incomplete."""

    checkpoint: str
    index: int
    size: int
    nodes: tuple[LineageNode, ...]
    edges: tuple[LineageEdge, ...]
    problems: tuple[Problem, ...]

    @property
    def complete(self) -> bool:
        return not self.problems

    def of_kind(self, kind: str, *, present: bool = True) -> list[LineageNode]:
        """Nodes of one kind in discovery order; `present` drops missing ones."""
        return [n for n in self.nodes if n.kind == kind and not (present and n.missing)]

    @property
    def checkpoints(self) -> list[LineageNode]:
        return self.of_kind("checkpoint")

    @property
    def batches(self) -> list[LineageNode]:
        return self.of_kind("batch")

    @property
    def calls(self) -> list[LineageNode]:
        return self.of_kind("call")

    @property
    def teachers(self) -> list[LineageNode]:
        """Third-party teachers (`{"provider", "model"}`); checkpoint teachers are checkpoints."""
        return self.of_kind("teacher")

    def node(self, node_id: str) -> LineageNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise NotFoundError(f"no node {node_id!r} in the lineage of {self.checkpoint!r}")

    def by_index(self) -> dict[int, LineageNode]:
        """Present nodes that are log entries, by entry index."""
        return {n.index: n for n in self.nodes if n.index is not None and not n.missing}

    def entry_indexes(self) -> list[int]:
        """Every log entry the lineage consists of, ascending."""
        return sorted(self.by_index())


@dataclass(frozen=True)
class StoredEntry:
    """An entry as a lookup files it: `kind` is what the lookup says it is (the store's column), `body`
    the decoded body when the lookup already decoded and checked it (None: decode `leaf`), `typed` its
    typed view when the lookup holds one already (None: read it from `body`)."""

    index: int
    leaf: bytes
    kind: str
    body: Mapping[str, Any] | None = None
    typed: entries.Body | None = None


class EntryLookup(Protocol):
    """Where the closure finds entries; only entries below the audited size may be returned."""

    def by_ref(self, kind: str, refs: Sequence[str]) -> Mapping[str, Sequence[StoredEntry]]:
        """Entries of `kind` answering to each of `refs` (an id), in index order."""
        ...

    def by_index(self, indexes: Sequence[int]) -> Mapping[int, Sequence[StoredEntry]]:
        """The entries stored at each of `indexes` (more than one is a damaged store)."""
        ...


class _Builder:
    """Breadth-first closure; first discovery of a node fixes its (shortest) path."""

    def __init__(self, lookup: EntryLookup) -> None:
        self.lookup = lookup
        self.nodes: dict[str, LineageNode] = {}
        self.edges: dict[tuple[str, str, str], LineageEdge] = {}
        self.problems: list[Problem] = []

    def problem(self, index: int | None, what: str) -> None:
        self.problems.append(Problem(index, what))

    def edge(self, source: str, target: str, kind: str) -> None:
        self.edges.setdefault((source, target, kind), LineageEdge(source, target, kind))

    def add(self, node: LineageNode) -> bool:
        if node.id in self.nodes:
            if self.nodes[node.id].kind != node.kind:
                self.problem(
                    node.index,
                    f"lineage node id {node.id!r} names both a {self.nodes[node.id].kind} "
                    f"and a {node.kind}",
                )
            return False
        self.nodes[node.id] = node
        return True

    def decode(
        self, hit: StoredEntry, kind: str, ref: str | None
    ) -> tuple[Mapping[str, Any], entries.Body] | None:
        """The body of a stored entry and its typed view, or None (and a problem) when the leaf does
        not back the row."""
        index = hit.index
        body: Any = hit.body
        if body is None:
            try:
                body = envelope.parse_envelope(hit.leaf, index=index).body()
            except LedgerError as exc:
                self.problem(index, f"entry {index}: cannot decode its leaf: {exc}")
                return None
        typed = hit.typed
        if typed is None:
            try:
                typed = entries.typed(body, index)
            except VerificationError as exc:
                self.problem(index, str(exc))
                return None
        # The row's (kind, ref) against the signed body; the message quotes the signed id as it is.
        if typed.KIND != kind or (ref is not None and str(body["id"]) != ref):
            self.problem(
                index,
                f"entry {index}: the stored row says {kind} {ref!r}, its signed body says "
                f"{typed.KIND} {body.get('id')!r}",
            )
            return None
        checked: Mapping[str, Any] = body
        return checked, typed

    def resolve(
        self, kind: str, wanted: Sequence[tuple[str, str, int, tuple[str, ...]]]
    ) -> list[LineageNode]:
        """Resolve (ref, referrer id, referrer index, path) to new nodes of `kind`; dangling refs become missing nodes."""
        refs = list(dict.fromkeys(ref for ref, _, _, _ in wanted))
        found = self.lookup.by_ref(kind, refs) if refs else {}
        fresh: list[LineageNode] = []
        for ref, referrer, referrer_index, path in wanted:
            hits = found.get(ref, [])
            if ref in self.nodes:
                continue
            if not hits:
                self.problem(
                    referrer_index, f"{referrer} refers to {kind} {ref!r}, which no entry records"
                )
                self.add(LineageNode(ref, kind, None, path, missing=True))
                continue
            if len(hits) > 1:
                self.problem(
                    hits[1].index,
                    f"{kind} id {ref!r} is recorded by {len(hits)} entries "
                    f"({', '.join(str(h.index) for h in hits[:5])})",
                )
            index = hits[0].index
            if index >= referrer_index:
                self.problem(
                    referrer_index,
                    f"{referrer} (entry {referrer_index}) refers forward to {kind} "
                    f"{ref!r} at entry {index}",
                )
            node = self.node(hits[0], kind, ref, ref, path)
            if self.add(node) and not node.missing:
                fresh.append(node)
        return fresh

    def calls(self, wanted: Sequence[tuple[int, str, int, tuple[str, ...]]]) -> None:
        """Resolve derived_from call indexes named by batches."""
        indexes = sorted({i for i, _, _, _ in wanted})
        found = self.lookup.by_index(indexes) if indexes else {}
        for index, referrer, referrer_index, path in wanted:
            node_id = call_node_id(index)
            if node_id in self.nodes:
                continue
            hits = found.get(index, [])
            kind = hits[0].kind if hits else None
            if kind != "call":
                what = "no entry" if kind is None else f"a {kind} entry"
                self.problem(
                    referrer_index,
                    f"batch {referrer!r} (entry {referrer_index}) is derived_from entry "
                    f"{index}, expected a call, found {what}",
                )
                self.add(LineageNode(node_id, "call", index, path, missing=True))
                continue
            if len(hits) > 1:
                self.problem(index, f"entry index {index} is stored {len(hits)} times")
            self.add(self.node(hits[0], "call", None, node_id, path))

    def node(
        self, hit: StoredEntry, kind: str, ref: str | None, node_id: str, path: tuple[str, ...]
    ) -> LineageNode:
        """The node of a stored entry: missing (and a problem) when its leaf does not back the row."""
        decoded = self.decode(hit, kind, ref)
        if decoded is None:
            return LineageNode(node_id, kind, hit.index, path, missing=True, leaf=hit.leaf)
        body, typed = decoded
        return LineageNode(node_id, kind, hit.index, path, body=body, leaf=hit.leaf, entry=typed)


def closure(lookup: EntryLookup, root: StoredEntry, checkpoint_id: str, size: int) -> Lineage:
    """The lineage closure of the checkpoint entry `root` (id `checkpoint_id`) over the entries `lookup`
    finds (those below `size`, the log the caller verified). Dangling references are `problems`."""
    index = root.index
    b = _Builder(lookup)
    top = b.node(root, "checkpoint", checkpoint_id, checkpoint_id, (checkpoint_id,))
    b.add(top)
    level = [] if top.missing else [top]
    batch_wanted: list[tuple[str, str, int, tuple[str, ...]]] = []
    while level:
        wanted: list[tuple[str, str, int, tuple[str, ...]]] = []
        for node in level:
            assert node.body is not None and node.index is not None
            referrer = f"checkpoint {node.id!r}"
            # parents, teachers and batches are read from the signed body, not the typed view: an
            # item that is not an id is a problem of the lineage, which the typed view would drop.
            for parent in _strings(node.body.get("parents"), b, node, "parents"):
                b.edge(node.id, parent, "parent")
                wanted.append((parent, referrer, node.index, (*node.path, parent)))
            for teacher in _as_list(node.body.get("teachers")):
                if isinstance(teacher, str):
                    b.edge(node.id, teacher, "teacher")
                    wanted.append((teacher, referrer, node.index, (*node.path, teacher)))
                elif isinstance(teacher, Mapping):
                    label = entries.teacher_label(teacher)
                    b.edge(node.id, label, "teacher")
                    b.add(LineageNode(label, "teacher", None, node.path, body=dict(teacher)))
                else:
                    b.problem(
                        node.index,
                        f"checkpoint {node.id!r}: teacher {teacher!r} is neither an id nor "
                        "{provider, model}",
                    )
            for batch_id in _strings(node.body.get("batches"), b, node, "batches"):
                b.edge(node.id, batch_id, "batch")
                batch_wanted.append((batch_id, referrer, node.index, node.path))
        level = b.resolve("checkpoint", wanted)
    batches = b.resolve("batch", batch_wanted)
    call_wanted: list[tuple[int, str, int, tuple[str, ...]]] = []
    for batch in sorted(batches, key=lambda n: n.index or 0):
        assert isinstance(batch.entry, entries.BatchBody) and batch.index is not None
        for call in batch.entry.derived_from:
            b.edge(batch.id, call_node_id(call), "derived_from")
            call_wanted.append((call, batch.id, batch.index, batch.path))
    b.calls(call_wanted)
    return Lineage(
        checkpoint_id,
        index,
        size,
        tuple(b.nodes.values()),
        tuple(b.edges.values()),
        tuple(b.problems),
    )


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _strings(value: Any, b: _Builder, node: LineageNode, name: str) -> Iterable[str]:
    for item in _as_list(value):
        if isinstance(item, str):
            yield item
        else:
            b.problem(node.index, f"checkpoint {node.id!r}: {name} item {item!r} is not an id")


# --- JSON --------------------------------------------------------------------------------------------


def _node_json(node: LineageNode) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": node.id,
        "kind": node.kind,
        "index": node.index,
        "path": list(node.path),
    }
    if node.missing:
        out["missing"] = True
    body, entry = node.body or {}, node.entry
    if node.kind == "teacher":
        out.update(provider=body.get("provider"), model=body.get("model"))
    elif entry is not None:
        out["time"] = entry.time
        # Fields whose type check_body leaves open (dataset, provider, model, purpose, external_id)
        # are written as signed, not as the typed view's strings: the document shows the entry.
        if isinstance(entry, entries.CheckpointBody):
            out["weights"] = [w.get("sha256") for w in entry.weights]
        elif isinstance(entry, entries.BatchBody):
            out.update(count=entry.count, records_root=entry.records_root)
            if entry.dataset is not None:
                out["dataset"] = body["dataset"]
        elif isinstance(entry, entries.CallBody):
            out.update(provider=body["provider"], model=body["model"], purpose=body["purpose"])
            if entry.external_id is not None:
                out["external_id"] = body["external_id"]
    return out


def lineage_json(lin: Lineage) -> dict[str, Any]:
    """The fixed `ledger lineage --format json` document (schemas/lineage.schema.json)."""
    return {
        "checkpoint": lin.checkpoint,
        "index": lin.index,
        "complete": lin.complete,
        "nodes": [_node_json(n) for n in lin.nodes],
        "edges": [{"from": e.source, "to": e.target, "kind": e.kind} for e in lin.edges],
        "problems": [{"index": p.index, "what": p.what} for p in lin.problems],
    }
