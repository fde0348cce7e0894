"""Render the README's terminal screenshots to SVG with rich, from a fresh run of the demo.

`python docs/screenshots.py` runs examples/demo.py into a temporary folder, then records
`ledger lineage tune --audit` and `ledger audit tune` as they look on a colour terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.text import Text

ROOT = Path(__file__).resolve().parent
LEDGER = str(Path(sys.executable).with_name("ledger"))


def capture(args: list[str], cwd: Path) -> Text:
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "100", "TERM": "xterm-256color"}
    proc = subprocess.run([LEDGER, *args], cwd=cwd, capture_output=True, text=True, env=env)
    return Text.from_ansi(f"$ ledger {' '.join(args)}\n" + proc.stdout)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        subprocess.run(
            [sys.executable, str(ROOT.parent / "examples" / "demo.py"), str(out)],
            check=True,
            capture_output=True,
        )
        (out / "ledger.duckdb").unlink()
        (out / "before-tamper.duckdb").rename(out / "ledger.duckdb")
        for name, args in {
            "lineage": ["lineage", "tune", "--audit"],
            "audit": ["audit", "tune"],
        }.items():
            console = Console(
                record=True, width=100, force_terminal=True, file=open(os.devnull, "w")
            )
            console.print(capture(args, out))
            console.save_svg(str(ROOT / f"{name}.svg"), title=f"ledger {' '.join(args)}")
            print(f"wrote docs/{name}.svg")


if __name__ == "__main__":
    main()
