"""Offline verification of audit bundles, and the audit rules an outside verifier shares with the lab.

A bundle (DESIGN.md "Bundle layout") carries a signed tree head, the log entries an audit relied on with
their inclusion proofs, and the matched record leaves with proofs against their batch's `records_root`.
`verify_bundle` re-checks all of it with nothing but the verifier key: no DuckDB, no ledger file. So it
imports only the pure modules (keys, merkle, entries, hashing; fingerprint for near findings) and never
`ledger.ledger` or `ledger.log.store`.

What it can and cannot establish: every entry and record it is shown is genuine and in the log under the
signed head; the lineage it is shown is closed (every reference resolves inside the bundle); each finding
is backed by the entries and leaves it names; the verdict follows from the findings. It cannot see entries
the bundle leaves out that no shown entry refers to (a call never declared nor matched), nor revocations
left out. With `records_dir` (from `ledger export records`) it recomputes every lineage batch root from the
exported leaves, so a verifier's own suspects can be checked against the complete, committed record set:
that is what makes a `clean` verdict refutable.

The suspects and policy readers live here too, and the rules themselves (verdict, coverage, policy) in
`ledger.spec.rules`, because the audit and the offline verifier must apply the very same ones.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import orjson

from ledger import hashing, keys
from ledger.errors import InputError, LedgerError, VerificationError
from ledger.spec import entries, merkle
from ledger.spec.rules import (
    FINDING_TYPES,
    VERDICTS,
    CoverageGap,
    Policy,
    parse_policy,
    uncovered,
    verdict_of,
)

__all__ = [
    "BUNDLE_FORMAT",
    "BundleProblem",
    "BundleReport",
    "Suspect",
    "SuspectHit",
    "Suspects",
    "load_bundle",
    "read_policy",
    "read_suspects",
    "read_vkey",
    "verify_bundle",
]

BUNDLE_FORMAT = "ledger.audit-bundle/v1"
_BASES = ("declared", "exact", "near")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ENTRY_KEYS = frozenset({"index", "leaf", "proof"})
_RECORD_KEYS = frozenset({"batch", "position", "leaf", "proof"})
_RECORD_FP_KEYS = frozenset({"fingerprint", "fingerprint_proof"})
_FINDING_KEYS = frozenset({"type", "call", "batch", "record", "segment", "similarity", "purpose", "provider", "model",
                           "suspect", "path"})  # fmt: skip
# batch_id and external_id are optional so that bundles written before them still verify.
_FINDING_OPTIONAL = frozenset({"basis", "suspect_line", "batch_id", "external_id"})
_FINDING_LABELS = (("batch_id", "batch", "id"), ("external_id", "call", "external_id"))


def read_policy(path: Path) -> Policy:
    """A TOML policy file (`ledger.spec.rules.parse_policy` says what it may hold)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such policy file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the policy: {exc}") from None
    return parse_policy(text, str(path))


# --- suspects ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Suspect:
    """One suspect: its segment hashes, and (for a text) the normalized texts to fingerprint.

    `index` is the 0-based position among the file's suspects (blank lines skipped), `line` 1-based.
    A text suspect has the segments a call output would have (the text and each paragraph).
    """

    index: int
    line: int
    segments: tuple[bytes, ...]
    texts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suspects(Sequence[Suspect]):
    """A suspects file as columns, so that millions of hashes cost no object per line.

    Suspect `i` has line `lines[i]` and the segment hashes in rows `starts[i]:starts[i + 1]` of
    `blob` (32 bytes per row); a text suspect's normalized segment texts are `texts[i]`, row-aligned.
    Indexing and iteration give `Suspect` values.
    """

    lines: Sequence[int]
    starts: Sequence[int]
    blob: bytes
    texts: Mapping[int, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.lines)

    @overload
    def __getitem__(self, i: int) -> Suspect: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Suspect]: ...
    def __getitem__(self, i: int | slice) -> Suspect | Sequence[Suspect]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"suspect {i} out of range")
        lo, hi = self.starts[i], self.starts[i + 1]
        segments = tuple(self.blob[r * 32 : r * 32 + 32] for r in range(lo, hi))
        return Suspect(i, self.lines[i], segments, self.texts.get(i, ()))

    @property
    def rows(self) -> int:
        """Segment rows (a hash on several lines counts once per line)."""
        return len(self.blob) // 32

    def row_owners(self) -> list[int]:
        """The suspect index of every segment row."""
        owners: list[int] = []
        for i in range(len(self)):
            owners.extend([i] * (self.starts[i + 1] - self.starts[i]))
        return owners

    def row_hashes(self) -> list[bytes]:
        blob = self.blob
        return [blob[r : r + 32] for r in range(0, len(blob), 32)]

    @classmethod
    def of(cls, suspects: Iterable[Suspect]) -> Suspects:
        lines: list[int] = []
        starts = [0]
        parts: list[bytes] = []
        texts: dict[int, tuple[str, ...]] = {}
        for n, suspect in enumerate(suspects):
            lines.append(suspect.line)
            parts.extend(suspect.segments)
            starts.append(starts[-1] + len(suspect.segments))
            if suspect.texts:
                texts[n] = suspect.texts
        return cls(lines, starts, b"".join(parts), texts)


