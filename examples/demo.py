"""The end-to-end story `make demo` tells, on generated data, through the real `ledger` command.

An API provider's evaluation calls reach the lab as an OpenAI Batch API output file. The lab trains a
clean base model, then a fine-tune that quietly used masked copies of those "evaluation" outputs. The
audit clears the base and catches the fine-tune; an outside verifier checks the proof bundle offline;
an insider's edit of the database is caught by `ledger verify`.

Run it with `make demo` (or `python examples/demo.py [OUTDIR]`). Texts are real English paragraphs from
the docstrings of Python's own standard library, so nothing is downloaded.
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-out").resolve()
LEDGER = shutil.which("ledger", path=str(Path(sys.executable).parent)) or "ledger"
RNG = random.Random(7)


def say(text: str) -> None:
    print(f"\n\033[1m# {text}\033[0m" if sys.stdout.isatty() else f"\n# {text}", flush=True)


def ledger(*args: str, expect: int = 0) -> str:
    """Run the real CLI the way a user would, show the command and its output, check the exit code."""
    print(f"$ ledger {' '.join(shlex.quote(a) for a in args)}", flush=True)
    proc = subprocess.run(
        [LEDGER, *args],
        cwd=OUT,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
    )
    sys.stdout.write(proc.stdout)
    sys.stdout.write(proc.stderr)
    print(f"[exit {proc.returncode}]", flush=True)
    if proc.returncode != expect:
        raise SystemExit(
            f"demo: `ledger {' '.join(args)}` exited {proc.returncode}, expected {expect}"
        )
    return proc.stdout


def paragraphs(limit: int) -> list[str]:
    """Real English paragraphs (200-900 chars) from standard-library docstrings, read without importing.

    One paragraph per top-level module or package, so that unrelated texts really are unrelated (sibling
    docstrings, say email.mime.audio and email.mime.image, share whole sentences, which the near matcher
    rightly reports).
    """
    found: list[str] = []
    seen: set[str] = set()
    tops: set[str] = set()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        top = path.relative_to(stdlib).parts[0].removesuffix(".py").lstrip("_")
        if top in tops or top in {
            "test",
            "tests",
            "site-packages",
            "idlelib",
            "lib2to3",
            "pydecimal",
            "pyio",
        }:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
                texts = [
                    " ".join(p.split()) for p in re.split(r"\n\s*\n", ast.get_docstring(node) or "")
                ]
                good = [
                    t
                    for t in texts
                    if 200 <= len(t) <= 900 and t.count(" ") > 30 and ">>>" not in t
                ]
                if good and good[0].casefold() not in seen:
                    seen.add(good[0].casefold())
                    tops.add(top)
                    found.append(good[0])
                    break
    RNG.shuffle(found)
    if len(found) < limit:
        raise SystemExit(
            f"demo: found only {len(found)} docstring paragraphs in {stdlib}, need {limit}"
        )
    return found[:limit]


def mask(text: str) -> str:
    """What a "desensitization" script does: hide names and numbers, re-case, re-space."""
    words = text.split()
    for i in range(0, len(words), 6):
        words[i] = RNG.choice(["[MASK]", "***", "<NAME>"])
    return "  ".join(words).upper() if RNG.random() < 0.5 else " ".join(words)


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    texts = paragraphs(150)
    outputs, corpus = texts[:40], texts[40:]

    say(
        "A lab sets up its ledger: one DuckDB file, a log key and a `default` recorder key (PEM files, 0600)."
    )
    ledger("init", "--origin", "lab.example/ledger")
    say(
        "Recording signs with `default`; the training job gets a recorder key of its own (`--key trainer`)."
    )
    ledger("keys", "new", "--name", "trainer")

    say("The provider's evaluation calls arrive as an OpenAI Batch API input and output file.")
    batch_in, batch_out = [], []
    for i, answer in enumerate(outputs):
        question = (
            f"Question {i}: explain, in a paragraph, what this part of a standard library does."
        )
        body = {"model": "gpt-4o-2024-08-06", "messages": [{"role": "user", "content": question}]}
        batch_in.append(
            {
                "custom_id": f"eval-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body,
            }
        )
        response = {
            "id": f"chatcmpl-demo{i:04d}",
            "object": "chat.completion",
            "created": 1763800000 + i,
            "model": "gpt-4o-2024-08-06",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 40, "completion_tokens": 120, "total_tokens": 160},
        }
        batch_out.append(
            {
                "id": f"batch_req_{i}",
                "custom_id": f"eval-{i}",
                "response": {"status_code": 200, "request_id": f"req_{i}", "body": response},
                "error": None,
            }
        )
    batch_out.append(
        {
            "id": "batch_req_fail",
            "custom_id": "eval-x",
            "response": None,
            "error": {"code": "rate_limit_exceeded", "message": "Rate limit reached"},
        }
    )
    write_jsonl(OUT / "batch_input.jsonl", batch_in)
    write_jsonl(OUT / "batch_output.jsonl", batch_out)
    import_batch = ("import", "calls", "batch_output.jsonl", "--format", "openai-batch")
    import_batch += (
        "--requests",
        "batch_input.jsonl",
        "--provider",
        "openai",
        "--purpose",
        "evaluation",
    )
    ledger(*import_batch)
    say("Importing the same file again adds nothing.")
    ledger(*import_batch)

    say(
        "A clean base training run: the lab's own corpus, recorded batch by batch, then the checkpoint."
    )
    base = [
        {
            "messages": [
                {"role": "user", "content": "Summarize."},
                {"role": "assistant", "content": t},
            ]
        }
        for t in corpus
    ]
    write_jsonl(OUT / "base.jsonl", base)
    ledger(
        "record", "batch", "base.jsonl", "--id", "base/data", "--split", "50", "--key", "trainer"
    )
    (OUT / "base-weights").mkdir()
    for shard in range(2):
        (OUT / "base-weights" / f"model-{shard:05d}-of-00002.safetensors").write_bytes(
            RNG.randbytes(1 << 20)
        )
    ledger(
        "record",
        "checkpoint",
        "--id",
        "base",
        "--weights",
        "base-weights",
        "--batch",
        "base/data",
        "--key",
        "trainer",
    )
    ledger("head", "--out", "published-head.txt")

    say(
        "A fine-tune that quietly used masked copies of the 'evaluation' outputs, mixed with its own data."
    )
    tune = [
        {"messages": [{"role": "user", "content": "Explain."}, {"role": "assistant", "content": t}]}
        for t in corpus[:40]
    ]
    for answer in outputs[:12]:
        tune.append(
            {
                "messages": [
                    {"role": "user", "content": "Explain."},
                    {"role": "assistant", "content": mask(answer)},
                ]
            }
        )
    tune.append(
        {"messages": [{"role": "assistant", "content": "Background. " + outputs[12] + " End."}]}
    )
    tune.append({"text": outputs[13]})  # one copied verbatim
    RNG.shuffle(tune)
    write_jsonl(OUT / "tune.jsonl", tune)
    ledger("record", "batch", "tune.jsonl", "--id", "tune/data", "--key", "trainer")
    (OUT / "tune.safetensors").write_bytes(RNG.randbytes(1 << 20))
    ledger(
        "record",
        "checkpoint",
        "--id",
        "tune",
        "--weights",
        "tune.safetensors",
        "--batch",
        "tune/data",
        "--parent",
        "base",
        "--key",
        "trainer",
    )

    say("The release gate audits each checkpoint. The base is clean (exit 0) ...")
    ledger("audit", "base")
    say(
        "... the fine-tune is contaminated (exit 1): evaluation outputs, verbatim and masked, in its lineage."
    )
    ledger("audit", "tune", "--bundle", "tune-bundle.json", expect=1)
    ledger("lineage", "tune")

    say(
        "An outside verifier checks the bundle offline, with the lab's published verifier key only."
    )
    ledger("keys", "export", "log", "--out", "lab.vkey")
    ledger("verify-bundle", "tune-bundle.json", "--key", "lab.vkey")

    say("An insider edits the database to hide the copy: `ledger verify` catches it (exit 1).")
    shutil.copy(OUT / "ledger.duckdb", OUT / "before-tamper.duckdb")
    tamper(OUT / "ledger.duckdb")
    ledger("verify", expect=1)
    ledger("audit", "tune", expect=3)
    say("Done. Everything above is in " + str(OUT))


def tamper(path: Path) -> None:
    """Relabel an evaluation call as training-data and drop the segments of the fine-tune's records."""
    import duckdb

    conn = duckdb.connect(str(path))
    conn.execute(
        "UPDATE entries SET purpose = 'training-data' WHERE kind = 'call' AND idx = (SELECT min(idx) FROM entries WHERE kind = 'call')"
    )
    batch = conn.execute(
        "SELECT idx FROM entries WHERE kind = 'batch' AND ref = 'tune/data'"
    ).fetchone()
    assert batch is not None
    conn.execute("DELETE FROM record_segments WHERE batch = ?", [batch[0]])
    conn.close()
    print("(raw SQL: relabelled a call's purpose and deleted the fine-tune batch's segment rows)")


if __name__ == "__main__":
    main()
