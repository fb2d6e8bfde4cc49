"""Graders of notebook 09 (09-challenges): compute at scale, KV-cache memory, interpretability.

Runs in the referee. The answer keys are ``course_lib.training`` (``train_flops``,
``training_days``), ``course_lib.attention`` (``kv_cache_bytes``) and
``course_lib.interpretability`` (``attention_entropy``, ``logit_lens``), evaluated on the
referee's own copies of the arguments (float64 for tensors).

Sizes at GPT-3 scale are part of every case set: ``6 N D`` is about 3e23, far beyond int64
(9.2e18), so an answer computed with torch or numpy integers wraps around, and a byte count
beyond 2**53 is no longer exact as a float. Python ints are exact at any size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from course_lib import attention as attention_ref
from course_lib import interpretability as ref
from course_lib import training as training_ref
from course_lib.grading._harness import (
    FLOAT32_ULP,
    ROUNDING_FACTOR,
    FloatOut,
    Kind,
    Mistake,
    Session,
    TensorOut,
    describe_type,
    reference_answer,
    verify,
)

# A float answer may be computed in float64 (exact to ~1e-16) or in float32 (rounded to 2**-24
# at each of a handful of operations): allow ROUNDING_FACTOR float32 ulps, relative. The classic
# mistakes are off by factors (2, 3, 24, 86400, ...).
_NUMBER_RTOL = ROUNDING_FACTOR * FLOAT32_ULP

_INT64_MAX = 2**63 - 1


def _wrap_int64(value: int) -> int:
    """``value`` as int64 arithmetic would leave it (two's complement wrap-around)."""
    return (value + 2**63) % 2**64 - 2**63


@dataclass
class _NumberOut(FloatOut):
    """One number: a Python int or float, or a one-element tensor; compared relatively."""

    def check_type(self, value: Any) -> str | None:
        if isinstance(value, Tensor) and value.numel() != 1:
            return (
                f"your {self.what} is a tensor of shape {tuple(value.shape)}; return one number "
                "(a Python float or int)"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
            return f"your {self.what} is {describe_type(value)}; return a Python float or int"
        if isinstance(value, Tensor) and (value.is_complex() or value.dtype == torch.bool):
            return f"your {self.what} has dtype {value.dtype}; return a Python float or int"
        return None


@dataclass
class _ExactIntOut(Kind):
    """A Python int, compared exactly (byte counts)."""

    what: str = "byte count"

    def check_type(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float):
                return (
                    f"your {self.what} is a float; return a Python int (bytes are whole numbers, "
                    "and a float is no longer exact above 2**53): multiply ints only, no `/`"
                )
            if isinstance(value, Tensor):
                return (
                    f"your {self.what} is {describe_type(value)}; return a Python int: multiply "
                    "the Python ints directly (torch integers overflow above 2**63)"
                )
            return (
                f"your {self.what} is {describe_type(value)}; return a Python int (math.prod or "
                "plain `*` on the arguments; numpy integers overflow and are not Python ints)"
            )
        return None

    def same(self, a: Any, b: Any) -> bool:
        return type(a) is int and type(b) is int and a == b

    def mismatch(self, a: Any, b: Any) -> str:
        ratio = f" ({a / b:.4g} times the expected value)" if b else ""
        return f"your {self.what} is {a:,}, expected {b:,}{ratio}"


def _positive(what: str):
    def check(value: Any) -> str | None:
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            return (
                f"your {what} is {v}: did a float16 or int tensor overflow? Compute with Python "
                "numbers"
            )
        if v <= 0:
            return f"your {what} is {v:.6g}, but it must be positive for positive sizes"
        return None

    return check


# ------------------------------------------------------------------------------------------------
# train_flops
# ------------------------------------------------------------------------------------------------

_OVERFLOW = (
    "your result wrapped around: int64 (torch or numpy integers) stops at 9.2e18, and 6 N D "
    "for GPT-3 is about 3e23. Multiply the Python ints directly (Python ints never overflow) "
    "or use floats"
)


def _flops_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "you counted the forward pass only (2 N D): training also runs the backward pass, "
            "about twice the forward (4 N D), so 6 N D in all",
            lambda n, d: 2 * n * d,
        ),
        Mistake(
            "3 N D counts the backward pass as cheap as the forward; the backward costs about "
            "twice the forward (gradients for activations and for weights): 6 N D",
            lambda n, d: 3 * n * d,
        ),
        Mistake(
            "4 N D is the backward pass alone; add the forward pass (2 N D): 6 N D",
            lambda n, d: 4 * n * d,
        ),
        Mistake(
            "8 N D includes recomputing activations (gradient checkpointing); the estimate here "
            "is the plain 6 N D",
            lambda n, d: 8 * n * d,
        ),
        Mistake(
            "you added N and D; the cost is per parameter *and* per token: 6 * n_params * n_tokens",
            lambda n, d: 6 * (n + d),
        ),
        Mistake("that is the cost of one token (6 N); multiply by n_tokens", lambda n, d: 6 * n),
        Mistake(_OVERFLOW, lambda n, d: _wrap_int64(6 * n * d)),
        Mistake(_OVERFLOW, lambda n, d: _wrap_int64(2 * n * d)),
    ]


