"""The parts of an audit bundle, decoded strictly: fixed keys, canonical base64, hex hashes, record leaves.

Every helper raises `Bad` for a part that fails a check; the verifier collects it as a `Problem` at that part.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ledger.errors import InputError
from ledger.spec import entries
from ledger.spec import envelope as envelope_spec
from ledger.spec import leaves as leaves_spec
from ledger.spec.problems import Problem

__all__ = [
    "BASES",
    "BUNDLE_FORMAT",
    "ENTRY_KEYS",
    "HEX64",
    "RECORD_FP_KEYS",
    "RECORD_KEYS",
    "Bad",
    "BundleEntry",
    "Problems",
    "as_int",
    "b64",
    "fixed_keys",
    "hashes",
    "opt_str",
    "parse_record_leaf",
]

BUNDLE_FORMAT = "ledger.audit-bundle/v1"
BASES = ("declared", "exact", "near")
HEX64 = re.compile(r"[0-9a-f]{64}")
ENTRY_KEYS = frozenset({"index", "leaf", "proof"})
RECORD_KEYS = frozenset({"batch", "position", "leaf", "proof"})
RECORD_FP_KEYS = frozenset({"fingerprint", "fingerprint_proof"})


@dataclass
class BundleEntry:
    index: int
    leaf: bytes
    body: dict[str, Any]  # as signed: what the key list and the lineage closure are handed
    signer: str
    envelope: envelope_spec.Envelope
    typed: entries.Body  # the body's typed view: what the checks read


class Problems:
    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(Problem.at(where, what))


class Bad(ValueError):
    """A bundle part that fails a check; verification collects it as a problem."""


def b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise Bad(f"{what}: expected base64 text, found {type(value).__name__}")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise Bad(f"{what}: not base64 ({exc})") from None
    if base64.b64encode(data).decode("ascii") != value:
        # One spelling per value: otherwise an altered byte could leave the decoded bytes unchanged.
        raise Bad(f"{what}: not canonical base64")
    return data


def hashes(value: Any, what: str) -> list[bytes]:
    if not isinstance(value, list):
        raise Bad(f"{what}: expected a list of hex hashes")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not HEX64.fullmatch(item):
            raise Bad(f"{what}[{i}]: expected 64 lowercase hex digits, found {item!r:.80}")
        out.append(bytes.fromhex(item))
    return out


def fixed_keys(
    item: Mapping[str, Any], required: frozenset[str], optional: frozenset[str] = frozenset()
) -> None:
    """Bundle items have fixed keys: a renamed key is an altered bundle, not an extension."""
    missing = sorted(required - item.keys())
    unknown = sorted(item.keys() - required - optional)
    if missing or unknown:
        raise Bad(f"expected keys {sorted(required)}, missing {missing}, unknown {unknown}")


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_record_leaf(leaf: bytes) -> tuple[str, frozenset[str]]:
    """(record digest hex, segment hashes hex) of a record leaf that must be in its one canonical form."""
    try:
        doc = json.loads(leaf)
        digest, segments = doc["sha256"], doc["segments"]
        rebuilt = leaves_spec.record_leaf(
            bytes.fromhex(digest), [bytes.fromhex(s) for s in segments]
        )
    except (ValueError, KeyError, TypeError, AttributeError, InputError) as exc:
        raise Bad(f"not a record leaf: {exc}") from None
    if rebuilt != leaf:
        raise Bad("not the canonical form of a record leaf")
    return str(digest), frozenset(segments)


def opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
