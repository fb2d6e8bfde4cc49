"""Graders of notebook 05 (05-transformer): LayerNorm, GELU, MLP, block, GPT-2, parameter count.

Runs in the referee; the answer keys are ``course_lib.functional`` (``layer_norm``, ``gelu``)
and ``course_lib.gpt`` (``mlp``, ``transformer_block``, ``gpt2_forward``, ``count_parameters``),
evaluated in float64. The classic wrong versions are written out below as functions with a
switch per mistake (``_ln``, ``_gelu``, ``_mlp``, ``_block``, ``_forward``), so a learner whose
output equals one of them is told which one.

The params of ``transformer_block`` and ``gpt2_forward`` travel as a plain dict of tensors
with GPT-2's key names in the nn.Linear layout; the referee builds small random configs
(a few channels, one to three blocks) so each check stays well under a second.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from course_lib import functional as fref
from course_lib import gpt as gref
from course_lib.attention import causal_mask, merge_heads, split_heads
from course_lib.grading._harness import (
    Kind,
    Mistake,
    Outcome,
    Session,
    TensorOut,
    describe_type,
    mistake_maker,
    reference_answer,
    verify,
)

_LINEAR_HINT = (
    "The weights use the nn.Linear layout (d_out, d_in): a projection is x @ W.T + b (Hugging "
    "Face's Conv1D stores W.T, which is why its checkpoints look transposed)."
)


def _finite(value: Tensor) -> str | None:
    if not value.isfinite().all():
        return (
            "your output contains NaN or inf: keep eps inside the square root, sqrt(var + eps), so "
            "a constant row (variance 0) stays finite"
        )
    return None


# ------------------------------------------------------------------------------------------------
# layer_norm
# ------------------------------------------------------------------------------------------------


def _ln(
    x: Tensor,
    w: Tensor | None,
    b: Tensor | None,
    eps: float = 1e-5,
    *,
    unbiased: bool = False,
    eps_outside: bool = False,
    center: bool = True,
    sqrt: bool = True,
    dim: int | None = -1,
    affine: bool = True,
    swap: bool = False,
) -> Tensor:
    """LayerNorm with switches for the classic mistakes (all defaults: the right answer)."""
    dims = tuple(range(x.dim())) if dim is None else (dim,)
    mean = x.mean(dims, keepdim=True) if center else torch.zeros_like(x)
    var = ((x - mean) ** 2).sum(dims, keepdim=True)
    n = math.prod(x.shape[d] for d in dims)
    var = var / (n - 1 if unbiased else n)
    if eps_outside:
        y = (x - mean) / (var.sqrt() + eps)
    else:
        y = (x - mean) / ((var + eps).sqrt() if sqrt else (var + eps))
    if not affine:
        return y
    if swap:
        w, b = b, w
    return y * w + b


def _ln_mistakes() -> list[Mistake]:
    def m(message: str, **flags: Any) -> Mistake:
        return Mistake(message, lambda x, w, b, eps=1e-5: _ln(x, w, b, eps, **flags))

    unbiased = (
        "you used the unbiased variance (divided by C - 1): LayerNorm uses the biased one, "
        "x.var(dim=-1, unbiased=False, keepdim=True) (or ((x - mean)**2).mean(-1, keepdim=True))"
    )
    return [
        m(unbiased, unbiased=True),
        m(
            "eps must go inside the square root: (x - mean) / torch.sqrt(var + eps), not "
            "/ (std + eps)",
            eps_outside=True,
        ),
        m(
            "two mistakes: torch.std is the unbiased std (divides by C - 1), and eps must go "
            "inside the square root: (x - mean) / torch.sqrt(var + eps) with the biased var",
            eps_outside=True,
            unbiased=True,
        ),
        Mistake(
            "you ignored the eps argument: use the eps you are given, not a constant",
            lambda x, w, b, eps=1e-5: _ln(x, w, b, 1e-5),
        ),
        Mistake(
            "you left out eps: divide by torch.sqrt(var + eps) so a constant row stays finite",
            lambda x, w, b, eps=1e-5: _ln(x, w, b, 0.0),
        ),
        m(
            "you forgot to subtract the mean (that is RMSNorm): (x - mean) / sqrt(var + eps), "
            "with mean and var over the last dim",
            center=False,
        ),
        m("divide by the standard deviation sqrt(var + eps), not by the variance", sqrt=False),
        m(
            "normalise over the last dim (each position's C channels): mean(dim=-1, "
            "keepdim=True), not over dim 0",
            dim=0,
        ),
        m(
            "the statistics are per row: take mean and var over the last dim only "
            "(dim=-1, keepdim=True), not over the whole tensor",
            dim=None,
        ),
        m("you forgot the learned scale and shift: finish with * weight + bias", affine=False),
        m("weight and bias swapped: y * weight + bias (weight scales, bias shifts)", swap=True),
    ]


def _ln_cases(s: Session) -> list[tuple]:
    """(x, weight, bias, eps or None); None means: call with the default eps.

    The first cases use a large eps, where every eps mistake (outside the square root,
    ignored, left out) and the unbiased variance give distinct answers.
    """
    r = s.rng
    cases: list[tuple] = []
    if not s.hidden:
        x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
        cases.append((x, torch.ones(4), torch.zeros(4), 0.1))
    B, T, C = r.randint(1, 3), r.randint(2, 5), r.choice([4, 6, 8, 16])
    x = s.randn(B, T, C, scale=3.0) + 5.0
    x[0, 0] = 0.7  # a constant row: variance 0, only eps keeps it finite
    cases += [
        (s.randn(T + 1, C), 1 + 0.3 * s.randn(C), 0.5 * s.randn(C), 0.1),
        (x, 1 + 0.3 * s.randn(C), 0.5 * s.randn(C), None),
        (s.randn(2, T, C, scale=0.01) - 1.0, s.randn(C), s.randn(C), 1e-5),
        (s.randn(T, 2, 3, C), 1 + 0.3 * s.randn(C), 0.5 * s.randn(C), 1e-3),
    ]
    return cases


def grade_layer_norm(s: Session) -> None:
    s.inplace_hint = "Do not normalise x in place (x -= mean); compute a new tensor."
    s.error_hints = [
        (
            "unbiased",
            "torch.var(x, dim=-1, unbiased=False, keepdim=True) (or correction=0) is the variance.",
        )
    ]
    for x, w, b, eps in _ln_cases(s):
        args = (x, w, b) if eps is None else (x, w, b, eps)
        out = s.call(*args)
        kind, expected = reference_answer(
            TensorOut(tuple(x.shape), "float", rtol=1e-5, atol=1e-6), fref.layer_norm, *args
        )
        verify(s, out, kind, expected, mistakes=_ln_mistakes(), properties=[_finite])


# ------------------------------------------------------------------------------------------------
# gelu
# ------------------------------------------------------------------------------------------------

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu(
    x: Tensor,
    *,
    form: str = "tanh",
    half: bool = True,
    c: float = _SQRT_2_OVER_PI,
    cubic: float = 0.044715,
    power: int = 3,
) -> Tensor:
    """GELU with switches for the classic mistakes (all defaults: the right answer)."""
    if form == "erf":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))
    if form == "relu":
        return x.clamp_min(0)
    if form == "sigmoid":
        return x * torch.sigmoid(1.702 * x)
    if form == "silu":
        return x * torch.sigmoid(x)
    y = x * (1 + torch.tanh(c * (x + cubic * x**power)))
    return 0.5 * y if half else y


def _gelu_mistakes() -> list[Mistake]:
    m = mistake_maker(_gelu)

    return [
        m(
            "this is the exact (erf) GELU, F.gelu(x): GPT-2 uses the tanh approximation "
            "0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3))) (F.gelu(x, "
            "approximate='tanh'))",
            form="erf",
        ),
        m(
            "this is ReLU: GELU is 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))",
            form="relu",
        ),
        m(
            "this is the sigmoid approximation x * sigmoid(1.702 x); GPT-2 uses the tanh form",
            form="sigmoid",
        ),
        m(
            "this is SiLU, x * sigmoid(x) (Llama's activation); GPT-2 uses the tanh GELU",
            form="silu",
        ),
        m("you left out the factor 0.5 in front: 0.5 * x * (1 + tanh(...))", half=False),
        m(
            "the constant is sqrt(2 / pi) ~ 0.7979, not sqrt(2 * pi): math.sqrt(2 / math.pi)",
            c=math.sqrt(2 * math.pi),
        ),
        m("the constant is sqrt(2 / pi) ~ 0.7979, not 2 / pi: take the square root", c=2 / math.pi),
        m(
            "you left out the cubic term: tanh(sqrt(2/pi) * (x + 0.044715 * x**3))",
            cubic=0.0,
        ),
        m("the correction term is 0.044715 * x**3 (cubed), not x**2", power=2),
        m("the coefficient of x**3 is 0.044715 (check the digits)", cubic=0.44715),
    ]


def _gelu_cases(s: Session) -> list[Tensor]:
    r = s.rng
    cases = []
    if not s.hidden:
        cases.append(torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]))
        cases.append(torch.linspace(-6.0, 6.0, 121))
    cases += [
        s.randn(r.randint(1, 3), r.randint(2, 5), r.choice([4, 8]), scale=2.5),
        torch.tensor([-30.0, -12.0, -0.1, 0.1, 12.0, 30.0]) * (1 + 0.1 * r.random()),
    ]
    return cases


def grade_gelu(s: Session) -> None:
    s.inplace_hint = "Do not change x in place (x.mul_, x **= 3, ...); compute a new tensor."
    for x in _gelu_cases(s):
        out = s.call(x)
        kind, expected = reference_answer(
            TensorOut(tuple(x.shape), "float", rtol=1e-5, atol=1e-7), fref.gelu, x
        )
        verify(
            s,
            out,
            kind,
            expected,
            mistakes=_gelu_mistakes(),
            properties=[_gelu_finite],
        )


def _gelu_finite(value: Tensor) -> str | None:
    if not value.isfinite().all():
        return "your output has NaN or inf for large |x|: use torch.tanh (it saturates at +-1)"
    return None


# ------------------------------------------------------------------------------------------------
# mlp
# ------------------------------------------------------------------------------------------------


def _mlp(
    x: Tensor,
    w_fc: Tensor,
    b_fc: Tensor,
    w_proj: Tensor,
    b_proj: Tensor,
    *,
    act: str = "tanh",
    act_out: bool = False,
    bias_fc: str = "in",
    bias_proj: bool = True,
    transpose: bool = True,
) -> Tensor:
    """The MLP with switches for the classic mistakes (all defaults: the right answer)."""
    a, b = (w_fc.T, w_proj.T) if transpose else (w_fc, w_proj)
    h = x @ a + (b_fc if bias_fc == "in" else 0)
    h = {
        "tanh": _gelu,
        "erf": lambda t: _gelu(t, form="erf"),
        "relu": lambda t: t.clamp_min(0),
        "none": lambda t: t,
    }[act](h)
    if bias_fc == "after":
        h = h + b_fc
    y = h @ b + (b_proj if bias_proj else 0)
    return _gelu(y) if act_out else y


def _mlp_mistakes() -> list[Mistake]:
    m = mistake_maker(_mlp)

    return [
        m(
            "this uses the exact (erf) GELU: GPT-2's MLP uses the tanh form (your gelu, or "
            "F.gelu(h, approximate='tanh'))",
            act="erf",
        ),
        m("this uses ReLU: GPT-2's MLP uses GELU (tanh form) between the two layers", act="relu"),
        m("you left out the GELU: gelu(x @ w_fc.T + b_fc), then the projection", act="none"),
        m(
            "the GELU goes between the two layers only, not after the output projection",
            act_out=True,
        ),
        m("add b_fc before the GELU: gelu(x @ w_fc.T + b_fc)", bias_fc="after"),
        m("you left out the bias b_fc: gelu(x @ w_fc.T + b_fc)", bias_fc="none"),
        m("you left out the bias b_proj: ... @ w_proj.T + b_proj", bias_proj=False),
        m(
            "the weights use the nn.Linear layout (d_out, d_in): x @ w_fc.T + b_fc, then "
            "@ w_proj.T + b_proj",
            transpose=False,
        ),
    ]


def _rand_linear(s: Session, d_out: int, d_in: int) -> tuple[Tensor, Tensor]:
    return s.randn(d_out, d_in, scale=d_in**-0.5), s.randn(d_out, scale=0.2)


def grade_mlp(s: Session) -> None:
    s.inplace_hint = "Do not change x or the weights in place; compute new tensors."
    s.error_hints = [
        ("cannot be multiplied", _LINEAR_HINT),
        ("must match the size of tensor", _LINEAR_HINT),
    ]
    r = s.rng
    sizes = [(2, 3, 4, 16), (1, 5, 6, 6)] if not s.hidden else []  # (B, T, C, hidden)
    C = r.choice([4, 6, 8])
    sizes += [(r.randint(1, 3), r.randint(2, 5), C, 4 * C)]
    for B, T, C, Hd in sizes:
        x = s.randn(B, T, C)
        w_fc, b_fc = _rand_linear(s, Hd, C)
        w_proj, b_proj = _rand_linear(s, C, Hd)
        args = (x, w_fc, b_fc, w_proj, b_proj)
        out = s.call(*args)
        kind, expected = reference_answer(
            TensorOut((B, T, C), "float", rtol=1e-5, atol=1e-6), gref.mlp, *args
        )
        verify(s, out, kind, expected, mistakes=_mlp_mistakes())


# ------------------------------------------------------------------------------------------------
# transformer_block
# ------------------------------------------------------------------------------------------------


def _attn(x: Tensor, p: dict, H: int, *, causal: bool = True, scale: str = "D") -> Tensor:
    B, T, C = x.shape
    qkv = x @ p["attn.c_attn.weight"].T + p["attn.c_attn.bias"]
    q, k, v = (split_heads(t, H) for t in qkv.split(C, dim=-1))  # (B, H, T, D)
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // H if scale == "D" else C)
    if causal:
        scores = scores.masked_fill(~causal_mask(T), float("-inf"))
    y = merge_heads(torch.softmax(scores, dim=-1) @ v)  # (B, T, C)
    return y @ p["attn.c_proj.weight"].T + p["attn.c_proj.bias"]


def _block(
    x: Tensor,
    p: dict,
    H: int,
    *,
    order: str = "pre",
    res_attn: bool = True,
    res_mlp: bool = True,
    swap_ln: bool = False,
    causal: bool = True,
    scale: str = "D",
    act: str = "tanh",
) -> Tensor:
    """A GPT-2 block with switches for the classic mistakes (all defaults: the right answer)."""
    n1, n2 = ("ln_2", "ln_1") if swap_ln else ("ln_1", "ln_2")

    def ln(t: Tensor, name: str) -> Tensor:
        return _ln(t, p[f"{name}.weight"], p[f"{name}.bias"], 1e-5)

    def attn(t: Tensor) -> Tensor:
        return _attn(t, p, H, causal=causal, scale=scale)

    def mlp(t: Tensor) -> Tensor:
        w = (p["mlp.c_fc.weight"], p["mlp.c_fc.bias"], p["mlp.c_proj.weight"], p["mlp.c_proj.bias"])
        return _mlp(t, *w, act=act)

    if order == "post":  # the original Transformer: normalise after the residual addition
        x = ln(x + attn(x), n1)
        return ln(x + mlp(x), n2)
    if order == "parallel":  # GPT-J / PaLM style: both sub-layers read the same input
        return x + attn(ln(x, n1)) + mlp(ln(x, n2))
    if order == "norm_residual":  # the residual adds the normalised stream
        h = ln(x, n1)
        x = h + attn(h)
        h = ln(x, n2)
        return h + mlp(h)
    x = (x if res_attn else 0) + attn(ln(x, n1))
    return (x if res_mlp else 0) + mlp(ln(x, n2))


def _block_mistakes() -> list[Mistake]:
    m = mistake_maker(_block)

    return [
        m(
            "this is a post-LN block (the original Transformer: x = ln(x + attn(x))); GPT-2 is "
            "pre-LN: x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x))",
            order="post",
        ),
        m(
            "you left out the residual connection around attention: x = x + attn(ln_1(x))",
            res_attn=False,
        ),
        m(
            "you left out the residual connection around the MLP: x = x + mlp(ln_2(x))",
            res_mlp=False,
        ),
        m(
            "you left out both residual connections: x = x + attn(ln_1(x)), then "
            "x = x + mlp(ln_2(x))",
            res_attn=False,
            res_mlp=False,
        ),
        m(
            "the residual must carry the un-normalised x: x = x + attn(ln_1(x)), not "
            "h = ln_1(x); x = h + attn(h)",
            order="norm_residual",
        ),
        m(
            "the MLP must read the stream after attention: x = x + attn(ln_1(x)) first, then "
            "x = x + mlp(ln_2(x)) with that new x (not ln_2 of the block's input)",
            order="parallel",
        ),
        m("ln_1 and ln_2 swapped: ln_1 comes before attention, ln_2 before the MLP", swap_ln=True),
        m(
            "no causal mask: position t must not attend to later positions (mask the scores "
            "with causal_mask(T))",
            causal=False,
        ),
        m(
            "divide the attention scores by sqrt(D) with D = C // n_heads (the head size), not "
            "by sqrt(C)",
            scale="C",
        ),
        m(
            "the MLP uses the exact (erf) GELU: GPT-2 uses the tanh form (your gelu)",
            act="erf",
        ),
    ]


def _block_params(s: Session, C: int) -> dict[str, Tensor]:
    """Random block weights with logits/activations of order 1 (LayerNorms not the identity)."""
    p: dict[str, Tensor] = {}
    for name in ("ln_1", "ln_2"):
        p[f"{name}.weight"] = 1 + 0.3 * s.randn(C)
        p[f"{name}.bias"] = 0.2 * s.randn(C)
    for key, (d_out, d_in) in {
        "attn.c_attn": (3 * C, C),
        "attn.c_proj": (C, C),
        "mlp.c_fc": (4 * C, C),
        "mlp.c_proj": (C, 4 * C),
    }.items():
        p[f"{key}.weight"], p[f"{key}.bias"] = _rand_linear(s, d_out, d_in)
    return {k: p[k] for k in gref.BLOCK_KEYS}


def _params_unchanged(s: Session, out: Outcome, index: int, what: str) -> None:
    """The learner's function must leave the params dict (and its tensors) as they were."""
    before, after = out.args[index], out.args_after[index]
    same = isinstance(after, dict) and set(after) == set(before)
    same = same and all(
        isinstance(after[k], Tensor)
        and after[k].shape == v.shape
        and after[k].dtype == v.dtype
        and torch.equal(after[k], v)
        for k, v in before.items()
    )
    s.expect(
        same,
        f"{s.name} changed `{what}` in place (a tensor, or the dict's keys); leave the "
        "parameters as they were: no .t_(), no p[key] = ..., no in-place ops on the weights",
        out,
    )


