"""The kernel side of grading: hand the learner's function to the referee and serve its calls.

Nothing here computes an expected value or compares anything. The learner's kernel may have
patched ``torch.allclose``, ``torch.softmax`` or ``torch.Tensor.__eq__``; those patches live
in this process only. The referee (``_referee.py``, a clean ``python -I`` process started once
per kernel) generates the cases, computes the reference answers and judges. This side only:

1. refuses a function that *is* course_lib's reference (or just calls it),
2. sends the function's parameter names and the seed,
3. for each "call" request: builds fresh arguments, calls the learner's function, and sends
   back the result (converted to plain tensors and Python data), the arguments as they are
   after the call, and any exception with the learner's line,
4. returns the referee's verdict.
"""

from __future__ import annotations

import atexit
import dis
import functools
import inspect
import os
import subprocess
import sys
import sysconfig
import tempfile
import traceback
import types
import zlib
from collections.abc import Callable
from typing import Any

import torch

from course_lib.grading._wire import SPECIAL, UNSUPPORTED, read_frame, write_frame

DEFAULT_HIDDEN_SEED = 20_240_917  # used by hidden=True when COURSE_GRADING_SEED is not set


class RefereeDied(RuntimeError):
    """The referee process exited or broke the protocol."""


# ------------------------------------------------------------------------------------------------
# The referee process
# ------------------------------------------------------------------------------------------------


class _Referee:
    """A running ``python -I -m course_lib.grading._referee`` with a framed pipe to it."""

    def __init__(self) -> None:
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ, OMP_NUM_THREADS="1")  # tiny tensors: threads only cost
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "course_lib.grading._referee"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        hello = self.receive()
        if not isinstance(hello, dict) or hello.get("op") != "ready":
            raise RefereeDied(f"the referee sent {hello!r} instead of its greeting")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self, n_chars: int = 1500) -> str:
        try:
            self._stderr.seek(0)
            return self._stderr.read().decode("utf-8", errors="replace")[-n_chars:].strip()
        except (OSError, ValueError):
            return ""

    def _died(self, what: str) -> RefereeDied:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        tail = self.stderr_tail()
        detail = f"exit code {code}" if code is not None else "still running but not answering"
        return RefereeDied(f"{what} ({detail})" + (f"; its last words:\n{tail}" if tail else ""))

    def send(self, obj: Any) -> None:
        try:
            write_frame(self.proc.stdin, obj)
        except (BrokenPipeError, ConnectionError, OSError, ValueError) as exc:
            raise self._died(f"the referee stopped reading ({type(exc).__name__})") from None

    def receive(self) -> Any:
        try:
            return read_frame(self.proc.stdout)
        except (EOFError, OSError, ValueError) as exc:
            raise self._died(f"the referee stopped answering ({exc})") from None
        except Exception as exc:  # a corrupt frame: torch.load refuses it
            raise self._died(
                f"the referee sent an unreadable message ({type(exc).__name__}: {exc})"
            ) from None

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


class _GradingReferee:
    """The referee of ``course grade``: started by the grading command, not by this kernel.

    Reached over the Unix socket named by ``COURSE_REFEREE_SOCKET``. It draws the hidden cases
    from a seed this kernel never sees and records every verdict itself; what this side prints
    or returns changes no score.
    """

    pid = None

    def __init__(self, path: str) -> None:
        import socket

        self.proc = self  # the poll()/kill() interface of _Referee.proc
        self._closed = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(path)
        except OSError as exc:
            self._sock.close()
            raise RefereeDied(f"cannot reach the grading referee at {path} ({exc})") from None
        self._in, self._out = self._sock.makefile("rb"), self._sock.makefile("wb")
        hello = self.receive()
        if not isinstance(hello, dict) or hello.get("op") != "ready":
            raise RefereeDied(f"the grading referee sent {hello!r} instead of its greeting")

    def poll(self) -> int | None:
        return 0 if self._closed else None

    def kill(self) -> None:
        self.close()

    def send(self, obj: Any) -> None:
        try:
            write_frame(self._out, obj)
        except (OSError, ValueError) as exc:
            raise RefereeDied(f"the grading referee stopped reading ({exc})") from None

    def receive(self) -> Any:
        try:
            return read_frame(self._in)
        except Exception as exc:
            raise RefereeDied(f"the grading referee stopped answering ({exc})") from None

    def close(self) -> None:
        self._closed = True
        for f in (self._in, self._out, self._sock):
            try:
                f.close()
            except OSError:
                pass


