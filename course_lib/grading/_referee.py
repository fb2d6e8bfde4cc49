"""The grading referee: a clean process that owns every case, reference value and verdict.

Started by the learner's kernel as ``python -I -m course_lib.grading._referee`` (``-I``: no
current directory on ``sys.path``, so a learner's ``torch.py`` is never imported, and no
``PYTHON*`` variables). It talks over stdin/stdout in the frames of ``_wire``:

    kernel  -> referee   {"op": "check", "name", "params", "hidden", "seed"}
    referee -> kernel    {"op": "call", "args", "requires_grad", "backward"}     (repeated)
    kernel  -> referee   {"op": "result", "ok", "value" | "error", "args_after", ...}
    referee -> kernel    {"op": "verdict", "passed", "message", "checks", "internal"}

In grading mode (``course grade``, ``course validate``) the grading command starts
``python -I -m course_lib.grading._referee --zygote FD`` once, and forks a referee from it for
each submission (``zygote``); the kernel connects to that referee's socket instead.

Learner data is only ever loaded with ``torch.load(weights_only=True)``; the expected values
never leave this process.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import zlib
from typing import IO, Any

VISIBLE_SEED = 1_234  # the visible checks always see the same cases


class Channel:
    """The referee's end of the pipe."""

    def __init__(self, inp: IO[bytes], out: IO[bytes]) -> None:
        self.inp, self.out = inp, out

    def send(self, obj: Any) -> None:
        from course_lib.grading._wire import write_frame

        write_frame(self.out, obj)

    def receive(self) -> Any:
        from course_lib.grading._wire import read_frame

        return read_frame(self.inp)


def case_seed(name: str, hidden: bool, seed: int | None) -> int:
    """Mix the exercise name into the seed, so two exercises never share their cases."""
    base = int(seed) if hidden and seed is not None else VISIBLE_SEED
    return (base * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**63 - 1)


def run_check(msg: dict, channel: Channel) -> dict:
    """Run one grader and return its verdict."""
    from course_lib.grading._catalogue import EXERCISES
    from course_lib.grading._harness import Fail, Session, check_signature

    name = msg.get("name")
    if name == "trained_model":  # notebook 06's capstone: judges a model, not a function
        from course_lib.grading.training import judge_trained_model

        return judge_trained_model(msg)
    exercise = EXERCISES.get(name)
    if exercise is None:
        return {
            "op": "verdict",
            "passed": False,
            "internal": True,
            "checks": 0,
            "message": f"there is no grader called check_{name}",
        }
    hidden = bool(msg.get("hidden"))
    session = Session(
        exercise, channel, hidden=hidden, seed=case_seed(name, hidden, msg.get("seed"))
    )
    try:
        check_signature(session, msg.get("params"))
        grader = getattr(
            importlib.import_module(f"course_lib.grading.{exercise.module}"), f"grade_{name}"
        )
        grader(session)
    except Fail as failure:
        return {
            "op": "verdict",
            "passed": False,
            "internal": False,
            "checks": session.checks,
            "message": str(failure),
        }
    except Exception:
        return {
            "op": "verdict",
            "passed": False,
            "internal": True,
            "checks": session.checks,
            "message": f"the grader of {name} itself failed; please report this:\n"
            + traceback.format_exc(),
        }
    return {
        "op": "verdict",
        "passed": True,
        "internal": False,
        "checks": session.checks,
        "message": "",
    }


def main() -> None:
    # Our stdout is the wire: keep a private copy of it and send every stray print to stderr.
    wire_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import torch

    torch.set_num_threads(1)
    channel = Channel(sys.stdin.buffer, wire_out)
    channel.send({"op": "ready", "pid": os.getpid()})
    while True:
        try:
            msg = channel.receive()
        except EOFError:
            return  # the kernel went away
        if not isinstance(msg, dict) or msg.get("op") != "check":
            print(f"referee: ignoring unexpected message {msg!r}", file=sys.stderr)
            return
        channel.send(run_check(msg, channel))


# ------------------------------------------------------------------------------------------------
# Grading mode: forked for `course grade` from a zygote, not started by the kernel
# ------------------------------------------------------------------------------------------------

HIDDEN_WITHHELD = (
    "{name} failed a hidden case (the hidden cases and their answers are not shown: "
    "test your function on other shapes and values than the visible checks use)"
)


def _record(fd: int, entry: dict) -> None:
    import json

    os.write(fd, (json.dumps(entry) + "\n").encode("utf-8"))


