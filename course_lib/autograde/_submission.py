"""One submission: what grading knows about an assignment, the result row, and the checks.

The records (``NotebookInfo``, ``AssignmentInfo``, ``GradeRow``) and the helpers that turn
nbgrader's logs and a learner's notebook into one-line reasons: tampered locked cells, code
that reaches into the grading machinery, failed check cells, the page of a failed submission.
"""

from __future__ import annotations

import contextlib
import html
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_lib.autograde._course import SEED_ENV
from course_lib.autograde.feedback import strip_hidden_region

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Code in a learner's cell that reaches into the grading machinery: graded as usual, but the
# row is marked for a human to look at (nothing stops such code from running in the kernel).
_SUSPICIOUS = [
    (
        re.compile(r"course_lib\s*\.\s*grading|from\s+course_lib\s+import\s+grading"),
        "touches course_lib.grading",
    ),
    (re.compile(r"\bsys\s*\.\s*modules\b"), "edits sys.modules"),
    (re.compile(r"\bbuiltins\b|__builtins__"), "touches builtins"),
    (re.compile(r"(?m)^\s*torch(\s*\.\s*\w+)+\s*=(?!=)"), "assigns to a torch attribute"),
    (re.compile(r"\bsetattr\s*\(\s*(torch|np|numpy|course_lib)\b"), "setattr on a library"),
    (re.compile(r"_referee|" + SEED_ENV), "touches the grader's referee or seed"),
    (
        re.compile(
            r"\bsys\s*\.\s*_getframe|\binspect\s*\.\s*(stack|currentframe)|\bgc\s*\.\s*get_objects"
        ),
        "inspects the caller's frames",
    ),
]
# A solution that calls course_lib's reference (the answer key) passes every check.
_ANSWER_KEY = (re.compile(r"\bcourse_lib\b"), "uses course_lib (the answer key) in a solution")
MAX_REASON = 300
# Files of a submission folder that grading keeps besides its notebooks (nbgrader's own).
SUBMISSION_METADATA = ("timestamp.txt", "submission_secret.txt")


@dataclass
class NotebookInfo:
    """What grading needs to know about one notebook of an assignment."""

    name: str
    grade_cells: list[tuple[str, float]]  # (grade_id, points) in notebook order
    released: dict[str, Any]  # grade_id -> released cell (source as learners got it)
    hidden_lines: list[str]  # lines of the hidden test regions, for the leak check
    released_sources: frozenset[str] = frozenset()  # every released cell's source, stripped
    # grade_id -> the referee verdicts its points need: (exercise, hidden) of each check call
    checks: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)


@dataclass
class AssignmentInfo:
    name: str
    notebooks: list[NotebookInfo]
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


_CHECK_CALL = re.compile(r"\bcheck_(\w+)\s*\(")


def check_calls(source: str, known: Any) -> list[tuple[str, bool]]:
    """The (exercise, hidden) of each ``check_NAME(...)`` call in a check cell's source.

    A call is hidden when it sits in the hidden-test region or says ``hidden=True``; names
    that are not exercises of ``known`` are left out.

    Example:
        >>> check_calls("check_softmax(f)\n### BEGIN HIDDEN TESTS\ncheck_softmax(f, hidden=True)\n"
        ...             "### END HIDDEN TESTS", {"softmax"})
        [('softmax', False), ('softmax', True)]
    """
    from course_lib.autograde.feedback import HIDDEN_BEGIN, HIDDEN_END

    found: list[tuple[str, bool]] = []
    inside = False
    for line in source.split("\n"):
        if HIDDEN_BEGIN in line or HIDDEN_END in line:
            inside = HIDDEN_BEGIN in line
            continue
        if line.lstrip().startswith("#"):
            continue
        for name in _CHECK_CALL.findall(line):
            hidden = inside or bool(re.search(r"hidden\s*=\s*True", line))
            if name in known and (name, hidden) not in found:
                found.append((name, hidden))
    return found