# The common line `{"sha256": "<hex>"}` parsed without a JSON decoder (anything else takes the full path).
_SHA256_LINES = re.compile(
    rb'^[ \t]*\{[ \t]*"sha256"[ \t]*:[ \t]*"([0-9a-fA-F]{64})"[ \t]*\}[ \t]*\r?$', re.MULTILINE
)
_SHA256_LINE = re.compile(rb'\{\s*"sha256"\s*:\s*"([0-9a-fA-F]{64})"\s*\}\s*')


def _suspect_of(value: Any, where: str, index: int, line: int, min_chars: int) -> Suspect:
    if isinstance(value, Mapping):
        if set(value) == {"text"} and isinstance(value["text"], str):
            value = value["text"]
        elif set(value) == {"sha256"} and isinstance(value["sha256"], str):
            digest = value["sha256"].lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise InputError(
                    f"{where}: expected a 64-hex-digit segment hash, found {value['sha256']!r:.80}"
                )
            return Suspect(index, line, (bytes.fromhex(digest),))
        else:
            raise InputError(
                f'{where}: expected {{"text": ...}} or {{"sha256": ...}}, found keys '
                f"{sorted(value)!r:.80}"
            )
    if not isinstance(value, str):
        raise InputError(
            f'{where}: expected a JSON string, {{"text": ...}} or {{"sha256": ...}}, '
            f"found {type(value).__name__}"
        )
    try:
        pairs = hashing.text_segments(value, min_chars)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    return Suspect(index, line, tuple(h for h, _ in pairs), tuple(t for _, t in pairs))


def _all_sha256_lines(raw: bytes) -> bytes | None:
    """The digests (concatenated) of a file made only of `{"sha256": ...}` lines, else None.

    One C-level scan instead of a parse per line: a verifier's file may hold a million hashes.
    """
    if not raw or b"\n\n" in raw or b"\n\r\n" in raw or raw[:1] in (b"\n", b"\r"):
        return None
    found = _SHA256_LINES.findall(raw)
    if len(found) != raw.count(b"\n") + (not raw.endswith(b"\n")):
        return None
    return bytes.fromhex(b"".join(found).decode("ascii"))


def read_suspects(path: Path, min_chars: int = hashing.MIN_SEGMENT_CHARS) -> Suspects:
    """Suspects from JSONL (a JSON string, `{"text"}` or `{"sha256"}` per line) or `.txt` (a text per line).

    A bad line is an InputError naming `file:line`; a text too short to be a segment is kept with no
    segments (it can match nothing, and the audit's coverage counts it). No suspects at all is an error.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such suspects file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read suspects: {exc.strerror or exc}") from None
    plain = path.suffix.lower() == ".txt"
    if not plain:
        blob = _all_sha256_lines(raw)
        if blob is not None:
            count = len(blob) // 32
            return Suspects(range(1, count + 1), range(count + 1), blob)
    out: list[Suspect] = []
    fast = _SHA256_LINE.fullmatch
    for number, line in enumerate(raw.split(b"\n"), start=1):
        match = None if plain else fast(line)
        if match is not None:
            out.append(Suspect(len(out), number, (bytes.fromhex(match[1].decode("ascii")),)))
            continue
        where = f"{path}:{number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{where}: not valid UTF-8 (byte {exc.start})") from None
        text = text.removesuffix("\r")
        if not text.strip():
            continue
        if plain:
            value: Any = text
        else:
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{where}: not JSON: {exc}") from None
        out.append(_suspect_of(value, where, len(out), number, min_chars))
    if not out:
        raise InputError(f"{path}: no suspects in the file")
    return Suspects.of(out)


def read_vkey(value: str) -> str:
    """A verifier key given as the vkey string itself or as a file holding one; malformed is InputError."""
    candidate = Path(value)
    if "+" not in value or candidate.is_file():
        try:
            text = candidate.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise InputError(
                f"{value}: neither a verifier key (name+hash+key) nor a file holding one"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{value}: cannot read the verifier key: {exc}") from None
        try:
            keys.parse_vkey(text)
        except InputError as exc:
            raise InputError(f"{value}: {exc}") from None
        return text
    keys.parse_vkey(value)
    return value.strip()


def load_bundle(path: Path) -> dict[str, Any]:
    """Read a bundle file; a missing file, or content that is not a JSON object, is InputError.

    Nothing can be checked in such a file (unusable input); a JSON object that fails a check is a
    problem `verify_bundle` reports.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such bundle file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the bundle: {exc.strerror or exc}") from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except (
        UnicodeDecodeError,
        ValueError,
        RecursionError,
    ) as exc:  # RecursionError: absurd nesting
        raise InputError(
            f"{path}: not a bundle: not valid JSON ({exc}); truncated or altered?"
        ) from None
    if not isinstance(document, dict):
        raise InputError(
            f"{path}: not a bundle: expected a JSON object, found {type(document).__name__}"
        )
    return document


