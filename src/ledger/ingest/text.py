"""Plain text (`.txt`, `.txt.gz`): each non-empty line is one `str` record without its `\\n` or
`\\r\\n`, hashed as its UTF-8 bytes."""

from __future__ import annotations

from collections.abc import Iterator

from ledger.engine.kernel import TEXT_LINES
from ledger.errors import InputError
from ledger.ingest.blocks import LineReader, split_lines
from ledger.ingest.reader import LineBlock, Unit

__all__ = ["TextReader"]


class TextReader(LineReader):
    """Reads text files into `str` records, one per non-empty line."""

    format = "txt"
    extensions = (".txt",)
    form = TEXT_LINES

    def records(self, unit: Unit) -> Iterator[tuple[int, object]]:
        """Each non-empty line as a `str` without its `\\n` or `\\r\\n`."""
        assert isinstance(unit, LineBlock)
        for i, line in enumerate(split_lines(unit)):
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{unit.name}:{unit.first_line + i}: invalid UTF-8 at byte {exc.start + 1} of the line"
                ) from exc
            yield unit.first_line + i, text
