"""Training examples as the record-hashing kernel's rows, hashed where the examples are.

`ExampleHasher` is small and picklable: a DataLoader worker (or a rank) calls it on the examples of
a step and only the kernel's Arrow table (`ledger.engine.kernel.RECORD_SCHEMA`: digests, segments,
fingerprints, leaf hashes) travels to the process that records it. An example is
- a `str`: a text record (its UTF-8 bytes, as a line of a `.txt` file: a trailing newline is not
  part of it, an empty one is skipped);
- a mapping (a dict, a `BatchEncoding`): a JSON record; tensors and numpy arrays in it become lists
  (token ids stay integers), so the digest is the JCS of the example as the step consumed it;
- a token id tensor, array or list of integers: the record `{token_field: ids}`.
With a tokenizer, the token ids under the token field (default `input_ids`) are decoded into texts
of the record (DESIGN.md "Tokenized records"); the batch body names the tokenizer's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa  # type: ignore[import-untyped]

from ledger.engine import kernel
from ledger.engine.tokens import DEFAULT_TOKEN_FIELD, TokenizerFile
from ledger.errors import InputError, UsageError
from ledger.recording.batches import kernel_fingerprints

__all__ = ["ExampleHasher", "example_hasher", "hash_examples", "tokenizer_file", "uncollate"]


@dataclass(frozen=True)
class ExampleHasher:
    """Hashes the examples of one step into the kernel's table (picklable; call it anywhere)."""

    tokenizer: TokenizerFile | None = None
    text_fields: tuple[str, ...] | None = None
    min_segment_chars: int = 32

    @property
    def token_field(self) -> str:
        return self.tokenizer.field if self.tokenizer is not None else DEFAULT_TOKEN_FIELD

    def options(self) -> kernel.KernelOptions:
        return kernel.KernelOptions(
            text_fields=self.text_fields,
            min_chars=self.min_segment_chars,
            fingerprint_blobs=kernel_fingerprints(),
            tokenizer=self.tokenizer,
        )

    def __call__(self, examples: Sequence[Any]) -> pa.Table:
        """The `RECORD_SCHEMA` table of `examples`, in order (an InputError names a bad one)."""
        if isinstance(examples, (str, bytes, Mapping)):
            raise UsageError(
                f"expected a sequence of examples, found one {type(examples).__name__}"
            )
        options = self.options()
        tables = []
        for form, lines, first in _runs(list(examples), self.token_field):
            origin = kernel.Origin(name="examples", first=first, rows=False)
            column = pa.array(lines, pa.binary())
            tables.append(kernel.hash_batch(pa.table({"line": column}), options, form, origin))
        if not tables:
            return kernel.RECORD_SCHEMA.empty_table()
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def hash_steps(self, steps: Sequence[Sequence[Any]]) -> list[pa.Table]:
        """The tables of many steps, as `self(step)` gives each, from one kernel call where every
        example gives exactly one row (records, token ids): a kernel call costs ~100 µs before its
        first record, which a step of 8 examples would otherwise pay alone. Texts (an empty one
        gives no row) are hashed step by step."""
        if len(steps) < 2 or any(isinstance(e, (str, bytes)) for s in steps for e in s):
            return [self(s) for s in steps]
        table = self([e for s in steps for e in s])
        tables, start = [], 0
        for s in steps:
            tables.append(table.slice(start, len(s)))
            start += len(s)
        return tables


def _runs(examples: list[Any], token_field: str) -> list[tuple[str, list[bytes], int]]:
    """Consecutive examples of one kind as kernel lines: texts as text lines, records as JSON lines
    (example numbers are 1-based, as the kernel names a bad line)."""
    runs: list[tuple[str, list[bytes], int]] = []
    for i, example in enumerate(examples):
        if isinstance(example, str):
            form, line = kernel.TEXT_LINES, example.encode("utf-8")
        else:
            form, line = kernel.JSON_LINES, _json_line(_as_record(example, token_field, i), i)
        if runs and runs[-1][0] == form:
            runs[-1][1].append(line)
        else:
            runs.append((form, [line], i + 1))
    return runs


def _as_record(example: object, token_field: str, position: int) -> Mapping[str, Any]:
    if isinstance(example, Mapping):
        return example
    if isinstance(example, (list, tuple)) or hasattr(example, "tolist"):
        return {token_field: example}
    raise InputError(
        f"example {position}: expected a dict, a str or token ids, found {type(example).__name__}"
    )


