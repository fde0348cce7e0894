"""Small file-system facts the writers of files rely on: a new directory entry made durable, and
whether the process that wrote a temporary file still runs (key files, spool files, spills)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "process_alive"]


def fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable; not every platform can open a directory (then nothing)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
