"""Canonical JSON, text normalization, segments and digests (DESIGN.md "Hashing (fixed)").

Everything here is pure and deterministic: the same record always yields the same bytes, on any
machine, because outside verifiers recompute these values. ``hash_record`` and its bulk forms are
on the recording hot path, so they make a single walk over a record and use orjson wherever its
output is proven identical to RFC 8785 (JCS); see ``_scan`` and ``_walk`` for the conditions.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from binascii import hexlify
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, islice, pairwise
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt
import orjson

from ledger.errors import InputError

__all__ = [
    "MIN_SEGMENT_CHARS",
    "HashInputError",
    "RecordHash",
    "RecordHashColumns",
    "call_outputs",
    "canonical_json",
    "format_number",
    "hash_record",
    "hash_record_columns",
    "hash_records",
    "normalize",
    "parse_json_line",
    "parse_json_lines",
    "record_digest",
    "record_leaf",
    "record_segments",
    "record_texts",
    "request_response_digest",
    "response_texts",
    "segment_hash",
    "sha256",
    "sha256_hex",
    "stream_texts",
    "text_segments",
]

MIN_SEGMENT_CHARS: Final = 32
"""Default minimum length, in code points of the normalized text, of a segment."""


class HashInputError(InputError, ValueError):
    """A value with no canonical form: NaN/infinity, a lone surrogate, or a non-JSON type."""


_sha256 = hashlib.sha256
_isfinite = math.isfinite
_orjson_dumps = orjson.dumps
_Fragment = orjson.Fragment
_SORT_KEYS: Final = orjson.OPT_SORT_KEYS

# orjson writes every int in this range as exact decimal digits; outside it, it raises.
_ORJSON_INT_MIN: Final = -(2**63)
_ORJSON_INT_MAX: Final = 2**64 - 1

# Object keys containing a code point >= U+E000 may sort differently by UTF-16 code units (JCS)
# than by code points (orjson); keys below it sort identically under both orders.
_UTF16_SAFE_LIMIT: Final = "\ue000"

_NONFINITE_MESSAGE: Final = "NaN/Infinity is not allowed in canonical JSON"


def sha256(data: bytes) -> bytes:
    """The raw 32-byte SHA-256 digest; the one digest algorithm of the ledger."""
    return _sha256(data).digest()


def sha256_hex(data: bytes) -> str:
    """SHA-256 as 64 lowercase hex characters, the written form of every digest."""
    return _sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Canonical JSON (RFC 8785 with the big-integer extension)
# ---------------------------------------------------------------------------------------------


def format_number(value: float) -> str:
    """ECMAScript Number::toString of a double, as RFC 8785 §3.2.2.3 requires.

    Python's ``repr`` already yields the shortest round-tripping digits (the same digits ES6
    chooses); only their layout differs, so this re-lays them out by ES6's rules.
    """
    if not _isfinite(value):
        raise HashInputError(f"{_NONFINITE_MESSAGE}: found {value!r}")
    if value == 0.0:
        return "0"  # both +0 and -0
    text = repr(value)
    if "e" not in text:
        # Python uses fixed notation for 1e-4 <= |x| < 1e16, inside ES6's fixed range, and
        # then lays the digits out exactly as ES6 does except for a trailing ".0".
        return text.removesuffix(".0")
    mantissa, _, exponent = text.partition("e")
    sign = ""
    if mantissa[0] == "-":
        sign, mantissa = "-", mantissa[1:]
    digits = mantissa.replace(".", "")
    k = len(digits)
    n = int(exponent) + 1  # value = 0.DIGITS x 10**n, ES6's (k, n)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    exp_text = ("e+" if e > 0 else "e-") + str(abs(e))
    if k == 1:
        return sign + digits + exp_text
    return sign + digits[0] + "." + digits[1:] + exp_text


# What _scan proves about a value, from cheapest to dearest way of writing its JCS.
_AS_IS: Final = 0  # orjson with OPT_SORT_KEYS writes exactly JCS
_FLOATS: Final = 1  # the same once each float is replaced by its ES6 text (an orjson Fragment)
_GENERAL: Final = 2  # only the general slow path is known to be right


def _scan(value: object, out: list[str]) -> int:
    """Append every string value in ``value`` to ``out``; return how its JCS may be written.

    orjson's ``OPT_SORT_KEYS`` output equals JCS when every node is exactly a dict, list, tuple,
    str, int, bool or None (orjson's float layout is not ES6's, so floats need replacing), and
    no object key has a code point >= U+E000 (where UTF-16 order departs from code point
    order). Ints outside 64 bits and lone surrogates make orjson raise, which callers treat as
    "not proven" and answer with the general path.
    """
    t = type(value)
    level = _AS_IS
    if t is dict:
        for k, v in value.items():  # type: ignore[attr-defined]
            if type(k) is not str or (not k.isascii() and max(k) >= _UTF16_SAFE_LIMIT):
                level = _GENERAL
            tv = type(v)
            if tv is str:
                out.append(v)
            elif tv is int or tv is bool or v is None:
                continue
            else:
                sub = _scan(v, out)
                level = max(level, sub)
        return level
    if t is list or t is tuple:
        for v in value:  # type: ignore[attr-defined]
            tv = type(v)
            if tv is str:
                out.append(v)
            elif tv is int or tv is bool or v is None:
                continue
            else:
                sub = _scan(v, out)
                level = max(level, sub)
        return level
    if t is str:
        out.append(value)  # type: ignore[arg-type]
        return _AS_IS
    if t is int or t is bool or value is None:
        return _AS_IS
    if t is float:
        return _FLOATS
    _collect_strings(value, out)  # subclasses and foreign types: the general path judges them
    return _GENERAL


def _float_fragments(value: object) -> object:
    """``value`` with each float replaced by its ES6 text; float-free parts are shared, not
    copied. Only for values that ``_scan`` rated ``_FLOATS``."""
    t = type(value)
    if t is float:
        return _Fragment(format_number(value))  # type: ignore[arg-type]
    if t is dict:
        copy: dict[str, object] | None = None
        for k, v in value.items():  # type: ignore[attr-defined]
            tv = type(v)
            if tv is str or tv is int or tv is bool or v is None:
                continue
            new = _float_fragments(v)
            if new is not v:
                if copy is None:
                    copy = dict(value)  # type: ignore[call-overload]
                copy[k] = new
        return value if copy is None else copy
    if t is list or t is tuple:
        items: list[object] | None = None
        sequence = cast("Sequence[object]", value)
        for i, v in enumerate(sequence):
            tv = type(v)
            if tv is str or tv is int or tv is bool or v is None:
                continue
            new = _float_fragments(v)
            if new is not v:
                if items is None:
                    items = list(sequence)
                items[i] = new
        return value if items is None else items
    return value


def _scan_fragments(value: object, out: list[str]) -> tuple[int, object]:
    """``_scan`` and ``_float_fragments`` in one walk: the level, and the value to give orjson
    when the level is ``_FLOATS`` (each finite float as its ES6 text; float-free parts shared).

    A non-finite float rates ``_GENERAL``, whose path reports it. Used by ``hash_record``, where
    a second walk over every record with a float (a score, a probability) cost about as much as
    the first.
    """
    t = type(value)
    if t is dict:
        level = _AS_IS
        copy: dict[str, object] | None = None
        for k, v in value.items():  # type: ignore[attr-defined]
            if type(k) is not str or (not k.isascii() and max(k) >= _UTF16_SAFE_LIMIT):
                level = _GENERAL
            tv = type(v)
            if tv is str:
                out.append(v)
                continue
            if tv is int or tv is bool or v is None:
                continue
            if tv is float:
                if not _isfinite(v):
                    level = _GENERAL
                    continue
                sub, new = _FLOATS, cast(object, _Fragment(format_number(v)))
            else:
                sub, new = _scan_fragments(v, out)
            level = max(level, sub)
            if new is not v:
                if copy is None:
                    copy = dict(value)  # type: ignore[call-overload]
                copy[k] = new
        return level, (value if copy is None else copy)
    if t is list or t is tuple:
        level = _AS_IS
        items: list[object] | None = None
        sequence = cast("Sequence[Any]", value)
        for i, v in enumerate(sequence):
            tv = type(v)
            if tv is str:
                out.append(v)
                continue
            if tv is int or tv is bool or v is None:
                continue
            if tv is float:
                if not _isfinite(v):
                    level = _GENERAL
                    continue
                sub, new = _FLOATS, cast(object, _Fragment(format_number(v)))
            else:
                sub, new = _scan_fragments(v, out)
            level = max(level, sub)
            if new is not v:
                if items is None:
                    items = list(sequence)
                items[i] = new
        return level, (value if items is None else items)
    if t is float:
        if not _isfinite(value):  # type: ignore[arg-type]
            return _GENERAL, value
        return _FLOATS, _Fragment(format_number(value))  # type: ignore[arg-type]
    return _scan(value, out), value


def _jcs_scanned(value: object, out: list[str]) -> bytes:
    """JCS of ``value`` in one walk that also appends its strings to ``out`` (``_jcs(value,
    _scan(value, out))`` with floats replaced on the way)."""
    level, fragments = _scan_fragments(value, out)
    if level != _GENERAL:
        try:
            return _orjson_dumps(fragments, option=_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass  # int beyond 64 bits, lone surrogate, deep nesting: the general path decides
    return _canonical_json_slow(value)


# What _walk finds, as bit flags: floats whose orjson text is not ES6's, and anything that only
# the general path may judge.
_NEEDS_FRAGMENTS: Final = 1
_NEEDS_GENERAL: Final = 2
# A float of magnitude >= 2**63 (always with _NEEDS_FRAGMENTS): what orjson's parser makes of an
# integer token beyond 64 bits, so the record may need parsing exactly (``parse_json_lines``).
_BIG_FLOAT: Final = 4
_BIG_FLOAT_MIN: Final = 2.0**63
# The bytes below 0xEE. UTF-8 output left empty by deleting them holds no code point >= U+E000
# (lead bytes 0xEE-0xF4), so no key in it sorts differently by UTF-16 code units than by code
# points. (One translate is ~6x faster than a regex search for the high bytes.)
_BELOW_E000_BYTES: Final = bytes(range(0xEE))


def _walk(value: object, out: list[str]) -> int:
    """Append every string value in the container ``value`` to ``out`` in document order;
    return the flags of what orjson's ``OPT_SORT_KEYS`` output of it cannot be trusted with.

    Cheaper than ``_scan`` because it leaves to orjson what orjson rejects by itself (non-str
    keys, str subclass keys, ints beyond 64 bits, lone surrogates) and to ``_keys_sortable`` the
    rare output with a code point >= U+E000. A float passes when ``_plain_float`` holds, and
    is flagged ``_BIG_FLOAT`` as well when it may stand for a big integer.
    """
    t = type(value)
    if t is dict:
        items: Iterable[object] = value.values()  # type: ignore[attr-defined]
    elif t is list or t is tuple:
        items = value  # type: ignore[assignment]
    else:
        return _NEEDS_GENERAL
    flags = 0
    for v in items:
        tv = type(v)
        if tv is str:
            out.append(v)  # type: ignore[arg-type]
        elif tv is dict or tv is list or tv is tuple:
            flags |= _walk(v, out)
        elif tv is int or tv is bool or v is None:
            continue
        elif tv is float:
            if not _plain_float(v):  # type: ignore[arg-type]
                # A plain float is below 1e16, so only these need the magnitude test.
                big = not abs(v) < _BIG_FLOAT_MIN  # type: ignore[arg-type]
                flags |= (_NEEDS_FRAGMENTS | _BIG_FLOAT) if big else _NEEDS_FRAGMENTS
        else:
            flags |= _NEEDS_GENERAL
    return flags


def _plain_float(value: float) -> bool:
    """True when orjson writes ``value`` exactly as ES6 does: Python's ``repr`` uses fixed
    notation exactly for 1e-4 <= |x| < 1e16, then ES6's text is ``repr`` unless it ends in
    ".0" (an integral value), and orjson's shortest-digit text equals ``repr`` there (tested)."""
    return bool(value % 1.0) and 1e-4 <= abs(value) < 1e16


