"""Readers for training-data files: real JSONL, Parquet and text files written in tmp_path.

Expected values come from independent sources: the standard library's `json` and `datetime`,
`rfc8785` for canonical JSON, `hashlib`, pyarrow itself, and the golden vectors.
"""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.engine import kernel
from ledger.engine.pool import SlotRing
from ledger.errors import InputError, UsageError
from ledger.ingest import blocks as line_blocks
from ledger.ingest import parquet, pipeline
from ledger.ingest import pipeline as records
from ledger.ingest.blocks import InRing, iter_blocks, iter_ring_blocks, ring_slot_size
from ledger.ingest.formats import RECORD_FORMATS, detect_format
from ledger.ingest.pipeline import iter_record_hashes, iter_records
from ledger.ingest.reader import BOM, RingSpace, file_sha256

VECTORS = json.loads((Path(__file__).parent / "conformance.json").read_text(encoding="utf-8"))
FAST = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def error_of(path: Path, fmt: str | None = None) -> str:
    with pytest.raises(InputError) as info:
        list(iter_records(path, fmt))
    message = str(info.value)
    assert "\n" not in message
    return message


def flat_hashes(paths: list[Path], **options: Any) -> list[Any]:
    return [h for chunk in iter_record_hashes(paths, **options) for h in chunk]


# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.jsonl", "jsonl"),
        ("a.NDJSON", "jsonl"),
        ("a.json", "jsonl"),
        ("b.parquet", "parquet"),
        ("b.PQ", "parquet"),
        ("c.txt", "txt"),
    ],
)
def test_detect_format_by_extension(name: str, fmt: str) -> None:
    assert detect_format(Path(name)) == fmt
    assert fmt in RECORD_FORMATS


def test_detect_format_rejects_unknown_extension_naming_file() -> None:
    with pytest.raises(InputError, match=r"data\.csv: cannot tell the record format.*found \.csv"):
        detect_format(Path("data.csv"))


