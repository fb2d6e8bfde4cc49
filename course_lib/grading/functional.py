"""Graders of notebook 03 (03-neural-lm): softmax, cross_entropy, cross_entropy_grad, sgd_step,
train_bigram; and of notebook 00's ungraded toy exercise, relu.

Runs in the referee; the answer key is ``course_lib.functional``, evaluated in float64.
"""

from __future__ import annotations

import bisect

import torch
from torch import Tensor

from course_lib import functional as ref
from course_lib.grading._harness import (
    Mistake,
    Session,
    TensorOut,
    generator_arg,
    params_arg,
    reference_answer,
    verify,
)

# ------------------------------------------------------------------------------------------------
# relu (notebook 00: the toy that shows how check cells work; worth no points)
# ------------------------------------------------------------------------------------------------


def grade_relu(s: Session) -> None:
    s.inplace_hint = (
        "Return a new tensor (torch.clamp(x, min=0)), not x.clamp_(...) or x[x < 0] = 0."
    )
    s.error_hints = [
        (
            "Boolean value of Tensor with more than one value is ambiguous",
            "`if x > 0` asks one question about a whole tensor: compare elementwise instead, with "
            "torch.where(x > 0, x, 0.0) or torch.clamp(x, min=0).",
        ),
    ]
    cases = [] if s.hidden else [torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])]
    r = s.rng
    cases += [
        s.randn(r.randint(2, 5), r.randint(2, 6)),
        s.randn(2, r.randint(2, 4), 3, scale=100.0),
        s.randn(r.randint(3, 9)).double(),
    ]
    mistakes = [
        Mistake(
            "negative inputs must become 0, not their absolute value: use max(x, 0)", torch.abs
        ),
        Mistake(
            "you kept the negative part (min(x, 0)): ReLU keeps the positive part, max(x, 0)",
            lambda x: x.clamp(max=0),
        ),
        Mistake(
            "negative inputs must become exactly 0 (this looks like a leaky ReLU, 0.01 x)",
            lambda x: torch.where(x > 0, x, 0.01 * x),
        ),
        Mistake(
            "you returned the mask x > 0 (as 0/1): multiply it with x, or use torch.clamp(x, min=0)",
            lambda x: (x > 0).to(x.dtype),
        ),
    ]

    def nonnegative(y: Tensor) -> str | None:
        if (y < 0).any():
            return "your output has negative entries: ReLU maps every negative input to 0"
        return None

    for x in cases:
        out = s.call(x)
        kind, expected = reference_answer(TensorOut(tuple(x.shape), "float"), ref.relu, x)
        verify(s, out, kind, expected, mistakes=mistakes, properties=[nonnegative])


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
# cross_entropy_grad
# ------------------------------------------------------------------------------------------------


def _autograd_ce_grad(logits: Tensor, targets: Tensor) -> Tensor:
    """The answer key: what autograd gives for d cross_entropy / d logits."""
    z = logits.detach().clone().requires_grad_(True)
    ref.cross_entropy(z, targets).backward()
    return z.grad


def _onehot(x: Tensor, t: Tensor) -> Tensor:
    return torch.nn.functional.one_hot(t.long(), x.shape[-1]).to(x.dtype)


def _ce_grad_mistakes() -> list[Mistake]:
    def sm(x: Tensor) -> Tensor:
        return ref.softmax(x, -1)

    def n(x: Tensor) -> int:
        return x.shape[0]

    def block(x: Tensor, t: Tensor) -> Tensor:
        hot = torch.zeros_like(x)
        hot[:, t.long()] = 1.0
        return (sm(x) - hot) / n(x)

    return [
        Mistake(
            "softmax without subtracting the max overflows for huge logits (exp(1000) = inf, "
            "inf / inf = nan): subtract each row's max before exp",
            lambda x, t: (_exp_norm(x.exp(), -1) - _onehot(x, t)) / n(x),
        ),
        Mistake(
            "you forgot to divide by N: the loss is a MEAN over the N rows, so each row's "
            "gradient softmax - onehot is divided by N",
            lambda x, t: sm(x) - _onehot(x, t),
        ),
        Mistake(
            "the sign is flipped: the gradient is softmax - onehot (raising the target's logit "
            "lowers the loss, so its entry is negative), not onehot - softmax",
            lambda x, t: (_onehot(x, t) - sm(x)) / n(x),
        ),
        Mistake(
            "you forgot the one-hot term: the gradient is (softmax(logits) - onehot(targets)) / N",
            lambda x, t: sm(x) / n(x),
        ),
        Mistake(
            "divide by N (the number of rows), not by V (the vocabulary size)",
            lambda x, t: (sm(x) - _onehot(x, t)) / x.shape[1],
        ),
        Mistake(
            "divide by N only, not by N * V: the loss averages over the N rows, not over the "
            "vocabulary",
            lambda x, t: (sm(x) - _onehot(x, t)) / x.numel(),
        ),
        Mistake(
            "take the softmax over the vocabulary (dim=-1, each row), not over dim=0",
            lambda x, t: (ref.softmax(x, 0) - _onehot(x, t)) / n(x),
        ),
        Mistake(
            "you used log-probabilities: the gradient uses the probabilities softmax(logits), "
            "not log_softmax",
            lambda x, t: (ref.log_softmax(x, -1) - _onehot(x, t)) / n(x),
        ),
        Mistake(
            "your one-hot has a 1 in every target column of every row (onehot[:, targets] = 1): "
            "put one 1 per row, onehot[torch.arange(N), targets] = 1 (or F.one_hot)",
            block,
        ),
        Mistake(
            "you used the raw logits instead of softmax(logits): (softmax - onehot) / N",
            lambda x, t: (x - _onehot(x, t)) / n(x),
        ),
    ]


