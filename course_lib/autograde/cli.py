"""The command line: ``course release|validate|grade`` (``register``) and ``main``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from course_lib.autograde._course import PipelineError, nbgrader_log
from course_lib.autograde.grade import grade
from course_lib.autograde.release import release
from course_lib.autograde.validate import validate


def _cmd_release(args: argparse.Namespace) -> int:
    try:
        changed = release(args.root, check=args.check)
    except (ValueError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if changed:
            print("notebooks/ is out of date with solutions/; run `course release`. Stale:")
            for p in changed:
                print(f"  {p}")
            return 1
        print("notebooks/ is up to date")
        return 0
    print("\n".join(f"wrote {p}" for p in changed) or "notebooks/ was already up to date")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        results = validate(args.assignments or None, root=args.root, timeout=args.timeout)
    except (ValueError, TypeError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if results and all(r.ok for r in results) else 1


def _cmd_grade(args: argparse.Namespace) -> int:
    import signal

    from course_lib.autograde.shard import merge

    if (args.submissions is None) == (args.merge is None):
        print("error: give either SUBMISSIONS_DIR or --merge OUT1 OUT2 ...", file=sys.stderr)
        return 2
    # A batch scheduler ends a job with SIGTERM: stop as for Ctrl-C (finished rows are kept).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.merge is not None:
            merge(args.merge, args.out, root=args.root)
            return 0
        rows = grade(
            args.submissions,
            args.out,
            root=args.root,
            timeout=args.timeout,
            feedback=not args.no_feedback,
            unsafe=args.unsafe,
            notebook_timeout=args.notebook_timeout or None,
            jobs=args.jobs,
            shard_of=args.shard,
            force=args.force,
        )
    except (ValueError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1 if any(r.status == "failed" for r in rows) else 0


def _verbose(args: argparse.Namespace) -> None:
    if getattr(args, "verbose", False):
        nbgrader_log.setLevel(logging.INFO)
        nbgrader_log.addHandler(logging.StreamHandler(sys.stderr))


def register(subparsers: Any) -> None:
    """Add ``release``, ``validate`` and ``grade`` to the ``course`` command line."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--root", help="course root (default: found from the current folder)")
        p.add_argument("--verbose", action="store_true", help="show nbgrader's log")

    def run(fn):
        def wrapped(args: argparse.Namespace) -> int:
            _verbose(args)
            return fn(args)

        return wrapped

    p = subparsers.add_parser("release", help="regenerate notebooks/ from solutions/ (nbgrader)")
    p.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if notebooks/ is out of date"
    )
    common(p)
    p.set_defaults(func=run(_cmd_release))

    p = subparsers.add_parser(
        "validate",
        help="autograde solutions (full marks) and blank release (zero) of each assignment",
    )
    p.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help="default: all")
    p.add_argument("--timeout", type=float, help="per-cell limit in seconds")
    common(p)
    p.set_defaults(func=run(_cmd_validate))

    p = subparsers.add_parser(
        "grade",
        help="autograde SUBMISSIONS_DIR/<student>/<assignment>/ into grades.csv and feedback HTML",
    )
    p.add_argument("submissions", metavar="SUBMISSIONS_DIR", nargs="?")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <root>/grades)")
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        metavar="N",
        help="submissions graded at the same time (default: the number of cores)",
    )
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="grade only the K-th of N slices of the "
        "class (by student id), for one machine of several; then --merge",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="OUT",
        help="combine the output folders of shards 1..N into --out and the "
        "course's gradebook (instead of grading)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="grade again submissions already "
        "graded with the same files, seed and course (default: kept)",
    )
    p.add_argument("--timeout", type=float, help="per-cell limit in seconds")
    p.add_argument("--no-feedback", action="store_true", help="skip the feedback HTML")
    p.add_argument(
        "--notebook-timeout",
        type=float,
        default=1800,
        metavar="S",
        help="limit per notebook in seconds: later cells are not run (default 1800; 0: none)",
    )
    p.add_argument(
        "--unsafe",
        action="store_true",
        help="grade even where the bubblewrap sandbox is unavailable (submissions "
        "then run with your rights: only for code you trust)",
    )
    common(p)
    p.set_defaults(func=run(_cmd_grade))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``release``/``validate``/``grade`` without the full ``course`` CLI; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m course_lib.autograde")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return int(args.func(args))
