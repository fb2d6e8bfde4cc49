"""The attacks of issue 12, each through ``course grade`` end to end, on the fixture course.

One batch holds an honest learner, a classmate (the victim), the blank release and one
submission per attack; it is graded once (real kernels, real sandbox) and the tests read its
results. Scores must come from the referee's record, not from what the kernel printed; a
submission must not touch the course, the other submissions, the output or the seed.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import nbformat
import pytest
from test_autograde import GOOD_MASK, GOOD_SOFTMAX, TIMEOUT, A, make_course, read_csv, submit

import course_lib
from course_lib.autograde import grade, html_text, release
from course_lib.autograde._sandbox import sandbox_problem

SEED = "918273645"  # the grading process's COURSE_GRADING_SEED: no kernel may ever see it
WRONG = "def softmax(x, dim=-1):\n    return x.exp()  # unnormalised"
SIGNATURE = "victim-signature-8841"  # in the victim's code: no other feedback may show it

# 1. replace the check functions through an import the flagging regexes do not see
PATCH_CHECKS = (
    'import importlib\ng = importlib.import_module("course" + "_lib.grading")\n'
    'g.check_softmax = lambda *a, **k: print("✓ softmax: all 9 checks passed")\n' + WRONG
)
# 2. make the client's run_check say "passed"
PATCH_RUN_CHECK = (
    'import importlib\nc = importlib.import_module("course" + "_lib.grading._client")\n'
    'c.run_check = lambda name, fn, hidden: {"passed": True, "checks": 9}\n' + WRONG
)
# 3. an input transformer that turns every check cell into `pass`
TRANSFORMER = (
    'def _skip(lines):\n    return ["pass\\n"] if any("check" + "_" in l for l in lines) '
    "else lines\nget_ipython().input_transformers_cleanup.append(_skip)\n"
)
SKIP_CHECKS = TRANSFORMER + WRONG
# 4. the same, only when a grading seed is in the environment (the learner's own runs look fine)
SKIP_WHEN_GRADED = (
    'import os\nif any(k.endswith("GRADING" + "_SEED") for k in os.environ):\n'
    + "".join("    " + line + "\n" for line in TRANSFORMER.splitlines())
    + WRONG
)
# 5. vandalise the grader on disk and delete the classmates' staged notebooks
VANDAL = f"""import glob, importlib.util, pathlib
referee = pathlib.Path(importlib.util.find_spec("course" + "_lib.grading._referee").origin)
for target, action in [(referee, "rewrite"), *[(pathlib.Path(p), "delete") for p in
        glob.glob("/tmp/**/*.ipynb", recursive=True) + glob.glob("/work/**/*.ipynb", recursive=True)
        if "victim" in p]]:
    try:
        if action == "rewrite":
            target.write_text(target.read_text().replace('"passed": True,', '"passed": 1,')
                              .replace('"passed": False,', '"passed": True,'))
        else:
            target.unlink()
        print("vandalised", target)
    except OSError as exc:
        print("refused", target, type(exc).__name__)
{WRONG}"""
# 6. a daemon that outlives the kernel and rewrites grades.csv after `course grade` returns
DAEMON = (
    '''import subprocess, sys
subprocess.Popen([sys.executable, "-c", """
import time, pathlib
time.sleep(4)
for p in ["OUT/grades.csv"]:
    pathlib.Path(p).write_text("student,total\\\\ndaemon,5\\\\n")
"""], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
'''
    + WRONG
)
# The seed, looked for everywhere a kernel could reach: environment, files up from the
# working folder, the referee's /proc entries; and the classmates' notebooks.
SNOOP = (
    """import glob, os, pathlib
found = [f"{k}={v}" for k, v in os.environ.items() if "SEED" in k or "REFEREE" in k]
here = pathlib.Path.cwd()
for folder in [here, *here.parents]:
    for p in folder.glob(".grading_seed"):
        found.append(f"{p}: {p.read_text()}")
for p in glob.glob("/proc/[0-9]*/cmdline") + glob.glob("/proc/[0-9]*/environ"):
    try:
        found.append(pathlib.Path(p).read_bytes().decode(errors="replace"))
    except OSError:
        pass
for p in glob.glob("/tmp/**/*.ipynb", recursive=True) + glob.glob("/work/**/victim/**/*.ipynb",
                                                                     recursive=True):
    found.append(pathlib.Path(p).read_text(errors="replace"))
