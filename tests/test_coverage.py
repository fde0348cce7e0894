"""The Coverage rule: a `clean` that saw nothing is a lie (DESIGN.md "Audit", step 3).

Records without comparable text (token ids, numbers, a text field that holds only short strings) turn
`clean` into `inconclusive`, naming the batches and counts, unless the policy's `[[opaque]]` tables
declare the batch out of scope; the JSON, the human view and the bundle list it, and `verify-bundle`
re-applies it. Coverage never hides a finding.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hardening import CliPool, one_error_line

from ledger import Ledger
from ledger.spec import entries

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
TEACHER_TEXT = (
    "Quarterly maintenance requires draining the cooling loop, flushing it with deionised water, "
    "and logging the conductivity before the pumps are restarted."
)
OPAQUE_POLICY = """
[[opaque]]
batch = "tokens/*"
reason = "pre-tokenized public web mix; the tokenizer is not recorded"
"""


@pytest.fixture(scope="module")
def cli() -> Iterator[CliPool]:
    pool = CliPool(2)
    yield pool
    pool.close()


class Lab:
    def __init__(self, cli: CliPool, root: Path) -> None:
        self.cli, self.root = cli, root

    def run(self, *args: str, code: int = 0) -> str:
        result = self.cli.run(args, self.root)
        assert result.returncode == code, (
            args,
            result.returncode,
            result.stderr,
            result.stdout[-3000:],
        )
        return result.stdout

    def json(self, *args: str, code: int = 0, schema: str | None = None) -> Any:
        document = json.loads(self.run(*args, "--json", code=code))
        if schema is not None:
            jsonschema.validate(
                document, json.loads((SCHEMAS / f"{schema}.schema.json").read_text())
            )
        return document

    def jsonl(self, name: str, rows: list[Any]) -> Path:
        path = self.root / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    def text_batch(self, batch_id: str, *texts: str) -> None:
        rows = [{"text": t} for t in texts] or [
            {"text": f"{batch_id}: a training sentence long enough to be a segment, number {i}."}
            for i in range(3)
        ]
        self.run(
            "record",
            "batch",
            str(self.jsonl(batch_id.replace("/", "_") + ".jsonl", rows)),
            "--id",
            batch_id,
        )

    def token_batch(self, batch_id: str, n: int = 4) -> None:
        rows = [{"input_ids": list(range(i, i + 64)), "attention_mask": [1] * 64} for i in range(n)]
        self.run(
            "record",
            "batch",
            str(self.jsonl(batch_id.replace("/", "_") + ".jsonl", rows)),
            "--id",
            batch_id,
        )

    def checkpoint(self, checkpoint_id: str, *batches: str) -> None:
        weights = self.root / f"{checkpoint_id}.bin"
        weights.write_bytes(checkpoint_id.encode())
        args = [a for b in batches for a in ("--batch", b)]
        self.run("record", "checkpoint", "--id", checkpoint_id, "--weights", str(weights), *args)

    def vkey(self) -> str:
        path = self.root / "lab.vkey"
        if not path.exists():
            self.run("keys", "export", "log", "--out", str(path))
        return str(path)


@pytest.fixture()
def lab(cli: CliPool, tmp_path: Path) -> Lab:
    lab = Lab(cli, tmp_path)
    lab.run("init", "--origin", "example.org/coverage")
    return lab


def test_token_ids_make_a_clean_audit_inconclusive_naming_the_batch(lab: Lab) -> None:
    lab.text_batch("text/0")
    lab.token_batch("tokens/0", n=4)
    lab.text_batch("text/1")
    lab.checkpoint("k", "text/0", "tokens/0", "text/1")
    report = lab.json("audit", "k", code=3, schema="audit")
    assert report["verdict"] == "inconclusive" and report["problems"] == []
    assert report["coverage_gaps"] == [
        {
            "batch": lab.json("show", "tokens/0")["index"],
            "batch_id": "tokens/0",
            "records": 4,
            "records_without_text": 4,
            "opaque": None,
        }
    ]
    coverage = report["coverage"]
    assert coverage["records_without_text"] == 4 and coverage["batches_without_text"] == 1
    assert coverage["batches_without_segments"] == 1 and coverage["opaque_batches"] == 0
    shown = lab.run("audit", "k", code=3)
    assert (
        "INCONCLUSIVE" in shown and "4 records in 1 lineage batch carry no comparable text" in shown
    )
    assert "tokens/0" in shown and "records without comparable text" in shown


def test_recording_says_which_records_carry_no_text(lab: Lab) -> None:
    rows = [
        {"text": "short"},
        {"text": "a record whose text is long enough to be compared later"},
        {"n": [1, 2]},
    ]
    recorded = lab.json(
        "record",
        "batch",
        str(lab.jsonl("mixed.jsonl", rows)),
        "--id",
        "mixed",
        schema="record-batch",
    )
    assert recorded["batches"][0]["records_without_text"] == 2
    shown = lab.run("record", "batch", str(lab.jsonl("mixed2.jsonl", rows)), "--id", "mixed2")
    assert "2 records in 1 batch carry no comparable text" in shown
    body = lab.json("show", "mixed")["body"]
    assert body["records_without_text"] == 2
    lab.checkpoint("k", "mixed")
    report = lab.json("audit", "k", code=3)
    assert (
        report["coverage_gaps"][0]["records_without_text"] == 2
        and report["coverage_gaps"][0]["records"] == 3
    )


def test_an_opaque_policy_excuses_the_batch_and_every_document_lists_it(lab: Lab) -> None:
    lab.text_batch("text/0")
    lab.token_batch("tokens/web-00017")
    lab.checkpoint("k", "text/0", "tokens/web-00017")
    policy = lab.root / "policy.toml"
    policy.write_text(OPAQUE_POLICY, encoding="utf-8")
    bundle = lab.root / "bundle.json"
    report = lab.json(
        "audit", "k", "--policy", str(policy), "--bundle", str(bundle), schema="audit"
    )
    assert report["verdict"] == "clean"
    assert report["opaque"] == [
        {
            "batch": "tokens/*",
            "reason": "pre-tokenized public web mix; the tokenizer is not recorded",
        }
    ]
    assert report["coverage_gaps"][0]["opaque"] == report["opaque"][0]["reason"]
    assert report["coverage"]["opaque_batches"] == 1 and report["coverage"]["opaque_records"] == 4
    shown = lab.run("audit", "k", "--policy", str(policy))
    assert (
        "CLEAN" in shown
        and "declared out of scope by the policy" in shown
        and "opaque: pre-tokenized" in shown
    )
    document = json.loads(bundle.read_text())
    jsonschema.validate(document, json.loads((SCHEMAS / "audit-bundle.schema.json").read_text()))
    assert (
        document["opaque"] == report["opaque"]
        and document["coverage_gaps"] == report["coverage_gaps"]
    )
    checked = lab.json("verify-bundle", str(bundle), "--key", lab.vkey())
    assert checked["ok"] and checked["verdict"] == "clean"
    export = lab.root / "export"
    lab.run("export", "records", str(export), "--checkpoint", "k")
    assert lab.json("verify-bundle", str(bundle), "--key", lab.vkey(), "--records", str(export))[
        "ok"
    ]


@pytest.mark.parametrize(
    "edit, says",
    [
        ("drop the gap", "commits to 4 records without text"),
        ("claim opaque", "the bundle's opaque rules give batch 'tokens/0' no exemption"),
        ("drop the opaque rules", "expected inconclusive"),
        ("widen the opaque rules", "expected inconclusive"),
        ("understate the count", "commits to 4 records without text, the bundle lists 1"),
    ],
)
def test_verify_bundle_re_applies_coverage(lab: Lab, edit: str, says: str) -> None:
    lab.text_batch("text/0")
    lab.token_batch("tokens/0")
    lab.checkpoint("k", "text/0", "tokens/0")
    policy = lab.root / "policy.toml"
    policy.write_text(OPAQUE_POLICY.replace("tokens/*", "tokens/web-*"), encoding="utf-8")
    bundle = lab.root / "bundle.json"
    # the policy excuses nothing here (tokens/0 is not a web shard): the honest verdict is inconclusive
    assert (
        lab.json("audit", "k", "--policy", str(policy), "--bundle", str(bundle), code=3)["verdict"]
        == "inconclusive"
    )
    assert lab.json("verify-bundle", str(bundle), "--key", lab.vkey())["ok"]
    document = json.loads(bundle.read_text())
    document["verdict"] = "clean"
    if edit == "drop the gap":
        document["coverage_gaps"] = []
    elif edit == "claim opaque":
        document["coverage_gaps"][0]["opaque"] = "nothing to see"
    elif edit == "drop the opaque rules":
        document["opaque"] = []
    elif edit == "widen the opaque rules":
        document["verdict"] = "inconclusive"
        document["opaque"] = [{"batch": "*", "reason": "everything"}]
        says = "the bundle's opaque rules give batch 'tokens/0' reason 'everything'"
    elif edit == "understate the count":
        document["coverage_gaps"][0]["records_without_text"] = 1
    forged = lab.root / "forged.json"
    forged.write_text(json.dumps(document), encoding="utf-8")
    checked = lab.json("verify-bundle", str(forged), "--key", lab.vkey(), code=1)
    assert not checked["ok"]
    assert any(says in p["what"] for p in checked["problems"]), checked["problems"]


def test_coverage_never_hides_a_finding(lab: Lab) -> None:
    response = {
        "id": "chatcmpl-x", "object": "chat.completion", "created": 1764979200, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": TEACHER_TEXT}}],
    }  # fmt: skip
    (lab.root / "response.json").write_text(json.dumps(response))
    lab.run(
        "record",
        "call",
        "--provider",
        "openai",
        "--purpose",
        "evaluation",
        "--response",
        str(lab.root / "response.json"),
    )
    lab.text_batch("text/0", TEACHER_TEXT)
    lab.token_batch("tokens/0")
    lab.checkpoint("k", "text/0", "tokens/0")
    report = lab.json("audit", "k", code=1)
    assert report["verdict"] == "contaminated" and report["coverage"]["records_without_text"] == 4
    bundle = lab.root / "bundle.json"
    lab.run("audit", "k", "--bundle", str(bundle), code=1)
    assert lab.json("verify-bundle", str(bundle), "--key", lab.vkey())["verdict"] == "contaminated"


def test_export_recount_catches_an_understated_gap_on_old_batches(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches recorded before entries committed to records_without_text: the audit counts the verified rows,
    and the verifier recounts them in the export."""
    real = entries.batch_body

    def old_body(**kwargs: Any) -> dict[str, Any]:
        kwargs.pop("records_without_text", None)
        return real(**kwargs)

    monkeypatch.setattr(entries, "batch_body", old_body)
    lg = Ledger.open(lab.root / "ledger.duckdb")
    lg.record_batch(
        [{"text": "a training sentence long enough to be a segment, number one."}], id="text/0"
    )
    lg.record_batch([{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}], id="tokens/0")
    monkeypatch.undo()
    assert "records_without_text" not in lab.json("show", "tokens/0")["body"]
    lab.checkpoint("k", "text/0", "tokens/0")
    bundle = lab.root / "bundle.json"
    report = lab.json("audit", "k", "--bundle", str(bundle), code=3)
    assert report["coverage_gaps"][0]["records_without_text"] == 2
    export = lab.root / "export"
    lab.run("export", "records", str(export), "--checkpoint", "k")
    assert lab.json("verify-bundle", str(bundle), "--key", lab.vkey(), "--records", str(export))[
        "ok"
    ]
    document = json.loads(bundle.read_text())
    document["verdict"], document["coverage_gaps"] = "clean", []
    forged = lab.root / "forged.json"
    forged.write_text(json.dumps(document), encoding="utf-8")
    checked = lab.json(
        "verify-bundle", str(forged), "--key", lab.vkey(), "--records", str(export), code=1
    )
    assert any(
        "expected 0 records without text" in p["what"] and "found 2" in p["what"]
        for p in checked["problems"]
    )


