"""Throughput of the hashing hot path against baselines measured in the same run.

Run: .venv/bin/python benchmarks/bench_hashing.py [--records N]
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

import orjson
import rfc8785

from ledger.hashing import canonical_json, hash_record, parse_json_line

_WORDS = (
    "the model answer question paris france capital river seine because therefore data "
    "training token sentence example however result simple number value between after"
).split()


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


def _rate(fn: Callable[[], object], count: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
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

    base = _rate(baseline, n)
    print(f"records: {n}, mean line {mean:.0f} bytes")
    print(f"baseline orjson loads+sorted dumps+sha256 : {base:>10,.0f} records/s")
    for name, fn in [
        ("parse_json_line + hash_record", pipeline),
        ("parse_json_line alone", parse_only),
        ("hash_record (parsed)", hash_only),
        ("hash_record (parsed, with a float)", hash_floats),
    ]:
        rate = _rate(fn, n)
        print(f"{name:<43}: {rate:>10,.0f} records/s  ({rate / base:.2f}x baseline)")

    sample = records[: min(n, 5_000)] + float_records[: min(n, 5_000)]
    ours = _rate(lambda: [canonical_json(r) for r in sample], len(sample))
    theirs = _rate(lambda: [rfc8785.dumps(r) for r in sample], len(sample))
    print(f"canonical_json {ours:,.0f}/s vs rfc8785.dumps {theirs:,.0f}/s: {ours / theirs:.1f}x")


if __name__ == "__main__":
    main()