def _keys_sortable(value: object) -> bool:
    """True when no object key in ``value`` has a code point >= U+E000 (see ``_UTF16_SAFE_LIMIT``)."""
    t = type(value)
    if t is dict:
        for k, v in value.items():  # type: ignore[attr-defined]
            if not k.isascii() and max(k) >= _UTF16_SAFE_LIMIT:
                return False
            if not _keys_sortable(v):
                return False
        return True
    if t is list or t is tuple:
        return all(_keys_sortable(v) for v in value)  # type: ignore[attr-defined]
    return True


def _record_jcs(value: object, out: list[str]) -> bytes:
    """JCS of ``value``, appending its string values to ``out``: orjson's sorted output (with
    floats replaced where needed) when ``_walk`` finds nothing else it cannot be trusted with,
    else ``_jcs_scanned`` (which raises for a value with no canonical form)."""
    start = len(out)
    return _walked_jcs(value, out, start, _walk_flags(value, out))


def _walk_flags(value: object, out: list[str]) -> int:
    """``_walk``, with nesting too deep for it left to the general path."""
    try:
        return _walk(value, out)
    except RecursionError:
        return _NEEDS_GENERAL


def _walked_jcs(value: object, out: list[str], start: int, flags: int) -> bytes:
    """The rest of ``_record_jcs`` once ``_walk`` has appended ``value``'s strings to ``out``
    from ``start`` and returned ``flags``."""
    if not flags & _NEEDS_GENERAL:
        try:
            # A float such as 1.0 or 1e-7 is replaced by its ES6 text, copying only its parents.
            data = _orjson_dumps(value if not flags else _float_fragments(value), option=_SORT_KEYS)
        except (orjson.JSONEncodeError, HashInputError):
            pass  # int beyond 64 bits, lone surrogate, non-str key, deep nesting, NaN/Infinity
        else:
            if (
                data.isascii()
                or not data.translate(None, _BELOW_E000_BYTES)
                or _keys_sortable(value)
            ):
                return data
    del out[start:]
    return _jcs_scanned(value, out)


