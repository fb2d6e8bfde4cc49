"""What the grader tests hand in: learner-style implementations, right and wrong.

Each ``impl_*.py`` module lists ``IMPLS``: for every exercise the reference-equivalent version
(written here, never imported from course_lib), alternative correct versions (another dtype,
library call or tie-break) and realistic buggy versions, each with a distinctive piece of the
message its grader must give.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Impl:
    exercise: str
    kind: str  # "reference", "alternative" or "bug"
    fn: Callable
    expect: str | None = None  # for a bug: a distinctive substring of the failure message

    @property
    def id(self) -> str:
        return f"{self.exercise}-{self.kind}-{self.fn.__name__}"


def right(exercise: str, fn: Callable, kind: str = "alternative") -> Impl:
    return Impl(exercise, kind, fn)


def bug(exercise: str, expect: str) -> Callable[[Callable], Impl]:
    """Decorator: register ``fn`` as a buggy version whose failure message contains ``expect``."""

    def register(fn: Callable) -> Impl:
        return Impl(exercise, "bug", fn, expect)

    return register


def _collect() -> list[Impl]:
    """The ``IMPLS`` of every ``impl_*.py`` beside this file, in file-name order."""
    impls: list[Impl] = []
    for path in sorted(Path(__file__).parent.glob("impl_*.py")):
        impls += importlib.import_module(path.stem).IMPLS
    return impls


ALL: list[Impl] = _collect()
