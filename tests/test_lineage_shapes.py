"""Lineage shapes a shared ledger really holds, each audited, bundled and verified as a user would.

Which batches a lineage holds must never depend on what else the ledger holds (DESIGN.md "Audit",
Coverage). Every shape below puts other runs' batches between the lineage's own, and is taken through
`ledger audit --bundle`, `ledger verify-bundle` and, for clean verdicts, `ledger export records` plus
`verify-bundle --records --suspects`: the verifier's own suspects must find nothing in a clean lineage
and must refute the bundle when they name a text that is in it.

Commands run through `CliPool` (the real `ledger.cli.main` in forked processes); the interleaved case
of the issue also runs the installed `ledger` script itself.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hardening import LEDGER, CliPool

from ledger import Ledger

TEACHER_TEXT = (
    "The committee concluded that the reservoir's spillway gates must be inspected every spring, "
    "because silt carried down by the April floods jams the lower hinges."
)


@pytest.fixture(scope="module")
def cli() -> Iterator[CliPool]:
    pool = CliPool(2)
    yield pool
    pool.close()


@dataclass
class Shop:
    """One ledger directory and the CLI to work in it."""

    cli: CliPool
    root: Path
    counter: int = 0
    texts: dict[str, list[str]] = field(default_factory=dict)

    def ok(self, *args: str, code: int = 0) -> str:
        result = self.cli.run(args, self.root)
        assert result.returncode == code, (
            args,
            result.returncode,
            result.stderr,
            result.stdout[-2000:],
        )
        return result.stdout

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self.ok(*args, "--json", code=code))

    def texts_for(self, name: str, n: int = 3) -> list[str]:
        texts = [
            f"Run note {name}/{i}: the operator logged pressure {self.counter + i} kPa at the "
            f"{name} valve during the night shift and filed it."
            for i in range(n)
        ]
        self.counter += n
        self.texts[name] = texts
        return texts

    def batch(
        self, batch_id: str, *extra: str, texts: Sequence[str] | None = None, n: int = 3
    ) -> None:
        rows = list(texts) if texts is not None else self.texts_for(batch_id, n)
        path = self.root / f"{batch_id.replace('/', '_')}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows), encoding="utf-8")
        self.ok("record", "batch", str(path), "--id", batch_id, *extra)

    def checkpoint(self, checkpoint_id: str, *extra: str) -> None:
        weights = self.root / f"{checkpoint_id.replace('/', '_')}.bin"
        weights.write_bytes(checkpoint_id.encode())
        self.ok("record", "checkpoint", "--id", checkpoint_id, "--weights", str(weights), *extra)

    def teacher_call(self) -> None:
        response = {
            "id": "chatcmpl-teacher-1", "object": "chat.completion", "created": 1764979200,
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": TEACHER_TEXT}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
        }  # fmt: skip
        (self.root / "response.json").write_text(json.dumps(response), encoding="utf-8")
        self.ok("record", "call", "--provider", "openai", "--purpose", "evaluation",
                "--response", str(self.root / "response.json"))  # fmt: skip

    def audit_and_check(self, checkpoint: str, verdict: str) -> dict[str, Any]:
        """Audit, bundle, verify the bundle; for clean: export the records and let suspects test it."""
        code = {"clean": 0, "contaminated": 1, "suspect": 3, "inconclusive": 3}[verdict]
        tag = checkpoint.replace("/", "_")
        bundle = self.root / f"{tag}.bundle.json"
        report = self.json("audit", checkpoint, "--bundle", str(bundle), code=code)
        assert report["verdict"] == verdict, report["problems"]
        assert report["problems"] == []
        vkey = self.root / "lab.vkey"
        if not vkey.exists():
            self.ok("keys", "export", "log", "--out", str(vkey))
        checked = self.json("verify-bundle", str(bundle), "--key", str(vkey))
        assert checked["ok"] and checked["verdict"] == verdict, checked
        if verdict == "clean":
            export = self.root / f"{tag}.export"
            self.ok("export", "records", str(export), "--checkpoint", checkpoint)
            unrelated = self.root / "unrelated.txt"
            unrelated.write_text(TEACHER_TEXT + "\n", encoding="utf-8")
            checked = self.json("verify-bundle", str(bundle), "--key", str(vkey),
                                "--records", str(export), "--suspects", str(unrelated))  # fmt: skip
            assert checked["ok"], checked
            assert checked["checked"]["exported_records"] == report["coverage"]["records"]
            # a text the lineage did train on refutes the clean verdict
            mine = self.root / "mine.txt"
            mine.write_text(self._lineage_text(report) + "\n", encoding="utf-8")
            refuted = self.json("verify-bundle", str(bundle), "--key", str(vkey),
                                "--records", str(export), "--suspects", str(mine), code=1)  # fmt: skip
            assert not refuted["ok"]
        return dict(report)

    def _lineage_text(self, report: dict[str, Any]) -> str:
        lineage = self.json("lineage", report["checkpoint"])
        batch_ids = [n["id"] for n in lineage["nodes"] if n["kind"] == "batch"]
        return self.texts[batch_ids[-1]][0]


def batches_of(report: dict[str, Any]) -> set[int]:
    return {f["batch"] for f in report["findings"] if f["batch"] is not None}


@pytest.fixture()
def shop(cli: CliPool, tmp_path: Path) -> Shop:
    s = Shop(cli, tmp_path)
    s.ok("init", "--origin", "example.org/shapes")
    return s


def test_interleaved_runs_are_clean_through_the_installed_command(tmp_path: Path) -> None:
    """The issue's reproduction, verbatim, with the real `ledger` script."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LEDGER, *args], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    for name in "abc":
        rows = [
            {"text": f"record {name} number {i} with enough characters to be a segment"}
            for i in range(3)
        ]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "w.bin").write_bytes(b"weights")
    assert run("init").returncode == 0
    for name in "abc":
        assert run("record", "batch", f"{name}.jsonl", "--id", name.upper()).returncode == 0
    assert (
        run(
            "record",
            "checkpoint",
            "--id",
            "k",
            "--weights",
            "w.bin",
            "--batch",
            "A",
            "--batch",
            "C",
        ).returncode
        == 0
    )
    audited = run("audit", "k", "--json")
    assert audited.returncode == 0, audited.stdout
    report = json.loads(audited.stdout)
    assert report["verdict"] == "clean" and report["problems"] == []
    assert report["coverage"]["batches"] == 2 and report["coverage"]["records"] == 6
    assert run("verify").returncode == 0


