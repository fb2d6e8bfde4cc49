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
  ``jobs`` worker processes grade at once; this process alone writes the gradebook and
  grades.csv, row by row, so an interrupted run keeps its rows and a re-run resumes.
- ``merge()`` puts together the shards of a class graded on several machines
  (``grade(..., shard_of="K/N")``).

Each public function takes ``root`` (the folder with ``nbgrader_config.py``); by default the
course is found from the current folder upwards, then next to this package.

The modules, in dependency order: ``_course`` (the course folder, its config and grading
secret), ``feedback`` (hidden-test stripping, leak check), ``_sandbox`` (a submission's jail and
referee), ``_submission`` (result rows and per-submission checks), ``preprocessors`` and
``kernels`` (the nbconvert/nbgrader steps; they import nbconvert, so this package does not),
``_nbcourse`` (one nbgrader course driven through NbGraderAPI), ``gradebook`` (copying a
graded submission between gradebooks), ``grades_csv``, ``canary``, ``resume`` (what a re-run
skips), ``_worker`` (the processes of ``--jobs``), ``shard`` (``--shard``/``--merge``),
``release``, ``validate``, ``grade`` and ``cli`` (``register``/``main``). Each module's public
names are its API; tests import the module that owns a name.

Example:
    >>> from course_lib.autograde import stale_release
    >>> stale_release()          # doctest: +SKIP
    []
"""

from __future__ import annotations

from course_lib.autograde._course import (
    SEED_ENV,
    SEED_FILE,
    PipelineError,
    course_root,
    grading_seed,
    list_assignments,
)
from course_lib.autograde._submission import GradeRow
from course_lib.autograde.cli import main, register
from course_lib.autograde.feedback import find_hidden_leaks, html_text, strip_hidden_region
from course_lib.autograde.grade import default_jobs, grade
from course_lib.autograde.grades_csv import write_grades_csv
from course_lib.autograde.release import normalize_notebook, release, stale_release
from course_lib.autograde.shard import merge
from course_lib.autograde.validate import ValidationResult, validate

__all__ = [
    "SEED_ENV",
    "SEED_FILE",
    "GradeRow",
    "PipelineError",
    "ValidationResult",
    "course_root",
    "default_jobs",
    "find_hidden_leaks",
    "grade",
    "grading_seed",
    "html_text",
    "list_assignments",
    "main",
    "merge",
    "normalize_notebook",
    "register",
    "release",
    "stale_release",
    "strip_hidden_region",
    "validate",
    "write_grades_csv",
]