def _verify_causal_call(
    s: Session, args: tuple, kind: Kind, reference: Any, mistakes: list[Mistake], message: str
) -> None:
    """Call the learner's function on ``args`` = (batch, params, H), whose rows B.. repeat rows
    ..B with a different last position, and verify the values and, from the same output, that
    earlier positions did not change (causality). ``params`` must come back unchanged."""
    out = s.call(*args, mutable=(1,))
    _params_unchanged(s, out, 1, "params")
    kind, expected = reference_answer(kind, reference, *args)
    B = args[0].shape[0] // 2

    def causal(value: Tensor) -> str | None:
        first, second = value[:B, :-1].double(), value[B:, :-1].double()
        if first.shape == second.shape and not torch.allclose(
            first, second, atol=kind.atol, rtol=1e-5
        ):
            return message
        return None

    verify(s, out, kind, expected, mistakes=mistakes, properties=[causal])


def _block_sizes(s: Session) -> list[tuple[int, int, int, int]]:
    if not s.hidden:
        return [(2, 5, 2, 4), (1, 6, 3, 2), (2, 4, 1, 8)]  # (B, T, H, D)
    r = s.rng
    return [(r.randint(1, 2), r.randint(3, 6), r.randint(2, 4), r.randint(2, 4)) for _ in range(2)]


