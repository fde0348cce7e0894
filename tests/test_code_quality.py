"""The code is held to its own rules by the suite: ruff's lint rules, ruff's format, mypy --strict.

A change that leaves the tree unformatted, unlinted or untyped fails here, in `make test`, not later in
someone's review. The rules are pinned in pyproject.toml so a newer ruff cannot move them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = ["src", "tests", "benchmarks", "examples", "docs"]
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)


def test_ruff_lint_is_clean() -> None:
    proc = run(str(BIN / "ruff"), "check", *TREES)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr


def test_ruff_format_is_clean() -> None:
    proc = run(str(BIN / "ruff"), "format", "--check", *TREES)
    assert proc.returncode == 0, "run `ruff format`:\n" + proc.stdout[-4000:] + proc.stderr


def test_mypy_strict_is_clean_cli_included() -> None:
    proc = run(str(BIN / "mypy"), "--strict", "src/ledger")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
