"""The audit's inputs: suspects files and policy files, read at the edge into typed values.

`ledger audit` and the offline `ledger verify-bundle` read the very same files, so both use these readers;
this module loads no DuckDB, for the offline verifier's sake.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import orjson

from ledger.errors import InputError
from ledger.spec import text as text_spec
from ledger.spec.rules import Policy, parse_policy

__all__ = ["Suspect", "Suspects", "read_policy", "read_suspects"]


def read_policy(path: Path) -> Policy:
    """A TOML policy file (`ledger.spec.rules.parse_policy` says what it may hold)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such policy file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the policy: {exc}") from None
    return parse_policy(text, str(path))


# --- suspects ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Suspect:
    """One suspect: its segment hashes, and (for a text) the normalized texts to fingerprint.

    `index` is the 0-based position among the file's suspects (blank lines skipped), `line` 1-based.
    A text suspect has the segments a call output would have (the text and each paragraph).
    """

    index: int
    line: int
    segments: tuple[bytes, ...]
    texts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suspects(Sequence[Suspect]):
    """A suspects file as columns, so that millions of hashes cost no object per line.

    Suspect `i` has line `lines[i]` and the segment hashes in rows `starts[i]:starts[i + 1]` of
    `blob` (32 bytes per row); a text suspect's normalized segment texts are `texts[i]`, row-aligned.
    Indexing and iteration give `Suspect` values.
    """

    lines: Sequence[int]
    starts: Sequence[int]
    blob: bytes
    texts: Mapping[int, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.lines)

    @overload
    def __getitem__(self, i: int) -> Suspect: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Suspect]: ...
    def __getitem__(self, i: int | slice) -> Suspect | Sequence[Suspect]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"suspect {i} out of range")
        lo, hi = self.starts[i], self.starts[i + 1]
        segments = tuple(self.blob[r * 32 : r * 32 + 32] for r in range(lo, hi))
        return Suspect(i, self.lines[i], segments, self.texts.get(i, ()))

    @property
    def rows(self) -> int:
        """Segment rows (a hash on several lines counts once per line)."""
        return len(self.blob) // 32

    def row_owners(self) -> list[int]:
        """The suspect index of every segment row."""
        owners: list[int] = []
        for i in range(len(self)):
            owners.extend([i] * (self.starts[i + 1] - self.starts[i]))
        return owners

    def row_hashes(self) -> list[bytes]:
        blob = self.blob
        return [blob[r : r + 32] for r in range(0, len(blob), 32)]

    @classmethod
    def of(cls, suspects: Iterable[Suspect]) -> Suspects:
        lines: list[int] = []
        starts = [0]
        parts: list[bytes] = []
        texts: dict[int, tuple[str, ...]] = {}
        for n, suspect in enumerate(suspects):
            lines.append(suspect.line)
            parts.extend(suspect.segments)
            starts.append(starts[-1] + len(suspect.segments))
            if suspect.texts:
                texts[n] = suspect.texts
        return cls(lines, starts, b"".join(parts), texts)


# The common line `{"sha256": "<hex>"}` parsed without a JSON decoder (anything else takes the full path).
_SHA256_LINES = re.compile(
    rb'^[ \t]*\{[ \t]*"sha256"[ \t]*:[ \t]*"([0-9a-fA-F]{64})"[ \t]*\}[ \t]*\r?$', re.MULTILINE
)
_SHA256_LINE = re.compile(rb'\{\s*"sha256"\s*:\s*"([0-9a-fA-F]{64})"\s*\}\s*')


def _suspect_of(value: Any, where: str, index: int, line: int, min_chars: int) -> Suspect:
    if isinstance(value, Mapping):
        if set(value) == {"text"} and isinstance(value["text"], str):
            value = value["text"]
        elif set(value) == {"sha256"} and isinstance(value["sha256"], str):
            digest = value["sha256"].lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise InputError(
                    f"{where}: expected a 64-hex-digit segment hash, found {value['sha256']!r:.80}"
                )
            return Suspect(index, line, (bytes.fromhex(digest),))
        else:
            raise InputError(
                f'{where}: expected {{"text": ...}} or {{"sha256": ...}}, found keys '
                f"{sorted(value)!r:.80}"
            )
    if not isinstance(value, str):
        raise InputError(
            f'{where}: expected a JSON string, {{"text": ...}} or {{"sha256": ...}}, '
            f"found {type(value).__name__}"
        )
    try:
        pairs = text_spec.text_segments(value, min_chars)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    return Suspect(index, line, tuple(h for h, _ in pairs), tuple(t for _, t in pairs))


def _all_sha256_lines(raw: bytes) -> bytes | None:
    """The digests (concatenated) of a file made only of `{"sha256": ...}` lines, else None.

    One C-level scan instead of a parse per line: a verifier's file may hold a million hashes.
    """
    if not raw or b"\n\n" in raw or b"\n\r\n" in raw or raw[:1] in (b"\n", b"\r"):
        return None
    found = _SHA256_LINES.findall(raw)
    if len(found) != raw.count(b"\n") + (not raw.endswith(b"\n")):
        return None
    return bytes.fromhex(b"".join(found).decode("ascii"))


def read_suspects(path: Path, min_chars: int = text_spec.MIN_SEGMENT_CHARS) -> Suspects:
    """Suspects from JSONL (a JSON string, `{"text"}` or `{"sha256"}` per line) or `.txt` (a text per line).

    A bad line is an InputError naming `file:line`; a text too short to be a segment is kept with no
    segments (it can match nothing, and the audit's coverage counts it). No suspects at all is an error.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such suspects file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read suspects: {exc.strerror or exc}") from None
    plain = path.suffix.lower() == ".txt"
    if not plain:
        blob = _all_sha256_lines(raw)
        if blob is not None:
            count = len(blob) // 32
            return Suspects(range(1, count + 1), range(count + 1), blob)
    out: list[Suspect] = []
    fast = _SHA256_LINE.fullmatch
    for number, line in enumerate(raw.split(b"\n"), start=1):
        match = None if plain else fast(line)
        if match is not None:
            out.append(Suspect(len(out), number, (bytes.fromhex(match[1].decode("ascii")),)))
            continue
        where = f"{path}:{number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{where}: not valid UTF-8 (byte {exc.start})") from None
        text = text.removesuffix("\r")
        if not text.strip():
            continue
        if plain:
            value: Any = text
        else:
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{where}: not JSON: {exc}") from None
        out.append(_suspect_of(value, where, len(out), number, min_chars))
    if not out:
        raise InputError(f"{path}: no suspects in the file")
    return Suspects.of(out)
