"""Recording external model calls: one call (`record_call`) or a provider's log (`import_calls`).

A call is hashed (request and response digests, output segments, their fingerprints) before the database
is opened; the append only checks (provider, external_id) against the calls already recorded, so both are
idempotent on it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger import providers
from ledger.errors import InputError, OptionHintError, UsageError
from ledger.ingest import calls as ingest_calls
from ledger.log.append import LogWriter, Transaction
from ledger.log.store import recording as store_recording
from ledger.recording.results import CallResult, ImportReport, Progress
from ledger.spec import entries, fingerprint
from ledger.spec import leaves as leaves_spec
from ledger.spec import text as text_spec
from ledger.wording import plural

__all__ = [
    "MAX_FAILED_EXAMPLES",
    "CallInput",
    "PreparedCall",
    "call_input",
    "import_calls",
    "prepare_call",
    "record_call",
    "with_fingerprints",
]

MAX_FAILED_EXAMPLES = 10


@dataclass(frozen=True)
class CallInput:
    """One call as given by a caller or a log file, before hashing."""

    provider: str
    purpose: str
    request: object | None
    response: object
    model: str | None = None
    endpoint: str | None = None
    external_id: str | None = None
    account: str | None = None
    stream: bool = False
    complete: bool = True
    usage: object | None = None
    created: int | None = None
    custom_id: str | None = None


def _chunks_of(call: CallInput) -> list[Mapping[str, Any]]:
    """A stream's chunks, each a JSON object."""
    if not isinstance(call.response, (list, tuple)):
        found = type(call.response).__name__
        raise UsageError(f"a streamed response must be a list of chunk objects, found {found}")
    for i, chunk in enumerate(call.response):
        if not isinstance(chunk, Mapping):
            raise InputError(
                f"stream chunk {i}: expected a JSON object, found {type(chunk).__name__}"
            )
    return list(call.response)


def _model_of(call: CallInput) -> str:
    model = call.model or ingest_calls.infer_model(call.response, call.request)
    if not model:
        raise OptionHintError(
            "cannot tell the call's model from the response or the request", "model"
        )
    return model


def _endpoint_of(call: CallInput) -> str:
    endpoint = call.endpoint or ingest_calls.infer_endpoint(call.response, call.request)
    if not endpoint:
        raise OptionHintError(
            "cannot tell the call's endpoint from the response or the request", "endpoint"
        )
    return endpoint


@dataclass(frozen=True)
class PreparedCall:
    """A call's body without its fingerprints, plus the texts to fingerprint (aligned with outputs)."""

    body: dict[str, Any]
    fingerprint_texts: list[str]


def prepare_call(call: CallInput, min_chars: int) -> PreparedCall:
    """Hash one call: request/response digests, output segments and their normalized texts."""
    entries.check_purpose(call.purpose)
    if call.stream:
        chunks = _chunks_of(call)
        texts = providers.output_texts(call.provider, chunks, stream=True, complete=call.complete)
        response_digest = leaves_spec.request_response_digest(chunks)
    else:
        if not isinstance(call.response, Mapping):
            found = type(call.response).__name__
            raise InputError(
                f"a response must be a JSON object (stream=True for chunks), found {found}"
            )
        error = ingest_calls.error_response(call.response)
        if error is not None:
            raise InputError(
                f"the response is an API error response ({error}), not a model output; nothing to record"
            )
        texts = providers.output_texts(call.provider, call.response, stream=False)
        response_digest = leaves_spec.request_response_digest(call.response)
    assert response_digest is not None
    # The same segments as text_spec.call_outputs(texts), kept with their texts for fingerprinting.
    segments: dict[str, str] = {}
    for text in texts:
        for digest, normalized in text_spec.text_segments(text, min_chars):
            segments[digest.hex()] = normalized
    outputs = sorted(segments)
    usage = call.usage if call.usage is not None else ingest_calls.response_usage(call.response)
    external_id = call.external_id or ingest_calls.response_id(call.response)
    body = entries.call_body(
        provider=call.provider,
        model=_model_of(call),
        endpoint=_endpoint_of(call),
        purpose=call.purpose,
        request=leaves_spec.request_response_digest(call.request),
        response=response_digest,
        outputs=outputs,
        external_id=external_id,
        account=call.account,
        usage=usage,
        complete=call.complete,
        created=call.created
        if call.created is not None
        else ingest_calls.response_created(call.response),
        custom_id=call.custom_id,
    )
    return PreparedCall(body, [segments[h] for h in outputs])


def with_fingerprints(
    prepared: Sequence[PreparedCall], params: fingerprint.FingerprintParams
) -> list[dict[str, Any]]:
    """Fingerprint every call's output segments in one vectorised pass; `values[i]` is `outputs[i]`'s."""
    texts = [t for p in prepared for t in p.fingerprint_texts]
    fps = fingerprint.fingerprint_texts(texts, params) if texts else []
    out: list[dict[str, Any]] = []
    at = 0
    params_json = params.to_json()
    for p in prepared:
        values = [
            base64.b64encode(fp).decode("ascii") for fp in fps[at : at + len(p.fingerprint_texts)]
        ]
        at += len(p.fingerprint_texts)
        out.append({**p.body, "fingerprints": {"params": params_json, "values": values}})
    return out


