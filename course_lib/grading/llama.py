"""Graders of notebook 08 (08-modern-llms): RMSNorm, RoPE, SwiGLU, grouped-query heads, Llama.

Runs in the referee; the answer keys are ``course_lib.functional.rms_norm``,
``course_lib.attention`` (``rope_cos_sin``, ``apply_rope``, ``repeat_kv``) and
``course_lib.llama`` (``swiglu_mlp``, ``llama_forward``), evaluated in float64. The classic
wrong versions are written out below, with switches for each mistake, so a learner whose
output equals one of them is told which one.

``rms_norm`` is also graded in bfloat16, where the order of the roundings is part of the
contract (HF's ``LlamaRMSNorm``: normalise in float32, cast back, then multiply by the weight):
the output must be within bfloat16 rounding of the exact answer, and rounded like HF's in all
but a few entries (a correct float32 computation differs from ours only where its last float32
bit lands on a bfloat16 rounding boundary; a wrong order changes about a quarter of them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib import attention as ref_attention
from course_lib import functional as ref_functional
from course_lib import llama as ref_llama
from course_lib.grading._harness import (
    Mistake,
    PairOut,
    Session,
    TensorOut,
    earlier_positions_unchanged,
    mistake_maker,
    reference_answer,
    tensors_same,
    verify,
)

# ------------------------------------------------------------------------------------------------
# rms_norm
# ------------------------------------------------------------------------------------------------


@dataclass
class _RoundedOut(TensorOut):
    """A bfloat16 output: close to the exact answer and rounded as HF rounds, but for a few entries."""

    max_changed: float = 0.03  # fraction of entries allowed to round the other way

    def check_type(self, value: Any) -> str | None:
        message = super().check_type(value)
        if message is None and value.dtype != torch.bfloat16:
            return (
                f"your output has dtype {value.dtype}, but x and weight are bfloat16 and HF's "
                "LlamaRMSNorm returns bfloat16: normalise in float32, cast back with "
                ".to(x.dtype), then multiply by weight"
            )
        return message

    def _changed(self, a: Tensor, b: Tensor) -> int:
        return int((a.double() != b.double()).sum())

    def same(self, a: Any, b: Any) -> bool:
        if not super().same(a, b):
            return False
        return self._changed(a, b) <= self.max_changed * a.numel()

    def mismatch(self, a: Any, b: Any) -> str:
        if not super().same(a, b):
            return super().mismatch(a, b)
        return (
            f"{self._changed(a, b)} of {a.numel()} entries of your bfloat16 output are rounded "
            "differently from HF's LlamaRMSNorm: compute the normalisation in float32 "
            "(h = x.float()), cast it back (h.to(x.dtype)), and only then multiply by weight"
        )


def _ms(x: Tensor) -> Tensor:
    return x.pow(2).mean(-1, keepdim=True)


def _rms_mistakes() -> list[Mistake]:
    def m(message: str, fn: Any) -> Mistake:
        return Mistake(message, lambda x, w, eps=1e-6: fn(x, w, eps))

    return [
        m(
            "you subtracted the mean: that is LayerNorm. RMSNorm divides x itself by "
            "sqrt(mean(x^2) + eps), no mean subtracted",
            lambda x, w, eps: (
                w
                * (x - x.mean(-1, keepdim=True))
                / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps)
            ),
        ),
        m(
            "you divided by the standard deviation (x.var or x.std subtract the mean): RMSNorm "
            "uses the root mean square, sqrt(mean(x^2) + eps)",
            lambda x, w, eps: w * x / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps),
        ),
        m(
            "you divided by the standard deviation (x.var or x.std subtract the mean): RMSNorm "
            "uses the root mean square, sqrt(mean(x^2) + eps)",
            lambda x, w, eps: w * x / torch.sqrt(x.var(-1, keepdim=True) + eps),
        ),
        m(
            "eps belongs inside the square root: x / sqrt(mean(x^2) + eps), not "
            "x / (sqrt(mean(x^2)) + eps)",
            lambda x, w, eps: w * x / (torch.sqrt(_ms(x)) + eps),
        ),
        m(
            "you left out eps: x / sqrt(mean(x^2) + eps)",
            lambda x, w, eps: w * x / torch.sqrt(_ms(x)),
        ),
        m(
            "divide by the root of the mean of x^2 over the last dim, not of the sum: "
            "x.pow(2).mean(-1, keepdim=True)",
            lambda x, w, eps: w * x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps),
        ),
        m(
            "the mean of x^2 is over the last dim only (each token is normalised on its own): "
            "x.pow(2).mean(-1, keepdim=True)",
            lambda x, w, eps: w * x / torch.sqrt(x.pow(2).mean() + eps),
        ),
        m(
            "you forgot the weight: return weight * (x / sqrt(mean(x^2) + eps))",
            lambda x, w, eps: x / torch.sqrt(_ms(x) + eps),
        ),
        m(
            "Llama multiplies by weight, not by (1 + weight) (that is Gemma's RMSNorm)",
            lambda x, w, eps: (1 + w) * x / torch.sqrt(_ms(x) + eps),
        ),
        m(
            "you divided by mean(x^2) + eps without the square root: x / sqrt(mean(x^2) + eps)",
            lambda x, w, eps: w * x / (_ms(x) + eps),
        ),
    ]


def _rms_order_mistakes() -> list[Mistake]:
    """Wrong orders of the roundings, visible only in half precision."""

    def weight_first(x: Tensor, w: Tensor, eps: float = 1e-6) -> Tensor:
        h = x.float()
        return (w.float() * h * torch.rsqrt(_ms(h) + eps)).to(x.dtype)

    def no_upcast(x: Tensor, w: Tensor, eps: float = 1e-6) -> Tensor:
        return w * (x * torch.rsqrt(_ms(x) + eps))

    return [
        Mistake(
            "you multiplied by weight before casting back to x.dtype: as HF's LlamaRMSNorm, "
            "normalise in float32, cast back (h.to(x.dtype)), then return weight * h",
            weight_first,
        ),
        Mistake(
            "you normalised in bfloat16: upcast first (h = x.float()), normalise, cast back "
            "with h.to(x.dtype), then multiply by weight",
            no_upcast,
        ),
    ]


def _rms_cases(s: Session) -> list[tuple[tuple, torch.dtype]]:
    """(args, dtype) with the float32 cases first; args leave eps out to test its default."""
    r = s.rng
    C = r.choice([8, 12, 16]) if s.hidden else 8
    cases: list[tuple[tuple, torch.dtype]] = []
    if not s.hidden:
        cases.append(
            ((torch.tensor([[3.0, 4.0], [1.0, -1.0]]), torch.tensor([1.0, 2.0])), torch.float32)
        )
    w = 1 + 0.5 * s.randn(C)
    cases += [
        ((s.randn(2, 3, C, scale=2.0), w), torch.float32),
        ((s.randn(4, C, scale=1e-3), 1 + 0.5 * s.randn(C)), torch.float32),  # eps matters here
        ((s.randn(2, 5, 2 * C), 1 + 0.5 * s.randn(2 * C), r.choice([0.1, 0.5])), torch.float32),
        ((s.randn(C), w, 1e-5), torch.float32),
    ]
    for shape in [(3, 5, 64), (2, 4, 96)]:
        x = s.randn(*shape, scale=2.0).to(torch.bfloat16)
        weight = (1 + 0.5 * s.randn(shape[-1])).to(torch.bfloat16)
        cases.append(((x, weight) if shape[-1] == 64 else (x, weight, 1e-5), torch.bfloat16))
    return cases


def grade_rms_norm(s: Session) -> None:
    s.inplace_hint = "Do not normalise x in place (x /= ...); compute a new tensor."
    for args, dtype in _rms_cases(s):
        x = args[0]
        out = s.call(*args)
        if dtype == torch.float32:
            kind, expected = reference_answer(
                TensorOut(tuple(x.shape), "float", rtol=1e-5, atol=1e-6),
                ref_functional.rms_norm,
                *args,
            )
            verify(s, out, kind, expected, mistakes=_rms_mistakes())
            continue
        kind, _ = reference_answer(
            _RoundedOut(tuple(x.shape), "float", rtol=0.0, atol=0.0),
            ref_functional.rms_norm,
            *args,
            dtype=torch.bfloat16,
        )
        expected = ref_functional.rms_norm(*args)  # in bfloat16: HF's order of roundings
        verify(s, out, kind, expected, mistakes=_rms_order_mistakes())


# ------------------------------------------------------------------------------------------------
# rope_cos_sin
# ------------------------------------------------------------------------------------------------


def _rope_exact(positions: Tensor, head_dim: int, theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """The reference computed in ``positions``' floating dtype (float64 for the answer)."""
    return ref_attention.rope_cos_sin(positions, head_dim, theta, dtype=positions.dtype)


