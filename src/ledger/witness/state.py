"""A witness's persisted view: per log origin, the size and root hash of the latest checkpoint it cosigned.

Durability and atomicity contract (C2SP tlog-witness: "checking the old size against the latest
checkpoint and persisting the new checkpoint must be performed atomically"): every decision is made
by a committer that holds an exclusive `flock` on `<state>.lock`, has just re-read the file, and
then writes the new views to `<state>.tmp`, fsyncs it, renames it over the state file and fsyncs
the directory before any caller learns its outcome. A reader sees the old file or the new one,
never a mix; a `kill -9` at any moment leaves one of the two; and an answer is only sent after its
view is on disk. Two processes sharing one state file serialize on the lock, so neither can roll
the other back.

Group commit: requests that arrive while a write is in flight queue up, and the next committer
decides them in arrival order (each seeing the views the earlier ones produced) and persists them
with one write, so throughput is not one fsync per cosignature.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.errors import InputError, LedgerError
from ledger.spec.keys import b64decode_canonical, b64encode
from ledger.spec.note import MAX_TREE_SIZE

__all__ = ["STATE_FORMAT", "LogView", "WitnessState"]

STATE_FORMAT = "ledger-witness-state/1"


@dataclass
class _Pending:
    """One queued `advance`: its inputs and, once committed, its outcome."""

    origin: str
    decide: Callable[[LogView | None], LogView]
    old: LogView | None = None
    new: LogView | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass(frozen=True)
class LogView:
    """The latest checkpoint a witness cosigned for one log: its size and root hash."""

    size: int
    root: bytes


class WitnessState:
    """The witness's view of every log it serves, kept in one JSON file (see the module contract)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._mutex = threading.Lock()  # one committer at a time (the flock covers other processes)
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._views: dict[str, LogView] = {}
        self._stamp: tuple[int, int, int] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise InputError(
                f"{self.path}: cannot open the witness state: {exc.strerror}"
            ) from None
        with self._mutex, self._locked():
            self._reload()

    def close(self) -> None:
        """Release the lock file descriptor."""
        os.close(self._lock_fd)

    def views(self) -> dict[str, LogView]:
        """A snapshot of every log's view, re-read from the file."""
        with self._mutex, self._locked():
            self._reload()
            return dict(self._views)

    def latest(self, origin: str) -> LogView | None:
        """The view of one log, or None when the witness never cosigned it."""
        return self.views().get(origin)

    def advance(
        self, origin: str, decide: Callable[[LogView | None], LogView]
    ) -> tuple[LogView | None, LogView]:
        """Atomically: read `origin`'s current view, let `decide` return the next one (or raise to
        refuse), persist it, and return (old view, new view). Nothing is written when it is unchanged.

        `decide` runs under the lock, possibly in another request's thread (group commit); what it
        raises is raised here. An OSError while persisting fails every request of that batch.
        """
        pending = _Pending(origin, decide)
        with self._queue_lock:
            self._queue.append(pending)
        while not pending.done:
            with self._mutex:
                if pending.done:
                    break
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                with self._locked():
                    self._commit(batch)
        if pending.error is not None:
            raise pending.error
        assert pending.new is not None
        return pending.old, pending.new

    # --------------------------------------------------------------------------- internals

    def _commit(self, batch: list[_Pending]) -> None:
        """Decide `batch` in order against the file's views and persist them with one write."""
        try:
            self._reload()
            views = dict(self._views)
            for pending in batch:
                pending.old = views.get(pending.origin)
                try:
                    pending.new = pending.decide(pending.old)
                except Exception as exc:  # noqa: BLE001 - a refusal travels back to its request
                    pending.error = exc
                    continue
                views[pending.origin] = pending.new
            if views != self._views:
                self._write(views)
                self._views = views
        except (OSError, LedgerError) as exc:
            for pending in batch:
                if pending.error is None:
                    pending.error = exc
            self._stamp = None  # re-read before the next decision: the file is the truth
        finally:
            for pending in batch:
                pending.done = True

    def _locked(self) -> _FileLock:
        return _FileLock(self._lock_fd)

    def _reload(self) -> None:
        """Re-read the file when another process replaced it since we last read or wrote it."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._views, self._stamp = {}, None
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise InputError(
                f"{self.path}: cannot read the witness state: {exc.strerror}"
            ) from None
        self._views = _parse_state(data, self.path)
        self._stamp = stamp

    def _write(self, views: dict[str, LogView]) -> None:
        document = {
            "format": STATE_FORMAT,
            "logs": {
                origin: {"size": view.size, "root": b64encode(view.root)}
                for origin, view in sorted(views.items())
            },
        }
        data = (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self._tmp, self.path)
        _fsync_dir(self.path.parent)
        st = os.stat(self.path)
        self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)


class _FileLock:
    """An exclusive `flock` for the duration of a `with` block (between processes)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_state(data: bytes, path: Path) -> dict[str, LogView]:
    """The views in a state file; anything else is refused (never silently reset a witness)."""

    def bad(what: str) -> InputError:
        return InputError(f"{path}: not a witness state file ({what}); refusing to start afresh")

    try:
        document: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"invalid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
        raise bad(f"expected format {STATE_FORMAT!r}")
    logs = document.get("logs")
    if not isinstance(logs, dict):
        raise bad("expected an object 'logs'")
    views: dict[str, LogView] = {}
    for origin, entry in logs.items():
        size = entry.get("size") if isinstance(entry, dict) else None
        root = entry.get("root") if isinstance(entry, dict) else None
        raw = b64decode_canonical(root) if isinstance(root, str) else None
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or not 0 <= size <= MAX_TREE_SIZE
            or raw is None
            or len(raw) != 32
        ):
            raise bad(f"log {origin!r:.80}: expected a size and a base64 32-byte root")
        views[origin] = LogView(size, raw)
    return views
