"""Near-duplicate fingerprints and candidate search: sampled shingles with a containment estimate.

Copies of model outputs in training data are masked, re-spaced, re-punctuated, truncated, split or
embedded in longer records, so the fingerprint must measure *how much of one text lies inside the
other*, not Jaccard resemblance. The scheme (Broder's mod-m sketch, 1997) keeps every shingle whose
64-bit sampling hash falls below ``2**64 / sample_rate``. The same shingle is kept in every text that has it,
so the kept values of a needle and of a record of any length are comparable directly: the share of
a needle's values found in a record estimates containment without windows or size bias, and
storage grows with the text (~0.18 byte per character by default) instead of being fixed.

Pipeline, fixed by :class:`FingerprintParams`:

1. canonicalize the normalized text: drop e-mail addresses, bracketed placeholders (``[mask]``,
   ``<name>``, ``{id}``) and x-runs (``xxxx``), then every non-letter (``***``, ``█``, digits,
   punctuation, underscores, spaces), so masking, changed digits, re-spacing and re-punctuation
   leave the surrounding letters intact; scheme v3 (the default) first strips default-ignorable
   code points and folds every letter to its TR39 skeleton (``ledger.spec.skeleton``), so
   look-alike letters from other scripts and zero-width characters change nothing;
2. shingle: every run of ``shingle_bytes`` consecutive UTF-8 bytes (a shorter text is one shingle);
3. sample: keep the shingles whose multiply-shift hash is below the sampling bound: its 8-byte
   little-endian words (zero-padded) are xored into a sum that is multiplied, each time, by an odd
   64-bit constant drawn from the seed (two passes over the text, where a mixing hash takes eight);
4. value: the kept shingle's words folded into a seed with the murmur3 finalizer; keep each value
   once per text, in text order, as its low ``value_bits`` bits, little-endian;
5. band keys: a mixed hash of every ``band_rows`` consecutive kept values, so a candidate must share
   a run of sampled shingles (a phrase of a few words), not one common shingle.

A needle fingerprint is the value array of one text. A record blob is ``uint32 n`` followed by ``n``
``uint32`` per-text value counts, then the texts' values in order; its text ``i`` is the record's
``texts[i]`` (for ledger records: segment ``i`` in segment-hash order), which `best_match` names.

The defaults were chosen by benchmarks/near_sweep.py and are checked by benchmarks/near_eval.py
on real text (recall >= 0.97 on every targeted edit, homoglyphs, invisible characters and filler
words included; false positives ~1e-6 per distractor pair). Scheme v2 (`V2_PARAMS`: 8-byte
shingles, no folding) is still read: fingerprints compare only within one scheme's params.
Texts with fewer than ``band_rows`` kept values (under ~25 letters) get no band keys: near
matching is for passages, exact segment hashes cover short texts.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ledger.errors import InputError
from ledger.spec.fingerprint_params import (
    CANON,
    CANON_V2,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_PARAMS,
    DEFAULT_THRESHOLD,
    SCHEME,
    SCHEME_V2,
    SCHEMES,
    V2_PARAMS,
    FingerprintParams,
    check_compatible,
)
from ledger.spec.skeleton import canonical_batch, canonical_joined

__all__ = [
    "CANON",
    "CANON_V2",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_PARAMS",
    "DEFAULT_THRESHOLD",
    "SCHEME",
    "SCHEMES",
    "SCHEME_V2",
    "V2_PARAMS",
    "FingerprintParams",
    "best_match",
    "canonicalize",
    "check_compatible",
    "fingerprint_record_blobs",
    "fingerprint_records",
    "fingerprint_texts",
    "haystack_band_arrays",
    "haystack_bands",
    "near_matches",
    "needle_bands",
    "similarity",
]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


def canonicalize(text: str, params: FingerprintParams = DEFAULT_PARAMS) -> str:
    """The letters a fingerprint is made of: masks, e-mails, digits, punctuation and spaces removed,
    and (scheme v3) invisible characters stripped and look-alike letters folded.

    Input is a normalized text (``ledger.spec.text.normalize``); the result is what gets shingled.
    """
    return canonical_batch([text], params.folds)[0].decode("utf-8")


# --------------------------------------------------------------------------- hashing

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = 0x9E3779B97F4A7C15
_S33 = np.uint64(33)


def _fmix64(x: U64, t: U64 | None = None) -> U64:
    """MurmurHash3's 64-bit finalizer, in place (a bijection with full avalanche).

    `t` (same length) is scratch, made here if not given.
    """
    if t is None:
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


@functools.cache
def _mix_scalar(*values: int) -> np.uint64:
    """A seed constant from small integers, with the same finalizer (deterministic everywhere).

    Cached: a dozen numpy calls on one element cost more than hashing a short text.
    """
    h = np.zeros(1, dtype=np.uint64)
    for v in values:
        h ^= np.uint64(v % (1 << 64))
        h += np.uint64(_GOLDEN)
        h = _fmix64(h)
    return np.uint64(h[0])


def _words(buf: npt.NDArray[np.uint8], offset: int, count: int) -> U64:
    """The little-endian uint64 read at byte `offset + i`, for every i < count (an unaligned view
    of `buf`, not a copy)."""
    view: U64 = np.ndarray(shape=(count,), dtype="<u8", buffer=buf, offset=offset, strides=(1,))
    return view


def _byte_mask(width: npt.NDArray[np.int64] | int) -> U64 | np.uint64:
    """A mask keeping the low `width` bytes (0..8) of a uint64."""
    w = np.clip(np.asarray(width, dtype=np.int64), 0, 8).astype(np.uint64)
    full = np.uint64(0xFFFFFFFFFFFFFFFF)
    shifted = np.left_shift(np.uint64(1), np.minimum(w, np.uint64(7)) * np.uint64(8)) - np.uint64(1)
    out = np.where(w >= 8, full, shifted).astype(np.uint64)
    return out if out.ndim else np.uint64(out)


def _shingle_words(
    buf: npt.NDArray[np.uint8], pos: I64, width: npt.NDArray[np.int64] | int, k: int
) -> Iterator[U64]:
    """Each 8-byte little-endian word of the `k`-byte shingles at the offsets `pos`, as a fresh
    array, zero past `width` bytes of the shingle."""
    for word in range(0, k, 8):
        x = _words(buf, word, len(buf) - 16)[pos]
        keep = np.asarray(width) - word
        if np.any(keep < 8):
            x &= _byte_mask(keep)
        yield x


def _hash_shingles(
    buf: npt.NDArray[np.uint8],
    pos: I64,
    width: npt.NDArray[np.int64] | int,
    params: FingerprintParams,
) -> U64:
    """Hash the shingles of `width` bytes starting at `pos`: their values.

    Each 8-byte little-endian word of the shingle (zero-padded) is folded in as
    ``h = fmix64(h ^ word)`` (plus a constant between words), starting from a seed constant. Bytes
    of canonical text are never zero, so a padded short shingle cannot equal a full one.
    """
    h: U64 | None = None
    seed = _mix_scalar(params.seed, params.shingle_bytes)
    for x in _shingle_words(buf, pos, width, params.shingle_bytes):
        if h is None:
            x ^= seed
        else:
            h += np.uint64(_GOLDEN)
            x ^= h
        h = _fmix64(x)
    assert h is not None
    return h


# Tells the sampling multiplier's seed constant from the other uses of `_mix_scalar`.
_SAMPLE_TAG = 0x5A3B


def _sample_multiplier(params: FingerprintParams) -> np.uint64:
    """The odd 64-bit multiplier of the sampling hash, drawn from the seed."""
    return np.uint64(int(_mix_scalar(params.seed, params.shingle_bytes, _SAMPLE_TAG)) | 1)


def _sample_keys(
    buf: npt.NDArray[np.uint8], lo: int, params: FingerprintParams, z: U64, t: U64
) -> U64:
    """The sampling hash of the shingle at every offset ``lo + i``, into `z` (`t`: scratch).

    Multiply-shift hashing (Dietzfelbinger et al., 1997): a product's top bits depend on every
    bit of the word, so testing them samples shingles at the rate the bound sets, in one fused
    read-and-multiply pass per word. A word the shingle fills only partly has its bytes moved to
    the top (``(x << s) * m``), which is one pass too: ``x * (m << s)`` drops the bytes beyond the
    shingle by itself. The kept few get their values from `_hash_shingles`.
    """
    k = params.shingle_bytes
    multiplier = _sample_multiplier(params)
    count = len(z)
    for word in range(0, k, 8):
        x = _words(buf, lo + word, count)
        width = k - word
        if word == 0:
            if width < 8:
                np.multiply(x, _top_multiplier(multiplier, width), out=z)
            else:
                np.multiply(x, multiplier, out=z)
        else:
            if width < 8:
                np.left_shift(x, np.uint64(8 * (8 - width)), out=t)
            else:
                np.copyto(t, x)
            z ^= t
            z *= multiplier
    return z


def _top_multiplier(multiplier: np.uint64, width: int) -> np.uint64:
    """``m << s`` (mod 2**64) for a word of `width` bytes: ``x * (m << s) == (x << s) * m``."""
    return np.uint64((int(multiplier) << (8 * (8 - width))) & 0xFFFFFFFFFFFFFFFF)


def _sample_keys_at(
    buf: npt.NDArray[np.uint8], pos: I64, width: npt.NDArray[np.int64], params: FingerprintParams
) -> U64:
    """`_sample_keys` of the shingles of `width` bytes (zero-padded) at the offsets `pos`."""
    multiplier = _sample_multiplier(params)
    k = params.shingle_bytes
    z: U64 | None = None
    for word, x in zip(range(0, k, 8), _shingle_words(buf, pos, width, k)):
        if k - word < 8:  # a part-filled word of the shingle sits at the top, as in `_sample_keys`
            x <<= np.uint64(8 * (8 - (k - word)))
        if z is not None:
            x ^= z
        x *= multiplier
        z = x
    assert z is not None
    return z


def sample_full(
    buf: npt.NDArray[np.uint8], count: int, seps: I64, params: FingerprintParams
) -> tuple[I64, U64]:
    """Offsets < count whose full shingle is sampled, and those shingles' hashes, in offset order.

    Offsets whose shingle crosses a separator (at the sorted offsets `seps`) are never kept.
    Offsets are hashed `HASH_WINDOW` at a time, so a single huge text (a book in one record)
    needs scratch for one window, not 16 bytes per character of the text.
    """
    if count <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)
    width = min(count, HASH_WINDOW)
    z, t = np.empty(width, dtype=np.uint64), np.empty(width, dtype=np.uint64)
    found = [
        _sample_window(buf, lo, min(count, lo + width), seps, params, z, t)
        for lo in range(0, count, width)
    ]
    if len(found) == 1:
        return found[0]
    return np.concatenate([p for p, _ in found]), np.concatenate([h for _, h in found])


# Offsets hashed at once by `sample_full` (16 bytes of scratch each).
HASH_WINDOW = 1 << 20


def _sample_window(
    buf: npt.NDArray[np.uint8],
    lo: int,
    hi: int,
    seps: I64,
    params: FingerprintParams,
    z: U64,
    t: U64,
) -> tuple[I64, U64]:
    """`sample_full` for the offsets in [lo, hi), with `z` and `t` as scratch."""
    k = params.shingle_bytes
    bound = (1 << 64) // params.sample_rate - 1
    z = _sample_keys(buf, lo, params, z[: hi - lo], t[: hi - lo])
    keep = z <= np.uint64(bound)
    # Offsets within k - 1 bytes before a separator (or on it) cross it: those of the separators
    # in [lo, hi + k - 1). Each one's run of them that sticks out of [lo, hi) contains the end it
    # is clipped to.
    near = seps[np.searchsorted(seps, lo) : np.searchsorted(seps, hi + k - 1)]
    if len(near):
        cut = near[:, None] + np.arange(1 - k - lo, 1 - lo, dtype=np.int64)
        keep[np.clip(cut, 0, hi - lo - 1, out=cut)] = False
    pos = np.flatnonzero(keep)
    pos += lo
    return pos, _hash_shingles(buf, pos, k, params)


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
    if not texts:
        return _sample_step(texts, params)
    # A step ends after the text that reaches a multiple of STEP_CHARS (joined, with a separator
    # each): at most STEP_CHARS characters and one text. Steps never change the output.
    ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) + 1)
    cuts = np.searchsorted(ends, np.arange(STEP_CHARS, int(ends[-1]), STEP_CHARS)) + 1
    bounds = np.unique(np.concatenate(([0], cuts, [len(texts)]))).tolist()
    steps = [_sample_step(texts[a:b], params) for a, b in itertools.pairwise(bounds)]
    if len(steps) == 1:
        return steps[0]
    return _Samples(
        np.concatenate([s.values for s in steps]), np.concatenate([s.counts for s in steps])
    )


def _sample_step(texts: Sequence[str], params: FingerprintParams) -> _Samples:
    """Canonicalize, shingle, hash and sample every text in one vectorized pass.

    Hashes are computed at every byte offset of the joined buffer; offsets whose shingle crosses
    a separator are struck out while sampling.
    """
    n_texts = len(texts)
    data, ends = canonical_joined(texts, params.folds)
    starts = np.empty_like(ends)
    starts[:1] = 0
    np.add(ends[:-1], 1, out=starts[1:])  # text i is data[starts[i]:ends[i]]
    k = params.shingle_bytes
    buf = np.frombuffer(data + b"\0" * 24, dtype=np.uint8)
    pos, h = sample_full(buf, len(data) - k + 1, ends[:-1], params)
    bound = (1 << 64) // params.sample_rate - 1
    lens = ends - starts
    short = np.flatnonzero((lens > 0) & (lens < k))  # a text shorter than k bytes is one shingle
    if len(short):
        keep = _sample_keys_at(buf, starts[short], lens[short], params) <= np.uint64(bound)
        kept = starts[short][keep]
        pos = np.concatenate((pos, kept))
        h = np.concatenate((h, _hash_shingles(buf, kept, lens[short][keep], params)))
        order = np.argsort(pos, kind="stable")
        pos, h = pos[order], h[order]
    # Kept offsets are in text order: text i's are pos[first[i]:first[i + 1]].
    first = np.searchsorted(pos, starts)
    counts = np.diff(first, append=len(pos))
    tids = np.repeat(np.arange(n_texts, dtype=np.int64), counts)
    values = (h & np.uint64((1 << params.value_bits) - 1)).astype(params.value_dtype)
    # Keep each value once per text (its first occurrence), preserving text order. A stable sort
    # by value (a radix sort for 16-bit values) puts repeats of a (text, value) pair next to each
    # other, first occurrence first, because text ids grow with position.
    order = np.argsort(values, kind="stable")
    bits = params.value_bits
    key = tids.astype(np.uint32 if n_texts << bits <= 1 << 32 else np.uint64)
    np.left_shift(key, bits, out=key)  # (text, value) in one word
    np.bitwise_or(key, values, out=key)
    by_key = key[order]
    repeat = by_key[1:] == by_key[:-1]
    if repeat.any():
        keep = np.ones(len(values), dtype=bool)
        dropped = order[1:][repeat]
        keep[dropped] = False
        values = values[keep]
        counts = counts - np.bincount(tids[dropped], minlength=n_texts)
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


def fingerprint_record_blobs(
    texts_per_record: Sequence[Sequence[str]], params: FingerprintParams = DEFAULT_PARAMS
) -> tuple[bytes, I64]:
    """Every record's blob (see `fingerprint_records`) laid end to end, and each blob's end offset.

    Record ``i`` is ``flat[ends[i - 1]:ends[i]]`` (from 0 for the first); a record with no texts
    has an empty blob. This is the form Arrow binary columns are built from, without a ``bytes``
    object per record.
    """
    n_records = len(texts_per_record)
    if not n_records:
        return b"", np.zeros(0, dtype=np.int64)
    per_record = np.fromiter(map(len, texts_per_record), dtype=np.int64, count=n_records)
    s = _sample(list(itertools.chain.from_iterable(texts_per_record)), params)
    # The blobs are built in 16-bit units (every header word and value is a whole number of
    # them): the headers' units are placed, and the values fill the rest in order.
    value_units = params.value_dtype.itemsize // 2
    text_ends = np.cumsum(per_record)
    value_ends = np.concatenate(([0], np.cumsum(s.counts)))[text_ends]
    record_units = np.diff(value_ends, prepend=0) * value_units
    present = per_record > 0
    header_units = np.where(present, 2 * (1 + per_record), 0)
    ends = np.cumsum(header_units + record_units)
    out = np.empty(int(ends[-1]), dtype="<u2")
    # Headers: `n`, then the n counts, for each record with texts, as little-endian uint32.
    headers = np.insert(
        s.counts.astype("<u4"), (text_ends - per_record)[present], per_record[present]
    )
    header_at = np.arange(len(headers) * 2, dtype=np.int64)
    header_at += np.repeat((np.cumsum(record_units) - record_units)[present], header_units[present])
    # The other units are the values, in order (each record's follow its header).
    is_header = np.zeros(len(out), dtype=bool)
    is_header[header_at] = True
    out[is_header] = headers.view("<u2")
    out[~is_header] = s.values.view("<u2")
    ends *= 2
    return out.tobytes(), ends


def fingerprint_records(
    texts_per_record: Sequence[Sequence[str]], params: FingerprintParams = DEFAULT_PARAMS
) -> list[bytes]:
    """One blob per record (the haystack side): per-text value counts, then the values.

    A blob is ``uint32 n``, ``n`` ``uint32`` per-text value counts, then the texts' values
    (`fingerprint_texts` of each text, concatenated). A record with no texts gives ``b""``.
    Deterministic across processes and platforms.
    """
    flat, ends = fingerprint_record_blobs(texts_per_record, params)
    bounds = ends.tolist()
    return [flat[a:b] for a, b in zip([0, *bounds][:-1], bounds, strict=True)]


def _needle_values(fp: bytes, params: FingerprintParams) -> npt.NDArray[np.unsignedinteger[Any]]:
    """Parse a needle fingerprint; a length that is not a whole number of values is an error."""
    if len(fp) % params.value_dtype.itemsize:
        raise InputError(
            f"needle fingerprint of {len(fp)} bytes is not a whole number of "
            f"{params.value_bits}-bit values: made with other settings?"
        )
    return np.frombuffer(fp, dtype=params.value_dtype)


def _record_texts(
    blob: bytes, params: FingerprintParams
) -> list[npt.NDArray[np.unsignedinteger[Any]]]:
    """Parse a record blob into one value array per text, checking every length."""
    if not blob:
        return []
    if len(blob) < 4:
        raise InputError(f"record fingerprint of {len(blob)} bytes is too short for its header")
    n = int(np.frombuffer(blob, dtype="<u4", count=1)[0])
    if len(blob) < 4 + 4 * n:
        raise InputError(f"record fingerprint names {n} texts but has {len(blob)} bytes")
    counts = np.frombuffer(blob, dtype="<u4", count=n, offset=4).astype(np.int64)
    size = params.value_dtype.itemsize
    expected = 4 + 4 * n + int(counts.sum()) * size
    if len(blob) != expected:
        raise InputError(
            f"record fingerprint has {len(blob)} bytes, expected {expected} for {n} texts "
            f"of {params.value_bits}-bit values: made with other settings?"
        )
    values = np.frombuffer(blob, dtype=params.value_dtype, offset=4 + 4 * n)
    ends = np.cumsum(counts)
    return [values[int(e - c) : int(e)] for e, c in zip(ends, counts, strict=True)]


# --------------------------------------------------------------------------- band keys


def band_keys(values: npt.NDArray[np.unsignedinteger[Any]], params: FingerprintParams) -> I64:
    """Hash every run of `band_rows` consecutive values of one text into a signed 64-bit key."""
    r = params.band_rows
    if len(values) < r:
        return np.zeros(0, dtype=np.int64)
    v = values.astype(np.uint64)
    n = len(v) - r + 1
    h = np.full(n, _mix_scalar(params.seed, r, 0xBA4D), dtype=np.uint64)
    for j in range(r):
        h ^= v[j : n + j]
        h = _fmix64(h)
        h += np.uint64(_GOLDEN)
    return h.view(np.int64)


def needle_bands(fp: bytes, params: FingerprintParams = DEFAULT_PARAMS) -> list[int]:
    """Distinct LSH band keys of a needle fingerprint, as signed int64 (for DuckDB BIGINT joins)."""
    return [int(k) for k in np.unique(band_keys(_needle_values(fp, params), params))]


def haystack_bands(blob: bytes, params: FingerprintParams = DEFAULT_PARAMS) -> list[int]:
    """Distinct LSH band keys of a record blob (all its texts), as signed int64."""
    keys = [band_keys(v, params) for v in _record_texts(blob, params)]
    return [int(k) for k in np.unique(np.concatenate(keys))] if keys else []


# --------------------------------------------------------------------------- similarity


def _text_score(
    needle: npt.NDArray[np.unsignedinteger[Any]],
    text: npt.NDArray[np.unsignedinteger[Any]],
    floor: int,
) -> float:
    """Overlap of a needle value set and one text's value sequence, containment either way.

    `inside`: the largest share of the needle found within any stretch of the text twice the
    needle's length (so an output embedded in a long record scores 1, and matches scattered over
    a huge text do not add up); `covered`: the share of the text found in the needle (a truncated
    or split copy scores 1). Both use a floor of `floor` values.
    """
    n, m = len(needle), len(text)
    if n == 0 or m == 0:
        return 0.0
    hits = np.isin(text, needle, assume_unique=True).astype(np.int64)
    total = int(hits.sum())
    if total == 0:
        return 0.0
    w = max(2 * n, 2 * floor)
    if m <= w:
        local = total
    else:
        c = np.concatenate(([0], np.cumsum(hits)))
        local = int((c[w:] - c[:-w]).max())
    inside = local / max(n, floor)
    covered = total / max(m, floor)
    return min(1.0, max(inside, covered))


def best_match(
    needle_fp: bytes,
    haystack_blob: bytes,
    params: FingerprintParams = DEFAULT_PARAMS,
    *,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> tuple[float, int | None]:
    """The similarity and the index of the record text that gives it (None when nothing matches)."""
    needle = np.unique(_needle_values(needle_fp, params))
    best, where = 0.0, None
    for i, text in enumerate(_record_texts(haystack_blob, params)):
        score = _text_score(needle, text, min_samples)
        if score > best:
            best, where = score, i
    return best, where


def similarity(
    needle_fp: bytes,
    haystack_blob: bytes,
    params: FingerprintParams = DEFAULT_PARAMS,
    *,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> float:
    """Estimated share of the needle inside a record text, or of a record text inside the needle.

    In [0, 1]; the larger of the two directions, maximized over the record's texts.
    """
    return best_match(needle_fp, haystack_blob, params, min_samples=min_samples)[0]


# --------------------------------------------------------------------------- search

_PAIR_BUDGET = 4_000_000  # record values scored per step of a chunk (bounds memory)


@dataclass(frozen=True)
class _NeedleIndex:
    """All needles' band keys and (needle, value) pairs, sorted for binary search."""

    keys: I64
    key_owner: I64
    members: U64
    sizes: I64


