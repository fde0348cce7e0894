"""Labelled evaluation set for near-duplicate matching, built from real English text on this machine.

Sources are texts every Python or Debian install already carries: the docstrings of the standard
library (read with ``ast``, so nothing is imported or executed), ``/usr/share/common-licenses/*`` and
``/usr/share/doc/*/copyright``. Paragraphs become model "outputs"; each output gets edited variants
(masked, re-spaced, re-cased, re-punctuated, truncated, split, embedded) and other paragraphs, some
from the same source file ("near-topic"), serve as distractors. Everything is seeded and sorted, so
the same machine always yields the same set.
"""

from __future__ import annotations

import ast
import glob
import gzip
import itertools
import os
import random
import re
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ledger.spec.text import normalize

MIN_CHARS = 200
MAX_CHARS = 1500


@dataclass(frozen=True)
class Paragraph:
    """One raw paragraph of real text and the file it came from."""

    source: str
    text: str


@dataclass(frozen=True)
class Record:
    """A haystack record: its texts (normalized), the output it derives from (or None) and how."""

    key: str
    texts: tuple[str, ...]
    output: int | None
    edit: str


@dataclass(frozen=True)
class EvalSet:
    """Needles (normalized outputs), haystack records with labels, and the paragraphs behind them."""

    outputs: tuple[str, ...]
    output_sources: tuple[str, ...]
    records: tuple[Record, ...]
    notes: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- sources


def _docstring_paragraphs(doc: str) -> Iterator[str]:
    """Prose paragraphs of a docstring; code examples, field lists and directives are skipped."""
    for block in re.split(r"\n\s*\n", doc):
        lines = block.strip("\n").split("\n")
        if any(ln.lstrip().startswith((">>>", "...", "..", ":", "$ ", "- ", "* ")) for ln in lines):
            continue
        if any(ln.startswith("    ") for ln in lines[1:]) or block.rstrip().endswith("::"):
            continue
        yield " ".join(ln.strip() for ln in lines)


def stdlib_paragraphs(max_files: int | None = None) -> Iterator[Paragraph]:
    """Docstring paragraphs of the standard library's modules, classes and functions."""
    root = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True))
    files = [
        f for f in files if not re.search(r"(/test/|/tests/|site-packages|/idlelib/|/lib2to3/)", f)
    ]
    for path in files[:max_files] if max_files is not None else files:
        try:
            with open(path, encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        source = os.path.relpath(path, root)
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    for para in _docstring_paragraphs(doc):
                        yield Paragraph(source, para)


def _license_blocks(text: str) -> Iterator[str]:
    """Paragraphs of a plain license text or a Debian machine-readable copyright file."""
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if re.match(r"^[A-Za-z-]+:", line) or line.strip() in ("", "."):
            if lines:
                yield " ".join(lines)
            lines = []
            continue
        lines.append(line.strip())
    if lines:
        yield " ".join(lines)


def license_paragraphs() -> Iterator[Paragraph]:
    """Paragraphs of the license texts and package copyright files Debian installs."""
    paths = sorted(glob.glob("/usr/share/common-licenses/*"))
    paths += sorted(glob.glob("/usr/share/doc/*/copyright"))
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (UnicodeDecodeError, OSError):
            continue
        for para in _license_blocks(text):
            yield Paragraph(path, para)


def pydoc_topic_paragraphs() -> Iterator[Paragraph]:
    """Paragraphs of the language reference that ships inside the stdlib (``pydoc_data.topics``)."""
    path = os.path.join(sysconfig.get_paths()["stdlib"], "pydoc_data", "topics.py")
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError):
        return
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            topics = ast.literal_eval(node.value)
            for name in sorted(topics):
                for block in re.split(r"\n\s*\n", topics[name]):
                    lines = block.strip("\n").split("\n")
                    if any(ln.startswith(" ") or re.fullmatch(r"[*=~-]+", ln) for ln in lines):
                        continue
                    yield Paragraph(f"pydoc_data/topics:{name}", " ".join(lines))


_TROFF_INLINE = re.compile(r"\\f(\[[^]]*\]|\(..|.)|\\s[-+]?\d|\\\*(\(..|\[[^]]*\]|.)|\\[&|^%]")
_TROFF_CHARS = {
    r"\-": "-",
    r"\(em": "--",
    r"\(en": "-",
    r"\(aq": "'",
    r"\(dq": '"',
    r"\(lq": '"',
    r"\(rq": '"',
    r"\e": "\\",
    r"\ ": " ",
    r"\(bu": "*",
}


