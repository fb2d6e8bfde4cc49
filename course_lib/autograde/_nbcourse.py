"""One nbgrader course (real or throwaway) driven through ``NbGraderAPI``.

``Course`` loads the course's config with per-call overrides (release folder, gradebook,
timeout, our preprocessors), generates releases and grades one submission from scratch.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from pathlib import Path
from typing import Any

from course_lib.autograde._course import (
    PipelineError,
    load_config,
    log,
    nbgrader_log,
    speed_up_new_gradebooks,
)
from course_lib.autograde._sandbox import DEFAULT_MEMORY, Jail, seed_int
from course_lib.autograde._submission import (
    MAX_REASON,
    SUBMISSION_METADATA,
    AssignmentInfo,
    GradeRow,
    NotebookInfo,
    cell_failures,
    check_calls,
    clean_metadata,
    failure_reason,
    make_writable,
    restore_other_files,
    short,
    suspicious,
    tamper_notes,
    write_failure_page,
)
from course_lib.autograde.feedback import (
    HIDDEN_BEGIN,
    HIDDEN_END,
    SOLUTION_BEGIN,
    find_hidden_leaks,
    html_text,
)


class Grading:
    """How ``course grade``/``validate`` run kernels: a fresh ``Jail`` per submission."""

    def __init__(
        self,
        base: Path,
        seed: str,
        *,
        unsafe: bool,
        memory: int = DEFAULT_MEMORY,
        notebook_timeout: float | None = None,
    ) -> None:
        self.base, self.seed, self.unsafe, self.memory = base, seed, unsafe, memory
        self.notebook_timeout = notebook_timeout

    def jail(self, skip: frozenset[int] = frozenset()) -> Jail:
        return Jail(
            self.base,
            self.seed,
            unsafe=self.unsafe,
            memory=self.memory,
            skip=skip,
            notebook_timeout=self.notebook_timeout,
        )


class Course:
    """An nbgrader course folder with the course's config, plus per-call overrides."""

    def __init__(
        self,
        root: Path,
        *,
        config_root: Path | None = None,
        release_dir: Path | None = None,
        db_path: Path | None = None,
        exchange_dir: Path | None = None,
        timeout: float | None = None,
        grading: Grading | None = None,
    ) -> None:
        from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
        from nbgrader.apps import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory
        from nbgrader.preprocessors import GetGrades
        from traitlets.config import Config

        from course_lib.autograde.exporters import FeedbackExporter
        from course_lib.autograde.preprocessors import StripHiddenTests, autograde_preprocessors

        speed_up_new_gradebooks()
        self.root = root
        cfg = load_config(config_root or root)
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
        over.GenerateFeedback.exporter_class = FeedbackExporter
        over.GenerateFeedback.preprocessors = [
            GetGrades,
            StripHiddenTests,
            CSSHTMLHeaderPreprocessor,
        ]
        over.Autograde.autograde_preprocessors = autograde_preprocessors(jailed=grading is not None)
        self.grading = grading
        cfg.merge(over)
        self.config = cfg
        self.coursedir = CourseDirectory(config=cfg, log=nbgrader_log)
        self.api = NbGraderAPI(coursedir=self.coursedir, config=cfg, log=nbgrader_log)
        self.timeout = int(cfg.Execute.get("timeout", cfg.ExecutePreprocessor.get("timeout", 30)))

    def path(self, step: str, student: str, assignment: str) -> Path:
        return Path(self.coursedir.format_path(step, student, assignment)).resolve()

    def gradebook(self) -> Any:
        from nbgrader.api import Gradebook

        return Gradebook(self.coursedir.db_url, self.coursedir.course_id)

    # -- release ---------------------------------------------------------------------------

    def generate(self, assignment: str) -> AssignmentInfo:
        """Register ``assignment`` in the gradebook and write its release; return its info."""
        import nbformat

        with self.gradebook() as gb:
            gb.update_or_create_assignment(assignment)
        result = self.api.generate_assignment(assignment, force=True, create=True)
        if not result["success"]:
            raise PipelineError(
                f"nbgrader could not generate the release of {assignment}: "
                f"{failure_reason(result, self.timeout)}\n{result.get('log', '')}"
            )
        release = self.path(self.coursedir.release_directory, ".", assignment)
        source = self.path(self.coursedir.source_directory, ".", assignment)
        notebooks = []
        for path in sorted(release.glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            text = path.read_text(encoding="utf-8")
            for marker in (HIDDEN_BEGIN, SOLUTION_BEGIN):
                if marker in text:
                    raise PipelineError(
                        f"{source / path.name}: '### {marker}' survives in the "
                        "release: put it only in solution or check cells"
                    )
            src = nbformat.read(source / path.name, as_version=4)
            released = {
                c.metadata.nbgrader["grade_id"]: c
                for c in nb.cells
                if "grade_id" in c.metadata.get("nbgrader", {})
            }
            grade_cells = [
                (c.metadata.nbgrader["grade_id"], float(c.metadata.nbgrader["points"]))
                for c in nb.cells
                if c.metadata.get("nbgrader", {}).get("grade")
            ]
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
            from course_lib.grading._catalogue import EXERCISES

            graded = set(EXERCISES) | {"trained_model"}  # + 06's capstone, recorded as such
            checks = {
                c.metadata.nbgrader["grade_id"]: check_calls(c.source, graded)
                for c in src.cells
                if c.metadata.get("nbgrader", {}).get("grade") and "grade_id" in c.metadata.nbgrader
            }
            notebooks.append(
                NotebookInfo(
                    path.stem,
                    grade_cells,
                    released,
                    hidden,
                    sources,
                    {k: v for k, v in checks.items() if v},
                )
            )
        if not notebooks:
            raise PipelineError(f"{source} holds no notebook")
        return AssignmentInfo(assignment, notebooks, release)

    # -- grading ---------------------------------------------------------------------------

    def _forget(self, student: str, assignment: str) -> None:
        """Remove every trace of an earlier grading of this submission (files and gradebook)."""
        from nbgrader.api import MissingEntry

        for step in (
            self.coursedir.submitted_directory,
            self.coursedir.autograded_directory,
            self.coursedir.feedback_directory,
        ):
            target = self.path(step, student, assignment)
            if target.exists():
                make_writable(target)
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

    def _scores(self, student: str, info: AssignmentInfo) -> dict[tuple[str, str], float]:
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

    def grade_submission(
        self,
        student: str,
        info: AssignmentInfo,
        src: Path | None,
        feedback_dir: Path | None,
        problem: str = "",
    ) -> GradeRow:
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
                    restore_other_files(
                        src, self.path(self.coursedir.submitted_directory, student, info.name)
                    )
            else:
                row.reason = problem
        except Exception as exc:  # one broken submission must not stop the batch
            log.exception("grading %s/%s", student, info.name)
            with contextlib.suppress(Exception):
                self._zero(student, info.name)
            row.status, row.total = "failed", 0.0
            row.scores = dict.fromkeys(row.scores, 0.0)
            row.reason = short(f"internal error while grading: {type(exc).__name__}: {exc}")
        if row.status == "failed" and feedback_dir is not None:
            row.feedback = [write_failure_page(feedback_dir / student / info.name, row)]
        row.seconds = time.perf_counter() - start
        return row

    def _grade(
        self, row: GradeRow, info: AssignmentInfo, src: Path | None, feedback_dir: Path | None
    ) -> None:
        import nbformat

        submitted = self.path(self.coursedir.submitted_directory, row.student, info.name)
        submitted.mkdir(parents=True)
        notes, flags, present = [], [], []
        expected = {nb.name: nb for nb in info.notebooks}
        found = sorted(p for p in src.glob("*.ipynb")) if src is not None else []
        for path in found:
            if path.is_symlink():
                notes.append(
                    f"{path.name} is a symbolic link: refused (hand in the notebook file itself)"
                )
                continue
            if path.stem not in expected:
                notes.append(f"ignored {path.name} (not part of {info.name})")
                continue
            try:
                nb = nbformat.read(path, as_version=4)
            except Exception as exc:  # noqa: BLE001 -- any unreadable file is the learner's
                notes.append(
                    short(
                        f"{path.name} is not a readable notebook ({type(exc).__name__}: {exc})", 160
                    )
                )
                continue
            notes += clean_metadata(nb, expected[path.stem])
            notes += tamper_notes(nb, expected[path.stem])
            flags += suspicious(nb, expected[path.stem])
            nbformat.write(nb, submitted / path.name)
            present.append(path.stem)
        for name in SUBMISSION_METADATA:
            if src is not None and (src / name).is_file():
                shutil.copyfile(src / name, submitted / name)
        missing = [n for n in expected if n not in present]
        if missing and not any(
            "not a readable notebook" in n or "symbolic link" in n for n in notes
        ):
            extra = [p.name for p in found if p.stem not in expected]
            notes.insert(
                0,
                f"missing {', '.join(m + '.ipynb' for m in missing)}"
                + (f" (found {', '.join(extra)}: rename it?)" if extra else ""),
            )
        if not present:
            row.reason = "; ".join(notes) or "no notebook in the submission"
            return

        timed_out: set[str] | None = None
        if self.grading is None:  # no referee of our own: the kernel's outputs decide
            result, verdicts = (
                self.api.autograde(info.name, row.student, force=True, create=True),
                None,
            )
        else:
            skip: frozenset[int] = frozenset()
            for _attempt in range(3):  # a cell that kills the kernel is skipped on a rerun
                with self.grading.jail(skip) as jail:
                    result = self.api.autograde(info.name, row.student, force=True, create=True)
                    jail.close()  # every process of the submission is dead before we go on
                    verdicts, timed_out = jail.verdicts(), jail.timed_out
                if result["success"] or jail.running is None or jail.running in skip:
                    break
                skip = skip | {jail.running}
                what = failure_reason(result, self.timeout).split(" (")[0].split(";")[0]
                notes.append(
                    f"cell {jail.running + 1}{f' ({jail.running_id})' if jail.running_id else ''}"
                    f": {what}; the notebook was graded again without that cell"
                )
        if not result["success"]:
            self._zero(row.student, info.name)
            row.reason = "; ".join([failure_reason(result, self.timeout), *notes])
            return

        referee_notes = {} if verdicts is None else self._apply_record(row.student, info, verdicts)
        self._hidden_started = (
            None
            if verdicts is None
            else {
                gid
                for nbinfo in info.notebooks
                for gid, needed in nbinfo.checks.items()
                if any(
                    v.get("hidden") and v.get("name") in {n for n, _ in needed} for v in verdicts
                )
            }
        )
        row.scores = self._scores(row.student, info)
        row.total = sum(row.scores.values())
        autograded = self.path(self.coursedir.autograded_directory, row.student, info.name)
        for nbinfo in info.notebooks:
            path = autograded / f"{nbinfo.name}.ipynb"
            lost = {}
            if path.is_file():
                lost = cell_failures(nbformat.read(path, as_version=4), self.timeout, timed_out)
            for gid, points in nbinfo.grade_cells:
                if row.scores.get((nbinfo.name, gid), 0.0) < points:
                    msg = lost.get(gid) or referee_notes.get((nbinfo.name, gid))
                    if msg:
                        notes.append(msg)
        row.status = "review" if flags else "graded"
        row.reason = short(
            "; ".join(([f"check by hand: {', '.join(flags)}"] if flags else []) + notes),
            2 * MAX_REASON,
        )
        if feedback_dir is not None:
            self._feedback(row, info, feedback_dir)

    def _apply_record(
        self, student: str, info: AssignmentInfo, verdicts: list[dict]
    ) -> dict[tuple[str, str], str]:
        """Score each check cell from the referee's record, whatever the kernel showed.

        A check cell earns its points when every check it calls (visible and hidden) has a
        passing verdict in the record; a check that never reached the referee earns nothing.
        Returns why each check cell that lost its points lost them.
        """
        from nbgrader.api import MissingEntry

        passed = {(v.get("name"), bool(v.get("hidden"))) for v in verdicts if v.get("passed")}
        first_failure: dict[tuple[str, bool], str] = {}
        for v in verdicts:
            key = (v.get("name"), bool(v.get("hidden")))
            if not v.get("passed") and key not in first_failure:
                first_failure[key] = (
                    "failed a hidden case"
                    if key[1]
                    else (str(v.get("message", "")).strip().splitlines() or [""])[0]
                )
        why: dict[tuple[str, str], str] = {}
        with self.gradebook() as gb:
            for nbinfo in info.notebooks:
                for gid, points in nbinfo.grade_cells:
                    needed = nbinfo.checks.get(gid)
                    if not needed:
                        continue  # no check_ call: not the referee's to judge
                    missing = [k for k in needed if k not in passed]
                    try:
                        grade = gb.find_grade(gid, nbinfo.name, info.name, student)
                    except MissingEntry:
                        continue
                    grade.auto_score = 0.0 if missing else float(points)
                    grade.manual_score, grade.needs_manual_grade = None, False
                    if missing:
                        name, hidden = missing[0]
                        what = first_failure.get((name, hidden)) or (
                            f"check_{name}{'(hidden=True)' if hidden else ''} did not run"
                        )
                        why[(nbinfo.name, gid)] = short(f"{gid}: {what}", 160)
            gb.db.commit()
        return why

    def _feedback(self, row: GradeRow, info: AssignmentInfo, feedback_dir: Path) -> None:
        from course_lib.autograde import preprocessors as fb

        fb.HIDDEN_STARTED = getattr(self, "_hidden_started", None)
        try:
            result = self.api.generate_feedback(info.name, row.student, force=True)
        finally:
            fb.HIDDEN_STARTED = None
        if not result["success"]:
            row.reason = "; ".join(
                filter(
                    None,
                    [
                        row.reason,
                        "feedback HTML could not be made: " + failure_reason(result, self.timeout),
                    ],
                )
            )
            return
        made = self.path(self.coursedir.feedback_directory, row.student, info.name)
        dest = feedback_dir / row.student / info.name
        hidden = [line for nb in info.notebooks for line in nb.hidden_lines]
        for page in sorted(made.glob("*.html")):
            text = page.read_text(encoding="utf-8")
            leaks = find_hidden_leaks(text, hidden)
            seeds = (
                []
                if self.grading is None
                else [self.grading.seed, str(seed_int(self.grading.seed))]
            )
            if any(len(x) >= 6 and x in html_text(text) for x in seeds):
                leaks.append("the grading seed")
            if leaks:  # never hand out hidden tests or the seed: withhold the page, say so
                page.unlink()
                what = "the grading seed" if leaks == ["the grading seed"] else "hidden test code"
                withheld = f"feedback {page.name} withheld: it showed {what}"
                row.reason = "; ".join(filter(None, [row.reason, withheld]))
                continue
            dest.mkdir(parents=True, exist_ok=True)
            if (dest / page.name).resolve() != page.resolve():  # --out may be the course root
                shutil.copyfile(page, dest / page.name)
            row.feedback.append(dest / page.name)