_REFEREE: _Referee | _GradingReferee | None = None
GRADING_SOCKET_ENV = "COURSE_REFEREE_SOCKET"


def referee() -> _Referee | _GradingReferee:
    """The kernel's referee, started on first use (about a second: it imports torch).

    Under ``course grade`` (``COURSE_REFEREE_SOCKET`` set) it is the grading command's referee.
    """
    global _REFEREE
    if _REFEREE is not None and _REFEREE.proc.poll() is not None:
        stop_referee()  # it died between checks: start a fresh one
    if _REFEREE is None:
        path = os.environ.get(GRADING_SOCKET_ENV, "")
        _REFEREE = _GradingReferee(path) if path else _Referee()
    return _REFEREE


def stop_referee() -> None:
    """Stop the referee (if any); the next check starts a fresh one."""
    global _REFEREE
    if _REFEREE is not None:
        old, _REFEREE = _REFEREE, None
        if old.proc.poll() is None:
            old.proc.kill()
        old.close()


atexit.register(stop_referee)


# ------------------------------------------------------------------------------------------------
# What the learner handed in
# ------------------------------------------------------------------------------------------------


def _is_course_lib(obj: Any) -> bool:
    module = (
        getattr(obj, "__name__", "")
        if isinstance(obj, types.ModuleType)
        else getattr(obj, "__module__", "")
    )
    return isinstance(module, str) and (module == "course_lib" or module.startswith("course_lib."))


def _reference_used(fn: Callable, name: str) -> str | None:
    """How ``fn`` reaches course_lib's reference ``name``, if its code does (e.g. "F.softmax").

    Follows, without running anything, the names the bytecode loads (globals, closure cells,
    imports) through module attribute chains such as ``course_lib.functional.softmax``.
    """
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        return None
    fn_globals = getattr(fn, "__globals__", None) or {}
    cells = {}
    for var, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
        try:
            cells[var] = cell.cell_contents
        except ValueError:  # an empty cell
            pass
    return _scan_code(code, fn_globals, cells, name)


def _scan_code(code: types.CodeType, fn_globals: dict, cells: dict, name: str) -> str | None:
    missing = object()
    obj: Any = missing
    path = ""
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            obj, path = fn_globals.get(ins.argval, missing), str(ins.argval)
        elif ins.opname in ("LOAD_DEREF", "LOAD_CLASSDEREF"):
            obj, path = cells.get(ins.argval, missing), str(ins.argval)
        elif ins.opname == "IMPORT_NAME":
            obj, path = sys.modules.get(str(ins.argval), missing), str(ins.argval)
        elif ins.opname in ("LOAD_ATTR", "LOAD_METHOD", "IMPORT_FROM") and isinstance(
            obj, types.ModuleType
        ):
            obj, path = getattr(obj, str(ins.argval), missing), f"{path}.{ins.argval}"
        else:
            obj = missing
            continue
        if callable(obj) and _is_course_lib(obj) and getattr(obj, "__name__", None) == name:
            return path
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found = _scan_code(const, fn_globals, {}, name)
            if found:
                return found
    return None


def check_handed_in(name: str, fn: Any) -> None:
    """Refuse what is not the learner's own callable (TypeError / AssertionError naming the fix)."""
    if not callable(fn):
        raise TypeError(
            f"check_{name} needs your function itself, got a {type(fn).__name__}: call "
            f"check_{name}({name}), without parentheses after {name}"
        )
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    try:
        target = inspect.unwrap(target)
    except ValueError:
        pass
    if _is_course_lib(target):
        where = (
            f"{getattr(target, '__module__', 'course_lib')}.{getattr(target, '__qualname__', name)}"
        )
        raise AssertionError(
            f"you handed in course_lib's reference {where}; write your own {name} in the solution "
            f"cell and pass that: check_{name}({name})"
        )
    used = _reference_used(target, name)
    if used is not None:
        raise AssertionError(
            f"your {name} calls course_lib's reference {name} (through `{used}`); the exercise is "
            "to write it yourself from tensor operations"
        )


