"""Grading throughput: submissions per minute of ``course grade --jobs 1`` and ``--jobs 2``.

Builds a class of N submissions of the test fixture assignment (tests/fixtures/autograde_course,
two exercises; honest, blank and broken notebooks in turn), then grades the whole class with
``--jobs 1`` and ``--jobs 2`` (``--force``, so every run grades everything), alternating the
order over the repeats so that a change in the machine's load hits both alike. Prints each
run and the ratio of wall times (goal: ``--jobs 2`` at most 0.6x ``--jobs 1`` on 2 cores).

    python bench/bench_grading.py                  # 16 submissions, 2 repeats
    python bench/bench_grading.py --submissions 40 --repeats 3

Not a test: the numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "autograde_course"
A = "99-fixture"
GOOD_SOFTMAX = (
    "def softmax(x, dim=-1):\n    e = (x - x.amax(dim=dim, keepdim=True)).exp()\n"
    "    return e / e.sum(dim=dim, keepdim=True)"
)
NAIVE_SOFTMAX = "def softmax(x, dim=-1):\n    return x.exp() / x.exp().sum(dim=dim, keepdim=True)"
GOOD_MASK = "def causal_mask(T):\n    return torch.ones(T, T, dtype=torch.bool).tril()"


def make_class(tmp: Path, n: int) -> tuple[Path, Path]:
    """A course (the fixture) and SUBMISSIONS/<student>/99-fixture/ for ``n`` students."""
    import nbformat

    from course_lib.autograde import release

    root = tmp / "course"
    shutil.copytree(FIXTURE, root)
    shutil.copy(REPO / "nbgrader_config.py", root)
    release(root)
    released = nbformat.read(root / "notebooks" / A / f"{A}.ipynb", as_version=4)
    variants = [
        {"softmax": GOOD_SOFTMAX, "causal_mask": GOOD_MASK},
        {},
        {"softmax": NAIVE_SOFTMAX, "causal_mask": GOOD_MASK},
    ]
    subs = tmp / "subs"
    for i in range(n):
        nb = nbformat.from_dict(json.loads(json.dumps(released)))
        for gid, source in variants[i % len(variants)].items():
            next(
                c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == gid
            ).source = source
        folder = subs / f"student{i:03d}" / A
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{A}.ipynb")
    return root, subs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("COURSE_GRADING_SEED", "7")
    from course_lib.autograde import grade

    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        root, subs = make_class(Path(tmp), args.submissions)
        out = Path(tmp) / "out"
        one = Path(tmp) / "one"  # warm-up on one student: the canary, caches
        shutil.copytree(next(subs.iterdir()), one / "student")
        grade(one, out, root=root, jobs=1, progress=False)
        times: dict[int, list[float]] = {j: [] for j in args.jobs}
        load = []
        for r in range(args.repeats):
            order = args.jobs if r % 2 == 0 else args.jobs[::-1]
            for jobs in order:
                load.append(os.getloadavg()[0])
                start = time.perf_counter()
                grade(subs, out, root=root, jobs=jobs, progress=False, force=True)
                times[jobs].append(time.perf_counter() - start)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"\n{args.submissions} submissions of {A}, {cores} cores, load average before the "
        f"runs {min(load):.1f} to {max(load):.1f}"
    )
    print(f"{'jobs':>4}  {'wall s (median)':>15}  {'submissions/min':>15}  runs")
    for jobs, ts in times.items():
        med = statistics.median(ts)
        print(
            f"{jobs:>4}  {med:>15.1f}  {60 * args.submissions / med:>15.1f}  "
            f"{', '.join(f'{t:.1f}' for t in ts)}"
        )
    if 1 in times and 2 in times:
        ratio = statistics.median(times[2]) / statistics.median(times[1])
        print(f"wall time --jobs 2 / --jobs 1: {ratio:.2f} (goal: at most 0.60)")


if __name__ == "__main__":
    main()
