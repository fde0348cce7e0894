"""One ledger, three providers, two runs: the shapes a lab brings at once.

Evaluation calls of OpenAI (a Batch output with its input file), Anthropic (Message Batches results)
and Gemini (batch output lines) are imported into one ledger; two training runs record their batches
and checkpoints interleaved with the imports. One run trained on a Claude thinking trace verbatim, a
GPT answer inside a longer document and a Gemini thought masked with look-alike letters from other
scripts; the other trained on clean text. Through the installed CLI, the first audit names a finding
for every provider and the second is clean (not inconclusive: the other run's entries are not gaps).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hardening import LEDGER

CLAUDE_THINKING = (
    "The question is whether a tidal range of sixteen metres is possible. The Bay of Fundy funnels "
    "the Atlantic into a narrowing basin whose natural period matches the lunar tide, so the water "
    "resonates and the range grows far beyond what the open ocean shows."
)
GPT_ANSWER = (
    "Sourdough rises because wild yeasts and lactobacilli ferment the flour's sugars; the yeasts "
    "release carbon dioxide that the gluten network traps, while the bacteria make the lactic and "
    "acetic acids that give the bread its sour taste and keep it fresh for longer."
)
GEMINI_THOUGHT = (
    "I am weighing why copper turns green on old roofs: the metal reacts slowly with oxygen, water "
    "and carbon dioxide, forming a layer of basic copper carbonate called patina that protects the "
    "metal beneath from further corrosion for a very long time."
)
CLEAN = (
    "Our own notes on shipping schedules for the winter season, written by the logistics team and "
    "reviewed by the planning group before the quarterly meeting in the northern office building."
)

LOOK_ALIKES = str.maketrans(
    {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441"}
)


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run([LEDGER, *args], cwd=cwd, env=env, capture_output=True, text=True)


def ok(cwd: Path, *args: str) -> Any:
    result = run(cwd, *args, "--json")
    assert result.returncode == 0, (args, result.stderr)
    return json.loads(result.stdout)


def write_jsonl(path: Path, lines: Sequence[Any]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def openai_batch(shop: Path) -> tuple[Path, Path]:
    request = {
        "model": "gpt-4o-2024-08-06",
        "messages": [{"role": "user", "content": "Why does sourdough rise?"}],
    }
    inputs = [
        {"custom_id": "oa-0", "method": "POST", "url": "/v1/chat/completions", "body": request}
    ]
    response = {
        "id": "chatcmpl-sourdough",
        "object": "chat.completion",
        "created": 1760000000,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": GPT_ANSWER},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 60, "total_tokens": 72},
    }
    outputs = [
        {
            "id": "batch_req_1",
            "custom_id": "oa-0",
            "response": {"status_code": 200, "request_id": "req_1", "body": response},
            "error": None,
        }
    ]
    return write_jsonl(shop / "oa-out.jsonl", outputs), write_jsonl(shop / "oa-in.jsonl", inputs)


def anthropic_batch(shop: Path) -> Path:
    message = {
        "id": "msg_fundy",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": CLAUDE_THINKING, "signature": "Eq0BCkYIBxgCKkA"},
            {"type": "text", "text": "Yes: the Bay of Fundy reaches about sixteen metres."},
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 90},
    }
    lines = [{"custom_id": "an-0", "result": {"type": "succeeded", "message": message}}]
    return write_jsonl(shop / "an-results.jsonl", lines)


def gemini_batch(shop: Path) -> Path:
    response = {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {"text": GEMINI_THOUGHT, "thought": True},
                        {"text": "Copper roofs turn green because of a protective patina."},
                    ],
                    "role": "model",
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 14},
        "modelVersion": "gemini-2.5-pro",
        "responseId": "gem-copper",
    }
    return write_jsonl(shop / "gem-out.jsonl", [{"key": "ge-0", "response": response}])


@pytest.fixture()
def shop(tmp_path: Path) -> Path:
    ok(tmp_path, "init", "--origin", "example.org/three-providers")
    return tmp_path


def test_three_providers_two_runs_one_ledger(shop: Path) -> None:
    weights = shop / "w.bin"
    weights.write_bytes(b"weights")
    common = ("--purpose", "evaluation")
    out, inp = openai_batch(shop)
    ok(shop, "import", "calls", str(out), "--format", "openai-batch", "--requests", str(inp),
       "--provider", "openai", *common)  # fmt: skip

    # run "clean" starts between the imports
    clean = write_jsonl(shop / "clean.jsonl", [{"text": CLEAN}, {"text": CLEAN + " Second copy."}])
    ok(shop, "record", "batch", str(clean), "--id", "clean/step-1")

    ok(shop, "import", "calls", str(anthropic_batch(shop)), "--format", "anthropic-batch",
       "--provider", "anthropic", *common)  # fmt: skip
    distilled = [
        {"messages": [{"role": "user", "content": "Explain the Fundy tides."},
                      {"role": "assistant", "reasoning": CLAUDE_THINKING, "content": "Resonance."}]},
        {"text": "Bakery handbook, chapter three.\n\n" + GPT_ANSWER + "\n\nNext: shaping loaves."},
        {"text": GEMINI_THOUGHT.translate(LOOK_ALIKES)},
        {"text": CLEAN},
    ]  # fmt: skip
    data = write_jsonl(shop / "distilled.jsonl", distilled)
    ok(shop, "record", "batch", str(data), "--id", "student/step-1")
    ok(shop, "import", "calls", str(gemini_batch(shop)), "--format", "gemini-batch",
       "--provider", "google", *common)  # fmt: skip
    ok(shop, "record", "checkpoint", "--id", "clean/ckpt", "--weights", str(weights),
       "--batch", "clean/step-1")  # fmt: skip
    ok(shop, "record", "checkpoint", "--id", "student/ckpt", "--weights", str(weights),
       "--batch", "student/step-1")  # fmt: skip

    result = run(shop, "audit", "student/ckpt", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "contaminated"
    by_provider = {(f["provider"], f["record"], f["type"]) for f in report["findings"]}
    assert ("anthropic", 0, "exact") in by_provider
    # a record's texts are its whole string values: the answer inside a longer document is near
    assert ("openai", 1, "near") in by_provider
    assert ("google", 2, "near") in by_provider, report["findings"]
    assert not any(f["record"] == 3 for f in report["findings"])

    result = run(shop, "audit", "clean/ckpt", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "clean" and report["findings"] == []