def _rope(
    positions: Tensor,
    D: int,
    theta: float = 10000.0,
    *,
    layout: str = "half",
    exponent: str = "2i/D",
    swap: bool = False,
    sign: int = -1,
    use_positions: bool = True,
) -> tuple[Tensor, Tensor]:
    """rope_cos_sin with switches for the classic mistakes (all defaults: the right answer)."""
    pos = positions.double() if use_positions else torch.arange(positions.shape[-1]).double()
    i = torch.arange(D // 2, dtype=torch.float64)
    power = {"2i/D": 2 * i / D, "i/D": i / D, "2i/(D-2)": 2 * i / max(D - 2, 1)}[exponent]
    inv_freq = theta ** (sign * power)
    freqs = pos[:, None] * inv_freq  # (T, D/2)
    if layout == "half":
        angles = torch.cat((freqs, freqs), -1)
    elif layout == "interleaved":
        angles = freqs.repeat_interleave(2, -1)
    elif layout == "arange_D":  # arange(D) / D: D angles, no duplication
        angles = pos[:, None] * theta ** (-torch.arange(D, dtype=torch.float64) / D)
    else:  # "single": not duplicated
        angles = freqs
    cos, sin = angles.cos(), angles.sin()
    return (sin, cos) if swap else (cos, sin)


def _rope_mistakes() -> list[Mistake]:
    def m(message: str, **flags: Any) -> Mistake:
        return Mistake(message, lambda p, D, theta=10000.0: _rope(p, D, theta, **flags))

    return [
        m(
            "you repeated each frequency in place (f0, f0, f1, f1, ...): that is the interleaved "
            "layout. Hugging Face's half-split layout concatenates, cat((freqs, freqs), -1)",
            layout="interleaved",
        ),
        m(
            "inv_freq uses the even exponents: theta ** (-arange(0, D, 2) / D) (D/2 frequencies), "
            "then cat((freqs, freqs), -1); you used arange(D) / D",
            layout="arange_D",
        ),
        m(
            "inv_freq uses the even exponents 2i/D: theta ** (-arange(0, D, 2) / D); you used "
            "i/D (arange(D // 2) / D)",
            exponent="i/D",
        ),
        m(
            "your cos and sin hold D/2 angles: duplicate them, angles = cat((freqs, freqs), -1), "
            "so each is (T, D)",
            layout="single",
        ),
        m("return (cos, sin) in that order: you returned (sin, cos)", swap=True),
        m(
            "the frequencies are 1 / theta ** (2i / D) (they shrink with i): you used "
            "theta ** (2i / D) without the inverse",
            sign=1,
        ),
        m(
            "use the given positions (they need not start at 0 or be consecutive): freqs = "
            "positions[:, None] * inv_freq",
            use_positions=False,
        ),
    ]


def _rope_cases(s: Session) -> list[tuple]:
    r = s.rng
    if not s.hidden:
        return [
            (torch.arange(4), 4),
            (torch.arange(6), 8, 100.0),
            (torch.arange(5, 12), 16, 100000.0),
            (torch.tensor([0, 3, 7, 100, 2047]), 8, 500.0),
        ]
    T = r.randint(3, 7)
    return [
        (torch.arange(T), r.choice([4, 6, 8])),
        (
            torch.arange(T) + r.randint(1, 50),
            r.choice([8, 12, 16]),
            r.choice([100.0, 10000.0, 100000.0]),
        ),
        (s.randint(0, 2048, r.randint(3, 6)), r.choice([8, 16]), r.choice([500.0, 10000.0])),
    ]


def grade_rope_cos_sin(s: Session) -> None:
    s.error_hints = [
        (
            "must match the size of tensor",
            "Broadcast positions (T,) against inv_freq (D/2,) with positions[:, None] * inv_freq.",
        )
    ]
    for args in _rope_cases(s):
        out = s.call(*args)
        T, D = args[0].shape[0], args[1]
        kind = PairOut(
            TensorOut((T, D), "float", rtol=1e-5, atol=1e-5, what="cos"),
            TensorOut((T, D), "float", rtol=1e-5, atol=1e-5, what="sin"),
        )
        kind, expected = reference_answer(kind, _rope_exact, args[0].double(), *args[1:])
        verify(s, out, kind, expected, mistakes=_rope_mistakes())


# ------------------------------------------------------------------------------------------------
# apply_rope
# ------------------------------------------------------------------------------------------------


def _halves(x: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    return x.chunk(2, dim=dim)


def _rotated(
    x: Tensor, cos: Tensor, sin: Tensor, *, how: str = "right", swap: bool = False
) -> Tensor:
    """apply_rope with switches for the classic mistakes (defaults: the right answer)."""
    if how == "right":
        x1, x2 = _halves(x)
        rot = torch.cat((-x2, x1), -1)
    elif how == "sign":
        x1, x2 = _halves(x)
        rot = torch.cat((x2, -x1), -1)
    elif how == "no_sign":
        x1, x2 = _halves(x)
        rot = torch.cat((x2, x1), -1)
    elif how == "interleaved":
        rot = torch.stack((-x[..., 1::2], x[..., ::2]), -1).flatten(-2)
    elif how == "none":
        rot = x
    elif how == "dim0":
        x1, x2 = _halves(x, 0)
        rot = torch.cat((-x2, x1), 0)
    else:
        raise ValueError(how)
    if swap:
        cos, sin = sin, cos
    return x * cos + rot * sin


def _apply_rope_mistakes() -> list[Mistake]:
    m = mistake_maker(_rotated)

    return [
        m(
            "rotate_half has the sign on the wrong half: rotate_half(x) = cat((-x2, x1), -1) "
            "(and x * cos + rotate_half(x) * sin, a plus)",
            how="sign",
        ),
        m(
            "rotate_half needs a minus: cat((-x2, x1), -1), a 90-degree turn of each pair",
            how="no_sign",
        ),
        m(
            "you rotated adjacent channels (2i, 2i+1): that is the interleaved layout. Hugging "
            "Face pairs channel i with channel i + D/2: rotate_half(x) = cat((-x2, x1), -1) with "
            "x1, x2 = x.chunk(2, dim=-1)",
            how="interleaved",
        ),
        m("sin and cos are swapped: x * cos + rotate_half(x) * sin", swap=True),
        m(
            "you used x where rotate_half(x) belongs: x * cos + rotate_half(x) * sin with "
            "rotate_half(x) = cat((-x2, x1), -1)",
            how="none",
        ),
        m(
            "split the last dim into halves (x.chunk(2, dim=-1)): without dim=-1, chunk splits "
            "the batch",
            how="dim0",
        ),
    ]


def _apply_rope_cases(s: Session) -> list[tuple[Tensor, Tensor, Tensor]]:
    r = s.rng
    if not s.hidden:
        shapes = [
            ((1, 1, 2, 4), 0, 10000.0),
            ((2, 3, 5, 8), 0, 100.0),
            ((2, 2, 4, 16), 9, 100000.0),
        ]
    else:
        shapes = [
            ((2, r.randint(1, 3), r.randint(2, 6), r.choice([4, 8])), r.randint(0, 20), 10000.0),
            ((2, r.randint(2, 4), r.randint(3, 6), r.choice([8, 16])), r.randint(0, 500), 100.0),
        ]
    cases = []
    for shape, start, theta in shapes:
        cos, sin = ref_attention.rope_cos_sin(
            torch.arange(start, start + shape[2]), shape[3], theta
        )
        cases.append((s.randn(*shape), cos, sin))
    return cases


def grade_apply_rope(s: Session) -> None:
    s.error_hints = [
        (
            "not enough values to unpack",
            "Split the last dim into two halves: x1, x2 = x.chunk(2, dim=-1).",
        ),
        (
            "must match the size of tensor",
            "cos and sin are (T, D) and broadcast against x (B, H, T, D): rotate_half(x) must keep "
            "x's shape, cat((-x2, x1), dim=-1).",
        ),
    ]
    s.inplace_hint = "Do not rotate x in place; compute a new tensor."
    for x, cos, sin in _apply_rope_cases(s):
        out = s.call(x, cos, sin)

        def keeps_length(y: Tensor, x: Tensor = x) -> str | None:
            if y.shape != x.shape:
                return None
            if not torch.allclose(
                y.double().norm(dim=-1), x.double().norm(dim=-1), rtol=1e-4, atol=1e-5
            ):
                return (
                    "RoPE is a rotation, so it keeps the length of every vector, and yours changes "
                    "it: x * cos + rotate_half(x) * sin with rotate_half(x) = cat((-x2, x1), -1)"
                )
            return None

        kind, expected = reference_answer(
            TensorOut(tuple(x.shape), "float", rtol=1e-5, atol=1e-6),
            ref_attention.apply_rope,
            x,
            cos,
            sin,
        )
        verify(s, out, kind, expected, mistakes=_apply_rope_mistakes(), properties=[keeps_length])


# ------------------------------------------------------------------------------------------------
# swiglu_mlp
# ------------------------------------------------------------------------------------------------


def _swiglu(
    x: Tensor,
    w_gate: Tensor,
    w_up: Tensor,
    w_down: Tensor,
    *,
    act: str = "silu",
    on: str = "gate",
    t_gate: bool = True,
    t_down: bool = True,
    after: bool = False,
) -> Tensor:
    """swiglu_mlp with switches for the classic mistakes (defaults: the right answer)."""
    f = {
        "silu": F.silu,
        "gelu": F.gelu,
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "relu": F.relu,
        "sigmoid": torch.sigmoid,
        "none": lambda t: t,
    }[act]
    gate = x @ (w_gate.T if t_gate else w_gate)
    up = x @ (w_up.T if t_gate else w_up)
    if after:
        h = f(gate * up)
    elif on == "gate":
        h = f(gate) * up
    elif on == "up":
        h = gate * f(up)
    else:  # "no_up": the up projection left out
        h = f(gate)
    return h @ (w_down.T if t_down else w_down)


def _swiglu_mistakes() -> list[Mistake]:
    m = mistake_maker(_swiglu)

    return [
        m(
            "silu goes on the gate, not on the up projection: silu(x @ w_gate.T) * (x @ w_up.T)",
            on="up",
        ),
        m("the activation is SiLU (x * sigmoid(x)), not GELU: F.silu(x @ w_gate.T)", act="gelu"),
        m(
            "the activation is SiLU (x * sigmoid(x)), not GELU: F.silu(x @ w_gate.T)",
            act="gelu_tanh",
        ),
        m("the activation is SiLU (x * sigmoid(x)), not ReLU", act="relu"),
        m(
            "SiLU is x * sigmoid(x), not sigmoid(x) alone: F.silu(t) or t * torch.sigmoid(t)",
            act="sigmoid",
        ),
        m("you left out the activation: silu(x @ w_gate.T) * (x @ w_up.T)", act="none"),
        m(
            "the gate multiplies the up projection: silu(x @ w_gate.T) * (x @ w_up.T), then "
            "@ w_down.T",
            on="no_up",
        ),
        m(
            "silu goes on the gate alone, before the product: silu(x @ w_gate.T) * (x @ w_up.T)",
            after=True,
        ),
        m(
            "the weights use the nn.Linear layout (d_out, d_in): x @ w_gate.T and x @ w_up.T, "
            "with the transpose",
            t_gate=False,
        ),
        m(
            "w_down uses the nn.Linear layout (C, F) too: finish with h @ w_down.T",
            t_down=False,
        ),
        m(
            "the weights use the nn.Linear layout (d_out, d_in): transpose all three, x @ "
            "w_gate.T, x @ w_up.T and h @ w_down.T",
            t_gate=False,
            t_down=False,
        ),
    ]


def _swiglu_sizes(s: Session) -> list[tuple[tuple[int, ...], int, int]]:
    if not s.hidden:
        return [((2, 5, 8), 8, 8), ((2, 3, 4), 4, 6), ((3, 6), 6, 10)]  # (x shape, C, F)
    r = s.rng
    C = r.choice([4, 6, 8])
    return [
        ((r.randint(1, 3), r.randint(2, 5), C), C, r.choice([C + 2, 2 * C])),
        ((r.randint(2, 4), C), C, C),
    ]


def grade_swiglu_mlp(s: Session) -> None:
    s.error_hints = [
        (
            "cannot be multiplied",
            "The weights use the nn.Linear layout (d_out, d_in): x @ w_gate.T, x @ w_up.T, and "
            "h @ w_down.T.",
        )
    ]
    s.inplace_hint = "Do not change x or the weights in place; compute new tensors."
    for shape, C, Fw in _swiglu_sizes(s):
        x = s.randn(*shape)
        w_gate, w_up = s.randn(Fw, C, scale=1.5 * C**-0.5), s.randn(Fw, C, scale=1.5 * C**-0.5)
        w_down = s.randn(C, Fw, scale=Fw**-0.5)
        out = s.call(x, w_gate, w_up, w_down)
        kind, expected = reference_answer(
            TensorOut(shape, "float", rtol=1e-5, atol=1e-6),
            ref_llama.swiglu_mlp,
            x,
            w_gate,
            w_up,
            w_down,
        )
        verify(s, out, kind, expected, mistakes=_swiglu_mistakes())


# ------------------------------------------------------------------------------------------------
# repeat_kv
# ------------------------------------------------------------------------------------------------


def _repeat_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "you tiled the heads (0, 1, 0, 1, ...): key/value head j must serve the neighbouring "
            "query heads j*n_rep .. (j+1)*n_rep - 1, so repeat each head in place: (0, 0, 1, 1, "
            "...), e.g. torch.repeat_interleave(x, n_rep, dim=1)",
            lambda x, n: x.repeat(1, n, 1, 1),
        ),
        Mistake(
            "you repeated along time (dim 2): repeat the heads, dim=1 of (B, H_kv, T, D)",
            lambda x, n: x.repeat_interleave(n, dim=2),
        ),
        Mistake(
            "you repeated along the batch (dim 0): repeat the heads, dim=1 of (B, H_kv, T, D)",
            lambda x, n: x.repeat_interleave(n, dim=0),
        ),
        Mistake(
            "you repeated along the channels (last dim): repeat the heads, dim=1 of (B, H_kv, T, D)",
            lambda x, n: x.repeat_interleave(n, dim=-1),
        ),
        Mistake(
            "you returned (B, H_kv, n_rep, T, D): merge the two head dims with .reshape(B, H_kv * "
            "n_rep, T, D)",
            lambda x, n: x[:, :, None].expand(-1, -1, n, -1, -1),
        ),
        Mistake(
            "you returned (B, n_rep, H_kv, T, D) tiled: key/value head j serves query heads j*n_rep "
            ".. (j+1)*n_rep - 1; use torch.repeat_interleave(x, n_rep, dim=1)",
            lambda x, n: x[:, None].expand(-1, n, -1, -1, -1),
        ),
    ]