# --- verification --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleProblem:
    """One failed check: `where` names the bundle part (e.g. `entries[3]`, `findings[0]`)."""

    where: str
    what: str


@dataclass(frozen=True)
class SuspectHit:
    """A verifier's suspect found in the exported records: suspect `suspect` (0-based, on 1-based file
    line `line`) is segment `segment` of record `record` (its position) in lineage batch entry `batch`."""

    suspect: int
    line: int
    batch: int
    batch_id: str
    record: int
    segment: str


@dataclass(frozen=True)
class BundleReport:
    """`ok` only when every check passed; `verdict` is the bundle's claim (None if unreadable).

    `suspect_hits` lists where the verifier's own suspects were found (with `--records` and `--suspects`).
    """

    ok: bool
    problems: tuple[BundleProblem, ...]
    verdict: str | None
    checkpoint: str | None = None
    size: int | None = None
    checked: Mapping[str, int] = field(default_factory=dict)
    suspect_hits: tuple[SuspectHit, ...] = ()


@dataclass
class _Entry:
    index: int
    leaf: bytes
    body: dict[str, Any]
    signer: str
    envelope: keys.Envelope


class _Problems:
    def __init__(self) -> None:
        self.items: list[BundleProblem] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(BundleProblem(where, what))


class _Bad(ValueError):
    """A bundle part that fails a check; verification collects it as a problem."""


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _Bad(f"{what}: expected base64 text, found {type(value).__name__}")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise _Bad(f"{what}: not base64 ({exc})") from None
    if base64.b64encode(data).decode("ascii") != value:
        # One spelling per value: otherwise an altered byte could leave the decoded bytes unchanged.
        raise _Bad(f"{what}: not canonical base64")
    return data


def _hashes(value: Any, what: str) -> list[bytes]:
    if not isinstance(value, list):
        raise _Bad(f"{what}: expected a list of hex hashes")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not _HEX64.fullmatch(item):
            raise _Bad(f"{what}[{i}]: expected 64 lowercase hex digits, found {item!r:.80}")
        out.append(bytes.fromhex(item))
    return out


def _keys(
    item: Mapping[str, Any], required: frozenset[str], optional: frozenset[str] = frozenset()
) -> None:
    """Bundle items have fixed keys: a renamed key is an altered bundle, not an extension."""
    missing = sorted(required - item.keys())
    unknown = sorted(item.keys() - required - optional)
    if missing or unknown:
        raise _Bad(f"expected keys {sorted(required)}, missing {missing}, unknown {unknown}")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_record_leaf(leaf: bytes) -> tuple[str, frozenset[str]]:
    """(record digest hex, segment hashes hex) of a record leaf that must be in its one canonical form."""
    try:
        doc = json.loads(leaf)
        digest, segments = doc["sha256"], doc["segments"]
        rebuilt = hashing.record_leaf(bytes.fromhex(digest), [bytes.fromhex(s) for s in segments])
    except (ValueError, KeyError, TypeError, AttributeError, InputError) as exc:
        raise _Bad(f"not a record leaf: {exc}") from None
    if rebuilt != leaf:
        raise _Bad("not the canonical form of a record leaf")
    return str(digest), frozenset(segments)


