"""Provider response shapes: one pure module per provider, each behind the `ProviderShapes` protocol.

A provider module ``ledger.providers.<name>`` holds ``NAME`` (its module name), and
``response_texts(body)`` and ``stream_texts(chunks)``, which turn a response body, or the chunks of
a stream, into the call's output texts (DESIGN.md "Hashing (fixed)"). Segments and hashes of those
texts are provider-neutral (``ledger.spec.text.call_outputs``). Adding a provider is adding its
module here: `shapes` finds it by name and `names` lists it, with nothing else to register.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from typing import Protocol, cast, runtime_checkable

from ledger.errors import InputError

__all__ = ["ProviderShapes", "names", "shapes"]


@runtime_checkable
class ProviderShapes(Protocol):
    """What a provider module exposes (a module satisfies this protocol as it stands)."""

    NAME: str
    """The provider's name, equal to its module's name."""

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
