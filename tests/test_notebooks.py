"""Every notebook of the course: valid nbgrader source, and it runs.

Three kinds of test, over every ``solutions/<name>/<name>.ipynb``:

1. (fast) the source follows the course's nbgrader conventions: schema version 3, unique
   grade ids, a locked setup cell first, each solution cell followed by its exact check cell
   with 1 to 3 points, solution regions present, docstrings kept outside them, and demo cells
   that never call a learner's function;
2. (slow) the solutions notebook executes top to bottom without an error, within the time
   limit, and every check cell prints its ``✓ NAME: all N checks passed`` lines;
3. (slow) the learner notebook in ``notebooks/`` (made by ``course release``) is up to date and,
   executed as delivered, fails only in its check cells, each with "not implemented yet".

Each notebook is executed at most once per test session (the ``executed`` fixture caches it),
in a kernel limited to 2 threads, offline, with a generous per-cell timeout.
"""

from __future__ import annotations

import ast
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted(ROOT.glob("solutions/*/*.ipynb"))
ASSIGNMENTS = [p.parent.name for p in SOLUTIONS]

CELL_TIMEOUT_S = 300
# The course's promise to workshops: a notebook runs in at most 3 minutes on 2 idle CPU cores
# (06, which trains a GPT to a loss target, in 4). Wall time depends on the machine and its
# load (06 took 197 s on an idle 2-core Xeon and 292 s on a 2-core AMD EPYC), so a notebook over
# its budget is a warning in the test summary, not a failure; COURSE_NOTEBOOK_LIMIT_STRICT=1
# makes it a failure, for measuring on an idle reference machine.
NOTEBOOK_LIMIT_S = float(os.environ.get("COURSE_NOTEBOOK_LIMIT_S", "180"))
NOTEBOOK_LIMITS_S = {"06-training": max(NOTEBOOK_LIMIT_S, 240.0)}
NOTEBOOK_LIMIT_STRICT = os.environ.get("COURSE_NOTEBOOK_LIMIT_STRICT") == "1"


class NotebookOverBudget(UserWarning):
    """A solutions notebook ran longer than the course's time budget on this machine."""


KERNEL_ENV = {
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

SETUP_METADATA = {
    "schema_version": 3,
    "solution": False,
    "grade": False,
    "locked": True,
    "grade_id": "setup",
}
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN_MARKERS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")


def check_cell_source(fn: str) -> str:
    """The exact source of the check cell of exercise ``fn`` (visible check, then hidden ones)."""
    return (
        f"from course_lib.grading import check_{fn}\n"
        f"check_{fn}({fn})\n"
        f"{HIDDEN_MARKERS[0]}\n"
        f"check_{fn}({fn}, hidden=True)\n"
        f"{HIDDEN_MARKERS[1]}"
    )


def nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_graded(cell) -> bool:
    return bool(nbgrader(cell).get("grade"))


def is_solution(cell) -> bool:
    return bool(nbgrader(cell).get("solution"))


def exercises(nb) -> list[str]:
    """The function names of a notebook's exercises, in order (the solution cells' grade ids)."""
    return [nbgrader(c)["grade_id"] for c in nb.cells if c.cell_type == "code" and is_solution(c)]


def release_path(assignment: str) -> Path:
    return ROOT / "notebooks" / assignment / f"{assignment}.ipynb"


def read(path: Path):
    return nbformat.read(path, as_version=4)


def called_names(source: str) -> set[str]:
    """Names called as plain functions (``f(...)``, not ``obj.f(...)``) in a code cell."""
    python = "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )
    tree = ast.parse(python)
    return {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }


def defined_names(source: str) -> set[str]:
    python = "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )
    return {
        node.name
        for node in ast.walk(ast.parse(python))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }


# --------------------------------------------------------------------------------------------
# 1. nbgrader metadata and conventions (fast)
# --------------------------------------------------------------------------------------------


def test_there_are_notebooks():
    assert "00-welcome" in ASSIGNMENTS and len(ASSIGNMENTS) >= 3, ASSIGNMENTS
    for path in SOLUTIONS:
        assert path.stem == path.parent.name, f"{path}: the notebook must be named like its folder"


@pytest.mark.parametrize("path", SOLUTIONS, ids=ASSIGNMENTS)
def test_source_notebook_is_valid_and_clean(path):
    nb = read(path)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    ids = [c.get("id") for c in nb.cells]
    assert len(set(ids)) == len(ids), "cell ids must be unique"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"cell {i} has outputs: commit solutions without outputs"
            )