def describe_signature(fn: Callable) -> list[dict] | None:
    """The function's parameters as plain data, or None when Python cannot tell (builtins)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = []
    for p in sig.parameters.values():
        has_default = p.default is not inspect.Parameter.empty
        info = {"name": p.name, "kind": p.kind.name, "default": has_default}
        if has_default and (p.default is None or type(p.default) in (bool, int, float, str)):
            info["value"] = p.default  # plain defaults travel, so the referee can check them
        params.append(info)
    return params


def hidden_seed() -> int:
    """The seed of the hidden cases: ``COURSE_GRADING_SEED`` (read now), else a fixed default."""
    raw = os.environ.get("COURSE_GRADING_SEED", "").strip()
    if not raw:
        return DEFAULT_HIDDEN_SEED
    try:
        return int(raw)
    except ValueError:
        return zlib.crc32(raw.encode("utf-8"))  # any text works as a seed


# ------------------------------------------------------------------------------------------------
# Arguments in, results out
# ------------------------------------------------------------------------------------------------


def _build_arg(spec: Any) -> Any:
    """Turn one argument from the referee into what the learner's function receives."""
    if isinstance(spec, dict) and SPECIAL in spec:
        kind = spec[SPECIAL]
        if kind == "generator":
            return torch.Generator().manual_seed(int(spec["seed"]))
        if kind == "params":
            params = []
            for data, grad in zip(spec["data"], spec["grads"]):
                p = data.clone().requires_grad_(True)
                p.grad = None if grad is None else grad.clone()
                params.append(p)
            return params
        if kind == "model":  # a small seeded course GPT that records its forward passes
            from course_lib.grading._models import build_model

            return build_model(spec)
        raise RefereeDied(f"the referee asked for an unknown argument kind {kind!r}")
    return spec  # torch.load made fresh objects for this call alone


def type_name(obj: Any) -> str:
    cls = type(obj)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _unsupported(obj: Any, note: str = "") -> dict:
    return {UNSUPPORTED: type_name(obj), "note": note}


def _plain_tensor(t: torch.Tensor) -> Any:
    """A detached CPU copy of ``t`` as a plain ``torch.Tensor`` (no subclass, no graph)."""
    try:
        with torch._C.DisableTorchFunctionSubclass():
            base = torch.Tensor.detach(t)
            if base.layout != torch.strided:
                base = base.to_dense()
            base = (
                base.to("cpu")
                .resolve_conj()
                .resolve_neg()
                .clone(memory_format=torch.contiguous_format)
            )
        return base.as_subclass(torch.Tensor)
    except Exception as exc:  # meta tensors, exotic subclasses
        return _unsupported(t, f"a tensor that cannot be copied to the CPU ({exc})")


def to_plain(obj: Any, depth: int = 0) -> Any:
    """Convert a learner's value to data the referee can load with ``weights_only=True``."""
    if depth > 30:
        return _unsupported(obj, "nested too deeply")
    if isinstance(obj, torch.Tensor):
        return _plain_tensor(obj)
    if obj is None or type(obj) in (bool, int, float, str, bytes):
        return obj
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):  # numpy.float64 is a float subclass
        return float(obj)
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, list):
        return [to_plain(x, depth + 1) for x in list.__iter__(obj)]
    if isinstance(obj, tuple):
        return tuple(to_plain(x, depth + 1) for x in tuple.__iter__(obj))
    if isinstance(obj, dict):
        return {to_plain(k, depth + 1): to_plain(v, depth + 1) for k, v in dict.items(obj)}
    return _unsupported(obj)


def _params_after(params: Any, originals: list[torch.Tensor]) -> dict:
    """What the referee needs to judge an in-place update of ``params``."""
    if not isinstance(params, list):
        return {"replaced": True}
    state: dict[str, Any] = {
        "replaced": False,
        "length": len(params),
        "same": [],
        "data": [],
        "grad": [],
    }
    state.update(requires_grad=[], is_leaf=[])
    for i, p in enumerate(params):
        state["same"].append(i < len(originals) and p is originals[i])
        if isinstance(p, torch.Tensor):
            state["data"].append(to_plain(p))
            state["grad"].append(None if p.grad is None else to_plain(p.grad))
            state["requires_grad"].append(bool(p.requires_grad))
            state["is_leaf"].append(bool(p.is_leaf))
        else:
            state["data"].append(to_plain(p))
            state["grad"].append(None)
            state["requires_grad"].append(False)
            state["is_leaf"].append(False)
    return state


_LIBRARY_DIRS = tuple(
    os.path.normcase(os.path.realpath(p)) + os.sep
    for p in {
        *(
            sysconfig.get_paths().get(key, "")
            for key in ("stdlib", "platstdlib", "purelib", "platlib")
        ),
        os.path.dirname(torch.__file__),
        os.path.dirname(os.path.dirname(__file__)),  # course_lib itself
    }
    if p
)


