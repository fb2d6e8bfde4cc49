"""Learner-style functions of notebook 09 (challenges): right and wrong."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from grading_impl import bug, right

# ------------------------------------------------------------------------------------------------
# train_flops
# ------------------------------------------------------------------------------------------------


def train_flops(n_params, n_tokens):
    return 6 * n_params * n_tokens


def train_flops_float(n_params, n_tokens):
    return 6.0 * float(n_params) * float(n_tokens)


def train_flops_split(n_params, n_tokens):
    forward = 2 * n_params * n_tokens
    backward = 2 * forward
    return forward + backward


def train_flops_float32_tensor(n_params, n_tokens):
    return torch.tensor(6.0) * float(n_params) * float(n_tokens)  # float32, 0-dim: accepted


@bug("train_flops", "forward pass only (2 N D)")
def train_flops_forward_only(n_params, n_tokens):
    return 2 * n_params * n_tokens


@bug("train_flops", "3 N D counts the backward")
def train_flops_3nd(n_params, n_tokens):
    return 3 * n_params * n_tokens


@bug("train_flops", "int64 (torch or numpy integers) stops at 9.2e18")
def train_flops_int64_tensor(n_params, n_tokens):
    return torch.tensor(n_params) * torch.tensor(n_tokens) * 6


@bug("train_flops", "int64 (torch or numpy integers) stops at 9.2e18")
def train_flops_numpy(n_params, n_tokens):
    with np.errstate(over="ignore"):
        return int(np.int64(6) * np.int64(n_params) * np.int64(n_tokens))


@bug("train_flops", "you added N and D")
def train_flops_sum(n_params, n_tokens):
    return 6 * (n_params + n_tokens)


@bug("train_flops", "the cost of one token")
def train_flops_per_token(n_params, n_tokens):
    return 6 * n_params


# ------------------------------------------------------------------------------------------------
# training_days
# ------------------------------------------------------------------------------------------------


def training_days(n_params, n_tokens, n_gpus, peak_flops, mfu):
    return 6 * n_params * n_tokens / (n_gpus * peak_flops * mfu) / 86400


def training_days_steps(n_params, n_tokens, n_gpus, peak_flops, mfu):
    flops = train_flops(n_params, n_tokens)
    achieved = n_gpus * peak_flops * mfu  # FLOP/s the whole cluster really delivers
    seconds = flops / achieved
    return seconds / (24 * 60 * 60)


def training_days_torch(n_params, n_tokens, n_gpus, peak_flops, mfu):
    flops = torch.tensor(6.0, dtype=torch.float64) * n_params * n_tokens
    return (flops / (n_gpus * peak_flops * mfu) / 86400).item()


@bug("training_days", "your answer is in seconds")
def training_days_seconds(n_params, n_tokens, n_gpus, peak_flops, mfu):
    return 6 * n_params * n_tokens / (n_gpus * peak_flops * mfu)


@bug("training_days", "your answer is in hours")
def training_days_hours(n_params, n_tokens, n_gpus, peak_flops, mfu):
    return 6 * n_params * n_tokens / (n_gpus * peak_flops * mfu) / 3600


@bug("training_days", "you forgot the MFU")
def training_days_no_mfu(n_params, n_tokens, n_gpus, peak_flops, mfu):
    return 6 * n_params * n_tokens / (n_gpus * peak_flops) / 86400


@bug("training_days", "you multiplied by the MFU")
def training_days_times_mfu(n_params, n_tokens, n_gpus, peak_flops, mfu):
    return 6 * n_params * n_tokens * mfu / (n_gpus * peak_flops) / 86400


@bug("training_days", "you multiplied by n_gpus")
def training_days_times_gpus(n_params, n_tokens, n_gpus, peak_flops, mfu):
    return 6 * n_params * n_tokens * n_gpus / (peak_flops * mfu) / 86400


@bug("training_days", "you forgot n_gpus")
def training_days_one_gpu(n_params, n_tokens, n_gpus, peak_flops, mfu):
    return 6 * n_params * n_tokens / (peak_flops * mfu) / 86400


@bug("training_days", "not 2 N D")
def training_days_forward_only(n_params, n_tokens, n_gpus, peak_flops, mfu):
    return 2 * n_params * n_tokens / (n_gpus * peak_flops * mfu) / 86400


@bug("training_days", "floor division")
def training_days_floor(n_params, n_tokens, n_gpus, peak_flops, mfu):
    return 6 * n_params * n_tokens / (n_gpus * peak_flops * mfu) // 86400


# ------------------------------------------------------------------------------------------------
# kv_cache_bytes
# ------------------------------------------------------------------------------------------------


def kv_cache_bytes(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value=2):
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value


def kv_cache_bytes_prod(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value=2):
    per_layer = math.prod([n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value])
    return n_layers * (per_layer + per_layer)  # keys + values


def kv_cache_bytes_per_token(
    n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value=2
):
    per_token = 2 * n_layers * n_kv_heads * head_dim * bytes_per_value
    return int(per_token) * seq_len * batch_size


@bug("kv_cache_bytes", "you counted the keys only")
def kv_cache_bytes_keys_only(
    n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value=2
):
    return n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value


@bug("kv_cache_bytes", "that is bits, not bytes")
def kv_cache_bytes_bits(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value=2):
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value * 8


@bug("kv_cache_bytes", "you forgot the layers")
def kv_cache_bytes_one_layer(
    n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value=2
):
    return 2 * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value


@bug("kv_cache_bytes", "you forgot the batch")
def kv_cache_bytes_no_batch(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value=2):
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * bytes_per_value


@bug("kv_cache_bytes", "hard-coded 2?")
def kv_cache_bytes_fixed_dtype(
    n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value=2
):
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch_size * 2


@bug("kv_cache_bytes", "a float is no longer exact above 2**53")
def kv_cache_bytes_float(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value=2):
    return 2.0 * n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value


@bug("kv_cache_bytes", "return a Python int")
def kv_cache_bytes_tensor(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value=2):
    sizes = torch.tensor([2, n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value])
    return sizes.prod()


@bug("kv_cache_bytes", "the default of bytes_per_value must be 2")
def kv_cache_bytes_fp32_default(
    n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value=4
):
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value


# ------------------------------------------------------------------------------------------------
# attention_entropy
# ------------------------------------------------------------------------------------------------


def attention_entropy(weights):
    return -torch.special.xlogy(weights, weights).sum(dim=-1)


def attention_entropy_where(weights):
    plogp = torch.where(weights > 0, weights * torch.log(weights), torch.zeros_like(weights))
    return -plogp.sum(-1)


def attention_entropy_clamp(weights):
    return -(weights * weights.clamp_min(1e-12).log()).sum(-1)


def attention_entropy_nansum(weights):
    return -(weights * weights.log()).nansum(dim=-1)


def attention_entropy_float64(weights):
    w = weights.double()
    return -(w * torch.log(w + 1e-30)).sum(-1)


@bug("attention_entropy", "0 * log 0 gave NaN")
def attention_entropy_nan(weights):
    return -(weights * torch.log(weights)).sum(-1)


@bug("attention_entropy", "you used log2 (entropy in bits)")
def attention_entropy_bits(weights):
    return -torch.where(weights > 0, weights * torch.log2(weights), 0.0).sum(-1)


@bug("attention_entropy", "you summed over the queries")
def attention_entropy_wrong_dim(weights):
    return -torch.special.xlogy(weights, weights).sum(dim=-2)


@bug("attention_entropy", "you forgot the minus sign")
def attention_entropy_no_minus(weights):
    return torch.special.xlogy(weights, weights).sum(dim=-1)


@bug("attention_entropy", "you took the mean over the keys")
def attention_entropy_mean(weights):
    return -torch.special.xlogy(weights, weights).mean(dim=-1)


@bug("attention_entropy", "do not apply softmax to them again")
def attention_entropy_softmax(weights):
    p = F.softmax(weights, dim=-1)
    return -(p * p.log()).sum(-1)


@bug("attention_entropy", "modify weights in place")
def attention_entropy_inplace(weights):
    weights.clamp_(min=1e-12)
    return -(weights * weights.log()).sum(-1)


# ------------------------------------------------------------------------------------------------
# logit_lens
# ------------------------------------------------------------------------------------------------


def logit_lens(hidden, norm_weight, unembed, eps=1e-5):
    normed = hidden / torch.sqrt(hidden.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (normed * norm_weight) @ unembed.T


def logit_lens_torch(hidden, norm_weight, unembed, eps=1e-5):
    normed = F.rms_norm(hidden, (hidden.shape[-1],), norm_weight, eps=eps)
    return F.linear(normed, unembed)


def logit_lens_rsqrt_einsum(hidden, norm_weight, unembed, eps=1e-5):
    scale = torch.rsqrt((hidden * hidden).mean(-1, keepdim=True) + eps)
    return torch.einsum("...c,vc->...v", hidden * scale * norm_weight, unembed)


@bug("logit_lens", "that is LayerNorm")
def logit_lens_layer_norm(hidden, norm_weight, unembed, eps=1e-5):
    normed = F.layer_norm(hidden, (hidden.shape[-1],), norm_weight, eps=eps)
    return normed @ unembed.T


@bug("logit_lens", "you skipped the final norm")
def logit_lens_no_norm(hidden, norm_weight, unembed, eps=1e-5):
    return hidden @ unembed.T


@bug("logit_lens", "multiply by unembed.T, not unembed")
def logit_lens_not_transposed(hidden, norm_weight, unembed, eps=1e-5):
    normed = hidden / torch.sqrt(hidden.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (normed * norm_weight) @ unembed


@bug("logit_lens", "eps belongs inside the square root")
def logit_lens_eps_outside(hidden, norm_weight, unembed, eps=1e-5):
    normed = hidden / (hidden.pow(2).mean(dim=-1, keepdim=True).sqrt() + eps)
    return (normed * norm_weight) @ unembed.T


@bug("logit_lens", "you forgot the norm's weight")
def logit_lens_no_weight(hidden, norm_weight, unembed, eps=1e-5):
    normed = hidden / torch.sqrt(hidden.pow(2).mean(dim=-1, keepdim=True) + eps)
    return normed @ unembed.T


@bug("logit_lens", "you ignored the eps argument")
def logit_lens_fixed_eps(hidden, norm_weight, unembed, eps=1e-5):
    normed = hidden / torch.sqrt(hidden.pow(2).mean(dim=-1, keepdim=True) + 1e-6)
    return (normed * norm_weight) @ unembed.T


@bug("logit_lens", "the L2 norm")
def logit_lens_l2(hidden, norm_weight, unembed, eps=1e-5):
    return (F.normalize(hidden, dim=-1) * norm_weight) @ unembed.T


@bug("logit_lens", "hidden /= ...")
def logit_lens_inplace(hidden, norm_weight, unembed, eps=1e-5):
    hidden /= torch.sqrt(hidden.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (hidden * norm_weight) @ unembed.T


IMPLS = [
    right("train_flops", train_flops, "reference"),
    right("train_flops", train_flops_float),
    right("train_flops", train_flops_split),
    right("train_flops", train_flops_float32_tensor),
    train_flops_forward_only,
    train_flops_3nd,
    train_flops_int64_tensor,
    train_flops_numpy,
    train_flops_sum,
    train_flops_per_token,
    right("training_days", training_days, "reference"),
    right("training_days", training_days_steps),
    right("training_days", training_days_torch),
    training_days_seconds,
    training_days_hours,
    training_days_no_mfu,
    training_days_times_mfu,
    training_days_times_gpus,
    training_days_one_gpu,
    training_days_forward_only,
    training_days_floor,
    right("kv_cache_bytes", kv_cache_bytes, "reference"),
    right("kv_cache_bytes", kv_cache_bytes_prod),
    right("kv_cache_bytes", kv_cache_bytes_per_token),
    kv_cache_bytes_keys_only,
    kv_cache_bytes_bits,
    kv_cache_bytes_one_layer,
    kv_cache_bytes_no_batch,
    kv_cache_bytes_fixed_dtype,
    kv_cache_bytes_float,
    kv_cache_bytes_tensor,
    kv_cache_bytes_fp32_default,
    right("attention_entropy", attention_entropy, "reference"),
    right("attention_entropy", attention_entropy_where),
    right("attention_entropy", attention_entropy_clamp),
    right("attention_entropy", attention_entropy_nansum),
    right("attention_entropy", attention_entropy_float64),
    attention_entropy_nan,
    attention_entropy_bits,
    attention_entropy_wrong_dim,
    attention_entropy_no_minus,
    attention_entropy_mean,
    attention_entropy_softmax,
    attention_entropy_inplace,
    right("logit_lens", logit_lens, "reference"),
    right("logit_lens", logit_lens_torch),
    right("logit_lens", logit_lens_rsqrt_einsum),
    logit_lens_layer_norm,
    logit_lens_no_norm,
    logit_lens_not_transposed,
    logit_lens_eps_outside,
    logit_lens_no_weight,
    logit_lens_fixed_eps,
    logit_lens_l2,
    logit_lens_inplace,
]