print("\\n".join(found))
"""
    + GOOD_SOFTMAX
)


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    if sandbox_problem():
        pytest.fail(
            f"the grading sandbox does not work here: {sandbox_problem()}; "
            "install bubblewrap (`apt-get install bubblewrap`, done by `make test` as root)"
        )
    tmp = tmp_path_factory.mktemp("attacks")
    root = make_course(tmp / "course")
    release(root)
    released = nbformat.read(root / "notebooks" / A / f"{A}.ipynb", as_version=4)
    subs, out = tmp / "subs", tmp / "out"
    submit(released, subs, "honest")
    submit(released, subs, "patch_checks", softmax=PATCH_CHECKS)
    submit(released, subs, "patch_run_check", softmax=PATCH_RUN_CHECK)
    submit(released, subs, "skip_checks", softmax=SKIP_CHECKS)
    submit(released, subs, "skip_when_graded", softmax=SKIP_WHEN_GRADED)
    submit(released, subs, "snoop", softmax=SNOOP)
    submit(released, subs, "vandal", softmax=VANDAL)
    submit(
        released, subs, "victim", softmax=GOOD_SOFTMAX + f"\n# {SIGNATURE}", causal_mask=GOOD_MASK
    )
    submit(released, subs, "vzblank", softmax=None, causal_mask=None)  # after the vandal
    submit(released, subs, "daemon", softmax=DAEMON.replace("OUT", str(out)))
    mp = pytest.MonkeyPatch()
    mp.setenv("COURSE_GRADING_SEED", SEED)  # the instructor's shell has it: kernels must not
    try:
        rows = grade(subs, out, root=root, timeout=TIMEOUT, progress=False)
    finally:
        mp.undo()
    csv_after_grade = (out / "grades.csv").read_bytes()
    time.sleep(6)  # the daemon, had it survived, would have written by now
    return {
        "root": root,
        "out": out,
        "rows": {r.student: r for r in rows},
        "csv": read_csv(out / "grades.csv"),
        "csv_bytes": csv_after_grade,
        "subs": subs,
    }


def _scores(attacked, student):
    row = attacked["csv"][student]
    return row["check_softmax"], row["check_causal_mask"], row["total"]


@pytest.mark.slow
def test_honest_and_blank_are_graded_as_before(attacked):
    assert _scores(attacked, "honest") == ("2", "3", "5")
    assert _scores(attacked, "vzblank") == ("0", "0", "0")


@pytest.mark.slow
@pytest.mark.parametrize(
    "student, mask",
    [
        ("patch_checks", "3"),  # only check_softmax was replaced
        ("patch_run_check", "0"),  # no check reached the referee: nothing is earned
        ("skip_checks", "0"),  # every check cell became `pass`
        ("skip_when_graded", "3"),  # no seed in the kernel's environment: the checks ran for real
    ],
)
def test_faked_checks_earn_nothing(attacked, student, mask):
    # attacks 1-4: the kernel says "passed" (or never runs the check); the referee's record
    # has no passing verdict for softmax, so check_softmax scores 0 (the softmax is wrong).
    assert _scores(attacked, student) == ("0", mask, mask), attacked["csv"][student]["reason"]
    assert "check_softmax" in attacked["csv"][student]["reason"]


@pytest.mark.slow
def test_a_vandal_changes_neither_the_grader_nor_a_classmate(attacked):
    assert _scores(attacked, "vandal") == ("0", "3", "3")
    referee = Path(course_lib.__file__).parent / "grading" / "_referee.py"
    assert '"passed": 1,' not in referee.read_text()  # the vandal's rewrite did not land
    assert _scores(attacked, "victim") == ("2", "3", "5")  # graded after the vandal
    assert (attacked["subs"] / "victim" / A / f"{A}.ipynb").is_file()
    graded = nbformat.read(attacked["root"] / "autograded" / "vandal" / A / f"{A}.ipynb", 4)
    shown = "".join(o.get("text", "") for c in graded.cells for o in c.get("outputs", []))
    assert "vandalised" not in shown and "refused" in shown


@pytest.mark.slow
def test_a_daemon_cannot_change_grades_after_grading(attacked):
    assert _scores(attacked, "daemon") == ("0", "3", "3")
    assert (attacked["out"] / "grades.csv").read_bytes() == attacked["csv_bytes"]
    assert "daemon,5" not in (attacked["out"] / "grades.csv").read_text()


@pytest.mark.slow
def test_no_kernel_sees_the_seed_or_a_classmates_code(attacked):
    assert _scores(attacked, "snoop") == ("2", "3", "5")  # snooping is not cheating by itself
    autograded = attacked["root"] / "autograded"
    for student, row in attacked["rows"].items():
        texts = [html_text(p.read_text(encoding="utf-8")) for p in row.feedback]
        texts.append((autograded / student / A / f"{A}.ipynb").read_text())
        for text in texts:
            assert SEED not in text, student
            if student != "victim":
                assert SIGNATURE not in text, student
    graded = nbformat.read(autograded / "snoop" / A / f"{A}.ipynb", 4)
    shown = "".join(o.get("text", "") for c in graded.cells for o in c.get("outputs", []))
    assert "COURSE_REFEREE_SOCKET" in shown  # the snoop ran and printed what it could find


def test_the_fixture_attacks_are_real_without_the_referee(tmp_path, monkeypatch):
    """The transformer of attack 3 really skips check cells in a plain IPython shell."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_cell(TRANSFORMER)
        result = shell.run_cell(
            "from course_lib.grading import check_softmax\ncheck_softmax(lambda x, dim=-1: x)"
        )
        assert result.success  # the failing check became `pass`
    finally:
        shell.input_transformers_cleanup.clear()
        InteractiveShell.clear_instance()
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.slow
def test_the_canary_ran_once_and_is_remembered(attacked):
    import json

    cache = json.loads((attacked["out"] / ".canary.json").read_text())
    assert set(cache) == {A} and len(cache[A]) == 64  # a sha256, not the seed
    assert SEED not in (attacked["out"] / ".canary.json").read_text()


