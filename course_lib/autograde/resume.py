"""The record that lets ``course grade`` resume a batch and skip what is already graded.

After each submission's row is in grades.csv and the gradebook, one JSON line goes to
``<out>/.graded.jsonl``: the student, the assignment, the ``key`` it was graded under and when.
The key is a hash of the submission's files, the grading seed and the course's version (the
fingerprint of course_lib's code, the assignment's source notebooks, the config and the grading
settings): a submission whose key is unchanged would be graded to the same scores, so a re-run
skips it unless ``--force``. A crashed or interrupted run therefore resumes where it stopped.

Example:
    >>> log = ResumeLog(Path("grades/.graded.jsonl"))           # doctest: +SKIP
    >>> log.add("ann", "01-language-models", key, seconds=12.5)  # doctest: +SKIP
    >>> log.load()[("ann", "01-language-models")]["key"] == key  # doctest: +SKIP
    True
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any

FILE = ".graded.jsonl"


def submission_digest(folder: Path | None, problem: str = "") -> str:
    """sha256 of a submission: every file's relative path and bytes (a link: its target)."""
    h = hashlib.sha256(problem.encode() + b"\0")
    if folder is not None:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix().encode()
            if path.is_symlink():
                h.update(b"L" + rel + b"\0" + os.readlink(path).encode() + b"\0")
            elif path.is_file():
                h.update(b"F" + rel + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def grading_key(digest: str, course_version: str) -> str:
    """The key a submission is graded under: its digest and the course's version, hashed."""
    return hashlib.sha256(f"{digest}\0{course_version}".encode()).hexdigest()


class ResumeLog:
    """``<out>/.graded.jsonl``: appended once per graded submission; the last line wins."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(student, assignment) -> its latest entry (a torn last line is ignored)."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        if not self.path.is_file():
            return out
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                out[(entry["student"], entry["assignment"])] = entry
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def add(self, student: str, assignment: str, key: str | None, **extra: Any) -> None:
        """Append an entry (``key`` None: must be graded again) and flush it to disk."""
        entry = {
            "student": student,
            "assignment": assignment,
            "key": key,
            "graded_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            **extra,
        }
        torn = False  # a run killed in the middle of a line: start a new one
        if self.path.is_file() and self.path.stat().st_size > 0:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(("\n" if torn else "") + json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