def grade_cross_entropy_grad(s: Session) -> None:
    s.inplace_hint = "Do not modify logits (no logits -= ...); build new tensors."
    s.error_hints = [
        (
            "must match the size of tensor",
            "Shapes do not broadcast: reduce over dim=-1 with keepdim=True.",
        ),
    ]
    r = s.rng
    cases = []
    if not s.hidden:
        cases.append((torch.zeros(2, 4), torch.tensor([2, 0])))  # rows (1/4, ...) - onehot, / 2
    for n, v in [(r.randint(3, 8), r.randint(3, 9)), (r.randint(2, 5), r.randint(8, 16))]:
        cases.append((s.randn(n, v, scale=2.0), s.randint(0, v, n)))
    n, v = r.randint(3, 6), r.randint(4, 8)
    cases.append((s.randn(n, v, scale=1e3), s.randint(0, v, n)))  # huge logits: no NaN
    cases.append((s.randn(n, v).double(), s.randint(0, v, n)))
    for logits, targets in cases:
        out = s.call(logits, targets)
        N, V = logits.shape

        def finite(g: Tensor, scale: float = logits.abs().max().item()) -> str | None:
            if not g.isfinite().all():
                return (
                    f"your gradient has NaN/inf for logits as large as {scale:.3g}: compute the "
                    "softmax stably (subtract each row's max before exp)"
                )
            return None

        def rows_sum_to_zero(g: Tensor) -> str | None:
            if (g.double().sum(-1).abs() > 1e-4).any():
                return (
                    "the rows of your gradient do not sum to 0: softmax sums to 1 and so does "
                    "the one-hot, so (softmax - onehot) / N sums to 0 in every row"
                )
            return None

        kind, expected = reference_answer(
            TensorOut((N, V), "float", rtol=1e-4, atol=1e-7, what="gradient"),
            _autograd_ce_grad,
            logits,
            targets,
        )
        verify(
            s,
            out,
            kind,
            expected,
            mistakes=_ce_grad_mistakes(),
            properties=[finite, rows_sum_to_zero],
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


# ------------------------------------------------------------------------------------------------
# train_bigram: the learner's whole training loop, judged on the weights it returns
# ------------------------------------------------------------------------------------------------
# The kernel runs the loop; the referee only receives the trained (V, V) table and scores it
# itself (its NLL on the case's text against the counting model's), so a loss printed or
# computed in the kernel counts for nothing. The case is small (V <= 7, 1500 tokens, 100 steps)
# so the whole loop takes a fraction of a second.

_TRAIN_TOLERANCE = 0.02  # nats: the trained table must be this close to the counting model


def _markov_text(s: Session, V: int, n: int) -> Tensor:
    """n ids from a random Markov chain over V tokens whose rows all keep some mass everywhere."""
    P = torch.softmax(s.randn(V, V), -1).double() * 0.85 + 0.15 / V  # (V, V)
    cum = P.cumsum(1).tolist()  # plain floats: bisect is ~100x faster than a torch call per id
    u = torch.rand(n, generator=s.gen, dtype=torch.float64).tolist()
    ids = [s.rng.randrange(V)]
    for k in range(n - 1):
        ids.append(min(bisect.bisect_left(cum[ids[-1]], u[k]), V - 1))
    return torch.tensor(ids)


def _bigram_nll(W: Tensor, ids: Tensor) -> float:
    """Mean NLL of ids[t + 1] given ids[t] under softmax(W), in float64."""
    return ref.cross_entropy(W.double()[ids[:-1]], ids[1:]).item()


def _counting_nll(ids: Tensor, V: int) -> float:
    """The training NLL of the unsmoothed counting model: the best any (V, V) table can do."""
    counts = torch.zeros(V, V, dtype=torch.float64)
    counts.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1, dtype=torch.float64), True)
    probs = counts / counts.sum(1, keepdim=True).clamp_min(1)
    logp = torch.where(counts > 0, probs.clamp_min(1e-300).log(), 0.0)
    return -(counts * logp).sum().item() / counts.sum().item()


