"""Readers for call logs: OpenAI Batch API input/output files, chat logs and the generic JSONL.

Files are written in tmp_path in the shapes the OpenAI Batch API documents (request input lines
`{"custom_id", "method", "url", "body"}`, output lines `{"id", "custom_id", "response":
{"status_code", "request_id", "body"}, "error"}`); hashes are checked with the `rfc8785` package
and the golden vectors.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import InputError, UsageError
from ledger.ingest.calls import (
    CALL_FORMATS,
    CallRecord,
    FailedCall,
    infer_endpoint,
    infer_model,
    iter_calls,
    read_json_file,
    response_id,
    stream_is_complete,
)

VECTORS = json.loads((Path(__file__).parent / "conformance.json").read_text(encoding="utf-8"))


def jsonl(path: Path, lines: list[Any], *, crlf: bool = False) -> Path:
    ending = "\r\n" if crlf else "\n"
    path.write_text("".join(json.dumps(line) + ending for line in lines), encoding="utf-8")
    return path


def jcs_sha256(value: object) -> str:
    return hashlib.sha256(rfc8785.dumps(value)).hexdigest()


def chat_body(n: int, model: str = "gpt-4o-mini-2024-07-18") -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{n:04d}",
        "object": "chat.completion",
        "created": 1711475054 + n,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"Answer number {n}.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 24, "completion_tokens": 15, "total_tokens": 39},
        "system_fingerprint": "fp_0ba0d124f1",
    }


def batch_request(n: int) -> dict[str, Any]:
    return {
        "custom_id": f"request-{n}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": f"Question {n}?"},
            ],
            "max_tokens": 1000,
        },
    }


def batch_output(n: int) -> dict[str, Any]:
    return {
        "id": f"batch_req_{n:04d}",
        "custom_id": f"request-{n}",
        "response": {"status_code": 200, "request_id": f"req_{n:04d}", "body": chat_body(n)},
        "error": None,
    }


@pytest.fixture
def batch_files(tmp_path: Path) -> tuple[Path, Path]:
    requests = jsonl(tmp_path / "batch_input.jsonl", [batch_request(n) for n in range(1, 5)])
    outputs = [
        batch_output(3),  # outputs come in any order
        batch_output(1),
        {
            "id": "batch_req_0002",
            "custom_id": "request-2",
            "response": {
                "status_code": 400,
                "request_id": "req_0002",
                "body": {
                    "error": {
                        "message": "Invalid 'messages[1].content': string too long.",
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": "string_above_max_length",
                    }
                },
            },
            "error": None,
        },
        {
            "id": "batch_req_0004",
            "custom_id": "request-4",
            "response": None,
            "error": {
                "code": "batch_expired",
                "message": "This request could not be executed before the completion window expired.",
            },
        },
        batch_output(9),  # not in the input file
    ]
    output = jsonl(tmp_path / "batch_output.jsonl", outputs)
    with output.open("ab") as f:
        f.write(b"\n\r\n")  # trailing blank lines are skipped
    return requests, output


def test_openai_batch_joins_requests_and_reports_failures(batch_files: tuple[Path, Path]) -> None:
    requests, output = batch_files
    calls = list(iter_calls(output, "openai-batch", requests_path=requests))
    assert [type(c) for c in calls] == [CallRecord, CallRecord, FailedCall, FailedCall, CallRecord]
    first, second, bad_status, expired, orphan = calls
    assert isinstance(first, CallRecord) and isinstance(orphan, CallRecord)
    assert isinstance(second, CallRecord) and second.request == batch_request(1)["body"]
    assert first.provider == "openai"
    assert first.model == "gpt-4o-mini-2024-07-18"
    assert first.endpoint == "/v1/chat/completions"
    assert first.request == batch_request(3)["body"]
    assert first.response == chat_body(3)
    assert first.external_id == "chatcmpl-0003"
    assert first.usage == {"prompt_tokens": 24, "completion_tokens": 15, "total_tokens": 39}
    assert (first.stream, first.complete) == (False, True)
    assert first.location == f"{output}:1"
    assert first.extra["custom_id"] == "request-3"
    assert first.extra["status_code"] == 200
    assert "request_missing" not in first.extra
    assert bad_status == FailedCall(
        f"{output}:3",
        "request-2",
        "HTTP 400: string_above_max_length: Invalid 'messages[1].content': string too long.",
    )
    assert isinstance(expired, FailedCall)
    assert expired.custom_id == "request-4"
    assert expired.reason.startswith("batch_expired: This request could not be executed")
    assert orphan.request is None
    assert orphan.extra["request_missing"] is True
    assert orphan.external_id == "chatcmpl-0009"


def test_openai_batch_bodies_hash_as_the_files_carry_them(batch_files: tuple[Path, Path]) -> None:
    requests, output = batch_files
    input_bodies = {
        json.loads(line)["custom_id"]: json.loads(line)["body"]
        for line in requests.read_text().splitlines()
    }
    for call in iter_calls(output, "openai-batch", requests_path=requests):
        if isinstance(call, CallRecord) and call.request is not None:
            custom_id = call.extra["custom_id"]
            assert isinstance(custom_id, str)
            assert jcs_sha256(call.request) == jcs_sha256(input_bodies[custom_id])


def test_openai_batch_call_vector(tmp_path: Path) -> None:
    vector = VECTORS["call"]
    requests = jsonl(
        tmp_path / "in.jsonl",
        [
            {
                "custom_id": "v",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": vector["request"],
            }
        ],
    )
    output = jsonl(
        tmp_path / "out.jsonl",
        [
            {
                "id": "batch_req_v",
                "custom_id": "v",
                "error": None,
                "response": {"status_code": 200, "request_id": "req_v", "body": vector["response"]},
            }
        ],
    )
    [call] = list(iter_calls(output, "openai-batch", requests_path=requests))
    assert isinstance(call, CallRecord)
    assert jcs_sha256(call.request) == vector["request_sha256"]
    assert jcs_sha256(call.response) == vector["response_sha256"]
    assert call.external_id == vector["external_id"]


def test_openai_batch_without_input_file_infers_endpoint(tmp_path: Path) -> None:
    embedding = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    output = jsonl(
        tmp_path / "out.jsonl",
        [
            batch_output(1),
            {
                "id": "b2",
                "custom_id": "e",
                "error": None,
                "response": {"status_code": 200, "request_id": "r", "body": embedding},
            },
        ],
    )
    chat, emb = list(iter_calls(output, "openai-batch"))
    assert isinstance(chat, CallRecord) and isinstance(emb, CallRecord)
    assert chat.endpoint == "/v1/chat/completions"
    assert chat.request is None and chat.extra["request_missing"] is True
    assert emb.endpoint == "/v1/embeddings"
    assert emb.model == "text-embedding-3-small"
    assert emb.external_id is None


def test_openai_batch_input_with_duplicate_custom_id(tmp_path: Path) -> None:
    requests = jsonl(tmp_path / "in.jsonl", [batch_request(1), batch_request(2), batch_request(1)])
    output = jsonl(tmp_path / "out.jsonl", [batch_output(1)])
    with pytest.raises(InputError) as info:
        list(iter_calls(output, "openai-batch", requests_path=requests))
    assert str(info.value) == f"{requests}:3: custom_id 'request-1' already used on line 1"


def test_openai_batch_input_with_crlf_bom_and_blank_lines(tmp_path: Path) -> None:
    requests = tmp_path / "in.jsonl"
    lines = [json.dumps(batch_request(n)) for n in (1, 2)]
    requests.write_bytes(b"\xef\xbb\xbf" + lines[0].encode() + b"\r\n\r\n" + lines[1].encode())
    output = jsonl(tmp_path / "out.jsonl", [batch_output(2), batch_output(1)])
    calls = list(iter_calls(output, "openai-batch", requests_path=requests))
    assert [c.request for c in calls if isinstance(c, CallRecord)] == [
        batch_request(2)["body"],
        batch_request(1)["body"],
    ]


def test_openai_batch_input_line_errors_name_the_line(tmp_path: Path) -> None:
    output = jsonl(tmp_path / "out.jsonl", [batch_output(1)])
    bad_body = jsonl(tmp_path / "in.jsonl", [batch_request(1), {"custom_id": "x", "body": "text"}])
    with pytest.raises(
        InputError, match=rf"^{bad_body}:2: expected an object 'body', found a string$"
    ):
        list(iter_calls(output, "openai-batch", requests_path=bad_body))
    bad_utf8 = tmp_path / "in2.jsonl"
    bad_utf8.write_bytes(json.dumps(batch_request(1)).encode() + b'\n{"custom_id": "\xff"}\n')
    with pytest.raises(InputError, match=rf"^{bad_utf8}:2: invalid UTF-8"):
        list(iter_calls(output, "openai-batch", requests_path=bad_utf8))


def test_openai_batch_output_that_is_not_json(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    output.write_bytes(
        json.dumps(batch_output(1)).encode() + b"\n" + b'{"id": "batch_req_2", "custom'
    )
    calls = iter_calls(output, "openai-batch")
    assert isinstance(next(calls), CallRecord)
    with pytest.raises(InputError, match=rf"^{output}:2: invalid JSON .*truncated"):
        next(calls)


def test_chat_log_with_requests_and_responses(tmp_path: Path) -> None:
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    log = jsonl(
        tmp_path / "chat.jsonl",
        [
            {"request": request, "response": chat_body(1, "gpt-4o-2024-08-06")},
            {
                "request": request,
                "response": chat_body(2),
                "account": "proj_eval",
                "purpose": "evaluation",
            },
        ],
        crlf=True,
    )
    first, second = list(iter_calls(log, "openai-chat"))
    assert isinstance(first, CallRecord) and isinstance(second, CallRecord)
    assert (first.provider, first.model, first.endpoint) == (
        "openai",
        "gpt-4o-2024-08-06",
        "/v1/chat/completions",
    )
    assert first.request == request
    assert first.external_id == "chatcmpl-0001"
    assert first.location == f"{log}:1"
    assert second.account == "proj_eval"
    assert second.extra["purpose"] == "evaluation"


def chunk(n: int, content: str | None, finish: str | None, *, index: int = 0) -> dict[str, Any]:
    delta: dict[str, Any] = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-stream1",
        "object": "chat.completion.chunk",
        "created": 1711475054,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "n": n,
    }


def test_chat_log_stream_complete_and_abandoned(tmp_path: Path) -> None:
    usage_chunk = {
        "id": "chatcmpl-stream1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    whole = [chunk(0, "Hel", None), chunk(1, "lo", None), chunk(2, None, "stop"), usage_chunk]
    cut = [chunk(0, "Hel", None), chunk(1, "lo", None)]
    log = jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "request": {"model": "gpt-4o-mini", "stream": True},
                "response": whole,
                "stream": True,
            },
            {"request": None, "response": cut},
            {"response": whole, "complete": False},
        ],
    )
    done, abandoned, declared = list(iter_calls(log, "openai-chat"))
    assert isinstance(done, CallRecord) and isinstance(abandoned, CallRecord)
    assert isinstance(declared, CallRecord)
    assert (done.stream, done.complete) == (True, True)
    assert done.response == whole
    assert done.external_id == "chatcmpl-stream1"
    assert done.model == "gpt-4o-mini-2024-07-18"
    assert done.endpoint == "/v1/chat/completions"
    assert done.usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert (abandoned.stream, abandoned.complete, abandoned.request) == (True, False, None)
    assert declared.complete is False


def test_generic_jsonl_for_any_provider(tmp_path: Path) -> None:
    legacy = {
        "id": "cmpl-7",
        "object": "text_completion",
        "model": "gpt-3.5-turbo-instruct",
        "choices": [{"text": "Once upon a time", "index": 0, "finish_reason": "length"}],
    }
    responses = {
        "id": "resp_67ccd2bed1ec8190",
        "object": "response",
        "model": "gpt-4.1-2025-04-14",
        "status": "completed",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hi there."}],
            }
        ],
        "usage": {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13},
    }
    log = jsonl(
        tmp_path / "calls.jsonl",
        [
            {
                "provider": "acme",
                "model": "acme-large-2",
                "endpoint": "/v2/generate",
                "request": {"prompt": "x"},
                "response": {"text": "y"},
                "external_id": "gen-1",
                "account": "team-a",
                "purpose": "annotation",
            },
            {"provider": "openai", "request": {"prompt": "Once"}, "response": legacy},
            {"provider": "openai", "request": {"input": "Hi"}, "response": responses},
        ],
    )
    acme, completion, response = list(iter_calls(log, "jsonl"))
    assert isinstance(acme, CallRecord)
    assert (acme.provider, acme.model, acme.endpoint, acme.external_id, acme.account) == (
        "acme",
        "acme-large-2",
        "/v2/generate",
        "gen-1",
        "team-a",
    )
    assert acme.extra == {"purpose": "annotation"}
    assert isinstance(completion, CallRecord)
    assert (completion.endpoint, completion.model, completion.external_id) == (
        "/v1/completions",
        "gpt-3.5-turbo-instruct",
        "cmpl-7",
    )
    assert isinstance(response, CallRecord)
    assert (response.endpoint, response.model, response.external_id) == (
        "/v1/responses",
        "gpt-4.1-2025-04-14",
        "resp_67ccd2bed1ec8190",
    )
    assert response.usage == {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13}


def test_generic_jsonl_responses_api_stream(tmp_path: Path) -> None:
    base = {"id": "resp_1", "object": "response", "model": "gpt-4.1-mini", "status": "in_progress"}
    events = [
        {"type": "response.created", "sequence_number": 0, "response": base},
        {
            "type": "response.output_text.delta",
            "sequence_number": 1,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hi",
        },
        {
            "type": "response.completed",
            "sequence_number": 2,
            "response": {**base, "status": "completed", "usage": {"total_tokens": 4}},
        },
    ]
    log = jsonl(
        tmp_path / "calls.jsonl",
        [
            {"provider": "openai", "response": events},
            {"provider": "openai", "response": events[:2]},
        ],
    )
    done, cut = list(iter_calls(log, "jsonl"))
    assert isinstance(done, CallRecord) and isinstance(cut, CallRecord)
    assert (done.external_id, done.model, done.endpoint) == (
        "resp_1",
        "gpt-4.1-mini",
        "/v1/responses",
    )
    assert (done.stream, done.complete, done.usage) == (True, True, {"total_tokens": 4})
    assert (cut.stream, cut.complete) == (True, False)


def test_log_lines_that_record_failures(tmp_path: Path) -> None:
    log = jsonl(
        tmp_path / "calls.jsonl",
        [
            {
                "provider": "openai",
                "request": {},
                "response": None,
                "error": {"code": "rate_limit_exceeded", "message": "Slow down."},
            },
            {"provider": "openai", "status_code": 500, "response": {"error": {"message": "boom"}}},
            {"provider": "openai", "response": {"error": {"message": "bad key", "type": "auth"}}},
        ],
    )
    assert list(iter_calls(log, "jsonl")) == [
        FailedCall(f"{log}:1", None, "rate_limit_exceeded: Slow down."),
        FailedCall(f"{log}:2", None, "HTTP 500"),
        FailedCall(f"{log}:3", None, "auth: bad key"),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"response": {"id": "x"}}, "expected a string 'provider', found null or nothing"),
        ({"provider": "acme"}, "missing 'response'"),
        ({"provider": "acme", "response": "text"}, "found a string"),
        ({"provider": "acme", "response": {}, "request": [1]}, "'request', found an array"),
        ({"provider": "acme", "response": {}, "stream": True}, "must be a list of chunks"),
        ({"provider": "acme", "response": [1, 2]}, "every stream chunk"),
        (
            {"provider": "acme", "response": {}, "model": 5},
            "expected a string 'model', found a number",
        ),
        ({"provider": "acme", "response": {}, "complete": "yes"}, "'complete', found a string"),
    ],
)
def test_generic_jsonl_errors_name_the_line(
    tmp_path: Path, line: dict[str, Any], message: str
) -> None:
    log = jsonl(tmp_path / "calls.jsonl", [{"provider": "acme", "response": {"id": "ok"}}, line])
    with pytest.raises(InputError) as info:
        list(iter_calls(log, "jsonl"))
    assert str(info.value).startswith(f"{log}:2: ")
    assert message in str(info.value)


def test_call_file_without_calls_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "calls.jsonl"
    empty.write_bytes(b"\n\n")
    for fmt in CALL_FORMATS:
        with pytest.raises(InputError, match="no records"):
            list(iter_calls(empty, fmt))


def test_options_that_do_not_fit_are_usage_errors(tmp_path: Path) -> None:
    log = jsonl(tmp_path / "calls.jsonl", [{"provider": "acme", "response": {}}])
    with pytest.raises(UsageError, match="unknown call format 'csv'"):
        list(iter_calls(log, "csv"))
    for fmt in ("jsonl", "openai-chat"):
        with pytest.raises(
            UsageError,
            match=f"only to formats openai-batch, anthropic-batch, gemini-batch, not {fmt}$",
        ):
            list(iter_calls(log, fmt, requests_path=log))


def test_progress_counts_the_file_bytes(batch_files: tuple[Path, Path]) -> None:
    requests, output = batch_files
    done: list[int] = []
    list(iter_calls(output, "openai-batch", requests_path=requests, progress=done.append))
    assert sum(done) == output.stat().st_size


def test_read_json_file(tmp_path: Path) -> None:
    body = tmp_path / "response.json"
    body.write_bytes(b'\xef\xbb\xbf{\n  "id": "chatcmpl-1",\n  "seed": 18446744073709551617\n}\n')
    assert read_json_file(body) == {"id": "chatcmpl-1", "seed": 2**64 + 1}
    chunks = tmp_path / "chunks.json"
    chunks.write_text(json.dumps([chunk(0, "a", "stop")]))
    assert read_json_file(chunks) == [chunk(0, "a", "stop")]
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'{"id": ')
    with pytest.raises(InputError, match=rf"^{broken}: invalid JSON"):
        read_json_file(broken)
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"  \n")
    with pytest.raises(InputError, match="empty file"):
        read_json_file(empty)
    with pytest.raises(InputError, match="cannot read"):
        read_json_file(tmp_path / "missing.json")


def test_inference_helpers() -> None:
    assert infer_endpoint({"object": "chat.completion"}) == "/v1/chat/completions"
    assert (
        infer_endpoint([{"object": "chat.completion.chunk", "id": "c"}]) == "/v1/chat/completions"
    )
    assert infer_endpoint({"object": "text_completion"}) == "/v1/completions"
    assert infer_endpoint({"object": "response"}) == "/v1/responses"
    assert infer_endpoint({}, {"messages": []}) == "/v1/chat/completions"
    assert infer_endpoint({}, {"prompt": "x"}) == "/v1/completions"
    assert infer_endpoint({"object": "thing"}) is None
    assert infer_model({"id": "x"}, {"model": "asked-for"}) == "asked-for"
    assert infer_model({"model": "served"}, {"model": "asked-for"}) == "served"
    assert response_id({"id": 42}) == "42"
    assert response_id([]) is None


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    finishes=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from([None, None, "stop", "length"])), max_size=8
    )
)
def test_stream_complete_iff_every_choice_finished(finishes: list[tuple[int, str | None]]) -> None:
    chunks: list[object] = [
        chunk(i, "x", finish, index=index) for i, (index, finish) in enumerate(finishes)
    ]
    seen = {index for index, _ in finishes}
    finished = {index for index, finish in finishes if finish is not None}
    assert stream_is_complete(chunks) == (bool(seen) and seen == finished)
