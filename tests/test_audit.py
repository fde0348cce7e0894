"""Audit scenarios end to end on a real ledger: clean, contaminated three checkpoints up, declared,
teachers and policy, near copies, suspects, tampering (inconclusive, never clean), and the CLI.

Expected values come from the story's own construction (which record carries which text) and from an
independent implementation of the hashing rules (tests/audit_scenarios.py), never from our own output.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import pyarrow.parquet as pq
import pytest
from audit_scenarios import (
    CLEAN_TEXTS,
    EVAL_TEXT,
    MASKED_SOURCE,
    VERIFIER_SECRET,
    Story,
    in_process,
    ref_normalize,
    ref_record_leaf,
    ref_segment,
    shared_story,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.audit.inputs import read_policy, read_suspects
from ledger.audit.near import haystack_band_rows, needle_band_rows
from ledger.audit.report import Finding, finding_json, report_json
from ledger.audit.run import audit
from ledger.bundle.export import export_records
from ledger.errors import InputError, NotFoundError, UsageError
from ledger.log.store.lineage import lineage
from ledger.spec.lineage import lineage_json
from ledger.spec.rules import AllowRule, Policy, verdict_of

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
LEDGER = str(Path(sys.executable).with_name("ledger"))


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


@pytest.fixture(scope="session")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    return shared_story(tmp_path_factory)


@pytest.fixture
def private(story: Story, tmp_path: Path) -> Story:
    return story.copy(tmp_path / "copy")


def of_type(report: Any, kind: str) -> list[Finding]:
    return [f for f in report.findings if f.type == kind]


# --- verdicts ---------------------------------------------------------------------------------------------


def test_clean_checkpoint(story: Story) -> None:
    report = audit(story.ledger(), "clean-ckpt")
    assert report.verdict == "clean"
    assert report.findings == () and report.problems == ()
    assert report.coverage["batches"] == 1 and report.coverage["records"] == 3
    assert report.coverage["calls"] == 4  # every recorded call was compared
    jsonschema.validate(report_json(report), schema("audit"))


def test_evaluation_output_three_checkpoints_up_is_contaminated(story: Story) -> None:
    report = audit(story.ledger(), "c3")
    assert report.verdict == "contaminated"
    exact = of_type(report, "exact")
    assert {(f.call, f.batch, f.record) for f in exact} == {
        (story.eval_call, story.batches["early"], 2)
    }
    # The whole output and each of its two paragraphs are segments of the call; the record holds the whole.
    assert {f.segment for f in exact} == {ref_segment(EVAL_TEXT)}
    finding = exact[0]
    assert (
        finding.purpose == "evaluation"
        and finding.provider == "openai"
        and finding.model == "gpt-x"
    )
    assert finding.path == ("c3", "c2", "c1", "base")
    assert not [
        f
        for f in of_type(report, "near")
        if (f.call, f.batch, f.record) == (finding.call, finding.batch, 2)
    ]
    assert report.coverage["checkpoints"] == 4 and report.coverage["batches"] == 4
    jsonschema.validate(report_json(report), schema("audit"))


def test_audit_by_index_and_by_weights_agree(story: Story) -> None:
    lg = story.ledger()
    assert lg.audit("c3", fuzzy=False).verdict == "contaminated"  # the Python API of DESIGN.md
    by_weights = audit(lg, weights=[story.weights["c3"]], fuzzy=False)
    by_index = audit(lg, str(story.checkpoints["c3"]), fuzzy=False)
    assert by_weights.checkpoint == by_index.checkpoint == "c3"
    assert by_weights.findings == by_index.findings


def test_unknown_checkpoint_and_weights(story: Story, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no checkpoint with id 'nope'"):
        audit(story.ledger(), "nope")
    with pytest.raises(NotFoundError, match="is a batch, not a checkpoint"):
        audit(story.ledger(), str(story.batches["early"]))
    stray = tmp_path / "stray.bin"
    stray.write_bytes(b"not any checkpoint's weights")
    with pytest.raises(NotFoundError, match="no recorded checkpoint has weights"):
        audit(story.ledger(), weights=[stray])
    with pytest.raises(UsageError):
        audit(story.ledger())


def test_declared_distillation_batch(story: Story) -> None:
    report = audit(story.ledger(), "student")
    assert report.verdict == "contaminated"
    declared = of_type(report, "declared")
    assert [(f.call, f.batch, f.record, f.purpose, f.path) for f in declared] == [
        (story.distill_call, story.batches["distilled"], None, "training-data", ("student",))
    ]


def test_teacher_is_declared_and_a_policy_allows_it(story: Story, tmp_path: Path) -> None:
    report = audit(story.ledger(), "taught")
    assert report.verdict == "contaminated"
    assert [(f.type, f.provider, f.model, f.call) for f in report.findings] == [
        ("declared", "openai", "gpt-4o", None)
    ]

    policy = tmp_path / "policy.toml"
    policy.write_text('[[allow]]\nprovider = "openai"\nmodel = "gpt-4*"\n')
    allowed = audit(story.ledger(), "taught", policy=policy)
    assert allowed.verdict == "clean"
    assert [(f.type, f.basis) for f in allowed.findings] == [("allowed", "declared")]
    # a glob that does not match leaves the finding declared
    policy.write_text('[[allow]]\nprovider = "openai"\nmodel = "o1*"\n')
    assert audit(story.ledger(), "taught", policy=policy).verdict == "contaminated"


def test_policy_allows_exact_matches_of_an_allowed_provider(story: Story) -> None:
    report = audit(
        story.ledger(), "c3", policy=Policy((AllowRule("openai", "gpt-*"),)), fuzzy=False
    )
    assert report.verdict == "clean"
    assert {(f.type, f.basis, f.record) for f in report.findings} == {("allowed", "exact", 2)}


def test_masked_copy_is_a_near_finding(story: Story) -> None:
    report = audit(story.ledger(), "masked-ckpt")
    assert report.verdict == "suspect"
    near = of_type(report, "near")
    assert {(f.call, f.batch, f.record) for f in near} == {
        (story.masked_call, story.batches["masked"], 0)
    }
    assert all(0.5 <= (f.similarity or 0) <= 1 and f.purpose == "evaluation" for f in near)
    assert audit(story.ledger(), "masked-ckpt", fuzzy=False).verdict == "clean"
    assert audit(story.ledger(), "masked-ckpt", threshold=1.0).verdict == "clean"


def test_suspects_find_exact_and_near(story: Story, tmp_path: Path) -> None:
    suspects = tmp_path / "suspects.jsonl"
    secret_hash = ref_segment(CLEAN_TEXTS[2])
    lines = [
        json.dumps({"text": VERIFIER_SECRET}),
        "",
        json.dumps({"sha256": secret_hash}),
        json.dumps("too short"),
    ]
    suspects.write_text("\n".join(lines) + "\n")
    report = audit(story.ledger(), "clean-ckpt", suspects=suspects)
    assert report.verdict == "contaminated"
    found = {
        (f.suspect, f.suspect_line, f.batch, f.record, f.segment) for f in of_type(report, "exact")
    }
    clean0 = story.batches["clean/0"]
    assert found == {
        (0, 1, clean0, 1, ref_segment(VERIFIER_SECRET)),
        (1, 3, clean0, 2, secret_hash),
    }
    assert report.coverage["suspects"] == 3 and report.coverage["suspects_without_segments"] == 1


def test_suspect_texts_are_fingerprinted_too(story: Story, tmp_path: Path) -> None:
    suspects = tmp_path / "mine.txt"
    suspects.write_text(f"an unrelated line that matches nothing in the ledger\n{MASKED_SOURCE}\n")
    report = audit(story.ledger(), "masked-ckpt", suspects=suspects)
    near = {
        (f.suspect, f.suspect_line, f.batch, f.record)
        for f in of_type(report, "near")
        if f.call is None
    }
    assert near == {(1, 2, story.batches["masked"], 0)}


WORDS = [
    "the",
    "river",
    "rises",
    "in",
    "hills",
    "above",
    "old",
    "mill",
    "town",
    "runs",
    "south",
    "sea",
]
words = st.sampled_from(WORDS)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.lists(words, min_size=0, max_size=40).map(" ".join), max_size=4), max_size=6
    )
)
def test_vectorized_band_keys_equal_the_fingerprint_module(records: list[list[str]]) -> None:
    from ledger.spec import fingerprint

    blobs = fingerprint.fingerprint_records(records)
    rows, keys = haystack_band_rows(blobs, fingerprint.DEFAULT_PARAMS)
    got: dict[int, set[int]] = {}
    for row, key in zip(rows.tolist(), keys.tolist()):
        got.setdefault(row, set()).add(key)
    want = {i: set(fingerprint.haystack_bands(b)) for i, b in enumerate(blobs)}
    assert {i: k for i, k in got.items()} == {i: k for i, k in want.items() if k}

    needles = fingerprint.fingerprint_texts([t for texts in records for t in texts])
    rows, keys = needle_band_rows(needles, fingerprint.DEFAULT_PARAMS)
    got = {}
    for row, key in zip(rows.tolist(), keys.tolist()):
        got.setdefault(row, set()).add(key)
    want = {i: set(fingerprint.needle_bands(fp)) for i, fp in enumerate(needles)}
    assert got == {i: k for i, k in want.items() if k}


def test_one_finding_per_key(story: Story) -> None:
    report = audit(story.ledger(), "c3")
    keys = [f.key for f in report.findings]
    assert len(keys) == len(set(keys))


# --- integrity --------------------------------------------------------------------------------------------


def raw_sql(story: Story, *statements: str) -> None:
    conn = duckdb.connect(str(story.path))
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def test_deleting_the_matching_segment_row_is_inconclusive_never_clean(private: Story) -> None:
    early = private.batches["early"]
    raw_sql(private, f"DELETE FROM record_segments WHERE batch = {early} AND position = 2")
    report = audit(private.ledger(), "c3")
    assert report.verdict == "inconclusive"
    assert not of_type(report, "exact")  # the evidence is gone, and the audit says it cannot vouch
    assert any(p.index == early and "records_root" in p.what for p in report.problems)


def test_deleted_record_rows_are_inconclusive(private: Story) -> None:
    clean0 = private.batches["clean/0"]
    raw_sql(private, f"DELETE FROM records WHERE batch = {clean0}",
            f"DELETE FROM record_segments WHERE batch = {clean0}")  # fmt: skip
    report = audit(private.ledger(), "clean-ckpt")
    assert report.verdict == "inconclusive"
    assert any(p.index == clean0 for p in report.problems)


def test_hidden_batch_ref_is_inconclusive(private: Story) -> None:
    """Renaming a batch's ref column hides it from the lineage lookup: the lineage becomes incomplete."""
    early = private.batches["early"]
    raw_sql(private, f"UPDATE entries SET ref = 'renamed' WHERE idx = {early}")
    report = audit(private.ledger(), "c3")
    assert report.verdict == "inconclusive"
    assert any("'early'" in p.what for p in report.problems)