def test_interleaved_runs_each_get_their_own_verdict(shop: Shop) -> None:
    shop.teacher_call()
    shop.batch("run1/a")
    shop.batch("run2/a", texts=[TEACHER_TEXT, *shop.texts_for("run2/a")])  # the other run distills
    shop.batch("run1/b")
    shop.batch("run2/b")
    shop.checkpoint("run1/k", "--batch", "run1/a", "--batch", "run1/b")
    shop.checkpoint("run2/k", "--batch", "run2/a", "--batch", "run2/b")
    clean = shop.audit_and_check("run1/k", "clean")
    assert clean["coverage"]["batches"] == 2 and clean["coverage"]["records"] == 6
    dirty = shop.audit_and_check("run2/k", "contaminated")
    exact = [f for f in dirty["findings"] if f["type"] == "exact"]
    assert exact and {f["record"] for f in exact} == {0} and exact[0]["purpose"] == "evaluation"


def test_a_batch_shared_by_two_checkpoints(shop: Shop) -> None:
    shop.teacher_call()
    shop.batch("shared/clean")
    shop.batch("other/noise")
    shop.batch(
        "shared/dirty", texts=["a plain first record that is long enough to count", TEACHER_TEXT]
    )
    shop.batch("k1/own")
    shop.checkpoint("k1", "--batch", "shared/clean", "--batch", "k1/own")
    shop.checkpoint("k2", "--batch", "shared/clean")
    shop.checkpoint("k3", "--batch", "shared/clean", "--batch", "shared/dirty")
    shop.checkpoint("k4", "--batch", "shared/dirty", "--batch", "k1/own")
    shop.audit_and_check("k1", "clean")
    shop.audit_and_check("k2", "clean")
    for name in ("k3", "k4"):
        report = shop.audit_and_check(name, "contaminated")
        assert {f["record"] for f in report["findings"] if f["type"] == "exact"} == {1}