def grade_transformer_block(s: Session) -> None:
    s.inplace_hint = "Do not change x in place (no x += ...); write x = x + ... instead."
    s.error_hints = [
        ("cannot be multiplied", _LINEAR_HINT),
        ("must match the size of tensor", _LINEAR_HINT),
        (
            "KeyError",
            "The block's keys are 'ln_1.weight', 'attn.c_attn.weight', ..., 'mlp.c_proj.bias' "
            "(no 'h.0.' or 'transformer.' prefix): see the exercise's list.",
        ),
    ]
    for B, T, H, D in _block_sizes(s):
        C = H * D
        x = s.randn(B, T, C)
        x2 = x.clone()
        x2[:, -1] = s.randn(B, C)  # a different last position, in rows B..2B of the batch
        x = torch.cat([x, x2])
        params = _block_params(s, C)
        _verify_causal_call(
            s,
            (x, params, H),
            TensorOut((2 * B, T, C), "float", rtol=1e-5, atol=1e-6),
            gref.transformer_block,
            _block_mistakes(),
            "changing the last position's input changed the outputs at earlier positions: the "
            "attention must be causal (mask the scores with causal_mask(T), True = may attend)",
        )


# ------------------------------------------------------------------------------------------------
# gpt2_forward
# ------------------------------------------------------------------------------------------------