def _needle_index(
    needles: Sequence[tuple[object, bytes]], params: FingerprintParams
) -> _NeedleIndex:
    values = [np.unique(_needle_values(fp, params)) for _, fp in needles]
    keys = [np.unique(band_keys(_needle_values(fp, params), params)) for _, fp in needles]
    empty64 = np.zeros(0, dtype=np.int64)
    all_keys = np.concatenate(keys) if keys else empty64
    owner = np.repeat(np.arange(len(needles), dtype=np.int64), [len(k) for k in keys])
    order = np.argsort(all_keys, kind="stable")
    sizes = np.array([len(v) for v in values], dtype=np.int64)
    ids = np.repeat(np.arange(len(needles), dtype=np.uint64), sizes)
    members = (ids << np.uint64(32)) | (np.concatenate(values).astype(np.uint64) if values else ids)
    return _NeedleIndex(all_keys[order], owner[order], np.sort(members), sizes)


@dataclass(frozen=True)
class _Chunk:
    """A chunk of parsed record blobs as flat arrays: values, their text, each text's record."""

    values: U64
    text_of: I64
    record_of_text: I64
    text_start: I64


def _parse_chunk(blobs: Sequence[bytes], params: FingerprintParams) -> _Chunk:
    arrays: list[npt.NDArray[np.unsignedinteger[Any]]] = []
    lengths: list[int] = []
    owners: list[int] = []
    for r, blob in enumerate(blobs):
        for text in _record_texts(blob, params):
            arrays.append(text)
            lengths.append(len(text))
            owners.append(r)
    counts = np.array(lengths, dtype=np.int64)
    values = np.concatenate(arrays).astype(np.uint64) if arrays else np.zeros(0, dtype=np.uint64)
    text_of = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    return _Chunk(values, text_of, np.array(owners, dtype=np.int64), np.cumsum(counts) - counts)


