"""Generate the README's CLI reference from the real `--help` of every command.

`python docs/cli_reference.py --write` rewrites the section between the markers in README.md;
`tests/test_docs.py` fails when the checked-in section differs from what this prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START = "<!-- cli-reference:start -->"
END = "<!-- cli-reference:end -->"


def commands() -> list[list[str]]:
    from typer.main import get_command

    from ledger.cli import app

    found: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        sub = getattr(command, "commands", None)
        if sub:
            for name, child in sub.items():
                walk(child, [*path, name])
        else:
            found.append(path)

    walk(get_command(app), [])
    return found


def help_text(path: list[str]) -> str:
    ledger = str(Path(sys.executable).with_name("ledger"))
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"}
    proc = subprocess.run(
        [ledger, *path, "--help"], capture_output=True, text=True, env=env, check=True
    )
    return "\n".join(line.rstrip() for line in proc.stdout.strip().splitlines())


def reference() -> str:
    parts = [START, ""]
    for path in [
        [],
        *commands(),
    ]:  # `ledger --help` first: global options and environment variables
        parts += [f"### `{' '.join(['ledger', *path])}`", "", "```text", help_text(path), "```", ""]
    parts.append(END)
    return "\n".join(parts)


def current() -> str:
    text = README.read_text(encoding="utf-8")
    start, end = text.index(START), text.index(END) + len(END)
    return text[start:end]


def write() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = text.index(START), text.index(END) + len(END)
    README.write_text(text[:start] + reference() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
    else:
        print(reference())
