"""The nbgrader pipeline (course_lib.autograde) on a two-exercise fixture course, for real.

The fixture (tests/fixtures/autograde_course) is a course root with one assignment,
99-fixture: softmax (2 points) and causal_mask (3 points), checked by the real graders of
course_lib.grading. Each test copies it, with the repository's own nbgrader_config.py, into a
temporary folder. The expensive part, a batch of submissions graded by real kernels, runs once
per module and several tests read its results.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from course_lib import autograde
from course_lib.autograde import (
    find_hidden_leaks,
    grade,
    html_text,
    normalize_notebook,
    release,
    stale_release,
    strip_hidden_region,
    validate,
)
from course_lib.autograde._submission import (
    ANSI,
    AssignmentInfo,
    NotebookInfo,
    check_calls,
    clean_metadata,
    suspicious,
)
from course_lib.autograde.grade import discover
from course_lib.autograde.preprocessors import (
    StderrIsNotFailure,
    StripHiddenTests,
    autograde_preprocessors,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "autograde_course"
A = "99-fixture"
TIMEOUT = 15  # per cell; a fixture check cell takes a few seconds even on a busy machine
HIDDEN_CALLS = (
    "check_softmax(softmax, hidden=True)",
    "check_causal_mask(causal_mask, hidden=True)",
)

GOOD_SOFTMAX = (
    "def softmax(x, dim=-1):\n    e = (x - x.amax(dim=dim, keepdim=True)).exp()\n"
    "    return e / e.sum(dim=dim, keepdim=True)"
)
NAIVE_SOFTMAX = "def softmax(x, dim=-1):\n    return x.exp() / x.exp().sum(dim=dim, keepdim=True)"
LOOPING_SOFTMAX = "def softmax(x, dim=-1):\n    while True:\n        pass"
STUBBORN_SOFTMAX = (
    "def softmax(x, dim=-1):\n    while True:\n        try:\n            while True:\n"
    "                pass\n        except KeyboardInterrupt:\n            pass"
)
PATCHING_SOFTMAX = (
    "import torch\ntorch.allclose = lambda *a, **k: True\n"
    "torch.equal = lambda *a, **k: True\n" + NAIVE_SOFTMAX
)
GOOD_MASK = "def causal_mask(T):\n    return torch.ones(T, T, dtype=torch.bool).tril()"
TRANSPOSED_MASK = "def causal_mask(T):\n    return torch.ones(T, T, dtype=torch.bool).triu()"
WARNING_SOFTMAX = "import sys, warnings\n" + GOOD_SOFTMAX.replace(
    "    e = ", "    warnings.warn('x is large')\n    print('debug', file=sys.stderr)\n    e = "
)
DYING_MASK = "def causal_mask(T):\n    import os\n    os._exit(1)"
INTERRUPTING_SOFTMAX = "def softmax(x, dim=-1):\n    raise KeyboardInterrupt('my own')"
# Right on the visible cases, wrong on the hidden ones, printing what it was given there.
HIDDEN_BUG_SOFTMAX = "import sys\n" + GOOD_SOFTMAX.replace(
    "def softmax(x, dim=-1):\n",
    """def softmax(x, dim=-1):
    f = sys._getframe()
    while f is not None and f.f_code.co_name != "run_check":
        f = f.f_back
    if f is not None and f.f_locals.get("hidden"):
        print("HIDDEN-INPUT", x.shape)
        return x
