"""Arrow columns as numpy arrays, the shapes the record-set and tree checks compare in bulk."""

from __future__ import annotations

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from ledger.engine.columns import int_values
from ledger.errors import VerificationError


def as_fixed32(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A binary column whose values are all 32 bytes (checked beforehand) as an (n, 32) uint8 array."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if n and array.null_count == 0 and pa.types.is_binary(array.type):
        # Offsets 32 apart mean the values lie back to back: view them in place instead of casting.
        offsets = np.frombuffer(array.buffers()[1], np.int32, count=n + 1, offset=4 * array.offset)
        if bool(np.all(np.diff(offsets) == 32)):
            data = np.frombuffer(array.buffers()[2], np.uint8, count=32 * n, offset=int(offsets[0]))
            return data.reshape(n, 32)
    try:
        fixed = array.cast(pa.binary(32))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise VerificationError(
            f"expected 32-byte hashes in the record set, found others ({exc})"
        ) from None
    if len(fixed) == 0:
        return np.zeros((0, 32), np.uint8)
    data = np.frombuffer(
        fixed.buffers()[1], np.uint8, count=32 * len(fixed), offset=32 * fixed.offset
    )
    return data.reshape(len(fixed), 32)


def as_int64(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    # Not `to_numpy`: it would import pandas in every worker process (`ledger.engine.columns`).
    return int_values(column)


def byte_lengths(column: pa.ChunkedArray) -> np.ndarray:
    """Byte lengths of a binary column, -1 for NULL (never a valid hash length)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if n == 0:
        return np.zeros(0, np.int64)
    if not (pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type)):
        return as_int64(pc.fill_null(pc.binary_length(array), -1))
    # From the offsets, not `pc.fill_null(pc.binary_length(...), -1)`: its Python scalar would
    # import pandas in every worker process (`ledger.engine.columns`).
    kind = np.int64 if pa.types.is_large_binary(array.type) else np.int32
    width = np.dtype(kind).itemsize
    offsets = np.frombuffer(array.buffers()[1], kind, count=n + 1, offset=width * array.offset)
    lengths = np.diff(offsets).astype(np.int64)
    if array.null_count:
        bits = np.frombuffer(array.buffers()[0], np.uint8)
        valid = np.unpackbits(bits, bitorder="little")[array.offset : array.offset + n]
        lengths[valid == 0] = -1
    return lengths
