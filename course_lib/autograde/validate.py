"""``course validate``: solutions must score full marks, the blank release zero.

Both are autograded for real, in a throwaway copy of the course.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from course_lib.autograde._course import (
    PipelineError,
    course_root,
    grading_env,
    grading_seed,
    list_assignments,
)
from course_lib.autograde._nbcourse import Course, Grading
from course_lib.autograde._sandbox import sandbox_problem


@dataclass
class ValidationResult:
    """Solutions and blank release of one assignment, each autograded for real."""

    assignment: str
    max_score: float
    solution_score: float
    release_score: float
    problems: list[str]
    seconds: float = 0.0  # time to autograde the solutions notebook (one full submission)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_assignments(root: Path, assignments: Sequence[str] | None) -> list[str]:
    known = list_assignments(root)
    if not known:
        raise ValueError(
            f"{root / 'solutions'} holds no assignment: expected solutions/<name>/<name>.ipynb"
        )
    if assignments is None or len(assignments) == 0:
        return known
    if isinstance(assignments, str):
        raise TypeError("assignments must be a list of names, e.g. ['01-language-models']")
    unknown = [a for a in assignments if a not in known]
    if unknown:
        raise ValueError(
            f"unknown assignment(s) {', '.join(unknown)}: choose from {', '.join(known)}"
        )
    return list(assignments)


def validate(
    assignments: Sequence[str] | None = None,
    *,
    root: str | os.PathLike | None = None,
    timeout: float | None = None,
    verbose: bool = True,
) -> list[ValidationResult]:
    """Autograde each assignment's solutions (must score full marks) and blank release (must
    score 0), in a temporary copy of the course; print a table.

    Args:
        assignments: names to check (default: all of ``solutions/``).
        root: the course root (default: found from the current folder).
        timeout: per-cell time limit in seconds (default: the config's).
        verbose: print the table.

    Returns:
        One result per assignment; ``result.ok`` is False when anything is off.
    """
    root = course_root(root)
    names = _check_assignments(root, assignments)
    results = []
    with tempfile.TemporaryDirectory(prefix="course-validate-") as tmp, grading_env(None):
        tmp_root = Path(tmp)
        # The course's own notebooks: sandboxed where bubblewrap works, trusted otherwise.
        grading = Grading(tmp_root, grading_seed(root), unsafe=bool(sandbox_problem()))
        for name in names:
            shutil.copytree(
                root / "solutions" / name,
                tmp_root / "solutions" / name,
                ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
            )
        course = Course(
            tmp_root,
            config_root=root,
            db_path=tmp_root / "gradebook.db",
            exchange_dir=tmp_root / "exchange",
            timeout=timeout,
            grading=grading,
        )
        for name in names:
            try:
                info = course.generate(name)
            except PipelineError as exc:
                results.append(ValidationResult(name, 0.0, 0.0, 0.0, [str(exc).splitlines()[0]]))
                continue
            solution = course.grade_submission("solutions", info, root / "solutions" / name, None)
            blank = course.grade_submission("release", info, info.release_dir, None)
            problems = []
            if solution.status == "failed" or solution.total < info.max_score:
                problems.append(
                    f"solutions score {solution.total:g}/{info.max_score:g}: "
                    f"{solution.reason or solution.status}"
                )
            if blank.status == "failed":
                problems.append(f"the blank release could not be graded: {blank.reason}")
            elif blank.total > 0:
                earned = [gid for (_, gid), s in blank.scores.items() if s > 0]
                problems.append(
                    f"the blank release earns {blank.total:g} points "
                    f"({', '.join(earned)}): a check passes without a solution"
                )
            results.append(
                ValidationResult(
                    name, info.max_score, solution.total, blank.total, problems, solution.seconds
                )
            )
    if verbose:
        _print_validation(results)
    return results


def _print_validation(results: Sequence[ValidationResult]) -> None:
    width = max([len("assignment")] + [len(r.assignment) for r in results])
    print(f"{'assignment':<{width}}  {'solutions':>9}  {'release':>9}  {'grading':>7}  result")
    for r in results:
        print(
            f"{r.assignment:<{width}}  {r.solution_score:>4g}/{r.max_score:<4g}  "
            f"{r.release_score:>4g}/{r.max_score:<4g}  {r.seconds:>6.0f}s  "
            f"{'ok' if r.ok else 'FAIL'}"
        )
        for p in r.problems:
            print(f"{'':<{width}}  - {p}")