def test_gzipped_json_lines_and_text_give_the_records_of_the_plain_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`.jsonl.gz` and `.txt.gz` are read through gzip: the same records, line numbers and hashes as
    the plain file, through the worker pool too; the source digest is of the compressed bytes."""
    text = "A paragraph of training text that is long enough to be a segment, number "
    lines = b"".join(json.dumps({"t": text + str(i), "n": i}).encode() + b"\n" for i in range(3000))
    plain = write(tmp_path / "train.jsonl", b"\xef\xbb\xbf" + lines + b"\n  \n" + b'{"last": 1}')
    packed = write(tmp_path / "train.JSONL.gz", gzip.compress(plain.read_bytes()))
    assert detect_format(packed) == "jsonl"
    assert list(iter_records(packed)) == list(iter_records(plain))
    monkeypatch.setattr(pipeline, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(line_blocks, "BLOCK_SIZE", 4096)
    for workers in (1, 2):
        digests: dict[Path, str] = {}
        done: list[int] = []
        hashes = flat_hashes([packed], workers=workers, file_digests=digests, progress=done.append)
        assert hashes == flat_hashes([plain], workers=1)
        assert digests == {packed: hashlib.sha256(packed.read_bytes()).hexdigest()}
        assert sum(done) == packed.stat().st_size
    words = write(tmp_path / "lines.txt.gz", gzip.compress(b"first line\r\n\nsecond line"))
    assert list(iter_records(words)) == [(1, "first line"), (3, "second line")]


def test_broken_gzip_is_one_line_naming_the_file(tmp_path: Path) -> None:
    data = gzip.compress(b'{"a": 1}\n' * 50_000)
    cut = write(tmp_path / "cut.jsonl.gz", data[: len(data) // 2])
    assert error_of(cut).startswith(f"{cut}:")
    assert "cannot read" in error_of(cut)
    plain = write(tmp_path / "plain.jsonl.gz", b'{"a": 1}\n')
    assert f"{plain}:1: cannot read" in error_of(plain)
    with pytest.raises(
        InputError, match=r"rows\.parquet\.gz: cannot tell the record format.*found \.parquet\.gz"
    ):
        detect_format(tmp_path / "rows.parquet.gz")
    with pytest.raises(InputError, match=r"data\.gz: cannot tell.*found no extension\.gz"):
        detect_format(tmp_path / "data.gz")


def test_unknown_format_name_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", b'{"a": 1}\n')
    with pytest.raises(UsageError, match="unknown record format 'csv'"):
        list(iter_records(path, "csv"))


def test_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    assert error_of(missing).startswith(f"{missing}: cannot read")


# --- JSONL -----------------------------------------------------------------------------------------


def test_jsonl_skips_blank_lines_accepts_crlf_and_bom(tmp_path: Path) -> None:
    path = write(
        tmp_path / "data.jsonl",
        b'\xef\xbb\xbf{"a": 1}\r\n\r\n   \n{"b": [true, null]}\n\t\n{"c": "\xc3\xa9"}',
    )
    assert list(iter_records(path)) == [(1, {"a": 1}), (4, {"b": [True, None]}), (6, {"c": "é"})]


def test_jsonl_keeps_big_integers_exact(tmp_path: Path) -> None:
    path = write(tmp_path / "ids.jsonl", b'{"id": 1152921504606846976, "neg": -9007199254740993}\n')
    assert list(iter_records(path)) == [(1, {"id": 2**60, "neg": -(2**53) - 1})]


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"[1, 2]", "array"),
        (b'"text"', "string"),
        (b"3", "number"),
        (b"null", "null"),
        (b"true", "boolean"),
    ],
)
def test_jsonl_line_that_is_not_an_object(tmp_path: Path, line: bytes, kind: str) -> None:
    path = write(tmp_path / "data.jsonl", b'{"ok": 1}\n' * 16 + line + b"\n")
    assert error_of(path) == f"{path}:17: not a JSON object (found {kind})"


def test_jsonl_invalid_utf8_names_line_and_byte(tmp_path: Path) -> None:
    path = write(tmp_path / "data.jsonl", b'{"a": 1}\n\n{"a": "caf\xe9"}\n')
    assert error_of(path) == f"{path}:3: invalid UTF-8 at byte 11 of the line"


def test_jsonl_truncated_last_line_is_reported_as_such(tmp_path: Path) -> None:
    path = write(tmp_path / "data.jsonl", b'{"a": 1}\n{"a": 2}\n{"a": [1, 2')
    message = error_of(path)
    assert message.startswith(f"{path}:3: invalid JSON (")
    assert "truncated" in message


def test_jsonl_last_line_without_newline_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path / "data.jsonl", b'{"a": 1}\n{"a": 2}')
    assert [n for n, _ in iter_records(path)] == [1, 2]


def test_jsonl_nan_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "data.jsonl", b'{"a": 1}\n{"a": NaN}\n')
    assert error_of(path).startswith(f"{path}:2: invalid JSON")


def test_records_before_a_bad_line_are_yielded_first(tmp_path: Path) -> None:
    path = write(tmp_path / "data.jsonl", b'{"a": 1}\n{"a": 2}\n[3]\n')
    seen = []
    with pytest.raises(InputError, match=r":3: not a JSON object"):
        for number, _ in iter_records(path):
            seen.append(number)
    assert seen == [1, 2]


def test_dot_json_holding_one_document_gets_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path / "data.json", b"[1, 2, 3]\n")
    assert "read as JSON Lines" in error_of(path)


def test_jsonl_line_longer_than_a_block(tmp_path: Path) -> None:
    huge = "x" * (line_blocks.BLOCK_SIZE * 2 + 17)
    lines = [json.dumps({"n": 1}), json.dumps({"huge": huge}), "", json.dumps({"n": 3})]
    path = write(tmp_path / "big.jsonl", "\n".join(lines).encode() + b"\n")
    assert list(iter_records(path)) == [(1, {"n": 1}), (2, {"huge": huge}), (4, {"n": 3})]


@pytest.mark.parametrize("content", [b"", b"\n\n  \r\n", b"\xef\xbb\xbf"])
def test_jsonl_without_records_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path / "empty.jsonl", content)
    assert error_of(path) == f"{path}: no records (the file is empty or holds only blank lines)"
    with pytest.raises(InputError, match="no records"):
        flat_hashes([path])


_line_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=12
)


@FAST
@given(
    lines=st.lists(_line_text, max_size=30),
    block_size=st.integers(1, 40),
    final_newline=st.booleans(),
)
def test_blocks_cut_only_at_newlines_and_number_lines_right(
    tmp_path: Path, lines: list[str], block_size: int, final_newline: bool
) -> None:
    data = "\n".join(lines).encode() + (b"\n" if final_newline and lines else b"")
    path = write(tmp_path / "p.txt", data)
    blocks = list(iter_blocks(path, "txt", None, block_size=block_size))
    assert b"".join(b.data for b in blocks) == data
    assert all(b.data.endswith(b"\n") for b in blocks[:-1])
    assert sum(b.nbytes for b in blocks) == len(data)
    expected_line = 1
    for block in blocks:
        assert block.first_line == expected_line
        expected_line += block.data.count(b"\n")


@FAST
@given(
    lines=st.lists(
        st.one_of(_line_text, st.text(alphabet="ab", min_size=30, max_size=90)), max_size=30
    ),
    block_size=st.integers(4, 40),
    final_newline=st.booleans(),
    bom=st.booleans(),
)
def test_blocks_read_into_the_ring_are_the_blocks_read_into_bytes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lines: list[str],
    block_size: int,
    final_newline: bool,
    bom: bool,
) -> None:
    """The pool's reader puts blocks straight into shared-memory slots (lines longer than a slot
    take the bytes way); it must cut, number, count and hash exactly like `_iter_blocks`."""
    monkeypatch.setattr(line_blocks, "BLOCK_SIZE", block_size)
    data = "\n".join(lines).encode() + (b"\n" if final_newline and lines else b"")
    path = write(tmp_path / "r.txt", (b"\xef\xbb\xbf" if bom else b"") + data)
    ring = SlotRing(3, ring_slot_size())
    used = [0]  # the pool's count of submitted tasks: each ring block takes the next slot
    space = RingSpace(ring, lambda: used[0] % ring.slots)
    sha = hashlib.sha256()
    got: list[tuple[int, bytes, bool]] = []
    nbytes = 0
    for item in iter_ring_blocks(path, "txt", sha, space):
        if isinstance(item, InRing):
            used[0] += 1
            start = item.slot * ring.slot_size + item.offset
            got.append((item.block.first_line, ring.memory[start : start + item.size], False))
            nbytes += item.block.nbytes
        else:
            got.append((item.first_line, bytes(item.data), item.at_eof))
            nbytes += item.nbytes
    ring.memory.close()
    assert b"".join(d for _, d, _ in got) == data
    assert all(d.endswith(b"\n") for _, d, _ in got[:-1])
    assert nbytes == path.stat().st_size
    assert sha.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    expected_line = 1
    for first_line, block, _ in got:
        assert first_line == expected_line
        expected_line += block.count(b"\n")
    eofs = [eof for _, _, eof in got]
    assert not any(eofs[:-1])
    if got:
        assert eofs[-1] == (not got[-1][1].endswith(b"\n"))  # an unterminated last line


def test_a_ring_slot_used_before_leaves_nothing_behind(tmp_path: Path) -> None:
    """Files of one run share the ring: what an earlier file left in a slot (here a byte order
    mark) must not leak into a later, shorter file's block."""
    ring = SlotRing(1, ring_slot_size())
    space = RingSpace(ring, lambda: 0)
    first = write(tmp_path / "a.txt", b"\xef\xbb\xbfbom first\n" * 3)
    list(iter_ring_blocks(first, "txt", None, space))
    assert ring.memory[:3] == BOM  # left in the slot
    for data in (b"\xef", b"\xef\xbb", b"ab", b"x\n"):
        second = write(tmp_path / "b.txt", data)
        read = list(iter_ring_blocks(second, "txt", None, space))
        got = b"".join(
            ring.memory[b.slot * ring.slot_size + b.offset :][: b.size]
            if isinstance(b, InRing)
            else bytes(b.data)
            for b in read
        )
        assert got == data
    ring.memory.close()


