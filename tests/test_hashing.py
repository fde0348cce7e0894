"""Tests for the hashing rules (ledger.spec.jcs, .text, .leaves, .digest and the OpenAI response
shapes of ledger.providers.openai): golden vectors, RFC 8785 examples, and properties checked against
independent implementations (the rfc8785 package, the standard json module, the literal
normalization formula of DESIGN.md)."""

from __future__ import annotations

import enum
import hashlib
import json
import math
import struct
import unicodedata
import uuid
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pytest
import rfc8785
import rfc8785._impl
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InputError
from ledger.providers.openai import response_texts, stream_texts
from ledger.spec import merkle
from ledger.spec.digest import sha256, sha256_hex
from ledger.spec.jcs import (
    HashInputError,
    canonical_json,
    canonical_json_general,  # the general path, checked against rfc8785 whatever _scan says
    format_number,
    parse_json_line,
    parse_json_lines,
    plain_float,  # the fast path's premise, checked against repr, orjson and rfc8785
)
from ledger.spec.leaves import (
    RecordHash,
    RecordHashColumns,
    hash_record,
    hash_record_columns,
    hash_records,
    record_digest,
    record_leaf,
    request_response_digest,
    segment_order,  # the bulk sort's 64-bit key shortcut, checked against a naive sort
)
from ledger.spec.text import (
    MIN_SEGMENT_CHARS,
    call_outputs,
    normalize,
    record_segments,
    record_texts,
    segment_hash,
    text_segments,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "conformance.json").read_text(encoding="utf-8")
)
SAFE_INT = 2**53 - 1


def jcs_reference(value: object) -> bytes:
    """The rfc8785 package, the independent JCS implementation (typed for our object values)."""
    return rfc8785.dumps(cast("rfc8785._impl._Value", value))


