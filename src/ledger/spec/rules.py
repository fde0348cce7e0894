"""The audit's rules, shared by the audit and every verifier: pure, no I/O (DESIGN.md "Audit").

Finding types, the finding schema (one table: what `ledger audit --json` and bundles write, what
`verify-bundle` accepts), verdicts, the verdict rule with the Coverage rule (a `clean` that saw nothing is a lie),
and the lab's policy: `[[allow]]` (providers and models it may train on) and `[[opaque]]` (batches it
declares out of the comparison's scope). `ledger audit` applies them and `ledger verify-bundle`
re-applies them to what a bundle carries; neither may have a copy of its own.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ledger.errors import InputError

__all__ = [
    "FINDING_FIELDS",
    "FINDING_TYPES",
    "VERDICTS",
    "AllowRule",
    "CoverageGap",
    "FindingField",
    "OpaqueRule",
    "Policy",
    "coverage_gaps",
    "parse_policy",
    "uncovered",
    "verdict_of",
]

VERDICTS = ("clean", "suspect", "contaminated", "inconclusive")
FINDING_TYPES = ("declared", "exact", "near", "allowed")


# --- the finding schema --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FindingField:
    """One field of a finding's JSON form (schemas/audit.schema.json, bundles).

    `kind`: `str`, `int`, `float` or `path` (a list of checkpoint ids); any field may be null.
    `always`: written even when null (the schema requires it), else left out when null. `added_later`:
    bundles written before the field existed lack it, so `verify-bundle` accepts a finding without it.
    `labels`: for a field that names an entry by the id people know it by, (the field holding that
    entry's index, the body key the label must equal).
    """

    name: str
    kind: str
    always: bool = True
    added_later: bool = False
    labels: tuple[str, str] | None = None

    @property
    def in_every_bundle(self) -> bool:
        """Whether every bundle's findings carry this field (`verify-bundle` requires it)."""
        return self.always and not self.added_later


# In the order findings are written: the fixed fields first (DESIGN.md "JSON that outside tools read").
FINDING_FIELDS = (
    FindingField("type", "str"),
    FindingField("call", "int"),
    FindingField("batch", "int"),
    FindingField("record", "int"),
    FindingField("segment", "str"),
    FindingField("similarity", "float"),
    FindingField("purpose", "str"),
    FindingField("provider", "str"),
    FindingField("model", "str"),
    FindingField("suspect", "int"),
    FindingField("path", "path"),
    FindingField("basis", "str", always=False),
    FindingField("suspect_line", "int", always=False),
    FindingField("batch_id", "str", added_later=True, labels=("batch", "id")),
    FindingField("external_id", "str", added_later=True, labels=("call", "external_id")),
)


# --- the verdict rule ----------------------------------------------------------------------------------


def verdict_of(
    types: Iterable[str], *, inconclusive: bool, uncovered: bool = False, unreconciled: bool = False
) -> str:
    """DESIGN.md's rule: inconclusive > contaminated (declared/exact) > suspect (near only) > clean.

    `allowed` findings never change the verdict. `uncovered` (the Coverage rule: lineage records with
    nothing comparable that no policy declared out of scope) turns only `clean` into `inconclusive`: a
    clean that saw nothing is a lie, but coverage never hides a finding. `unreconciled` (the provider's
    usage or receipts disagree with the recorded calls: `spec.reconcile`) does the same: a clean over an
    incomplete call list proves nothing.
    """
    if inconclusive:
        return "inconclusive"
    seen = set(types)
    if seen & {"declared", "exact"}:
        return "contaminated"
    if "near" in seen:
        return "suspect"
    return "inconclusive" if uncovered or unreconciled else "clean"


@dataclass(frozen=True)
class CoverageGap:
    """A lineage batch with records that carry no comparable text (no segment): the audit saw nothing
    of them. `opaque` is the policy's reason when it declares the batch out of scope."""

    batch: int
    batch_id: str
    records: int
    without_text: int
    opaque: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "batch_id": self.batch_id,
            "records": self.records,
            "records_without_text": self.without_text,
            "opaque": self.opaque,
        }


def coverage_gaps(
    batches: Iterable[tuple[int, str, int, int]], policy: Policy
) -> list[CoverageGap]:
    """Gaps of lineage batches given as (entry index, id, count, records with text), in index order."""
    return [
        CoverageGap(index, batch_id, count, count - texted, policy.opaque_reason(batch_id))
        for index, batch_id, count, texted in sorted(batches)
        if texted < count
    ]


def uncovered(gaps: Iterable[CoverageGap]) -> bool:
    """Whether any gap is left that no `[[opaque]]` rule declared out of scope."""
    return any(gap.opaque is None for gap in gaps)


# --- policy ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllowRule:
    """`[[allow]]`: calls to `provider` (and, if given, models matching the `model` glob) may train."""

    provider: str
    model: str | None = None

    def allows(self, provider: str | None, model: str | None) -> bool:
        if provider != self.provider:
            return False
        return self.model is None or (model is not None and fnmatch.fnmatchcase(model, self.model))

    def to_json(self) -> dict[str, str]:
        return (
            {"provider": self.provider}
            if self.model is None
            else {"provider": self.provider, "model": self.model}
        )


