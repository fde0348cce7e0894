"""The one problem type: a defect a check found, where it was found and what was expected instead."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One defect found by verification: `what` says what was expected and what was found.

    `index` is the log entry it concerns (None when it concerns the log as a whole); `where` names the
    part of a document it was found in (a bundle's `entries[3]`, `findings[0]`), for checks of files."""

    index: int | None
    what: str
    where: str | None = None

    @classmethod
    def at(cls, where: str, what: str) -> Problem:
        """A problem found in part `where` of a document (no log entry)."""
        return cls(None, what, where)
