"""Looking inside a trained model: attention maps, their entropy, induction heads, the logit lens.

Read top-down:

1. ``attention_entropy``: how spread out each query's attention is (0 = one key, log Tk = uniform).
2. ``previous_token_scores`` and ``induction_scores``: how strongly each head follows a pattern,
   read off attention maps (previous-token heads look one position back; induction heads look
   at the token *after* the earlier copy of the current token, which is how a model continues a
   repeated sequence).
3. ``logit_lens``: the final norm and the unembedding applied to an intermediate residual stream,
   i.e. what the model would predict if it stopped at that layer.
4. ``attention_maps`` and ``residual_stream``: run a Hugging Face Llama-style model (SmolLM2)
   and collect what 1-3 need.

Conventions: attention weights are (..., Tq, Tk) with rows summing to 1; natural logarithms
(entropies in nats); weights use the ``torch.nn.Linear`` layout, so the unembedding is (V, C) and
logits are ``h @ unembed.T``. Shapes: ``B`` batch, ``T`` time, ``C`` channels, ``H`` heads,
``L`` layers, ``V`` vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from course_lib.functional import rms_norm

__all__ = [
    "attention_entropy",
    "attention_maps",
    "induction_scores",
    "logit_lens",
    "previous_token_scores",
    "residual_stream",
]


def _require_float(name: str, x: object, min_dim: int = 1) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {type(x).__name__}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} needs at least {min_dim} dims, got shape {tuple(x.shape)}")


# ------------------------------------------------------------------------------------------------
# 1. Entropy of attention
# ------------------------------------------------------------------------------------------------


def attention_entropy(weights: Tensor) -> Tensor:
    """Entropy ``-sum_j w_j log w_j`` of each attention row, in nats, with ``0 log 0 = 0``.

    Args:
        weights: (..., Tk) attention weights, each row summing to 1 (masked keys exactly 0).

    Returns:
        (...,) entropies: 0 when a query attends to one key, ``log n`` when it spreads evenly
        over ``n`` keys.

    Example:
        >>> attention_entropy(torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
        tensor([0.0000, 0.6931])
    """
    _require_float("weights", weights)
    return -torch.special.xlogy(weights, weights).sum(dim=-1)  # xlogy(0, 0) = 0, not NaN


# ------------------------------------------------------------------------------------------------
# 2. Heads that follow a pattern
# ------------------------------------------------------------------------------------------------


def previous_token_scores(attn: Tensor) -> Tensor:
    """Mean attention from each position to the one just before it.

    Args:
        attn: (..., T, T) causal attention weights, e.g. (L, H, T, T).

    Returns:
        (...,) the mean of ``attn[..., i, i - 1]`` over ``i = 1 .. T-1`` (1 = a perfect
        previous-token head).
    """
    _require_float("attn", attn, 2)
    if attn.shape[-1] < 2:
        raise ValueError("previous_token_scores needs at least 2 positions")
    return attn.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=-1)


def induction_scores(attn: Tensor, period: int) -> Tensor:
    """Mean attention to the token after the previous occurrence, on a sequence repeated with
    ``period`` (token ``i`` equals token ``i - period``).

    An induction head at position ``i`` finds the earlier copy of the current token (at
    ``i - period``) and attends to what followed it (``i - period + 1``), the token that is about
    to come next.

    Args:
        attn: (..., T, T) causal attention weights on the repeated sequence.
        period: the length of the repeated block.

    Returns:
        (...,) the mean of ``attn[..., i, i - period + 1]`` over ``i = period .. T-1``.
    """
    _require_float("attn", attn, 2)
    T = attn.shape[-1]
    if not isinstance(period, int) or not 1 <= period < T:
        raise ValueError(f"period must be an int in [1, T) = [1, {T}), got {period!r}")
    return attn.diagonal(offset=-(period - 1), dim1=-2, dim2=-1)[..., 1:].mean(dim=-1)


# ------------------------------------------------------------------------------------------------
# 3. The logit lens
# ------------------------------------------------------------------------------------------------


def logit_lens(hidden: Tensor, norm_weight: Tensor, unembed: Tensor, eps: float = 1e-5) -> Tensor:
    """What an intermediate layer would predict: ``rms_norm(hidden, norm_weight, eps) @ unembed.T``.

    The model's own final norm (RMSNorm for Llama/SmolLM2) and unembedding are applied to a
    residual stream taken from the middle of the network. On the last layer's output this is
    exactly the model's logits.

    Args:
        hidden: (..., C) residual stream (before the final norm).
        norm_weight: (C,) the final norm's weight (``model.model.norm.weight``).
        unembed: (V, C) the output layer's weight (``model.lm_head.weight``), nn.Linear layout.
        eps: the final norm's epsilon (``config.rms_norm_eps``).

    Returns:
        (..., V) logits.
    """
    _require_float("hidden", hidden)
    _require_float("unembed", unembed, 2)
    if unembed.dim() != 2 or unembed.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"unembed must be (V, C) with C = hidden.shape[-1] = {hidden.shape[-1]} (nn.Linear "
            f"layout), got {tuple(unembed.shape)}"
        )
    return rms_norm(hidden, norm_weight, eps) @ unembed.T


# ------------------------------------------------------------------------------------------------
# 4. Collecting attention maps and the residual stream from a Hugging Face model
# ------------------------------------------------------------------------------------------------


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(
            f"expected a Llama-style Hugging Face causal LM (model.model.layers), got "
            f"{type(model).__name__}"
        )
    return layers


@torch.no_grad()
def attention_maps(model: nn.Module, input_ids: Tensor) -> Tensor:
    """Every layer's attention weights, computed with the eager attention kernel.

    The fused kernels (sdpa, flash) never materialise the weights, so the model is switched to
    ``"eager"`` for this call and switched back afterwards.

    Args:
        model: a Hugging Face causal LM (e.g. SmolLM2 from ``load_smollm2()``).
        input_ids: (B, T) token ids.

    Returns:
        (L, B, H, T, T) float32 weights on the CPU; ``[l, b, h, i, j]`` = how much query ``i``
        attends to key ``j`` in head ``h`` of layer ``l``.
    """
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        device = next(model.parameters()).device
        out = model(input_ids=input_ids.to(device), output_attentions=True)
    finally:
        model.set_attn_implementation(before)
    if not out.attentions:
        raise RuntimeError("the model returned no attention weights (output_attentions=True)")
    return torch.stack([a.float().cpu() for a in out.attentions])


@torch.no_grad()
def residual_stream(model: nn.Module, input_ids: Tensor) -> Tensor:
    """The residual stream before the final norm: the embeddings, then each layer's output.

    ``output_hidden_states`` would not do: Hugging Face's last hidden state has the final norm
    already applied. Forward hooks on the decoder layers read the raw outputs instead.

    Args:
        model: a Llama-style Hugging Face causal LM.
        input_ids: (B, T) token ids.

    Returns:
        (L + 1, B, T, C) float32 on the CPU: index 0 is the token embeddings, index ``l + 1`` the
        output of layer ``l``.
    """
    layers = _decoder_layers(model)
    seen: list[Tensor] = []

    def keep(_module: nn.Module, _inputs: object, output: object) -> None:
        seen.append((output[0] if isinstance(output, tuple) else output).float().cpu())

    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        device = next(model.parameters()).device
        ids = input_ids.to(device)
        embeddings = model.get_input_embeddings()(ids).float().cpu()
        model(input_ids=ids)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([embeddings, *seen])
