"""grades.csv: one row per submission (student, assignment), one column per graded cell.

The columns: ``student, assignment``, each check cell's grade id (prefixed by its assignment
and notebook only where two assignments share one), then ``total, max, status, reason``.
Writing keeps the rows of other submissions already in the file, so grading a late submission,
a resumed batch or a merge of shards each leaves the rest alone.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from course_lib.autograde._submission import AssignmentInfo, GradeRow

TAIL = ["total", "max", "status", "reason"]


def columns(infos: dict[str, AssignmentInfo]) -> dict[tuple[str, str, str], str]:
    """One column per graded cell: its grade_id, prefixed only where two would clash."""
    cols: dict[tuple[str, str, str], str] = {}
    taken: set[str] = set()
    for name, info in infos.items():
        for nb in info.notebooks:
            for gid, _ in nb.grade_cells:
                label = gid
                if label in taken:
                    label = f"{name}/{nb.name}/{gid}"
                taken.add(label)
                cols[(name, nb.name, gid)] = label
    return cols


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a grades.csv (([], []) when there is none, or it is not ours)."""
    if not path.is_file():
        return [], []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        if fields[:2] != ["student", "assignment"] or fields[-4:] != TAIL:
            return [], []
        return fields, [{k: v or "" for k, v in r.items() if k in fields} for r in reader]


def write_table(path: Path, labels: Sequence[str], records: Iterable[dict[str, str]]) -> None:
    """Write ``records`` (dicts keyed by column) into ``path``, replacing the rows of the same
    (student, assignment) and keeping the others; atomic (a reader never sees half a file)."""
    records = list(records)
    old_fields, old_rows = read_table(path)
    now = {(r["student"], r["assignment"]) for r in records}
    labels = list(labels) + [c for c in old_fields[2:-4] if c not in labels]
    header = ["student", "assignment", *labels, *TAIL]
    table = [r for r in old_rows if (r["student"], r["assignment"]) not in now] + records
    table.sort(key=lambda r: (r["student"], r["assignment"]))
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    tmp.replace(path)


def record(row: GradeRow, cols: dict[tuple[str, str, str], str]) -> dict[str, str]:
    """``row`` as a grades.csv record."""
    points = {
        cols[(row.assignment, nb, gid)]: f"{score:g}" for (nb, gid), score in row.scores.items()
    }
    return {
        "student": row.student,
        "assignment": row.assignment,
        **points,
        "total": f"{row.total:g}",
        "max": f"{row.max_score:g}",
        "status": row.status,
        "reason": row.reason,
    }


def write_grades_csv(
    path: Path, rows: Sequence[GradeRow], infos: dict[str, AssignmentInfo]
) -> None:
    """Write grades.csv: student, assignment, one column per exercise, total, max, status, reason.

    Rows of an existing grades.csv are kept, except those of the (student, assignment) pairs
    graded now, which are replaced: grading one late submission leaves the others' rows alone.
    """
    cols = columns(infos)
    write_table(path, list(cols.values()), [record(r, cols) for r in rows])


def row_from_record(
    rec: dict[str, str], info: AssignmentInfo, cols: dict[tuple[str, str, str], str]
) -> GradeRow:
    """The ``GradeRow`` a grades.csv record was written from (without feedback paths)."""
    scores = {
        (nb.name, gid): float(rec.get(cols[(info.name, nb.name, gid)]) or 0.0)
        for nb in info.notebooks
        for gid, _ in nb.grade_cells
    }
    return GradeRow(
        rec["student"],
        rec["assignment"],
        scores,
        float(rec["total"] or 0.0),
        float(rec["max"] or 0.0),
        rec["status"],
        rec["reason"],
    )
