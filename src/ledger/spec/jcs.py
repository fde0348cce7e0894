"""Canonical JSON (RFC 8785, JCS, with the big-integer extension) and exact JSON parsing.

Pure and deterministic: outside verifiers recompute these bytes (DESIGN.md "Hashing (fixed)"). JCS
is on the recording hot path, so values go through orjson wherever its output is proven identical
to RFC 8785; see ``_scan`` and ``walk_strings`` for the conditions. The walks also collect a
value's strings, which the record hashing (``ledger.spec.leaves``) turns into segments.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any, Final, cast

import orjson

from ledger.errors import InputError

__all__ = [
    "BIG_FLOAT",
    "NEEDS_GENERAL",
    "HashInputError",
    "canonical_json",
    "collect_strings",
    "format_number",
    "parse_json_line",
    "parse_json_lines",
    "record_jcs",
    "walk_flags",
    "walk_strings",
    "walked_jcs",
]


class HashInputError(InputError, ValueError):
    """A value with no canonical form: NaN/infinity, a lone surrogate, or a non-JSON type."""


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
    collect_strings(value, out)  # subclasses and foreign types: the general path judges them
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
    return canonical_json_general(value)


# What walk_strings finds, as bit flags: floats whose orjson text is not ES6's, and anything that only
# the general path may judge.
_NEEDS_FRAGMENTS: Final = 1
NEEDS_GENERAL: Final = 2
# A float of magnitude >= 2**63 (always with _NEEDS_FRAGMENTS): what orjson's parser makes of an
# integer token beyond 64 bits, so the record may need parsing exactly (``parse_json_lines``).
BIG_FLOAT: Final = 4
_BIG_FLOAT_MIN: Final = 2.0**63
# The bytes below 0xEE. UTF-8 output left empty by deleting them holds no code point >= U+E000
# (lead bytes 0xEE-0xF4), so no key in it sorts differently by UTF-16 code units than by code
# points. (One translate is ~6x faster than a regex search for the high bytes.)
_BELOW_E000_BYTES: Final = bytes(range(0xEE))
_INT_ONLY: Final = {int}


def walk_strings(value: object, out: list[str]) -> int:
    """Append every string value in the container ``value`` to ``out`` in document order;
    return the flags of what orjson's ``OPT_SORT_KEYS`` output of it cannot be trusted with.

    Cheaper than ``_scan`` because it leaves to orjson what orjson rejects by itself (non-str
    keys, str subclass keys, ints beyond 64 bits, lone surrogates) and to ``_keys_sortable`` the
    rare output with a code point >= U+E000. A float passes when ``plain_float`` holds, and
    is flagged ``BIG_FLOAT`` as well when it may stand for a big integer.
    """
    t = type(value)
    if t is dict:
        items: Iterable[object] = value.values()  # type: ignore[attr-defined]
    elif t is list or t is tuple:
        items = value  # type: ignore[assignment]
        # A list of integers only (token ids): nothing to append or flag, found in one C loop.
        if items and type(items[0]) is int and set(map(type, items)) == _INT_ONLY:  # type: ignore[index]
            return 0
    else:
        return NEEDS_GENERAL
    flags = 0
    for v in items:
        tv = type(v)
        if tv is str:
            out.append(v)  # type: ignore[arg-type]
        elif tv is dict or tv is list or tv is tuple:
            flags |= walk_strings(v, out)
        elif tv is int or tv is bool or v is None:
            continue
        elif tv is float:
            if not plain_float(v):  # type: ignore[arg-type]
                # A plain float is below 1e16, so only these need the magnitude test.
                big = not abs(v) < _BIG_FLOAT_MIN  # type: ignore[arg-type]
                flags |= (_NEEDS_FRAGMENTS | BIG_FLOAT) if big else _NEEDS_FRAGMENTS
        else:
            flags |= NEEDS_GENERAL
    return flags


def plain_float(value: float) -> bool:
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


def record_jcs(value: object, out: list[str]) -> bytes:
    """JCS of ``value``, appending its string values to ``out``: orjson's sorted output (with
    floats replaced where needed) when ``walk_strings`` finds nothing else it cannot be trusted with,
    else ``_jcs_scanned`` (which raises for a value with no canonical form)."""
    start = len(out)
    return walked_jcs(value, out, start, walk_flags(value, out))


def walk_flags(value: object, out: list[str]) -> int:
    """``walk_strings``, with nesting too deep for it left to the general path."""
    try:
        return walk_strings(value, out)
    except RecursionError:
        return NEEDS_GENERAL


def walked_jcs(value: object, out: list[str], start: int, flags: int) -> bytes:
    """The rest of ``record_jcs`` once ``walk_strings`` has appended ``value``'s strings to ``out``
    from ``start`` and returned ``flags``."""
    if not flags & NEEDS_GENERAL:
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
    return canonical_json_general(value)


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


def canonical_json_general(value: object) -> bytes:
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


def collect_strings(value: object, out: list[str]) -> None:
    """Every string value under ``value`` in document order (object keys are not values)."""
    if isinstance(value, str):
        out.append(value if type(value) is str else str.__str__(value))
    elif isinstance(value, dict):
        for v in value.values():
            collect_strings(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            collect_strings(v, out)
