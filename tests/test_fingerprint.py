"""Near-match fingerprints: format against a naive reference, determinism, params, search, recall.

The reference below re-implements the documented pipeline with plain Python integers and sets
(one shingle, one hash at a time), so the vectorized module is checked against its specification
rather than against itself. The labelled set is a small slice of benchmarks/near_data.py's real text.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import random
import subprocess
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import FingerprintMismatchError, InputError
from ledger.spec import fingerprint as fpm
from ledger.spec import skeleton
from ledger.spec.text import normalize

ROOT = Path(__file__).resolve().parents[1]
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


# --------------------------------------------------------------------------- naive reference


def _fmix(x: int) -> int:
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & MASK64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & MASK64
    return x ^ (x >> 33)


def _mix(*values: int) -> int:
    h = 0
    for v in values:
        h = _fmix((h ^ (v & MASK64)) + GOLDEN & MASK64)
    return h


def ref_canonical(text: str, fold: bool = False) -> str:
    """Token masks out (the module's documented patterns), then keep letters: alnum but not a digit.

    `fold` (scheme v3): default-ignorable code points out first, one character at a time; the
    letters kept are decomposed (NFD), each replaced by its skeleton letters, and marks dropped.
    """
    if fold:
        ignorable = regex.compile(r"\p{Default_Ignorable_Code_Point}")
        text = "".join(c for c in text if not ignorable.fullmatch(c))
    text = text.replace("\n", " ")
    # the reference removes masks with the very patterns the implementation uses
    for pattern in (skeleton.EMAIL, skeleton.X_RUN, skeleton.BRACKETED):
        text = pattern.sub(" ", text)
    letters = "".join(c for c in text if c.isalnum() and not c.isdecimal())
    if fold:
        table = skeleton.skeleton_table()
        folded = "".join(table.get(ord(c), c) for c in unicodedata.normalize("NFD", letters))
        letters = "".join(c for c in folded if c.isalnum() and not c.isdecimal())
    return letters


def ref_values(text: str, p: fpm.FingerprintParams) -> list[int]:
    """Kept values of one text, one shingle at a time."""
    canon = ref_canonical(text, p.folds).encode("utf-8")
    k = p.shingle_bytes
    shingles = [canon[i : i + k] for i in range(len(canon) - k + 1)] if len(canon) >= k else [canon]
    out: list[int] = []
    multiplier = _mix(p.seed, k, 0x5A3B) | 1
    for sh in shingles if canon else []:
        h = _mix(p.seed, k)
        key = 0
        for word in range(0, k, 8):
            x = int.from_bytes(sh[word : word + 8].ljust(8, b"\0"), "little")
            top = (x << (8 * (8 - min(8, k - word)))) & MASK64  # a part-filled word at the top
            key = ((key ^ top) * multiplier) & MASK64  # sampled by multiply-shift ...
            if word:
                h = (h + GOLDEN) & MASK64
            h = _fmix(h ^ x)  # ... valued by the murmur3 fold
        if key <= (1 << 64) // p.sample_rate - 1:
            v = h & ((1 << p.value_bits) - 1)
            if v not in out:
                out.append(v)
    return out


def ref_keys(values: Sequence[int], p: fpm.FingerprintParams) -> set[int]:
    """Band keys: every run of band_rows consecutive values, mixed, as signed int64."""
    r = p.band_rows
    keys = set()
    for i in range(len(values) - r + 1):
        h = _mix(p.seed, r, 0xBA4D)
        for v in values[i : i + r]:
            h = (_fmix(h ^ v) + GOLDEN) & MASK64
        keys.add(h - (1 << 64) if h >= 1 << 63 else h)
    return keys


def ref_score(needle: Sequence[int], text: Sequence[int], floor: int) -> float:
    """Containment either way: needle inside a 2n-long stretch of the text, or text inside needle."""
    n, m = len(set(needle)), len(text)
    if not n or not m:
        return 0.0
    hit = [v in set(needle) for v in text]
    w = max(2 * n, 2 * floor)
    local = max(sum(hit[i : i + w]) for i in range(max(1, m - w + 1)))
    return min(1.0, max(local / max(n, floor), sum(hit) / max(m, floor)))


def exact_overlap(a: str, b: str, k: int = 8) -> float:
    """Overlap coefficient of the full (unsampled) shingle sets: what the fingerprint estimates."""
    ca, cb = ref_canonical(a).encode(), ref_canonical(b).encode()
    sa = {ca[i : i + k] for i in range(len(ca) - k + 1)}
    sb = {cb[i : i + k] for i in range(len(cb) - k + 1)}
    return len(sa & sb) / max(1, min(len(sa), len(sb)))


# --------------------------------------------------------------------------- real text


def _near_data() -> ModuleType:
    spec = importlib.util.spec_from_file_location("near_data", ROOT / "benchmarks" / "near_data.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["near_data"] = module
    spec.loader.exec_module(module)
    return module


near_data = _near_data()


@pytest.fixture(scope="module")
def paragraphs() -> list[Any]:
    """Prose passages of real English from the first stdlib modules' docstrings."""
    paras = near_data.load_paragraphs(max_stdlib_files=120, max_man_files=0, licenses=False)
    assert len(paras) >= 200, "the stdlib slice should give a few hundred passages"
    return list(paras)


@pytest.fixture(scope="module")
def passages(paragraphs: list[Any]) -> list[str]:
    return [p.text for p in paragraphs]


@pytest.fixture(scope="module")
def labelled(paragraphs: list[Any]) -> Any:
    """60 outputs with their edited variants and 150 distractors (half of them near-topic)."""
    return near_data.make_eval_set(paragraphs, 60, 150, seed=3)


_PIECES = (
    list("abcdefghijklmnopqrstuvwxyz   .,;:!?'\"-_()[]<>{}*#@0123456789\n")
    + list("éüßçøåñ中文字²½٣ⅻ█—“”")
    + ["[mask]", "<name>", "***", "xxxx", "a@b.com", "[redacted]", "the ", "data "]
)
text_st = st.lists(st.sampled_from(_PIECES), max_size=120).map(lambda xs: normalize("".join(xs)))

v2_params_st = st.builds(
    fpm.FingerprintParams,
    scheme=st.just(fpm.SCHEME_V2),
    canon=st.just(fpm.CANON_V2),
    shingle_bytes=st.integers(1, 16),
    sample_rate=st.sampled_from([1, 2, 3, 8, 16]),
    value_bits=st.sampled_from([16, 32]),
    band_rows=st.integers(1, 4),
    seed=st.integers(0, MASK64),
)
# Either scheme: v3 (the default) folds confusables and strips default-ignorables first.
params_st = st.one_of(
    v2_params_st,
    st.builds(
        fpm.FingerprintParams,
        shingle_bytes=st.integers(1, 16),
        sample_rate=st.sampled_from([1, 2, 3, 8, 16]),
        value_bits=st.sampled_from([16, 32]),
        band_rows=st.integers(1, 4),
        seed=st.integers(0, MASK64),
    ),
)


# --------------------------------------------------------------------------- byte identity

# The canonicalization, sampling and blob layout of commit 7f97b91, verbatim, before they were
# rewritten for speed (joined canonical bytes, sampling on the un-finished hash, the blob layout
# by scatter). The rewrite must not change one output byte, so it is compared with this copy.
# One change since: sampled-shingles-v2 samples by a multiply-shift hash (`_sample_keys` below)
# instead of the value hash itself, in the two places marked "v2".
_BEFORE_SPEEDUP = r'''
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ledger.spec.fingerprint import V2_PARAMS as DEFAULT_PARAMS, FingerprintParams  # then the default

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

EMAIL = re.compile(r"(?<!\S)[^\s@]+@\S+")  # a whole token with text on both sides of an "@"
X_RUN = re.compile(r"(?<![^\W\d_])x{3,}(?![^\W\d_])")
BRACKETED = re.compile(r"\[[^\s\[\]]{0,24}\]|<[^\s<>]{0,24}>|\{[^\s{}]{0,24}\}")
# Everything that is not a letter goes: punctuation, symbols (*, #, █), digits, underscores, spaces.
_NON_LETTERS = re.compile(r"[^\w\n]+|[\d_]+")
ASCII_NON_LETTERS = bytes(
    b for b in range(128) if not (65 <= b <= 90 or 97 <= b <= 122 or b == 10)
)


def _drop_rare_tokens(text: str) -> str:
    """Newlines to spaces, e-mail addresses and x-runs out, testing before each slow regex."""
    if "\n" in text:
        text = text.replace("\n", " ")
    if "@" in text:
        text = EMAIL.sub(" ", text)
    if "xxx" in text:
        text = X_RUN.sub(" ", text)
    return text


def _canonical_batch(texts: Sequence[str]) -> list[bytes]:
    """UTF-8 canonical texts: placeholders and e-mails dropped, then every non-letter.

    Masks go as whole tokens first (``[name]`` must not leave ``name`` behind); the rest is a
    per-character filter: ``bytes.translate`` drops ASCII non-letters (exactly what the regular
    expression drops among ASCII characters) and the regular expression handles the rest.
    """
    if not texts:  # "\n".join([]) splits back into one empty text, not none
        return []
    joined = "\n".join(texts)
    if joined.count("\n") != len(texts) - 1 or "@" in joined or "xxx" in joined:
        # Rare: per text, because these patterns are slow on a whole batch.
        joined = "\n".join(_drop_rare_tokens(t) for t in texts)
    if "[" in joined or "<" in joined or "{" in joined:
        joined = BRACKETED.sub(" ", joined)
    # Non-letters are removed char by char, so ASCII ones can go first for the whole batch (UTF-8
    # bytes >= 0x80 survive the translate) and only non-ASCII texts need the regular expression.
    out = joined.encode("utf-8").translate(None, ASCII_NON_LETTERS).split(b"\n")
    if not joined.isascii():
        for i, t in enumerate(out):
            if not t.isascii():
                out[i] = _NON_LETTERS.sub("", t.decode("utf-8")).encode("utf-8")
    if len(out) != len(texts):  # pragma: no cover - nothing above removes or adds "\n"
        raise AssertionError("canonicalization lost a text boundary")
    return out


# --------------------------------------------------------------------------- hashing

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = 0x9E3779B97F4A7C15
_S33 = np.uint64(33)


def _fmix64(x: U64) -> U64:
    """MurmurHash3's 64-bit finalizer, in place (a bijection with full avalanche)."""
    t = np.empty_like(x)
    np.right_shift(x, _S33, out=t)
    x ^= t
    x *= _M1
    np.right_shift(x, _S33, out=t)
    x ^= t
    x *= _M2
    np.right_shift(x, _S33, out=t)
    x ^= t
    return x


def _mix_scalar(*values: int) -> np.uint64:
    """A seed constant from small integers, with the same finalizer (deterministic everywhere)."""
    h = np.zeros(1, dtype=np.uint64)
    for v in values:
        h ^= np.uint64(v % (1 << 64))
        h += np.uint64(_GOLDEN)
        h = _fmix64(h)
    return np.uint64(h[0])


def _words(buf: npt.NDArray[np.uint8], offset: int, count: int) -> U64:
    """The little-endian uint64 read at byte `offset + i`, for every i < count (unaligned view)."""
    view: U64 = np.ndarray(shape=(count,), dtype="<u8", buffer=buf, offset=offset, strides=(1,))
    return view.astype(np.uint64)


def _byte_mask(width: npt.NDArray[np.int64] | int) -> U64 | np.uint64:
    """A mask keeping the low `width` bytes (0..8) of a uint64."""
    w = np.clip(np.asarray(width, dtype=np.int64), 0, 8).astype(np.uint64)
    full = np.uint64(0xFFFFFFFFFFFFFFFF)
    shifted = np.left_shift(np.uint64(1), np.minimum(w, np.uint64(7)) * np.uint64(8)) - np.uint64(1)
    out = np.where(w >= 8, full, shifted).astype(np.uint64)
    return out if out.ndim else np.uint64(out)


def _hash_shingles(
    buf: npt.NDArray[np.uint8],
    pos: I64 | None,
    count: int,
    width: npt.NDArray[np.int64] | int,
    params: FingerprintParams,
) -> U64:
    """Hash the shingles of `width` bytes starting at `pos` (or at every offset < count).

    Each 8-byte little-endian word of the shingle (zero-padded) is folded in as
    ``h = fmix64(h ^ word)`` (plus a constant between words), starting from a seed constant. Bytes
    of canonical text are never zero, so a padded short shingle cannot equal a full one.
    """
    h: U64 | None = None
    seed = _mix_scalar(params.seed, params.shingle_bytes)
    for word in range(0, params.shingle_bytes, 8):
        x = _words(buf, word, count) if pos is None else _words(buf, word, len(buf) - 16)[pos]
        keep = np.asarray(width) - word
        if np.any(keep < 8):
            x &= _byte_mask(keep)
        if h is None:
            x ^= seed
        else:
            h += np.uint64(_GOLDEN)
            x ^= h
        h = _fmix64(x)
    assert h is not None
    return h


def _sample_keys(
    buf: npt.NDArray[np.uint8],
    pos: I64 | None,
    count: int,
    width: npt.NDArray[np.int64] | int,
    params: FingerprintParams,
) -> U64:
    """v2's sampling hash: the shingle's words xored in, times an odd constant each time (a word
    the shingle fills only partly with its bytes at the top)."""
    multiplier = np.uint64(int(_mix_scalar(params.seed, params.shingle_bytes, 0x5A3B)) | 1)
    z: U64 | None = None
    for word in range(0, params.shingle_bytes, 8):
        x = _words(buf, word, count) if pos is None else _words(buf, word, len(buf) - 16)[pos]
        keep = np.asarray(width) - word
        if np.any(keep < 8):
            x &= _byte_mask(keep)
        part = min(8, params.shingle_bytes - word)
        if part < 8:
            x = x << np.uint64(8 * (8 - part))
        if z is not None:
            x ^= z
        z = x * multiplier
    assert z is not None
    return z


@dataclass(frozen=True)
class _Samples:
    """Kept values of many texts: `values` in text order, `counts[i]` of them for text i."""

    values: npt.NDArray[np.unsignedinteger[Any]]
    counts: I64


# Text per vectorized step (~32 bytes of temporaries per character): a few MB at most; smaller
# steps measured no faster.
STEP_CHARS = 1 << 18


def _sample(texts: Sequence[str], params: FingerprintParams) -> _Samples:
    """Sample many texts in steps of about a megabyte, so memory stays flat for any batch size."""
    steps: list[_Samples] = []
    begin, size = 0, 0
    for i, text in enumerate(texts):
        size += len(text) + 1
        if size >= STEP_CHARS:
            steps.append(_sample_step(texts[begin : i + 1], params))
            begin, size = i + 1, 0
    if begin < len(texts) or not steps:
        steps.append(_sample_step(texts[begin:], params))
    if len(steps) == 1:
        return steps[0]
    return _Samples(
        np.concatenate([s.values for s in steps]), np.concatenate([s.counts for s in steps])
    )


def _sample_step(texts: Sequence[str], params: FingerprintParams) -> _Samples:
    """Canonicalize, shingle, hash and sample every text in one vectorized pass.

    Hashes are computed at every byte offset of the joined buffer and sampled first; only the few
    kept offsets are then checked to lie wholly inside one text (no separator in the shingle).
    """
    n_texts = len(texts)
    canon = _canonical_batch(texts)
    data = b"\n".join(canon)
    lens = np.fromiter(map(len, canon), dtype=np.int64, count=n_texts)
    ends = np.cumsum(lens + 1) - 1  # text i is data[starts[i]:ends[i]], a separator follows it
    starts = ends - lens
    k = params.shingle_bytes
    buf = np.frombuffer(data + b"\0" * 24, dtype=np.uint8)
    bound = np.uint64((1 << 64) // params.sample_rate - 1)
    n_full = max(0, len(data) - k + 1)
    h = _hash_shingles(buf, None, n_full, k, params)
    pos = np.flatnonzero(_sample_keys(buf, None, n_full, k, params) <= bound)  # v2
    tids = np.searchsorted(starts, pos, side="right") - 1
    # A shingle that does not end inside its text holds a separator (it crosses into the next).
    whole = pos + k <= ends[tids]
    pos, tids, h = pos[whole], tids[whole], h[pos[whole]]
    short = np.flatnonzero((lens > 0) & (lens < k))  # a text shorter than k bytes is one shingle
    if len(short):
        hs = _hash_shingles(buf, starts[short], 0, lens[short], params)
        keep = _sample_keys(buf, starts[short], 0, lens[short], params) <= bound  # v2
        pos = np.concatenate((pos, starts[short][keep]))
        tids = np.concatenate((tids, short[keep]))
        h = np.concatenate((h, hs[keep]))
        order = np.argsort(pos, kind="stable")
        tids, h = tids[order], h[order]
    values = (h & np.uint64((1 << params.value_bits) - 1)).astype(params.value_dtype)
    # Keep each value once per text (its first occurrence), preserving text order. A stable sort
    # by value (a radix sort for 16-bit values) puts repeats of a (text, value) pair next to each
    # other, first occurrence first, because text ids grow with position.
    order = np.argsort(values, kind="stable")
    by_value, by_text = values[order], tids[order]
    repeat = (by_value[1:] == by_value[:-1]) & (by_text[1:] == by_text[:-1])
    if repeat.any():
        keep = np.ones(len(values), dtype=bool)
        keep[order[1:][repeat]] = False
        values, tids = values[keep], tids[keep]
    counts = np.bincount(tids, minlength=n_texts).astype(np.int64)
    return _Samples(values, counts)


# --------------------------------------------------------------------------- fingerprints


def fingerprint_texts(
    texts: Sequence[str], params: FingerprintParams = DEFAULT_PARAMS
) -> list[bytes]:
    """One fingerprint per normalized text (call outputs, suspects): its kept values, little-endian.

    Deterministic across processes and platforms; a text with no kept shingle gives ``b""``.
    """
    s = _sample(texts, params)
    raw = s.values.tobytes()
    size = params.value_dtype.itemsize
    ends = np.cumsum(s.counts) * size
    return [raw[int(e) - int(c) * size : int(e)] for e, c in zip(ends, s.counts, strict=True)]


def fingerprint_records(
    texts_per_record: Sequence[Sequence[str]], params: FingerprintParams = DEFAULT_PARAMS
) -> list[bytes]:
    """One blob per record (the haystack side): per-text value counts, then the values.

    A record with no texts gives ``b""``. Deterministic across processes and platforms.
    """
    n_records = len(texts_per_record)
    if not n_records:
        return []
    per_record = np.fromiter(map(len, texts_per_record), dtype=np.int64, count=n_records)
    s = _sample([t for texts in texts_per_record for t in texts], params)
    # Every blob is laid out at once: headers (`n`, then n counts, as uint32) and values are
    # interleaved record by record into one buffer, which is then cut at the records' ends.
    value_ends = np.concatenate(([0], np.cumsum(s.counts)))
    text_ends = np.cumsum(per_record)
    record_values = value_ends[text_ends] - value_ends[text_ends - per_record]
    present = per_record > 0
    header_len = np.where(present, 4 * (1 + per_record), 0)
    value_len = record_values * params.value_dtype.itemsize
    blob_ends = np.cumsum(header_len + value_len).tolist()
    headers = np.ones(int(per_record[present].sum() + present.sum()), dtype="<u4")
    header_starts = np.cumsum(1 + per_record[present]) - (1 + per_record[present])
    is_count = np.ones(len(headers), dtype=bool)
    is_count[header_starts] = False
    headers[header_starts] = per_record[present]
    headers[is_count] = s.counts
    is_header = np.repeat(
        np.tile(np.array([True, False]), n_records),
        np.stack((header_len, value_len), axis=1).ravel(),
    )
    out = np.empty(len(is_header), dtype=np.uint8)
    out[is_header] = headers.view(np.uint8)
    out[~is_header] = s.values.view(np.uint8)
    raw = out.tobytes()
    return [raw[a:b] for a, b in zip([0, *blob_ends[:-1]], blob_ends, strict=True)]
'''


def _load_before_speedup() -> ModuleType:
    name = "fingerprint_before_speedup"
    module = ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(_BEFORE_SPEEDUP, name, "exec"), module.__dict__)  # noqa: S102 - fixed source
    return module


