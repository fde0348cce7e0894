"""Token id records (DESIGN.md "Tokenized records"): `record batch --tokenizer` decodes the token ids,
cuts packed sequences at special tokens, and compares each piece as a text.

A real byte-level BPE tokenizer is trained here on local text (nothing is downloaded); the CLI runs
as the installed `ledger` script against a DuckDB file on disk.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ledger import Ledger
from ledger.engine.kernel import JSON_LINES, KernelOptions, hash_batch
from ledger.engine.tokens import TokenizerFile, decoder
from ledger.errors import InputError, VerificationError
from ledger.ingest import pipeline
from ledger.spec.entries import batch_body, check_body
from ledger.spec.fingerprint import fingerprint_record_blobs
from ledger.spec.text import segments_of

ROOT = Path(__file__).resolve().parent.parent
LEDGER = str(Path(sys.executable).with_name("ledger"))

TEACHER_TEXT = (
    "The committee concluded that the reservoir's spillway gates must be inspected every spring, "
    "because silt carried down by the April floods jams the lower hinges."
)
BEFORE = "A field guide to alpine mosses: cushions of green survive the winter under snow and wake."
AFTER = (
    "Recipe notes for sourdough: feed the starter twice, fold the dough often, bake it very hot."
)
EOS = "<|endoftext|>"


def train_tokenizer(path: Path) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([TEACHER_TEXT, BEFORE, AFTER] * 3, trainer)
    tokenizer.save(str(path))
    return tokenizer


@dataclass
class Shop:
    root: Path
    tokenizer: Tokenizer
    tokenizer_path: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "LEDGER_DB": str(self.root / "ledger.duckdb"),
            "LEDGER_LOCK_TIMEOUT": "5",
            "COLUMNS": "200",
            "PATH": str(Path(sys.executable).parent),
        }
        return subprocess.run(
            [LEDGER, *args],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            cwd=self.root,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stderr, result.stdout[-2000:])
        return result.stdout

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)

    def packed(self) -> list[int]:
        """Three documents in one sequence, the evaluation output in the middle."""
        eos = self.tokenizer.token_to_id(EOS)
        return [*self.ids(BEFORE), eos, *self.ids(TEACHER_TEXT), eos, *self.ids(AFTER), eos]

    def rows(self) -> list[dict[str, Any]]:
        return [{"input_ids": self.packed()}, {"input_ids": self.ids(BEFORE)}]

    def jsonl(self, name: str, rows: list[dict[str, Any]]) -> Path:
        path = self.root / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    def parquet(self, name: str, rows: list[dict[str, Any]], kind: pa.DataType) -> Path:
        path = self.root / name
        ids = pa.array([r["input_ids"] for r in rows], pa.list_(kind))
        pq.write_table(pa.table({"input_ids": ids}), path)
        return path

    def size(self) -> int:
        return int(json.loads(self.ok("status", "--json"))["size"])


@pytest.fixture()
def shop(tmp_path: Path) -> Shop:
    tokenizer_path = tmp_path / "tokenizer.json"
    s = Shop(tmp_path, train_tokenizer(tokenizer_path), tokenizer_path)
    s.ok("init", "--origin", "example.org/tokens")
    response = {
        "id": "chatcmpl-eval-1", "object": "chat.completion", "created": 1764979200,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": TEACHER_TEXT}}],
    }  # fmt: skip
    (tmp_path / "response.json").write_text(json.dumps(response), encoding="utf-8")
    s.ok("record", "call", "--provider", "openai", "--purpose", "evaluation",
         "--response", "response.json")  # fmt: skip
    return s


def audit(shop: Shop, batch: str) -> tuple[int, dict[str, Any]]:
    weights = shop.root / f"{batch}.bin"
    weights.write_bytes(batch.encode())
    shop.ok("record", "checkpoint", "--id", f"{batch}/k", "--weights", str(weights),
            "--batch", batch)  # fmt: skip
    result = shop.run("audit", f"{batch}/k", "--json")
    return result.returncode, json.loads(result.stdout)


@pytest.mark.parametrize("fmt", ["jsonl", "int32", "int64"])
def test_an_evaluation_output_packed_between_documents_is_an_exact_finding(
    shop: Shop, fmt: str
) -> None:
    rows = shop.rows()
    if fmt == "jsonl":
        path = shop.jsonl("train.jsonl", rows)
    else:
        path = shop.parquet("train.parquet", rows, getattr(pa, fmt)())
    out = json.loads(shop.ok("record", "batch", str(path), "--id", "tok",
                             "--tokenizer", "tokenizer.json", "--json"))  # fmt: skip
    assert out["batches"][0]["records_without_text"] == 0
    code, report = audit(shop, "tok")
    assert code == 1 and report["verdict"] == "contaminated"
    assert [f["type"] for f in report["findings"]] == ["exact"]
    assert report["findings"][0]["record"] == 0  # the packed sequence, not the lone document

    body = json.loads(shop.ok("show", str(out["batches"][0]["index"]), "--json"))["body"]
    assert body["tokenizer"] == hashlib.sha256(shop.tokenizer_path.read_bytes()).hexdigest()
    assert body["token_field"] == "input_ids"
    schema = json.loads((ROOT / "schemas" / "entry-batch.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(body, schema)


@pytest.mark.parametrize("value", ["ABC", "0" * 63, 7, None])
def test_check_body_wants_a_hex_sha256_tokenizer(value: object) -> None:
    body = batch_body(id="b", count=1, records_root="0" * 64, tokenizer="a" * 64)
    check_body(body, 5)
    assert body["tokenizer"] == "a" * 64
    assert "tokenizer" not in batch_body(id="b", count=1, records_root="0" * 64)
    if value is None:
        return
    with pytest.raises(VerificationError, match="tokenizer must be hex sha256"):
        check_body({**body, "tokenizer": value}, 5)


def test_token_field_is_signed_only_beside_a_tokenizer() -> None:
    body = batch_body(
        id="b", count=1, records_root="0" * 64, tokenizer="a" * 64, token_field="x.ids"
    )
    check_body(body, 5)
    assert body["token_field"] == "x.ids"
    bare = batch_body(id="b", count=1, records_root="0" * 64, token_field="x.ids")
    assert "token_field" not in bare
    for bad in (
        {**body, "token_field": ""},
        {**body, "token_field": 3},
        {**bare, "token_field": "x"},
    ):
        with pytest.raises(VerificationError, match="token_field must be a non-empty string"):
            check_body(bad, 5)


def test_the_same_ids_without_a_tokenizer_are_inconclusive(shop: Shop) -> None:
    path = shop.jsonl("train.jsonl", shop.rows())
    out = json.loads(shop.ok("record", "batch", str(path), "--id", "ids", "--json"))
    assert out["batches"][0]["records_without_text"] == 2
    code, report = audit(shop, "ids")
    assert code == 3 and report["verdict"] == "inconclusive"
    assert report["findings"] == []
    assert report["coverage"]["records_without_text"] == 2
    body = json.loads(shop.ok("show", str(out["batches"][0]["index"]), "--json"))["body"]
    assert "tokenizer" not in body


def test_the_digest_is_the_records_as_stored(shop: Shop) -> None:
    """JSONL and Parquet of the same ids have the same records root; decoding adds segments only."""
    rows = shop.rows()
    shop.ok("record", "batch", str(shop.jsonl("a.jsonl", rows)), "--tokenizer", "tokenizer.json")
    shop.ok("record", "batch", str(shop.parquet("b.parquet", rows, pa.int64())),
            "--tokenizer", "tokenizer.json")  # fmt: skip
    shop.ok("record", "batch", str(shop.jsonl("c.jsonl", rows)))
    ledger = Ledger(shop.root / "ledger.duckdb")
    roots = {b["id"]: b["records_root"] for b in (ledger.entry(i).body for i in (3, 4, 5))}
    assert roots["a"] == roots["b"]
    assert roots["a"] != roots["c"]  # the leaves of c carry no segments


def test_the_kernel_cuts_at_special_tokens_and_decodes_each_piece(shop: Shop) -> None:
    spec = TokenizerFile.open(shop.tokenizer_path)
    line = json.dumps({"input_ids": shop.packed(), "meta": {"source": "web"}}).encode()
    texts_line = json.dumps({"t": [BEFORE, TEACHER_TEXT, AFTER], "meta": {"source": "web"}})
    options = KernelOptions(tokenizer=spec, keep_texts=True)
    tokens = hash_batch(pa.table({"line": pa.array([line], pa.binary())}), options, JSON_LINES)
    texts = hash_batch(
        pa.table({"line": pa.array([texts_line.encode()], pa.binary())}), options, JSON_LINES
    )
    segments = sorted(segments_of([BEFORE, TEACHER_TEXT, AFTER], 32))
    assert tokens.column("segments").to_pylist() == [segments]
    assert texts.column("segments").to_pylist() == [segments]
    # the digest is of the ids, as stored
    assert tokens.column("digest").to_pylist() != texts.column("digest").to_pylist()


def test_nested_token_fields_and_the_library(shop: Shop) -> None:
    rows = [{"sample": [{"tokens": [shop.packed()]}, {"tokens": []}]}, {"other": 1}]
    ledger = Ledger(shop.root / "ledger.duckdb")
    result = ledger.record_batch(
        rows, id="nested", tokenizer=shop.tokenizer_path, token_field="sample.tokens"
    )
    assert result.entries[0].without_text == 1
    body = ledger.entry(result.entries[0].index).body
    assert body["token_field"] == "sample.tokens"
    code, report = audit(shop, "nested")
    assert code == 1 and [f["type"] for f in report["findings"]] == ["exact"]
    with pytest.raises(InputError, match="missing in every one of the 2 records"):
        ledger.record_batch(rows, id="nested2", tokenizer=shop.tokenizer_path)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_bad_token_input_is_one_error_and_nothing_appended(shop: Shop) -> None:
    size = shop.size()
    good = {"input_ids": shop.ids(BEFORE)}
    cases: list[tuple[Path, str]] = [
        (shop.jsonl("missing.jsonl", [{"text_ids": [1, 2]}, {"x": "y"}]),
         "missing.jsonl: token field 'input_ids' is missing in every one of the 2 records"),
        (shop.jsonl("floats.jsonl", [good, good, {"input_ids": [5, 1.5]}]),
         "floats.jsonl:3: token field 'input_ids': expected a list of integer token ids, "
         "found a float 1.5"),
        (shop.jsonl("strings.jsonl", [good, {"input_ids": "hello"}]),
         "strings.jsonl:2: token field 'input_ids': expected a list of integer token ids, "
         "found a str"),
        (shop.jsonl("vocab.jsonl", [{"input_ids": [3, 10**6]}]),
         "vocab.jsonl:1: token id 1000000 is outside the vocabulary of tokenizer.json"),
        (shop.parquet("vocab.parquet", [good, good, {"input_ids": [7, -1]}], pa.int64()),
         "vocab.parquet: row 3: token id -1 is outside the vocabulary of tokenizer.json"),
    ]  # fmt: skip
    for path, message in cases:
        result = shop.run("record", "batch", str(path), "--tokenizer", "tokenizer.json")
        assert result.returncode == 4, (path, result.stderr)
        assert message in error_line(result)
    broken = shop.root / "broken.json"
    broken.write_text('{"model": {"type": "BPE"', encoding="utf-8")
    data = shop.jsonl("ok.jsonl", [good])
    for tokenizer, message in [
        (broken, "broken.json: not a Hugging Face tokenizer.json"),
        (shop.root / "absent.json", "absent.json: cannot read the tokenizer"),
    ]:
        result = shop.run("record", "batch", str(data), "--tokenizer", str(tokenizer))
        assert result.returncode == 4
        assert message in error_line(result)
    result = shop.run("record", "batch", str(data), "--token-field", "ids")
    assert result.returncode == 2 and "only with a tokenizer" in error_line(result)
    assert shop.size() == size


def test_tokenized_files_on_the_worker_pool(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool's workers decode (each loading the tokenizer itself) as the inline path does."""
    spec = TokenizerFile.open(shop.tokenizer_path)
    rows = [shop.rows()[i % 2] for i in range(3000)]
    files = [shop.jsonl("many.jsonl", rows), shop.parquet("many.parquet", rows, pa.int32())]

    def run(workers: int) -> list[tuple[bytes, bytes, int]]:
        decoder.cache_clear()  # forked workers load the tokenizer themselves
        return [
            (c.digests, c.segments, c.token_records)
            for c in pipeline.iter_record_columns(
                files, fingerprint_record_blobs, workers=workers, tokenizer=spec
            )
        ]

    inline = run(1)
    monkeypatch.setattr(pipeline, "POOL_MIN_BYTES", 0)
    assert run(2) == inline
    assert sum(count for _, _, count in inline) == 6000
    assert all(segments for _, segments, _ in inline)
    bad = shop.jsonl("bad.jsonl", [*rows[:2500], {"input_ids": [1, True]}])
    decoder.cache_clear()
    with pytest.raises(InputError, match=r"bad.jsonl:2501: .* found a boolean True"):
        list(
            pipeline.iter_record_columns([bad], fingerprint_record_blobs, workers=2, tokenizer=spec)
        )


def test_an_arrow_table_of_ids_decodes_as_its_parquet_file(shop: Shop) -> None:
    """`record_batch(table, tokenizer=...)`: the in-memory Arrow path decodes like the file path (same
    root, same texts), and a table with no token ids under the field is refused."""
    rows = shop.rows()
    shop.ok("record", "batch", str(shop.parquet("b.parquet", rows, pa.int32())),
            "--tokenizer", "tokenizer.json")  # fmt: skip
    ledger = Ledger.open(shop.root / "ledger.duckdb")
    table = pa.table({"input_ids": pa.array([r["input_ids"] for r in rows], pa.list_(pa.int32()))})
    result = ledger.record_batch(table, id="t", tokenizer=shop.tokenizer_path)
    file_root = next(e.body for e in ledger.log(kinds=["batch"]) if e.body["id"] == "b")
    assert result.entries[0].records_root == file_root["records_root"]
    assert result.entries[0].without_text == 0
    with pytest.raises(InputError, match="token"):
        ledger.record_batch(
            pa.table({"text": ["no ids here"]}), id="u", tokenizer=shop.tokenizer_path
        )
