"""The offline verifier's checks of one bundle: entries and records against their proofs, the lineage
closure over the bundle's own entries, every finding against what it names, coverage and its gaps.

`ledger.bundle.verify.verify_bundle` runs them in order; nothing here loads DuckDB.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ledger.bundle.parts import (
    BASES,
    ENTRY_KEYS,
    HEX64,
    RECORD_FP_KEYS,
    RECORD_KEYS,
    Bad,
    BundleEntry,
    Problems,
    as_int,
    b64,
    fixed_keys,
    hashes,
    opt_str,
    parse_record_leaf,
)
from ledger.bundle.signatures import check_signatures
from ledger.errors import LedgerError
from ledger.spec import entries, jcs, merkle
from ledger.spec import envelope as envelope_spec
from ledger.spec import note as note_spec
from ledger.spec.lineage import StoredEntry, closure
from ledger.spec.rules import FINDING_FIELDS, FINDING_TYPES, CoverageGap, Policy

__all__ = ["Verifier"]

_FINDING_KEYS = frozenset(f.name for f in FINDING_FIELDS if f.in_every_bundle)
_FINDING_OPTIONAL = frozenset(f.name for f in FINDING_FIELDS if not f.in_every_bundle)
_FINDING_LABELS = tuple(
    (f.name, f.labels[0], f.labels[1]) for f in FINDING_FIELDS if f.labels is not None
)
_FINDING_INTS = tuple(f.name for f in FINDING_FIELDS if f.kind == "int")


class _BundleEntries:
    """The bundle's proven entries as the lineage closure's `EntryLookup`. An id answers with its first
    entry: a second entry with the same id is already a problem of `load_entries`."""

    def __init__(self, v: Verifier) -> None:
        self.v = v

    def by_ref(self, kind: str, refs: Sequence[str]) -> Mapping[str, Sequence[StoredEntry]]:
        table = {"checkpoint": self.v.checkpoints, "batch": self.v.batches}.get(kind, {})
        found = {ref: table[ref] for ref in refs if ref in table}
        return {
            ref: [StoredEntry(e.index, e.leaf, kind, e.body, e.typed)] for ref, e in found.items()
        }

    def by_index(self, indexes: Sequence[int]) -> Mapping[int, Sequence[StoredEntry]]:
        found = {i: self.v.entries[i] for i in indexes if i in self.v.entries}
        return {
            i: [StoredEntry(i, e.leaf, e.typed.KIND, e.body, e.typed)] for i, e in found.items()
        }


class Verifier:
    """Checks one bundle part by part, collecting every problem in `p` (see `verify_bundle` for the order)."""

    def __init__(self, bundle: Mapping[str, Any], problems: Problems) -> None:
        self.bundle = bundle
        self.p = problems
        self.size = 0
        self.root = b""
        self.entries: dict[int, BundleEntry] = {}
        self.checkpoints: dict[str, BundleEntry] = {}
        self.batches: dict[str, BundleEntry] = {}
        self.records: dict[tuple[int, int], tuple[bytes, frozenset[str]]] = {}
        self.fingerprints: dict[tuple[int, int], bytes] = {}
        self.lineage_batches: dict[int, tuple[str, ...]] = {}  # batch index -> first path
        self.lineage_checkpoints: dict[str, BundleEntry] = {}
        self.lineage_calls: set[int] = set()
        self.lineage_teachers: set[tuple[str, str]] = set()
        self.declared: set[tuple[Any, ...]] = set()
        self.incomplete = False
        self.unproven = 0

    # -- tree head and entries --------------------------------------------------------------------
    def head(self, vkey: str) -> bool:
        note = self.bundle.get("tree_head")
        if not isinstance(note, str):
            self.p.add("tree_head", "expected the signed tree head note text")
            return False
        try:
            head = note_spec.verify_tree_head(note, vkey)
        except LedgerError as exc:
            self.p.add("tree_head", f"does not verify with the given key: {exc}")
            return False
        self.size, self.root = head.size, head.root
        return True

    def load_entries(self) -> None:
        items = self.bundle.get("entries")
        if not isinstance(items, list):
            self.p.add("entries", "expected a list of entries")
            return
        for n, item in enumerate(items):
            where = f"entries[{n}]"
            try:
                if not isinstance(item, Mapping):
                    raise Bad("expected an object with index, leaf and proof")
                fixed_keys(item, ENTRY_KEYS)
                index = as_int(item.get("index"))
                if index is None:
                    raise Bad("expected an integer index")
                leaf = b64(item.get("leaf"), "leaf")
                proof = hashes(item.get("proof"), "proof")
            except ValueError as exc:
                self.p.add(where, str(exc))
                continue
            if index in self.entries:
                self.p.add(where, f"entry {index} appears twice")
                continue
            try:
                merkle.verify_inclusion(merkle.leaf_hash(leaf), index, self.size, proof, self.root)
                envelope = envelope_spec.parse_envelope(leaf, index=index)
                body = envelope.body()
                typed = entries.typed(body, index)
            except LedgerError as exc:
                self.p.add(where, f"entry {index}: {exc}")
                continue
            self.entries[index] = BundleEntry(index, leaf, body, envelope.signer, envelope, typed)
        for entry in sorted(self.entries.values(), key=lambda e: e.index):
            kind = entry.typed.KIND
            if isinstance(entry.typed, entries.CheckpointBody | entries.BatchBody):
                table = self.checkpoints if kind == "checkpoint" else self.batches
                ref = entry.typed.id
                if ref in table:
                    self.p.add(
                        f"entry {entry.index}",
                        f"{kind} id {ref!r} also names entry {table[ref].index}",
                    )
                else:
                    table[ref] = entry

    def key_list(self) -> None:
        listed = self.bundle.get("keys")
        if not isinstance(listed, list):
            self.p.add("keys", "expected a list of key entry bodies")
            return
        in_entries = {
            jcs.canonical_json(e.body)
            for e in self.entries.values()
            if isinstance(e.typed, entries.KeyBody)
        }
        shown: set[bytes] = set()
        for n, body in enumerate(listed):
            try:
                canon = jcs.canonical_json(body)
            except (LedgerError, TypeError, ValueError) as exc:
                self.p.add(f"keys[{n}]", f"not a key entry body: {exc}")
                continue
            shown.add(canon)
            if canon not in in_entries:
                self.p.add(
                    f"keys[{n}]", "this key body is not the body of any key entry in entries"
                )
        for entry in self.entries.values():
            if (
                isinstance(entry.typed, entries.KeyBody)
                and jcs.canonical_json(entry.body) not in shown
            ):
                self.p.add(f"entry {entry.index}", "a key entry that the keys list leaves out")

    # -- lineage ----------------------------------------------------------------------------------
    def signatures(self, vkey: str) -> None:
        check_signatures(self.entries, vkey, self.p)

    # -- lineage ----------------------------------------------------------------------------------
    def lineage(self) -> str | None:
        """The one lineage closure (`ledger.spec.lineage`) over the bundle's proven entries; any problem
        it finds (a reference the bundle cannot resolve, a forward reference) leaves it incomplete."""
        checkpoint = self.bundle.get("checkpoint")
        if not isinstance(checkpoint, str) or checkpoint not in self.checkpoints:
            self.p.add(
                "checkpoint", f"the audited checkpoint {checkpoint!r} is not among the entries"
            )
            self.incomplete = True
            return None
        top = self.checkpoints[checkpoint]
        root = StoredEntry(top.index, top.leaf, "checkpoint", top.body, top.typed)
        lin = closure(_BundleEntries(self), root, checkpoint, self.size)
        self.incomplete = not lin.complete
        nodes = {n.id: n for n in lin.nodes}
        for node in lin.checkpoints:
            assert node.index is not None
            self.lineage_checkpoints[node.id] = self.entries[node.index]
        for node in lin.batches:
            assert node.index is not None
            self.lineage_batches.setdefault(node.index, node.path)
        for node in lin.teachers:
            body = node.body or {}
            pair = (str(body.get("provider")), str(body.get("model")))
            self.lineage_teachers.add(pair)
            self.declared.add(("teacher", *pair))
        for edge in lin.edges:
            batch, call = nodes.get(edge.source), nodes.get(edge.target)
            if edge.kind != "derived_from" or batch is None or call is None:
                continue
            if (
                batch.kind == "batch"
                and call.kind == "call"
                and not (batch.missing or call.missing)
            ):
                assert call.index is not None
                self.lineage_calls.add(call.index)
                self.declared.add(("call", call.index, batch.index))
        return checkpoint

    def path_ok(
        self, path: Any, *, batch: int | None = None, teacher: tuple[str, str] | None = None
    ) -> bool:
        """A finding's path is a chain of lineage checkpoints from the audited one to one naming its target."""
        if not isinstance(path, list) or not path or not all(isinstance(p, str) for p in path):
            return False
        if path[0] != self.bundle.get("checkpoint"):
            return False
        for upper, lower in itertools.pairwise(path):
            entry = self.checkpoint(upper)
            if entry is None or (lower not in entry.parents and lower not in entry.teachers):
                return False
        last = self.checkpoint(path[-1])
        if last is None:
            return False
        if batch is not None:
            return self.batch(batch).id in last.batches
        if teacher is not None:
            return {"provider": teacher[0], "model": teacher[1]} in last.teachers
        return True

    def checkpoint(self, ref: str) -> entries.CheckpointBody | None:
        entry = self.checkpoints.get(ref)
        return (
            entry.typed
            if entry is not None and isinstance(entry.typed, entries.CheckpointBody)
            else None
        )

    def batch(self, index: int) -> entries.BatchBody:
        """The typed body of a lineage batch (an entry `load_entries` filed as a batch)."""
        typed = self.entries[index].typed
        assert isinstance(typed, entries.BatchBody)
        return typed

    # -- records ----------------------------------------------------------------------------------
    def load_records(self) -> None:
        items = self.bundle.get("records", [])
        if not isinstance(items, list):
            self.p.add("records", "expected a list of record leaves")
            return
        for n, item in enumerate(items):
            where = f"records[{n}]"
            try:
                if not isinstance(item, Mapping):
                    raise Bad("expected an object with batch, position, leaf and proof")
                fixed_keys(item, RECORD_KEYS, RECORD_FP_KEYS)
                batch, position = as_int(item.get("batch")), as_int(item.get("position"))
                if batch is None or position is None:
                    raise Bad("expected integer batch and position")
                leaf = b64(item.get("leaf"), "leaf")
                proof = hashes(item.get("proof"), "proof")
                entry = self.entries.get(batch)
                if entry is None or not isinstance(entry.typed, entries.BatchBody):
                    raise Bad(f"its batch entry {batch} is not among the entries")
                body = entry.typed
                merkle.verify_inclusion(
                    merkle.leaf_hash(leaf),
                    position,
                    int(body.count),
                    proof,
                    bytes.fromhex(body.records_root),
                )
                parsed = parse_record_leaf(leaf)
                if "fingerprint" in item:
                    self.fingerprint(batch, position, item, body)
            except (ValueError, LedgerError) as exc:
                self.p.add(where, str(exc))
                continue
            self.records[(batch, position)] = (leaf, parsed[1])

    def fingerprint(
        self, batch: int, position: int, item: Mapping[str, Any], body: entries.BatchBody
    ) -> None:
        blob = b64(item.get("fingerprint"), "fingerprint")
        proof = hashes(item.get("fingerprint_proof"), "fingerprint_proof")
        root = (body.fingerprints or {}).get("root")
        if not isinstance(root, str):
            raise Bad(f"batch entry {batch} commits to no fingerprints")
        merkle.verify_inclusion(
            merkle.leaf_hash(blob), position, int(body.count), proof, bytes.fromhex(root)
        )
        self.fingerprints[(batch, position)] = blob

    # -- findings ---------------------------------------------------------------------------------
    def findings(
        self, policy: Policy, suspect_segments: frozenset[str] | None, *, lenient: bool = False
    ) -> list[str]:
        """Check every finding; with `lenient` (an inconclusive audit that lists its problems), a finding
        the bundle cannot back is counted as unproven instead: the verdict claims nothing from it."""
        items = self.bundle.get("findings")
        if not isinstance(items, list):
            self.p.add("findings", "expected a list of findings")
            return []
        types: list[str] = []
        shown_declared: set[tuple[Any, ...]] = set()
        seen: set[tuple[Any, ...]] = set()
        for n, finding in enumerate(items):
            where = f"findings[{n}]"
            if not isinstance(finding, Mapping) or finding.get("type") not in FINDING_TYPES:
                self.p.add(where, f"expected a finding of type {', '.join(FINDING_TYPES)}")
                continue
            kind = str(finding["type"])
            basis = str(finding.get("basis", "declared")) if kind == "allowed" else kind
            key = tuple(
                json.dumps(value, sort_keys=True)  # any JSON value, lists and objects included
                for value in (
                    kind,
                    finding.get("call"),
                    finding.get("suspect"),
                    finding.get("batch"),
                    finding.get("record"),
                    finding.get("segment"),
                    finding.get("provider") if finding.get("call") is None else None,
                    finding.get("model") if finding.get("call") is None else None,
                )
            )
            if key in seen:
                self.p.add(where, "the same finding is listed twice")
            seen.add(key)
            types.append(kind)
            try:
                declared_key = self.finding(finding, basis, suspect_segments)
                self.labels(finding)
            except ValueError as exc:
                if lenient:
                    self.unproven += 1
                else:
                    self.p.add(where, str(exc))
                continue
            provider, model = self.provider_model(finding)
            allowed = policy.allows(provider, model) if provider is not None else False
            if kind == "allowed" and not allowed:
                self.p.add(
                    where,
                    f"an allowed finding, but the bundle's policy does not allow {provider}:{model}",
                )
            if kind != "allowed" and allowed:
                self.p.add(
                    where,
                    f"the bundle's policy allows {provider}:{model}: expected type allowed, found {kind}",
                )
            if declared_key is not None:
                shown_declared.add(declared_key)
        for missing in sorted(self.declared - shown_declared, key=repr):
            what = (
                f"call {missing[1]} declared by batch {missing[2]}"
                if missing[0] == "call"
                else f"teacher {missing[1]}:{missing[2]}"
            )
            self.p.add(
                "findings",
                f"the lineage declares {what}, but no declared or allowed finding reports it",
            )
        return types

    def provider_model(self, finding: Mapping[str, Any]) -> tuple[str | None, str | None]:
        call = as_int(finding.get("call"))
        # `finding` checked that a named call is a call entry
        typed = self.entries[call].typed if call is not None and call in self.entries else None
        if isinstance(typed, entries.CallBody):
            return typed.provider, typed.model
        if finding.get("provider") is not None and finding.get("suspect") is None:
            return str(finding.get("provider")), opt_str(finding.get("model"))
        return None, None

    def finding(
        self, f: Mapping[str, Any], basis: str, suspects: frozenset[str] | None
    ) -> tuple[Any, ...] | None:
        """Check one finding against the proven entries and leaves; return its declared key if declared."""
        fixed_keys(f, _FINDING_KEYS, _FINDING_OPTIONAL)
        if basis not in BASES or ("basis" in f and f["type"] != "allowed"):
            raise Bad(
                f"expected basis declared, exact or near on allowed findings only, found {basis!r}"
            )
        call, batch, record = as_int(f.get("call")), as_int(f.get("batch")), as_int(f.get("record"))
        for name in _FINDING_INTS:
            if f.get(name) is not None and as_int(f.get(name)) is None:
                raise Bad(f"expected an integer or null {name}, found {f.get(name)!r}")
        call_body = None
        if call is not None:
            typed = self.entries[call].typed if call in self.entries else None
            if not isinstance(typed, entries.CallBody):
                raise Bad(f"names call entry {call}, which is not among the entries")
            if f.get("suspect") is not None or f.get("suspect_line") is not None:
                raise Bad("a finding names a call or a suspect, not both")
            call_body = typed
            signed = self.entries[call].body
            # compared with the values as signed (check_body does not type them; the typed view's
            # strings would let a finding's "5" match a signed 5)
            for name in ("purpose", "provider", "model"):
                if f.get(name) != signed.get(name):
                    raise Bad(
                        f"expected {name} {signed.get(name)!r} (the call entry's), found {f.get(name)!r}"
                    )
        elif f.get("purpose") is not None:
            raise Bad("only a call has a purpose")
        if batch is not None and batch not in self.lineage_batches:
            raise Bad(f"names batch entry {batch}, which is not a batch of the audited lineage")
        if basis == "declared":
            return self.declared_finding(f, call, batch, record)
        # exact and near: a record of a lineage batch, matched against a call or a suspect
        if batch is None or record is None:
            raise Bad(f"an {basis} finding must name a batch and a record")
        if (batch, record) not in self.records:
            raise Bad(f"record {record} of batch {batch} is not among the proven records")
        if not self.path_ok(f.get("path"), batch=batch):
            raise Bad(
                f"path {f.get('path')!r} does not lead from the audited checkpoint to batch {batch}"
            )
        segment = f.get("segment")
        if not isinstance(segment, str) or not HEX64.fullmatch(segment):
            raise Bad(
                f"expected the matched segment hash (64 lowercase hex digits), found {segment!r:.80}"
            )
        if call_body is None:
            if as_int(f.get("suspect")) is None:
                raise Bad("expected the call or the suspect the record matches")
            if f.get("provider") is not None or f.get("model") is not None:
                raise Bad("a suspect has no provider or model")
            if suspects is not None and segment not in suspects:
                raise Bad(f"segment {segment[:16]}… is not among the verifier's suspects")
        elif segment not in call_body.outputs:
            raise Bad(f"segment {segment[:16]}… is not among call {call}'s outputs")
        similarity = f.get("similarity")
        if basis == "exact":
            if similarity != 1.0:
                raise Bad(f"an exact finding has similarity 1.0, found {similarity!r}")
            if segment not in self.records[(batch, record)][1]:
                raise Bad(f"segment {segment[:16]}… is not in record {record} of batch {batch}")
            return None
        if not isinstance(similarity, float) or not 0.0 <= similarity <= 1.0:
            raise Bad(f"expected a similarity in [0, 1], found {similarity!r}")
        if call_body is not None and _commits_fingerprints(call_body, self.batch(batch)):
            blob = self.fingerprints.get((batch, record))
            if blob is None:
                raise Bad(
                    f"expected the proven fingerprint of record {record} of batch {batch} for a near finding"
                )
            self.near_similarity(call_body, segment, blob, similarity, batch)
        return None

    def labels(self, f: Mapping[str, Any]) -> None:
        """`batch_id` and `external_id`, when present, say what the entries they label say (null: no such id)."""
        for name, ref, body_key in _FINDING_LABELS:
            if name not in f:
                continue
            value, index = f[name], as_int(f.get(ref))
            if value is not None and not isinstance(value, str):
                raise Bad(f"expected a string or null {name}, found {value!r:.80}")
            if index is None or index not in self.entries:
                if value is not None:
                    raise Bad(f"{name} {value!r:.80} labels no proven {ref} entry: expected null")
                continue
            # as signed, from an entry of any kind (a label naming the wrong kind expects null)
            expected = self.entries[index].body.get(body_key)
            if value != expected:
                raise Bad(
                    f"expected {name} {expected!r} ({ref} entry {index}'s), found {value!r:.80}"
                )

    def declared_finding(
        self, f: Mapping[str, Any], call: int | None, batch: int | None, record: int | None
    ) -> tuple[Any, ...]:
        if record is not None or f.get("segment") is not None or f.get("similarity") is not None:
            raise Bad("a declared finding names no record, segment or similarity")
        if f.get("suspect") is not None:
            raise Bad("a declared finding names no suspect")
        if call is not None and batch is not None:
            if ("call", call, batch) not in self.declared:
                raise Bad(f"batch {batch} does not declare derived_from call {call}")
            if not self.path_ok(f.get("path"), batch=batch):
                raise Bad(
                    f"path {f.get('path')!r} does not lead from the audited checkpoint to batch {batch}"
                )
            return ("call", call, batch)
        pair = (str(f.get("provider")), str(f.get("model")))
        if call is None and batch is None and ("teacher", *pair) in self.declared:
            if not self.path_ok(f.get("path"), teacher=pair):
                raise Bad(
                    f"path {f.get('path')!r} does not lead to a checkpoint with teacher {pair[0]}:{pair[1]}"
                )
            return ("teacher", *pair)
        raise Bad(
            "a declared finding must name a call and the batch declaring it, or a lineage teacher"
        )

    def near_similarity(
        self, call_body: entries.CallBody, segment: str, blob: bytes, claimed: float, batch: int
    ) -> None:
        from ledger.spec import (
            fingerprint,  # numpy only; loaded when a near finding is actually checked
        )

        fps = call_body.fingerprints or {}
        outputs = list(call_body.outputs)
        values = fps.get("values") or []
        if len(values) != len(outputs):
            raise Bad("the call's fingerprints do not line up with its outputs")
        params = fingerprint.FingerprintParams.from_json(fps.get("params"))
        batch_params = (self.batch(batch).fingerprints or {}).get("params")
        fingerprint.check_compatible(params, fingerprint.FingerprintParams.from_json(batch_params))
        needle = b64(values[outputs.index(segment)], "call fingerprint")
        found = fingerprint.similarity(needle, blob, params)
        if found != claimed:  # deterministic arithmetic: the same fingerprints give the same float
            raise Bad(
                f"expected similarity {found:.6f} (recomputed from the proven fingerprints), "
                f"found {claimed}"
            )

    # -- coverage and the exported record set -----------------------------------------------------
    def coverage(self) -> None:
        coverage = self.bundle.get("coverage")
        if not isinstance(coverage, Mapping):
            self.p.add("coverage", "expected an object of counts")
            return
        expected = {
            "checkpoints": len(self.lineage_checkpoints),
            "batches": len(self.lineage_batches),
            "records": sum(int(self.batch(b).count) for b in self.lineage_batches),
            "declared_calls": len(self.lineage_calls),
            "teachers": len(self.lineage_teachers),
        }
        if self.incomplete:
            return
        for name, value in expected.items():
            if name in coverage and coverage[name] != value:
                self.p.add(
                    "coverage", f"expected {value} {name} in the lineage, found {coverage[name]!r}"
                )

    def gaps(self, policy: Policy) -> list[CoverageGap]:
        """The bundle's coverage gaps, each checked against its batch entry, with the opaque rules
        re-applied here: a gap the bundle calls opaque must be one the bundle's own policy excuses."""
        items = self.bundle.get("coverage_gaps", [])  # bundles before the Coverage rule carry none
        if not isinstance(items, list):
            self.p.add(
                "coverage_gaps", "expected a list of lineage batches without comparable text"
            )
            return []
        gaps: list[CoverageGap] = []
        for n, item in enumerate(items):
            where = f"coverage_gaps[{n}]"
            batch = item.get("batch") if isinstance(item, Mapping) else None
            if not isinstance(batch, int) or batch not in self.lineage_batches:
                self.p.add(where, f"expected a lineage batch entry index, found {batch!r}")
                continue
            body = self.batch(batch)
            batch_id, count = body.id, int(body.count)
            without = item.get("records_without_text")
            if item.get("batch_id") != batch_id:
                self.p.add(
                    where,
                    f"expected batch_id {batch_id!r} (entry {batch}), found {item.get('batch_id')!r}",
                )
            if item.get("records") != count:
                self.p.add(
                    where,
                    f"expected records {count} (the signed count), found {item.get('records')!r}",
                )
            if not isinstance(without, int) or not 0 < without <= count:
                self.p.add(where, f"expected 1..{count} records without text, found {without!r}")
                continue
            excused = policy.opaque_reason(batch_id)
            if item.get("opaque") != excused:
                self.p.add(
                    where,
                    f"the bundle's opaque rules give batch {batch_id!r} "
                    f"{'reason ' + repr(excused) if excused else 'no exemption'}, "
                    f"found {item.get('opaque')!r}",
                )
            gaps.append(CoverageGap(batch, batch_id, count, without, excused))
        if len({g.batch for g in gaps}) != len(gaps):
            self.p.add("coverage_gaps", "a lineage batch is listed twice")
        listed = {g.batch: g.without_text for g in gaps}
        for batch in sorted(self.lineage_batches):
            signed = self.batch(batch).records_without_text
            if isinstance(signed, int) and signed != listed.get(batch, 0):
                self.p.add(
                    "coverage_gaps",
                    f"batch entry {batch} commits to {signed} records without text, "
                    f"the bundle lists {listed.get(batch, 0)}",
                )
        return gaps


def _commits_fingerprints(call_body: entries.CallBody, batch_body: entries.BatchBody) -> bool:
    """Both sides carry fingerprints, so a near finding between them can be recomputed offline."""
    call_fps, batch_fps = call_body.fingerprints, batch_body.fingerprints
    return (
        isinstance(call_fps, Mapping)
        and bool(call_fps.get("values"))
        and isinstance(batch_fps, Mapping)
        and isinstance(batch_fps.get("root"), str)
    )
