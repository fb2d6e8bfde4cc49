"""Run one implementation through its checker, keep the result, and tabulate the catches."""

from __future__ import annotations

import time
from dataclasses import dataclass

from grading_impl import Impl

import course_lib.grading as grading


@dataclass(frozen=True)
class Result:
    passed: bool
    message: str
    seconds: float


_RESULTS: dict[str, Result] = {}
CATCH_TABLE: list[str] = []  # filled by test_catch_table, printed at the end of the session


def run_impl(impl: Impl, *, cached: bool = True, hidden: bool = False) -> Result:
    """``check_NAME(impl.fn)``: passed, or the AssertionError's message."""
    key = f"{impl.id}-hidden" if hidden else impl.id
    if cached and key in _RESULTS:
        return _RESULTS[key]
    check = getattr(grading, f"check_{impl.exercise}")
    start = time.perf_counter()
    try:
        check(impl.fn, hidden=hidden)
        passed, message = True, ""
    except AssertionError as exc:
        passed, message = False, str(exc)
    result = Result(passed, message, time.perf_counter() - start)
    _RESULTS[key] = result
    return result