@FAST
@given(lines=st.lists(_line_text, max_size=30), crlf=st.booleans())
def test_text_records_are_the_lines_without_endings(
    tmp_path: Path, lines: list[str], crlf: bool
) -> None:
    ending = "\r\n" if crlf else "\n"
    lines = [line.rstrip("\r") for line in lines]
    path = write(tmp_path / "p.txt", ending.join(lines).encode() + ending.encode())
    expected = [(i + 1, line) for i, line in enumerate(lines) if line]
    if not expected:
        assert "no records" in error_of(path)
    else:
        assert list(iter_records(path)) == expected


# --- text --------------------------------------------------------------------------------------------


def test_txt_crlf_empty_lines_bom_and_whitespace_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", b"\xef\xbb\xbfline one\r\n\r\n  \r\nline four\n\nlast")
    assert list(iter_records(path)) == [(1, "line one"), (3, "  "), (4, "line four"), (6, "last")]


def test_txt_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", b"fine\n\xff\xfe bad\n")
    assert error_of(path) == f"{path}:2: invalid UTF-8 at byte 1 of the line"


def test_txt_record_hash_matches_vector(tmp_path: Path) -> None:
    vector = VECTORS["text_record"]
    path = write(tmp_path / "t.txt", (vector["line"] + "\r\n").encode())
    [h] = flat_hashes([path])
    assert h.digest.hex() == vector["sha256"]
    assert h.digest == hashlib.sha256(vector["line"].encode()).digest()


