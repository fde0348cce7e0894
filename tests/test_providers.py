"""The provider room: every module under ledger.providers is found by name and has the shape the
recording reads (`ProviderShapes`), and the spec and provider modules stay pure (no DuckDB)."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys

import pytest

import ledger.providers
import ledger.spec
from ledger import providers
from ledger.errors import InputError
from ledger.providers import openai

ANSWER = "Paris is the capital of France, on the river Seine."


def test_every_provider_module_is_listed_and_has_the_protocol() -> None:
    listed = providers.names()
    assert "openai" in listed
    assert list(listed) == sorted(
        m.name
        for m in pkgutil.iter_modules(ledger.providers.__path__)
        if not m.name.startswith("_")
    )
    for name in listed:
        module = providers.shapes(name)
        assert isinstance(module, providers.ProviderShapes), name
        assert module.NAME == name
        assert module is importlib.import_module(f"ledger.providers.{name}")
        assert module.response_texts({}) == []
        assert module.stream_texts([]) == []


def test_openai_shapes_are_found_by_name() -> None:
    shapes = providers.shapes("openai")
    assert shapes is openai
    body = {"choices": [{"message": {"content": ANSWER}}]}
    assert shapes.response_texts(body) == [ANSWER]
    chunks = [{"choices": [{"index": 0, "delta": {"content": part}}]} for part in ANSWER.split(",")]
    assert shapes.stream_texts(chunks) == [ANSWER.replace(",", "")]


@pytest.mark.parametrize("name", ["", "nope", "__init__", "openai.x", "../spec"])
def test_unknown_provider_name_is_an_input_error(name: str) -> None:
    with pytest.raises(
        InputError, match="expected a provider shape among anthropic, google, openai"
    ):
        providers.shapes(name)


def test_spec_and_providers_import_without_duckdb_or_arrow() -> None:
    """Pure rooms: importing every spec and provider module loads no DuckDB, Arrow, typer or rich."""
    names = [
        *(f"ledger.spec.{m.name}" for m in pkgutil.iter_modules(ledger.spec.__path__)),
        *(f"ledger.providers.{m.name}" for m in pkgutil.iter_modules(ledger.providers.__path__)),
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'duckdb', 'pyarrow', 'typer', 'rich'})\n"
        "print(' '.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""


def test_every_provider_module_names_its_shape_and_recognises_no_empty_object() -> None:
    for name in providers.names():
        module = providers.shapes(name)
        assert isinstance(module.EXPECTED, str) and module.EXPECTED, name
        assert module.recognizes({}) is False, name
        assert module.recognizes_stream([]) is False, name
        assert module.recognizes_stream([{"unrelated": 1}]) is False, name
        with pytest.raises(InputError, match=re.escape(f"expected {module.EXPECTED}")):
            providers.output_texts(name, {"unrelated": 1}, stream=False)


def test_reasoning_texts_of_openai_compatible_servers_are_outputs() -> None:
    body = {"choices": [{"message": {"content": ANSWER, "reasoning_content": "Think. " * 9}}]}
    assert providers.output_texts("deepseek", body, stream=False) == [ANSWER, "Think. " * 9]