def _forward(
    ids: Tensor,
    p: dict,
    H: int,
    *,
    pos: str = "arange",
    ln_f: bool = True,
    scale_emb: bool = False,
    layers: str = "all",
    softmax: bool = False,
    head: str = "wte.T",
    **block_flags: Any,
) -> Tensor:
    """GPT-2's forward with switches for the classic mistakes (all defaults: the right answer)."""
    T = ids.shape[1]
    wte, wpe = p["wte.weight"], p["wpe.weight"]
    x = wte[ids] * (math.sqrt(wte.shape[1]) if scale_emb else 1.0)
    if pos == "arange":
        x = x + wpe[torch.arange(T)]
    elif pos == "ids":
        x = x + wpe[ids]
    L = len({k.split(".")[1] for k in p if k.startswith("h.")})
    order = {"all": range(L), "skip_last": range(L - 1), "first": range(1)}[layers]
    for i in order:
        block = {k[len(f"h.{i}.") :]: v for k, v in p.items() if k.startswith(f"h.{i}.")}
        x = _block(x, block, H, **block_flags)
    if ln_f:
        x = _ln(x, p["ln_f.weight"], p["ln_f.bias"], 1e-5)
    logits = x @ (wte.T if head == "wte.T" else wte)
    return torch.softmax(logits, dim=-1) if softmax else logits