def _chunk_keys(chunk: _Chunk, params: FingerprintParams) -> tuple[I64, I64]:
    """Band keys of every text in the chunk at once (same values as `band_keys`) and their record."""
    r = params.band_rows
    n = len(chunk.values) - r + 1
    if n <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    h = np.full(n, _mix_scalar(params.seed, r, 0xBA4D), dtype=np.uint64)
    for j in range(r):
        h ^= chunk.values[j : n + j]
        h = _fmix64(h)
        h += np.uint64(_GOLDEN)
    whole = chunk.text_of[:n] == chunk.text_of[r - 1 :]
    return h.view(np.int64)[whole], chunk.record_of_text[chunk.text_of[:n][whole]]


def _candidates(chunk: _Chunk, index: _NeedleIndex, params: FingerprintParams) -> tuple[I64, I64]:
    """Distinct (record, needle) pairs of the chunk sharing at least one band key."""
    keys, recs = _chunk_keys(chunk, params)
    lo = np.searchsorted(index.keys, keys, side="left")
    hi = np.searchsorted(index.keys, keys, side="right")
    span = hi - lo
    if not span.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rec_rep = np.repeat(recs, span)
    offsets = np.arange(int(span.sum()), dtype=np.int64) - np.repeat(np.cumsum(span) - span, span)
    needle = index.key_owner[np.repeat(lo, span) + offsets]
    n_needles = np.int64(len(index.sizes))
    pairs = np.unique(rec_rep * n_needles + needle)
    return pairs // n_needles, pairs % n_needles


