"""Batch API input files: the requests a batch output file answers, joined to it by their own ids.

Three providers keep the requests of a batch in a JSON Lines file, one request a line, each with an id
the output line repeats (`INPUT_SHAPES`):

- OpenAI Batch API: `{"custom_id", "method", "url", "body"}`; the request is `body`.
- Anthropic Message Batches: `{"custom_id", "params"}`; the request is `params` (the Messages API
  body: `model`, `max_tokens`, `messages`, ...).
- Gemini Batch API: `{"key", "request"}`; the request is `request` (a `GenerateContentRequest`:
  `contents`, `generationConfig`, ...).

The file is indexed by byte offset, not held in memory, so a 200 MB input keeps memory flat; a
request is read and parsed again when its output line comes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ledger.engine.json_lines import parse_object_line
from ledger.errors import InputError
from ledger.ingest.reader import BOM, open_binary

__all__ = ["INPUT_SHAPES", "BatchInput", "BatchInputs", "InputShape", "json_kind"]


@dataclass(frozen=True)
class InputShape:
    """Where a provider's batch input line keeps its id and its request body."""

    id_field: str
    body_field: str
    describe: str  # the line's fields, for messages


INPUT_SHAPES: Final = {
    "openai-batch": InputShape("custom_id", "body", "custom_id, method, url, body"),
    "anthropic-batch": InputShape("custom_id", "params", "custom_id, params"),
    "gemini-batch": InputShape("key", "request", "key, request"),
}


@dataclass(frozen=True)
class BatchInput:
    """One request of a batch input file: its body, its url (OpenAI only) and its line."""

    body: dict[str, Any]
    url: str | None
    line: int


class BatchInputs:
    """id -> where the request line sits in the batch input file; bodies are read on demand.

    Every line is checked when the file is indexed (a string id, used once; an object body), so a bad
    input file fails before any output line is read.
    """

    def __init__(self, path: Path, shape: InputShape = INPUT_SHAPES["openai-batch"]) -> None:
        self.path = path
        self.shape = shape
        self._where: dict[str, tuple[int, int, int, str | None]] = {}
        id_field, body_field = shape.id_field, shape.body_field
        for number, offset, line, unterminated in _lines_with_offsets(path):
            obj = parse_object_line(str(path), number, line, unterminated)
            custom_id = obj.get(id_field)
            if not isinstance(custom_id, str):
                found = json_kind(custom_id)
                raise InputError(f"{path}:{number}: expected a string {id_field}, found {found}")
            if custom_id in self._where:
                first = self._where[custom_id][2]
                raise InputError(
                    f"{path}:{number}: {id_field} {custom_id!r} already used on line {first}"
                )
            if not isinstance(obj.get(body_field), dict):
                raise InputError(
                    f"{path}:{number}: expected an object '{body_field}', "
                    f"found {json_kind(obj.get(body_field))}"
                )
            url = obj.get("url")
            self._where[custom_id] = (
                offset,
                len(line),
                number,
                url if isinstance(url, str) else None,
            )
        if not self._where:
            raise InputError(f"{path}: no records (the file is empty or holds only blank lines)")
        self._file = open_binary(path)

    def close(self) -> None:
        """Release the input file."""
        self._file.close()

    def get(self, custom_id: str) -> BatchInput | None:
        """The request for `custom_id`, or None if the input file has no such line."""
        where = self._where.get(custom_id)
        if where is None:
            return None
        offset, length, number, url = where
        self._file.seek(offset)
        line = self._file.read(length)
        body = parse_object_line(str(self.path), number, line).get(self.shape.body_field)
        if not isinstance(body, dict):  # the file changed under us since it was indexed
            raise InputError(f"{self.path}:{number}: changed while being read")
        return BatchInput(body, url, number)


def _lines_with_offsets(path: Path) -> Iterator[tuple[int, int, bytes, bool]]:
    """(line number, byte offset, line without its ending, unterminated) for each non-blank line."""
    with open_binary(path) as f:
        offset = 0
        for number, raw in enumerate(f, start=1):
            start = offset
            offset += len(raw)
            line = raw
            if number == 1 and line.startswith(BOM):
                line, start = line[len(BOM) :], start + len(BOM)
            unterminated = not line.endswith(b"\n")
            line = line.rstrip(b"\r\n") if not unterminated else line
            if line and not line.isspace():
                yield number, start, line, unterminated


def json_kind(value: object) -> str:
    """JSON's name for a value's type, for "expected X, found Y" messages."""
    if value is None:
        return "null or nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
