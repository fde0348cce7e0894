"""The `default` recorder key: `ledger init` makes it, recording signs with it, older ledgers fall back.

Through real subprocesses of the installed `ledger` on real DuckDB files. An "old-style" ledger is built
the way `ledger init` built one before recorder keys (commit a7d9f6b): the log key's entry and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from ledger import Ledger
from ledger.errors import KeyFileError, LogKeySigningWarning
from ledger.log import keyfiles, store
from ledger.spec import entries, envelope, keys
from ledger.spec import note as note_spec

LEDGER = str(Path(sys.executable).with_name("ledger"))
ORIGIN = "example.org/recorder-test"
VECTORS = json.loads((Path(__file__).parent / "conformance.json").read_text("utf-8"))
FALLBACK = "warning: this ledger has no `default` recorder key"


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "LEDGER_LOCK_TIMEOUT": "5", **(env or {})}
    for name in ("LEDGER_KEY", "LEDGER_PASSPHRASE", "LEDGER_KEYS_DIR", "LEDGER_DB"):
        if env is None or name not in env:
            full_env.pop(name, None)
    return subprocess.run(
        [LEDGER, *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )


def run_json(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    proc = run(*args, "--json", cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def old_style_ledger(path: Path) -> keys.SigningKey:
    """A ledger as `ledger init` made one before recorder keys existed: entry 0, the log key, self-signed."""
    log_key = keys.SigningKey.generate()
    keyfiles.write_key_file(path.with_name(path.stem + ".keys") / "log.pem", log_key)
    body = entries.key_body(log_key.public.keyid, log_key.public.b64, ORIGIN, "log")
    conn = store.connect(path, create=True)
    try:
        with store.transaction(conn):
            store.create_schema(conn, ORIGIN)
            root = store.append_entries(
                conn,
                0,
                [envelope.sign_entry(body, log_key)],
                [entries.facts_of(body)],
                [log_key.public.keyid],
            )
            store.write_head(
                conn,
                1,
                root,
                note_spec.sign_tree_head(note_spec.TreeHead(ORIGIN, 1, root), log_key),
            )
        conn.execute("CHECKPOINT")
    finally:
        conn.close()
    return log_key


def write_inputs(cwd: Path) -> None:
    (cwd / "request.json").write_text(json.dumps(VECTORS["call"]["request"]))
    (cwd / "response.json").write_text(json.dumps(VECTORS["call"]["response"]))
    (cwd / "train.jsonl").write_text(
        "".join(
            json.dumps({"text": f"training record number {i} of our own, long enough to count"})
            + "\n"
            for i in range(3)
        )
    )
    (cwd / "w.safetensors").write_bytes(b"\x01" * 256)
    line = {
        "id": "b1",
        "custom_id": "c1",
        "response": {
            "status_code": 200,
            "body": {**VECTORS["call"]["response"], "id": "chatcmpl-imported"},
        },
    }
    (cwd / "out.jsonl").write_text(json.dumps(line) + "\n")


def record_everything(
    cwd: Path, *extra: str, env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Every recording command once; each must succeed with a JSON document on stdout."""
    commands = [
        (
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
        ),
        (
            "import",
            "calls",
            "out.jsonl",
            "--format",
            "openai-batch",
            "--provider",
            "openai",
            "--purpose",
            "evaluation",
        ),
        ("record", "batch", "train.jsonl", "--id", "run/data"),
        (
            "record",
            "checkpoint",
            "--id",
            "run/ckpt",
            "--weights",
            "w.safetensors",
            "--batch",
            "run/data",
        ),
    ]
    done = []
    for command in commands:
        proc = run(*command, *extra, "--json", cwd=cwd, env=env)
        assert proc.returncode == 0, (command, proc.stderr)
        json.loads(proc.stdout)  # stdout stays one clean JSON document
        done.append(proc)
    return done


def signers(cwd: Path, start: int) -> dict[str, str]:
    return {e["kind"]: e["signer"] for e in run_json("log", "--start", str(start), cwd=cwd)}


def key_named(cwd: Path, name: str) -> dict[str, Any]:
    return next(
        k for k in run_json("keys", "list", cwd=cwd) if k["name"] == name and not k["revoked"]
    )


def assert_verifies(cwd: Path) -> None:
    report = run_json("verify", cwd=cwd)
    assert report["ok"] is True and report["problems"] == [], report


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    init = run_json("init", "--origin", ORIGIN, cwd=tmp_path)
    assert init["size"] == 2
    write_inputs(tmp_path)
    return tmp_path


