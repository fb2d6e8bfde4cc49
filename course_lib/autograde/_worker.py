"""Worker processes of ``course grade --jobs N``: each grades one submission at a time.

A worker has its own throwaway nbgrader course (its own gradebook, release and folders) and
grades each submission in it with ``Course.grade_submission`` (sandbox and referee as for one
submission). It sends back the row, the submission's gradebook entries and the folder holding
its files; only the grading command (``Pool``'s owner) writes the course's gradebook, grades.csv
and feedback.

``Pool`` starts the workers (fresh interpreters, not forks: the parent may hold threads and
open gradebooks), hands out the submissions one at a time (pickled over the worker's stdin and
stdout) and yields each result as it finishes. A worker that dies (out of memory, killed)
costs only its submission, which gets a failed row; a new worker takes its place.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from course_lib.autograde._submission import GradeRow
from course_lib.autograde.gradebook import SubmissionScores


@dataclass(frozen=True)
class Setup:
    """What every worker needs to grade like the others (sent once per worker)."""

    root: Path  # the course: config and solutions
    base: Path  # this run's temporary folder; each worker makes its own folder inside
    seed: str
    unsafe: bool
    timeout: float | None
    notebook_timeout: float | None
    feedback: bool
    threads: int | None = None  # OMP/MKL threads per kernel (None: the library default)


@dataclass(frozen=True)
class Task:
    """One submission to grade: ``folder`` is None when ``problem`` says why it cannot be."""

    index: int
    student: str
    assignment: str
    folder: Path | None
    problem: str = ""


@dataclass
class Done:
    """A graded submission: its row, its gradebook entries, the worker course holding its
    ``submitted``/``autograded``/``feedback`` folders (None: no files, e.g. a worker died)."""

    task: Task
    row: GradeRow
    scores: SubmissionScores | None = None
    course_dir: Path | None = None


class Worker:
    """Grades submissions in a throwaway course of its own (made on first use)."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.dir = Path(tempfile.mkdtemp(prefix="worker-", dir=setup.base))
        self.course: Any = None
        self.infos: dict[str, Any] = {}

    def _info(self, assignment: str) -> Any:
        from course_lib.autograde._nbcourse import Course, Grading

        if self.course is None:
            s = self.setup
            grading = Grading(
                self.dir, s.seed, unsafe=s.unsafe, notebook_timeout=s.notebook_timeout
            )
            (self.dir / "solutions").mkdir()
            self.course = Course(
                self.dir,
                config_root=s.root,
                db_path=self.dir / "gradebook.db",
                release_dir=self.dir / "release",
                exchange_dir=self.dir / "exchange",
                timeout=s.timeout,
                grading=grading,
            )
        if assignment not in self.infos:
            shutil.copytree(
                self.setup.root / "solutions" / assignment,
                self.dir / "solutions" / assignment,
                ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
            )
            self.infos[assignment] = self.course.generate(assignment)
        return self.infos[assignment]

    def grade(self, task: Task) -> Done:
        from course_lib.autograde.gradebook import take_submission

        info = self._info(task.assignment)
        feedback = self.dir / "staged-feedback" if self.setup.feedback else None
        row = self.course.grade_submission(task.student, info, task.folder, feedback, task.problem)
        with self.course.gradebook() as gb:
            scores = take_submission(gb, task.assignment, task.student)
        return Done(task, row, scores, self.dir)


def failed(task: Task, reason: str) -> Done:
    """A failed row for a submission whose grading broke down outside the submission."""
    return Done(task, GradeRow(task.student, task.assignment, reason=reason))


def _send(f: Any, obj: Any) -> None:
    data = pickle.dumps(obj)
    f.write(len(data).to_bytes(8, "big") + data)
    f.flush()


