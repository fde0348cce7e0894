"""Every script in examples/ runs in the test suite, the way `make demo` runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_tells_the_whole_story(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    text = proc.stdout
    # the verdicts the story promises, in order, with their exit codes
    assert (
        text.index("$ ledger audit base")
        < text.index("CLEAN")
        < text.index("$ ledger audit tune --bundle")
    )
    assert "CONTAMINATED" in text and "purpose: evaluation" in text
    assert "bundle verifies" in text
    assert "TAMPERING FOUND" in text and "INCONCLUSIVE" in text
    # the relabelled purpose column does not change what the findings say: purpose comes from the signed body
    assert "purpose: training-data" not in text[text.index("INCONCLUSIVE") :]
    assert (out / "tune-bundle.json").exists() and (out / "published-head.txt").exists()


def test_every_example_is_tested() -> None:
    scripts = sorted(p.name for p in (ROOT / "examples").glob("*.py"))
    assert scripts == ["demo.py"], "a new example needs a test here"
