"""Anthropic Messages API shapes: a message's ``content[]`` blocks and the event stream.

Texts of a call's output (DESIGN.md "Hashing (fixed)"): every ``text`` block's ``text``, every
``thinking`` block's ``thinking`` (extended thinking: the reasoning trace) and every ``tool_use``
block's ``input`` as its JCS text. A stream's texts are the same, per content block index:
``content_block_start`` then the ``text_delta``, ``thinking_delta`` and ``input_json_delta``
pieces of ``content_block_delta`` events; a tool's streamed JSON is parsed and written as JCS, so a
streamed call and the same call unstreamed give the same texts. ``redacted_thinking`` blocks carry
no text (their data is encrypted). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ledger.spec import jcs

__all__ = ["EXPECTED", "NAME", "recognizes", "recognizes_stream", "response_texts", "stream_texts"]

NAME = "anthropic"
"""The name ``ledger.providers.shapes`` finds this module by."""

EXPECTED = "an Anthropic Messages response (type message, content[] blocks) or its event stream"
"""The shape this module reads, for the error naming a response it cannot read."""

_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
    }
)
# content_block_delta's delta type -> the field holding its piece.
_DELTA_FIELDS = {
    "text_delta": "text",
    "thinking_delta": "thinking",
    "input_json_delta": "partial_json",
}


def _get(value: object, key: str) -> object:
    return value.get(key) if isinstance(value, Mapping) else None


def _json_text(value: object) -> str | None:
    """A tool input as its JCS text; a value JCS cannot write (NaN, a bad string) as None."""
    try:
        return jcs.canonical_json(value).decode("utf-8")
    except (TypeError, ValueError):
        return None


def _block_text(block: object) -> str | None:
    """The text of one content block: text, thinking, or a tool_use input as JCS."""
    kind = _get(block, "type")
    if kind == "text":
        value = _get(block, "text")
    elif kind == "thinking":
        value = _get(block, "thinking")
    elif kind == "tool_use" and isinstance(block, Mapping) and "input" in block:
        value = _json_text(block["input"])
    else:
        return None
    return value if isinstance(value, str) and value else None


def recognizes(response: Mapping[str, object]) -> bool:
    """Whether a body is a Messages response (it may still hold no text: an empty completion)."""
    return isinstance(response.get("content"), list) and response.get("type") in ("message", None)


def recognizes_stream(chunks: Sequence[Mapping[str, object]]) -> bool:
    """Whether any chunk is a Messages stream event."""
    return any(isinstance(c, Mapping) and str(c.get("type")) in _EVENTS for c in chunks)


def response_texts(response: Mapping[str, object]) -> list[str]:
    """The output texts of a Messages response, in block order; blocks without text are skipped."""
    content = response.get("content")
    blocks = content if isinstance(content, list) else []
    return [text for text in map(_block_text, blocks) if text is not None]


def _index(value: object) -> object:
    """A block index as a dict key: a malformed one (a list, an object) by its text, never a crash."""
    return value if value is None or isinstance(value, (str, int, float)) else repr(value)


def stream_texts(chunks: Sequence[Mapping[str, object]]) -> list[str]:
    """The output texts of a Messages event stream, one per content block, in block order."""
    kinds: dict[object, object] = {}
    pieces: dict[object, list[str]] = {}
    start_inputs: dict[object, object] = {}
    for event in chunks:
        if not isinstance(event, Mapping):
            continue
        kind = event.get("type")
        index = _index(event.get("index"))
        if kind == "content_block_start":
            block = event.get("content_block")
            block_type = _get(block, "type")
            kinds[index] = block_type
            parts = pieces.setdefault(index, [])
            if block_type in ("text", "thinking"):
                first = _get(block, str(block_type))
                if isinstance(first, str):
                    parts.append(first)
            elif block_type == "tool_use" and isinstance(block, Mapping) and "input" in block:
                start_inputs[index] = block["input"]
        elif kind == "content_block_delta":
            delta = event.get("delta")
            field = _DELTA_FIELDS.get(str(_get(delta, "type")))
            piece = _get(delta, field) if field is not None else None
            if isinstance(piece, str):
                pieces.setdefault(index, []).append(piece)
                if index not in kinds:
                    kinds[index] = "tool_use" if field == "partial_json" else "text"
    out: list[str] = []
    for index, parts in pieces.items():
        text: str | None = "".join(parts)
        if kinds.get(index) == "tool_use":
            text = _tool_input_text(text or "", start_inputs.get(index))
        if text:
            out.append(text)
    return out


def _tool_input_text(streamed: str, start_input: object) -> str | None:
    """A streamed tool input as JCS (the raw pieces if they do not parse: an abandoned stream)."""
    if not streamed.strip():
        return _json_text(start_input) if start_input is not None else None
    try:
        value = jcs.parse_json_line(streamed)
    except ValueError:
        return streamed
    return _json_text(value) or streamed
