"""One submission's jail: a bubblewrap sandbox around its kernel and the referee that judges it.

``course grade`` runs every submission's kernel inside a ``Jail``:

- the kernel sees a read-only system, Python, virtual environment and ``course_lib``; its own
  empty home folder (its working directory) is the only place it can write. The course folder,
  the gradebook, the output folder, the grading seed and the other submissions are not in its
  file system at all; it has no network, and its own process namespace (it cannot see or
  signal the grading command or the referee);
- its address space is capped (``RLIMIT_AS``) and, where a pids cgroup is writable, so is its
  number of processes;
- the referee is started here, by the grading command (forked from a ``RefereeZygote`` that
  imported torch and the graders once): it gets the seed over the zygote's private socket and
  writes each verdict to a record the kernel cannot reach; the kernel only gets the referee's
  socket;
- ``close()`` kills every process of the submission (the sandbox's process namespace dies
  with it, daemons included) before anything is written.

Without bubblewrap (``unsafe=True``), the referee and the record work the same, but the
kernel runs with the grading command's rights: only the limits and the process-group kill
apply.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any, NoReturn

from course_lib.autograde._course import SEED_ENV, log

SANDBOX_FIX = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`, Fedora: "
    "`dnf install bubblewrap`) and allow unprivileged user namespaces, or pass "
    "--unsafe to grade without isolation (only for submissions you trust)"
)
DEFAULT_MEMORY = 8 << 30  # bytes of address space per kernel (torch maps a lot it never uses)
# Tasks (processes and threads) per submission, where a pids cgroup allows: torch alone starts
# about two threads per core.
DEFAULT_PROCESSES = max(256, 4 * (os.cpu_count() or 1) + 64)
# Environment passed to a grading kernel: nothing else of the grading command's environment.
_KEEP_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "MPLBACKEND",
    "TOKENIZERS_PARALLELISM",
    "PYDEVD_DISABLE_FILE_VALIDATION",
    "JPY_SESSION_NAME",
)
_CURRENT: Jail | None = None  # the jail of the submission being graded (one at a time)


def current_jail() -> Jail | None:
    """The jail of the submission this process grades now (None outside ``with Jail(...)``)."""
    return _CURRENT


@functools.cache
def sandbox_problem() -> str:
    """Why bubblewrap cannot sandbox a kernel here ("" when it can)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        done = subprocess.run(
            [
                bwrap,
                *_system_binds(),
                "--unshare-all",
                "--die-with-parent",
                "--proc",
                "/proc",
                "--",
                sys.executable,
                "-I",
                "-c",
                "pass",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap does not run ({exc})"
    if done.returncode != 0:
        return f"bwrap cannot create a sandbox here: {done.stderr.strip()[:300]}"
    return ""


def _system_binds() -> list[str]:
    """Read-only binds of the system, the Python installation and the virtual environment."""
    import course_lib

    args: list[str] = []
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"):
        path = Path(top)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), top]
        elif path.is_dir():
            args += ["--ro-bind", top, top]
    package = Path(course_lib.__file__).resolve().parent
    for path in {
        Path(sys.base_prefix).resolve(),
        Path(sys.prefix).resolve(),
        Path(sys.prefix),
        Path(sys.executable).resolve().parent.parent,
        package,
    }:
        if path.is_dir() and not str(path).startswith(("/usr/", "/etc/")):
            args += ["--ro-bind", str(path), str(path)]
    return args


def _pids_cgroup_root() -> Path | None:
    """A folder where we may create a pids cgroup (v2 unified or v1 ``pids``), else None."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
            if root.name == "cgroup" and "pids" not in _read(root / "cgroup.subtree_control"):
                continue
            return root
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def seed_int(seed: str) -> int:
    """The integer the graders use for a seed text (as the kernel-side client does)."""
    try:
        return int(seed)
    except ValueError:
        return zlib.crc32(seed.encode("utf-8"))


def _referee_env() -> dict[str, str]:
    """The referees' environment: ours without the grading seed, one thread."""
    return {k: v for k, v in os.environ.items() if not k.endswith("GRADING_SEED")} | {
        "OMP_NUM_THREADS": "1"
    }


