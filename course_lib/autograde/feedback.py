"""Feedback without hidden tests: stripping them from a cell's source, and the leak check.

The nbconvert preprocessors that use these live in ``preprocessors`` (importing nbconvert takes
seconds, and the CLI imports this module for every command).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

HIDDEN_BEGIN = "BEGIN HIDDEN TESTS"
HIDDEN_END = "END HIDDEN TESTS"
SOLUTION_BEGIN = "BEGIN SOLUTION"
_TAG = re.compile(r"<[^>]*>")


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
