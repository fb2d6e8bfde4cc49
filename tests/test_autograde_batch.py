"""Grading a whole class: ``--jobs``, an interrupted run resumed, ``--shard`` and ``--merge``.

One generated class of 40 students (honest, blank, broken and cheating notebooks of the
fixture course) is graded three times, each into its own copy of the course: in one process
(``jobs=1``, the reference), with ``--jobs 2`` interrupted halfway by SIGINT and run again, and
as 3 shards merged. grades.csv and the gradebook's scores must be the same every time, and the
resumed run must not grade again what the interrupted one finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from test_autograde import (
    GOOD_SOFTMAX,
    NAIVE_SOFTMAX,
    PATCHING_SOFTMAX,
    TIMEOUT,
    TRANSPOSED_MASK,
    A,
    grading_processes,
    make_course,
    read_csv,
    submit,
)

from course_lib.autograde import grade, merge, release, shard
from course_lib.autograde.gradebook import take_submission
from course_lib.autograde.resume import FILE as RESUME_FILE
from course_lib.autograde.resume import ResumeLog, submission_digest

REPO = Path(__file__).resolve().parents[1]
SEED = "424242"
STUDENTS = 40
# Each student hands in one of these; "corrupt" is not a notebook at all.
VARIANTS = {
    "honest": {"softmax": GOOD_SOFTMAX},
    "blank": {"softmax": None, "causal_mask": None},
    "naive": {"softmax": NAIVE_SOFTMAX},  # broken: overflows
    "onebug": {"causal_mask": TRANSPOSED_MASK},  # broken: one exercise wrong
    "patcher": {"softmax": PATCHING_SOFTMAX},  # cheating: monkeypatches torch.allclose
    "corrupt": None,
}
EXPECTED = {
    "honest": ("5", "graded"),
    "blank": ("0", "graded"),
    "naive": ("3", "graded"),
    "onebug": ("2", "graded"),
    "patcher": ("3", "review"),
    "corrupt": ("0", "failed"),
}


def variant(i: int) -> str:
    return list(VARIANTS)[i % len(VARIANTS)]


def gradebook_scores(root: Path) -> dict[tuple[str, str], dict]:
    """Every submission's grades in ``root``'s gradebook: (student, assignment) -> grades."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        students = [s.id for s in gb.students]
        out = {}
        for s in students:
            scores = take_submission(gb, A, s)
            if scores is not None:
                out[(s, A)] = {
                    k: (v["auto_score"], v["manual_score"]) for k, v in scores.grades.items()
                }
        return out


def course_lib_hash() -> str:
    """A hash of course_lib's code, which the resume key includes."""
    import course_lib

    package = Path(course_lib.__file__).parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()