def _flops_cases(s: Session) -> list[tuple[int, int]]:
    r = s.rng
    cases = [] if s.hidden else [(10, 7), (175_000_000_000, 300_000_000_000)]
    cases += [
        (r.randint(10**5, 10**8), r.randint(10**6, 10**9)),
        (r.randint(10**9, 10**12), r.randint(10**11, 10**13)),  # beyond int64
    ]
    return cases


def grade_train_flops(s: Session) -> None:
    for n, d in _flops_cases(s):
        out = s.call(n, d)
        kind, expected = reference_answer(
            _NumberOut(rtol=_NUMBER_RTOL, atol=0.0, what="FLOP count"),
            training_ref.train_flops,
            n,
            d,
        )
        verify(
            s,
            out,
            kind,
            expected,
            mistakes=_flops_mistakes(),
            properties=[_positive("FLOP count")],
        )


# ------------------------------------------------------------------------------------------------
# training_days
# ------------------------------------------------------------------------------------------------


def _days(n, d, gpus, peak, mfu, *, flops=6, per_second=86_400.0):
    return flops * n * d / (gpus * peak * mfu) / per_second


def _days_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "your answer is in seconds: divide by 86,400 (seconds per day)",
            lambda *a: _days(*a, per_second=1.0),
        ),
        Mistake(
            "your answer is in hours: divide by 86,400 seconds per day (not 3,600)",
            lambda *a: _days(*a, per_second=3_600.0),
        ),
        Mistake(
            "your answer is in minutes: divide by 86,400 seconds per day (not 60)",
            lambda *a: _days(*a, per_second=60.0),
        ),
        Mistake(
            "your answer is in years: the exercise asks for days (divide by 86,400 only)",
            lambda *a: _days(*a, per_second=86_400.0 * 365),
        ),
        Mistake(
            "you forgot the MFU: the GPUs deliver only mfu * peak_flops, so divide by n_gpus * "
            "peak_flops * mfu",
            lambda n, d, g, p, m: _days(n, d, g, p, 1.0),
        ),
        Mistake(
            "you multiplied by the MFU; a lower utilisation makes training *longer*: divide by "
            "n_gpus * peak_flops * mfu",
            lambda n, d, g, p, m: _days(n, d, g, p, 1.0) * m,
        ),
        Mistake(
            "you multiplied by n_gpus; more GPUs make training *shorter*: divide the FLOPs by "
            "n_gpus * peak_flops * mfu",
            lambda n, d, g, p, m: 6 * n * d * g / (p * m) / 86_400,
        ),
        Mistake(
            "you forgot n_gpus: the FLOPs are shared by n_gpus GPUs, each at peak_flops * mfu",
            lambda n, d, g, p, m: _days(n, d, 1, p, m),
        ),
        Mistake(
            "the training cost is 6 N D FLOPs (forward and backward), not 2 N D",
            lambda *a: _days(*a, flops=2),
        ),
        Mistake(
            "you used // (floor division) and lost the fraction of a day: use /",
            lambda *a: float(math.floor(_days(*a))),
        ),
    ]