def test_dangling_reference_is_recorded_not_raised(private: Story) -> None:
    lg = private.ledger()
    body = {"kind": "checkpoint", "v": 1, "time": "2026-01-01T00:00:00Z", "id": "orphan",
            "weights": [{"path": "w", "sha256": "0" * 64}], "parents": ["ghost"], "batches": ["early"],
            "teachers": []}  # fmt: skip
    lg.append_bodies([body])
    with lg.session() as conn:
        lin = lineage(conn, "orphan")
    assert [n.id for n in lin.nodes if n.missing] == ["ghost"]
    assert not lin.complete
    document = lineage_json(lin)
    jsonschema.validate(document, schema("lineage"))
    report = audit(lg, "orphan", fuzzy=False)
    assert report.verdict == "inconclusive"
    assert {(f.call, f.record) for f in of_type(report, "exact")} == {
        (private.eval_call, 2)
    }  # still listed


def test_a_call_with_other_fingerprint_settings_is_counted_not_skipped(private: Story) -> None:
    """A call whose fingerprints cannot be compared with the lineage's is surfaced in coverage and
    notes; the verdict does not change for it (exact matching still covers the call)."""
    lg = private.ledger()
    call = lg.entry(private.unused_call).body
    params = dict(call["fingerprints"]["params"])
    params["sample_rate"] = params["sample_rate"] * 2
    odd = {
        **call,
        "external_id": "chatcmpl-odd",
        "fingerprints": {**call["fingerprints"], "params": params},
    }
    lg.append_bodies([odd])
    before = audit(lg, "clean-ckpt", fuzzy=False)
    report = audit(lg, "clean-ckpt")
    assert report.verdict == before.verdict == "clean"
    assert report.coverage["calls_not_near_comparable"] == 1
    assert report.coverage["batches_not_near_comparable"] == report.coverage["batches"] > 0
    assert any("1 call fingerprinted with" in n and "could not be near-compared" in n
               for n in report.notes)  # fmt: skip


