"""The recorded client with the real `anthropic` SDK against a local Anthropic Messages server.

The server is plain `http.server`: POST /v1/messages answers a message with thinking, text and
tool_use blocks, as JSON or as the event stream Anthropic sends (`event:` lines, JSON `data:` with
`type`: message_start, content_block_start/delta/stop with text, thinking, signature and input-JSON
deltas, ping, message_delta, message_stop, and error). It also answers count_tokens and batches
(which must not be recorded), keeps the exact bytes it received and sent, and can hold a stream open
so a test can abandon it. Expected digests and outputs are computed here independently (`rfc8785`
for JCS, DESIGN's segment rule written out), never with `ledger.spec`.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import re
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import pytest
import rfc8785

from ledger import Ledger
from ledger.errors import KeyFileError, LedgerError, UsageError
from ledger.integrations import openai as openai_integration
from ledger.integrations.anthropic import RecordingError, recorded
from ledger.log.types import Entry

# --- independent expectations --------------------------------------------------------------------


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


MODEL = "claude-sonnet-4-5-20250929"
THINKING = [
    "The user asks about the Treaty of Westphalia. ",
    "It was signed in 1648, in Osnabrück and Münster.\n\n",
    "I should also check the weather in Reykjavik with the tool, for three days.",
]
ANSWER = [
    "The Peace of Westphalia was signed in 1648.\n\n",
    "It ended the Thirty Years' War ",
    "and reshaped the map of central Europe.",
]
TOOL_INPUT: dict[str, Any] = {"city": "Reykjavik", "unit": "celsius", "days": 3}
TOOL_JSON = ["", '{"city": "Reyk', 'javik", "unit": "cel', 'sius", "days": 3}']
SIGNATURE = "EqQBCkgIARABGAIiQL6mZ3Jb0fQ2xqD3pXyC7sAuyD4zJ0Tz0v5vC2FwXk1ZJt1tG2uQ=="
# The texts of the message's output: thinking, text, and the tool input as its JCS text.
TEXTS = ["".join(THINKING), "".join(ANSWER), rfc8785.dumps(TOOL_INPUT).decode()]


def message(req: dict[str, Any], mid: str) -> dict[str, Any]:
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [
            {"type": "thinking", "thinking": "".join(THINKING), "signature": SIGNATURE},
            {"type": "text", "text": "".join(ANSWER), "citations": None},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "weather"}
            | {"input": TOOL_INPUT},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 412,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 187,
            "service_tier": "standard",
        },
    }


def message_events(req: dict[str, Any], mid: str) -> list[dict[str, Any]]:
    start = message(req, mid) | {"content": [], "stop_reason": None}
    start["usage"] = start["usage"] | {"output_tokens": 1}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {"type": "ping"},
    ]
    for piece in THINKING:
        delta = {"type": "thinking_delta", "thinking": piece}
        events.append({"type": "content_block_delta", "index": 0, "delta": delta})
    events.append(
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": SIGNATURE},
        }
    )
    events.append({"type": "content_block_stop", "index": 0})
    events.append(
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "text", "text": "", "citations": None},
        }
    )
    for piece in ANSWER:
        delta = {"type": "text_delta", "text": piece}
        events.append({"type": "content_block_delta", "index": 1, "delta": delta})
    events.append({"type": "content_block_stop", "index": 1})
    events.append(
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "weather",
                "input": {},
            },
        }
    )
    for piece in TOOL_JSON:
        delta = {"type": "input_json_delta", "partial_json": piece}
        events.append({"type": "content_block_delta", "index": 2, "delta": delta})
    events.append({"type": "content_block_stop", "index": 2})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 187},
        }
    )
    events.append({"type": "message_stop"})
    return events


OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


# --- the local Anthropic server -------------------------------------------------------------------


@dataclass
class Exchange:
    path: str
    request: bytes
    response: bytes | None = None  # a JSON body as sent
    events: list[bytes] = field(default_factory=list)  # SSE data payloads as sent


class FakeAnthropic(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.exchanges: list[Exchange] = []
        self.hold_after: int | None = None  # stream: send this many events, then wait
        self.release = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that abandon a stream reset their connection; that is the point

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeAnthropic

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        exchange = Exchange(self.path, raw)
        self.server.exchanges.append(exchange)
        req = json.loads(raw)
        path = self.path.split("?")[0]
        if path == "/v1/messages/count_tokens":
            self._send_json(200, {"input_tokens": 412}, exchange)
            return
        if path == "/v1/messages/batches":
            self._send_json(200, batch_object(), exchange)
            return
        if path != "/v1/messages" or req.get("model") == "bad-model":
            error = {"type": "invalid_request_error", "message": "model: bad-model"}
            self._send_json(400, {"type": "error", "error": error}, exchange)
            return
        mid = "msg_01" + hashlib.sha256(raw).hexdigest()[:22]
        if req.get("model") == "odd-shape":  # 200, but not a Messages response
            body = {"id": mid, "type": "completion", "completion": "".join(ANSWER)}
            self._send_json(200, body | {"model": "odd-shape"}, exchange)
            return
        if not req.get("stream"):
            self._send_json(200, message(req, mid), exchange)
            return
        events = message_events(req, mid)
        if req.get("model") == "overloaded":  # the server gives up after the thinking block
            events = events[:8] + [OVERLOADED]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i, event in enumerate(events):
                if self.server.hold_after is not None and i == self.server.hold_after:
                    self.server.release.wait(10)
                payload = json.dumps(event, ensure_ascii=False).encode()
                exchange.events.append(payload)
                frame = b"event: " + event["type"].encode() + b"\ndata: " + payload + b"\n\n"
                self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
                self.wfile.flush()
            if self.server.hold_after == len(events):  # all events sent, the body not yet ended
                self.server.release.wait(10)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_json(self, status: int, value: object, exchange: Exchange) -> None:
        body = json.dumps(value, ensure_ascii=False).encode()
        exchange.response = body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def batch_object() -> dict[str, Any]:
    return {
        "id": "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message_batch",
        "processing_status": "in_progress",
        "request_counts": {
            "processing": 1,
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        },
        "ended_at": None,
        "created_at": "2025-06-01T18:37:24.100435Z",
        "expires_at": "2025-06-02T18:37:24.100435Z",
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": None,
    }


@pytest.fixture(scope="module")
def module_server() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(module_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    module_server.exchanges.clear()
    module_server.hold_after = None
    module_server.release.clear()
    yield module_server
    module_server.release.set()


@pytest.fixture
def lg(tmp_path: Path) -> Ledger:
    return Ledger.init(tmp_path / "ledger.duckdb", origin="test.local/anthropic")


def sync_client(server: FakeAnthropic, retries: int = 0) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=server.base_url, max_retries=retries)


def async_client(server: FakeAnthropic) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=server.base_url, max_retries=0)


def calls(lg: Ledger) -> list[Entry]:
    return lg.log(kinds=["call"])


def ask(tag: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": extra.pop("model", MODEL),
        "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [
            {
                "name": "weather",
                "description": "The weather forecast for a city.",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
        "messages": [{"role": "user", "content": f"When was Westphalia signed? {tag}"}],
        **extra,
    }


def sent_events(exchange: Exchange) -> list[Any]:
    return [json.loads(p) for p in exchange.events]


# --- plain messages ------------------------------------------------------------------------------


def test_message_is_returned_unchanged_and_recorded_once(server: FakeAnthropic, lg: Ledger) -> None:
    plain = sync_client(server)
    wrapped = recorded(plain, lg, purpose="evaluation", account="team-a")
    assert type(wrapped) is type(plain)

    expected = plain.messages.create(**ask("x"))
    got = wrapped.messages.create(**ask("x"))

    assert type(got) is type(expected)
    assert got == expected
    assert got.to_dict() == expected.to_dict()
    first, second = server.exchanges
    assert first.request == second.request  # the request on the wire is unchanged too

    (entry,) = calls(lg)
    body = entry.body
    sent = json.loads(second.response or b"")
    assert (body["provider"], body["model"], body["endpoint"]) == (
        "anthropic",
        MODEL,
        "/v1/messages",
    )
    assert (body["purpose"], body["account"]) == ("evaluation", "team-a")
    assert body["request"] == jcs_sha256(json.loads(second.request))
    assert body["response"] == jcs_sha256(sent)
    assert body["outputs"] == naive_outputs(TEXTS)
    assert naive_outputs(TEXTS[:1])[0] in body["outputs"]  # the thinking trace is an output
    assert body["external_id"] == sent["id"]
    assert body["usage"] == sent["usage"]
    assert "complete" not in body


def test_the_original_client_stays_unrecorded(server: FakeAnthropic, lg: Ledger) -> None:
    plain = sync_client(server)
    wrapped = recorded(plain, lg, purpose="annotation")
    for i in range(3):
        wrapped.messages.create(**ask(f"q{i}"))
    plain.messages.create(**ask("not recorded"))
    sent_ids = [json.loads(e.response or b"")["id"] for e in server.exchanges[:3]]
    assert [e.body["external_id"] for e in calls(lg)] == sent_ids


def test_the_openai_module_records_anthropic_clients_too(server: FakeAnthropic, lg: Ledger) -> None:
    """DESIGN: one `recorded` takes every client class; the class names the provider."""
    wrapped = openai_integration.recorded(sync_client(server), lg, purpose="evaluation")
    wrapped.messages.create(**ask("via openai module"))
    (entry,) = calls(lg)
    assert entry.body["provider"] == "anthropic"


def test_token_counts_batches_and_errors_are_not_recorded(
    server: FakeAnthropic, lg: Ledger
) -> None:
    wrapped = recorded(sync_client(server), lg, purpose="evaluation")
    counted = wrapped.messages.count_tokens(model=MODEL, messages=ask("count")["messages"])
    assert counted.input_tokens == 412
    batch = wrapped.messages.batches.create(
        requests=[{"custom_id": "q-1", "params": ask("batched")}]  # type: ignore[typeddict-item]
    )
    assert batch.id == "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF"
    with pytest.raises(anthropic.BadRequestError):
        wrapped.messages.create(**ask("bad", model="bad-model"))
    assert [e.path for e in server.exchanges] == [
        "/v1/messages/count_tokens",
        "/v1/messages/batches",
        "/v1/messages",
    ]
    assert calls(lg) == []


# --- streams -------------------------------------------------------------------------------------


def test_stream_is_recorded_once_complete_with_the_outputs_of_the_message(
    server: FakeAnthropic, lg: Ledger
) -> None:
    plain = sync_client(server)
    wrapped = recorded(plain, lg, purpose="evaluation")
    expected = [e.to_dict() for e in plain.messages.create(**ask("s", stream=True))]
    got = []
    for event in wrapped.messages.create(**ask("s", stream=True)):
        if event.type != "message_stop":
            assert calls(lg) == []  # nothing is recorded before the stream is complete
        got.append(event.to_dict())
    assert got == expected

    (entry,) = calls(lg)
    events = sent_events(server.exchanges[1])
    assert events[2] == {"type": "ping"}  # recorded as received, pings included
    assert entry.body["response"] == jcs_sha256(events)
    assert entry.body["request"] == jcs_sha256(json.loads(server.exchanges[1].request))
    assert entry.body["external_id"] == events[0]["message"]["id"]
    assert (entry.body["model"], entry.body["endpoint"]) == (MODEL, "/v1/messages")
    assert "complete" not in entry.body

    # The same message unstreamed gives the same outputs: thinking, text and the tool input's JCS.
    wrapped.messages.create(**ask("s"))
    _, unstreamed = calls(lg)
    assert entry.body["outputs"] == unstreamed.body["outputs"] == naive_outputs(TEXTS)


def test_the_stream_helper_is_recorded(server: FakeAnthropic, lg: Ledger) -> None:
    plain = sync_client(server)
    wrapped = recorded(plain, lg, purpose="evaluation")
    with plain.messages.stream(**ask("helper")) as stream:
        expected_text = "".join(stream.text_stream)
        expected = stream.get_final_message()
    with wrapped.messages.stream(**ask("helper")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == expected_text == "".join(ANSWER)
    assert final == expected
    assert final.content[2].input == TOOL_INPUT  # type: ignore[union-attr]
    (entry,) = calls(lg)
    assert entry.body["response"] == jcs_sha256(sent_events(server.exchanges[1]))
    assert entry.body["outputs"] == naive_outputs(TEXTS)
    assert "complete" not in entry.body


def test_stream_closed_early_is_recorded_incomplete(server: FakeAnthropic, lg: Ledger) -> None:
    server.hold_after = 2  # message_start and the thinking block's start, then the server waits
    wrapped = recorded(sync_client(server), lg, purpose="evaluation")
    with wrapped.messages.create(**ask("close", stream=True)) as stream:
        for i, _ in enumerate(stream):
            if i == 1:
                break
    (entry,) = calls(lg)  # recorded by the close, before any garbage collection
    server.release.set()
    assert entry.body["complete"] is False
    assert entry.body["response"] == jcs_sha256(sent_events(server.exchanges[0])[:2])
    assert entry.body["external_id"].startswith("msg_01")
    assert entry.body["outputs"] == []


def test_stream_closed_right_after_message_stop_is_complete(
    server: FakeAnthropic, lg: Ledger
) -> None:
    """`message_stop` ends the message even when the caller closes before the body's end."""
    server.hold_after = len(message_events({}, "msg_x"))
    wrapped = recorded(sync_client(server), lg, purpose="evaluation")
    stream = wrapped.messages.create(**ask("stop", stream=True))
    for event in stream:
        if event.type == "message_stop":
            break
    stream.close()
    (entry,) = calls(lg)
    server.release.set()
    assert "complete" not in entry.body
    assert entry.body["response"] == jcs_sha256(sent_events(server.exchanges[0]))
    assert entry.body["outputs"] == naive_outputs(TEXTS)


