"""Arrow columns made from numpy buffers and read back as numpy, without pyarrow's pandas shim.

`pa.array(values)` (for a list, a range or a numpy array alike, and so `pa.table` of such values) and
`Array.to_numpy()` first ask pyarrow's pandas shim whether the values are pandas objects, which
imports pandas whenever it is installed: ~0.15 s of a command's start-up, paid again by every
worker process forked before it happened. The columns the ledger builds are plain integers, bytes
and text, so they are laid out here from their buffers instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]

__all__ = ["bytes_column", "int_column", "int_values"]

_INT_TYPES: dict[np.dtype[Any], Any] = {
    np.dtype(np.int8): pa.int8(),
    np.dtype(np.int16): pa.int16(),
    np.dtype(np.int32): pa.int32(),
    np.dtype(np.int64): pa.int64(),
}


def int_column(values: npt.ArrayLike | Iterable[int], dtype: Any = np.int64) -> pa.Array:
    """An Arrow integer column (int8/16/32/64 by `dtype`) of `values`, without nulls."""
    dtype = np.dtype(dtype)
    if isinstance(values, np.ndarray):
        array = np.ascontiguousarray(values, dtype=dtype)
    else:
        array = np.fromiter(values, dtype=dtype)  # type: ignore[arg-type]
    return pa.Array.from_buffers(_INT_TYPES[dtype], len(array), [None, pa.py_buffer(array)])


def bytes_column(values: Sequence[bytes | str | None], *, text: bool) -> pa.Array:
    """A `large_string` (`text`: str values) or `large_binary` (bytes values) column, None as null."""
    data = [b"" if v is None else v.encode("utf-8") if isinstance(v, str) else v for v in values]
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, data), dtype=np.int64, count=len(data)), out=offsets[1:])
    nulls = sum(v is None for v in values)
    validity = None
    if nulls:
        valid = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        pa.large_string() if text else pa.large_binary(),
        len(data),
        [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))],
        null_count=nulls,
    )


def int_values(column: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.int64]:
    """An integer column as int64 numpy values (a view when it already is int64 without nulls)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    found = [d for d, t in _INT_TYPES.items() if t == array.type]
    if len(array) == 0:
        return np.zeros(0, np.int64)
    if found and array.null_count == 0:
        dtype = found[0]
        raw = np.frombuffer(
            array.buffers()[1], dtype, count=len(array), offset=dtype.itemsize * array.offset
        )
        return raw.astype(np.int64, copy=False)
    values: npt.NDArray[np.int64] = np.asarray(array.to_numpy(zero_copy_only=False), np.int64)
    return values
