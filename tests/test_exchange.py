"""nbgrader's exchange, end to end, with real nbgrader: release, fetch, submit, collect, grade,
release feedback, fetch feedback.

The instructor runs ``course exchange ...`` on a copy of the course (so the repository's own
exchange/, submitted/ and gradebook.db are never touched); the learner is a second user: a
HOME of their own with their own ``~/.jupyter/nbgrader_config.py`` (exchange root and course
id only, as on a JupyterHub) and ``USER=alice``, running plain ``nbgrader`` commands.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.autograde import html_text

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ASSIGNMENT = "01-language-models"
COURSE_ID = "llms-from-the-ground-up"
SEED = "2026"

# A realistic mistake with a targeted message: counts transposed ([j, i] instead of [i, j]).
TRANSPOSED = """def bigram_counts(ids: list[int], vocab_size: int) -> torch.Tensor:
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.long)
    for a, b in zip(ids[:-1], ids[1:]):
        counts[b, a] += 1
    return counts
"""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (REPO / "solutions" / ASSIGNMENT).is_dir(), reason=f"no {ASSIGNMENT}"),
]


def _run(cmd: list[str], *, env: dict[str, str], cwd: Path, ok: bool = True):
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    if ok:
        assert proc.returncode == 0, (
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "COURSE_", "NBGRADER"))
    }
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def _fill_in(nb_path: Path) -> None:
    """Do the assignment as a learner: every solution from solutions/, but a transposed
    ``bigram_counts``."""
    answers = nbformat.read(REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", 4)
    solved = {
        c.metadata.nbgrader["grade_id"]: c.source
        for c in answers.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }
    nb = nbformat.read(nb_path, 4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution") and gid in solved:
            cell.source = "\n".join(
                line
                for line in solved[gid].split("\n")
                if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line
            )
            if gid == "bigram_counts":
                cell.source = TRANSPOSED
    nbformat.write(nb, nb_path)


def _state(path: Path) -> object:
    return (
        sorted(str(p.relative_to(path)) for p in path.rglob("*"))
        if path.is_dir()
        else (path.stat().st_mtime_ns if path.exists() else None)
    )


def _course(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``course ARGV`` in this process (the instructor's side; saves a slow start-up)."""
    from course_lib.course import main

    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_release_fetch_submit_collect_grade_feedback(tmp_path, monkeypatch, capsys):
    untouched = {p: _state(REPO / p) for p in ("exchange", "submitted", "gradebook.db")}
    # The instructor's course: a copy holding only this assignment.
    course = tmp_path / "course"
    for step in ("solutions", "notebooks"):
        shutil.copytree(REPO / step / ASSIGNMENT, course / step / ASSIGNMENT)
    shutil.copy(REPO / "nbgrader_config.py", course)
    exchange = tmp_path / "exchange"
    grades = tmp_path / "grades"
    monkeypatch.setenv("COURSE_EXCHANGE", str(exchange))  # read by the course's config
    monkeypatch.setenv("COURSE_GRADING_SEED", SEED)
    monkeypatch.setenv("PATH", os.environ["PATH"])  # main() may prepend the venv's bin/

    def instructor(step: str, *args: str, code: int = 0) -> tuple[str, str]:
        got, out, err = _course(
            ["exchange", step, ASSIGNMENT, "--root", str(course), *args], capsys
        )
        assert got == code, f"course exchange {step} exited {got}\n{out}\n{err}"
        return out, err

    # The learner: their own HOME and nbgrader config, as JupyterHub gives each user.
    home = tmp_path / "alice"
    (home / ".jupyter").mkdir(parents=True)
    (home / ".jupyter" / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.Exchange.root = {str(exchange)!r}\n"
        f"c.CourseDirectory.course_id = {COURSE_ID!r}\n"
        # On a hub the OS user name is the student id; here every process is the same user.
        'c.CourseDirectory.student_id = "alice"\n'
    )
    work = home / "work"
    work.mkdir()
    learner_env = _clean_env(HOME=str(home))

    def learner(*args: str, ok: bool = True):
        return _run([str(BIN / "nbgrader"), *args], env=learner_env, cwd=work, ok=ok)

    # 1. release: the committed learner notebook, byte for byte; a second release needs --force.
    out, _ = instructor("release")
    outbound = exchange / COURSE_ID / "outbound" / ASSIGNMENT
    assert str(outbound) in out
    released = (REPO / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes()
    assert (outbound / f"{ASSIGNMENT}.ipynb").read_bytes() == released
    _, err = instructor("release", code=2)
    assert "--force" in err
    instructor("release", "--force")
    assert "0 submission(s)" in instructor("collect")[0]

    # 2. the learner fetches, hands in the untouched notebook, then a worked one.
    learner("fetch_assignment", ASSIGNMENT)
    mine = work / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    assert mine.read_bytes() == released
    learner("submit", ASSIGNMENT)
    _fill_in(mine)
    learner("submit", ASSIGNMENT)
    inbound = exchange / COURSE_ID / "inbound"
    assert len(list(inbound.glob(f"alice+{ASSIGNMENT}+*"))) == 2

    # 3. collect takes the latest submission.
    out, _ = instructor("collect")
    assert "alice" in out and "1 submission(s)" in out
    collected = course / "submitted" / "alice" / ASSIGNMENT
    assert nbformat.read(collected / f"{ASSIGNMENT}.ipynb", 4) == nbformat.read(mine, 4)
    assert (collected / "submission_secret.txt").is_file()

    # 4. grade with `course grade`: every exercise right but the transposed counts.
    instructor("grade", "--out", str(grades))
    with (grades / "grades.csv").open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["student"], row["assignment"], row["status"]) == ("alice", ASSIGNMENT, "graded")
    assert (float(row["total"]), float(row["max"])) == (6, 7), row
    assert float(row["check_bigram_counts"]) == 0 and float(row["check_nll"]) == 2, row
    page_dir = grades / "feedback" / "alice" / ASSIGNMENT
    assert (page_dir / "submission_secret.txt").read_text() == (
        collected / "submission_secret.txt"
    ).read_text()

    # 5. release feedback; a student graded outside the exchange is skipped, not fatal.
    stray = grades / "feedback" / "zoe" / ASSIGNMENT
    stray.mkdir(parents=True)
    (stray / f"{ASSIGNMENT}.html").write_text("<html>zoe</html>")
    out, err = instructor("release-feedback", "--grades", str(grades))
    assert "for 1 student(s): alice" in out
    assert "skipping zoe" in err and "not collected through the exchange" in err

    # 6. the learner fetches the feedback of the submission that was graded.
    learner("fetch_feedback", ASSIGNMENT)
    pages = list((work / ASSIGNMENT / "feedback").glob(f"*/{ASSIGNMENT}.html"))
    assert len(pages) == 1, pages
    stamp = (collected / "timestamp.txt").read_text().strip()
    assert pages[0].parent.name == stamp
    text = html_text(pages[0].read_text(encoding="utf-8"))
    assert "transposed" in text, text[-2000:]
    assert "HIDDEN TESTS" not in text and "hidden=True" not in text

    # The repository's own exchange, submissions and gradebook were not touched.
    assert {p: _state(REPO / p) for p in untouched} == untouched


def test_exchange_commands_name_the_fix(tmp_path, monkeypatch, capsys):
    course = tmp_path / "course"
    shutil.copytree(REPO / "solutions" / ASSIGNMENT, course / "solutions" / ASSIGNMENT)
    shutil.copy(REPO / "nbgrader_config.py", course)
    monkeypatch.setenv("COURSE_EXCHANGE", str(tmp_path / "exchange"))
    monkeypatch.setenv("PATH", os.environ["PATH"])

    def fails(*args: str) -> str:
        code, _, err = _course(["exchange", *args, "--root", str(course)], capsys)
        assert code == 2, err
        return err

    assert "run `course release` first" in fails("release", ASSIGNMENT)  # no notebooks/ here
    assert "not an assignment" in fails("release", "99-nope")
    assert f"course exchange release {ASSIGNMENT}` first" in fails("collect", ASSIGNMENT)
    assert f"course exchange collect {ASSIGNMENT}" in fails("grade", ASSIGNMENT)
    assert f"course exchange grade {ASSIGNMENT}" in fails("release-feedback", ASSIGNMENT)