def reference_normalize(text: str) -> str:
    """DESIGN.md's formula, verbatim."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle Tree Hash, written from the RFC (merkle.py is someone else's)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    left, right = rfc6962_root(leaves[:split]), rfc6962_root(leaves[split:])
    return hashlib.sha256(b"\x01" + left + right).digest()


# --------------------------------------------------------------------------------------------
# Golden vectors (tests/conformance.json)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["normalize"], ids=lambda c: repr(c["input"]))
def test_normalize_vectors(case: dict[str, str]) -> None:
    assert normalize(case["input"]) == case["output"]


@pytest.mark.parametrize(
    "case", VECTORS["segment_hash"] + VECTORS["segment_boundary"], ids=lambda c: repr(c["input"])
)
def test_segment_hash_vectors(case: dict[str, Any]) -> None:
    digest = segment_hash(case["input"])
    assert (digest.hex() if digest is not None else None) == case["sha256"]
    if "segment" in case and case["segment"] is not None:
        assert text_segments(case["input"]) == [(bytes.fromhex(case["sha256"]), case["segment"])]


@pytest.mark.parametrize("case", VECTORS["records"], ids=lambda c: c["sha256"][:12])
def test_record_vectors(case: dict[str, Any]) -> None:
    record = parse_json_line(case["record_json"])
    assert canonical_json(record) == case["jcs"].encode("utf-8")
    assert record_digest(record).hex() == case["sha256"]
    assert [s.hex() for s in record_segments(record)] == case["segments"]
    hashed = hash_record(record)
    assert hashed.digest.hex() == case["sha256"]
    assert [s.hex() for s in hashed.segments] == case["segments"]
    assert hashed.leaf == case["record_leaf"].encode("utf-8")
    assert record_leaf(hashed.digest, list(reversed(hashed.segments))) == hashed.leaf
    assert hashlib.sha256(b"\x00" + hashed.leaf).hexdigest() == case["record_leaf_hash"]


def test_record_vectors_parsed_from_bytes_match_str() -> None:
    for case in VECTORS["records"]:
        line = case["record_json"]
        assert parse_json_line(line.encode("utf-8")) == parse_json_line(line)


def test_records_root_vector() -> None:
    leaves = [hash_record(parse_json_line(c["record_json"])).leaf for c in VECTORS["records"]]
    assert rfc6962_root(leaves).hex() == VECTORS["records_root"]


def test_reference_root_helper_against_rfc6962_vectors() -> None:
    tree = VECTORS["rfc6962"]
    leaves = [bytes.fromhex(h) for h in tree["leaves_hex"]]
    for size, root in tree["roots"].items():
        assert rfc6962_root(leaves[: int(size)]).hex() == root


def test_text_record_vector() -> None:
    case = VECTORS["text_record"]
    assert record_digest(case["line"]).hex() == case["sha256"]
    assert hash_record(case["line"]).digest.hex() == case["sha256"]


def test_call_vector() -> None:
    case = VECTORS["call"]
    assert request_response_digest(case["request"]) == case["request_sha256"]
    assert request_response_digest(case["response"]) == case["response_sha256"]
    assert case["response"]["id"] == case["external_id"]
    assert call_outputs(response_texts(case["response"])) == case["outputs"]


def test_request_response_digest_of_absent_body_is_none() -> None:
    assert request_response_digest(None) is None


# --------------------------------------------------------------------------------------------
# RFC 8785 published examples
# --------------------------------------------------------------------------------------------

# RFC 8785 Appendix B: IEEE 754 bit patterns and their serialization.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_rfc8785_appendix_b_numbers(bits: str, expected: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert format_number(value) == expected
    assert canonical_json([value]) == f"[{expected}]".encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_rfc8785_appendix_b_nonfinite_are_errors(bits: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    with pytest.raises(HashInputError, match="NaN/Infinity is not allowed in canonical JSON"):
        canonical_json({"x": value})


def test_rfc8785_section_3_2_2_example() -> None:
    text = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(parse_json_line(text)) == expected.encode("utf-8")


def test_rfc8785_section_3_2_3_key_order_is_utf16() -> None:
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = [k for k in json.loads(canonical_json(value))]
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


# --------------------------------------------------------------------------------------------
# canonical_json against rfc8785 and the standard library
# --------------------------------------------------------------------------------------------

# Keys drawn partly from the code points where UTF-16 and code point order disagree.
keys = st.one_of(
    st.text(max_size=6),
    st.text(st.sampled_from("a\u00e9\ud7ff\ue000\uffff\U00010000\U0001f600\U0010ffff"), max_size=4),
)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
safe_ints = st.integers(-SAFE_INT, SAFE_INT)
json_scalars = st.one_of(st.none(), st.booleans(), safe_ints, finite_floats, st.text())
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)
big_ints = st.one_of(
    st.integers(),
    st.integers(min_value=2**53),
    st.integers(max_value=-(2**53)),
    st.integers(min_value=2**64 - 4, max_value=2**64 + 4),
    st.integers(min_value=-(2**63) - 4, max_value=-(2**63) + 4),
)
extended_values = st.recursive(
    st.one_of(json_scalars, big_ints),
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_canonical_json_equals_rfc8785(value: object) -> None:
    expected = jcs_reference(value)
    assert canonical_json(value) == expected
    assert canonical_json_general(value) == expected  # the general path, whatever _scan says


@settings(max_examples=150, deadline=None)
@given(json_values.filter(lambda v: not isinstance(v, float)))
def test_canonical_json_equals_rfc8785_without_floats(value: object) -> None:
    # The orjson fast path is taken for these; checked separately so it is always exercised.
    assert canonical_json(value) == jcs_reference(value)


@settings(max_examples=500, deadline=None)
@given(finite_floats)
def test_format_number_equals_rfc8785_and_round_trips(value: float) -> None:
    assert format_number(value).encode() == jcs_reference(value)
    assert float(format_number(value)) == value


def _has_float(value: object) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    return isinstance(value, list) and any(_has_float(v) for v in value)


@settings(max_examples=200, deadline=None)
@given(extended_values)
def test_canonical_json_with_big_ints_round_trips_exactly(value: object) -> None:
    """Beyond rfc8785's domain: exact integers, re-parsed by the standard library."""
    encoded = canonical_json(value)
    # Canonical form is a fixed point of parse + canonicalize (an integral double such as
    # 6.8e16 is written as an integer token, which parses back as an int of the same value).
    assert canonical_json(parse_json_line(encoded)) == encoded
    assert canonical_json(json.loads(encoded)) == encoded
    if not _has_float(value):
        assert json.loads(encoded) == value
        assert parse_json_line(encoded) == value


@given(big_ints)
def test_big_int_is_written_as_exact_decimal(number: int) -> None:
    assert canonical_json(number) == str(number).encode()
    assert canonical_json({"id": number, "x": [number]}) == (
        f'{{"id":{number},"x":[{number}]}}'.encode()
    )


def test_every_code_point_escapes_as_rfc8785() -> None:
    """Exhaustive over Unicode scalar values: orjson's string escaping is JCS's."""
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(chars), 4096):
        chunk = "".join(chars[start : start + 4096])
        assert canonical_json([chunk]) == jcs_reference([chunk])
        assert canonical_json([chunk, 0.5]) == jcs_reference([chunk, 0.5])  # float path
        assert canonical_json_general([chunk]) == jcs_reference([chunk])  # general path


def test_int_vs_float_tokens_keep_their_type() -> None:
    parsed = parse_json_line("[1, 1.0, 1e20, 9007199254740993.0, -0, -0.0, 18446744073709551616]")
    assert isinstance(parsed, list)
    assert [type(v) for v in parsed] == [int, float, float, float, int, float, int]
    assert (
        canonical_json(parsed)
        == b"[1,1,100000000000000000000,9007199254740992,0,0,18446744073709551616]"
    )