# --- Parquet ---------------------------------------------------------------------------------------


def write_table(path: Path, table: pa.Table, **options: Any) -> Path:
    pq.write_table(table, path, **options)
    return path


def test_parquet_rows_keep_nulls_and_big_ids(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": pa.array([2**62 + 1, -(2**63), None], pa.int64()),
            "text": ["a", None, "c"],
            "score": [0.5, None, 1e21],
            "ok": [True, False, None],
        }
    )
    path = write_table(tmp_path / "t.parquet", table)
    assert list(iter_records(path)) == [
        (1, {"id": 2**62 + 1, "text": "a", "score": 0.5, "ok": True}),
        (2, {"id": -(2**63), "text": None, "score": None, "ok": False}),
        (3, {"id": None, "text": "c", "score": 1e21, "ok": None}),
    ]


def test_parquet_timestamps_are_rfc3339_utc(tmp_path: Path) -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    instant = dt.datetime(2024, 5, 1, 14, 30, 15, 250000, tzinfo=paris)
    table = pa.table(
        {
            "aware_us": pa.array([instant, None], pa.timestamp("us", tz="Europe/Paris")),
            "naive_s": pa.array(
                [dt.datetime(1999, 12, 31, 23, 59, 59), dt.datetime(1970, 1, 1)], pa.timestamp("s")
            ),
            "ns": pa.array([1_700_000_000_123_456_789, 1], pa.timestamp("ns", tz="UTC")),
            "day": pa.array([dt.date(2020, 2, 29), None], pa.date32()),
            "clock": pa.array([dt.time(1, 2, 3, 400000), dt.time(0, 0)], pa.time64("us")),
        }
    )
    path = write_table(tmp_path / "t.parquet", table)
    rows = [r for _, r in iter_records(path)]
    assert rows[0] == {
        "aware_us": "2024-05-01T12:30:15.25Z",
        "naive_s": "1999-12-31T23:59:59Z",
        "ns": "2023-11-14T22:13:20.123456789Z",
        "day": "2020-02-29",
        "clock": "01:02:03.4",
    }
    assert rows[1] == {
        "aware_us": None,
        "naive_s": "1970-01-01T00:00:00Z",
        "ns": "1970-01-01T00:00:00.000000001Z",
        "day": None,
        "clock": "00:00:00",
    }


@FAST
@given(
    moment=st.datetimes(
        min_value=dt.datetime(1, 1, 1),
        max_value=dt.datetime(9999, 12, 31),
        timezones=st.just(dt.UTC),
    )
)
def test_parquet_timestamp_strings_read_back_as_the_same_instant(
    tmp_path: Path, moment: dt.datetime
) -> None:
    path = write_table(
        tmp_path / "t.parquet", pa.table({"t": pa.array([moment], pa.timestamp("us", tz="UTC"))})
    )
    [(_, row)] = list(iter_records(path))
    text = row["t"]
    assert text.endswith("Z")
    assert dt.datetime.fromisoformat(text) == moment


def test_parquet_nested_lists_structs_and_maps(tmp_path: Path) -> None:
    messages = pa.list_(
        pa.struct(
            [("role", pa.string()), ("content", pa.string()), ("at", pa.timestamp("ms", tz="UTC"))]
        )
    )
    table = pa.table(
        {
            "messages": pa.array(
                [[{"role": "user", "content": "hi", "at": 1000}], None, []], messages
            ),
            "tags": pa.array(
                [{"k": [1, None]}, {"k": None}, None], pa.struct([("k", pa.list_(pa.int64()))])
            ),
            "attrs": pa.array(
                [[("a", 1), ("b", None)], [], None], pa.map_(pa.string(), pa.int32())
            ),
            "cat": pa.array(["x", "y", None]).dictionary_encode(),
        }
    )
    path = write_table(tmp_path / "t.parquet", table)
    assert [r for _, r in iter_records(path)] == [
        {
            "messages": [{"role": "user", "content": "hi", "at": "1970-01-01T00:00:01Z"}],
            "tags": {"k": [1, None]},
            "attrs": {"a": 1, "b": None},
            "cat": "x",
        },
        {"messages": None, "tags": {"k": None}, "attrs": {}, "cat": "y"},
        {"messages": [], "tags": None, "attrs": None, "cat": None},
    ]


def test_parquet_binary_column_is_an_error_naming_column_and_row(tmp_path: Path) -> None:
    table = pa.table({"id": [1, 2, 3], "blob": pa.array([None, None, b"\x00\x01"], pa.binary())})
    path = write_table(tmp_path / "t.parquet", table)
    assert error_of(path) == f"{path}: row 3, column 'blob': binary values have no JSON form"