def test_init_writes_the_log_key_and_a_default_recorder_key(tmp_path: Path) -> None:
    init = run_json("init", "--origin", ORIGIN, cwd=tmp_path)
    listed = run_json("keys", "list", cwd=tmp_path)
    assert [(k["name"], k["role"], k["revoked"]) for k in listed] == [
        (ORIGIN, "log", False),
        ("default", "recorder", False),
    ]
    log_key, recorder = listed
    assert (
        init["recorder_key"] == {"name": "default", "keyid": recorder["keyid"]}
        and init["size"] == 2
    )
    # both key entries are signed by the log key, entry 0 by itself
    logged = run_json("log", cwd=tmp_path)
    assert [(e["index"], e["kind"], e["signer"]) for e in logged] == [
        (0, "key", log_key["keyid"]),
        (1, "key", log_key["keyid"]),
    ]
    assert logged[1]["body"]["role"] == "recorder" and logged[1]["body"]["name"] == "default"
    # the private halves are 0600 PEM files in the keys dir, holding exactly the logged keys
    keys_dir = tmp_path / "ledger.keys"
    for name, info in (("log.pem", log_key), ("default.pem", recorder)):
        assert (keys_dir / name).stat().st_mode & 0o777 == 0o600
        assert keyfiles.load_key_file(keys_dir / name).public.keyid == info["keyid"]
    # the tree head is the log key's, over both entries
    head = run_json("head", cwd=tmp_path)
    assert note_spec.verify_tree_head(head["note"], log_key["vkey"]).size == 2
    assert_verifies(tmp_path)
    human = run("init", "--db", "second.duckdb", cwd=tmp_path)
    assert human.returncode == 0 and "recorder key `default`" in human.stdout


def test_init_encrypts_the_recorder_key_with_the_passphrase(tmp_path: Path) -> None:
    env = {"LEDGER_PASSPHRASE": "right horse"}
    assert run("init", cwd=tmp_path, env=env).returncode == 0
    for name in ("log.pem", "default.pem"):
        assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "ledger.keys" / name).read_bytes()
    write_inputs(tmp_path)
    assert run("record", "batch", "train.jsonl", cwd=tmp_path, env=env).returncode == 0
    proc = run("record", "batch", "train.jsonl", "--id", "other", cwd=tmp_path)
    assert proc.returncode == 4 and "LEDGER_PASSPHRASE" in proc.stderr


def test_init_that_fails_leaves_no_key_file_behind(tmp_path: Path) -> None:
    # the keys are written, then the database cannot be created: neither key file may stay
    proc = run("init", "--db", "missing-dir/ledger.duckdb", "--keys-dir", "k", cwd=tmp_path)
    assert proc.returncode == 4 and proc.stderr.startswith("error: ")
    assert list((tmp_path / "k").iterdir()) == []
    # a recorder key already there is refused before anything is written
    (tmp_path / "k2").mkdir(mode=0o700)
    keyfiles.write_key_file(tmp_path / "k2" / "default.pem", keys.SigningKey.generate())
    proc = run("init", "--keys-dir", "k2", cwd=tmp_path)
    assert proc.returncode == 4 and "default.pem" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "k2").iterdir()) == ["default.pem"]
    assert not (tmp_path / "ledger.duckdb").exists()


def test_recording_signs_with_the_default_key_and_heads_with_the_log_key(workdir: Path) -> None:
    recorder, log_key = key_named(workdir, "default"), key_named(workdir, ORIGIN)
    for proc in record_everything(workdir):
        assert proc.stderr == ""
    assert signers(workdir, 2) == {
        "call": recorder["keyid"],
        "batch": recorder["keyid"],
        "checkpoint": recorder["keyid"],
    }
    head = run_json("head", cwd=workdir)
    assert note_spec.verify_tree_head(head["note"], log_key["vkey"]).size == head["size"] == 6
    assert_verifies(workdir)


def test_key_option_and_ledger_key_choose_another_recorder(workdir: Path) -> None:
    other = run_json("keys", "new", "--name", "other", cwd=workdir)
    record_everything(workdir, "--key", "other")
    assert set(signers(workdir, 3).values()) == {other["keyid"]}
    size = run_json("head", cwd=workdir)["size"]
    assert (
        run(
            "record",
            "batch",
            "train.jsonl",
            "--id",
            "by-env",
            cwd=workdir,
            env={"LEDGER_KEY": "other"},
        ).returncode
        == 0
    )
    assert signers(workdir, size) == {"batch": other["keyid"]}
    assert_verifies(workdir)


