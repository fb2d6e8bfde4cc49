"""The nbgrader pipeline over the course's real assignments (solutions/ and notebooks/).

These run every solutions notebook for real, so they are slow (about a minute per assignment
on 2 cores); tests/test_autograde.py covers the pipeline's behaviour on a small fixture.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from course_lib.autograde import grade, html_text, list_assignments, stale_release, validate

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENTS = list_assignments(REPO)
SEED = "2026"  # a fixed hidden-check seed, different from the graders' default


@pytest.mark.slow
def test_committed_release_is_up_to_date():
    if not ASSIGNMENTS:
        pytest.skip("no assignment in solutions/ yet")
    stale = stale_release(REPO)
    assert stale == [], (
        "notebooks/ is out of date with solutions/: run `course release` and "
        f"commit the result. Stale: {stale}"
    )


# Validating all ten assignments grades twenty notebooks in the sandbox (about 25 minutes on 2
# cores), on top of tests/test_notebooks.py running each of them too. CI validates a light one,
# the attention one and 06 (whose capstone is scored from the referee's record);
# COURSE_VALIDATE_ALL=1 (or `make validate`) covers every assignment.
CI_VALIDATED = {"01-language-models", "04-attention", "06-training"}
VALIDATE_ALL = os.environ.get("COURSE_VALIDATE_ALL") == "1"


def _validated(assignment: str):
    if VALIDATE_ALL or assignment in CI_VALIDATED:
        return assignment
    return pytest.param(
        assignment,
        marks=pytest.mark.skip(
            reason="validated by `make validate` or COURSE_VALIDATE_ALL=1 (CI's time budget)"
        ),
    )


@pytest.mark.slow
@pytest.mark.parametrize("assignment", [_validated(a) for a in ASSIGNMENTS])
def test_solutions_get_full_marks_and_blank_release_zero(assignment, monkeypatch):
    monkeypatch.setenv("COURSE_GRADING_SEED", SEED)
    (result,) = validate([assignment], root=REPO, verbose=False)
    assert result.ok, "\n".join(result.problems)
    assert result.solution_score == result.max_score and result.release_score == 0


@pytest.mark.slow
def test_feedback_for_a_blank_release_hides_the_hidden_tests(tmp_path, monkeypatch):
    # The blank release fails every check, so every check cell has a traceback: the most
    # hidden-test text nbgrader could leak. grade() withholds (and reports) a leaking page.
    if "04-attention" not in ASSIGNMENTS:
        pytest.skip("04-attention is not written yet")
    monkeypatch.setenv("COURSE_GRADING_SEED", SEED)
    course = tmp_path / "course"  # a copy, so the repository's gradebook is not touched
    shutil.copytree(REPO / "solutions" / "04-attention", course / "solutions" / "04-attention")
    shutil.copy(REPO / "nbgrader_config.py", course)
    subs = tmp_path / "subs" / "learner" / "04-attention"
    subs.mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / "04-attention" / "04-attention.ipynb", subs)
    (row,) = grade(tmp_path / "subs", tmp_path / "out", root=course, progress=False)
    assert row.status == "graded" and row.total == 0, row.reason
    assert "withheld" not in row.reason
    (page,) = row.feedback
    text = html_text(page.read_text(encoding="utf-8"))
    assert "hidden=True" not in text and "HIDDEN TESTS" not in text
    assert "not implemented" in text  # the graders' message for an untouched stub is shown
