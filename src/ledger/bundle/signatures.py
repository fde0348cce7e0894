"""The bundle's signatures, checked with the one key ring (`ledger.spec.keyring`): every entry signed by a
key that an earlier key entry in the bundle introduces and that was not revoked before it; key and revoke
entries signed by a log key; the tree head's key a log key the bundle introduces.
"""

from __future__ import annotations

from collections.abc import Mapping

from ledger.bundle.parts import BundleEntry, Problems
from ledger.errors import InputError, LedgerError, VerificationError
from ledger.spec import entries as entry_bodies
from ledger.spec import envelope, keys, note
from ledger.spec.keyring import KeyRing

__all__ = ["check_signatures"]


def _ring(entries: Mapping[int, BundleEntry], p: Problems) -> KeyRing:
    """The key ring of the bundle's key and revoke entries, in index order. A key entry whose key is
    unusable is named; the ring's own rule breaks (a key introduced twice, a revoke of an unknown or
    revoked key) leave it unchanged, as in the log."""
    ring = KeyRing()
    for entry in sorted(entries.values(), key=lambda e: e.index):
        body = entry.typed
        if isinstance(body, entry_bodies.KeyBody):
            try:
                public = keys.PublicKey.from_b64(body.public_key)
            except LedgerError as exc:
                p.add(f"entry {entry.index}", f"key entry with an unusable public key: {exc}")
                continue
            if public.keyid != body.keyid:
                p.add(
                    f"entry {entry.index}",
                    f"key entry: expected keyid {public.keyid}, found {body.keyid}",
                )
                continue
        if isinstance(body, entry_bodies.KeyBody | entry_bodies.RevokeBody):
            ring.apply(entry.index, entry.body)
    return ring


def check_signatures(entries: Mapping[int, BundleEntry], vkey: str, p: Problems) -> None:
    """Each entry signed by a key the bundle introduces earlier and had not revoked; keys by a log key."""
    ring = _ring(entries, p)
    for entry in sorted(entries.values(), key=lambda e: e.index):
        where = f"entry {entry.index}"
        kind = entry.typed.KIND
        problems = ring.signer_problems(entry.index, entry.signer, kind)
        if any(problem.code == "signer-unknown" for problem in problems):
            p.add(
                where,
                f"signed by key {entry.signer[:16]}…, which no earlier key entry in the bundle "
                "introduces",
            )
            continue
        for problem in problems:
            assert problem.known is not None
            if problem.code == "signer-revoked":
                p.add(
                    where,
                    f"signed by key {entry.signer[:16]}…, revoked at entry {problem.known.revoked_at}",
                )
            elif problem.code == "signer-not-log":
                p.add(
                    where,
                    f"a {kind} entry must be signed by a log key, found a {problem.known.role} key",
                )
        signer = ring.get(entry.signer)
        assert signer is not None
        try:
            envelope.verify_envelope(entry.envelope, signer.public, index=entry.index)
        except VerificationError as exc:
            p.add(where, str(exc))
    try:
        _, _, head_key = note.parse_vkey(vkey)
    except InputError:
        return
    if not any(k.keyid == head_key.keyid for k in ring.log_keys()):
        p.add(
            "keys", "the tree head's key is not a log key that the bundle's key entries introduce"
        )
