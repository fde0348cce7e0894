"""The provider-independent hook: record model calls as they pass through an SDK's httpx2 client.

An `openai` or `anthropic` client sends every request through one `httpx2.Client` (or
`AsyncClient`). `recording_http_client` builds a stand-in for it that sends through the original and,
for every successful POST to one of a `CallRecorder`'s model endpoints, hands what went over the wire
to `Ledger.record_call`: the request is the JSON body exactly as sent and the response the JSON body
exactly as received; a streamed (SSE) response is recorded as the list of its event payloads once
its end has been received (the body's end, `[DONE]`, a final Responses-API event or Anthropic's
`message_stop`), or with ``complete=False`` when the caller closes or drops it first, or when the
server ends it with an `error` event. The bytes the caller receives are never altered: the hook
only reads them as they pass.

Recording happens before a non-streamed call returns and when a stream is closed. If it fails,
``on_error="raise"`` (the default) raises `RecordingError` carrying what was received, because an
unrecorded call defeats the ledger; ``on_error="warn"`` issues a `RecordingWarning` instead. A stream
dropped without being closed is recorded from a finalizer, where nothing can be raised to the caller,
so a failure there is always a warning. `ledger.integrations.clients.recorded` puts the hook into a
client.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol

import anyio
import anyio.to_thread
import httpx2

from ledger.errors import LedgerError, UsageError
from ledger.spec import jcs
from ledger.spec.entries import PURPOSES

__all__ = [
    "ANTHROPIC_ENDPOINTS",
    "DEFAULT_ENDPOINTS",
    "PURPOSES",
    "CallLedger",
    "CallRecorder",
    "CapturedCall",
    "OnError",
    "RecordingError",
    "RecordingWarning",
    "SSEParser",
    "is_recording_client",
    "recording_http_client",
]

log = logging.getLogger(__name__)

DEFAULT_ENDPOINTS = ("/chat/completions", "/completions", "/responses")
"""The model endpoints of the OpenAI API (and of Azure OpenAI and OpenAI-compatible servers)."""
ANTHROPIC_ENDPOINTS = ("/v1/messages",)
"""The model endpoint of the Anthropic API (not `/v1/messages/batches` or `/v1/messages/count_tokens`)."""
OnError = Literal["raise", "warn"]

# Stream events after which the server sends nothing more about the response (Responses API;
# Anthropic Messages).
_TERMINAL_EVENTS = frozenset(
    {"response.completed", "response.incomplete", "response.failed", "message_stop"}
)
# A stream event saying the server gave up mid-way (Anthropic, Responses API): what came is
# recorded, as not complete.
_ERROR_EVENT = "error"


class RecordingError(LedgerError):
    """A model call succeeded but could not be recorded; `.response` holds what was received."""

    def __init__(
        self,
        message: str,
        *,
        response: object,
        request: object | None = None,
        http_response: httpx2.Response | None = None,
    ) -> None:
        super().__init__(message)
        self.response = response
        self.request = request
        self.http_response = http_response


class RecordingWarning(UserWarning):
    """A model call could not be recorded and `on_error="warn"` was chosen (or raising was impossible)."""


class CallLedger(Protocol):
    """What the hook needs from a ledger: `Ledger.record_call` (kept structural so tests and
    alternative sinks can stand in)."""

    def record_call(
        self,
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
    ) -> object: ...


@dataclass(frozen=True)
class CapturedCall:
    """One model call as seen on the wire, ready to record."""

    endpoint: str
    request: object | None  # the JSON request body as sent; None when it was not JSON
    response: object  # the JSON response body, or the list of stream event payloads
    stream: bool
    complete: bool
    model: str | None = None  # None: `record_call` reads it from the response or the request
    external_id: str | None = None  # likewise


@dataclass(frozen=True)
class CallRecorder:
    """Where and how captured calls are recorded; shared by every request of a wrapped client."""

    ledger: CallLedger
    purpose: str
    provider: str = "openai"
    account: str | None = None
    on_error: OnError = "raise"
    endpoints: tuple[str, ...] = DEFAULT_ENDPOINTS
    model_from_url: Callable[[httpx2.URL], str | None] | None = None
    """The model a request URL names (an Azure deployment), used when neither body names one."""
    error_type: type[RecordingError] = RecordingError
    """What a failure raises: a subclass also derived from an SDK's own root error, so that SDK
    lets it through as it is instead of retrying the call (see `clients.recorded`)."""

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSES:
            raise UsageError(
                f"purpose: expected one of {', '.join(PURPOSES)}, found {self.purpose!r}"
            )
        if self.on_error not in ("raise", "warn"):
            raise UsageError(f"on_error: expected 'raise' or 'warn', found {self.on_error!r}")
        if not self.provider:
            raise UsageError("provider: expected a non-empty name, found an empty string")

    def endpoint_of(self, request: httpx2.Request) -> str | None:
        """The API operation of a model call (`/v1/chat/completions`, as batch files name it,
        whatever prefix a proxy or Azure puts before it); None for every other request."""
        if request.method != "POST":
            return None
        path = request.url.path.rstrip("/")
        for endpoint in sorted(self.endpoints, key=len, reverse=True):  # chat/completions first
            if path.endswith(endpoint):
                return endpoint if endpoint.startswith("/v1/") else "/v1" + endpoint
        return None

    def record(self, call: CapturedCall) -> None:
        """Append one call entry; raises RecordingError (carrying the response) on failure."""
        try:
            self.ledger.record_call(
                provider=self.provider,
                purpose=self.purpose,
                request=call.request,
                response=call.response,
                endpoint=call.endpoint,
                model=call.model,
                external_id=call.external_id,
                account=self.account,
                stream=call.stream,
                complete=call.complete,
            )
        except Exception as err:
            raise self.error(
                f"{self.provider} call to {call.endpoint} could not be recorded: {err}",
                response=call.response,
                request=call.request,
            ) from err

    def error(
        self,
        message: str,
        *,
        response: object,
        request: object | None = None,
        http_response: httpx2.Response | None = None,
    ) -> RecordingError:
        """A RecordingError of this recorder's `error_type`."""
        return self.error_type(
            message, response=response, request=request, http_response=http_response
        )

    def report(self, err: RecordingError, *, can_raise: bool) -> None:
        """Apply `on_error`: raise, or warn when asked to (or when there is nobody to raise to)."""
        if self.on_error == "raise" and can_raise:
            raise err
        # Both channels: services read logs, notebooks and tests see warnings (which Python shows
        # only once per place by default, while every lost call matters).
        log.warning("%s", err)
        warnings.warn(str(err), RecordingWarning, stacklevel=3)


