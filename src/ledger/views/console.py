"""Rendering: rich renderables for people and JSON-ready dicts for machines. The only module that prints."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def print_json(document: Any) -> None:
    """One JSON document on stdout, nothing else (stable key order for diffs)."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def show(renderable: RenderableType) -> None:
    if out.is_terminal:
        # Tables and trees wrap to the screen (a cropped line loses an id); a lone text, such as a signed
        # note, is left to the terminal so that it copies as one line.
        out.print(renderable, soft_wrap=isinstance(renderable, Text))
    else:
        _print_piped(renderable)


def page(renderable: RenderableType, rows: int) -> None:
    """Long output goes through a pager on a terminal (as `git log` does); piped output is printed whole."""
    if out.is_terminal and rows + 4 > out.height:
        with out.pager(styles=True):
            out.print(renderable)
    else:
        show(renderable)


_TRAILING_BLANKS = re.compile(r" +((?:\x1b\[[0-9;]*m)*)$", re.MULTILINE)


def _print_piped(renderable: RenderableType) -> None:
    """Output for a pipe or a file: as wide as it needs to be (so no row is folded and grep finds every
    id whole) unless COLUMNS asks for a width, and no line ends in padding."""
    width = out.width
    if not os.environ.get("COLUMNS"):
        width = max(
            width, Measurement.get(out, out.options.update_width(1 << 16), renderable).maximum
        )
    console = Console(file=io.StringIO(), width=width, color_system="auto" if out.color_system else None,
                      force_terminal=out.is_terminal, no_color=out.no_color)  # fmt: skip
    with console.capture() as captured:
        console.print(renderable)
    out.file.write(_TRAILING_BLANKS.sub(r"\1", captured.get()))
    out.file.flush()


def _bounded() -> bool:
    """Output has a width to fit: a terminal's, or the one COLUMNS asks for (else piped output is as wide
    as it needs to be)."""
    return out.is_terminal or bool(os.environ.get("COLUMNS"))


def id_column(table: Table, header: str, values: Sequence[str], **options: Any) -> None:
    """A column that holds identifiers. In a bounded width it is as wide as its longest word (an id), so
    the other columns give way first and the text around the ids wraps between words; an id is folded
    onto a next line (never cut with "…") only when the screen is narrower still."""
    width = None
    if _bounded():
        width = max(cell_len(word) for word in [header, *" ".join(values).split()])
    table.add_column(header, width=width, overflow="fold", no_wrap=False, **options)


def fit(table: Table) -> Table:
    """Keep fixed-width id columns to three quarters of a bounded width: past that, the widest give up
    their fixed width (and fold like the rest) so that no other column is squeezed out of sight. A table
    of id columns only has no other column to make room for: it uses the whole width, and its widest
    column keeps what is left, so only ids longer than that fold."""
    if not _bounded():
        return table
    only_ids = all(c.width is not None for c in table.columns)
    fixed = sorted(
        (c for c in table.columns if c.width is not None), key=lambda c: c.width or 0, reverse=True
    )
    if only_ids:
        # a boxed table: one padding each side of a column, a rule between columns, the edges
        n = len(table.columns)
        room = out.width - (3 * n + 1 - (0 if table.pad_edge else 2))
        others = sum(c.width or 0 for c in fixed[1:])
        if fixed and (fixed[0].width or 0) + others > room and room - others >= 12:
            fixed[0].width = room - others
            return table
    budget = max(20, out.width * 3 // 4)
    total = sum((c.width or 0) + 2 for c in fixed)
    for column in fixed:
        if total <= budget:
            break
        total -= (column.width or 0) + 2
        column.width = None
    return table


def grid() -> Table:
    """Label/value rows whose values (hashes, ids) fold rather than being cut."""
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    return table


def error(message: str) -> None:
    """One line whatever the message holds (a parser's or DuckDB's text may carry newlines)."""
    err.print(Text("error: " + " ".join(message.split())), highlight=False)


def warn(message: str) -> None:
    err.print(Text(f"warning: {message}", style="yellow"), highlight=False)


def note(message: str) -> None:
    """A line for people, on stderr so stdout stays the result."""
    err.print(Text(message), highlight=False)


class _FirstNotice(logging.Handler):
    """Shows the first record this process logs as a note; later ones (another open, a retry) are not news."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.pid = os.getpid()  # a forked worker inherits the handler, not the right to speak
        self.said = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.said and record.process == self.pid:
            self.said = True
            note(record.getMessage())


def note_lock_waits() -> None:
    """Say once on stderr when the command waits for another process's lock (the store logs each wait)."""
    logger = logging.getLogger("ledger.log.store")
    for handler in [h for h in logger.handlers if isinstance(h, _FirstNotice)]:
        logger.removeHandler(handler)  # one per command, also when main() runs again in one process
    logger.addHandler(_FirstNotice())
    logger.setLevel(logging.INFO)


@contextmanager
def progress(
    description: str, total: int | None, *, enabled: bool, unit: str = "items"
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on a terminal; a no-op callback when piped or with --json."""
    if not enabled or not err.is_terminal:
        yield lambda advance: None
        return
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn()]
    columns.append(DownloadColumn() if unit == "bytes" else MofNCompleteColumn())
    columns.append(TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda advance: bar.advance(task, advance)


# --- tree heads, proofs ---------------------------------------------------------------------------


# --- keys -----------------------------------------------------------------------------------------


# --- entries --------------------------------------------------------------------------------------


def message(text: str, style: str = "") -> RenderableType:
    return Text(text, style=style)


# --- recording results ----------------------------------------------------------------------------


# --- audit, lineage, bundles ----------------------------------------------------------------------


def json_text(document: Any) -> str:
    """Compact JSON for files other tools read: every byte is meaningful (a bundle has no slack)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False) + "\n"
