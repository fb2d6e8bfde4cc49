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

from course_lib.autograde._course import (
    PipelineError,
    _grading_env,
    course_root,
    grading_seed,
    list_assignments,
)
from course_lib.autograde._nbcourse import _Course, _Grading
from course_lib.autograde._sandbox import SANDBOX_FIX, sandbox_problem
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
            if entry.is_symlink():
                if entry.name in known or entry.stem in known:
                    jobs.append((student, entry.name if entry.name in known else entry.stem, None,
                                 f"{student}/{entry.name} is a symbolic link: refused (hand in "
                                 "the folder or notebook itself)"))
                continue
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
    # Links stay links (symlinks=True): grading refuses them instead of following them to
    # whatever file they name.
    shutil.copytree(folder, dest, symlinks=True,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return dest


def grade(submissions_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
          root: str | os.PathLike | None = None, timeout: float | None = None,
          feedback: bool = True, progress: bool = True, unsafe: bool = False,
          notebook_timeout: float | None = 1800) -> list[GradeRow]:
    """Autograde ``SUBMISSIONS_DIR/<student>/<assignment>/*.ipynb`` into grades.csv and feedback.

    Every submission is graded from scratch (earlier files and gradebook entries removed first)
    in its own sandbox (``_sandbox.Jail``), and its check cells are scored from the verdicts of
    a referee started here, which alone knows the seed of the hidden checks. A submission that
    cannot be graded gets a row with 0 points, status "failed" and the reason; the rest of the
    batch goes on.

    Args:
        submissions_dir: one folder per student, one folder per assignment inside.
        out_dir: where grades.csv and feedback/<student>/<assignment>/*.html go
            (default: <root>/grades).
        root: the course root (default: found from the current folder).
        timeout: per-cell time limit in seconds (default: the config's).
        feedback: also render feedback HTML (without hidden tests).
        progress: show a progress bar.
        notebook_timeout: seconds a whole notebook may run; the cells after it are not run
            (and score 0). None: no limit beyond the per-cell one.
        unsafe: grade without the sandbox when bubblewrap is unavailable (a submission can
            then write anywhere the grading user can); refused otherwise.

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
    problem = sandbox_problem()
    if problem and not unsafe:
        raise PipelineError(f"REFUSING TO GRADE: {problem}, so a submission could rewrite the "
                            f"course, the gradebook or other submissions. Fix: {SANDBOX_FIX}")
    if problem:
        print(f"WARNING: grading WITHOUT a sandbox (--unsafe): {problem}. Submissions run with "
              "your rights and can change the course, the gradebook and each other.",
              file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[GradeRow] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="course-grade-") as tmp, _grading_env(None):
        # Work from a copy: SUBMISSIONS_DIR may be the course's own submitted/ folder (after
        # `nbgrader collect`), which grading clears before each submission.
        jobs = [(s, a, _stage(folder, Path(tmp) / "staged" / s / a), p) for s, a, folder, p in jobs]
        grading = _Grading(Path(tmp), grading_seed(root), unsafe=bool(problem),
                           notebook_timeout=notebook_timeout)
        course = _Course(root, release_dir=Path(tmp) / "release", timeout=timeout,
                         grading=grading)
        infos = {a: course.generate(a) for a in sorted({a for _, a, _, _ in jobs})}
        canary = _Canary(root, Path(tmp), grading, timeout, out / _CANARY_CACHE)
        canary.check(infos, "start")  # raises: nothing graded, nothing published
        staged_feedback = Path(tmp) / "feedback"  # published only once the end canary passed
        bar = tqdm(jobs, desc="grading", unit="submission", disable=not progress, file=sys.stderr)
        for student, assignment, folder, problem in bar:
            bar.set_postfix_str(f"{student}/{assignment}")
            rows.append(course.grade_submission(student, infos[assignment], folder,
                                                staged_feedback if feedback else None, problem))
        canary.check(infos, "end")
        if feedback:
            _publish_feedback(rows, staged_feedback, out / "feedback")
    write_grades_csv(out / "grades.csv", rows, infos)
    failed = sum(r.status == "failed" for r in rows)
    review = sum(r.status == "review" for r in rows)
    print(f"graded {len(rows)} submission(s) in {time.perf_counter() - start:.0f} s: "
          f"{failed} failed, {review} to review -> {out / 'grades.csv'}")
    return rows


_CANARY_CACHE = ".canary.json"


class _Canary:
    """The batch's canary: the solutions must score full marks, the blank release 0.

    Graded (in a throwaway course, with this run's sandbox and seed) at the start and at the end
    of a run. A passed canary is remembered by the hash of everything its result depends on
    (course_lib's code, the notebooks, the config, a hash of the seed): the same inputs give
    the same scores, so an unchanged course is not graded again, not even at the end of a run.
    """

    def __init__(self, root: Path, tmp: Path, grading: _Grading, timeout: float | None,
                 cache: Path) -> None:
        self.root, self.tmp, self.grading, self.timeout, self.cache = root, tmp, grading, timeout, cache
        self.graded = 0  # canary gradings done (0 when the cache answered)

    def _key(self, info: _AssignmentInfo) -> str:
        import hashlib

        import course_lib

        h = hashlib.sha256()
        files = sorted(Path(course_lib.__file__).parent.rglob("*.py"))
        files += sorted((self.root / "solutions" / info.name).rglob("*.ipynb"))
        files += [self.root / "nbgrader_config.py"]  # (the release is made from these)
        for path in files:
            h.update(str(path).encode() + b"\0" + path.read_bytes())
        h.update(hashlib.sha256(self.grading.seed.encode()).digest())
        h.update(repr((self.timeout, self.grading.unsafe)).encode())
        return h.hexdigest()

    def _cached(self) -> dict:
        import json

        try:
            return json.loads(self.cache.read_text())
        except (OSError, ValueError):
            return {}

    def check(self, infos: dict[str, _AssignmentInfo], when: str) -> None:
        import json

        cached = self._cached()
        for name, info in infos.items():
            key = self._key(info)
            if cached.get(name) == key:
                continue
            problems = self._grade(info, when)
            if problems:
                raise PipelineError(f"canary failed at the {when} of the run, so nothing was "
                                    f"published: {'; '.join(problems)}. The course or the "
                                    "grading machinery is broken (or was tampered with): run "
                                    f"`course validate {name}`")
            cached[name] = key
            tmp = self.cache.with_suffix(".tmp")
            tmp.write_text(json.dumps(cached, indent=1))
            tmp.replace(self.cache)

    def _grade(self, info: _AssignmentInfo, when: str) -> list[str]:
        folder = self.tmp / f"canary-{when}-{info.name}"
        shutil.copytree(self.root / "solutions" / info.name, folder / "solutions" / info.name,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        course = _Course(folder, config_root=self.root, db_path=folder / "gradebook.db",
                         release_dir=folder / "release", exchange_dir=folder / "exchange",
                         timeout=self.timeout, grading=self.grading)
        info = course.generate(info.name)
        solution = course.grade_submission("canary-solutions", info,
                                           self.root / "solutions" / info.name, None)
        blank = course.grade_submission("canary-release", info, info.release_dir, None)
        self.graded += 2
        problems = []
        if solution.total < info.max_score:
            problems.append(f"the solutions of {info.name} scored {solution.total:g}/"
                            f"{info.max_score:g} ({solution.reason or solution.status})")
        if blank.status == "failed" or blank.total > 0:
            problems.append(f"the blank release of {info.name} scored {blank.total:g} "
                            f"({blank.reason or blank.status})")
        return problems


def _publish_feedback(rows: Sequence[GradeRow], staged: Path, dest: Path) -> None:
    """Move each row's feedback from the staging folder to ``dest`` (replacing older pages)."""
    for row in rows:
        target = dest / row.student / row.assignment
        pages = []
        for page in row.feedback:
            if target.exists() and target.resolve() != page.parent.resolve() and not pages:
                for old in target.glob("*.html"):
                    old.unlink()
            target.mkdir(parents=True, exist_ok=True)
            if (target / page.name).resolve() != page.resolve():
                shutil.copyfile(page, target / page.name)
            pages.append(target / page.name)
        row.feedback = pages
    shutil.rmtree(staged, ignore_errors=True)


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


_TAIL = ["total", "max", "status", "reason"]


def write_grades_csv(path: Path, rows: Sequence[GradeRow], infos: dict[str, _AssignmentInfo]) -> None:
    """Write grades.csv: student, assignment, one column per exercise, total, max, status, reason.

    Rows of an existing grades.csv are kept, except those of the (student, assignment) pairs
    graded now, which are replaced: grading one late submission leaves the others' rows alone.
    """
    cols = _columns(infos)
    old_rows: list[dict[str, str]] = []
    old_cols: list[str] = []
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            if fields[:2] == ["student", "assignment"] and fields[-4:] == _TAIL:
                old_cols = fields[2:-4]
                now = {(r.student, r.assignment) for r in rows}
                old_rows = [r for r in reader if (r["student"], r["assignment"]) not in now]
    labels = list(cols.values()) + [c for c in old_cols if c not in cols.values()]
    header = ["student", "assignment", *labels, *_TAIL]
    table = [{k: v or "" for k, v in r.items() if k in header} for r in old_rows]
    for r in rows:
        points = {label: "" for label in labels}
        for (nb, gid), score in r.scores.items():
            points[cols[(r.assignment, nb, gid)]] = f"{score:g}"
        table.append({"student": r.student, "assignment": r.assignment, **points,
                      "total": f"{r.total:g}", "max": f"{r.max_score:g}", "status": r.status,
                      "reason": r.reason})
    table.sort(key=lambda r: (r["student"], r["assignment"]))
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(table)
    tmp.replace(path)