def _sgd_bigram(
    ids: Tensor,
    V: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    *,
    shift: int = 1,
    clear: bool = True,
    sign: float = 1.0,
    total: bool = False,
    reverse: bool = False,
) -> Tensor:
    """The reference loop, and its classic wrong versions (for diagnosis only)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.zeros(V, V, requires_grad=True)
    grad = torch.zeros(V, V)
    for _ in range(steps):
        t = torch.randint(len(ids) - 1, (batch_size,), generator=g)
        x, y = (ids[t + 1], ids[t]) if reverse else (ids[t], ids[t + shift])
        logits = W[x]
        loss = ref.cross_entropy(logits, y) * (batch_size if total else 1)
        (step_grad,) = torch.autograd.grad(loss, W)
        grad = grad + step_grad if not clear else step_grad
        with torch.no_grad():
            W -= sign * lr * grad
    return W.detach()


def _train_mistakes(steps: int, batch_size: int, lr: float, seed: int) -> list[Mistake]:
    def m(message: str, **how: object) -> Mistake:
        return Mistake(
            message, lambda ids, V, *_: _sgd_bigram(ids, V, steps, batch_size, lr, seed, **how)
        )

    return [
        m(
            "your targets are the inputs themselves (ids[t]): the target of position t is the "
            "NEXT id, ids[t + 1]",
            shift=0,
        ),
        m(
            "you predict the previous token: the logits are the rows W[ids[t]] of the current "
            "ids and the targets the next ids ids[t + 1], not the other way round",
            reverse=True,
        ),
        m(
            "your gradients pile up from step to step: backward() ADDS into W.grad, so clear it "
            "after each update (sgd_step does: p.grad = None)",
            clear=False,
        ),
        m("you moved up the gradient: the update is W -= lr * W.grad (descent)", sign=-1.0),
        m(
            "your loss is a sum over the batch, not a mean: use the mean cross-entropy (a sum "
            "over the batch multiplies the step size by batch_size)",
            total=True,
        ),
    ]


def grade_train_bigram(s: Session) -> None:
    s.inplace_hint = "Read ids only; do not modify it."
    s.error_hints = [
        (
            "out of bounds",
            "A position t must leave room for its target ids[t + 1]: draw t with "
            "torch.randint(len(ids) - 1, (batch_size,), generator=generator).",
        ),
        (
            "a leaf Variable that requires grad is being used in an in-place operation",
            "Update W under `with torch.no_grad():` (or call your sgd_step([W], lr)).",
        ),
        (
            "does not require grad and does not have a grad_fn",
            "Create W with requires_grad=True (torch.zeros(V, V, requires_grad=True)) so "
            "loss.backward() fills W.grad.",
        ),
    ]
    r = s.rng
    n_cases = 1
    for _ in range(n_cases):
        V = r.randint(4, 7)
        ids = _markov_text(s, V, 1500)
        steps, batch_size, lr, seed = 100, 128, 2.0, r.randrange(2**31)
        out = s.call(ids, V, steps, batch_size, lr, generator_arg(seed))
        best, uniform = _counting_nll(ids, V), float(torch.tensor(float(V)).log())

        def finite(W: Tensor) -> str | None:
            if not W.isfinite().all():
                return (
                    "your W has NaN/inf: training diverged. Is the loss the MEAN cross-entropy, "
                    "and do you clear the gradients after each step?"
                )
            return None

        def trained(W: Tensor) -> str | None:
            if (W == W[:, :1]).all():
                return (
                    "every row of your W is constant (a uniform prediction): W never changed. "
                    "Update W itself in place (with torch.no_grad(): W -= lr * W.grad), and "
                    "return that W"
                )
            return None

        def close_to_counting(
            W: Tensor, ids: Tensor = ids, best: float = best, uniform: float = uniform
        ) -> str | None:
            mine = _bigram_nll(W, ids)
            if mine > uniform + 1e-6:
                return (
                    f"the NLL of your W ({mine:.4f}) is worse than the uniform guess ln V = "
                    f"{uniform:.4f}: training went the wrong way or blew up. Do you subtract "
                    "lr * W.grad (descent), with the MEAN cross-entropy of the batch (a sum over "
                    "the batch multiplies the step size by batch_size)?"
                )
            if mine - best > _TRAIN_TOLERANCE:
                return (
                    f"the NLL of your trained W on the case's text is {mine:.4f}, {mine - best:.4f} "
                    f"above the counting model's {best:.4f} (it must be within "
                    f"{_TRAIN_TOLERANCE}). Check: W starts at zeros, each of the `steps` steps "
                    "uses the logits W[ids[t]] and the targets ids[t + 1], the mean "
                    "cross-entropy, one SGD step with learning rate lr, gradients cleared"
                )
            return None

        verify(
            s,
            out,
            TensorOut((V, V), "float", rtol=1e-3, atol=1e-3, what="trained W"),
            None,
            mistakes=_train_mistakes(steps, batch_size, lr, seed),
            properties=[finite, trained, close_to_counting],
        )
