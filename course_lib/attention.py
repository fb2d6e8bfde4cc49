"""Attention, from primitives: the reference answers of notebook 04, plus the pieces of notebook 08.

Read top-down, each function builds on the ones above it:

1. ``attention_scores`` -> ``causal_mask`` -> ``scaled_dot_product_attention``: one head.
2. ``split_heads`` / ``merge_heads`` -> ``multi_head_self_attention``: GPT-2's attention layer.
3. ``rotate_half`` -> ``rope_cos_sin`` -> ``apply_rope`` (+ ``to_interleaved``/``to_half_split``):
   rotary position embeddings as Llama uses them.
4. ``repeat_kv``: grouped-query attention shares one key/value head among several query heads.
5. ``KVCache`` (its size: ``kv_cache_bytes``) and ``causal_attention``: what the models in
   ``course_lib.gpt`` and ``course_lib.llama`` run at speed (fused kernel, keys and values kept
   between decoding steps).

Conventions: weights use the ``torch.nn.Linear`` layout ``(d_out, d_in)``, so ``y = x @ W.T + b``;
a boolean mask is ``True`` where a query may attend to a key; RoPE uses Hugging Face's
half-split ("rotate_half") layout. Shapes: ``B`` batch, ``T`` time, ``C`` channels, ``H`` heads,
``D`` head size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "KVCache",
    "apply_rope",
    "attention_scores",
    "causal_attention",
    "causal_mask",
    "kv_cache_bytes",
    "merge_heads",
    "multi_head_self_attention",
    "repeat_kv",
    "rope_cos_sin",
    "rotate_half",
    "scaled_dot_product_attention",
    "split_heads",
    "to_half_split",
    "to_interleaved",
]


def _require_tensor(name: str, x: object, min_dim: int = 0) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(x).__name__}: wrap it in torch.tensor(...)"
        )
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dims, got shape {tuple(x.shape)}")


def _require_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


# ------------------------------------------------------------------------------------------------
# 1. One head of attention
# ------------------------------------------------------------------------------------------------


def attention_scores(q: Tensor, k: Tensor) -> Tensor:
    """Scaled dot products between every query and every key.

    Args:
        q: queries (..., Tq, D).
        k: keys (..., Tk, D); leading dims broadcast with q's.

    Returns:
        Scores (..., Tq, Tk): ``q @ k^T / sqrt(D)``. Dividing by ``sqrt(D)`` keeps the scores'
        variance near 1 whatever the head size, so the softmax does not saturate.

    Example:
        >>> attention_scores(torch.ones(1, 4), torch.ones(2, 4))
        tensor([[2., 2.]])
    """
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def causal_mask(T: int) -> Tensor:
    """The causal mask: query ``i`` may attend to key ``j`` exactly when ``j <= i``.

    Args:
        T: sequence length.

    Returns:
        Bool (T, T), True on and below the diagonal.

    Example:
        >>> causal_mask(3).int()
        tensor([[1, 0, 0],
                [1, 1, 0],
                [1, 1, 1]], dtype=torch.int32)
    """
    return torch.tril(torch.ones(T, T, dtype=torch.bool))


def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Attention for one or more heads: softmax over the keys of the scaled scores, times values.

    Args:
        q: queries (..., Tq, D).
        k: keys (..., Tk, D).
        v: values (..., Tk, Dv).
        mask: optional bool tensor broadcastable to (..., Tq, Tk); True means "may attend"
            (as in ``torch.nn.functional.scaled_dot_product_attention``).

    Returns:
        ``(out, weights)``: out (..., Tq, Dv), weights (..., Tq, Tk). Each row of ``weights``
        sums to 1 and masked entries are exactly 0.

        A query row that may attend to nothing has no softmax (0 / 0) and gives NaN.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0 after the softmax
    weights = torch.softmax(scores, dim=-1)  # over the keys
    return weights @ v, weights


# ------------------------------------------------------------------------------------------------
# 2. Many heads: GPT-2's attention layer
# ------------------------------------------------------------------------------------------------


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """Cut the channels into ``n_heads`` heads: head ``h`` gets channels ``h*D:(h+1)*D``.

    Args:
        x: (B, T, C), with C divisible by n_heads.
        n_heads: number of heads H.

    Returns:
        (B, H, T, D) with D = C // H.
    """
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)  # (B, H, T, D)


def merge_heads(x: Tensor) -> Tensor:
    """Put the heads side by side again: the inverse of ``split_heads``.

    Args:
        x: (B, H, T, D).

    Returns:
        (B, T, H*D).
    """
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)


def multi_head_self_attention(
    x: Tensor,
    w_qkv: Tensor,
    b_qkv: Tensor,
    w_out: Tensor,
    b_out: Tensor,
    n_heads: int,
) -> Tensor:
    """Causal multi-head self-attention with GPT-2's fused q, k, v projection.

    Args:
        x: (B, T, C).
        w_qkv: (3C, C) and b_qkv: (3C,): ``x @ w_qkv.T + b_qkv`` holds q, k, v in that order
            along the last dim.
        w_out: (C, C) and b_out: (C,): the output projection.
        n_heads: number of heads H; must divide C.

    Returns:
        (B, T, C).
    """
    _, T, C = x.shape  # (B, T, C)
    qkv = x @ w_qkv.T + b_qkv  # (B, T, 3C)
    q, k, v = (split_heads(t, n_heads) for t in qkv.split(C, dim=-1))  # each (B, H, T, D)
    mask = causal_mask(T).to(x.device)
    out, _ = scaled_dot_product_attention(q, k, v, mask)  # (B, H, T, D)
    return merge_heads(out) @ w_out.T + b_out  # (B, T, C)


# ------------------------------------------------------------------------------------------------
# 3. Rotary position embeddings (RoPE), Hugging Face's half-split layout
# ------------------------------------------------------------------------------------------------


def rotate_half(x: Tensor) -> Tensor:
    """Map the halves ``[x1, x2]`` of the last dim to ``[-x2, x1]``.

    Channel ``i`` and channel ``i + D/2`` form one 2-D pair; this is the 90-degree turn of every
    pair, so that ``x * cos + rotate_half(x) * sin`` rotates each pair by its angle.

    Args:
        x: (..., D), D even.

    Returns:
        (..., D).

    Example:
        >>> rotate_half(torch.tensor([1., 2., 3., 4.]))
        tensor([-3., -4.,  1.,  2.])
    """
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(
    positions: Tensor | int,
    head_dim: int,
    theta: float = 10000.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Cosines and sines of the rotary angles, laid out for ``apply_rope`` (half-split).

    Pair ``i`` (channels ``i`` and ``i + D/2``) at position ``p`` turns by the angle
    ``p * theta ** (-2i / D)``: fast turns for the first pairs, slow ones for the last.

    Args:
        positions: int positions (T,) (or any shape (..., T)), or an int T meaning 0..T-1.
        head_dim: D, even.
        theta: the base of the frequencies (10 000 in the RoPE paper; SmolLM2 uses 100 000).
        device: where to build the tables when ``positions`` is an int.
        dtype: the floating dtype the angles are computed in (float32, as HF; float64 for
            an exact answer).

    Returns:
        ``(cos, sin)``, each (..., T, D) of ``dtype``; both halves of the last dim repeat the
        same D/2 angles.
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype (torch.float32, ...), got {dtype}")
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = torch.arange(positions, device=device)
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, dtype=dtype, device=positions.device) / head_dim)
    )
    angles = positions.to(dtype)[..., None] * inv_freq  # (..., T, D/2)
    angles = torch.cat((angles, angles), dim=-1)  # (..., T, D)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate every channel pair of ``x`` by its position's angle (half-split layout).

    Args:
        x: (..., T, D), for example queries or keys (B, H, T, D).
        cos, sin: (T, D) from ``rope_cos_sin`` (or anything broadcastable to x).

    Returns:
        Same shape and dtype as x: ``x * cos + rotate_half(x) * sin``.
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # as HF: the rotation runs in x's dtype
    return x * cos + rotate_half(x) * sin


def to_interleaved(x: Tensor) -> Tensor:
    """Reorder the last dim from half-split ``[a0..a(n-1), b0..b(n-1)]`` to ``[a0, b0, a1, b1, ...]``.

    The original RoPE paper (and Meta's Llama code) rotates adjacent channels ``(2i, 2i+1)``;
    Hugging Face rotates ``(i, i + D/2)``. Both are the same rotation up to this permutation.

    Args:
        x: (..., D), D even.

    Returns:
        (..., D).

    Example:
        >>> to_interleaved(torch.tensor([0, 1, 2, 10, 11, 12]))
        tensor([ 0, 10,  1, 11,  2, 12])
    """
    D = x.shape[-1]
    return x.unflatten(-1, (2, D // 2)).transpose(-1, -2).flatten(-2)


def to_half_split(x: Tensor) -> Tensor:
    """Reorder the last dim from interleaved ``[a0, b0, a1, b1, ...]`` to half-split: the inverse
    of ``to_interleaved``.

    Args:
        x: (..., D), D even.

    Returns:
        (..., D).
    """
    D = x.shape[-1]
    return x.unflatten(-1, (D // 2, 2)).transpose(-1, -2).flatten(-2)


# ------------------------------------------------------------------------------------------------
# 4. Grouped-query attention
# ------------------------------------------------------------------------------------------------


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Repeat each key/value head ``n_rep`` times, so H_kv heads serve H = H_kv * n_rep query heads.

    Query head ``h`` uses key/value head ``h // n_rep`` (copies sit next to each other, as in
    ``torch.repeat_interleave(x, n_rep, dim=1)``).

    Args:
        x: (B, H_kv, T, D).
        n_rep: copies of each head.

    Returns:
        (B, H_kv * n_rep, T, D).
    """
    B, H_kv, T, D = x.shape
    return x[:, :, None].expand(B, H_kv, n_rep, T, D).reshape(B, H_kv * n_rep, T, D)


# ------------------------------------------------------------------------------------------------
# 5. What the models run: a KV cache and the fused causal kernel
# ------------------------------------------------------------------------------------------------


class KVCache:
    """Keys and values of the tokens seen so far, one (keys, values) pair per layer.

    While generating, each new token needs the keys and values of all earlier tokens; keeping
    them turns every step from O(T) token passes into one. Layer ``i`` calls
    ``update(i, k_new, v_new)`` and gets back all its keys and values so far.

    Example:
        >>> cache = KVCache()
        >>> k, v = cache.update(0, torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4))
        >>> k, v = cache.update(0, torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
        >>> k.shape, cache.get_seq_length(), len(cache)
        (torch.Size([1, 2, 6, 4]), 6, 1)
    """

    def __init__(self) -> None:
        self.keys: list[Tensor] = []  # per layer (B, H_kv, T_past, D)
        self.values: list[Tensor] = []

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append new keys and values for one layer and return everything that layer has seen.

        Args:
            layer_idx: the layer (layers are filled in order 0, 1, 2, ... on the first call).
            k: (B, H_kv, T_new, D) new keys.
            v: (B, H_kv, T_new, Dv) new values.

        Returns:
            ``(keys, values)``, (B, H_kv, T_past + T_new, D) and (..., Dv).
        """
        _require_tensor("k", k)
        _require_tensor("v", v)
        if k.dim() != 4 or v.dim() != 4 or k.shape[:3] != v.shape[:3]:
            raise ValueError(
                f"k and v must be (B, H_kv, T_new, D) with the same B, H_kv, T_new, got "
                f"{tuple(k.shape)} and {tuple(v.shape)}"
            )
        _require_int("layer_idx", layer_idx, 0)
        n = len(self.keys)
        if layer_idx == n:  # first tokens for this layer
            self.keys.append(k)
            self.values.append(v)
        elif layer_idx < n:
            old_k = self.keys[layer_idx]
            if old_k.shape[:2] != k.shape[:2] or old_k.shape[3] != k.shape[3]:
                raise ValueError(
                    f"layer {layer_idx} holds keys {tuple(old_k.shape)} but got new keys "
                    f"{tuple(k.shape)}: batch, heads and head size must stay the same "
                    "(start a new KVCache for a new batch)"
                )
            self.keys[layer_idx] = torch.cat((old_k, k), dim=-2)
            self.values[layer_idx] = torch.cat((self.values[layer_idx], v), dim=-2)
        else:
            raise ValueError(
                f"layer_idx={layer_idx} skips layers: the cache holds {n}, fill layer {n} next"
            )
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of positions cached for ``layer_idx`` (0 for an empty cache)."""
        if layer_idx >= len(self.keys):
            return 0
        return self.keys[layer_idx].shape[-2]

    def reorder(self, beam_idx: Tensor) -> None:
        """Keep batch rows ``beam_idx`` (in that order) in every layer, for beam search.

        Args:
            beam_idx: LongTensor (B_new,) of batch rows; rows may repeat.
        """
        _require_tensor("beam_idx", beam_idx)
        if beam_idx.dim() != 1 or beam_idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"beam_idx must be a 1-D integer tensor, got {beam_idx.dtype} {tuple(beam_idx.shape)}"
            )
        for i in range(len(self.keys)):
            idx = beam_idx.to(self.keys[i].device)
            self.keys[i] = self.keys[i].index_select(0, idx)
            self.values[i] = self.values[i].index_select(0, idx)

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        shape = tuple(self.keys[0].shape) if self.keys else None
        return f"KVCache(layers={len(self)}, keys[0]={shape})"