def _forward_mistakes() -> list[Mistake]:
    m = mistake_maker(_forward)

    return [
        m(
            "you left out the position embeddings: x = wte[input_ids] + wpe[arange(T)] "
            "(attention alone cannot tell the order of the tokens)",
            pos="none",
        ),
        m(
            "the position embedding is looked up by position, 0..T-1 (torch.arange(T)), not by "
            "token id: wpe[torch.arange(T)]",
            pos="ids",
        ),
        m(
            "you forgot the final LayerNorm: x = layer_norm(x, ln_f.weight, ln_f.bias) after the "
            "last block, before the output layer",
            ln_f=False,
        ),
        m(
            "GPT-2 does not scale the token embeddings by sqrt(C) (the original Transformer "
            "did): x = wte[input_ids] + wpe[arange(T)]",
            scale_emb=True,
        ),
        m(
            "you skipped the last block: run every block h.0 ... h.{L-1}, with L read from the "
            "keys (e.g. 1 + the largest i among the 'h.{i}.' keys)",
            layers="skip_last",
        ),
        m(
            "you ran only block h.0: loop over every block h.0 ... h.{L-1}, with L read from "
            "the keys",
            layers="first",
        ),
        m(
            "return the logits, not probabilities: leave out the softmax (the loss and the "
            "sampler apply it themselves)",
            softmax=True,
        ),
        m(
            "the output layer is tied to the token embedding, which is (V, C): logits = "
            "x @ params['wte.weight'].T",
            head="wte",
        ),
        m(
            "your blocks are post-LN (x = ln(x + attn(x))); GPT-2 is pre-LN: x = x + "
            "attn(ln_1(x)), then x = x + mlp(ln_2(x))",
            order="post",
        ),
        m(
            "your blocks have no causal mask: position t must not attend to later positions",
            causal=False,
        ),
        m(
            "you left out the residual connections in the blocks: x = x + attn(ln_1(x)), then "
            "x = x + mlp(ln_2(x))",
            res_attn=False,
            res_mlp=False,
        ),
        m(
            "the residual must carry the un-normalised x: x = x + attn(ln_1(x)), not "
            "h = ln_1(x); x = h + attn(h)",
            order="norm_residual",
        ),
        m("your MLP uses the exact (erf) GELU: GPT-2 uses the tanh form", act="erf"),
    ]


