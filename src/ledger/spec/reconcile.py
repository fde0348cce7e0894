"""Completeness against the provider's records (DESIGN.md): the rules `reconcile`, `audit --usage` and
`verify-bundle --log` all apply. Pure: parsed usage buckets, receipts and recorded calls in, a
`Reconciliation` out.

The rules, stated once:
- A recorded call falls in the bucket with `start_time <= created < end_time` (`created`: the provider's
  own timestamp in the call body). A call without `created` cannot be placed (`unplaced`); one outside
  every bucket is `outside` the export, reported and not judged (inside the window but between buckets
  it is in a `hole`: the export is missing a bucket, which leaves the comparison incomplete).
- A bucket's result rows are compared at the grain of what both sides know: the model when the export
  is grouped by model, and `batch` when it is grouped by batch. A call is `batch: true` when its body
  carries a `custom_id` (only calls imported from a Batch output file do). Grouping the ledger cannot
  mirror (project_id, user_id, api_key_id, service_tier) is summed over and listed in `merged`.
- Per cell: the provider's `num_model_requests`, `input_tokens`, `output_tokens` against the recorded
  calls' count and usage sums (`prompt_tokens`/`input_tokens`, `completion_tokens`/`output_tokens`).
  A recorded call without usage makes its cell's recorded tokens a lower bound.
- Receipts (response ids the provider served) must each be a recorded call's `external_id`; receipts
  that carry `created` cover the window from the first to the last, and every recorded call in scope
  in that window must be among them.
- Verdict: `mismatch` when anything differs (exit 1), else `incomplete` when calls could not be placed or
  the export has holes (exit 3), else `match` (exit 0).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from ledger.errors import InputError

__all__ = [
    "BATCH_KEY",
    "GROUP_FIELDS",
    "INPUT_TOKEN_KEYS",
    "OUTPUT_TOKEN_KEYS",
    "RECONCILE_VERDICTS",
    "STORED_CHAT_ENDPOINT",
    "Bucket",
    "Cell",
    "Difference",
    "Receipt",
    "ReceiptCheck",
    "Reconciliation",
    "RecordedCall",
    "UsageRow",
    "check_buckets",
    "reconcile",
    "recorded_call",
]

RECONCILE_VERDICTS: Final = ("match", "mismatch", "incomplete")
# The usage object's token counts, first key found wins: Chat/Completions, then Responses.
INPUT_TOKEN_KEYS: Final = ("prompt_tokens", "input_tokens")
OUTPUT_TOKEN_KEYS: Final = ("completion_tokens", "output_tokens")
# Only calls imported from a Batch output file carry the line's custom_id.
BATCH_KEY: Final = "custom_id"
# The result fields an export may be grouped by (`group_by`); the ledger mirrors model and batch.
GROUP_FIELDS: Final = ("model", "batch", "project_id", "user_id", "api_key_id", "service_tier")
STORED_CHAT_ENDPOINT: Final = "/v1/chat/completions"
MAX_EXAMPLES: Final = 20  # outside calls listed by id (all are counted)


class RecordedCall(NamedTuple):
    """One recorded call as reconciliation sees it (the store reads these columns in SQL)."""

    entry: int  # the entry's index in the log
    external_id: str | None
    model: str | None
    created: int | None
    batch: bool
    input_tokens: int | None  # None: the body carries no usage
    output_tokens: int | None
    endpoint: str | None


def _count(usage: Mapping[str, Any], keys: Sequence[str]) -> int | None:
    for key in keys:
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def recorded_call(index: int, body: Mapping[str, Any]) -> RecordedCall:
    """A call entry body as a `RecordedCall` (the offline verifier's path; the store reads the same)."""
    usage = body.get("usage")
    usage = usage if isinstance(usage, Mapping) else {}
    created = body.get("created")
    ext = body.get("external_id")
    model = body.get("model")
    endpoint = body.get("endpoint")
    return RecordedCall(
        index,
        ext if isinstance(ext, str) else None,
        model if isinstance(model, str) else None,
        created if isinstance(created, int) and not isinstance(created, bool) else None,
        body.get(BATCH_KEY) is not None,
        _count(usage, INPUT_TOKEN_KEYS),
        _count(usage, OUTPUT_TOKEN_KEYS),
        endpoint if isinstance(endpoint, str) else None,
    )


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One `organization.usage.completions.result`: its grouping values and the provider's counts."""

    requests: int
    input_tokens: int
    output_tokens: int
    model: str | None = None  # set when the export is grouped by model
    batch: bool | None = None  # set when grouped by batch
    groups: tuple[
        tuple[str, Any], ...
    ] = ()  # the other non-null GROUP_FIELDS values (project_id, ...)
    extra: tuple[
        tuple[str, int], ...
    ] = ()  # input_cached_tokens, audio tokens: shown, not compared


@dataclass(frozen=True)
class Bucket:
    """One `bucket` of a usage page: [start_time, end_time) in Unix seconds, and its result rows."""

    start: int
    end: int
    rows: tuple[UsageRow, ...]
    source: str  # "file:line" for messages

    def same_results(self, other: Bucket) -> bool:
        return sorted(map(repr, self.rows)) == sorted(map(repr, other.rows))


@dataclass(frozen=True)
class Receipt:
    """A response id the provider served; `created` when the receipt says when (stored completions do)."""

    id: str
    created: int | None
    source: str
    stored_chat: bool = False  # from a `GET /v1/chat/completions` list page


def check_buckets(buckets: Iterable[Bucket]) -> list[Bucket]:
    """Buckets in time order, the same bucket given twice (overlapping pages) kept once.

    Raises InputError for two pages that disagree on a bucket or buckets that overlap partly (exports of
    different widths or ranges mixed up): both sides' sources are named.
    """
    by_span: dict[tuple[int, int], Bucket] = {}
    for bucket in buckets:
        if bucket.end <= bucket.start:
            raise InputError(
                f"{bucket.source}: bucket end_time {bucket.end} is not after start_time {bucket.start}"
            )
        seen = by_span.get((bucket.start, bucket.end))
        if seen is None:
            by_span[(bucket.start, bucket.end)] = bucket
        elif not seen.same_results(bucket):
            raise InputError(
                f"{bucket.source}: bucket {bucket.start}..{bucket.end} differs from the same bucket in "
                f"{seen.source} (two exports of different queries?)"
            )
    ordered = sorted(by_span.values(), key=lambda b: (b.start, b.end))
    for before, after in zip(ordered, ordered[1:]):
        if after.start < before.end:
            raise InputError(
                f"{after.source}: bucket {after.start}..{after.end} overlaps bucket "
                f"{before.start}..{before.end} of {before.source} (mixed bucket widths or offsets)"
            )
    return ordered


@dataclass
class Cell:
    """One compared cell: a bucket and the mirrored grouping values, both sides' numbers."""

    bucket: int  # position in the bucket list
    model: str | None
    batch: bool | None
    served_requests: int = 0
    served_input: int = 0
    served_output: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    without_usage: int = 0
    calls: list[int] = field(default_factory=list)  # positions in the call list

    @property
    def status(self) -> str:
        """`match`, `unrecorded` (the provider served more), `unserved` (the ledger holds more) or
        `tokens` (the same requests, other token counts)."""
        if self.served_requests > self.requests:
            return "unrecorded"
        if self.served_requests < self.requests:
            return "unserved"
        if self.without_usage:  # recorded tokens are a lower bound
            if self.served_input < self.input_tokens or self.served_output < self.output_tokens:
                return "tokens"
            return "match"
        if (self.served_input, self.served_output) != (self.input_tokens, self.output_tokens):
            return "tokens"
        return "match"


@dataclass(frozen=True)
class Difference:
    """A cell that differs, with both sides' numbers and the recorded calls in it."""

    kind: str
    start: int
    end: int
    model: str | None
    batch: bool | None
    served: Mapping[str, int]
    recorded: Mapping[str, int]
    calls: tuple[tuple[int, str | None], ...]  # (entry index, external id) of the recorded calls

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start_time": self.start,
            "end_time": self.end,
            "model": self.model,
            "batch": self.batch,
            "served": dict(self.served),
            "recorded": dict(self.recorded),
            "calls": [{"index": i, "external_id": e} for i, e in self.calls],
        }


