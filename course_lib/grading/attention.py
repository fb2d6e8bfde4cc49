"""Graders of notebook 04 (04-attention): scores, causal mask, attention, heads, multi-head.

Runs in the referee; the answer key is ``course_lib.attention``, evaluated in float64. The
classic wrong versions are written out below (``_attend`` with switches for each mistake),
so a learner whose output equals one of them is told which one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from course_lib import attention as ref
from course_lib.grading._harness import (
    Mistake,
    Outcome,
    PairOut,
    Session,
    TensorOut,
    earlier_positions_unchanged,
    mistake_maker,
    reference_answer,
    verify,
)

_TRANSPOSE_HINT = (
    "Transpose only the last two dims of k: k.transpose(-2, -1) (k.T reverses every dim of a "
    "batched tensor)."
)

# ------------------------------------------------------------------------------------------------
# attention_scores
# ------------------------------------------------------------------------------------------------


def _raw(q: Tensor, k: Tensor) -> Tensor:
    return q @ k.transpose(-2, -1)


def _score_mistakes() -> list[Mistake]:
    root = math.sqrt
    return [
        Mistake(
            "your scores are sqrt(d_k) times too large: divide q @ k.transpose(-2, -1) by "
            "math.sqrt(d_k), with d_k = q.shape[-1]",
            lambda q, k: _raw(q, k),
        ),
        Mistake(
            "you divided by d_k; divide by math.sqrt(d_k)", lambda q, k: _raw(q, k) / q.shape[-1]
        ),
        Mistake(
            "you multiplied by sqrt(d_k); divide by it", lambda q, k: _raw(q, k) * root(q.shape[-1])
        ),
        Mistake(
            "divide by sqrt(d_k) with d_k = q.shape[-1] (the size of each query and key vector), "
            "not by the number of keys",
            lambda q, k: _raw(q, k) / root(k.shape[-2]),
        ),
        Mistake(
            "divide by sqrt(d_k) with d_k = q.shape[-1] (the size of each query and key vector), "
            "not by the number of queries",
            lambda q, k: _raw(q, k) / root(q.shape[-2]),
        ),
        Mistake(
            "attention_scores returns the raw scaled scores; the softmax comes later, in "
            "scaled_dot_product_attention",
            lambda q, k: torch.softmax(_raw(q, k) / root(q.shape[-1]), -1),
        ),
        Mistake(
            "you computed k @ q^T: scores[..., i, j] is query i against key j, so q @ "
            "k.transpose(-2, -1)",
            lambda q, k: k @ q.transpose(-2, -1) / root(q.shape[-1]),
        ),
    ]


def _score_cases(s: Session) -> list[tuple[Tensor, Tensor]]:
    r = s.rng
    cases = []
    if not s.hidden:
        cases.append(
            (
                torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
                torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]]),
            )
        )
    tq = r.randint(2, 4)
    tk, d = tq + r.randint(1, 3), r.choice([8, 16])
    cases += [
        (s.randn(tq, d), s.randn(tk, d)),
        (s.randn(2, tq, d), s.randn(2, tk, d)),
        (s.randn(2, 3, tk, d), s.randn(2, 3, tq, d)),
    ]
    return cases


def grade_attention_scores(s: Session) -> None:
    s.error_hints = [
        ("must match the size of tensor", _TRANSPOSE_HINT),
        ("Expected size for first", _TRANSPOSE_HINT),
        ("cannot be multiplied", _TRANSPOSE_HINT),
    ]
    s.inplace_hint = "Do not scale q or k in place (q /= ...); compute a new tensor."
    for q, k in _score_cases(s):
        out = s.call(q, k)
        shape = (*q.shape[:-1], k.shape[-2])
        kind, expected = reference_answer(
            TensorOut(shape, "float", rtol=1e-4, atol=1e-5, what="scores"),
            ref.attention_scores,
            q,
            k,
        )
        verify(s, out, kind, expected, mistakes=_score_mistakes())


# ------------------------------------------------------------------------------------------------
# causal_mask
# ------------------------------------------------------------------------------------------------


def _mask_type(value: Any, T: int) -> str | None:
    if isinstance(value, Tensor) and value.is_floating_point() and value.isinf().any():
        return (
            "this is the additive form of the mask (-inf where masked, used by some libraries); "
            "causal_mask returns the bool form: True where key j <= query i, e.g. torch.ones(T, "
            "T, dtype=torch.bool).tril()"
        )
    return TensorOut((T, T), "bool", what="mask").check_type(value)


class _MaskOut(TensorOut):
    def check_type(self, value: Any) -> str | None:
        return _mask_type(value, self.shape[0])


def grade_causal_mask(s: Session) -> None:
    sizes = [4, 1, 7] if not s.hidden else [s.rng.randint(2, 6), 1, s.rng.randint(7, 16)]
    mistakes = [
        Mistake(
            "mask inverted: True means may attend, so the mask is True on and below the diagonal "
            "(j <= i)",
            lambda T: ~torch.ones(T, T, dtype=torch.bool).tril(),
        ),
        Mistake(
            "your mask is transposed: row i (the query) may attend to the columns j <= i; use "
            "tril, not triu",
            lambda T: torch.ones(T, T, dtype=torch.bool).triu(),
        ),
        Mistake(
            "the diagonal must be True: a token may attend to itself (use tril(), not tril(-1))",
            lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1),
        ),
        Mistake(
            "your mask lets every query see every key: only keys j <= i are allowed",
            lambda T: torch.ones(T, T, dtype=torch.bool),
        ),
    ]
    for T in sizes:
        out = s.call(T)
        verify(s, out, _MaskOut((T, T), "bool", what="mask"), ref.causal_mask(T), mistakes=mistakes)


# ------------------------------------------------------------------------------------------------
# scaled_dot_product_attention
# ------------------------------------------------------------------------------------------------


def _attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    scale: bool = True,
    softmax: bool = True,
    dim: int = -1,
    fill: str = "-inf",
    after: bool = False,
    invert: bool = False,
    use_mask: bool = True,
) -> tuple[Tensor, Tensor]:
    """Attention with switches for the classic mistakes (all defaults: the right answer)."""
    scores = _raw(q, k) / (math.sqrt(q.shape[-1]) if scale else 1.0)
    if mask is not None and use_mask:
        keep = ~mask if invert else mask
        if not after:
            scores = scores.masked_fill(~keep, float("-inf") if fill == "-inf" else 0.0)
    weights = torch.softmax(scores, dim) if softmax else scores
    if mask is not None and use_mask and after:
        weights = weights * keep
    return weights @ v, weights


def _sdpa_mistakes() -> list[Mistake]:
    def m(message: str, **flags: Any) -> Mistake:
        return Mistake(message, lambda q, k, v, mask=None: _attend(q, k, v, mask, **flags))

    no_softmax = (
        "this is QK^T V without softmax: turn the scores into weights with softmax(scores, "
        "dim=-1) (each row sums to 1), then output = weights @ v"
    )
    return [
        Mistake(
            "return (output, weights) in that order: you returned (weights, output)",
            lambda q, k, v, mask=None: _attend(q, k, v, mask)[::-1],
        ),
        m(no_softmax, softmax=False),
        m(no_softmax, softmax=False, fill="0"),
        m(no_softmax, softmax=False, scale=False),
        m("your weights do not sum to 1 over the keys: did you apply softmax over dim=-1?", dim=-2),
        m(
            "your scores are sqrt(d_k) times too large: divide q @ k.transpose(-2, -1) by "
            "math.sqrt(d_k) before the softmax",
            scale=False,
        ),
        m(
            "mask applied after softmax: fill the masked scores with float('-inf') first, then "
            "softmax, so the allowed weights still sum to 1",
            after=True,
        ),
        m(
            "mask inverted: True means may attend, so fill the scores where the mask is False: "
            "scores.masked_fill(~mask, float('-inf'))",
            invert=True,
        ),
        m(
            "mask inverted: True means may attend, so fill the scores where the mask is False: "
            "scores.masked_fill(~mask, float('-inf'))",
            invert=True,
            after=True,
        ),
        m(
            "you ignored the mask: scores.masked_fill(~mask, float('-inf')) before the softmax",
            use_mask=False,
        ),
        m(
            "masking with 0 does not remove a key (exp(0) = 1): fill the masked scores with "
            "float('-inf')",
            fill="0",
        ),
    ]


def _random_mask(s: Session, *shape: int) -> Tensor:
    mask = torch.rand(*shape, generator=s.gen) < 0.6
    keep = s.randint(0, shape[-1], *shape[:-1])
    return mask.scatter(-1, keep.unsqueeze(-1), True)  # every query keeps at least one key


def _sdpa_cases(s: Session) -> list[tuple[tuple, bool]]:
    """(args, causal) pairs; args leave out the mask to test its default."""
    r = s.rng
    B, T, D, Dv = r.randint(1, 3), r.randint(3, 6), r.choice([4, 8]), r.choice([3, 5])
    cases: list[tuple[tuple, bool]] = []
    if not s.hidden:
        q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        cases.append(((q, q.clone(), torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])), False))
    causal = ref.causal_mask(T)
    tq, tk = r.randint(2, 4), r.randint(5, 7)
    cases += [
        ((s.randn(B, T, D), s.randn(B, T, D), s.randn(B, T, Dv)), False),
        ((s.randn(B, T, D), s.randn(B, T, D), s.randn(B, T, Dv), causal), True),
        (
            (s.randn(B, tq, D), s.randn(B, tk, D), s.randn(B, tk, Dv), _random_mask(s, B, tq, tk)),
            False,
        ),
        ((s.randn(B, 2, T, D), s.randn(B, 2, T, D), s.randn(B, 2, T, Dv), causal), True),
        (
            (
                s.randn(B, T, 16, scale=30.0),
                s.randn(B, T, 16, scale=30.0),
                s.randn(B, T, Dv),
                causal,
            ),
            True,
        ),
        ((s.randn(tq, D), s.randn(tk, D), s.randn(tk, Dv), None), False),
    ]
    return cases


def grade_scaled_dot_product_attention(s: Session) -> None:
    s.error_hints = [
        ("must match the size of tensor", _TRANSPOSE_HINT),
        (
            "masked_fill only supports boolean masks",
            "The mask is bool (True = may attend): use scores.masked_fill(~mask, float('-inf')).",
        ),
    ]
    s.inplace_hint = "Do not change q, k, v or mask in place (no q /= ...); compute new tensors."
    for args, causal in _sdpa_cases(s):
        q, k, v = args[:3]
        mask = args[3] if len(args) > 3 else None
        out = s.call(*args)
        later = None
        if causal:  # a perturbed future key/value must change nothing earlier
            k2, v2 = k.clone(), v.clone()
            k2[..., -1, :] += 5.0
            v2[..., -1, :] -= 5.0
            later = s.call(q, k2, v2, mask)
        kind = PairOut(
            TensorOut((*q.shape[:-1], v.shape[-1]), "float", rtol=1e-4, atol=1e-5, what="output"),
            TensorOut((*q.shape[:-1], k.shape[-2]), "float", rtol=1e-4, atol=1e-6, what="weights"),
        )
        kind, expected = reference_answer(kind, ref.scaled_dot_product_attention, q, k, v, mask)
        verify(
            s,
            out,
            kind,
            expected,
            mistakes=_sdpa_mistakes(),
            properties=_sdpa_properties(mask, q, k, later),
        )


def _sdpa_properties(mask: Tensor | None, q: Tensor, k: Tensor, later: Outcome | None) -> list:
    def finite(value: tuple) -> str | None:
        out, w = value
        if not (out.isfinite().all() and w.isfinite().all()):
            return (
                "your output or weights contain NaN/inf: compute the softmax stably (subtract the "
                "row max, or use torch.softmax) and fill masked scores with -inf only where the "
                "mask is False"
            )
        return None

    def rows_sum_to_one(value: tuple) -> str | None:
        w = value[1].double()
        if (w.sum(-1) - 1).abs().max() > 1e-4 or (w < 0).any():
            return "your weights do not sum to 1 over the keys: did you apply softmax over dim=-1?"
        return None

    def masked_are_zero(value: tuple) -> str | None:
        if mask is None:
            return None
        w = value[1]
        hidden = (~mask).expand(w.shape)
        if (w[hidden] != 0).any():
            return (
                "masked weights must be exactly 0: fill the masked scores with float('-inf') "
                "(scores.masked_fill(~mask, float('-inf'))) before the softmax"
            )
        return None

    def causal(value: tuple) -> str | None:
        if later is None or not isinstance(later.value, (tuple, list)) or len(later.value) != 2:
            return None
        before, after = value[0], later.value[0]
        if not isinstance(after, Tensor) or after.shape != before.shape:
            return None
        if not torch.allclose(
            before[..., :-1, :].double(), after[..., :-1, :].double(), atol=1e-5, rtol=1e-5
        ):
            return (
                "changing the last key and value changed the outputs of earlier queries: the "
                "causal mask is not applied (True means may attend: fill the scores where ~mask "
                "with -inf)"
            )
        return None

    return [finite, rows_sum_to_one, masked_are_zero, causal]


# ------------------------------------------------------------------------------------------------
# split_heads and merge_heads
# ------------------------------------------------------------------------------------------------


def _head_sizes(s: Session, visible: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    if not s.hidden:
        return visible
    r = s.rng
    sizes = []
    for _ in range(3):
        H = r.randint(2, 4)
        D = r.choice([d for d in range(2, 6) if d != H])
        sizes.append((r.randint(1, 3), r.choice([t for t in range(2, 7) if t not in (H, D)]), H, D))
    return sizes + [(1, 3, 1, 4)]


def grade_split_heads(s: Session) -> None:
    s.inplace_hint = "Do not reshape x in place (x.resize_ / x.set_); return a new view."
    s.error_hints = [
        ("shape '[", "The shape does not fit: view x as (B, T, n_heads, C // n_heads).")
    ]
    mistakes = [
        Mistake(
            "heads split by reshape without transpose: view x as (B, T, n_heads, D), then "
            ".transpose(1, 2) to get (B, n_heads, T, D)",
            lambda x, H: x.reshape(x.shape[0], H, x.shape[1], x.shape[2] // H),
        ),
        Mistake(
            "head h must hold the contiguous channels h*D:(h+1)*D, not every n_heads-th channel: "
            "view as (B, T, n_heads, D), not (B, T, D, n_heads)",
            lambda x, H: x.view(x.shape[0], x.shape[1], x.shape[2] // H, H).permute(0, 3, 1, 2),
        ),
        Mistake(
            "you returned (B, T, n_heads, D): .transpose(1, 2) puts the heads before time, (B, "
            "n_heads, T, D)",
            lambda x, H: x.view(x.shape[0], x.shape[1], H, x.shape[2] // H),
        ),
        Mistake(
            "you made C // n_heads heads of size n_heads: view x as (B, T, n_heads, C // n_heads)",
            lambda x, H: x.view(x.shape[0], x.shape[1], x.shape[2] // H, H).transpose(1, 2),
        ),
    ]
    for B, T, H, D in _head_sizes(s, [(2, 3, 2, 4), (1, 5, 3, 4), (2, 4, 6, 1), (3, 2, 1, 8)]):
        x = s.randn(B, T, H * D)
        out = s.call(x, H)
        verify(
            s,
            out,
            TensorOut((B, H, T, D), "float", exact=True),
            ref.split_heads(x, H),
            mistakes=mistakes,
        )


def grade_merge_heads(s: Session) -> None:
    s.inplace_hint = "Do not reshape x in place; return a new tensor."
    s.error_hints = [
        (
            "view size is not compatible",
            "After transpose the tensor is not contiguous: use .reshape(B, T, H * D) (or "
            ".contiguous().view(...)).",
        )
    ]
    mistakes = [
        Mistake(
            "heads merged by reshape without transpose: x.transpose(1, 2) first (to (B, T, H, "
            "D)), then .reshape(B, T, H * D)",
            lambda x: x.reshape(x.shape[0], x.shape[2], x.shape[1] * x.shape[3]),
        ),
        Mistake(
            "the channels are interleaved: head h must end up in channels h*D:(h+1)*D, so "
            "transpose(1, 2) then reshape(B, T, H * D)",
            lambda x: x.permute(0, 2, 3, 1).reshape(
                x.shape[0], x.shape[2], x.shape[1] * x.shape[3]
            ),
        ),
        Mistake(
            "you returned (B, T, H, D): flatten the heads, .reshape(B, T, H * D)",
            lambda x: x.transpose(1, 2),
        ),
    ]
    for B, T, H, D in _head_sizes(s, [(2, 3, 2, 4), (1, 5, 3, 2), (2, 4, 2, 3), (1, 3, 1, 4)]):
        x = s.randn(B, H, T, D)
        out = s.call(x)
        verify(
            s,
            out,
            TensorOut((B, T, H * D), "float", exact=True),
            ref.merge_heads(x),
            mistakes=mistakes,
        )


# ------------------------------------------------------------------------------------------------
# multi_head_self_attention
# ------------------------------------------------------------------------------------------------


def _mhsa(
    x: Tensor,
    w_qkv: Tensor,
    b_qkv: Tensor,
    w_out: Tensor,
    b_out: Tensor,
    H: int,
    *,
    causal: bool = True,
    order: tuple[int, int, int] = (0, 1, 2),
    w_out_t: bool = True,
    project: bool = True,
    bias_qkv: bool = True,
    bias_out: bool = True,
    scale: str = "D",
    split: str = "transpose",
    merge: str = "transpose",
    fused_heads: bool = False,
    dim: int = -1,
) -> Tensor:
    """Multi-head self-attention with switches for the classic mistakes (defaults: right)."""
    B, T, C = x.shape
    D = C // H
    qkv = x @ w_qkv.T + (b_qkv if bias_qkv else 0)  # (B, T, 3C)
    if fused_heads:  # q, k, v interleaved per head
        q, k, v = qkv.view(B, T, H, 3 * D).transpose(1, 2).split(D, dim=-1)
    else:
        parts = qkv.split(C, dim=-1)
        q, k, v = (parts[i] for i in order)
        if split == "transpose":
            q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        else:
            q, k, v = (t.reshape(B, H, T, D) for t in (q, k, v))
    s = q @ k.transpose(-2, -1) / {"D": math.sqrt(D), "C": math.sqrt(C), "none": 1.0}[scale]
    if causal:
        s = s.masked_fill(~ref.causal_mask(T), float("-inf"))
    y = torch.softmax(s, dim) @ v  # (B, H, T, D)
    y = y.transpose(1, 2).reshape(B, T, C) if merge == "transpose" else y.reshape(B, T, C)
    if not project:
        return y
    return y @ (w_out.T if w_out_t else w_out) + (b_out if bias_out else 0)


def _mhsa_mistakes() -> list[Mistake]:
    m = mistake_maker(_mhsa)

    order = (
        "split qkv into q, k, v in that order along the last dim: q = qkv[..., :C], k = qkv[..., "
        "C:2C], v = qkv[..., 2C:]"
    )
    return [
        m(
            "no causal mask: position t must not attend to later positions; mask the scores with "
            "causal_mask(T) (fill where ~mask with -inf) in every head",
            causal=False,
        ),
        *[m(order, order=o) for o in [(1, 0, 2), (0, 2, 1), (2, 1, 0), (1, 2, 0), (2, 0, 1)]],
        m(
            "w_out uses the nn.Linear layout (d_out, d_in) too: the projection is y @ w_out.T + "
            "b_out",
            w_out_t=False,
        ),
        m("you left out the output projection: finish with y @ w_out.T + b_out", project=False),
        m("you left out the bias b_qkv: qkv = x @ w_qkv.T + b_qkv", bias_qkv=False),
        m("you left out the bias b_out: out = y @ w_out.T + b_out", bias_out=False),
        m(
            "your scores are sqrt(d_k) times too large: divide by math.sqrt(D), D = C // n_heads",
            scale="none",
        ),
        m(
            "divide the scores by sqrt(D) with D = C // n_heads (the head size), not by sqrt(C)",
            scale="C",
        ),
        m(
            "heads split by reshape without transpose: view q, k, v as (B, T, n_heads, D), then "
            ".transpose(1, 2)",
            split="reshape",
        ),
        m(
            "heads merged by reshape without transpose: y.transpose(1, 2) first, then .reshape(B, "
            "T, C)",
            merge="reshape",
        ),
        Mistake(
            "you ignored n_heads: split q, k and v into n_heads heads of size D = C // n_heads",
            lambda x, w, b, wo, bo, H: _mhsa(x, w, b, wo, bo, 1),
        ),
        m(
            "split qkv into q, k and v (C channels each) first, then split each of them into heads",
            fused_heads=True,
        ),
        m("the attention weights must sum to 1 over the keys: softmax over dim=-1", dim=-2),
    ]


def _mhsa_sizes(s: Session) -> list[tuple[int, int, int, int]]:
    if not s.hidden:
        return [(2, 5, 3, 4), (1, 4, 2, 4), (2, 3, 1, 6)]  # (B, T, H, D)
    r = s.rng
    return [
        (r.randint(1, 2), r.randint(3, 6), r.randint(2, 4), r.randint(2, 5)) for _ in range(2)
    ] + [(1, r.randint(2, 4), 1, r.randint(3, 6))]


def grade_multi_head_self_attention(s: Session) -> None:
    s.error_hints = [
        (
            "cannot be multiplied",
            "The weights use the nn.Linear layout (d_out, d_in): compute x @ w_qkv.T + b_qkv and "
            "y @ w_out.T + b_out.",
        ),
        (
            "view size is not compatible",
            "After transpose the tensor is not contiguous: use .reshape(...) (or "
            ".contiguous().view(...)).",
        ),
    ]
    s.inplace_hint = "Do not change x or the weights in place; compute new tensors."
    for B, T, H, D in _mhsa_sizes(s):
        C = H * D
        x = s.randn(B, T, C)
        w_qkv, b_qkv = s.randn(3 * C, C, scale=C**-0.5), s.randn(3 * C, scale=0.1)
        w_out, b_out = s.randn(C, C, scale=C**-0.5), s.randn(C, scale=0.1)
        out = s.call(x, w_qkv, b_qkv, w_out, b_out, H)
        x2 = x.clone()
        x2[:, -1] = s.randn(B, C)
        later = s.call(x2, w_qkv, b_qkv, w_out, b_out, H)

        causal = earlier_positions_unchanged(
            later,
            "changing the last token changed the outputs at earlier positions: apply the causal "
            "mask (causal_mask(T), True = may attend) to the scores of every head",
        )

        kind, expected = reference_answer(
            TensorOut((B, T, C), "float", rtol=1e-4, atol=1e-5),
            ref.multi_head_self_attention,
            x,
            w_qkv,
            b_qkv,
            w_out,
            b_out,
            H,
        )
        verify(
            s,
            out,
            kind,
            expected,
            mistakes=_mhsa_mistakes(),
            properties=[causal],
        )
