"""The referee's toolkit: a grading session, output kinds, and diagnosis of classic mistakes.

Runs only inside the referee process. A grader is a function ``grade_NAME(s: Session)`` that
builds seeded cases, calls the learner's function through ``s.call`` (which runs it in the
kernel), and checks each outcome with ``verify``, in the house order:

    type and shape  ->  properties (sums to 1, masked weights are 0, no NaN, ...)  ->  values

When a step fails, ``verify`` first computes the outputs of the exercise's classic wrong
versions (``Mistake``) on the same inputs; if the learner's output equals one of them, the
failure names that mistake and its fix. Otherwise it reports what the step saw.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import torch
from torch import Tensor

from course_lib.grading._catalogue import Exercise
from course_lib.grading._wire import SPECIAL, UNSUPPORTED


class Fail(Exception):
    """A check failed; ``str(fail)`` is what the learner reads."""


class ProtocolError(RuntimeError):
    """The kernel answered something that does not follow the protocol."""


@dataclass
class Mistake:
    """A classic wrong version of an exercise and the message that names it.

    Args:
        message: what the learner reads: the mistake and its fix.
        compute: takes the exercise's arguments (the referee's copies) and returns the wrong
            version's output, in the same form as the reference output.
    """

    message: str
    compute: Callable[..., Any]


def mistake_maker(wrong: Callable[..., Any]) -> Callable[..., Mistake]:
    """Mistakes as switches of one wrong-version function: with ``m = mistake_maker(_block)``,
    ``m(message, order="post")`` is the Mistake that computes ``_block(*args, order="post")``."""

    def make(message: str, **switches: Any) -> Mistake:
        return Mistake(message, lambda *args: wrong(*args, **switches))

    return make


def generator_arg(seed: int) -> dict:
    """An argument the kernel turns into ``torch.Generator().manual_seed(seed)``."""
    return {SPECIAL: "generator", "seed": int(seed)}


def params_arg(data: Sequence[Tensor], grads: Sequence[Tensor]) -> dict:
    """An argument the kernel turns into leaf tensors with ``requires_grad`` and ``.grad`` set."""
    return {
        SPECIAL: "params",
        "data": [d.clone() for d in data],
        "grads": [g.clone() for g in grads],
    }


def model_arg(config: dict, seed: int, scale: float = 1.0) -> dict:
    """An argument the kernel turns into a small seeded course GPT (``_models.build_model``).

    The referee builds the same model from the same recipe to compute the expected ids; the
    kernel's copy records what each forward pass received (``Outcome.args_after[i]["calls"]``).
    """
    return {SPECIAL: "model", "config": dict(config), "seed": int(seed), "scale": float(scale)}


def is_special(arg: Any) -> bool:
    return isinstance(arg, dict) and SPECIAL in arg


def is_unsupported(value: Any) -> bool:
    return isinstance(value, dict) and UNSUPPORTED in value


@dataclass
class Outcome:
    """What one call of the learner's function gave."""

    value: Any
    type_name: str
    args: tuple  # the referee's own copies of the arguments (the learner never saw these objects)
    args_after: list
    backward: dict | None
    desc: str


# ------------------------------------------------------------------------------------------------
# Describing values for messages
# ------------------------------------------------------------------------------------------------


