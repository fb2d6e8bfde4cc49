"""The ``course`` command line (also ``python -m course_lib``).

    course doctor               check the install: versions, device, corpus, SmolLM2
    course lab                  start JupyterLab on notebooks/
    course release|validate|grade    the nbgrader pipeline (course_lib.autograde)
    course exchange STEP        release/collect/grade/release-feedback via nbgrader's exchange
    course train-course-gpt     re-create the shipped course GPT (course_lib.course_gpt)

Subcommands that need heavy imports live in their own modules, each exposing
``register(subparsers)``; they are imported only when the parser is built.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

_SUBCOMMAND_MODULES = [
    "course_lib.autograde",
    "course_lib.autograde.exchange",
    "course_lib.course_gpt",
]
REPO_ROOT = Path(__file__).resolve().parent.parent
_VERSIONED = [
    "torch",
    "transformers",
    "tokenizers",
    "nbgrader",
    "jupyterlab",
    "numpy",
    "matplotlib",
]


def _ensure_venv_on_path() -> None:
    """nbgrader runs helper executables (``alembic``) through PATH: put our own bin/ first."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@contextmanager
def _reported(what: str, problems: list[str]) -> Iterator[None]:
    """Run one of doctor's checks: a failure becomes a line of the report, not a traceback."""
    try:
        yield
    except Exception as exc:
        problems.append(f"{what}: {exc}")
        print(f"{what:<12} MISSING")


@contextmanager
def _swapped(module: object, name: str, value: object | None) -> Iterator[None]:
    """Set ``module.name`` to ``value`` (None: leave it) for the block, then restore it."""
    old = getattr(module, name)
    setattr(module, name, old if value is None else value)
    try:
        yield
    finally:
        setattr(module, name, old)


def doctor(
    *, load_model: bool = True, corpus_package: str | None = None, model_package: str | None = None
) -> int:
    """Print what the course needs and whether it works here; return 0 if all is well.

    Each problem is printed with the command that fixes it.

    Args:
        load_model: also load SmolLM2 (a few seconds once cached, about 30 s the first time).
        corpus_package, model_package: check these package names instead of the real ones
            (used by the tests to simulate a missing package).
    """
    from course_lib import data, pretrained

    problems: list[str] = []
    print(f"python       {platform.python_version()} ({sys.executable})")
    for dist in _VERSIONED:
        v = _version(dist)
        print(f"{dist:<12} {v or 'MISSING'}")
        if v is None:
            problems.append(f"{dist} is not installed: run `make lab` (or pip install -e .)")

    try:
        from course_lib import device

        print(f"device       {device()}  (override with COURSE_DEVICE=cpu|cuda|mps)")
    except Exception as exc:  # a bad COURSE_DEVICE, a broken torch
        problems.append(f"device: {exc}")

    with _reported("corpus", problems), _swapped(data, "CORPUS_PACKAGE", corpus_package):
        data.shakespeare_text.cache_clear()  # the text of the package asked for, not a cached one
        try:
            text = data.shakespeare_text()
            print(f"corpus       OK: {len(data.play_files())} plays, {len(text):,} characters")
        finally:
            data.shakespeare_text.cache_clear()

    with _reported("SmolLM2", problems), _swapped(pretrained, "SMOLLM2_PACKAGE", model_package):
        gguf = pretrained.smollm2_gguf_path()
        if load_model:
            model, _ = pretrained.load_smollm2()
            n = sum(p.numel() for p in model.parameters())
            print(
                f"SmolLM2      OK: {n / 1e6:.1f} M parameters, cached in {pretrained.smollm2_cache_path()}"
            )
        else:
            print(f"SmolLM2      found {gguf.name} (not loaded)")

    if problems:
        print("\nProblems found:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print("\nAll good: open notebooks/00-welcome to start.")
    return 0


def lab(
    host: str = "127.0.0.1",
    port: int = 8888,
    open_browser: bool = True,
    extra: list[str] | None = None,
    notebook_dir: str | os.PathLike | None = None,
) -> int:
    """Start JupyterLab on ``notebooks/`` (``--allow-root`` only when running as root).

    ``notebook_dir`` serves another folder instead, e.g. a learner's own copy of the notebooks.
    """
    notebooks = (
        Path(notebook_dir).resolve() if notebook_dir is not None else REPO_ROOT / "notebooks"
    )
    if not notebooks.is_dir():
        fix = "check the path" if notebook_dir is not None else "run `course release` first"
        print(f"{notebooks} does not exist: {fix}", file=sys.stderr)
        return 1
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent)) or shutil.which(
        "jupyter"
    )
    if jupyter is None:
        print(
            "jupyter is not installed here: run `make lab` (it installs JupyterLab)",
            file=sys.stderr,
        )
        return 1
    cmd = [
        jupyter,
        "lab",
        f"--notebook-dir={notebooks}",
        f"--ServerApp.ip={host}",
        f"--ServerApp.port={port}",
    ]
    if not open_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    cmd += extra or []
    print("Starting:", " ".join(cmd), flush=True)
    os.chdir(REPO_ROOT)
    if os.name == "posix":  # become the server, so Ctrl-C and kill reach it directly
        os.execv(cmd[0], cmd)
    return subprocess.call(cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="course", description="LLMs from the ground up: course tools"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("doctor", help="check the install (versions, device, corpus, SmolLM2)")
    p.add_argument("--no-model", action="store_true", help="do not load SmolLM2")
    p.add_argument("--corpus-package", help=argparse.SUPPRESS)
    p.add_argument("--model-package", help=argparse.SUPPRESS)
    p.set_defaults(
        func=lambda a: doctor(
            load_model=not a.no_model,
            corpus_package=a.corpus_package,
            model_package=a.model_package,
        )
    )

    p = sub.add_parser("lab", help="start JupyterLab on notebooks/")
    p.add_argument("--host", default=os.environ.get("COURSE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("COURSE_PORT", "8888")))
    p.add_argument("--no-browser", action="store_true")
    p.add_argument(
        "--notebook-dir",
        metavar="DIR",
        help="serve this folder instead of notebooks/ (e.g. your own copy)",
    )
    p.add_argument(
        "jupyter_args",
        nargs=argparse.REMAINDER,
        help="anything after -- goes to jupyter lab unchanged",
    )
    p.set_defaults(
        func=lambda a: lab(
            a.host,
            a.port,
            not a.no_browser,
            [x for x in a.jupyter_args if x != "--"],
            a.notebook_dir,
        )
    )

    for name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _ensure_venv_on_path()
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