class _Verifier:
    def __init__(self, bundle: Mapping[str, Any], problems: _Problems) -> None:
        self.bundle = bundle
        self.p = problems
        self.size = 0
        self.root = b""
        self.entries: dict[int, _Entry] = {}
        self.checkpoints: dict[str, _Entry] = {}
        self.batches: dict[str, _Entry] = {}
        self.records: dict[tuple[int, int], tuple[bytes, frozenset[str]]] = {}
        self.fingerprints: dict[tuple[int, int], bytes] = {}
        self.lineage_batches: dict[int, tuple[str, ...]] = {}  # batch index -> first path
        self.lineage_checkpoints: dict[str, _Entry] = {}
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
            head = keys.verify_tree_head(note, vkey)
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
                    raise _Bad("expected an object with index, leaf and proof")
                _keys(item, _ENTRY_KEYS)
                index = _int(item.get("index"))
                if index is None:
                    raise _Bad("expected an integer index")
                leaf = _b64(item.get("leaf"), "leaf")
                proof = _hashes(item.get("proof"), "proof")
            except ValueError as exc:
                self.p.add(where, str(exc))
                continue
            if index in self.entries:
                self.p.add(where, f"entry {index} appears twice")
                continue
            try:
                merkle.verify_inclusion(merkle.leaf_hash(leaf), index, self.size, proof, self.root)
                envelope = keys.parse_envelope(leaf, index=index)
                body = envelope.body()
                entries.check_body(body, index)
            except LedgerError as exc:
                self.p.add(where, f"entry {index}: {exc}")
                continue
            self.entries[index] = _Entry(index, leaf, body, envelope.signer, envelope)
        for entry in sorted(self.entries.values(), key=lambda e: e.index):
            kind = entry.body["kind"]
            if kind in ("checkpoint", "batch"):
                table = self.checkpoints if kind == "checkpoint" else self.batches
                ref = str(entry.body["id"])
                if ref in table:
                    self.p.add(
                        f"entry {entry.index}",
                        f"{kind} id {ref!r} also names entry {table[ref].index}",
                    )
                else:
                    table[ref] = entry

    def signatures(self, vkey: str) -> None:
        """Each entry signed by a key the bundle introduces earlier and had not revoked; keys by a log key."""
        ring: dict[str, tuple[keys.PublicKey, str, int]] = {}
        revoked: dict[str, int] = {}
        for entry in sorted(self.entries.values(), key=lambda e: e.index):
            body = entry.body
            if body["kind"] == "key":
                try:
                    public = keys.PublicKey.from_b64(str(body["public_key"]))
                except LedgerError as exc:
                    self.p.add(
                        f"entry {entry.index}", f"key entry with an unusable public key: {exc}"
                    )
                    continue
                if public.keyid != body["keyid"]:
                    self.p.add(
                        f"entry {entry.index}",
                        f"key entry: expected keyid {public.keyid}, found {body['keyid']}",
                    )
                    continue
                ring.setdefault(public.keyid, (public, str(body["role"]), entry.index))
        for entry in sorted(self.entries.values(), key=lambda e: e.index):
            where = f"entry {entry.index}"
            info = ring.get(entry.signer)
            self_signed = (
                entry.index == 0
                and entry.body["kind"] == "key"
                and entry.body["keyid"] == entry.signer
            )
            if info is None or (info[2] >= entry.index and not self_signed):
                self.p.add(
                    where,
                    f"signed by key {entry.signer[:16]}…, which no earlier key entry in the bundle "
                    "introduces",
                )
            else:
                public, role, _ = info
                at = revoked.get(entry.signer)
                if at is not None and at < entry.index:
                    self.p.add(where, f"signed by key {entry.signer[:16]}…, revoked at entry {at}")
                if entry.body["kind"] in ("key", "revoke") and role != "log":
                    self.p.add(
                        where,
                        f"a {entry.body['kind']} entry must be signed by a log key, found a {role} key",
                    )
                try:
                    keys.verify_envelope(entry.envelope, public, index=entry.index)
                except VerificationError as exc:
                    self.p.add(where, str(exc))
            if entry.body["kind"] == "revoke":
                revoked.setdefault(str(entry.body["keyid"]), entry.index)
        try:
            _, _, head_key = keys.parse_vkey(vkey)
        except InputError:
            return
        if not any(
            public.keyid == head_key.keyid and role == "log" for public, role, _ in ring.values()
        ):
            self.p.add(
                "keys",
                "the tree head's key is not a log key that the bundle's key entries introduce",
            )

    def key_list(self) -> None:
        listed = self.bundle.get("keys")
        if not isinstance(listed, list):
            self.p.add("keys", "expected a list of key entry bodies")
            return
        in_entries = {
            hashing.canonical_json(e.body) for e in self.entries.values() if e.body["kind"] == "key"
        }
        shown: set[bytes] = set()
        for n, body in enumerate(listed):
            try:
                canon = hashing.canonical_json(body)
            except (LedgerError, TypeError, ValueError) as exc:
                self.p.add(f"keys[{n}]", f"not a key entry body: {exc}")
                continue
            shown.add(canon)
            if canon not in in_entries:
                self.p.add(
                    f"keys[{n}]", "this key body is not the body of any key entry in entries"
                )
        for entry in self.entries.values():
            if entry.body["kind"] == "key" and hashing.canonical_json(entry.body) not in shown:
                self.p.add(f"entry {entry.index}", "a key entry that the keys list leaves out")

    # -- lineage ----------------------------------------------------------------------------------
    def lineage(self) -> str | None:
        checkpoint = self.bundle.get("checkpoint")
        if not isinstance(checkpoint, str) or checkpoint not in self.checkpoints:
            self.p.add(
                "checkpoint", f"the audited checkpoint {checkpoint!r} is not among the entries"
            )
            self.incomplete = True
            return None
        queue: list[tuple[_Entry, tuple[str, ...]]] = [
            (self.checkpoints[checkpoint], (checkpoint,))
        ]
        self.lineage_checkpoints[checkpoint] = self.checkpoints[checkpoint]
        while queue:
            entry, path = queue.pop(0)
            body = entry.body
            refs = [(p, "parent") for p in body.get("parents", [])]
            refs += [(t, "teacher") for t in body.get("teachers", []) if isinstance(t, str)]
            for ref, how in refs:
                found = self.checkpoints.get(ref)
                if found is None or found.index >= entry.index:
                    self.incomplete = True
                    continue
                if ref not in self.lineage_checkpoints:
                    self.lineage_checkpoints[ref] = found
                    queue.append((found, (*path, ref)))
            for teacher in body.get("teachers", []):
                if isinstance(teacher, Mapping):
                    pair = (str(teacher.get("provider")), str(teacher.get("model")))
                    self.lineage_teachers.add(pair)
                    self.declared.add(("teacher", *pair))
            for ref in body.get("batches", []):
                batch = self.batches.get(ref)
                if batch is None or batch.index >= entry.index:
                    self.incomplete = True
                    continue
                self.lineage_batches.setdefault(batch.index, path)
        for index in self.lineage_batches:
            for call in self.entries[index].body.get("derived_from", []):
                if call not in self.entries or self.entries[call].body["kind"] != "call":
                    self.incomplete = True
                    continue
                self.lineage_calls.add(call)
                self.declared.add(("call", call, index))
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
            entry = self.checkpoints.get(upper)
            if entry is None or (
                lower not in entry.body.get("parents", [])
                and lower not in entry.body.get("teachers", [])
            ):
                return False
        last = self.checkpoints.get(path[-1])
        if last is None:
            return False
        if batch is not None:
            return str(self.entries[batch].body["id"]) in last.body.get("batches", [])
        if teacher is not None:
            return {"provider": teacher[0], "model": teacher[1]} in last.body.get("teachers", [])
        return True

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
                    raise _Bad("expected an object with batch, position, leaf and proof")
                _keys(item, _RECORD_KEYS, _RECORD_FP_KEYS)
                batch, position = _int(item.get("batch")), _int(item.get("position"))
                if batch is None or position is None:
                    raise _Bad("expected integer batch and position")
                leaf = _b64(item.get("leaf"), "leaf")
                proof = _hashes(item.get("proof"), "proof")
                entry = self.entries.get(batch)
                if entry is None or entry.body["kind"] != "batch":
                    raise _Bad(f"its batch entry {batch} is not among the entries")
                body = entry.body
                merkle.verify_inclusion(
                    merkle.leaf_hash(leaf),
                    position,
                    int(body["count"]),
                    proof,
                    bytes.fromhex(body["records_root"]),
                )
                parsed = parse_record_leaf(leaf)
                if "fingerprint" in item:
                    self.fingerprint(batch, position, item, body)
            except (ValueError, LedgerError) as exc:
                self.p.add(where, str(exc))
                continue
            self.records[(batch, position)] = (leaf, parsed[1])

    def fingerprint(
        self, batch: int, position: int, item: Mapping[str, Any], body: Mapping[str, Any]
    ) -> None:
        blob = _b64(item.get("fingerprint"), "fingerprint")
        proof = _hashes(item.get("fingerprint_proof"), "fingerprint_proof")
        root = (body.get("fingerprints") or {}).get("root")
        if not isinstance(root, str):
            raise _Bad(f"batch entry {batch} commits to no fingerprints")
        merkle.verify_inclusion(
            merkle.leaf_hash(blob), position, int(body["count"]), proof, bytes.fromhex(root)
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
        call = _int(finding.get("call"))
        if call is not None and call in self.entries:
            body = self.entries[call].body
            return str(body.get("provider")), str(body.get("model"))
        if finding.get("provider") is not None and finding.get("suspect") is None:
            return str(finding.get("provider")), _opt_str(finding.get("model"))
        return None, None

    def finding(
        self, f: Mapping[str, Any], basis: str, suspects: frozenset[str] | None
    ) -> tuple[Any, ...] | None:
        """Check one finding against the proven entries and leaves; return its declared key if declared."""
        _keys(f, _FINDING_KEYS, _FINDING_OPTIONAL)
        if basis not in _BASES or ("basis" in f and f["type"] != "allowed"):
            raise _Bad(
                f"expected basis declared, exact or near on allowed findings only, found {basis!r}"
            )
        call, batch, record = _int(f.get("call")), _int(f.get("batch")), _int(f.get("record"))
        for name in ("call", "batch", "record", "suspect", "suspect_line"):
            if f.get(name) is not None and _int(f.get(name)) is None:
                raise _Bad(f"expected an integer or null {name}, found {f.get(name)!r}")
        call_body = None
        if call is not None:
            if call not in self.entries or self.entries[call].body["kind"] != "call":
                raise _Bad(f"names call entry {call}, which is not among the entries")
            if f.get("suspect") is not None or f.get("suspect_line") is not None:
                raise _Bad("a finding names a call or a suspect, not both")
            call_body = self.entries[call].body
            for name in ("purpose", "provider", "model"):
                if f.get(name) != call_body.get(name):
                    raise _Bad(
                        f"expected {name} {call_body.get(name)!r} (the call entry's), found {f.get(name)!r}"
                    )
        elif f.get("purpose") is not None:
            raise _Bad("only a call has a purpose")
        if batch is not None and batch not in self.lineage_batches:
            raise _Bad(f"names batch entry {batch}, which is not a batch of the audited lineage")
        if basis == "declared":
            return self.declared_finding(f, call, batch, record)
        # exact and near: a record of a lineage batch, matched against a call or a suspect
        if batch is None or record is None:
            raise _Bad(f"an {basis} finding must name a batch and a record")
        if (batch, record) not in self.records:
            raise _Bad(f"record {record} of batch {batch} is not among the proven records")
        if not self.path_ok(f.get("path"), batch=batch):
            raise _Bad(
                f"path {f.get('path')!r} does not lead from the audited checkpoint to batch {batch}"
            )
        segment = f.get("segment")
        if not isinstance(segment, str) or not _HEX64.fullmatch(segment):
            raise _Bad(
                f"expected the matched segment hash (64 lowercase hex digits), found {segment!r:.80}"
            )
        if call_body is None:
            if _int(f.get("suspect")) is None:
                raise _Bad("expected the call or the suspect the record matches")
            if f.get("provider") is not None or f.get("model") is not None:
                raise _Bad("a suspect has no provider or model")
            if suspects is not None and segment not in suspects:
                raise _Bad(f"segment {segment[:16]}… is not among the verifier's suspects")
        elif segment not in call_body.get("outputs", []):
            raise _Bad(f"segment {segment[:16]}… is not among call {call}'s outputs")
        similarity = f.get("similarity")
        if basis == "exact":
            if similarity != 1.0:
                raise _Bad(f"an exact finding has similarity 1.0, found {similarity!r}")
            if segment not in self.records[(batch, record)][1]:
                raise _Bad(f"segment {segment[:16]}… is not in record {record} of batch {batch}")
            return None
        if not isinstance(similarity, float) or not 0.0 <= similarity <= 1.0:
            raise _Bad(f"expected a similarity in [0, 1], found {similarity!r}")
        if call_body is not None and _commits_fingerprints(call_body, self.entries[batch].body):
            blob = self.fingerprints.get((batch, record))
            if blob is None:
                raise _Bad(
                    f"expected the proven fingerprint of record {record} of batch {batch} for a near finding"
                )
            self.near_similarity(call_body, segment, blob, similarity, batch)
        return None

    def labels(self, f: Mapping[str, Any]) -> None:
        """`batch_id` and `external_id`, when present, say what the entries they label say (null: no such id)."""
        for name, ref, body_key in _FINDING_LABELS:
            if name not in f:
                continue
            value, index = f[name], _int(f.get(ref))
            if value is not None and not isinstance(value, str):
                raise _Bad(f"expected a string or null {name}, found {value!r:.80}")
            if index is None or index not in self.entries:
                if value is not None:
                    raise _Bad(f"{name} {value!r:.80} labels no proven {ref} entry: expected null")
                continue
            expected = self.entries[index].body.get(body_key)
            if value != expected:
                raise _Bad(
                    f"expected {name} {expected!r} ({ref} entry {index}'s), found {value!r:.80}"
                )

    def declared_finding(
        self, f: Mapping[str, Any], call: int | None, batch: int | None, record: int | None
    ) -> tuple[Any, ...]:
        if record is not None or f.get("segment") is not None or f.get("similarity") is not None:
            raise _Bad("a declared finding names no record, segment or similarity")
        if f.get("suspect") is not None:
            raise _Bad("a declared finding names no suspect")
        if call is not None and batch is not None:
            if ("call", call, batch) not in self.declared:
                raise _Bad(f"batch {batch} does not declare derived_from call {call}")
            if not self.path_ok(f.get("path"), batch=batch):
                raise _Bad(
                    f"path {f.get('path')!r} does not lead from the audited checkpoint to batch {batch}"
                )
            return ("call", call, batch)
        pair = (str(f.get("provider")), str(f.get("model")))
        if call is None and batch is None and ("teacher", *pair) in self.declared:
            if not self.path_ok(f.get("path"), teacher=pair):
                raise _Bad(
                    f"path {f.get('path')!r} does not lead to a checkpoint with teacher {pair[0]}:{pair[1]}"
                )
            return ("teacher", *pair)
        raise _Bad(
            "a declared finding must name a call and the batch declaring it, or a lineage teacher"
        )

    def near_similarity(
        self, call_body: Mapping[str, Any], segment: str, blob: bytes, claimed: float, batch: int
    ) -> None:
        from ledger.spec import (
            fingerprint,  # numpy only; loaded when a near finding is actually checked
        )

        fps = call_body.get("fingerprints") or {}
        outputs = list(call_body.get("outputs", []))
        values = fps.get("values") or []
        if len(values) != len(outputs):
            raise _Bad("the call's fingerprints do not line up with its outputs")
        params = fingerprint.FingerprintParams.from_json(fps.get("params"))
        batch_params = (self.entries[batch].body.get("fingerprints") or {}).get("params")
        fingerprint.check_compatible(params, fingerprint.FingerprintParams.from_json(batch_params))
        needle = _b64(values[outputs.index(segment)], "call fingerprint")
        found = fingerprint.similarity(needle, blob, params)
        if found != claimed:  # deterministic arithmetic: the same fingerprints give the same float
            raise _Bad(
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
            "records": sum(int(self.entries[b].body["count"]) for b in self.lineage_batches),
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
            body = self.entries[batch].body
            batch_id, count = str(body["id"]), int(body["count"])
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
            signed = self.entries[batch].body.get("records_without_text")
            if isinstance(signed, int) and signed != listed.get(batch, 0):
                self.p.add(
                    "coverage_gaps",
                    f"batch entry {batch} commits to {signed} records without text, "
                    f"the bundle lists {listed.get(batch, 0)}",
                )
        return gaps


def _commits_fingerprints(call_body: Mapping[str, Any], batch_body: Mapping[str, Any]) -> bool:
    """Both sides carry fingerprints, so a near finding between them can be recomputed offline."""
    call_fps, batch_fps = call_body.get("fingerprints"), batch_body.get("fingerprints")
    return (
        isinstance(call_fps, Mapping)
        and bool(call_fps.get("values"))
        and isinstance(batch_fps, Mapping)
        and isinstance(batch_fps.get("root"), str)
    )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _read_export(
    records_dir: Path, wanted: Mapping[int, Mapping[str, Any]], p: _Problems
) -> dict[int, list[bytes]]:
    """Leaves per lineage batch from `ledger export records` Parquet files, checked against each batch root."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    files = sorted(Path(records_dir).rglob("*.parquet"))
    if not files:
        raise InputError(
            f"{records_dir}: no Parquet files (expected the output of `ledger export records`)"
        )
    rows: dict[int, dict[int, list[bytes]]] = {b: {} for b in wanted}
    for path in files:
        try:
            table = pq.read_table(path, columns=["batch", "position", "leaf"])
        except (OSError, KeyError, ValueError) as exc:
            p.add(f"records {path.name}", f"unreadable export file: {exc}")
            continue
        for batch, position, leaf in zip(
            table.column("batch").to_pylist(),
            table.column("position").to_pylist(),
            table.column("leaf").to_pylist(),
        ):
            if batch in rows:
                rows[batch].setdefault(int(position), []).append(bytes(leaf))
    out: dict[int, list[bytes]] = {}
    for batch, body in sorted(wanted.items()):
        count = int(body["count"])
        got = rows[batch]
        dupes = sorted(pos for pos, leaves in got.items() if len(leaves) > 1)
        extra = sorted(pos for pos in got if not 0 <= pos < count)
        missing = count - sum(1 for pos in got if 0 <= pos < count)
        where = f"records batch {batch}"
        if dupes:
            p.add(
                where,
                f"position {dupes[0]} appears {len(got[dupes[0]])} times in the export ({len(dupes)} such)",
            )
        if extra:
            p.add(
                where, f"expected positions 0..{count - 1}, found extra row at position {extra[0]}"
            )
        if missing:
            p.add(
                where,
                f"expected {count} rows (the signed count), {missing} are missing from the export",
            )
        if dupes or extra or missing:
            continue
        leaves = [got[pos][0] for pos in range(count)]
        found = merkle.root([merkle.leaf_hash(leaf) for leaf in leaves])
        if found.hex() != body["records_root"]:
            p.add(
                where,
                f"expected records_root {body['records_root']} (signed), found {found.hex()} from the "
                "exported rows: a row was altered",
            )
            continue
        out[batch] = leaves
    return out


def _segment_count(leaf: bytes) -> int:
    """Segments in a committed (canonical) record leaf: quoted hashes before the closing bracket."""
    inner = leaf[13 : leaf.index(b"]", 13)]
    return 0 if not inner else inner.count(b",") + 1


def _suspects_in_export(
    leaves: Mapping[int, list[bytes]], suspects: Suspects
) -> list[tuple[Suspect, int, int, str]]:
    """(suspect, batch, position, segment) for every suspect segment in a committed exported leaf."""
    wanted: dict[bytes, int] = {}
    for owner, digest in zip(suspects.row_owners(), suspects.row_hashes()):
        wanted.setdefault(b'"' + digest.hex().encode("ascii") + b'"', owner)
    hits = []
    for batch, batch_leaves in sorted(leaves.items()):
        for position, leaf in enumerate(batch_leaves):
            # A committed leaf is canonical: b'{"segments":["h1","h2"],"sha256":"d"}'.
            inner = leaf[13 : leaf.index(b"]", 13)]
            if not inner:
                continue
            for quoted in set(inner.split(b",")) & wanted.keys():
                hits.append(
                    (suspects[wanted[quoted]], batch, position, quoted[1:-1].decode("ascii"))
                )
    return hits


def verify_bundle(
    bundle: Mapping[str, Any],
    vkey: str,
    records_dir: Path | None = None,
    suspects: Path | Suspects | None = None,
) -> BundleReport:
    """Check an audit bundle offline against the verifier key; collect every problem (never raise for them).

    With `records_dir`, every lineage batch root is recomputed from the exported leaves; with `suspects`
    too, a suspect found in that complete record set refutes a `clean` (or `suspect`) verdict.
    Unusable inputs (a malformed `vkey`, the suspects file, the records directory) raise InputError.
    """
    keys.parse_vkey(vkey)
    p = _Problems()
    verdict = bundle.get("verdict")
    claimed = verdict if isinstance(verdict, str) else None
    suspect_list = read_suspects(suspects) if isinstance(suspects, (str, Path)) else suspects
    if bundle.get("format") != BUNDLE_FORMAT:
        p.add("format", f"expected {BUNDLE_FORMAT!r}, found {bundle.get('format')!r}")
    if claimed not in VERDICTS:
        p.add("verdict", f"expected one of {', '.join(VERDICTS)}, found {verdict!r}")
    v = _Verifier(bundle, p)
    if not v.head(vkey):
        return BundleReport(False, tuple(p.items), claimed, _opt_str(bundle.get("checkpoint")))
    v.load_entries()
    v.signatures(vkey)
    v.key_list()
    checkpoint = v.lineage()
    v.load_records()
    try:
        policy = Policy.from_json(bundle.get("policy", []))
    except InputError as exc:
        p.add("policy", str(exc))
        policy = Policy()
    try:
        policy = policy.with_opaque_json(bundle.get("opaque", []))
    except InputError as exc:
        p.add("opaque", str(exc))
    segments = None
    if suspect_list is not None:
        segments = frozenset(h.hex() for h in suspect_list.row_hashes())
    listed_problems = bundle.get("problems") or []
    lenient = claimed == "inconclusive" and bool(listed_problems)
    types = v.findings(policy, segments, lenient=lenient)
    v.coverage()
    gaps = v.gaps(policy)
    inconclusive = v.incomplete or bool(listed_problems)
    if claimed in VERDICTS:
        expected = verdict_of(types, inconclusive=inconclusive, uncovered=uncovered(gaps))
        if expected != claimed:
            reason = (
                "the lineage is incomplete or the audit listed problems"
                if inconclusive
                else "the findings and the coverage gaps"
            )
            p.add("verdict", f"expected {expected} (from {reason}), found {claimed}")
    checked = {"entries": len(v.entries), "records": len(v.records), "findings": len(types)}
    if gaps:
        checked["coverage_gaps"] = len(gaps)
        checked["opaque_batches"] = sum(1 for g in gaps if g.opaque is not None)
    if v.unproven:
        checked["unproven_findings"] = v.unproven
    found: list[SuspectHit] = []
    if records_dir is not None:
        wanted = {b: v.entries[b].body for b in v.lineage_batches}
        leaves = _read_export(Path(records_dir), wanted, p)
        checked["exported_records"] = sum(len(x) for x in leaves.values())
        for (batch, position), (leaf, _) in v.records.items():
            if batch in leaves and leaves[batch][position] != leaf:
                p.add(
                    f"records batch {batch}",
                    f"position {position}: the export and the bundle disagree",
                )
        coverage = bundle.get("coverage")
        if not v.incomplete and len(leaves) == len(wanted) and isinstance(coverage, Mapping):
            counted = sum(
                _segment_count(leaf) for batch_leaves in leaves.values() for leaf in batch_leaves
            )
            if coverage.get("segments") != counted:
                p.add(
                    "coverage",
                    f"expected {counted} segments (counted in the export), found {coverage.get('segments')!r}",
                )
            listed = {g.batch: g.without_text for g in gaps}
            for batch, batch_leaves in sorted(leaves.items()):
                bare = sum(1 for leaf in batch_leaves if _segment_count(leaf) == 0)
                if bare != listed.get(batch, 0):
                    p.add(
                        f"records batch {batch}",
                        f"expected {listed.get(batch, 0)} records without text (the bundle's "
                        f"coverage gaps), found {bare} in the export",
                    )
        if suspect_list is not None:
            hits = _suspects_in_export(leaves, suspect_list)
            checked["suspect_hits"] = len(hits)
            found = [
                SuspectHit(
                    s.index, s.line, batch, str(v.entries[batch].body["id"]), position, segment
                )
                for s, batch, position, segment in hits
            ]
            found.sort(key=lambda h: (h.batch, h.record, h.suspect, h.segment))
            if claimed in ("clean", "suspect"):
                for hit in found[:20]:
                    p.add(
                        "verdict",
                        f"the verifier's suspect #{hit.suspect} (line {hit.line}) is segment "
                        f"{hit.segment} of record {hit.record} in lineage batch {hit.batch_id!r} "
                        f"(entry {hit.batch}): expected contaminated, found {claimed}",
                    )
    return BundleReport(
        not p.items, tuple(p.items), claimed, checkpoint, v.size, checked, tuple(found)
    )