def test_subclasses_serialize_by_value_like_rfc8785() -> None:
    class Colour(str, enum.Enum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    class Ratio(float):
        pass

    value = {"c": Colour.RED, "l": Level.HIGH, "r": Ratio(0.25), "t": (1, "x")}
    assert (
        canonical_json(value) == jcs_reference(value) == b'{"c":"red","l":3,"r":0.25,"t":[1,"x"]}'
    )


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"a": [1, {"b": math.nan}]}, '$["a"][1]["b"]'),
        ([math.inf], "$[0]"),
        ({"x": -math.inf}, '$["x"]'),
    ],
)
def test_nonfinite_numbers_are_errors_naming_the_place(value: object, fragment: str) -> None:
    with pytest.raises(HashInputError) as info:
        canonical_json(value)
    assert "NaN/Infinity is not allowed in canonical JSON" in str(info.value)
    assert fragment in str(info.value)
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": "ok\ud800"}, r'lone surrogate U\+D800 .*\(at \$\["a"\]\)'),
        ({"k\udfff": 1}, "object key"),
        ({1: "x"}, "object keys must be strings"),
        ({"when": uuid.UUID(int=1)}, "uuid.UUID has no JSON form"),  # orjson alone would write it
        ([b"bytes"], "bytes has no JSON form"),
        ({"s": {1, 2}}, "set has no JSON form"),
    ],
)
def test_values_without_canonical_form_are_errors(value: object, expected: str) -> None:
    with pytest.raises(HashInputError, match=expected):
        canonical_json(value)
    with pytest.raises(HashInputError, match=expected):
        hash_record(value)


def test_nesting_beyond_the_writer_limit_is_an_error_not_a_crash() -> None:
    deep: object = "x"
    for _ in range(300):
        deep = [deep]
    with pytest.raises(HashInputError, match="canonical JSON"):
        canonical_json(deep)
    shallow: object = 1.5
    for _ in range(200):
        shallow = {"k": shallow}
    assert canonical_json(shallow) == jcs_reference(shallow)


def test_lone_surrogate_in_text_record_is_an_error() -> None:
    with pytest.raises(HashInputError, match="lone surrogate"):
        record_digest("bad \udc80 text")


# --------------------------------------------------------------------------------------------
# parse_json_line
# --------------------------------------------------------------------------------------------


@given(st.integers(min_value=-(2**200), max_value=2**200))
def test_parse_keeps_integers_exact(number: int) -> None:
    for line in (str(number), f'{{"n": {number}}}', f"[0, {number}]"):
        parsed = parse_json_line(line)
        assert parsed == json.loads(line)
        assert "float" not in repr(type(parsed))


@given(st.integers(min_value=-(2**200), max_value=2**200))
def test_parse_integer_type_is_int(number: int) -> None:
    parsed = parse_json_line(str(number))
    assert type(parsed) is int and parsed == number


@given(finite_floats)
def test_parse_floats_exactly(value: float) -> None:
    parsed = parse_json_line(repr(value).replace("inf", "x"))
    assert type(parsed) is float and parsed == value
    # JCS writes integral doubles below 1e21 as integer tokens; they denote the same number.
    assert float(parse_json_line(format_number(value))) == value  # type: ignore[arg-type]


def test_long_digit_runs_inside_strings_parse_correctly() -> None:
    line = '{"phone": "12345678901234567890123", "n": 5, "f": 0.12345678901234567890}'
    assert parse_json_line(line) == json.loads(line)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "{",
        '{"a": 1,}',
        "NaN",
        "[Infinity]",
        "-Infinity",
        "1e400",
        "[-1e400]",
        '"\\ud800"',
        '"\\udc00 x"',
        b'"\xff"',
        "[1] [2]",
        "{'a': 1}",
        "[123456789012345678901234567890, NaN]",
        "[123456789012345678901234567890, 1e999]",
        '[123456789012345678901234567890, "\\ud800"]',
    ],
)
def test_parse_rejects_invalid_json(line: str | bytes) -> None:
    with pytest.raises(ValueError):
        parse_json_line(line)


def test_parse_duplicate_keys_keep_the_last_like_json_module() -> None:
    for line in ('{"a": 1, "a": 2}', '{"a": 1, "a": 123456789012345678901234567890}'):
        assert parse_json_line(line) == json.loads(line)


# --------------------------------------------------------------------------------------------
# Normalization and segments
# --------------------------------------------------------------------------------------------

ascii_texts = st.text(st.characters(max_codepoint=0x7F), max_size=80)
spacey_texts = st.text(
    st.sampled_from(
        list(
            " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2003\u2028\u2029\u3000"
            "aZ\u00df\u00e9\u2019\u2026\ufb01\u0130\U0001d400\U0001f600"
        )
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=80), ascii_texts, spacey_texts))
def test_normalize_equals_the_design_formula(text: str) -> None:
    assert normalize(text) == reference_normalize(text)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=80), ascii_texts, spacey_texts), st.integers(0, 40))
def test_segment_hash_equals_the_design_rule(text: str, min_chars: int) -> None:
    norm = reference_normalize(text)
    expected = hashlib.sha256(norm.encode()).digest() if len(norm) >= min_chars else None
    assert segment_hash(text, min_chars) == expected