def record_call(
    writer: LogWriter,
    *,
    provider: str,
    purpose: str,
    request: object | None,
    response: object,
    model: str | None = None,
    endpoint: str | None = None,
    external_id: str | None = None,
    account: str | None = None,
    stream: bool = False,
    complete: bool = True,
    min_segment_chars: int = text_spec.MIN_SEGMENT_CHARS,
    fingerprint_params: fingerprint.FingerprintParams = fingerprint.DEFAULT_PARAMS,
) -> CallResult:
    """Append one `call` entry; idempotent on (provider, external_id). `fingerprint_params`: as
    for `record_batch`."""
    if not provider:
        raise UsageError("provider: expected a non-empty name")
    call = CallInput(
        provider,
        purpose,
        request,
        response,
        model,
        endpoint,
        external_id,
        account,
        stream,
        complete,
    )
    body = with_fingerprints([prepare_call(call, min_segment_chars)], fingerprint_params)[0]
    ext = body.get("external_id")
    outcome: dict[str, int] = {}

    def prepare(tx: Transaction) -> list[dict[str, Any]]:
        if ext is not None:
            found = store_recording.existing_call(tx.conn, provider, str(ext))
            if found is not None:
                outcome["index"] = found
                return []
        outcome["index"] = tx.start
        return [body]

    result = writer.append_bodies(prepare)
    return CallResult(
        outcome["index"], None if ext is None else str(ext), duplicate=result.count == 0
    )


def call_input(
    item: ingest_calls.CallRecord, provider: str | None, purpose: str, account: str | None
) -> CallInput:
    chosen = provider or item.provider
    if not chosen:
        raise InputError("no provider in the line and none given")
    return CallInput(
        provider=chosen,
        purpose=purpose,
        request=item.request,
        response=item.response,
        model=item.model,
        endpoint=item.endpoint,
        external_id=item.external_id,
        account=account or item.account,
        stream=item.stream,
        complete=item.complete,
        usage=item.usage,
        custom_id=_custom_id(item),
    )


def _custom_id(item: ingest_calls.CallRecord) -> str | None:
    """A Batch line's own id (`custom_id` of OpenAI and Anthropic batches, Gemini's `key`)."""
    value = item.extra.get("custom_id")
    return value if isinstance(value, str) else None


def import_calls(
    writer: LogWriter,
    path: Path | str,
    fmt: str,
    *,
    provider: str | None,
    purpose: str,
    requests_path: Path | str | None = None,
    account: str | None = None,
    progress: Progress | None = None,
    chunk: int = 5000,
    min_segment_chars: int = text_spec.MIN_SEGMENT_CHARS,
) -> ImportReport:
    """Stream a provider log into `call` entries, `chunk` calls per transaction.

    A crash loses at most the current chunk; a re-run skips what is already recorded (idempotent on
    (provider, external_id)), so it completes the work without duplicates. `provider` applies to every
    call (None: each line's own). Failed lines are counted and reported, never recorded.
    """
    entries.check_purpose(purpose)
    if chunk < 1:
        raise UsageError(f"chunk {chunk}: expected at least 1 call per transaction")
    report = {"added": 0, "duplicates": 0, "failed": 0}
    examples: list[str] = []
    unjoined: list[str] = []  # lines whose id the --requests file lacks
    pending: list[PreparedCall] = []
    requests = Path(requests_path) if requests_path is not None else None
    try:
        for item in ingest_calls.iter_calls(Path(path), fmt, requests, progress=progress):
            if isinstance(item, ingest_calls.FailedCall):
                report["failed"] += 1
                if len(examples) < MAX_FAILED_EXAMPLES:
                    examples.append(f"{item.location}: {item.reason}")
                continue
            if requests is not None and item.extra.get("request_missing"):
                unjoined.append(item.location)
            try:
                call = call_input(item, provider, purpose, account)
                pending.append(prepare_call(call, min_segment_chars))
            except OptionHintError as exc:  # import has no such option: the line itself must say
                raise InputError(f"{item.location}: {exc.text}") from exc
            except InputError as exc:
                raise InputError(f"{item.location}: {exc}") from exc
            if len(pending) >= chunk:
                _append_calls(writer, pending, report)
                pending = []
    except InputError as exc:
        # Bad input leaves the ledger as it was, but for whole chunks committed before the bad line
        # (their transactions are done); a re-run after fixing the line skips those.
        if report["added"]:
            raise InputError(
                f"{exc} ({plural(report['added'], 'call')} before it recorded in earlier transactions; "
                "re-running after fixing the line skips them)"
            ) from exc
        raise
    if pending:
        _append_calls(writer, pending, report)
    return ImportReport(
        report["added"],
        report["duplicates"],
        report["failed"],
        examples,
        len(unjoined),
        unjoined[:MAX_FAILED_EXAMPLES],
    )


def _append_calls(
    writer: LogWriter, pending: Sequence[PreparedCall], report: dict[str, int]
) -> None:
    """One transaction: skip calls already in the ledger or earlier in this chunk, append the rest."""
    bodies = with_fingerprints(pending, fingerprint.DEFAULT_PARAMS)

    def prepare(tx: Transaction) -> list[dict[str, Any]]:
        by_provider: dict[str, list[str]] = {}
        for body in bodies:
            if "external_id" in body:
                by_provider.setdefault(str(body["provider"]), []).append(str(body["external_id"]))
        seen = {
            (p, e)
            for p, ids in by_provider.items()
            for e in store_recording.existing_calls(tx.conn, p, ids)
        }
        fresh = []
        for body in bodies:
            ext = body.get("external_id")
            if ext is not None:
                key = (str(body["provider"]), str(ext))
                if key in seen:
                    continue
                seen.add(key)
            fresh.append(body)
        report["duplicates"] += len(bodies) - len(fresh)
        report["added"] += len(fresh)
        return fresh

    before = dict(report)
    try:
        writer.append_bodies(prepare)
    except BaseException:
        report.update(before)
        raise
