"""Arrow values as JSON values: how a row of an Arrow table (a Parquet row, a pyarrow table's row)
becomes the object the record digest is the JCS of (DESIGN.md "Inputs").

A row is the object of its columns, nulls kept. Timestamps become RFC 3339 strings in UTC
(`2024-05-01T12:00:00.25Z`; fraction digits only as needed; a timestamp without a time zone is taken
as UTC), dates `YYYY-MM-DD`, times `HH:MM:SS[.fff]`; lists and structs become arrays and objects,
maps with string keys objects. `float32` values are written as their shortest float32 decimal form
(so `0.1f` reads as `0.1`, like the JSONL it was likely made from), decimals as integers when their
scale is 0 and as doubles when the double is exact. Binary, durations, unions and decimals with no
exact double form have no JSON form: the first such value is an `InputError` naming row and column.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from ledger.errors import InputError

__all__ = ["row_objects"]


class _NoJsonForm(Exception):
    """A Parquet value that has no JSON form; `path` is the field path inside the column."""

    def __init__(self, message: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


_Convert = Callable[[Any], object]
_EPOCH: Final = dt.datetime(1970, 1, 1)
_EPOCH_DATE: Final = dt.date(1970, 1, 1)
_PER_SECOND: Final = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_DIGITS: Final = {"s": 0, "ms": 3, "us": 6, "ns": 9}


def row_objects(batch: pa.RecordBatch, name: str, first_row: int) -> list[tuple[int, object]]:
    """Turn a record batch into numbered row objects, converting column by column (fast path).

    Rows are numbered from `first_row`; `name` (the file) heads every error message.
    """
    names = batch.schema.names
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"{name}: column {dup!r} appears twice; a row cannot be a JSON object")
    if not names:
        return [(first_row + i, {}) for i in range(batch.num_rows)]
    columns = [
        _column_values(name, first_row, column, col) for column, col in zip(names, batch.columns)
    ]
    return [(first_row + i, dict(zip(names, values))) for i, values in enumerate(zip(*columns))]


def _column_values(file: str, first_row: int, name: str, column: pa.Array) -> list[object]:
    """One column's values as JSON values; temporal types are read as integers to stay exact."""
    if isinstance(column, pa.ExtensionArray):
        column = column.storage
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    typ = column.type
    convert = _converter(typ)
    storage = _storage_type(typ)
    if storage != typ:
        column = column.cast(storage)
    try:
        values: list[object] = column.to_pylist()
    except UnicodeDecodeError as exc:  # Parquet does not check that string data is UTF-8
        last = first_row + len(column) - 1
        raise InputError(
            f"{file}: rows {first_row}..{last}, column {name!r}: text is not valid UTF-8 ({exc.reason})"
        ) from None
    if convert is None:
        return values
    out: list[object] = []
    append = out.append
    for i, value in enumerate(values):
        if value is None:
            append(None)
            continue
        try:
            append(convert(value))
        except _NoJsonForm as exc:
            where = ".".join((name, *exc.path))
            raise InputError(f"{file}: row {first_row + i}, column {where!r}: {exc}") from None
    return out


def _storage_type(typ: pa.DataType) -> pa.DataType:
    """The type to cast to before `to_pylist`: temporal values as integers, containers recursively."""
    if pa.types.is_dictionary(typ):
        return _storage_type(typ.value_type)
    if pa.types.is_timestamp(typ) or pa.types.is_time64(typ) or pa.types.is_date64(typ):
        return pa.int64()
    if pa.types.is_duration(typ):
        return pa.int64()
    if pa.types.is_date32(typ) or pa.types.is_time32(typ):
        return pa.int32()
    if pa.types.is_list(typ):
        return pa.list_(_storage_type(typ.value_type))
    if pa.types.is_large_list(typ):
        return pa.large_list(_storage_type(typ.value_type))
    if pa.types.is_fixed_size_list(typ):
        return pa.list_(_storage_type(typ.value_type), typ.list_size)
    if pa.types.is_map(typ):
        return pa.map_(_storage_type(typ.key_type), _storage_type(typ.item_type))
    if pa.types.is_struct(typ):
        return pa.struct([pa.field(f.name, _storage_type(f.type), f.nullable) for f in typ])
    return typ


def _converter(typ: pa.DataType) -> _Convert | None:
    """How to turn a non-null storage value of `typ` into a JSON value; None when it already is one."""
    t = pa.types
    if t.is_dictionary(typ):
        return _converter(typ.value_type)
    if (
        t.is_null(typ)
        or t.is_boolean(typ)
        or t.is_integer(typ)
        or t.is_float64(typ)
        or t.is_string(typ)
        or t.is_large_string(typ)
        or getattr(t, "is_string_view", lambda _: False)(typ)
    ):
        return None
    if t.is_float32(typ):
        return _float32_value
    if t.is_float16(typ):
        return _float16_value
    if t.is_timestamp(typ):
        return _timestamp_converter(typ.unit)
    if t.is_date32(typ):
        return _date32_text
    if t.is_date64(typ):
        return _date64_text
    if t.is_time32(typ) or t.is_time64(typ):
        return _time_converter(typ.unit)
    if t.is_decimal(typ):
        return _integer_decimal if typ.scale <= 0 else _double_decimal
    if t.is_list(typ) or t.is_large_list(typ) or t.is_fixed_size_list(typ):
        return _list_converter(_converter(typ.value_type))
    if t.is_map(typ):
        return _map_converter(_converter(typ.key_type), _converter(typ.item_type))
    if t.is_struct(typ):
        return _struct_converter([(f.name, _converter(f.type)) for f in typ])
    return _refuser(typ)