def test_normalize_keeps_lone_surrogates_like_the_formula() -> None:
    text = "A\ud800  b\u2028C"
    assert normalize(text) == reference_normalize(text) == "a\ud800 b c"


def test_only_the_known_unicode_spaces_survive_nfkc_casefold() -> None:
    """normalize() relies on this to collapse other whitespace on UTF-8 bytes."""
    survivors = set()
    for code in range(0x80, 0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        for char in unicodedata.normalize("NFKC", chr(code)).casefold():
            if char.isspace() and not char.isascii():
                survivors.add(char)
    assert survivors <= {"\x85", "\u1680", "\u2028", "\u2029"}


def test_segment_threshold_counts_code_points_after_normalization() -> None:
    assert segment_hash("x" * 31) is None
    assert segment_hash("x" * 32) == hashlib.sha256(b"x" * 32).digest()
    assert segment_hash("  " + "x" * 31 + "\n") is None  # spaces do not count
    assert segment_hash("\ufb01" * 16) is not None  # each ligature becomes two letters
    assert MIN_SEGMENT_CHARS == 32


def test_text_segments_split_paragraphs_on_the_raw_text() -> None:
    first = "The first paragraph is long enough to count."
    second = "The second one, also long enough to count here."
    text = f"{first}\n \t\n{second}\n\nshort"
    pairs = text_segments(text)
    assert [t for _, t in pairs] == [
        reference_normalize(text),
        reference_normalize(first),
        reference_normalize(second),
    ]
    assert all(h == hashlib.sha256(t.encode()).digest() for h, t in pairs)
    assert text_segments(first) == [(segment_hash(first), reference_normalize(first))]
    # A single newline is not a paragraph break.
    assert len(text_segments(f"{first}\n{second}")) == 1


def test_call_outputs_are_distinct_sorted_hex() -> None:
    text = "A repeated answer that is certainly long enough."
    outputs = call_outputs([text, text.upper(), f"{text}\n\n{text}"])
    assert outputs == sorted(set(outputs))
    assert set(outputs) == {
        sha256_hex(reference_normalize(text).encode()),
        sha256_hex(reference_normalize(f"{text}\n\n{text}").encode()),
    }


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------

CHAT = {
    "id": 7,
    "messages": [
        {"role": "user", "content": "What is the capital of France, in one sentence?"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "The capital of France is Paris, on the Seine."}],
        },
    ],
    "meta": {"source": "A string in metadata that is long enough to be a segment."},
}


def test_record_texts_every_string_value_but_not_keys() -> None:
    record = {"a key that is long enough to be a segment itself": "v", "n": [1, "x", {"y": "z"}]}
    assert list(record_texts(record)) == ["v", "x", "z"]
    assert list(record_texts("a .txt line")) == ["a .txt line"]


def test_record_texts_with_text_fields_traverse_lists_at_any_step() -> None:
    assert list(record_texts(CHAT, ["messages.content"])) == [
        "What is the capital of France, in one sentence?",
        "text",
        "The capital of France is Paris, on the Seine.",
    ]
    assert list(record_texts(CHAT, ["messages.role", "missing.path", "id"])) == [
        "user",
        "assistant",
    ]
    assert list(record_texts([CHAT, CHAT], ["meta.source"])) == [CHAT["meta"]["source"]] * 2  # type: ignore[index]
    assert list(record_texts(CHAT, [])) == []


def test_record_segments_with_text_fields() -> None:
    all_segments = record_segments(CHAT)
    content_only = record_segments(CHAT, ["messages.content"])
    assert len(all_segments) == 3 and len(content_only) == 2
    assert set(content_only) < set(all_segments)
    assert hash_record(CHAT, ["messages.content"]).segments == tuple(content_only)


def test_record_segments_are_distinct_and_sorted() -> None:
    text = "The same sentence, repeated in two places of one record."
    record = {"a": text, "b": [text.upper(), "  " + text], "c": "short"}
    segments = record_segments(record)
    assert segments == [hashlib.sha256(reference_normalize(text).encode()).digest()]


def test_min_chars_is_honoured() -> None:
    record = {"a": "exactly ten", "b": "tiny"}
    assert record_segments(record, min_chars=11) == [sha256(b"exactly ten")]
    assert hash_record(record, min_chars=4).texts == tuple(
        sorted(["exactly ten", "tiny"], key=lambda t: sha256(t.encode()))
    )


