"""The bundle's key replay: every entry signed by a key that an earlier key entry in the bundle introduces
and that was not revoked before it; key and revoke entries signed by a log key; the tree head's key a log key.

Kept apart so that the one key ring (`ledger.spec.keyring`) can take its place in one edit.
"""

from __future__ import annotations

from collections.abc import Mapping

from ledger.bundle.parts import BundleEntry, Problems
from ledger.errors import InputError, LedgerError, VerificationError
from ledger.spec import entries as entry_bodies
from ledger.spec import envelope, keys, note

__all__ = ["check_signatures"]


def check_signatures(entries: Mapping[int, BundleEntry], vkey: str, p: Problems) -> None:
    """Each entry signed by a key the bundle introduces earlier and had not revoked; keys by a log key."""
    ring: dict[str, tuple[keys.PublicKey, str, int]] = {}
    revoked: dict[str, int] = {}
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
            ring.setdefault(public.keyid, (public, body.role, entry.index))
    for entry in sorted(entries.values(), key=lambda e: e.index):
        where = f"entry {entry.index}"
        info = ring.get(entry.signer)
        typed = entry.typed
        self_signed = (
            entry.index == 0
            and isinstance(typed, entry_bodies.KeyBody)
            and typed.keyid == entry.signer
        )
        if info is None or (info[2] >= entry.index and not self_signed):
            p.add(
                where,
                f"signed by key {entry.signer[:16]}…, which no earlier key entry in the bundle "
                "introduces",
            )
        else:
            public, role, _ = info
            at = revoked.get(entry.signer)
            if at is not None and at < entry.index:
                p.add(where, f"signed by key {entry.signer[:16]}…, revoked at entry {at}")
            if isinstance(typed, entry_bodies.KeyBody | entry_bodies.RevokeBody) and role != "log":
                p.add(
                    where,
                    f"a {typed.KIND} entry must be signed by a log key, found a {role} key",
                )
            try:
                envelope.verify_envelope(entry.envelope, public, index=entry.index)
            except VerificationError as exc:
                p.add(where, str(exc))
        if isinstance(typed, entry_bodies.RevokeBody):
            revoked.setdefault(typed.keyid, entry.index)
    try:
        _, _, head_key = note.parse_vkey(vkey)
    except InputError:
        return
    if not any(
        public.keyid == head_key.keyid and role == "log" for public, role, _ in ring.values()
    ):
        p.add(
            "keys",
            "the tree head's key is not a log key that the bundle's key entries introduce",
        )
