"""Getting the ledger's latest tree head cosigned by a witness policy's quorum (`ledger head
--witness-policy`, `audit --bundle --witness-policy`), and checking the stored head against a policy
(`ledger verify --witness-policy`).

Every witness with a URL is asked at once (`ledger.witness.client`); the valid cosignatures are stored
with the head (`ledger.log.heads.save_cosignatures`) before anything is judged, so a failed quorum
keeps what it got. A witness holding a larger tree is first checked against a head appended meanwhile
(another recorder, another `ledger head --witness-policy`): only when the log still holds less is it a
rollback.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import ForkError, InputError, VerificationError, WitnessQuorumError
from ledger.log import heads, proofs
from ledger.log.types import CosignatureInfo, TreeHeadInfo
from ledger.spec import note as note_spec
from ledger.spec.cosigned import CosignedHead, check_cosigned, policy_log_for
from ledger.spec.witness_policy import WitnessPolicy
from ledger.witness.client import DEFAULT_TIMEOUT, WitnessAnswer, ask_witnesses

__all__ = ["CosignResult", "check_stored_head", "cosign_latest", "witness_timeout"]

MAX_ROUNDS = 3  # a log appended to while we ask is asked again, a few times at most


def witness_timeout() -> float:
    """Seconds to wait for each witness request (LEDGER_WITNESS_TIMEOUT, default 5)."""
    raw = os.environ.get("LEDGER_WITNESS_TIMEOUT")
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 600:
        raise InputError(f"LEDGER_WITNESS_TIMEOUT={raw!r}: expected seconds in (0, 600]")
    return value


@dataclass(frozen=True)
class CosignResult:
    """The head as cosigned now (its `cosigned_note` carries every stored cosignature), the policy's
    judgement of it, and each witness's answer."""

    head: TreeHeadInfo
    judged: CosignedHead
    answers: tuple[WitnessAnswer, ...]


def _proof_source(
    path: Path, head: TreeHeadInfo, known: dict[int, list[bytes]]
) -> Callable[[int], list[bytes]]:
    """Proofs to `head`: those read with it, others (a size a witness taught us) from the store."""
    lock = threading.Lock()
    cache = dict(known)

    def proof_from(old_size: int) -> list[bytes]:
        with lock:  # one store session at a time in this process
            if old_size not in cache:
                cache[old_size] = proofs.consistency_from_size(path, old_size, head.size, head.root)
            return cache[old_size]

    return proof_from


def _ask(
    path: Path, policy: WitnessPolicy, timeout: float
) -> tuple[TreeHeadInfo, list[WitnessAnswer]]:
    asked = [w for w in policy.witnesses if w.url is not None]
    head, last, known = proofs.witness_view(path, [(w.key_name, w.key_id) for w in asked])
    try:  # before asking anyone: a policy for another log (or another log key) is the wrong input
        policy_log_for(head.note, policy)
    except VerificationError as exc:
        raise InputError(f"witness policy: {exc}") from None
    starts = {w.name: last.get((w.key_name, w.key_id), 0) for w in asked}
    source = _proof_source(path, head, known)
    return head, ask_witnesses(asked, head.note, head.size, starts, source, timeout)


def _stored(
    answers: Sequence[WitnessAnswer], policy: WitnessPolicy, note: str
) -> list[CosignatureInfo]:
    """The answers' cosignatures as rows to store (each line re-verified with its witness's key)."""
    out = []
    for answer in answers:
        if not answer.lines:
            continue
        witness = policy.witness(answer.witness)
        key = (witness.key_name, witness.key_id, witness.public)
        for cosignature in note_spec.verify_cosignatures(
            note_spec.add_signatures(note, answer.lines), [key]
        ):
            out.append(
                CosignatureInfo(
                    cosignature.name, cosignature.key_id, cosignature.time, cosignature.line()
                )
            )
    return out


def cosign_latest(path: Path, policy: WitnessPolicy, timeout: float | None = None) -> CosignResult:
    """Submit the latest tree head to every policy witness with a URL and store their cosignatures.

    Raises ForkError (exit 1) when a witness proves a fork or rollback, naming it and both sizes;
    WitnessQuorumError (exit 4) when the quorum is not met otherwise, naming each witness's answer;
    InputError when the policy has no log key that signs this ledger's heads."""
    timeout = witness_timeout() if timeout is None else timeout
    for _ in range(MAX_ROUNDS):
        asked, answers = _ask(path, policy, timeout)
        stored = _stored(answers, policy, asked.note)
        head = heads.save_cosignatures(path, asked.size, asked.root, stored)
        larger = [a for a in answers if a.conflict is not None and a.conflict.larger]
        if not larger or head.size <= asked.size:
            break
        # appended meanwhile (another recorder, another cosigner): ask again with the newer head
    if (head.size, head.root) != (asked.size, asked.root):
        head = TreeHeadInfo(asked.origin, asked.size, asked.root, asked.note, tuple(stored))
    answered = {a.witness: a for a in answers}
    conflicts = [a for a in answers if a.conflict is not None]
    if conflicts:
        raise ForkError("; ".join(a.describe() for a in conflicts))
    # The quorum counts the cosignatures this round got: one stored from an earlier round says only
    # that the witness saw this head then, not that it has seen no larger tree since (a rollback).
    fresh = note_spec.add_signatures(asked.note, [c.line for c in stored])
    judged = check_cosigned(fresh, policy)
    if not judged.quorum:
        failed = [
            answered[w.name].describe() if w.name in answered else f"{w.name}: no URL in the policy"
            for w in policy.witnesses
            if w.name not in judged.cosigned
        ]
        raise WitnessQuorumError(f"witness {judged.missing}; " + "; ".join(failed))
    return CosignResult(head, judged, tuple(answers))


def check_stored_head(head: TreeHeadInfo, policy: WitnessPolicy) -> str | None:
    """What is wrong with the stored head under the policy (log key, quorum), or None when it holds."""
    try:
        judged = check_cosigned(head.cosigned_note, policy)
    except (VerificationError, InputError) as exc:
        return str(exc)
    if not judged.quorum:
        names = ", ".join(sorted(judged.cosigned)) or "none"
        return f"tree head of size {head.size}: {judged.missing} (valid cosignatures by: {names})"
    return None