before = _load_before_speedup()

_ODD_TEXTS = [
    "",
    "a",
    "ab",
    "é",
    "中文",
    "abcdefg",
    "abcdefgh",
    "abcdefghi",
    "x\ny",
    "[mask]",
    "12 34",
]
any_text_st = st.one_of(
    text_st,
    st.sampled_from(_ODD_TEXTS),
    st.text(max_size=40),
    st.text(st.sampled_from("abcdefgh é中\n.[]<>@x1"), max_size=60),
)
records_st = st.lists(st.lists(any_text_st, max_size=4), max_size=8)


def _assert_same_as_before(records: list[list[str]], params: fpm.FingerprintParams) -> None:
    flat_texts = [t for texts in records for t in texts]
    assert skeleton.canonical_batch(flat_texts) == before._canonical_batch(flat_texts)
    assert fpm.fingerprint_texts(flat_texts, params) == before.fingerprint_texts(flat_texts, params)
    blobs = before.fingerprint_records(records, params)
    assert fpm.fingerprint_records(records, params) == blobs
    flat, ends = fpm.fingerprint_record_blobs(records, params)
    assert flat == b"".join(blobs)
    assert ends.dtype == np.int64
    assert ends.tolist() == list(itertools.accumulate(map(len, blobs)))


@settings(max_examples=300, deadline=None)
@given(records_st, v2_params_st, st.sampled_from([0, 1, 9, 50]), st.sampled_from([0, 1, 2, 7, 33]))
def test_output_bytes_equal_the_implementation_before_the_speedup(
    records: list[list[str]], params: fpm.FingerprintParams, step_chars: int, window: int
) -> None:
    # the step and window sizes are shrunk so that their boundaries fall everywhere
    saved = fpm.STEP_CHARS, fpm.HASH_WINDOW
    fpm.STEP_CHARS = step_chars or saved[0]  # small steps split the batch between texts
    fpm.HASH_WINDOW = window or saved[1]  # small windows split texts and straddle separators
    try:
        _assert_same_as_before(records, params)
    finally:
        fpm.STEP_CHARS, fpm.HASH_WINDOW = saved


