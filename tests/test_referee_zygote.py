"""The referee zygote: one process imports torch and the graders, each jail forks a referee.

The end-to-end suites (test_autograde*.py) show that the forked referees judge as before; here:
every jail gets a fresh referee of its own, killed when the jail closes; a dead zygote is
replaced; nothing outlives the grading command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from course_lib.autograde import _sandbox
from course_lib.autograde._sandbox import Jail, referee_zygote, sandbox_problem
from course_lib.grading._wire import read_frame


def _parent(pid: int) -> int | None:
    """The parent pid of a live, non-zombie process; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[1])


def _gone(pid: int, seconds: float = 30) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if _parent(pid) is None:
            return True
        time.sleep(0.1)
    return False


def _hello(jail: Jail) -> dict:
    """What the referee says to a kernel that connects (its first frame)."""
    import socket

    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(60)
        conn.connect(str(jail.socket_path))
        return read_frame(conn.makefile("rb"))


def test_each_jail_forks_a_fresh_referee_and_kills_it_at_close(tmp_path):
    unsafe = bool(sandbox_problem())
    pids = []
    for _ in range(2):
        with Jail(tmp_path, "5", unsafe=unsafe) as jail:
            zygote = referee_zygote()
            assert _parent(jail.referee) == zygote.proc.pid  # forked, not a new interpreter
            assert _hello(jail) == {"op": "ready", "pid": 0}  # it serves this jail's socket
            pids.append(jail.referee)
        assert _gone(pids[-1])
    assert pids[0] != pids[1]
    assert zygote.alive()  # one zygote for every jail of this process


def test_a_dead_zygote_is_replaced(tmp_path):
    old = referee_zygote()
    old.proc.kill()
    old.proc.wait()
    with Jail(tmp_path, "5", unsafe=bool(sandbox_problem())) as jail:
        assert referee_zygote() is not old
        assert _hello(jail)["op"] == "ready"


def test_a_new_environment_gets_a_new_zygote(tmp_path, monkeypatch):
    old = referee_zygote()
    monkeypatch.setenv("COURSE_TEST_ZYGOTE", "1")
    assert referee_zygote() is not old and not old.alive()
    assert referee_zygote().env["COURSE_TEST_ZYGOTE"] == "1"


def test_the_seed_stays_out_of_the_zygote_environment(monkeypatch):
    monkeypatch.setenv("COURSE_GRADING_SEED", "4242")
    env = referee_zygote().env
    assert "COURSE_GRADING_SEED" not in env and env["OMP_NUM_THREADS"] == "1"


def test_nothing_outlives_the_grading_command(tmp_path):
    script = (
        "import os, sys; from pathlib import Path\n"
        "from course_lib.autograde._sandbox import Jail, referee_zygote\n"
        f"jail = Jail(Path({str(tmp_path)!r}), '5', unsafe=True).__enter__()\n"
        "print(referee_zygote().proc.pid, jail.referee, flush=True)\n"
        "os._exit(0)  # no close(), no atexit: as if killed\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    zygote, referee = map(int, out.stdout.split())
    assert _gone(zygote) and _gone(referee)


def test_a_zygote_that_died_says_so():
    zygote = _sandbox.RefereeZygote(_sandbox._referee_env())
    zygote.proc.kill()
    zygote.proc.wait()
    with pytest.raises(RuntimeError, match="referee zygote stopped answering .*exit code -9"):
        zygote.start((0, 1, 2), 5)
    zygote.close()


def test_a_jail_does_not_wait_for_its_referee_to_start(tmp_path):
    # A new zygote spends seconds importing torch; the jail's kernel starts meanwhile (it
    # connects to the listening socket and waits for the hello). Here the zygote is frozen:
    # entering the jail must still return at once, and the referee serve once it thaws.
    zygote = referee_zygote()
    os.kill(zygote.proc.pid, signal.SIGSTOP)
    jail = Jail(tmp_path, "5", unsafe=bool(sandbox_problem()))
    try:
        entering = threading.Thread(target=jail.__enter__, daemon=True)
        entering.start()
        entering.join(timeout=60)
        assert not entering.is_alive(), "Jail.__enter__ waited for the zygote"
        assert zygote.unanswered == 1
        os.kill(zygote.proc.pid, signal.SIGCONT)
        assert _hello(jail) == {"op": "ready", "pid": 0}
        assert _parent(jail.referee) == zygote.proc.pid and zygote.unanswered == 0
    finally:
        os.kill(zygote.proc.pid, signal.SIGCONT)
        jail.close()
    assert jail.referee is None


def test_a_zygote_that_dies_under_a_jail_fails_its_close(tmp_path):
    # The grading of that submission must fail loudly (an internal error), not score the
    # empty record as zero.
    jail = Jail(tmp_path, "5", unsafe=bool(sandbox_problem())).__enter__()
    zygote = jail.zygote
    zygote.proc.kill()
    zygote.proc.wait()
    with pytest.raises(RuntimeError, match="referee zygote stopped answering"):
        jail.close()
    jail.close()  # a second close (the with block's) has nothing left to do
    assert referee_zygote() is not zygote  # the next jail gets a new one