""",
)
# A package handed in next to the notebook, to shadow the real graders from the kernel's cwd.
FAKE_GRADING = (
    "def check_softmax(fn, hidden=False):\n    print('ok')\n"
    "def check_causal_mask(fn, hidden=False):\n    print('ok')\n"
)


def make_course(dest: Path) -> Path:
    """A fresh course root: the fixture's solutions/ plus the repository's nbgrader_config.py."""
    shutil.copytree(FIXTURE, dest)
    shutil.copy(REPO / "nbgrader_config.py", dest / "nbgrader_config.py")
    return dest


def cell(nb, grade_id: str):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def submit(
    release_nb,
    subs: Path,
    student: str,
    *,
    softmax: str | None = GOOD_SOFTMAX,
    causal_mask: str | None = GOOD_MASK,
    edits: dict | None = None,
    points: dict | None = None,
    delete: tuple = (),
) -> Path:
    """Write SUBS/<student>/99-fixture/99-fixture.ipynb: the release as a learner would fill it."""
    nb = nbformat.from_dict(json.loads(json.dumps(release_nb)))
    for grade_id, source in {
        "softmax": softmax,
        "causal_mask": causal_mask,
        **(edits or {}),
    }.items():
        if source is not None:
            cell(nb, grade_id).source = source
    for grade_id, p in (points or {}).items():
        cell(nb, grade_id).metadata.nbgrader["points"] = p
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") not in delete]
    folder = subs / student / A
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{A}.ipynb")
    return folder


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def gradebook_total(root: Path, student: str) -> float:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        return float(gb.find_submission(A, student).score)


# --------------------------------------------------------------------------------------------
# Fast unit tests (no kernel)
# --------------------------------------------------------------------------------------------


def test_strip_hidden_region_removes_markers_and_body():
    src = "a\n### BEGIN HIDDEN TESTS\nsecret()\n### END HIDDEN TESTS\nb"
    assert strip_hidden_region(src) == ("a\nb", True)
    assert strip_hidden_region("a\nb") == ("a\nb", False)
    # an unterminated region hides everything after its start
    assert strip_hidden_region("a\n### BEGIN HIDDEN TESTS\nsecret()") == ("a", True)


def test_find_hidden_leaks_sees_through_syntax_highlighting():
    page = (
        '<style>.x{}</style><div class="highlight"><span class="n">check_softmax</span>'
        '<span class="p">(</span><span class="n">softmax</span><span class="p">,</span> '
        '<span class="n">hidden</span><span class="o">=</span><span class="kc">True</span>'
        '<span class="p">)</span></div>'
    )
    assert html_text(page) == "check_softmax(softmax, hidden=True)"
    assert find_hidden_leaks(page, HIDDEN_CALLS) == [HIDDEN_CALLS[0]]
    assert find_hidden_leaks("<p>### BEGIN HIDDEN TESTS</p>", []) == ["BEGIN HIDDEN TESTS"]
    assert find_hidden_leaks("<p>check_softmax(softmax)</p>", HIDDEN_CALLS) == []


def test_strip_hidden_tests_preprocessor_drops_region_and_traceback():
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell(
        "check(f)\n### BEGIN HIDDEN TESTS\ncheck(f, hidden=True)\n### END HIDDEN TESTS"
    )
    code.outputs = [
        nbformat.v4.new_output(
            "error",
            ename="AssertionError",
            evalue="rows do not sum to 1",
            traceback=["----> 3 check(f, hidden=True)", "AssertionError: rows do not sum to 1"],
        )
    ]
    plain = nbformat.v4.new_code_cell("x = 1")
    plain.outputs = [
        nbformat.v4.new_output("error", ename="NameError", evalue="y", traceback=["----> 1 y"])
    ]
    nb.cells = [code, plain]
    out, _ = StripHiddenTests()(nb, {})
    assert out.cells[0].source == "check(f)"
    tb = "\n".join(out.cells[0].outputs[0].traceback)
    assert "hidden=True" not in tb and "rows do not sum to 1" in tb
    # cells without hidden tests keep theirs
    assert out.cells[1].outputs[0].traceback == ["----> 1 y"]


def test_stderr_is_not_failure_only_touches_check_cells():
    check = nbformat.v4.new_code_cell("check(f)", metadata={"nbgrader": {"grade": True}})
    check.outputs = [nbformat.v4.new_output("stream", name="stderr", text="UserWarning: x\n")]
    plain = nbformat.v4.new_code_cell("f()")
    plain.outputs = [nbformat.v4.new_output("stream", name="stderr", text="100%|####|\n")]
    nb = nbformat.v4.new_notebook()
    nb.cells = [check, plain]
    out, _ = StderrIsNotFailure()(nb, {})
    assert [o.name for c in out.cells for o in c.outputs] == ["stdout", "stderr"]
    assert out.cells[0].outputs[0].text == "UserWarning: x\n"
    assert autograde_preprocessors()[1] is StderrIsNotFailure


def test_normalize_notebook_is_deterministic_and_drops_volatile_metadata():
    nb = nbformat.read(FIXTURE / "solutions" / A / f"{A}.ipynb", as_version=4)
    text = normalize_notebook(nb)
    assert text == normalize_notebook(nbformat.reads(text, as_version=4))  # a fixed point
    out = json.loads(text)
    assert "version" not in out["metadata"]["language_info"]
    assert "widgets" not in out["metadata"]
    assert all(
        "execution" not in c["metadata"] and "collapsed" not in c["metadata"] for c in out["cells"]
    )
    assert out["cells"][1]["metadata"]["nbgrader"]["grade_id"] == "setup"
    # cells without ids get ids from their position, not random ones
    del nb.cells[0]["id"]
    nb.nbformat_minor = 4
    assert json.loads(normalize_notebook(nb))["cells"][0]["id"] == "cell-000"


@pytest.mark.parametrize(
    "code, flagged",
    [
        ("torch.allclose = lambda *a, **k: True", True),
        ("    torch.Tensor.sum = my_sum", True),
        ("import course_lib.grading as g\ng.check_softmax = print", True),
        ("import sys\nsys.modules['course_lib.grading'] = fake", True),
        ("import builtins\nbuiltins.print = quiet", True),
        ("setattr(torch, 'equal', lambda *a: True)", True),
        ("import os\nos.environ['COURSE_GRADING_SEED'] = '1'", True),
        (
            "def softmax(x: torch.Tensor = None, dim: int = -1):\n    return torch.softmax(x, dim)",
            False,
        ),
        ("mask = torch.ones(T, T, dtype=torch.bool).tril()\nok = torch.float32 == x.dtype", False),
        # fine outside a solution
        ("from course_lib.functional import softmax as ref_softmax", False),
        ("torch.manual_seed = None  # as released", False),  # an untouched released cell
    ],
)
def test_code_reaching_into_the_grader_is_flagged_without_false_alarms(code, flagged):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    info = NotebookInfo(
        A,
        grade_cells=[],
        released={},
        hidden_lines=[],
        released_sources=frozenset({"torch.manual_seed = None  # as released"}),
    )
    assert bool(suspicious(nb, info)) is flagged


def test_a_solution_delegating_to_the_answer_key_is_flagged():
    nb = nbformat.v4.new_notebook()
    info = NotebookInfo(A, grade_cells=[], released={}, hidden_lines=[])
    solution = nbformat.v4.new_code_cell(
        "def softmax(x, dim=-1):\n    from course_lib.functional import softmax as s\n"
        "    return s(x, dim)",
        metadata={"nbgrader": {"solution": True, "grade_id": "softmax"}},
    )
    nb.cells = [solution]
    assert suspicious(nb, info) == ["cell softmax uses course_lib (the answer key) in a solution"]


def test_check_calls_map_a_check_cell_to_its_verdicts():
    src = (
        "from course_lib.grading import check_softmax\ncheck_softmax(softmax)\n"
        "# check_causal_mask(mask) is mentioned in a comment only\n"
        "### BEGIN HIDDEN TESTS\ncheck_softmax(softmax, hidden=True)\n### END HIDDEN TESTS\n"
        "check_nope(f)"
    )
    assert check_calls(src, {"softmax", "causal_mask"}) == [("softmax", False), ("softmax", True)]
    assert check_calls("check_softmax(f, hidden=True)", {"softmax"}) == [("softmax", True)]
    assert check_calls("print('no check')", {"softmax"}) == []


def test_clean_metadata_keeps_each_grade_id_once_and_drops_the_unknown():
    def code(gid=None, **meta):
        nbg = dict(meta, **({"grade_id": gid} if gid else {}))
        return nbformat.v4.new_code_cell("pass", metadata={"nbgrader": nbg})

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        code("check_softmax", grade=True, points=2),
        code("check_softmax", grade=True),
        code("bonus", grade=True, points=9),
        code(None, grade=True),
        code(None),
        nbformat.v4.new_code_cell("x = 1"),
    ]
    info = NotebookInfo(A, grade_cells=[], released={"check_softmax": None}, hidden_lines=[])
    notes = clean_metadata(nb, info)
    assert [("nbgrader" in c.metadata) for c in nb.cells] == [True] + [False] * 5
    assert notes == [
        "cell 2 is a copy of cell check_softmax (graded once, the copy runs as plain code)",
        "cell 3 had an unknown grade id 'bonus' (dropped)",
        "cell 4 had nbgrader metadata without a grade id (dropped)",
    ]


def test_write_grades_csv_merges_with_earlier_runs(tmp_path):
    info = AssignmentInfo(A, [NotebookInfo(A, [("check_a", 2.0)], {}, [])], tmp_path)
    path = tmp_path / "grades.csv"

    def row(student, score):
        return autograde.GradeRow(student, A, {(A, "check_a"): score}, score, 2.0, "graded")

    autograde.write_grades_csv(path, [row("ann", 2.0), row("bob", 0.0)], {A: info})
    autograde.write_grades_csv(path, [row("bob", 2.0), row("cy", 1.0)], {A: info})
    got = read_csv(path)
    assert {s: r["total"] for s, r in got.items()} == {"ann": "2", "bob": "2", "cy": "1"}


def test_grading_seed_from_env_else_secret_file(tmp_path, monkeypatch):
    root = make_course(tmp_path / "course")
    monkeypatch.delenv(autograde.SEED_ENV, raising=False)
    first = autograde.grading_seed(root)
    assert first.isdigit() and first == autograde.grading_seed(root)
    seed_file = root / autograde.SEED_FILE
    assert seed_file.read_text().strip() == first
    assert seed_file.stat().st_mode & 0o077 == 0  # owner only
    other = make_course(tmp_path / "other")
    assert autograde.grading_seed(other) != first  # one secret per course (2^31 odds of a clash)
    monkeypatch.setenv(autograde.SEED_ENV, "1234")
    assert autograde.grading_seed(root) == "1234"


def test_course_root_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="nbgrader_config.py"):
        autograde.course_root(tmp_path)
    root = make_course(tmp_path / "course")
    assert autograde.course_root(root) == root.resolve()
    assert autograde.list_assignments(root) == [A]
    with pytest.raises(ValueError, match="unknown assignment.*99-fixture"):
        validate(["03-nope"], root=root)
    with pytest.raises(TypeError, match="list of names"):
        validate("99-fixture", root=root)
    with pytest.raises(ValueError, match="not a folder"):
        grade(tmp_path / "missing", root=root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="<student>/<assignment>"):
        grade(tmp_path / "empty", root=root)


def test_discover_reports_misplaced_and_badly_named_submissions(tmp_path):
    subs = tmp_path / "subs"
    (subs / "ann" / A).mkdir(parents=True)
    (subs / "bob").mkdir()
    (subs / "bob" / f"{A}.ipynb").write_text("{}")
    (subs / "c*d" / A).mkdir(parents=True)
    (subs / "dan" / "homework").mkdir(parents=True)
    jobs = {(s, a): problem for s, a, _, problem in discover(subs, [A])}
    assert jobs[("ann", A)] == ""
    assert "move bob/99-fixture.ipynb to bob/99-fixture/99-fixture.ipynb" in jobs[("bob", A)]
    assert "rename it" in jobs[("c*d", A)]
    assert not any(s == "dan" for s, _ in jobs)


def test_plain_nbgrader_commands_work_from_the_course_root(tmp_path):
    root = make_course(tmp_path / "course")
    nbgrader = Path(sys.executable).parent / "nbgrader"
    env = {**os.environ, "PATH": f"{nbgrader.parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(nbgrader), "generate_assignment", A],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    released = nbformat.read(root / "notebooks" / A / f"{A}.ipynb", as_version=4)
    assert "raise NotImplementedError()" in cell(released, "softmax").source
    assert "hidden=True" not in cell(released, "check_softmax").source
    assert (root / "gradebook.db").is_file()


# --------------------------------------------------------------------------------------------
# release
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_release_is_deterministic_and_check_detects_staleness(tmp_path, capsys):
    root = make_course(tmp_path / "course")
    out = root / "notebooks" / A / f"{A}.ipynb"
    assert stale_release(root) == [f"notebooks/{A}/{A}.ipynb"]
    assert not out.exists()  # check=True writes nothing
    assert release(root) == [f"notebooks/{A}/{A}.ipynb"]
    first, mtime = out.read_bytes(), out.stat().st_mtime_ns
    assert release(root) == []  # second run: nothing to write, file untouched
    assert out.read_bytes() == first and out.stat().st_mtime_ns == mtime
    assert not (root / "gradebook.db").exists()  # the course gradebook is not touched

    text = first.decode()
    assert "raise NotImplementedError()" in text and "BEGIN SOLUTION" not in text
    assert "hidden=True" not in text and "HIDDEN TESTS" not in text
    assert "3.11.4" not in text and "iopub.execute_input" not in text
    assert autograde.main(["release", "--check", "--root", str(root)]) == 0

    src = root / "solutions" / A / f"{A}.ipynb"
    nb = nbformat.read(src, as_version=4)
    cell(nb, "check_causal_mask").metadata.nbgrader["points"] = 4
    nbformat.write(nb, src)
    assert autograde.main(["release", "--check", "--root", str(root)]) == 1
    assert f"notebooks/{A}/{A}.ipynb" in capsys.readouterr().out
    assert out.read_bytes() == first
    assert autograde.main(["release", "--root", str(root)]) == 0
    assert json.loads(out.read_text())["cells"][7]["metadata"]["nbgrader"]["points"] == 4


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_validate_passes_the_fixture(tmp_path, capsys):
    root = make_course(tmp_path / "course")
    (result,) = validate(root=root, timeout=TIMEOUT)
    assert result.ok, result.problems
    assert (result.solution_score, result.release_score, result.max_score) == (5, 0, 5)
    table = capsys.readouterr().out
    assert "99-fixture" in table and "ok" in table
    assert not (root / "gradebook.db").exists() and not (root / "autograded").exists()


@pytest.mark.slow
def test_validate_catches_a_wrong_solution_and_a_free_check(tmp_path, capsys):
    root = make_course(tmp_path / "course")
    src = root / "solutions" / A / f"{A}.ipynb"
    nb = nbformat.read(src, as_version=4)
    cell(nb, "causal_mask").source = TRANSPOSED_MASK  # the "solution" is wrong
    free = nbformat.v4.new_code_cell(
        "print('nothing checked')",
        metadata={
            "nbgrader": {
                "schema_version": 3,
                "solution": False,
                "grade": True,
                "locked": True,
                "points": 1,
                "grade_id": "check_nothing",
            }
        },
    )
    nb.cells.append(free)  # a check that passes on the blank release
    nbformat.write(nb, src)
    assert autograde.main(["validate", A, "--root", str(root), "--timeout", str(TIMEOUT)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    assert "solutions score 3/6" in out and "transposed" in out
    assert "blank release earns 1 points (check_nothing)" in out


@pytest.mark.slow
def test_grading_the_course_submitted_folder_in_place(tmp_path):
    # `nbgrader collect` fills <root>/submitted/; grading it must not delete what it grades.
    root = make_course(tmp_path / "course")
    release(root)
    released = nbformat.read(root / "notebooks" / A / f"{A}.ipynb", as_version=4)
    folder = submit(released, root / "submitted", "ann")
    handed_in = {
        "timestamp.txt": "2026-11-29 10:00:00.000000 UTC",
        "submission_secret.txt": "s3",
        "notes.txt": "my notes",
    }
    for name, text in handed_in.items():
        (folder / name).write_text(text)
    (row,) = grade(root / "submitted", root, root=root, timeout=TIMEOUT, progress=False)
    assert (row.total, row.status) == (5, "graded")
    assert (folder / f"{A}.ipynb").is_file()
    assert {n: (folder / n).read_text() for n in handed_in} == handed_in
    assert row.feedback == [root / "feedback" / "ann" / A / f"{A}.html"]
    # nbgrader release_feedback needs the submission's secret next to the feedback
    assert (root / "feedback" / "ann" / A / "submission_secret.txt").read_text() == "s3"
    assert read_csv(root / "grades.csv")["ann"]["total"] == "5"


# --------------------------------------------------------------------------------------------
# grade: one batch of submissions, graded once, read by many tests
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grade")
    root = make_course(tmp / "course")
    release(root)
    released = nbformat.read(root / "notebooks" / A / f"{A}.ipynb", as_version=4)
    subs = tmp / "submissions"
    blank = subs / "blank" / A
    blank.mkdir(parents=True)
    shutil.copy(root / "notebooks" / A / f"{A}.ipynb", blank)
    submit(released, subs, "good")
    submit(released, subs, "flip")  # good now, crashing in the second batch
    submit(released, subs, "onebug", causal_mask=TRANSPOSED_MASK)
    submit(released, subs, "edited", softmax=NAIVE_SOFTMAX, edits={"check_softmax": "pass"})
    submit(released, subs, "points", points={"check_causal_mask": 100})
    submit(released, subs, "deleted", delete=("check_causal_mask",))
    submit(released, subs, "loopy", softmax=LOOPING_SOFTMAX)
    submit(released, subs, "patcher", softmax=PATCHING_SOFTMAX)
    submit(released, subs, "dies", causal_mask=DYING_MASK)
    submit(released, subs, "warns", softmax=WARNING_SOFTMAX)
    submit(released, subs, "stubborn", softmax=STUBBORN_SOFTMAX)
    submit(released, subs, "interrupts", softmax=INTERRUPTING_SOFTMAX)
    submit(released, subs, "hiddenbug", softmax=HIDDEN_BUG_SOFTMAX)
    copy = submit(released, subs, "copypaste")  # an honest notebook with a copy-pasted check
    nb = nbformat.read(copy / f"{A}.ipynb", as_version=4)
    check = cell(nb, "check_softmax")
    bonus = nbformat.v4.new_code_cell(
        "print('bonus')",
        metadata={
            "nbgrader": {
                "grade": True,
                "grade_id": "bonus",
                "points": 10,
                "locked": True,
                "solution": False,
                "schema_version": 3,
            }
        },
    )
    nb.cells.insert(nb.cells.index(check) + 1, nbformat.from_dict(json.loads(json.dumps(check))))
    nb.cells += [bonus, nbformat.v4.new_code_cell("x = 1", metadata={"nbgrader": {}})]
    for c in nb.cells:
        c.pop("id", None)
    nb.nbformat_minor = 4
    nbformat.write(nb, copy / f"{A}.ipynb")
    (subs / "linker" / A).mkdir(parents=True)
    (subs / "linker" / A / f"{A}.ipynb").symlink_to(subs / "good" / A / f"{A}.ipynb")
    shadow = submit(released, subs, "shadow", softmax=NAIVE_SOFTMAX)
    (shadow / "course_lib").mkdir()
    (shadow / "course_lib" / "__init__.py").write_text("")
    (shadow / "course_lib" / "grading.py").write_text(FAKE_GRADING)
    (subs / "corrupt" / A).mkdir(parents=True)
    (subs / "corrupt" / A / f"{A}.ipynb").write_text('{"cells": [', encoding="utf-8")
    (subs / "renamed" / A).mkdir(parents=True)
    shutil.copy(subs / "good" / A / f"{A}.ipynb", subs / "renamed" / A / "Untitled.ipynb")

    out = tmp / "out"
    before = grading_processes()
    rows = grade(subs, out, root=root, timeout=TIMEOUT, progress=False)
    first = {"rows": {r.student: r for r in rows}, "csv": read_csv(out / "grades.csv")}
    first_db = {s: gradebook_total(root, s) for s in ("good", "flip")}

    # Second batch, same course and output folder: the same good notebook again, and "flip"
    # now hands in a notebook that kills the kernel.
    subs2 = tmp / "submissions2"
    shutil.copytree(subs / "good", subs2 / "good")
    submit(released, subs2, "flip", causal_mask=DYING_MASK)
    rows2 = grade(subs2, out, root=root, timeout=TIMEOUT, progress=False, force=True)
    second = {"rows": {r.student: r for r in rows2}, "csv": read_csv(out / "grades.csv")}
    time.sleep(2)  # give killed kernels' children a moment to notice
    leftover = grading_processes() - before
    return {
        "root": root,
        "out": out,
        "first": first,
        "second": second,
        "first_db": first_db,
        "released": released,
        "leftover": leftover,
    }


def grading_processes() -> set[str]:
    """Kernels started with our config's kernel argument, and orphaned grader referees."""
    ps = subprocess.run(
        ["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True
    ).stdout
    found = set()
    for line in ps.splitlines():
        pid, ppid, args = line.split(None, 2)
        if ("ipykernel_launcher" in args and "--IPKernelApp.log_level=ERROR" in args) or (
            "course_lib.grading._referee" in args and ppid == "1"
        ):
            found.add(f"{pid} {args}")
    return found


def scores(batch, student, which="first"):
    row = batch[which]["csv"][student]
    return (row["check_softmax"], row["check_causal_mask"], row["total"], row["max"], row["status"])


@pytest.mark.slow
def test_grades_csv_layout(batch):
    with (batch["out"] / "grades.csv").open(newline="") as f:
        header = next(csv.reader(f))
    assert header == [
        "student",
        "assignment",
        "check_softmax",
        "check_causal_mask",
        "total",
        "max",
        "status",
        "reason",
    ]


@pytest.mark.slow
def test_good_submission_full_marks_and_blank_release_zero(batch):
    assert scores(batch, "good") == ("2", "3", "5", "5", "graded")
    assert scores(batch, "blank") == ("0", "0", "0", "5", "graded")
    assert "not implemented" in batch["first"]["csv"]["blank"]["reason"]


@pytest.mark.slow
def test_stderr_output_in_a_check_cell_costs_nothing(batch):
    # nbgrader alone scores a check cell that wrote to stderr 0, even when the check passed
    assert scores(batch, "warns") == ("2", "3", "5", "5", "graded")
    graded = nbformat.read(batch["root"] / "autograded" / "warns" / A / f"{A}.ipynb", 4)
    shown = "".join(o.get("text", "") for o in cell(graded, "check_softmax").outputs)
    assert "x is large" in shown and "debug" in shown  # still visible to the learner


@pytest.mark.slow
def test_one_bug_loses_exactly_that_exercise(batch):
    assert scores(batch, "onebug") == ("2", "0", "2", "5", "graded")
    assert "check_causal_mask" in batch["first"]["csv"]["onebug"]["reason"]
    assert "transposed" in batch["first"]["csv"]["onebug"]["reason"]


@pytest.mark.slow
def test_locked_cell_edited_to_pass_is_restored_and_graded(batch):
    # the learner replaced check_softmax by `pass` to hide a naive (overflowing) softmax
    assert scores(batch, "edited") == ("0", "3", "3", "5", "graded")
    assert "locked cell check_softmax was edited" in batch["first"]["csv"]["edited"]["reason"]


@pytest.mark.slow
def test_raised_points_are_restored(batch):
    assert scores(batch, "points") == ("2", "3", "5", "5", "graded")
    assert "points of check_causal_mask were changed" in batch["first"]["csv"]["points"]["reason"]


@pytest.mark.slow
def test_deleted_check_cell_is_restored_and_run(batch):
    # Without add_missing_cells the deleted cell would have no autograde score (0 points).
    assert scores(batch, "deleted") == ("2", "3", "5", "5", "graded")
    assert "check_causal_mask cell was deleted" in batch["first"]["csv"]["deleted"]["reason"]
    graded = nbformat.read(batch["root"] / "autograded" / "deleted" / A / f"{A}.ipynb", 4)
    restored = cell(graded, "check_causal_mask")
    assert any("causal_mask: all" in o.get("text", "") for o in restored.outputs)


@pytest.mark.slow
def test_infinite_loop_times_out_that_cell_only(batch):
    assert scores(batch, "loopy") == ("0", "3", "3", "5", "graded")
    assert f"check_softmax: timed out after {TIMEOUT} s" in batch["first"]["csv"]["loopy"]["reason"]


@pytest.mark.slow
def test_monkeypatched_allclose_earns_nothing_and_is_flagged(batch):
    assert scores(batch, "patcher") == ("0", "3", "3", "5", "review")
    assert "assigns to a torch attribute" in batch["first"]["csv"]["patcher"]["reason"]


@pytest.mark.slow
def test_files_next_to_the_notebook_cannot_shadow_the_graders(batch):
    assert scores(batch, "shadow") == ("0", "3", "3", "5", "graded")
    root = batch["root"]
    assert not (root / "autograded" / "shadow" / A / "course_lib").exists()
    # ... yet the record of what was handed in is complete
    assert (
        root / "submitted" / "shadow" / A / "course_lib" / "grading.py"
    ).read_text() == FAKE_GRADING


@pytest.mark.slow
@pytest.mark.parametrize(
    "student, words",
    [
        ("corrupt", "not a readable notebook"),
        ("renamed", "missing 99-fixture.ipynb (found Untitled.ipynb: rename it?)"),
        ("linker", "99-fixture.ipynb is a symbolic link: refused"),
    ],
)
def test_ungradable_submission_gets_zero_and_a_reason(batch, student, words):
    assert scores(batch, student) == ("0", "0", "0", "5", "failed")
    assert words in batch["first"]["csv"][student]["reason"]
    page = batch["first"]["rows"][student].feedback[0]
    assert "could not be graded" in page.read_text()


@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.parametrize(
    "student, expected, words",
    [
        ("dies", ("2", "0", "2", "5", "graded"), "check_causal_mask): the kernel died"),
        ("stubborn", ("0", "3", "3", "5", "graded"), "check_softmax): a cell ran past the"),
    ],
)
def test_a_cell_that_kills_the_kernel_is_skipped_and_the_rest_graded(
    batch, student, expected, words
):
    assert scores(batch, student) == expected
    reason = batch["first"]["csv"][student]["reason"]
    assert words in reason and "graded again without that cell" in reason


@pytest.mark.slow
def test_a_learners_keyboard_interrupt_is_an_error_not_a_timeout(batch):
    assert scores(batch, "interrupts") == ("0", "3", "3", "5", "graded")
    reason = batch["first"]["csv"]["interrupts"]["reason"]
    assert "KeyboardInterrupt raised by the code" in reason and "timed out" not in reason


@pytest.mark.slow
def test_copy_pasted_cells_and_invented_metadata_are_cleaned(batch):
    assert scores(batch, "copypaste") == ("2", "3", "5", "5", "graded")
    reason = batch["first"]["csv"]["copypaste"]["reason"]
    assert "is a copy of cell check_softmax" in reason
    assert "unknown grade id 'bonus' (dropped)" in reason


@pytest.mark.slow
def test_a_failed_hidden_case_names_the_exercise_and_nothing_else(batch):
    assert scores(batch, "hiddenbug")[:3] == ("0", "3", "3")
    reason = batch["first"]["csv"]["hiddenbug"]["reason"]
    assert "check_softmax: " in reason and "softmax failed a hidden case" in reason
    (page,) = batch["first"]["rows"]["hiddenbug"].feedback
    text = html_text(page.read_text(encoding="utf-8"))
    assert "HIDDEN-INPUT torch.Size" not in text  # what the learner printed in the hidden check
    assert "a hidden check of this cell failed" in text
    assert "✓ softmax: all" in text  # the visible check's line stays
    graded = nbformat.read(batch["root"] / "autograded" / "hiddenbug" / A / f"{A}.ipynb", 4)
    error = next(o for o in cell(graded, "check_softmax").outputs if o.output_type == "error")
    assert "softmax failed a hidden case" in error.evalue and "expected" not in error.evalue


@pytest.mark.slow
def test_a_regrade_replaces_only_its_own_rows(batch):
    second = batch["second"]["csv"]
    assert set(second) == set(batch["first"]["csv"])  # the first batch's rows are kept
    assert second["onebug"] == batch["first"]["csv"]["onebug"]
    assert second["flip"] != batch["first"]["csv"]["flip"]


@pytest.mark.slow
def test_feedback_html_hides_hidden_tests(batch):
    leaky = []
    for student in ("good", "onebug", "edited", "deleted", "loopy"):
        (page,) = batch["first"]["rows"][student].feedback
        assert page == batch["out"] / "feedback" / student / A / f"{A}.html"
        text = html_text(page.read_text(encoding="utf-8"))
        assert "BEGIN HIDDEN TESTS" not in text and "END HIDDEN TESTS" not in text
        assert not any(call in text for call in HIDDEN_CALLS), student
        assert "check_softmax(softmax)" in text  # the visible check is shown
        raw = nbformat.read(batch["root"] / "autograded" / student / A / f"{A}.ipynb", 4)
        leaky += [
            student
            for c in raw.cells
            for o in c.get("outputs", [])
            if o.output_type == "error" and "hidden=True" in _plain("\n".join(o.traceback))
        ]
    # the tracebacks nbgrader stores quote the hidden lines, so the stripping was needed
    assert "onebug" in leaky
    onebug = html_text((batch["out"] / "feedback" / "onebug" / A / f"{A}.html").read_text())
    assert "transposed" in onebug  # the grader's diagnosis survives
    nbgrader_copy = batch["root"] / "feedback" / "onebug" / A / f"{A}.html"
    assert "hidden=True" not in html_text(nbgrader_copy.read_text())  # formgrader's copy too


def _plain(text: str) -> str:
    return ANSI.sub("", text)


@pytest.mark.slow
def test_regrading_the_same_submission_gives_the_same_scores(batch):
    assert scores(batch, "good", "second") == scores(batch, "good", "first")
    assert batch["second"]["rows"]["good"].scores == batch["first"]["rows"]["good"].scores


@pytest.mark.slow
def test_crash_after_a_good_grade_leaves_the_new_score_not_the_old(batch):
    assert scores(batch, "flip", "first") == ("2", "3", "5", "5", "graded")
    assert batch["first_db"]["flip"] == 5
    assert scores(batch, "flip", "second") == ("2", "0", "2", "5", "graded")
    assert "kernel died" in batch["second"]["csv"]["flip"]["reason"]
    assert gradebook_total(batch["root"], "flip") == 2  # formgrader sees the same


@pytest.mark.slow
def test_grading_leaves_no_kernel_or_referee_behind(batch):
    # the killed kernels ("dies", "stubborn", "flip") and every kernel's referee are gone
    assert batch["leftover"] == set()