def test_a_text_longer_than_the_hash_window_keeps_its_fingerprint(
    passages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One huge text is hashed window by window (flat memory); the windows never show in the output."""
    long_text = normalize(" ".join(passages[:200]))
    records = [[long_text], [normalize(p) for p in passages[200:210]]]
    whole = fpm.fingerprint_records(records)
    assert len(long_text) > 4 * 1000
    for window in (1000, 4097):
        monkeypatch.setattr(fpm, "HASH_WINDOW", window)
        assert fpm.fingerprint_records(records) == whole


@settings(max_examples=100, deadline=None)
@given(records_st)
def test_default_output_bytes_equal_the_implementation_before_the_speedup(
    records: list[list[str]],
) -> None:
    _assert_same_as_before(records, fpm.V2_PARAMS)


def test_real_records_equal_the_implementation_before_the_speedup(passages: list[str]) -> None:
    texts = [normalize(t) for t in passages[:300]]
    records = [texts[i : i + i % 5] for i in range(0, len(texts), 3)]
    for params in (fpm.V2_PARAMS, replace(fpm.V2_PARAMS, value_bits=32, sample_rate=3)):
        _assert_same_as_before(records, params)


def test_dedup_key_of_many_texts_does_not_wrap() -> None:
    """Texts 0 and 65536 of one step are equal: a 32-bit (text, value) key would merge them."""
    text = normalize("the same passage, long enough to keep several shingles " * 2)
    texts = [text, *[""] * 65535, text, "x"]
    fps = fpm.fingerprint_texts(texts, fpm.V2_PARAMS)
    assert fps[0] == fps[65536] == before.fingerprint_texts([text])[0] != b""
    assert fps == before.fingerprint_texts(texts)


@pytest.mark.parametrize("sample_rate", [3, 5, 7, 8, 1000])
def test_sampling_is_exact_at_the_bound(sample_rate: int) -> None:
    """Words whose sampling hash is just under, at and over the bound are kept exactly as the
    multiply-shift hash says, each valued by the murmur3 fold."""
    params = replace(fpm.V2_PARAMS, sample_rate=sample_rate, seed=12345)  # 8-byte shingles
    bound = (1 << 64) // sample_rate - 1
    seed = _mix(params.seed, params.shingle_bytes)
    multiplier = _mix(params.seed, params.shingle_bytes, 0x5A3B) | 1
    inverse = pow(multiplier, -1, 1 << 64)
    targets = [bound - 1, bound, bound + 1, 0, 1, MASK64]
    words = b"".join(((t * inverse) & MASK64).to_bytes(8, "little") for t in targets)
    buf = np.frombuffer(words + b"\0" * 24, dtype=np.uint8)
    count = len(words) - 7
    # the sampling kernel alone, on words built to hit its bound exactly
    pos, hashes = fpm.sample_full(buf, count, np.zeros(0, dtype=np.int64), params)
    expected = [
        (i, _fmix(word ^ seed))
        for i in range(count)
        if ((word := int.from_bytes(words[i : i + 8], "little")) * multiplier) & MASK64 <= bound
    ]
    assert list(zip(pos.tolist(), hashes.tolist(), strict=True)) == expected
    assert [i // 8 for i, _ in expected if i % 8 == 0] == [
        j for j, t in enumerate(targets) if t <= bound
    ]


def test_record_blobs_of_empty_records() -> None:
    flat, ends = fpm.fingerprint_record_blobs([])
    assert flat == b"" and ends.tolist() == []
    flat, ends = fpm.fingerprint_record_blobs([[], [normalize("some text of a record " * 3)], []])
    assert ends[0] == 0 and ends[1] == ends[2] == len(flat) > 8
    assert flat == fpm.fingerprint_records([[normalize("some text of a record " * 3)]])[0]


# --------------------------------------------------------------------------- format


def test_canonical_drops_masks_emails_digits_punctuation_and_spaces() -> None:
    text = normalize("Call John at [MASK] or ***, mail x.y@example.com; ID 12345 <NAME> XXXX end.")
    v2 = fpm.V2_PARAMS
    assert fpm.canonicalize(text, v2) == "calljohnatormailidend"
    assert fpm.canonicalize(text) == "calljohnatorrnailidend"  # v3: TR39 folds m to rn
    for placeholder in (
        "[MASK]",
        "***",
        "<NAME>",
        "[REDACTED]",
        "XXXX",
        "####",
        "{id}",
        "█████",
        "j@x.org",
    ):
        for params in (v2, fpm.DEFAULT_PARAMS):
            got = fpm.canonicalize(normalize(f"alpha {placeholder} beta"), params)
            assert got == "alphabeta", placeholder
    # Letters next to an x-run are words, not masks.
    assert fpm.canonicalize("xxxl boxxx", v2) == "xxxlboxxx"


@settings(max_examples=200, deadline=None)
@given(st.lists(text_st, max_size=6))
def test_canonical_batch_and_fast_path_equal_the_reference(texts: list[str]) -> None:
    assert [fpm.canonicalize(t, fpm.V2_PARAMS) for t in texts] == [ref_canonical(t) for t in texts]
    batch = skeleton.canonical_batch(texts)
    assert [b.decode("utf-8") for b in batch] == [ref_canonical(t) for t in texts]


_MASKED_PIECES = [
    *_PIECES,
    *"аеорсухіјѕһԁԛԝνυαορι",  # Cyrillic and Greek look-alikes of Latin letters
    *"АВЕНІКМОРСТХΑΒΕΗΙΚΜΝΟΡΤΧΥΖ",  # and of capitals
    *"\u200b\u200c\u200d\u2060\ufeff\u00ad\u2061\u180e\u034f\u3164\u115f\U000e0020",
    "ё", "é", "ǆ", "ﬁ", "ℌ", "[ma\u200bsk]",
]  # fmt: skip
masked_text_st = st.lists(st.sampled_from(_MASKED_PIECES), max_size=120).map(
    lambda xs: normalize("".join(xs))
)


@settings(max_examples=200, deadline=None)
@given(st.lists(masked_text_st, max_size=6))
def test_folded_canonical_equals_the_reference(texts: list[str]) -> None:
    """v3: batch, fast path and one-text forms all equal the per-character reference."""
    want = [ref_canonical(t, fold=True) for t in texts]
    assert [fpm.canonicalize(t) for t in texts] == want
    assert [b.decode("utf-8") for b in skeleton.canonical_batch(texts, fold=True)] == want


def test_look_alikes_and_invisible_characters_fold_to_the_plain_text() -> None:
    plain = normalize("The quick brown fox jumps over the lazy dog, said Mrs. Sexton.")
    masked = normalize(
        "Tһе quі\u200bck brоwn f\u00adох jumрѕ оvеr the lаzу dо\u2060g, ѕаіd Mrѕ. Ѕехtоn."
    )
    assert fpm.canonicalize(masked, fpm.V2_PARAMS) != fpm.canonicalize(plain, fpm.V2_PARAMS)
    assert fpm.canonicalize(masked) == fpm.canonicalize(plain)
    assert fpm.fingerprint_texts([masked]) == fpm.fingerprint_texts([plain])


def test_skeleton_table_comes_from_unicode_confusables() -> None:
    """Spot checks of confusables.txt prototypes, and the table is a fixed point."""
    table = skeleton.skeleton_table()
    for src, want in {"а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "і": "i", "ѕ": "s",
                      "ο": "o", "ρ": "p", "ν": "v", "ԝ": "w", "m": "rn", "μ": "rn"}.items():  # fmt: skip
        assert table[ord(src)] == want, src
    assert not any(chr(c) in table for v in table.values() for c in map(ord, v))
    assert ord("i") not in table and ord("l") not in table  # ASCII takes no capital's skeleton


def _translate_canonical(ascii_bytes: bytes) -> tuple[bytes, list[int]]:
    """The ASCII filter before the numpy fast path: ``bytes.translate``, then newline offsets."""
    data = ascii_bytes.translate(None, skeleton.ASCII_NON_LETTERS)  # the filter's table
    return data, [i for i, b in enumerate(data) if b == 10] + [len(data)]


# below: the ASCII fast path is checked alone against the translate it replaced
def test_ascii_fast_path_keeps_exactly_the_ascii_letters_and_newlines() -> None:
    every = bytes(range(128))
    data, ends = skeleton.ascii_canonical(every + b"\n" + every[::-1])
    assert (data, ends.tolist()) == _translate_canonical(every + b"\n" + every[::-1])


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(max_codepoint=127), max_size=200))
def test_ascii_fast_path_equals_translate(text: str) -> None:
    data, ends = skeleton.ascii_canonical(text.encode("ascii"))
    assert (data, ends.tolist()) == _translate_canonical(text.encode("ascii"))
    assert ends.dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(st.lists(text_st, max_size=5), params_st)
def test_fingerprint_values_equal_the_naive_reference(
    texts: list[str], params: fpm.FingerprintParams
) -> None:
    fps = fpm.fingerprint_texts(texts, params)
    width = params.value_bits // 8
    for text, fp in zip(texts, fps, strict=True):
        values = [int.from_bytes(fp[i : i + width], "little") for i in range(0, len(fp), width)]
        assert values == ref_values(text, params)
        assert set(fpm.needle_bands(fp, params)) == ref_keys(values, params)


def test_real_passages_equal_the_reference(passages: list[str]) -> None:
    texts = [normalize(t) for t in passages[:40]]
    fps = fpm.fingerprint_texts(texts)
    for text, fp in zip(texts, fps, strict=True):
        assert [
            int.from_bytes(fp[i : i + 2], "little") for i in range(0, len(fp), 2)
        ] == ref_values(text, fpm.DEFAULT_PARAMS)
    # About one shingle in sample_rate is kept: storage is ~2 bytes per 8 canonical letters.
    letters = sum(len(ref_canonical(t)) for t in texts)
    kept = sum(len(fp) // 2 for fp in fps)
    assert 0.7 < kept * fpm.DEFAULT_PARAMS.sample_rate / letters < 1.1


def test_record_blob_layout() -> None:
    texts = [
        normalize("the first text of the record, long enough to keep a few shingles " * 3),
        "",
        "short",
    ]
    blob = fpm.fingerprint_records([texts])[0]
    fps = fpm.fingerprint_texts(texts)
    n = int.from_bytes(blob[:4], "little")
    counts = [int.from_bytes(blob[4 + 4 * i : 8 + 4 * i], "little") for i in range(n)]
    assert n == 3
    assert counts == [len(fp) // 2 for fp in fps]
    assert blob[4 + 4 * n :] == b"".join(fps)
    assert fpm.fingerprint_records([[], texts, []]) == [b"", blob, b""]


def test_batching_does_not_change_fingerprints(passages: list[str]) -> None:
    texts = [normalize(t) for t in passages[:30]]
    whole = fpm.fingerprint_texts(texts)
    assert whole == fpm.fingerprint_texts(texts[:13]) + fpm.fingerprint_texts(texts[13:])
    assert whole == [fpm.fingerprint_texts([t])[0] for t in texts]
    records = [texts[i : i + 3] for i in range(0, 30, 3)]
    assert fpm.fingerprint_records(records) == [fpm.fingerprint_records([r])[0] for r in records]


def test_deterministic_across_processes(passages: list[str]) -> None:
    texts = [normalize(t) for t in passages[:20]]
    script = (
        "import json,sys,hashlib; from ledger.spec import fingerprint as f; t=json.load(sys.stdin); "
        "print(hashlib.sha256(b''.join(f.fingerprint_texts(t))+b''.join(f.fingerprint_records([t]))).hexdigest())"
    )
    here = hashlib.sha256(
        b"".join(fpm.fingerprint_texts(texts)) + b"".join(fpm.fingerprint_records([texts]))
    )
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(texts),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        assert out.stdout.strip() == here.hexdigest()


def test_empty_inputs() -> None:
    assert fpm.fingerprint_texts([]) == []
    assert fpm.fingerprint_records([]) == []
    assert fpm.fingerprint_records([[], []]) == [b"", b""]
    assert fpm.fingerprint_texts(["", "!!! 123 ***"]) == [b"", b""]
    assert fpm.needle_bands(b"") == []
    assert fpm.haystack_bands(b"") == []
    assert fpm.similarity(b"", fpm.fingerprint_records([["some text here"]])[0]) == 0.0
    assert fpm.best_match(fpm.fingerprint_texts(["some text here"])[0], b"") == (0.0, None)


def test_malformed_fingerprints_are_input_errors() -> None:
    blob = fpm.fingerprint_records([[normalize("a record text that keeps several shingles " * 4)]])[
        0
    ]
    with pytest.raises(InputError, match="whole number"):
        fpm.needle_bands(b"\x01\x02\x03")
    for bad in (blob[:3], blob[:-1], blob + b"\0\0", b"\xff\xff\xff\x7f" + blob[4:]):
        with pytest.raises(InputError, match="record fingerprint"):
            fpm.haystack_bands(bad)


# --------------------------------------------------------------------------- params


@settings(max_examples=100, deadline=None)
@given(params_st)
def test_params_round_trip(params: fpm.FingerprintParams) -> None:
    data = json.loads(json.dumps(params.to_json()))
    assert fpm.FingerprintParams.from_json(data) == params
    fpm.check_compatible(params, fpm.FingerprintParams.from_json(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1}, "unknown keys"),
        ({"seed": None}, "seed must be int"),
        ({"seed": True}, "seed must be int"),
        ({"sample_rate": "8"}, "sample_rate must be int"),
        ({"value_bits": 24}, "value_bits 24"),
        ({"shingle_bytes": 0}, "shingle_bytes 0"),
        ({"scheme": "minhash-v1"}, "scheme 'minhash-v1'"),
        ({"band_rows": 9}, "band_rows 9"),
    ],
)
def test_params_from_json_is_strict(change: dict[str, object], message: str) -> None:
    data = {**fpm.DEFAULT_PARAMS.to_json(), **change}
    with pytest.raises(InputError, match=message):
        fpm.FingerprintParams.from_json(data)


def test_params_from_json_missing_key_and_non_object() -> None:
    data = fpm.DEFAULT_PARAMS.to_json()
    del data["seed"]
    with pytest.raises(InputError, match=r"missing keys \['seed'\]"):
        fpm.FingerprintParams.from_json(data)
    with pytest.raises(InputError, match="JSON object"):
        fpm.FingerprintParams.from_json([1, 2])


def test_mismatch_error_names_the_setting() -> None:
    other = replace(fpm.DEFAULT_PARAMS, sample_rate=16)
    with pytest.raises(FingerprintMismatchError, match="different settings: sample_rate: 8 vs 16"):
        fpm.check_compatible(fpm.DEFAULT_PARAMS, other)
    fpm.check_compatible(fpm.DEFAULT_PARAMS, fpm.FingerprintParams())


# --------------------------------------------------------------------------- similarity and search


def test_similarity_equals_reference_and_best_match_names_the_text(passages: list[str]) -> None:
    rng = random.Random(5)
    p = fpm.DEFAULT_PARAMS
    for _ in range(40):
        out, other = (normalize(t) for t in rng.sample(passages, 2))
        texts = [other, near_data.truncate_half(out), normalize(near_data.mask(out, 0.2, rng))]
        rng.shuffle(texts)
        fp = fpm.fingerprint_texts([out])[0]
        blob = fpm.fingerprint_records([texts])[0]
        needle = ref_values(out, p)
        scores = [ref_score(needle, ref_values(t, p), fpm.DEFAULT_MIN_SAMPLES) for t in texts]
        score, where = fpm.best_match(fp, blob)
        assert score == pytest.approx(max(scores), abs=1e-12)
        assert where == scores.index(max(scores))
        assert 0.0 <= fpm.similarity(fp, blob) <= 1.0


def test_estimate_tracks_exact_overlap(passages: list[str]) -> None:
    """Sampled similarity against the exact overlap of all shingles, on real edited pairs."""
    rng = random.Random(9)
    errors = []
    for text in rng.sample([t for t in passages if len(t) > 600], 40):
        out = normalize(text)
        copy = normalize(
            rng.choice([near_data.mask(text, 0.2, rng), near_data.truncate_half(text)])
        )
        v2 = fpm.V2_PARAMS  # the 8-byte shingles of `exact_overlap`
        estimate = fpm.similarity(
            fpm.fingerprint_texts([out], v2)[0], fpm.fingerprint_records([[copy]], v2)[0], v2
        )
        errors.append(abs(estimate - exact_overlap(out, copy)))
    assert sum(errors) / len(errors) < 0.05
    assert max(errors) < 0.2


def test_containment_beats_resemblance_for_embedded_copies(passages: list[str]) -> None:
    """An output inside a record 4x its length: containment 1, Jaccard about 1/4."""
    out = normalize(passages[10])
    record = normalize(
        " ".join([passages[20], passages[30], passages[10], passages[40], passages[50]])
    )
    fp, blob = fpm.fingerprint_texts([out])[0], fpm.fingerprint_records([[record]])[0]
    assert fpm.similarity(fp, blob) == 1.0
    assert set(fpm.needle_bands(fp)) <= set(fpm.haystack_bands(blob))


def test_near_matches_equals_brute_force(labelled: Any) -> None:
    ev = labelled
    needles = list(enumerate(fpm.fingerprint_texts(ev.outputs[:25])))
    blobs = fpm.fingerprint_records([r.texts for r in ev.records])
    found = {
        (n, h): s
        for n, h, s in fpm.near_matches(needles, enumerate(blobs), threshold=0.0, chunk=97)
    }
    expected = {}
    hay_keys = [set(fpm.haystack_bands(b)) for b in blobs]
    keys, rows = fpm.haystack_band_arrays(blobs)
    assert [set(keys[rows == i].tolist()) for i in range(len(blobs))] == hay_keys
    for n, fp in needles:
        nk = set(fpm.needle_bands(fp))
        for h, blob in enumerate(blobs):
            if nk & hay_keys[h]:
                expected[(n, h)] = fpm.similarity(fp, blob)
    assert found.keys() == expected.keys()
    assert all(found[k] == pytest.approx(v, abs=1e-12) for k, v in expected.items())
    above = {(n, h) for n, h, _ in fpm.near_matches(needles, enumerate(blobs))}
    assert above == {k for k, v in expected.items() if v >= fpm.DEFAULT_THRESHOLD}


def test_labelled_set_recall_and_false_positives(labelled: Any) -> None:
    """The near_eval targets on a small real-text slice: recall >= 0.95 per edit, FP <= 0.1%."""
    ev = labelled
    needles = list(enumerate(fpm.fingerprint_texts(ev.outputs)))
    records = ev.records
    blobs = fpm.fingerprint_records([r.texts for r in records])
    hits = {(n, h) for n, h, _ in fpm.near_matches(needles, enumerate(blobs))}
    recall: dict[str, list[bool]] = {}
    for h, r in enumerate(records):
        if r.output is not None:
            recall.setdefault(r.edit, []).append((r.output, h) in hits)
    for edit in ("exact", "mask10", "mask20", "respace", "recase", "repunct", "reformat", "truncate-half",
                 "embedded", "embedded-mask10", "split-texts"):  # fmt: skip
        assert sum(recall[edit]) / len(recall[edit]) >= 0.95, (
            edit,
            sum(recall[edit]),
            len(recall[edit]),
        )
    distractors = [h for h, r in enumerate(records) if r.output is None]
    assert len(distractors) == 150
    false = sum(1 for n, h in hits if records[h].output is None)
    assert false / (len(distractors) * len(needles)) <= 0.001
