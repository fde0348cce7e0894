"""Bad input: every reader is fuzzed, and every way a user can hand the CLI something wrong is tried.

Readers (JSONL, Parquet and text records; OpenAI batch, chat and generic call logs; tree heads, signed
notes, verifier keys, DSSE envelopes, key files; suspects, policies and proof bundles) get hypothesis
input that mixes plausible structure with wrong types, broken encodings and truncation: whatever they
raise must be a `LedgerError`, with a one-line message. Through the installed `ledger` command, each bad
input must give exit 4 (2 for usage errors), one line `error: ...` naming the file (and line where there
is one), no traceback, and a ledger whose tree head is unchanged.
"""

from __future__ import annotations

import base64
import decimal
import functools
import gzip
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ledger import Ledger
from ledger.audit import inputs
from ledger.bundle import verify as bundle
from ledger.errors import LedgerError
from ledger.ingest import calls as ingest_calls
from ledger.ingest import pipeline as ingest_records
from ledger.recording import calls
from ledger.spec import fingerprint

sys.path.insert(0, str(Path(__file__).parent))
from hardening import CliPool, Result, one_error_line

from ledger.log import keyfiles
from ledger.spec import digest, envelope, keys
from ledger.spec import note as note_spec

FUZZ = settings(
    max_examples=int(os.environ.get("LEDGER_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def only_ledger_errors(work: Callable[[], object], *names: str) -> LedgerError | None:
    """Run `work`; a LedgerError is returned (and must be one short line naming `names`), anything else escapes."""
    try:
        work()
    except LedgerError as exc:
        message = str(exc)
        assert message.strip() and len(message) < 2000, repr(
            message[:300]
        )  # the CLI folds it onto one line
        for name in names:
            assert name in message, (name, message)
        return exc
    return None


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --- JSON-ish building blocks ------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
long_texts = st.text(min_size=0, max_size=120) | st.sampled_from(
    [
        "The assistant replied with a long enough answer to count as a segment.",
        "\n\n".join(["paragraph one " * 4] * 3),
    ]
)


def plausible(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually the well-typed value, sometimes any JSON value at all."""
    return st.one_of(strategy, strategy, json_values)


NASTY_LINES = [
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": -Infinity}',
    b'{"a": 1e999}',
    b'{"a": -1e999}',
    b'{"a": "\\ud800"}',
    b'{"\\udfff": "x"}',
    b'{"a": 1, "a": 2}',
    b"{" * 5000,
    b"[" * 50000 + b"]" * 50000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b"\xff\xfe",
    b"\x00",
    b" \t ",
    b'{"a": "\\u0000"}',
    b"{'a': 1}",
    b'{"a": 01}',
    b'{"a": .5}',
    b'{"a": 123456789012345678901234567890}',
    b'{"a": -0}',
    b'{"a": 1.0e-400}',
    b'"just a string"',
    b"[1, 2]",
    b"null",
    b"\xef\xbb\xbf{}",
    b'{"t": "caf\xc3"}',
    b'{"t": "\xed\xa0\x80"}',
    b'{"messages": [{"content": "' + b"long text with words " * 4 + b'"}]}',
]
line_bytes = st.one_of(
    st.dictionaries(st.text(max_size=8), json_values, max_size=5).map(
        lambda v: json.dumps(v).encode()
    ),
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    st.sampled_from(NASTY_LINES),
)


@st.composite
def line_files(draw: st.DrawFn, lines: st.SearchStrategy[bytes] = line_bytes) -> bytes:
    items = draw(st.lists(lines, max_size=6))
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = newline.join(items) + (newline if draw(st.booleans()) else b"")
    if draw(st.booleans()) and data:  # truncated anywhere, as a copy cut short would be
        data = data[: draw(st.integers(0, len(data)))]
    return (b"\xef\xbb\xbf" if draw(st.integers(0, 9)) == 0 else b"") + data


FINGERPRINT = functools.partial(fingerprint.fingerprint_records, params=fingerprint.DEFAULT_PARAMS)


def consume_records(path: Path) -> None:
    """Every way recording reads a records file: plain records, hashes, and hashes with fingerprints."""
    for _ in ingest_records.iter_records(path):
        pass
    for _ in ingest_records.iter_record_hashes([path], workers=1):
        pass
    for _ in ingest_records.iter_fingerprinted_record_hashes([path], FINGERPRINT, workers=1):
        pass


# --- record readers ----------------------------------------------------------------------------------


@FUZZ
@given(data=line_files(), suffix=st.sampled_from([".jsonl", ".txt"]))
@example(data=b"\xef\xbb\xbf\n{}", suffix=".jsonl")  # a first block holding no record
def test_fuzz_jsonl_and_text_records(scratch: Path, data: bytes, suffix: str) -> None:
    path = scratch / f"records{suffix}"
    path.write_bytes(data)
    only_ledger_errors(lambda: consume_records(path), path.name)


def _column(draw: st.DrawFn, rows: int) -> pa.Array:
    """One Parquet column of a randomly chosen Arrow type, including types with no JSON form."""

    def values(strategy: st.SearchStrategy[Any], nulls: bool = True) -> list[Any]:
        item = st.one_of(st.none(), strategy) if nulls else strategy
        return draw(st.lists(item, min_size=rows, max_size=rows))

    kind = draw(
        st.sampled_from(
            [
                "int64",
                "uint64",
                "int8",
                "float64",
                "float32",
                "float16",
                "string",
                "large_string",
                "binary",
                "bool",
                "null",
                "timestamp",
                "date32",
                "date64",
                "time32",
                "time64",
                "decimal",
                "duration",
                "list",
                "large_list",
                "struct",
                "map_str",
                "map_int",
                "dictionary",
                "fixed_binary",
                "nested",
            ]
        )
    )
    if kind == "int64":
        return pa.array(values(st.integers(-(2**63), 2**63 - 1)), pa.int64())
    if kind == "uint64":
        return pa.array(values(st.integers(0, 2**64 - 1)), pa.uint64())
    if kind == "int8":
        return pa.array(values(st.integers(-128, 127)), pa.int8())
    if kind == "float64":
        return pa.array(values(st.floats()), pa.float64())
    if kind == "float32":
        return pa.array(values(st.floats(width=32)), pa.float32())
    if kind == "float16":
        return pa.array(
            np.array(values(st.floats(width=16), nulls=False), dtype=np.float16), pa.float16()
        )
    if kind in ("string", "large_string"):
        return pa.array(values(long_texts), pa.string() if kind == "string" else pa.large_string())
    if kind == "binary":
        return pa.array(values(st.binary(max_size=8)), pa.binary())
    if kind == "fixed_binary":
        return pa.array(values(st.binary(min_size=4, max_size=4)), pa.binary(4))
    if kind == "bool":
        return pa.array(values(st.booleans()), pa.bool_())
    if kind == "null":
        return pa.nulls(rows)
    if kind == "timestamp":
        unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
        tz = draw(st.sampled_from([None, "UTC", "Europe/Paris", "+05:30"]))
        bound = 2**52 if unit == "s" else 2**62  # Parquet keeps seconds as milliseconds
        return pa.array(values(st.integers(-bound, bound)), pa.timestamp(unit, tz))
    if kind == "date32":
        return pa.array(values(st.integers(-(2**31), 2**31 - 1)), pa.int32()).cast(pa.date32())
    if kind == "date64":
        return pa.array(values(st.integers(-(2**62), 2**62)), pa.int64()).cast(pa.date64())
    if kind == "time32":
        unit = draw(st.sampled_from(["s", "ms"]))
        return pa.array(
            values(st.integers(0, 86_399 * (1000 if unit == "ms" else 1))), pa.int32()
        ).cast(pa.time32(unit))
    if kind == "time64":
        unit = draw(st.sampled_from(["us", "ns"]))
        return pa.array(
            values(st.integers(0, 86_399 * (10**6 if unit == "us" else 10**9))), pa.int64()
        ).cast(pa.time64(unit))
    if kind == "decimal":
        precision = draw(st.integers(1, 38))
        scale = draw(st.integers(0, precision))
        digits = st.integers(-(10**precision) + 1, 10**precision - 1)
        # Decimal(str) is exact; scaleb would round to the 28-digit context and change the exponent
        return pa.array(
            [None if v is None else decimal.Decimal(f"{v}E-{scale}") for v in values(digits)],
            pa.decimal128(precision, scale),
        )
    if kind == "duration":
        return pa.array(values(st.integers(-(2**40), 2**40)), pa.duration("ms"))
    if kind in ("list", "large_list"):
        inner = st.lists(st.one_of(st.none(), st.integers(-(2**60), 2**60)), max_size=3)
        return pa.array(
            values(inner), pa.list_(pa.int64()) if kind == "list" else pa.large_list(pa.int64())
        )
    if kind == "struct":
        fields = st.fixed_dictionaries(
            {"a": st.one_of(st.none(), st.integers(-5, 5)), "b": st.one_of(st.none(), long_texts)}
        )
        return pa.array(values(fields), pa.struct([("a", pa.int32()), ("b", pa.string())]))
    if kind == "map_str":
        return pa.array(
            values(st.lists(st.tuples(st.text(max_size=4), st.integers(-5, 5)), max_size=3)),
            pa.map_(pa.string(), pa.int64()),
        )
    if kind == "map_int":
        return pa.array(
            values(st.lists(st.tuples(st.integers(-5, 5), st.text(max_size=4)), max_size=3)),
            pa.map_(pa.int64(), pa.string()),
        )
    if kind == "dictionary":
        return pa.array(
            values(st.sampled_from(["red", "green", "blue"])), pa.string()
        ).dictionary_encode()
    item = st.fixed_dictionaries(
        {
            "text": st.one_of(st.none(), long_texts),
            "tags": st.lists(st.text(max_size=5), max_size=2),
        }
    )
    return pa.array(
        values(st.lists(item, max_size=2)),
        pa.list_(pa.struct([("text", pa.string()), ("tags", pa.list_(pa.string()))])),
    )


@st.composite
def parquet_tables(draw: st.DrawFn) -> pa.Table:
    rows = draw(st.integers(0, 4))
    names = draw(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=3, unique=True))
    return pa.table({name: _column(draw, rows) for name in names})


@FUZZ
@given(
    table=parquet_tables(),
    damage=st.one_of(st.none(), st.tuples(st.floats(0, 1), st.integers(0, 255))),
)
def test_fuzz_parquet_records(
    scratch: Path, table: pa.Table, damage: tuple[float, int] | None
) -> None:
    path = scratch / "records.parquet"
    pq.write_table(table, path)
    if damage is not None:  # flip one byte, or cut the file short
        raw = bytearray(path.read_bytes())
        at = int(damage[0] * (len(raw) - 1))
        if damage[1] % 2:
            raw[at] ^= damage[1] | 1
        else:
            del raw[at:]
        path.write_bytes(bytes(raw))
    only_ledger_errors(lambda: consume_records(path), path.name)


# --- call log readers --------------------------------------------------------------------------------

messages = st.fixed_dictionaries(
    {"role": plausible(st.sampled_from(["assistant", "user"])), "content": plausible(long_texts)},
    optional={
        "tool_calls": plausible(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "type": st.just("function"),
                        "function": st.fixed_dictionaries(
                            {"name": st.just("f"), "arguments": plausible(long_texts)}
                        ),
                    }
                ),
                max_size=2,
            )
        )
    },
)
choices = st.fixed_dictionaries(
    {"index": plausible(st.integers(0, 3))},
    optional={
        "message": plausible(messages),
        "text": plausible(long_texts),
        "delta": plausible(messages),
        "finish_reason": plausible(st.just("stop")),
    },
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "id": plausible(st.text(min_size=1, max_size=12)),
        "object": plausible(
            st.sampled_from(
                ["chat.completion", "text_completion", "response", "chat.completion.chunk", "odd"]
            )
        ),
        "model": plausible(st.sampled_from(["gpt-4o", "m"])),
        "choices": plausible(st.lists(choices, max_size=3)),
        "output": plausible(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "type": plausible(st.just("message")),
                        "content": plausible(
                            st.lists(
                                st.fixed_dictionaries(
                                    {
                                        "type": plausible(st.just("output_text")),
                                        "text": plausible(long_texts),
                                    }
                                ),
                                max_size=2,
                            )
                        ),
                    }
                ),
                max_size=2,
            )
        ),
        "usage": plausible(st.fixed_dictionaries({"total_tokens": st.integers(0, 99)})),
        "error": plausible(st.fixed_dictionaries({"message": st.text(max_size=10)})),
    },
)
requests_ = st.fixed_dictionaries(
    {"model": plausible(st.just("gpt-4o")), "messages": plausible(st.lists(messages, max_size=2))}
)
batch_lines = st.fixed_dictionaries(
    {},
    optional={
        "id": plausible(st.text(max_size=8)),
        "custom_id": plausible(st.sampled_from(["req-1", "req-2", "req-3"])),
        "response": plausible(
            st.fixed_dictionaries(
                {
                    "status_code": plausible(st.sampled_from([200, 200, 400, 500])),
                    "body": plausible(bodies),
                },
                optional={"request_id": st.text(max_size=5)},
            )
        ),
        "error": st.one_of(st.none(), json_values),
    },
)
log_lines = st.fixed_dictionaries(
    {},
    optional={
        "provider": plausible(st.sampled_from(["openai", "acme", ""])),
        "model": plausible(st.just("m-1")),
        "endpoint": plausible(st.just("/v1/chat/completions")),
        "request": plausible(requests_),
        "response": st.one_of(plausible(bodies), st.lists(plausible(bodies), max_size=3)),
        "stream": plausible(st.booleans()),
        "complete": plausible(st.booleans()),
        "external_id": plausible(st.text(max_size=8)),
        "account": plausible(st.text(max_size=8)),
        "purpose": plausible(st.sampled_from(["evaluation", "nonsense"])),
        "status_code": plausible(st.sampled_from([200, 404])),
        "error": st.one_of(st.none(), json_values),
    },
)
input_lines = st.fixed_dictionaries(
    {},
    optional={
        "custom_id": plausible(st.sampled_from(["req-1", "req-2"])),
        "method": plausible(st.just("POST")),
        "url": plausible(st.just("/v1/chat/completions")),
        "body": plausible(requests_),
        "params": plausible(requests_),  # Anthropic Message Batches
        "key": plausible(st.sampled_from(["req-1", "req-2"])),  # Gemini
        "request": plausible(requests_),
    },
)


def as_lines(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        strategy.map(lambda v: json.dumps(v).encode()),
        strategy.map(lambda v: json.dumps(v).encode()),
        line_bytes,
    )


def consume_calls(path: Path, fmt: str, requests_path: Path | None) -> None:
    """Read a call log and hash every call exactly as `ledger import calls` does before it appends."""
    prepared = []
    for item in ingest_calls.iter_calls(path, fmt, requests_path):
        if isinstance(item, ingest_calls.FailedCall):
            continue
        try:
            prepared.append(
                calls.prepare_call(calls.call_input(item, None, "evaluation", None), 32)
            )
        except LedgerError as exc:  # import_calls re-raises with the location in front
            raise type(exc)(f"{item.location}: {exc}") from exc
    calls.with_fingerprints(prepared, fingerprint.DEFAULT_PARAMS)


@FUZZ
@given(
    fmt=st.sampled_from(ingest_calls.CALL_FORMATS),
    batch=line_files(as_lines(batch_lines)),
    logged=line_files(as_lines(log_lines)),
    inputs=st.one_of(st.none(), line_files(as_lines(input_lines))),
)
def test_fuzz_call_logs(
    scratch: Path, fmt: str, batch: bytes, logged: bytes, inputs: bytes | None
) -> None:
    path = scratch / "calls.jsonl"
    path.write_bytes(batch if fmt == "openai-batch" else logged)
    requests_path = None
    if inputs is not None and fmt.endswith("-batch"):
        requests_path = scratch / "inputs.jsonl"
        requests_path.write_bytes(inputs)
    only_ledger_errors(lambda: consume_calls(path, fmt, requests_path))


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        bodies.map(lambda v: json.dumps(v).encode()),
    )
)
def test_fuzz_single_json_files(scratch: Path, data: bytes) -> None:
    """`ledger record call --request/--response` files."""
    path = scratch / "response.json"
    path.write_bytes(data)

    def work() -> None:
        body = ingest_calls.read_json_file(path)
        prepared = calls.prepare_call(
            calls.CallInput("openai", "evaluation", None, body, stream=isinstance(body, list)),
            32,
        )
        calls.with_fingerprints([prepared], fingerprint.DEFAULT_PARAMS)

    only_ledger_errors(work)


# --- keys, notes and envelopes -----------------------------------------------------------------------

SEED_KEY = keys.SigningKey.from_seed(bytes(range(32)))
ORIGIN = "fuzz.example/log"
NOTE = note_spec.sign_tree_head(note_spec.TreeHead(ORIGIN, 42, digest.sha256(b"root")), SEED_KEY)
VKEY = note_spec.vkey(ORIGIN, SEED_KEY.public)
LEAF = envelope.sign_entry(
    {"kind": "revoke", "v": 1, "time": "2026-01-01T00:00:00Z", "keyid": "ab" * 32, "reason": "x"},
    SEED_KEY,
)


@st.composite
def mutated(draw: st.DrawFn, original: str) -> str:
    """A valid text with a few characters inserted, deleted or replaced, or something else entirely."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.text(max_size=300))
    text = original
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(
            st.text(max_size=3) | st.sampled_from(["\n", " ", "+", "—", "\x00", "=", "\ud7ff"])
        )
        if op == "insert":
            text = text[:at] + piece + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + len(piece) + 1 :]
        else:
            text = text[:at] + piece + text[at + len(piece) :]
    return text


@FUZZ
@given(note=mutated(NOTE), vkey=mutated(VKEY))
def test_fuzz_tree_heads_notes_and_vkeys(note: str, vkey: str) -> None:
    only_ledger_errors(lambda: note_spec.open_signed_note(note))
    only_ledger_errors(lambda: note_spec.parse_tree_head(note.split("\n\n")[0] + "\n"))
    only_ledger_errors(lambda: note_spec.parse_vkey(vkey))
    if only_ledger_errors(lambda: note_spec.verify_tree_head(note, VKEY)) is None:
        assert (
            note_spec.open_signed_note(note)[0] == note_spec.open_signed_note(NOTE)[0]
        )  # accepted only if intact
    only_ledger_errors(lambda: note_spec.verify_note(NOTE, vkey))


@FUZZ
@given(text=mutated(LEAF.decode()), raw=st.binary(max_size=120))
def test_fuzz_envelopes(text: str, raw: bytes) -> None:
    for leaf in (text.encode("utf-8", "surrogatepass"), raw):
        parsed: list[envelope.Envelope] = []

        def parse(leaf: bytes = leaf, parsed: list[envelope.Envelope] = parsed) -> None:
            parsed.append(envelope.parse_envelope(leaf, index=3))
            parsed[0].body()

        if only_ledger_errors(parse) is None:
            only_ledger_errors(
                functools.partial(envelope.verify_envelope, parsed[0], SEED_KEY.public, index=3)
            )


def _pem(passphrase: str | None, directory: Path) -> bytes:
    path = directory / f"seed-{passphrase or 'plain'}.pem"
    if not path.exists():
        keyfiles.write_key_file(path, SEED_KEY, passphrase)
    return path.read_bytes()


@FUZZ
@given(
    choice=st.sampled_from([None, "correct horse"]),
    edit=st.tuples(st.floats(0, 1), st.binary(max_size=3)),
    given_passphrase=st.sampled_from([None, "correct horse", "wrong"]),
    garbage=st.booleans(),
)
def test_fuzz_key_files(
    scratch: Path,
    choice: str | None,
    edit: tuple[float, bytes],
    given_passphrase: str | None,
    garbage: bool,
) -> None:
    original = _pem(choice, scratch)
    at = int(edit[0] * len(original))
    data = edit[1] * 40 if garbage else original[:at] + edit[1] + original[at + len(edit[1]) :]
    path = scratch / "fuzzed.pem"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    error = only_ledger_errors(lambda: keyfiles.load_key_file(path, given_passphrase), path.name)
    # An edit inside the base64 can give another valid Ed25519 key (any 32 bytes are one): the ledger
    # refuses it by keyid (see test_damaged_log_key_is_refused_by_keyid); here, only no crash and no leak.
    if error is not None:
        assert "correct horse" not in str(error) and "PRIVATE KEY" not in str(error)


# --- audit inputs and proof bundles ------------------------------------------------------------------


@FUZZ
@given(
    data=line_files(
        as_lines(
            st.one_of(
                json_values,
                st.fixed_dictionaries({"text": plausible(long_texts)}),
                st.fixed_dictionaries({"sha256": plausible(st.text(max_size=64))}),
            )
        )
    ),
    suffix=st.sampled_from([".jsonl", ".txt"]),
)
def test_fuzz_suspects_and_policies(scratch: Path, data: bytes, suffix: str) -> None:
    path = scratch / f"suspects{suffix}"
    path.write_bytes(data)
    only_ledger_errors(lambda: inputs.read_suspects(path), path.name)
    policy = scratch / "policy.toml"
    policy.write_bytes(data)
    only_ledger_errors(lambda: inputs.read_policy(policy), policy.name)
    only_ledger_errors(lambda: bundle.load_bundle(path), path.name)


@pytest.fixture(scope="module")
def real_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """A contaminated checkpoint's bundle: a call whose output was copied into a training record."""
    from ledger.audit.run import audit
    from ledger.bundle.build import build_bundle

    base = tmp_path_factory.mktemp("bundle")
    lg = Ledger.init(base / "l.duckdb", origin="fuzz.example/bundle")
    answer = "The capital of France is Paris, a city on the Seine with many museums."
    call = lg.record_call(
        provider="openai",
        purpose="evaluation",
        request={"model": "gpt-4o", "messages": []},
        response={
            "id": "chatcmpl-b1",
            "object": "chat.completion",
            "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}],
        },
    )
    lg.record_batch(
        [
            {"text": answer},
            {"text": "An unrelated record about the weather in the mountains today."},
        ],
        id="b",
    )
    (base / "w.bin").write_bytes(b"weights")
    lg.record_checkpoint(id="ck", weights=[base / "w.bin"], batches=["b"])
    report = audit(lg, "ck")
    assert report.verdict == "contaminated" and call.index == 2
    return build_bundle(lg, report), lg.export_key("log").vkey(lg.origin)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@FUZZ
@given(data=st.data())
def test_fuzz_bundles(real_bundle: tuple[dict[str, Any], str], data: st.DataObject) -> None:
    """Any part of a real bundle replaced by any JSON value, or removed: a report or a LedgerError, never a crash."""
    original, vkey = real_bundle
    document = json.loads(json.dumps(original))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(document) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(json_values)
    assume(document != original)
    result: list[bundle.BundleReport] = []
    only_ledger_errors(lambda: result.append(bundle.verify_bundle(document, vkey)))
    if (
        result and result[0].ok
    ):  # an accepted change may only touch what the bundle does not vouch for
        assert {
            k: document.get(k) for k in ("tree_head", "entries", "records", "verdict", "findings")
        } == {
            k: original.get(k) for k in ("tree_head", "entries", "records", "verdict", "findings")
        }


# --- through the CLI ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad invocation: `{db}` in args is the case's own copy of the shared ledger (or `db` given)."""

    name: str
    args: tuple[str, ...]
    names: tuple[str, ...] = ()  # what the one-line error must mention: the file, the line, the id
    code: int = 4
    env: dict[str, str] = field(default_factory=dict)
    db: str | None = None  # a special database file instead of a copy of the ledger
    prepare: Callable[[Path], None] | None = None  # runs in the case's directory before the command


@dataclass(frozen=True)
class Outcome:
    case: Case
    proc: Result
    unchanged: bool  # the ledger file (when there is one) is as it was


def head_note(db: Path) -> str | None:
    try:
        return Ledger(db).head().note
    except LedgerError:
        return None


def unchanged(pristine: Path, db: Path) -> bool:
    """The same bytes as the untouched copy (a failed command never writes), else the same tree head."""
    if not db.with_name(db.name + ".wal").exists() and db.read_bytes() == pristine.read_bytes():
        return True
    return head_note(db) == head_note(pristine)


def run_case(cli: CliPool, base: Path, work: Path, case: Case) -> Outcome:
    """Run one case on a private copy of its ledger (file and keys); inputs are shared, read-only, in `base`."""
    here = work / case.name
    here.mkdir()
    name = case.db or "ledger.duckdb"
    if (base / name).is_file():
        shutil.copyfile(base / name, here / name)
    elif (base / name).is_dir():
        shutil.copytree(base / name, here / name)
    keys_dir = base / (Path(name).stem + ".keys")
    if keys_dir.is_dir():
        shutil.copytree(keys_dir, here / keys_dir.name)
    if case.prepare is not None:
        case.prepare(here)
    db = here / name
    args = [a.replace("{db}", str(db)) for a in case.args]
    proc = cli.run(args, base, case.env)
    same = unchanged(base / name, db) if case.db is None or case.db == "locked.duckdb" else True
    return Outcome(case, proc, same)


def problems_of(outcome: Outcome) -> list[str]:
    case, proc = outcome.case, outcome.proc
    found: list[str] = []
    if proc.returncode != case.code:
        found.append(f"exit {proc.returncode}, expected {case.code}")
    shape = one_error_line(proc)
    if shape is not None:
        found.append(shape)
    if proc.stdout.strip():
        found.append(f"stdout not empty: {proc.stdout[:100]!r}")
    if len(proc.stderr) > 600:
        found.append(f"error is {len(proc.stderr)} characters long")
    found += [f"the error does not name {name!r}" for name in case.names if name not in proc.stderr]
    if not outcome.unchanged:
        found.append("the ledger changed")
    return [f"{case.name}: {p}: {proc.stderr.strip()[:300]!r}" for p in found]


def run_cases(cli: CliPool, base: Path, work: Path, cases: Sequence[Case]) -> list[Outcome]:
    """Cases are independent copies, so they run on all the CLI servers at once."""
    with ThreadPoolExecutor(3) as pool:
        return list(pool.map(lambda c: run_case(cli, base, work, c), cases))


@pytest.fixture(scope="module")
def cli() -> Iterator[CliPool]:
    pool = CliPool(3)
    yield pool
    pool.close()


PASSPHRASE = "right horse battery"
ANSWER = "The capital of France is Paris, a city on the Seine with many museums and bridges."
RESPONSE = {
    "id": "chatcmpl-cli-1",
    "object": "chat.completion",
    "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}}],
}


@pytest.fixture(scope="module")
def cli_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger with a call, a batch and a checkpoint, and a directory of bad inputs beside it."""
    base = tmp_path_factory.mktemp("cli")
    lg = Ledger.init(base / "ledger.duckdb", origin="bad-input.test/log")
    lg.new_key("trainer")  # 2 (0 and 1: the log key and `default`)
    lg.record_call(provider="openai", purpose="evaluation", request=None, response=RESPONSE)  # 3
    lg.record_batch([{"text": ANSWER}], id="good-batch")  # 4
    (base / "w.bin").write_bytes(b"weights")
    lg.record_checkpoint(id="good-ckpt", weights=[base / "w.bin"], batches=["good-batch"])  # 5
    Ledger.init(base / "locked.duckdb", origin="bad-input.test/pass", passphrase=PASSPHRASE)

    files: dict[str, bytes] = {
        "bad_utf8.jsonl": b'{"text": "fine"}\n{"text": "caf\xe9 latte"}\n',
        "truncated.jsonl": b'{"text": "one"}\n{"text": "two"}\n{"text": "thr',
        "cut.jsonl.gz": gzip.compress(b'{"text": "one"}\n' * 20_000)[:300],
        "array.jsonl": b'{"a": 1}\n[1, 2, 3]\n',
        "scalar.jsonl": b'"just a string"\n',
        "nan.jsonl": b'{"score": NaN}\n',
        "empty.jsonl": b"",
        "blank.jsonl": b"\n  \n\r\n",
        "bad.txt": b"a fine line\n\xff\xfe broken\n",
        "data.csv": b"a,b\n1,2\n",
        "corrupt.parquet": b"PAR1" + bytes(range(200)) + b"PAR1",
        "ok.jsonl": b'{"text": "a record that is fine"}\n',
        "other.jsonl": b'{"text": "different content under a taken id"}\n',
        "bad_resp.json": b'{"id": "x", "choices": [',
        "numbers.json": b"[1, 2, 3]",
        "nomodel.json": json.dumps(
            {"id": "chatcmpl-nomodel", "choices": [{"message": {"content": ANSWER}}]}
        ).encode(),
        "resp.json": json.dumps({**RESPONSE, "id": "chatcmpl-cli-2"}).encode(),
        "bad_utf8.json": b'{"model": "gpt-4o", "note": "\xc3\x28"}',
        "calls_bad.jsonl": (
            json.dumps(
                {
                    "custom_id": "r1",
                    "response": {"status_code": 200, "body": {**RESPONSE, "id": "c-1"}},
                }
            )
            + "\n{not json}\n"
        ).encode(),
        "calls_noprov.jsonl": json.dumps({"response": RESPONSE}).encode() + b"\n",
        "garbage_head.txt": b"this is not a tree head\n",
        "utf8_head.txt": b"bad-input.test/log\n\xff\n",
        "random.duckdb": bytes(np.random.default_rng(7).integers(0, 256, 70_000, dtype=np.uint8)),
        "zero.duckdb": b"",
    }
    for name, data in files.items():
        (base / name).write_bytes(data)
    pq.write_table(
        pa.table({"b": pa.array([b"\x00\x01", b"\x02"], pa.binary()), "t": ["x", "y"]}),
        base / "binary.parquet",
    )
    (base / "adir.jsonl").mkdir()
    (base / "adir.duckdb").mkdir()
    raw = (base / "ledger.duckdb").read_bytes()
    (base / "truncated.duckdb").write_bytes(raw[: len(raw) // 3])
    with duckdb.connect(str(base / "plain.duckdb")) as conn:
        conn.execute("CREATE TABLE t(x INTEGER)")
    with (base / "huge.jsonl").open("wb") as out:  # one 50 MB line that never closes its string
        out.write(b'{"text": "')
        out.write(b"x" * (50 << 20))
        out.write(b"\n")
    return base


def _chmod_log_key(mode: int) -> Callable[[Path], None]:
    return lambda here: (here / "ledger.keys" / "log.pem").chmod(mode)


def _remove_log_key(here: Path) -> None:
    (here / "ledger.keys" / "log.pem").unlink()


def _damage_log_key(here: Path) -> None:
    """Replace one base64 character: still a valid Ed25519 key, but not the ledger's."""
    path = here / "ledger.keys" / "log.pem"
    lines = path.read_bytes().split(b"\n")
    body = bytearray(lines[1])
    body[-5] = ord("A") if body[-5] != ord("A") else ord("B")
    lines[1] = bytes(body)
    path.chmod(0o600)
    path.write_bytes(b"\n".join(lines))


REC = ("record", "batch")
CASES = [
    Case("invalid-utf8", (*REC, "bad_utf8.jsonl", "--db", "{db}"), ("bad_utf8.jsonl:2", "UTF-8")),
    Case(
        "truncated", (*REC, "truncated.jsonl", "--db", "{db}"), ("truncated.jsonl:3", "truncated")
    ),
    Case(
        "truncated-gzip", (*REC, "cut.jsonl.gz", "--db", "{db}"), ("cut.jsonl.gz:", "cannot read")
    ),
    Case("array-line", (*REC, "array.jsonl", "--db", "{db}"), ("array.jsonl:2", "array")),
    Case("scalar-line", (*REC, "scalar.jsonl", "--db", "{db}"), ("scalar.jsonl:1",)),
    Case("nan", (*REC, "nan.jsonl", "--db", "{db}"), ("nan.jsonl:1",)),
    Case("empty-file", (*REC, "empty.jsonl", "--db", "{db}"), ("empty.jsonl", "no records")),
    Case("blank-lines-only", (*REC, "blank.jsonl", "--db", "{db}"), ("blank.jsonl", "no records")),
    Case("text-invalid-utf8", (*REC, "bad.txt", "--db", "{db}"), ("bad.txt:2",)),
    Case("unknown-format", (*REC, "data.csv", "--db", "{db}"), ("data.csv",)),
    Case(
        "parquet-binary",
        (*REC, "binary.parquet", "--db", "{db}"),
        ("binary.parquet", "row 1", "'b'"),
    ),
    Case("parquet-corrupt", (*REC, "corrupt.parquet", "--db", "{db}"), ("corrupt.parquet",)),
    Case("missing-file", (*REC, "missing.jsonl", "--db", "{db}"), ("missing.jsonl",)),
    Case("directory-as-file", (*REC, "adir.jsonl", "--db", "{db}"), ("adir.jsonl",)),
    Case("huge-line", (*REC, "huge.jsonl", "--db", "{db}"), ("huge.jsonl:1",)),
    Case(
        "derived-from-missing-index",
        (*REC, "ok.jsonl", "--derived-from", "9999", "--db", "{db}"),
        ("9999",),
    ),
    Case(
        "derived-from-missing-id",
        (*REC, "ok.jsonl", "--derived-from", "chatcmpl-nope", "--db", "{db}"),
        ("chatcmpl-nope",),
    ),
    Case(
        "derived-from-a-batch",
        (*REC, "ok.jsonl", "--derived-from", "4", "--db", "{db}"),
        ("4", "batch"),
    ),
    Case(
        "taken-batch-id",
        (*REC, "other.jsonl", "--id", "good-batch", "--db", "{db}"),
        ("good-batch",),
    ),
    Case("split-zero", (*REC, "ok.jsonl", "--split", "0", "--db", "{db}"), ("split",), code=2),
    Case(
        "split-not-a-number",
        (*REC, "ok.jsonl", "--split", "abc", "--db", "{db}"),
        ("--split",),
        code=2,
    ),
    Case("unknown-option", (*REC, "ok.jsonl", "--bogus", "--db", "{db}"), ("--bogus",), code=2),
    Case(
        "checkpoint-missing-batch",
        (
            "record",
            "checkpoint",
            "--id",
            "c2",
            "--weights",
            "w.bin",
            "--batch",
            "nope-batch",
            "--db",
            "{db}",
        ),
        ("nope-batch",),
    ),
    Case(
        "checkpoint-missing-parent",
        (
            "record",
            "checkpoint",
            "--id",
            "c2",
            "--weights",
            "w.bin",
            "--parent",
            "nope-ckpt",
            "--db",
            "{db}",
        ),
        ("nope-ckpt",),
    ),
    Case(
        "checkpoint-missing-weights",
        ("record", "checkpoint", "--id", "c2", "--weights", "missing.bin", "--db", "{db}"),
        ("missing.bin",),
    ),
    Case(
        "checkpoint-taken-id",
        ("record", "checkpoint", "--id", "good-ckpt", "--weights", "w.bin", "--db", "{db}"),
        ("good-ckpt",),
    ),
    Case(
        "checkpoint-bad-teacher",
        (
            "record",
            "checkpoint",
            "--id",
            "c2",
            "--weights",
            "w.bin",
            "--teacher",
            "nocolon",
            "--db",
            "{db}",
        ),
        ("nocolon",),
        code=2,
    ),
    Case(
        "call-invalid-json",
        (
            "record",
            "call",
            "--provider",
            "openai",
            "--purpose",
            "evaluation",
            "--response",
            "bad_resp.json",
            "--db",
            "{db}",
        ),
        ("bad_resp.json",),
    ),
    Case(
        "call-wrong-type",
        (
            "record",
            "call",
            "--provider",
            "openai",
            "--purpose",
            "evaluation",
            "--response",
            "numbers.json",
            "--db",
            "{db}",
        ),
        (),
    ),
    Case(
        "call-no-model",
        (
            "record",
            "call",
            "--provider",
            "openai",
            "--purpose",
            "evaluation",
            "--response",
            "nomodel.json",
            "--db",
            "{db}",
        ),
        ("model",),
    ),
    Case(
        "call-bad-purpose",
        (
            "record",
            "call",
            "--provider",
            "openai",
            "--purpose",
            "fun",
            "--response",
            "resp.json",
            "--db",
            "{db}",
        ),
        ("fun",),
        code=2,
    ),
    Case(
        "call-request-invalid-utf8",
        (
            "record",
            "call",
            "--provider",
            "openai",
            "--purpose",
            "evaluation",
            "--response",
            "resp.json",
            "--request",
            "bad_utf8.json",
            "--db",
            "{db}",
        ),
        ("bad_utf8.json",),
    ),
    Case(
        "import-unknown-format",
        (
            "import",
            "calls",
            "calls_bad.jsonl",
            "--format",
            "csv",
            "--provider",
            "openai",
            "--purpose",
            "evaluation",
            "--db",
            "{db}",
        ),
        ("csv",),
        code=2,
    ),
    Case(
        "import-broken-line",
        (
            "import",
            "calls",
            "calls_bad.jsonl",
            "--format",
            "openai-batch",
            "--provider",
            "openai",
            "--purpose",
            "evaluation",
            "--db",
            "{db}",
        ),
        ("calls_bad.jsonl:2",),
    ),
    Case(
        "import-missing-provider",
        (
            "import",
            "calls",
            "calls_noprov.jsonl",
            "--format",
            "jsonl",
            "--provider",
            "",
            "--purpose",
            "evaluation",
            "--db",
            "{db}",
        ),
        ("calls_noprov.jsonl:1",),
    ),
    Case(
        "import-missing-requests",
        (
            "import",
            "calls",
            "calls_bad.jsonl",
            "--format",
            "openai-batch",
            "--requests",
            "no_inputs.jsonl",
            "--provider",
            "openai",
            "--purpose",
            "evaluation",
            "--db",
            "{db}",
        ),
        ("no_inputs.jsonl",),
    ),
    Case("since-garbage", ("verify", "--since", "garbage_head.txt", "--db", "{db}"), ()),
    Case("since-missing", ("verify", "--since", "no_head.txt", "--db", "{db}"), ("no_head.txt",)),
    Case(
        "consistency-invalid-utf8",
        ("consistency", "--from", "utf8_head.txt", "--db", "{db}"),
        ("utf8_head.txt",),
    ),
    Case("prove-unknown-ref", ("prove", "no-such-ref", "--db", "{db}"), ("no-such-ref",)),
    Case("show-unknown-index", ("show", "99999", "--db", "{db}"), ("99999",)),
    Case("audit-unknown-checkpoint", ("audit", "no-such-ckpt", "--db", "{db}"), ("no-such-ckpt",)),
    Case("db-random-bytes", ("head", "--db", "{db}"), ("random.duckdb",), db="random.duckdb"),
    Case("db-truncated", ("verify", "--db", "{db}"), ("truncated.duckdb",), db="truncated.duckdb"),
    Case("db-empty-file", ("log", "--db", "{db}"), ("zero.duckdb",), db="zero.duckdb"),
    Case("db-directory", ("status", "--db", "{db}"), ("adir.duckdb",), db="adir.duckdb"),
    Case(
        "db-not-a-ledger",
        ("head", "--db", "{db}"),
        ("plain.duckdb", "not a ledger"),
        db="plain.duckdb",
    ),
    Case("db-missing", ("head", "--db", "{db}"), ("none.duckdb",), db="none.duckdb"),
    Case(
        "wrong-passphrase",
        (*REC, "ok.jsonl", "--db", "{db}"),
        ("locked.keys/log.pem", "passphrase"),
        env={"LEDGER_PASSPHRASE": "wrong horse"},
        db="locked.duckdb",
    ),
    Case(
        "no-passphrase",
        (*REC, "ok.jsonl", "--db", "{db}"),
        ("locked.keys/log.pem", "LEDGER_PASSPHRASE"),
        env={"LEDGER_PASSPHRASE": ""},
        db="locked.duckdb",
    ),
    Case(
        "missing-recorder-key",
        (*REC, "ok.jsonl", "--key", "nobody", "--db", "{db}"),
        ("nobody.pem",),
    ),
    Case(
        "missing-log-key",
        (*REC, "ok.jsonl", "--db", "{db}"),
        ("log.pem", "not found"),
        prepare=_remove_log_key,
    ),
    Case(
        "key-file-0644",
        (*REC, "ok.jsonl", "--db", "{db}"),
        ("log.pem", "0644"),
        prepare=_chmod_log_key(0o644),
    ),
    Case(
        "damaged-log-key",
        (*REC, "ok.jsonl", "--db", "{db}"),
        ("log.pem", "expected the log key"),
        prepare=_damage_log_key,
    ),
    Case(
        "lock-timeout-not-a-number",
        ("head", "--db", "{db}"),
        ("LEDGER_LOCK_TIMEOUT",),
        env={"LEDGER_LOCK_TIMEOUT": "soon"},
    ),
]


def test_bad_input_through_the_cli(cli: CliPool, cli_base: Path, tmp_path: Path) -> None:
    """Each case: exit 4 (2 for usage), one line naming the file and line, nothing else, ledger unchanged."""
    outcomes = run_cases(cli, cli_base, tmp_path, CASES)
    problems = [p for outcome in outcomes for p in problems_of(outcome)]
    assert not problems, "\n".join(problems)


def test_errors_never_show_key_material(cli: CliPool, cli_base: Path, tmp_path: Path) -> None:
    """Even with --verbose (which adds causes, and a traceback for a bug), no passphrase or key bytes appear."""
    secrets = [PASSPHRASE, "wrong horse", "PRIVATE KEY"]
    for name in ("ledger.keys/log.pem", "locked.keys/log.pem"):
        pem = (cli_base / name).read_bytes().decode()
        secrets += [line for line in pem.splitlines() if line and "-----" not in line]
    seed = keyfiles.load_key_file(cli_base / "ledger.keys" / "log.pem")
    raw = seed.private.private_bytes_raw()
    secrets += [base64.b64encode(raw).decode(), raw.hex()]
    cases = [
        Case(
            "v-wrong-passphrase",
            (*REC, "ok.jsonl", "--db", "{db}", "--verbose"),
            env={"LEDGER_PASSPHRASE": "wrong horse"},
            db="locked.duckdb",
        ),
        Case(
            "v-damaged-key",
            (*REC, "ok.jsonl", "--db", "{db}", "--verbose"),
            prepare=_damage_log_key,
        ),
        Case(
            "v-0644",
            ("keys", "new", "--name", "x", "--db", "{db}", "--verbose"),
            prepare=_chmod_log_key(0o644),
        ),
        Case("v-ok", ("keys", "list", "--db", "{db}", "--verbose", "--json"), code=0),
        Case("v-status", ("status", "--db", "{db}", "--verbose"), code=0),
    ]
    for outcome in run_cases(cli, cli_base, tmp_path, cases):
        text = outcome.proc.stdout + outcome.proc.stderr
        assert outcome.proc.returncode == outcome.case.code, (outcome.case.name, text)
        leaked = [s for s in secrets if s in text]
        assert not leaked, (outcome.case.name, leaked)