def _receive(f: Any) -> Any:
    """The next object on ``f``; ``EOFError`` when the other side is gone."""
    head = f.read(8)
    if len(head) < 8:
        raise EOFError
    data = f.read(int.from_bytes(head, "big"))
    if len(data) < int.from_bytes(head, "big"):
        raise EOFError
    return pickle.loads(data)


def serve() -> None:
    """The worker process: read a ``Setup``, then grade each ``Task`` read from stdin and
    answer its ``Done`` on stdout, until stdin closes."""
    # Ctrl-C reaches the whole process group: the grading command decides, and ends the workers
    # with SIGTERM, which unwinds the current jail (its kernels and referee are killed).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Answers go through a private copy of stdout; whatever a library prints goes to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    tasks = sys.stdin.buffer
    setup: Setup = _receive(tasks)
    if setup.threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(setup.threads))
    from course_lib.autograde._course import grading_env
    from course_lib.autograde._sandbox import referee_zygote

    with grading_env(None):
        # The referee zygote imports torch and the graders (seconds) while this process sets up
        # its course and the first kernel starts, instead of before that kernel.
        referee_zygote()
        worker = Worker(setup)
        while True:
            try:
                task: Task = _receive(tasks)
            except EOFError:
                return
            try:
                done = worker.grade(task)
            except Exception as exc:  # noqa: BLE001 -- the course itself broke: say so, go on
                done = failed(task, f"internal error while grading: {type(exc).__name__}: {exc}")
            _send(answers, done)


_WORKER = "from course_lib.autograde._worker import serve; serve()"


class Pool:
    """``jobs`` worker processes grading ``Task``s; ``run`` yields each ``Done`` as it finishes.

    Workers are plain subprocesses (``serve()`` in a fresh interpreter), so they work whatever
    the caller's main module is. Use as a context manager: leaving it (finished, Ctrl-C or
    error) ends every worker.
    """

    def __init__(self, setup: Setup, jobs: int) -> None:
        if jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {jobs}")
        self.setup, self.jobs = setup, jobs
        self.workers: dict[int, subprocess.Popen] = {}  # stdout fd -> worker
        self.busy: dict[int, Task] = {}  # stdout fd -> its task

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start(self) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        _send(proc.stdin, self.setup)
        self.workers[proc.stdout.fileno()] = proc
        return proc

    def _give(self, proc: subprocess.Popen, todo: list[Task]) -> None:
        if todo:
            task = todo.pop(0)
            self.busy[proc.stdout.fileno()] = task
            with contextlib.suppress(BrokenPipeError):  # it died: its stdout says so next
                _send(proc.stdin, task)
        else:
            self._stop(proc)

    def _stop(self, proc: subprocess.Popen) -> None:
        self.workers.pop(proc.stdout.fileno(), None)
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the worker finishes and exits
        proc.wait()
        proc.stdout.close()

    def run(self, tasks: Sequence[Task]) -> Iterator[Done]:
        todo = list(tasks)
        for _ in range(min(self.jobs, len(todo))):
            self._give(self._start(), todo)
        while self.workers:
            ready, _, _ = select.select(list(self.workers), [], [])
            for fd in ready:
                proc = self.workers[fd]
                try:
                    done = _receive(proc.stdout)
                except (EOFError, pickle.UnpicklingError):
                    task = self.busy.pop(fd, None)
                    self.workers.pop(fd)
                    code = proc.wait()
                    proc.stdout.close()
                    if todo:  # a fresh worker takes the next task
                        self._give(self._start(), todo)
                    if task is not None:
                        yield failed(
                            task,
                            f"the grading process died (exit code {code}: out "
                            "of memory, or killed); grade it again",
                        )
                    continue
                self.busy.pop(fd, None)
                # The next task goes out before the caller publishes this result, so that the
                # worker grades while the parent writes the gradebook, grades.csv and feedback.
                self._give(proc, todo)
                yield done

    def close(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.terminate()  # SIGTERM: the worker closes its jail, then exits
        for proc in self.workers.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for f in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    f.close()
        self.workers.clear()