def short(value: Any, limit: int = 60) -> str:
    """A short description of an argument or output, for messages."""
    if isinstance(value, Tensor):
        if value.numel() <= 8 and value.dim() <= 2:
            text = repr(value.tolist())
            return (
                f"tensor({text})"
                if value.dtype in (torch.float32, torch.int64, torch.bool)
                else f"tensor({text}, dtype={value.dtype})"
            )
        return f"<{str(value.dtype).replace('torch.', '')} tensor of shape {tuple(value.shape)}>"
    if is_special(value):
        if value[SPECIAL] == "generator":
            return f"torch.Generator().manual_seed({value['seed']})"
        if value[SPECIAL] == "model":
            c = value["config"]
            return (
                f"<a small GPT: V={c['vocab_size']}, {c['n_layer']} layers, seed {value['seed']}>"
            )
        shapes = ", ".join(str(tuple(d.shape)) for d in value["data"])
        return f"[{len(value['data'])} tensors of shapes {shapes}, each with .grad]"
    if isinstance(value, str):
        return (
            repr(value)
            if len(value) <= limit
            else f"<a {len(value)}-character text starting {value[:24]!r}>"
        )
    if isinstance(value, (list, tuple, dict)):
        text = repr(value)
        if len(text) <= limit:
            return text
        what = (
            {list: "list", tuple: "tuple", dict: "dict"}[type(value)]
            if type(value) in (list, tuple, dict)
            else type(value).__name__
        )
        return f"<a {what} of {len(value)} items>"
    if is_unsupported(value):
        return f"<{value[UNSUPPORTED]}>"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def describe_type(value: Any) -> str:
    """How a learner's returned value reads in a message: "a numpy.ndarray", "a list", ..."""
    if is_unsupported(value):
        note = value.get("note")
        return _a(value[UNSUPPORTED]) + (f" ({note})" if note else "")
    if isinstance(value, Tensor):
        return _a(f"{str(value.dtype).replace('torch.', '')} tensor of shape {tuple(value.shape)}")
    if value is None:
        return "None (did you forget the `return`?)"
    return _a(type(value).__name__)


# ------------------------------------------------------------------------------------------------
# Output kinds: type check, comparison, mismatch message
# ------------------------------------------------------------------------------------------------


def _as_float64(t: Tensor) -> Tensor:
    return t.to(torch.float64)


def tensors_same(a: Any, b: Any, rtol: float, atol: float, exact: bool = False) -> bool:
    """Same shape and values (NaN equals NaN, so NaN-producing mistakes can be recognised)."""
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)) or tuple(a.shape) != tuple(b.shape):
        return False
    if a.is_complex() or b.is_complex():
        return False
    a64, b64 = _as_float64(a), _as_float64(b)
    if exact:
        return bool(((a64 == b64) | (a64.isnan() & b64.isnan())).all())
    return bool(torch.allclose(a64, b64, rtol=rtol, atol=atol, equal_nan=True))


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    idx = []
    for size in reversed(shape):
        idx.append(flat % size)
        flat //= size
    return tuple(reversed(idx))


def tensor_mismatch(a: Tensor, b: Tensor, what: str = "output") -> str:
    """Where and by how much two same-shape tensors differ."""
    a64, b64 = _as_float64(a), _as_float64(b)
    if a.dtype == torch.bool or b.dtype == torch.bool:
        wrong = a64 != b64
        n = int(wrong.sum())
        i = _index(int(wrong.flatten().nonzero()[0]), tuple(a.shape))
        return (
            f"{n} of {a.numel()} entries of your {what} are wrong, e.g. at index {list(i)} you "
            f"have {bool(a64[i])} where it should be {bool(b64[i])}"
        )
    bad = a64.isnan() | a64.isinf()
    if bad.any() and not (b64.isnan() | b64.isinf())[bad].all():
        i = _index(int(bad.flatten().nonzero()[0]), tuple(a.shape))
        return f"your {what} has {a64[i].item()} at index {list(i)} (expected {b64[i].item():.6g})"
    diff = (a64 - b64).abs().nan_to_num(nan=math.inf)
    i = _index(int(diff.flatten().argmax()), tuple(a.shape))
    return (
        f"wrong values in your {what}: the largest difference is {diff[i].item():.3g} at index "
        f"{list(i)} (you have {a64[i].item():.6g}, expected {b64[i].item():.6g})"
    )


class Kind:
    """How one kind of output is checked and compared."""

    def check_type(self, value: Any) -> str | None:
        raise NotImplementedError

    def normalize(self, value: Any) -> Any:
        return value

    def same(self, a: Any, b: Any) -> bool:
        raise NotImplementedError

    def mismatch(self, a: Any, b: Any) -> str:
        raise NotImplementedError