def short(text: str, limit: int = MAX_REASON) -> str:
    text = " ".join(ANSI.sub("", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failure_reason(result: dict, timeout: int) -> str:
    """Turn a failed nbgrader call's log into one line an instructor can act on."""
    text = (result.get("log") or "") + "\n" + (result.get("error") or "")
    if "DeadKernelError" in text or "Kernel died" in text:
        return "the kernel died while running the notebook (a crash, os._exit or out of memory)"
    if "Timeout waiting for IOPub" in text or "UnresponsiveKernelError" in text:
        return (
            f"a cell ran past the {timeout} s limit and ignored the interrupt (e.g. a loop "
            "that catches KeyboardInterrupt); the kernel was killed"
        )
    if "No notebooks found" in text:
        return "no notebook of this assignment was found in the submission"
    errors = re.findall(r"^\s*([\w.]+(?:Error|Exception|Exit)): (.+)$", text, re.MULTILINE)
    errors = [e for e in errors if not e[0].endswith("NbGraderException")]
    if errors:
        return short(f"nbgrader failed: {errors[-1][0]}: {errors[-1][1]}")
    return "nbgrader failed (no detail in its log: rerun with --verbose)"


def restore_other_files(src: Path, submitted: Path) -> None:
    """Put the submission's other files into submitted/ once grading has started from it.

    nbgrader copies every file next to a submitted notebook into the grading folder, where the
    kernel runs: a ``course_lib/`` or ``torch.py`` there would shadow the real one. So grading
    sees only the notebooks; the record in submitted/ still holds all that was handed in.
    """
    for path in src.rglob("*"):
        dest = submitted / path.relative_to(src)
        if path.is_file() and not path.is_symlink() and not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)


def make_writable(path: Path) -> None:
    # nbgrader writes autograded files read-only (444); rmtree needs the owner write bit.
    for p in [path, *path.rglob("*")]:
        with contextlib.suppress(OSError):
            p.chmod(p.stat().st_mode | 0o200)


def tamper_notes(nb: Any, info: NotebookInfo) -> list[str]:
    """Compare a submission's locked cells with the release: what did the learner change?"""
    notes = []
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    for grade_id, released in info.released.items():
        if not released.metadata.nbgrader.get("locked") and not released.metadata.nbgrader.get(
            "grade"
        ):
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
        if (
            "points" in released.metadata.nbgrader
            and meta.get("points") != released.metadata.nbgrader["points"]
        ):
            notes.append(f"points of {grade_id} were changed (restored)")
    return notes


def suspicious(nb: Any, info: NotebookInfo) -> list[str]:
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
        found += [
            f"cell {name} {what}" for pattern, what in patterns if pattern.search(cell.source)
        ]
    return found


def clean_metadata(nb: Any, info: NotebookInfo) -> list[str]:
    """Make a submission safe for nbgrader: each release grade id once, nothing unknown.

    A copy-pasted cell repeats its grade id (nbgrader then blanks its metadata and fails with
    ``KeyError: 'grade_id'``): the first cell keeps it, the copies become ordinary cells (they
    still run). nbgrader metadata that is empty, malformed or names a grade id the release does
    not have is dropped too. Changes ``nb`` in place; returns a note per change.
    """
    notes, seen = [], set()
    for i, cell in enumerate(nb.cells, start=1):
        if "nbgrader" not in cell.metadata:
            continue
        meta = cell.metadata["nbgrader"]
        gid = meta.get("grade_id") if isinstance(meta, dict) else None
        why = ""
        if not isinstance(gid, str) or not gid:
            if isinstance(meta, dict) and any(meta.get(k) for k in ("grade", "solution", "locked")):
                why = f"cell {i} had nbgrader metadata without a grade id (dropped)"
        elif gid not in info.released:
            why = f"cell {i} had an unknown grade id {gid!r} (dropped)"
        elif gid in seen:
            why = f"cell {i} is a copy of cell {gid} (graded once, the copy runs as plain code)"
        else:
            seen.add(gid)
            continue
        del cell.metadata["nbgrader"]
        if why:
            notes.append(short(why, 160))
    return notes


def cell_failures(nb: Any, timeout: int, timed_out: set[str] | None = None) -> dict[str, str]:
    """For each graded cell that failed in an autograded notebook: why, in one line.

    ``timed_out``: the grade ids of the cells interrupted for their time limit (when known);
    a ``KeyboardInterrupt`` anywhere else was raised by the learner's code.
    """
    out = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("grade") or cell.cell_type != "code":
            continue
        for o in cell.outputs:
            if o.output_type == "error":
                gid = meta.get("grade_id")
                if o.ename == "CellTimeoutError" or (
                    o.ename == "KeyboardInterrupt" and (timed_out is None or gid in timed_out)
                ):
                    msg = f"timed out after {timeout} s"
                elif o.ename == "KeyboardInterrupt":
                    msg = "KeyboardInterrupt raised by the code (an error, not a time limit)"
                else:
                    msg = (
                        f"{o.ename}: {o.evalue.strip().splitlines()[0] if o.evalue.strip() else ''}"
                    )
                out[meta["grade_id"]] = short(f"{meta['grade_id']}: {msg}", 160)
                break
            if o.output_type == "stream" and o.name == "stderr":
                out[meta["grade_id"]] = short(f"{meta['grade_id']}: wrote to stderr: {o.text}", 160)
                break
    return out


def write_failure_page(folder: Path, row: GradeRow) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / f"{row.assignment}.html"
    page.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>"
        f"{html.escape(row.assignment)}: not graded</title></head><body>\n"
        f"<h1>{html.escape(row.assignment)}: your submission could not be graded</h1>\n"
        f"<p>Score: 0 / {row.max_score:g}</p>\n<p>Reason: {html.escape(row.reason)}</p>\n"
        "<p>Fix the problem and submit again, or ask your instructor.</p>\n</body></html>\n",
        encoding="utf-8",
    )
    return page
