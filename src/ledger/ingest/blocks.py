"""Line-based formats (JSON Lines, text) read in big blocks of whole lines, in bounded memory.

A block is cut at its last newline (a line longer than a block is joined whole); a leading UTF-8
byte order mark is dropped; `.gz` files are read through gzip. For the worker pool, blocks of a
plain file are read straight into the pool's shared input ring (`iter_ring_blocks`). `LineReader`
is what the JSON Lines and text readers share.
"""

from __future__ import annotations

import gzip
import io
import mmap
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from ledger.engine.kernel import Origin
from ledger.engine.pool import SlotRing
from ledger.errors import InputError
from ledger.ingest.reader import BOM, LineBlock, RingSpace, Unit, gzipped, open_binary

__all__ = [
    "BLOCK_SIZE",
    "InRing",
    "LineReader",
    "iter_blocks",
    "iter_ring_blocks",
    "line_array",
    "ring_slot_size",
]

# Unit of work for JSONL/text: big enough that per-task overhead vanishes, small enough that
# `2 * workers + 2` blocks in flight stay far below any memory concern.
BLOCK_SIZE = 4 << 20


@dataclass(frozen=True)
class InRing:
    """A block whose bytes wait in slot `slot` of the pool's input ring (from `offset`) rather
    than in the task itself."""

    block: LineBlock
    slot: int
    size: int
    offset: int = 0

    def unpack(self, memory: mmap.mmap) -> LineBlock:
        """The block, its data a view of the ring (`memory` is this process's map of it)."""
        start = self.slot * ring_slot_size() + self.offset
        return _replace_data(self.block, memoryview(memory)[start : start + self.size])


def _replace_data(block: LineBlock, data: bytes | memoryview) -> LineBlock:
    return LineBlock(block.name, block.fmt, block.first_line, data, block.at_eof, block.nbytes)


def ring_slot_size() -> int:
    """Room for a block: a read plus the partial line carried over from the previous one."""
    return BLOCK_SIZE + (BLOCK_SIZE >> 2)


def line_array(data: bytes | memoryview) -> pa.Array:
    """A block's lines as a binary column, each with its `\\n` (no copy of the data)."""
    codes = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(codes == 0x0A) + 1
    if len(codes) and (not len(ends) or ends[-1] != len(codes)):
        ends = np.append(ends, len(codes))  # a last line without its newline
    offsets = np.zeros(len(ends) + 1, dtype=np.int64)
    offsets[1:] = ends
    if len(codes) >= 2**31:
        typ = pa.large_binary()
    else:
        typ, offsets = pa.binary(), offsets.astype(np.int32)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(typ, len(ends), buffers)


class LineReader:
    """The parts of a reader of a line-based format (subclasses name the format and the form)."""

    format = ""
    extensions: tuple[str, ...] = ()
    compressible = True
    form = ""

    def units(self, path: Path, sha: Any, space: RingSpace | None) -> Iterator[Unit | InRing]:
        if space is not None and not gzipped(path):
            return iter_ring_blocks(path, self.format, sha, space)
        return iter_blocks(path, self.format, sha)

    def kernel_input(self, unit: Unit) -> tuple[pa.Array, str, Origin]:
        assert isinstance(unit, LineBlock)
        origin = Origin(unit.name, unit.first_line, rows=False, at_eof=unit.at_eof)
        return line_array(unit.data), self.form, origin

    def no_records(self, path: Path) -> str:
        return f"{path}: no records (the file is empty or holds only blank lines)"


def split_lines(unit: LineBlock) -> list[bytes]:
    """The block's lines without their `\\n`."""
    lines = bytes(unit.data).split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def iter_blocks(
    path: Path, fmt: str, sha: Any, block_size: int | None = None
) -> Iterator[LineBlock]:
    """Read big binary blocks and cut them at the last newline; a line longer than a block is joined."""
    with open_binary(path) as raw:
        source = _InputBytes(raw, sha)
        f = gzip.GzipFile(fileobj=source, mode="rb") if gzipped(path) else source
        yield from _read_blocks(str(path), fmt, f, source, block_size or BLOCK_SIZE)