def _jcs(value: object, level: int) -> bytes:
    """JCS of ``value`` by the cheapest way that ``_scan``'s ``level`` proves right."""
    if level == _AS_IS:
        try:
            return _orjson_dumps(value, option=_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass  # int beyond 64 bits, lone surrogate, deep nesting: the general path decides
    elif level == _FLOATS:
        try:
            return _orjson_dumps(_float_fragments(value), option=_SORT_KEYS)
        except (orjson.JSONEncodeError, HashInputError):
            pass  # also NaN/Infinity, which the general path reports with its JSON path
    return _canonical_json_slow(value)


class _Fault(Exception):
    """A value with no canonical form, carrying the JSON path to it as it unwinds."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []


def _key_order(keys: list[str]) -> list[str]:
    """Sort object keys by their UTF-16 code units, as JCS §3.2.3 requires."""
    if all(k.isascii() or max(k) < _UTF16_SAFE_LIMIT for k in keys):
        return sorted(keys)
    return sorted(keys, key=lambda k: k.encode("utf-16-be", "surrogatepass"))


def _check_str(value: str) -> str:
    """Return ``value`` as an exact str, or fail if it holds a lone surrogate (not UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Fault(
            f"lone surrogate U+{ord(value[exc.start]):04X} at character {exc.start} is not "
            "allowed in canonical JSON (strings must be valid Unicode)"
        ) from None
    return value if type(value) is str else str.__str__(value)


def _rebuild(value: object) -> object:
    """A copy that orjson writes as JCS: keys pre-sorted, floats and big ints as fragments."""
    if isinstance(value, str):
        return _check_str(value)
    if value is None or value is True or value is False:
        return value
    if isinstance(value, int):
        number = int(value)
        if _ORJSON_INT_MIN <= number <= _ORJSON_INT_MAX:
            return number
        try:
            return _Fragment(str(number))
        except ValueError as exc:  # CPython's limit on int-to-decimal conversion
            raise _Fault(f"integer too large to write as decimal: {exc}") from None
    if isinstance(value, float):
        double = float(value)
        if not _isfinite(double):
            raise _Fault(f"{_NONFINITE_MESSAGE}: found {double!r}")
        return _Fragment(format_number(double))
    if isinstance(value, dict):
        keys = list(value)
        for k in keys:
            if not isinstance(k, str):
                raise _Fault(f"object keys must be strings, found {type(k).__name__} {k!r}")
            try:
                _check_str(k)
            except _Fault as fault:
                fault.message = "in an object key: " + fault.message
                raise
        rebuilt: dict[str, object] = {}
        for k in _key_order(keys):
            try:
                rebuilt[str.__str__(k)] = _rebuild(value[k])
            except _Fault as fault:
                fault.path.append(f"[{json.dumps(k, ensure_ascii=False)}]")
                raise
        return rebuilt
    if isinstance(value, (list, tuple)):
        items: list[object] = []
        for i, v in enumerate(value):
            try:
                items.append(_rebuild(v))
            except _Fault as fault:
                fault.path.append(f"[{i}]")
                raise
        return items
    raise _Fault(f"{type(value).__module__}.{type(value).__qualname__} has no JSON form")


def _canonical_json_slow(value: object) -> bytes:
    """JCS of any JSON value: pre-sort keys and lay out numbers in Python, let orjson write."""
    try:
        rebuilt = _rebuild(value)
    except _Fault as fault:
        where = "$" + "".join(reversed(fault.path))
        raise HashInputError(f"{fault.message} (at {where})") from None
    except RecursionError:
        raise HashInputError("JSON value is nested too deeply to canonicalize") from None
    try:
        return _orjson_dumps(rebuilt)
    except orjson.JSONEncodeError as exc:  # only nesting deeper than orjson allows is left
        raise HashInputError(f"cannot write canonical JSON: {exc}") from None


def canonical_json(value: object) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value, integers beyond ±(2**53-1) written exactly.

    Values made of dicts, lists, strings, ints, bools, floats and None with ordinary keys go
    through orjson (proven identical, see ``_scan``); anything else takes the general path.
    """
    return _jcs(value, _scan(value, []))


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

# orjson silently turns integer tokens outside [-2**63, 2**64-1] into floats; such a token has at
# least 19 digits, so a line without a 19-digit run is safe for orjson.
_DIGIT_MAP: Final = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_BIG_DIGIT_RUN: Final = b"0" * 19


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _parse_finite_float(token: str) -> float:
    number = float(token)
    if not _isfinite(number):
        raise ValueError(f"number {token} is out of the range of a double")
    return number


def _check_parsed_strings(value: object) -> None:
    """Reject lone surrogates that the standard library decodes from ``\\uD800``-style escapes."""
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, dict):
        for k, v in value.items():
            k.encode("utf-8")
            _check_parsed_strings(v)
    elif isinstance(value, list):
        for v in value:
            _check_parsed_strings(v)


def _parse_exact(data: bytes) -> object:
    """Parse with the standard library, which keeps integers of any size exact."""
    text = data.decode("utf-8")
    value = json.loads(text, parse_constant=_reject_constant, parse_float=_parse_finite_float)
    try:
        _check_parsed_strings(value)
    except UnicodeEncodeError:
        raise ValueError("JSON string contains a lone surrogate escape") from None
    return value


def parse_json_lines(
    data: bytes, lines: Sequence[bytes | memoryview], *, exact_ints: bool = True
) -> list[object]:
    """``[parse_json_line(line) for line in lines]`` where ``lines`` are the lines of ``data``.

    The big-integer check runs once over the whole block (a digit run cannot span a newline), so
    the usual block goes straight through orjson. Raises on the first bad line without saying
    which (a blank line is bad here too); callers that must name it parse line by line then.

    ``exact_ints=False`` skips that check, for callers that hash the records with
    ``hash_record_columns(records, lines=lines)``: a record may then hold a float of magnitude
    >= 2**63 where its line held an integer beyond 64 bits, which the hashing parses exactly
    again. An integer beyond a double's range makes this raise, like any bad line.
    """
    if exact_ints and _BIG_DIGIT_RUN in data.translate(_DIGIT_MAP):
        return [parse_json_line(line) for line in lines]
    return list(map(orjson.loads, lines))


def parse_json_line(line: bytes | memoryview | str) -> object:
    """Parse one JSON text, keeping big integers exact and int-vs-float as written.

    Raises ValueError (``json.JSONDecodeError`` or ``UnicodeError``) on invalid JSON, NaN,
    Infinity, numbers beyond a double, invalid UTF-8 or lone surrogate escapes.
    """
    data = line.encode("utf-8") if isinstance(line, str) else bytes(line)
    if _BIG_DIGIT_RUN in data.translate(_DIGIT_MAP):
        return _parse_exact(data)
    return orjson.loads(data)


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


def _encode_text(text: str) -> bytes:
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
    return _sha256(_encode_text(norm)).digest(), norm


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


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


def _collect_strings(value: object, out: list[str]) -> None:
    """Every string value under ``value`` in document order (object keys are not values)."""
    if isinstance(value, str):
        out.append(value if type(value) is str else str.__str__(value))
    elif isinstance(value, dict):
        for v in value.values():
            _collect_strings(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect_strings(v, out)


def _collect_path(value: object, parts: Sequence[str], step: int, out: list[str]) -> None:
    """Strings under the dotted path ``parts[step:]``, traversing lists at any step."""
    if isinstance(value, (list, tuple)):
        for v in value:
            _collect_path(v, parts, step, out)
    elif step == len(parts):
        _collect_strings(value, out)
    elif isinstance(value, dict):
        key = parts[step]
        if key in value:
            _collect_path(value[key], parts, step + 1, out)


def _field_texts(record: object, text_fields: Sequence[str]) -> list[str]:
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
        _collect_strings(record, out)
    else:
        out = _field_texts(record, text_fields)
    yield from out


def _segments_of(texts: Iterable[str], min_chars: int) -> dict[bytes, str]:
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
    return sorted(_segments_of(record_texts(record, text_fields), min_chars))


def record_digest(record: object) -> bytes:
    """sha256 of the record's JCS; a str record (a ``.txt`` line) is hashed as its UTF-8 bytes.

    A text line must already be stripped of its line ending; that is the reader's job.
    """
    if isinstance(record, str):
        return _sha256(_encode_text(record)).digest()
    return _sha256(canonical_json(record)).digest()


def _leaf_bytes(digest: bytes, sorted_segments: Iterable[bytes]) -> bytes:
    """JCS of the record leaf object, written directly: hex needs no escaping and
    "segments" sorts before "sha256"."""
    return (
        b'{"segments":['
        + ",".join([f'"{h.hex()}"' for h in sorted_segments]).encode("ascii")
        + b'],"sha256":"'
        + digest.hex().encode("ascii")
        + b'"}'
    )


def _check_digest(value: bytes, what: str) -> None:
    if len(value) != 32:
        raise HashInputError(f"{what} must be a 32-byte SHA-256 digest, found {len(value)} bytes")


def record_leaf(digest: bytes, segments: Sequence[bytes]) -> bytes:
    """A record leaf, ``JCS({"sha256": hex, "segments": [hex, ...]})``; segments are made
    distinct and sorted here so that no caller can commit to a non-canonical leaf."""
    _check_digest(digest, "record digest")
    for segment in segments:
        _check_digest(segment, "segment hash")
    return _leaf_bytes(digest, sorted(set(segments)))


@dataclass(frozen=True, slots=True)
class RecordHash:
    """Everything the ledger keeps about one record, from a single pass over it."""

    digest: bytes
    """sha256 of the record's JCS (or of a text line's UTF-8 bytes), 32 bytes."""
    segments: tuple[bytes, ...]
    """Distinct 32-byte segment hashes, sorted ascending."""
    texts: tuple[str, ...]
    """The normalized text of each segment, in the order of ``segments``; never stored."""

    @property
    def leaf(self) -> bytes:
        """The record leaf bytes committed by the batch's ``records_root``."""
        return _leaf_bytes(self.digest, self.segments)


def hash_record(
    record: object,
    text_fields: Sequence[str] | None = None,
    min_chars: int = MIN_SEGMENT_CHARS,
) -> RecordHash:
    """Digest, segments and segment texts of one record in one walk (the recording hot path)."""
    if isinstance(record, str):
        digest = _sha256(_encode_text(record)).digest()
        texts: list[str] = [record]
    else:
        texts = []
        digest = _sha256(_record_jcs(record, texts)).digest()
        if text_fields is not None:
            texts = _field_texts(record, text_fields)
    found = _segments_of(texts, min_chars)
    order = sorted(found)
    return RecordHash(digest, tuple(order), tuple([found[h] for h in order]))


def hash_records(
    records: Sequence[object],
    text_fields: Sequence[str] | None = None,
    min_chars: int = MIN_SEGMENT_CHARS,
) -> list[RecordHash]:
    """``[hash_record(r, text_fields, min_chars) for r in records]``, computed in bulk (see
    ``hash_record_columns``). Raises on the first bad record without saying which; callers that
    must name it hash the records one by one then.
    """
    hashed = _hash_all(records, text_fields, min_chars)
    hashes, texts, bounds = hashed.hashes, hashed.texts, hashed.bounds
    return [
        RecordHash(digest, tuple(hashes[a:b]), tuple(texts[a:b]))
        for digest, (a, b) in zip(hashed.digests, pairwise(bounds), strict=True)
    ]


@dataclass(frozen=True, slots=True)
class RecordHashColumns:
    """``hash_records`` as columns: a few buffers for a block of records instead of objects per
    record, for callers that go on to build Merkle roots and Arrow columns.

    Record ``i`` has digest ``digests[32*i:32*i+32]``, leaf hash ``leaf_hashes[32*i:32*i+32]``,
    the ``segment_counts[i]`` sorted segment hashes that follow those of records ``0..i-1`` in
    ``segments``, and their normalized texts ``texts[i]`` in the same order.
    """

    count: int
    digests: bytes
    """sha256 of each record's JCS (or of a text line's UTF-8 bytes), 32 bytes per record."""
    leaf_hashes: bytes
    """RFC 6962 leaf hash ``sha256(0x00 || leaf)`` of each ``RecordHash.leaf``, 32 bytes each."""
    segment_counts: npt.NDArray[np.int64]
    segments: bytes
    """Every record's distinct segment hashes, sorted ascending within the record, end to end."""
    texts: list[list[str]]
    """Per record, the normalized text of each segment in segment order (``RecordHash.texts``)."""


def hash_record_columns(
    records: Sequence[object],
    text_fields: Sequence[str] | None = None,
    min_chars: int = MIN_SEGMENT_CHARS,
    *,
    lines: Sequence[bytes | memoryview] | None = None,
) -> RecordHashColumns:
    """``hash_records`` with the record leaf hashes, as columns. Raises on the first bad record
    without saying which, like ``hash_records``.

    ``lines``, the JSON line of each record, lets the records come from
    ``parse_json_lines(..., exact_ints=False)``: a record holding a float of magnitude >= 2**63
    (perhaps an integer beyond 64 bits that orjson made a float) is hashed as
    ``parse_json_line`` of its line instead, so the result is the exact parse's.
    """
    if lines is not None and len(lines) != len(records):
        raise ValueError(f"expected one line per record ({len(records)}), found {len(lines)}")
    hashed = _hash_all(records, text_fields, min_chars, lines)
    bounds = hashed.bounds
    digests = b"".join(hashed.digests)
    segments = b"".join(hashed.hashes)
    texts = hashed.texts
    ends = np.array(bounds, dtype=np.int64)
    counts = ends[1:] - ends[:-1]
    return RecordHashColumns(
        count=len(hashed.digests),
        digests=digests,
        leaf_hashes=_leaf_hashes(digests, segments, counts),
        segment_counts=counts,
        segments=segments,
        texts=[texts[a:b] for a, b in pairwise(bounds)],
    )


def _leaf_hashes(digests: bytes, segments: bytes, counts: npt.NDArray[np.int64]) -> bytes:
    """The RFC 6962 leaf hash of every record leaf, ``counts[i]`` being record ``i``'s number of
    segments (`record_leaf_groups`, ~3x cheaper than joining each leaf from slices)."""
    groups = record_leaf_groups(
        np.frombuffer(digests, dtype=np.uint8).reshape(-1, 32),
        counts,
        np.cumsum(counts) - counts,
        np.frombuffer(segments, dtype=np.uint8).reshape(-1, 32),
    )
    return b"".join(record_leaf_hashes(groups, len(counts)))


# Record leaves in bulk: the fixed parts of ``0x00 || {"segments":[...],"sha256":"..."}``.
_LEAF_HEAD: Final = np.frombuffer(b'\x00{"segments":', dtype=np.uint8)  # 0x00: the leaf prefix
_LEAF_MIDDLE: Final = np.frombuffer(b'],"sha256":"', dtype=np.uint8)
_LEAF_END: Final = np.frombuffer(b'"}', dtype=np.uint8)
# The two lowercase hex digits of every byte value as one uint16 (in memory order), for lookup.
_HEX_PAIRS: Final = np.frombuffer(hexlify(bytes(range(256))), dtype=np.uint16)


def _hex_rows(raw: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """(n, w) bytes as (n, 2w) lowercase hex digits, one table lookup per byte."""
    hexed: npt.NDArray[np.uint8] = _HEX_PAIRS[raw].view(np.uint8)
    return hexed.reshape(len(raw), 2 * raw.shape[1])


@dataclass(frozen=True)
class LeafGroup:
    """The ``0x00``-prefixed leaves of records with the same number of segments, as the rows of
    one array (`record_leaf_groups`)."""

    rows: npt.NDArray[np.intp]
    """Which records, in the order given."""
    block: npt.NDArray[np.uint8]
    """One leaf per row, behind its 0x00 prefix."""
    whole: bool
    """The only group: its rows are all the records, in order."""

    def hashes(self) -> list[bytes]:
        """The RFC 6962 leaf hash of each row."""
        # Leaves end in '"}', so the S dtype's dropping of trailing NULs takes nothing from them.
        leaves = self.block.view(f"S{self.block.shape[1]}").ravel().tolist()
        return list(map(_HASH_DIGEST, map(_sha256, leaves)))

    def leaves(self) -> list[bytes]:
        """Each row's leaf, without its prefix."""
        return [row[1:] for row in self.block.view(f"S{self.block.shape[1]}").ravel().tolist()]


def record_leaf_groups(
    digests: npt.NDArray[np.uint8],
    counts: npt.NDArray[np.int64],
    starts: npt.NDArray[np.int64],
    segments: npt.NDArray[np.uint8],
) -> list[LeafGroup]:
    """The record leaves (`record_leaf`) of many records at once: record ``i`` has the digest
    ``digests[i]`` and the sorted segments ``segments[starts[i]:starts[i] + counts[i]]`` (32-byte
    rows).

    Records with the same segment count have the same leaf length, so each such group is one 2-D
    uint8 array filled column block by column block: numpy does the work, not a Python loop per
    record. When a group's segments lie back to back (records in order, the usual case) they are
    copied as one slice instead of gathered.
    """
    hex_digests = _hex_rows(digests)
    hex_segments = _hex_rows(segments)
    kinds = np.unique(counts).tolist()
    groups: list[LeafGroup] = []
    for k in kinds:
        rows = np.flatnonzero(counts == k) if len(kinds) > 1 else np.arange(len(counts))
        n = len(rows)
        body = 67 * k if k else 1  # k '"hex"' entries after a comma each, or the '[' of []
        width = 13 + body + 78
        block = np.empty((n, width), np.uint8)
        block[:, :13] = _LEAF_HEAD
        if k:
            first = int(starts[rows[0]])
            if np.array_equal(starts[rows], first + k * np.arange(n)):
                picked = hex_segments[first : first + k * n].reshape(n, k, 64)
            else:
                picked = hex_segments[starts[rows][:, None] + np.arange(k)]
            cells = block[:, 13 : 13 + body]
            cells.shape = (n, k, 67)  # a view of the block (assigning .shape never copies)
            cells[:, :, 0] = ord(",")
            cells[:, :, 1] = cells[:, :, 66] = ord('"')
            cells[:, :, 2:66] = picked
        block[:, 13] = ord("[")  # over the first entry's comma
        at = 13 + body
        block[:, at : at + 12] = _LEAF_MIDDLE
        block[:, at + 12 : at + 76] = hex_digests[rows]
        block[:, at + 76 :] = _LEAF_END
        groups.append(LeafGroup(rows, block, len(kinds) == 1))
    return groups


def record_leaf_hashes(groups: Sequence[LeafGroup], count: int) -> list[bytes]:
    """The leaf hashes of `count` records, in record order, from their `record_leaf_groups`."""
    out: list[bytes] = [b""] * count
    for group in groups:
        hashes = group.hashes()
        if group.whole:
            return hashes
        for row, digest in zip(group.rows.tolist(), hashes, strict=True):
            out[row] = digest
    return out


@dataclass(frozen=True, slots=True)
class _Hashed:
    """What ``hash_records`` and ``hash_record_columns`` share: record ``i`` has ``digests[i]``
    and the segments ``hashes[bounds[i]:bounds[i+1]]`` (sorted) with their ``texts``."""

    digests: list[bytes]
    hashes: list[bytes]
    texts: list[str]
    bounds: list[int]


_CHUNK: Final = 256
"""Records hashed together: enough to spread numpy's per-call cost thin, few enough that their
texts are still in the CPU cache when their segments are computed."""


def _hash_all(
    records: Iterable[object],
    text_fields: Sequence[str] | None,
    min_chars: int,
    lines: Sequence[bytes | memoryview] | None = None,
) -> _Hashed:
    """``_hash_chunk`` over consecutive chunks of the records (and of their ``lines``)."""
    digests: list[bytes] = []
    hashes: list[bytes] = []
    texts: list[str] = []
    counts: list[npt.NDArray[np.int64]] = [np.zeros(1, dtype=np.int64)]
    it = iter(records)
    done = 0
    while chunk := list(islice(it, _CHUNK)):
        chunk_lines = None if lines is None else lines[done : done + len(chunk)]
        counts.append(
            _hash_chunk(chunk, text_fields, min_chars, digests, hashes, texts, chunk_lines)
        )
        done += len(chunk)
    return _Hashed(digests, hashes, texts, np.cumsum(np.concatenate(counts)).tolist())


def _hash_chunk(
    records: Sequence[object],
    text_fields: Sequence[str] | None,
    min_chars: int,
    digests: list[bytes],
    hashes: list[bytes],
    texts: list[str],
    lines: Sequence[bytes | memoryview] | None = None,
) -> npt.NDArray[np.int64]:
    """Append the records' digests, and their segment hashes and texts (sorted and distinct
    per record); return each record's number of segments. Digests come from one loop, then
    the segments of all texts at once, sorted per record by numpy. A record whose walk meets a
    ``_BIG_FLOAT`` is parsed exactly from its line in ``lines``, when given."""
    raw: list[str] = []
    ends: list[int] = []
    for i, record in enumerate(records):
        if isinstance(record, str):
            digests.append(_sha256(_encode_text(record)).digest())
            raw.append(record)
            ends.append(len(raw))
            continue
        out = raw if text_fields is None else []
        start = len(out)
        try:
            flags = _walk(record, out)  # _walk_flags, inlined to save a call per record
        except RecursionError:
            flags = _NEEDS_GENERAL
        if flags & _BIG_FLOAT and lines is not None:
            del out[start:]
            record = parse_json_line(lines[i])
            flags = _walk_flags(record, out)
        digests.append(_sha256(_walked_jcs(record, out, start, flags)).digest())
        if text_fields is not None:
            raw.extend(_field_texts(record, text_fields))
        ends.append(len(raw))
    where, found, normalized = _segments_at(raw, min_chars)
    if not found:
        return np.zeros(len(records), dtype=np.int64)
    owner = np.searchsorted(np.array(ends, dtype=np.int64), where, side="right")
    order, keep = _segment_order(owner, b"".join(found), len(records))
    picked = order[keep].tolist()
    hashes.extend([found[j] for j in picked])
    texts.extend([normalized[j] for j in picked])
    return np.bincount(owner[picked], minlength=len(records))


def _segment_order(
    owner: npt.NDArray[np.int64], joined: bytes, count: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """The order that sorts segments by (record, hash), and which of them to keep (the first of
    each repeat within a record). ``owner`` holds each segment's record, below ``count``;
    ``joined`` their 32-byte hashes end to end.

    One stable argsort of a 64-bit key (the record in the top bits, the hash's leading bits
    below) is ~5x cheaper than a lexsort over five keys. The key decides the order unless two
    segments share it; then (a repeat, or a collision of the leading bits) the exact lexsort
    over the whole hash does.
    """
    # Big-endian words compare as the bytes do.
    words = np.frombuffer(joined, dtype=">u8").reshape(-1, 4)
    shift = np.uint64(max(count - 1, 1).bit_length())
    key = (owner.astype(np.uint64) << (np.uint64(64) - shift)) | (
        words[:, 0].astype(np.uint64) >> shift
    )
    order = np.argsort(key, kind="stable")
    key = key[order]
    keep = np.ones(len(order), dtype=np.bool_)
    np.not_equal(key[1:], key[:-1], out=keep[1:])
    if keep.all():
        return order, keep
    order = np.lexsort((words[:, 3], words[:, 2], words[:, 1], words[:, 0], owner))
    owner, words = owner[order], words[order]
    keep[1:] = (owner[1:] != owner[:-1]) | (words[1:] != words[:-1]).any(axis=1)
    return order, keep


def _segments_at(
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


_HASH_DIGEST: Final = type(_sha256()).digest


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
    return where, list(map(_HASH_DIGEST, map(_sha256, pieces))), list(map(bytes.decode, pieces))


# ---------------------------------------------------------------------------------------------
# Calls
# ---------------------------------------------------------------------------------------------


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _get(value: object, key: str) -> object:
    return value.get(key) if isinstance(value, Mapping) else None


def _append_str(out: list[str], value: object) -> None:
    if isinstance(value, str) and value:
        out.append(value)


def _key(value: object) -> object:
    """A stream's index as a dict key: a malformed one (a list, an object) by its text, never a crash."""
    return value if value is None or isinstance(value, (str, int, float)) else repr(value)


def _content_texts(content: object, out: list[str]) -> None:
    """A chat message's content: a string, or a list of parts whose ``text`` is a string."""
    if isinstance(content, str):
        _append_str(out, content)
        return
    for part in _as_list(content):
        if isinstance(part, str):
            _append_str(out, part)
        else:
            _append_str(out, _get(part, "text"))


def response_texts(response: Mapping[str, object]) -> list[str]:
    """The output texts of a response body (chat completion, legacy completion, Responses API).

    Message content (including lists of text parts), tool-call and legacy function-call
    argument strings, completion text, Responses ``output_text`` parts and function-call
    arguments, and a top-level ``output_text``. Missing, null and empty parts are skipped.
    """
    out: list[str] = []
    for choice in _as_list(response.get("choices")):
        message = _get(choice, "message")
        if isinstance(message, Mapping):
            _content_texts(message.get("content"), out)
            for call in _as_list(message.get("tool_calls")):
                _append_str(out, _get(_get(call, "function"), "arguments"))
            _append_str(out, _get(message.get("function_call"), "arguments"))
        _append_str(out, _get(choice, "text"))
    for item in _as_list(response.get("output")):
        kind = _get(item, "type")
        if kind == "function_call":
            _append_str(out, _get(item, "arguments"))
        elif kind in ("message", None):
            for part in _as_list(_get(item, "content")):
                if _get(part, "type") == "output_text":
                    _append_str(out, _get(part, "text"))
    _append_str(out, response.get("output_text"))
    return out


def stream_texts(chunks: Sequence[Mapping[str, object]]) -> list[str]:
    """The output texts of a stream, each the concatenation of its deltas.

    Chat chunks: per choice index, ``delta.content`` (and legacy completion ``text``), and per
    (choice, tool call index) the ``function.arguments`` pieces. Responses API events:
    ``response.output_text.delta`` per (output, content) index and
    ``response.function_call_arguments.delta`` per output index. Contents come before tool
    arguments, each in order of first appearance.
    """
    contents: dict[tuple[object, ...], list[str]] = {}
    arguments: dict[tuple[object, ...], list[str]] = {}
    key: tuple[object, ...]
    for chunk in chunks:
        if not isinstance(chunk, Mapping):
            continue
        for choice in _as_list(chunk.get("choices")):
            index = _key(_get(choice, "index"))
            delta = _get(choice, "delta")
            if isinstance(delta, Mapping):
                _append_str(contents.setdefault(("c", index), []), delta.get("content"))
                for call in _as_list(delta.get("tool_calls")):
                    piece = _get(_get(call, "function"), "arguments")
                    key = ("t", index, _key(_get(call, "index")))
                    _append_str(arguments.setdefault(key, []), piece)
                piece = _get(delta.get("function_call"), "arguments")
                _append_str(arguments.setdefault(("f", index), []), piece)
            _append_str(contents.setdefault(("c", index), []), _get(choice, "text"))
        kind = chunk.get("type")
        if kind == "response.output_text.delta":
            key = ("r", _key(chunk.get("output_index")), _key(chunk.get("content_index")))
            _append_str(contents.setdefault(key, []), chunk.get("delta"))
        elif kind == "response.function_call_arguments.delta":
            key = ("rf", _key(chunk.get("output_index")))
            _append_str(arguments.setdefault(key, []), chunk.get("delta"))
    joined = ["".join(parts) for parts in (*contents.values(), *arguments.values())]
    return [text for text in joined if text]


def call_outputs(texts: Iterable[str], min_chars: int = MIN_SEGMENT_CHARS) -> list[str]:
    """A call's ``outputs``: distinct segment hashes of all its texts, hex, sorted ascending."""
    found: set[bytes] = set()
    for text in texts:
        found.update(h for h, _ in text_segments(text, min_chars))
    return [h.hex() for h in sorted(found)]


def request_response_digest(body: object | None) -> str | None:
    """A call's ``request``/``response`` hash: sha256 hex of the body's JCS, None when absent."""
    if body is None:
        return None
    return sha256_hex(canonical_json(body))
