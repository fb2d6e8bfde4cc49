"""Learner-style attention functions (notebook 04): right and wrong."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from grading_impl import bug, right

# ------------------------------------------------------------------------------------------------
# attention_scores
# ------------------------------------------------------------------------------------------------


def attention_scores(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def attention_scores_einsum(q, k):
    return torch.einsum("...qd,...kd->...qk", q, k) * q.shape[-1] ** -0.5


@bug("attention_scores", "sqrt(d_k) times too large")
def attention_scores_unscaled(q, k):
    return q @ k.transpose(-2, -1)


@bug("attention_scores", "you divided by d_k")
def attention_scores_by_d(q, k):
    return q @ k.transpose(-2, -1) / q.shape[-1]


@bug("attention_scores", "k.transpose(-2, -1)")
def attention_scores_dot_T(q, k):
    with warnings.catch_warnings():  # torch warns that .T on a batch is deprecated
        warnings.simplefilter("ignore")
        return q @ k.T / math.sqrt(q.shape[-1])


@bug("attention_scores", "the softmax comes later")
def attention_scores_softmaxed(q, k):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


@bug("attention_scores", "you computed k @ q^T")
def attention_scores_k_q(q, k):
    return k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1])


@bug("attention_scores", "not by the number of keys")
def attention_scores_sqrt_T(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(k.shape[-2])


# ------------------------------------------------------------------------------------------------
# causal_mask
# ------------------------------------------------------------------------------------------------


def causal_mask(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool))


def causal_mask_arange(T):
    i = torch.arange(T)
    return i[None, :] <= i[:, None]


@bug("causal_mask", "mask inverted")
def causal_mask_inverted(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)


@bug("causal_mask", "return a bool tensor")
def causal_mask_float(T):
    return torch.tril(torch.ones(T, T))


@bug("causal_mask", "the diagonal must be True")
def causal_mask_strict(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)


@bug("causal_mask", "your mask is transposed")
def causal_mask_triu(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool))


@bug("causal_mask", "the additive form")
def causal_mask_additive(T):
    return torch.zeros(T, T).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))


# ------------------------------------------------------------------------------------------------
# scaled_dot_product_attention
# ------------------------------------------------------------------------------------------------


def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_large_negative_and_where(q, k, v, mask=None):
    scores = torch.matmul(q, k.transpose(-1, -2)) / q.size(-1) ** 0.5
    if mask is not None:
        scores = torch.where(mask, scores, torch.tensor(-1e9))
    scores = scores - scores.amax(dim=-1, keepdim=True)
    weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)
    return [weights @ v, weights]  # a list of two is accepted


def sdpa_fused_output(q, k, v, mask=None):
    """The output from PyTorch's fused kernel: other float32 rounding than q @ k^T, softmax, @ v."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), torch.softmax(scores, -1)


def sdpa_other_summation_order(q, k, v, mask=None):
    """Scale q first, sum the channels in another order, weight the values by broadcasting.

    Mathematically the reference; in float32 it rounds like another CPU's kernels would.
    """
    order = torch.arange(q.shape[-1] - 1, -1, -1)
    scores = (q[..., order] / math.sqrt(q.shape[-1])) @ k[..., order].transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    e = (scores - scores.amax(-1, keepdim=True)).exp()
    weights = e / e.sum(-1, keepdim=True)
    return (weights.unsqueeze(-1) * v.unsqueeze(-3)).sum(-2), weights


@bug("scaled_dot_product_attention", "mask applied after softmax")
def sdpa_mask_after_softmax(q, k, v, mask=None):
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    if mask is not None:
        weights = weights * mask
    return weights @ v, weights