records = st.one_of(st.dictionaries(keys, extended_values, max_size=6), st.text(max_size=100))
texty_records = st.dictionaries(
    st.sampled_from(["content", "text", "x"]),
    st.one_of(spacey_texts, st.text(min_size=20, max_size=60), ascii_texts, st.lists(ascii_texts)),
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(records, texty_records), st.integers(0, 40))
def test_hash_record_agrees_with_the_separate_functions(record: object, min_chars: int) -> None:
    hashed = hash_record(record, min_chars=min_chars)
    assert isinstance(hashed, RecordHash)
    assert hashed.digest == record_digest(record)
    if isinstance(record, str):
        assert hashed.digest == hashlib.sha256(record.encode()).digest()
    else:
        assert hashed.digest == hashlib.sha256(canonical_json(record)).digest()
    assert list(hashed.segments) == record_segments(record, min_chars=min_chars)
    expected_texts = {
        hashlib.sha256(reference_normalize(t).encode()).digest(): reference_normalize(t)
        for t in record_texts(record)
        if len(reference_normalize(t)) >= min_chars
    }
    assert list(hashed.segments) == sorted(expected_texts)
    assert hashed.texts == tuple(expected_texts[h] for h in hashed.segments)
    assert hashed.leaf == record_leaf(hashed.digest, hashed.segments)


float_records = st.dictionaries(
    st.sampled_from(["score", "content", "meta"]),
    st.one_of(
        finite_floats,
        spacey_texts,
        st.lists(st.one_of(finite_floats, ascii_texts)),
        st.dictionaries(st.sampled_from(["p", "q"]), st.one_of(finite_floats, st.none())),
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(records, texty_records, float_records), max_size=8),
    st.integers(0, 40),
    st.sampled_from([None, ["content"], ["meta.p", "x"]]),
)
def test_hash_records_equals_hash_record_and_the_references(
    batch: list[object], min_chars: int, text_fields: list[str] | None
) -> None:
    """The bulk path (one walk per record, ASCII texts normalized together) against the single one
    and, for digests and normalized texts, against rfc8785 and DESIGN.md's formula."""
    hashed = hash_records(batch, text_fields, min_chars)
    assert hashed == [hash_record(r, text_fields, min_chars) for r in batch]
    for record, h in zip(batch, hashed):
        if not isinstance(record, str) and all(abs(k) < 2**53 for k in _ints(record)):
            assert h.digest == hashlib.sha256(jcs_reference(record)).digest()
        texts = [record] if isinstance(record, str) else list(record_texts(record, text_fields))
        expected = {
            hashlib.sha256(reference_normalize(t).encode()).digest(): reference_normalize(t)
            for t in texts
            if len(reference_normalize(t)) >= min_chars
        }
        assert list(h.segments) == sorted(expected)
        assert h.texts == tuple(expected[s] for s in h.segments)


def _ints(value: object) -> list[int]:
    """Every int (not bool) inside a JSON value, to keep rfc8785 within its safe range."""
    if isinstance(value, dict):
        return [i for v in value.values() for i in _ints(v)]
    if isinstance(value, list):
        return [i for v in value for i in _ints(v)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


def test_hash_records_raises_on_a_bad_record_like_hash_record() -> None:
    good = {"content": "a long enough text to be one segment of its record"}
    with pytest.raises(HashInputError, match="NaN"):
        hash_records([good, {"score": [1.5, math.nan]}])
    with pytest.raises(HashInputError, match="lone surrogate"):
        hash_records([good, "bad \ud800 text"])
    assert hash_records([]) == []


# --------------------------------------------------------------------------------------------
# hash_record_columns: the columnar bulk form
# --------------------------------------------------------------------------------------------

# Floats at the edges of the orjson shortcut: integral, signed zero, the 1e-4 and 1e16 limits of
# Python's fixed notation and their neighbours, 2**53, subnormals, ES6's 1e21 switch.
edge_floats = st.sampled_from(
    [
        0.0,
        -0.0,
        1.0,
        -3.0,
        0.5,
        0.1234,
        1e-4,
        math.nextafter(1e-4, 0.0),
        math.nextafter(1e-4, 1.0),
        -1e-4,
        1e16,
        math.nextafter(1e16, 0.0),
        9007199254740993.0,
        4503599627370496.5,
        5e-324,
        1e21,
        1e-7,
        1.7976931348623157e308,
    ]
)
record_texts_ = st.one_of(
    spacey_texts,
    ascii_texts,
    st.text(max_size=60),
    st.text(st.sampled_from("ab \x00\t\ufdfa"), max_size=50),  # NULs; U+FDFA grows 18x in NFKC
    st.sampled_from(["", " " * 40, "A  long  text with doubled spaces " * 2, "\x00" * 33]),
)
column_scalars = st.one_of(
    st.none(), st.booleans(), big_ints, finite_floats, edge_floats, record_texts_
)
column_values = st.recursive(
    column_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(keys, st.sampled_from(["content", "meta", "p"])), children, max_size=4
        ),
    ),
    max_leaves=20,
)
chat_records = st.fixed_dictionaries(
    {
        "id": st.text(max_size=20),
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant"]), "content": record_texts_}
            ),
            max_size=3,
        ),
        "meta": st.fixed_dictionaries(
            {"score": st.one_of(finite_floats, edge_floats), "turn": big_ints}
        ),
    }
)
column_records = st.one_of(
    st.dictionaries(keys, column_values, max_size=5), chat_records, record_texts_, column_values
)


