"""The nbconvert preprocessors ``course grade`` adds to nbgrader's autograde and feedback steps.

- ``StripHiddenTests`` (feedback): hidden tests and the tracebacks that quote them are removed
  before a feedback page is rendered.
- ``StderrIsNotFailure`` (autograde): what a check cell wrote to stderr costs no points.
- ``autograde_preprocessors()``: nbgrader's autograde steps with ours in place.

This module imports nbconvert (seconds): the CLI and ``course_lib.autograde`` import it only
when a course is graded. ``nbgrader_config.py`` imports it too, so that plain ``nbgrader``
commands use the same steps.
"""

from __future__ import annotations

import re

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

from course_lib.autograde.feedback import strip_hidden_region

# What a check prints when it passes; in a cell with hidden tests nothing else is shown, since
# the learner's function could print the hidden cases' inputs.
_PASSED_LINE = re.compile(r"^✓ \w+: all \d+ checks passed$")
# Set by ``course grade`` around feedback rendering: the grade ids of check cells whose hidden
# checks reached the referee. An error in such a cell may come from the hidden part (even from
# the learner's own code, quoting a hidden input), so only its name is shown. None: unknown
# (plain nbgrader), keep the message.
HIDDEN_STARTED: set[str] | None = None


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
                        out["evalue"] = (
                            "a hidden check of this cell failed (the hidden cases are not shown)"
                        )
                    out["traceback"] = [
                        f"\x1b[0;31m{out.get('ename', 'Error')}\x1b[0m: {out.get('evalue', '')}",
                        "(traceback not shown: it would quote the hidden tests)",
                    ]
                elif kind == "stream":
                    kept = [
                        line
                        for line in out.get("text", "").splitlines()
                        if _PASSED_LINE.match(line.strip())
                    ]
                    if not kept:
                        continue
                    out["text"] = "\n".join(kept) + "\n"
                else:
                    continue  # rich output (plots, HTML) of a check cell: the learner's
                outputs.append(out)
            cell.outputs = outputs
        return cell, resources


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
        from course_lib.autograde.kernels import JailedExecute as Execute  # noqa: N814
    return [
        Execute,
        StderrIsNotFailure,
        IgnorePattern,
        ClearMetadataPreprocessor,
        LimitOutput,
        SaveAutoGrades,
        AssignLatePenalties,
        CheckCellMetadata,
    ]
