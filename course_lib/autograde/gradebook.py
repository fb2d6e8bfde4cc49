"""Copy one graded submission from an nbgrader gradebook to another.

``course grade`` grades each submission in a worker's own throwaway gradebook and copies the
result into the course's gradebook, which only the grading command itself writes; ``course
grade --merge`` copies each shard's gradebook into the course's the same way.

Example:
    >>> from nbgrader.api import Gradebook                       # doctest: +SKIP
    >>> with Gradebook(src_url) as src, Gradebook(dst_url) as dst:
    ...     put_submission(dst, take_submission(src, "01-language-models", "ann"))
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

_STUDENT_FIELDS = ("first_name", "last_name", "email", "lms_user_id")
_GRADE_FIELDS = ("auto_score", "manual_score", "extra_credit", "needs_manual_grade")
_COMMENT_FIELDS = ("auto_comment", "manual_comment")


@dataclass
class SubmissionScores:
    """What a gradebook holds about one submission: its grades, comments and flags."""

    assignment: str
    student: str
    student_fields: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime.datetime | None = None
    # (notebook, cell name) -> the fields of _GRADE_FIELDS / _COMMENT_FIELDS
    grades: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    comments: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)  # flagged, late penalty

    @property
    def score(self) -> float:
        """The submission's total, as nbgrader computes it (manual score over auto score)."""
        total = 0.0
        for g in self.grades.values():
            score = g["manual_score"] if g["manual_score"] is not None else g["auto_score"]
            total += (score or 0.0) + (g["extra_credit"] or 0.0)
        return total


def take_submission(gb: Any, assignment: str, student: str) -> SubmissionScores | None:
    """Read ``student``'s ``assignment`` from gradebook ``gb`` (None when it has none)."""
    from nbgrader.api import MissingEntry

    try:
        sub = gb.find_submission(assignment, student)
    except MissingEntry:
        return None
    out = SubmissionScores(assignment, student, timestamp=sub.timestamp)
    out.student_fields = {
        k: getattr(sub.student, k)
        for k in _STUDENT_FIELDS
        if getattr(sub.student, k, None) is not None
    }
    for nb in sub.notebooks:
        out.notebooks[nb.name] = {
            "flagged": nb.flagged,
            "late_submission_penalty": nb.late_submission_penalty,
        }
        for g in nb.grades:
            out.grades[(nb.name, g.name)] = {k: getattr(g, k) for k in _GRADE_FIELDS}
        for c in nb.comments:
            out.comments[(nb.name, c.name)] = {k: getattr(c, k) for k in _COMMENT_FIELDS}
    return out


def forget_submission(gb: Any, assignment: str, student: str) -> None:
    """Remove ``student``'s ``assignment`` from gradebook ``gb``, if it is there."""
    from nbgrader.api import MissingEntry

    try:
        gb.remove_submission(assignment, student)
    except MissingEntry:
        pass


def put_submission(gb: Any, scores: SubmissionScores) -> None:
    """Write ``scores`` into gradebook ``gb``, replacing any earlier grading of it.

    The assignment must be in ``gb`` already (``Course.generate`` puts it there); a cell the
    gradebook does not know (the assignment changed since) raises ``ValueError``.
    """
    from nbgrader.api import MissingEntry

    forget_submission(gb, scores.assignment, scores.student)
    gb.update_or_create_student(scores.student, **scores.student_fields)
    kwargs = {"timestamp": scores.timestamp} if scores.timestamp is not None else {}
    gb.add_submission(scores.assignment, scores.student, **kwargs)
    try:
        for (nb, name), values in scores.grades.items():
            grade = gb.find_grade(name, nb, scores.assignment, scores.student)
            for k, v in values.items():
                setattr(grade, k, v)
        for (nb, name), values in scores.comments.items():
            comment = gb.find_comment(name, nb, scores.assignment, scores.student)
            for k, v in values.items():
                setattr(comment, k, v)
        for nb, values in scores.notebooks.items():
            notebook = gb.find_submission_notebook(nb, scores.assignment, scores.student)
            for k, v in values.items():
                setattr(notebook, k, v)
    except MissingEntry as exc:
        gb.db.rollback()
        forget_submission(gb, scores.assignment, scores.student)
        raise ValueError(
            f"the gradebook's {scores.assignment} does not match the graded one "
            f"({exc}): regenerate the assignment and grade again"
        ) from exc
    gb.db.commit()