@pytest.mark.slow
def test_a_failing_canary_publishes_nothing(tmp_path):
    # The solutions themselves are wrong (as if the grader were broken): nothing is graded.
    root = make_course(tmp_path / "course")
    src = root / "solutions" / A / f"{A}.ipynb"
    nb = nbformat.read(src, as_version=4)
    mask = next(
        c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "causal_mask"
    )
    mask.source = "def causal_mask(T):\n    return torch.ones(T, T, dtype=torch.bool).triu()"
    nbformat.write(nb, src)
    release(root)
    released = nbformat.read(root / "notebooks" / A / f"{A}.ipynb", as_version=4)
    submit(released, tmp_path / "subs", "ann")
    out = tmp_path / "out"
    from course_lib.autograde import main

    assert (
        main(
            [
                "grade",
                str(tmp_path / "subs"),
                "--out",
                str(out),
                "--root",
                str(root),
                "--timeout",
                str(TIMEOUT),
            ]
        )
        == 2
    )
    assert not (out / "grades.csv").exists() and not (out / "feedback").exists()
    assert not (out / ".canary.json").exists()


def test_the_notebook_time_limit_skips_the_cells_after_it(tmp_path):
    from course_lib.autograde import _sandbox, kernels

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import time\ntime.sleep(1.5)"),
        nbformat.v4.new_code_cell("print('late')"),
    ]
    with _sandbox.Jail(tmp_path, "5", unsafe=bool(sandbox_problem()), notebook_timeout=1.0):
        executor = kernels.JailedExecute(timeout=60)
        out, _ = executor.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert out.cells[0].outputs == []
    (error,) = out.cells[1].outputs
    assert error.ename == "NotRun" and "time limit (1 s)" in error.evalue


def test_grade_refuses_without_a_sandbox_unless_unsafe(tmp_path, monkeypatch, capsys):
    import sys

    from course_lib.autograde import _sandbox, main

    # the module itself: the package's `grade` is the function
    grade_module = sys.modules["course_lib.autograde.grade"]

    root = make_course(tmp_path / "course")
    (tmp_path / "subs" / "ann" / A).mkdir(parents=True)
    monkeypatch.setattr(grade_module, "sandbox_problem", lambda: "bwrap is not installed")
    assert main(["grade", str(tmp_path / "subs"), "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "REFUSING TO GRADE: bwrap is not installed" in err and "--unsafe" in err
    assert _sandbox.SANDBOX_FIX in err


@pytest.mark.slow
def test_a_kernel_hits_its_memory_and_process_limits(tmp_path):
    from course_lib.autograde import _sandbox, kernels

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "try:\n    b = bytearray(32 << 30)\nexcept MemoryError:\n    print('memory refused')"
        ),
        nbformat.v4.new_code_cell(
            "import threading, time\nn = 0\ntry:\n    for _ in range(5000):\n"
            "        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
            "        n += 1\nexcept RuntimeError:\n    print('tasks refused after', n)"
        ),
    ]
    with _sandbox.Jail(tmp_path, "5", unsafe=bool(sandbox_problem())) as jail:
        executor = kernels.JailedExecute(timeout=120)
        out, _ = executor.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
        limited = jail.cgroup is not None
    assert out.cells[0].outputs[0].text == "memory refused\n"
    if limited:  # a pids cgroup was writable (as on the test machine)
        assert out.cells[1].outputs[0].text.startswith("tasks refused after")


def test_the_sandbox_tmp_does_not_hide_a_course_installed_under_tmp(tmp_path):
    # bwrap mounts in argument order: a tmpfs on /tmp after the binds of the virtual environment
    # and course_lib would hide them when they live under /tmp (the kernel then dies at start).
    from course_lib.autograde import _sandbox

    jail = _sandbox.Jail.__new__(_sandbox.Jail)
    jail.unsafe, jail.cgroup, jail.memory = False, None, 1 << 30
    jail.home, jail.ipc, jail.ref = tmp_path / "home", tmp_path / "ipc", tmp_path / "ref"
    args = jail.wrap(["python"])
    tmpfs = args.index("--tmpfs")
    assert args[tmpfs + 1] == "/tmp"
    binds = [i for i, a in enumerate(args) if a in ("--ro-bind", "--bind")]
    assert binds and tmpfs < min(binds)
