"""``course grade``: autograde a batch of submissions into grades.csv, gradebook and feedback.

Each submission is graded from scratch, in its own sandbox with its own referee, by one of
``jobs`` worker processes (``_worker``); one that cannot be graded gets 0 and a reason. This
process alone writes the gradebook, grades.csv and the feedback folder, one submission at a
time as each finishes, so an interrupted run keeps every finished row and a re-run resumes
(``resume``). ``shard`` slices a class across machines and merges the slices back.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from course_lib.autograde import grades_csv, shard
from course_lib.autograde._course import (
    PipelineError,
    course_root,
    grading_env,
    grading_seed,
    list_assignments,
)
from course_lib.autograde._nbcourse import Course, Grading
from course_lib.autograde._sandbox import SANDBOX_FIX, sandbox_problem
from course_lib.autograde._submission import AssignmentInfo, GradeRow, make_writable
from course_lib.autograde._worker import Done, Pool, Setup, Task
from course_lib.autograde.canary import CACHE as CANARY_CACHE
from course_lib.autograde.canary import Canary, course_version
from course_lib.autograde.grades_csv import write_grades_csv
from course_lib.autograde.resume import FILE as RESUME_FILE
from course_lib.autograde.resume import ResumeLog, grading_key, submission_digest

# The nbgrader folders of a graded submission, copied into the course (or a shard's folder).
NBGRADER_STEPS = ("submitted", "autograded", "feedback")

_STUDENT_ID = re.compile(r"^[\w.@-]+$")


def discover(submissions: Path, known: Sequence[str]) -> list[tuple[str, str, Path | None, str]]:
    """List (student, assignment, folder, problem) for ``SUBMISSIONS/<student>/<assignment>/``."""
    jobs = []
    for student_dir in sorted(p for p in submissions.iterdir() if not p.name.startswith(".")):
        student = student_dir.name
        if not student_dir.is_dir():
            print(
                f"warning: ignoring {student_dir} (expected a folder per student)", file=sys.stderr
            )
            continue
        bad_id = (
            ""
            if _STUDENT_ID.match(student)
            else (
                f"student folder name {student!r} has characters nbgrader cannot handle: rename it "
                "(letters, digits, '.', '_', '-', '@')"
            )
        )
        before = len(jobs)
        for entry in sorted(p for p in student_dir.iterdir() if not p.name.startswith(".")):
            if entry.is_symlink():
                if entry.name in known or entry.stem in known:
                    jobs.append(
                        (
                            student,
                            entry.name if entry.name in known else entry.stem,
                            None,
                            f"{student}/{entry.name} is a symbolic link: refused (hand in "
                            "the folder or notebook itself)",
                        )
                    )
                continue
            if entry.is_dir():
                if entry.name not in known:
                    print(
                        f"warning: ignoring {entry}: {entry.name!r} is not an assignment "
                        f"({', '.join(known)})",
                        file=sys.stderr,
                    )
                    continue
                jobs.append((student, entry.name, entry, bad_id))
            elif entry.suffix == ".ipynb" and entry.stem in known:
                jobs.append(
                    (
                        student,
                        entry.stem,
                        None,
                        bad_id
                        or f"notebook not in its assignment folder: move {student}/{entry.name} "
                        f"to {student}/{entry.stem}/{entry.name}",
                    )
                )
        if len(jobs) == before:
            print(
                f"warning: nothing to grade in {student_dir} (expected "
                f"{student}/<assignment>/<assignment>.ipynb)",
                file=sys.stderr,
            )
    return jobs


def default_jobs() -> int:
    """The cores this process may use (``--jobs`` default)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _stage(folder: Path | None, dest: Path) -> Path | None:
    """Copy a submission folder aside (the course's copy of it is replaced once graded)."""
    if folder is None:
        return None
    # Links stay links (symlinks=True): grading refuses them instead of following them to
    # whatever file they name.
    shutil.copytree(
        folder, dest, symlinks=True, ignore=shutil.ignore_patterns(".ipynb_checkpoints")
    )
    return dest