def _troff_text(line: str) -> str:
    """Strip the common inline troff escapes from one line of a man page."""
    for k, v in _TROFF_CHARS.items():
        line = line.replace(k, v)
    return _TROFF_INLINE.sub("", line)


def man_paragraphs(max_files: int | None = 4000) -> Iterator[Paragraph]:
    """Prose paragraphs of English man pages (sections 1, 5, 7, 8), read from their troff source."""
    paths: list[str] = []
    for sec in ("7", "5", "8", "1"):
        paths += sorted(glob.glob(f"/usr/share/man/man{sec}/*.gz"))
    for path in paths[:max_files] if max_files is not None else paths:
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError, EOFError):
            continue
        lines: list[str] = []
        for raw in text.splitlines():
            if raw.startswith((".", "'")):
                m = re.match(r"^\.(B|I|BR|IR|RB|RI|BI|IB|SM)\s+(.*)$", raw)
                if m:
                    lines.append(_troff_text(m.group(2).replace('"', "")))
                    continue
                if lines:
                    yield Paragraph(path, " ".join(lines))
                lines = []
            elif raw.strip():
                lines.append(_troff_text(raw.strip()))
            elif lines:
                yield Paragraph(path, " ".join(lines))
                lines = []
        if lines:
            yield Paragraph(path, " ".join(lines))


_NOT_PROSE = re.compile(r"[^\w\s]|[\d_]")


def _is_prose(text: str) -> bool:
    """Running English text: mostly letters and spaces, several words."""
    if len(text) < 60 or len(text.split()) < 10:
        return False
    return len(_NOT_PROSE.findall(text)) <= 0.15 * len(text)


def _sentences(text: str, limit: int) -> Iterator[str]:
    """Cut an over-long paragraph at sentence ends into pieces of at most `limit` characters."""
    piece = ""
    for sent in re.split(r"(?<=[.!?])\s+", text):
        if piece and len(piece) + 1 + len(sent) > limit:
            yield piece
            piece = ""
        piece = f"{piece} {sent}" if piece else sent
    if piece:
        yield piece


def passages(paragraphs: Iterable[Paragraph], rng: random.Random) -> Iterator[Paragraph]:
    """Group consecutive prose paragraphs of one source into passages of 200-1500 characters.

    Model outputs are often several paragraphs long, so a passage joins neighbours with a blank
    line until it reaches a length drawn uniformly from [MIN_CHARS, MAX_CHARS].
    """
    source = ""
    parts: list[str] = []
    target = 0

    def flush() -> Iterator[Paragraph]:
        text = "\n\n".join(parts)
        if MIN_CHARS <= len(text) <= MAX_CHARS and len(text.split()) >= 30:
            yield Paragraph(source, text)

    for para in paragraphs:
        if para.source != source or not _is_prose(para.text):
            yield from flush()
            parts, source, target = [], para.source, rng.randint(MIN_CHARS, MAX_CHARS)
            if not _is_prose(para.text):
                continue
        for piece in _sentences(para.text, MAX_CHARS):
            if parts and sum(len(p) + 2 for p in parts) + len(piece) > target:
                yield from flush()
                parts, target = [], rng.randint(MIN_CHARS, MAX_CHARS)
            parts.append(piece)
    yield from flush()