# --- lineage ----------------------------------------------------------------------------------------------


def test_lineage_closure_and_json(story: Story) -> None:
    with story.ledger().session() as conn:
        lin = lineage(conn, "c3")
        student = lineage(conn, "student")
    assert [n.id for n in lin.checkpoints] == ["c3", "c2", "c1", "base"]
    assert {n.id: n.path for n in lin.batches} == {
        "tune": ("c3",), "late": ("c3", "c2"), "mid": ("c3", "c2", "c1"), "early": ("c3", "c2", "c1", "base"),
    }  # fmt: skip
    assert {(e.source, e.target, e.kind) for e in student.edges} == {
        ("student", "distilled", "batch"), ("distilled", f"call:{story.distill_call}", "derived_from"),
    }  # fmt: skip
    document = lineage_json(lin)
    jsonschema.validate(document, schema("lineage"))
    assert {n["id"] for n in document["nodes"]} == {
        "c3",
        "c2",
        "c1",
        "base",
        "tune",
        "late",
        "mid",
        "early",
    }


# --- inputs -----------------------------------------------------------------------------------------------


def paragraph_segments(text: str) -> set[str]:
    """A call's (or suspect's) segments per DESIGN.md, independently: the text and its paragraphs."""
    import re

    pieces = [text, *re.split(r"\n\s*\n", text)]
    return {s for s in (ref_segment(p) for p in pieces) if s}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=80), min_size=1, max_size=4))
