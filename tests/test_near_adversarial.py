"""Masking that hides copied outputs from a plain near matcher: look-alike letters from other scripts,
invisible characters and filler words (fingerprint scheme v3), on real text, through the library and
through the installed `ledger`; and ledgers recorded with scheme v2 keep their near findings.

The labelled set is a slice of benchmarks/near_data.py's real text (stdlib docstrings); the full
measurement is benchmarks/near_eval.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ledger import Ledger, recording
from ledger.audit.run import audit
from ledger.spec import fingerprint as fpm
from ledger.spec.text import normalize

ROOT = Path(__file__).resolve().parents[1]
LEDGER = str(Path(sys.executable).with_name("ledger"))
ADVERSARIAL = ("homoglyph", "invisible", "homoglyph-invisible", "filler")
# The edits the near matcher targeted before v3 (benchmarks/near_eval.py TARGETS): no regression.
EARLIER = (
    "mask10",
    "mask20",
    "respace",
    "recase",
    "repunct",
    "reformat",
    "truncate-half",
    "embedded",
)


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
    paras = near_data.load_paragraphs(max_stdlib_files=300, max_man_files=0, licenses=False)
    assert len(paras) >= 400
    return list(paras)


@pytest.fixture(scope="module")
def labelled(paragraphs: list[Any]) -> Any:
    """150 outputs, each with every edited variant, and 600 distractors (half near-topic)."""
    ev = near_data.make_eval_set(paragraphs, 150, 600, seed=11)
    assert len(ev.outputs) >= 100
    return ev


def _rates(ev: Any, params: fpm.FingerprintParams) -> tuple[dict[str, float], int, int]:
    """Recall per edit at the default threshold, and (false pairs, distractor pairs)."""
    needles = list(enumerate(fpm.fingerprint_texts(ev.outputs, params)))
    blobs = fpm.fingerprint_records([r.texts for r in ev.records], params)
    found = {(n, h) for n, h, _ in fpm.near_matches(needles, enumerate(blobs), params)}
    hits: dict[str, list[bool]] = defaultdict(list)
    false = 0
    for ri, r in enumerate(ev.records):
        if r.output is not None:
            hits[r.edit].append((r.output, ri) in found)
    for n, ri in found:
        if ev.records[ri].output is None:
            false += 1
    n_distractors = sum(1 for r in ev.records if r.output is None)
    recall = {e: sum(v) / len(v) for e, v in hits.items()}
    return recall, false, n_distractors * len(ev.outputs)


def test_v3_finds_masked_copies_on_real_text(labelled: Any) -> None:
    recall, false, pairs = _rates(labelled, fpm.DEFAULT_PARAMS)
    assert fpm.DEFAULT_PARAMS.scheme == "sampled-shingles-v3"
    for edit in (*ADVERSARIAL, *EARLIER):
        assert recall[edit] >= 0.95, (edit, recall)
    assert false <= 0.001 * pairs, (false, pairs)


def test_v2_misses_look_alike_letters(labelled: Any) -> None:
    """What v3 fixes: the same set under v2 loses homoglyph copies (and still finds the rest)."""
    recall, _, _ = _rates(labelled, fpm.V2_PARAMS)
    assert recall["homoglyph"] < 0.5 and recall["homoglyph-invisible"] < 0.5, recall
    assert recall["mask10"] >= 0.95


# --- a real ledger --------------------------------------------------------------------------------


def _paragraph(paragraphs: list[Any], seed: int) -> str:
    """A real passage of several sentences."""
    rng = random.Random(seed)
    pool = [p.text for p in paragraphs if 500 <= len(p.text) <= 1200 and p.text.count(". ") >= 3]
    return str(rng.choice(pool))


def _response(text: str, ident: str) -> dict[str, Any]:
    return {
        "id": ident, "object": "chat.completion", "created": 1767225600, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 200, "total_tokens": 220},
    }  # fmt: skip


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LEDGER_DB": str(cwd / "ledger.duckdb"),
        "LEDGER_KEYS_DIR": str(cwd / "keys"),
        "LEDGER_LOCK_TIMEOUT": "5",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [LEDGER, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120, check=False
    )


def _ledger_with_batch(
    cwd: Path, output: str, record_text: str
) -> subprocess.CompletedProcess[str]:
    """init, record call (output), record batch (one record), record checkpoint, then audit --json."""
    (cwd / "request.json").write_text(json.dumps({"model": "gpt-4o", "messages": []}))
    (cwd / "response.json").write_text(json.dumps(_response(output, "chatcmpl-masked-1")))
    (cwd / "train.jsonl").write_text(
        json.dumps({"text": "an ordinary training record of our own, long enough to count"})
        + "\n"
        + json.dumps({"text": record_text}, ensure_ascii=False)
        + "\n",
        encoding="utf-8",
    )
    (cwd / "w.safetensors").write_bytes(b"\x01" * 512)
    for args in (
        ("init", "--origin", "masking.test/log"),
        ("record", "call", "--provider", "openai", "--purpose", "evaluation",
         "--request", "request.json", "--response", "response.json"),
        ("record", "batch", "train.jsonl", "--id", "data"),
        ("record", "checkpoint", "--id", "ck", "--weights", "w.safetensors", "--batch", "data"),
    ):  # fmt: skip
        done = _cli(cwd, *args)
        assert done.returncode == 0, (args, done.stderr)
    return _cli(cwd, "audit", "ck", "--json")


def test_cli_audit_finds_a_homoglyph_and_invisible_masked_copy(
    paragraphs: list[Any], tmp_path: Path
) -> None:
    output = _paragraph(paragraphs, 1)
    masked = near_data.invisible(near_data.homoglyph(output, random.Random(5)), random.Random(6))
    assert normalize(masked) != normalize(output)  # no exact match is possible
    audited = _ledger_with_batch(tmp_path, output, masked)
    assert audited.returncode == 3, audited.stderr
    report = json.loads(audited.stdout)
    assert report["verdict"] == "suspect"
    near = [f for f in report["findings"] if f["type"] == "near"]
    # One finding per call output segment (the text and each of its paragraphs), all on record 1.
    assert near and {(f["record"], f["purpose"]) for f in near} == {(1, "evaluation")}
    assert max(f["similarity"] for f in near) >= 0.9
    assert not [f for f in report["findings"] if f["type"] == "exact"]
    assert report["coverage"]["calls_not_near_comparable"] == 0


def test_cli_audit_of_an_unrelated_masked_text_is_clean(
    paragraphs: list[Any], tmp_path: Path
) -> None:
    output = _paragraph(paragraphs, 1)
    other = _paragraph(paragraphs, 2)
    assert other != output
    masked = near_data.invisible(near_data.homoglyph(other, random.Random(5)), random.Random(6))
    audited = _ledger_with_batch(tmp_path, output, masked)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert json.loads(audited.stdout)["verdict"] == "clean"


# --- ledgers recorded with scheme v2 ----------------------------------------------------------------


def _v2_ledger(
    tmp_path: Path, output: str, copy: str, batch_params: fpm.FingerprintParams
) -> Ledger:
    """A ledger whose call was recorded with v2 fingerprints, its batch with `batch_params`."""
    keys = tmp_path / "keys"
    os.environ["LEDGER_KEYS_DIR"] = str(keys)
    lg = Ledger.init(tmp_path / "ledger.duckdb", origin="masking.test/v2")
    recording.record_call(
        lg.writer, provider="openai", purpose="evaluation", request={"model": "gpt-4o"},
        response=_response(output, "chatcmpl-v2-1"), model="gpt-4o",
        fingerprint_params=fpm.V2_PARAMS,
    )  # fmt: skip
    recording.record_batch(
        lg.writer, [{"text": "an ordinary training record of our own, long enough to count"},
             {"text": copy}], id="old-data", fingerprint_params=batch_params,
    )  # fmt: skip
    (tmp_path / "w.safetensors").write_bytes(b"\x02" * 512)
    lg.record_checkpoint(id="old-ck", weights=[tmp_path / "w.safetensors"], batches=["old-data"])
    return lg


@pytest.fixture
def keys_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_KEYS_DIR", "")  # restored after the test; _v2_ledger sets it


def test_a_v2_ledger_keeps_its_near_finding_and_its_bundle_verifies(
    paragraphs: list[Any], tmp_path: Path, keys_env: None
) -> None:
    output = _paragraph(paragraphs, 3)
    copy = near_data.mask(near_data.respace(output, random.Random(1)), 0.1, random.Random(2))
    lg = _v2_ledger(tmp_path, output, copy, fpm.V2_PARAMS)
    assert lg.entry("old-data").body["fingerprints"]["params"] == fpm.V2_PARAMS.to_json()
    report = audit(lg, "old-ck")
    assert report.verdict == "suspect"
    assert [(f.type, f.record) for f in report.findings] == [("near", 1)]
    assert report.coverage["calls_not_near_comparable"] == 0
    # A suspect text is fingerprinted in the scheme of the batches it is compared with.
    suspects = tmp_path / "suspects.jsonl"
    suspects.write_text(json.dumps({"text": output}) + "\n")
    with_suspect = audit(lg, "old-ck", suspects=suspects)
    assert {(f.type, f.suspect) for f in with_suspect.findings} == {("near", None), ("near", 0)}
    # The offline verifier recomputes the v2 similarity from the bundle.
    env = {**os.environ, "LEDGER_DB": str(lg.path)}
    run = subprocess.run(
        [LEDGER, "audit", "old-ck", "--bundle", str(tmp_path / "b.json")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 3, run.stderr
    vkey = subprocess.run(
        [LEDGER, "keys", "export", "log", "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    checked = subprocess.run(
        [LEDGER, "verify-bundle", str(tmp_path / "b.json"), "--key", json.loads(vkey.stdout)["vkey"]],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_v2_call_against_a_v3_batch_is_counted_not_skipped(
    paragraphs: list[Any], tmp_path: Path, keys_env: None
) -> None:
    output = _paragraph(paragraphs, 4)
    copy = near_data.mask(near_data.respace(output, random.Random(1)), 0.1, random.Random(2))
    lg = _v2_ledger(tmp_path, output, copy, fpm.DEFAULT_PARAMS)
    report = audit(lg, "old-ck")
    # A near copy that near matching could not compare: said in coverage and notes, and the
    # verdict is not made inconclusive for it (exact matching still compared the two).
    assert report.verdict == "clean"
    assert report.coverage["calls_not_near_comparable"] == 1
    assert report.coverage["batches_not_near_comparable"] == 1
    assert any(
        "1 call fingerprinted with sampled-shingles-v2 could not be near-compared" in n
        and "sampled-shingles-v3" in n
        for n in report.notes
    ), report.notes
