"""`ledger import calls --requests INPUT.jsonl` for every batch format: each call's request hash comes
from the batch input file, joined to the output line by its id (DESIGN.md "Call hashes", "Providers").

Input files in the providers' documented shapes: Anthropic Message Batches `{"custom_id", "params"}`,
Gemini Batch API `{"key", "request"}`. Everything runs through the installed `ledger` on a DuckDB file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import rfc8785

LEDGER = str(Path(sys.executable).with_name("ledger"))

ANSWER = "At the summit of Mount Everest water boils at roughly 70 degrees Celsius (158 F)."
THINKING = (
    "The user asks for the boiling point of water at the summit of Everest. Air pressure there is "
    "about a third of sea level, so water boils near seventy degrees Celsius."
)
GEMINI_ANSWER = "A pressure cooker raises the boiling point of water, so food cooks faster."


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run([LEDGER, *args], cwd=cwd, env=env, capture_output=True, text=True)


def ok(cwd: Path, *args: str) -> Any:
    result = run(cwd, *args, "--json")
    assert result.returncode == 0, (args, result.stderr)
    return json.loads(result.stdout)


def one_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: "), lines
    return lines[0].removeprefix("error: ")


def write_jsonl(path: Path, lines: Sequence[Any]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def sha256_jcs(value: Any) -> str:
    return hashlib.sha256(rfc8785.dumps(value)).hexdigest()


@pytest.fixture()
def shop(tmp_path: Path) -> Path:
    ok(tmp_path, "init", "--origin", "example.org/batch-requests")
    return tmp_path


# --- Anthropic Message Batches -------------------------------------------------------------------


def anthropic_params(n: int) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 1024,
        "system": "Answer in one sentence.",
        "messages": [
            {"role": "user", "content": f"Question {n}: how hot does water boil on Everest?"}
        ],
    }


def anthropic_message(n: int) -> dict[str, Any]:
    return {
        "id": f"msg_{n:02d}",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "thinking", "thinking": THINKING, "signature": "EqQB"},
                    {"type": "text", "text": f"{ANSWER} (answer {n})"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 20 + n, "output_tokens": 40},
    }  # fmt: skip


def anthropic_files(shop: Path) -> tuple[Path, Path]:
    requests = write_jsonl(
        shop / "anthropic-input.jsonl",
        [{"custom_id": f"eval-{n}", "params": anthropic_params(n)} for n in range(4)],
    )
    results = write_jsonl(
        shop / "anthropic-results.jsonl",
        [  # results come in any order
            {"custom_id": "eval-2", "result": {"type": "succeeded", "message": anthropic_message(2)}},
            {"custom_id": "eval-0", "result": {"type": "succeeded", "message": anthropic_message(0)}},
            {"custom_id": "eval-1", "result": {"type": "errored", "error": {"type": "error", "error": {
                "type": "overloaded_error", "message": "Overloaded"}}}},
            {"custom_id": "eval-9", "result": {"type": "succeeded", "message": anthropic_message(9)}},
        ],
    )  # fmt: skip
    return requests, results


ANTHROPIC_IMPORT = (
    "--format",
    "anthropic-batch",
    "--provider",
    "anthropic",
    "--purpose",
    "evaluation",
)


def test_anthropic_batch_requests_give_each_call_its_request_hash(shop: Path) -> None:
    requests, results = anthropic_files(shop)
    args = ("import", "calls", str(results), "--requests", str(requests), *ANTHROPIC_IMPORT)
    report = ok(shop, *args)
    assert (report["added"], report["duplicates"], report["failed"]) == (3, 0, 1)
    assert "Overloaded" in report["failed_examples"][0]
    for n in (0, 2):
        body = ok(shop, "show", f"msg_{n:02d}")["body"]
        assert body["request"] == sha256_jcs(anthropic_params(n)), n  # the line's `params`
        assert body["custom_id"] == f"eval-{n}"
        assert body["response"] == sha256_jcs(anthropic_message(n))
    # eval-9 has no line in the input file: recorded with no request, as openai-batch does
    orphan = ok(shop, "show", "msg_09")["body"]
    assert orphan["request"] is None and orphan["custom_id"] == "eval-9"
    # ... and the report says so, naming the line
    assert report["without_request"] == 1
    assert report["without_request_examples"] == [f"{results}:4"]
    human = run(shop, *args)
    assert "1 call with no line in the requests file (recorded with request null)" in human.stdout
    again = ok(shop, *args)
    assert (again["added"], again["duplicates"], again["failed"]) == (0, 3, 1)
    assert ok(shop, "status")["counts"]["call"] == 3


def test_anthropic_requests_differ_from_no_requests(shop: Path) -> None:
    """Without --requests the same results record `request: null`: the file is what gives the hash."""
    _, results = anthropic_files(shop)
    report = ok(shop, "import", "calls", str(results), *ANTHROPIC_IMPORT)
    assert ok(shop, "show", "msg_00")["body"]["request"] is None
    assert report["without_request"] == 0  # no requests file: nothing was expected to join


def test_a_bad_anthropic_input_file_names_its_line_and_records_nothing(shop: Path) -> None:
    _, results = anthropic_files(shop)
    before = ok(shop, "status")
    duplicate = write_jsonl(
        shop / "dup.jsonl",
        [{"custom_id": "eval-0", "params": anthropic_params(0)},
         {"custom_id": "eval-0", "params": anthropic_params(1)}],
    )  # fmt: skip
    message = one_error(run(shop, "import", "calls", str(results), "--requests", str(duplicate),
                            *ANTHROPIC_IMPORT), 4)  # fmt: skip
    assert message == f"{duplicate}:2: custom_id 'eval-0' already used on line 1"
    # An OpenAI input file given for an Anthropic batch: its lines have no `params`.
    openai_input = write_jsonl(
        shop / "openai-input.jsonl",
        [{"custom_id": "eval-0", "method": "POST", "url": "/v1/chat/completions",
          "body": {"model": "gpt-4o", "messages": []}}],
    )  # fmt: skip
    message = one_error(run(shop, "import", "calls", str(results), "--requests", str(openai_input),
                            *ANTHROPIC_IMPORT), 4)  # fmt: skip
    assert message == f"{openai_input}:1: expected an object 'params', found null or nothing"
    assert ok(shop, "status") == before


def test_the_anthropic_input_file_given_as_results_says_to_pass_it_as_requests(shop: Path) -> None:
    requests, _ = anthropic_files(shop)
    message = one_error(run(shop, "import", "calls", str(requests), *ANTHROPIC_IMPORT), 4)
    assert message == (
        f"{requests}:1: this is the batch input file (lines of custom_id, params), not the Message "
        "Batches results: pass it with --requests"
    )


# --- Gemini Batch API ----------------------------------------------------------------------------


def gemini_request(n: int) -> dict[str, Any]:
    return {
        "contents": [
            {"role": "user", "parts": [{"text": f"Question {n}: why use a pressure cooker?"}]}
        ],
        "generationConfig": {"temperature": 0.7, "thinkingConfig": {"includeThoughts": True}},
    }


def gemini_response(n: int) -> dict[str, Any]:
    return {
        "candidates": [{"content": {"parts": [{"text": f"{GEMINI_ANSWER} (answer {n})"}],
                                    "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 15, "candidatesTokenCount": 20, "totalTokenCount": 35},
        "modelVersion": "gemini-2.5-flash",
        "responseId": f"resp-{n}",
    }  # fmt: skip


GEMINI_IMPORT = ("--format", "gemini-batch", "--provider", "google", "--purpose", "evaluation")


def test_gemini_batch_requests_give_each_call_its_request_hash(shop: Path) -> None:
    requests = write_jsonl(
        shop / "gemini-input.jsonl",
        [{"key": f"request-{n}", "request": gemini_request(n)} for n in range(1, 4)],
    )
    output = write_jsonl(
        shop / "gemini-output.jsonl",
        [
            {"key": "request-2", "response": gemini_response(2)},
            # the output echoes the request: it agrees with the input file
            {"key": "request-1", "request": gemini_request(1), "response": gemini_response(1)},
            {"key": "request-3", "error": {"code": 400, "message": "Invalid JSON payload"}},
            {"key": "request-7", "response": gemini_response(7)},  # not in the input file
            {"request": gemini_request(8), "response": gemini_response(8)},  # no key: inline only
        ],
    )
    args = ("import", "calls", str(output), "--requests", str(requests), *GEMINI_IMPORT)
    report = ok(shop, *args)
    assert (report["added"], report["duplicates"], report["failed"]) == (4, 0, 1)
    for n in (1, 2):
        body = ok(shop, "show", f"resp-{n}")["body"]
        assert body["request"] == sha256_jcs(gemini_request(n)), n
        assert body["custom_id"] == f"request-{n}" and body["model"] == "gemini-2.5-flash"
    missing = ok(shop, "show", "resp-7")["body"]
    assert missing["request"] is None and missing["custom_id"] == "request-7"
    inline = ok(shop, "show", "resp-8")["body"]
    assert inline["request"] == sha256_jcs(gemini_request(8)) and "custom_id" not in inline
    again = ok(shop, *args)
    assert (again["added"], again["duplicates"], again["failed"]) == (0, 4, 1)


def test_a_gemini_inline_request_that_disagrees_with_the_input_file_is_an_error(
    shop: Path,
) -> None:
    requests = write_jsonl(
        shop / "gemini-input.jsonl",
        [{"key": f"request-{n}", "request": gemini_request(n)} for n in (1, 2)],
    )
    # Key order and spacing do not matter (the request is compared as it is hashed, as JCS) ...
    reordered = dict(reversed(list(gemini_request(1).items())))
    # ... but another request under the same key does.
    output = write_jsonl(
        shop / "gemini-output.jsonl",
        [{"key": "request-1", "request": reordered, "response": gemini_response(1)},
         {"key": "request-2", "request": gemini_request(5), "response": gemini_response(2)}],
    )  # fmt: skip
    before = ok(shop, "status")
    message = one_error(run(shop, "import", "calls", str(output), "--requests", str(requests),
                            *GEMINI_IMPORT), 4)  # fmt: skip
    assert message == (
        f"{output}:2: the inline 'request' differs from the request of key 'request-2' "
        f"in {requests}:2"
    )
    assert ok(shop, "status") == before


def test_gemini_input_file_mistakes(shop: Path) -> None:
    requests = write_jsonl(
        shop / "gemini-input.jsonl",
        [{"key": "request-1", "request": gemini_request(1)}, {"key": 2, "request": {}}],
    )
    output = write_jsonl(shop / "out.jsonl", [{"key": "request-1", "response": gemini_response(1)}])
    message = one_error(run(shop, "import", "calls", str(output), "--requests", str(requests),
                            *GEMINI_IMPORT), 4)  # fmt: skip
    assert message == f"{requests}:2: expected a string key, found a number"
    # the input file given as the output
    good = write_jsonl(shop / "input.jsonl", [{"key": "request-1", "request": gemini_request(1)}])
    message = one_error(run(shop, "import", "calls", str(good), *GEMINI_IMPORT), 4)
    assert message == (
        f"{good}:1: this is the batch input file (lines of key, request), not the batch output: "
        "pass it with --requests"
    )
    # a requests file with a format that has none
    log = write_jsonl(shop / "log.jsonl", [{"provider": "google", "response": gemini_response(1)}])
    message = one_error(run(shop, "import", "calls", str(log), "--format", "jsonl", "--requests",
                            str(good), "--provider", "google", "--purpose", "evaluation"), 2)  # fmt: skip
    assert message == (
        "a requests file applies only to formats openai-batch, anthropic-batch, gemini-batch, "
        "not jsonl"
    )
    assert ok(shop, "status")["counts"].get("call", 0) == 0
