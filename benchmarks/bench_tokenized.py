"""Tokenized recording: `record_batch(..., tokenizer=...)` of token-id Parquet vs the same data as text.

    .venv/bin/python benchmarks/bench_tokenized.py [--records 8000] [--seq 2048] [--rounds 2]

Trains a byte-level BPE tokenizer on synthetic text (nothing is downloaded), packs documents into
sequences of `--seq` token ids separated by `<|endoftext|>` (as pretraining data is stored), and
writes two Parquet files of the same records: `input_ids` as `list<int32>`, and `texts` as the list
of the documents' texts. Records each into a fresh ledger (the decode runs in the pool's workers),
alternating over `--rounds`, and prints MB/s of the token-id file, records/s of both, and the ratio.
Both files record the same segments, so the difference is the cost of decoding.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

sys.path.insert(0, str(Path(__file__).parent))
from bench_recording import WORDS  # noqa: E402

from ledger import Ledger  # noqa: E402

EOS = "<|endoftext|>"


def document(rng: random.Random) -> str:
    sentences = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "."
        for _ in range(rng.randint(3, 12))
    ]
    return " ".join(sentences)


def build(directory: Path, records: int, seq: int) -> tuple[Path, Path, Path]:
    rng = random.Random(7)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([document(rng) for _ in range(2000)], trainer)
    tokenizer_path = directory / "tokenizer.json"
    tokenizer.save(str(tokenizer_path))
    eos = tokenizer.token_to_id(EOS)

    pool = [document(rng) for _ in range(4096)]
    encoded = [e.ids for e in tokenizer.encode_batch(pool)]
    ids_rows: list[list[int]] = []
    text_rows: list[list[str]] = []
    k = 0
    for _ in range(records):
        ids: list[int] = []
        texts: list[str] = []
        while len(ids) < seq:
            # a new first sentence per document keeps every record's segments distinct
            doc = f"Document {k} of the corpus. " + pool[k % len(pool)]
            piece = tokenizer.encode(f"Document {k} of the corpus. ").ids + encoded[k % len(pool)]
            k += 1
            ids.extend([*piece, eos])
            texts.append(doc)
        ids_rows.append(ids)
        text_rows.append(texts)
    tokens_path = directory / "tokens.parquet"
    texts_path = directory / "texts.parquet"
    pq.write_table(pa.table({"input_ids": pa.array(ids_rows, pa.list_(pa.int32()))}), tokens_path)
    pq.write_table(pa.table({"texts": pa.array(text_rows, pa.list_(pa.string()))}), texts_path)
    return tokenizer_path, tokens_path, texts_path


def timed(directory: Path, name: str, path: Path, tokenizer: Path | None) -> float:
    ledger = Ledger.init(directory / f"{name}.duckdb", origin=f"bench.local/{name}")
    start = time.perf_counter()
    ledger.record_batch(id=name, files=[path], tokenizer=tokenizer)
    elapsed = time.perf_counter() - start
    for leftover in directory.glob(f"{name}.*"):
        if leftover.is_file():
            leftover.unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=8000)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        tokenizer, tokens, texts = build(directory, args.records, args.seq)
        tokens_mb = tokens.stat().st_size / 1e6
        texts_mb = texts.stat().st_size / 1e6
        print(
            f"{args.records} records of {args.seq}+ token ids: token-id Parquet {tokens_mb:.1f} MB,"
        )
        print(f"  the same documents as text Parquet {texts_mb:.1f} MB")
        token_times: list[float] = []
        text_times: list[float] = []
        for round_ in range(args.rounds):
            token_times.append(timed(directory, f"tok{round_}", tokens, tokenizer))
            text_times.append(timed(directory, f"txt{round_}", texts, None))
        tok_s, txt_s = statistics.median(token_times), statistics.median(text_times)
        print(
            f"token ids, --tokenizer: {tokens_mb / tok_s:7.1f} MB/s  "
            f"{args.records / tok_s:8.0f} records/s  ({tok_s:.2f} s)"
        )
        print(
            f"same data as text:      {texts_mb / txt_s:7.1f} MB/s  "
            f"{args.records / txt_s:8.0f} records/s  ({txt_s:.2f} s)"
        )
        print(f"ratio (records/s, token ids / text): {txt_s / tok_s:.2f}")


if __name__ == "__main__":
    main()
