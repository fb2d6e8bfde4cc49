"""``course exchange``: hand out and take in assignments through nbgrader's exchange.

The instructor's side of nbgrader's exchange (a shared folder: one machine, or a JupyterHub)
with the course's config loaded and the gaps of the plain commands closed::

    course exchange release ASSIGNMENT           notebooks/<a>  ->  <exchange>/<course>/outbound/<a>
    course exchange collect ASSIGNMENT           latest submission of each student  ->  submitted/<student>/<a>
    course exchange grade ASSIGNMENT             `course grade` on submitted/*/<a>  ->  grades/
    course exchange release-feedback ASSIGNMENT  grades/feedback/*/<a>  ->  <exchange>/<course>/feedback

Learners use nbgrader's own student side: JupyterLab's *Assignments* tab, or
``nbgrader fetch_assignment|submit|fetch_feedback ASSIGNMENT`` with ``c.Exchange.root`` and
``c.CourseDirectory.course_id`` in their ``~/.jupyter/nbgrader_config.py``.

What the thin layer adds to ``nbgrader release_assignment|collect|release_feedback``:

- every step reads the course's ``nbgrader_config.py`` explicitly (``NbGraderAPI`` does not)
  and checks nbgrader's ``success`` flag, so a failed step exits non-zero with nbgrader's reason;
- ``grade`` grades through ``course grade`` (sandbox, referee, canary, hidden tests stripped from
  feedback) and keeps, next to each published feedback page, the submission's ``timestamp.txt``
  and ``submission_secret.txt``, which nbgrader needs to route feedback back to its learner;
- ``release-feedback`` releases only those pages (never nbgrader's own ``feedback/`` folder,
  which formgrader may fill with pages that show hidden tests), and skips, with a warning, a
  student whose submission did not come through the exchange instead of stopping at them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from course_lib.autograde._course import (
    PipelineError,
    course_root,
    grading_env,
    list_assignments,
    load_config,
    nbgrader_log,
    speed_up_new_gradebooks,
)

# What nbgrader's submit writes next to the notebooks, and its release_feedback needs back.
SUBMISSION_FILES = ("timestamp.txt", "submission_secret.txt")

__all__ = [
    "SUBMISSION_FILES",
    "Collected",
    "collect",
    "grade_collected",
    "register",
    "release_assignment",
    "release_feedback",
]


@dataclass
class Collected:
    """One collected submission: ``submitted/<student>/<assignment>/`` and its timestamp."""

    student: str
    assignment: str
    folder: Path
    timestamp: str


def _api(
    root: Path,
    *,
    exchange: str | os.PathLike | None = None,
    course_id: str | None = None,
    **overrides: Any,
) -> Any:
    """An ``NbGraderAPI`` on ``root`` with the course's config plus the given overrides.

    ``overrides`` maps ``"Section.trait"`` to a value (e.g. ``CourseDirectory.root``).
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    speed_up_new_gradebooks()
    cfg = load_config(root)
    over = Config()
    over.CourseDirectory.root = str(root)
    if exchange is not None:
        over.Exchange.root = str(Path(exchange).resolve())
    if course_id:
        over.CourseDirectory.course_id = course_id
    for key, value in overrides.items():
        section, trait = key.split(".")
        setattr(getattr(over, section), trait, value)
    cfg.merge(over)
    coursedir = CourseDirectory(config=cfg, log=nbgrader_log)
    return NbGraderAPI(coursedir=coursedir, config=cfg, log=nbgrader_log)


def _check(result: dict, what: str) -> str:
    """Return nbgrader's log; raise ``PipelineError`` with nbgrader's reason unless it succeeded."""
    log = str(result.get("log") or "")
    if not result.get("success"):
        errors = [
            ln.split("]", 1)[1].strip()
            for ln in log.splitlines()
            if ln.startswith(("[ERROR]", "[CRITICAL]"))
        ]
        tail = [ln for ln in str(result.get("error") or "").splitlines() if ln.strip()]
        raise PipelineError(
            f"nbgrader could not {what}: "
            + ("; ".join(errors[-3:]) or (tail[-1] if tail else "no reason given"))
        )
    return log