def _score_pairs(
    chunk: _Chunk, index: _NeedleIndex, recs: I64, needles: I64, floor: int
) -> npt.NDArray[np.float64]:
    """`_text_score` maximized over each record's texts, for many (record, needle) pairs at once."""
    # The texts of each pair's record, then every value of those texts.
    text_lo = np.searchsorted(chunk.record_of_text, recs, side="left")
    text_hi = np.searchsorted(chunk.record_of_text, recs, side="right")
    n_texts = text_hi - text_lo
    seg_pair = np.repeat(np.arange(len(recs), dtype=np.int64), n_texts)
    seg_text = np.repeat(text_lo, n_texts) + (
        np.arange(int(n_texts.sum()), dtype=np.int64)
        - np.repeat(np.cumsum(n_texts) - n_texts, n_texts)
    )
    counts = np.bincount(chunk.text_of, minlength=len(chunk.record_of_text))[seg_text]
    keep = counts > 0
    seg_pair, seg_text, counts = seg_pair[keep], seg_text[keep], counts[keep]
    scores = np.zeros(len(recs), dtype=np.float64)
    if not len(seg_text):
        return scores
    seg_start = np.cumsum(counts) - counts
    total_len = int(counts.sum())
    el_seg = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    el_pos = chunk.text_start[seg_text][el_seg] + (
        np.arange(total_len, dtype=np.int64) - seg_start[el_seg]
    )
    el_needle = needles[seg_pair][el_seg]
    probe = (el_needle.astype(np.uint64) << np.uint64(32)) | chunk.values[el_pos]
    at = np.minimum(np.searchsorted(index.members, probe), len(index.members) - 1)
    hits = (index.members[at] == probe).astype(np.int64)
    c = np.concatenate(([0], np.cumsum(hits)))
    seg_end = seg_start + counts
    total = c[seg_end] - c[seg_start]
    n = index.sizes[needles[seg_pair]]
    w = np.maximum(2 * n, 2 * floor)
    # Hits within w values from each position, not crossing the end of its text.
    stop = np.minimum(np.arange(total_len, dtype=np.int64) + w[el_seg], seg_end[el_seg])
    local = np.maximum.reduceat(c[stop] - c[:-1], seg_start)
    inside = local / np.maximum(n, floor)
    covered = total / np.maximum(counts, floor)
    seg_score = np.minimum(1.0, np.maximum(inside, covered))
    seg_score[n == 0] = 0.0
    np.maximum.at(scores, seg_pair, seg_score)
    return scores


