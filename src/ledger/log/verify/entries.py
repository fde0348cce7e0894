"""Entries: each leaf parsed and its signature checked on its own (`examine`, in worker processes when
there are any), then the checks that depend on log order (`LogOrder`): signers and their keys (replayed by
the one key ring, `ledger.spec.keyring`), references to earlier entries, unique ids, and entry indexes
0..n-1 once each.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ledger.errors import InputError, VerificationError
from ledger.log.store import verify as queries
from ledger.log.store.verify import QUERY_LIMIT, EntryRow
from ledger.log.verify.records import Commitment, commitment_of
from ledger.log.verify.report import Connection, ProblemList
from ledger.spec import entries, keys
from ledger.spec import envelope as envelope_spec
from ledger.spec.keyring import KeyInfo, KeyRing, RingProblem, public_key_bytes
from ledger.spec.problems import Problem

SIG_OK, SIG_BAD, SIG_UNKNOWN = 0, 1, 2
_KIND_CODES = {kind: code for code, kind in enumerate(entries.KINDS, start=1)}


@dataclass(frozen=True, slots=True)
class Examined:
    """What one leaf says on its own; the order-dependent checks happen in `LogOrder`."""

    index: int
    kind: str | None  # None when the leaf or its body is unusable
    signer: str | None
    signature: int  # SIG_OK, SIG_BAD or SIG_UNKNOWN (no key known to check it with)
    body: (
        dict[str, Any] | None
    )  # kept for every kind but calls, which nothing later refers to by body
    problems: tuple[Problem, ...]


_COLUMNS = ("kind", "time", "ref", "provider", "model", "purpose")


def examine(row: EntryRow, key_hints: Mapping[str, bytes]) -> Examined:
    """Parse one stored row, compare its derived columns with its body, and check its signature if we can.

    `key_hints` maps keyids to public keys whose SHA-256 is that keyid, so a hint can never name the
    wrong key; whether the key was allowed to sign at this index is decided later, in log order.
    """
    index, leaf = int(row[0]), bytes(row[1])
    problems: list[Problem] = []
    try:
        envelope = envelope_spec.parse_envelope(leaf, index=index)
        body = envelope.body()
        entries.check_body(body, index)
    except (VerificationError, InputError) as exc:
        return Examined(index, None, None, SIG_BAD, None, (Problem(index, str(exc)),))
    if len(envelope.signatures) != 1:
        problems.append(
            Problem(
                index, f"entry {index}: expected one signature, found {len(envelope.signatures)}"
            )
        )
    signer = envelope.signatures[0][0]
    facts = entries.facts_of(body)
    for column, stored in zip(_COLUMNS, row[3:]):
        expected = getattr(facts, column)
        if stored != expected:
            problems.append(
                Problem(
                    index,
                    f"entry {index}: column {column}: expected {expected!r} "
                    f"(from the signed body), found {stored!r}",
                )
            )
    if row[2] != signer:
        problems.append(
            Problem(
                index,
                f"entry {index}: column signer: expected {signer} "
                f"(the envelope's keyid), found {row[2]!r}",
            )
        )
    raw = key_hints.get(signer)
    status = SIG_UNKNOWN
    if raw is not None:
        status = verify_signature(envelope, raw, index, problems)
    kind = str(body["kind"])
    return Examined(index, kind, signer, status, None if kind == "call" else body, tuple(problems))


@lru_cache(maxsize=64)
def public_key(raw: bytes) -> keys.PublicKey:
    """A log has a handful of keys: build each (and its keyid) once, not once per entry."""
    return keys.PublicKey(raw)


def verify_signature(
    envelope: envelope_spec.Envelope, raw: bytes, index: int, problems: list[Problem]
) -> int:
    try:
        envelope_spec.verify_envelope(envelope, public_key(raw), index=index)
    except VerificationError as exc:
        problems.append(Problem(index, str(exc)))
        return SIG_BAD
    return SIG_OK


def examine_chunk(rows: list[EntryRow], hints: dict[str, bytes]) -> list[Examined]:
    return [examine(row, hints) for row in rows]


def key_hints(conn: Connection) -> dict[str, bytes]:
    """Public keys of the entries the kind column calls keys. Only a speed hint: `LogOrder` decides."""
    hints: dict[str, bytes] = {}
    for leaf in queries.key_entry_leaves(conn):
        try:
            body = envelope_spec.parse_envelope(leaf).body()
        except (VerificationError, InputError):
            continue
        raw = public_key_bytes(body)
        if raw is not None:
            hints[str(body["keyid"])] = raw
    return hints


class LogOrder:
    """The checks that depend on log order: keys and revocations, signers, references, unique ids.

    The keys are replayed by the one key ring (`ring`); the rules it reports broken are worded here.
    The first entry must be the log key's self-signed key entry; later key and revoke entries must be
    signed by a log key; every signer must be introduced by an earlier key entry and not revoked before
    the entry it signs.
    """

    def __init__(self, size: int, problems: ProblemList) -> None:
        self.ring = KeyRing()
        self.kinds = bytearray(size)
        self.batch_ids: dict[str, int] = {}
        self.checkpoint_ids: dict[str, int] = {}
        self.commitments: dict[int, Commitment] = {}
        self.problems = problems

    def add(self, ex: Examined, leaf: bytes) -> None:
        self.problems.extend(ex.problems)
        if ex.kind is None or ex.signer is None:
            return
        index, body = ex.index, ex.body
        if index == 0:
            known = self._first(ex.kind, ex.signer, body or {})
        else:
            refused = self.ring.signer_problems(index, ex.signer, ex.kind)
            known = self._refused(index, ex.kind, ex.signer, refused) if refused else True
        if known and ex.signature == SIG_UNKNOWN:
            self._late_signature(index, leaf, ex.signer)
        if index != 0 and body is not None and ex.kind in ("key", "revoke"):
            self._key_entry(index, body)
        if ex.kind == "batch" and body is not None:
            self._batch(index, body)
        elif ex.kind == "checkpoint" and body is not None:
            self._checkpoint(index, body)
        if 0 <= index < len(self.kinds):
            self.kinds[index] = _KIND_CODES[ex.kind]

    def _first(self, kind: str, signer: str, body: Mapping[str, Any]) -> bool:
        """Entry 0: the log key's self-signed key entry starts the ring. Returns whether it is one."""
        if kind != "key" or body.get("role") != "log" or body.get("keyid") != signer:
            self.problems.add(
                0,
                f"entry 0: expected the log key's self-signed key entry, found a {kind} entry "
                f"(role {body.get('role')!r}) signed by {signer}",
            )
            return False
        if public_key_bytes(body) is None:
            self.problems.add(
                0,
                "entry 0: expected keyid = sha256(public_key), found a key that does not hash to it",
            )
            return False
        # Checked above; `add`, not `apply`: a second row at index 0 (reported by `check_indexes`)
        # replaces the first instead of being reported again as a key introduced twice.
        self.ring.add(body, 0)
        return True

    def _refused(self, index: int, kind: str, signer: str, refused: list[RingProblem]) -> bool:
        """Why `signer` may not sign entry `index` of `kind`, worded; returns whether the ring knows the
        key by then (so its signature can still be checked)."""
        for p in refused:
            if p.code == "signer-unknown":
                self.problems.add(
                    index,
                    f"entry {index}: expected a signer introduced by an earlier key entry, "
                    f"found key {signer[:16]}… unknown at this point",
                )
                return False
            known = _known(p)
            if p.code == "signer-revoked":
                self.problems.add(
                    index,
                    f"entry {index}: expected a signer not revoked before it, found key {known.name} "
                    f"({signer[:16]}…) revoked at entry {known.revoked_at}",
                )
            elif p.code == "signer-not-log":
                self.problems.add(
                    index,
                    f"entry {index}: expected a {kind} entry signed by a log key, "
                    f"found {known.role} key {known.name}",
                )
        return True

    def _key_entry(self, index: int, body: Mapping[str, Any]) -> None:
        """A later key or revoke entry, applied to the ring if it keeps the key rules."""
        p = self.ring.apply(index, body)
        if p is None:
            return
        keyid = p.keyid
        if p.code == "bad-key":
            self.problems.add(
                index,
                f"entry {index}: expected keyid = sha256(public_key), found key {keyid[:16]}… "
                "whose public key does not hash to it",
            )
        elif p.code == "key-exists":
            self.problems.add(
                index,
                f"entry {index}: expected a new key, found key {keyid[:16]}… "
                f"already introduced at entry {_known(p).index}",
            )
        elif p.code == "revoke-unknown":
            self.problems.add(
                index,
                f"entry {index}: expected to revoke a known key, found unknown key {keyid[:16]}…",
            )
        elif p.code == "revoke-again":
            self.problems.add(
                index,
                f"entry {index}: key {keyid[:16]}… was already revoked at entry {_known(p).revoked_at}",
            )

    def _late_signature(self, index: int, leaf: bytes, signer: str) -> None:
        """The hint pass missed this key (its kind column was altered): check the signature here."""
        info = self.ring.get(signer)
        assert info is not None  # the ring knows every signer that reaches here
        found: list[Problem] = []
        verify_signature(
            envelope_spec.parse_envelope(leaf, index=index), info.public.raw, index, found
        )
        self.problems.extend(found)

    def _batch(self, index: int, body: Mapping[str, Any]) -> None:
        batch_id = str(body["id"])
        if batch_id in self.batch_ids:
            self.problems.add(
                index,
                f"entry {index}: expected a unique batch id, found {batch_id!r} "
                f"already used by entry {self.batch_ids[batch_id]}",
            )
        else:
            self.batch_ids[batch_id] = index
        for ref in body.get("derived_from", []):
            kind = self.kinds[ref] if 0 <= ref < min(index, len(self.kinds)) else 0
            if kind != _KIND_CODES["call"]:
                found = entries.KINDS[kind - 1] + " entry" if kind else "no valid entry"
                self.problems.add(
                    index,
                    f"entry {index}: derived_from {ref}: expected an earlier call entry, "
                    f"found {found}",
                )
        self.commitments[index] = commitment_of(body)

    def _checkpoint(self, index: int, body: Mapping[str, Any]) -> None:
        checkpoint_id = str(body["id"])
        refs: list[tuple[str, Any, dict[str, int]]] = [
            *(("parent", p, self.checkpoint_ids) for p in _as_list(body["parents"])),
            *(("batch", b, self.batch_ids) for b in _as_list(body["batches"])),
            *(
                ("teacher", t, self.checkpoint_ids)
                for t in _as_list(body["teachers"])
                if not isinstance(t, Mapping)
            ),
        ]
        for what, ref, known in refs:
            if not isinstance(ref, str) or ref not in known:
                kind = "checkpoint" if known is self.checkpoint_ids else "batch"
                self.problems.add(
                    index,
                    f"entry {index}: {what} {ref!r}: expected the id of an earlier {kind}, "
                    "found none",
                )
        if checkpoint_id in self.checkpoint_ids:
            self.problems.add(
                index,
                f"entry {index}: expected a unique checkpoint id, found {checkpoint_id!r} "
                f"already used by entry {self.checkpoint_ids[checkpoint_id]}",
            )
        else:
            self.checkpoint_ids[checkpoint_id] = index


