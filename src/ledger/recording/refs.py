"""Ids and references: what a new id may look like, and turning `derived_from` items into call indexes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.errors import NotFoundError, UsageError
from ledger.log import store
from ledger.log.store import recording as store_recording
from ledger.spec import envelope

__all__ = ["REF_KINDS", "body_of", "check_id", "resolve_calls"]

REF_KINDS = ("batch", "checkpoint", "dataset")  # the kinds whose `id` is a REF (unique across them)


def check_id(id: str, what: str = "id") -> str:
    """Ids are REFs: non-empty, no surrounding space, and never all digits (that is an entry index)."""
    if not isinstance(id, str) or not id or id != id.strip():
        raise UsageError(f"{what} {id!r}: expected a non-empty string without surrounding spaces")
    if id.isdigit():
        raise UsageError(
            f"{what} {id!r}: an all-digit id would read as an entry index; add a prefix"
        )
    return id


def body_of(leaf: bytes) -> dict[str, Any]:
    return envelope.parse_envelope(leaf).body()


def resolve_calls(conn: store.Connection, refs: Sequence[int | str]) -> list[int]:
    """Turn derived_from items (entry indexes, call external ids, or a call's custom id where one
    call alone has it) into call entry indexes."""
    out: list[int] = []
    missing: list[str] = []
    for ref in refs:
        if isinstance(ref, bool):
            raise UsageError(
                f"derived_from item {ref!r}: expected an entry index, or a call's external or custom id"
            )
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            kind = store_recording.kind_at(conn, int(ref))
            if kind is None:
                missing.append(f"entry {ref}")
            elif kind != "call":
                raise NotFoundError(
                    f"derived_from {ref}: expected a call entry, found a {kind} entry"
                )
            else:
                out.append(int(ref))
            continue
        rows = store_recording.calls_with_external_id(conn, str(ref))
        providers = {str(r[1]) for r in rows}
        if not rows:
            by_custom_id = store.calls_with_custom_id(conn, str(ref))
            if len(by_custom_id) > 1:
                raise UsageError(
                    f"derived_from: {store.ambiguous_custom_id(str(ref), by_custom_id)}"
                )
            if by_custom_id:
                out.append(by_custom_id[0])
            else:
                missing.append(f"call {ref!r}")
        elif len(providers) > 1:
            raise UsageError(
                f"derived_from {ref!r}: calls of several providers ({', '.join(sorted(providers))}) "
                "have this external id; give the entry index instead"
            )
        else:
            out.append(int(rows[0][0]))
    if missing:
        raise NotFoundError(f"derived_from names no recorded call: {', '.join(missing)}")
    return sorted(set(out))