@dataclass(frozen=True)
class ReceiptCheck:
    """Receipts against the recorded calls: ids never recorded, and calls in their window not receipted."""

    receipts: int
    window: tuple[int, int] | None
    unrecorded: tuple[Receipt, ...]
    unreceipted: tuple[RecordedCall, ...]
    in_window: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "receipts": self.receipts,
            "window": None
            if self.window is None
            else {"start_time": self.window[0], "end_time": self.window[1]},
            "calls_in_window": self.in_window,
            "unrecorded": [
                {"id": r.id, "created": r.created, "source": r.source} for r in self.unrecorded
            ],
            "unreceipted": [_call_json(c) for c in self.unreceipted],
        }


def _call_json(call: RecordedCall) -> dict[str, Any]:
    return {
        "index": call.entry,
        "external_id": call.external_id,
        "model": call.model,
        "created": call.created,
    }


@dataclass(frozen=True)
class Reconciliation:
    """The outcome: every bucket's cells, what differs, and what could not be judged."""

    provider: str
    buckets: tuple[Bucket, ...]
    cells: tuple[Cell, ...]
    differences: tuple[Difference, ...]
    calls: int
    unplaced: tuple[RecordedCall, ...]
    outside: int
    outside_examples: tuple[RecordedCall, ...]
    holes: tuple[tuple[int, int], ...]
    merged: tuple[str, ...]
    receipts: ReceiptCheck | None

    @property
    def window(self) -> tuple[int, int] | None:
        return (self.buckets[0].start, self.buckets[-1].end) if self.buckets else None

    @property
    def verdict(self) -> str:
        if self.differences or (
            self.receipts is not None and (self.receipts.unrecorded or self.receipts.unreceipted)
        ):
            return "mismatch"
        if self.unplaced or self.holes:
            return "incomplete"
        return "match"

    def reasons(self) -> list[str]:
        """One sentence per kind of discrepancy (the audit's inconclusive reasons)."""
        out: list[str] = []
        kinds: dict[str, int] = {}
        for d in self.differences:
            kinds[d.kind] = kinds.get(d.kind, 0) + 1
        words = {
            "unrecorded": "the provider served more requests than recorded",
            "unserved": "recorded calls the provider never served",
            "tokens": "token counts differ",
        }
        for kind, n in sorted(kinds.items()):
            out.append(f"usage: {words[kind]} in {n} bucket row{'s' if n != 1 else ''}")
        if self.receipts is not None and self.receipts.unrecorded:
            out.append(
                f"receipts: {len(self.receipts.unrecorded)} served response id(s) never recorded"
            )
        if self.receipts is not None and self.receipts.unreceipted:
            out.append(
                f"receipts: {len(self.receipts.unreceipted)} recorded call(s) in the receipts' window "
                "missing from them"
            )
        untimed = sum(1 for c in self.unplaced if c.created is None)
        if untimed:
            out.append(f"{untimed} recorded call(s) carry no provider `created` time")
        if len(self.unplaced) > untimed:
            out.append(
                f"{len(self.unplaced) - untimed} recorded call(s) fall between the export's buckets"
            )
        if self.holes:
            out.append(
                f"the usage export misses {len(self.holes)} bucket span(s) inside its window"
            )
        return out


