"""JSON Lines, line by line: one line as a JSON object, and the one-line error naming what is wrong.

Shared by the kernel (which names a bad line of a block) and the call-log importers.
"""

from __future__ import annotations

from typing import Any, Final

from ledger.errors import InputError, LedgerError
from ledger.spec.jcs import parse_json_line

__all__ = ["DATA_ERRORS", "json_kind", "parse_object_line", "unparsable"]

# Errors that a JSON parser or the record hasher may raise for bad data (never for bugs of ours).
DATA_ERRORS: Final = (LedgerError, ValueError, TypeError, OverflowError, RecursionError)


def parse_object_line(
    name: str, number: int, line: bytes, unterminated: bool = False
) -> dict[str, Any]:
    """One JSONL line as a JSON object, or an `InputError` naming `name:number` and what is wrong."""
    try:
        record = parse_json_line(line)
    except DATA_ERRORS as exc:
        raise InputError(f"{name}:{number}: {unparsable(line, exc, unterminated)}") from exc
    if not isinstance(record, dict):
        hint = ""
        if number == 1 and name.lower().endswith(".json"):
            hint = " (a .json input is read as JSON Lines: one object per line)"
        raise InputError(f"{name}:{number}: not a JSON object (found {json_kind(record)}){hint}")
    return record


def unparsable(line: bytes, exc: BaseException, unterminated: bool) -> str:
    """Say why a line did not parse: bad UTF-8 first (the likelier root cause), else the JSON error."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"invalid UTF-8 at byte {bad.start + 1} of the line"
    detail = str(exc).replace("line 1 column", "column") or type(exc).__name__
    why = f"invalid JSON ({detail})"
    if unterminated:
        why += "; the last line has no newline: is the file truncated?"
    return why


def json_kind(value: object) -> str:
    """JSON's name for the type of a parsed value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return type(value).__name__
