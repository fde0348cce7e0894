"""Token ids as texts (DESIGN.md "Tokenized records"): what the kernel compares of a record stored
as token ids.

With a Hugging Face `tokenizer.json` (read with the `tokenizers` library), every list of integers
under the token field (a dotted path, lists traversed at any step, as `--text-field`) is cut at the
tokenizer's special tokens, so that a packed sequence `doc1 <eos> doc2 <eos> doc3` gives one text
per document, and each piece is decoded on its own. The record's digest is untouched: it is still
the JCS of the record as stored.

`TokenizerFile` is what the kernel's options carry (a path and the file's sha256, small enough to
send to every worker); each process loads the tokenizer once (`decoder`), checking that the file is
still the one hashed.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ledger.errors import InputError, UsageError

__all__ = ["DEFAULT_TOKEN_FIELD", "TokenDecoder", "TokenizerFile", "decoder"]

DEFAULT_TOKEN_FIELD: Final = "input_ids"


@dataclass(frozen=True)
class TokenizerFile:
    """A tokenizer file as recorded: where it is, its hex sha256, and the token field it decodes."""

    path: str
    sha256: str
    field: str = DEFAULT_TOKEN_FIELD

    @classmethod
    def open(cls, path: Path | str, field: str | None = None) -> TokenizerFile:
        """Hash and load the file once here, so that a bad one fails before any work (InputError)."""
        field = DEFAULT_TOKEN_FIELD if field is None else field
        if not isinstance(field, str) or not field or "" in field.split("."):
            raise UsageError(f"token field {field!r}: expected a dotted path such as input_ids")
        data = _read(Path(path))
        spec = cls(str(path), hashlib.sha256(data).hexdigest(), field)
        decoder(spec)
        return spec


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the tokenizer ({exc.strerror or exc})") from exc


class TokenDecoder:
    """One loaded tokenizer: the texts of a record's token ids."""

    def __init__(self, spec: TokenizerFile, tokenizer: Any) -> None:
        self._path = spec.path
        self._steps = spec.field.split(".")
        self._tokenizer = tokenizer
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        special = np.zeros(self.vocab_size, dtype=np.bool_)
        for token_id, token in tokenizer.get_added_tokens_decoder().items():
            if token.special and 0 <= token_id < self.vocab_size:
                special[token_id] = True
        self._special: npt.NDArray[np.bool_] = special

    def texts(self, record: object) -> list[str] | None:
        """The decoded pieces of every token id list under the field, in document order; None
        when the record has no value there. A value that is not a list of integer ids, or an id
        outside the vocabulary, is a ValueError saying so."""
        if not isinstance(record, dict):
            return None
        lists: list[list[Any]] = []
        if not _collect(record, self._steps, 0, lists):
            return None
        out: list[str] = []
        for ids in lists:
            out.extend(self.pieces(ids))
        return out

    def pieces(self, ids: Sequence[Any]) -> list[str]:
        """One token id list cut at the special tokens, each non-empty piece decoded."""
        if not ids:
            return []
        if not set(map(type, ids)) <= {int}:
            bad = next(t for t in ids if type(t) is not int)
            raise ValueError(
                f"token field {'.'.join(self._steps)!r}: expected a list of integer token ids, "
                f"found {_kind(bad)} {bad!r}"[:200]
            )
        low, high = min(ids), max(ids)
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"token id {bad} is outside the vocabulary of {self._path} "
                f"({self.vocab_size} tokens)"
            )
        array = np.array(ids, dtype=np.int64)
        cuts = np.flatnonzero(self._special[array])
        decode = self._tokenizer.decode
        if not len(cuts):
            return [decode(ids)]
        starts = [0, *(cuts + 1).tolist()]
        ends = [*cuts.tolist(), len(ids)]
        return [decode(ids[a:b]) for a, b in zip(starts, ends, strict=True) if b > a]


def _kind(value: object) -> str:
    return "a boolean" if isinstance(value, bool) else f"a {type(value).__name__}"


def _collect(value: object, steps: Sequence[str], at: int, out: list[list[Any]]) -> bool:
    """Gather the token id lists under `steps[at:]` of `value` into `out`; whether the path
    reached a value at all. Lists are traversed on the way; at the end, a list of lists is
    traversed too, and a list (even empty) of anything else is one token id list."""
    if at == len(steps):
        if isinstance(value, list):
            if value and all(isinstance(v, list) for v in value):
                for v in value:
                    _collect(v, steps, at, out)
            else:
                out.append(value)
            return True
        if value is None:
            return False
        raise ValueError(
            f"token field {'.'.join(steps)!r}: expected a list of integer token ids, "
            f"found {_kind(value)}"
        )
    if isinstance(value, list):
        found = False
        for item in value:
            found = _collect(item, steps, at, out) or found
        return found
    if isinstance(value, dict) and steps[at] in value:
        return _collect(value[steps[at]], steps, at + 1, out)
    return False


@functools.lru_cache(maxsize=4)
def decoder(spec: TokenizerFile) -> TokenDecoder:
    """The tokenizer of `spec`, loaded once per process; InputError naming the file if it cannot be
    loaded or is no longer the file that was hashed."""
    from tokenizers import Tokenizer

    data = _read(Path(spec.path))
    if hashlib.sha256(data).hexdigest() != spec.sha256:
        raise InputError(f"{spec.path}: the tokenizer file changed while recording")
    try:
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:  # the library raises a bare Exception for a file it cannot read
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"{spec.path}: not a Hugging Face tokenizer.json the tokenizers library can load "
            f"({first})"
        ) from exc
    return TokenDecoder(spec, tokenizer)