def _days_cases(s: Session) -> list[tuple]:
    r = s.rng
    cases: list[tuple] = []
    if not s.hidden:
        cases.append((175_000_000_000, 300_000_000_000, 1024, 312e12, 0.4))
    cases += [
        (
            r.randint(10**9, 10**11),
            r.randint(10**11, 10**13),
            r.choice([64, 256, 1000, 2048]),
            r.choice([125e12, 312e12, 989e12]),
            round(r.uniform(0.2, 0.6), 3),
        ),
        (float(r.randint(100, 900)) * 1e6, float(r.randint(1, 9)) * 1e10, 8, 312e12, 0.45),
    ]
    return cases


def grade_training_days(s: Session) -> None:
    s.error_hints = [
        ("unsupported operand", "Use plain Python arithmetic on the numbers you are given."),
    ]
    for args in _days_cases(s):
        out = s.call(*args)
        kind, expected = reference_answer(
            _NumberOut(rtol=_NUMBER_RTOL, atol=0.0, what="number of days"),
            training_ref.training_days,
            *args,
        )
        verify(
            s,
            out,
            kind,
            expected,
            mistakes=_days_mistakes(),
            properties=[_positive("number of days")],
        )


# ------------------------------------------------------------------------------------------------
# kv_cache_bytes
# ------------------------------------------------------------------------------------------------


def _kv(L, H, D, T, B, nbytes=2, *, factor=2):
    return factor * L * H * D * T * B * nbytes


def _kv_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "you counted the keys only: the cache holds keys *and* values, a factor of 2",
            lambda *a: _kv(*a, factor=1),
        ),
        Mistake(
            "that is bits, not bytes: bytes_per_value is already in bytes (do not multiply by 8)",
            lambda *a: 8 * _kv(*a),
        ),
        Mistake(
            "you forgot the layers: every one of the n_layers blocks keeps its own keys and values",
            lambda L, *a: _kv(1, *a),
        ),
        Mistake(
            "you forgot the batch: each of the batch_size sequences has its own cache",
            lambda L, H, D, T, B, *n: _kv(L, H, D, T, 1, *n),
        ),
        Mistake(
            "you forgot the sequence length: every cached position stores a key and a value",
            lambda L, H, D, T, B, *n: _kv(L, H, D, 1, B, *n),
        ),
        Mistake(
            "you counted values, not bytes: multiply by bytes_per_value",
            lambda *a: _kv(*a[:5], 1),
        ),
        Mistake(
            "you ignored the bytes_per_value argument (hard-coded 2?): multiply by the "
            "bytes_per_value you are given",
            lambda *a: _kv(*a[:5], 2),
        ),
        Mistake(
            "you forgot the key/value heads: each of the n_kv_heads heads stores head_dim numbers "
            "per position",
            lambda L, H, D, T, B, *n: _kv(L, 1, D, T, B, *n),
        ),
    ]


def _kv_cases(s: Session) -> list[tuple]:
    r = s.rng
    cases: list[tuple] = []
    if not s.hidden:
        cases += [
            (1, 1, 1, 1, 1),
            (30, 3, 64, 8192, 1),  # SmolLM2-135M at its full context, default bf16
            (80, 8, 128, 4096, 8, 1),  # 8-bit cache
            (80, 8, 128, 131_072, 1024, 2),  # about 4.4e16 bytes: beyond float's exact 2**53
        ]
    cases += [
        (
            r.randint(2, 40),
            r.randint(2, 8),
            r.choice([32, 64, 128]),
            r.randint(100, 9000),
            r.randint(2, 16),
        ),
        (
            r.randint(2, 80),
            r.randint(2, 16),
            r.choice([64, 128]),
            r.randint(10**4, 10**6),
            r.randint(100, 4000),
            r.choice([1, 8]),  # 8-bit or float64 (not 4: half of it looks like keys only)
        ),
    ]
    return cases


def grade_kv_cache_bytes(s: Session) -> None:
    for args in _kv_cases(s):
        out = s.call(*args)
        verify(s, out, _ExactIntOut(), attention_ref.kv_cache_bytes(*args), mistakes=_kv_mistakes())


# ------------------------------------------------------------------------------------------------
# attention_entropy
# ------------------------------------------------------------------------------------------------


def _plogp(w: Tensor) -> Tensor:
    return torch.special.xlogy(w, w)


