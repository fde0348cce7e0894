"""What a verification run returns (`VerifyReport`) and how its problems are collected on the way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ledger.spec.problems import Problem

# A store session (see `ledger.log.store.session`); opaque here: only `ledger.log.store.verify` reads it.
Connection: TypeAlias = Any
Opener = Callable[[], AbstractContextManager[Connection]]

MAX_PROBLEMS = 1000  # beyond this a report says how many more there were instead of listing them


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of `verify_ledger`: the recomputed log size and root, and every problem found."""

    ok: bool
    size: int
    root: bytes
    problems: list[Problem] = field(default_factory=list)
    # batch entry index -> records with at least one segment, for every record set recomputed
    records_with_text: dict[int, int] = field(default_factory=dict)

    def with_problem(self, what: str, index: int | None = None) -> VerifyReport:
        """This report with one more problem (a check made after the run, such as a witness quorum)."""
        return VerifyReport(
            False,
            self.size,
            self.root,
            [*self.problems, Problem(index, what)],
            self.records_with_text,
        )


class ProblemList:
    """Collects problems up to MAX_PROBLEMS and counts the rest, so a wrecked file cannot exhaust memory."""

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.dropped = 0

    def add(self, index: int | None, what: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(Problem(index, what))
        else:
            self.dropped += 1

    def extend(self, problems: Sequence[Problem]) -> None:
        for problem in problems:
            self.add(problem.index, problem.what)

    def seen(self) -> int:
        """Problems added so far, listed or not (a check compares it before and after to see if it found any)."""
        return len(self.items) + self.dropped

    def result(self) -> list[Problem]:
        if not self.dropped:
            return list(self.items)
        return [*self.items, Problem(None, f"{self.dropped} more problems not listed")]