def assert_columns_match(
    batch: list[object], text_fields: list[str] | None, min_chars: int
) -> None:
    """hash_record_columns against hash_record field by field, leaf hashes against merkle.py and
    hashlib, and (where rfc8785 can say) digests against the independent JCS."""
    columns = hash_record_columns(batch, text_fields, min_chars)
    singles = [hash_record(r, text_fields, min_chars) for r in batch]
    assert isinstance(columns, RecordHashColumns)
    assert columns.count == len(batch)
    assert columns.digests == b"".join(h.digest for h in singles)
    assert columns.leaf_hashes == b"".join(merkle.leaf_hash(h.leaf) for h in singles)
    assert columns.leaf_hashes == b"".join(
        hashlib.sha256(b"\x00" + h.leaf).digest() for h in singles
    )
    assert columns.segment_counts.dtype == np.int64
    assert columns.segment_counts.tolist() == [len(h.segments) for h in singles]
    assert columns.segments == b"".join(s for h in singles for s in h.segments)
    assert [tuple(t) for t in columns.texts] == [h.texts for h in singles]
    assert hash_records(batch, text_fields, min_chars) == singles
    for record, h in zip(batch, singles):
        if isinstance(record, str):
            assert h.digest == hashlib.sha256(record.encode()).digest()
        elif all(abs(k) < 2**53 for k in _ints(record)):
            assert h.digest == hashlib.sha256(jcs_reference(record)).digest()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(column_records, max_size=8),
    st.sampled_from([0, 1, 5, 32]),
    st.sampled_from([None, ["content"], ["messages.content", "meta"], ["p.content", "x"]]),
)
def test_hash_record_columns_agree_with_hash_record(
    batch: list[object], min_chars: int, text_fields: list[str] | None
) -> None:
    assert_columns_match(batch, text_fields, min_chars)


def test_hash_record_columns_across_chunks() -> None:
    """More records than one internal chunk, mixing the fast path with every fallback."""
    long_text = "Signature science head output provenance verify signature. "
    batch: list[object] = []
    for i in range(700):
        kind = i % 7
        record: object = {
            "id": f"r{i}",
            "messages": [{"role": "user", "content": f"{long_text} {i % 50}"}],
            "meta": {"score": [0.1234, 1.0, -0.0, 1e-7, 2**70, 0.5, 3.25][kind]},
        }
        if kind == 3:
            record = f"text line {i} " + long_text
        elif kind == 4:
            record = {"\U0001f600": long_text, "\ue000": f"Caf\u00e9  {long_text}", "z": i}
        elif kind == 5:
            record = {"a": long_text, "b": long_text.upper(), "c": "  " + long_text + "\t"}
        batch.append(record)
    assert_columns_match(batch, None, MIN_SEGMENT_CHARS)
    assert_columns_match(batch, ["messages.content"], 10)


def test_hash_record_columns_of_nothing_and_of_bad_records() -> None:
    empty = hash_record_columns([])
    assert empty.count == 0
    assert empty.digests == empty.leaf_hashes == empty.segments == b""
    assert empty.texts == []
    assert empty.segment_counts.tolist() == []
    good = {"content": "a long enough text to be one segment of its record"}
    with pytest.raises(HashInputError, match="NaN"):
        hash_record_columns([good, {"score": [1.5, math.nan]}])
    with pytest.raises(HashInputError, match="lone surrogate"):
        hash_record_columns([good, "bad \ud800 text"])
    with pytest.raises(HashInputError, match="lone surrogate"):
        hash_record_columns([good, {"x": "bad \udc00 value"}])
    with pytest.raises(HashInputError, match="no JSON form"):
        hash_record_columns([good, {"x": {1, 2}}])


# Hashes drawn from a few 8-byte prefixes, so that records share the sort key's leading bits
# (the exact fallback) as well as whole hashes (repeats to drop).
colliding_hashes = st.builds(
    lambda head, tail: head + tail,
    # The last two differ only in bits that the key shifts out.
    st.sampled_from(
        [b"\x00" * 8, b"\xff" * 8, b"\x80" + b"\x00" * 7, b"\x80" + b"\x00" * 6 + b"\x01"]
    ),
    st.sampled_from([b"\x00" * 24, b"\x01" * 24, b"\xff" * 24])
    | st.binary(min_size=24, max_size=24),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300), st.data())
def test_segment_order_sorts_by_record_then_hash_and_drops_repeats(
    count: int, data: st.DataObject
) -> None:
    segments = data.draw(
        st.lists(st.tuples(st.integers(0, count - 1), colliding_hashes), min_size=1, max_size=40)
    )
    owner = np.array([o for o, _ in segments], dtype=np.int64)
    order, keep = segment_order(owner, b"".join(h for _, h in segments), count)
    picked = order[keep].tolist()
    assert [segments[j] for j in picked] == sorted(set(segments))
    # The first of each repeat is the one kept.
    assert all(segments.index(segments[j]) == j for j in picked)


