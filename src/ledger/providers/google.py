"""Google Gemini ``generateContent`` shapes: ``candidates[].content.parts[]`` and its stream.

Texts of a call's output (DESIGN.md "Hashing (fixed)"): every part's ``text``, parts marked
``thought: true`` (the model's thought summary) included. A ``streamGenerateContent`` stream is a
list of such responses; its texts are, per candidate index, the concatenated thought pieces and the
concatenated answer pieces. A response with only ``promptFeedback`` (a blocked prompt) is read as
having no output. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["EXPECTED", "NAME", "recognizes", "recognizes_stream", "response_texts", "stream_texts"]

NAME = "google"
"""The name ``ledger.providers.shapes`` finds this module by."""

EXPECTED = "a Gemini generateContent response (candidates[].content.parts[])"
"""The shape this module reads, for the error naming a response it cannot read."""


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _get(value: object, key: str) -> object:
    return value.get(key) if isinstance(value, Mapping) else None


def _parts(candidate: object) -> list[object]:
    return _as_list(_get(_get(candidate, "content"), "parts"))


def recognizes(response: Mapping[str, object]) -> bool:
    """Whether a body is a generateContent response (it may still hold no text)."""
    return isinstance(response.get("candidates"), list) or isinstance(
        response.get("promptFeedback"), Mapping
    )


def recognizes_stream(chunks: Sequence[Mapping[str, object]]) -> bool:
    """Whether any chunk is a generateContent response."""
    return any(isinstance(c, Mapping) and recognizes(c) for c in chunks)


def response_texts(response: Mapping[str, object]) -> list[str]:
    """Every part's text (thought parts included), candidate by candidate; empty ones skipped."""
    out: list[str] = []
    for candidate in _as_list(response.get("candidates")):
        for part in _parts(candidate):
            text = _get(part, "text")
            if isinstance(text, str) and text:
                out.append(text)
    return out


def stream_texts(chunks: Sequence[Mapping[str, object]]) -> list[str]:
    """Per candidate index, its thought pieces joined and its answer pieces joined."""
    pieces: dict[tuple[object, bool], list[str]] = {}
    for chunk in chunks:
        if not isinstance(chunk, Mapping):
            continue
        for position, candidate in enumerate(_as_list(chunk.get("candidates"))):
            index = _get(candidate, "index")
            key_index = index if isinstance(index, int) else position
            for part in _parts(candidate):
                text = _get(part, "text")
                if isinstance(text, str):
                    thought = _get(part, "thought") is True
                    pieces.setdefault((key_index, thought), []).append(text)
    joined = ["".join(parts) for parts in pieces.values()]
    return [text for text in joined if text]