# --- capturing what goes over the wire ----------------------------------------------------------------


def _request_json(request: httpx2.Request) -> object | None:
    """The request body as sent, parsed; None when there is none or it is not JSON (DESIGN: a
    request not available is null)."""
    try:
        content = request.content
    except httpx2.RequestNotRead:
        return None
    if not content:
        return None
    try:
        return jcs.parse_json_line(content)
    except ValueError:
        return None


def _is_event_stream(response: httpx2.Response) -> bool:
    return (
        response.headers.get("content-type", "").split(";")[0].strip().lower()
        == "text/event-stream"
    )


class _ContentDecoder:
    """Undo the response's Content-Encoding for our copy of the bytes (the caller's copy is decoded
    by httpx2 itself, with its own decoder state)."""

    def __init__(self, response: httpx2.Response) -> None:
        encodings = [
            value.strip().lower()
            for value in response.headers.get_list("content-encoding", split_commas=True)
            if value.strip().lower() not in ("", "identity")
        ]
        self._decoder: Any = None
        if encodings:
            from httpx2._decoders import MultiDecoder  # the same decoders httpx2 applies

            self._decoder = MultiDecoder(encodings)

    def decode(self, data: bytes) -> bytes:
        return data if self._decoder is None else b"".join(self._decoder.decode(data))

    def flush(self) -> bytes:
        return b"" if self._decoder is None else b"".join(self._decoder.flush())


