"""Words in messages: counts with the right plural. Pure, so the library and the views can share it."""

from __future__ import annotations

__all__ = ["plural"]


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`1 batch`, `2 batches`, `0 entries`: the count and the word that agrees with it.

    The plural defaults to the singular plus "s"; irregular words (batch, entry) pass theirs.
    """
    word = singular if count == 1 else (plural_form if plural_form is not None else singular + "s")
    return f"{count} {word}"