def test_suspect_text_segments_follow_the_rules(
    tmp_path_factory: pytest.TempPathFactory, parts: list[str]
) -> None:
    text = "\n\n".join(parts)
    if not text.strip():
        return
    path = tmp_path_factory.mktemp("s") / "s.jsonl"
    path.write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")
    try:
        (suspect,) = read_suspects(path)
    except InputError:
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in text)  # only lone surrogates are refused
        return
    assert {s.hex() for s in suspect.segments} == paragraph_segments(text)
    assert all(ref_normalize(t) == t for t in suspect.texts)


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ('{"text": "ok text that is long enough to be a segment"}\nnot json\n', ":2:"),
        ('{"sha256": "abc"}\n', ":1:"),
        ('{"text": "a", "sha256": "b"}\n', ":1:"),
        ("[1, 2]\n", ":1:"),
        ("\n\n", "no suspects"),
    ],
)
def test_bad_suspect_lines_name_file_and_line(tmp_path: Path, content: str, where: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=where):
        read_suspects(path)


def test_text_suspects_and_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_bytes(
        b"first suspect text, long enough to count\r\n\r\nsecond one, also long enough to count\n"
    )
    suspects = read_suspects(path)
    assert [(s.index, s.line) for s in suspects] == [(0, 1), (1, 3)]
    assert suspects[0].segments[0].hex() == ref_segment("first suspect text, long enough to count")
    path.write_bytes(b"ok line that is long enough to be one\n\xff\xfe\n")
    with pytest.raises(InputError, match="mine.txt:2: not valid UTF-8"):
        read_suspects(path)


def test_policy_files(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[[allow]]\nprovider = "acme"\n\n[[allow]]\nprovider = "openai"\nmodel = "gpt-4o*"\n'
    )
    policy = read_policy(path)
    assert policy.allows("acme", "anything") and policy.allows("openai", "gpt-4o-mini")
    assert not policy.allows("openai", "o1") and not policy.allows("other", None)
    for bad in (
        '[[allow]]\nmodel = "x"\n',
        '[[allow]]\nprovider = "a"\ncolour = 1\n',
        "allow = 3\n",
        "[[allow]\n",
    ):
        path.write_text(bad)
        with pytest.raises(InputError, match="p.toml"):
            read_policy(path)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(["declared", "exact", "near", "allowed"]), max_size=6), st.booleans()
)
def test_verdict_rule(types: list[str], inconclusive: bool) -> None:
    verdict = verdict_of(types, inconclusive=inconclusive)
    if inconclusive:
        assert verdict == "inconclusive"
    elif "declared" in types or "exact" in types:
        assert verdict == "contaminated"
    elif "near" in types:
        assert verdict == "suspect"
    else:
        assert verdict == "clean"


# --- export -----------------------------------------------------------------------------------------------


