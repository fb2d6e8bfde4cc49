"""Feedback without hidden tests: stripping them, the nbconvert preprocessors, the leak check.

``StripHiddenTests`` and ``StderrIsNotFailure`` subclass nbconvert's ``Preprocessor``; they are
built on first use (module ``__getattr__``) so that importing the CLI stays cheap.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

HIDDEN_BEGIN = "BEGIN HIDDEN TESTS"
HIDDEN_END = "END HIDDEN TESTS"
SOLUTION_BEGIN = "BEGIN SOLUTION"
_TAG = re.compile(r"<[^>]*>")
# What a check prints when it passes; in a cell with hidden tests nothing else is shown, since
# the learner's function could print the hidden cases' inputs.
_PASSED_LINE = re.compile(r"^✓ \w+: all \d+ checks passed$")
# Set by ``course grade`` around feedback rendering: the grade ids of check cells whose hidden
# checks reached the referee. An error in such a cell may come from the hidden part (even from
# the learner's own code, quoting a hidden input), so only its name is shown. None: unknown
# (plain nbgrader), keep the message.
HIDDEN_STARTED: set[str] | None = None


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
                gid = cell.metadata.get("nbgrader", {}).get("grade_id", "")
                outputs = []
                for out in cell.get("outputs", []):
                    kind = out.get("output_type")
                    if kind == "error":
                        if HIDDEN_STARTED is not None and gid in HIDDEN_STARTED:
                            out["evalue"] = ("a hidden check of this cell failed (the hidden "
                                             "cases are not shown)")
                        out["traceback"] = [
                            f"\x1b[0;31m{out.get('ename', 'Error')}\x1b[0m: {out.get('evalue', '')}",
                            "(traceback not shown: it would quote the hidden tests)",
                        ]
                    elif kind == "stream":
                        kept = [line for line in out.get("text", "").splitlines()
                                if _PASSED_LINE.match(line.strip())]
                        if not kept:
                            continue
                        out["text"] = "\n".join(kept) + "\n"
                    else:
                        continue  # rich output (plots, HTML) of a check cell: the learner's
                    outputs.append(out)
                cell.outputs = outputs
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


def autograde_preprocessors(*, jailed: bool = False) -> list[type]:
    """nbgrader's autograde steps, with ``StderrIsNotFailure`` right after the execution.

    ``jailed``: run the kernel in the current submission's sandbox (``course grade``).
    """
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        Execute,
        IgnorePattern,
        LimitOutput,
        SaveAutoGrades,
    )

    if jailed:
        from course_lib.autograde import _sandbox

        Execute = _sandbox.JailedExecute  # noqa: N806 -- a class, named as nbgrader's
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