def _known(problem: RingProblem) -> KeyInfo:
    """The key a ring problem is about, as the ring knew it (every code but the unknown ones has it)."""
    assert problem.known is not None, problem.code
    return problem.known


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Shape:
    """The entry rows as the first session finds them; `intact` when their indexes are 0..count-1 once each."""

    count: int
    first: int
    last: int
    intact: bool


def check_indexes(conn: Connection, problems: ProblemList) -> Shape:
    """Entry indexes must be exactly 0..n-1, each once."""
    count, distinct, first, last = queries.index_summary(conn)
    if count == 0 or first is None or last is None:
        problems.add(0, "entry 0: expected the log key's key entry, found an empty log")
        return Shape(0, 0, -1, True)
    shape = Shape(count, first, last, count == distinct and first == 0 and last == count - 1)
    if shape.intact:
        return shape
    for index, times in queries.duplicate_indexes(conn):
        problems.add(index, f"entry {index}: expected it stored once, found {times} rows")
    if first != 0:
        problems.add(
            min(first, 0),
            f"expected entry indexes from 0, found the first at {first}",
        )
    for lo, hi in queries.index_gaps(conn):
        span = f"entry {lo}" if lo == hi else f"entries {lo}..{hi}"
        problems.add(lo, f"expected {span} in the log, found no row (deleted?)")
    return shape