# JSON number tokens as written, where orjson and the exact parse may disagree: integers beyond
# 64 bits (orjson makes them floats), the u64/i64 edges, and float tokens of the same size.
number_tokens = st.one_of(
    st.integers(-(10**300), 10**300).map(str),
    st.integers(2**64 - 4, 2**64 + 4).map(str),
    st.integers(-(2**63) - 4, -(2**63) + 4).map(str),
    finite_floats.map(repr),
    edge_floats.map(repr),
    st.sampled_from(["1e19", "-1e19", "1E+19", "9223372036854775808.0", "-0", "1.5e300"]),
)
segment_texts = st.sampled_from(["", "A long enough text to be a segment of its record."])
json_tokens = st.recursive(
    st.one_of(
        number_tokens,
        st.sampled_from(["null", "true", "false"]),
        st.one_of(st.text(max_size=8), segment_texts).map(json.dumps),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.dictionaries(st.sampled_from(["content", "meta", "p", "n"]), children, max_size=4).map(
            lambda members: "{" + ",".join(f'"{k}":{v}' for k, v in members.items()) + "}"
        ),
    ),
    max_leaves=12,
)
json_object_lines = st.dictionaries(
    st.one_of(st.sampled_from(["content", "meta", "p", "n"]), st.text(max_size=4)),
    json_tokens,
    max_size=5,
).map(lambda members: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in members.items()) + "}")


def assert_fast_parse_hashes_exactly(
    lines: list[bytes], text_fields: list[str] | None, min_chars: int = MIN_SEGMENT_CHARS
) -> None:
    """The orjson-only parse hashed with its lines equals the exact parse, field by field."""
    data = b"".join(line + b"\n" for line in lines)
    fast = hash_record_columns(
        parse_json_lines(data, lines, exact_ints=False), text_fields, min_chars, lines=lines
    )
    exact = hash_record_columns([parse_json_line(line) for line in lines], text_fields, min_chars)
    assert fast.count == exact.count
    assert fast.digests == exact.digests
    assert fast.leaf_hashes == exact.leaf_hashes
    assert fast.segment_counts.tolist() == exact.segment_counts.tolist()
    assert fast.segments == exact.segments
    assert fast.texts == exact.texts


@settings(max_examples=200, deadline=None)
@given(
    st.lists(json_object_lines, max_size=6),
    st.sampled_from([None, ["content"], ["p.content", "n", "meta"]]),
)
def test_orjson_parse_with_lines_hashes_like_the_exact_parse(
    texts: list[str], text_fields: list[str] | None
) -> None:
    assert_fast_parse_hashes_exactly([t.encode() for t in texts], text_fields)


def test_orjson_parse_with_lines_across_chunks() -> None:
    """Big integers nested in lists and objects, negative ones and a 1e19 token, beyond the first
    chunk so that each record meets its own line; without the lines the digests would differ."""
    text = "A long enough text to be a segment of its record."
    big = [
        f'{{"n": {2**64}, "content": "{text} one"}}',
        f'{{"p": [1, [{-(2**63) - 1}]], "content": "{text} two"}}',
        f'{{"meta": {{"x": {{"y": {10**40}}}}}, "content": "{text} three"}}',
        f'{{"n": 1e19, "meta": {{"score": 0.5}}, "content": "{text} four"}}',
        f'{{"n": {2**64 - 1}, "m": {-(2**63)}, "content": "{text} five"}}',
    ]
    texts = [f'{{"id": {i}, "content": "{text} {i}"}}' for i in range(600)]
    for i, line in enumerate(big):
        texts[3 + 137 * i] = line
    lines = [t.encode() for t in texts]
    assert_fast_parse_hashes_exactly(lines, None)
    assert_fast_parse_hashes_exactly(lines, ["content", "p", "meta.x"])
    assert_fast_parse_hashes_exactly(lines, None, 0)
    data = b"".join(line + b"\n" for line in lines)
    fast = parse_json_lines(data, lines, exact_ints=False)
    assert fast[3] == {"n": float(2**64), "content": f"{text} one"}
    assert parse_json_lines(data, lines) == [parse_json_line(line) for line in lines]
    assert hash_record_columns(fast).digests != hash_record_columns(fast, lines=lines).digests


def test_orjson_parse_without_exact_ints_rejects_what_orjson_cannot_hold() -> None:
    """An integer beyond a double's range fails the orjson-only parse like a bad line (callers then
    parse line by line); lines that do not match the records are refused."""
    lines = [b'{"n": 1' + b"0" * 400 + b"}"]
    with pytest.raises(ValueError):
        parse_json_lines(lines[0] + b"\n", lines, exact_ints=False)
    assert parse_json_lines(lines[0] + b"\n", lines) == [{"n": 10**400}]
    with pytest.raises(ValueError, match="one line per record"):
        hash_record_columns([{"n": 1}], lines=[])


