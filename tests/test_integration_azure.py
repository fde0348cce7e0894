"""The recorded client with the real `openai` SDK's AzureOpenAI clients against a local Azure server.

The server answers `POST /openai/deployments/{deployment}/chat/completions?api-version=...` the way
Azure OpenAI does: bodies carry `prompt_filter_results` and per-choice `content_filter_results`, and
a stream opens with a chunk holding only the prompt filter results, with an empty `id` and `model`.
A deployment whose name starts with `anon-` answers without naming its model, so the deployment (or
the request's model) must be recorded instead. Expected values are computed here independently.
"""

from __future__ import annotations

import asyncio
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

import openai
import pytest
import rfc8785

from ledger import Ledger
from ledger.integrations.openai import recorded
from ledger.log.types import Entry


def jcs_sha256(value: Any) -> str:
    return hashlib.sha256(rfc8785.dumps(value)).hexdigest()


def naive_outputs(texts: list[str]) -> list[str]:
    out = set()
    for text in texts:
        for piece in [text, *re.split(r"\n\s*\n", text)]:
            norm = " ".join(unicodedata.normalize("NFKC", piece).casefold().split())
            if len(norm) >= 32:
                out.add(hashlib.sha256(norm.encode("utf-8")).hexdigest())
    return sorted(out)


API_VERSION = "2024-10-21"
MODEL = "gpt-4o-2024-11-20"
DELTAS = [
    "The Treaty of ",
    "Westphalia was signed ",
    "in 1648.\n\nIt ended the ",
    "Thirty Years' War.",
]
ANSWER = "".join(DELTAS)
SAFE = {
    name: {"filtered": False, "severity": "safe"}
    for name in ("hate", "self_harm", "sexual", "violence")
}
PROMPT_FILTER = [{"prompt_index": 0, "content_filter_results": SAFE}]


@dataclass
class Exchange:
    path: str
    request: bytes
    response: bytes | None = None
    events: list[bytes] = field(default_factory=list)


class FakeAzure(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.exchanges: list[Exchange] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def completion(deployment: str, cid: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "choices": [
            {
                "content_filter_results": SAFE,
                "finish_reason": "stop",
                "index": 0,
                "logprobs": None,
                "message": {"content": ANSWER, "refusal": None, "role": "assistant"},
            }
        ],
        "created": 1_733_486_400,
        "id": cid,
        "model": MODEL,
        "object": "chat.completion",
        "prompt_filter_results": PROMPT_FILTER,
        "system_fingerprint": "fp_04751d0b65",
        "usage": {"completion_tokens": 30, "prompt_tokens": 12, "total_tokens": 42},
    }
    if deployment.startswith("anon-"):
        del body["model"]
    return body


def chunks(deployment: str, cid: str) -> list[dict[str, Any]]:
    model = "" if deployment.startswith("anon-") else MODEL
    first = {"choices": [], "created": 0, "id": "", "model": "", "object": ""}
    base = {"created": 1_733_486_400, "id": cid, "model": model}
    base |= {"object": "chat.completion.chunk", "system_fingerprint": "fp_04751d0b65"}
    out: list[dict[str, Any]] = [first | {"prompt_filter_results": PROMPT_FILTER}]
    for i, piece in enumerate(DELTAS):
        delta = {"content": piece} | ({"role": "assistant"} if i == 0 else {})
        choice = {"content_filter_results": SAFE, "delta": delta, "finish_reason": None}
        out.append(base | {"choices": [choice | {"index": 0, "logprobs": None}]})
    done = {"content_filter_results": {}, "delta": {}, "finish_reason": "stop", "index": 0}
    out.append(base | {"choices": [done | {"logprobs": None}]})
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeAzure

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        exchange = Exchange(self.path, raw)
        self.server.exchanges.append(exchange)
        found = re.fullmatch(
            r"/openai/deployments/([^/]+)/chat/completions\?api-version=(.+)", self.path
        )
        assert found is not None and found.group(2) == API_VERSION, self.path
        deployment = found.group(1)
        cid = "chatcmpl-" + hashlib.sha256(raw).hexdigest()[:24]
        if not json.loads(raw).get("stream"):
            body = json.dumps(completion(deployment, cid)).encode()
            exchange.response = body
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        payloads = [json.dumps(c).encode() for c in chunks(deployment, cid)]
        exchange.events = payloads
        for payload in [*payloads, b"[DONE]"]:
            frame = b"data: " + payload + b"\n\n"
            self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture(scope="module")
def module_server() -> Iterator[FakeAzure]:
    server = FakeAzure()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(module_server: FakeAzure) -> FakeAzure:
    module_server.exchanges.clear()
    return module_server


@pytest.fixture
def lg(tmp_path: Path) -> Ledger:
    return Ledger.init(tmp_path / "ledger.duckdb", origin="test.local/azure")


def azure(server: FakeAzure, **options: Any) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        api_key="azure-key",
        api_version=API_VERSION,
        azure_endpoint=server.endpoint,
        max_retries=0,
        **options,
    )


def calls(lg: Ledger) -> list[Entry]:
    return lg.log(kinds=["call"])


def ask(tag: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"When was Westphalia? {tag}"}], **extra}