def course_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "course_lib", "grade", *args]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("class")
    base = make_course(tmp / "course1")
    release(base)
    released = nbformat.read(base / "notebooks" / A / f"{A}.ipynb", as_version=4)
    roots = [base] + [tmp / f"course{i}" for i in (2, 3)]
    for root in roots[1:]:
        shutil.copytree(base, root)
    subs = tmp / "subs"
    for i in range(STUDENTS):
        student = f"s{i:02d}-{variant(i)}"
        if VARIANTS[variant(i)] is None:
            (subs / student / A).mkdir(parents=True)
            (subs / student / A / f"{A}.ipynb").write_text('{"cells": [', encoding="utf-8")
        else:
            submit(released, subs, student, **VARIANTS[variant(i)])
    mp = pytest.MonkeyPatch()
    mp.setenv("COURSE_GRADING_SEED", SEED)
    try:
        # 1. the reference: one submission at a time
        out1 = tmp / "out1"
        rows1 = grade(subs, out1, root=roots[0], timeout=TIMEOUT, progress=False, jobs=1)

        # 2. --jobs 2 from the command line, interrupted by SIGINT, then run again
        code_before = course_lib_hash()
        out2 = tmp / "out2"
        out2.mkdir()
        shutil.copy(out1 / ".canary.json", out2)  # the same course version: no canary again
        cmd = course_cli(
            str(subs),
            "--out",
            str(out2),
            "--root",
            str(roots[1]),
            "--jobs",
            "2",
            "--timeout",
            str(TIMEOUT),
        )
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        before = grading_processes()
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp,
            # Ctrl-C as from a terminal, even when this test runs in a background job (a shell
            # starts those with SIGINT ignored, and Python then never raises KeyboardInterrupt)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None:
            if (out2 / "grades.csv").is_file() and len(read_csv(out2 / "grades.csv")) >= 8:
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, interrupted_err = proc.communicate(timeout=300)
        time.sleep(1)
        leftover = grading_processes() - before
        after_interrupt = {
            k: v["graded_at"] for k, v in ResumeLog(out2 / RESUME_FILE).load().items()
        }
        csv_after_interrupt = read_csv(out2 / "grades.csv")
        resumed = subprocess.run(
            cmd, env=env, capture_output=True, text=True, cwd=tmp, timeout=1800
        )
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp, timeout=600)
        code_changed = course_lib_hash() != code_before

        # 3. three shards (as three machines would), merged into the third course
        shard_outs = []
        for k in (1, 2, 3):
            out = tmp / f"shard{k}"
            out.mkdir()
            shutil.copy(out1 / ".canary.json", out)
            grade(
                subs, out, root=roots[2], timeout=TIMEOUT, progress=False, jobs=2, shard_of=f"{k}/3"
            )
            shard_outs.append(out)
        merged = tmp / "merged"
        merge(shard_outs, merged, root=roots[2])
    finally:
        mp.undo()
    return {
        "subs": subs,
        "roots": roots,
        "rows1": rows1,
        "out1": out1,
        "out2": out2,
        "interrupted": (proc.returncode, interrupted_err),
        "leftover": leftover,
        "after_interrupt": after_interrupt,
        "csv_after_interrupt": csv_after_interrupt,
        "code_changed": code_changed,
        "resumed": resumed,
        "again": again,
        "shards": shard_outs,
        "merged": merged,
    }


@pytest.mark.slow
def test_the_reference_run_grades_every_variant_as_expected(graded):
    table = read_csv(graded["out1"] / "grades.csv")
    assert len(table) == STUDENTS
    for student, row in table.items():
        assert (row["total"], row["status"]) == EXPECTED[student.split("-", 1)[1]], row


@pytest.mark.slow
def test_an_interrupted_run_stops_cleanly_and_keeps_its_rows(graded):
    code, err = graded["interrupted"]
    assert code == 130, err
    assert "interrupted:" in err and "run the same command again" in err
    finished = graded["after_interrupt"]
    assert 8 <= len(finished) < STUDENTS  # stopped halfway
    assert set(graded["csv_after_interrupt"]) >= {s for s, _ in finished}
    assert graded["leftover"] == set()  # no kernel or referee of the stopped workers left


@pytest.mark.slow
def test_the_resumed_run_grades_only_what_was_left(graded):
    if graded["code_changed"]:  # a new course version must be graded again: not this test's case
        pytest.skip(
            "course_lib's code changed while the class was graded (edited by another "
            "process), so the resumed run rightly graded everything again"
        )
    resumed = graded["resumed"]
    assert resumed.returncode == 1, resumed.stderr  # (the corrupt notebooks failed)
    kept = len(graded["after_interrupt"])
    assert f"{kept} submission(s) already graded" in resumed.stderr
    assert f"graded {STUDENTS - kept} submission(s)" in resumed.stdout
    log = ResumeLog(graded["out2"] / RESUME_FILE)
    lines = log.path.read_text().splitlines()
    assert len(lines) == STUDENTS  # one grading per submission, over both runs
    now = log.load()
    assert all(now[k]["graded_at"] == t for k, t in graded["after_interrupt"].items())
    # and a third run finds nothing to do
    assert f"{STUDENTS} submission(s) already graded" in graded["again"].stderr
    assert "graded 0 submission(s)" in graded["again"].stdout


@pytest.mark.slow
def test_jobs_2_resumed_gives_the_same_grades_as_jobs_1(graded):
    assert (graded["out2"] / "grades.csv").read_text() == (
        graded["out1"] / "grades.csv"
    ).read_text()
    reference = gradebook_scores(graded["roots"][0])
    assert len(reference) == STUDENTS - STUDENTS // len(VARIANTS)  # corrupt: no entry
    assert gradebook_scores(graded["roots"][1]) == reference


