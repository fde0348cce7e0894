"""Throughput of the hashing hot path against baselines measured in the same run.

Run: .venv/bin/python benchmarks/bench_hashing.py [--records N] [--rounds R]
Prints records/s for parse + hash_record on synthetic ~1.1 KB chat records, next to
orjson.loads + orjson.dumps(OPT_SORT_KEYS) + hashlib.sha256 (a lower bound no JCS can beat),
and canonical_json's speed relative to the rfc8785 package.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import rfc8785

from ledger.spec.jcs import canonical_json, parse_json_line
from ledger.spec.leaves import hash_record

_WORDS = [
    "the",
    "model",
    "answer",
    "question",
    "paris",
    "france",
    "capital",
    "river",
    "seine",
    "because",
    "therefore",
    "data",
    "training",
    "token",
    "sentence",
    "example",
    "however",
    "result",
    "simple",
    "number",
    "value",
    "between",
    "after",
]


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def chat_record(rng: random.Random, i: int, with_float: bool = False) -> dict[str, object]:
    """A synthetic chat record of about 1.1 KB of JSON, shaped like common SFT data."""
    answer = " ".join(_sentence(rng, 12) for _ in range(8))
    if rng.random() < 0.5:  # half the answers carry paragraphs, which take the slower path
        answer = answer.replace(". ", ".\n\n", 2)
    record: dict[str, object] = {
        "id": f"rec-{i:08d}",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": " ".join(_sentence(rng, 10) for _ in range(3))},
            {"role": "assistant", "content": answer},
        ],
    }
    if with_float:
        record["score"] = rng.random()
    return record


def _each(fn: Callable[[Any], object], items: Sequence[object]) -> None:
    """Apply ``fn`` without keeping the results (keeping them measures page faults instead)."""
    for item in items:
        fn(item)


def _rates(jobs: dict[str, tuple[Callable[[], object], int]], rounds: int) -> dict[str, float]:
    """Items/s of each job: CPU time, best of ``rounds`` interleaved runs, so that other load on
    the machine hits the baseline and the candidates alike."""
    best = dict.fromkeys(jobs, float("inf"))
    for _ in range(rounds):
        for name, (fn, _count) in jobs.items():
            start = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - start)
    return {name: jobs[name][1] / best[name] for name in jobs}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    records = [chat_record(rng, i) for i in range(args.records)]
    lines = [orjson.dumps(r) for r in records]
    float_records = [chat_record(rng, i, with_float=True) for i in range(args.records)]
    mean = sum(map(len, lines)) / len(lines)
    n = len(lines)

    def baseline() -> None:
        for line in lines:
            hashlib.sha256(orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS)).digest()

    def pipeline() -> None:
        for line in lines:
            hash_record(parse_json_line(line))

    def hash_only() -> None:
        for record in records:
            hash_record(record)

    def hash_floats() -> None:
        for record in float_records:
            hash_record(record)

    def parse_only() -> None:
        for line in lines:
            parse_json_line(line)

    plain, floaty = records[: min(n, 5_000)], float_records[: min(n, 5_000)]
    jobs: dict[str, tuple[Callable[[], object], int]] = {
        "baseline orjson loads+sorted dumps+sha256": (baseline, n),
        "parse_json_line + hash_record": (pipeline, n),
        "parse_json_line alone": (parse_only, n),
        "hash_record (parsed)": (hash_only, n),
        "hash_record (parsed, with a float)": (hash_floats, n),
        "canonical_json": (lambda: _each(canonical_json, plain), len(plain)),
        "rfc8785.dumps": (lambda: _each(rfc8785.dumps, plain), len(plain)),
        "canonical_json with a float": (lambda: _each(canonical_json, floaty), len(floaty)),
        "rfc8785.dumps with a float": (lambda: _each(rfc8785.dumps, floaty), len(floaty)),
    }
    rates = _rates(jobs, args.rounds)
    base = rates["baseline orjson loads+sorted dumps+sha256"]
    print(f"records: {n}, mean line {mean:.0f} bytes; CPU time, best of {args.rounds} rounds")
    for name, rate in rates.items():
        if name.startswith(("canonical_json", "rfc8785")):
            continue
        print(f"{name:<43}: {rate:>10,.0f} records/s  ({rate / base:.2f}x baseline)")
    for suffix, what in (("", "records without floats"), (" with a float", "records with a float")):
        ours, theirs = rates["canonical_json" + suffix], rates["rfc8785.dumps" + suffix]
        print(
            f"canonical_json {ours:>9,.0f}/s vs rfc8785.dumps {theirs:>7,.0f}/s: "
            f"{ours / theirs:4.1f}x ({what})"
        )


if __name__ == "__main__":
    main()