class SSEParser:
    """Incremental text/event-stream parser (WHATWG rules) that yields each event's data."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        buffer = self._buffer + chunk
        held = b""
        if buffer.endswith(b"\r"):  # maybe the first half of a CRLF still in flight
            buffer, held = buffer[:-1], b"\r"
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, rest = buffer.split(b"\n")
        self._buffer = rest + held
        events: list[str] = []
        for line in lines:
            self._line(line.decode("utf-8", "replace"), events)
        return events

    def finish(self) -> list[str]:
        """At end of body a last unterminated line still counts, but an event is only dispatched
        by a blank line (as in the openai client's own decoder)."""
        events: list[str] = []
        if self._buffer:
            self._line(self._buffer.rstrip(b"\r").decode("utf-8", "replace"), events)
            self._buffer = b""
        return events

    def _line(self, line: str, events: list[str]) -> None:
        if not line:
            if self._data:
                events.append("\n".join(self._data))
                self._data = []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))


class _Capture:
    """The copy of one response body, built while the caller reads it; finished exactly once."""

    def __init__(
        self,
        recorder: CallRecorder,
        endpoint: str,
        request: httpx2.Request,
        response: httpx2.Response,
    ) -> None:
        self.recorder = recorder
        self.endpoint = endpoint
        self.request = _request_json(request)
        self.url = request.url
        self.http_response = response
        self.sse = _is_event_stream(response)
        self.events: list[object] = []
        self.body = bytearray()
        self.ended = False  # the server's end of the response was received
        self.failed = False  # the server ended the stream with an error event
        self.fault: Exception | None = None
        self._decoder: _ContentDecoder | None = None
        self._parser = SSEParser()
        self._lock = threading.Lock()
        self._finished = False

    def _guard(self, step: Callable[[], None]) -> None:
        """Run one step of our copy. A failure marks the capture faulty (reported when the call is
        recorded) and never reaches the caller, whose bytes are unaffected."""
        if self.fault is not None:
            return
        try:
            step()
        except Exception as err:  # noqa: BLE001 - kept, and reported by `call()`
            self.fault = err

    def feed(self, raw: bytes) -> None:
        """Take a copy of raw (still content-encoded) bytes on their way to the caller."""

        def step() -> None:
            if self._decoder is None:
                self._decoder = _ContentDecoder(self.http_response)
            self._take(self._decoder.decode(raw))

        self._guard(step)

    def whole(self, content: bytes) -> None:
        """A body httpx2 already read and decoded in full."""
        self._guard(lambda: self._take(content))
        self.end_of_body()

    def end_of_body(self) -> None:
        def step() -> None:
            if self._decoder is not None:
                self._take(self._decoder.flush())
            if self.sse:
                self._events(self._parser.finish())

        self._guard(step)
        self.ended = True

    def _take(self, data: bytes) -> None:
        if not data:
            return
        if self.sse:
            self._events(self._parser.feed(data))
        else:
            self.body += data

    def _events(self, payloads: list[str]) -> None:
        for payload in payloads:
            if payload.startswith("[DONE]"):
                self.ended = True
                continue
            try:
                event = jcs.parse_json_line(payload)
            except ValueError:
                continue  # not a chunk (the client rejects it too); nothing to record
            self.events.append(event)
            kind = event.get("type") if isinstance(event, Mapping) else None
            if kind in _TERMINAL_EVENTS:
                self.ended = True
            elif kind == _ERROR_EVENT:
                self.failed = True

    def call(self) -> CapturedCall:
        """What to record; raises RecordingError when the body cannot be made into a call."""
        received: object = self.events if self.sse else bytes(self.body)
        if self.fault is not None:
            raise self.recorder.error(
                f"{self.endpoint}: the response could not be captured for recording: {self.fault}",
                response=received,
                request=self.request,
                http_response=self.http_response,
            )
        if self.sse:
            events = list(self.events)
            return CapturedCall(
                self.endpoint,
                self.request,
                events,
                True,
                self.ended and not self.failed,
                model=self._model(events),
                external_id=_named(events, "id"),
            )
        if not self.ended:
            raise self.recorder.error(
                f"{self.endpoint}: the response body was closed before it was read, "
                "so the call could not be recorded",
                response=None,
                request=self.request,
                http_response=self.http_response,
            )
        try:
            body = jcs.parse_json_line(bytes(self.body))
        except ValueError as err:
            raise self.recorder.error(
                f"{self.endpoint}: expected a JSON response body, found {len(self.body)} bytes "
                f"that do not parse ({err})",
                response=bytes(self.body),
                request=self.request,
                http_response=self.http_response,
            ) from None
        return CapturedCall(self.endpoint, self.request, body, False, True, self._model(body))

    def _model(self, response: object) -> str | None:
        """The model the response names (a stream: its first chunk that names one), else, for a
        client whose URLs name a model (an Azure deployment), the request's, else the URL's; None
        leaves it to `record_call`."""
        named = _named([response] if isinstance(response, Mapping) else response, "model")
        if named is not None or self.recorder.model_from_url is None:
            return named
        requested = self.request.get("model") if isinstance(self.request, Mapping) else None
        if isinstance(requested, str) and requested:
            return requested
        return self.recorder.model_from_url(self.url)

    def claim(self) -> bool:
        """True for the one caller that gets to record this response."""
        with self._lock:
            if self._finished:
                return False
            self._finished = True
            return True

    def finish(self, *, can_raise: bool) -> None:
        """Record the call (once); failures go through the recorder's `on_error`."""
        if not self.claim():
            return
        self.record(can_raise=can_raise)

    def record(self, *, can_raise: bool) -> None:
        try:
            call = self.call()
            self.recorder.record(call)
        except RecordingError as err:
            if err.http_response is None:
                err.http_response = self.http_response
            self.recorder.report(err, can_raise=can_raise)