class RefereeZygote:
    """A process that imported torch and the graders once and forks a referee per jail.

    A new referee process spends about 2 CPU-seconds importing torch, as much as the rest of a
    small submission's grading; forked from the zygote, it starts in milliseconds, in the same
    clean state (the zygote never runs a check). See ``_referee.zygote`` for the protocol.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-m",
                    "course_lib.grading._referee",
                    "--zygote",
                    str(theirs.fileno()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                env=env,
            )
        finally:
            theirs.close()
        self.control = ours
        self.lock = threading.Lock()  # one request (or one answer) at a time
        self.unanswered = 0  # start requests whose answer (the pid) is not read yet

    def _send(self, request: dict, fds: tuple[int, ...] = ()) -> None:
        try:
            socket.send_fds(self.control, [json.dumps(request).encode()], list(fds))
        except OSError as exc:
            self._silent(str(exc))

    def _answer(self) -> dict:
        try:
            answer = self.control.recv(1 << 16)
        except OSError as exc:
            self._silent(str(exc))
        if not answer:
            self._silent("it closed the connection")
        return json.loads(answer)

    def _silent(self, why: str) -> NoReturn:
        code = self.proc.poll()
        raise RuntimeError(
            f"the referee zygote stopped answering ({why}; exit code {code}); see the "
            "grading command's error output above for its traceback"
        )

    def start(self, fds: tuple[int, int, int], seed: int) -> None:
        """Ask for a referee serving (listening socket, record, log) with ``seed``, without
        waiting: a new zygote may still be importing torch, and the kernel can start meanwhile
        (it connects to the listening socket and waits for the referee's hello). The referee's
        pid is ``started()``; every ``start`` must be followed by one ``started``."""
        with self.lock:
            self._send({"op": "start", "seed": seed}, fds)
            self.unanswered += 1

    def started(self) -> int:
        """The pid of the referee of the oldest ``start`` whose pid was not read yet."""
        with self.lock:
            if not self.unanswered:
                raise RuntimeError("started() without a start(): no referee was asked for")
            self.unanswered -= 1
            return int(self._answer()["pid"])

    def end(self, pid: int) -> None:
        """Kill and reap the referee ``pid``."""
        with self.lock:
            if self.unanswered:
                raise RuntimeError("end() before the pid of every start() was read")
            self._send({"op": "end", "pid": pid})
            self._answer()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """End the zygote; it kills the referees still running."""
        self.control.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=20)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


_ZYGOTE: RefereeZygote | None = None


def referee_zygote() -> RefereeZygote:
    """This process's referee zygote, started on first use (again if it died or if the
    environment changed); it ends with this process."""
    global _ZYGOTE
    env = _referee_env()
    if _ZYGOTE is None or not _ZYGOTE.alive() or _ZYGOTE.env != env:
        if _ZYGOTE is not None:
            _ZYGOTE.close()
        else:
            atexit.register(lambda: _ZYGOTE is not None and _ZYGOTE.close())
        _ZYGOTE = RefereeZygote(env)
    return _ZYGOTE


class Jail:
    """A submission's sandbox, referee and record; use as a context manager (one at a time)."""

    def __init__(
        self,
        base: Path,
        seed: str,
        *,
        unsafe: bool = False,
        memory: int = DEFAULT_MEMORY,
        processes: int = DEFAULT_PROCESSES,
        skip: frozenset[int] = frozenset(),
        notebook_timeout: float | None = None,
    ) -> None:
        self.seed = seed
        # What the executor saw: the cell running now, cells interrupted for their time
        # limit (grade ids), cells not run; ``skip``: cell indices not to run (they killed
        # the kernel on an earlier try).
        self.skip, self.notebook_timeout = skip, notebook_timeout
        self.running: int | None = None
        self.running_id = ""
        self.timed_out: set[str] = set()
        self.not_run: list[int] = []
        self.started: float | None = None
        self.unsafe = unsafe
        self.memory, self.processes = memory, processes
        self.dir = Path(tempfile.mkdtemp(prefix="jail-", dir=base))
        self.home, self.ipc, self.ref, self.private = (
            self.dir / n for n in ("home", "ipc", "ref", "private")
        )
        for d in (self.home, self.ipc, self.ref, self.private):
            d.mkdir()
        self.private.chmod(0o700)
        self.socket_path = self.ref / "referee.sock"
        self.record_path = self.private / "record.jsonl"
        self.kernels: list[subprocess.Popen] = []
        self.cgroup: Path | None = None
        self.zygote: RefereeZygote | None = None  # where our referee was asked for
        self._referee: int | None = None  # its pid, once read

    # -- life cycle ----------------------------------------------------------------------

    def __enter__(self) -> Jail:
        global _CURRENT
        self._start_referee()
        root = _pids_cgroup_root()
        if root is not None and not self.unsafe:
            try:
                self.cgroup = root / f"course-grade-{os.getpid()}-{self.dir.name}"
                self.cgroup.mkdir()
                (self.cgroup / "pids.max").write_text(str(self.processes))
            except OSError as exc:
                log.warning("no process limit: cannot make a pids cgroup (%s)", exc)
                self.cgroup = None
        _CURRENT = self
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start_referee(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        listener.listen(8)
        record = os.open(self.record_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        stderr = os.open(self.private / "referee.log", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            self.zygote = referee_zygote()
            self.zygote.start((listener.fileno(), record, stderr), seed_int(self.seed))
        finally:
            listener.close()
            os.close(record)
            os.close(stderr)

    def close(self) -> None:
        """Kill every process of this submission (kernel, its children, the referee)."""
        global _CURRENT
        if _CURRENT is self:
            _CURRENT = None
        for proc in self.kernels:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                proc.kill()
        if self.cgroup is not None:
            self._empty_cgroup()
        for proc in self.kernels:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.ipc, ignore_errors=True)
        if self.zygote is not None:  # last: a zygote that stopped answering raises here
            zygote, self.zygote = self.zygote, None
            pid = self._referee if self._referee is not None else zygote.started()
            self._referee = None
            zygote.end(pid)

    @property
    def referee(self) -> int | None:
        """The pid of this jail's referee (a child of the zygote); None once closed."""
        if self.zygote is not None and self._referee is None:
            self._referee = self.zygote.started()
        return self._referee

    def _empty_cgroup(self) -> None:
        assert self.cgroup is not None
        kill_file = self.cgroup / "cgroup.kill"
        for _ in range(100):
            pids = [int(p) for p in _read(self.cgroup / "cgroup.procs").split()]
            if not pids:
                break
            if kill_file.exists():
                with contextlib.suppress(OSError):
                    kill_file.write_text("1")
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            self.cgroup.rmdir()

    def verdicts(self) -> list[dict]:
        """The referee's record: one dict per check it judged (name, hidden, passed, message)."""
        out = []
        for line in _read(self.record_path).splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    # -- the kernel ----------------------------------------------------------------------

    def kernel_env(self, env: dict[str, str] | None) -> dict[str, str]:
        """The kernel's environment: an allowlist, never the seed, plus the referee's socket."""
        base = env if env is not None else dict(os.environ)
        from course_lib.pretrained import cache_dir, smollm2_cache_path

        # The course's model cache is read-only in the sandbox: use it when it is filled (else
        # a kernel that loads SmolLM2 converts it again, into its own home).
        cache = cache_dir() if smollm2_cache_path().is_dir() else self.home / ".cache"

        out = {
            k: v
            for k, v in base.items()
            if k in _KEEP_ENV and SEED_ENV not in k and v.strip() != self.seed
        }
        out.update(
            HOME=str(self.home),
            IPYTHONDIR=str(self.home / ".ipython"),
            MPLCONFIGDIR=str(self.home / ".matplotlib"),
            HF_HOME=str(self.home / "hf"),
            JUPYTER_RUNTIME_DIR=str(self.ipc),
            COURSE_CACHE=str(cache),
            HF_HUB_OFFLINE="1",
            MALLOC_ARENA_MAX="4",  # address space stays small
            TMPDIR="/tmp" if not self.unsafe else str(self.home),
            COURSE_REFEREE_SOCKET=str(self.socket_path),
        )
        out.setdefault("PATH", os.defpath)
        out["PATH"] = str(Path(sys.executable).parent) + os.pathsep + out["PATH"]
        return out

    def wrap(self, cmd: list[str]) -> list[str]:
        """The kernel command inside the sandbox, with its limits."""
        # JPY_PARENT_PID=1: ipykernel then does not watch its parent, which in the sandbox's
        # process namespace is pid 1 (it would read that as "my parent exited").
        limits = (
            "import os, resource, sys; os.environ['JPY_PARENT_PID'] = '1'; "
            f"resource.setrlimit(resource.RLIMIT_AS, ({self.memory}, {self.memory})); "
            "os.execv(sys.argv[1], sys.argv[1:])"
        )
        inner = [sys.executable, "-I", "-c", limits, *cmd]
        if self.unsafe:
            return inner
        from course_lib.pretrained import cache_dir

        # The empty /tmp comes first: binds after it may lie under /tmp (a course or virtual
        # environment installed there), and a later tmpfs would hide them.
        args = [
            "bwrap",
            "--tmpfs",
            "/tmp",
            *_system_binds(),
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--bind",
            str(self.home),
            str(self.home),
            "--bind",
            str(self.ipc),
            str(self.ipc),
            "--ro-bind",
            str(self.ref),
            str(self.ref),
            "--chdir",
            str(self.home),
        ]
        cache = cache_dir()
        if cache.is_dir():
            args += ["--ro-bind", str(cache), str(cache)]
        args += ["--", *inner]
        if self.cgroup is not None:
            args = [
                "/bin/sh",
                "-c",
                'echo $$ > "$0/cgroup.procs" && exec "$@"',
                str(self.cgroup),
                *args,
            ]
        return args