def test_stream_dropped_unclosed_is_recorded_incomplete(server: FakeAnthropic, lg: Ledger) -> None:
    server.hold_after = 5  # up to the second thinking delta
    wrapped = recorded(sync_client(server), lg, purpose="evaluation")
    stream = wrapped.messages.create(**ask("drop", stream=True))
    for i, _ in enumerate(stream):
        if i == 3:  # message_start, block start, two thinking deltas (the SDK skips the ping)
            break
    del stream
    gc.collect()
    (entry,) = calls(lg)
    server.release.set()
    assert entry.body["complete"] is False
    assert entry.body["response"] == jcs_sha256(sent_events(server.exchanges[0])[:5])
    assert entry.body["outputs"] == naive_outputs(["".join(THINKING[:2])])


def test_stream_ended_by_an_error_event_is_recorded_incomplete(
    server: FakeAnthropic, lg: Ledger
) -> None:
    wrapped = recorded(sync_client(server), lg, purpose="evaluation")
    received = []
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        for event in wrapped.messages.create(**ask("err", model="overloaded", stream=True)):
            received.append(event.type)
    assert "message_stop" not in received
    (entry,) = calls(lg)
    events = sent_events(server.exchanges[0])
    assert events[-1] == OVERLOADED
    assert entry.body["complete"] is False
    assert entry.body["response"] == jcs_sha256(events)
    assert entry.body["outputs"] == naive_outputs(TEXTS[:1])  # the thinking that did arrive