def _refuser(typ: pa.DataType) -> _Convert:
    """A converter for a type with no JSON form (binary, duration, union, ...): any non-null value fails."""
    kind = "binary" if "binary" in str(typ) else str(typ)

    def refuse(_value: object) -> object:
        raise _NoJsonForm(f"{kind} values have no JSON form")

    return refuse


def _float32_value(value: float) -> float:
    """The double read from float32's shortest decimal form: `0.1f` becomes `0.1`, not 0.10000000149."""
    return float(str(np.float32(value)))


def _float16_value(value: float) -> float:
    """As `_float32_value`, for half precision."""
    return float(str(np.float16(value)))


def _timestamp_converter(unit: str) -> _Convert:
    """RFC 3339 in UTC from integer ticks since the epoch (exact for nanoseconds, unlike datetime)."""
    per_second, digits = _PER_SECOND[unit], _DIGITS[unit]

    def convert(ticks: int) -> str:
        seconds, fraction = divmod(ticks, per_second)
        try:
            t = _EPOCH + dt.timedelta(seconds=seconds)
        except OverflowError:
            raise _NoJsonForm(f"timestamp {ticks} {unit} is outside years 1 to 9999") from None
        text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        if fraction:
            text += "." + f"{fraction:0{digits}d}".rstrip("0")
        return text + "Z"

    return convert


def _time_converter(unit: str) -> _Convert:
    """RFC 3339 partial-time `HH:MM:SS[.fff]` from integer ticks since midnight."""
    per_second, digits = _PER_SECOND[unit], _DIGITS[unit]

    def convert(ticks: int) -> str:
        seconds, fraction = divmod(ticks, per_second)
        minutes, second = divmod(seconds, 60)
        hour, minute = divmod(minutes, 60)
        text = f"{hour:02d}:{minute:02d}:{second:02d}"
        if fraction:
            text += "." + f"{fraction:0{digits}d}".rstrip("0")
        return text

    return convert


def _date32_text(days: int) -> str:
    """RFC 3339 full-date from days since the epoch."""
    try:
        return (_EPOCH_DATE + dt.timedelta(days=days)).isoformat()
    except OverflowError:
        raise _NoJsonForm(f"date {days} days from 1970-01-01 is outside years 1 to 9999") from None


def _date64_text(millis: int) -> str:
    """RFC 3339 full-date from milliseconds since the epoch."""
    return _date32_text(millis // 86_400_000)


def _integer_decimal(value: decimal.Decimal) -> int:
    """A scale-0 decimal is an integer: written exactly, like a big JSONL integer."""
    return int(value)


def _double_decimal(value: decimal.Decimal) -> float:
    """A decimal with a fraction becomes a double only when that double reads back as the same number."""
    number = float(value)
    if not np.isfinite(number) or decimal.Decimal(repr(number)) != value:
        raise _NoJsonForm(f"decimal {value} has no exact double (JSON number) form")
    return number


def _list_converter(item: _Convert | None) -> _Convert | None:
    """Convert list items; None when the items need nothing."""
    if item is None:
        return None

    def convert(values: list[object]) -> list[object]:
        out: list[object] = []
        for i, v in enumerate(values):
            try:
                out.append(None if v is None else item(v))
            except _NoJsonForm as exc:
                raise _NoJsonForm(str(exc), (f"[{i}]", *exc.path)) from None
        return out

    return convert


def _struct_converter(fields: list[tuple[str, _Convert | None]]) -> _Convert | None:
    """Convert the fields of a struct that need it; None when none do."""
    active = [(name, conv) for name, conv in fields if conv is not None]
    if not active:
        return None

    def convert(value: dict[str, object]) -> dict[str, object]:
        out = dict(value)
        for name, conv in active:
            v = out.get(name)
            if v is not None:
                try:
                    out[name] = conv(v)
                except _NoJsonForm as exc:
                    raise _NoJsonForm(str(exc), (name, *exc.path)) from None
        return out

    return convert


def _map_converter(key: _Convert | None, item: _Convert | None) -> _Convert:
    """A map becomes a JSON object: keys must be distinct strings."""

    def convert(pairs: list[tuple[object, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for k, v in pairs:
            k = key(k) if key is not None else k
            if not isinstance(k, str):
                raise _NoJsonForm(
                    f"map key {k!r} is not a string, so the map has no JSON object form"
                )
            if k in out:
                raise _NoJsonForm(f"map key {k!r} appears twice")
            try:
                out[k] = v if v is None or item is None else item(v)
            except _NoJsonForm as exc:
                raise _NoJsonForm(str(exc), (k, *exc.path)) from None
        return out

    return convert