def _is_library_file(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return True
    return os.path.normcase(os.path.realpath(filename)).startswith(_LIBRARY_DIRS)


def describe_exception(exc: BaseException) -> dict:
    """The exception as plain data, pointing at the last line of the learner's own code."""
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # the first frame is our call below
    mine = [f for f in frames if not _is_library_file(f.filename)]
    where = mine[-1] if mine else (frames[-1] if frames else None)
    try:
        message = str(exc)
    except Exception:
        message = "<the exception's message could not be shown>"
    info = {
        "type": type_name(exc),
        "message": message[:2000],
        "line": None,
        "code": "",
        "function": "",
    }
    if where is not None:
        info.update(line=where.lineno, code=(where.line or "").strip(), function=where.name)
    info["depth"] = len(mine)  # 1: raised in the function handed in; more: in a helper it calls
    info["in_library"] = bool(frames) and _is_library_file(frames[-1].filename)
    return info


def _call(fn: Callable, request: dict) -> dict:
    """Serve one "call" request: run the learner's function on fresh arguments."""
    specs = list(request["args"])
    args = [_build_arg(spec) for spec in specs]
    originals = {
        i: list(a)
        for i, a in enumerate(args)
        if isinstance(specs[i], dict) and SPECIAL in specs[i] and specs[i][SPECIAL] == "params"
    }
    for i in request.get("requires_grad", ()):
        args[i].requires_grad_(True)
    threads = torch.get_num_threads()
    tiny_model = any(isinstance(spec, dict) and spec.get(SPECIAL) == "model" for spec in specs)
    if tiny_model:  # a loop over a tiny model: threads only cost (the referee runs on one too)
        torch.set_num_threads(1)
    try:
        result = fn(*args)
    except Exception as exc:
        return {"op": "result", "ok": False, "error": describe_exception(exc)}
    finally:
        if tiny_model:
            torch.set_num_threads(threads)
    after = []
    for i, (arg, spec) in enumerate(zip(args, specs)):
        if i in originals:
            after.append(_params_after(arg, originals[i]))
        elif isinstance(spec, dict) and spec.get(SPECIAL) == "model":
            after.append({"calls": to_plain(list(arg.calls))})  # what each forward received
        elif isinstance(spec, dict) and SPECIAL in spec:
            after.append(None)
        else:
            after.append(to_plain(arg))
    reply = {
        "op": "result",
        "ok": True,
        "value": to_plain(result),
        "type": type_name(result),
        "args_after": after,
    }
    if request.get("backward"):
        reply["backward"] = _backward(result, [args[i] for i in request.get("requires_grad", ())])
    return reply


def _backward(result: Any, leaves: list[torch.Tensor]) -> dict:
    """Call ``result.backward()`` and return the leaves' gradients."""
    if not isinstance(result, torch.Tensor):
        return {"ok": False, "reason": "not_tensor"}
    if result.grad_fn is None:
        return {"ok": False, "reason": "no_graph"}
    try:
        result.backward()
    except Exception as exc:
        return {"ok": False, "reason": "error", "error": describe_exception(exc)}
    return {"ok": True, "grads": [None if p.grad is None else to_plain(p.grad) for p in leaves]}


# ------------------------------------------------------------------------------------------------
# One check
# ------------------------------------------------------------------------------------------------


def _serve(ref: _Referee, fn: Callable, request: dict) -> dict:
    ref.send(request)
    while True:
        msg = ref.receive()
        op = msg.get("op") if isinstance(msg, dict) else None
        if op == "call":
            ref.send(_call(fn, msg))
        elif op == "verdict":
            return msg
        else:
            raise RefereeDied(f"the referee sent an unexpected message {op!r}")


def run_check(name: str, fn: Any, hidden: bool) -> dict:
    """Grade ``fn`` as the exercise ``name``; returns the referee's verdict (a dict).

    The verdict has ``passed`` (bool), ``message`` (str, the diagnosis when failed), ``checks``
    (int) and ``internal`` (True when the grader itself broke).
    """
    check_handed_in(name, fn)
    request = {
        "op": "check",
        "name": name,
        "params": describe_signature(fn),
        "hidden": bool(hidden),
        "seed": hidden_seed() if hidden else None,
    }
    failure: RefereeDied | None = None
    for _attempt in range(2):  # a referee that dies is restarted once
        try:
            return _serve(referee(), fn, request)
        except RefereeDied as exc:
            failure = exc
            stop_referee()
        except BaseException:
            stop_referee()  # interrupted mid-conversation: the referee would be out of step
            raise
    raise RuntimeError(
        f"check_{name} could not run: the grading referee process stopped twice. Restart the "
        "kernel (Kernel > Restart) and run the notebook again; if that does not help, reinstall "
        f"the course with `make lab`. Details: {failure}"
    )
