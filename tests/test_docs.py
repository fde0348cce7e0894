"""Docs are tested: the README's CLI reference is the real `--help`, and its examples exist."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _reference_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "cli_reference", ROOT / "docs" / "cli_reference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_cli_reference_is_current() -> None:
    module = _reference_module()
    assert module.current() == module.reference(), (
        "README CLI reference is stale: run python docs/cli_reference.py --write"
    )


def test_readme_links_exist() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in (
        "examples/demo.py",
        "docs/threat-model.md",
        "docs/formats.md",
        "schemas/audit-bundle.schema.json",
        "docs/lineage.svg",
    ):
        assert target in text
        assert (ROOT / target).exists(), f"README links to missing {target}"


def test_readme_quick_start_has_exactly_the_two_setup_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    block = quick.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