def _entropy_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "0 * log 0 gave NaN for the masked keys (weight exactly 0): their term must be 0; use "
            "torch.special.xlogy(w, w), or torch.where(w > 0, w * torch.log(w), 0.0)",
            lambda w: -(w * torch.log(w)).sum(-1),
        ),
        Mistake(
            "you used log2 (entropy in bits); the course uses the natural log (nats): torch.log",
            lambda w: -_plogp(w).sum(-1) / math.log(2),
        ),
        Mistake(
            "you used log10; the course uses the natural log (nats): torch.log",
            lambda w: -_plogp(w).sum(-1) / math.log(10),
        ),
        Mistake(
            "entropy is -sum(w log w): you forgot the minus sign (log w <= 0, so yours is <= 0)",
            lambda w: _plogp(w).sum(-1),
        ),
        Mistake(
            "you took the mean over the keys; the entropy is the *sum* of -w log w over the last "
            "dim",
            lambda w: -_plogp(w).mean(-1),
        ),
        Mistake(
            "you summed over the queries (dim=-2); sum over the keys, the last dim: .sum(dim=-1)",
            lambda w: -_plogp(w).sum(-2),
        ),
        Mistake(
            "you summed over the first dim; sum over the keys, the last dim: .sum(dim=-1)",
            lambda w: -_plogp(w).sum(0),
        ),
        Mistake(
            "you summed over everything; return one entropy per row: .sum(dim=-1)",
            lambda w: -_plogp(w).sum(),
        ),
        Mistake(
            "the weights are already probabilities: do not apply softmax to them again",
            lambda w: -_plogp(torch.softmax(w, -1)).sum(-1),
        ),
    ]


def _causal_weights(s: Session, *shape: int) -> Tensor:
    T = shape[-1]
    scores = s.randn(*shape, scale=2.0)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    return scores.masked_fill(~mask, float("-inf")).softmax(-1)  # exact zeros above the diagonal


def _entropy_cases(s: Session) -> list[Tensor]:
    r = s.rng
    cases = []
    if not s.hidden:
        cases.append(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25] * 4, [0.5, 0.5, 0.0, 0.0]]))
    T = r.randint(4, 9)
    sparse = s.randn(r.randint(2, 4), T + r.randint(1, 4), scale=3.0)
    sparse = sparse.masked_fill(torch.rand(sparse.shape, generator=s.gen) < 0.4, float("-inf"))
    sparse[:, 0] = 0.0  # every row keeps one key
    cases += [
        _causal_weights(s, r.randint(2, 4), T, T),  # (H, T, T): square, as in a real model
        _causal_weights(s, 2, 3, T, T),  # (B, H, T, T)
        sparse.softmax(-1),  # (Tq, Tk) with Tq != Tk and zeros anywhere
    ]
    return cases


def _no_nan(value: Tensor) -> str | None:
    if value.isnan().any():
        return "your entropies contain NaN: a weight of exactly 0 must contribute 0 (0 * log 0 = 0)"
    return None


def _non_negative(value: Tensor) -> str | None:
    if (value < -1e-6).any():
        return f"your entropies include {float(value.min()):.4g}; an entropy is never negative"
    return None


def grade_attention_entropy(s: Session) -> None:
    s.inplace_hint = (
        "Do not clamp or modify weights in place (weights.clamp_(...)); make a new tensor."
    )
    for w in _entropy_cases(s):
        out = s.call(w)
        kind, expected = reference_answer(
            TensorOut(tuple(w.shape[:-1]), "float", rtol=1e-5, atol=1e-6, what="entropies"),
            ref.attention_entropy,
            w,
        )
        verify(
            s,
            out,
            kind,
            expected,
            mistakes=_entropy_mistakes(),
            properties=[_no_nan, _non_negative],
        )


# ------------------------------------------------------------------------------------------------
# logit_lens
# ------------------------------------------------------------------------------------------------


def _lens(h, w, u, eps=1e-5, *, how="rms", weight=True, transpose=True):
    h = h.double()
    if how == "rms":
        n = h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    elif how == "eps_outside":
        n = h / (torch.sqrt(h.pow(2).mean(-1, keepdim=True)) + eps)
    elif how == "layer":
        c = h - h.mean(-1, keepdim=True)
        n = c / torch.sqrt(c.pow(2).mean(-1, keepdim=True) + eps)
    elif how == "l2":
        n = h / torch.sqrt(h.pow(2).sum(-1, keepdim=True) + eps)
    else:  # no norm
        n = h
    if weight:
        n = n * w.double()
    return n @ (u.double().T if transpose else u.double())