# --- async ---------------------------------------------------------------------------------------


def test_async_message_stream_and_helper_are_recorded(server: FakeAnthropic, lg: Ledger) -> None:
    async def run() -> tuple[Any, Any, list[Any], list[Any], Any, Any]:
        plain = async_client(server)
        wrapped = recorded(plain, lg, purpose="training-data")
        expected = await plain.messages.create(**ask("a"))
        got = await wrapped.messages.create(**ask("a"))
        expected_events = [
            e.to_dict() async for e in await plain.messages.create(**ask("b", stream=True))
        ]
        got_events = [
            e.to_dict() async for e in await wrapped.messages.create(**ask("b", stream=True))
        ]
        async with plain.messages.stream(**ask("c")) as stream:
            expected_final = await stream.get_final_message()
        async with wrapped.messages.stream(**ask("c")) as stream:
            final = await stream.get_final_message()
        await plain.close()
        return expected, got, expected_events, got_events, expected_final, final

    expected, got, expected_events, got_events, expected_final, final = asyncio.run(run())
    assert got == expected and type(got) is type(expected)
    assert got_events == expected_events
    assert final == expected_final
    single, streamed, helper = calls(lg)
    assert single.body["response"] == jcs_sha256(json.loads(server.exchanges[1].response or b""))
    assert streamed.body["response"] == jcs_sha256(sent_events(server.exchanges[3]))
    assert helper.body["response"] == jcs_sha256(sent_events(server.exchanges[5]))
    for entry in (single, streamed, helper):
        assert (entry.body["provider"], entry.body["purpose"]) == ("anthropic", "training-data")
        assert entry.body["outputs"] == naive_outputs(TEXTS)
        assert "complete" not in entry.body