@pytest.mark.parametrize("path", SOLUTIONS, ids=ASSIGNMENTS)
def test_nbgrader_metadata(path):
    nb = read(path)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells and nbgrader(code_cells[0]) == SETUP_METADATA, (
        "the first code cell must be the locked setup cell"
    )
    grade_ids = []
    for i, cell in enumerate(nb.cells):
        meta = nbgrader(cell)
        src = cell.source
        if not meta:
            assert not any(m in src for m in SOLUTION_MARKERS + HIDDEN_MARKERS), (
                f"cell {i} holds a solution or hidden-test marker but no nbgrader metadata"
            )
            continue
        where = f"cell {i} ({meta.get('grade_id')})"
        assert cell.cell_type == "code", f"{where}: only code cells carry nbgrader metadata"
        assert meta.get("schema_version") == 3, f"{where}: schema_version must be 3"
        assert isinstance(meta.get("grade_id"), str) and meta["grade_id"], f"{where}: no grade_id"
        grade_ids.append(meta["grade_id"])
        if meta["grade"]:
            assert meta["locked"] and not meta["solution"], f"{where}: a check cell is locked"
            points = meta.get("points")
            assert isinstance(points, (int, float)) and 1 <= points <= 3, (
                f"{where}: points must be 1 to 3, got {points!r}"
            )
        elif meta["solution"]:
            assert not meta["locked"], f"{where}: a solution cell must stay editable"
            assert not any(m in src for m in HIDDEN_MARKERS), f"{where}: hidden tests in a solution"
        else:
            assert meta == SETUP_METADATA, f"{where}: only the setup cell is locked and ungraded"
    assert len(grade_ids) == len(set(grade_ids)), f"duplicate grade ids: {grade_ids}"
    assert grade_ids.count("setup") == 1


@pytest.mark.parametrize("path", SOLUTIONS, ids=ASSIGNMENTS)
def test_each_exercise_is_a_solution_cell_then_its_check_cell(path):
    nb = read(path)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for k, cell in enumerate(code_cells):
        if is_solution(cell):
            fn = nbgrader(cell)["grade_id"]
            src = cell.source
            assert fn in defined_names(src), f"solution cell {fn!r} must define `def {fn}(...)`"
            begin, end = src.find(SOLUTION_MARKERS[0]), src.find(SOLUTION_MARKERS[1])
            assert 0 <= begin < end, f"{fn}: the body must sit between BEGIN/END SOLUTION"
            assert src.find(f"def {fn}(") < begin, (
                f"{fn}: the `def` line must stay outside the solution"
            )
            doc = src.find('"""')
            assert 0 <= doc < begin, (
                f"{fn}: keep the docstring above BEGIN SOLUTION (learners keep it)"
            )
            assert k + 1 < len(code_cells), f"{fn}: no check cell after the solution"
            following = code_cells[k + 1]
            assert nbgrader(following).get("grade_id") == f"check_{fn}" and is_graded(following), (
                f"{fn}: the next code cell must be its check cell check_{fn}"
            )
            assert following.source.strip() == check_cell_source(fn), (
                f"check_{fn}: the check cell must read exactly:\n{check_cell_source(fn)}"
            )
        elif is_graded(cell):
            gid = nbgrader(cell)["grade_id"]
            assert k > 0 and is_solution(code_cells[k - 1]), (
                f"{gid}: a check cell follows its solution"
            )


@pytest.mark.parametrize("path", SOLUTIONS, ids=ASSIGNMENTS)
def test_demo_cells_never_call_a_learner_function(path):
    """Non-exercise cells use course_lib's reference, so the release runs past a stub."""
    nb = read(path)
    learner = set(exercises(nb))
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or is_solution(cell) or is_graded(cell):
            continue
        used = called_names(cell.source) & learner
        assert not used, (
            f"cell {i} calls the learner's {sorted(used)}: use the reference from "
            "course_lib instead (e.g. `from course_lib.ngram import nll as ref_nll`)"
        )


