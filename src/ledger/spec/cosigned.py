"""A cosigned tree head judged against a witness policy (DESIGN.md "Witnesses"): signed by one of the
policy's log keys, and cosigned by a quorum of its witnesses. Pure: the log (`ledger verify`), the log
side of the witness protocol and the offline bundle verifier all apply this one rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import VerificationError
from ledger.spec import note as note_spec
from ledger.spec.witness_policy import PolicyLog, WitnessPolicy

__all__ = ["CosignedHead", "check_cosigned", "policy_log_for"]


@dataclass(frozen=True)
class CosignedHead:
    """What a note proves under a policy: its head, the policy log key that signed it, the policy
    witnesses (by policy name) with a valid cosignature, and whether they make the quorum."""

    head: note_spec.TreeHead
    log: PolicyLog
    cosigned: frozenset[str]
    quorum: bool
    missing: str  # "quorum Q is not met: what it lacks" ("" when met)


def policy_log_for(note: str, policy: WitnessPolicy) -> tuple[note_spec.TreeHead, PolicyLog]:
    """The head and the policy's log key that signs it (its name is the head's origin).

    VerificationError when no log of the policy signs it; InputError for a malformed note."""
    head, _ = note_spec.open_signed_note(note)
    errors = []
    for log in policy.logs:
        if log.name != head.origin:
            continue
        try:
            return note_spec.verify_tree_head(note, (log.name, log.public)), log
        except VerificationError as exc:
            errors.append(str(exc))
    if not errors:
        known = ", ".join(sorted({log.name for log in policy.logs})) or "none"
        raise VerificationError(
            f"the witness policy has no log key for origin {head.origin!r} (its logs: {known})"
        )
    raise VerificationError(
        f"the tree head is not signed by the witness policy's log key for {head.origin!r} "
        f"({errors[-1]})"
    )


def check_cosigned(note: str, policy: WitnessPolicy) -> CosignedHead:
    """Judge a cosigned note: the log signature by a policy log key (else VerificationError), then
    which policy witnesses cosigned it validly (invalid and unknown lines are ignored) and whether
    they satisfy the policy's quorum. The quorum is reported, not raised: callers name what is missing."""
    head, log = policy_log_for(note, policy)
    cosigned = frozenset(
        policy.cosigned_names(note_spec.verify_cosignatures(note, policy.cosigners()))
    )
    quorum = policy.satisfied(cosigned)
    return CosignedHead(head, log, cosigned, quorum, "" if quorum else policy.explain(cosigned))