def _word_grams(text: str, n: int = 4) -> set[str]:
    """Word n-grams of the normalized, punctuation-free text (an independent labelling measure)."""
    words = re.sub(r"[^\w\s]", " ", normalize(text)).split()
    return {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def true_overlap(a: str, b: str, n: int = 4) -> float:
    """Exact overlap coefficient of word n-gram sets: the ground truth used to label pairs."""
    ga, gb = _word_grams(a, n), _word_grams(b, n)
    return len(ga & gb) / max(1, min(len(ga), len(gb)))


def load_paragraphs(
    max_stdlib_files: int | None = None,
    max_man_files: int | None = 4000,
    licenses: bool = True,
    max_overlap: float = 0.2,
    seed: int = 7,
) -> list[Paragraph]:
    """Distinct prose passages; two kept passages never share more than `max_overlap` of word 4-grams.

    The strict de-duplication matters: license boilerplate is copied across many files, and a
    distractor that really contains an output's text would be a true match, not a false positive.
    """
    rng = random.Random(seed)
    sources: list[Iterable[Paragraph]] = [stdlib_paragraphs(max_stdlib_files)]
    if max_stdlib_files is None:
        sources.append(pydoc_topic_paragraphs())
    if max_man_files:
        sources.append(man_paragraphs(max_man_files))
    if licenses:
        sources.append(license_paragraphs())
    kept: list[Paragraph] = []
    kept_grams: list[set[str]] = []
    index: dict[str, list[int]] = {}
    for para in passages(itertools.chain(*sources), rng):
        grams = _word_grams(para.text)
        hits = Counter(itertools.chain.from_iterable(index.get(g, ()) for g in grams))
        if any(
            c / max(1, min(len(grams), len(kept_grams[j]))) > max_overlap for j, c in hits.items()
        ):
            continue
        for g in grams:
            index.setdefault(g, []).append(len(kept))
        kept.append(para)
        kept_grams.append(grams)
    return kept


# --------------------------------------------------------------------------- edits

PLACEHOLDERS = ("[MASK]", "***", "<NAME>", "[REDACTED]", "XXXX", "<PERSON>", "[NAME]", "####")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")


def _mask_core(token: str, rng: random.Random) -> str:
    """Replace a token's alphanumeric core by a placeholder, keeping surrounding punctuation."""
    m = re.match(r"^(\W*)(.*?)(\W*)$", token)
    assert m is not None
    head, core, tail = m.groups()
    if not core:
        return token
    if any(c.isdigit() for c in core) and rng.random() < 0.5:
        return head + re.sub(r"\d", lambda _: str(rng.randrange(10)), core) + tail
    return head + rng.choice(PLACEHOLDERS) + tail


def mask(text: str, fraction: float, rng: random.Random) -> str:
    """Desensitize: e-mails masked, digits changed, and `fraction` of the other tokens replaced."""
    text = EMAIL.sub(lambda _: rng.choice(("[EMAIL]", "***@***.com", "<EMAIL>")), text)
    text = re.sub(r"\d", lambda _: str(rng.randrange(10)), text)
    tokens = text.split()
    for i in rng.sample(range(len(tokens)), round(fraction * len(tokens))):
        tokens[i] = _mask_core(tokens[i], rng)
    return " ".join(tokens)


def respace(text: str, rng: random.Random) -> str:
    """Re-wrap and re-space: line breaks, doubled spaces, spaces before and after punctuation."""
    out: list[str] = []
    for tok in text.split():
        if rng.random() < 0.15 and len(tok) > 1 and tok[-1] in ",.;:!?":
            tok = tok[:-1] + " " + tok[-1]
        out.append(tok)
        out.append(rng.choice(("  ", "\n", " \t ", "\n\n")) if rng.random() < 0.2 else " ")
    return "".join(out)


def recase(text: str, rng: random.Random) -> str:
    """Change letter case per sentence: upper, lower, title or random."""
    parts = re.split(r"(?<=[.!?])\s+", text)
    styles: list[Callable[[str], str]] = [
        str.upper,
        str.lower,
        str.title,
        lambda s: "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in s),
    ]
    return " ".join(rng.choice(styles)(p) for p in parts)


def repunct(text: str, rng: random.Random) -> str:
    """Change punctuation: drop or swap marks, quotes and dashes, add stray commas."""
    swaps = {
        ",": ("", ";", " -"),
        ".": (";", "!", "", " ..."),
        ";": (",", "."),
        ":": (" -", ","),
        '"': ("'", "“", ""),
        "'": ("’", ""),
        "(": ("", "[", ", "),
        ")": ("", "]", ","),
        "-": (" ", "", "—"),
    }
    out: list[str] = []
    for c in text:
        if c in swaps and rng.random() < 0.6:
            out.append(rng.choice(swaps[c]))
        elif c == " " and rng.random() < 0.04:
            out.append(", ")
        else:
            out.append(c)
    return "".join(out)


# What a lab hiding its tracks would do to text that must still read the same: an attacker's list
# (independent of the Unicode data the fingerprint folds with), lower and upper case.
HOMOGLYPHS = {
    "a": "\u0430\u03b1", "c": "\u0441\u03f2", "d": "\u0501", "e": "\u0435", "h": "\u04bb",
    "i": "\u0456\u03b9", "j": "\u0458", "o": "\u043e\u03bf", "p": "\u0440\u03c1", "q": "\u051b",
    "s": "\u0455", "u": "\u03c5", "v": "\u03bd", "w": "\u051d", "x": "\u0445", "y": "\u0443",
    "A": "\u0410\u0391", "B": "\u0412\u0392", "C": "\u0421", "E": "\u0415\u0395", "H": "\u041d\u0397",
    "I": "\u0406\u0399", "J": "\u0408", "K": "\u041a\u039a", "M": "\u041c\u039c", "N": "\u039d",
    "O": "\u041e\u039f", "P": "\u0420\u03a1", "S": "\u0405", "T": "\u0422\u03a4", "X": "\u0425\u03a7",
    "Y": "\u0423\u03a5", "Z": "\u0396",
}  # fmt: skip
# Zero-width and other invisible characters: format controls, a soft hyphen, a combining grapheme
# joiner, Hangul fillers (letters to a regular expression), a tag character.
INVISIBLE = (
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u2061", "\u2063", "\u180e",
    "\u034f", "\u3164", "\u115f", "\U000e0020",
)  # fmt: skip
FILLERS = (
    "really", "actually", "basically", "just", "quite", "very", "indeed", "simply", "literally",
    "certainly", "truly", "so", "well", "now", "also", "clearly", "perhaps", "essentially",
)  # fmt: skip


def _some_words(text: str, fraction: float, rng: random.Random) -> tuple[list[str], list[int]]:
    """The words of `text` and a random `fraction` of their positions, in order."""
    words = text.split(" ")
    return words, sorted(rng.sample(range(len(words)), round(fraction * len(words))))


def homoglyph(text: str, rng: random.Random, fraction: float = 0.5) -> str:
    """In `fraction` of the words, swap Latin letters for Cyrillic or Greek look-alikes.

    Each letter that has a look-alike is swapped with probability 1/2, at least one per word.
    """
    words, picked = _some_words(text, fraction, rng)
    for i in picked:
        chars = list(words[i])
        can = [j for j, c in enumerate(chars) if c in HOMOGLYPHS]
        if not can:
            continue
        swap = [j for j in can if rng.random() < 0.5] or [rng.choice(can)]
        for j in swap:
            chars[j] = rng.choice(HOMOGLYPHS[chars[j]])
        words[i] = "".join(chars)
    return " ".join(words)


def invisible(text: str, rng: random.Random, fraction: float = 0.5) -> str:
    """Put one or two invisible characters inside `fraction` of the words (between letters)."""
    words, picked = _some_words(text, fraction, rng)
    for i in picked:
        w = words[i]
        if len(w) < 2:
            continue
        for _ in range(rng.choice((1, 2))):
            at = rng.randrange(1, len(w))
            w = w[:at] + rng.choice(INVISIBLE) + w[at:]
        words[i] = w
    return " ".join(words)


def filler(text: str, rng: random.Random, every: int = 4) -> str:
    """Insert a filler word after every `every`-th word."""
    out: list[str] = []
    for i, w in enumerate(text.split(" ")):
        out.append(w)
        if i % every == every - 1:
            out.append(rng.choice(FILLERS))
    return " ".join(out)


def truncate_half(text: str) -> str:
    """Keep the first half of the words."""
    words = text.split()
    return " ".join(words[: max(1, len(words) // 2)])


def split_parts(text: str, rng: random.Random) -> list[str]:
    """Cut the text into 2 or 3 parts at word boundaries."""
    words = text.split()
    k = rng.choice((2, 3))
    cuts = sorted(rng.sample(range(len(words) // 6, len(words) - len(words) // 6), k - 1))
    bounds = [0, *cuts, len(words)]
    return [" ".join(words[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


def _filler(pool: Sequence[Paragraph], chars: int, rng: random.Random) -> list[str]:
    """Unrelated paragraphs adding up to about `chars` characters."""
    out: list[str] = []
    total = 0
    while total < chars:
        p = pool[rng.randrange(len(pool))].text
        out.append(p)
        total += len(p) + 1
    return out


def embed(text: str, pool: Sequence[Paragraph], rng: random.Random) -> str:
    """Put the text inside a record 3-5x its length, at a random paragraph boundary."""
    others = _filler(pool, int(len(text) * rng.uniform(2.0, 4.0)), rng)
    others.insert(rng.randrange(len(others) + 1), text)
    return "\n\n".join(others)


# --------------------------------------------------------------------------- the set

EDITS = (
    "exact",
    "mask10",
    "mask20",
    "respace",
    "recase",
    "repunct",
    "reformat",
    "truncate-half",
    "embedded",
    "embedded-mask10",
    "split-texts",
    "split-part",
    "homoglyph",
    "invisible",
    "homoglyph-invisible",
    "filler",
)


def make_eval_set(
    paragraphs: Sequence[Paragraph], n_outputs: int, n_distractors: int, seed: int = 7
) -> EvalSet:
    """Pick outputs, build one record per (output, edit) and distractor records.

    Half of the distractors are paragraphs from the same source files as outputs (near-topic);
    the rest are random other paragraphs, single or concatenated into long records. Filler text in
    embedded records comes only from non-output paragraphs.
    """
    rng = random.Random(seed)
    by_source: dict[str, list[int]] = {}
    for i, p in enumerate(paragraphs):
        by_source.setdefault(p.source, []).append(i)
    multi = [i for s in sorted(by_source) if len(by_source[s]) >= 3 for i in by_source[s]]
    out_idx = sorted(rng.sample(multi, min(n_outputs, len(multi) // 3)))
    out_set = set(out_idx)
    out_sources = {paragraphs[i].source for i in out_idx}
    rest = [i for i in range(len(paragraphs)) if i not in out_set]
    near_topic = [i for i in rest if paragraphs[i].source in out_sources]
    filler_pool = [paragraphs[i] for i in rest]
    records: list[Record] = []
    for o, pi in enumerate(out_idx):
        raw = paragraphs[pi].text
        variants: dict[str, list[str]] = {
            "exact": [raw],
            "mask10": [mask(raw, 0.10, rng)],
            "mask20": [mask(raw, 0.20, rng)],
            "respace": [respace(raw, rng)],
            "recase": [recase(raw, rng)],
            "repunct": [repunct(raw, rng)],
            "reformat": [repunct(recase(respace(raw, rng), rng), rng)],
            "truncate-half": [truncate_half(raw)],
            "embedded": [embed(raw, filler_pool, rng)],
            "embedded-mask10": [embed(mask(raw, 0.10, rng), filler_pool, rng)],
        }
        # Drawn from a generator of their own, so adding them leaves every other record as it was.
        adv = random.Random(f"{seed}/adversarial/{o}")
        variants["homoglyph"] = [homoglyph(raw, adv)]
        variants["invisible"] = [invisible(raw, adv)]
        variants["homoglyph-invisible"] = [invisible(homoglyph(raw, adv), adv)]
        variants["filler"] = [filler(raw, adv)]
        parts = split_parts(raw, rng)
        texts: list[str] = []
        for part in parts:
            texts += _filler(filler_pool, 1, rng)[:1]
            texts.append(part)
        variants["split-texts"] = texts
        for edit, vt in variants.items():
            records.append(Record(f"o{o}/{edit}", tuple(normalize(t) for t in vt), o, edit))
        for j, part in enumerate(parts):
            records.append(Record(f"o{o}/split-part/{j}", (normalize(part),), o, "split-part"))
    n_near = min(len(near_topic), n_distractors // 2)
    for j, pi in enumerate(sorted(rng.sample(near_topic, n_near))):
        records.append(
            Record(f"d{j}/near-topic", (normalize(paragraphs[pi].text),), None, "near-topic")
        )
    for j in range(n_distractors - n_near):
        if j % 2:
            texts = [paragraphs[rest[rng.randrange(len(rest))]].text]
            edit = "random"
        else:
            texts = ["\n\n".join(_filler(filler_pool, rng.randrange(600, 6000), rng))]
            edit = "random-long"
        records.append(
            Record(f"d{n_near + j}/{edit}", tuple(normalize(t) for t in texts), None, edit)
        )
    return EvalSet(
        outputs=tuple(normalize(paragraphs[i].text) for i in out_idx),
        output_sources=tuple(paragraphs[i].source for i in out_idx),
        records=tuple(records),
        notes={"paragraphs": len(paragraphs), "near_topic_pool": len(near_topic)},
    )