def kv_cache_bytes(
    n_layers: int,
    n_kv_heads: int,
    head_dim: int,
    seq_len: int,
    batch_size: int,
    bytes_per_value: int = 2,
) -> int:
    """Memory a full :class:`KVCache` takes: keys and values of every layer, head and position.

    ``2 * n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value``; the 2
    counts keys and values. Grouped-query attention stores ``n_kv_heads`` heads, not the
    query heads. Python ints never overflow, so any size is exact.

    Args:
        n_layers: transformer blocks (each keeps its own cache).
        n_kv_heads: key/value heads per layer.
        head_dim: D, the size of one head's key (and value) vector.
        seq_len: positions cached (prompt plus generated tokens).
        batch_size: sequences generated together.
        bytes_per_value: 2 for float16/bfloat16, 4 for float32, 1 for 8-bit.

    Example:
        >>> kv_cache_bytes(30, 3, 64, 8192, 1)  # SmolLM2-135M, full context, bf16
        188743680
    """
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value


def causal_attention(q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> Tensor:
    """Causal attention through torch's fused kernel, for queries that are the last Tq of Tk positions.

    Without a cache Tq == Tk and the mask is the plain ``causal_mask``. With a cache the queries
    are the newest tokens: query ``i`` sits at position ``Tk - Tq + i`` and sees keys up to it.
    ``tests/test_attention.py`` proves this equals ``scaled_dot_product_attention`` above.

    Args:
        q: (B, H, Tq, D).
        k: (B, H, Tk, D), Tk >= Tq.
        v: (B, H, Tk, Dv).
        dropout_p: dropout on the attention weights (pass 0.0 in eval mode).

    Returns:
        (B, H, Tq, Dv).
    """
    Tq, Tk = q.shape[-2], k.shape[-2]
    if Tq == Tk:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    if Tq == 1:  # one new token sees everything before it
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if Tq > Tk:
        raise ValueError(f"more queries ({Tq}) than keys ({Tk}): did the KV cache miss an update?")
    mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