def grade_repeat_kv(s: Session) -> None:
    s.inplace_hint = "Do not change x in place; return a new tensor (or x itself when n_rep is 1)."
    if not s.hidden:
        sizes = [((1, 2, 3, 4), 2), ((2, 3, 4, 2), 3), ((1, 1, 3, 4), 4), ((2, 2, 3, 4), 1)]
    else:
        r = s.rng
        sizes = [
            (
                (r.randint(1, 2), r.randint(2, 4), r.randint(2, 5), r.choice([2, 4])),
                r.randint(2, 4),
            ),
            ((2, r.randint(2, 3), r.randint(2, 4), 4), 1),
        ]
    for shape, n_rep in sizes:
        x = s.randn(*shape)
        out = s.call(x, n_rep)
        B, H_kv, T, D = shape
        verify(
            s,
            out,
            TensorOut((B, H_kv * n_rep, T, D), "float", exact=True),
            x.repeat_interleave(n_rep, dim=1),
            mistakes=_repeat_mistakes(),
        )


# ------------------------------------------------------------------------------------------------
# llama_forward
# ------------------------------------------------------------------------------------------------


def _norm(x: Tensor, w: Tensor, eps: float, kind: str = "rms") -> Tensor:
    if kind == "layer":
        return (
            w
            * (x - x.mean(-1, keepdim=True))
            / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps)
        )
    return w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _llama(
    input_ids: Tensor,
    params: dict[str, Tensor],
    config: dict,
    *,
    rope: str = "half",
    rope_v: bool = False,
    theta: float | None = None,
    gqa: str = "interleave",
    tie: str = "auto",
    eps: float | None = None,
    norm: str = "rms",
    final_norm: bool = True,
    post_norm: bool = False,
    causal: bool = True,
    scale: str = "D",
    act: str = "silu",
    residual: bool = True,
) -> Tensor:
    """llama_forward with switches for the classic mistakes (all defaults: the right answer)."""
    H, H_kv = config["num_attention_heads"], config["num_key_value_heads"]
    eps = config["rms_norm_eps"] if eps is None else eps
    theta = config["rope_theta"] if theta is None else theta
    emb = params["model.embed_tokens.weight"]
    C = emb.shape[1]
    D = C // H
    B, T = input_ids.shape
    L = len({k.split(".")[2] for k in params if k.startswith("model.layers.")})
    cos, sin = _rope(torch.arange(T), D, theta)
    cos, sin = cos.to(emb.dtype), sin.to(emb.dtype)

    def rot(t: Tensor) -> Tensor:
        if rope == "none":
            return t
        return _rotated(t, cos, sin, how="right" if rope == "half" else "interleaved")

    x = emb[input_ids]
    for i in range(L):
        p = {k.split(".", 3)[3]: v for k, v in params.items() if k.startswith(f"model.layers.{i}.")}
        h = x if post_norm else _norm(x, p["input_layernorm.weight"], eps, norm)
        q = (h @ p["self_attn.q_proj.weight"].T).view(B, T, H, D).transpose(1, 2)
        k = (h @ p["self_attn.k_proj.weight"].T).view(B, T, H_kv, D).transpose(1, 2)
        v = (h @ p["self_attn.v_proj.weight"].T).view(B, T, H_kv, D).transpose(1, 2)
        q, k = rot(q), rot(k)
        if rope_v:
            v = rot(v)
        n = H // H_kv
        if gqa == "interleave":
            k, v = k.repeat_interleave(n, 1), v.repeat_interleave(n, 1)
        else:
            k, v = k.repeat(1, n, 1, 1), v.repeat(1, n, 1, 1)
        s = q @ k.transpose(-2, -1) / {"D": math.sqrt(D), "C": math.sqrt(C), "none": 1.0}[scale]
        if causal:
            s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        y = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, T, H * D)
        a = y @ p["self_attn.o_proj.weight"].T
        x = (
            _norm(x + a, p["input_layernorm.weight"], eps, norm)
            if post_norm
            else (x + a if residual else a)
        )
        h = x if post_norm else _norm(x, p["post_attention_layernorm.weight"], eps, norm)
        m = _swiglu(
            h,
            p["mlp.gate_proj.weight"],
            p["mlp.up_proj.weight"],
            p["mlp.down_proj.weight"],
            act=act,
        )
        if post_norm:
            x = _norm(x + m, p["post_attention_layernorm.weight"], eps, norm)
        else:
            x = x + m if residual else m
    if final_norm:
        x = _norm(x, params["model.norm.weight"], eps, norm)
    head = emb if tie == "embed" else params.get("lm_head.weight", emb)
    return x @ head.T