@pytest.mark.parametrize("path", SOLUTIONS, ids=ASSIGNMENTS)
def test_notebook_opens_with_goals_and_closes_with_a_recap(path):
    nb = read(path)
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    intro = "\n".join(c.source for c in nb.cells[:first_code] if c.cell_type == "markdown")
    assert re.search(r"^# \S", intro, re.M), "the notebook must open with a '# ' title"
    for word in ("goal", "prerequisite", "time"):
        assert word in intro.lower(), f"the introduction must state the {word}s"
    last_code = max(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    outro = "\n".join(c.source for c in nb.cells[last_code:] if c.cell_type == "markdown").lower()
    assert "recap" in outro and "going further" in outro, (
        "the notebook must close with a recap and 'going further' pointers"
    )


# --------------------------------------------------------------------------------------------
# Shared execution (each notebook at most once per session)
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """An executed notebook and how long it took."""

    nb: nbformat.NotebookNode
    seconds: float
    aborted: str | None = None  # why the execution stopped early (a cell timeout, a dead kernel)

    def errors(self) -> list[tuple[int, object, str]]:
        """(cell index, cell, 'Ename: value') for every cell that raised."""
        if self.aborted:
            pytest.fail(f"the notebook did not run to the end: {self.aborted}")
        return [
            (i, c, f"{o.ename}: {o.evalue}")
            for i, c in enumerate(self.nb.cells)
            if c.cell_type == "code"
            for o in c.outputs
            if o.output_type == "error"
        ]


def stdout_of(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def execute(path: Path) -> Run:
    from nbclient import NotebookClient

    nb = read(path)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        allow_errors=True,
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    try:
        client.execute(env={**os.environ, **KERNEL_ENV})
    except Exception as exc:  # a cell over CELL_TIMEOUT_S, a kernel that died: keep the verdict
        return Run(nb, time.perf_counter() - start, f"{type(exc).__name__}: {str(exc)[:2000]}")
    return Run(nb, time.perf_counter() - start)


class Executions:
    """Executes each notebook once and remembers the result for the rest of the session."""

    def __init__(self) -> None:
        self._runs: dict[Path, Run] = {}

    def __call__(self, path: Path) -> Run:
        if path not in self._runs:
            self._runs[path] = execute(path)
        return self._runs[path]


@pytest.fixture(scope="session")
def executed() -> Executions:
    return Executions()


# --------------------------------------------------------------------------------------------
# 2. the solutions run and pass their checks
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=ASSIGNMENTS)
def test_solutions_notebook_runs_and_passes_every_check(path, executed):
    run = executed(path)
    errors = run.errors()
    assert not errors, "\n".join(f"cell {i}: {e}\n{c.source[:300]}" for i, c, e in errors)
    for cell in run.nb.cells:
        if cell.cell_type == "code" and is_graded(cell):
            fn = nbgrader(cell)["grade_id"].removeprefix("check_")
            calls = cell.source.count(f"check_{fn}(")
            passed = re.findall(rf"✓ {re.escape(fn)}: all \d+ checks passed", stdout_of(cell))
            assert len(passed) == calls, (
                f"check_{fn}: expected {calls} success lines, got:\n{stdout_of(cell)}"
            )
    limit = NOTEBOOK_LIMITS_S.get(path.parent.name, NOTEBOOK_LIMIT_S)
    if run.seconds >= limit:
        message = (
            f"{path.name} took {run.seconds:.0f} s; its budget is {limit:.0f} s on 2 idle cores "
            "(slower machine, load, or a slower notebook: re-measure on an idle machine)"
        )
        assert not NOTEBOOK_LIMIT_STRICT, message
        warnings.warn(message, NotebookOverBudget, stacklevel=1)


# --------------------------------------------------------------------------------------------
# 3. the learner notebooks are released, fresh, and fail only in their check cells
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def stale_release() -> list[str]:
    """Released files that differ from what `course release` would write now."""
    if not all(release_path(a).is_file() for a in ASSIGNMENTS):
        return []  # reported per notebook as missing
    from course_lib.autograde import stale_release as find_stale

    return find_stale(ROOT)


def require_fresh_release(assignment: str, stale: list[str]) -> Path:
    path = release_path(assignment)
    rel = path.relative_to(ROOT).as_posix()
    if not path.is_file():
        pytest.fail(f"{rel} is missing: run `course release` (and commit notebooks/)")
    if any(s.startswith(f"notebooks/{assignment}/") for s in stale):
        pytest.fail(f"{rel} is stale (solutions/{assignment} changed since): run `course release`")
    return path


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_learner_notebook_hides_solutions_and_hidden_tests(assignment):
    path = release_path(assignment)
    if not path.is_file():
        pytest.fail(f"notebooks/{assignment}/{assignment}.ipynb is missing: run `course release`")
    source_nb, release_nb = (
        read(ROOT / "solutions" / assignment / f"{assignment}.ipynb"),
        read(path),
    )
    text = "\n".join(c.source for c in release_nb.cells)
    for marker in SOLUTION_MARKERS + HIDDEN_MARKERS:
        assert marker not in text, f"the release still contains {marker!r}: run `course release`"
    assert exercises(release_nb) == exercises(source_nb), "run `course release`"
    for cell in release_nb.cells:
        if cell.cell_type == "code" and is_solution(cell):
            assert "raise NotImplementedError()" in cell.source
        if cell.cell_type == "code" and is_graded(cell):
            assert "hidden=True" not in cell.source, "a hidden check leaked into the release"


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_learner_notebook_fails_only_in_check_cells(assignment, stale_release, executed):
    path = require_fresh_release(assignment, stale_release)
    run = executed(path)
    failed = {i for i, _, _ in run.errors()}
    for i, cell, error in run.errors():
        assert is_graded(cell), (
            f"cell {i} of the release fails outside a check cell, so a learner is blocked:\n"
            f"{error}\n{cell.source[:300]}"
        )
    for i, cell in enumerate(run.nb.cells):
        if cell.cell_type == "code" and is_graded(cell):
            assert i in failed, f"check cell {nbgrader(cell)['grade_id']} passes on an empty stub"
            messages = [e for j, _, e in run.errors() if j == i]
            assert any(
                m.startswith("AssertionError") and "not implemented yet" in m for m in messages
            ), f"{nbgrader(cell)['grade_id']}: {messages}"


@pytest.mark.parametrize("path", SOLUTIONS, ids=ASSIGNMENTS)
def test_opening_cell_links_the_glossary(path):
    opening = next(c for c in read(path).cells if c.cell_type == "markdown")
    link = "](../../docs/glossary.md)"
    assert link in opening.source, f"{path.name}: link docs/glossary.md from the opening cell"
    assert (ROOT / "docs" / "glossary.md").is_file()
