"""The nbgrader pipeline behind ``course release``, ``course validate`` and ``course grade``.

nbgrader does the real work (stubbing solutions, restoring locked cells, running notebooks,
storing grades); this module drives its Python API with the course's ``nbgrader_config.py``
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

Example:
    >>> from course_lib.autograde import stale_release
    >>> stale_release()          # doctest: +SKIP
    []
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import html
import json
import logging
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEED_ENV = "COURSE_GRADING_SEED"
SEED_FILE = ".grading_seed"
HIDDEN_BEGIN = "BEGIN HIDDEN TESTS"
HIDDEN_END = "END HIDDEN TESTS"
SOLUTION_BEGIN = "BEGIN SOLUTION"

# Cell metadata that carries meaning in a released notebook; everything else (execution
# timings, collapsed/scrolled flags, editor state) differs between authors' machines.
_KEEP_CELL_METADATA = ("nbgrader", "deletable", "editable", "tags", "jupyter", "slideshow")
_VOLATILE_LANGUAGE_INFO = ("version",)
_STUDENT_ID = re.compile(r"^[\w.@-]+$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TAG = re.compile(r"<[^>]*>")
# Code in a learner's cell that reaches into the grading machinery: graded as usual, but the
# row is marked for a human to look at (nothing stops such code from running in the kernel).
_SUSPICIOUS = [
    (re.compile(r"course_lib\s*\.\s*grading|from\s+course_lib\s+import\s+grading"),
     "touches course_lib.grading"),
    (re.compile(r"\bsys\s*\.\s*modules\b"), "edits sys.modules"),
    (re.compile(r"\bbuiltins\b|__builtins__"), "touches builtins"),
    (re.compile(r"(?m)^\s*torch(\s*\.\s*\w+)+\s*=(?!=)"), "assigns to a torch attribute"),
    (re.compile(r"\bsetattr\s*\(\s*(torch|np|numpy|course_lib)\b"), "setattr on a library"),
    (re.compile(r"_referee|" + SEED_ENV), "touches the grader's referee or seed"),
    (re.compile(r"\bsys\s*\.\s*_getframe|\binspect\s*\.\s*(stack|currentframe)|\bgc\s*\.\s*get_objects"),
     "inspects the caller's frames"),
]
# A solution that calls course_lib's reference (the answer key) passes every check.
_ANSWER_KEY = (re.compile(r"\bcourse_lib\b"), "uses course_lib (the answer key) in a solution")
_MAX_REASON = 300
# Files of a submission folder that grading keeps besides its notebooks (nbgrader's own).
_SUBMISSION_METADATA = ("timestamp.txt", "submission_secret.txt")

log = logging.getLogger("course_lib.autograde")
_nbgrader_log = logging.getLogger("course_lib.autograde.nbgrader")
_nbgrader_log.propagate = False
_nbgrader_log.addHandler(logging.NullHandler())


class PipelineError(RuntimeError):
    """nbgrader could not do a step that the whole run depends on (e.g. generating a release)."""


# --------------------------------------------------------------------------------------------
# The course folder, its config and its secret
# --------------------------------------------------------------------------------------------


def course_root(root: str | os.PathLike | None = None) -> Path:
    """Return the course root: the folder holding ``nbgrader_config.py``.

    Args:
        root: use this folder (checked); by default search the current folder and its parents,
            then the folder above the ``course_lib`` package.

    Returns:
        The absolute path of the course root.
    """
    if root is not None:
        path = Path(root).resolve()
        if not (path / "nbgrader_config.py").is_file():
            raise ValueError(f"{path} has no nbgrader_config.py: pass the course repository's "
                             "root folder (the one with solutions/ and nbgrader_config.py)")
        return path
    here = Path.cwd().resolve()
    for folder in (here, *here.parents, Path(__file__).resolve().parent.parent):
        if (folder / "nbgrader_config.py").is_file() and (folder / "solutions").is_dir():
            return folder
    raise ValueError("no course found: run this from the course repository (the folder with "
                     "nbgrader_config.py and solutions/) or pass --root")


def list_assignments(root: str | os.PathLike | None = None) -> list[str]:
    """Return the assignment names: the folders of ``solutions/`` that hold a notebook, sorted."""
    solutions = course_root(root) / "solutions"
    if not solutions.is_dir():
        return []
    return sorted(d.name for d in solutions.iterdir()
                  if d.is_dir() and not d.name.startswith((".", "_")) and any(d.glob("*.ipynb")))


def grading_seed(root: str | os.PathLike | None = None) -> str:
    """Return the seed of the hidden checks: ``$COURSE_GRADING_SEED``, else the course secret.

    The secret is generated once per course and kept in ``<root>/.grading_seed`` (git-ignored,
    readable by its owner only), so every grading run of a course draws the same hidden cases
    while learners, who never see that file, cannot predict them.
    """
    value = os.environ.get(SEED_ENV, "").strip()
    if value:
        return value
    path = course_root(root) / SEED_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    value = str(secrets.randbelow(2**31 - 1) + 1)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


@contextlib.contextmanager
def _grading_env(seed: str | None) -> Iterator[None]:
    """Seed the grading kernels and put our ``bin/`` on PATH (nbgrader runs ``alembic``)."""
    old = {k: os.environ.get(k) for k in (SEED_ENV, "PATH")}
    bin_dir = str(Path(sys.executable).parent)
    if seed is not None:
        os.environ[SEED_ENV] = seed
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    try:
        with warnings.catch_warnings():
            # nbgrader's gradebook trips harmless SQLAlchemy autoflush warnings.
            warnings.filterwarnings("ignore", message=".*not in session.*")
            # ... and nbformat complains about the id-less cells nbgrader itself restores.
            warnings.filterwarnings("ignore", message="Cell is missing an id field")
            yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _speed_up_new_gradebooks() -> None:
    """Let nbgrader read the gradebook schema version in-process (once) instead of running the
    ``alembic`` executable for every new gradebook.db: 0.3 s instead of several seconds."""
    import nbgrader.api

    original = nbgrader.api.get_alembic_version
    if getattr(original, "_course_lib", False):
        return

    @functools.cache
    def get_alembic_version() -> str:
        try:
            from alembic.config import Config
            from alembic.script import ScriptDirectory

            cfg = Config()
            cfg.set_main_option("script_location", str(Path(nbgrader.api.__file__).parent / "alembic"))
            return ScriptDirectory.from_config(cfg).get_current_head()
        except Exception:  # noqa: BLE001 -- an unknown nbgrader/alembic layout: nbgrader's way
            return original()

    get_alembic_version._course_lib = True
    nbgrader.api.get_alembic_version = get_alembic_version


def _load_config(config_root: Path) -> Any:
    from traitlets.config.loader import PyFileConfigLoader

    if not (config_root / "nbgrader_config.py").is_file():
        raise ValueError(f"{config_root}/nbgrader_config.py not found: the course root needs it")
    return PyFileConfigLoader("nbgrader_config.py", path=str(config_root)).load_config()


# --------------------------------------------------------------------------------------------
# Feedback without hidden tests
# --------------------------------------------------------------------------------------------


def strip_hidden_region(source: str) -> tuple[str, bool]:
    """Remove every ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` block (markers too).

    An unterminated block is removed to the end of the cell.

    Returns:
        (the source without hidden tests, whether anything was removed).

    Example:
        >>> strip_hidden_region("a\\n### BEGIN HIDDEN TESTS\\nb\\n### END HIDDEN TESTS\\nc")
        ('a\\nc', True)
    """
    kept, inside, removed = [], False, False
    for line in source.split("\n"):
        if HIDDEN_BEGIN in line:
            inside = removed = True
        elif HIDDEN_END in line:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept), removed


def _make_strip_hidden_tests() -> type:
    from nbconvert.preprocessors import Preprocessor
    from traitlets import Bool

    class StripHiddenTests(Preprocessor):
        """Remove hidden tests, and the tracebacks that can quote them, before rendering feedback.

        In a cell that held hidden tests, each error keeps its name and message (the grader's
        diagnosis) but loses its traceback, whose frames print the hidden lines.
        """

        enabled = Bool(True, help="nbconvert preprocessors are off unless enabled").tag(config=True)

        def preprocess_cell(self, cell, resources, index):
            source, removed = strip_hidden_region(cell.source)
            if removed:
                cell.source = source.rstrip("\n")
                for out in cell.get("outputs", []):
                    if out.get("output_type") == "error":
                        out["traceback"] = [
                            f"\x1b[0;31m{out.get('ename', 'Error')}\x1b[0m: {out.get('evalue', '')}",
                            "(traceback not shown: it would quote the hidden tests)",
                        ]
            return cell, resources

    StripHiddenTests.__module__ = __name__
    return StripHiddenTests


def _make_stderr_is_not_failure() -> type:
    from nbconvert.preprocessors import Preprocessor
    from traitlets import Bool

    class StderrIsNotFailure(Preprocessor):
        """Show what a check cell wrote to stderr as ordinary output, so that it costs no points.

        nbgrader scores a check cell 0 when it wrote anything to stderr, even if the check
        passed: a correct solution that raises a ``UserWarning`` or shows a tqdm bar would lose
        its points. Our checks fail by raising, so stderr carries no verdict. Runs between
        nbgrader's Execute and SaveAutoGrades.
        """

        enabled = Bool(True, help="nbconvert preprocessors are off unless enabled").tag(config=True)

        def preprocess_cell(self, cell, resources, index):
            if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade"):
                for out in cell.outputs:
                    if out.get("output_type") == "stream" and out.get("name") == "stderr":
                        out["name"] = "stdout"
            return cell, resources

    StderrIsNotFailure.__module__ = __name__
    return StderrIsNotFailure


_LAZY_CLASSES = {"StripHiddenTests": _make_strip_hidden_tests,
                 "StderrIsNotFailure": _make_stderr_is_not_failure}


def __getattr__(name: str) -> Any:
    # The preprocessors subclass nbconvert's Preprocessor; build them on first use so that
    # importing this module (the CLI does, for every command) stays cheap.
    if name in _LAZY_CLASSES:
        cls = _LAZY_CLASSES[name]()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def autograde_preprocessors() -> list[type]:
    """nbgrader's autograde steps, with ``StderrIsNotFailure`` right after the execution."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        Execute,
        IgnorePattern,
        LimitOutput,
        SaveAutoGrades,
    )

    return [Execute, __getattr__("StderrIsNotFailure"), IgnorePattern, ClearMetadataPreprocessor,
            LimitOutput, SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]


def html_text(page: str) -> str:
    """The visible text of an HTML page: tags dropped, entities decoded (syntax-highlighted code
    becomes plain code again, so a substring test finds it)."""
    page = re.sub(r"(?is)<(style|script)\b.*?</\1>", "", page)
    return html.unescape(_TAG.sub("", page))


def find_hidden_leaks(page: str, hidden_lines: Sequence[str]) -> list[str]:
    """Return what of the hidden tests shows in an HTML page (empty list: nothing leaked).

    Args:
        page: the HTML.
        hidden_lines: the source lines of the hidden test regions.
    """
    text = html_text(page)
    leaks = [marker for marker in (HIDDEN_BEGIN, HIDDEN_END) if marker in text]
    leaks += [line for line in hidden_lines if line in text]
    return leaks


# --------------------------------------------------------------------------------------------
# Deterministic release notebooks
# --------------------------------------------------------------------------------------------


def normalize_notebook(nb: Any) -> str:
    """Serialize a released notebook deterministically: the same source gives the same bytes.

    Drops outputs, execution counts and volatile metadata (timings, editor state, the Python
    version), gives id-less cells an id derived from their position, and writes nbformat's
    canonical JSON (sorted keys, one-space indent, trailing newline).
    """
    import nbformat

    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # deep copy
    meta = {}
    if "kernelspec" in nb.metadata:
        meta["kernelspec"] = dict(nb.metadata.kernelspec)
    if "language_info" in nb.metadata:
        meta["language_info"] = {k: v for k, v in nb.metadata.language_info.items()
                                 if k not in _VOLATILE_LANGUAGE_INFO}
    nb.metadata = nbformat.from_dict(meta)
    nb.nbformat, nb.nbformat_minor = 4, max(5, nb.get("nbformat_minor", 5))
    for i, cell in enumerate(nb.cells):
        cell.metadata = nbformat.from_dict(
            {k: v for k, v in cell.metadata.items() if k in _KEEP_CELL_METADATA})
        cell.setdefault("id", f"cell-{i:03d}")
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(nb)
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


# --------------------------------------------------------------------------------------------
# One nbgrader course (real or throwaway) driven through NbGraderAPI
# --------------------------------------------------------------------------------------------


@dataclass
class _NotebookInfo:
    """What grading needs to know about one notebook of an assignment."""

    name: str
    grade_cells: list[tuple[str, float]]  # (grade_id, points) in notebook order
    released: dict[str, Any]  # grade_id -> released cell (source as learners got it)
    hidden_lines: list[str]  # lines of the hidden test regions, for the leak check
    released_sources: frozenset[str] = frozenset()  # every released cell's source, stripped


@dataclass
class _AssignmentInfo:
    name: str
    notebooks: list[_NotebookInfo]
    release_dir: Path

    @property
    def max_score(self) -> float:
        return sum(p for nb in self.notebooks for _, p in nb.grade_cells)


@dataclass
class GradeRow:
    """The result of grading one submission (one row of grades.csv).

    ``status`` is "graded", "review" (graded, but the code reaches into the grading machinery:
    look at it), or "failed" (not gradable: every exercise scores 0, ``reason`` says why).
    """

    student: str
    assignment: str
    scores: dict[tuple[str, str], float] = field(default_factory=dict)  # (notebook, grade_id)
    total: float = 0.0
    max_score: float = 0.0
    status: str = "failed"
    reason: str = ""
    feedback: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _short(text: str, limit: int = _MAX_REASON) -> str:
    text = " ".join(_ANSI.sub("", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failure_reason(result: dict, timeout: int) -> str:
    """Turn a failed nbgrader call's log into one line an instructor can act on."""
    text = (result.get("log") or "") + "\n" + (result.get("error") or "")
    if "DeadKernelError" in text or "Kernel died" in text:
        return "the kernel died while running the notebook (a crash, os._exit or out of memory)"
    if "Timeout waiting for IOPub" in text or "UnresponsiveKernelError" in text:
        return (f"a cell ran past the {timeout} s limit and ignored the interrupt (e.g. a loop "
                "that catches KeyboardInterrupt); the kernel was killed")
    if "No notebooks found" in text:
        return "no notebook of this assignment was found in the submission"
    errors = re.findall(r"^\s*([\w.]+(?:Error|Exception|Exit)): (.+)$", text, re.MULTILINE)
    errors = [e for e in errors if not e[0].endswith("NbGraderException")]
    if errors:
        return _short(f"nbgrader failed: {errors[-1][0]}: {errors[-1][1]}")
    return "nbgrader failed (no detail in its log: rerun with --verbose)"


class _Course:
    """An nbgrader course folder with the course's config, plus per-call overrides."""

    def __init__(self, root: Path, *, config_root: Path | None = None,
                 release_dir: Path | None = None, db_path: Path | None = None,
                 exchange_dir: Path | None = None, timeout: float | None = None) -> None:
        from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
        from nbgrader.apps import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory
        from nbgrader.preprocessors import GetGrades
        from traitlets.config import Config

        _speed_up_new_gradebooks()
        self.root = root
        cfg = _load_config(config_root or root)
        over = Config()
        over.CourseDirectory.root = str(root)
        if db_path is not None:
            over.CourseDirectory.db_url = f"sqlite:///{db_path}"
        elif config_root is not None and config_root != root:
            over.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
        if release_dir is not None:
            over.CourseDirectory.release_directory = str(release_dir)
        if exchange_dir is not None:
            over.Exchange.root = str(exchange_dir)
        if timeout is not None:
            if timeout <= 0:
                raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
            over.Execute.timeout = math.ceil(timeout)
        over.GenerateFeedback.preprocessors = [GetGrades, __getattr__("StripHiddenTests"),
                                               CSSHTMLHeaderPreprocessor]
        over.Autograde.autograde_preprocessors = autograde_preprocessors()
        cfg.merge(over)
        self.config = cfg
        self.coursedir = CourseDirectory(config=cfg, log=_nbgrader_log)
        self.api = NbGraderAPI(coursedir=self.coursedir, config=cfg, log=_nbgrader_log)
        self.timeout = int(cfg.Execute.get("timeout", cfg.ExecutePreprocessor.get("timeout", 30)))

    def path(self, step: str, student: str, assignment: str) -> Path:
        return Path(self.coursedir.format_path(step, student, assignment)).resolve()

    def gradebook(self) -> Any:
        from nbgrader.api import Gradebook

        return Gradebook(self.coursedir.db_url, self.coursedir.course_id)

    # -- release ---------------------------------------------------------------------------

    def generate(self, assignment: str) -> _AssignmentInfo:
        """Register ``assignment`` in the gradebook and write its release; return its info."""
        import nbformat

        with self.gradebook() as gb:
            gb.update_or_create_assignment(assignment)
        result = self.api.generate_assignment(assignment, force=True, create=True)
        if not result["success"]:
            raise PipelineError(f"nbgrader could not generate the release of {assignment}: "
                                f"{_failure_reason(result, self.timeout)}\n{result.get('log', '')}")
        release = self.path(self.coursedir.release_directory, ".", assignment)
        source = self.path(self.coursedir.source_directory, ".", assignment)
        notebooks = []
        for path in sorted(release.glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            text = path.read_text(encoding="utf-8")
            for marker in (HIDDEN_BEGIN, SOLUTION_BEGIN):
                if marker in text:
                    raise PipelineError(f"{source / path.name}: '### {marker}' survives in the "
                                        "release: put it only in solution or check cells")
            src = nbformat.read(source / path.name, as_version=4)
            released = {c.metadata.nbgrader["grade_id"]: c for c in nb.cells
                        if "grade_id" in c.metadata.get("nbgrader", {})}
            grade_cells = [(c.metadata.nbgrader["grade_id"], float(c.metadata.nbgrader["points"]))
                           for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
            visible = {line.strip() for c in nb.cells for line in c.source.split("\n")}
            hidden = []
            for cell in src.cells:
                inside = False
                for line in cell.source.split("\n"):
                    if HIDDEN_BEGIN in line or HIDDEN_END in line:
                        inside = HIDDEN_BEGIN in line
                    elif inside and len(line.strip()) >= 8 and line.strip() not in visible:
                        hidden.append(line.strip())
            sources = frozenset(c.source.strip() for c in nb.cells)
            notebooks.append(_NotebookInfo(path.stem, grade_cells, released, hidden, sources))
        if not notebooks:
            raise PipelineError(f"{source} holds no notebook")
        return _AssignmentInfo(assignment, notebooks, release)

    # -- grading ---------------------------------------------------------------------------

    def _forget(self, student: str, assignment: str) -> None:
        """Remove every trace of an earlier grading of this submission (files and gradebook)."""
        from nbgrader.api import MissingEntry

        for step in (self.coursedir.submitted_directory, self.coursedir.autograded_directory,
                     self.coursedir.feedback_directory):
            target = self.path(step, student, assignment)
            if target.exists():
                _make_writable(target)
                shutil.rmtree(target)
        with self.gradebook() as gb:
            try:
                gb.remove_submission(assignment, student)
            except MissingEntry:
                pass

    def _zero(self, student: str, assignment: str) -> None:
        """Give 0 to every grade of a submission that nbgrader created but could not grade."""
        from nbgrader.api import MissingEntry

        with self.gradebook() as gb:
            try:
                submission = gb.find_submission(assignment, student)
            except MissingEntry:
                return
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    grade.auto_score, grade.manual_score = 0.0, None
                    grade.needs_manual_grade = False
            gb.db.commit()

    def _scores(self, student: str, info: _AssignmentInfo) -> dict[tuple[str, str], float]:
        from nbgrader.api import MissingEntry

        scores: dict[tuple[str, str], float] = {}
        with self.gradebook() as gb:
            for nbinfo in info.notebooks:
                for grade_id, _ in nbinfo.grade_cells:
                    try:
                        grade = gb.find_grade(grade_id, nbinfo.name, info.name, student)
                        scores[(nbinfo.name, grade_id)] = float(grade.score or 0.0)
                    except MissingEntry:
                        scores[(nbinfo.name, grade_id)] = 0.0
        return scores

    def grade_submission(self, student: str, info: _AssignmentInfo, src: Path | None,
                         feedback_dir: Path | None, problem: str = "") -> GradeRow:
        """Autograde ``src`` (a folder of notebooks) as ``student``'s ``info.name``, from scratch.

        Never raises for a bad submission: the row says what went wrong.
        """
        start = time.perf_counter()
        row = GradeRow(student, info.name, max_score=info.max_score)
        row.scores = {(nb.name, gid): 0.0 for nb in info.notebooks for gid, _ in nb.grade_cells}
        try:
            self._forget(student, info.name)
            if feedback_dir is not None and (feedback_dir / student / info.name).exists():
                shutil.rmtree(feedback_dir / student / info.name)
            if not problem:
                self._grade(row, info, src, feedback_dir)
                if src is not None:
                    _restore_other_files(src, self.path(self.coursedir.submitted_directory,
                                                        student, info.name))
            else:
                row.reason = problem
        except Exception as exc:  # one broken submission must not stop the batch
            log.exception("grading %s/%s", student, info.name)
            with contextlib.suppress(Exception):
                self._zero(student, info.name)
            row.status, row.total = "failed", 0.0
            row.scores = dict.fromkeys(row.scores, 0.0)
            row.reason = _short(f"internal error while grading: {type(exc).__name__}: {exc}")
        if row.status == "failed" and feedback_dir is not None:
            row.feedback = [_write_failure_page(feedback_dir / student / info.name, row)]
        row.seconds = time.perf_counter() - start
        return row

    def _grade(self, row: GradeRow, info: _AssignmentInfo, src: Path | None,
               feedback_dir: Path | None) -> None:
        import nbformat

        submitted = self.path(self.coursedir.submitted_directory, row.student, info.name)
        submitted.mkdir(parents=True)
        notes, flags, present = [], [], []
        expected = {nb.name: nb for nb in info.notebooks}
        found = sorted(p for p in src.glob("*.ipynb")) if src is not None else []
        for path in found:
            if path.stem not in expected:
                notes.append(f"ignored {path.name} (not part of {info.name})")
                continue
            try:
                nb = nbformat.read(path, as_version=4)
            except Exception as exc:  # noqa: BLE001 -- any unreadable file is the learner's
                notes.append(_short(f"{path.name} is not a readable notebook "
                                    f"({type(exc).__name__}: {exc})", 160))
                continue
            notes += _tamper_notes(nb, expected[path.stem])
            flags += _suspicious(nb, expected[path.stem])
            shutil.copyfile(path, submitted / path.name)
            present.append(path.stem)
        for name in _SUBMISSION_METADATA:
            if src is not None and (src / name).is_file():
                shutil.copyfile(src / name, submitted / name)
        missing = [n for n in expected if n not in present]
        if missing and not any("not a readable notebook" in n for n in notes):
            extra = [p.name for p in found if p.stem not in expected]
            notes.insert(0, f"missing {', '.join(m + '.ipynb' for m in missing)}"
                         + (f" (found {', '.join(extra)}: rename it?)" if extra else ""))
        if not present:
            row.reason = "; ".join(notes) or "no notebook in the submission"
            return

        result = self.api.autograde(info.name, row.student, force=True, create=True)
        if not result["success"]:
            self._zero(row.student, info.name)
            row.reason = "; ".join([_failure_reason(result, self.timeout), *notes])
            return

        row.scores = self._scores(row.student, info)
        row.total = sum(row.scores.values())
        autograded = self.path(self.coursedir.autograded_directory, row.student, info.name)
        for nbinfo in info.notebooks:
            path = autograded / f"{nbinfo.name}.ipynb"
            if path.is_file():
                lost = _cell_failures(nbformat.read(path, as_version=4), self.timeout)
                notes += [msg for (gid, msg) in lost.items()
                          if row.scores.get((nbinfo.name, gid), 0.0) < dict(nbinfo.grade_cells)[gid]]
        row.status = "review" if flags else "graded"
        row.reason = _short("; ".join(([f"check by hand: {', '.join(flags)}"] if flags else [])
                                      + notes), 2 * _MAX_REASON)
        if feedback_dir is not None:
            self._feedback(row, info, feedback_dir)

    def _feedback(self, row: GradeRow, info: _AssignmentInfo, feedback_dir: Path) -> None:
        result = self.api.generate_feedback(info.name, row.student, force=True)
        if not result["success"]:
            row.reason = "; ".join(filter(None, [row.reason, "feedback HTML could not be made: "
                                                 + _failure_reason(result, self.timeout)]))
            return
        made = self.path(self.coursedir.feedback_directory, row.student, info.name)
        dest = feedback_dir / row.student / info.name
        hidden = [line for nb in info.notebooks for line in nb.hidden_lines]
        for page in sorted(made.glob("*.html")):
            leaks = find_hidden_leaks(page.read_text(encoding="utf-8"), hidden)
            if leaks:  # never hand out hidden tests: withhold the page and say so
                page.unlink()
                withheld = f"feedback {page.name} withheld: it showed hidden test code"
                row.reason = "; ".join(filter(None, [row.reason, withheld]))
                continue
            dest.mkdir(parents=True, exist_ok=True)
            if (dest / page.name).resolve() != page.resolve():  # --out may be the course root
                shutil.copyfile(page, dest / page.name)
            row.feedback.append(dest / page.name)


def _restore_other_files(src: Path, submitted: Path) -> None:
    """Put the submission's other files into submitted/ once grading has started from it.

    nbgrader copies every file next to a submitted notebook into the grading folder, where the
    kernel runs: a ``course_lib/`` or ``torch.py`` there would shadow the real one. So grading
    sees only the notebooks; the record in submitted/ still holds all that was handed in.
    """
    for path in src.rglob("*"):
        dest = submitted / path.relative_to(src)
        if path.is_file() and not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)


def _make_writable(path: Path) -> None:
    # nbgrader writes autograded files read-only (444); rmtree needs the owner write bit.
    for p in [path, *path.rglob("*")]:
        with contextlib.suppress(OSError):
            p.chmod(p.stat().st_mode | 0o200)


def _tamper_notes(nb: Any, info: _NotebookInfo) -> list[str]:
    """Compare a submission's locked cells with the release: what did the learner change?"""
    notes = []
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    for grade_id, released in info.released.items():
        if not released.metadata.nbgrader.get("locked") and not released.metadata.nbgrader.get("grade"):
            continue
        cell = cells.get(grade_id)
        if cell is None:
            if released.metadata.nbgrader.get("grade"):
                notes.append(f"{grade_id} cell was deleted (restored and graded)")
            continue
        meta = cell.metadata.get("nbgrader", {})
        visible = strip_hidden_region(cell.source)[0].strip()  # a solutions notebook has them
        if released.metadata.nbgrader.get("locked") and visible != released.source.strip():
            notes.append(f"locked cell {grade_id} was edited (restored)")
        if "points" in released.metadata.nbgrader and meta.get("points") != released.metadata.nbgrader["points"]:
            notes.append(f"points of {grade_id} were changed (restored)")
    return notes


def _suspicious(nb: Any, info: _NotebookInfo) -> list[str]:
    """Name the learner-written cells whose code reaches into the grading machinery."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if strip_hidden_region(cell.source)[0].strip() in info.released_sources:
            continue  # a cell as we released it (demos import course_lib, and that is fine)
        meta = cell.metadata.get("nbgrader", {})
        name = meta.get("grade_id") or str(i)
        patterns = _SUSPICIOUS + ([_ANSWER_KEY] if meta.get("solution") else [])
        found += [f"cell {name} {what}" for pattern, what in patterns if pattern.search(cell.source)]
    return found


def _cell_failures(nb: Any, timeout: int) -> dict[str, str]:
    """For each graded cell that failed in an autograded notebook: why, in one line."""
    out = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("grade") or cell.cell_type != "code":
            continue
        for o in cell.outputs:
            if o.output_type == "error":
                if o.ename in ("CellTimeoutError", "KeyboardInterrupt"):
                    msg = f"timed out after {timeout} s"
                else:
                    msg = f"{o.ename}: {o.evalue.strip().splitlines()[0] if o.evalue.strip() else ''}"
                out[meta["grade_id"]] = _short(f"{meta['grade_id']}: {msg}", 160)
                break
            if o.output_type == "stream" and o.name == "stderr":
                out[meta["grade_id"]] = _short(f"{meta['grade_id']}: wrote to stderr: {o.text}", 160)
                break
    return out


def _write_failure_page(folder: Path, row: GradeRow) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / f"{row.assignment}.html"
    page.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>"
        f"{html.escape(row.assignment)}: not graded</title></head><body>\n"
        f"<h1>{html.escape(row.assignment)}: your submission could not be graded</h1>\n"
        f"<p>Score: 0 / {row.max_score:g}</p>\n<p>Reason: {html.escape(row.reason)}</p>\n"
        "<p>Fix the problem and submit again, or ask your instructor.</p>\n</body></html>\n",
        encoding="utf-8")
    return page


# --------------------------------------------------------------------------------------------
# release
# --------------------------------------------------------------------------------------------


def _release_files(root: Path, scratch: Path) -> dict[str, bytes]:
    """Generate every release into ``scratch``; return {path under root: bytes to write}."""
    course = _Course(root, release_dir=scratch / "release", db_path=scratch / "gradebook.db",
                     exchange_dir=scratch / "exchange")
    release_step = Path("notebooks")
    files: dict[str, bytes] = {}
    for assignment in list_assignments(root):
        info = course.generate(assignment)
        for path in sorted(p for p in info.release_dir.rglob("*") if p.is_file()):
            rel = (release_step / assignment / path.relative_to(info.release_dir)).as_posix()
            if path.suffix == ".ipynb":
                import nbformat

                files[rel] = normalize_notebook(nbformat.read(path, as_version=4)).encode("utf-8")
            else:
                files[rel] = path.read_bytes()
    return files


def release(root: str | os.PathLike | None = None, *, check: bool = False) -> list[str]:
    """Regenerate ``notebooks/`` from ``solutions/``: stubs for solutions, no hidden tests.

    Files are only written when their bytes change, so an up-to-date release leaves
    ``git status`` clean. A released notebook whose source was removed is reported, not deleted.

    Args:
        root: the course root (default: found from the current folder).
        check: only report what would change; write nothing.

    Returns:
        The paths (relative to the root, POSIX style) that were (or would be) written.
    """
    root = course_root(root)
    if not list_assignments(root):
        raise ValueError(f"{root / 'solutions'} holds no assignment: expected "
                         "solutions/<name>/<name>.ipynb")
    with tempfile.TemporaryDirectory(prefix="course-release-") as tmp, _grading_env(None):
        files = _release_files(root, Path(tmp))
    changed = []
    for rel, data in files.items():
        dest = root / rel
        if dest.is_file() and dest.read_bytes() == data:
            continue
        changed.append(rel)
        if not check:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
    known = set(list_assignments(root))
    release_root = root / "notebooks"
    if release_root.is_dir():
        for orphan in sorted(release_root.glob("*/*.ipynb")):
            rel = orphan.relative_to(root).as_posix()
            if orphan.parent.name in known and rel not in files or orphan.parent.name not in known:
                print(f"warning: {rel} has no source in solutions/ (delete it if it is obsolete)",
                      file=sys.stderr)
    return changed


def stale_release(root: str | os.PathLike | None = None) -> list[str]:
    """Return the released files that differ from what ``release()`` would write (empty: up to date)."""
    return release(root, check=True)


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


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
        raise ValueError(f"{root / 'solutions'} holds no assignment: expected "
                         "solutions/<name>/<name>.ipynb")
    if assignments is None or len(assignments) == 0:
        return known
    if isinstance(assignments, str):
        raise TypeError("assignments must be a list of names, e.g. ['01-language-models']")
    unknown = [a for a in assignments if a not in known]
    if unknown:
        raise ValueError(f"unknown assignment(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    return list(assignments)


def validate(assignments: Sequence[str] | None = None, *, root: str | os.PathLike | None = None,
             timeout: float | None = None, verbose: bool = True) -> list[ValidationResult]:
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
    with tempfile.TemporaryDirectory(prefix="course-validate-") as tmp, \
            _grading_env(grading_seed(root)):
        tmp_root = Path(tmp)
        for name in names:
            shutil.copytree(root / "solutions" / name, tmp_root / "solutions" / name,
                            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        course = _Course(tmp_root, config_root=root, db_path=tmp_root / "gradebook.db",
                         exchange_dir=tmp_root / "exchange", timeout=timeout)
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
                problems.append(f"solutions score {solution.total:g}/{info.max_score:g}: "
                                f"{solution.reason or solution.status}")
            if blank.status == "failed":
                problems.append(f"the blank release could not be graded: {blank.reason}")
            elif blank.total > 0:
                earned = [gid for (_, gid), s in blank.scores.items() if s > 0]
                problems.append(f"the blank release earns {blank.total:g} points "
                                f"({', '.join(earned)}): a check passes without a solution")
            results.append(ValidationResult(name, info.max_score, solution.total, blank.total,
                                            problems, solution.seconds))
    if verbose:
        _print_validation(results)
    return results


def _print_validation(results: Sequence[ValidationResult]) -> None:
    width = max([len("assignment")] + [len(r.assignment) for r in results])
    print(f"{'assignment':<{width}}  {'solutions':>9}  {'release':>9}  {'grading':>7}  result")
    for r in results:
        print(f"{r.assignment:<{width}}  {r.solution_score:>4g}/{r.max_score:<4g}  "
              f"{r.release_score:>4g}/{r.max_score:<4g}  {r.seconds:>6.0f}s  "
              f"{'ok' if r.ok else 'FAIL'}")
        for p in r.problems:
            print(f"{'':<{width}}  - {p}")


# --------------------------------------------------------------------------------------------
# grade
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _cmd_release(args: argparse.Namespace) -> int:
    try:
        changed = release(args.root, check=args.check)
    except (ValueError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if changed:
            print("notebooks/ is out of date with solutions/; run `course release`. Stale:")
            for p in changed:
                print(f"  {p}")
            return 1
        print("notebooks/ is up to date")
        return 0
    print("\n".join(f"wrote {p}" for p in changed) or "notebooks/ was already up to date")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        results = validate(args.assignments or None, root=args.root, timeout=args.timeout)
    except (ValueError, TypeError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if results and all(r.ok for r in results) else 1


def _cmd_grade(args: argparse.Namespace) -> int:
    try:
        rows = grade(args.submissions, args.out, root=args.root, timeout=args.timeout,
                     feedback=not args.no_feedback)
    except (ValueError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if any(r.status == "failed" for r in rows) else 0


def _verbose(args: argparse.Namespace) -> None:
    if getattr(args, "verbose", False):
        _nbgrader_log.setLevel(logging.INFO)
        _nbgrader_log.addHandler(logging.StreamHandler(sys.stderr))


def register(subparsers: Any) -> None:
    """Add ``release``, ``validate`` and ``grade`` to the ``course`` command line."""
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--root", help="course root (default: found from the current folder)")
        p.add_argument("--verbose", action="store_true", help="show nbgrader's log")

    def run(fn):
        def wrapped(args: argparse.Namespace) -> int:
            _verbose(args)
            return fn(args)
        return wrapped

    p = subparsers.add_parser("release", help="regenerate notebooks/ from solutions/ (nbgrader)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if notebooks/ is out of date")
    common(p)
    p.set_defaults(func=run(_cmd_release))

    p = subparsers.add_parser("validate", help="autograde solutions (full marks) and blank "
                              "release (zero) of each assignment")
    p.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help="default: all")
    p.add_argument("--timeout", type=float, help="per-cell limit in seconds")
    common(p)
    p.set_defaults(func=run(_cmd_validate))

    p = subparsers.add_parser("grade", help="autograde SUBMISSIONS_DIR/<student>/<assignment>/ "
                              "into grades.csv and feedback HTML")
    p.add_argument("submissions", metavar="SUBMISSIONS_DIR")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <root>/grades)")
    p.add_argument("--timeout", type=float, help="per-cell limit in seconds")
    p.add_argument("--no-feedback", action="store_true", help="skip the feedback HTML")
    common(p)
    p.set_defaults(func=run(_cmd_grade))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``release``/``validate``/``grade`` without the full ``course`` CLI; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m course_lib.autograde")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
