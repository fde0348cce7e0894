"""The canonical text a near-duplicate fingerprint is made of (``ledger.spec.fingerprint``).

Step 1 of the fingerprint pipeline: masks (e-mail addresses, bracketed placeholders, x-runs) and
every non-letter go, so masking, changed digits, re-spacing and re-punctuation leave the letters
around them intact; with ``fold`` (scheme v3) default-ignorable code points go first and every
letter is folded to its TR39 skeleton, so look-alike letters from other scripts and zero-width
characters change nothing. Pure and deterministic; the skeleton table is built once from
Unicode's confusables.txt as the ``confusable-homoglyphs`` package ships it.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["canonical_batch", "canonical_joined", "skeleton_table"]

I64 = npt.NDArray[np.int64]


# --------------------------------------------------------------------------- canonical text

EMAIL = re.compile(r"(?<!\S)[^\s@]+@\S+")  # a whole token with text on both sides of an "@"
X_RUN = re.compile(r"(?<![^\W\d_])x{3,}(?![^\W\d_])")
BRACKETED = re.compile(r"\[[^\s\[\]]{0,24}\]|<[^\s<>]{0,24}>|\{[^\s{}]{0,24}\}")
# Everything that is not a letter goes: punctuation, symbols (*, #, █), digits, underscores, spaces.
_NON_LETTERS = re.compile(r"[^\w\n]+|[\d_]+")
ASCII_NON_LETTERS = bytes(b for b in range(128) if not (65 <= b <= 90 or 97 <= b <= 122 or b == 10))


def _drop_rare_tokens(text: str) -> str:
    """Newlines to spaces, e-mail addresses and x-runs out, testing before each slow regex."""
    if "\n" in text:
        text = text.replace("\n", " ")
    if "@" in text:
        text = EMAIL.sub(" ", text)
    if "xxx" in text:
        text = X_RUN.sub(" ", text)
    return text


def _has_x_run(utf8: bytes) -> bool:
    """Whether ``xxx`` occurs (only an ASCII ``x`` is byte 0x78 in UTF-8); faster than ``in``."""
    x = np.frombuffer(utf8, dtype=np.uint8) == 0x78
    return bool((x[:-2] & x[1:-1] & x[2:]).any())


def canonical_joined(texts: Sequence[str], fold: bool = False) -> tuple[bytes, I64]:
    """UTF-8 canonical texts joined by ``b"\\n"``, and the end offset of each in the joined bytes.

    The joined form is what hashing reads, so the common batch is never split and re-joined.
    E-mails, x-runs and newlines need a pass per text first (`_drop_rare_tokens`); a newline is
    only noticed at the end, as one separator too many, and then the batch is done again.
    `fold` (scheme v3) first strips default-ignorable code points from non-ASCII texts (none is
    ASCII), so an invisible character inside a placeholder or an e-mail hides neither.
    """
    if not texts:  # "\n".join([]) splits back into one empty text, not none
        return b"", np.zeros(0, dtype=np.int64)
    joined = "\n".join(texts)
    if fold and not joined.isascii():
        texts = [t if t.isascii() else _strip_ignorable(t) for t in texts]
        joined = "\n".join(texts)
    if "@" not in joined and not _has_x_run(joined.encode("utf-8")):
        data, ends = _canonical_of_joined(joined, fold)
        if len(ends) == len(texts):
            return data, ends
    # Rare: per text, because these patterns are slow on a whole batch.
    data, ends = _canonical_of_joined("\n".join(map(_drop_rare_tokens, texts)), fold)
    if len(ends) != len(texts):  # pragma: no cover - nothing removes or adds "\n"
        raise AssertionError("canonicalization lost a text boundary")
    return data, ends


def _canonical_of_joined(joined: str, fold: bool = False) -> tuple[bytes, I64]:
    """Canonical form of newline-joined texts, and the end offset of each text in it.

    Masks go as whole tokens first (``[name]`` must not leave ``name`` behind); the rest is a
    per-character filter. ASCII text (the common batch) is filtered by `ascii_canonical`; other
    text by ``bytes.translate`` on its ASCII non-letters (exactly what the regular expression drops
    among ASCII characters), then the regular expression on the non-ASCII texts. With `fold`,
    non-ASCII texts are folded to skeletons (`_fold_letters`) and ASCII letters by their own rule
    (`_fold_ascii`), which is the same table's ASCII part.
    """
    if "[" in joined or "<" in joined or "{" in joined:
        joined = BRACKETED.sub(" ", joined)
    if joined.isascii():
        return ascii_canonical(joined.encode("ascii"), fold)
    # Non-letters are removed char by char, so ASCII ones can go first for the whole batch (UTF-8
    # bytes >= 0x80 survive the translate) and only non-ASCII texts need the regular expression.
    data = joined.encode("utf-8").translate(None, ASCII_NON_LETTERS)
    out = data.split(b"\n")
    for i, t in enumerate(out):
        if not t.isascii():
            text = t.decode("utf-8")
            out[i] = _NON_LETTERS.sub("", _fold_letters(text) if fold else text).encode("utf-8")
    data = b"\n".join(out)
    if fold:  # folded non-ASCII texts hold no ASCII key of the table, so this folds the rest
        return _fold_ascii(data)
    # Every newline is kept: the separators, and any a text held.
    return data, np.append(np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10), len(data))


def ascii_canonical(ascii_bytes: bytes, fold: bool = False) -> tuple[bytes, I64]:
    """`_canonical_of_joined` of ASCII text without masks: its letters and newlines, and the ends.

    ``bytes.translate`` with deletions branches on every byte and mispredicts at spaces; a letter
    mask and ``np.compress`` (branch-free index, then a gather) do the same in ~80% of the time.
    `fold` adds one ``bytes.replace`` per ASCII rule of the skeleton table (`_fold_ascii`).
    """
    a = np.frombuffer(ascii_bytes, dtype=np.uint8)
    low = a | np.uint8(0x20)  # upper case to lower; no other ASCII byte lands in a..z
    low -= np.uint8(ord("a"))
    keep = low < 26
    keep |= a == 10
    data = np.compress(keep, a)
    if fold:
        return _fold_ascii(data.tobytes())
    return data.tobytes(), np.append(np.flatnonzero(data == 10), len(data))


def canonical_batch(texts: Sequence[str], fold: bool = False) -> list[bytes]:
    """UTF-8 canonical texts, one per input text (see `canonical_joined`)."""
    return canonical_joined(texts, fold)[0].split(b"\n") if texts else []


# --------------------------------------------------------------------------- confusables (v3)
#
# Scheme v3 reads text as a person sees it. A lab masking copied outputs swaps Latin letters for
# Cyrillic or Greek look-alikes and slips zero-width characters into words; both leave the text
# readable and change every shingle they touch. So, before letters are kept:
#
# 1. default-ignorable code points go (Unicode's Default_Ignorable_Code_Point property, read from
#    the `regex` package): zero-width spaces and joiners, word joiner, BOM, soft hyphen, invisible
#    operators, variation selectors, tag characters, Hangul fillers, ...;
# 2. each letter becomes the letters of its TR39 skeleton (UTS #39: NFD, then every code point
#    to its prototype in Unicode's confusables.txt), casefolded, marks dropped. The table comes
#    from the `confusable-homoglyphs` package, which ships confusables.txt as JSON.
#
# Text reaches the fingerprint normalized (NFKC, casefolded), so a Cyrillic capital Н arrives
# as н: a lowercase letter without a prototype of its own takes its capital's (н has one: ʜ; it
# keeps it). Only non-ASCII letters take a capital's: Latin i stays i although I looks like l.
# ASCII text folds by the table's ASCII part alone (m -> rn), so plain text stays on its fast path.

_LETTER = re.compile(r"[^\W\d_]")


def _strip_ignorable(text: str) -> str:
    """`text` without default-ignorable code points."""
    out: str = _ignorable_pattern().sub("", text)
    return out


@functools.cache
def _ignorable_pattern() -> Any:
    import regex  # type: ignore[import-untyped]  # Unicode properties `re` lacks

    return regex.compile(r"\p{Default_Ignorable_Code_Point}+")


@functools.cache
def _confusable_prototypes() -> dict[str, str]:
    """Every source code point of confusables.txt and its prototype (a string of code points).

    The package stores each line ``source ; prototype`` as a link both ways, in file order. A
    prototype is never a source, so a code point linked to a sequence, or to a code point with
    other links, is the source; for a pair linked to nothing else the line's first code point is
    (and either way the two fold together).
    """
    import importlib.resources
    import json

    raw = importlib.resources.files("confusable_homoglyphs").joinpath("confusables.json")
    data = json.loads(raw.read_text(encoding="utf-8"))
    marks = dict.fromkeys(map(ord, "\u200e\u200f"))  # direction marks around RTL text in the file
    links: dict[str, set[str]] = {}
    first: dict[str, int] = {}
    for key, others in data.items():
        k = key.translate(marks)
        first.setdefault(k, len(first))
        links.setdefault(k, set()).update(str(o["c"]).translate(marks) for o in others)
    out: dict[str, str] = {}
    for k, others in links.items():
        if len(k) != 1 or len(others) != 1:
            continue
        (t,) = others
        if len(t) != 1 or len(links.get(t, ())) > 1 or first[k] < first.get(t, len(first)):
            out[k] = t
    return out


def _letters(s: str) -> str:
    return "".join(_LETTER.findall(unicodedata.normalize("NFD", s).casefold()))


@functools.cache
def skeleton_table() -> dict[int, str]:
    """``str.translate`` table: letter -> casefolded letters of its skeleton (only those it changes).

    Keys are single code points in NFD (text is decomposed before the table applies); values are
    fixed points (no value holds a key), so applying the table twice changes nothing.
    """
    protos = _confusable_prototypes()
    table: dict[str, str] = {}
    for src, proto in protos.items():
        if _LETTER.fullmatch(src) and src == src.casefold():
            table[src] = _letters(proto)
    for src, proto in protos.items():  # capitals, for lowercase letters without a prototype
        key = src.casefold()
        if _LETTER.fullmatch(src) and key != src and len(key) == 1 and not key.isascii():
            table.setdefault(key, _letters(proto))
    table = {k: v for k, v in table.items() if unicodedata.normalize("NFD", k) == k}
    for _ in range(4):  # a casefolded prototype can itself be a source: follow to a fixed point
        table = {k: v for k, v in table.items() if v != k}
        table = {k: "".join(table.get(c, c) for c in v) for k, v in table.items()}
    table = {k: v for k, v in table.items() if v != k}
    if any(c in table for v in table.values() for c in v):  # pragma: no cover - data check
        raise AssertionError("confusables: skeleton table is not a fixed point")
    return {ord(k): v for k, v in table.items()}


@functools.cache
def _ascii_folds() -> tuple[tuple[bytes, bytes], ...]:
    """The table's entries for ASCII letters, as byte replacements (m -> rn today)."""
    return tuple(
        (chr(k).encode("ascii"), v.encode("utf-8"))
        for k, v in sorted(skeleton_table().items())
        if k < 128
    )


def _fold_letters(text: str) -> str:
    """Letters of a non-ASCII text replaced by their skeletons (marks stay for the filter)."""
    return unicodedata.normalize("NFD", text).translate(skeleton_table())


def _fold_ascii(data: bytes) -> tuple[bytes, I64]:
    """Canonical bytes with ASCII letters folded, and the end offset of each text."""
    for old, new in _ascii_folds():
        if old in data:
            data = data.replace(old, new)
    return data, np.append(np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10), len(data))