def grade(
    submissions_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
    timeout: float | None = None,
    feedback: bool = True,
    progress: bool = True,
    unsafe: bool = False,
    notebook_timeout: float | None = 1800,
    jobs: int | None = None,
    shard_of: str | tuple[int, int] | None = None,
    force: bool = False,
) -> list[GradeRow]:
    """Autograde ``SUBMISSIONS_DIR/<student>/<assignment>/*.ipynb`` into grades.csv and feedback.

    Every submission is graded from scratch in its own sandbox (``_sandbox.Jail``), by one of
    ``jobs`` worker processes, and its check cells are scored from the verdicts of a referee,
    which alone knows the seed of the hidden checks. A submission that cannot be graded gets a
    row with 0 points, status "failed" and the reason; the rest of the batch goes on. Rows
    reach grades.csv and the gradebook as each submission finishes: Ctrl-C keeps them all.

    A submission graded before into ``out_dir`` with the same files, seed and course version
    is skipped (its row stays), unless ``force``.

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
        jobs: submissions graded at the same time (default: the number of cores).
        shard_of: "K/N" (or (K, N)): grade only the K-th of N slices of the class (by student
            id); the gradebook then goes to ``out_dir/course/`` for ``merge``.
        force: grade again what was graded before.

    Returns:
        One row per submission of the batch (skipped ones read back from grades.csv), sorted
        by student and assignment.
    """
    from tqdm.auto import tqdm

    root = course_root(root)
    submissions = Path(submissions_dir).resolve()
    if not submissions.is_dir():
        raise ValueError(
            f"{submissions} is not a folder: expected "
            "SUBMISSIONS_DIR/<student>/<assignment>/<assignment>.ipynb"
        )
    out = Path(out_dir).resolve() if out_dir is not None else root / "grades"
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    slice_ = shard.parse(shard_of) if shard_of is not None else None
    known = list_assignments(root)
    found = discover(submissions, known)
    if not found:
        raise ValueError(
            f"no submissions in {submissions}: expected "
            f"<student>/<assignment>/<assignment>.ipynb with an assignment among "
            f"{', '.join(known)}"
        )
    whole_class = sorted((s, a) for s, a, _, _ in found)
    if slice_ is not None:
        found = [j for j in found if shard.of(j[0], slice_[1]) == slice_[0]]
    problem = sandbox_problem()
    if problem and not unsafe:
        raise PipelineError(
            f"REFUSING TO GRADE: {problem}, so a submission could rewrite the "
            f"course, the gradebook or other submissions. Fix: {SANDBOX_FIX}"
        )
    if problem:
        print(
            f"WARNING: grading WITHOUT a sandbox (--unsafe): {problem}. Submissions run with "
            "your rights and can change the course, the gradebook and each other.",
            file=sys.stderr,
        )
    out.mkdir(parents=True, exist_ok=True)
    course_dir = root if slice_ is None else out / shard.COURSE
    if slice_ is not None:
        course_dir.mkdir(exist_ok=True)
        shard.write_manifest(
            out, slice_, whole_class, sorted((s, a) for s, a, _, _ in found), finished=False
        )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="course-grade-") as tmp, grading_env(None):
        seed = grading_seed(root)
        grading = Grading(Path(tmp), seed, unsafe=bool(problem), notebook_timeout=notebook_timeout)
        db = None if slice_ is None else course_dir / "gradebook.db"
        course = Course(
            root, release_dir=Path(tmp) / "release", db_path=db, timeout=timeout, grading=grading
        )
        infos = {a: course.generate(a) for a in sorted({a for _, a, _, _ in found})}
        canary = Canary(root, Path(tmp), grading, timeout, out / CANARY_CACHE)
        canary.check(infos, "start")  # raises: nothing graded, nothing published
        versions = {
            a: course_version(root, a, grading, timeout) + repr((notebook_timeout, feedback))
            for a in infos
        }
        todo, skipped = _plan(found, versions, out, course, force)
        if skipped:
            print(
                f"{len(skipped)} submission(s) already graded with the same files, seed and "
                "course: kept (--force grades them again)",
                file=sys.stderr,
            )
        tasks = [
            Task(i, s, a, _stage(folder, Path(tmp) / "staged" / s / a), p)
            for i, (s, a, folder, p, _) in enumerate(todo)
        ]
        keys = {(s, a): key for s, a, _, _, key in todo}
        setup = Setup(
            root,
            Path(tmp),
            seed,
            bool(problem),
            timeout,
            notebook_timeout,
            feedback,
            threads=max(1, default_jobs() // jobs) if jobs > 1 else None,
        )
        rows: list[GradeRow] = []
        publish = _Publisher(course, course_dir, out, infos, feedback)
        bar = tqdm(
            total=len(tasks),
            desc="grading",
            unit="submission",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        failed = 0
        try:
            with Pool(setup, jobs) as pool:
                for done in pool.run(tasks):
                    row = publish(done)
                    publish.log.add(
                        row.student,
                        row.assignment,
                        keys[(row.student, row.assignment)],
                        status=row.status,
                        total=row.total,
                        seconds=round(row.seconds, 2),
                        gradebook=done.scores is not None,
                    )
                    rows.append(row)
                    failed += row.status == "failed"
                    bar.set_postfix_str(
                        f"failed={failed}, last {row.student}/{row.assignment}", refresh=False
                    )
                    bar.update(1)
        except KeyboardInterrupt:
            bar.close()
            print(
                f"\ninterrupted: {len(rows)} submission(s) graded and saved, "
                f"{len(tasks) - len(rows)} left; run the same command again to finish "
                "(finished ones are skipped)",
                file=sys.stderr,
            )
            raise
        finally:
            bar.close()
        try:
            canary.check(infos, "end")
        except PipelineError as exc:
            for row in rows:  # the next run grades them again
                publish.log.add(row.student, row.assignment, None, status="canary failed")
            raise PipelineError(
                f"{exc}. The {len(rows)} row(s) this run wrote to "
                f"{out / 'grades.csv'} cannot be trusted: fix the course, then "
                "run the same command again (it grades them again)"
            ) from None
        if slice_ is not None:
            shard.write_manifest(
                out, slice_, whole_class, sorted((s, a) for s, a, _, _ in found), finished=True
            )
    rows += _read_back(skipped, out, infos)
    rows.sort(key=lambda r: (r.student, r.assignment))
    review = sum(r.status == "review" for r in rows)
    print(
        f"graded {len(tasks)} submission(s) in {time.perf_counter() - start:.0f} s with "
        f"{jobs} job(s) ({len(skipped)} kept from earlier runs): "
        f"{sum(r.status == 'failed' for r in rows)} failed, {review} to review -> "
        f"{out / 'grades.csv'}"
    )
    return rows


def _plan(
    found: list[tuple[str, str, Path | None, str]],
    versions: dict[str, str],
    out: Path,
    course: Course,
    force: bool,
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]]]:
    """Split the batch: (to grade, with their keys) and (already graded under the same key).

    A submission is kept only when the resume record has its key, grades.csv has its row and
    the gradebook has its entry, if it had one (a submission that could not be graded has
    none); a gradebook or grades.csv replaced since is graded again.
    """
    earlier = ResumeLog(out / RESUME_FILE).load()
    _, table = grades_csv.read_table(out / "grades.csv")
    in_csv = {(r["student"], r["assignment"]) for r in table}
    in_db: set[tuple[str, str]] = set()
    if not force and earlier:
        from nbgrader.api import MissingEntry

        with course.gradebook() as gb:
            for a in versions:
                try:
                    in_db |= {(sub.student.id, a) for sub in gb.find_assignment(a).submissions}
                except MissingEntry:
                    pass
    todo, skipped = [], []
    for s, a, folder, problem in found:
        key = grading_key(submission_digest(folder, problem), versions[a])
        entry = earlier.get((s, a), {})
        if (
            not force
            and entry.get("key") == key
            and (s, a) in in_csv
            and ((s, a) in in_db or not entry.get("gradebook", True))
        ):
            skipped.append((s, a))
        else:
            todo.append((s, a, folder, problem, key))
    return todo, skipped


