"""A ledger written by an earlier version of this code must keep working, byte for byte.

`tests/fixtures/ledger-v1/` was made once by `tests/fixtures/make_ledger_v1.py` with the code of its day
and is never regenerated: calls (recorded and imported), batches under two recorder keys, a split
dataset, token ids, and checkpoints whose audits were contaminated, clean, suspect and inconclusive.
Whatever the inside of the package becomes, this file must open, verify, extend the heads published
from it, audit to the very same findings, and accept appends.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hardening import CliPool

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "ledger-v1"


@pytest.fixture(scope="module")
def cli() -> Any:
    pool = CliPool(2)
    yield pool
    pool.close()


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    """A private copy (audits and appends write beside the file); git keeps no 0600 bits, so set them."""
    target = tmp_path / "ledger-v1"
    shutil.copytree(FIXTURE, target)
    keys = target / "ledger.keys"
    os.chmod(keys, 0o700)
    for pem in keys.iterdir():
        os.chmod(pem, 0o600)
    return target


def run(cli: CliPool, cwd: Path, *args: str, code: int = 0) -> str:
    result = cli.run(args, cwd)
    assert result.returncode == code, (
        args,
        result.returncode,
        result.stderr,
        result.stdout[-2000:],
    )
    return result.stdout


def test_it_opens_and_verifies_against_the_heads_published_from_it(
    cli: CliPool, copy: Path
) -> None:
    head = json.loads(run(cli, copy, "head", "--json"))
    assert head["note"] == (copy / "head.txt").read_text()
    for published in ("head-early.txt", "head.txt"):
        report = json.loads(run(cli, copy, "verify", "--since", published, "--json"))
        assert report["ok"] and report["size"] == head["size"], report["problems"]
        proof = json.loads(run(cli, copy, "consistency", "--from", published, "--json"))
        assert proof["new_size"] == head["size"]


@pytest.mark.parametrize("checkpoint", ["base", "clean", "dirty", "masked", "opaque"])
def test_audits_find_what_they_found(cli: CliPool, copy: Path, checkpoint: str) -> None:
    """Same verdict and the same findings; later code may add fields, never change or drop one."""
    then = json.loads((copy / "audits.json").read_text())[checkpoint]
    code = {"clean": 0, "contaminated": 1, "suspect": 3, "inconclusive": 3}[then["verdict"]]
    now = json.loads(run(cli, copy, "audit", checkpoint, "--json", code=code))
    assert now["verdict"] == then["verdict"]
    assert len(now["findings"]) == len(then["findings"])
    for old, new in zip(then["findings"], now["findings"]):
        assert {k: new.get(k) for k in old} == old
    assert now["coverage_gaps"] == then["coverage_gaps"] and now["problems"] == then["problems"]


def test_bundles_of_it_verify(cli: CliPool, copy: Path) -> None:
    run(cli, copy, "audit", "dirty", "--bundle", "dirty.bundle.json", code=1)
    checked = json.loads(
        run(cli, copy, "verify-bundle", "dirty.bundle.json", "--key", "lab.vkey", "--json")
    )
    assert checked["ok"] and checked["verdict"] == "contaminated"


def test_it_accepts_appends(cli: CliPool, copy: Path) -> None:
    before = json.loads(run(cli, copy, "head", "--json"))
    (copy / "more.jsonl").write_text(
        json.dumps({"text": "a record appended by a later version of ledger, long enough"}) + "\n"
    )
    run(cli, copy, "record", "batch", "more.jsonl", "--id", "later/more")
    run(cli, copy, "record", "batch", "more.jsonl", "--id", "later/b", "--key", "trainer-b")
    (copy / "later.bin").write_bytes(b"later weights")
    run(cli, copy, "record", "checkpoint", "--id", "later", "--weights", "later.bin", "--parent", "clean",
        "--batch", "later/more", "--batch", "later/b")  # fmt: skip
    report = json.loads(run(cli, copy, "verify", "--since", "head.txt", "--json"))
    assert report["ok"] and report["size"] == before["size"] + 3
    assert json.loads(run(cli, copy, "audit", "later", "--json"))["verdict"] == "clean"
