"""Provider response shapes as the providers document them (OpenAI with reasoning, Anthropic Messages,
Gemini generateContent), read through the installed `ledger` CLI: `record call`, `import calls
--format anthropic-batch | gemini-batch`, and an audit that finds a distilled thinking trace.

Expected outputs are computed here, independently of the ledger: NFKC, casefold, whitespace
collapsed, sha256 of the UTF-8 (DESIGN.md "Hashing (fixed)"), and tool inputs as JCS by `rfc8785`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hardening import LEDGER

from ledger import providers
from ledger.errors import InputError
from ledger.providers import anthropic, google, openai

THINKING = (
    "The user asks for the boiling point of water at the summit of Everest. Air pressure there is "
    "about a third of sea level, so water boils near seventy degrees Celsius."
)
ANSWER = "At the summit of Mount Everest water boils at roughly 70 degrees Celsius (158 F)."
SUMMARY = "Considered how atmospheric pressure falls with altitude and what that does to boiling."
GEMINI_THOUGHT = (
    "**Weighing the question** I am recalling that a pressure cooker raises the boiling point, "
    "which lets beans soften faster at high altitude."
)
GEMINI_ANSWER = "A pressure cooker raises the boiling point of water, so food cooks faster."
TOOL_INPUT = {"location": "Mount Everest summit", "unit": "celsius", "elevation_m": 8849}

# --- documented example bodies -------------------------------------------------------------------

ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_01AbCdEfGhIjKlMnOpQrStUv",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": THINKING, "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIw"},
        {"type": "text", "text": ANSWER},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
         "input": TOOL_INPUT},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 2095, "output_tokens": 503},
}  # fmt: skip

GEMINI_RESPONSE: dict[str, Any] = {
    "candidates": [
        {
            "content": {
                "parts": [
                    {"text": GEMINI_THOUGHT, "thought": True},
                    {"text": GEMINI_ANSWER, "thoughtSignature": "EjQKMgEMOdbHJ"},
                ],
                "role": "model",
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 15, "candidatesTokenCount": 20, "thoughtsTokenCount": 41,
                      "totalTokenCount": 76},
    "modelVersion": "gemini-2.5-flash",
    "createTime": "2025-06-01T12:00:05.123Z",
    "responseId": "Il0taoSYJ5Cez7IP0a2x8Qs",
}  # fmt: skip


def anthropic_stream() -> list[dict[str, Any]]:
    """The Messages event stream of ANTHROPIC_MESSAGE (thinking, text and tool_use blocks)."""
    tool_json = json.dumps(TOOL_INPUT)
    message = {**ANTHROPIC_MESSAGE, "content": [], "stop_reason": None}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": ""}},
        *({"type": "content_block_delta", "index": 0,
           "delta": {"type": "thinking_delta", "thinking": p}} for p in _pieces(THINKING)),
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        *({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": p}}
          for p in _pieces(ANSWER)),
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}},
        *({"type": "content_block_delta", "index": 2,
           "delta": {"type": "input_json_delta", "partial_json": p}} for p in _pieces(tool_json)),
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"output_tokens": 503}},
        {"type": "message_stop"},
    ]  # fmt: skip
    return events


def _pieces(text: str, size: int = 11) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# --- an independent reference ---------------------------------------------------------------------


def ref_normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def ref_outputs(texts: Sequence[str], min_chars: int = 32) -> list[str]:
    found = set()
    for text in texts:
        for piece in [text, *re.split(r"\n\s*\n", text)]:
            normalized = ref_normalize(piece)
            if len(normalized) >= min_chars:
                found.add(hashlib.sha256(normalized.encode("utf-8")).hexdigest())
    return sorted(found)


def ref_jcs_text(value: Any) -> str:
    return bytes(rfc8785.dumps(value)).decode("utf-8")


# --- shape modules -------------------------------------------------------------------------------


def test_openai_chat_reasoning_content_and_reasoning_are_texts() -> None:
    deepseek = {
        "id": "930c60df-bf64-41c9-a88e-3ec75f81e00e", "object": "chat.completion",
        "created": 1738000000, "model": "deepseek-reasoner",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": ANSWER,
                                 "reasoning_content": THINKING}}],
    }  # fmt: skip
    assert sorted(openai.response_texts(deepseek)) == sorted([ANSWER, THINKING])
    vllm = {
        "object": "chat.completion",
        "choices": [{"message": {"content": None, "reasoning": THINKING}}],
    }
    assert openai.response_texts(vllm) == [THINKING]
    for key in ("reasoning_content", "reasoning"):
        chunks = [
            {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {key: p}}]}
            for p in _pieces(THINKING)
        ] + [
            {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": p}}]}
            for p in _pieces(ANSWER)
        ]
        assert sorted(openai.stream_texts(chunks)) == sorted([ANSWER, THINKING]), key


def test_openai_responses_reasoning_items_and_their_stream() -> None:
    body = {
        "id": "resp_67ccd2bed1ec8190b14f964abc054267", "object": "response",
        "created_at": 1741476542, "model": "o4-mini-2025-04-16", "status": "completed",
        "output": [
            {"id": "rs_6820f383d7c08191", "type": "reasoning",
             "summary": [{"type": "summary_text", "text": SUMMARY}],
             "content": [{"type": "reasoning_text", "text": THINKING}]},
            {"id": "msg_67ccd2bf17f0", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": ANSWER, "annotations": []}]},
        ],
    }  # fmt: skip
    assert sorted(openai.response_texts(body)) == sorted([SUMMARY, THINKING, ANSWER])
    events = [
        {"type": "response.created", "response": {**body, "output": [], "status": "in_progress"}},
        *({"type": "response.reasoning_summary_text.delta", "output_index": 0, "summary_index": 0,
           "delta": p} for p in _pieces(SUMMARY)),
        *({"type": "response.reasoning_text.delta", "output_index": 0, "content_index": 0,
           "delta": p} for p in _pieces(THINKING)),
        *({"type": "response.output_text.delta", "output_index": 1, "content_index": 0,
           "delta": p} for p in _pieces(ANSWER)),
        {"type": "response.completed", "response": body},
    ]  # fmt: skip
    assert sorted(openai.stream_texts(events)) == sorted([SUMMARY, THINKING, ANSWER])


def test_anthropic_message_and_its_stream_give_the_same_texts() -> None:
    expected = [THINKING, ANSWER, ref_jcs_text(TOOL_INPUT)]
    assert anthropic.response_texts(ANTHROPIC_MESSAGE) == expected
    assert anthropic.stream_texts(anthropic_stream()) == expected
    assert anthropic.recognizes(ANTHROPIC_MESSAGE)
    assert anthropic.recognizes_stream(anthropic_stream())
    empty_tool = {"type": "message", "content": [{"type": "tool_use", "name": "now", "input": {}}]}
    assert anthropic.response_texts(empty_tool) == ["{}"]


def test_anthropic_abandoned_tool_stream_keeps_the_raw_json_pieces() -> None:
    events = [
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "input_json_delta", "partial_json": '{"location": "Mount Ev'}},
    ]  # fmt: skip
    assert anthropic.stream_texts(events) == ['{"location": "Mount Ev']


def test_gemini_parts_thought_parts_included_and_stream() -> None:
    assert google.response_texts(GEMINI_RESPONSE) == [GEMINI_THOUGHT, GEMINI_ANSWER]
    chunks = [
        {"candidates": [{"content": {"parts": [{"text": p, "thought": True}], "role": "model"},
                         "index": 0}], "modelVersion": "gemini-2.5-flash", "responseId": "r1"}
        for p in _pieces(GEMINI_THOUGHT)
    ] + [
        {"candidates": [{"content": {"parts": [{"text": p}], "role": "model"}, "index": 0}],
         "modelVersion": "gemini-2.5-flash", "responseId": "r1"}
        for p in _pieces(GEMINI_ANSWER)
    ]  # fmt: skip
    assert google.stream_texts(chunks) == [GEMINI_THOUGHT, GEMINI_ANSWER]
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "modelVersion": "gemini-2.5-flash"}
    assert google.recognizes(blocked) and google.response_texts(blocked) == []


@pytest.mark.parametrize(
    ("provider", "module"),
    [("openai", openai), ("azure-openai", openai), ("deepseek", openai), ("vllm", openai),
     ("anthropic", anthropic), ("google", google)],
)  # fmt: skip
def test_provider_names_pick_their_shapes(provider: str, module: object) -> None:
    assert providers.for_provider(provider) is module


def test_a_body_in_another_providers_shape_is_an_error_never_empty_outputs() -> None:
    chat = {"object": "chat.completion", "choices": [{"message": {"content": ANSWER}}]}
    cases = [
        ("openai", ANTHROPIC_MESSAGE, "an OpenAI chat completion"),
        ("acme", GEMINI_RESPONSE, "an OpenAI chat completion"),
        ("anthropic", chat, "an Anthropic Messages response"),
        ("google", ANTHROPIC_MESSAGE, "a Gemini generateContent response"),
        ("anthropic", {"unknown": 1}, "an Anthropic Messages response"),
    ]
    for provider, body, expected in cases:
        with pytest.raises(InputError, match=f"expected {expected}.*found an object with keys"):
            providers.output_texts(provider, body, stream=False)
    with pytest.raises(InputError, match="an Anthropic Messages response.*found a stream of"):
        providers.output_texts("anthropic", [{"choices": []}], stream=True)
    with pytest.raises(InputError, match="found an empty stream"):
        providers.output_texts("openai", [], stream=True)
    assert providers.output_texts("openai", [], stream=True, complete=False) == []
    # a recognised shape with an empty completion is not an error
    empty = {"object": "chat.completion", "choices": [{"message": {"content": ""}}]}
    assert providers.output_texts("openai", empty, stream=False) == []
    assert (
        providers.output_texts("anthropic", {**ANTHROPIC_MESSAGE, "content": []}, stream=False)
        == []
    )


# --- through the installed CLI --------------------------------------------------------------------


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run([LEDGER, *args], cwd=cwd, env=env, capture_output=True, text=True)


def ok(cwd: Path, *args: str) -> Any:
    result = run(cwd, *args, "--json")
    assert result.returncode == 0, (args, result.stderr)
    return json.loads(result.stdout)


@pytest.fixture()
def shop(tmp_path: Path) -> Path:
    ok(tmp_path, "init", "--origin", "example.org/providers")
    return tmp_path


def write(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def write_jsonl(path: Path, lines: Sequence[Any]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def sha256_jcs(value: Any) -> str:
    return hashlib.sha256(rfc8785.dumps(value)).hexdigest()


def test_record_call_anthropic_and_gemini_files(shop: Path) -> None:
    resp = write(shop / "claude.json", ANTHROPIC_MESSAGE)
    result = ok(shop, "record", "call", "--provider", "anthropic", "--purpose", "evaluation",
                "--response", str(resp))  # fmt: skip
    body = ok(shop, "show", str(result["index"]))["body"]
    assert body["outputs"] == ref_outputs([THINKING, ANSWER, ref_jcs_text(TOOL_INPUT)])
    assert len(body["outputs"]) == 3  # the tool input is long enough to be a segment too
    assert body["provider"] == "anthropic" and body["model"] == "claude-sonnet-4-5-20250929"
    assert body["endpoint"] == "/v1/messages" and body["external_id"] == ANTHROPIC_MESSAGE["id"]
    assert body["usage"] == ANTHROPIC_MESSAGE["usage"] and "created" not in body
    assert body["response"] == sha256_jcs(ANTHROPIC_MESSAGE)

    streamed = write(shop / "claude-stream.json", anthropic_stream())
    result = ok(shop, "record", "call", "--provider", "anthropic", "--purpose", "evaluation",
                "--response", str(streamed))  # fmt: skip
    # the stream's first event names the message: same id, so the call is already recorded
    assert result["duplicate"] is True

    resp = write(shop / "gemini.json", GEMINI_RESPONSE)
    result = ok(shop, "record", "call", "--provider", "google", "--purpose", "evaluation",
                "--response", str(resp))  # fmt: skip
    body = ok(shop, "show", str(result["index"]))["body"]
    assert body["outputs"] == ref_outputs([GEMINI_THOUGHT, GEMINI_ANSWER])
    assert len(body["outputs"]) == 2
    assert body["model"] == "gemini-2.5-flash" and body["external_id"] == "Il0taoSYJ5Cez7IP0a2x8Qs"
    assert body["usage"] == GEMINI_RESPONSE["usageMetadata"]
    assert body["created"] == 1748779205  # 2025-06-01T12:00:05Z


def test_record_call_keeps_openai_reasoning_and_created(shop: Path) -> None:
    deepseek = {
        "id": "ds-1", "object": "chat.completion", "created": 1738000000, "model": "deepseek-reasoner",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": ANSWER, "reasoning_content": THINKING}}],
    }  # fmt: skip
    resp = write(shop / "ds.json", deepseek)
    result = ok(shop, "record", "call", "--provider", "deepseek", "--purpose", "evaluation",
                "--response", str(resp))  # fmt: skip
    body = ok(shop, "show", str(result["index"]))["body"]
    assert body["outputs"] == ref_outputs([ANSWER, THINKING]) and len(body["outputs"]) == 2
    assert body["created"] == 1738000000 and body["provider"] == "deepseek"


@pytest.mark.parametrize(
    ("provider", "body", "expected"),
    [
        ("openai", ANTHROPIC_MESSAGE, "an OpenAI chat completion"),
        ("anthropic", GEMINI_RESPONSE, "an Anthropic Messages response"),
        ("google", {"object": "chat.completion", "choices": []}, "a Gemini generateContent"),
        ("acme", {"result": "ok"}, "an OpenAI chat completion"),
    ],
)
def test_an_unreadable_response_exits_4_and_leaves_the_ledger_unchanged(
    shop: Path, provider: str, body: Any, expected: str
) -> None:
    before = ok(shop, "status")
    resp = write(shop / "resp.json", body)
    result = run(shop, "record", "call", "--provider", provider, "--purpose", "evaluation",
                 "--response", str(resp))  # fmt: skip
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {resp}: expected {expected}"), lines
    assert "Traceback" not in result.stderr
    assert ok(shop, "status") == before
    # the same body in a generic log: the error names the file and line
    log = write_jsonl(shop / "log.jsonl", [{"provider": provider, "response": body}])
    result = run(shop, "import", "calls", str(log), "--format", "jsonl", "--provider", provider,
                 "--purpose", "evaluation")  # fmt: skip
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {log}:1: expected {expected}"), lines
    assert ok(shop, "status") == before


def anthropic_batch_lines() -> list[dict[str, Any]]:
    other = {**ANTHROPIC_MESSAGE, "id": "msg_02", "content": [{"type": "text", "text": ANSWER}]}
    return [
        {"custom_id": "eval-0", "result": {"type": "succeeded", "message": ANTHROPIC_MESSAGE}},
        {"custom_id": "eval-1", "result": {"type": "errored", "error": {"type": "error", "error": {
            "type": "invalid_request_error", "message": "max_tokens: Field required"}}}},
        {"custom_id": "eval-2", "result": {"type": "canceled"}},
        {"custom_id": "eval-3", "result": {"type": "expired"}},
        {"custom_id": "eval-4", "result": {"type": "succeeded", "message": other}},
    ]  # fmt: skip


def test_import_anthropic_batch_results(shop: Path) -> None:
    path = write_jsonl(shop / "results.jsonl", anthropic_batch_lines())
    args = ("import", "calls", str(path), "--format", "anthropic-batch", "--provider", "anthropic",
            "--purpose", "evaluation")  # fmt: skip
    report = ok(shop, *args)
    assert (report["added"], report["duplicates"], report["failed"]) == (2, 0, 3)
    assert any("max_tokens: Field required" in e for e in report["failed_examples"])
    assert any(":3: canceled" in e for e in report["failed_examples"])
    body = ok(shop, "show", "msg_01AbCdEfGhIjKlMnOpQrStUv")["body"]
    assert body["custom_id"] == "eval-0" and body["request"] is None
    assert body["outputs"] == ref_outputs([THINKING, ANSWER, ref_jcs_text(TOOL_INPUT)])
    assert body["response"] == sha256_jcs(ANTHROPIC_MESSAGE)
    again = ok(shop, *args)
    assert (again["added"], again["duplicates"], again["failed"]) == (0, 2, 3)
    assert ok(shop, "status")["counts"]["call"] == 2


def test_import_gemini_batch_output(shop: Path) -> None:
    request = {"contents": [{"role": "user", "parts": [{"text": "Why use a pressure cooker?"}]}]}
    no_id = {k: v for k, v in GEMINI_RESPONSE.items() if k != "responseId"}
    lines = [
        {"key": "request-1", "response": GEMINI_RESPONSE},
        {"request": request, "response": {**GEMINI_RESPONSE, "responseId": "resp-2"}},
        {"key": "request-3", "error": {"code": 400, "message": "Invalid JSON payload"}},
        {"key": "request-4", "response": no_id},
    ]
    path = write_jsonl(shop / "gemini-out.jsonl", lines)
    args = ("import", "calls", str(path), "--format", "gemini-batch", "--provider", "google",
            "--purpose", "evaluation")  # fmt: skip
    report = ok(shop, *args)
    assert (report["added"], report["duplicates"], report["failed"]) == (3, 0, 1)
    assert "Invalid JSON payload" in report["failed_examples"][0]
    first = ok(shop, "show", "Il0taoSYJ5Cez7IP0a2x8Qs")["body"]
    assert first["custom_id"] == "request-1" and first["request"] is None
    assert first["outputs"] == ref_outputs([GEMINI_THOUGHT, GEMINI_ANSWER])
    assert first["usage"] == GEMINI_RESPONSE["usageMetadata"] and first["created"] == 1748779205
    second = ok(shop, "show", "resp-2")["body"]
    assert second["request"] == sha256_jcs(request) and "custom_id" not in second
    keyed = ok(shop, "show", "request-4")["body"]  # no responseId: the key is the external id
    assert keyed["external_id"] == "request-4"
    again = ok(shop, *args)
    assert (again["added"], again["duplicates"], again["failed"]) == (0, 3, 1)


def test_a_batch_format_given_the_wrong_file_names_the_line(shop: Path) -> None:
    chat_log = write_jsonl(shop / "chat.jsonl", [{"request": {}, "response": {"choices": []}}])
    result = run(shop, "import", "calls", str(chat_log), "--format", "anthropic-batch",
                 "--provider", "anthropic", "--purpose", "evaluation")  # fmt: skip
    assert result.returncode == 4
    assert result.stderr.startswith(f"error: {chat_log}:1: expected an object 'result'")
    bad = write_jsonl(shop / "bad.jsonl", [{"key": "k", "response": {"choices": []}}])
    result = run(shop, "import", "calls", str(bad), "--format", "gemini-batch",
                 "--provider", "google", "--purpose", "evaluation")  # fmt: skip
    assert result.returncode == 4
    assert result.stderr.startswith(f"error: {bad}:1: expected a Gemini generateContent response")
    assert ok(shop, "status")["counts"].get("call", 0) == 0


def test_audit_finds_a_distilled_anthropic_thinking_trace(shop: Path) -> None:
    path = write_jsonl(shop / "results.jsonl", anthropic_batch_lines())
    ok(shop, "import", "calls", str(path), "--format", "anthropic-batch", "--provider", "anthropic",
       "--purpose", "evaluation")  # fmt: skip
    call_index = ok(shop, "show", "msg_01AbCdEfGhIjKlMnOpQrStUv")["index"]
    records = [
        {"messages": [{"role": "user", "content": "How hot does water boil on Everest?"},
                      {"role": "assistant", "reasoning_content": THINKING,
                       "content": "Seventy degrees."}]},
        {"text": "An unrelated record about the tides of the Bay of Fundy, the highest on Earth."},
    ]  # fmt: skip
    data = write_jsonl(shop / "sft.jsonl", records)
    ok(shop, "record", "batch", str(data), "--id", "sft")
    weights = shop / "w.bin"
    weights.write_bytes(b"weights")
    ok(shop, "record", "checkpoint", "--id", "student", "--weights", str(weights), "--batch", "sft")
    result = run(shop, "audit", "student", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "contaminated"
    exact = [f for f in report["findings"] if f["type"] == "exact"]
    assert exact, report["findings"]
    assert {(f["call"], f["record"], f["provider"]) for f in exact} == {
        (call_index, 0, "anthropic")
    }


def test_generic_log_with_anthropic_and_gemini_streams(shop: Path) -> None:
    whole = anthropic_stream()
    cut = whole[: whole.index({"type": "content_block_stop", "index": 1})]  # no message_stop
    gemini_chunks = [
        {"candidates": [{"content": {"parts": [{"text": GEMINI_THOUGHT, "thought": True}]},
                         "index": 0}], "responseId": "g-stream", "modelVersion": "gemini-2.5-pro"},
        {"candidates": [{"content": {"parts": [{"text": GEMINI_ANSWER}]}, "index": 0,
                         "finishReason": "STOP"}], "responseId": "g-stream",
         "usageMetadata": {"totalTokenCount": 9}},
    ]  # fmt: skip
    lines = [
        {"provider": "anthropic", "response": whole},
        {"provider": "anthropic", "response": cut, "external_id": "msg-cut"},
        {"provider": "google", "response": gemini_chunks},
    ]
    for provider, wanted in (("anthropic", 2), ("google", 1)):
        mine = write_jsonl(
            shop / f"{provider}.jsonl", [x for x in lines if x["provider"] == provider]
        )
        report = ok(shop, "import", "calls", str(mine), "--format", "jsonl", "--provider", provider,
                    "--purpose", "evaluation")  # fmt: skip
        assert report["added"] == wanted, (provider, report)
    whole_body = ok(shop, "show", ANTHROPIC_MESSAGE["id"])["body"]
    assert whole_body["outputs"] == ref_outputs([THINKING, ANSWER, ref_jcs_text(TOOL_INPUT)])
    assert "complete" not in whole_body and whole_body["endpoint"] == "/v1/messages"
    assert whole_body["response"] == sha256_jcs(whole)
    cut_body = ok(shop, "show", "msg-cut")["body"]
    assert cut_body["complete"] is False
    assert cut_body["outputs"] == ref_outputs([THINKING, ANSWER])
    gemini = ok(shop, "show", "g-stream")["body"]
    assert gemini["outputs"] == ref_outputs([GEMINI_THOUGHT, GEMINI_ANSWER])
    assert gemini["endpoint"] == "streamGenerateContent" and "complete" not in gemini
    assert gemini["usage"] == {"totalTokenCount": 9} and gemini["model"] == "gemini-2.5-pro"


def test_anthropic_stream_usage_joins_message_start_and_the_last_delta() -> None:
    from ledger.ingest.calls import response_usage

    events = anthropic_stream()
    start = {**events[0]["message"], "usage": {"input_tokens": 2095, "output_tokens": 1}}
    events[0] = {"type": "message_start", "message": start}
    # message_delta counts are cumulative: the input tokens come from message_start only
    assert response_usage(events) == {"input_tokens": 2095, "output_tokens": 503}
    assert response_usage(events[:1]) == {"input_tokens": 2095, "output_tokens": 1}


def test_an_azure_stream_is_named_by_its_first_real_chunk() -> None:
    from ledger.ingest.calls import infer_model, response_created, response_id

    prompt_filter = {"id": "", "object": "", "created": 0, "model": "", "choices": [],
                     "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}  # fmt: skip
    chunk = {"id": "chatcmpl-az1", "object": "chat.completion.chunk", "created": 1760000000,
             "model": "gpt-4o-2024-11-20",
             "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}  # fmt: skip
    stream = [prompt_filter, chunk]
    assert response_id(stream) == "chatcmpl-az1"
    assert infer_model(stream) == "gpt-4o-2024-11-20"
    assert response_created(stream) == 1760000000