def _exchange_dir(api: Any) -> Path:
    """The exchange folder ``api`` works on (nbgrader's default when the config sets none)."""
    ex = api.exchange.exchange(coursedir=api.coursedir, authenticator=api.authenticator, parent=api)
    return Path(ex.root)


def _released(api: Any, assignment: str) -> None:
    """Fail with the fix when the exchange has no folder for this course (nbgrader's own
    message, "Unwritable directory, please contact your instructor", misleads instructors)."""
    course = _exchange_dir(api) / api.coursedir.course_id
    if not course.is_dir():
        raise ValueError(
            f"{course} does not exist: nothing was released to this exchange yet. Run "
            f"`course exchange release {assignment}` first, or point --exchange (or "
            "$COURSE_EXCHANGE) at the exchange your learners use"
        )


def _known(root: Path, assignment: str) -> None:
    known = list_assignments(root)
    if assignment not in known:
        raise ValueError(
            f"{assignment!r} is not an assignment of this course "
            f"({', '.join(known) or 'solutions/ is empty'})"
        )


def release_assignment(
    assignment: str,
    *,
    root: str | os.PathLike | None = None,
    exchange: str | os.PathLike | None = None,
    course_id: str | None = None,
    force: bool = False,
) -> Path:
    """Publish the committed release ``notebooks/<assignment>`` to the exchange.

    Args:
        assignment: e.g. ``"01-language-models"``.
        root: the course root (default: found from the current folder).
        exchange: the exchange folder (default: the config's ``Exchange.root``).
        course_id: the nbgrader course id (default: the config's).
        force: replace an assignment already released (learners who fetched it keep their copy).

    Returns:
        The released folder, ``<exchange>/<course_id>/outbound/<assignment>``.
    """
    root = course_root(root)
    _known(root, assignment)
    api = _api(
        root, exchange=exchange, course_id=course_id, **{"ExchangeReleaseAssignment.force": force}
    )
    release = Path(api.coursedir.format_path(api.coursedir.release_directory, ".", assignment))
    if not any(release.glob("*.ipynb")):
        raise ValueError(f"{release} holds no notebook: run `course release` first")
    with grading_env(None):
        result = api.release_assignment(assignment)
    if not result.get("success") and "already exists" in str(result.get("log")):
        raise PipelineError(
            f"{assignment} is already released to the exchange: pass --force to "
            "replace it (learners who fetched it keep their copy)"
        )
    _check(result, f"release {assignment}")
    return _exchange_dir(api) / api.coursedir.course_id / "outbound" / assignment


def _collected(api: Any, assignment: str) -> list[Collected]:
    submitted = Path(api.coursedir.format_path(api.coursedir.submitted_directory, "*", assignment))
    rows = []
    for folder in sorted(Path(submitted.parent.parent).glob(f"*/{assignment}")):
        stamp = folder / "timestamp.txt"
        if folder.is_dir():
            rows.append(
                Collected(
                    folder.parent.name,
                    assignment,
                    folder,
                    stamp.read_text().strip() if stamp.is_file() else "",
                )
            )
    return rows


def collect(
    assignment: str,
    *,
    root: str | os.PathLike | None = None,
    exchange: str | os.PathLike | None = None,
    course_id: str | None = None,
) -> list[Collected]:
    """Copy each learner's latest submission from the exchange into ``submitted/``.

    A learner collected earlier is updated when the exchange holds a newer submission (a due
    date in the gradebook is respected as nbgrader does). Returns every collected submission
    of ``assignment`` now in ``submitted/``.
    """
    root = course_root(root)
    _known(root, assignment)
    api = _api(root, exchange=exchange, course_id=course_id)
    _released(api, assignment)
    with grading_env(None):
        log = _check(api.collect(assignment, update=True), f"collect {assignment}")
    if "No submissions" in log:
        print(f"no submission of {assignment} in the exchange yet", file=sys.stderr)
    return _collected(api, assignment)