def _named(bodies: object, key: str) -> str | None:
    """The first non-empty string `key` of a body or stream event, or of the message or response an
    event carries (Anthropic `message_start`, Responses `response.created`). Azure's first chat
    chunk (its prompt filter results) has an empty id and model, so "first non-empty" matters."""
    if not isinstance(bodies, list):
        return None
    for body in bodies:
        if not isinstance(body, Mapping):
            continue
        for holder in (body, body.get("message"), body.get("response")):
            value = holder.get(key) if isinstance(holder, Mapping) else None
            if isinstance(value, str) and value:
                return value
    return None


# --- tees: byte streams that copy what the caller reads -------------------------------------------------


class _TeeSyncStream(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, capture: _Capture) -> None:
        self._inner = inner
        self._capture = capture

    @property
    def elapsed(self) -> timedelta | None:
        """httpx2 reads a response's elapsed time from its stream."""
        value = getattr(self._inner, "elapsed", None)
        return value if isinstance(value, timedelta) else None

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._capture.feed(chunk)
            yield chunk
        self._capture.end_of_body()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._capture.finish(can_raise=True)

    def __del__(self) -> None:
        # Dropped without close (e.g. a stream never iterated): record what there is; nobody to
        # raise to here, so a failure can only warn.
        self._capture.finish(can_raise=False)


async def _record_off_loop(capture: _Capture) -> None:
    """DuckDB work blocks, so it runs in a worker thread; shielded, because a caller cancelling
    mid-stream still received (and paid for) what came so far."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(functools.partial(capture.record, can_raise=True))


class _TeeAsyncStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, capture: _Capture) -> None:
        self._inner = inner
        self._capture = capture

    @property
    def elapsed(self) -> timedelta | None:
        value = getattr(self._inner, "elapsed", None)
        return value if isinstance(value, timedelta) else None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream = self._inner.__aiter__()
        try:
            async for chunk in stream:
                self._capture.feed(chunk)
                yield chunk
            self._capture.end_of_body()
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._capture.claim():
                await _record_off_loop(self._capture)

    def __del__(self) -> None:
        self._capture.finish(can_raise=False)


# --- HTTP clients that delegate to the original and tee model calls --------------------------------------


class _UnusedTransport(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """Placeholder so the wrapper builds no connection pool of its own; every request goes through
    the wrapped client."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        raise RuntimeError("the recording client sends through the client it wraps")

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        raise RuntimeError("the recording client sends through the client it wraps")