def reconcile(
    provider: str,
    buckets: Sequence[Bucket],
    calls: Sequence[RecordedCall],
    receipts: Sequence[Receipt] | None = None,
) -> Reconciliation:
    """Compare the provider's buckets (from `check_buckets`) and receipts with the recorded calls."""
    starts = [b.start for b in buckets]
    ends = [b.end for b in buckets]
    rows = [r for b in buckets for r in b.rows]
    any_model = any(r.model is not None for r in rows)
    any_batch = any(r.batch is not None for r in rows)
    grain: list[tuple[bool, bool]] = []
    cells: dict[tuple[int, str | None, bool | None], Cell] = {}
    merged: set[str] = set()
    for i, bucket in enumerate(buckets):
        if bucket.rows:
            by_model = by_batch = False
            for r in bucket.rows:
                by_model = by_model or r.model is not None
                by_batch = by_batch or r.batch is not None
        else:  # an empty bucket: the grain of the rest of the export
            by_model, by_batch = any_model, any_batch
        grain.append((by_model, by_batch))
        if not bucket.rows:
            cells[(i, None, None)] = Cell(i, None, None)
        for row in bucket.rows:
            if row.groups:
                merged.update(name for name, _ in row.groups)
            model = row.model if by_model else None
            batch = row.batch if by_batch else None
            cell = cells.setdefault((i, model, batch), Cell(i, model, batch))
            cell.served_requests += row.requests
            cell.served_input += row.input_tokens
            cell.served_output += row.output_tokens
    holes = tuple((e, s) for e, s in zip(ends, starts[1:]) if s > e)
    unplaced: list[RecordedCall] = []
    outside: list[RecordedCall] = []
    outside_count = 0
    first, last = (starts[0], ends[-1]) if buckets else (0, 0)
    for position, call in enumerate(calls if buckets else ()):  # receipts only: nothing to place
        created = call.created
        if created is None:
            unplaced.append(call)
            continue
        i = bisect.bisect_right(starts, created) - 1
        if i < 0 or created >= ends[i]:
            if first <= created < last:  # in a hole of the export: nothing to compare with
                unplaced.append(call)
            else:
                outside_count += 1
                if len(outside) < MAX_EXAMPLES:
                    outside.append(call)
            continue
        by_model, by_batch = grain[i]
        key = (i, call.model if by_model else None, call.batch if by_batch else None)
        found = cells.get(key)
        if found is None:
            found = cells[key] = Cell(*key)
        found.requests += 1
        found.calls.append(position)
        if call.input_tokens is None and call.output_tokens is None:
            found.without_usage += 1
        else:
            found.input_tokens += call.input_tokens or 0
            found.output_tokens += call.output_tokens or 0
    # an empty bucket's placeholder cell goes when calls gave it cells of its own
    own = {k[0] for k in cells if k[1:] != (None, None)}
    for i in own:
        placeholder = cells.get((i, None, None))
        if placeholder is not None and not buckets[i].rows and not placeholder.requests:
            del cells[(i, None, None)]
    ordered = sorted(
        cells.values(),
        key=lambda c: (c.bucket, c.model or "", -1 if c.batch is None else int(c.batch)),
    )
    differences = tuple(
        Difference(
            c.status,
            buckets[c.bucket].start,
            buckets[c.bucket].end,
            c.model,
            c.batch,
            {
                "requests": c.served_requests,
                "input_tokens": c.served_input,
                "output_tokens": c.served_output,
            },
            {
                "requests": c.requests,
                "input_tokens": c.input_tokens,
                "output_tokens": c.output_tokens,
                "without_usage": c.without_usage,
            },
            tuple((calls[p].entry, calls[p].external_id) for p in c.calls),
        )
        for c in ordered
        if c.status != "match"
    )
    return Reconciliation(
        provider=provider,
        buckets=tuple(buckets),
        cells=tuple(ordered),
        differences=differences,
        calls=len(calls),
        unplaced=tuple(unplaced),
        outside=outside_count,
        outside_examples=tuple(outside),
        holes=holes,
        merged=tuple(sorted(merged)),
        receipts=None if receipts is None else check_receipts(receipts, calls),
    )