def grade_collected(
    assignment: str,
    out_dir: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
    **grade_options: Any,
) -> list[Any]:
    """Grade the collected submissions of ``assignment`` with ``course grade``.

    Grades a copy of ``submitted/*/<assignment>`` (``course_lib.autograde.grade``: sandbox,
    referee, canary, feedback without hidden tests) into ``out_dir`` (default
    ``<root>/grades``), then puts each submission's ``timestamp.txt`` and
    ``submission_secret.txt`` next to its feedback pages, for ``release_feedback``.

    Args:
        grade_options: passed to ``grade`` (``timeout``, ``unsafe``, ``progress``, ...).

    Returns:
        ``grade``'s rows.
    """
    from course_lib.autograde.grade import grade

    root = course_root(root)
    _known(root, assignment)
    api = _api(root)
    collected = _collected(api, assignment)
    if not collected:
        raise ValueError(
            f"nothing collected for {assignment}: run `course exchange collect {assignment}` first"
        )
    out = Path(out_dir).resolve() if out_dir is not None else root / "grades"
    grade_options = {k: v for k, v in grade_options.items() if v is not None}
    if not grade_options.get("unsafe", True):
        grade_options.pop("unsafe")  # the default: keep working with grade()s without the flag
    with tempfile.TemporaryDirectory(prefix="course-exchange-") as tmp:
        staged = Path(tmp) / "submissions"
        for c in collected:
            shutil.copytree(
                c.folder,
                staged / c.student / assignment,
                symlinks=True,
                ignore=shutil.ignore_patterns(".ipynb_checkpoints"),
            )
        rows = grade(staged, out, root=root, **grade_options)
        for row in rows:
            dest = out / "feedback" / row.student / assignment
            for name in SUBMISSION_FILES:
                stale = dest / name
                if stale.is_file():
                    stale.unlink()
                if row.feedback and (staged / row.student / assignment / name).is_file():
                    shutil.copyfile(staged / row.student / assignment / name, stale)
    return rows


def release_feedback(
    assignment: str,
    grades_dir: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
    exchange: str | os.PathLike | None = None,
    course_id: str | None = None,
    students: list[str] | None = None,
) -> list[str]:
    """Publish the feedback pages of ``course exchange grade`` to the exchange.

    Releases ``<grades_dir>/feedback/<student>/<assignment>/*.html`` (default grades dir:
    ``<root>/grades``), the pages ``course grade`` checked for hidden-test leaks, through
    nbgrader's ``release_feedback``; learners then run ``nbgrader fetch_feedback``. A student
    whose folder lacks ``timestamp.txt``/``submission_secret.txt`` (not collected through the
    exchange, or graded with plain ``course grade``) is skipped with a warning.

    Returns:
        The students whose feedback was released.
    """
    root = course_root(root)
    _known(root, assignment)
    grades = Path(grades_dir).resolve() if grades_dir is not None else root / "grades"
    folders = sorted(p for p in (grades / "feedback").glob(f"*/{assignment}") if p.is_dir())
    if students:
        folders = [p for p in folders if p.parent.name in students]
    if not folders:
        raise ValueError(
            f"no feedback for {assignment} under {grades / 'feedback'}: run "
            f"`course exchange grade {assignment}` first"
        )
    released = []
    with tempfile.TemporaryDirectory(prefix="course-feedback-") as tmp:
        view = Path(tmp)  # a course folder holding only the releasable pages
        for folder in folders:
            missing = [n for n in SUBMISSION_FILES if not (folder / n).is_file()]
            pages = sorted(folder.glob("*.html"))
            if missing or not pages:
                why = (
                    f"no {' or '.join(missing)}: it was not collected through the exchange"
                    if missing
                    else "no feedback page"
                )
                print(f"warning: skipping {folder.parent.name}: {why}", file=sys.stderr)
                continue
            dest = view / "feedback" / folder.parent.name / assignment
            dest.mkdir(parents=True)
            for path in [*pages, *(folder / n for n in SUBMISSION_FILES)]:
                shutil.copyfile(path, dest / path.name)
            released.append(folder.parent.name)
        if not released:
            raise ValueError(
                f"no feedback of {assignment} can be released: every student was "
                "skipped (see the warnings)"
            )
        api = _api(
            root,
            exchange=exchange,
            course_id=course_id,
            **{"CourseDirectory.root": str(view), "CourseDirectory.feedback_directory": "feedback"},
        )
        _released(api, assignment)
        from nbgrader.utils import capture_log, temp_attrs

        # (NbGraderAPI.release_feedback misspells ``authenticator``, which traitlets warns of.)
        with (
            grading_env(None),
            temp_attrs(api.coursedir, assignment_id=assignment, student_id="*"),
        ):
            app = api.exchange.ReleaseFeedback(
                coursedir=api.coursedir, authenticator=api.authenticator, parent=api
            )
            _check(capture_log(app), f"release the feedback of {assignment}")
    return released


