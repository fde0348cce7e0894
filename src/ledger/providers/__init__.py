"""Provider response shapes: one pure module per provider, each behind the `ProviderShapes` protocol.

A provider module ``ledger.providers.<name>`` holds ``NAME`` (its module name), ``EXPECTED`` (the
shape it reads, for errors), ``recognizes(body)`` / ``recognizes_stream(chunks)``, and
``response_texts(body)`` and ``stream_texts(chunks)``, which turn a response body, or the chunks of
a stream, into the call's output texts (DESIGN.md "Hashing (fixed)"). Segments and hashes of those
texts are provider-neutral (``ledger.spec.text.call_outputs``). Adding a provider is adding its
module here: `shapes` finds it by name and `names` lists it, with nothing else to register.

`for_provider` picks the module a recorded provider name answers in (DESIGN.md "Providers"):
``azure-openai`` and every name without a module of its own (vLLM, DeepSeek, ...) use the OpenAI
shapes. `output_texts` reads a response through it and refuses one it does not recognise, so a
call is never recorded with no outputs because its body was in another provider's shape.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from typing import Protocol, cast, runtime_checkable

from ledger.errors import InputError

__all__ = ["ProviderShapes", "for_provider", "names", "output_texts", "shapes"]

# Recorded provider names that answer in another provider's shapes (any unknown name: openai).
_ALIASES = {"azure-openai": "openai"}
_SHOWN_KEYS = 8


@runtime_checkable
class ProviderShapes(Protocol):
    """What a provider module exposes (a module satisfies this protocol as it stands)."""

    NAME: str
    """The provider's name, equal to its module's name."""

    EXPECTED: str
    """The shape the module reads, as an error names it ("an Anthropic Messages response ...")."""

    def recognizes(self, response: Mapping[str, object]) -> bool:
        """Whether a body is in this shape (an empty completion is; another provider's body is not)."""
        ...

    def recognizes_stream(self, chunks: Sequence[Mapping[str, object]]) -> bool:
        """Whether a list of chunks is a stream in this shape."""
        ...

    def response_texts(self, response: Mapping[str, object]) -> list[str]:
        """The output texts of one response body; missing, null and empty parts are skipped."""
        ...

    def stream_texts(self, chunks: Sequence[Mapping[str, object]]) -> list[str]:
        """The output texts of a stream, each the concatenation of its deltas."""
        ...


@functools.cache
def names() -> tuple[str, ...]:
    """The name of every provider module, sorted."""
    return tuple(
        sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    )


def shapes(name: str) -> ProviderShapes:
    """The provider module called `name` (e.g. ``"openai"``); an unknown name is an InputError."""
    if name not in names():
        raise InputError(
            f"expected a provider shape among {', '.join(names())}, found {name!r:.80}"
        )
    return cast(ProviderShapes, importlib.import_module(f"{__name__}.{name}"))


def for_provider(provider: str) -> ProviderShapes:
    """The shapes a recorded provider name answers in: its own module, else OpenAI's."""
    name = _ALIASES.get(provider, provider)
    return shapes(name if name in names() else "openai")


def output_texts(
    provider: str, response: object, *, stream: bool, complete: bool = True
) -> list[str]:
    """The output texts of a response body (or, `stream`, a list of chunk objects) from `provider`.

    A body the provider's shapes do not recognise is an InputError naming the shape expected and
    what was found; so is a stream said to be complete that holds no chunk at all.
    """
    module = for_provider(provider)
    if stream:
        chunks = cast(Sequence[Mapping[str, object]], response)
        if not chunks:
            if complete:
                raise InputError(
                    f"expected {module.EXPECTED} for provider {provider!r}, found an empty stream"
                )
            return []
        if not module.recognizes_stream(chunks):
            raise InputError(
                f"expected {module.EXPECTED} for provider {provider!r}, found {_describe(chunks)}"
            )
        return module.stream_texts(chunks)
    body = cast(Mapping[str, object], response)
    if not module.recognizes(body):
        raise InputError(
            f"expected {module.EXPECTED} for provider {provider!r}, found {_describe(body)}"
        )
    return module.response_texts(body)


def _describe(value: object) -> str:
    """A short, one-line account of a body or stream the shapes did not recognise."""
    if isinstance(value, Mapping):
        return _keys("an object", value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        first = next((c for c in value if isinstance(c, Mapping)), None)
        count = f"a stream of {len(value)} chunk{'s' if len(value) != 1 else ''}"
        return count if first is None else _keys(f"{count}, the first", first)
    return type(value).__name__


def _keys(what: str, value: Mapping[object, object]) -> str:
    keys = sorted(str(k)[:40] for k in value)
    if not keys:
        return f"{what} with no keys"
    more = ", ..." if len(keys) > _SHOWN_KEYS else ""
    return f"{what} with keys {', '.join(keys[:_SHOWN_KEYS])}{more}"