@dataclass
class TensorOut(Kind):
    """A tensor output.

    Args:
        shape: the required shape, or None.
        dtype: "float" (any floating dtype), "bool", "count" (any real dtype holding
            counts: compared exactly) or "any".
        rtol, atol: tolerances of the value comparison (done in float64).
        exact: compare values exactly.
        what: the output's name in messages.
    """

    shape: tuple[int, ...] | None = None
    dtype: str = "float"
    rtol: float = 1e-4
    atol: float = 1e-6
    exact: bool = False
    what: str = "output"

    def check_type(self, value: Any) -> str | None:
        if not isinstance(value, Tensor):
            hint = {
                "a list": "build it with torch tensor operations (or torch.tensor(your_list))",
                "a numpy.ndarray": "stay in torch (or convert with torch.from_numpy(...))",
                "a float": "don't call .item() or float(...) on it",
                "an int": "don't call .item() or int(...) on it",
            }.get(describe_type(value), "return a torch.Tensor")
            return f"your {self.what} is {describe_type(value)}, not a torch.Tensor: {hint}"
        if value.is_complex():
            return f"your {self.what} is a complex tensor: keep it real"
        if self.dtype == "float" and not value.is_floating_point():
            return (
                f"your {self.what} has dtype {value.dtype}; it must hold floats: convert with "
                ".float() (integer division or an integer tensor loses the fractions)"
            )
        if self.dtype == "bool" and value.dtype != torch.bool:
            return (
                f"your {self.what} has dtype {value.dtype}; return a bool tensor (for example "
                "with dtype=torch.bool, or .bool())"
            )
        if self.dtype == "count" and value.dtype == torch.bool:
            return f"your {self.what} is a bool tensor; it must hold counts (int or float)"
        if self.shape is not None and tuple(value.shape) != tuple(self.shape):
            return f"your {self.what} has shape {tuple(value.shape)}, expected {tuple(self.shape)}"
        return None

    def same(self, a: Any, b: Any) -> bool:
        return tensors_same(
            a, b, self.rtol, self.atol, self.exact or self.dtype in ("bool", "count")
        )

    def mismatch(self, a: Any, b: Any) -> str:
        return tensor_mismatch(a, b, self.what)