@bug("scaled_dot_product_attention", "mask inverted: True means may attend")
def sdpa_mask_inverted(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


@bug("scaled_dot_product_attention", "this is QK^T V without softmax")
def sdpa_no_softmax(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores * mask
    return scores @ v, scores


@bug("scaled_dot_product_attention", "sqrt(d_k) times too large")
def sdpa_unscaled(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


@bug("scaled_dot_product_attention", "did you apply softmax over dim=-1?")
def sdpa_softmax_over_queries(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-2)
    return weights @ v, weights


@bug("scaled_dot_product_attention", "you ignored the mask")
def sdpa_ignores_mask(q, k, v, mask=None):
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ v, weights


@bug("scaled_dot_product_attention", "masking with 0 does not remove a key")
def sdpa_fills_zero(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, 0.0)
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


@bug("scaled_dot_product_attention", "return (output, weights) in that order")
def sdpa_swapped(q, k, v, mask=None):
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    return weights, out


# ------------------------------------------------------------------------------------------------
# split_heads and merge_heads
# ------------------------------------------------------------------------------------------------


def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)


def split_heads_stack(x, n_heads):
    return torch.stack(x.chunk(n_heads, dim=-1), dim=1)


@bug("split_heads", "heads split by reshape without transpose")
def split_heads_reshape_only(x, n_heads):
    B, T, C = x.shape
    return x.reshape(B, n_heads, T, C // n_heads)


@bug("split_heads", "not every n_heads-th channel")
def split_heads_interleaved(x, n_heads):
    B, T, C = x.shape
    return x.view(B, T, C // n_heads, n_heads).permute(0, 3, 1, 2)


@bug("split_heads", "you returned (B, T, n_heads, D)")
def split_heads_no_transpose(x, n_heads):
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads)


@bug("split_heads", "heads of size n_heads")
def split_heads_sizes_swapped(x, n_heads):
    B, T, C = x.shape
    return x.view(B, T, C // n_heads, n_heads).transpose(1, 2)


def merge_heads(x):
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)


def merge_heads_cat(x):
    return torch.cat(x.unbind(dim=1), dim=-1)


@bug("merge_heads", "merged by reshape without transpose")
def merge_heads_reshape_only(x):
    B, H, T, D = x.shape
    return x.reshape(B, T, H * D)


@bug("merge_heads", "not contiguous")
def merge_heads_view(x):
    B, H, T, D = x.shape
    return x.transpose(1, 2).view(B, T, H * D)


@bug("merge_heads", "channels are interleaved")
def merge_heads_interleaved(x):
    B, H, T, D = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, H * D)


@bug("merge_heads", "flatten the heads")
def merge_heads_unflattened(x):
    return x.transpose(1, 2)


# ------------------------------------------------------------------------------------------------
# multi_head_self_attention
# ------------------------------------------------------------------------------------------------


def multi_head_self_attention(x, w_qkv, b_qkv, w_out, b_out, n_heads):
    B, T, C = x.shape
    q, k, v = (x @ w_qkv.T + b_qkv).split(C, dim=-1)
    q, k, v = (split_heads(t, n_heads) for t in (q, k, v))
    mask = causal_mask(T)
    y, _ = scaled_dot_product_attention(q, k, v, mask)
    return merge_heads(y) @ w_out.T + b_out


def mhsa_torch_fused(x, w_qkv, b_qkv, w_out, b_out, n_heads):
    B, T, C = x.shape
    q, k, v = F.linear(x, w_qkv, b_qkv).chunk(3, dim=-1)
    q, k, v = (t.unflatten(-1, (n_heads, -1)).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.linear(y.transpose(1, 2).flatten(2), w_out, b_out)


def mhsa_head_loop(x, w_qkv, b_qkv, w_out, b_out, n_heads):
    B, T, C = x.shape
    D = C // n_heads
    qkv = x @ w_qkv.T + b_qkv
    heads = []
    for h in range(n_heads):
        q = qkv[..., h * D : (h + 1) * D]
        k = qkv[..., C + h * D : C + (h + 1) * D]
        v = qkv[..., 2 * C + h * D : 2 * C + (h + 1) * D]
        heads.append(scaled_dot_product_attention(q, k, v, causal_mask(T))[0])
    return torch.cat(heads, dim=-1) @ w_out.T + b_out


@bug("multi_head_self_attention", "q, k, v in that order")
def mhsa_kqv(x, w_qkv, b_qkv, w_out, b_out, n_heads):
    B, T, C = x.shape
    k, q, v = (x @ w_qkv.T + b_qkv).split(C, dim=-1)
    q, k, v = (split_heads(t, n_heads) for t in (q, k, v))
    y, _ = scaled_dot_product_attention(q, k, v, causal_mask(T))
    return merge_heads(y) @ w_out.T + b_out


@bug("multi_head_self_attention", "no causal mask")
def mhsa_not_causal(x, w_qkv, b_qkv, w_out, b_out, n_heads):
    B, T, C = x.shape
    q, k, v = (x @ w_qkv.T + b_qkv).split(C, dim=-1)
    q, k, v = (split_heads(t, n_heads) for t in (q, k, v))
    y, _ = scaled_dot_product_attention(q, k, v)
    return merge_heads(y) @ w_out.T + b_out


@bug("multi_head_self_attention", "w_out uses the nn.Linear layout")
def mhsa_w_out_untransposed(x, w_qkv, b_qkv, w_out, b_out, n_heads):
    B, T, C = x.shape
    q, k, v = (x @ w_qkv.T + b_qkv).split(C, dim=-1)
    q, k, v = (split_heads(t, n_heads) for t in (q, k, v))
    y, _ = scaled_dot_product_attention(q, k, v, causal_mask(T))
    return merge_heads(y) @ w_out + b_out


@bug("multi_head_self_attention", "you left out the output projection")
def mhsa_no_projection(x, w_qkv, b_qkv, w_out, b_out, n_heads):
    B, T, C = x.shape
    q, k, v = (x @ w_qkv.T + b_qkv).split(C, dim=-1)
    q, k, v = (split_heads(t, n_heads) for t in (q, k, v))
    y, _ = scaled_dot_product_attention(q, k, v, causal_mask(T))
    return merge_heads(y)


@bug("multi_head_self_attention", "x @ w_qkv.T + b_qkv")
def mhsa_w_qkv_untransposed(x, w_qkv, b_qkv, w_out, b_out, n_heads):
    B, T, C = x.shape
    q, k, v = (x @ w_qkv + b_qkv).split(C, dim=-1)
    q, k, v = (split_heads(t, n_heads) for t in (q, k, v))
    y, _ = scaled_dot_product_attention(q, k, v, causal_mask(T))
    return merge_heads(y) @ w_out.T + b_out


@bug("multi_head_self_attention", "not by sqrt(C)")
def mhsa_scaled_by_model_width(x, w_qkv, b_qkv, w_out, b_out, n_heads):
    B, T, C = x.shape
    q, k, v = (x @ w_qkv.T + b_qkv).split(C, dim=-1)
    q, k, v = (split_heads(t, n_heads) for t in (q, k, v))
    scores = (q @ k.transpose(-2, -1) / math.sqrt(C)).masked_fill(~causal_mask(T), float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v
    return merge_heads(y) @ w_out.T + b_out


@bug("multi_head_self_attention", "heads split by reshape without transpose")
def mhsa_split_without_transpose(x, w_qkv, b_qkv, w_out, b_out, n_heads):
    B, T, C = x.shape
    q, k, v = (x @ w_qkv.T + b_qkv).split(C, dim=-1)
    q, k, v = (t.reshape(B, n_heads, T, C // n_heads) for t in (q, k, v))
    y, _ = scaled_dot_product_attention(q, k, v, causal_mask(T))
    return merge_heads(y) @ w_out.T + b_out


@bug("multi_head_self_attention", "you ignored n_heads")
def mhsa_one_head(x, w_qkv, b_qkv, w_out, b_out, n_heads):
    B, T, C = x.shape
    q, k, v = (x @ w_qkv.T + b_qkv).split(C, dim=-1)
    y, _ = scaled_dot_product_attention(q, k, v, causal_mask(T))
    return y @ w_out.T + b_out


IMPLS = [
    right("attention_scores", attention_scores, "reference"),
    right("attention_scores", attention_scores_einsum),
    attention_scores_unscaled,
    attention_scores_by_d,
    attention_scores_dot_T,
    attention_scores_softmaxed,
    attention_scores_k_q,
    attention_scores_sqrt_T,
    right("causal_mask", causal_mask, "reference"),
    right("causal_mask", causal_mask_arange),
    causal_mask_inverted,
    causal_mask_float,
    causal_mask_strict,
    causal_mask_triu,
    causal_mask_additive,
    right("scaled_dot_product_attention", scaled_dot_product_attention, "reference"),
    right("scaled_dot_product_attention", sdpa_large_negative_and_where),
    right("scaled_dot_product_attention", sdpa_fused_output),
    right("scaled_dot_product_attention", sdpa_other_summation_order),
    sdpa_mask_after_softmax,
    sdpa_mask_inverted,
    sdpa_no_softmax,
    sdpa_unscaled,
    sdpa_softmax_over_queries,
    sdpa_ignores_mask,
    sdpa_fills_zero,
    sdpa_swapped,
    right("split_heads", split_heads, "reference"),
    right("split_heads", split_heads_stack),
    split_heads_reshape_only,
    split_heads_interleaved,
    split_heads_no_transpose,
    split_heads_sizes_swapped,
    right("merge_heads", merge_heads, "reference"),
    right("merge_heads", merge_heads_cat),
    merge_heads_reshape_only,
    merge_heads_view,
    merge_heads_interleaved,
    merge_heads_unflattened,
    right("multi_head_self_attention", multi_head_self_attention, "reference"),
    right("multi_head_self_attention", mhsa_torch_fused),
    right("multi_head_self_attention", mhsa_head_loop),
    mhsa_kqv,
    mhsa_not_causal,
    mhsa_w_out_untransposed,
    mhsa_no_projection,
    mhsa_w_qkv_untransposed,
    mhsa_scaled_by_model_width,
    mhsa_split_without_transpose,
    mhsa_one_head,
]