@pytest.mark.slow
def test_three_merged_shards_give_the_same_grades_as_jobs_1(graded):
    sizes = [len(read_csv(out / "grades.csv")) for out in graded["shards"]]
    assert sum(sizes) == STUDENTS and all(sizes)
    assert (graded["merged"] / "grades.csv").read_text() == (
        graded["out1"] / "grades.csv"
    ).read_text()
    assert gradebook_scores(graded["roots"][2]) == gradebook_scores(graded["roots"][0])

    def pages(folder: Path) -> set[str]:
        return {p.relative_to(folder).as_posix() for p in (folder / "feedback").rglob("*.html")}

    assert pages(graded["merged"]) == pages(graded["out1"])
    assert len(pages(graded["out1"])) == STUDENTS
    for step in ("autograded", "submitted"):
        assert {p.name for p in (graded["roots"][2] / step).iterdir()} == {
            p.name for p in (graded["roots"][0] / step).iterdir()
        }


# --------------------------------------------------------------------------------------------
# Fast: slicing, the merge's refusals, the resume key
# --------------------------------------------------------------------------------------------


def test_shards_are_deterministic_balanced_and_checked():
    students = [f"student{i}" for i in range(300)]
    slices = [shard.of(s, 8) for s in students]
    assert slices == [shard.of(s, 8) for s in students]  # the same on every machine
    counts = [slices.count(k) for k in range(1, 9)]
    assert min(counts) > 20 and max(counts) < 56  # about 37.5 each
    assert shard.parse("3/8") == (3, 8)
    for bad in ("0/3", "4/3", "3", "a/b"):
        with pytest.raises(ValueError, match="--shard"):
            shard.parse(bad)


def _fake_shard(folder: Path, k: int, n: int, whole, mine, finished=True) -> Path:
    folder.mkdir(parents=True)
    shard.write_manifest(folder, (k, n), whole, mine, finished=finished)
    return folder


@pytest.mark.parametrize(
    "case, words",
    [
        ("overlap", "ann/a1 was graded by two shards"),
        ("missing shard", "shard(s) 2/2 missing"),
        ("missing student", "no shard graded bob/a1"),
        ("unfinished", "did not finish: run its command again"),
        ("twice", "shard 1/2 given twice"),
        ("different classes", "the shards saw different classes"),
        ("not a shard", "is not the output folder of a shard"),
    ],
)
def test_merge_refuses_a_bad_set_of_shards(tmp_path, case, words):
    whole = [("ann", "a1"), ("bob", "a1")]
    one = _fake_shard(tmp_path / "one", 1, 2, whole, [("ann", "a1")])
    two = {
        "overlap": lambda: _fake_shard(tmp_path / "two", 2, 2, whole, whole),
        "missing shard": lambda: None,
        "missing student": lambda: _fake_shard(tmp_path / "two", 2, 2, whole, []),
        "unfinished": lambda: _fake_shard(
            tmp_path / "two", 2, 2, whole, [("bob", "a1")], finished=False
        ),
        "twice": lambda: _fake_shard(tmp_path / "two", 1, 2, whole, [("bob", "a1")]),
        "different classes": lambda: _fake_shard(
            tmp_path / "two", 2, 2, whole[1:], [("bob", "a1")]
        ),
        "not a shard": lambda: (tmp_path / "two").mkdir() or tmp_path / "two",
    }[case]()
    folders = [one] + ([two] if two is not None else [])
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        merge(folders, tmp_path / "merged", root=make_course(tmp_path / "course"))
    assert not (tmp_path / "merged").exists()


def test_the_resume_digest_sees_every_file_and_nothing_else(tmp_path):
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "a.ipynb").write_text("{}")
    first = submission_digest(folder)
    assert submission_digest(folder) == first
    (folder / "notes.txt").write_text("x")
    assert submission_digest(folder) != first
    (folder / "notes.txt").unlink()
    assert submission_digest(folder) == first
    (folder / "a.ipynb").write_text("{ }")
    assert submission_digest(folder) != first
    assert submission_digest(None, "a problem") != submission_digest(None, "another")


def test_the_resume_log_survives_a_torn_line(tmp_path):
    log = ResumeLog(tmp_path / RESUME_FILE)
    log.add("ann", A, "k1")
    with log.path.open("a") as f:
        f.write('{"student": "bob", "assign')  # killed in the middle of a line
    log.add("cy", A, "k3")
    assert {k: v["key"] for k, v in log.load().items()} == {("ann", A): "k1", ("cy", A): "k3"}
    assert json.loads(log.path.read_text().splitlines()[-1])["student"] == "cy"
