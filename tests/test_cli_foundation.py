"""The foundation commands end to end, through real subprocesses of the installed `ledger` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ledger.spec import merkle
from ledger.spec import note as note_spec

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
LEDGER = str(Path(sys.executable).with_name("ledger"))


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "LEDGER_LOCK_TIMEOUT": "2", **(env or {})}
    return subprocess.run(
        [LEDGER, *args], cwd=cwd, capture_output=True, text=True, env=full_env, timeout=120
    )


def run_json(*args: str, cwd: Path, schema: str | None = None) -> Any:
    proc = run(*args, "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    if schema:
        jsonschema.validate(document, json.loads((SCHEMAS / f"{schema}.schema.json").read_text()))
    return document


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    proc = run("init", "--origin", "example.org/cli-test", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return tmp_path


def test_init_head_keys_prove_consistency(workdir: Path) -> None:
    head = run_json("head", cwd=workdir, schema="tree-head")
    assert head["origin"] == "example.org/cli-test" and head["size"] == 2
    listed = run_json("keys", "list", cwd=workdir, schema="keys-list")
    assert [(k["name"], k["role"]) for k in listed] == [
        ("example.org/cli-test", "log"),
        ("default", "recorder"),
    ]
    # the head verifies with the exported vkey, independently of the CLI
    tree_head = note_spec.verify_tree_head(head["note"], listed[0]["vkey"])
    assert tree_head.root.hex() == head["root"]
    assert (workdir / "ledger.keys" / "log.pem").stat().st_mode & 0o077 == 0

    assert run("head", "--out", "h1.txt", cwd=workdir).returncode == 0
    run_json("keys", "new", "--name", "trainer", cwd=workdir)
    proof = run_json("prove", "2", cwd=workdir, schema="prove")
    assert proof["size"] == 3
    merkle.verify_inclusion(
        bytes.fromhex(proof["leaf_hash"]),
        2,
        3,
        [bytes.fromhex(p) for p in proof["proof"]],
        bytes.fromhex(proof["root"]),
    )
    consistency = run_json("consistency", "--from", "h1.txt", cwd=workdir, schema="consistency")
    assert consistency["old_size"] == 2 and consistency["new_size"] == 3
    entries = run_json("log", cwd=workdir, schema="log")
    assert [e["kind"] for e in entries] == ["key", "key", "key"]
    for entry in entries:
        jsonschema.validate(
            entry["body"], json.loads((SCHEMAS / f"entry-{entry['kind']}.schema.json").read_text())
        )


def test_rotation_and_revocation(workdir: Path) -> None:
    run_json("keys", "new", "--name", "trainer", cwd=workdir)
    assert run("head", "--out", "before.txt", cwd=workdir).returncode == 0
    rotated = run_json("keys", "rotate", cwd=workdir)
    assert rotated["role"] == "log"
    listed = run_json("keys", "list", cwd=workdir, schema="keys-list")
    assert [k["revoked"] for k in listed if k["role"] == "log"] == [True, False]
    head = run_json("head", cwd=workdir)
    note_spec.verify_tree_head(head["note"], rotated["vkey"])  # signed by the new log key
    # a head published before the rotation still proves consistency
    assert run("consistency", "--from", "before.txt", cwd=workdir).returncode == 0
    revoked = run_json("keys", "revoke", "trainer", "--reason", "laptop lost", cwd=workdir)
    assert revoked["revoked"] is True


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("show", "99"), 4),
        (("prove", "no-such-batch"), 4),
        (("head", "--db", "missing.duckdb"), 4),
        (("log", "--limit", "x"), 2),
        (("no-such-command",), 2),
        (("consistency", "--from", "nowhere.txt"), 4),
        (("keys", "new", "--name", "log key"), 2),
    ],
)
def test_bad_input_is_one_line_error(workdir: Path, args: tuple[str, ...], code: int) -> None:
    before = run_json("head", cwd=workdir)
    proc = run(*args, cwd=workdir)
    assert proc.returncode == code
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert run_json("head", cwd=workdir) == before


def test_corrupt_database_is_exit_4(tmp_path: Path) -> None:
    (tmp_path / "ledger.duckdb").write_bytes(b"not a database at all" * 100)
    proc = run("status", cwd=tmp_path)
    assert proc.returncode == 4 and proc.stderr.startswith("error: ")


def test_wrong_passphrase_leaves_ledger_unchanged(tmp_path: Path) -> None:
    assert run("init", cwd=tmp_path, env={"LEDGER_PASSPHRASE": "right horse"}).returncode == 0
    before = run_json("head", cwd=tmp_path)
    proc = run("keys", "new", "--name", "trainer", cwd=tmp_path, env={"LEDGER_PASSPHRASE": "wrong"})
    assert proc.returncode == 4 and "passphrase" in proc.stderr
    assert run_json("head", cwd=tmp_path) == before
    assert not (tmp_path / "ledger.keys" / "trainer.pem").exists()


def _commands() -> list[list[str]]:
    from typer.main import get_command

    from ledger.cli import app

    root = get_command(app)
    found: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*path, name])
        else:
            found.append(path)

    walk(root, [])
    return found


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p))
def test_every_command_has_help_with_an_example(path: list[str]) -> None:
    proc = subprocess.run([LEDGER, *path, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "Example:" in proc.stdout, f"`ledger {' '.join(path)} --help` has no example"
    assert "--json" in proc.stdout, f"`ledger {' '.join(path)}` lacks --json"


def test_import_ledger_does_not_import_the_cli_stack() -> None:
    code = "import sys, ledger; sys.exit(int('typer' in sys.modules or 'rich' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