@pytest.mark.parametrize("field", ["messages.contnt", "input_ids"])
def test_a_text_field_that_matches_nothing_is_refused(lab: Lab, field: str) -> None:
    rows = [{"messages": [{"role": "user", "content": "a chat message that is long enough to be a segment"}],
             "input_ids": [1, 2, 3]}] * 3  # fmt: skip
    path = lab.jsonl("chat.jsonl", rows)
    before = lab.json("head")
    result = lab.cli.run(["record", "batch", str(path), "--text-field", field], lab.root)
    assert result.returncode == 4 and one_error_line(result) is None, result.stderr
    assert (
        "chat.jsonl" in result.stderr
        and repr(field) in result.stderr
        and "matches no text" in result.stderr
    )
    assert lab.json("head") == before
    # a field that holds text, however short, is recorded (the audit then counts what it cannot compare)
    assert (
        lab.json("record", "batch", str(path), "--text-field", "messages.role")["batches"][0][
            "records_without_text"
        ]
        == 3
    )
    lg = Ledger.open(lab.root / "ledger.duckdb")
    with pytest.raises(Exception, match="matches no text"):
        lg.record_batch(iter(rows), id="api", text_fields=[field])
    with pytest.raises(Exception, match="matches no text"):
        lg.record_batches([("s1", rows), ("s2", rows)], text_fields=[field])


def test_policy_tables_are_checked(lab: Lab) -> None:
    lab.text_batch("text/0")
    lab.checkpoint("k", "text/0")
    bad = {
        '[[opaque]]\nbatch = "x"\n': "expected reason",
        '[[opaque]]\nreason = "r"\n': "expected batch",
        '[[opaque]]\nbatch = "x"\nreason = "r"\nwhy = 1\n': "expected only batch and reason",
        '[[exempt]]\nbatch = "x"\n': "expected only [[allow]] and [[opaque]] tables",
    }
    for text, says in bad.items():
        policy = lab.root / "p.toml"
        policy.write_text(text, encoding="utf-8")
        result = lab.cli.run(["audit", "k", "--policy", str(policy)], lab.root)
        assert (
            result.returncode == 4 and one_error_line(result) is None and says in result.stderr
        ), result.stderr
