"""The nbgrader pipeline behind ``course release``, ``course validate`` and ``course grade``.

nbgrader does the real work (stubbing solutions, restoring locked cells, running notebooks,
storing grades); this package drives its Python API with the course's ``nbgrader_config.py``
loaded explicitly and closes the gaps we measured in nbgrader 0.9:

- ``release()`` writes ``notebooks/`` byte for byte the same on every run (volatile metadata
  stripped), so a clean ``git diff`` means the release is up to date (``stale_release()``).
- ``validate()`` autogrades, for real and in a throwaway course folder, the solutions (must
  score full marks) and the blank release (must score zero).
- ``grade()`` never leaves a stale score behind: each submission is graded from scratch, and
  one that cannot be graded (corrupt file, dead kernel, endless loop) gets 0 and a reason.
  Feedback HTML is rendered without hidden tests and checked for leaks before it is kept.

Each public function takes ``root`` (the folder with ``nbgrader_config.py``); by default the
course is found from the current folder upwards, then next to this package.

The code, in dependency order: ``_course`` (the course folder, its config and grading
secret), ``feedback`` (hidden-test stripping, preprocessors, leak check), ``_submission``
(result rows and per-submission checks), ``_nbcourse`` (one nbgrader course driven through
NbGraderAPI), ``release``, ``validate``, ``grade`` and ``cli`` (``register``/``main``).

Example:
    >>> from course_lib.autograde import stale_release
    >>> stale_release()          # doctest: +SKIP
    []
"""

from __future__ import annotations

from typing import Any

from course_lib.autograde import feedback as _feedback
from course_lib.autograde._course import (
    SEED_ENV,
    SEED_FILE,
    PipelineError,
    course_root,
    grading_seed,
    list_assignments,
    log,
)
from course_lib.autograde._submission import _ANSI, GradeRow, _NotebookInfo, _suspicious
from course_lib.autograde.cli import main, register
from course_lib.autograde.feedback import (
    HIDDEN_BEGIN,
    HIDDEN_END,
    SOLUTION_BEGIN,
    autograde_preprocessors,
    find_hidden_leaks,
    html_text,
    strip_hidden_region,
)
from course_lib.autograde.grade import _discover, grade, write_grades_csv
from course_lib.autograde.release import normalize_notebook, release, stale_release
from course_lib.autograde.validate import ValidationResult, validate

__all__ = [
    "HIDDEN_BEGIN", "HIDDEN_END", "SEED_ENV", "SEED_FILE", "SOLUTION_BEGIN", "GradeRow",
    "PipelineError", "StderrIsNotFailure", "StripHiddenTests", "ValidationResult",
    "autograde_preprocessors", "course_root", "find_hidden_leaks", "grade", "grading_seed",
    "html_text", "list_assignments", "log", "main", "normalize_notebook", "register", "release",
    "stale_release", "strip_hidden_region", "validate", "write_grades_csv",
    # used by the tests
    "_ANSI", "_NotebookInfo", "_discover", "_suspicious",
]


def __getattr__(name: str) -> Any:
    # StripHiddenTests and StderrIsNotFailure are built on first use in feedback (they subclass
    # nbconvert's Preprocessor); always hand out feedback's current one.
    if name in _feedback._LAZY_CLASSES:
        return getattr(_feedback, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