def test_async_stream_closed_early_is_recorded_incomplete(
    server: FakeAnthropic, lg: Ledger
) -> None:
    server.hold_after = 1

    async def run() -> None:
        wrapped = recorded(async_client(server), lg, purpose="evaluation")
        stream = await wrapped.messages.create(**ask("async close", stream=True))
        async for _ in stream:
            break
        await stream.close()
        await wrapped.close()

    asyncio.run(run())
    (entry,) = calls(lg)
    server.release.set()
    assert entry.body["complete"] is False
    assert entry.body["response"] == jcs_sha256(sent_events(server.exchanges[0])[:1])


# --- failures ------------------------------------------------------------------------------------


@pytest.fixture
def keyless(lg: Ledger, tmp_path: Path) -> Ledger:
    """A ledger whose log key file is missing: every append fails (KeyFileError)."""
    return Ledger.open(lg.path, keys_dir=tmp_path / "no-keys-here")


def test_recording_failure_raises_with_the_response_and_the_call_is_not_sent_again(
    server: FakeAnthropic, keyless: Ledger
) -> None:
    """The SDK retries any foreign exception raised while reading a response as a connection
    error; a RecordingError must reach the caller as it is, after exactly one request."""
    wrapped = recorded(sync_client(server, retries=2), keyless, purpose="evaluation")
    with pytest.raises(RecordingError) as caught:
        wrapped.messages.create(**ask("fail"))
    err = caught.value
    assert isinstance(err, LedgerError)
    assert isinstance(err.__cause__, KeyFileError)
    assert len(server.exchanges) == 1
    assert err.response == json.loads(server.exchanges[0].response or b"")
    assert err.request == json.loads(server.exchanges[0].request)
    assert calls(keyless) == []


