"""Legible output: identifiers are never cut, piped output has no padding, findings and suspect hits name
batches and calls by their ids, and --help documents every option and LEDGER_* variable.

Everything runs through real subprocesses of the installed `ledger` on a ledger on disk.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from audit_scenarios import chat_record, response

from ledger.bundle.verify import verify_bundle
from ledger.wording import plural

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
LEDGER = str(Path(sys.executable).with_name("ledger"))

ORIGIN = "provenance.example.org/distillation-ledger-of-the-research-lab"
SHARD_17 = "pretrain-mixture-2026-11/shard-000017"
SHARD_18 = "pretrain-mixture-2026-11/shard-000018"
CHECKPOINT = "pretrain-mixture-2026-11/ckpt-step-000120000"
RESPONSE_ID = "chatcmpl-legible-0123456789abcdefghijklmnopqrstuvwxyz"
COPIED = "The teacher model explained that gradient clipping keeps the update norm bounded in every step."
SECRET = (
    "A verifier's own text that the lab trained on without saying so, long enough to be a segment."
)


def run(*args: str, cwd: Path, columns: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR")}
    env.update({"LEDGER_LOCK_TIMEOUT": "10", "LEDGER_DB": str(cwd / "ledger.duckdb")})
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.run(
        [LEDGER, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300, check=False
    )


def ok(*args: str, cwd: Path, columns: str | None = None) -> str:
    proc = run(*args, cwd=cwd, columns=columns)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two batches whose long ids differ only at the end; the second holds a recorded call's output."""
    base = tmp_path_factory.mktemp("legible")
    ok("init", "--origin", ORIGIN, cwd=base)
    (base / "resp.json").write_text(
        json.dumps(response(RESPONSE_ID, COPIED, model="gpt-4o-2024-08-06"))
    )
    ok(
        "record",
        "call",
        "--provider",
        "openai",
        "--purpose",
        "evaluation",
        "--response",
        "resp.json",
        cwd=base,
    )
    (base / "s17.jsonl").write_text(
        json.dumps(
            chat_record(
                "first question of the shard",
                "An answer written by people at the lab, nothing copied.",
            )
        )
        + "\n"
        + json.dumps(chat_record("second question of the shard", SECRET))
        + "\n"
    )
    (base / "s18.jsonl").write_text(
        json.dumps(chat_record("what does clipping do?", COPIED)) + "\n"
    )
    (base / "w.bin").write_bytes(b"weights")
    for file, batch_id in (("s17.jsonl", SHARD_17), ("s18.jsonl", SHARD_18)):
        ok("record", "batch", file, "--id", batch_id, cwd=base)
    ok("record", "checkpoint", "--id", CHECKPOINT, "--weights", "w.bin", "--batch", SHARD_17, "--batch", SHARD_18,
       cwd=base)  # fmt: skip
    return base


def vkey_of(lab: Path) -> str:
    return ok("keys", "export", "log", cwd=lab).strip()


def assert_legible(text: str, what: str) -> None:
    assert text.strip(), what
    for n, line in enumerate(text.splitlines()):
        assert not line.endswith(" "), f"{what}: line {n} ends with a space: {line!r}"
    assert "…" not in text, f"{what}: something was cut short:\n{text}"


COMMANDS = [
    ("log",),
    ("keys", "list"),
    ("status",),
    ("audit", CHECKPOINT),
    ("lineage", CHECKPOINT),
    ("lineage", CHECKPOINT, "--audit"),
    ("show", SHARD_18),
    ("verify",),
    ("head",),
    ("prove", SHARD_17),
]


