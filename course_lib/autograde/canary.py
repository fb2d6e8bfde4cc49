"""The batch's canary: the solutions must score full marks, the blank release 0.

``course grade`` grades the canary (in a throwaway course, with the run's sandbox and seed) at
the start and at the end of a run. A passed canary is remembered in ``<out>/.canary.json`` by
the course's version (``course_version``: a hash of everything a score depends on besides the
submission), so an unchanged course is not graded again, not even at the end of a run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from course_lib.autograde._course import PipelineError
from course_lib.autograde._nbcourse import Course, Grading
from course_lib.autograde._submission import AssignmentInfo

CACHE = ".canary.json"


def course_version(root: Path, assignment: str, grading: Grading, timeout: float | None) -> str:
    """A hash of what grading ``assignment`` depends on besides the submission: course_lib's
    code, the assignment's source notebooks, the config, the seed (hashed) and the limits."""
    import course_lib

    h = hashlib.sha256()
    package = Path(course_lib.__file__).parent
    # Paths relative to their folder: the same course checked out elsewhere (another machine
    # of a sharded run) has the same version.
    files = [(package, p) for p in sorted(package.rglob("*.py"))]
    files += [(root, p) for p in sorted((root / "solutions" / assignment).rglob("*.ipynb"))]
    files += [(root, root / "nbgrader_config.py")]  # (the release is made from these)
    for base, path in files:
        h.update(path.relative_to(base).as_posix().encode() + b"\0" + path.read_bytes())
    h.update(hashlib.sha256(grading.seed.encode()).digest())
    h.update(repr((timeout, grading.unsafe)).encode())
    return h.hexdigest()


class Canary:
    """Grades the solutions and the blank release of each assignment, unless remembered."""

    def __init__(
        self, root: Path, tmp: Path, grading: Grading, timeout: float | None, cache: Path
    ) -> None:
        self.root, self.tmp, self.grading, self.timeout = root, tmp, grading, timeout
        self.cache = cache
        self.graded = 0  # canary gradings done (0 when the cache answered)

    def _cached(self) -> dict:
        try:
            return json.loads(self.cache.read_text())
        except (OSError, ValueError):
            return {}

    def check(self, infos: dict[str, AssignmentInfo], when: str) -> None:
        """Raise ``PipelineError`` unless every assignment's canary passes (or passed before)."""
        cached = self._cached()
        for name, info in infos.items():
            key = course_version(self.root, name, self.grading, self.timeout)
            if cached.get(name) == key:
                continue
            problems = self._grade(info, when)
            if problems:
                raise PipelineError(
                    f"canary failed at the {when} of the run: "
                    f"{'; '.join(problems)}. The course or the grading machinery "
                    f"is broken (or was tampered with): run `course validate "
                    f"{name}`"
                )
            cached[name] = key
            tmp = self.cache.with_suffix(".tmp")
            tmp.write_text(json.dumps(cached, indent=1))
            tmp.replace(self.cache)

    def _grade(self, info: AssignmentInfo, when: str) -> list[str]:
        folder = self.tmp / f"canary-{when}-{info.name}"
        shutil.copytree(
            self.root / "solutions" / info.name,
            folder / "solutions" / info.name,
            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
        )
        course = Course(
            folder,
            config_root=self.root,
            db_path=folder / "gradebook.db",
            release_dir=folder / "release",
            exchange_dir=folder / "exchange",
            timeout=self.timeout,
            grading=self.grading,
        )
        info = course.generate(info.name)
        solution = course.grade_submission(
            "canary-solutions", info, self.root / "solutions" / info.name, None
        )
        blank = course.grade_submission("canary-release", info, info.release_dir, None)
        self.graded += 2
        problems = []
        if solution.total < info.max_score:
            problems.append(
                f"the solutions of {info.name} scored {solution.total:g}/"
                f"{info.max_score:g} ({solution.reason or solution.status})"
            )
        if blank.status == "failed" or blank.total > 0:
            problems.append(
                f"the blank release of {info.name} scored {blank.total:g} "
                f"({blank.reason or blank.status})"
            )
        return problems