def _plain(value: object) -> object:
    """orjson's fallback: tensors, arrays and numpy scalars as Python values, mappings as dicts."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"a {type(value).__name__} has no JSON form")


def _json_line(record: Mapping[str, Any], position: int) -> bytes:
    try:
        line = orjson.dumps(record, default=_plain, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        line = b"null"  # integers beyond 64 bits: the standard library writes them exactly
    if b"null" not in line:
        return line
    # orjson writes NaN and infinities as null, which would hash another record than the one
    # consumed: the standard library refuses them (DESIGN: a clear error naming the record).
    try:
        return json.dumps(record, default=_plain, ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise InputError(f"example {position}: cannot be hashed as JSON ({exc})") from exc


def tokenizer_file(tokenizer: object, field: str | None = None) -> TokenizerFile:
    """A tokenizer as the kernel takes it: a `tokenizer.json` path, a `tokenizers.Tokenizer`, or a
    Hugging Face fast tokenizer (its backend). An object's JSON (`to_str()`) is what is hashed for
    the batch body's `tokenizer`; it is written once to a file named by that hash in the temporary
    directory, so worker processes load the same tokenizer."""
    if isinstance(tokenizer, TokenizerFile):
        return tokenizer
    if isinstance(tokenizer, (str, Path)):
        return TokenizerFile.open(tokenizer, field)
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    to_str = getattr(backend, "to_str", None)
    if to_str is None:
        raise UsageError(
            f"tokenizer: expected a tokenizer.json path, a tokenizers.Tokenizer or a fast "
            f"Hugging Face tokenizer, found {type(tokenizer).__name__}"
        )
    data = str(to_str()).encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    directory = Path(tempfile.gettempdir()) / "ledger-tokenizers"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{digest}.json"
    if not path.exists():
        temp = directory / f".{digest}.{os.getpid()}.tmp"
        temp.write_bytes(data)
        os.replace(temp, path)
    return TokenizerFile.open(path, field)


def example_hasher(
    tokenizer: object | None = None,
    text_fields: Sequence[str] | None = None,
    token_field: str | None = None,
    min_segment_chars: int = 32,
) -> ExampleHasher:
    """An `ExampleHasher` for these settings (the tokenizer resolved as `tokenizer_file` says)."""
    if isinstance(text_fields, str):
        raise UsageError(f"text_fields: expected a list of dotted paths, found {text_fields!r}")
    if token_field is not None and tokenizer is None:
        raise UsageError("a token field is read only with a tokenizer")
    return ExampleHasher(
        None if tokenizer is None else tokenizer_file(tokenizer, token_field),
        None if text_fields is None else tuple(text_fields),
        min_segment_chars,
    )


def hash_examples(
    examples: Sequence[Any],
    *,
    tokenizer: object | None = None,
    text_fields: Sequence[str] | None = None,
    token_field: str | None = None,
) -> pa.Table:
    """The kernel's table of one step's examples (see the module's doc); for a loop that hashes
    in many places, build one `example_hasher(...)` and call it instead."""
    return example_hasher(tokenizer, text_fields, token_field)(examples)


def uncollate(batch: object) -> list[Any]:
    """A collated batch back as its examples: a mapping of equal-length tensors or lists gives one
    dict per example; a tensor or list gives its rows. For hooks that see only the collated batch
    (Lightning's `on_train_batch_end`); padding added by the collator stays part of each example."""
    if isinstance(batch, Mapping):
        columns = {key: _rows(value) for key, value in batch.items()}
        sizes = {len(rows) for rows in columns.values()}
        if len(sizes) != 1:
            raise InputError(f"a batch whose fields have different lengths ({sorted(sizes)})")
        (size,) = sizes
        return [{key: rows[i] for key, rows in columns.items()} for i in range(size)]
    if isinstance(batch, (list, tuple)) and batch and all(isinstance(b, str) for b in batch):
        return list(batch)
    return _rows(batch)


def _rows(value: object) -> list[Any]:
    if hasattr(value, "tolist"):
        rows = value.tolist()
        return rows if isinstance(rows, list) else [rows]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise InputError(f"cannot split a {type(value).__name__} into examples")