class Calls:
    """(provider, external_id) of every call row as a 64-bit hash, in arrays: duplicates are found by
    numpy at the end instead of keeping a dict of a million strings. Candidates are confirmed exactly."""

    def __init__(self) -> None:
        self.hashes = array("q")
        self.indexes = array("q")

    def add(self, row: EntryRow) -> None:
        if row[3] == "call" and row[5] is not None:
            self.hashes.append(hash((row[6], row[5])))
            self.indexes.append(int(row[0]))

    def candidates(self) -> list[int]:
        """Indexes of the rows whose hash another row shares, first groups (by lowest index) first."""
        hashes = np.frombuffer(self.hashes, np.int64)
        indexes = np.frombuffer(self.indexes, np.int64)
        if len(hashes) < 2:
            return []
        order = np.lexsort((indexes, hashes))
        hashes, indexes = hashes[order], indexes[order]
        same = hashes[1:] == hashes[:-1]
        if not same.any():
            return []
        shared = np.zeros(len(hashes), bool)
        shared[1:] |= same
        shared[:-1] |= same
        groups: dict[int, list[int]] = {}
        for h, i in zip(hashes[shared].tolist(), indexes[shared].tolist()):
            groups.setdefault(h, []).append(i)
        first = sorted(groups.values(), key=min)[: 4 * QUERY_LIMIT]
        return sorted({i for group in first for i in group})


def check_calls_unique(conn: Connection, calls: Calls, problems: ProblemList) -> None:
    """Calls are idempotent on (provider, external_id); the columns used here are checked against bodies."""
    wanted = calls.candidates()
    if not wanted:
        return
    groups: dict[tuple[Any, Any], list[int]] = {}
    for index, provider, ref in queries.call_refs(conn, wanted):
        groups.setdefault((provider, ref), []).append(index)
    repeated = sorted((g for g in groups.items() if len(g[1]) > 1), key=lambda g: min(g[1]))
    for (provider, ref), indexes in repeated[:QUERY_LIMIT]:
        for index in indexes[1:]:
            problems.add(
                index,
                f"entry {index}: expected a unique call ({provider}, external_id {ref!r}), "
                f"found it already recorded at entry {indexes[0]}",
            )
