"""Text normalization and segments (DESIGN.md "Hashing (fixed)").

``normalize`` is the one normalization of every text compared between records and call outputs; a
segment is a normalized text of at least ``MIN_SEGMENT_CHARS`` code points, named by its SHA-256.
Pure and deterministic, and on the recording hot path: ASCII text takes byte-level shortcuts that
tests hold equal to the plain definition.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from itertools import compress
from typing import Final

import numpy as np
import numpy.typing as npt

from ledger.spec.digest import sha256_each
from ledger.spec.jcs import HashInputError, collect_strings

__all__ = [
    "MIN_SEGMENT_CHARS",
    "call_outputs",
    "encode_text",
    "field_texts",
    "normalize",
    "record_segments",
    "record_texts",
    "segment_hash",
    "segments_at",
    "segments_of",
    "text_segments",
]

MIN_SEGMENT_CHARS: Final = 32
"""Default minimum length, in code points of the normalized text, of a segment."""

_sha256 = hashlib.sha256

# ---------------------------------------------------------------------------------------------
# Normalization and segments
# ---------------------------------------------------------------------------------------------

# For ASCII text, one translate pass does casefold (A-Z to a-z) and maps every character that
# str.split() treats as whitespace (\t \n \v \f \r \x1c-\x1f) to a space; collapsing runs of
# spaces and stripping the ends then equals " ".join(text.casefold().split()).
_ASCII_SPACES: Final = frozenset(range(0x09, 0x0E)) | frozenset(range(0x1C, 0x20))
_ASCII_FOLD: Final = bytes(
    b + 32 if 0x41 <= b <= 0x5A else 0x20 if b in _ASCII_SPACES else b for b in range(256)
)
_ASCII_SPACE_ONLY: Final = bytes(0x20 if b in _ASCII_SPACES else b for b in range(256))
# The only non-ASCII whitespace that survives NFKC + casefold (the rest decompose to U+0020);
# tests check this exhaustively against the running Unicode database.
_RARE_SPACES: Final = ("\x85", "\u1680", "\u2028", "\u2029")
_PARAGRAPH_BREAK: Final = re.compile(r"\n\s*\n")


def _collapse_spaces(data: bytes) -> bytes:
    """Collapse runs of spaces and strip the ends; faster than split + join, no word list."""
    while b"  " in data:
        data = data.replace(b"  ", b" ")
    return data.strip(b" ")


def _normalize_unicode(text: str) -> str:
    """normalize() of non-ASCII text: NFKC and casefold, then spaces collapsed on UTF-8 bytes
    (multi-byte sequences never contain ASCII bytes) unless a rare Unicode space remains."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    rare = _RARE_SPACES
    if rare[0] in folded or rare[1] in folded or rare[2] in folded or rare[3] in folded:
        return " ".join(folded.split())
    data = folded.encode("utf-8", "surrogatepass").translate(_ASCII_SPACE_ONLY)
    return _collapse_spaces(data).decode("utf-8", "surrogatepass")


def normalize(text: str) -> str:
    """The fixed normalization: NFKC, casefold, and whitespace runs collapsed to one space.

    Equal to ``" ".join(unicodedata.normalize("NFKC", s).casefold().split())``, computed
    without building a list of words.
    """
    if text.isascii():  # NFKC is the identity on ASCII, where casefold is lower
        return _collapse_spaces(text.encode("ascii").translate(_ASCII_FOLD)).decode("ascii")
    return _normalize_unicode(text)


