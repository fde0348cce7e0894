"""Reconcile time: N recorded calls (default 1M) against a year of hourly Usage API buckets.

Builds both: a Batch API output file of N chat completions spread over 2026 (three models), imported in
one `Ledger.import_calls`; and the provider's usage for the same calls, hourly buckets grouped by model
and batch, written as pages of 168 buckets (the API's page limit for `bucket_width=1h`). Then times
`reconcile_ledger` (reading the pages, the SQL read of every call's created/model/usage, the comparison)
against a baseline measured in the same run: one plain SQL scan that decodes the same calls' payloads and
sums their usage. Prints seconds and the ratio.

    .venv/bin/python benchmarks/bench_reconcile.py               # 1M calls (the import takes minutes)
    .venv/bin/python benchmarks/bench_reconcile.py --calls 100000
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import duckdb

from ledger import Ledger
from ledger.audit.reconcile import reconcile_ledger

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
YEAR = 365 * 86400
HOUR = 3600
MODELS = ("gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06", "gpt-4.1-2025-04-14")
PAGE = 168


def build_calls(folder: Path, n: int) -> tuple[Path, dict[tuple[int, str], list[int]]]:
    """The Batch output file; per (hour, model) the provider's [requests, input, output]."""
    rng = random.Random(7)
    usage: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    path = folder / "batch-out.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            created = T0 + i * YEAR // n
            model = MODELS[i % len(MODELS)]
            prompt, completion = rng.randint(20, 400), rng.randint(10, 200)
            body = {
                "id": f"chatcmpl-{i:08d}",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": f"Answer number {i} to a question.",
                        },
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
            line = {
                "id": f"batch_req_{i}",
                "custom_id": f"r-{i}",
                "response": {"status_code": 200, "request_id": f"req_{i}", "body": body},
                "error": None,
            }
            out.write(json.dumps(line) + "\n")
            cell = usage[((created - T0) // HOUR, model)]
            cell[0] += 1
            cell[1] += prompt
            cell[2] += completion
    return path, usage


def write_usage(folder: Path, usage: dict[tuple[int, str], list[int]]) -> list[Path]:
    hours = YEAR // HOUR
    buckets = []
    for h in range(hours):
        results = [
            {
                "object": "organization.usage.completions.result",
                "input_tokens": cell[1],
                "output_tokens": cell[2],
                "input_cached_tokens": 0,
                "num_model_requests": cell[0],
                "project_id": None,
                "user_id": None,
                "api_key_id": None,
                "model": model,
                "batch": True,
            }
            for model in MODELS
            if (cell := usage.get((h, model)))
        ]
        start = T0 + h * HOUR
        buckets.append(
            {"object": "bucket", "start_time": start, "end_time": start + HOUR, "results": results}
        )
    paths = []
    for p in range(0, len(buckets), PAGE):
        chunk = buckets[p : p + PAGE]
        more = p + PAGE < len(buckets)
        page = {
            "object": "page",
            "data": chunk,
            "has_more": more,
            "next_page": f"page_{p + PAGE}" if more else None,
        }
        path = folder / f"usage-{p // PAGE:03d}.json"
        path.write_text(json.dumps(page), encoding="utf-8")
        paths.append(path)
    return paths


BASELINE_SQL = """
SELECT count(*), sum(try_cast(json_extract(b, '$.usage.prompt_tokens') AS BIGINT)),
       sum(try_cast(json_extract(b, '$.usage.completion_tokens') AS BIGINT)),
       min(try_cast(json_extract(b, '$.created') AS BIGINT))
FROM (SELECT try(decode(from_base64(json_extract_string(decode(leaf), '$.payload'))))::JSON AS b
      FROM entries WHERE kind = 'call' AND provider = 'openai')
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        batch, usage = build_calls(folder, args.calls)
        pages = write_usage(folder, usage)
        print(
            f"built {args.calls:,} calls and {len(pages)} usage pages in {time.perf_counter() - started:.1f}s"
        )
        db = folder / "ledger.duckdb"
        lg = Ledger.init(db, origin="bench.example/reconcile")
        started = time.perf_counter()
        report = lg.import_calls(
            batch, "openai-batch", provider="openai", purpose="evaluation", chunk=50_000
        )
        took = time.perf_counter() - started
        print(
            f"imported {report.added:,} calls in {took:.1f}s ({report.added / took:,.0f} calls/s)"
        )

        baseline = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            conn = duckdb.connect(str(db), read_only=True)
            row = conn.execute(BASELINE_SQL).fetchall()[0]
            conn.close()
            baseline.append(time.perf_counter() - started)
        assert row[0] == args.calls, row
        timed = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            result = reconcile_ledger(lg, usage=pages)
            timed.append(time.perf_counter() - started)
        assert result.verdict == "match", result.reasons()
        assert result.calls == args.calls and len(result.buckets) == YEAR // HOUR
        best, base = min(timed), min(baseline)
        print(
            f"reconcile: {args.calls:,} calls against {len(result.buckets):,} hourly buckets "
            f"({len(result.cells):,} compared rows): {best:.2f}s (best of {args.rounds}); "
            f"baseline SQL scan of the same calls' payloads {base:.2f}s; ratio {best / base:.2f}x"
        )


if __name__ == "__main__":
    main()