def test_azure_call_is_recorded_as_azure_openai(server: FakeAzure, lg: Ledger) -> None:
    plain = azure(server)
    wrapped = recorded(plain, lg, purpose="evaluation")
    assert type(wrapped) is openai.AzureOpenAI
    expected = plain.chat.completions.create(model="gpt4o-prod", **ask("x"))
    got = wrapped.chat.completions.create(model="gpt4o-prod", **ask("x"))
    assert got == expected and got.to_dict() == expected.to_dict()
    first, second = server.exchanges
    assert first.request == second.request
    assert (
        second.path == f"/openai/deployments/gpt4o-prod/chat/completions?api-version={API_VERSION}"
    )

    (entry,) = calls(lg)
    sent = json.loads(second.response or b"")
    assert (entry.body["provider"], entry.body["endpoint"]) == (
        "azure-openai",
        "/v1/chat/completions",
    )
    assert entry.body["model"] == MODEL  # the model that answered, named by the response
    assert entry.body["request"] == jcs_sha256(json.loads(second.request))
    assert entry.body["response"] == jcs_sha256(sent)
    assert entry.body["external_id"] == sent["id"]
    assert entry.body["outputs"] == naive_outputs([ANSWER])


def test_azure_streams_are_recorded_by_their_real_id_and_model(
    server: FakeAzure, lg: Ledger
) -> None:
    """Azure opens a stream with a prompt-filter chunk whose id and model are empty: two streams
    are two calls, each under its own id, never one call under the id ""."""
    plain = azure(server)
    wrapped = recorded(plain, lg, purpose="evaluation")
    expected = [
        c.to_dict() for c in plain.chat.completions.create(model="d", stream=True, **ask("s"))
    ]
    got = [c.to_dict() for c in wrapped.chat.completions.create(model="d", stream=True, **ask("s"))]
    assert got == expected
    list(wrapped.chat.completions.create(model="d", stream=True, **ask("t")))
    one, two = calls(lg)
    for entry, exchange in ((one, server.exchanges[1]), (two, server.exchanges[2])):
        events = [json.loads(p) for p in exchange.events]
        assert events[0]["id"] == "" and events[0]["model"] == ""
        assert entry.body["external_id"] == events[1]["id"] != ""
        assert entry.body["model"] == MODEL
        assert entry.body["response"] == jcs_sha256(events)
        assert entry.body["outputs"] == naive_outputs([ANSWER])
        assert "complete" not in entry.body
    assert one.body["external_id"] != two.body["external_id"]


def test_the_deployment_is_the_model_when_no_body_names_one(server: FakeAzure, lg: Ledger) -> None:
    client = azure(server, azure_deployment="anon-gpt4o")
    wrapped = recorded(client, lg, purpose="evaluation")
    wrapped.chat.completions.create(model=openai.omit, **ask("no model"))  # type: ignore[call-overload]
    list(wrapped.chat.completions.create(model=openai.omit, stream=True, **ask("s")))  # type: ignore[call-overload]
    wrapped.chat.completions.create(model="named-in-request", **ask("named"))
    plain_call, streamed, named = calls(lg)
    assert [e.path.split("?")[0] for e in server.exchanges] == [
        "/openai/deployments/anon-gpt4o/chat/completions"
    ] * 3
    assert "model" not in json.loads(server.exchanges[0].request)
    assert plain_call.body["model"] == streamed.body["model"] == "anon-gpt4o"
    assert named.body["model"] == "named-in-request"
    assert {e.body["provider"] for e in (plain_call, streamed, named)} == {"azure-openai"}


def test_explicit_provider_keeps_the_azure_rules(server: FakeAzure, lg: Ledger) -> None:
    wrapped = recorded(
        azure(server, azure_deployment="anon-eu"), lg, purpose="other", provider="azure-eu"
    )
    wrapped.chat.completions.create(model=openai.omit, **ask("eu"))  # type: ignore[call-overload]
    (entry,) = calls(lg)
    assert (entry.body["provider"], entry.body["model"]) == ("azure-eu", "anon-eu")


def test_async_azure_call_and_stream_are_recorded(server: FakeAzure, lg: Ledger) -> None:
    async def run() -> tuple[Any, Any, list[Any]]:
        plain = openai.AsyncAzureOpenAI(
            api_key="azure-key", api_version=API_VERSION, azure_endpoint=server.endpoint
        )
        wrapped = recorded(plain, lg, purpose="training-data")
        expected = await plain.chat.completions.create(model="dep", **ask("a"))
        got = await wrapped.chat.completions.create(model="dep", **ask("a"))
        stream = await wrapped.chat.completions.create(model="dep", stream=True, **ask("b"))
        received = [c async for c in stream]
        await plain.close()
        return expected, got, received

    expected, got, received = asyncio.run(run())
    assert got == expected
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == ANSWER
    single, streamed = calls(lg)
    assert single.body["response"] == jcs_sha256(json.loads(server.exchanges[1].response or b""))
    assert streamed.body["response"] == jcs_sha256(
        [json.loads(p) for p in server.exchanges[2].events]
    )
    for entry in (single, streamed):
        assert (entry.body["provider"], entry.body["model"]) == ("azure-openai", MODEL)
        assert entry.body["outputs"] == naive_outputs([ANSWER])
