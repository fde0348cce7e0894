"""Every command's `--json` output, produced for real, validates against its schema under schemas/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
LEDGER = str(Path(sys.executable).with_name("ledger"))
VECTORS = json.loads((Path(__file__).parent / "conformance.json").read_text())

# command (as run below) -> the schema its --json output follows
SCHEMA_OF = {
    "init": "init",
    "keys new": "key",
    "keys list": "keys-list",
    "keys rotate": "key",
    "keys revoke": "key",
    "keys export": "key",
    "head": "tree-head",
    "prove": "prove",
    "consistency": "consistency",
    "verify": "verify",
    "log": "log",
    "show": "entry",
    "status": "status",
    "record call": "record-call",
    "import calls": "import-calls",
    "record batch": "record-batch",
    "record checkpoint": "entry",
    "record spool": "record-spool",
    "audit": "audit",
    "lineage": "lineage",
    "verify-bundle": "verify-bundle",
    "export records": "export-records",
    "witness init": "witness-init",
    "witness serve": "witness-serve",
    "export log": "export-log",
    "reconcile": "reconcile",
}


def _validate(name: str, document: Any) -> None:
    schema = json.loads((SCHEMAS / f"{SCHEMA_OF[name]}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(document, schema)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cwd = tmp_path_factory.mktemp("json")
    env = {**os.environ, "LEDGER_LOCK_TIMEOUT": "5"}
    seen: dict[str, Any] = {}

    def run(name: str, *args: str, code: int = 0) -> Any:
        proc = subprocess.run(
            [LEDGER, *args, "--json"], cwd=cwd, capture_output=True, text=True, env=env, timeout=300
        )
        assert proc.returncode == code, (args, proc.stderr)
        document = json.loads(proc.stdout)
        seen[name] = document
        return document

    (cwd / "request.json").write_text(json.dumps(VECTORS["call"]["request"]))
    (cwd / "response.json").write_text(json.dumps(VECTORS["call"]["response"]))
    answer = VECTORS["call"]["response"]["choices"][0]["message"]["content"]
    (cwd / "train.jsonl").write_text(
        json.dumps({"text": "an ordinary training record of our own, long enough to count"})
        + "\n"
        + json.dumps({"text": answer})
        + "\n"
    )
    batch_line = {
        "id": "b1",
        "custom_id": "c1",
        "response": {
            "status_code": 200,
            "body": {**VECTORS["call"]["response"], "id": "chatcmpl-2"},
        },
        "error": None,
    }
    (cwd / "out.jsonl").write_text(json.dumps(batch_line) + "\n")
    (cwd / "w.safetensors").write_bytes(b"\x00" * 1024)

    run("init", "init", "--origin", "example.org/json")
    run("keys new", "keys", "new", "--name", "trainer")
    run("head", "head")
    (cwd / "h.txt").write_text(seen["head"]["note"])
    run(
        "record call",
        "record",
        "call",
        "--provider",
        "openai",
        "--purpose",
        "evaluation",
        "--request",
        "request.json",
        "--response",
        "response.json",
    )
    run(
        "import calls",
        "import",
        "calls",
        "out.jsonl",
        "--format",
        "openai-batch",
        "--provider",
        "openai",
        "--purpose",
        "evaluation",
    )
    run("record batch", "record", "batch", "train.jsonl", "--id", "data", "--key", "trainer")
    run(
        "record checkpoint",
        "record",
        "checkpoint",
        "--id",
        "ck",
        "--weights",
        "w.safetensors",
        "--batch",
        "data",
    )
    from ledger.integrations.steps import StepRecorder

    with StepRecorder(None, run="spooled", spool=cwd / "spool", rank=0, world_size=1) as rec:
        rec.submit([{"text": "a spooled training record of a rank, long enough to count"}])
        rec.checkpoint("spooled/ck", weights=[cwd / "w.safetensors"])
    run("record spool", "record", "spool", "spool", "--key", "trainer")
    run("keys list", "keys", "list")
    run("keys export", "keys", "export", "log")
    (cwd / "log.vkey").write_text(seen["keys export"]["vkey"])
    run("prove", "prove", "ck")
    run("consistency", "consistency", "--from", "h.txt")
    run("verify", "verify")
    run("log", "log")
    run("show", "show", "ck")
    run("status", "status")
    run("lineage", "lineage", "ck")
    run("audit", "audit", "ck", "--bundle", "bundle.json", code=1)
    run("verify-bundle", "verify-bundle", "bundle.json", "--key", "log.vkey")
    run("export records", "export", "records", "exported", "--checkpoint", "ck")
    run("export log", "export", "log", "log-export")
    (cwd / "receipts.jsonl").write_text(json.dumps({"id": "chatcmpl-2"}) + "\n")
    run("reconcile", "reconcile", "--receipts", "receipts.jsonl")
    run("keys revoke", "keys", "revoke", "trainer")
    run("keys rotate", "keys", "rotate")
    run("witness init", "witness", "init", "--name", "witness.example/w1", "--out", "w")
    serve = subprocess.Popen(
        [LEDGER, "witness", "serve", "--key", "w/witness.pem", "--log", "log.vkey", "--state",
         "w/state.json", "--listen", "127.0.0.1:0", "--json"],
        cwd=cwd, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        seen["witness serve"] = json.loads(serve.stdout.readline())  # the ready line; it runs on
    finally:
        serve.terminate()
        assert serve.wait(timeout=60) == 0
        serve.communicate()
    return seen


@pytest.mark.parametrize("name", sorted(SCHEMA_OF))
def test_output_follows_its_schema(outputs: dict[str, Any], name: str) -> None:
    _validate(name, outputs[name])


def test_every_command_with_json_is_covered() -> None:
    from typer.main import get_command

    from ledger.cli import app

    names: list[str] = []

    def walk(command: Any, path: list[str]) -> None:
        sub = getattr(command, "commands", None)
        if sub:
            for key, child in sub.items():
                walk(child, [*path, key])
        else:
            names.append(" ".join(path))

    walk(get_command(app), [])
    assert sorted(names) == sorted(SCHEMA_OF)


def test_audit_found_the_copied_output(outputs: dict[str, Any]) -> None:
    audit = outputs["audit"]
    assert audit["verdict"] == "contaminated"
    assert {f["type"] for f in audit["findings"]} >= {"exact"}
    assert all(f["purpose"] == "evaluation" for f in audit["findings"])
