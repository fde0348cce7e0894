"""Reading the provider's own records: Usage API completions pages and receipts (response ids).

Usage files hold pages exactly as `GET /v1/organization/usage/completions` returns them: one page
(`{"object": "page", "data": [buckets], "has_more", "next_page"}`) per file, a JSON array of pages,
or JSON Lines of pages. Receipts are JSON Lines of `{"id": ...}` (optionally `"created"`), or the list
pages of `GET /v1/chat/completions` (stored completions: `{"object": "list", "data": [chat.completion
objects], ...}`), in the same three layouts. Anything else is an `InputError` naming `file:line`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from ledger.errors import InputError
from ledger.spec.reconcile import GROUP_FIELDS, Bucket, Receipt, UsageRow

__all__ = ["read_receipts", "read_usage"]

_RESULT_OBJECT: Final = "organization.usage.completions.result"
_COUNTED: Final = ("num_model_requests", "input_tokens", "output_tokens")
_SHOWN: Final = (
    "input_cached_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "input_cache_write_tokens",
)


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _documents(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, JSON value) of a file: one document (line 1; an array yields its items), or JSON Lines."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad_line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{bad_line}: not UTF-8 text") from None
    if not text.strip():
        raise InputError(f"{path}:1: empty file")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as first:
        lines = text.splitlines()
        if first.lineno == 1 and len([ln for ln in lines if ln.strip()]) == 1:
            raise InputError(f"{path}:1: not JSON ({first.msg})") from None
        for number, line in enumerate(lines, 1):  # JSON Lines
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not JSON ({exc.msg})") from None
        return
    if isinstance(whole, list):
        for item in whole:
            yield 1, item
    else:
        yield 1, whole


def _int(value: object, where: str, name: str, required: bool = True) -> int:
    if value is None and not required:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{where}: expected a count {name} (an integer >= 0), found {value!r}")
    return value


def read_usage(paths: Sequence[Path]) -> list[Bucket]:
    """Every bucket of the given usage pages, in file order (`spec.reconcile.check_buckets` orders them)."""
    buckets: list[Bucket] = []
    for path in paths:
        for line, page in _documents(path):
            where = f"{path}:{line}"
            if not isinstance(page, dict) or page.get("object") != "page":
                found = page.get("object") if isinstance(page, dict) else _kind(page)
                raise InputError(
                    f'{where}: not a usage page: expected an object with "object": "page" (from GET '
                    f"/v1/organization/usage/completions), found {found!r}"
                )
            data = page.get("data")
            if not isinstance(data, list):
                raise InputError(
                    f"{where}: expected a list of buckets as 'data', found {_kind(data)}"
                )
            for b, bucket in enumerate(data):
                buckets.append(_bucket(bucket, where, f"data[{b}]"))
    return buckets


def _bucket(value: object, where: str, at: str) -> Bucket:
    if not isinstance(value, dict) or value.get("object") != "bucket":
        raise InputError(
            f'{where}: {at}: expected a bucket ({{"object": "bucket", ...}}), found {_kind(value)}'
        )
    start = _int(value.get("start_time"), f"{where}: {at}", "start_time")
    end = _int(value.get("end_time"), f"{where}: {at}", "end_time")
    results = value.get("results", value.get("result"))
    if not isinstance(results, list):
        raise InputError(f"{where}: {at}: expected a list 'results', found {_kind(results)}")
    rows = []
    for r, row in enumerate(results):
        here = f"{where}: {at}.results[{r}]"
        if not isinstance(row, dict) or row.get("object") != _RESULT_OBJECT:
            found = row.get("object") if isinstance(row, dict) else _kind(row)
            raise InputError(
                f"{here}: expected a completions result ({_RESULT_OBJECT!r}), found {found!r} "
                "(usage of another endpoint?)"
            )
        counts = [_int(row.get(name), here, name) for name in _COUNTED]
        groups = []
        for name in GROUP_FIELDS:
            group = row.get(name)
            if group is None:
                continue
            expected = bool if name == "batch" else str
            if not isinstance(group, expected):
                raise InputError(
                    f"{here}: expected {expected.__name__} or null as {name!r}, found {group!r}"
                )
            groups.append((name, group))
        extra = tuple(
            (name, _int(row.get(name), here, name)) for name in _SHOWN if row.get(name) is not None
        )
        named = dict(groups)
        model, batch = named.get("model"), named.get("batch")
        others = tuple((k, v) for k, v in groups if k not in ("model", "batch"))
        rows.append(
            UsageRow(
                counts[0],
                counts[1],
                counts[2],
                model if isinstance(model, str) else None,
                batch if isinstance(batch, bool) else None,
                others,
                extra,
            )
        )
    return Bucket(start, end, tuple(rows), f"{where}: {at}")


def read_receipts(paths: Sequence[Path]) -> list[Receipt]:
    """Receipts from JSON Lines of `{"id": ...}` or stored-completions list pages."""
    out: list[Receipt] = []
    for path in paths:
        for line, doc in _documents(path):
            where = f"{path}:{line}"
            if isinstance(doc, dict) and doc.get("object") == "list":
                data = doc.get("data")
                if not isinstance(data, list):
                    raise InputError(
                        f"{where}: expected a list 'data' of chat completions, found {_kind(data)}"
                    )
                for i, item in enumerate(data):
                    out.append(_receipt(item, f"{where}: data[{i}]", stored=True))
            elif isinstance(doc, dict) and "id" in doc:
                out.append(_receipt(doc, where, stored=doc.get("object") == "chat.completion"))
            else:
                raise InputError(
                    f'{where}: not a receipt: expected {{"id": ...}} or a stored-completions list page '
                    f'({{"object": "list", "data": [...]}}), found {_kind(doc)}'
                )
    return out


def _receipt(value: object, where: str, stored: bool) -> Receipt:
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected an object with an 'id', found {_kind(value)}")
    rid = value.get("id")
    if not isinstance(rid, str) or not rid:
        raise InputError(f"{where}: expected a string 'id' (a response id), found {rid!r}")
    created = value.get("created")
    if created is not None and (isinstance(created, bool) or not isinstance(created, int)):
        raise InputError(f"{where}: expected Unix seconds as 'created', found {created!r}")
    return Receipt(rid, created, where, stored)