# -- command line ------------------------------------------------------------------------------


def _run(fn, args: argparse.Namespace) -> int:
    import logging

    if args.verbose:
        nbgrader_log.setLevel(logging.INFO)
        nbgrader_log.addHandler(logging.StreamHandler(sys.stderr))
    try:
        return fn(args)
    except (ValueError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _cmd_release(args: argparse.Namespace) -> int:
    dest = release_assignment(
        args.assignment,
        root=args.root,
        exchange=args.exchange,
        course_id=args.course_id,
        force=args.force,
    )
    print(f"released {args.assignment} to {dest}")
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    rows = collect(
        args.assignment, root=args.root, exchange=args.exchange, course_id=args.course_id
    )
    for c in rows:
        print(f"{c.student:<24} {c.timestamp or '(no timestamp)'}  {c.folder}")
    print(f"{len(rows)} submission(s) of {args.assignment} collected")
    return 0


def _cmd_grade(args: argparse.Namespace) -> int:
    rows = grade_collected(
        args.assignment, args.out, root=args.root, timeout=args.timeout, unsafe=args.unsafe
    )
    return 1 if any(r.status == "failed" for r in rows) else 0


def _cmd_release_feedback(args: argparse.Namespace) -> int:
    done = release_feedback(
        args.assignment,
        args.grades,
        root=args.root,
        exchange=args.exchange,
        course_id=args.course_id,
        students=args.student or None,
    )
    print(f"released feedback of {args.assignment} for {len(done)} student(s): {', '.join(done)}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``course exchange release|collect|grade|release-feedback``."""
    top = subparsers.add_parser(
        "exchange",
        help="release, collect, grade and return feedback through nbgrader's exchange",
        description="The instructor's side of nbgrader's exchange (see docs/instructors.md). "
        "Learners fetch and submit with JupyterLab's Assignments tab or `nbgrader "
        "fetch_assignment|submit|fetch_feedback`.",
    )
    sub = top.add_subparsers(dest="exchange_command", required=True, metavar="STEP")

    def add(name: str, fn, help: str, *, exchange: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("assignment", metavar="ASSIGNMENT")
        p.add_argument("--root", help="course root (default: found from the current folder)")
        if exchange:
            p.add_argument(
                "--exchange",
                metavar="DIR",
                help="exchange folder (default: the "
                "config's Exchange.root: $COURSE_EXCHANGE or <root>/exchange)",
            )
            p.add_argument("--course-id", help="nbgrader course id (default: the config's)")
        p.add_argument("--verbose", action="store_true", help="show nbgrader's log")
        p.set_defaults(func=lambda a: _run(fn, a))
        return p

    p = add("release", _cmd_release, "publish notebooks/ASSIGNMENT to the exchange")
    p.add_argument("--force", action="store_true", help="replace an earlier release")
    add("collect", _cmd_collect, "copy each learner's latest submission into submitted/")
    p = add(
        "grade",
        _cmd_grade,
        "`course grade` the collected submissions (submitted/*/"
        "ASSIGNMENT) and keep what release-feedback needs",
        exchange=False,
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default: <root>/grades)")
    p.add_argument("--timeout", type=float, help="per-cell limit in seconds")
    p.add_argument("--unsafe", action="store_true", help="as `course grade --unsafe`")
    p = add(
        "release-feedback",
        _cmd_release_feedback,
        "publish the feedback of `course exchange grade` for learners to fetch",
    )
    p.add_argument("--grades", metavar="DIR", help="grade output folder (default: <root>/grades)")
    p.add_argument(
        "--student", action="append", metavar="ID", help="only this student (repeatable)"
    )
