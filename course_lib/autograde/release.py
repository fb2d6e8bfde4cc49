"""``course release``: regenerate ``notebooks/`` from ``solutions/``, byte for byte the same.

Released notebooks are serialized deterministically (``normalize_notebook()``), so a clean
``git diff`` means the release is up to date (``stale_release()``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from course_lib.autograde._course import course_root, grading_env, list_assignments
from course_lib.autograde._nbcourse import Course

# Cell metadata that carries meaning in a released notebook; everything else (execution
# timings, collapsed/scrolled flags, editor state) differs between authors' machines.
_KEEP_CELL_METADATA = ("nbgrader", "deletable", "editable", "tags", "jupyter", "slideshow")
_VOLATILE_LANGUAGE_INFO = ("version",)


def normalize_notebook(nb: Any) -> str:
    """Serialize a released notebook deterministically: the same source gives the same bytes.

    Drops outputs, execution counts and volatile metadata (timings, editor state, the Python
    version), gives id-less cells an id derived from their position, and writes nbformat's
    canonical JSON (sorted keys, one-space indent, trailing newline).
    """
    import nbformat

    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # deep copy
    meta = {}
    if "kernelspec" in nb.metadata:
        meta["kernelspec"] = dict(nb.metadata.kernelspec)
    if "language_info" in nb.metadata:
        meta["language_info"] = {
            k: v for k, v in nb.metadata.language_info.items() if k not in _VOLATILE_LANGUAGE_INFO
        }
    nb.metadata = nbformat.from_dict(meta)
    nb.nbformat, nb.nbformat_minor = 4, max(5, nb.get("nbformat_minor", 5))
    for i, cell in enumerate(nb.cells):
        cell.metadata = nbformat.from_dict(
            {k: v for k, v in cell.metadata.items() if k in _KEEP_CELL_METADATA}
        )
        cell.setdefault("id", f"cell-{i:03d}")
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(nb)
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def _release_files(root: Path, scratch: Path) -> dict[str, bytes]:
    """Generate every release into ``scratch``; return {path under root: bytes to write}."""
    course = Course(
        root,
        release_dir=scratch / "release",
        db_path=scratch / "gradebook.db",
        exchange_dir=scratch / "exchange",
    )
    release_step = Path("notebooks")
    files: dict[str, bytes] = {}
    for assignment in list_assignments(root):
        info = course.generate(assignment)
        for path in sorted(p for p in info.release_dir.rglob("*") if p.is_file()):
            rel = (release_step / assignment / path.relative_to(info.release_dir)).as_posix()
            if path.suffix == ".ipynb":
                import nbformat

                files[rel] = normalize_notebook(nbformat.read(path, as_version=4)).encode("utf-8")
            else:
                files[rel] = path.read_bytes()
    return files


def release(root: str | os.PathLike | None = None, *, check: bool = False) -> list[str]:
    """Regenerate ``notebooks/`` from ``solutions/``: stubs for solutions, no hidden tests.

    Files are only written when their bytes change, so an up-to-date release leaves
    ``git status`` clean. A released notebook whose source was removed is reported, not deleted.

    Args:
        root: the course root (default: found from the current folder).
        check: only report what would change; write nothing.

    Returns:
        The paths (relative to the root, POSIX style) that were (or would be) written.
    """
    root = course_root(root)
    if not list_assignments(root):
        raise ValueError(
            f"{root / 'solutions'} holds no assignment: expected solutions/<name>/<name>.ipynb"
        )
    with tempfile.TemporaryDirectory(prefix="course-release-") as tmp, grading_env(None):
        files = _release_files(root, Path(tmp))
    changed = []
    for rel, data in files.items():
        dest = root / rel
        if dest.is_file() and dest.read_bytes() == data:
            continue
        changed.append(rel)
        if not check:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
    known = set(list_assignments(root))
    release_root = root / "notebooks"
    if release_root.is_dir():
        for orphan in sorted(release_root.glob("*/*.ipynb")):
            rel = orphan.relative_to(root).as_posix()
            if orphan.parent.name in known and rel not in files or orphan.parent.name not in known:
                print(
                    f"warning: {rel} has no source in solutions/ (delete it if it is obsolete)",
                    file=sys.stderr,
                )
    return changed


def stale_release(root: str | os.PathLike | None = None) -> list[str]:
    """Return the released files that differ from what ``release()`` would write (empty: up to date)."""
    return release(root, check=True)
