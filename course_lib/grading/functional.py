"""Graders of notebook 03 (03-neural-lm): softmax, cross_entropy, sgd_step.

Runs in the referee; the answer key is ``course_lib.functional``, evaluated in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from course_lib import functional as ref
from course_lib.grading._harness import (
    Mistake,
    Session,
    TensorOut,
    params_arg,
    reference_answer,
    verify,
)

# ------------------------------------------------------------------------------------------------
# softmax
# ------------------------------------------------------------------------------------------------


def _exp_norm(e: Tensor, dim: int) -> Tensor:
    return e / e.sum(dim=dim, keepdim=True)


def _softmax_mistakes(dim: int, explicit_dim: bool) -> list[Mistake]:
    def other_dim(x: Tensor, wrong: int) -> Tensor:
        if wrong >= x.dim() or wrong == dim % x.dim():
            raise ValueError("not a wrong dim for this input")
        return ref.softmax(x, wrong)

    def ignored_dim(x: Tensor, *_: object) -> Tensor:
        if not explicit_dim or dim % x.dim() == x.dim() - 1:
            raise ValueError("not applicable")
        return ref.softmax(x, -1)

    def max_shift(x: Tensor) -> Tensor:
        return (x - x.amax(dim, keepdim=True)).exp()

    wrong_dims = [
        Mistake(
            f"your output does not sum to 1 along dim={dim}: did you apply the softmax over "
            f"dim={dim} (sum with keepdim=True over that dim)?",
            lambda x, *_, w=w: other_dim(x, w),
        )
        for w in range(3)
    ]
    return [
        Mistake(
            "softmax without subtracting the max overflows at +1000 (exp(1000) = inf, inf / inf = "
            "nan): compute exp(x - x.max(dim, keepdim=True).values)",
            lambda x, *_: _exp_norm(x.exp(), dim),
        ),
        Mistake(
            "you subtracted the max of the whole tensor: subtract the max of each slice along dim "
            "(x.max(dim, keepdim=True).values), or a slice far below the global max underflows to "
            "0 / 0",
            lambda x, *_: _exp_norm((x - x.max()).exp(), dim),
        ),
        Mistake(
            "you ignored the dim argument: normalise over `dim`, not always over the last dim",
            ignored_dim,
        ),
        *wrong_dims,
        Mistake(
            "you divided by the sum of the whole tensor: sum along dim only, with keepdim=True",
            lambda x, *_: (x - x.max()).exp() / (x - x.max()).exp().sum(),
        ),
        Mistake(
            "sum with keepdim=True: without it the sums broadcast along the wrong axis",
            lambda x, *_: max_shift(x) / max_shift(x).sum(dim),
        ),
        Mistake(
            "sum with keepdim=True: without it the sums broadcast along the wrong axis",
            lambda x, *_: x.exp() / x.exp().sum(dim),
        ),
        Mistake(
            "you forgot to normalise: divide exp(x - max) by its sum along dim",
            lambda x, *_: max_shift(x),
        ),
        Mistake(
            "you forgot to normalise: divide exp(x) by its sum along dim", lambda x, *_: x.exp()
        ),
        Mistake(
            "you returned log-probabilities (a log-softmax); softmax is exp(x - max) / sum(exp(x "
            "- max))",
            lambda x, *_: ref.log_softmax(x, dim),
        ),
    ]


def _softmax_cases(s: Session) -> list[tuple[Tensor, int | None]]:
    """(x, dim) pairs; dim None means "call with the default"."""
    r = s.rng
    cases: list[tuple[Tensor, int | None]] = []
    if not s.hidden:
        cases.append((torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), None))
    n, m = r.randint(2, 5), r.randint(3, 7)
    cases += [
        (s.randn(n, m + n), None),
        (s.randn(m, m), None),  # square: a missing keepdim does not crash here, it is just wrong
        (s.randn(r.randint(2, 4), n + 1, m), 1),
        (s.randn(m, n), 0),
        (s.randn(2, n, m, scale=3.0), -1),
    ]
    big = s.randn(3, m)
    big[0] += 1000.0  # no overflow at +1000
    big[1] -= 1000.0
    cases.append((big, -1))
    cases.append((s.randn(n, m, scale=1e4), -1))  # huge logits
    masked = s.randn(n + 1, m)
    masked[torch.rand(n + 1, m, generator=s.gen) < 0.4] = float("-inf")
    masked[:, r.randrange(m)] = 0.5  # every row keeps one finite entry
    cases.append((masked, -1))
    cases.append((s.randn(n, m).double(), -1))
    return cases


def grade_softmax(s: Session) -> None:
    s.error_hints = [
        (
            "must match the size of tensor",
            "The shapes do not broadcast: sum with keepdim=True so the sums line up with x along "
            "dim.",
        ),
    ]
    s.inplace_hint = (
        "Write x = x - m (a new tensor), not x -= m (which changes the caller's tensor)."
    )
    for x, dim in _softmax_cases(s):
        d = -1 if dim is None else dim
        out = s.call(x) if dim is None else s.call(x, dim)
        kind, expected = reference_answer(
            TensorOut(tuple(x.shape), "float", rtol=1e-4, atol=1e-6), ref.softmax, x, d
        )
        scale = x[x.isfinite()].abs().max().item()

        def finite(y: Tensor, scale: float = scale) -> str | None:
            if y.isnan().any() or y.isinf().any():
                return (
                    f"your output has NaN/inf for inputs as large as {scale:.0f}: subtract the "
                    "max along dim before exp (softmax without subtracting the max overflows at "
                    "+1000)"
                )
            return None

        def sums_to_one(y: Tensor, d: int = d) -> str | None:
            if (y.double().sum(d) - 1).abs().max() > 1e-4 or (y < 0).any():
                return (
                    f"your output does not sum to 1 along dim={d}: did you apply the softmax over "
                    f"dim={d} (exp, then divide by the sum over that dim with keepdim=True)?"
                )
            return None

        verify(
            s,
            out,
            kind,
            expected,
            mistakes=_softmax_mistakes(d, dim is not None),
            properties=[finite, sums_to_one],
        )


# ------------------------------------------------------------------------------------------------
# cross_entropy
# ------------------------------------------------------------------------------------------------


def _ce_mistakes() -> list[Mistake]:
    def logp(x: Tensor) -> Tensor:
        return ref.log_softmax(x, -1)

    def pick(m: Tensor, t: Tensor) -> Tensor:
        return m[torch.arange(m.shape[0]), t.long()]

    return [
        Mistake(
            "log(softmax(logits)) underflows to log(0) = -inf for huge logits: compute the "
            "log-softmax directly, logits - max - log(sum(exp(logits - max)))",
            lambda x, t: -pick(ref.softmax(x, -1).log(), t).mean(),
        ),
        Mistake(
            "exp(logits) overflows for huge logits (inf / inf = nan): subtract each row's max "
            "first (log-sum-exp trick)",
            lambda x, t: -pick(x - x.exp().sum(-1, keepdim=True).log(), t).mean(),
        ),
        Mistake(
            "you summed over the rows: cross_entropy is the mean over the N rows (divide by N, or "
            ".mean())",
            lambda x, t: -pick(logp(x), t).sum(),
        ),
        Mistake(
            "your loss is negative: cross-entropy is MINUS the mean log-probability of the targets",
            lambda x, t: pick(logp(x), t).mean(),
        ),
        Mistake(
            "you averaged over the vocabulary too (a one-hot product then .mean()): pick each "
            "row's target log-probability, then take the mean over the N rows only",
            lambda x, t: -(torch.nn.functional.one_hot(t.long(), x.shape[-1]) * logp(x)).mean(),
        ),
        Mistake(
            "you indexed logp[:, targets], an (N, N) block: pick one entry per row with "
            "logp[torch.arange(N), targets]",
            lambda x, t: -logp(x)[:, t.long()].mean(),
        ),
        Mistake(
            "you averaged probabilities, not log-probabilities: take the log of the softmax",
            lambda x, t: -pick(ref.softmax(x, -1), t).mean(),
        ),
        Mistake(
            "normalise each row over the vocabulary: log-softmax over dim=-1 (dim=1), not dim=0",
            lambda x, t: -pick(ref.log_softmax(x, 0), t).mean(),
        ),
        Mistake(
            "you used the raw logits as log-probabilities: subtract log(sum(exp(logits))) of each "
            "row (log-softmax) first",
            lambda x, t: -pick(x, t).mean(),
        ),
    ]


def _ce_cases(s: Session) -> list[tuple[Tensor, Tensor]]:
    r = s.rng
    cases = []
    if not s.hidden:
        cases.append((torch.zeros(2, 4), torch.tensor([0, 3])))  # uniform: loss = log 4
    for n, v in [
        (r.randint(3, 8), r.randint(3, 9)),
        (r.randint(2, 5), r.randint(8, 16)),
        (1, r.randint(2, 6)),
    ]:
        cases.append((s.randn(n, v, scale=2.0), s.randint(0, v, n)))
    n, v = r.randint(3, 6), r.randint(4, 8)
    huge = s.randn(n, v, scale=1e4)  # huge logits: targets far below the max give a loss of ~1e4
    cases.append((huge, s.randint(0, v, n)))
    cases.append((s.randn(n, v).double(), s.randint(0, v, n)))
    return cases


def grade_cross_entropy(s: Session) -> None:
    s.inplace_hint = "Do not modify logits or targets (no logits -= ...); build new tensors."
    s.error_hints = [
        (
            "a leaf Variable that requires grad is being used in an in-place operation",
            "You modified logits in place (logits -= ...): write logits = logits - ... instead.",
        ),
        (
            "must match the size of tensor",
            "Shapes do not broadcast: reduce over dim=-1 with keepdim=True.",
        ),
    ]
    kind = TensorOut((), "float", rtol=1e-4, atol=1e-5, what="loss")
    scalar_hint = (
        "your loss is {}: return a 0-dim tensor (keep it a tensor so loss.backward() works: no "
        ".item(), no float(...))"
    )
    for logits, targets in _ce_cases(s):
        out = s.call(logits, targets)
        if isinstance(out.value, (float, int)) and not isinstance(out.value, bool):
            s.fail(scalar_hint.format("a Python number"), out)
        if isinstance(out.value, Tensor) and out.value.shape != ():
            s.fail(
                f"your loss has shape {tuple(out.value.shape)}; return a 0-dim tensor: the mean "
                "over all rows (no keepdim, no extra dimension)",
                out,
            )
        scale = logits.abs().max().item()

        def finite(y: Tensor, scale: float = scale) -> str | None:
            if not y.isfinite().all():
                return (
                    f"your loss is {y.item()} for logits as large as {scale:.3g}: use the "
                    "log-sum-exp trick (subtract each row's max) instead of log(softmax(...))"
                )
            return None

        def nonnegative(y: Tensor) -> str | None:
            if y.item() < -1e-6:
                return (
                    "your loss is negative: cross-entropy is MINUS the mean log-probability of "
                    "the targets"
                )
            return None

        case_kind, expected = reference_answer(kind, ref.cross_entropy, logits, targets)
        verify(
            s,
            out,
            case_kind,
            expected,
            mistakes=_ce_mistakes(),
            properties=[finite, nonnegative],
        )

    # The loss must be a graph that backward() can run through, with the right gradient.
    n, v = s.rng.randint(3, 6), s.rng.randint(4, 8)
    logits, targets = s.randn(n, v, scale=2.0), s.randint(0, v, n)
    out = s.call(logits, targets, requires_grad=[0], backward=True)
    case_kind, expected = reference_answer(kind, ref.cross_entropy, logits, targets)
    verify(s, out, case_kind, expected, mistakes=_ce_mistakes())
    back = out.backward or {}
    if back.get("reason") == "no_graph":
        s.fail(
            "your loss is not connected to logits (it has no grad_fn), so loss.backward() cannot "
            "work: don't use .item(), float(...), torch.tensor(...), .detach() or .numpy() "
            "inside; build the loss from tensor operations",
            out,
        )
    if back.get("reason") == "error":
        err = back.get("error") or {}
        s.fail(f"loss.backward() raised {err.get('type')}: {err.get('message')}", out)
    s.expect(bool(back.get("ok")), "loss.backward() did not run on your loss", out)
    grad = (back.get("grads") or [None])[0]
    gkind, expected = reference_answer(
        TensorOut(
            tuple(logits.shape),
            "float",
            rtol=1e-4,
            atol=1e-6,
            what="gradient of the loss w.r.t. logits",
        ),
        lambda z, t: (ref.softmax(z, -1) - torch.nn.functional.one_hot(t, v).to(z.dtype)) / n,
        logits,
        targets,
    )
    if grad is None:
        s.fail(
            "after loss.backward(), logits.grad is None: the loss must be computed from logits", out
        )
    s.expect(
        gkind.check_type(grad) is None and gkind.same(grad, expected),
        "the gradient of your loss w.r.t. logits is wrong (expected (softmax(logits) - one_hot) / "
        "N); did you detach part of the computation?",
        out,
    )


# ------------------------------------------------------------------------------------------------
# sgd_step
# ------------------------------------------------------------------------------------------------


def _sgd_cases(s: Session) -> list[tuple[list[Tensor], list[Tensor], float]]:
    r = s.rng
    shapes = [[(3, 4), (4,)], [(2, 2, 2), (5,), (1,)], [(r.randint(1, 4), r.randint(1, 5))]]
    lrs = [0.1, 0.5, r.choice([0.01, 0.05, 0.2, 0.3])]
    if s.hidden:
        lrs = [r.choice([0.02, 0.1, 0.25, 0.7]) for _ in lrs]
    cases = []
    for shape_list, lr in zip(shapes, lrs):
        data = [s.randn(*shape) for shape in shape_list]
        grads = [s.randn(*shape) for shape in shape_list]
        cases.append((data, grads, lr))
    return cases


def grade_sgd_step(s: Session) -> None:
    s.error_hints = [
        (
            "a leaf Variable that requires grad is being used in an in-place operation",
            "Autograd refuses to record an in-place change of a parameter: wrap the update in "
            "`with torch.no_grad():` (the update is not part of the model's computation).",
        ),
        (
            "unsupported operand type(s) for *: 'float' and 'NoneType'",
            "p.grad is None: did you clear the gradients before using them? Update first, then "
            "clear.",
        ),
    ]
    for data, grads, lr in _sgd_cases(s):
        out = s.call(params_arg(data, grads), lr, mutable=[0])
        state = out.args_after[0] or {}
        if (
            state.get("replaced")
            or state.get("length") != len(data)
            or not all(state.get("same", []))
        ):
            s.fail(
                "you replaced the tensors in params (params[i] = ... or a new list): update each "
                "tensor in place (p -= lr * p.grad inside torch.no_grad()) so the model keeps its "
                "parameters",
                out,
            )
        s.ok()
        if not all(state["requires_grad"]) or not all(state["is_leaf"]):
            s.fail(
                "after your step a parameter no longer requires grad (or is no longer a leaf): "
                "update it in place under torch.no_grad(), e.g. p -= lr * p.grad",
                out,
            )
        s.ok()
        kind = TensorOut(None, "float", rtol=1e-5, atol=1e-6, what="updated parameter")
        for i, (p0, g, now) in enumerate(zip(data, grads, state["data"])):
            expected = p0.double() - lr * g.double()
            if (
                kind.check_type(now) is None
                and tuple(now.shape) == tuple(p0.shape)
                and kind.same(now, expected)
            ):
                s.ok()
                continue
            if isinstance(now, Tensor) and now.shape == p0.shape:
                if kind.same(now, p0):
                    s.fail(
                        "your parameters did not change: `p = p - lr * p.grad` only rebinds the "
                        "name p; update the tensor itself in place, p -= lr * p.grad (inside "
                        "torch.no_grad()), and clear the gradient only after the update",
                        out,
                    )
                if kind.same(now, p0.double() + lr * g.double()):
                    s.fail(
                        "you moved up the gradient: subtract lr * p.grad (gradient DEscent)", out
                    )
                if kind.same(now, p0.double() - g.double()):
                    s.fail("you forgot the learning rate: p -= lr * p.grad", out)
                if kind.same(now, p0.double() - g.double() / lr):
                    s.fail("you divided by the learning rate: multiply, p -= lr * p.grad", out)
            s.fail(
                f"params[{i}] after your step is wrong; expected p - lr * p.grad. "
                + (
                    kind.mismatch(now, expected)
                    if isinstance(now, Tensor) and now.shape == p0.shape
                    else f"it is {now!r}"
                ),
                out,
            )
        for grad in state["grad"]:
            cleared = grad is None or (isinstance(grad, Tensor) and bool((grad == 0).all()))
            if not cleared:
                s.fail(
                    "clear the gradients after the step (p.grad = None, or p.grad.zero_()); "
                    "otherwise the next backward() adds the new gradients to the old ones",
                    out,
                )
        s.ok()