def encode_text(text: str) -> bytes:
    """UTF-8 bytes of a text; a lone surrogate (no UTF-8 form) is a HashInputError."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HashInputError(
            f"text has a lone surrogate U+{ord(text[exc.start]):04X} at character {exc.start}"
        ) from None


def _segment(text: str, min_chars: int) -> tuple[bytes, str] | None:
    """(hash, normalized text) of ``text`` if it normalizes to a segment, else None."""
    if text.isascii():
        if len(text) < min_chars:
            return None  # normalization never lengthens ASCII text
        data = _collapse_spaces(text.encode("ascii").translate(_ASCII_FOLD))
        if len(data) < min_chars:
            return None
        return _sha256(data).digest(), data.decode("ascii")
    norm = _normalize_unicode(text)
    if len(norm) < min_chars:
        return None
    return _sha256(encode_text(norm)).digest(), norm


def segment_hash(text: str, min_chars: int = MIN_SEGMENT_CHARS) -> bytes | None:
    """sha256 of the normalized text when it has at least ``min_chars`` code points, else None."""
    found = _segment(text, min_chars)
    return None if found is None else found[0]


def text_segments(text: str, min_chars: int = MIN_SEGMENT_CHARS) -> list[tuple[bytes, str]]:
    """A call text's segments: the text itself and each paragraph of it that is a segment.

    Paragraphs are split on the raw text (``\\n\\s*\\n``) before normalizing. Returns distinct
    (hash, normalized text) pairs, the whole text first, then paragraphs in order.
    """
    found: dict[bytes, str] = {}
    pieces = [text, *_PARAGRAPH_BREAK.split(text)] if "\n" in text else [text]
    for piece in pieces:
        segment = _segment(piece, min_chars)
        if segment is not None and segment[0] not in found:
            found[segment[0]] = segment[1]
    return list(found.items())


def _collect_path(value: object, parts: Sequence[str], step: int, out: list[str]) -> None:
    """Strings under the dotted path ``parts[step:]``, traversing lists at any step."""
    if isinstance(value, (list, tuple)):
        for v in value:
            _collect_path(v, parts, step, out)
    elif step == len(parts):
        collect_strings(value, out)
    elif isinstance(value, dict):
        key = parts[step]
        if key in value:
            _collect_path(value[key], parts, step + 1, out)


def field_texts(record: object, text_fields: Sequence[str]) -> list[str]:
    """The strings under the dotted paths ``text_fields`` (``record_texts`` with fields given)."""
    out: list[str] = []
    for field in text_fields:
        _collect_path(record, field.split("."), 0, out)
    return out


def record_texts(record: object, text_fields: Sequence[str] | None = None) -> Iterator[str]:
    """The texts of a record that may hold segments, in document order.

    Every string value (recursively; keys are not values), or with ``text_fields`` only the
    values under those dotted paths (lists traversed at any step; a path that ends at an object
    or list contributes every string inside it). A str record (a ``.txt`` line) is its own text.
    """
    if isinstance(record, str):
        yield record
        return
    out: list[str] = []
    if text_fields is None:
        collect_strings(record, out)
    else:
        out = field_texts(record, text_fields)
    yield from out


def segments_of(texts: Iterable[str], min_chars: int) -> dict[bytes, str]:
    """{segment hash: normalized text} of the texts; ``_segment`` inlined for ASCII texts."""
    found: dict[bytes, str] = {}
    fold = _ASCII_FOLD
    for text in texts:
        if text.isascii():
            if len(text) < min_chars:
                continue
            data = text.encode("ascii").translate(fold)
            while b"  " in data:
                data = data.replace(b"  ", b" ")
            data = data.strip(b" ")
            if len(data) >= min_chars:
                found[_sha256(data).digest()] = data.decode("ascii")
        else:
            segment = _segment(text, min_chars)
            if segment is not None:
                found[segment[0]] = segment[1]
    return found


def record_segments(
    record: object,
    text_fields: Sequence[str] | None = None,
    min_chars: int = MIN_SEGMENT_CHARS,
) -> list[bytes]:
    """Distinct raw segment hashes of a record, sorted ascending (the order of a record leaf)."""
    return sorted(segments_of(record_texts(record, text_fields), min_chars))


def segments_at(
    texts: Sequence[str], min_chars: int
) -> tuple[npt.NDArray[np.int64], list[bytes], list[str]]:
    """(index in ``texts``, hash, normalized text) of every text that normalizes to a segment.

    ASCII texts are normalized together (``_ascii_segments``), joined by NULs; whether they all
    are ASCII and NUL-free is asked once of the join in the common case. Others go one by one
    through ``_segment``: non-ASCII ones (NFKC may lengthen even a short text), those holding a
    NUL, and empty ones when ``min_chars`` is not positive (an empty text is a segment then).
    """
    joined = "\x00".join(texts)
    if min_chars > 0 and joined.isascii():  # O(1): a str knows whether it is ASCII
        found = _ascii_segments(joined, len(texts), min_chars)
        if found is not None:
            return found
    plain = [t.isascii() and "\x00" not in t and (min_chars > 0 or t != "") for t in texts]
    chosen = np.flatnonzero(plain)
    found = _ascii_segments("\x00".join(compress(texts, plain)), len(chosen), min_chars)
    assert found is not None  # no text holds a NUL
    where, hashes, normalized = found
    where = chosen[where]
    extra: list[int] = []
    for i, is_plain in enumerate(plain):
        if not is_plain:
            segment = _segment(texts[i], min_chars)
            if segment is not None:
                extra.append(i)
                hashes.append(segment[0])
                normalized.append(segment[1])
    if extra:
        where = np.concatenate((where, np.array(extra, dtype=np.int64)))
    return where, hashes, normalized


def _ascii_segments(
    joined: str, count: int, min_chars: int
) -> tuple[npt.NDArray[np.int64], list[bytes], list[str]] | None:
    """(index, hash, normalized text) of each segment among ``count`` ASCII texts joined by NULs;
    None when the join holds more NULs than separators. One translate, one numpy pass to find the
    few texts whose spaces need collapsing, one slice per text long enough to be a segment."""
    folded = joined.encode("ascii").translate(_ASCII_FOLD)
    codes = np.frombuffer(folded, dtype=np.uint8)
    ends = np.append(np.flatnonzero(codes == 0), len(folded))
    if len(ends) != max(count, 1):
        return None
    starts = np.zeros_like(ends)
    starts[1:] = ends[:-1] + 1
    # Normalization never lengthens ASCII text, so only texts this long can be segments.
    where = np.flatnonzero(ends - starts >= max(min_chars, 1))
    if not len(where):
        return where, [], []
    starts, ends = starts[where], ends[where]
    # A text needs collapsing if it starts or ends with a space or holds two in a row (no pair
    # spans two texts: a NUL stands between them).
    space = codes == 0x20
    messy = space[starts] | space[ends - 1]
    pairs = np.flatnonzero(space[:-1] & space[1:])
    at = np.searchsorted(starts, pairs, side="right") - 1
    inside = at >= 0
    at, pairs = at[inside], pairs[inside]
    messy[at[pairs < ends[at]]] = True
    pieces = [folded[s:e] for s, e in zip(starts.tolist(), ends.tolist())]
    short: list[int] = []
    for k in np.flatnonzero(messy).tolist():
        pieces[k] = _collapse_spaces(pieces[k])
        if len(pieces[k]) < min_chars:
            short.append(k)
    if short:
        keep = np.ones(len(pieces), dtype=np.bool_)
        keep[short] = False
        where = where[keep]
        pieces = list(compress(pieces, keep.tolist()))
    return where, sha256_each(pieces), list(map(bytes.decode, pieces))


def call_outputs(texts: Iterable[str], min_chars: int = MIN_SEGMENT_CHARS) -> list[str]:
    """A call's ``outputs``: distinct segment hashes of all its texts, hex, sorted ascending."""
    found: set[bytes] = set()
    for text in texts:
        found.update(h for h, _ in text_segments(text, min_chars))
    return [h.hex() for h in sorted(found)]