def _read_blocks(
    name: str,
    fmt: str,
    f: Any,
    source: _InputBytes,
    block_size: int,
    line: int = 1,
    pending: list[bytes] | None = None,
    accounted: int = 0,
    first: bool = True,
) -> Iterator[LineBlock]:
    """`_iter_blocks` from `f` on: from line `line`, with `pending` bytes of it already read and
    `accounted` input bytes already given to earlier blocks; `first` if nothing was read yet (a
    byte order mark may start the data)."""
    pending = pending or []
    while True:
        try:
            data = f.read(block_size)
        except (OSError, EOFError, zlib.error) as exc:  # EOFError, zlib.error: broken gzip
            reason = getattr(exc, "strerror", None) or exc
            raise InputError(f"{name}:{line}: cannot read ({reason})") from exc
        if first:
            first = False
            data = data.removeprefix(BOM)
        if not data:
            break
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            pending.append(data)
            continue
        whole = b"".join((*pending, data[:cut])) if pending else data[:cut]
        pending = [data[cut:]] if cut < len(data) else []
        yield LineBlock(name, fmt, line, whole, False, source.count - accounted)
        accounted = source.count
        line += count_newlines(whole)
    if pending:
        yield LineBlock(name, fmt, line, b"".join(pending), True, source.count - accounted)


def iter_ring_blocks(
    path: Path, fmt: str, sha: Any, space: RingSpace
) -> Iterator[LineBlock | InRing]:
    """`iter_blocks` of a plain file, read straight into the ring's next slot: no block is
    allocated, sliced or copied in this process. The partial line after a block's last newline
    moves to the front of the next slot; a line too long for a slot takes `iter_blocks`' way."""
    name = str(path)
    ring: SlotRing = space.ring
    size = ring.slot_size
    memory = ring.memory
    with open_binary(path) as raw:
        source = _InputBytes(raw, sha)
        line, accounted, offset = 1, 0, 0
        carry = b""
        while True:
            slot = space.next_slot()
            start = slot * size
            memory[start : start + len(carry)] = carry
            room = min(BLOCK_SIZE, size - len(carry))
            target = memoryview(memory)[start + len(carry) : start + len(carry) + room]
            try:
                got = source.readinto(target)
            except OSError as exc:
                raise InputError(f"{name}:{line}: cannot read ({exc.strerror or exc})") from exc
            finally:
                target.release()
            end = start + len(carry) + got
            if accounted == 0 and source.count == got >= 3 and memory[start : start + 3] == BOM:
                offset = len(BOM)
            if got == 0:
                if end > start + offset:  # the last line, without its newline
                    data = memory[start + offset : end]
                    yield LineBlock(name, fmt, line, data, True, source.count - accounted)
                return
            cut = memory.rfind(b"\n", start + offset, end) + 1
            if cut == 0:  # no newline yet: a line longer than the room left in a slot
                head = memory[start + offset : end]
                yield from _read_blocks(
                    name, fmt, source, source, BLOCK_SIZE, line, [head], accounted, first=False
                )
                return
            block = LineBlock(name, fmt, line, b"", False, source.count - accounted)
            yield InRing(block, slot, cut - start - offset, offset)
            accounted = source.count
            line += count_newlines(memory, start + offset, cut)
            carry = memory[cut:end]
            offset = 0


class _InputBytes:
    """A file's bytes as they are read, counted (for progress) and fed to its digest (the source's
    sha256); for gzip input these are the compressed bytes, so the file is read once."""

    mode = "rb"

    def __init__(self, raw: io.BufferedReader, sha: Any) -> None:
        self._raw = raw
        self._sha = sha
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if self._sha is not None:
            self._sha.update(data)
        self.count += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        got = self._raw.readinto(buffer)
        if self._sha is not None:
            self._sha.update(buffer[:got])
        self.count += got
        return got

    def seek(self, offset: int, /) -> int:
        """Never needed: records are read front to back once (gzip seeks only to rewind)."""
        raise io.UnsupportedOperation("input is read front to back once")


def count_newlines(data: bytes | mmap.mmap, start: int = 0, end: int | None = None) -> int:
    """Lines in a block (`data[start:end]`); numpy counts a byte about four times faster than
    `bytes.count`."""
    end = len(data) if end is None else end
    codes = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
    return int(np.count_nonzero(codes == 0x0A))
