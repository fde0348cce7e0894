"""Entry bodies: the one place that knows each kind's fields.

Bodies are plain JSON objects inside DSSE envelopes. Builders here produce them; `check_body` validates a
body read back from the log, so `verify` can say which index holds a malformed one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as dt_time
from typing import Any, ClassVar

from ledger.errors import UsageError, VerificationError

VERSION = 1
KINDS = ("key", "revoke", "call", "batch", "checkpoint", "dataset")
ROLES = ("log", "recorder")
PURPOSES = ("evaluation", "annotation", "training-data", "other")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_REQUIRED: dict[str, tuple[str, ...]] = {
    "key": ("keyid", "public_key", "name", "role"),
    "revoke": ("keyid", "reason"),
    "call": ("provider", "model", "endpoint", "purpose", "request", "response", "outputs"),
    "batch": ("id", "count", "records_root"),
    "checkpoint": ("id", "weights", "parents", "batches", "teachers"),
    "dataset": ("id",),
}


def now_rfc3339() -> str:
    """UTC time with microseconds, `Z` suffix (RFC 3339)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


TIME_FORMS = (
    "an RFC 3339 date-time such as 2026-12-01T10:00:00Z (an offset such as +02:00 for Z, a space for "
    "T) or a date such as 2026-12-01 (00:00 UTC that day)"
)