def _serve_connection(conn: Any, seed: int, record_fd: int) -> None:
    """One kernel connection: answer its checks with our seed, record every verdict."""
    channel = Channel(conn.makefile("rb"), conn.makefile("wb"))
    channel.send({"op": "ready", "pid": 0})  # our pid is none of the kernel's business
    while True:
        try:
            msg = channel.receive()
        except Exception:  # EOF, a corrupt frame: the kernel went away or misbehaved
            return
        if not isinstance(msg, dict) or msg.get("op") != "check":
            return
        hidden = bool(msg.get("hidden"))
        request = dict(msg, seed=seed)  # the kernel's seed is ignored: it never knows ours
        try:
            verdict = run_check(request, channel)
        except Exception as exc:  # the kernel broke the protocol mid-check
            _record(
                record_fd,
                {
                    "name": str(msg.get("name")),
                    "hidden": hidden,
                    "passed": False,
                    "internal": False,
                    "message": f"the check was cut off ({exc})",
                },
            )
            return
        _record(
            record_fd,
            {
                "name": str(msg.get("name")),
                "hidden": hidden,
                "passed": bool(verdict["passed"]),
                "internal": bool(verdict["internal"]),
                "message": str(verdict["message"])[:4000],
            },
        )
        if hidden and not verdict["passed"]:
            verdict = dict(verdict, message=HIDDEN_WITHHELD.format(name=msg.get("name")))
        channel.send(verdict)


def _serve_grading(listen_fd: int, record_fd: int, seed: int) -> None:
    """A grading referee: kernels connect to ``listen_fd``; each verdict, judged with
    ``seed``, is appended to ``record_fd`` (one JSON line) for the grading command."""
    import socket

    import torch

    torch.set_num_threads(1)
    listener = socket.socket(fileno=listen_fd)
    while True:
        conn, _ = listener.accept()
        try:
            _serve_connection(conn, seed, record_fd)
        except Exception as exc:  # a kernel gone mid-answer: wait for the next connection
            print(f"referee: connection ended ({type(exc).__name__}: {exc})", file=sys.stderr)
        finally:
            conn.close()


def zygote(control_fd: int) -> None:
    """Zygote mode (``--zygote CONTROL_FD``): import torch and every grader once, then fork a
    fresh grading referee for each submission.

    Importing torch costs a new referee about 2 CPU-seconds, as much as the rest of a small
    submission's grading; a fork costs milliseconds. The zygote itself never runs a check, so
    each referee starts from the same clean state, as a new process would.

    ``control_fd`` is a Unix socket to the grading command, which sends JSON requests:

    - ``{"op": "start", "seed": int}`` with three file descriptors attached (the listening
      socket, the record, the referee's log): fork a referee serving them with that seed (the
      seed never reaches an environment variable or a file); answers ``{"pid": int}``;
    - ``{"op": "end", "pid": int}``: kill that referee and reap it; answers ``{"ok": true}``
      (a referee is reaped only here, so its pid cannot be reused before it is killed).

    When the grading command goes away (end of file), every referee still running is killed.
    """
    import json
    import signal
    import socket

    import torch

    from course_lib.grading._catalogue import EXERCISES

    torch.set_num_threads(1)
    for module in sorted({e.module for e in EXERCISES.values()} | {"training"}):
        importlib.import_module(f"course_lib.grading.{module}")
    control = socket.socket(fileno=control_fd)
    children: set[int] = set()
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, 1 << 16, 3)
        except OSError:
            data, fds = b"", []
        if not data:  # the grading command is gone
            for pid in children:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            return
        request = json.loads(data)
        if request["op"] == "start":
            listen_fd, record_fd, log_fd = fds
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the referee
                code = 0
                try:
                    control.close()
                    os.setsid()
                    devnull = os.open(os.devnull, os.O_RDWR)
                    os.dup2(devnull, 0)
                    os.dup2(log_fd, 1)
                    os.dup2(log_fd, 2)
                    sys.stdout = sys.stderr
                    _serve_grading(listen_fd, record_fd, int(request["seed"]))
                except BaseException:  # noqa: BLE001 -- say why in the log, never return
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            children.add(pid)
            for fd in fds:
                os.close(fd)
            control.sendall(json.dumps({"pid": pid}).encode())
        elif request["op"] == "end":
            pid = int(request["pid"])
            if pid in children:
                children.discard(pid)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            control.sendall(b'{"ok": true}')


if __name__ == "__main__":
    if sys.argv[1:2] == ["--zygote"]:
        zygote(int(sys.argv[2]))
    else:
        main()