def test_python_api_signs_with_default_or_the_key_given(workdir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning on a ledger that has `default`
        first = Ledger.open(workdir / "ledger.duckdb").record_batch(
            ["a record long enough to be one segment of text"], id="api/0"
        )
    run_json("keys", "new", "--name", "other", cwd=workdir)
    second = Ledger.open(workdir / "ledger.duckdb", key="other").record_batch(
        ["another record, also long enough to count"], id="api/1"
    )
    by_index = {e["index"]: e["signer"] for e in run_json("log", cwd=workdir)}
    assert by_index[first.entries[0].index] == key_named(workdir, "default")["keyid"]
    assert by_index[second.entries[0].index] == key_named(workdir, "other")["keyid"]


def test_old_style_ledger_records_with_the_log_key_and_one_warning_line(tmp_path: Path) -> None:
    log_key = old_style_ledger(tmp_path / "ledger.duckdb")
    write_inputs(tmp_path)
    for proc in record_everything(tmp_path):
        assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(FALLBACK), proc.stderr
        assert "ledger keys new --name default" in proc.stderr
    assert set(signers(tmp_path, 1).values()) == {log_key.public.keyid}
    assert_verifies(tmp_path)
    # following the advice ends the fallback
    recorder = run_json("keys", "new", "--name", "default", cwd=tmp_path)
    proc = run("record", "batch", "train.jsonl", "--id", "after", cwd=tmp_path)
    assert proc.returncode == 0 and "warning" not in proc.stderr
    assert signers(tmp_path, recorder["index"] + 1) == {"batch": recorder["keyid"]}
    assert_verifies(tmp_path)


def test_old_style_ledger_warns_once_per_ledger_object_in_python(tmp_path: Path) -> None:
    log_key = old_style_ledger(tmp_path / "ledger.duckdb")
    lg = Ledger.open(tmp_path / "ledger.duckdb")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter(
            "always"
        )  # so only the library's own once-per-Ledger rule limits them
        lg.record_batch(["a record long enough to be one segment of text"], id="step/0")
        lg.record_batch(["another record, also long enough to count"], id="step/1")
    fallback = [w for w in caught if issubclass(w.category, LogKeySigningWarning)]
    assert len(fallback) == 1 and "ledger keys new --name default" in str(fallback[0].message)
    assert {e.signer for e in lg.log(kinds=["batch"])} == {log_key.public.keyid}


def test_revoked_default_is_an_error_not_a_fallback_to_the_log_key(workdir: Path) -> None:
    revoked = key_named(workdir, "default")
    assert run("keys", "revoke", "default", cwd=workdir).returncode == 0
    size = run_json("head", cwd=workdir)["size"]
    proc = run("record", "batch", "train.jsonl", cwd=workdir)
    assert proc.returncode == 4 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert (
        "revoked" in proc.stderr
        and "ledger keys new --name default" in proc.stderr
        and "--key" in proc.stderr
    )
    assert run_json("head", cwd=workdir)["size"] == size  # nothing appended
    # a new `default` takes the name; the revoked key's file is moved aside, not deleted
    fresh = run_json("keys", "new", "--name", "default", cwd=workdir)
    keys_dir = workdir / "ledger.keys"
    retired = keys_dir / f"default.{revoked['keyid'][:8]}.revoked.pem"
    assert keyfiles.load_key_file(retired).public.keyid == revoked["keyid"]
    assert keyfiles.load_key_file(keys_dir / "default.pem").public.keyid == fresh["keyid"]
    assert run("record", "batch", "train.jsonl", cwd=workdir).returncode == 0
    assert signers(workdir, size + 1) == {"batch": fresh["keyid"]}
    assert_verifies(workdir)


def test_rotated_default_signs_under_its_new_key(workdir: Path) -> None:
    old = key_named(workdir, "default")
    rotated = run_json("keys", "rotate", "default", cwd=workdir)
    assert rotated["name"] == "default" and rotated["keyid"] != old["keyid"]
    size = run_json("head", cwd=workdir)["size"]
    assert run("record", "batch", "train.jsonl", cwd=workdir).returncode == 0
    assert signers(workdir, size) == {"batch": rotated["keyid"]}
    assert_verifies(workdir)


def test_missing_or_foreign_default_key_file_is_an_error(workdir: Path) -> None:
    path = workdir / "ledger.keys" / "default.pem"
    saved = path.read_bytes()
    path.unlink()
    proc = run("record", "batch", "train.jsonl", cwd=workdir)
    assert proc.returncode == 4 and "default.pem" in proc.stderr and "--key" in proc.stderr
    # a key file that is not the ledger's `default` key is refused too, never used to sign
    keyfiles.write_key_file(path, keys.SigningKey.generate())
    proc = run("record", "batch", "train.jsonl", cwd=workdir)
    assert proc.returncode == 4 and "not registered" in proc.stderr
    assert run_json("head", cwd=workdir)["size"] == 2
    path.unlink()
    path.write_bytes(saved)
    path.chmod(0o600)
    assert run("record", "batch", "train.jsonl", cwd=workdir).returncode == 0


def test_library_errors_for_a_revoked_default_are_key_file_errors(workdir: Path) -> None:
    lg = Ledger.open(workdir / "ledger.duckdb")
    lg.revoke_key("default", "lost")
    with pytest.raises(KeyFileError, match="ledger keys new --name default"):
        lg.record_batch(["a record long enough to be one segment of text"], id="x")
