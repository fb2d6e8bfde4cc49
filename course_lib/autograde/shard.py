"""Grading a class on several machines: ``--shard K/N`` slices, ``--merge`` puts them together.

A student belongs to slice ``of(student, N)``: a hash of the student id, so the slices do not
depend on who else handed in, and every machine computes the same ones from the same
submissions folder. A shard's output folder holds, besides grades.csv and feedback/:

- ``shard.json``: K, N, the whole class (every (student, assignment) the shard saw) and the
  submissions of its slice, and whether the run finished;
- ``course/``: the shard's gradebook.db and nbgrader folders (submitted/, autograded/,
  feedback/) for its slice.

``merge`` checks that the shards are 1..N of the same class, each finished, none overlapping
and none missing, then copies them into one grades.csv and feedback folder and into the
course's gradebook and nbgrader folders.

Example:
    >>> of("ann", 3)
    3
    >>> parse("2/3")
    (2, 3)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COURSE = "course"  # a shard's gradebook and nbgrader folders, inside its output folder
MANIFEST = "shard.json"
_STEPS = ("submitted", "autograded", "feedback")


def parse(spec: str | tuple[int, int]) -> tuple[int, int]:
    """``"K/N"`` (or ``(K, N)``) as ``(K, N)``, checked: ``1 <= K <= N``."""
    if isinstance(spec, tuple):
        k, n = spec
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
        if m is None:
            raise ValueError(
                f"--shard {spec!r}: expected K/N, e.g. --shard 2/8 for the second of 8 slices"
            )
        k, n = int(m[1]), int(m[2])
    if not 1 <= k <= n:
        raise ValueError(
            f"--shard {k}/{n}: K must be between 1 and N (slices are numbered 1 to {n})"
        )
    return k, n


def of(student: str, n: int) -> int:
    """The slice (1 to ``n``) that ``student`` belongs to."""
    return int.from_bytes(hashlib.sha256(student.encode("utf-8")).digest()[:8], "big") % n + 1


def write_manifest(
    out: Path,
    slice_: tuple[int, int],
    whole: Sequence[tuple[str, str]],
    mine: Sequence[tuple[str, str]],
    *,
    finished: bool,
) -> None:
    data = {
        "shard": slice_[0],
        "of": slice_[1],
        "finished": finished,
        "class": [list(p) for p in whole],
        "graded": [list(p) for p in mine],
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(out / MANIFEST)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text())
        data["class"] = [tuple(p) for p in data["class"]]
        data["graded"] = [tuple(p) for p in data["graded"]]
        return data
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(
            f"{folder} is not the output folder of a shard (no readable "
            f"{MANIFEST}): grade into it with `course grade SUBMISSIONS --shard K/N "
            f"--out {folder}`"
        ) from None


def _pairs(pairs: Sequence[tuple[str, str]], limit: int = 5) -> str:
    shown = ", ".join(f"{s}/{a}" for s, a in list(pairs)[:limit])
    return shown + (f" and {len(pairs) - limit} more" if len(pairs) > limit else "")


def check(folders: Sequence[Path]) -> list[dict[str, Any]]:
    """The manifests of ``folders``, or ``ValueError`` saying what is wrong with the set."""
    if not folders:
        raise ValueError("--merge needs the output folders of the shards")
    manifests = [read_manifest(f) | {"folder": f} for f in folders]
    n = manifests[0]["of"]
    if any(m["of"] != n for m in manifests):
        raise ValueError(
            "the shards were cut differently: "
            + ", ".join(f"{m['folder']} is {m['shard']}/{m['of']}" for m in manifests)
        )
    seen: dict[int, Path] = {}
    for m in manifests:
        if m["shard"] in seen:
            raise ValueError(
                f"shard {m['shard']}/{n} given twice: {seen[m['shard']]} and {m['folder']}"
            )
        seen[m["shard"]] = m["folder"]
    missing = [k for k in range(1, n + 1) if k not in seen]
    if missing:
        raise ValueError(
            f"shard(s) {', '.join(f'{k}/{n}' for k in missing)} missing: grade "
            "them with `course grade SUBMISSIONS --shard K/N --out DIR` and pass "
            "every shard's folder to --merge"
        )
    whole = set(manifests[0]["class"])
    for m in manifests[1:]:
        if set(m["class"]) != whole:
            diff = sorted(set(m["class"]) ^ whole)
            raise ValueError(
                f"the shards saw different classes ({m['folder']} and "
                f"{manifests[0]['folder']} differ on {_pairs(diff)}): grade every "
                "shard from the same submissions folder"
            )
    owner: dict[tuple[str, str], Path] = {}
    for m in manifests:
        if not m["finished"]:
            raise ValueError(
                f"shard {m['shard']}/{n} ({m['folder']}) did not finish: run its "
                "command again (it resumes), then merge"
            )
        for pair in m["graded"]:
            if pair in owner:
                raise ValueError(
                    f"{pair[0]}/{pair[1]} was graded by two shards ({owner[pair]} "
                    f"and {m['folder']}): refusing to choose; grade again"
                )
            owner[pair] = m["folder"]
    lost = sorted(whole - set(owner))
    if lost:
        raise ValueError(
            f"no shard graded {_pairs(lost)}: grade them (e.g. rerun their shard), then merge"
        )
    return manifests


def merge(
    folders: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
) -> list[dict[str, str]]:
    """Combine shard output folders into ``out_dir`` (grades.csv, feedback/) and the course.

    The course's gradebook (and its submitted/, autograded/, feedback/ folders) receives every
    shard's submissions, replacing earlier gradings of the same ones; grades.csv keeps its
    rows of other submissions. Refuses (``ValueError``) shards that overlap, miss students,
    come from different classes or did not finish.

    Returns:
        The grades.csv records of the merged submissions.
    """
    from course_lib.autograde import grades_csv
    from course_lib.autograde._course import course_root, grading_env
    from course_lib.autograde._nbcourse import Course
    from course_lib.autograde._submission import make_writable
    from course_lib.autograde.gradebook import forget_submission, put_submission, take_submission

    root = course_root(root)
    folders = [Path(f).resolve() for f in folders]
    manifests = check(folders)
    out = Path(out_dir).resolve() if out_dir is not None else root / "grades"
    records: list[dict[str, str]] = []
    labels: list[str] = []
    for m in manifests:  # read everything before writing anything
        fields, table = grades_csv.read_table(m["folder"] / "grades.csv")
        rows = {(r["student"], r["assignment"]): r for r in table}
        absent = [p for p in m["graded"] if p not in rows]
        if absent:
            raise ValueError(
                f"{m['folder'] / 'grades.csv'} lacks the rows of {_pairs(absent)}: "
                "run that shard's command again (it resumes), then merge"
            )
        records += [rows[p] for p in m["graded"]]
        labels += [c for c in fields[2:-4] if c not in labels]
    out.mkdir(parents=True, exist_ok=True)
    assignments = sorted({a for _, a in manifests[0]["class"]})
    with tempfile.TemporaryDirectory(prefix="course-merge-") as tmp, grading_env(None):
        course = Course(root, release_dir=Path(tmp) / "release", exchange_dir=Path(tmp) / "ex")
        for a in assignments:
            course.generate(a)  # the assignment and its cells, in the course's gradebook
        with course.gradebook() as gb:
            for m in manifests:
                db = m["folder"] / COURSE / "gradebook.db"
                from nbgrader.api import Gradebook

                with Gradebook(f"sqlite:///{db}") as src:
                    for s, a in m["graded"]:
                        scores = take_submission(src, a, s)
                        if scores is None:
                            forget_submission(gb, a, s)
                        else:
                            put_submission(gb, scores)
    for m in manifests:
        for s, a in m["graded"]:
            copies = [(m["folder"] / COURSE / step / s / a, root / step / s / a) for step in _STEPS]
            copies.append((m["folder"] / "feedback" / s / a, out / "feedback" / s / a))
            for src, dest in copies:
                if src.resolve() == dest.resolve():
                    continue
                if dest.exists():
                    make_writable(dest)
                    shutil.rmtree(dest)
                if src.exists():
                    shutil.copytree(src, dest, symlinks=True)
    grades_csv.write_table(out / "grades.csv", labels, records)
    print(
        f"merged {len(manifests)} shard(s): {len(records)} submission(s) -> "
        f"{out / 'grades.csv'} and the course gradebook ({course.coursedir.db_url})"
    )
    return records
