"""A REF may be a call's custom id (a Batch line's own id) where one call alone has it (DESIGN.md
"Entries": `custom_id`; issue 13). Looked up after entry indexes, batch/checkpoint/dataset ids and
external ids; a custom id that several calls share is an error naming their entry indexes.

Through the installed `ledger` on a DuckDB file: `show`, `prove`, `record batch --derived-from`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ledger import Ledger

LEDGER = str(Path(sys.executable).with_name("ledger"))
ANSWER = (
    "At the summit of Mount Everest water boils at roughly 70 degrees Celsius, not one hundred."
)


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
    return lines[0].removeprefix("error: ")


def write_jsonl(path: Path, lines: Sequence[Any]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def result_line(custom_id: str, message_id: str) -> dict[str, Any]:
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": f"{ANSWER} ({message_id})"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 12, "output_tokens": 30},
    }
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}


def import_results(shop: Path, name: str, lines: Sequence[dict[str, Any]]) -> None:
    path = write_jsonl(shop / name, lines)
    ok(shop, "import", "calls", str(path), "--format", "anthropic-batch", "--provider", "anthropic",
       "--purpose", "evaluation")  # fmt: skip


def index_of(shop: Path, external_id: str) -> int:
    return int(ok(shop, "show", external_id)["index"])


@pytest.fixture()
def shop(tmp_path: Path) -> Path:
    ok(tmp_path, "init", "--origin", "example.org/custom-ids")
    import_results(
        tmp_path, "first.jsonl", [result_line("eval-0", "msg_a0"), result_line("eval-1", "msg_a1")]
    )
    return tmp_path


def test_a_unique_custom_id_is_a_ref_for_show_prove_and_derived_from(shop: Path) -> None:
    call = index_of(shop, "msg_a0")
    shown = ok(shop, "show", "eval-0")
    assert shown["index"] == call and shown["body"]["custom_id"] == "eval-0"
    assert shown["body"]["external_id"] == "msg_a0"
    proof = ok(shop, "prove", "eval-0")
    assert proof["index"] == call and proof == ok(shop, "prove", str(call))
    data = write_jsonl(shop / "sft.jsonl", [{"text": ANSWER}])
    ok(shop, "record", "batch", str(data), "--id", "sft", "--derived-from", "eval-1")
    assert ok(shop, "show", "sft")["body"]["derived_from"] == [index_of(shop, "msg_a1")]
    # the library resolves the same REF
    assert Ledger.open(shop / "ledger.duckdb").entry("eval-0").index == call


def test_a_custom_id_of_several_calls_is_an_error_naming_their_entries(shop: Path) -> None:
    # A second batch reuses the custom ids (they are unique only within one batch).
    import_results(shop, "second.jsonl", [result_line("eval-0", "msg_b0")])
    first, second = index_of(shop, "msg_a0"), index_of(shop, "msg_b0")
    expected = (
        f"2 calls (entries {first}, {second}) have the custom id 'eval-0'; "
        "give the entry index instead"
    )
    before = ok(shop, "status")
    for command in ("show", "prove"):
        assert one_error(run(shop, command, "eval-0"), 2) == expected, command
    data = write_jsonl(shop / "sft.jsonl", [{"text": ANSWER}])
    message = one_error(
        run(shop, "record", "batch", str(data), "--id", "sft", "--derived-from", "eval-0"), 2
    )
    assert message == f"derived_from: {expected}"
    assert ok(shop, "status") == before
    # the entry index, the external id and a custom id still unique all work
    assert ok(shop, "show", str(second))["body"]["custom_id"] == "eval-0"
    assert ok(shop, "show", "msg_b0")["index"] == second
    assert ok(shop, "show", "eval-1")["index"] == index_of(shop, "msg_a1")
    ok(shop, "record", "batch", str(data), "--id", "sft", "--derived-from", str(second))
    assert ok(shop, "show", "sft")["body"]["derived_from"] == [second]


def test_ids_and_external_ids_come_before_custom_ids(shop: Path) -> None:
    # A call whose custom id is another call's external id, and a batch whose id is a custom id.
    import_results(shop, "second.jsonl", [result_line("msg_a1", "msg_c0")])
    assert ok(shop, "show", "msg_a1")["body"]["custom_id"] == "eval-1"  # the external id wins
    data = write_jsonl(shop / "eval-0.jsonl", [{"text": ANSWER}])
    ok(shop, "record", "batch", str(data), "--id", "eval-0")
    assert ok(shop, "show", "eval-0")["body"]["kind"] == "batch"  # the batch id wins
    assert ok(shop, "show", "msg_c0")["body"]["custom_id"] == "msg_a1"


def test_a_ref_that_names_nothing_is_still_exit_4(shop: Path) -> None:
    assert one_error(run(shop, "show", "eval-7"), 4) == "no entry with id 'eval-7'"
    data = write_jsonl(shop / "sft.jsonl", [{"text": ANSWER}])
    message = one_error(run(shop, "record", "batch", str(data), "--derived-from", "eval-7"), 4)
    assert message == "derived_from names no recorded call: call 'eval-7'"


def test_a_free_form_custom_id_resolves_as_written(shop: Path) -> None:
    """OpenAI and Gemini ids are free text: quotes, slashes, non-ASCII (escaped in the signed body)."""
    custom_id = 'run "7"/é-ü \\ tab\there'
    body = {
        "id": "chatcmpl-free",
        "object": "chat.completion",
        "created": 1738000000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": ANSWER}}],
    }  # fmt: skip
    line = {"id": "batch_req_1", "custom_id": custom_id, "error": None,
            "response": {"status_code": 200, "request_id": "req_1", "body": body}}  # fmt: skip
    path = write_jsonl(shop / "openai-out.jsonl", [line])
    ok(shop, "import", "calls", str(path), "--format", "openai-batch", "--provider", "openai",
       "--purpose", "evaluation")  # fmt: skip
    assert ok(shop, "show", custom_id)["index"] == index_of(shop, "chatcmpl-free")
    assert one_error(run(shop, "show", custom_id[:-1]), 4).startswith("no entry with id")


def test_an_external_id_two_providers_share_is_refused_naming_both(shop: Path) -> None:
    """Calls are unique per (provider, external id): the same id from two providers is ambiguous, and
    a REF that could mean either is an error naming both entries, never a silent pick."""
    import_results(shop, "a.jsonl", [result_line("eval-0", "shared-id")])
    resp = shop / "resp.json"
    resp.write_text(json.dumps({"id": "shared-id", "object": "chat.completion", "model": "m",
                                "choices": [{"index": 0, "message": {"content": ANSWER}}]}))  # fmt: skip
    ok(shop, "record", "call", "--provider", "deepseek", "--purpose", "evaluation",
       "--response", str(resp))  # fmt: skip
    message = one_error(run(shop, "show", "shared-id"), 2)
    assert message == (
        "'shared-id' names 2 entries (call entry 4, call entry 5); give the entry index instead"
    )
    assert ok(shop, "show", "5")["body"]["provider"] == "deepseek"