@dataclass
class FloatOut(Kind):
    """One number: a Python float (or int), or a one-element tensor."""

    rtol: float = 1e-5
    atol: float = 1e-7
    what: str = "result"

    def check_type(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
            return f"your {self.what} is {describe_type(value)}; return a Python float"
        if isinstance(value, Tensor):
            if value.numel() != 1:
                return (
                    f"your {self.what} is a tensor of shape {tuple(value.shape)}; return one "
                    "number (the mean), as a Python float"
                )
            if value.is_complex() or value.dtype == torch.bool:
                return f"your {self.what} has dtype {value.dtype}; return a Python float"
        return None

    def normalize(self, value: Any) -> float:
        return float(value.reshape(()).item()) if isinstance(value, Tensor) else float(value)

    def same(self, a: Any, b: Any) -> bool:
        try:
            a, b = float(a), float(b)
        except (TypeError, ValueError):
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if math.isinf(a) or math.isinf(b):
            return a == b
        return math.isclose(a, b, rel_tol=self.rtol, abs_tol=self.atol)

    def mismatch(self, a: Any, b: Any) -> str:
        return f"your {self.what} is {a:.6g}, expected {b:.6g}"


def _int_items(items: list, what: str) -> str | None:
    for x in items:
        if isinstance(x, bool) or not isinstance(x, int):
            if isinstance(x, Tensor):
                return (
                    f"your {what} holds tensors ({describe_type(x)}); append Python ints: int(t) "
                    "or t.item()"
                )
            return (
                f"your {what} holds {describe_type(x)} values; it must hold Python ints (int(...))"
            )
    return None


@dataclass
class IntListOut(Kind):
    """A list of Python ints (token ids)."""

    what: str = "list of ids"

    def check_type(self, value: Any) -> str | None:
        if isinstance(value, Tensor):
            return f"your {self.what} is a tensor; return a list of Python ints (use .tolist())"
        if isinstance(value, tuple):
            return f"your {self.what} is a tuple; return a list (list(...))"
        if not isinstance(value, list):
            return f"your {self.what} is {describe_type(value)}; return a list of Python ints"
        return _int_items(value, self.what)

    def same(self, a: Any, b: Any) -> bool:
        return isinstance(a, list) and isinstance(b, list) and a == b

    def mismatch(self, a: Any, b: Any) -> str:
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return (
                    f"your {self.what} differs from the expected one at position {i}: you have "
                    f"{x}, expected {y} (lengths: yours {len(a)}, expected {len(b)})"
                )
        agree = min(len(a), len(b))
        return f"your {self.what} has length {len(a)}, expected {len(b)} (the first {agree} agree)"


@dataclass
class PairCountsOut(Kind):
    """A dict mapping (int, int) pairs to int counts (a Counter is fine)."""

    what: str = "pair counts"

    def check_type(self, value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"your {self.what} is {describe_type(value)}; return a dict {{(a, b): count}}"
        for key, count in value.items():
            if not (isinstance(key, tuple) and len(key) == 2):
                return (
                    f"your {self.what} has the key {short(key)}; keys must be pairs (a, b) of ids"
                )
            if _int_items(list(key), "pair keys"):
                return f"your key {short(key)} holds {describe_type(key[0])}; use Python ints"
            if isinstance(count, bool) or not isinstance(count, int):
                return (
                    f"your count for {short(key)} is {describe_type(count)}; counts must be "
                    "Python ints"
                )
        return None

    def same(self, a: Any, b: Any) -> bool:
        return isinstance(a, dict) and isinstance(b, dict) and a == b

    def mismatch(self, a: Any, b: Any) -> str:
        wrong = [k for k in b if k in a and a[k] != b[k]]
        missing = [k for k in b if k not in a]
        extra = [k for k in a if k not in b]
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"you count {k} {a[k]} times, expected {b[k]}")
        if missing:
            parts.append(
                f"{len(missing)} pairs are missing, e.g. {missing[0]} (count {b[missing[0]]})"
            )
        if extra:
            parts.append(
                f"{len(extra)} pairs should not be there, e.g. {extra[0]} (you count {a[extra[0]]})"
            )
        return "wrong pair counts: " + "; ".join(parts)


@dataclass
class StrOut(Kind):
    what: str = "text"

    def check_type(self, value: Any) -> str | None:
        if isinstance(value, bytes):
            return (
                f"your {self.what} is bytes; decode them to a str with .decode('utf-8', "
                "errors='replace')"
            )
        if not isinstance(value, str):
            return f"your {self.what} is {describe_type(value)}; return a str"
        return None

    def same(self, a: Any, b: Any) -> bool:
        return isinstance(a, str) and isinstance(b, str) and a == b

    def mismatch(self, a: Any, b: Any) -> str:
        i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return (
            f"your {self.what} differs from the expected one at character {i}: you have "
            f"{a[max(0, i - 10) : i + 10]!r}, expected {b[max(0, i - 10) : i + 10]!r}"
        )


@dataclass
class PairOut(Kind):
    """A tuple of two outputs, e.g. (output, weights); a list of two is fine too."""

    first: Kind
    second: Kind
    names: tuple[str, str] = ("output", "weights")

    def check_type(self, value: Any) -> str | None:
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            first, second = self.names
            return f"you returned {describe_type(value)}; return a tuple ({first}, {second})"
        for kind, item in zip((self.first, self.second), value):
            message = kind.check_type(item)
            if message:
                return message
        return None

    def normalize(self, value: Any) -> tuple:
        return (self.first.normalize(value[0]), self.second.normalize(value[1]))

    def same(self, a: Any, b: Any) -> bool:
        return (
            isinstance(a, (tuple, list))
            and isinstance(b, (tuple, list))
            and len(a) == len(b) == 2
            and self.first.same(a[0], b[0])
            and self.second.same(a[1], b[1])
        )

    def mismatch(self, a: Any, b: Any) -> str:
        if not self.first.same(a[0], b[0]):
            return self.first.mismatch(a[0], b[0])
        return self.second.mismatch(a[1], b[1])


# ------------------------------------------------------------------------------------------------
# Tolerances derived from the case (portable across CPUs and thread counts)
# ------------------------------------------------------------------------------------------------

# A learner's float32 answer may differ from the float64 reference by float32 rounding, and
# how much depends on the CPU's kernels (AVX2 vs AVX-512, FMA), the thread count and the order
# of their sums. So no tolerance is read off one machine: each case measures how far float32
# can drift on *these* inputs, two ways, and allows ROUNDING_FACTOR times the larger:
#   1. the reference run in float32 against the same reference in float64 (the rounding of
#      one valid float32 algorithm on this case);
#   2. the float64 reference on inputs jittered by one float32 unit in the last place (the
#      case's conditioning: how much an ulp of rounding anywhere early gets amplified).
# Classic mistakes are off by amounts of the output's own size, thousands of times more.
ROUNDING_FACTOR = 32.0
FLOAT32_ULP = 2.0**-24


def _cast(arg: Any, dtype: torch.dtype) -> Any:
    """``arg`` with every floating tensor (also inside lists, tuples and dicts) cast to dtype."""
    if isinstance(arg, Tensor):
        return arg.to(dtype) if arg.is_floating_point() else arg.clone()
    if isinstance(arg, (list, tuple)):
        return type(arg)(_cast(a, dtype) for a in arg)
    if isinstance(arg, dict) and not is_special(arg):
        return {k: _cast(v, dtype) for k, v in arg.items()}
    return copy.deepcopy(arg)


def _jitter(arg: Any, gen: torch.Generator, ulp: float = FLOAT32_ULP) -> Any:
    """``arg`` (float64) with each floating entry moved by about one ``ulp`` (relative)."""
    if isinstance(arg, Tensor):
        if not arg.is_floating_point():
            return arg.clone()
        noise = torch.randn(arg.shape, generator=gen, dtype=torch.float64)
        return arg * (1 + ulp * noise)
    if isinstance(arg, (list, tuple)):
        return type(arg)(_jitter(a, gen, ulp) for a in arg)
    if isinstance(arg, dict) and not is_special(arg):
        return {k: _jitter(v, gen, ulp) for k, v in arg.items()}
    return copy.deepcopy(arg)


def _spread(a: Any, b: Any) -> float:
    """The largest absolute difference between two same-shape answers (0 if not comparable)."""
    if isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape:
        diff = (a.double() - b.double()).abs()
        finite = diff[diff.isfinite()]
        return float(finite.max()) if finite.numel() else 0.0
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        d = abs(float(a) - float(b))
        return d if math.isfinite(d) else 0.0
    return 0.0


def _widen(kind: Kind, e64: Any, others: Sequence[Any]) -> Kind:
    if isinstance(kind, PairOut):
        return replace(
            kind,
            first=_widen(kind.first, e64[0], [o[0] for o in others]),
            second=_widen(kind.second, e64[1], [o[1] for o in others]),
        )
    if isinstance(kind, (TensorOut, FloatOut)) and not getattr(kind, "exact", False):
        spread = max((_spread(o, e64) for o in others), default=0.0)
        return replace(kind, atol=max(kind.atol, ROUNDING_FACTOR * spread))
    return kind


def reference_answer(
    kind: Kind, reference: Callable[..., Any], *args: Any, dtype: torch.dtype = torch.float32
) -> tuple[Kind, Any]:
    """The float64 reference answer on ``args`` and ``kind`` with a tolerance fit for this case.

    ``reference`` is called three times: on ``args`` cast to float64 (the answer), cast to
    ``dtype`` (the precision the learner works in: float32, or e.g. bfloat16 for a case graded
    in bfloat16), and in float64 jittered by one ulp of ``dtype``; ``kind.atol`` is raised to
    ``ROUNDING_FACTOR`` times the larger drift (never lowered). Integer arguments pass through.
    """
    args64 = _cast(args, torch.float64)
    expected = reference(*args64)
    drifts = [reference(*_cast(args, dtype))]
    ulp = FLOAT32_ULP if dtype == torch.float32 else torch.finfo(dtype).eps / 2
    drifts.append(reference(*_jitter(args64, torch.Generator().manual_seed(0), ulp)))
    return _widen(kind, expected, drifts), expected


# ------------------------------------------------------------------------------------------------
# The session
# ------------------------------------------------------------------------------------------------


def _repeats(a: Any, b: Any) -> bool:
    """Whether two results of the same seeded call agree; a wrong type is left to verify()."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return True
    return bool(a == b)


@dataclass
class Session:
    """One run of one grader: the cases' randomness, the calls, and the count of checks."""

    exercise: Exercise
    channel: Any
    hidden: bool
    seed: int
    checks: int = 0
    error_hints: list[tuple[str, str]] = field(default_factory=list)
    inplace_hint: str = ""

    def __post_init__(self) -> None:
        self.gen = torch.Generator().manual_seed(self.seed)
        self.rng = random.Random(self.seed)

    @property
    def name(self) -> str:
        return self.exercise.name

    # -- randomness -------------------------------------------------------------------------

    def randn(self, *shape: int, scale: float = 1.0) -> Tensor:
        return torch.randn(*shape, generator=self.gen) * scale

    def randint(self, low: int, high: int, *shape: int) -> Tensor:
        return torch.randint(low, high, shape, generator=self.gen)

    # -- bookkeeping ------------------------------------------------------------------------

    def ok(self, n: int = 1) -> None:
        self.checks += n

    def fail(
        self, message: str, outcome: Outcome | None = None, desc: str | None = None
    ) -> NoReturn:
        desc = outcome.desc if outcome is not None else desc
        raise Fail(message + (f"\n  (case: {desc})" if desc else ""))

    def expect(self, condition: bool, message: str, outcome: Outcome | None = None) -> None:
        if not condition:
            self.fail(message, outcome)
        self.ok()

    def expect_repeatable(
        self,
        out: Outcome,
        args: Sequence[Any],
        same: Callable[[Any, Any], bool] | None = None,
        what: str = "ids",
        sampler: str = "torch.multinomial",
    ) -> None:
        """Call again with the same arguments (a seeded generator is made afresh for each call)
        and fail when the result differs: the learner drew from the global random state."""
        again = self.call(*args).value
        if not (same or _repeats)(again, out.value):
            self.fail(
                f"two calls with identically seeded generators gave different {what}: pass "
                f"generator=generator to {sampler} (do not use the global random state)",
                out,
            )
        self.ok()

    def describe_call(self, args: Sequence[Any]) -> str:
        names = self.exercise.params
        parts = [
            f"{names[i] if i < len(names) else f'arg{i}'}={short(a)}" for i, a in enumerate(args)
        ]
        return f"{self.name}({', '.join(parts)})"

    # -- calling the learner's function -------------------------------------------------------

    def call(
        self,
        *args: Any,
        requires_grad: Sequence[int] = (),
        backward: bool = False,
        mutable: Sequence[int] = (),
    ) -> Outcome:
        """Run the learner's function on ``args`` in the kernel and return what happened.

        Raises Fail when it raised an exception or changed one of its inputs in place
        (except the arguments listed in ``mutable``).
        """
        mine = tuple(a.clone() if isinstance(a, Tensor) else copy.deepcopy(a) for a in args)
        wire = [a.clone() if isinstance(a, Tensor) else copy.deepcopy(a) for a in args]
        desc = self.describe_call(mine)
        self.channel.send(
            {
                "op": "call",
                "args": wire,
                "requires_grad": list(requires_grad),
                "backward": bool(backward),
            }
        )
        reply = self.channel.receive()
        if not isinstance(reply, dict) or reply.get("op") != "result":
            raise ProtocolError(f"expected a result, got {short(reply)}")
        if not reply.get("ok"):
            err = reply.get("error") or {}
            if err.get("type") == "NotImplementedError" and not err.get("in_library"):
                raise Fail(self.error_message(err))  # the case does not matter for a stub
            self.fail(self.error_message(err), desc=desc)
        after = reply.get("args_after") or []
        outcome = Outcome(
            reply.get("value"),
            str(reply.get("type", "")),
            mine,
            list(after),
            reply.get("backward"),
            desc,
        )
        for i, (before, now) in enumerate(zip(mine, after)):
            if i in mutable or is_special(before) or not isinstance(before, (Tensor, list, dict)):
                continue
            if not _unchanged(before, now):
                name = self.exercise.params[i] if i < len(self.exercise.params) else f"argument {i}"
                self.fail(
                    f"{self.name} changed its input `{name}` in place; it must leave its inputs "
                    f"as they were. {self.inplace_hint or 'Work on new tensors/lists instead.'}",
                    outcome,
                )
        return outcome

    def error_message(self, err: dict) -> str:
        etype, emsg = str(err.get("type", "Exception")), str(err.get("message", ""))
        if etype == "NotImplementedError" and not err.get("in_library"):
            helper = err.get("function") if (err.get("depth") or 0) > 1 else None
            if helper and helper != self.name:
                return (
                    f"{self.name} calls {helper}, which is not implemented yet: replace its "
                    "`raise NotImplementedError()` with your code"
                )
            return (
                f"{self.name} is not implemented yet: replace `raise NotImplementedError()` with "
                "your code"
            )
        text = f"{self.name} raised {etype}: {emsg}"
        call_failed = not err.get("line") and etype == "TypeError" and "argument" in emsg
        if call_failed:  # Python could not even call the function with these arguments
            return f"{text}\nCheck your parameters: the exercise calls {self.exercise.signature}."
        if err.get("line"):
            where = err.get("function") or "your code"
            text += f"\n  at line {err['line']} of {where}: {err.get('code', '')}"
        hint = self.hint_for(f"{etype}: {emsg}")
        return text + (f"\n{hint}" if hint else "")

    def hint_for(self, text: str) -> str:
        for needle, hint in self.error_hints + _COMMON_HINTS:
            if needle in text:
                return hint.format(signature=self.exercise.signature)
        return ""


_COMMON_HINTS = [
    (
        "NameError",
        "A name is not defined: did you run the cells above (imports, helper functions)?",
    ),
]


def _unchanged(before: Any, after: Any) -> bool:
    if isinstance(before, Tensor):
        return (
            isinstance(after, Tensor)
            and tensors_same(after, before, 0.0, 0.0, exact=True)
            and after.dtype == before.dtype
        )
    if isinstance(before, dict):  # e.g. a params dict of tensors
        return (
            isinstance(after, dict)
            and before.keys() == after.keys()
            and all(_unchanged(v, after[k]) for k, v in before.items())
        )
    if isinstance(before, (list, tuple)):
        return (
            isinstance(after, (list, tuple))
            and len(before) == len(after)
            and all(_unchanged(b, a) for b, a in zip(before, after))
        )
    return bool(before == after)


def check_signature(s: Session, params: list[dict] | None) -> None:
    """The learner's function must accept the catalogue's positional arguments."""
    if params is None:  # Python could not read it (a builtin): the calls will tell
        return
    positional = [p for p in params if p["kind"] in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")]
    var_positional = any(p["kind"] == "VAR_POSITIONAL" for p in params)
    names = [p["name"] for p in params]
    theirs = f"{s.name}({', '.join(names)})"
    n_all, n_required = len(s.exercise.params), len(s.exercise.params) - s.exercise.optional
    required = [p for p in positional if not p["default"]]
    kw_required = [p["name"] for p in params if p["kind"] == "KEYWORD_ONLY" and not p["default"]]
    if len(positional) < n_all and not var_positional:
        missing = ", ".join(s.exercise.params[len(positional) :])
        s.fail(
            f"your function is {theirs} but the exercise calls {s.exercise.signature}: add the "
            f"missing parameter(s) {missing}"
        )
    if len(required) > n_required:
        extra = ", ".join(p["name"] for p in required[n_required:])
        s.fail(
            f"your function is {theirs} but the exercise calls {s.exercise.signature}: give "
            f"{extra} a default value (or remove it)"
        )
    defaults = dict(s.exercise.defaults)
    for i, p in enumerate(positional[:n_all]):
        wanted = s.exercise.params[i]
        if wanted in defaults and "value" in p and p["value"] != defaults[wanted]:
            s.fail(
                f"the default of {p['name']} must be {defaults[wanted]!r}, not {p['value']!r}: "
                f"def {s.exercise.signature}"
            )
    if kw_required:
        s.fail(
            f"your function is {theirs}: its keyword-only parameter(s) {', '.join(kw_required)} "
            f"need a default; the exercise calls {s.exercise.signature}"
        )
    s.ok()


# ------------------------------------------------------------------------------------------------
# Verifying one outcome
# ------------------------------------------------------------------------------------------------


def diagnose(
    value: Any, args: tuple, kind: Kind, expected: Any, mistakes: Sequence[Mistake]
) -> str | None:
    """The message of the first classic mistake whose output equals the learner's, if any.

    A mistake whose output equals the expected one on these inputs tells nothing and is skipped.
    """
    try:
        if kind.check_type(value) is None:
            value = kind.normalize(value)
    except Exception:
        pass
    for mistake in mistakes:
        try:
            wrong = mistake.compute(*args)
        except Exception:
            continue
        try:
            if expected is not None and kind.same(wrong, expected):
                continue
            if kind.same(value, wrong):
                return mistake.message
        except Exception:
            continue
    return None


Property = Callable[[Any], "str | None"]


def earlier_positions_unchanged(later: Outcome, message: str) -> Property:
    """A causality property: the outputs at every position but the last (dim 1) equal ``later``'s.

    ``later`` is the learner's output on the same inputs with the last position changed; a
    causal model's earlier outputs cannot depend on it. ``message`` names the likely fix.
    """

    def causal(y: Tensor) -> str | None:
        y2 = later.value
        if (
            isinstance(y2, Tensor)
            and y2.shape == y.shape
            and not torch.allclose(y[:, :-1].double(), y2[:, :-1].double(), atol=1e-5, rtol=1e-5)
        ):
            return message
        return None

    return causal


def verify(
    s: Session,
    out: Outcome,
    kind: Kind,
    expected: Any = None,
    *,
    mistakes: Sequence[Mistake] = (),
    properties: Sequence[Property] = (),
) -> Any:
    """Check an outcome: type and shape, then properties, then values against ``expected``.

    Returns the normalised value. On failure raises Fail naming the matching classic mistake
    when there is one, otherwise what the failed step saw.
    """
    message = kind.check_type(out.value)
    if message:
        s.fail(diagnose(out.value, out.args, kind, expected, mistakes) or message, out)
    s.ok()
    value = kind.normalize(out.value)
    for prop in properties:
        message = prop(value)
        if message:
            s.fail(diagnose(value, out.args, kind, expected, mistakes) or message, out)
        s.ok()
    if expected is not None:
        if not kind.same(value, expected):
            s.fail(
                diagnose(value, out.args, kind, expected, mistakes)
                or kind.mismatch(value, expected),
                out,
            )
        s.ok()
    return value