def test_a_diamond_of_parents(shop: Shop) -> None:
    shop.teacher_call()
    shop.batch("base/data", texts=[*shop.texts_for("base/data"), TEACHER_TEXT])
    shop.checkpoint("base", "--batch", "base/data")
    shop.batch("left/data")
    shop.batch("elsewhere/data")
    shop.batch("right/data")
    shop.checkpoint("left", "--parent", "base", "--batch", "left/data")
    shop.checkpoint("right", "--parent", "base", "--batch", "right/data")
    shop.batch("merge/data")
    shop.checkpoint("merge", "--parent", "left", "--parent", "right", "--batch", "merge/data")
    report = shop.audit_and_check("merge", "contaminated")
    assert report["coverage"]["checkpoints"] == 4 and report["coverage"]["batches"] == 4
    exact = [f for f in report["findings"] if f["type"] == "exact"]
    assert (
        len(exact) == 1
    )  # one finding per (call, batch, record, segment), however many paths lead there
    assert exact[0]["path"][0] == "merge" and exact[0]["path"][-1] == "base"

    # the same diamond over clean data
    shop.batch("base2/data")
    shop.checkpoint("base2", "--batch", "base2/data")
    shop.batch("left2/data")
    shop.checkpoint("left2", "--parent", "base2", "--batch", "left2/data")
    shop.checkpoint("right2", "--parent", "base2")
    shop.checkpoint("merge2", "--parent", "left2", "--parent", "right2")
    shop.audit_and_check("merge2", "clean")


def test_batches_signed_by_several_recorder_keys(shop: Shop) -> None:
    shop.teacher_call()
    shop.ok("keys", "new", "--name", "trainer-a")
    shop.ok("keys", "new", "--name", "trainer-b")
    shop.batch("a/0", "--key", "trainer-a")
    shop.batch("b/0", "--key", "trainer-b", texts=[TEACHER_TEXT])
    shop.batch("a/1", "--key", "trainer-b")
    shop.ok("keys", "revoke", "trainer-b", "--reason", "rotated out")
    shop.batch("a/2", "--key", "trainer-a")
    shop.checkpoint(
        "a/k", "--batch", "a/0", "--batch", "a/1", "--batch", "a/2", "--key", "trainer-a"
    )
    shop.checkpoint("b/k", "--batch", "b/0", "--key", "trainer-a")
    signers = {e["body"].get("id"): e["signer"] for e in shop.json("log", "--kind", "batch")}
    assert signers["a/0"] != signers["a/1"] and signers["a/0"] == signers["a/2"]
    shop.audit_and_check("a/k", "clean")
    shop.audit_and_check("b/k", "contaminated")


def test_split_datasets_mixed_with_single_batches(shop: Shop) -> None:
    shop.teacher_call()
    shop.batch("pre/mix", "--split", "2", n=5)  # dataset pre/mix: batches pre/mix/000000..000002
    shop.batch("other/mix", "--split", "3", n=7)
    shop.batch("sft/one")
    shop.batch("other/dirty", "--split", "2", texts=[TEACHER_TEXT, *shop.texts_for("other/dirty")])
    shop.batch("sft/two")
    shop.checkpoint("sft/k", "--batch", "pre/mix", "--batch", "sft/one", "--batch", "sft/two")
    shop.checkpoint("other/k", "--batch", "other/mix", "--batch", "other/dirty")
    shop.texts["pre/mix/000002"] = shop.texts["pre/mix"][4:]
    report = shop.audit_and_check("sft/k", "clean")
    assert report["coverage"]["batches"] == 5 and report["coverage"]["records"] == 11
    dirty = shop.audit_and_check("other/k", "contaminated")
    assert dirty["coverage"]["batches"] == 5


def test_a_long_chain_of_fifty_checkpoints(shop: Shop) -> None:
    """Recorded from a training loop through the Python API, interleaved with a second run; audited by the CLI."""
    shop.teacher_call()
    lg = Ledger.open(shop.root / "ledger.duckdb")
    parent: list[str] = []
    for step in range(50):
        own = f"chain/step-{step:03d}"
        texts = shop.texts_for(own, 2)
        if step == 3:
            texts = [texts[0], TEACHER_TEXT]
        lg.record_batch([{"text": t} for t in texts], id=own)
        lg.record_batch(
            [{"text": t} for t in shop.texts_for(f"noise/{step:03d}", 1)], id=f"noise/{step:03d}"
        )
        weights = shop.root / f"w{step}.bin"
        weights.write_bytes(b"step %d" % step)
        lg.record_checkpoint(
            id=f"chain/ckpt-{step:03d}", weights=[weights], batches=[own], parents=parent
        )
        parent = [f"chain/ckpt-{step:03d}"]
    report = shop.audit_and_check("chain/ckpt-049", "contaminated")
    assert report["coverage"]["checkpoints"] == 50 and report["coverage"]["batches"] == 50
    exact = [f for f in report["findings"] if f["type"] == "exact"]
    assert len(exact) == 1 and len(exact[0]["path"]) == 47  # ckpt-049 down to ckpt-003
    early = shop.audit_and_check("chain/ckpt-002", "clean")
    assert early["coverage"]["checkpoints"] == 3
