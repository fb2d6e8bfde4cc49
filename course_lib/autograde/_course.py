"""The course folder, its nbgrader config and its grading secret.

Everything else in ``course_lib.autograde`` finds the course through ``course_root()``, loads
its ``nbgrader_config.py`` with ``load_config()`` and grades inside ``grading_env()``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# jsonschema (under nbformat, which every grading process imports) uses the optional
# ``rfc3987_syntax`` when it is installed (jupyter_events pulls it in), and importing it
# compiles a grammar: 1.5 CPU-seconds in every worker and every `course` command. It only
# checks the "iri" string format, which no notebook schema uses; jsonschema falls back
# without it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

SEED_ENV = "COURSE_GRADING_SEED"
SEED_FILE = ".grading_seed"

log = logging.getLogger("course_lib.autograde")
nbgrader_log = logging.getLogger("course_lib.autograde.nbgrader")
nbgrader_log.propagate = False
nbgrader_log.addHandler(logging.NullHandler())


class PipelineError(RuntimeError):
    """nbgrader could not do a step that the whole run depends on (e.g. generating a release)."""


def course_root(root: str | os.PathLike | None = None) -> Path:
    """Return the course root: the folder holding ``nbgrader_config.py``.

    Args:
        root: use this folder (checked); by default search the current folder and its parents,
            then the folder above the ``course_lib`` package.

    Returns:
        The absolute path of the course root.
    """
    if root is not None:
        path = Path(root).resolve()
        if not (path / "nbgrader_config.py").is_file():
            raise ValueError(
                f"{path} has no nbgrader_config.py: pass the course repository's "
                "root folder (the one with solutions/ and nbgrader_config.py)"
            )
        return path
    here = Path.cwd().resolve()
    for folder in (here, *here.parents, Path(__file__).resolve().parents[2]):
        if (folder / "nbgrader_config.py").is_file() and (folder / "solutions").is_dir():
            return folder
    raise ValueError(
        "no course found: run this from the course repository (the folder with "
        "nbgrader_config.py and solutions/) or pass --root"
    )


def list_assignments(root: str | os.PathLike | None = None) -> list[str]:
    """Return the assignment names: the folders of ``solutions/`` that hold a notebook, sorted."""
    solutions = course_root(root) / "solutions"
    if not solutions.is_dir():
        return []
    return sorted(
        d.name
        for d in solutions.iterdir()
        if d.is_dir() and not d.name.startswith((".", "_")) and any(d.glob("*.ipynb"))
    )


def grading_seed(root: str | os.PathLike | None = None) -> str:
    """Return the seed of the hidden checks: ``$COURSE_GRADING_SEED``, else the course secret.

    The secret is generated once per course and kept in ``<root>/.grading_seed`` (git-ignored,
    readable by its owner only), so every grading run of a course draws the same hidden cases
    while learners, who never see that file, cannot predict them.
    """
    value = os.environ.get(SEED_ENV, "").strip()
    if value:
        return value
    path = course_root(root) / SEED_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    value = str(secrets.randbelow(2**31 - 1) + 1)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


@contextlib.contextmanager
def grading_env(seed: str | None) -> Iterator[None]:
    """Seed the grading kernels and put our ``bin/`` on PATH (nbgrader runs ``alembic``)."""
    old = {k: os.environ.get(k) for k in (SEED_ENV, "PATH")}
    bin_dir = str(Path(sys.executable).parent)
    if seed is not None:
        os.environ[SEED_ENV] = seed
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    try:
        with warnings.catch_warnings():
            # nbgrader's gradebook trips harmless SQLAlchemy autoflush warnings.
            warnings.filterwarnings("ignore", message=".*not in session.*")
            # ... and nbformat complains about the id-less cells nbgrader itself restores.
            warnings.filterwarnings("ignore", message="Cell is missing an id field")
            yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def speed_up_new_gradebooks() -> None:
    """Let nbgrader read the gradebook schema version in-process (once) instead of running the
    ``alembic`` executable for every new gradebook.db: 0.3 s instead of several seconds."""
    import nbgrader.api

    original = nbgrader.api.get_alembic_version
    if getattr(original, "_course_lib", False):
        return

    @functools.cache
    def get_alembic_version() -> str:
        try:
            from alembic.config import Config
            from alembic.script import ScriptDirectory

            cfg = Config()
            cfg.set_main_option(
                "script_location", str(Path(nbgrader.api.__file__).parent / "alembic")
            )
            return ScriptDirectory.from_config(cfg).get_current_head()
        except Exception:  # noqa: BLE001 -- an unknown nbgrader/alembic layout: nbgrader's way
            return original()

    get_alembic_version._course_lib = True
    nbgrader.api.get_alembic_version = get_alembic_version


def load_config(config_root: Path) -> Any:
    from traitlets.config.loader import PyFileConfigLoader

    if not (config_root / "nbgrader_config.py").is_file():
        raise ValueError(f"{config_root}/nbgrader_config.py not found: the course root needs it")
    return PyFileConfigLoader("nbgrader_config.py", path=str(config_root)).load_config()
