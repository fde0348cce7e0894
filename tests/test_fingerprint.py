"""Near-match fingerprints: format against a naive reference, determinism, params, search, recall.

The reference below re-implements the documented pipeline with plain Python integers and sets
(one shingle, one hash at a time), so the vectorized module is checked against its specification
rather than against itself. The labelled set is a small slice of benchmarks/near_data.py's real text.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import fingerprint as fpm
from ledger.errors import FingerprintMismatchError, InputError
from ledger.hashing import normalize

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


def ref_canonical(text: str) -> str:
    """Token masks out (the module's documented patterns), then keep letters: alnum but not a digit."""
    text = text.replace("\n", " ")
    for pattern in (fpm._EMAIL, fpm._X_RUN, fpm._BRACKETED):
        text = pattern.sub(" ", text)
    return "".join(c for c in text if c.isalnum() and not c.isdecimal())


def ref_values(text: str, p: fpm.FingerprintParams) -> list[int]:
    """Kept values of one text, one shingle at a time."""
    canon = ref_canonical(text).encode("utf-8")
    k = p.shingle_bytes
    shingles = [canon[i : i + k] for i in range(len(canon) - k + 1)] if len(canon) >= k else [canon]
    out: list[int] = []
    for sh in shingles if canon else []:
        h = _mix(p.seed, k)
        for word in range(0, k, 8):
            x = int.from_bytes(sh[word : word + 8].ljust(8, b"\0"), "little")
            if word:
                h = (h + GOLDEN) & MASK64
            h = _fmix(h ^ x)
        if h <= (1 << 64) // p.sample_rate - 1:
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

params_st = st.builds(
    fpm.FingerprintParams,
    shingle_bytes=st.integers(1, 16),
    sample_rate=st.sampled_from([1, 2, 3, 8, 16]),
    value_bits=st.sampled_from([16, 32]),
    band_rows=st.integers(1, 4),
    seed=st.integers(0, MASK64),
)


# --------------------------------------------------------------------------- format


def test_canonical_drops_masks_emails_digits_punctuation_and_spaces() -> None:
    text = normalize("Call John at [MASK] or ***, mail x.y@example.com; ID 12345 <NAME> XXXX end.")
    assert fpm.canonicalize(text) == "calljohnatormailidend"
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
        assert fpm.canonicalize(normalize(f"alpha {placeholder} beta")) == "alphabeta", placeholder
    # Letters next to an x-run are words, not masks.
    assert fpm.canonicalize("xxxl boxxx") == "xxxlboxxx"


@settings(max_examples=200, deadline=None)
@given(st.lists(text_st, max_size=6))
def test_canonical_batch_and_fast_path_equal_the_reference(texts: list[str]) -> None:
    assert [fpm.canonicalize(t) for t in texts] == [ref_canonical(t) for t in texts]
    batch = fpm._canonical_batch(texts)
    assert [b.decode("utf-8") for b in batch] == [ref_canonical(t) for t in texts]


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
        "import json,sys,hashlib; from ledger import fingerprint as f; t=json.load(sys.stdin); "
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
        estimate = fpm.similarity(
            fpm.fingerprint_texts([out])[0], fpm.fingerprint_records([[copy]])[0]
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