def _read_back(
    pairs: list[tuple[str, str]], out: Path, infos: dict[str, AssignmentInfo]
) -> list[GradeRow]:
    """The rows of submissions kept from earlier runs, as grades.csv has them."""
    if not pairs:
        return []
    cols = grades_csv.columns(infos)
    _, table = grades_csv.read_table(out / "grades.csv")
    wanted = set(pairs)
    rows = []
    for rec in table:
        if (rec["student"], rec["assignment"]) in wanted:
            row = grades_csv.row_from_record(rec, infos[rec["assignment"]], cols)
            row.feedback = sorted((out / "feedback" / row.student / row.assignment).glob("*.html"))
            rows.append(row)
    return rows


class _Publisher:
    """Writes one finished submission into the gradebook, the course folders, feedback and
    grades.csv (in that order; the resume record comes last, from the caller)."""

    def __init__(
        self,
        course: Course,
        course_dir: Path,
        out: Path,
        infos: dict[str, AssignmentInfo],
        feedback: bool,
    ) -> None:
        self.course, self.course_dir, self.out = course, course_dir, out
        self.infos, self.feedback = infos, feedback
        self.log = ResumeLog(out / RESUME_FILE)

    def __call__(self, done: Done) -> GradeRow:
        from course_lib.autograde.gradebook import forget_submission, put_submission

        row, s, a = done.row, done.task.student, done.task.assignment
        with self.course.gradebook() as gb:
            if done.scores is not None:
                put_submission(gb, done.scores)
            else:
                forget_submission(gb, a, s)
        for step in NBGRADER_STEPS:
            dest = self.course_dir / step / s / a
            if dest.exists():
                make_writable(dest)
                shutil.rmtree(dest)
            src = done.course_dir / step / s / a if done.course_dir is not None else None
            if src is not None and src.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(src, dest)
        if self.feedback:
            target = self.out / "feedback" / s / a
            for old in target.glob("*.html"):
                old.unlink()
            pages = []
            for page in row.feedback:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(page, target / page.name)
                pages.append(target / page.name)
            if done.course_dir is not None:
                shutil.rmtree(done.course_dir / "staged-feedback" / s / a, ignore_errors=True)
            row.feedback = pages
        write_grades_csv(self.out / "grades.csv", [row], self.infos)
        return row
