"""The OpenAI client wrapper, exercised with the real `openai` package against a local HTTP server.

The server is plain `http.server`: it answers chat completions, completions and Responses-API calls,
as JSON or as chunked SSE streams, keeps the exact bytes it received and sent, and can hold a stream
open mid-way so a test can abandon it. Expected digests and outputs are computed here independently
(`rfc8785` for JCS, a direct transcription of DESIGN's segment rule), never with `ledger.spec`.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import hashlib
import json
import re
import threading
import unicodedata
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Ledger
from ledger.errors import KeyFileError, LedgerError, UsageError
from ledger.integrations.openai import (
    RecordingError,
    RecordingWarning,
    SSEParser,
    recorded,
)
from ledger.log.types import Entry

# --- independent expectations --------------------------------------------------------------------------


def jcs_sha256(value: Any) -> str:
    return hashlib.sha256(rfc8785.dumps(value)).hexdigest()


def naive_outputs(texts: list[str]) -> list[str]:
    """DESIGN "Hashing": each text and each of its paragraphs that normalizes to >= 32 code points."""
    out = set()
    for text in texts:
        for piece in [text, *re.split(r"\n\s*\n", text)]:
            norm = " ".join(unicodedata.normalize("NFKC", piece).casefold().split())
            if len(norm) >= 32:
                out.add(hashlib.sha256(norm.encode("utf-8")).hexdigest())
    return sorted(out)


ANSWER = (
    "The Treaty of Westphalia was signed in 1648.\n\n"
    "It ended the Thirty Years' War and reshaped the map of central Europe."
)
TOOL_ARGS = '{"city": "Reykjavik", "unit": "celsius", "days": 3}'
DELTAS = [
    "The Treaty of ",
    "Westphalia was signed ",
    "in 1648.\n\nIt ended the ",
    "Thirty Years' War.",
]


# --- the local OpenAI-compatible server -------------------------------------------------------------


@dataclass
class Exchange:
    path: str
    request: bytes
    response: bytes | None = None  # a JSON body as sent (before any compression)
    events: list[bytes] = field(default_factory=list)  # SSE data payloads as sent


class FakeOpenAI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.exchanges: list[Exchange] = []
        self.gzip = False
        self.hold_after: int | None = None  # stream: send this many events, then wait for `release`
        self.release = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that abandon a stream reset their connection; that is the point

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def _call_id(prefix: str, body: bytes) -> str:
    return prefix + hashlib.sha256(body).hexdigest()[:12]


def chat_completion(req: dict[str, Any], cid: str) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": req["model"] + "-2024-08-06",
        "system_fingerprint": "fp_test",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {
                    "role": "assistant",
                    "content": ANSWER,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": TOOL_ARGS},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
    }


def completion(req: dict[str, Any], cid: str) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "text_completion",
        "created": 1_700_000_000,
        "model": req["model"],
        "choices": [{"index": 0, "text": ANSWER, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 30, "total_tokens": 35},
    }


def response_object(req: dict[str, Any], cid: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": cid,
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": req["model"],
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": ANSWER, "annotations": []}],
            }
        ]
        if status == "completed"
        else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {"input_tokens": 5, "output_tokens": 30, "total_tokens": 35},
    }


def chat_events(req: dict[str, Any], cid: str) -> list[dict[str, Any]]:
    base = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": req["model"],
    }
    events = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
    ]
    for piece in DELTAS:
        events.append(
            {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        )
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return events


def completion_events(req: dict[str, Any], cid: str) -> list[dict[str, Any]]:
    base = {"id": cid, "object": "text_completion", "created": 1_700_000_000, "model": req["model"]}
    return [
        {**base, "choices": [{"index": 0, "text": p, "finish_reason": None, "logprobs": None}]}
        for p in DELTAS
    ]


def response_events(req: dict[str, Any], cid: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {
            "type": "response.created",
            "sequence_number": 0,
            "response": response_object(req, cid, "in_progress"),
        }
    ]
    for i, piece in enumerate(DELTAS):
        events.append(
            {
                "type": "response.output_text.delta",
                "sequence_number": i + 1,
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            }
        )
    final = response_object(req, cid)
    final["output"][0]["content"][0]["text"] = "".join(DELTAS)
    events.append(
        {"type": "response.completed", "sequence_number": len(DELTAS) + 1, "response": final}
    )
    return events


ROUTES = {
    "/v1/chat/completions": ("chatcmpl-", chat_completion, chat_events, True),
    "/v1/completions": ("cmpl-", completion, completion_events, True),
    "/v1/responses": ("resp_", response_object, response_events, False),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "object": "list",
                "data": [{"id": "gpt-test", "object": "model", "created": 1, "owned_by": "x"}],
            }
        )
        self._send_json(200, body.encode())

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        exchange = Exchange(self.path, raw)
        self.server.exchanges.append(exchange)
        req = json.loads(raw)
        if self.path not in ROUTES or req.get("model") == "bad-model":
            self._send_json(
                400, b'{"error": {"message": "no such model", "type": "invalid_request_error"}}'
            )
            return
        prefix, make_body, make_events, done_marker = ROUTES[self.path]
        cid = _call_id(prefix, raw)
        if not req.get("stream"):
            exchange.response = json.dumps(make_body(req, cid), ensure_ascii=False).encode()
            self._send_json(200, exchange.response)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        compressor = None
        if self.server.gzip:
            self.send_header("Content-Encoding", "gzip")
            compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        self.end_headers()
        payloads = [json.dumps(e).encode() for e in make_events(req, cid)]
        if done_marker:
            payloads.append(b"[DONE]")
        try:
            for i, payload in enumerate(payloads):
                if self.server.hold_after is not None and i == self.server.hold_after:
                    self.server.release.wait(10)
                if payload != b"[DONE]":
                    exchange.events.append(payload)
                frame = b"data: " + payload + b"\n\n"
                if compressor is not None:
                    frame = compressor.compress(frame) + compressor.flush(zlib.Z_SYNC_FLUSH)
                self._chunk(frame)
            if compressor is not None:
                self._chunk(compressor.flush())
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    def _send_json(self, status: int, body: bytes) -> None:
        if self.server.gzip:
            body = gzip.compress(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.server.gzip:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def module_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(module_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    module_server.exchanges.clear()
    module_server.gzip = False
    module_server.hold_after = None
    module_server.release.clear()
    yield module_server
    module_server.release.set()


@pytest.fixture
def lg(tmp_path: Path) -> Ledger:
    return Ledger.init(tmp_path / "ledger.duckdb", origin="test.local/openai")


def sync_client(server: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)


def async_client(server: FakeOpenAI) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)


def calls(lg: Ledger) -> list[Entry]:
    return lg.log(kinds=["call"])


def texts_of_events(events: list[dict[str, Any]]) -> list[str]:
    return ["".join(DELTAS)]


# --- non-streamed calls ------------------------------------------------------------------------------

CALLS = {
    "chat": lambda c, tag: c.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": f"When was Westphalia signed? {tag}"}],
    ),
    "completions": lambda c, tag: c.completions.create(
        model="gpt-test-instruct", prompt=f"Westphalia {tag}"
    ),
    "responses": lambda c, tag: c.responses.create(
        model="gpt-test", input=f"When was Westphalia? {tag}"
    ),
}
EXPECTED_TEXTS = {"chat": [ANSWER, TOOL_ARGS], "completions": [ANSWER], "responses": [ANSWER]}


@pytest.mark.parametrize("kind", sorted(CALLS))
def test_wrapped_client_returns_identical_objects_and_records_one_call(
    kind: str, server: FakeOpenAI, lg: Ledger
) -> None:
    plain = sync_client(server)
    wrapped = recorded(plain, lg, purpose="evaluation", account="team-a")
    assert type(wrapped) is type(plain)

    expected = CALLS[kind](plain, "x")
    got = CALLS[kind](wrapped, "x")

    assert type(got) is type(expected)
    assert got == expected
    assert got.to_dict() == expected.to_dict()
    first, second = server.exchanges
    assert first.request == second.request  # the request body on the wire is unchanged too

    (entry,) = calls(lg)  # only the wrapped call was recorded
    body = entry.body
    sent = json.loads(second.response or b"")
    assert body["request"] == jcs_sha256(json.loads(second.request))
    assert body["response"] == jcs_sha256(sent)
    assert body["outputs"] == naive_outputs(EXPECTED_TEXTS[kind])
    assert body["outputs"]  # the test texts do produce segments
    assert body["external_id"] == sent["id"]
    assert body["model"] == sent["model"]
    assert body["endpoint"] == second.path
    assert (body["provider"], body["purpose"], body["account"]) == (
        "openai",
        "evaluation",
        "team-a",
    )
    assert body["usage"] == sent["usage"]
    assert "complete" not in body


def test_every_call_is_one_entry_and_the_original_client_stays_unrecorded(
    server: FakeOpenAI, lg: Ledger
) -> None:
    plain = sync_client(server)
    wrapped = recorded(plain, lg, purpose="annotation", provider="openai-eu")
    for i in range(3):
        CALLS["chat"](wrapped, f"q{i}")
    CALLS["chat"](plain, "not recorded")
    entries = calls(lg)
    assert len(entries) == 3
    sent_ids = [json.loads(e.response or b"")["id"] for e in server.exchanges[:3]]
    assert [e.body["external_id"] for e in entries] == sent_ids
    assert {e.body["provider"] for e in entries} == {"openai-eu"}


def test_raw_response_access_is_recorded_too(server: FakeOpenAI, lg: Ledger) -> None:
    wrapped = recorded(sync_client(server), lg, purpose="evaluation")
    raw = wrapped.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "raw"}]
    )
    assert raw.parse().choices[0].message.content == ANSWER
    (entry,) = calls(lg)
    assert entry.body["response"] == jcs_sha256(json.loads(server.exchanges[0].response or b""))


def test_streaming_response_access_is_recorded_once_read(server: FakeOpenAI, lg: Ledger) -> None:
    """`with_streaming_response` sends with stream=True but gets a JSON body, read on demand."""
    wrapped = recorded(sync_client(server), lg, purpose="evaluation")
    with wrapped.responses.with_streaming_response.create(model="gpt-test", input="lazy") as raw:
        assert calls(lg) == []
        assert raw.parse().output_text == ANSWER
    (entry,) = calls(lg)
    assert entry.body["response"] == jcs_sha256(json.loads(server.exchanges[0].response or b""))


def test_unread_body_cannot_be_recorded_and_says_so(server: FakeOpenAI, lg: Ledger) -> None:
    wrapped = recorded(sync_client(server), lg, purpose="evaluation", on_error="warn")
    with (
        pytest.warns(RecordingWarning, match="closed before it was read"),
        wrapped.responses.with_streaming_response.create(model="gpt-test", input="unread"),
    ):
        pass
    assert calls(lg) == []


def test_other_endpoints_and_error_responses_are_not_recorded(
    server: FakeOpenAI, lg: Ledger
) -> None:
    wrapped = recorded(sync_client(server), lg, purpose="evaluation")
    assert [m.id for m in wrapped.models.list()] == ["gpt-test"]
    with pytest.raises(openai.BadRequestError):
        wrapped.chat.completions.create(
            model="bad-model", messages=[{"role": "user", "content": "x"}]
        )
    assert calls(lg) == []


def test_gzip_bodies_are_recorded_decoded(server: FakeOpenAI, lg: Ledger) -> None:
    server.gzip = True
    wrapped = recorded(sync_client(server), lg, purpose="evaluation")
    result = CALLS["chat"](wrapped, "gz")
    assert result.choices[0].message.content == ANSWER
    chunks = [
        c
        for c in wrapped.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "gz stream"}], stream=True
        )
    ]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(DELTAS)
    plain_json, streamed = calls(lg)
    assert plain_json.body["response"] == jcs_sha256(
        json.loads(server.exchanges[0].response or b"")
    )
    assert streamed.body["response"] == jcs_sha256(
        [json.loads(p) for p in server.exchanges[1].events]
    )


def test_big_integers_are_hashed_exactly(server: FakeOpenAI, lg: Ledger) -> None:
    """A 64-bit id in the request must reach the digest as its exact digits (JCS big-int extension)."""
    big = 2**63 + 7
    wrapped = recorded(sync_client(server), lg, purpose="evaluation")
    wrapped.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "big"}],
        extra_body={"metadata_id": big},
    )
    (entry,) = calls(lg)
    request = json.loads(server.exchanges[0].request)
    assert request["metadata_id"] == big
    request["metadata_id"] = "__BIG__"
    canonical = rfc8785.dumps(request).replace(b'"__BIG__"', str(big).encode())
    assert entry.body["request"] == hashlib.sha256(canonical).hexdigest()


# --- streams -----------------------------------------------------------------------------------------

STREAMS = {
    "chat": lambda c, tag: c.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": f"stream {tag}"}], stream=True
    ),
    "completions": lambda c, tag: c.completions.create(
        model="gpt-test-instruct", prompt=f"s {tag}", stream=True
    ),
    "responses": lambda c, tag: c.responses.create(
        model="gpt-test", input=f"stream {tag}", stream=True
    ),
}


@pytest.mark.parametrize("kind", sorted(STREAMS))
def test_sync_stream_is_recorded_once_complete(kind: str, server: FakeOpenAI, lg: Ledger) -> None:
    plain = sync_client(server)
    wrapped = recorded(plain, lg, purpose="evaluation")
    expected = [c.to_dict() for c in STREAMS[kind](plain, "s")]
    stream = STREAMS[kind](wrapped, "s")
    got = []
    for i, chunk in enumerate(stream):
        if i in (0, len(expected) - 1):
            assert calls(lg) == []  # nothing is recorded before the stream is complete
        got.append(chunk.to_dict())
    assert got == expected

    (entry,) = calls(lg)
    events = [json.loads(p) for p in server.exchanges[1].events]
    assert entry.body["response"] == jcs_sha256(events)
    assert entry.body["request"] == jcs_sha256(json.loads(server.exchanges[1].request))
    assert entry.body["outputs"] == naive_outputs(["".join(DELTAS)])
    assert "complete" not in entry.body
    expected_id = events[0]["response"]["id"] if kind == "responses" else events[0]["id"]
    assert entry.body["external_id"] == expected_id


def test_sync_stream_abandoned_is_recorded_incomplete(server: FakeOpenAI, lg: Ledger) -> None:
    server.hold_after = 2  # the server sends two chunks, then waits
    wrapped = recorded(sync_client(server), lg, purpose="evaluation")
    stream = STREAMS["chat"](wrapped, "abandon")
    for i, _ in enumerate(stream):
        if i == 1:
            break
    del stream
    gc.collect()
    (entry,) = calls(lg)
    server.release.set()
    sent = [json.loads(p) for p in server.exchanges[0].events[:2]]
    assert entry.body["complete"] is False
    assert entry.body["response"] == jcs_sha256(sent)


def test_sync_stream_closed_early_is_recorded_incomplete(server: FakeOpenAI, lg: Ledger) -> None:
    server.hold_after = 1
    wrapped = recorded(sync_client(server), lg, purpose="evaluation")
    with STREAMS["responses"](wrapped, "close") as stream:
        next(iter(stream))
    (entry,) = calls(lg)  # recorded by the close, before any garbage collection
    server.release.set()
    assert entry.body["complete"] is False
    assert entry.body["external_id"].startswith("resp_")
    assert entry.body["response"] == jcs_sha256([json.loads(server.exchanges[0].events[0])])


@pytest.mark.parametrize("kind", sorted(STREAMS))
def test_async_stream_and_call_are_recorded(kind: str, server: FakeOpenAI, lg: Ledger) -> None:
    async def run() -> tuple[list[Any], list[Any], Any, Any]:
        plain = async_client(server)
        wrapped = recorded(plain, lg, purpose="training-data")
        expected = [c.to_dict() async for c in await STREAMS[kind](plain, "a")]
        got = [c.to_dict() async for c in await STREAMS[kind](wrapped, "a")]
        single_expected = await CALLS[kind](plain, "a")
        single = await CALLS[kind](wrapped, "a")
        await plain.close()
        return expected, got, single_expected, single

    expected, got, single_expected, single = asyncio.run(run())
    assert got == expected
    assert single == single_expected and type(single) is type(single_expected)
    streamed, plain_call = calls(lg)
    assert streamed.body["response"] == jcs_sha256(
        [json.loads(p) for p in server.exchanges[1].events]
    )
    assert streamed.body["purpose"] == "training-data"
    assert "complete" not in streamed.body
    assert plain_call.body["response"] == jcs_sha256(
        json.loads(server.exchanges[3].response or b"")
    )
    assert plain_call.body["outputs"] == naive_outputs(EXPECTED_TEXTS[kind])


def test_async_stream_closed_early_is_recorded_incomplete(server: FakeOpenAI, lg: Ledger) -> None:
    server.hold_after = 1

    async def run() -> None:
        wrapped = recorded(async_client(server), lg, purpose="evaluation")
        stream = await STREAMS["chat"](wrapped, "async abandon")
        async for _ in stream:
            break
        await stream.close()
        await wrapped.close()

    asyncio.run(run())
    (entry,) = calls(lg)
    server.release.set()
    assert entry.body["complete"] is False
    assert entry.body["response"] == jcs_sha256([json.loads(server.exchanges[0].events[0])])


# --- recording failures ------------------------------------------------------------------------------


@pytest.fixture
def keyless(lg: Ledger, tmp_path: Path) -> Ledger:
    """A ledger whose log key file is missing: every append fails (KeyFileError)."""
    return Ledger.open(lg.path, keys_dir=tmp_path / "no-keys-here")


def test_recording_failure_raises_with_the_response(server: FakeOpenAI, keyless: Ledger) -> None:
    wrapped = recorded(sync_client(server), keyless, purpose="evaluation")
    with pytest.raises(RecordingError) as caught:
        CALLS["chat"](wrapped, "fail")
    err = caught.value
    assert isinstance(err, LedgerError)
    assert isinstance(err.__cause__, KeyFileError)
    assert err.response == json.loads(server.exchanges[0].response or b"")
    assert err.request == json.loads(server.exchanges[0].request)
    assert calls(keyless) == []


def test_stream_recording_failure_raises_after_the_last_chunk(
    server: FakeOpenAI, keyless: Ledger
) -> None:
    wrapped = recorded(sync_client(server), keyless, purpose="evaluation")
    got: list[str] = []
    with pytest.raises(RecordingError) as caught:
        for chunk in STREAMS["chat"](wrapped, "fail"):
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "".join(DELTAS)  # the caller received every chunk first
    assert caught.value.response == [json.loads(p) for p in server.exchanges[0].events]


def test_warn_mode_warns_and_returns_the_result(server: FakeOpenAI, keyless: Ledger) -> None:
    plain = sync_client(server)
    wrapped = recorded(plain, keyless, purpose="evaluation", on_error="warn")
    with pytest.warns(RecordingWarning, match="could not be recorded"):
        got = CALLS["responses"](wrapped, "warn")
    assert got == CALLS["responses"](plain, "warn")
    with pytest.warns(RecordingWarning):
        chunks = list(STREAMS["chat"](wrapped, "warn"))
    assert len(chunks) == len(DELTAS) + 2
    assert calls(keyless) == []


def test_abandoned_stream_failure_in_a_finalizer_only_warns(
    server: FakeOpenAI, keyless: Ledger
) -> None:
    """Nothing can be raised from garbage collection, so even on_error="raise" warns there."""
    server.hold_after = 1
    wrapped = recorded(sync_client(server), keyless, purpose="evaluation")
    stream = STREAMS["chat"](wrapped, "gc")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        del stream  # never iterated: the response is dropped unread
        gc.collect()
    server.release.set()
    assert any(issubclass(w.category, RecordingWarning) for w in seen)


# --- usage -------------------------------------------------------------------------------------------


def test_usage_errors(server: FakeOpenAI, lg: Ledger) -> None:
    plain = sync_client(server)
    with pytest.raises(UsageError, match="purpose"):
        recorded(plain, lg, purpose="fun")
    with pytest.raises(UsageError, match="on_error"):
        recorded(plain, lg, purpose="other", on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="already recorded"):
        recorded(recorded(plain, lg, purpose="other"), lg, purpose="other")
    with pytest.raises(UsageError, match="expected an openai"):
        recorded(object(), lg, purpose="other")


# --- the SSE parser --------------------------------------------------------------------------------

_payload = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40
)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.lists(_payload, min_size=1, max_size=3), max_size=6),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
    comments=st.booleans(),
)
def test_sse_parser_yields_each_event_whatever_the_chunking(
    events: list[list[str]], newline: str, cuts: list[int], comments: bool
) -> None:
    text = ""
    for lines in events:
        if comments:
            text += ": keep-alive" + newline
        text += "".join(f"data: {line}{newline}" for line in lines) + newline
    data = text.encode("utf-8")
    parser = SSEParser()
    got: list[str] = []
    points = sorted({min(c, len(data)) for c in cuts})
    for start, end in zip([0, *points], [*points, len(data)]):
        got += parser.feed(data[start:end])
    got += parser.finish()
    assert got == ["\n".join(lines) for lines in events]
