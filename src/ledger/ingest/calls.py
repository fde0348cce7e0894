"""Readers for logs of external model calls: Batch API files, chat logs, and a generic JSONL.

Five formats (`CALL_FORMATS`), each JSON Lines with blank lines skipped:

`openai-batch`
    A Batch API output (or error) file: lines `{"id", "custom_id", "response": {"status_code",
    "request_id", "body"}, "error"}`. A line with `error` set or a status other than 200 is a
    `FailedCall`.

`anthropic-batch`
    Message Batches results: lines `{"custom_id", "result": {"type": "succeeded", "message":
    {...}}}`; `errored`, `canceled` and `expired` results are `FailedCall`s. The message's `id` is the
    external id, `custom_id` is kept.

`gemini-batch`
    Gemini batch output lines `{"key" | "request", "response": {"candidates", "usageMetadata",
    "modelVersion", "responseId"}}`: the external id is `responseId`, else the key; an inline
    `request` is the request body. A line with `error` (or a non-empty `status`) and no response
    is a `FailedCall`.

For the three batch formats, `requests_path` is the batch input file (`ledger.ingest.batch_inputs`:
OpenAI `{"custom_id", "method", "url", "body"}`, Anthropic `{"custom_id", "params"}`, Gemini
`{"key", "request"}`), joined by id to give each call its request. An output line whose id is not in
it gets `request=None` and `extra["request_missing"]`, as one read without an input file; a Gemini
line whose inline `request` differs from the input file's is an `InputError`.

`openai-chat`
    A log with one call per line: `{"request": {...}, "response": {...}}`; optional `endpoint` (or
    `url`), `provider` (default `openai`), `model`, `stream`, `complete`, `account`, `purpose`.
    For a streamed call, `response` is the list of chunk objects as received.

`jsonl` (generic, for any provider)
    One call per line::

        {"provider": "acme",                 # required
         "model": "acme-large-2",            # else taken from the response, then the request
         "endpoint": "/v1/chat/completions", # else inferred from the response's "object"
         "request": {...},                   # the JSON body as sent; null or absent if unknown
         "response": {...} | [chunk, ...],   # required: a chat completion, a legacy completion,
                                             # a Responses-API object, or a list of stream chunks
         "external_id": "...",               # optional, else the response's "id"
         "account": "...", "purpose": "evaluation", "usage": {...},   # optional
         "complete": false}                  # optional, for an abandoned stream

    A line whose `error` is set (and has no response), or whose `status_code` is not 200, is a
    `FailedCall`, as is a response that is only an `{"error": ...}` object.

Every problem with the file itself is an `InputError` naming `file:line`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from ledger import providers
from ledger.engine.json_lines import unparsable
from ledger.errors import InputError, OptionHintError, UsageError
from ledger.ingest.batch_inputs import INPUT_SHAPES, BatchInput, BatchInputs, json_kind
from ledger.ingest.pipeline import iter_records
from ledger.ingest.reader import BOM, open_binary
from ledger.spec.jcs import canonical_json, parse_json_line

__all__ = [
    "CALL_FORMATS",
    "CallRecord",
    "FailedCall",
    "error_response",
    "infer_endpoint",
    "infer_model",
    "iter_calls",
    "read_json_file",
    "read_response_file",
    "response_created",
    "response_id",
    "response_usage",
    "stream_is_complete",
]

CALL_FORMATS: Final = ("openai-batch", "anthropic-batch", "gemini-batch", "openai-chat", "jsonl")
# Anthropic batch result types that carry no message: counted as failed.
_ANTHROPIC_FAILED: Final = frozenset({"errored", "canceled", "expired"})

_ENDPOINTS: Final = {
    "chat.completion": "/v1/chat/completions",
    "chat.completion.chunk": "/v1/chat/completions",
    "text_completion": "/v1/completions",
    "response": "/v1/responses",
    "embedding": "/v1/embeddings",
}
# Stream events after which nothing more comes (Responses API; Anthropic Messages).
_FINAL_EVENTS: Final = frozenset(
    {"response.completed", "response.incomplete", "response.failed", "message_stop"}
)


@dataclass(frozen=True)
class CallRecord:
    """One external model call read from a log, ready to be hashed into a `call` entry."""

    provider: str | None
    model: str | None
    endpoint: str | None
    request: object | None  # the JSON body as sent (None if unavailable)
    response: object  # the JSON body received, or for a stream the list of chunk objects
    external_id: str | None  # the response body's "id"
    stream: bool = False
    complete: bool = True
    account: str | None = None
    usage: object | None = None
    location: str = ""  # "file:line", for messages
    extra: Mapping[str, object] = field(
        default_factory=dict
    )  # custom_id, status_code, purpose, ...


@dataclass(frozen=True)
class FailedCall:
    """A line that records a call that failed (counted and reported, never recorded as a call)."""

    location: str
    custom_id: str | None
    reason: str


def iter_calls(
    path: Path,
    fmt: str,
    requests_path: Path | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> Iterator[CallRecord | FailedCall]:
    """Yield the calls of a log file in order, streaming; raise `InputError` naming `file:line`.

    `requests_path` is the batch input file (`ledger.ingest.batch_inputs`) and applies to the three
    batch formats. `progress`, if given, is called with the number of bytes of `path` done.
    """
    path = Path(path)
    if fmt not in CALL_FORMATS:
        raise UsageError(f"unknown call format {fmt!r}: expected one of {', '.join(CALL_FORMATS)}")
    if fmt in _BATCHES:
        if requests_path is not None:
            requests = BatchInputs(Path(requests_path), INPUT_SHAPES[fmt])
        else:
            requests = None
        read_line = _BATCHES[fmt]
        try:
            for number, line in iter_records(path, "jsonl", progress=progress):
                yield read_line(f"{path}:{number}", _as_dict(line), requests)
        finally:
            if requests is not None:
                requests.close()
        return
    if requests_path is not None:
        raise UsageError(
            f"a requests file applies only to formats {', '.join(_BATCHES)}, not {fmt}"
        )
    default_provider = "openai" if fmt == "openai-chat" else None
    for number, line in iter_records(path, "jsonl", progress=progress):
        yield _logged_call(f"{path}:{number}", _as_dict(line), default_provider)


def read_json_file(path: Path) -> object:
    """One whole JSON document (a request or response body, or an array of stream chunks).

    Big integers stay exact, as in every other reader, so the body hashes as it was received.
    """
    path = Path(path)
    with open_binary(path) as f:
        try:
            data = f.read()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    data = data.removeprefix(BOM)
    if not data.strip():
        raise InputError(f"{path}: empty file, expected a JSON document")
    try:
        return parse_json_line(data)
    except ValueError as exc:
        why = unparsable(data, exc, False).replace(" of the line", "")
        raise InputError(f"{path}: {why}") from exc


def read_response_file(path: Path, provider: str | None = None) -> object:
    """A response body (or an array of stream chunks) to record; an API error response is InputError.

    With `provider`, a body (or stream) in a shape that provider's responses do not have is an
    InputError naming the file and the shape expected.
    """
    body = read_json_file(path)
    error = error_response(body)
    if error is not None:
        raise InputError(
            f"{path}: this is an API error response ({error}), not a model output; nothing to record"
        )
    if provider is not None and isinstance(body, (dict, list)):
        stream = isinstance(body, list)
        if not stream or all(isinstance(chunk, dict) for chunk in body):
            try:
                providers.output_texts(provider, body, stream=stream)
            except InputError as exc:
                raise InputError(f"{path}: {exc}") from exc
    return body


def error_response(body: object) -> str | None:
    """What an API error body (`{"error": {...}}` as OpenAI, Anthropic and Gemini send) says, else None."""
    if not isinstance(body, dict) or not _is_error_body(body):
        return None
    error = body["error"]
    if not isinstance(error, dict):
        return f"error: {str(error)[:120]}"
    kind = next(
        (f"error.{k} {error[k]}" for k in ("type", "status", "code") if error.get(k)), "error"
    )
    message = error.get("message")
    return f"{kind}: {str(message)[:120]}" if message else kind


# --- inference from response bodies ----------------------------------------------------------------


def infer_endpoint(response: object, request: object = None) -> str | None:
    """The API path a body came from, by its `object` (or a stream's first chunk), else by the request.

    `chat.completion(.chunk)` is `/v1/chat/completions`, `text_completion` `/v1/completions`,
    `response` (and Responses-API stream events) `/v1/responses`, a list of embeddings `/v1/embeddings`;
    an Anthropic message (or its stream) `/v1/messages`; a Gemini response `generateContent` (a
    stream `streamGenerateContent`).
    """
    body = _first_body(response)
    if isinstance(body, dict):
        kind = body.get("object")
        if kind == "list":
            data = body.get("data")
            if isinstance(data, list) and data and isinstance(data[0], dict):
                kind = data[0].get("object")
        if isinstance(kind, str) and kind in _ENDPOINTS:
            return _ENDPOINTS[kind]
        if body.get("type") == "message":
            return "/v1/messages"
        if isinstance(body.get("candidates"), list):
            return "streamGenerateContent" if isinstance(response, list) else "generateContent"
    if isinstance(request, dict):
        if "messages" in request:
            return "/v1/chat/completions"
        if "prompt" in request:
            return "/v1/completions"
    return None


def infer_model(response: object, request: object = None) -> str | None:
    """The model that answered (the response's `model`, Gemini's `modelVersion`), else the request's."""
    body = _first_body(response)
    for source in (body, request):
        if isinstance(source, dict):
            for key in ("model", "modelVersion"):
                if isinstance(source.get(key), str):
                    return str(source[key])
    return None


def response_id(response: object) -> str | None:
    """The provider's id of a response body (or of a stream: its first chunk's, or the Responses id).

    The body's `id` (OpenAI, Anthropic), else Gemini's `responseId`.
    """
    body = _first_body(response)
    if isinstance(body, dict):
        for key in ("id", "responseId"):
            value = body.get(key)
            if isinstance(value, str):
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
    return None


def response_created(response: object) -> int | None:
    """The provider's own timestamp of a response, in Unix seconds, if the body carries one.

    Chat and completion `created`, Responses `created_at`, Gemini `createTime` (RFC 3339); for a
    stream, its first chunk's (or the Responses event's response). Anthropic bodies carry none.
    """
    body = _first_body(response)
    if not isinstance(body, dict):
        return None
    for key in ("created", "created_at"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    stamp = body.get("createTime")
    if isinstance(stamp, str):
        try:
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is not None:
            return int(moment.timestamp())
    return None


def response_usage(response: object) -> object | None:
    """Token usage: the body's `usage` (Gemini: `usageMetadata`), or for a stream the last chunk or
    event that carries it."""
    if isinstance(response, dict):
        found: object = response.get("usage", response.get("usageMetadata"))
        return found
    if isinstance(response, list):
        anthropic = _anthropic_stream_usage(response)
        if anthropic is not None:
            return anthropic
        for chunk in reversed(response):
            if not isinstance(chunk, dict):
                continue
            usage: object = chunk.get("usage", chunk.get("usageMetadata"))
            for key in ("response", "message"):
                inner = chunk.get(key)
                if usage is None and isinstance(inner, dict):
                    usage = inner.get("usage")
            if usage is not None:
                return usage
    return None


def _anthropic_stream_usage(chunks: list[object]) -> dict[str, object] | None:
    """An Anthropic stream's usage: `message_start` carries the input tokens, each `message_delta`
    the cumulative output tokens (and any counts that changed); the later value of a key wins."""
    usage: dict[str, object] | None = None
    for chunk in chunks:
        if not isinstance(chunk, dict):
            continue
        kind = chunk.get("type")
        if kind == "message_start" and isinstance(chunk.get("message"), dict):
            found = chunk["message"].get("usage")
        elif kind == "message_delta":
            found = chunk.get("usage")
        else:
            continue
        if isinstance(found, dict):
            usage = {**(usage or {}), **found}
    return usage


def stream_is_complete(chunks: list[object]) -> bool:
    """Whether a stream was received to its end: every choice (Gemini: candidate) finished, or a
    final Responses or Anthropic `message_stop` event."""
    finished: dict[object, bool] = {}
    for chunk in chunks:
        if not isinstance(chunk, dict):
            continue
        if str(chunk.get("type")) in _FINAL_EVENTS:
            return True
        for key, reason in (("choices", "finish_reason"), ("candidates", "finishReason")):
            choices = chunk.get(key)
            if not isinstance(choices, list):
                continue
            for choice in choices:
                if isinstance(choice, dict):
                    index = choice.get("index", 0)
                    if isinstance(index, (list, dict)):  # malformed, but still one choice's key
                        index = repr(index)
                    finished[index] = finished.get(index, False) or choice.get(reason) is not None
    return bool(finished) and all(finished.values())


def _first_body(response: object) -> object:
    """The object that carries id/model: the body itself, or a stream's first chunk or event response
    (a Responses event's `response`, an Anthropic `message_start`'s `message`)."""
    if isinstance(response, list):
        for chunk in response:
            if isinstance(chunk, dict):
                for key in ("response", "message"):
                    inner = chunk.get(key)
                    if isinstance(inner, dict) and "type" in chunk:
                        return inner
                # Azure opens a stream with a prompt-filter chunk whose id and model are "".
                if any(
                    chunk.get(key) not in (None, "")
                    for key in ("id", "model", "responseId", "modelVersion")
                ):
                    return chunk
        return None
    return response


# --- openai-batch ----------------------------------------------------------------------------------


def _batch_call(
    location: str, line: dict[str, Any], requests: BatchInputs | None
) -> CallRecord | FailedCall:
    """One Batch API output line as a call, or as a failure when it carries an error or a non-200."""
    custom_id = line.get("custom_id")
    custom_id = custom_id if isinstance(custom_id, str) else None
    error = line.get("error")
    response = line.get("response")
    if error is not None:
        return FailedCall(location, custom_id, _error_text(error))
    if response is None:
        if isinstance(line.get("body"), dict) and ("method" in line or "url" in line):
            raise OptionHintError(
                f"{location}: this is the Batch input file (lines of custom_id, method, url, body), "
                "not its output",
                "requests_path",
                "pass it with {}",
            )
        return FailedCall(location, custom_id, "no response and no error")
    if not isinstance(response, dict):
        raise InputError(f"{location}: expected an object 'response', found {_kind(response)}")
    status = response.get("status_code")
    body = response.get("body")
    if status != 200:
        detail = (
            _error_text(body.get("error")) if isinstance(body, dict) and body.get("error") else ""
        )
        return FailedCall(location, custom_id, f"HTTP {status}" + (f": {detail}" if detail else ""))
    if not isinstance(body, dict):
        raise InputError(f"{location}: expected an object 'response.body', found {_kind(body)}")
    request: dict[str, Any] | None = None
    url: str | None = None
    extra: dict[str, object] = {"custom_id": custom_id, "status_code": status}
    if isinstance(response.get("request_id"), str):
        extra["request_id"] = response["request_id"]
    if isinstance(line.get("id"), str):
        extra["batch_request_id"] = line["id"]
    found = _joined(requests, custom_id)
    if found is None:
        extra["request_missing"] = True
    else:
        request, url = found.body, found.url
    return CallRecord(
        provider="openai",
        model=infer_model(body, request),
        endpoint=url or infer_endpoint(body, request),
        request=request,
        response=body,
        external_id=response_id(body),
        usage=body.get("usage"),
        location=location,
        extra=extra,
    )


# --- anthropic-batch and gemini-batch ------------------------------------------------------------


def _anthropic_batch_call(
    location: str, line: dict[str, Any], requests: BatchInputs | None
) -> CallRecord | FailedCall:
    """One Message Batches result line: a succeeded message, or a failure counted as such."""
    custom_id = line.get("custom_id") if isinstance(line.get("custom_id"), str) else None
    result = line.get("result")
    if result is None and isinstance(line.get("params"), dict):
        raise _input_file_given(location, "anthropic-batch", "the Message Batches results")
    if not isinstance(result, dict):
        raise InputError(
            f"{location}: expected an object 'result' (a Message Batches results line), "
            f"found {_kind(result)}"
        )
    kind = result.get("type")
    if kind in _ANTHROPIC_FAILED:
        error = result.get("error")
        inner = error.get("error") if isinstance(error, dict) else None
        detail = _error_text(inner if isinstance(inner, dict) else error) if error else ""
        return FailedCall(location, custom_id, f"{kind}" + (f": {detail}" if detail else ""))
    if kind != "succeeded":
        raise InputError(
            f"{location}: expected result.type succeeded, errored, canceled or expired, "
            f"found {str(kind)[:40]!r}"
        )
    message = result.get("message")
    if not isinstance(message, dict):
        raise InputError(f"{location}: expected an object 'result.message', found {_kind(message)}")
    found = _joined(requests, custom_id)
    request = found.body if found is not None else None
    return CallRecord(
        provider="anthropic",
        model=infer_model(message, request),
        endpoint="/v1/messages",
        request=request,
        response=message,
        external_id=response_id(message),
        usage=message.get("usage"),
        location=location,
        extra=_batch_extra(custom_id, request),
    )


def _gemini_batch_call(
    location: str, line: dict[str, Any], requests: BatchInputs | None
) -> CallRecord | FailedCall:
    """One Gemini batch output line (`key` or inline `request`, and `response`), or a failure.

    With the batch input file, the request is the one its line with the same `key` holds; a line that
    also carries the request inline must carry the same one (compared as JCS, as it is hashed).
    """
    key = line.get("key") if isinstance(line.get("key"), str) else None
    response = line.get("response")
    status = line.get("status")
    if (
        response is None
        and line.get("error") is None
        and status is None
        and isinstance(line.get("request"), dict)
    ):
        raise _input_file_given(location, "gemini-batch", "the batch output")
    if response is None or line.get("error") is not None:
        reason = _error_text(line["error"]) if line.get("error") is not None else ""
        if not reason and isinstance(status, str) and status:
            reason = status
        return FailedCall(location, key, reason or "no response and no error")
    if isinstance(status, str) and status and not isinstance(response, dict):
        return FailedCall(location, key, status)
    if not isinstance(response, dict):
        raise InputError(f"{location}: expected an object 'response', found {_kind(response)}")
    request = line.get("request")
    if request is not None and not isinstance(request, dict):
        raise InputError(
            f"{location}: expected an object or null 'request', found {_kind(request)}"
        )
    found = _joined(requests, key)
    if found is not None:
        if request is not None and canonical_json(request) != canonical_json(found.body):
            assert requests is not None
            raise InputError(
                f"{location}: the inline 'request' differs from the request of key {key!r} "
                f"in {requests.path}:{found.line}"
            )
        request = found.body
    model = infer_model(response, request)
    return CallRecord(
        provider="google",
        model=model,
        endpoint="generateContent",
        request=request,
        response=response,
        external_id=response_id(response) or key,
        usage=response.get("usageMetadata"),
        location=location,
        extra=_batch_extra(key, request),
    )


def _joined(requests: BatchInputs | None, custom_id: str | None) -> BatchInput | None:
    """The input line of a batch output line's id, if an input file was given and holds it."""
    if requests is None or custom_id is None:
        return None
    return requests.get(custom_id)


def _batch_extra(custom_id: str | None, request: object | None) -> dict[str, object]:
    extra: dict[str, object] = {"custom_id": custom_id}
    if request is None:
        extra["request_missing"] = True
    return extra


def _input_file_given(location: str, fmt: str, output: str) -> OptionHintError:
    """A batch input line where an output line belongs: the file goes to `--requests`."""
    return OptionHintError(
        f"{location}: this is the batch input file (lines of {INPUT_SHAPES[fmt].describe}), "
        f"not {output}",
        "requests_path",
        "pass it with {}",
    )


_BatchLineReader = Callable[[str, dict[str, Any], BatchInputs | None], CallRecord | FailedCall]
_BATCHES: Final[dict[str, _BatchLineReader]] = {
    "openai-batch": _batch_call,
    "anthropic-batch": _anthropic_batch_call,
    "gemini-batch": _gemini_batch_call,
}


# --- openai-chat and generic jsonl -----------------------------------------------------------------


def _logged_call(
    location: str, line: dict[str, Any], default_provider: str | None
) -> CallRecord | FailedCall:
    """One line of a call log (`openai-chat` or generic `jsonl`)."""
    provider = line.get("provider", default_provider)
    if not isinstance(provider, str) or not provider:
        raise InputError(f"{location}: expected a string 'provider', found {_kind(provider)}")
    failure = _logged_failure(location, line)
    if failure is not None:
        return failure
    if "response" not in line:
        raise InputError(
            f"{location}: missing 'response' (the JSON body received, or a list of chunks)"
        )
    response = line["response"]
    request = line.get("request")
    if request is not None and not isinstance(request, dict):
        raise InputError(
            f"{location}: expected an object or null 'request', found {_kind(request)}"
        )
    stream = isinstance(response, list)
    if line.get("stream") is True and not stream:
        raise InputError(f"{location}: 'stream' is true, so 'response' must be a list of chunks")
    if not stream and not isinstance(response, dict):
        raise InputError(
            f"{location}: expected an object or a list of chunks as 'response', found {_kind(response)}"
        )
    if stream and not all(isinstance(c, dict) for c in response):
        raise InputError(f"{location}: every stream chunk in 'response' must be an object")
    if isinstance(response, dict) and _is_error_body(response):
        return FailedCall(location, None, _error_text(response["error"]))
    complete = line.get("complete")
    if complete is not None and not isinstance(complete, bool):
        raise InputError(
            f"{location}: expected true or false as 'complete', found {_kind(complete)}"
        )
    endpoint = line.get("endpoint", line.get("url"))
    external_id = line.get("external_id")
    extra: dict[str, object] = {}
    if isinstance(line.get("purpose"), str):
        extra["purpose"] = line["purpose"]
    return CallRecord(
        provider=provider,
        model=_optional_text(location, line, "model") or infer_model(response, request),
        endpoint=endpoint if isinstance(endpoint, str) else infer_endpoint(response, request),
        request=request,
        response=response,
        external_id=external_id if isinstance(external_id, str) else response_id(response),
        stream=stream,
        complete=complete if complete is not None else (not stream or stream_is_complete(response)),
        account=_optional_text(location, line, "account"),
        usage=line["usage"] if line.get("usage") is not None else response_usage(response),
        location=location,
        extra=extra,
    )


def _logged_failure(location: str, line: dict[str, Any]) -> FailedCall | None:
    """A log line that says the call failed: an error without a response, or a non-200 status."""
    custom_id = line.get("custom_id") if isinstance(line.get("custom_id"), str) else None
    status = line.get("status_code")
    if status is not None and status != 200:
        return FailedCall(location, custom_id, f"HTTP {status}")
    if line.get("error") is not None and line.get("response") is None:
        return FailedCall(location, custom_id, _error_text(line["error"]))
    return None


def _is_error_body(body: dict[str, Any]) -> bool:
    """A body that is only an API error object (`{"error": {...}}`), not a completion."""
    return body.get("error") is not None and not any(
        key in body for key in ("choices", "output", "object", "data", "content", "candidates")
    )


def _optional_text(location: str, line: dict[str, Any], key: str) -> str | None:
    """An optional string field; any other type is an error rather than silently dropped."""
    value = line.get(key)
    if value is None or isinstance(value, str):
        return value
    raise InputError(f"{location}: expected a string '{key}', found {_kind(value)}")


def _error_text(error: object) -> str:
    """A short reason from an OpenAI error object (`code: message`) or whatever else was given."""
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        message = error.get("message")
        parts = [str(p) for p in (code, message) if p]
        return ": ".join(parts) if parts else "error"
    return str(error)


def _as_dict(value: object) -> dict[str, Any]:
    """`iter_records` yields objects for JSONL; narrow the type for the checker."""
    assert isinstance(value, dict)
    return value


_kind = json_kind
