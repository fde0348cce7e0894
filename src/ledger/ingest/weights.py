"""Weights files: every file of a checkpoint, by the path it is recorded under, streamed through SHA-256.

The recorder commits a checkpoint's weights with these hashes and the audit finds a checkpoint by them
(`--weights`), so both read the files the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from ledger.errors import InputError, UsageError

__all__ = ["READ_SIZE", "hash_file", "hash_weights"]

Progress = Callable[[int], None]


def _no_progress(advance: int) -> None:
    return None


READ_SIZE = 1 << 20  # weights are streamed in 1 MiB reads


def hash_file(path: Path, progress: Progress) -> str:
    """Stream a file through SHA-256 in 1 MiB reads, reporting bytes as they go."""
    digest = hashlib.sha256()
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                digest.update(view[:n])
                progress(n)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return digest.hexdigest()


def _weight_files(paths: Sequence[Path]) -> list[tuple[str, Path]]:
    """(recorded path, file) for every weights file: a file by its name, a directory's files relative to it."""
    out: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            if not files:
                raise InputError(f"{path}: the weights directory holds no files")
            out.extend((p.relative_to(path).as_posix(), p) for p in files)
        elif path.is_file():
            out.append((path.name, path))
        else:
            raise InputError(f"{path}: no such weights file or directory")
    names = [name for name, _ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(
            f"weights paths collide: {', '.join(dupes[:5])} (give one directory instead)"
        )
    return out


def hash_weights(
    weights: Sequence[Path | str], progress: Progress | None = None
) -> list[dict[str, str]]:
    """`[{"path", "sha256"}]` for weights files and directories (sorted within a directory)."""
    if not weights:
        raise UsageError("a checkpoint needs at least one weights file or directory")
    advance = progress or _no_progress
    return [
        {"path": name, "sha256": hash_file(p, advance)}
        for name, p in _weight_files([Path(w) for w in weights])
    ]
