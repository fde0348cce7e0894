"""C2SP tlog-policy files: the known logs, the known witnesses and the quorum of cosignatures.

A policy is lines of `log VKEY [URL]`, `witness NAME VKEY [URL]`, `group NAME all|any|K NAME...`
and exactly one `quorum NAME` (`none` needs no cosignature). A group or the quorum names only
witnesses and groups defined on earlier lines, so no definition is circular. Witness and group names
share one namespace; the key name inside a witness vkey is what its cosignature lines carry. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ledger.errors import InputError
from ledger.spec.keys import PublicKey
from ledger.spec.note import Cosignature, parse_vkey, parse_witness_vkey

__all__ = [
    "PolicyLog",
    "PolicyWitness",
    "WitnessPolicy",
    "parse_witness_policy",
]

QUORUM_NONE = "none"
_K_RE = re.compile(r"[0-9]+")
_WHITESPACE = re.compile(r"[ \t]+")
# tlog-policy "Character set": tab, newline, printable ASCII and any octet with the high bit set
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

Threshold = str | int  # "all", "any" or K (1 <= K <= the number of members)


@dataclass(frozen=True)
class PolicyLog:
    """A log whose tree heads the policy accepts: its vkey (key name = origin) and optional URL."""

    vkey: str
    name: str
    key_id: bytes
    public: PublicKey
    url: str | None


@dataclass(frozen=True)
class PolicyWitness:
    """A witness: `name` is policy-local; `key_name` (inside its vkey) is on its cosignature lines."""

    name: str
    vkey: str
    key_name: str
    key_id: bytes
    public: PublicKey
    url: str | None


@dataclass(frozen=True)
class WitnessPolicy:
    """A parsed policy; `satisfied` evaluates the quorum over the witnesses that cosigned."""

    logs: tuple[PolicyLog, ...]
    witnesses: tuple[PolicyWitness, ...]
    groups: Mapping[str, tuple[Threshold, tuple[str, ...]]]
    quorum: str
    _by_name: Mapping[str, PolicyWitness] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {w.name: w for w in self.witnesses})

    def witness(self, name: str) -> PolicyWitness:
        """The witness the policy calls `name`."""
        try:
            return self._by_name[name]
        except KeyError:
            raise InputError(f"the witness policy defines no witness {name!r:.80}") from None

    def cosigners(self) -> list[tuple[str, bytes, PublicKey]]:
        """Every witness as (key name, key id, key): what `note.verify_cosignatures` takes."""
        return [(w.key_name, w.key_id, w.public) for w in self.witnesses]

    def cosigned_names(self, cosignatures: Iterable[Cosignature]) -> set[str]:
        """The policy names of the witnesses that made `cosignatures` (verified ones only!)."""
        by_key = {(w.key_name, w.key_id): w.name for w in self.witnesses}
        return {by_key[(c.name, c.key_id)] for c in cosignatures if (c.name, c.key_id) in by_key}

    def _needed(self, threshold: Threshold, members: tuple[str, ...]) -> int:
        if threshold == "all":
            return len(members)
        if threshold == "any":
            return 1
        assert isinstance(threshold, int)
        return threshold

    def _holds(self, name: str, cosigned: frozenset[str]) -> bool:
        if name in self.groups:
            threshold, members = self.groups[name]
            held = sum(self._holds(member, cosigned) for member in members)
            return held >= self._needed(threshold, members)
        return name in cosigned

    def satisfied(self, cosigned: Iterable[str]) -> bool:
        """Whether the witnesses named `cosigned` (each with a valid cosignature) meet the quorum."""
        if self.quorum == QUORUM_NONE:
            return True
        return self._holds(self.quorum, frozenset(cosigned))

    def explain(self, cosigned: Iterable[str]) -> str:
        """One line: the quorum and what it still lacks (or that it is met)."""
        have = frozenset(cosigned)
        if self.satisfied(have):
            return f"quorum {self.quorum} is met"
        return f"quorum {self.quorum} is not met: {self._lacks(self.quorum, have)}"

    def _lacks(self, name: str, cosigned: frozenset[str]) -> str:
        if name not in self.groups:
            return f"no cosignature from witness {name}"
        threshold, members = self.groups[name]
        needed = self._needed(threshold, members)
        held = [m for m in members if self._holds(m, cosigned)]
        missing = [self._lacks(m, cosigned) for m in members if m not in held]
        return (
            f"group {name} needs {needed} of {len(members)}, has {len(held)} ({'; '.join(missing)})"
        )


def _fail(source: str, number: int, what: str) -> InputError:
    return InputError(f"{source}:{number}: {what}")


def parse_witness_policy(text: str, source: str = "policy") -> WitnessPolicy:
    """Parse a C2SP tlog-policy file; every error is one `SOURCE:LINE: what` InputError.

    Refused as the spec forbids: characters other than tab, newline and printable text; an unknown
    keyword; a log or witness key listed twice (same public key, whatever its name); a name defined
    twice or `none` defined; a group or quorum naming something not defined on an earlier line; a
    group member listed twice or `none` as a member; K outside 1..n; a wrong vkey type (logs 0x01,
    witnesses 0x04 cosignature/v1); no quorum line or more than one.
    """
    logs: list[PolicyLog] = []
    witnesses: list[PolicyWitness] = []
    groups: dict[str, tuple[Threshold, tuple[str, ...]]] = {}
    names: set[str] = set()
    log_keys: dict[bytes, int] = {}
    witness_keys: dict[bytes, int] = {}
    quorum: tuple[str, int] | None = None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        bad = _FORBIDDEN.search(raw)
        if bad:
            raise _fail(source, number, f"control character {bad.group()!r} is not allowed")
        words = [w for w in _WHITESPACE.split(raw) if w]
        if not words or words[0].startswith("#"):
            continue
        keyword, args = words[0], words[1:]

        if keyword == "log":
            if len(args) not in (1, 2):
                raise _fail(source, number, f"expected 'log VKEY [URL]', found {len(args)} fields")
            try:
                name, key_id, public = parse_vkey(args[0])
            except InputError as exc:
                raise _fail(source, number, f"log key: {exc}") from None
            if public.raw in log_keys:
                raise _fail(
                    source, number, f"duplicate log key (already on line {log_keys[public.raw]})"
                )
            log_keys[public.raw] = number
            url = args[1] if len(args) == 2 else None
            logs.append(PolicyLog(args[0], name, key_id, public, url))

        elif keyword == "witness":
            if len(args) not in (2, 3):
                raise _fail(
                    source, number, f"expected 'witness NAME VKEY [URL]', found {len(args)} fields"
                )
            _define(args[0], names, source, number)
            try:
                key_name, key_id, public = parse_witness_vkey(args[1])
            except InputError as exc:
                raise _fail(source, number, f"witness {args[0]}: {exc}") from None
            if public.raw in witness_keys:
                raise _fail(
                    source,
                    number,
                    f"duplicate witness key (already on line {witness_keys[public.raw]})",
                )
            witness_keys[public.raw] = number
            url = args[2] if len(args) == 3 else None
            witnesses.append(PolicyWitness(args[0], args[1], key_name, key_id, public, url))
            names.add(args[0])

        elif keyword == "group":
            if len(args) < 3:
                raise _fail(
                    source, number, "expected 'group NAME all|any|K MEMBER...' with a member"
                )
            group, threshold_text, members = args[0], args[1], tuple(args[2:])
            _define(group, names, source, number)
            seen: set[str] = set()
            for member in members:
                if member == QUORUM_NONE:
                    raise _fail(source, number, "'none' cannot be a group member")
                if member not in names:
                    raise _fail(
                        source, number, f"group {group} names {member!r}, not defined above"
                    )
                if member in seen:
                    raise _fail(source, number, f"group {group} lists {member} twice")
                seen.add(member)
            threshold: Threshold
            if threshold_text in ("all", "any"):
                threshold = threshold_text
            elif _K_RE.fullmatch(threshold_text) and 1 <= int(threshold_text) <= len(members):
                threshold = int(threshold_text)
            else:
                raise _fail(
                    source,
                    number,
                    f"group {group}: expected all, any or K in 1..{len(members)}, "
                    f"found {threshold_text!r:.40}",
                )
            groups[group] = (threshold, members)
            names.add(group)

        elif keyword == "quorum":
            if len(args) != 1:
                raise _fail(source, number, f"expected 'quorum NAME', found {len(args)} fields")
            if quorum is not None:
                raise _fail(source, number, f"a second quorum line (the first is line {quorum[1]})")
            if args[0] != QUORUM_NONE and args[0] not in names:
                raise _fail(source, number, f"quorum names {args[0]!r}, not defined above")
            quorum = (args[0], number)

        else:
            raise _fail(
                source,
                number,
                f"expected log, witness, group or quorum, found {keyword!r:.40}",
            )
    if quorum is None:
        raise _fail(source, len(lines) + 1, "no quorum line (write 'quorum none' for none)")
    return WitnessPolicy(
        logs=tuple(logs),
        witnesses=tuple(witnesses),
        groups=MappingProxyType(groups),
        quorum=quorum[0],
    )


def _define(name: str, names: set[str], source: str, number: int) -> None:
    if name == QUORUM_NONE:
        raise _fail(source, number, "'none' is predefined and cannot be defined")
    if name in names:
        raise _fail(source, number, f"{name} is already defined (witnesses and groups share names)")