def check_receipts(receipts: Sequence[Receipt], calls: Sequence[RecordedCall]) -> ReceiptCheck:
    """Each receipt must be a recorded call; each call in scope inside the receipts' window a receipt."""
    recorded = {c.external_id for c in calls if c.external_id is not None}
    unique: dict[str, Receipt] = {}
    for r in receipts:
        unique.setdefault(r.id, r)
    unrecorded = tuple(r for r in unique.values() if r.id not in recorded)
    times = [r.created for r in unique.values() if r.created is not None]
    window = (min(times), max(times)) if times else None
    unreceipted: list[RecordedCall] = []
    in_window = 0
    if window is not None:
        # stored completions list only chat completions made outside the Batch API
        stored_only = all(r.stored_chat for r in unique.values() if r.created is not None)
        for call in calls:
            if call.created is None or not window[0] <= call.created <= window[1]:
                continue
            if stored_only and (call.batch or call.endpoint != STORED_CHAT_ENDPOINT):
                continue
            in_window += 1
            if call.external_id not in unique:
                unreceipted.append(call)
    return ReceiptCheck(len(unique), window, unrecorded, tuple(unreceipted), in_window)


def reconciliation_json(result: Reconciliation) -> dict[str, Any]:
    """The `ledger reconcile --json` document (schemas/reconcile.schema.json)."""
    by_bucket: dict[int, list[Cell]] = {}
    for cell in result.cells:
        by_bucket.setdefault(cell.bucket, []).append(cell)
    window = result.window
    return {
        "verdict": result.verdict,
        "provider": result.provider,
        "window": None if window is None else {"start_time": window[0], "end_time": window[1]},
        "calls": result.calls,
        "merged": list(result.merged),
        "buckets": [
            {
                "start_time": b.start,
                "end_time": b.end,
                "rows": [
                    {
                        "model": c.model,
                        "batch": c.batch,
                        "status": c.status,
                        "served": {
                            "requests": c.served_requests,
                            "input_tokens": c.served_input,
                            "output_tokens": c.served_output,
                        },
                        "recorded": {
                            "requests": c.requests,
                            "input_tokens": c.input_tokens,
                            "output_tokens": c.output_tokens,
                            "without_usage": c.without_usage,
                        },
                    }
                    for c in by_bucket.get(i, [])
                ],
            }
            for i, b in enumerate(result.buckets)
        ],
        "differences": [d.to_json() for d in result.differences],
        "unplaced": [_call_json(c) for c in result.unplaced],
        "outside": {
            "calls": result.outside,
            "examples": [_call_json(c) for c in result.outside_examples],
        },
        "holes": [{"start_time": s, "end_time": e} for s, e in result.holes],
        "receipts": None if result.receipts is None else result.receipts.to_json(),
        "reasons": result.reasons(),
    }


def reconciliation_summary(result: Reconciliation) -> dict[str, Any]:
    """What an audit report and its bundle carry of a reconciliation: the verdict, counts and reasons."""
    window = result.window
    return {
        "verdict": result.verdict,
        "provider": result.provider,
        "window": None if window is None else {"start_time": window[0], "end_time": window[1]},
        "buckets": len(result.buckets),
        "calls": result.calls,
        "differences": len(result.differences),
        "unplaced": len(result.unplaced),
        "outside": result.outside,
        "receipts": None if result.receipts is None else result.receipts.receipts,
        "reasons": result.reasons(),
    }