def parse_time(text: str, name: str = "time") -> datetime:
    """An RFC 3339 date-time or a plain date (00:00 UTC) as an aware datetime; else UsageError naming `name`.

    The standard library's ISO 8601 parser reads both; a date-time without an offset is refused, since
    entry times are UTC and a local time would silently shift the comparison.
    """
    value = text.strip().upper()  # RFC 3339 allows a lower-case t and z
    try:
        return datetime.combine(date.fromisoformat(value), dt_time(), UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{name} {text!r}: expected {TIME_FORMS}") from None
    if parsed.tzinfo is None:
        raise UsageError(
            f"{name} {text!r}: a date-time needs Z or an offset such as +02:00 (entry times are UTC)"
        )
    return parsed


def _base(kind: str, time: str | None) -> dict[str, Any]:
    return {"kind": kind, "v": VERSION, "time": time or now_rfc3339()}


def key_body(
    keyid: str, public_key_b64: str, name: str, role: str, time: str | None = None
) -> dict[str, Any]:
    if role not in ROLES:
        raise UsageError(f"unknown key role {role!r}: expected one of {', '.join(ROLES)}")
    return {
        **_base("key", time),
        "keyid": keyid,
        "public_key": public_key_b64,
        "name": name,
        "role": role,
    }


def revoke_body(keyid: str, reason: str, time: str | None = None) -> dict[str, Any]:
    return {**_base("revoke", time), "keyid": keyid, "reason": reason}


def check_purpose(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise UsageError(f"unknown purpose {purpose!r}: expected one of {', '.join(PURPOSES)}")
    return purpose


def call_body(
    *,
    provider: str,
    model: str,
    endpoint: str,
    purpose: str,
    request: str | None,
    response: str,
    outputs: Sequence[str],
    external_id: str | None = None,
    account: str | None = None,
    usage: Any = None,
    complete: bool = True,
    fingerprints: Mapping[str, Any] | None = None,
    time: str | None = None,
    created: int | None = None,
    custom_id: str | None = None,
) -> dict[str, Any]:
    """A `call` body; optional fields left None are omitted (so older bodies stay byte-identical).

    `created`: the provider's own timestamp of the response (Unix seconds); `custom_id`: a Batch
    line's own id.
    """
    body: dict[str, Any] = {
        **_base("call", time),
        "provider": provider,
        "model": model,
        "endpoint": endpoint,
        "purpose": check_purpose(purpose),
        "request": request,
        "response": response,
        "outputs": sorted(set(outputs)),
    }
    optional = {
        "external_id": external_id,
        "account": account,
        "usage": usage,
        "created": created,
        "custom_id": custom_id,
        "fingerprints": fingerprints,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if not complete:
        body["complete"] = False
    return body


def batch_body(
    *,
    id: str,
    count: int,
    records_root: str,
    dataset: str | None = None,
    derived_from: Sequence[int] = (),
    source: Sequence[Mapping[str, str]] = (),
    fingerprints: Mapping[str, Any] | None = None,
    text_fields: Sequence[str] | None = None,
    min_segment_chars: int = 32,
    records_without_text: int | None = None,
    time: str | None = None,
    tokenizer: str | None = None,
    token_field: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        **_base("batch", time),
        "id": id,
        "count": count,
        "records_root": records_root,
    }
    if dataset is not None:
        body["dataset"] = dataset
    if derived_from:
        body["derived_from"] = sorted(set(derived_from))
    if source:
        body["source"] = [dict(s) for s in source]
    if fingerprints is not None:
        body["fingerprints"] = dict(fingerprints)
    if text_fields:
        body["text_fields"] = list(text_fields)
    body["min_segment_chars"] = min_segment_chars
    if records_without_text is not None:  # records with no segment: what an audit cannot compare
        body["records_without_text"] = records_without_text
    if tokenizer is not None:  # sha256 of the tokenizer.json that decoded token ids into texts
        body["tokenizer"] = tokenizer
        if token_field is not None:  # where the ids were read, so a verifier can decode them again
            body["token_field"] = token_field
    return body


def checkpoint_body(
    *,
    id: str,
    weights: Sequence[Mapping[str, str]],
    parents: Sequence[str] = (),
    batches: Sequence[str] = (),
    teachers: Sequence[str | Mapping[str, str]] = (),
    config: str | None = None,
    time: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        **_base("checkpoint", time),
        "id": id,
        "weights": [dict(w) for w in weights],
        "parents": list(parents),
        "batches": list(batches),
        "teachers": [t if isinstance(t, str) else dict(t) for t in teachers],
    }
    if config is not None:
        body["config"] = config
    return body


def ref_of(body: Mapping[str, Any]) -> str | None:
    """The human reference an entry answers to: an id, a call's external id, a key's keyid."""
    kind = body.get("kind")
    if kind in ("batch", "checkpoint", "dataset"):
        return str(body["id"])
    if kind == "call":
        ext = body.get("external_id")
        return None if ext is None else str(ext)
    if kind in ("key", "revoke"):
        return str(body["keyid"])
    return None


@dataclass(frozen=True)
class EntryFacts:
    """The columns the store derives from a body; `verify` re-derives and compares them."""

    kind: str
    time: str
    ref: str | None
    provider: str | None
    model: str | None
    purpose: str | None


def facts_of(body: Mapping[str, Any]) -> EntryFacts:
    return EntryFacts(
        kind=str(body["kind"]),
        time=str(body["time"]),
        ref=ref_of(body),
        provider=body.get("provider") if body.get("kind") == "call" else None,
        model=body.get("model") if body.get("kind") == "call" else None,
        purpose=body.get("purpose") if body.get("kind") == "call" else None,
    )


def check_body(body: Any, index: int) -> None:
    """Raise VerificationError unless `body` is a well-formed body of a known kind."""
    if not isinstance(body, dict):
        raise VerificationError(f"entry {index}: body is not a JSON object", index)
    kind = body.get("kind")
    if kind not in KINDS:
        raise VerificationError(f"entry {index}: unknown kind {kind!r}", index)
    if body.get("v") != VERSION:
        raise VerificationError(
            f"entry {index}: expected v {VERSION}, found {body.get('v')!r}", index
        )
    if not isinstance(body.get("time"), str):
        raise VerificationError(f"entry {index}: missing time", index)
    missing = [f for f in _REQUIRED[kind] if f not in body]
    if missing:
        raise VerificationError(f"entry {index}: {kind} body lacks {', '.join(missing)}", index)
    if kind == "call":
        outputs = body["outputs"]
        if not isinstance(outputs, list) or any(
            not isinstance(o, str) or not _HEX64.match(o) for o in outputs
        ):
            raise VerificationError(
                f"entry {index}: call outputs must be hex sha256 strings", index
            )
        if outputs != sorted(set(outputs)):
            raise VerificationError(
                f"entry {index}: call outputs are not distinct and sorted", index
            )
    if kind == "batch":
        if not isinstance(body["count"], int) or body["count"] < 0:
            raise VerificationError(
                f"entry {index}: batch count must be a non-negative integer", index
            )
        if not isinstance(body["records_root"], str) or not _HEX64.match(body["records_root"]):
            raise VerificationError(f"entry {index}: batch records_root must be hex sha256", index)
        bare = body.get("records_without_text", 0)
        if isinstance(bare, bool) or not isinstance(bare, int) or not 0 <= bare <= body["count"]:
            raise VerificationError(
                f"entry {index}: records_without_text must be an integer from 0 to the count", index
            )
        tokenizer = body.get("tokenizer")
        if tokenizer is not None and (
            not isinstance(tokenizer, str) or not _HEX64.match(tokenizer)
        ):
            raise VerificationError(f"entry {index}: batch tokenizer must be hex sha256", index)
        token_field = body.get("token_field")
        if token_field is not None and (
            tokenizer is None or not isinstance(token_field, str) or not token_field
        ):
            raise VerificationError(
                f"entry {index}: batch token_field must be a non-empty string beside a tokenizer",
                index,
            )
        derived = body.get("derived_from", [])
        if not isinstance(derived, list) or any(not isinstance(d, int) for d in derived):
            raise VerificationError(
                f"entry {index}: derived_from must be a list of entry indexes", index
            )
        if any(d < 0 or d >= index for d in derived):
            raise VerificationError(
                f"entry {index}: derived_from refers to a later or missing entry", index
            )
    if kind == "key" and body["role"] not in ROLES:
        raise VerificationError(f"entry {index}: unknown key role {body['role']!r}", index)


def teacher_label(teacher: str | Mapping[str, Any]) -> str:
    if isinstance(teacher, str):
        return teacher
    return f"{teacher.get('provider')}:{teacher.get('model')}"


def parse_teacher(text: str, known_checkpoint: bool) -> str | dict[str, str]:
    """`PROVIDER:MODEL` names a third-party model; a known checkpoint id names a local teacher."""
    if known_checkpoint:
        return text
    provider, sep, model = text.partition(":")
    if not sep or not provider or not model:
        raise UsageError(
            f"--teacher {text!r}: expected PROVIDER:MODEL or the id of a recorded checkpoint"
        )
    return {"provider": provider, "model": model}


def dataset_body(
    *,
    id: str,
    batches: int,
    count: int,
    split: int,
    source: Sequence[Mapping[str, str]] = (),
    time: str | None = None,
) -> dict[str, Any]:
    """A `--split` dataset: `batches` batch entries of up to `split` records each, `count` in all."""
    body: dict[str, Any] = {
        **_base("dataset", time),
        "id": id,
        "batches": batches,
        "count": count,
        "split": split,
    }
    if source:
        body["source"] = [dict(s) for s in source]
    return body


# --- typed bodies ------------------------------------------------------------------------------------
# A typed body reads a checked body (see `check_body`): one place knows each kind's fields and their
# defaults, instead of `body.get(...)` spread over every room. The signed JSON stays the dict it was.


def _ints(value: Any) -> tuple[int, ...]:
    return tuple(v for v in value if isinstance(v, int)) if isinstance(value, list) else ()


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, dict) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class KeyBody:
    KIND: ClassVar[str] = "key"
    time: str
    keyid: str
    public_key: str
    name: str
    role: str


@dataclass(frozen=True)
class RevokeBody:
    KIND: ClassVar[str] = "revoke"
    time: str
    keyid: str
    reason: str


@dataclass(frozen=True)
class CallBody:
    KIND: ClassVar[str] = "call"
    time: str
    provider: str
    model: str
    endpoint: str
    purpose: str
    outputs: tuple[str, ...]
    external_id: str | None
    fingerprints: Mapping[str, Any] | None


@dataclass(frozen=True)
class BatchBody:
    KIND: ClassVar[str] = "batch"
    time: str
    id: str
    count: int
    records_root: str
    dataset: str | None
    derived_from: tuple[int, ...]
    fingerprints: Mapping[str, Any] | None
    text_fields: tuple[str, ...] | None
    min_segment_chars: int
    records_without_text: int | None  # None: recorded before the field existed
    tokenizer: str | None = None  # sha256 of the tokenizer file, for token id records
    token_field: str | None = None  # the dotted path the token ids were read from


@dataclass(frozen=True)
class CheckpointBody:
    KIND: ClassVar[str] = "checkpoint"
    time: str
    id: str
    weights: tuple[Mapping[str, Any], ...]
    parents: tuple[str, ...]
    batches: tuple[str, ...]
    teachers: tuple[str | Mapping[str, Any], ...]


@dataclass(frozen=True)
class DatasetBody:
    KIND: ClassVar[str] = "dataset"
    time: str
    id: str
    batches: int | None
    count: int | None
    split: int | None


Body = KeyBody | RevokeBody | CallBody | BatchBody | CheckpointBody | DatasetBody


def typed(body: Mapping[str, Any], index: int) -> Body:
    """The typed view of a body read from the log; VerificationError (naming `index`) if malformed."""
    check_body(body, index)
    kind, time = body["kind"], str(body["time"])
    if kind == "key":
        return KeyBody(
            time, str(body["keyid"]), str(body["public_key"]), str(body["name"]), str(body["role"])
        )
    if kind == "revoke":
        return RevokeBody(time, str(body["keyid"]), str(body["reason"]))
    if kind == "call":
        ext = body.get("external_id")
        return CallBody(
            time,
            str(body["provider"]),
            str(body["model"]),
            str(body["endpoint"]),
            str(body["purpose"]),
            tuple(body["outputs"]),
            None if ext is None else str(ext),
            _mapping(body.get("fingerprints")),
        )
    if kind == "batch":
        fields = body.get("text_fields")
        dataset = body.get("dataset")
        return BatchBody(
            time,
            str(body["id"]),
            body["count"],  # an int (check_body): kept as signed
            str(body["records_root"]),
            None if dataset is None else str(dataset),
            _ints(body.get("derived_from")),
            _mapping(body.get("fingerprints")),
            _strs(fields) if fields else None,
            _int(body.get("min_segment_chars", 32)) or 32,
            body.get("records_without_text"),
            None if body.get("tokenizer") is None else str(body["tokenizer"]),
            None if body.get("token_field") is None else str(body["token_field"]),
        )
    if kind == "checkpoint":
        teachers = body["teachers"] if isinstance(body["teachers"], list) else []
        weights = body["weights"] if isinstance(body["weights"], list) else []
        return CheckpointBody(
            time,
            str(body["id"]),
            tuple(w for w in weights if isinstance(w, dict)),
            _strs(body["parents"]),
            _strs(body["batches"]),
            tuple(t for t in teachers if isinstance(t, str | dict)),
        )
    return DatasetBody(
        time,
        str(body["id"]),
        _int(body.get("batches")),
        _int(body.get("count")),
        _int(body.get("split")),
    )