def _llama_mistakes() -> list[Mistake]:
    m = mistake_maker(_llama)

    return [
        m(
            "no RoPE: rotate the queries and keys of every layer with apply_rope(q, cos, sin) and "
            "apply_rope(k, cos, sin), cos, sin = rope_cos_sin(torch.arange(T), head_dim, "
            "config['rope_theta'])",
            rope="none",
        ),
        m(
            "RoPE is applied to queries and keys only, never to the values",
            rope_v=True,
        ),
        m(
            "your RoPE rotates adjacent channels (the interleaved layout); HF's weights expect the "
            "half-split layout: rotate_half(x) = cat((-x2, x1), -1)",
            rope="interleaved",
        ),
        m(
            "use the model's RoPE base, config['rope_theta'], not the default 10000",
            theta=10000.0,
        ),
        m(
            "grouped-query heads are repeated in place: key/value head j serves query heads "
            "j*n_rep .. (j+1)*n_rep - 1, repeat_kv(k, n_rep) = repeat_interleave(k, n_rep, dim=1), "
            "not a tiling",
            gqa="tile",
        ),
        m(
            "params holds lm_head.weight: this model's output layer is not tied, so use it (fall "
            "back to model.embed_tokens.weight only when lm_head.weight is absent)",
            tie="embed",
        ),
        m(
            "use the model's epsilon, config['rms_norm_eps'], in every RMSNorm (not 1e-6)",
            eps=1e-6,
        ),
        m(
            "use the model's epsilon, config['rms_norm_eps'], in every RMSNorm (not 1e-5)",
            eps=1e-5,
        ),
        m(
            "you left out the final norm: logits = rms_norm(x, params['model.norm.weight'], eps) "
            "@ output_weight.T",
            final_norm=False,
        ),
        m(
            "Llama is pre-norm: x = x + attn(rms_norm(x)), then x = x + mlp(rms_norm(x)); you "
            "normalised after the residual additions (post-norm, the original Transformer)",
            post_norm=True,
        ),
        m(
            "Llama uses RMSNorm (no mean subtracted, no bias), not LayerNorm",
            norm="layer",
        ),
        m(
            "no causal mask: position t must not see later tokens; mask the scores (or use "
            "is_causal=True)",
            causal=False,
        ),
        m(
            "divide the scores by sqrt(head_dim), with head_dim = hidden_size // "
            "num_attention_heads, not by sqrt(hidden_size)",
            scale="C",
        ),
        m("your scores are sqrt(head_dim) times too large: divide by sqrt(head_dim)", scale="none"),
        m("Llama's MLP is SwiGLU with SiLU, not GELU: swiglu_mlp(h, gate, up, down)", act="gelu"),
        m(
            "you dropped the residual connections: x = x + attn(...), then x = x + mlp(...)",
            residual=False,
        ),
    ]