def near_matches(
    needles: Sequence[tuple[object, bytes]],
    haystacks: Iterable[tuple[object, bytes]],
    params: FingerprintParams = DEFAULT_PARAMS,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    chunk: int = 4096,
) -> Iterator[tuple[object, object, float]]:
    """Yield (needle_key, haystack_key, similarity) for every pair at or above `threshold`.

    Candidates are pairs sharing a band key; haystacks are streamed in chunks against a sorted
    index of the needles' keys, so memory holds the needles and one chunk. Scores equal
    `similarity`; pairs come out in haystack order.
    """
    index = _needle_index(needles, params)
    batch: list[tuple[object, bytes]] = []
    for item in haystacks:
        batch.append(item)
        if len(batch) >= chunk:
            yield from _match_chunk(batch, needles, index, params, threshold, min_samples)
            batch = []
    if batch:
        yield from _match_chunk(batch, needles, index, params, threshold, min_samples)


def _match_chunk(
    batch: list[tuple[object, bytes]],
    needles: Sequence[tuple[object, bytes]],
    index: _NeedleIndex,
    params: FingerprintParams,
    threshold: float,
    min_samples: int,
) -> Iterator[tuple[object, object, float]]:
    """Candidates of one haystack chunk by key lookup, then their similarities, vectorized."""
    parsed = _parse_chunk([blob for _, blob in batch], params)
    recs, ndl = _candidates(parsed, index, params)
    if not len(recs):
        return
    rec_size = np.bincount(parsed.record_of_text[parsed.text_of], minlength=len(batch))[recs]
    bounds = np.searchsorted(
        np.cumsum(rec_size), np.arange(_PAIR_BUDGET, int(rec_size.sum()), _PAIR_BUDGET)
    )
    for part in np.split(np.arange(len(recs)), bounds):
        if not len(part):
            continue
        scores = _score_pairs(parsed, index, recs[part], ndl[part], min_samples)
        found = np.flatnonzero(scores >= threshold)
        for n, r, score in zip(
            ndl[part][found].tolist(),
            recs[part][found].tolist(),
            scores[found].tolist(),
            strict=True,
        ):
            yield needles[n][0], batch[r][0], score


def haystack_band_arrays(
    blobs: Sequence[bytes], params: FingerprintParams = DEFAULT_PARAMS
) -> tuple[I64, I64]:
    """Band keys of many record blobs at once, for bulk loading into a join table.

    Returns ``(keys, rows)``: ``keys[i]`` (int64) belongs to ``blobs[rows[i]]``; each record's keys
    are distinct and equal `haystack_bands` of that blob.
    """
    keys, rows = _chunk_keys(_parse_chunk(blobs, params), params)
    if not len(keys):
        return keys, rows
    pairs = np.unique(np.stack((rows, keys)), axis=1)
    return pairs[1].copy(), pairs[0].copy()