def _gpt_params(s: Session, V: int, P: int, C: int, L: int) -> dict[str, Tensor]:
    p = {"wte.weight": s.randn(V, C, scale=0.5), "wpe.weight": s.randn(P, C, scale=0.5)}
    for i in range(L):
        p.update({f"h.{i}.{k}": v for k, v in _block_params(s, C).items()})
    p["ln_f.weight"] = 1 + 0.3 * s.randn(C)
    p["ln_f.bias"] = 0.2 * s.randn(C)
    return p


def _gpt_sizes(s: Session) -> list[tuple[int, ...]]:
    """(B, T, V, P, H, D, L); one visible case has V == C, so an untransposed wte runs."""
    if not s.hidden:
        return [(2, 5, 23, 8, 2, 4, 2), (1, 7, 16, 7, 4, 4, 1), (2, 4, 31, 12, 3, 2, 3)]
    r = s.rng
    sizes = []
    for L in (r.randint(1, 2), 3):
        H, D = r.randint(1, 3), r.randint(2, 4)
        T = r.randint(3, 6)
        sizes.append((r.randint(1, 2), T, r.randint(17, 40), T + r.randint(0, 4), H, D, L))
    return sizes


def grade_gpt2_forward(s: Session) -> None:
    s.inplace_hint = "Do not change input_ids or the parameters in place; compute new tensors."
    s.error_hints = [
        (
            "'lm_head.weight'",
            "There is no 'lm_head.weight': GPT-2's output layer is tied to the token embedding, "
            "logits = x @ params['wte.weight'].T.",
        ),
        (
            "'transformer.",
            "The keys have no 'transformer.' prefix: 'wte.weight', 'wpe.weight', 'h.0.ln_1.weight', "
            "..., 'ln_f.weight' (params_from_hf drops it).",
        ),
        (
            "cannot be multiplied",
            _LINEAR_HINT + " The output layer is x @ params['wte.weight'].T, wte being (V, C).",
        ),
        ("must match the size of tensor", _LINEAR_HINT),
        (
            "KeyError",
            "The keys are 'wte.weight', 'wpe.weight', 'h.{i}.<block key>' for i = 0..L-1 and "
            "'ln_f.weight', 'ln_f.bias'; read L from them (the number of distinct i).",
        ),
        (
            "IndexError",
            "An index is out of range: token embeddings are looked up by id, wte[input_ids] "
            "(B, T, C); position embeddings are looked up by position, wpe[torch.arange(T)] "
            "(T, C).",
        ),
    ]
    for B, T, V, P, H, D, L in _gpt_sizes(s):
        C = H * D
        ids = s.randint(0, V, B, T)
        ids2 = ids.clone()
        ids2[:, -1] = (ids2[:, -1] + 1 + s.randint(0, V - 1, B)) % V  # a different last token
        ids = torch.cat([ids, ids2])  # rows B..2B: the same text with another last token
        params = _gpt_params(s, V, P, C, L)
        _verify_causal_call(
            s,
            (ids, params, H),
            TensorOut((2 * B, T, V), "float", rtol=1e-5, atol=1e-6, what="logits"),
            gref.gpt2_forward,
            _forward_mistakes(),
            "changing the last token changed the logits at earlier positions: every block's "
            "attention must be causal (causal_mask(T), True = may attend)",
        )


