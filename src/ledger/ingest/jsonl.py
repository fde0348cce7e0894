"""JSON Lines (`.jsonl`, `.ndjson`, `.json`, `.jsonlines`, and `.gz` of them).

Each non-blank line is one JSON object; blank or whitespace-only lines are skipped; `\\r\\n`
endings and a leading UTF-8 byte order mark are accepted. A bad line is one `InputError` naming
`file:line`, e.g. `data.jsonl:17: not a JSON object (found array)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ledger.engine.json_lines import DATA_ERRORS, parse_object_line
from ledger.engine.kernel import JSON_LINES
from ledger.ingest.blocks import LineReader, split_lines
from ledger.ingest.reader import LineBlock, Unit
from ledger.spec.jcs import parse_json_lines

__all__ = ["JsonlReader"]


class JsonlReader(LineReader):
    """Reads JSON Lines files into `dict` records; the kernel parses blocks of lines itself."""

    format = "jsonl"
    extensions = (".jsonl", ".ndjson", ".json", ".jsonlines")
    form = JSON_LINES

    def records(self, unit: Unit) -> Iterable[tuple[int, object]]:
        """The block's numbered records: parsed in bulk when every line is a JSON object, else
        line by line (which skips blank lines and names a bad one)."""
        assert isinstance(unit, LineBlock)
        lines = split_lines(unit)
        try:
            parsed = parse_json_lines(bytes(unit.data), lines)
        except DATA_ERRORS:
            parsed = None
        if parsed is None or not all(type(record) is dict for record in parsed):
            return _json_lines(unit, lines)
        return zip(range(unit.first_line, unit.first_line + len(parsed)), parsed, strict=True)


def _json_lines(unit: LineBlock, lines: list[bytes]) -> Iterator[tuple[int, object]]:
    """Each non-blank line parsed as a JSON object (exact big integers, via `ledger.spec.jcs`)."""
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if not line or line.isspace():
            continue
        number = unit.first_line + i
        yield number, parse_object_line(unit.name, number, line, unit.at_eof and i == last)