def test_parquet_nested_binary_names_the_field_path(tmp_path: Path) -> None:
    typ = pa.struct([("meta", pa.struct([("raw", pa.large_binary())]))])
    path = write_table(
        tmp_path / "t.parquet", pa.table({"s": pa.array([{"meta": {"raw": b"x"}}], typ)})
    )
    assert error_of(path) == f"{path}: row 1, column 's.meta.raw': binary values have no JSON form"


def test_parquet_error_row_counts_across_batches(tmp_path: Path) -> None:
    n = parquet.PARQUET_BATCH_ROWS + 10
    blobs = [None] * n
    blobs[-1] = b"z"
    path = write_table(
        tmp_path / "t.parquet",
        pa.table({"blob": pa.array(blobs, pa.binary())}),
        row_group_size=1000,
    )
    assert error_of(path).startswith(f"{path}: row {n}, column 'blob'")


def test_parquet_decimals(tmp_path: Path) -> None:
    table = pa.table(
        {
            "price": pa.array(
                [decimal.Decimal("1.10"), decimal.Decimal("-0.05")], pa.decimal128(5, 2)
            ),
            "big_id": pa.array([decimal.Decimal(10**30 + 7), None], pa.decimal128(38, 0)),
        }
    )
    path = write_table(tmp_path / "t.parquet", table)
    assert [r for _, r in iter_records(path)] == [
        {"price": 1.1, "big_id": 10**30 + 7},
        {"price": -0.05, "big_id": None},
    ]


def test_parquet_decimal_beyond_double_is_an_error(tmp_path: Path) -> None:
    exact = decimal.Decimal("0.12345678901234567890123")
    table = pa.table({"d": pa.array([decimal.Decimal("0.5"), exact], pa.decimal128(38, 23))})
    path = write_table(tmp_path / "t.parquet", table)
    message = error_of(path)
    assert message.startswith(f"{path}: row 2, column 'd': decimal 0.12345678901234567890123")
    assert "double" in message


def test_parquet_float32_reads_as_its_short_decimal(tmp_path: Path) -> None:
    path = write_table(
        tmp_path / "t.parquet", pa.table({"f": pa.array([0.1, 3.4028235e38, 1e-45], pa.float32())})
    )
    assert [r["f"] for _, r in iter_records(path)] == [0.1, 3.4028235e38, 1e-45]  # type: ignore[index]


def test_parquet_duration_has_no_json_form(tmp_path: Path) -> None:
    path = write_table(tmp_path / "t.parquet", pa.table({"d": pa.array([5], pa.duration("s"))}))
    assert error_of(path) == f"{path}: row 1, column 'd': duration[s] values have no JSON form"


def test_parquet_without_rows_is_an_error(tmp_path: Path) -> None:
    path = write_table(tmp_path / "t.parquet", pa.table({"a": pa.array([], pa.int64())}))
    assert error_of(path) == f"{path}: no rows"


def test_file_that_is_not_parquet(tmp_path: Path) -> None:
    path = write(tmp_path / "fake.parquet", b'{"a": 1}\n')
    assert error_of(path).startswith(f"{path}: not a readable Parquet file")


def test_parquet_nan_is_an_error_naming_the_row(tmp_path: Path) -> None:
    path = write_table(tmp_path / "t.parquet", pa.table({"x": [1.0, float("nan")]}))
    with pytest.raises(InputError, match=rf"^{path}: row 2: .*NaN"):
        flat_hashes([path])


# --- hashes ----------------------------------------------------------------------------------------


def test_record_hashes_match_golden_vectors(tmp_path: Path) -> None:
    vectors = VECTORS["records"]
    path = write(
        tmp_path / "v.jsonl", "\n".join(v["record_json"] for v in vectors).encode() + b"\n"
    )
    hashes = flat_hashes([path])
    assert [h.digest.hex() for h in hashes] == [v["sha256"] for v in vectors]
    assert [[s.hex() for s in h.segments] for h in hashes] == [v["segments"] for v in vectors]
    assert [h.leaf.decode() for h in hashes] == [v["record_leaf"] for v in vectors]