# ------------------------------------------------------------------------------------------------
# count_parameters
# ------------------------------------------------------------------------------------------------


class _IntOut(Kind):
    """A Python int, compared exactly."""

    what = "count"

    def check_type(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float):
                return (
                    f"your {self.what} is a float ({value!r}); return an int: use integer "
                    "arithmetic (* and +, // if you divide) or int(...)"
                )
            if isinstance(value, Tensor):
                return f"your {self.what} is a tensor; return a Python int (.item() or int(...))"
            return f"your {self.what} is {describe_type(value)}; return a Python int"
        return None

    def same(self, a: Any, b: Any) -> bool:
        return isinstance(a, int) and isinstance(b, int) and a == b

    def mismatch(self, a: Any, b: Any) -> str:
        return f"your count is {a:,}, expected {b:,} (off by {a - b:+,})"


def _count(
    V: int,
    P: int,
    C: int,
    L: int,
    *,
    tied: bool = True,
    wpe: bool = True,
    ln_f: bool = True,
    per_block: tuple[int, int] = (12, 13),
    layers: int = 0,
    embeddings: bool = True,
) -> int:
    a, b = per_block
    n = (L + layers) * (a * C * C + b * C) + (2 * C if ln_f else 0)
    if embeddings:
        n += V * C + (P * C if wpe else 0)
    return n + (0 if tied else V * C)