@dataclass(frozen=True)
class OpaqueRule:
    """`[[opaque]]`: batches whose id matches the `batch` glob hold nothing comparable by design (token
    ids, numbers, images), declared out of the audit's scope for `reason`; listed wherever a verdict is."""

    batch: str
    reason: str

    def covers(self, batch_id: str) -> bool:
        return fnmatch.fnmatchcase(batch_id, self.batch)

    def to_json(self) -> dict[str, str]:
        return {"batch": self.batch, "reason": self.reason}


@dataclass(frozen=True)
class Policy:
    """Which providers and models the lab may train on (the default allows nothing), and which batches
    it declares out of the comparison's scope (the default: none)."""

    allow: tuple[AllowRule, ...] = ()
    opaque: tuple[OpaqueRule, ...] = ()

    def allows(self, provider: str | None, model: str | None) -> bool:
        return any(rule.allows(provider, model) for rule in self.allow)

    def opaque_reason(self, batch_id: str) -> str | None:
        """The reason of the first `[[opaque]]` rule covering the batch, or None."""
        return next((rule.reason for rule in self.opaque if rule.covers(batch_id)), None)

    def to_json(self) -> list[dict[str, str]]:
        """The allow rules (the `policy` list of reports and bundles)."""
        return [rule.to_json() for rule in self.allow]

    def opaque_json(self) -> list[dict[str, str]]:
        """The opaque rules (the `opaque` list of reports and bundles)."""
        return [rule.to_json() for rule in self.opaque]

    def with_opaque_json(self, value: Any, where: str = "opaque") -> Policy:
        """This policy with the opaque rules of a report's or bundle's `opaque` list."""
        if not isinstance(value, list):
            raise InputError(
                f"{where}: expected a list of opaque rules, found {type(value).__name__}"
            )
        rules = tuple(_opaque_rule(item, f"{where}[{i}]") for i, item in enumerate(value))
        return Policy(self.allow, rules)

    @classmethod
    def from_json(cls, value: Any, where: str = "policy") -> Policy:
        """Parse the list form that bundles carry (and `read_policy` builds)."""
        if not isinstance(value, list):
            raise InputError(
                f"{where}: expected a list of allow rules, found {type(value).__name__}"
            )
        return cls(tuple(_allow_rule(item, f"{where}[{i}]") for i, item in enumerate(value)))


def _allow_rule(item: Any, where: str) -> AllowRule:
    if not isinstance(item, Mapping):
        raise InputError(f"{where}: expected a table with provider and an optional model glob")
    unknown = sorted(set(item) - {"provider", "model"})
    if unknown:
        raise InputError(f"{where}: expected only provider and model, found {', '.join(unknown)}")
    provider, model = item.get("provider"), item.get("model")
    if not isinstance(provider, str) or not provider:
        raise InputError(f'{where}: expected provider = "<name>", found {provider!r}')
    if model is not None and (not isinstance(model, str) or not model):
        raise InputError(f'{where}: expected model = "<glob>", found {model!r}')
    return AllowRule(provider, model)


def _opaque_rule(item: Any, where: str) -> OpaqueRule:
    if not isinstance(item, Mapping):
        raise InputError(f"{where}: expected a table with a batch glob and a reason")
    unknown = sorted(set(item) - {"batch", "reason"})
    if unknown:
        raise InputError(f"{where}: expected only batch and reason, found {', '.join(unknown)}")
    batch, reason = item.get("batch"), item.get("reason")
    if not isinstance(batch, str) or not batch:
        raise InputError(f'{where}: expected batch = "<id glob>", found {batch!r}')
    if not isinstance(reason, str) or not reason.strip():
        raise InputError(
            f'{where}: expected reason = "<why nothing in it can be compared>", found {reason!r}'
        )
    return OpaqueRule(batch, reason)


def parse_policy(text: str, where: str = "policy") -> Policy:
    """A TOML policy: `[[allow]]` tables (`provider`, optional `model` glob) and `[[opaque]]` tables
    (`batch` id glob, `reason`). `where` names the source in errors (a file name)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"allow", "opaque"})
    if unknown:
        raise InputError(
            f"{where}: expected only [[allow]] and [[opaque]] tables, found {', '.join(unknown)}"
        )
    tables: dict[str, list[Any]] = {}
    for name in ("allow", "opaque"):
        rules = data.get(name, [])
        if not isinstance(rules, list):
            raise InputError(
                f"{where}: expected [[{name}]] tables (an array of tables), found a single value"
            )
        tables[name] = rules
    return Policy(
        tuple(
            _allow_rule(rule, f"{where}: [[allow]] #{i + 1}")
            for i, rule in enumerate(tables["allow"])
        ),
        tuple(
            _opaque_rule(rule, f"{where}: [[opaque]] #{i + 1}")
            for i, rule in enumerate(tables["opaque"])
        ),
    )