@pytest.mark.parametrize("columns", [None, "80"])
def test_identifiers_are_whole_and_lines_unpadded(lab: Path, columns: str | None) -> None:
    vkey = vkey_of(lab)
    for args in COMMANDS:
        proc = run(*args, cwd=lab, columns=columns)
        assert proc.returncode in (0, 1), proc.stderr
        assert_legible(proc.stdout, " ".join(args))
    # Batch ids differ only in their last digits: both must be readable whole, on one line.
    for args in (("log",), ("lineage", CHECKPOINT), ("lineage", CHECKPOINT, "--audit")):
        text = run(*args, cwd=lab, columns=columns).stdout
        assert SHARD_17 in text and SHARD_18 in text, (args, text)
    audit = run(
        "audit", CHECKPOINT, cwd=lab, columns=columns
    ).stdout  # the finding is in shard 18 only
    assert SHARD_18 in audit and SHARD_17 not in audit, audit
    assert RESPONSE_ID in audit and "openai/gpt-4o-2024-08-06" in audit
    keys = ok("keys", "list", cwd=lab, columns=columns)
    keyid = json.loads(ok("keys", "list", "--json", cwd=lab))[0]["keyid"]
    assert keyid in keys
    if columns is None:  # piped: as wide as it needs, so even the longest id is on one line
        assert vkey in keys
    else:  # 80 columns cannot hold this vkey on a line with its label: folded, never cut
        assert vkey in "".join(keys.split()) and vkey not in keys
        assert max(len(line) for line in keys.splitlines()) <= 80


def test_record_results_show_whole_ids(tmp_path: Path) -> None:
    ok("init", cwd=tmp_path)
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"text": "a record of the long named batch for the test"}) + "\n"
    )
    for columns in (None, "80"):
        batch_id = f"{SHARD_17}-{columns}"
        text = ok("record", "batch", "a.jsonl", "--id", batch_id, cwd=tmp_path, columns=columns)
        assert_legible(text, "record batch")
        assert batch_id in text


def test_findings_name_the_batch_and_the_call(lab: Path) -> None:
    proc = run("audit", CHECKPOINT, "--json", cwd=lab)
    assert proc.returncode == 1, proc.stderr
    document = json.loads(proc.stdout)
    jsonschema.validate(document, json.loads((SCHEMAS / "audit.schema.json").read_text()))
    exact = [f for f in document["findings"] if f["type"] == "exact"]
    assert exact, document
    for finding in exact:
        assert finding["batch_id"] == SHARD_18
        assert finding["external_id"] == RESPONSE_ID
    log = {e["index"]: e["body"] for e in json.loads(ok("log", "--json", cwd=lab))}
    assert all(
        log[f["batch"]]["id"] == f["batch_id"]
        for f in document["findings"]
        if f["batch"] is not None
    )


@pytest.fixture(scope="module")
def bundle(lab: Path) -> dict[str, Any]:
    proc = run("audit", CHECKPOINT, "--bundle", "bundle.json", cwd=lab)
    assert proc.returncode == 1, proc.stderr
    document: dict[str, Any] = json.loads((lab / "bundle.json").read_text())
    jsonschema.validate(document, json.loads((SCHEMAS / "audit-bundle.schema.json").read_text()))
    return document


def problems(document: dict[str, Any], vkey: str) -> list[str]:
    return [f"{p.where}: {p.what}" for p in verify_bundle(document, vkey).problems]


def test_bundle_labels_are_checked_against_the_entries(lab: Path, bundle: dict[str, Any]) -> None:
    vkey = vkey_of(lab)
    assert problems(bundle, vkey) == []
    n = next(i for i, f in enumerate(bundle["findings"]) if f["type"] == "exact")

    relabeled = copy.deepcopy(bundle)
    relabeled["findings"][n]["batch_id"] = SHARD_17  # the evidence pinned on the other shard
    assert any(f"expected batch_id '{SHARD_18}'" in p for p in problems(relabeled, vkey))
    (lab / "relabeled.json").write_text(json.dumps(relabeled))
    cli = run("verify-bundle", "relabeled.json", "--key", vkey, cwd=lab)
    assert cli.returncode == 1 and "BUNDLE DOES NOT VERIFY" in cli.stdout

    other_call = copy.deepcopy(bundle)
    other_call["findings"][n]["external_id"] = "chatcmpl-someone-else"
    assert any(f"expected external_id '{RESPONSE_ID}'" in p for p in problems(other_call, vkey))

    invented = copy.deepcopy(bundle)
    teacherless = next(i for i, f in enumerate(invented["findings"]) if f["call"] is not None)
    invented["findings"][teacherless]["external_id"] = None
    assert problems(invented, vkey)

    older = copy.deepcopy(bundle)  # bundles written before these fields still verify
    for finding in older["findings"]:
        del finding["batch_id"], finding["external_id"]
    assert problems(older, vkey) == []