def _count_mistakes() -> list[Mistake]:
    m = mistake_maker(_count)

    return [
        m(
            "you counted the output layer separately (V*C more): with weight tying lm_head *is* "
            "wte, so count it once",
            tied=False,
        ),
        m("you forgot the position embeddings wpe (P*C)", wpe=False),
        m("you forgot the final LayerNorm ln_f (weight and bias: 2*C)", ln_f=False),
        m(
            "you forgot the biases of the four projections (3C + C + 4C + C = 9C per block): "
            "each block has 12*C*C + 13*C parameters",
            per_block=(12, 4),
        ),
        m(
            "each LayerNorm has a weight and a bias (2*C): a block has 12*C*C + 13*C parameters",
            per_block=(12, 11),
        ),
        m("you forgot the two LayerNorms of each block (2*C each)", per_block=(12, 9)),
        m(
            "the bias of mlp.c_proj has C entries (its output size), not 4*C: a block has "
            "12*C*C + 13*C parameters",
            per_block=(12, 16),
        ),
        m(
            "you forgot the attention output projection attn.c_proj (C*C + C per block)",
            per_block=(11, 12),
        ),
        m(
            "the MLP expands to 4*C: c_fc is (4C, C) and c_proj (C, 4C), 8*C*C + 5*C together",
            per_block=(6, 10),
        ),
        m("you counted one block too few: there are n_layer blocks", layers=-1),
        m("you counted one block too many: there are n_layer blocks", layers=1),
        m(
            "you forgot the embeddings: the token table wte (V*C) and the position table wpe "
            "(P*C) are parameters too",
            embeddings=False,
        ),
    ]


def grade_count_parameters(s: Session) -> None:
    r = s.rng
    cases = []
    if not s.hidden:
        cases += [(50257, 1024, 768, 12), (2048, 128, 192, 2), (50257, 1024, 1024, 24)]
    cases += [
        (
            r.randint(100, 60000),
            r.choice([64, 256, 1024, 2048]),
            64 * r.randint(1, 25),
            r.randint(2, 48),
        )
        for _ in range(3)
    ]
    for V, P, C, L in cases:
        out = s.call(V, P, C, L)
        verify(s, out, _IntOut(), gref.count_parameters(V, P, C, L), mistakes=_count_mistakes())