def _lens_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "you skipped the final norm: the unembedding expects normalised vectors, so apply "
            "rms_norm(hidden, norm_weight, eps) first",
            lambda h, w, u, eps=1e-5: _lens(h, w, u, eps, how="none"),
        ),
        Mistake(
            "you skipped the final norm (and its weight): apply rms_norm(hidden, norm_weight, eps) "
            "before the unembedding",
            lambda h, w, u, eps=1e-5: _lens(h, w, u, eps, how="none", weight=False),
        ),
        Mistake(
            "that is LayerNorm (mean subtracted); SmolLM2's final norm is RMSNorm: "
            "hidden / sqrt(mean(hidden**2) + eps), no mean subtracted",
            lambda h, w, u, eps=1e-5: _lens(h, w, u, eps, how="layer"),
        ),
        Mistake(
            "eps belongs inside the square root: hidden / sqrt(mean(hidden**2) + eps)",
            lambda h, w, u, eps=1e-5: _lens(h, w, u, eps, how="eps_outside"),
        ),
        Mistake(
            "you forgot the norm's weight: multiply the normalised hidden state by norm_weight",
            lambda h, w, u, eps=1e-5: _lens(h, w, u, eps, weight=False),
        ),
        Mistake(
            "unembed is (V, C) in the nn.Linear layout: multiply by unembed.T, not unembed",
            lambda h, w, u, eps=1e-5: _lens(h, w, u, eps, transpose=False),
        ),
        Mistake(
            "you divided by the L2 norm (sum of squares); RMSNorm uses the *mean* of the squares",
            lambda h, w, u, eps=1e-5: _lens(h, w, u, eps, how="l2"),
        ),
        Mistake(
            "you ignored the eps argument: use the eps you are given, inside the square root",
            lambda h, w, u, eps=1e-5: _lens(h, w, u, 1e-5),
        ),
        Mistake(
            "you ignored the eps argument: use the eps you are given, inside the square root",
            lambda h, w, u, eps=1e-5: _lens(h, w, u, 1e-6),
        ),
        Mistake(
            "you ignored the eps argument: use the eps you are given, inside the square root",
            lambda h, w, u, eps=1e-5: _lens(h, w, u, 0.0),
        ),
    ]


def _lens_cases(s: Session) -> list[tuple]:
    r = s.rng
    C = r.choice([8, 12, 16])
    V = C + r.randint(5, 30)

    def hidden(*shape: int, scale: float) -> Tensor:
        offset = s.randn(*shape[:-1], 1, scale=scale)  # row means far from 0: LayerNorm differs
        return s.randn(*shape, scale=scale) + offset

    def weight(C: int) -> Tensor:
        return 0.5 + torch.rand(C, generator=s.gen) * 2

    cases: list[tuple] = []
    if not s.hidden:
        cases.append((torch.tensor([[3.0, 4.0]]), torch.tensor([1.0, 2.0]), torch.eye(2)))
    cases += [
        (hidden(2, 3, C, scale=1.0), weight(C), s.randn(V, C)),
        (hidden(4, C, scale=0.005), weight(C), s.randn(V, C)),  # small: eps matters
        (hidden(3, C, scale=1.0), weight(C), s.randn(C, C)),  # V == C: a transpose shows
        (hidden(2, 2, C, scale=0.1), weight(C), s.randn(V, C), 1e-2),  # eps given
    ]
    return cases


def grade_logit_lens(s: Session) -> None:
    hint = (
        "unembed is (V, C) in the nn.Linear layout: multiply by unembed.T, not unembed (logits "
        "= normalised_hidden @ unembed.T)"
    )
    s.error_hints = [
        ("cannot be multiplied", hint),
        ("size mismatch", hint),
        ("must match the size of tensor", "norm_weight has one value per channel: (C,)"),
    ]
    s.inplace_hint = "Do not normalise hidden in place (hidden /= ...); compute a new tensor."
    for args in _lens_cases(s):
        out = s.call(*args)
        h, u = args[0], args[2]
        kind, expected = reference_answer(
            TensorOut((*h.shape[:-1], u.shape[0]), "float", rtol=1e-5, atol=1e-6, what="logits"),
            ref.logit_lens,
            *args,
        )
        verify(s, out, kind, expected, mistakes=_lens_mistakes())