class _RecordingClient(httpx2.Client):
    """An httpx2.Client that sends with the user's client (its pool, proxies, auth, hooks) and
    records model calls on the way back."""

    def __init__(self, inner: httpx2.Client, recorder: CallRecorder) -> None:
        super().__init__(transport=_UnusedTransport(), trust_env=False, timeout=inner.timeout)
        self.inner = inner
        self.recorder = recorder

    def build_request(self, *args: Any, **kwargs: Any) -> httpx2.Request:
        return self.inner.build_request(*args, **kwargs)

    def send(
        self, request: httpx2.Request, *, stream: bool = False, **kwargs: Any
    ) -> httpx2.Response:
        response = self.inner.send(request, stream=stream, **kwargs)
        endpoint = self.recorder.endpoint_of(request)
        if endpoint is None or not response.is_success:
            return response
        capture = _Capture(self.recorder, endpoint, request, response)
        if stream:
            response.stream = _TeeSyncStream(response.stream, capture)  # type: ignore[arg-type]
        else:
            capture.whole(response.content)
            capture.finish(can_raise=True)
        return response

    @property
    def is_closed(self) -> bool:
        return self.inner.is_closed

    def close(self) -> None:
        self.inner.close()

    def _transport_for_url(self, url: httpx2.URL) -> httpx2.BaseTransport:
        return self.inner._transport_for_url(url)


class _RecordingAsyncClient(httpx2.AsyncClient):
    """The async twin of `_RecordingClient`; ledger writes run in a worker thread."""

    def __init__(self, inner: httpx2.AsyncClient, recorder: CallRecorder) -> None:
        super().__init__(transport=_UnusedTransport(), trust_env=False, timeout=inner.timeout)
        self.inner = inner
        self.recorder = recorder

    def build_request(self, *args: Any, **kwargs: Any) -> httpx2.Request:
        return self.inner.build_request(*args, **kwargs)

    async def send(
        self, request: httpx2.Request, *, stream: bool = False, **kwargs: Any
    ) -> httpx2.Response:
        response = await self.inner.send(request, stream=stream, **kwargs)
        endpoint = self.recorder.endpoint_of(request)
        if endpoint is None or not response.is_success:
            return response
        capture = _Capture(self.recorder, endpoint, request, response)
        if stream:
            response.stream = _TeeAsyncStream(response.stream, capture)  # type: ignore[arg-type]
        else:
            capture.whole(response.content)
            await _record_off_loop(capture)
        return response

    @property
    def is_closed(self) -> bool:
        return self.inner.is_closed

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _transport_for_url(self, url: httpx2.URL) -> httpx2.AsyncBaseTransport:
        return self.inner._transport_for_url(url)


# --- building one ------------------------------------------------------------------------------------


def is_recording_client(client: object) -> bool:
    """Whether `client` is an HTTP client this module built (so its SDK client is recorded already)."""
    return isinstance(client, (_RecordingClient, _RecordingAsyncClient))


def recording_http_client(
    inner: httpx2.Client | httpx2.AsyncClient, recorder: CallRecorder
) -> httpx2.Client | httpx2.AsyncClient:
    """An HTTP client of the same kind (sync or async) that sends with `inner` (sharing its pool,
    proxies and auth, so closing either closes both) and records model calls with `recorder`."""
    if isinstance(inner, httpx2.AsyncClient):
        return _RecordingAsyncClient(inner, recorder)
    return _RecordingClient(inner, recorder)