def test_export_records_match_an_independent_leaf_rebuild(story: Story, tmp_path: Path) -> None:
    counts = export_records(story.ledger(), tmp_path / "out", "c3")
    table = pq.read_table(tmp_path / "out")
    assert (
        table.schema.field("batch").type == "int64" and table.schema.field("leaf").type == "binary"
    )
    rows = list(zip(*(table.column(c).to_pylist() for c in ("batch", "position", "leaf"))))
    expected = [
        (story.batches[b], p, ref_record_leaf(r))
        for b in sorted(("early", "mid", "late", "tune"), key=story.batches.__getitem__)
        for p, r in enumerate(story.records[b])
    ]
    assert rows == expected
    assert (counts.batches, counts.records) == (4, len(expected))
    from ledger.views import bundle as bundle_views

    jsonschema.validate(bundle_views.export_json(counts), schema("export-records"))


# --- the CLI ----------------------------------------------------------------------------------------------


def main(story: Story, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"LEDGER_DB": str(story.path), "LEDGER_KEYS_DIR": str(story.keys_dir), "COLUMNS": "200"}
    return in_process(*args, env=env)


def run(story: Story, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LEDGER_DB": str(story.path),
        "LEDGER_KEYS_DIR": str(story.keys_dir),
        "LEDGER_LOCK_TIMEOUT": "5",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [LEDGER, *args], check=False, capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_audit_exit_codes_and_json(story: Story, tmp_path: Path) -> None:
    clean = run(story, "audit", "clean-ckpt", "--json")
    assert clean.returncode == 0, clean.stderr
    jsonschema.validate(json.loads(clean.stdout), schema("audit"))
    contaminated = run(story, "audit", "c3", "--no-fuzzy")
    assert contaminated.returncode == 1, contaminated.stderr
    assert contaminated.stdout.startswith("CONTAMINATED")
    assert (
        f"call #{story.eval_call}" in contaminated.stdout
        and "c3 → c2 → c1 → base" in contaminated.stdout
    )
    assert main(story, "audit", "masked-ckpt").returncode == 3
    assert main(story, "audit", "masked-ckpt", "--strict").returncode == 1
    missing = main(story, "audit", "nope")
    assert missing.returncode == 4 and missing.stderr.startswith(
        "error: no checkpoint with id 'nope'"
    )


def test_cli_lineage_formats(story: Story) -> None:
    document = main(story, "lineage", "c3", "--format", "json")
    assert document.returncode == 0, document.stderr
    jsonschema.validate(json.loads(document.stdout), schema("lineage"))
    dot = main(story, "lineage", "c3", "--format", "dot", "--audit").stdout
    assert dot.startswith("digraph lineage {") and '"early"' in dot and "color=red" in dot


def test_views_render_without_error(story: Story) -> None:
    from rich.console import Console

    from ledger.views import audit as audit_views
    from ledger.views import lineage as lineage_views

    report = audit(story.ledger(), "c3")
    console = Console(record=True, width=140)
    console.print(audit_views.audit_view(report))
    console.print(lineage_views.lineage_tree(report.lineage, report))
    text = console.export_text()
    assert text.index("CONTAMINATED") < text.index("coverage")
    assert "tainted: exact" in text
    assert hashlib.sha256(text.encode()).hexdigest()  # rendered to the end
    assert finding_json(report.findings[0])["type"] == report.findings[0].type
    mermaid = lineage_views.lineage_mermaid(report.lineage, report)
    assert mermaid.startswith("flowchart TD") and "-->|parent|" in mermaid and "tainted" in mermaid


def test_audit_recomputes_only_its_lineage_record_sets(tmp_path: Path) -> None:
    """A damaged record set outside the lineage fails `verify` but does not change this audit's verdict."""
    import duckdb

    from ledger import Ledger
    from ledger.audit.run import audit
    from ledger.log.verify import verify_ledger

    lg = Ledger.init(tmp_path / "ledger.duckdb", origin="example.org/scope")
    lg.record_batch(
        [{"text": f"our own training record number {i} with enough words"} for i in range(5)],
        id="mine",
    )
    lg.record_batch(
        [{"text": f"some other team's record number {i} with enough words"} for i in range(5)],
        id="theirs",
    )
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights")
    lg.record_checkpoint(id="ck", weights=[weights], batches=["mine"])
    theirs = lg.entry("theirs").index
    conn = duckdb.connect(str(lg.path))
    conn.execute("DELETE FROM record_segments WHERE batch = ?", [theirs])
    conn.close()
    assert any(p.index == theirs for p in verify_ledger(lg).problems)
    assert audit(lg, "ck").verdict == "clean"