def test_verify_bundle_says_where_each_suspect_hit(lab: Path, bundle: dict[str, Any]) -> None:
    vkey = vkey_of(lab)
    ok("export", "records", "exported", "--checkpoint", CHECKPOINT, cwd=lab)
    (lab / "mine.jsonl").write_text(
        json.dumps({"text": "nothing like this was ever in the training data, surely not"})
        + "\n"
        + json.dumps(SECRET)
        + "\n"
    )
    args = (
        "verify-bundle",
        "bundle.json",
        "--key",
        vkey,
        "--records",
        "exported",
        "--suspects",
        "mine.jsonl",
    )
    proc = run(*args, "--json", cwd=lab)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    jsonschema.validate(report, json.loads((SCHEMAS / "verify-bundle.schema.json").read_text()))
    batch_index = next(
        e["index"]
        for e in json.loads(ok("log", "--json", cwd=lab))
        if e["body"].get("id") == SHARD_17
    )
    assert [
        (h["suspect"], h["suspect_line"], h["batch"], h["batch_id"], h["record"])
        for h in report["suspect_hits"]
    ] == [(1, 2, batch_index, SHARD_17, 1)]
    assert re.fullmatch(r"[0-9a-f]{64}", report["suspect_hits"][0]["segment"])
    human = run(*args, cwd=lab, columns="80").stdout
    assert_legible(human, "verify-bundle --suspects")
    assert "1 hit" in human and SHARD_17 in human and "line 2" in human
    piped = run(*args, cwd=lab).stdout
    assert_legible(piped, "verify-bundle --suspects, piped")
    assert report["suspect_hits"][0]["segment"] in piped and SHARD_17 in piped


def test_version_and_help(tmp_path: Path) -> None:
    from importlib.metadata import version

    assert ok("--version", cwd=tmp_path) == f"ledger {version('ledger')}\n"
    text = ok("--help", cwd=tmp_path)
    assert "--verbose" in text and "--version" in text
    names = set()
    for path in (ROOT / "src" / "ledger").rglob("*.py"):
        names |= set(re.findall(r"LEDGER_[A-Z_]+", path.read_text(encoding="utf-8")))
    assert {
        "LEDGER_DB",
        "LEDGER_KEYS_DIR",
        "LEDGER_KEY",
        "LEDGER_PASSPHRASE",
        "LEDGER_LOCK_TIMEOUT",
    } <= names
    for name in sorted(names):
        assert re.search(rf"^\s+{name}\s+\S", text, re.MULTILINE), (
            f"{name} is read by the code but not in ledger --help"
        )


def test_verbose_anywhere_shows_causes(tmp_path: Path) -> None:
    (tmp_path / "ledger.duckdb").write_bytes(b"not a database at all")
    quiet = run("status", cwd=tmp_path)
    loud = run("status", "--verbose", cwd=tmp_path)
    assert quiet.returncode == loud.returncode == 4
    assert "caused by" not in quiet.stderr and "caused by" in loud.stderr


@pytest.mark.parametrize(
    ("count", "singular", "plural_form", "expected"),
    [(1, "batch", "batches", "1 batch"), (2, "batch", "batches", "2 batches"), (0, "entry", "entries", "0 entries"),
     (1, "entry", "entries", "1 entry"), (1, "finding", None, "1 finding"), (3, "finding", None, "3 findings")],
)  # fmt: skip
def test_plural(count: int, singular: str, plural_form: str | None, expected: str) -> None:
    assert plural(count, singular, plural_form) == expected


def test_counts_agree_in_output(tmp_path: Path) -> None:
    ok("init", cwd=tmp_path)
    status = ok("status", cwd=tmp_path)
    # init writes two entries (the log key and the `default` recorder key)
    assert re.search(r"size\s+2 entries\b", status) and "2 entry" not in status
    assert "intact: 2 entries," in ok("verify", cwd=tmp_path)
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": "the only record of a batch of one, long enough"}) + "\n"
    )
    ok("record", "batch", "b.jsonl", "--id", "one", cwd=tmp_path)
    ok("record", "checkpoint", "--id", "c", "--weights", "b.jsonl", "--batch", "one", cwd=tmp_path)
    tree = ok("lineage", "c", cwd=tmp_path)
    assert (
        "1 record" in tree
        and "1 records" not in tree
        and "1 batch" in tree
        and "1 batches" not in tree
    )
    assert "intact: 4 entries" in ok("verify", cwd=tmp_path)
