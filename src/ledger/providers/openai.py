"""OpenAI response shapes: Chat Completions, legacy Completions and the Responses API.

Also every OpenAI-compatible API that answers in these shapes. Pure: a body or a list of stream
chunks in, the call's output texts out (DESIGN.md "Hashing (fixed)": texts of a call's output).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["NAME", "response_texts", "stream_texts"]

NAME = "openai"
"""The name ``ledger.providers.shapes`` finds this module by."""


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


def response_texts(response: Mapping[str, object]) -> list[str]:
    """The output texts of a response body (chat completion, legacy completion, Responses API).

    Message content (including lists of text parts), tool-call and legacy function-call
    argument strings, completion text, Responses ``output_text`` parts and function-call
    arguments, and a top-level ``output_text``. Missing, null and empty parts are skipped.
    """
    out: list[str] = []
    for choice in _as_list(response.get("choices")):
        message = _get(choice, "message")
        if isinstance(message, Mapping):
            _content_texts(message.get("content"), out)
            for call in _as_list(message.get("tool_calls")):
                _append_str(out, _get(_get(call, "function"), "arguments"))
            _append_str(out, _get(message.get("function_call"), "arguments"))
        _append_str(out, _get(choice, "text"))
    for item in _as_list(response.get("output")):
        kind = _get(item, "type")
        if kind == "function_call":
            _append_str(out, _get(item, "arguments"))
        elif kind in ("message", None):
            for part in _as_list(_get(item, "content")):
                if _get(part, "type") == "output_text":
                    _append_str(out, _get(part, "text"))
    _append_str(out, response.get("output_text"))
    return out


def stream_texts(chunks: Sequence[Mapping[str, object]]) -> list[str]:
    """The output texts of a stream, each the concatenation of its deltas.

    Chat chunks: per choice index, ``delta.content`` (and legacy completion ``text``), and per
    (choice, tool call index) the ``function.arguments`` pieces. Responses API events:
    ``response.output_text.delta`` per (output, content) index and
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
        elif kind == "response.function_call_arguments.delta":
            key = ("rf", _key(chunk.get("output_index")))
            _append_str(arguments.setdefault(key, []), chunk.get("delta"))
    joined = ["".join(parts) for parts in (*contents.values(), *arguments.values())]
    return [text for text in joined if text]
