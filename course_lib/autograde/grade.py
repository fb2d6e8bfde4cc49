"""``course grade``: autograde a batch of submissions into grades.csv and feedback HTML.

Each submission is graded from scratch; one that cannot be graded gets 0 and a reason.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from course_lib.autograde._course import _grading_env, course_root, grading_seed, list_assignments
from course_lib.autograde._nbcourse import _Course
from course_lib.autograde._submission import GradeRow, _AssignmentInfo

_STUDENT_ID = re.compile(r"^[\w.@-]+$")


def _discover(submissions: Path, known: Sequence[str]) -> list[tuple[str, str, Path | None, str]]:
    """List (student, assignment, folder, problem) for ``SUBMISSIONS/<student>/<assignment>/``."""
    jobs = []
    for student_dir in sorted(p for p in submissions.iterdir() if not p.name.startswith(".")):
        student = student_dir.name
        if not student_dir.is_dir():
            print(f"warning: ignoring {student_dir} (expected a folder per student)", file=sys.stderr)
            continue
        bad_id = "" if _STUDENT_ID.match(student) else (
            f"student folder name {student!r} has characters nbgrader cannot handle: rename it "
            "(letters, digits, '.', '_', '-', '@')")
        before = len(jobs)
        for entry in sorted(p for p in student_dir.iterdir() if not p.name.startswith(".")):
            if entry.is_dir():
                if entry.name not in known:
                    print(f"warning: ignoring {entry}: {entry.name!r} is not an assignment "
                          f"({', '.join(known)})", file=sys.stderr)
                    continue
                jobs.append((student, entry.name, entry, bad_id))
            elif entry.suffix == ".ipynb" and entry.stem in known:
                jobs.append((student, entry.stem, None, bad_id or
                             f"notebook not in its assignment folder: move {student}/{entry.name} "
                             f"to {student}/{entry.stem}/{entry.name}"))
        if len(jobs) == before:
            print(f"warning: nothing to grade in {student_dir} (expected "
                  f"{student}/<assignment>/<assignment>.ipynb)", file=sys.stderr)
    return jobs


def _stage(folder: Path | None, dest: Path) -> Path | None:
    """Copy a submission folder aside (grading clears the course's copy of it first)."""
    if folder is None:
        return None
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return dest


def grade(submissions_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
          root: str | os.PathLike | None = None, timeout: float | None = None,
          feedback: bool = True, progress: bool = True) -> list[GradeRow]:
    """Autograde ``SUBMISSIONS_DIR/<student>/<assignment>/*.ipynb`` into grades.csv and feedback.

    Every submission is graded from scratch (earlier files and gradebook entries removed first),
    with ``COURSE_GRADING_SEED`` set for the hidden checks. A submission that cannot be graded
    gets a row with 0 points, status "failed" and the reason; the rest of the batch goes on.

    Args:
        submissions_dir: one folder per student, one folder per assignment inside.
        out_dir: where grades.csv and feedback/<student>/<assignment>/*.html go
            (default: <root>/grades).
        root: the course root (default: found from the current folder).
        timeout: per-cell time limit in seconds (default: the config's).
        feedback: also render feedback HTML (without hidden tests).
        progress: show a progress bar.

    Returns:
        One row per submission, in the order of grades.csv.
    """
    from tqdm.auto import tqdm

    root = course_root(root)
    submissions = Path(submissions_dir).resolve()
    if not submissions.is_dir():
        raise ValueError(f"{submissions} is not a folder: expected "
                         "SUBMISSIONS_DIR/<student>/<assignment>/<assignment>.ipynb")
    out = Path(out_dir).resolve() if out_dir is not None else root / "grades"
    known = list_assignments(root)
    jobs = _discover(submissions, known)
    if not jobs:
        raise ValueError(f"no submissions in {submissions}: expected "
                         f"<student>/<assignment>/<assignment>.ipynb with an assignment among "
                         f"{', '.join(known)}")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[GradeRow] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="course-grade-") as tmp, \
            _grading_env(grading_seed(root)):
        # Work from a copy: SUBMISSIONS_DIR may be the course's own submitted/ folder (after
        # `nbgrader collect`), which grading clears before each submission.
        jobs = [(s, a, _stage(folder, Path(tmp) / "staged" / s / a), p) for s, a, folder, p in jobs]
        course = _Course(root, release_dir=Path(tmp) / "release", timeout=timeout)
        infos = {a: course.generate(a) for a in sorted({a for _, a, _, _ in jobs})}
        bar = tqdm(jobs, desc="grading", unit="submission", disable=not progress, file=sys.stderr)
        for student, assignment, folder, problem in bar:
            bar.set_postfix_str(f"{student}/{assignment}")
            rows.append(course.grade_submission(student, infos[assignment], folder,
                                                out / "feedback" if feedback else None, problem))
    write_grades_csv(out / "grades.csv", rows, infos)
    failed = sum(r.status == "failed" for r in rows)
    review = sum(r.status == "review" for r in rows)
    print(f"graded {len(rows)} submission(s) in {time.perf_counter() - start:.0f} s: "
          f"{failed} failed, {review} to review -> {out / 'grades.csv'}")
    return rows


def _columns(infos: dict[str, _AssignmentInfo]) -> dict[tuple[str, str, str], str]:
    """One column per graded cell: its grade_id, prefixed only where two would clash."""
    cols: dict[tuple[str, str, str], str] = {}
    taken: set[str] = set()
    for name, info in infos.items():
        for nb in info.notebooks:
            for gid, _ in nb.grade_cells:
                label = gid
                if label in taken:
                    label = f"{name}/{nb.name}/{gid}"
                taken.add(label)
                cols[(name, nb.name, gid)] = label
    return cols


def write_grades_csv(path: Path, rows: Sequence[GradeRow], infos: dict[str, _AssignmentInfo]) -> None:
    """Write grades.csv: student, assignment, one column per exercise, total, max, status, reason."""
    cols = _columns(infos)
    header = ["student", "assignment", *cols.values(), "total", "max", "status", "reason"]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in rows:
            points = {label: "" for label in cols.values()}
            for (nb, gid), score in r.scores.items():
                points[cols[(r.assignment, nb, gid)]] = f"{score:g}"
            writer.writerow([r.student, r.assignment, *points.values(), f"{r.total:g}",
                             f"{r.max_score:g}", r.status, r.reason])
    tmp.replace(path)