def _llama_case(
    s: Session, V: int, H: int, H_kv: int, D: int, L: int, tied: bool
) -> tuple[dict, dict]:
    C, Fw = H * D, s.rng.choice([2 * H * D, 3 * H * D // 2])
    params = {"model.embed_tokens.weight": s.randn(V, C, scale=0.3)}
    for i in range(L):
        pre = f"model.layers.{i}."
        params.update(
            {
                pre + "input_layernorm.weight": 1 + 0.3 * s.randn(C),
                pre + "self_attn.q_proj.weight": s.randn(H * D, C, scale=1.5 * C**-0.5),
                pre + "self_attn.k_proj.weight": s.randn(H_kv * D, C, scale=1.5 * C**-0.5),
                pre + "self_attn.v_proj.weight": s.randn(H_kv * D, C, scale=C**-0.5),
                pre + "self_attn.o_proj.weight": s.randn(C, H * D, scale=(H * D) ** -0.5),
                pre + "post_attention_layernorm.weight": 1 + 0.3 * s.randn(C),
                pre + "mlp.gate_proj.weight": s.randn(Fw, C, scale=1.5 * C**-0.5),
                pre + "mlp.up_proj.weight": s.randn(Fw, C, scale=C**-0.5),
                pre + "mlp.down_proj.weight": s.randn(C, Fw, scale=Fw**-0.5),
            }
        )
    params["model.norm.weight"] = 1 + 0.3 * s.randn(C)
    if not tied:
        params["lm_head.weight"] = s.randn(V, C, scale=C**-0.5)
    config = {
        "num_attention_heads": H,
        "num_key_value_heads": H_kv,
        "rms_norm_eps": s.rng.choice([1e-2, 5e-3]),  # large enough that a wrong eps shows
        "rope_theta": s.rng.choice([100.0, 500.0, 100000.0]),
    }
    return params, config


def _llama_cases(s: Session) -> list[tuple[Tensor, dict, dict]]:
    r = s.rng
    if not s.hidden:
        specs = [
            (32, 4, 2, 4, 2, True, 2, 6),
            (40, 3, 3, 4, 1, False, 1, 5),
            (24, 6, 2, 4, 2, False, 2, 4),
        ]
    else:
        H_kv = r.choice([1, 2])
        specs = [
            (
                r.randint(20, 40),
                2 * H_kv,
                H_kv,
                r.choice([4, 8]),
                2,
                r.random() < 0.5,
                2,
                r.randint(4, 7),
            ),
            (r.randint(20, 40), 3 * H_kv, H_kv, 4, 1, False, 1, r.randint(3, 6)),
        ]
    cases = []
    for V, H, H_kv, D, L, tied, B, T in specs:
        params, config = _llama_case(s, V, H, H_kv, D, L, tied)
        cases.append((s.randint(0, V, B, T), params, config))
    return cases


def _params_unchanged(before: dict, after: Any) -> bool:
    if not isinstance(after, dict) or set(after) != set(before):
        return False
    return all(tensors_same(after[k], v, 0.0, 0.0, exact=True) for k, v in before.items())


def grade_llama_forward(s: Session) -> None:
    s.error_hints = [
        (
            "lm_head.weight",
            "params has no 'lm_head.weight' when the output layer is tied to the embeddings: use "
            "params.get('lm_head.weight', params['model.embed_tokens.weight']).",
        ),
        (
            "must match the size of tensor",
            "The keys and values have num_key_value_heads heads and the queries "
            "num_attention_heads: repeat each key/value head with repeat_kv(k, n_heads // "
            "n_kv_heads) before the attention.",
        ),
        (
            "is invalid for input of size",
            "Split the projections into heads of size head_dim = hidden_size // "
            "num_attention_heads: queries into num_attention_heads heads, keys and values into "
            "num_key_value_heads heads.",
        ),
        (
            "KeyError",
            "params uses Hugging Face's names: model.embed_tokens.weight, "
            "model.layers.{i}.self_attn.q_proj.weight, ..., model.norm.weight (print(list(params)) "
            "to see them all).",
        ),
    ]
    for input_ids, params, config in _llama_cases(s):
        out = s.call(input_ids, params, config, mutable=(1,))
        if not _params_unchanged(out.args[1], out.args_after[1]):
            s.fail(
                "llama_forward changed params in place; it must leave the weights as they were "
                "(no add_ / mul_ / assignment into params)",
                out,
            )
        s.ok()
        B, T = input_ids.shape
        V = params["model.embed_tokens.weight"].shape[0]
        changed = input_ids.clone()
        changed[:, -1] = (changed[:, -1] + 1) % V
        later = s.call(changed, params, config, mutable=(1,))

        causal = earlier_positions_unchanged(
            later,
            "changing the last token changed the logits at earlier positions: mask the attention "
            "scores causally (key j <= query i) in every layer",
        )

        kind, expected = reference_answer(
            TensorOut((B, T, V), "float", rtol=1e-5, atol=1e-5, what="logits"),
            ref_llama.llama_forward,
            input_ids,
            params,
            config,
        )
        verify(s, out, kind, expected, mistakes=_llama_mistakes(), properties=[causal])
