"""The one lineage closure (`ledger.spec.lineage.closure`): the same answer over the ledger's store and over
any other entry lookup (the offline bundle verifier's is the bundle's entries), and its problems without
any database at all."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from audit_scenarios import Story, shared_story

from ledger.log import store
from ledger.log.store.lineage import lineage
from ledger.spec import envelope
from ledger.spec.entries import ref_of
from ledger.spec.lineage import StoredEntry, closure, lineage_json
from ledger.spec.rules import FINDING_FIELDS

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


class MemoryEntries:
    """An `EntryLookup` over entries held in memory: (index, leaf or b"", body)."""

    def __init__(self, items: Sequence[tuple[int, bytes, Mapping[str, Any]]], *, decoded: bool):
        self.items = sorted(items, key=lambda item: item[0])
        self.decoded = decoded

    def entry(self, index: int, leaf: bytes, body: Mapping[str, Any]) -> StoredEntry:
        return StoredEntry(index, leaf, str(body["kind"]), body if self.decoded else None)

    def by_ref(self, kind: str, refs: Sequence[str]) -> Mapping[str, Sequence[StoredEntry]]:
        found: dict[str, list[StoredEntry]] = {}
        for index, leaf, body in self.items:
            ref = ref_of(body)
            if body["kind"] == kind and ref in refs:
                found.setdefault(ref, []).append(self.entry(index, leaf, body))
        return found

    def by_index(self, indexes: Sequence[int]) -> Mapping[int, Sequence[StoredEntry]]:
        return {
            index: [self.entry(index, leaf, body)]
            for index, leaf, body in self.items
            if index in indexes
        }


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    return shared_story(tmp_path_factory)


@pytest.mark.parametrize("decoded", [False, True], ids=["from-leaves", "from-bodies"])
def test_closure_over_memory_equals_the_store(story: Story, decoded: bool) -> None:
    """Every checkpoint of the story: same nodes, edges, paths and problems, whoever looks entries up."""
    with store.session(story.path, read_only=True) as conn:
        size = store.entry_count(conn)
        items = [
            (e.index, e.leaf, envelope.parse_envelope(e.leaf, index=e.index).body())
            for e in store.iter_entries(conn)
        ]
        from_store = {ckpt: lineage(conn, ckpt, size=size) for ckpt in story.checkpoints}
    memory = MemoryEntries(items, decoded=decoded)
    leaves = {index: (leaf, body) for index, leaf, body in items}
    assert len(story.checkpoints) >= 5
    for ckpt, index in story.checkpoints.items():
        leaf, body = leaves[index]
        root = StoredEntry(index, leaf, "checkpoint", body if decoded else None)
        got = closure(memory, root, ckpt, size)
        assert lineage_json(got) == lineage_json(from_store[ckpt]), ckpt
        assert [(n.id, n.kind, n.index, n.path) for n in got.nodes] == [
            (n.id, n.kind, n.index, n.path) for n in from_store[ckpt].nodes
        ]
    assert any(from_store[c].calls for c in story.checkpoints)  # derived_from calls were followed


def _body(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "v": 1, "time": "2026-01-01T00:00:00Z", **fields}


def test_closure_problems_need_no_database() -> None:
    """Dangling, forward and mistyped references become problems and missing nodes; nothing raises."""
    root_re = "a" * 64
    items = [
        (0, b"", _body("key", keyid="k", public_key="", name="log", role="log")),
        (1, b"", _body("batch", id="b", count=1, records_root=root_re, derived_from=[0])),
        (2, b"", _body("dataset", id="d")),
        (
            3,
            b"",
            _body(
                "checkpoint",
                id="top",
                weights=[],
                parents=["late", "gone"],
                batches=["b", "nobatch"],
                teachers=[{"provider": "openai", "model": "gpt-4o"}, 7],
            ),
        ),  # fmt: skip
        (4, b"", _body("checkpoint", id="late", weights=[], parents=[], batches=[], teachers=[])),
    ]
    memory = MemoryEntries(items, decoded=True)
    lin = closure(memory, StoredEntry(3, b"", "checkpoint", items[3][2]), "top", 5)
    whats = [p.what for p in lin.problems]
    assert whats == [
        "checkpoint 'top': teacher 7 is neither an id nor {provider, model}",
        "checkpoint 'top' (entry 3) refers forward to checkpoint 'late' at entry 4",
        "checkpoint 'top' refers to checkpoint 'gone', which no entry records",
        "checkpoint 'top' refers to batch 'nobatch', which no entry records",
        "batch 'b' (entry 1) is derived_from entry 0, expected a call, found a key entry",
    ]
    assert not lin.complete
    document = lineage_json(lin)
    missing = {n["id"] for n in document["nodes"] if n.get("missing")}
    assert missing == {"gone", "nobatch", "call:0"}
    assert {n["id"] for n in document["nodes"] if n["kind"] == "teacher"} == {"openai:gpt-4o"}
    assert json.loads(json.dumps(document)) == document


def test_finding_fields_are_the_audit_schema() -> None:
    """The one finding table and schemas/audit.schema.json name the same fields, the same ones required."""
    schema = json.loads((SCHEMAS / "audit.schema.json").read_text())

    def finding_schemas(node: Any) -> list[dict[str, Any]]:
        if isinstance(node, dict):
            here = [node] if "segment" in node.get("properties", {}) else []
            return here + [s for v in node.values() for s in finding_schemas(v)]
        if isinstance(node, list):
            return [s for v in node for s in finding_schemas(v)]
        return []

    (finding,) = finding_schemas(schema)
    assert set(finding["properties"]) == {f.name for f in FINDING_FIELDS}
    assert set(finding["required"]) == {f.name for f in FINDING_FIELDS if f.always}