def test_stream_recording_failure_raises_after_the_last_event(
    server: FakeAnthropic, keyless: Ledger
) -> None:
    wrapped = recorded(sync_client(server, retries=2), keyless, purpose="evaluation")
    received: list[str] = []
    with pytest.raises(RecordingError) as caught:
        for event in wrapped.messages.create(**ask("fail stream", stream=True)):
            received.append(event.type)
    assert received[-1] == "message_stop"  # the caller received every event first
    assert caught.value.response == sent_events(server.exchanges[0])
    assert len(server.exchanges) == 1


def test_a_response_in_no_known_shape_raises_and_carries_it(
    server: FakeAnthropic, lg: Ledger
) -> None:
    wrapped = recorded(sync_client(server, retries=2), lg, purpose="evaluation")
    with pytest.raises(RecordingError, match="Anthropic Messages") as caught:
        wrapped.messages.create(**ask("odd", model="odd-shape"))
    assert caught.value.response == json.loads(server.exchanges[0].response or b"")
    assert len(server.exchanges) == 1
    assert calls(lg) == []


def test_warn_mode_warns_and_returns_the_message(server: FakeAnthropic, keyless: Ledger) -> None:
    plain = sync_client(server)
    wrapped = recorded(plain, keyless, purpose="evaluation", on_error="warn")
    with pytest.warns(openai_integration.RecordingWarning, match="could not be recorded"):
        got = wrapped.messages.create(**ask("warn"))
    assert got == plain.messages.create(**ask("warn"))


def test_clients_the_wrapper_cannot_read_are_refused(server: FakeAnthropic, lg: Ledger) -> None:
    class NotAnSdk:
        _client = sync_client(server)._client

        def with_options(self, **options: Any) -> NotAnSdk:
            return self

    with pytest.raises(UsageError, match="provider="):
        recorded(NotAnSdk(), lg, purpose="other")
    with pytest.raises(UsageError, match="already recorded"):
        recorded(recorded(sync_client(server), lg, purpose="other"), lg, purpose="other")


# --- the audit ----------------------------------------------------------------------------------


def test_a_thinking_trace_in_a_training_batch_is_an_exact_finding(
    server: FakeAnthropic, lg: Ledger, tmp_path: Path
) -> None:
    """An `evaluation` call's reasoning trace, copied into SFT data, contaminates the checkpoint."""
    wrapped = recorded(sync_client(server), lg, purpose="evaluation")
    with wrapped.messages.stream(**ask("distil me")) as stream:
        stream.until_done()
    (call,) = calls(lg)
    trace = "".join(THINKING)
    lg.record_batch(
        [
            {"messages": [{"role": "user", "content": "Tell me about Westphalia."}]}
            | {"completion": "An answer of our own, written by our annotators by hand."},
            {"messages": [{"role": "assistant", "content": trace}]},
        ],
        id="sft/0",
    )
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    lg.record_checkpoint(id="student", weights=[weights], batches=["sft/0"])
    report = lg.audit("student", fuzzy=False)
    assert report.verdict == "contaminated"
    exact = [f for f in report.findings if f.type == "exact"]
    assert exact
    assert {(f.call, f.record, f.purpose) for f in exact} == {(call.index, 1, "evaluation")}
    assert {f.segment for f in exact} <= set(naive_outputs([trace]))
    assert {f.provider for f in exact} <= {"anthropic", None}
