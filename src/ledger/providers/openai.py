"""OpenAI response shapes: Chat Completions, legacy Completions and the Responses API.

Also every OpenAI-compatible API that answers in these shapes (vLLM, DeepSeek, Azure OpenAI), with
their reasoning texts: chat ``message.reasoning_content`` / ``message.reasoning`` (and the stream
deltas of the same names) and the Responses API's ``reasoning`` items (``summary[].text``, and
``content[]`` reasoning texts). Pure: a body or a list of stream chunks in, the call's output texts
out (DESIGN.md "Hashing (fixed)": texts of a call's output).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["EXPECTED", "NAME", "recognizes", "recognizes_stream", "response_texts", "stream_texts"]

NAME = "openai"
"""The name ``ledger.providers.shapes`` finds this module by."""

EXPECTED = "an OpenAI chat completion, completion or Responses object (choices[] or output[])"
"""The shape this module reads, for the error naming a response it cannot read."""

_OBJECTS = frozenset({"chat.completion", "text_completion", "response"})
_REASONING_KEYS = ("reasoning_content", "reasoning")


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _get(value: object, key: str) -> object:
    return value.get(key) if isinstance(value, Mapping) else None


def _append_str(out: list[str], value: object) -> None:
    if isinstance(value, str) and value:
        out.append(value)


def _key(value: object) -> object:
    """A stream's index as a dict key: a malformed one (a list, an object) by its text, never a crash."""
    return value if value is None or isinstance(value, (str, int, float)) else repr(value)


def _content_texts(content: object, out: list[str]) -> None:
    """A chat message's content: a string, or a list of parts whose ``text`` is a string."""
    if isinstance(content, str):
        _append_str(out, content)
        return
    for part in _as_list(content):
        if isinstance(part, str):
            _append_str(out, part)
        else:
            _append_str(out, _get(part, "text"))


def recognizes(response: Mapping[str, object]) -> bool:
    """Whether a body is in one of these shapes (it may still hold no text: an empty completion)."""
    if isinstance(response.get("choices"), list) or isinstance(response.get("output"), list):
        return True
    kind = response.get("object")
    if isinstance(response.get("output_text"), str) or (isinstance(kind, str) and kind in _OBJECTS):
        return True
    # An embeddings list: a readable OpenAI response that carries no text.
    return kind == "list" and isinstance(response.get("data"), list)


def recognizes_stream(chunks: Sequence[Mapping[str, object]]) -> bool:
    """Whether any chunk is a chat/completion chunk or a Responses API stream event."""
    for chunk in chunks:
        if not isinstance(chunk, Mapping):
            continue
        kind = chunk.get("type")
        if isinstance(chunk.get("choices"), list) or (
            isinstance(kind, str) and kind.startswith("response.")
        ):
            return True
    return False


def _reasoning_item_texts(item: object, out: list[str]) -> None:
    """A Responses ``reasoning`` item: its summary texts and any reasoning-text content parts."""
    for part in _as_list(_get(item, "summary")):
        _append_str(out, _get(part, "text"))
    for part in _as_list(_get(item, "content")):
        _append_str(out, _get(part, "text"))


def response_texts(response: Mapping[str, object]) -> list[str]:
    """The output texts of a response body (chat completion, legacy completion, Responses API).

    Message content (including lists of text parts), reasoning (``reasoning_content``,
    ``reasoning``), tool-call and legacy function-call argument strings, completion text,
    Responses ``output_text`` parts, function-call arguments and reasoning items, and a top-level
    ``output_text``. Missing, null and empty parts are skipped.
    """
    out: list[str] = []
    for choice in _as_list(response.get("choices")):
        message = _get(choice, "message")
        if isinstance(message, Mapping):
            _content_texts(message.get("content"), out)
            for key in _REASONING_KEYS:
                _append_str(out, message.get(key))
            for call in _as_list(message.get("tool_calls")):
                _append_str(out, _get(_get(call, "function"), "arguments"))
            _append_str(out, _get(message.get("function_call"), "arguments"))
        _append_str(out, _get(choice, "text"))
    for item in _as_list(response.get("output")):
        kind = _get(item, "type")
        if kind == "function_call":
            _append_str(out, _get(item, "arguments"))
        elif kind == "reasoning":
            _reasoning_item_texts(item, out)
        elif kind in ("message", None):
            for part in _as_list(_get(item, "content")):
                if _get(part, "type") == "output_text":
                    _append_str(out, _get(part, "text"))
    _append_str(out, response.get("output_text"))
    return out


def stream_texts(chunks: Sequence[Mapping[str, object]]) -> list[str]:
    """The output texts of a stream, each the concatenation of its deltas.

    Chat chunks: per choice index, ``delta.content`` (and legacy completion ``text``),
    ``delta.reasoning_content`` and ``delta.reasoning`` (each its own text), and per (choice, tool
    call index) the ``function.arguments`` pieces. Responses API events:
    ``response.output_text.delta`` per (output, content) index,
    ``response.reasoning_summary_text.delta`` per (output, summary) index,
    ``response.reasoning_text.delta`` per (output, content) index and
    ``response.function_call_arguments.delta`` per output index. Contents come before tool
    arguments, each in order of first appearance.
    """
    contents: dict[tuple[object, ...], list[str]] = {}
    arguments: dict[tuple[object, ...], list[str]] = {}
    key: tuple[object, ...]
    for chunk in chunks:
        if not isinstance(chunk, Mapping):
            continue
        for choice in _as_list(chunk.get("choices")):
            index = _key(_get(choice, "index"))
            delta = _get(choice, "delta")
            if isinstance(delta, Mapping):
                _append_str(contents.setdefault(("c", index), []), delta.get("content"))
                for name in _REASONING_KEYS:
                    _append_str(contents.setdefault((name, index), []), delta.get(name))
                for call in _as_list(delta.get("tool_calls")):
                    piece = _get(_get(call, "function"), "arguments")
                    key = ("t", index, _key(_get(call, "index")))
                    _append_str(arguments.setdefault(key, []), piece)
                piece = _get(delta.get("function_call"), "arguments")
                _append_str(arguments.setdefault(("f", index), []), piece)
            _append_str(contents.setdefault(("c", index), []), _get(choice, "text"))
        kind = chunk.get("type")
        if kind == "response.output_text.delta":
            key = ("r", _key(chunk.get("output_index")), _key(chunk.get("content_index")))
            _append_str(contents.setdefault(key, []), chunk.get("delta"))
        elif kind == "response.reasoning_summary_text.delta":
            key = ("rs", _key(chunk.get("output_index")), _key(chunk.get("summary_index")))
            _append_str(contents.setdefault(key, []), chunk.get("delta"))
        elif kind == "response.reasoning_text.delta":
            key = ("rt", _key(chunk.get("output_index")), _key(chunk.get("content_index")))
            _append_str(contents.setdefault(key, []), chunk.get("delta"))
        elif kind == "response.function_call_arguments.delta":
            key = ("rf", _key(chunk.get("output_index")))
            _append_str(arguments.setdefault(key, []), chunk.get("delta"))
    joined = ["".join(parts) for parts in (*contents.values(), *arguments.values())]
    return [text for text in joined if text]