def test_orjson_writes_plain_floats_as_es6() -> None:
    """The shortcut's premise on a sweep of floats: where plain_float holds, orjson's text is the
    rfc8785 package's; and plain_float is exactly 'repr in fixed notation, not integral'."""
    values = [0.1234, 1e-4, 1e16, 2.0**53, 4503599627370496.5, 123456.789, 1 / 3]
    for base in (1e-4, 1e16, 2.0**52, 2.0**53, 1.0, 0.5):
        value = base
        for _ in range(40):
            value = math.nextafter(value, 0.0)
            values.append(value)
        value = base
        for _ in range(40):
            value = math.nextafter(value, math.inf)
            values.append(value)
    for value in values + [-v for v in values]:
        check_plain_float(value)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.floats(), st.floats(min_value=1e-5, max_value=1e17), edge_floats))
def test_plain_float_rule_against_repr_orjson_and_rfc8785(value: float) -> None:
    check_plain_float(value)


def check_plain_float(value: float) -> None:
    text = repr(value)
    fixed_fraction = math.isfinite(value) and "e" not in text and not text.endswith(".0")
    assert plain_float(value) == fixed_fraction, text
    if fixed_fraction:
        assert orjson.dumps(value).decode() == text
        assert jcs_reference(value).decode() == text


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=32, max_size=32),
    st.lists(st.binary(min_size=32, max_size=32), max_size=6),
)
def test_record_leaf_is_jcs_of_the_leaf_object(digest: bytes, segments: list[bytes]) -> None:
    leaf = record_leaf(digest, segments + segments[:1])
    expected = jcs_reference(
        {"sha256": digest.hex(), "segments": sorted({s.hex() for s in segments})}
    )
    assert leaf == expected


def test_record_leaf_rejects_wrong_digest_lengths() -> None:
    with pytest.raises(HashInputError, match="32-byte"):
        record_leaf(b"\x00" * 31, [])
    with pytest.raises(HashInputError, match="found 33 bytes"):
        record_leaf(b"\x00" * 32, [b"\x00" * 33])


def test_sha256_helpers() -> None:
    assert (
        sha256(b"abc").hex()
        == sha256_hex(b"abc")
        == ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    )


# --------------------------------------------------------------------------------------------
# Call outputs
# --------------------------------------------------------------------------------------------

ANSWER = "Paris is the capital of France.\n\nIt lies on the Seine, in the north of the country."
ARGS = '{"city": "Paris", "fields": ["population", "area"]}'


def test_response_texts_chat_completion() -> None:
    response = {
        "choices": [
            {"index": 0, "message": {"content": ANSWER, "tool_calls": None}},
            {
                "index": 1,
                "message": {
                    "content": None,
                    "tool_calls": [
                        {"type": "function", "function": {"name": "f", "arguments": ARGS}}
                    ],
                },
            },
            {
                "index": 2,
                "message": {"content": [{"type": "text", "text": "part one"}, "part two"]},
            },
            {"index": 3, "message": {"content": None, "function_call": {"arguments": "{}"}}},
        ]
    }
    assert response_texts(response) == [ANSWER, ARGS, "part one", "part two", "{}"]


def test_response_texts_legacy_completion_and_responses_api() -> None:
    assert response_texts({"choices": [{"text": ANSWER}, {"text": None}]}) == [ANSWER]
    responses = {
        "output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "a summary"}]},
            {
                "type": "message",
                "content": [
                    {"type": "output_text", "text": ANSWER},
                    {"type": "refusal", "refusal": "no"},
                ],
            },
            {"type": "function_call", "name": "f", "arguments": ARGS},
        ],
        "output_text": ANSWER,
    }
    # a reasoning summary is a text of the output (DESIGN "Texts of a call's output")
    assert response_texts(responses) == ["a summary", ANSWER, ARGS, ANSWER]
    assert response_texts({}) == []


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_stream_texts_concatenate_deltas_per_choice_and_tool_call() -> None:
    chunks: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    for i, piece in enumerate(_pieces(ANSWER, 7)):
        chunks.append({"choices": [{"index": 0, "delta": {"content": piece}}]})
        if i < len(_pieces(ARGS, 5)):
            call = {"index": 0, "function": {"arguments": _pieces(ARGS, 5)[i]}}
            chunks.append({"choices": [{"index": 1, "delta": {"tool_calls": [call]}}]})
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    assert sorted(stream_texts(chunks)) == sorted([ANSWER, ARGS])
    whole = {
        "choices": [
            {"message": {"content": ANSWER}},
            {"message": {"tool_calls": [{"function": {"arguments": ARGS}}]}},
        ]
    }
    assert call_outputs(stream_texts(chunks)) == call_outputs(response_texts(whole))


def test_stream_texts_completions_and_responses_events() -> None:
    completions = [{"choices": [{"index": 0, "text": p}]} for p in _pieces(ANSWER, 9)]
    assert stream_texts(completions) == [ANSWER]
    events: list[dict[str, Any]] = [{"type": "response.created", "response": {}}]
    events += [
        {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": p}
        for p in _pieces(ANSWER, 4)
    ]
    events += [
        {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": p}
        for p in _pieces(ARGS, 3)
    ]
    assert stream_texts(events) == [ANSWER, ARGS]
