"""The code base stays lint-clean and formatted (ruff, configured in pyproject.toml)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CODE = ("course_lib", "tests", "bench")

# A trailing comment that makes a line too long is moved by the formatter onto a closing bracket
# of its own (`)  # (B, T, C)`), far from the expression it describes. Keep such a comment short
# enough for the line, or put it on the line above.
PUSHED_COMMENT = re.compile(r"^\s*[)\]}]+,?\s+#(?! fmt: skip)")
# ... or the formatter wraps a lone value in brackets to make room for its comment:
#     dropout: float = (
#         0.0  # one rate for ...
#     )
WRAPPED_COMMENT = re.compile(r"\($\n[^\n#,]+[^,\s]\s+#[^\n]*\n\s*[)\]}]", re.MULTILINE)


def _ruff() -> str:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: run `make test` (it installs the dev extra)")
    return ruff


def test_ruff_check_is_clean():
    out = subprocess.run(
        [_ruff(), "check", *CODE], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_leaves_nothing_to_change():
    out = subprocess.run(
        [_ruff(), "format", "--check", *CODE], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, (
        out.stdout + out.stderr + "\nrun `.venv/bin/ruff format course_lib tests bench`"
    )


def _pushed_comments(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every comment the formatter separated from its expression."""
    lines = text.splitlines()
    found = [(n, line) for n, line in enumerate(lines, 1) if PUSHED_COMMENT.match(line)]
    for match in WRAPPED_COMMENT.finditer(text):
        n = text.count("\n", 0, match.start()) + 2  # the commented value's line
        found.append((n, lines[n - 1]))
    return found


def test_no_comment_was_pushed_onto_a_line_of_its_own():
    pushed = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for folder in CODE
        for path in sorted((ROOT / folder).rglob("*.py"))
        for n, line in _pushed_comments(path.read_text(encoding="utf-8"))
    ]
    assert not pushed, "put these comments next to what they describe:\n" + "\n".join(pushed)


def test_the_pushed_comment_check_finds_both_shapes():
    text = "x = (\n    0.0  # a rate\n)\ny = f(\n    a,  # kept\n)\nz = g(\n    h(a)\n)  # (B, T)\n"
    assert _pushed_comments(text) == [(9, ")  # (B, T)"), (2, "    0.0  # a rate")]
