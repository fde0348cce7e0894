"""The one problem type: a defect a check found, where it was found and what was expected instead."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One defect found by verification: `what` says what was expected and what was found.

    `index` is the log entry it concerns (None when it concerns the log as a whole)."""

    index: int | None
    what: str
