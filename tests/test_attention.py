"""course_lib.attention: every teaching function against torch or Hugging Face, plus the KV cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, LlamaConfig
from transformers.models.gpt2.modeling_gpt2 import GPT2Attention
from transformers.models.llama import modeling_llama as hf_llama

from course_lib.attention import (
    KVCache,
    apply_rope,
    attention_scores,
    causal_attention,
    causal_mask,
    merge_heads,
    multi_head_self_attention,
    repeat_kv,
    rope_cos_sin,
    rotate_half,
    scaled_dot_product_attention,
    split_heads,
    to_half_split,
    to_interleaved,
)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- one head -----------------------------------------------------------------------------------


def test_attention_scores_hand_computed():
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    k = torch.tensor([[2.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 4.0]])
    expected = torch.tensor([[2.0, 1.0, 0.0], [2.0, 2.0, 4.0]]) / 2.0  # sqrt(D) = 2
    torch.testing.assert_close(attention_scores(q, k), expected)


def test_attention_scores_leading_dims():
    q, k = randn(2, 3, 5, 8), randn(2, 3, 7, 8, seed=1)
    assert attention_scores(q, k).shape == (2, 3, 5, 7)
    torch.testing.assert_close(
        attention_scores(q, k), torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(8)
    )


def test_causal_mask():
    expected = torch.tensor(
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(causal_mask(4), expected)
    assert causal_mask(1).dtype == torch.bool and causal_mask(1).item()


def _random_mask(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.5
    mask[..., 0] = True  # every query keeps at least one key
    return mask


@pytest.mark.parametrize(
    "q_shape, k_len, dv, mask_kind",
    [
        ((2, 3, 5, 8), 5, 8, None),
        ((2, 3, 5, 8), 7, 4, None),  # Tq != Tk, Dv != D
        ((2, 3, 6, 8), 6, 8, "causal"),  # (T, T) mask broadcast over (B, H)
        ((2, 3, 5, 8), 7, 8, "random"),  # full-shape random mask
        ((4, 5, 8), 9, 3, "random-broadcast"),  # (1, Tq, Tk) mask, no head dim
    ],
)
def test_sdpa_equals_torch(q_shape, k_len, dv, mask_kind):
    *lead, Tq, D = q_shape
    q, k, v = randn(*q_shape), randn(*lead, k_len, D, seed=1), randn(*lead, k_len, dv, seed=2)
    mask = None
    if mask_kind == "causal":
        mask = causal_mask(Tq)
    elif mask_kind == "random":
        mask = _random_mask((*lead, Tq, k_len), seed=3)
    elif mask_kind == "random-broadcast":
        mask = _random_mask((1, Tq, k_len), seed=3)
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert weights.shape == (*lead, Tq, k_len)
    torch.testing.assert_close(weights.sum(-1), torch.ones(*lead, Tq))
    if mask is not None:
        assert (weights.masked_select(~mask.expand_as(weights)) == 0).all()  # exactly 0


def test_sdpa_causal_equals_torch_is_causal():
    q, k, v = randn(2, 2, 6, 4), randn(2, 2, 6, 4, seed=1), randn(2, 2, 6, 4, seed=2)
    out, weights = scaled_dot_product_attention(q, k, v, causal_mask(6))
    torch.testing.assert_close(
        out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6, rtol=1e-5
    )
    assert torch.equal(weights[..., 0, :], torch.tensor([1.0, 0, 0, 0, 0, 0]).expand(2, 2, 6))


def test_sdpa_is_stable_and_does_not_modify_inputs():
    q, k, v = randn(3, 4) * 1000, randn(5, 4, seed=1) * 1000, randn(5, 2, seed=2)
    copies = [t.clone() for t in (q, k, v)]
    out, weights = scaled_dot_product_attention(q, k, v)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    for t, c in zip((q, k, v), copies):
        assert torch.equal(t, c)


def test_sdpa_fully_masked_row_is_nan_and_bad_shapes_fail_in_torch():
    """The teaching functions read like the notebook's solutions, without input checks: a query
    that may attend to nothing gets NaN (0 / 0), and mismatched shapes fail in torch itself."""
    q, k, v = randn(3, 4), randn(5, 4, seed=1), randn(5, 2, seed=2)
    mask = causal_mask(5)[2:]  # (3, 5)
    mask[1] = False
    out, w = scaled_dot_product_attention(q, k, v, mask)
    assert out[1].isnan().all() and not out[[0, 2]].isnan().any()
    with pytest.raises(TypeError):
        scaled_dot_product_attention(q, k, v, torch.ones(3, 5))  # a float mask has no ~
    with pytest.raises(RuntimeError):
        scaled_dot_product_attention(q, k, v, torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(RuntimeError):
        scaled_dot_product_attention(q, k, randn(6, 2))
    with pytest.raises(RuntimeError):
        attention_scores(randn(5, 8), randn(5, 4))


# --- many heads ---------------------------------------------------------------------------------


def test_split_heads_layout_and_merge_inverse():
    x = randn(2, 5, 12)
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    for h in range(3):
        assert torch.equal(heads[:, h], x[..., h * 4 : (h + 1) * 4])
    assert torch.equal(merge_heads(heads), x)
    assert merge_heads(heads).shape == (2, 5, 12)
    with pytest.raises(RuntimeError):
        split_heads(x, 5)  # 5 does not divide 12
    with pytest.raises(ValueError):
        split_heads(randn(5, 12), 3)  # no batch dim: B, T, C = x.shape cannot unpack


def _mha_params(C: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(3 * C, C, generator=g) / math.sqrt(C),
        torch.randn(3 * C, generator=g) * 0.1,
        torch.randn(C, C, generator=g) / math.sqrt(C),
        torch.randn(C, generator=g) * 0.1,
    )


@pytest.mark.parametrize("C, n_heads", [(8, 1), (12, 3), (16, 4)])
def test_mha_equals_torch_multihead_attention(C, n_heads):
    x = randn(2, 7, C)
    w_qkv, b_qkv, w_out, b_out = _mha_params(C)
    mha = torch.nn.MultiheadAttention(C, n_heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(w_qkv)
        mha.in_proj_bias.copy_(b_qkv)
        mha.out_proj.weight.copy_(w_out)
        mha.out_proj.bias.copy_(b_out)
    # nn.MultiheadAttention's bool mask means the opposite of ours: True = may NOT attend.
    expected, _ = mha(x, x, x, attn_mask=~causal_mask(7), need_weights=False)
    out = multi_head_self_attention(x, w_qkv, b_qkv, w_out, b_out, n_heads)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_mha_equals_hf_gpt2_attention():
    C, n_heads = 12, 3
    config = GPT2Config(n_embd=C, n_head=n_heads, n_layer=1, attn_implementation="eager")
    attn = GPT2Attention(config, layer_idx=0).eval()
    w_qkv, b_qkv, w_out, b_out = _mha_params(C, seed=1)
    with torch.no_grad():  # HF's Conv1D stores (d_in, d_out): transpose our (d_out, d_in)
        attn.c_attn.weight.copy_(w_qkv.T)
        attn.c_attn.bias.copy_(b_qkv)
        attn.c_proj.weight.copy_(w_out.T)
        attn.c_proj.bias.copy_(b_out)
    x = randn(2, 6, C)
    additive = torch.zeros(6, 6).masked_fill(~causal_mask(6), torch.finfo(torch.float32).min)
    expected, _ = attn(x, attention_mask=additive[None, None])
    out = multi_head_self_attention(x, w_qkv, b_qkv, w_out, b_out, n_heads)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_mha_is_causal():
    x = randn(1, 8, 12)
    params = _mha_params(12)
    out = multi_head_self_attention(x, *params, n_heads=3)
    x2 = x.clone()
    x2[0, 5] += 10.0  # perturb a future token
    out2 = multi_head_self_attention(x2, *params, n_heads=3)
    assert torch.equal(out[0, :5], out2[0, :5])
    assert not torch.allclose(out[0, 5:], out2[0, 5:])


def test_mha_bad_weights_fail_in_torch():
    x = randn(1, 4, 12)
    w_qkv, b_qkv, w_out, b_out = _mha_params(12)
    with pytest.raises(RuntimeError):
        multi_head_self_attention(x, w_qkv.T, b_qkv, w_out, b_out, 3)  # (C, 3C): not nn.Linear's
    with pytest.raises(RuntimeError):
        multi_head_self_attention(x, w_qkv, b_qkv, w_out, b_out, 5)
    with pytest.raises(RuntimeError):
        multi_head_self_attention(x, w_qkv, b_qkv[:12], w_out, b_out, 3)


# --- RoPE ---------------------------------------------------------------------------------------


def test_rotate_half_equals_hf():
    x = randn(2, 3, 5, 8)
    assert torch.equal(rotate_half(x), hf_llama.rotate_half(x))


@pytest.mark.parametrize("head_dim, theta", [(8, 10000.0), (64, 100000.0), (6, 500.0)])
def test_rope_cos_sin_equals_hf_rotary_embedding(head_dim, theta):
    config = LlamaConfig(
        hidden_size=head_dim * 2,
        num_attention_heads=2,
        head_dim=head_dim,
        rope_theta=theta,
        max_position_embeddings=64,
    )
    rotary = hf_llama.LlamaRotaryEmbedding(config)
    positions = torch.tensor([[0, 1, 2, 7, 40, 63]])
    cos_hf, sin_hf = rotary(torch.zeros(1, dtype=torch.float32), positions)
    cos, sin = rope_cos_sin(positions[0], head_dim, theta)
    assert cos.shape == sin.shape == (6, head_dim)
    torch.testing.assert_close(cos, cos_hf[0], atol=0, rtol=0)
    torch.testing.assert_close(sin, sin_hf[0], atol=0, rtol=0)
    cos_int, _ = rope_cos_sin(6, head_dim, theta)  # an int means positions 0..T-1
    torch.testing.assert_close(cos_int, rope_cos_sin(torch.arange(6), head_dim, theta)[0])


def test_apply_rope_equals_hf():
    q, k = randn(2, 4, 6, 8), randn(2, 2, 6, 8, seed=1)
    cos, sin = rope_cos_sin(torch.arange(3, 9), 8, 10000.0)
    q_hf, k_hf = hf_llama.apply_rotary_pos_emb(q, k, cos[None], sin[None])
    torch.testing.assert_close(apply_rope(q, cos, sin), q_hf, atol=0, rtol=0)
    torch.testing.assert_close(apply_rope(k, cos, sin), k_hf, atol=0, rtol=0)


def test_apply_rope_properties():
    x = randn(3, 10, 16)
    cos, sin = rope_cos_sin(10, 16)
    rotated = apply_rope(x, cos, sin)
    torch.testing.assert_close(rotated[:, 0], x[:, 0])  # position 0 is not rotated
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))  # rotations keep lengths
    # the dot product of a rotated query and key depends only on their distance
    q, k = randn(16, seed=1), randn(16, seed=2)
    cos, sin = rope_cos_sin(20, 16)

    def dot(i, j):
        return apply_rope(q.expand(20, 16), cos, sin)[i] @ apply_rope(k.expand(20, 16), cos, sin)[j]

    torch.testing.assert_close(dot(5, 2), dot(15, 12), atol=1e-5, rtol=1e-5)
    assert apply_rope(x.half(), cos[:10], sin[:10]).dtype == torch.float16


def _interleaved_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """The original RoPE: adjacent channels (2i, 2i+1) form a complex number turned by p * theta**(-2i/D)."""
    D = x.shape[-1]
    freqs = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    turn = torch.polar(
        torch.ones(len(positions), D // 2, dtype=torch.float64), positions[:, None].double() * freqs
    )
    z = torch.view_as_complex(x.double().unflatten(-1, (D // 2, 2)).contiguous())
    return torch.view_as_real(z * turn).flatten(-2).to(x.dtype)


def test_half_split_rope_is_interleaved_rope_after_permutation():
    x = randn(2, 3, 7, 8)
    positions = torch.arange(7) * 3
    cos, sin = rope_cos_sin(positions, 8, 500.0)
    half_split = apply_rope(x, cos, sin)
    interleaved = _interleaved_rope(to_interleaved(x), positions, 500.0)
    torch.testing.assert_close(to_interleaved(half_split), interleaved, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(half_split, to_half_split(interleaved), atol=1e-5, rtol=1e-5)


def test_layout_permutations():
    assert to_interleaved(torch.arange(6)).tolist() == [0, 3, 1, 4, 2, 5]
    assert to_half_split(torch.arange(6)).tolist() == [0, 2, 4, 1, 3, 5]
    x = randn(2, 5, 10)
    assert torch.equal(to_half_split(to_interleaved(x)), x)
    assert torch.equal(to_interleaved(to_half_split(x)), x)


def test_rope_tables_for_other_positions_fail_in_torch():
    cos, sin = rope_cos_sin(4, 8)
    with pytest.raises(RuntimeError):
        apply_rope(randn(2, 5, 8), cos, sin)  # 5 positions, tables for 4


# --- grouped-query attention --------------------------------------------------------------------


@pytest.mark.parametrize("n_rep", [1, 2, 3])
def test_repeat_kv_equals_hf(n_rep):
    x = randn(2, 3, 5, 4)
    out = repeat_kv(x, n_rep)
    assert out.shape == (2, 3 * n_rep, 5, 4)
    assert torch.equal(out, hf_llama.repeat_kv(x, n_rep))
    assert torch.equal(out, x.repeat_interleave(n_rep, dim=1))


# --- KV cache and the fused causal kernel -------------------------------------------------------


@pytest.mark.parametrize("Tq, Tk", [(6, 6), (1, 6), (3, 7)])
def test_causal_attention_equals_teaching_version(Tq, Tk):
    q, k, v = randn(2, 3, Tq, 8), randn(2, 3, Tk, 8, seed=1), randn(2, 3, Tk, 8, seed=2)
    # query i sits at position Tk - Tq + i: the bottom Tq rows of the (Tk, Tk) causal mask
    expected, _ = scaled_dot_product_attention(q, k, v, causal_mask(Tk)[Tk - Tq :])
    torch.testing.assert_close(causal_attention(q, k, v), expected, atol=1e-5, rtol=1e-5)


def _dropout_case(Tq: int = 5, Tk: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return randn(2, 3, Tq, 8), randn(2, 3, Tk, 8, seed=1), randn(2, 3, Tk, 8, seed=2)


def test_causal_attention_dropout_zero_ignores_the_random_state():
    """dropout_p=0 (what a model passes in eval mode) draws nothing: any seed, same answer."""
    q, k, v = _dropout_case()
    torch.manual_seed(0)
    first = causal_attention(q, k, v, dropout_p=0.0)
    torch.manual_seed(1)
    assert torch.equal(causal_attention(q, k, v, dropout_p=0.0), first)
    assert torch.equal(causal_attention(q, k, v), first)


def test_causal_attention_dropout_rescales_kept_weights_by_one_over_keep():
    """Query 0 sees only key 0 (weight 1): with v = 1 its output is 0 (dropped) or 1 / (1 - p)."""
    p = 0.25
    q, k, v = randn(8, 4, 5, 8), randn(8, 4, 5, 8, seed=1), torch.ones(8, 4, 5, 8)
    torch.manual_seed(0)
    out = causal_attention(q, k, v, dropout_p=p)[:, :, 0]  # (B, H, Dv): one draw per (b, h)
    scaled = torch.tensor(1.0 / (1 - p)).item()  # in float32, as the kernel computes it
    values = set(out.flatten().tolist())
    assert values == {0.0, scaled}, f"expected only 0 and {scaled}, got {values}"
    assert not torch.equal(causal_attention(q, k, v, dropout_p=p), causal_attention(q, k, v))


@pytest.mark.parametrize("Tq, Tk", [(6, 6), (1, 6), (3, 7)])
def test_causal_attention_dropout_stays_causal(Tq, Tk):
    """Same seed, a changed last key and value: the outputs before the last position are unchanged."""
    q, k, v = _dropout_case(Tq, Tk)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, -1] += 5.0
    v2[:, :, -1] -= 3.0
    torch.manual_seed(0)
    out = causal_attention(q, k, v, dropout_p=0.5)
    torch.manual_seed(0)
    out2 = causal_attention(q, k2, v2, dropout_p=0.5)
    torch.testing.assert_close(out2[:, :, :-1], out[:, :, :-1], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(out2[:, :, -1], out[:, :, -1])  # the last query does see the change


def test_causal_attention_dropout_is_unbiased():
    """The mean over many seeds tends to the p=0 output, within 5 standard errors per entry.

    Each output entry is ``sum_j m_j w_j v_j / (1 - p)`` with independent keep masks ``m_j``, so
    its variance is ``p / (1 - p) * sum_j (w_j v_j)^2``; the bound below is computed from it.
    """
    p, n = 0.3, 400
    q, k, v = _dropout_case()
    exact = causal_attention(q, k, v)
    _, w = scaled_dot_product_attention(q, k, v, causal_mask(5))  # (B, H, T, T)
    var = p / (1 - p) * (w.unsqueeze(-1) ** 2 * v.unsqueeze(-3) ** 2).sum(-2)  # (B, H, T, Dv)
    torch.manual_seed(0)
    mean = torch.stack([causal_attention(q, k, v, dropout_p=p) for _ in range(n)]).mean(0)
    assert ((mean - exact).abs() <= 5 * (var / n).sqrt() + 1e-6).all()
    # a dropout without the 1 / (1 - p) rescaling would be off by a factor 1 - p
    assert not ((mean * (1 - p) - exact).abs() <= 5 * (var / n).sqrt() + 1e-6).all()


def test_kv_cache_update_and_length():
    cache = KVCache()
    assert len(cache) == 0 and cache.get_seq_length() == 0
    k1, v1 = randn(2, 3, 4, 8), randn(2, 3, 4, 8, seed=1)
    for layer in range(2):
        keys, values = cache.update(layer, k1, v1)
        assert torch.equal(keys, k1) and torch.equal(values, v1)
    k2, v2 = randn(2, 3, 1, 8, seed=2), randn(2, 3, 1, 8, seed=3)
    keys, values = cache.update(0, k2, v2)
    assert keys.shape == (2, 3, 5, 8)
    assert torch.equal(keys[:, :, 4:], k2) and torch.equal(values[:, :, :4], v1)
    assert len(cache) == 2 and cache.get_seq_length(0) == 5 and cache.get_seq_length(1) == 4
    with pytest.raises(ValueError, match="skips"):
        cache.update(3, k1, v1)
    with pytest.raises(ValueError, match="new KVCache"):
        cache.update(0, randn(1, 3, 1, 8), randn(1, 3, 1, 8))


def test_kv_cache_reorder():
    cache = KVCache()
    k = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 4, 5)
    cache.update(0, k, k + 10)
    cache.update(1, k, k + 20)
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.keys[0][:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0]
    assert cache.values[1][:, 0, 0, 0].tolist() == [22.0, 22.0, 20.0]


def test_cached_incremental_decoding_equals_full_recomputation():
    """Feed a prompt, then one token at a time, then a chunk of 3: same outputs as one full pass."""
    B, H, T, _D, C = 2, 3, 10, 4, 12
    x = randn(B, T, C)
    w_qkv, b_qkv, _, _ = _mha_params(C)
    q, k, v = (split_heads(t, H) for t in F.linear(x, w_qkv, b_qkv).split(C, dim=-1))
    full, _ = scaled_dot_product_attention(q, k, v, causal_mask(T))

    cache, pieces = KVCache(), []
    for start, stop in [(0, 4), (4, 5), (5, 6), (6, 9), (9, 10)]:
        keys, values = cache.update(0, k[:, :, start:stop], v[:, :, start:stop])
        pieces.append(causal_attention(q[:, :, start:stop], keys, values))
    torch.testing.assert_close(torch.cat(pieces, dim=2), full, atol=1e-5, rtol=1e-5)
    assert cache.get_seq_length() == T


def test_kv_cache_bytes_counts_keys_and_values_and_equals_a_real_cache():
    from course_lib.attention import KVCache, kv_cache_bytes

    L, H_kv, D, T, B = 3, 2, 4, 5, 2
    cache = KVCache()
    for layer in range(L):
        cache.update(layer, torch.zeros(B, H_kv, T, D), torch.zeros(B, H_kv, T, D))
    held = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
    assert kv_cache_bytes(L, H_kv, D, T, B, bytes_per_value=4) == held
    assert kv_cache_bytes(30, 3, 64, 8192, 1) == 188_743_680  # SmolLM2-135M, bf16
    big = kv_cache_bytes(80, 8, 128, 128_000, 64)  # a 70B-class model at 128k context
    assert isinstance(big, int) and big == 2 * 80 * 8 * 128 * 128_000 * 64 * 2