def test_same_rows_from_jsonl_and_parquet_hash_alike(tmp_path: Path) -> None:
    rows = [
        {
            "id": 2**53 - 1,
            "text": "Sixty-four bit identifiers survive canonicalization exactly.",
            "score": 0.25,
            "tags": ["a", None],
            "meta": {"n": 3, "ok": True},
            "missing": None,
        },
        {
            "id": -5,
            "text": "A second record that is long enough to make a segment.",
            "score": 1e21,
            "tags": [],
            "meta": {"n": None, "ok": False},
            "missing": None,
        },
    ]
    table = pa.Table.from_pylist(rows)
    parquet = write_table(tmp_path / "r.parquet", table)
    jsonl = write(tmp_path / "r.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    from_parquet = flat_hashes([parquet])
    from_jsonl = flat_hashes([jsonl])
    assert [h.digest for h in from_parquet] == [h.digest for h in from_jsonl]
    assert [h.segments for h in from_parquet] == [h.segments for h in from_jsonl]
    assert [h.digest for h in from_jsonl] == [
        hashlib.sha256(rfc8785.dumps(r)).digest() for r in rows
    ]


def test_big_integer_vector_from_parquet(tmp_path: Path) -> None:
    vector = VECTORS["records"][2]
    row = json.loads(vector["record_json"])
    assert row["id"] > 2**53
    parquet = write_table(tmp_path / "v.parquet", pa.Table.from_pylist([row]))
    [h] = flat_hashes([parquet])
    assert h.digest.hex() == vector["sha256"]
    assert h.leaf.decode() == vector["record_leaf"]


def test_parquet_timestamp_row_hashes_like_its_jsonl_form(tmp_path: Path) -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    parquet = write_table(
        tmp_path / "t.parquet",
        pa.table(
            {
                "at": pa.array([when], pa.timestamp("us", tz="UTC")),
                "price": pa.array([decimal.Decimal("9.99")], pa.decimal128(4, 2)),
            }
        ),
    )
    jsonl = write(tmp_path / "t.jsonl", b'{"price": 9.99, "at": "2024-01-02T03:04:05Z"}\n')
    assert [h.digest for h in flat_hashes([parquet])] == [h.digest for h in flat_hashes([jsonl])]


def test_chunks_follow_input_order_and_never_span_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", "".join(json.dumps({"i": i}) + "\n" for i in range(7)).encode())
    b = write(tmp_path / "b.txt", b"x\ny\n")
    c = write_table(tmp_path / "c.parquet", pa.table({"i": list(range(7, 12))}))
    chunks = list(iter_record_hashes([a, b, c], chunk_size=3))
    assert [len(ch) for ch in chunks] == [3, 3, 1, 2, 3, 2]
    expected = [hashlib.sha256(rfc8785.dumps({"i": i})).digest() for i in range(7)]
    expected += [hashlib.sha256(b"x").digest(), hashlib.sha256(b"y").digest()]
    expected += [hashlib.sha256(rfc8785.dumps({"i": i})).digest() for i in range(7, 12)]
    assert [h.digest for ch in chunks for h in ch] == expected


def test_text_fields_and_min_chars_reach_the_hasher(tmp_path: Path) -> None:
    long_a = "alpha " * 10
    long_b = "bravo " * 10
    path = write(tmp_path / "a.jsonl", json.dumps({"a": long_a, "b": long_b}).encode() + b"\n")
    [only_a] = flat_hashes([path], text_fields=["a"])
    assert only_a.texts == (" ".join(long_a.split()),)
    [none] = flat_hashes([path], min_chars=1000)
    assert none.segments == ()


def test_pool_gives_the_same_chunks_and_the_same_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "a long enough training text for a segment, number "
    good = write(
        tmp_path / "good.jsonl",
        "".join(json.dumps({"i": i, "t": text + str(i)}) + "\n" for i in range(3000)).encode(),
    )
    bad = write(tmp_path / "bad.jsonl", b'{"i": 1}\n' * 2500 + b'{"i": 2}\n[]\n')
    monkeypatch.setattr(pipeline, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(line_blocks, "BLOCK_SIZE", 4096)
    inline = list(iter_record_hashes([good, good], chunk_size=1000, workers=1))
    pooled = list(iter_record_hashes([good, good], chunk_size=1000, workers=2))
    assert pooled == inline
    assert [len(c) for c in pooled] == [1000] * 6
    with pytest.raises(InputError) as info:
        list(iter_record_hashes([good, bad], workers=2))
    assert str(info.value) == f"{bad}:2502: not a JSON object (found array)"
    assert info.value.__cause__ is None


def test_file_digests_and_progress_cover_the_bytes_read(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", b'\xef\xbb\xbf{"a": 1}\n\n{"a": 2}')
    b = write_table(tmp_path / "b.parquet", pa.table({"x": list(range(100))}))
    digests: dict[Path, str] = {}
    done: list[int] = []
    flat_hashes([a, b], file_digests=digests, progress=done.append)
    assert digests == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)}
    assert sum(done) == a.stat().st_size + b.stat().st_size


def test_file_sha256_streams_a_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    path = write(tmp_path / "w.bin", data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(InputError, match="cannot read"):
        file_sha256(tmp_path / "missing.bin")


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", b'{"a": 1}\n')
    with pytest.raises(UsageError):
        list(iter_record_hashes([path], chunk_size=0))
    with pytest.raises(UsageError):
        list(iter_record_hashes([path], workers=0))


def test_a_missing_later_file_fails_before_any_work(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", b'{"a": 1}\n')
    stream = iter_record_hashes([path, tmp_path / "gone.jsonl"])
    with pytest.raises(InputError, match="gone.jsonl: cannot read"):
        next(stream)


def test_fingerprints_computed_beside_the_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger.spec.fingerprint import fingerprint_records

    text = "Paragraph of training text that is long enough to be a segment, copy "
    path = write(
        tmp_path / "fp.jsonl",
        "".join(json.dumps({"t": text + str(i), "n": i}) + "\n" for i in range(600)).encode(),
    )
    plain = flat_hashes([path])
    expected = fingerprint_records([h.texts for h in plain])
    monkeypatch.setattr(pipeline, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(line_blocks, "BLOCK_SIZE", 2048)
    for workers in (1, 2):
        chunks = list(
            records.iter_fingerprinted_record_hashes(
                [path], fingerprint_records, chunk_size=250, workers=workers
            )
        )
        assert [len(h) for h, _ in chunks] == [250, 250, 100]
        assert [len(f) for _, f in chunks] == [250, 250, 100]
        assert [f for _, fps in chunks for f in fps] == expected
        got = [h for hs, _ in chunks for h in hs]
        assert [(h.digest, h.segments) for h in got] == [(h.digest, h.segments) for h in plain]
        assert all(h.texts == () for h in got)
    [(kept, _)] = list(
        records.iter_fingerprinted_record_hashes([path], fingerprint_records, keep_texts=True)
    )
    assert kept == plain


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def test_record_columns_equal_the_record_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bulk path gives the same records, in order, whether blocks travel through the shared
    ring, through the pipe (a line longer than a ring slot) or stay in the process, and whether
    their columns come back through the result ring or (too big for a slot) through the pipe."""
    from ledger.spec.fingerprint import fingerprint_record_blobs, fingerprint_records

    text = "Paragraph of training text that is long enough to be a segment, copy "
    lines = [{"t": text + str(i), "n": i, "x": [i / 3, None]} for i in range(700)]
    lines[350]["long"] = "word " * 2000  # a 10 kB line: a block bigger than a ring slot
    lines[500] = {"n": 500}  # no segments at all
    path = write(tmp_path / "cols.jsonl", "".join(json.dumps(r) + "\n" for r in lines).encode())
    empty = write(tmp_path / "empty.jsonl", b"\n\n")
    expected = flat_hashes([path], workers=1)
    monkeypatch.setattr(pipeline, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(line_blocks, "BLOCK_SIZE", 2048)
    from_ring: list[int] = []
    from_buffers = kernel.RecordColumns.from_buffers  # called only for columns placed in the ring

    def counted(count: int, parts: Any) -> Any:
        from_ring.append(count)
        return from_buffers(count, parts)

    monkeypatch.setattr(kernel.RecordColumns, "from_buffers", counted)
    for workers, result_slot in ((1, None), (2, None), (2, 3000)):
        from_ring.clear()
        if result_slot is not None:
            monkeypatch.setattr(pipeline, "RESULT_SLOT_SIZE", result_slot)
        digests: dict[Path, str] = {}
        done: list[int] = []
        blocks = list(
            records.iter_record_columns(
                [path],
                fingerprint_record_blobs,
                workers=workers,
                file_digests=digests,
                progress=done.append,
            )
        )
        assert len(blocks) > 10 and all(b.count for b in blocks)
        assert sum(done) == path.stat().st_size
        assert digests == {path: hashlib.sha256(path.read_bytes()).hexdigest()}
        digest = b"".join(b.digests for b in blocks)
        assert digest == b"".join(h.digest for h in expected)
        counts = [int(c) for b in blocks for c in b.segment_counts]
        assert counts == [len(h.segments) for h in expected]
        assert b"".join(b.segments for b in blocks) == b"".join(
            s for h in expected for s in h.segments
        )
        leaves = [
            _leaf_hash(
                rfc8785.dumps({"sha256": h.digest.hex(), "segments": [s.hex() for s in h.segments]})
            )
            for h in expected
        ]
        assert b"".join(b.leaf_hashes for b in blocks) == b"".join(leaves)
        blobs = []
        for b in blocks:
            starts = [0, *b.fingerprint_ends[:-1]]
            blobs += [b.fingerprints[s:e] for s, e in zip(starts, b.fingerprint_ends)]
        assert blobs == fingerprint_records([h.texts for h in expected])
        assert b"".join(b.fingerprint_hashes for b in blocks) == b"".join(map(_leaf_hash, blobs))
        if workers == 1:
            assert not from_ring
        elif result_slot is None:
            # all but the block of the 10 kB line, which went through the pipe both ways
            assert len(expected) - 20 < sum(from_ring) < len(expected)
        else:
            assert 0 < len(from_ring) < len(blocks)  # some blocks' columns did not fit
        with pytest.raises(InputError, match="empty.jsonl: no records"):
            list(
                records.iter_record_columns(
                    [path, empty], fingerprint_record_blobs, workers=workers
                )
            )


def test_a_record_that_parses_but_fails_to_hash_is_named_by_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block parsed in bulk keeps no line numbers; they are rebuilt only to name the bad record."""
    from ledger.spec.fingerprint import fingerprint_record_blobs

    hash_one, hash_columns = kernel.hash_record, kernel.hash_record_columns

    def refuse(record: object, *args: Any) -> Any:
        if isinstance(record, dict) and "boom" in record:
            raise ValueError("cannot hash this")
        return hash_one(record, *args)

    def refuse_all(items: Any, *args: Any, **kwargs: Any) -> Any:
        if any("boom" in record for record in items):
            raise ValueError("cannot hash this block")
        return hash_columns(items, *args, **kwargs)

    monkeypatch.setattr(kernel, "hash_record", refuse)
    monkeypatch.setattr(kernel, "hash_record_columns", refuse_all)
    path = write(
        tmp_path / "boom.jsonl", b'{"i": 1}\n' * 1500 + b'{"boom": 1}\n' + b'{"i": 2}\n' * 10
    )
    monkeypatch.setattr(line_blocks, "BLOCK_SIZE", 4096)  # the bad record is deep in a later block
    with pytest.raises(InputError) as info:
        list(records.iter_record_columns([path], fingerprint_record_blobs, workers=1))
    assert str(info.value) == f"{path}:1501: cannot hash this"


def test_record_columns_report_bad_lines_like_the_record_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger.spec.fingerprint import fingerprint_record_blobs

    bad = write(tmp_path / "bad.jsonl", b'{"i": 1}\n' * 2500 + b'{"i": 2}\n[]\n')
    monkeypatch.setattr(pipeline, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(line_blocks, "BLOCK_SIZE", 4096)
    for workers in (1, 2):
        with pytest.raises(InputError) as info:
            list(records.iter_record_columns([bad], fingerprint_record_blobs, workers=workers))
        assert str(info.value) == f"{bad}:2502: not a JSON object (found array)"


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_jsonl_blocks_parsed_in_the_ring_equal_the_inline_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: bytes
) -> None:
    """Workers parse a block's lines where they lie in shared memory; blank lines, CRLF endings,
    a last line without its newline and a bad line must come out as they do inline."""
    from ledger.spec.fingerprint import fingerprint_record_blobs

    lines = [
        json.dumps({"t": f"a line of text that is long enough to be a segment {i}", "i": i})
        for i in range(600)
    ]
    lines[100] = ""  # a blank line sends its block down the line-by-line path
    data = ending.join(line.encode() for line in lines)  # the last line has no newline
    path = write(tmp_path / "ring.jsonl", data)

    def columns(workers: int) -> tuple[bytes, bytes, bytes]:
        blocks = list(
            records.iter_record_columns([path], fingerprint_record_blobs, workers=workers)
        )
        return tuple(
            b"".join(getattr(b, name) for b in blocks)
            for name in ("digests", "leaf_hashes", "fingerprints")
        )  # type: ignore[return-value]

    inline = columns(1)
    monkeypatch.setattr(pipeline, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(line_blocks, "BLOCK_SIZE", 4096)
    assert columns(2) == inline
    assert len(inline[0]) == 32 * 599
    bad = write(
        tmp_path / "bad.jsonl", data + ending + b'{"t": "no end"' + ending + b'{"i": 1}' + ending
    )
    with pytest.raises(InputError) as info:
        list(records.iter_record_columns([bad], fingerprint_record_blobs, workers=2))
    assert str(info.value).startswith(f"{bad}:601: ")
