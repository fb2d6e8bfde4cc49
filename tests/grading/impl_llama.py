"""Learner-style Llama functions (notebook 08): right and wrong."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from grading_impl import bug, right

# ------------------------------------------------------------------------------------------------
# rms_norm
# ------------------------------------------------------------------------------------------------


def rms_norm(x, weight, eps=1e-6):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rms_norm_fused(x, weight, eps=1e-6):
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def rms_norm_float64_div(x, weight, eps=1e-6):
    h = x.double()
    rms = torch.sqrt((h * h).sum(dim=-1, keepdim=True) / h.shape[-1] + eps)
    return (h / rms).to(x.dtype) * weight


@bug("rms_norm", "that is LayerNorm")
def rms_norm_layer_norm(x, weight, eps=1e-6):
    h = x.float()
    h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, keepdim=True, unbiased=False) + eps)
    return weight * h.to(x.dtype)


@bug("rms_norm", "eps belongs inside the square root")
def rms_norm_eps_outside(x, weight, eps=1e-6):
    h = x.float()
    h = h / (torch.sqrt(h.pow(2).mean(-1, keepdim=True)) + eps)
    return weight * h.to(x.dtype)


@bug("rms_norm", "not of the sum")
def rms_norm_sum(x, weight, eps=1e-6):
    h = x.float()
    h = h / torch.sqrt(h.pow(2).sum(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


@bug("rms_norm", "before casting back")
def rms_norm_weight_before_cast(x, weight, eps=1e-6):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (weight.float() * h).to(x.dtype)


@bug("rms_norm", "you normalised in bfloat16")
def rms_norm_no_upcast(x, weight, eps=1e-6):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


@bug("rms_norm", "HF's LlamaRMSNorm returns bfloat16")
def rms_norm_no_cast_back(x, weight, eps=1e-6):
    h = x.float()
    return weight.float() * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)


@bug("rms_norm", "(1 + weight)")
def rms_norm_gemma(x, weight, eps=1e-6):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (1 + weight) * h.to(x.dtype)


@bug("rms_norm", "the default of eps must be 1e-06")
def rms_norm_default_eps(x, weight, eps=1e-5):
    return rms_norm(x, weight, eps)


# ------------------------------------------------------------------------------------------------
# rope_cos_sin
# ------------------------------------------------------------------------------------------------


def rope_cos_sin(positions, head_dim, theta=10000.0):
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    freqs = positions.float()[:, None] * inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


def rope_cos_sin_negative_power(positions, head_dim, theta=10000.0):
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(positions.float(), inv_freq).repeat(1, 2)
    return torch.cos(angles), torch.sin(angles)


def rope_cos_sin_float64(positions, head_dim, theta=10000.0):
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    freqs = positions.double()[:, None] * torch.exp(-math.log(theta) * 2 * i / head_dim)
    angles = torch.cat([freqs, freqs], -1)
    return angles.cos(), angles.sin()


@bug("rope_cos_sin", "that is the interleaved layout")
def rope_cos_sin_interleaved(positions, head_dim, theta=10000.0):
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = (positions.float()[:, None] * inv_freq).repeat_interleave(2, dim=-1)
    return angles.cos(), angles.sin()


@bug("rope_cos_sin", "you used arange(D) / D")
def rope_cos_sin_arange_d(positions, head_dim, theta=10000.0):
    inv_freq = 1.0 / theta ** (torch.arange(head_dim).float() / head_dim)
    angles = positions.float()[:, None] * inv_freq
    return angles.cos(), angles.sin()


@bug("rope_cos_sin", "duplicate them")
def rope_cos_sin_not_duplicated(positions, head_dim, theta=10000.0):
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = positions.float()[:, None] * inv_freq
    return angles.cos(), angles.sin()


@bug("rope_cos_sin", "you returned (sin, cos)")
def rope_cos_sin_swapped(positions, head_dim, theta=10000.0):
    cos, sin = rope_cos_sin(positions, head_dim, theta)
    return sin, cos


@bug("rope_cos_sin", "you used i/D")
def rope_cos_sin_half_exponent(positions, head_dim, theta=10000.0):
    inv_freq = 1.0 / theta ** (torch.arange(head_dim // 2).float() / head_dim)
    freqs = positions.float()[:, None] * inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


@bug("rope_cos_sin", "use the given positions")
def rope_cos_sin_from_zero(positions, head_dim, theta=10000.0):
    return rope_cos_sin(torch.arange(len(positions)), head_dim, theta)


@bug("rope_cos_sin", "without the inverse")
def rope_cos_sin_not_inverted(positions, head_dim, theta=10000.0):
    freq = theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    freqs = positions.float()[:, None] * freq
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


# ------------------------------------------------------------------------------------------------
# apply_rope
# ------------------------------------------------------------------------------------------------


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    return x * cos + _rotate_half(x) * sin


def apply_rope_pairs(x, cos, sin):
    D = x.shape[-1] // 2
    x1, x2 = x[..., :D], x[..., D:]
    c, s = cos[..., :D], sin[..., :D]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


def apply_rope_complex(x, cos, sin):
    D = x.shape[-1] // 2
    z = torch.complex(x[..., :D].double(), x[..., D:].double())
    turn = torch.complex(cos[..., :D].double(), sin[..., :D].double())
    r = z * turn
    return torch.cat((r.real, r.imag), dim=-1).to(x.dtype)


@bug("apply_rope", "the sign on the wrong half")
def apply_rope_sign(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((x2, -x1), dim=-1) * sin


@bug("apply_rope", "the sign on the wrong half")
def apply_rope_minus(x, cos, sin):
    return x * cos - _rotate_half(x) * sin


@bug("apply_rope", "that is the interleaved layout")
def apply_rope_interleaved(x, cos, sin):
    rot = torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)
    return x * cos + rot * sin


@bug("apply_rope", "sin and cos are swapped")
def apply_rope_swapped(x, cos, sin):
    return x * sin + _rotate_half(x) * cos


@bug("apply_rope", "rotate_half needs a minus")
def apply_rope_no_minus(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((x2, x1), dim=-1) * sin


@bug("apply_rope", "x.chunk(2, dim=-1)")
def apply_rope_chunk_batch(x, cos, sin):
    x1, x2 = x.chunk(2)
    return x * cos + torch.cat((-x2, x1)) * sin


# ------------------------------------------------------------------------------------------------
# swiglu_mlp
# ------------------------------------------------------------------------------------------------


def swiglu_mlp(x, w_gate, w_up, w_down):
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def swiglu_mlp_linear(x, w_gate, w_up, w_down):
    gate = F.linear(x, w_gate)
    return F.linear(gate * torch.sigmoid(gate) * F.linear(x, w_up), w_down)


def swiglu_mlp_fused(x, w_gate, w_up, w_down):
    gate, up = (x @ torch.cat((w_gate, w_up)).T).chunk(2, dim=-1)
    return torch.einsum("...f,cf->...c", F.silu(gate) * up, w_down)


@bug("swiglu_mlp", "silu goes on the gate, not on the up projection")
def swiglu_mlp_silu_on_up(x, w_gate, w_up, w_down):
    return ((x @ w_gate.T) * F.silu(x @ w_up.T)) @ w_down.T


@bug("swiglu_mlp", "not GELU")
def swiglu_mlp_gelu(x, w_gate, w_up, w_down):
    return (F.gelu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


@bug("swiglu_mlp", "not sigmoid(x) alone")
def swiglu_mlp_sigmoid(x, w_gate, w_up, w_down):
    return (torch.sigmoid(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


@bug("swiglu_mlp", "finish with h @ w_down.T")
def swiglu_mlp_down_untransposed(x, w_gate, w_up, w_down):
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down


@bug("swiglu_mlp", "nn.Linear layout")
def swiglu_mlp_no_transposes(x, w_gate, w_up, w_down):
    return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down


@bug("swiglu_mlp", "before the product")
def swiglu_mlp_silu_after(x, w_gate, w_up, w_down):
    return F.silu((x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


@bug("swiglu_mlp", "the gate multiplies the up projection")
def swiglu_mlp_no_up(x, w_gate, w_up, w_down):
    return F.silu(x @ w_gate.T) @ w_down.T


# ------------------------------------------------------------------------------------------------
# repeat_kv
# ------------------------------------------------------------------------------------------------


def repeat_kv(x, n_rep):
    B, H_kv, T, D = x.shape
    return x[:, :, None].expand(B, H_kv, n_rep, T, D).reshape(B, H_kv * n_rep, T, D)


def repeat_kv_interleave(x, n_rep):
    return torch.repeat_interleave(x, n_rep, dim=1)


def repeat_kv_loop(x, n_rep):
    return torch.cat([x[:, j : j + 1] for j in range(x.shape[1]) for _ in range(n_rep)], dim=1)


@bug("repeat_kv", "you tiled the heads")
def repeat_kv_tile(x, n_rep):
    return x.repeat(1, n_rep, 1, 1)


@bug("repeat_kv", "you tiled the heads")
def repeat_kv_cat(x, n_rep):
    return torch.cat([x] * n_rep, dim=1)


@bug("repeat_kv", "you repeated along time")
def repeat_kv_time(x, n_rep):
    return torch.repeat_interleave(x, n_rep, dim=2)


@bug("repeat_kv", "you repeated along the batch")
def repeat_kv_batch(x, n_rep):
    return torch.repeat_interleave(x, n_rep, dim=0)


@bug("repeat_kv", "merge the two head dims")
def repeat_kv_unflattened(x, n_rep):
    return x[:, :, None].expand(-1, -1, n_rep, -1, -1)


@bug("repeat_kv", "you repeated along the channels")
def repeat_kv_channels(x, n_rep):
    return torch.repeat_interleave(x, n_rep, dim=-1)


# ------------------------------------------------------------------------------------------------
# llama_forward
# ------------------------------------------------------------------------------------------------


def _norm(x, w, eps):
    h = x.float()
    return w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _cos_sin(T, D, theta):
    inv_freq = 1.0 / theta ** (torch.arange(0, D, 2).float() / D)
    freqs = torch.arange(T).float()[:, None] * inv_freq
    angles = torch.cat((freqs, freqs), -1)
    return angles.cos(), angles.sin()


def _llama(
    input_ids,
    params,
    config,
    *,
    rope=True,
    repeat="interleave",
    tied="auto",
    eps=None,
    final_norm=True,
    theta=None,
    post_norm=False,
    causal=True,
):
    H, H_kv = config["num_attention_heads"], config["num_key_value_heads"]
    eps = config["rms_norm_eps"] if eps is None else eps
    theta = config["rope_theta"] if theta is None else theta
    emb = params["model.embed_tokens.weight"]
    B, T = input_ids.shape
    C = emb.shape[1]
    D = C // H
    n_layers = len({k.split(".")[2] for k in params if k.startswith("model.layers.")})
    cos, sin = _cos_sin(T, D, theta)
    x = emb[input_ids]
    for i in range(n_layers):

        def p(name, i=i):
            return params[f"model.layers.{i}.{name}"]

        h = x if post_norm else _norm(x, p("input_layernorm.weight"), eps)
        q = (h @ p("self_attn.q_proj.weight").T).view(B, T, H, D).transpose(1, 2)
        k = (h @ p("self_attn.k_proj.weight").T).view(B, T, H_kv, D).transpose(1, 2)
        v = (h @ p("self_attn.v_proj.weight").T).view(B, T, H_kv, D).transpose(1, 2)
        if rope:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if repeat == "interleave":
            k, v = repeat_kv(k, H // H_kv), repeat_kv(v, H // H_kv)
        elif repeat == "tile":
            k, v = k.repeat(1, H // H_kv, 1, 1), v.repeat(1, H // H_kv, 1, 1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        x = x + y.transpose(1, 2).reshape(B, T, C) @ p("self_attn.o_proj.weight").T
        if post_norm:
            x = _norm(x, p("input_layernorm.weight"), eps)
        h = x if post_norm else _norm(x, p("post_attention_layernorm.weight"), eps)
        x = x + swiglu_mlp(
            h, p("mlp.gate_proj.weight"), p("mlp.up_proj.weight"), p("mlp.down_proj.weight")
        )
        if post_norm:
            x = _norm(x, p("post_attention_layernorm.weight"), eps)
    if final_norm:
        x = _norm(x, params["model.norm.weight"], eps)
    if tied == "auto":
        head = params.get("lm_head.weight", emb)
    elif tied == "always":
        head = emb
    else:
        head = params["lm_head.weight"]
    return x @ head.T


def llama_forward(input_ids, params, config):
    return _llama(input_ids, params, config)


def llama_forward_hf_modules(input_ids, params, config):
    """Build transformers' own LlamaForCausalLM from the state dict: a valid answer too."""
    from transformers import LlamaConfig, LlamaForCausalLM

    V, C = params["model.embed_tokens.weight"].shape
    n_layers = len({k.split(".")[2] for k in params if k.startswith("model.layers.")})
    tied = "lm_head.weight" not in params
    hf_config = LlamaConfig(
        vocab_size=V,
        hidden_size=C,
        intermediate_size=params["model.layers.0.mlp.gate_proj.weight"].shape[0],
        num_hidden_layers=n_layers,
        num_attention_heads=config["num_attention_heads"],
        num_key_value_heads=config["num_key_value_heads"],
        rms_norm_eps=config["rms_norm_eps"],
        rope_theta=config["rope_theta"],
        tie_word_embeddings=tied,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(hf_config).eval()
    state = dict(params)
    if tied:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state)
    with torch.no_grad():
        return model(input_ids).logits


def llama_forward_float64_loop(input_ids, params, config):
    """Head by head, in float64, with explicit masks."""
    p64 = {k: v.double() for k, v in params.items()}
    H, H_kv = config["num_attention_heads"], config["num_key_value_heads"]
    eps = config["rms_norm_eps"]
    emb = p64["model.embed_tokens.weight"]
    B, T = input_ids.shape
    C = emb.shape[1]
    D = C // H
    inv = config["rope_theta"] ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv
    cos, sin = torch.cat((ang, ang), -1).cos(), torch.cat((ang, ang), -1).sin()
    mask = torch.ones(T, T, dtype=torch.bool).tril()

    def norm(x, w):
        return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)

    x = emb[input_ids]
    i = 0
    while f"model.layers.{i}.input_layernorm.weight" in p64:
        pre = f"model.layers.{i}."
        h = norm(x, p64[pre + "input_layernorm.weight"])
        q = h @ p64[pre + "self_attn.q_proj.weight"].T
        k = h @ p64[pre + "self_attn.k_proj.weight"].T
        v = h @ p64[pre + "self_attn.v_proj.weight"].T
        heads = []
        for hq in range(H):
            j = hq // (H // H_kv)
            qh = apply_rope(q[..., hq * D : (hq + 1) * D], cos, sin)
            kh = apply_rope(k[..., j * D : (j + 1) * D], cos, sin)
            s = (qh @ kh.transpose(-2, -1) / math.sqrt(D)).masked_fill(~mask, -math.inf)
            heads.append(torch.softmax(s, -1) @ v[..., j * D : (j + 1) * D])
        x = x + torch.cat(heads, -1) @ p64[pre + "self_attn.o_proj.weight"].T
        h = norm(x, p64[pre + "post_attention_layernorm.weight"])
        x = x + swiglu_mlp(
            h,
            p64[pre + "mlp.gate_proj.weight"],
            p64[pre + "mlp.up_proj.weight"],
            p64[pre + "mlp.down_proj.weight"],
        )
        i += 1
    x = norm(x, p64["model.norm.weight"])
    return (x @ p64.get("lm_head.weight", emb).T).float()


@bug("llama_forward", "no RoPE")
def llama_forward_no_rope(input_ids, params, config):
    return _llama(input_ids, params, config, rope=False)


@bug("llama_forward", "not a tiling")
def llama_forward_tiled_heads(input_ids, params, config):
    return _llama(input_ids, params, config, repeat="tile")


@bug("llama_forward", "repeat each key/value head with repeat_kv")
def llama_forward_no_repeat(input_ids, params, config):
    return _llama(input_ids, params, config, repeat="none")


@bug("llama_forward", "this model's output layer is not tied")
def llama_forward_always_tied(input_ids, params, config):
    return _llama(input_ids, params, config, tied="always")


@bug("llama_forward", "params has no 'lm_head.weight' when the output layer is tied")
def llama_forward_never_tied(input_ids, params, config):
    return _llama(input_ids, params, config, tied="never")


@bug("llama_forward", "config['rms_norm_eps']")
def llama_forward_default_eps(input_ids, params, config):
    return _llama(input_ids, params, config, eps=1e-6)


@bug("llama_forward", "you left out the final norm")
def llama_forward_no_final_norm(input_ids, params, config):
    return _llama(input_ids, params, config, final_norm=False)


@bug("llama_forward", "config['rope_theta']")
def llama_forward_default_theta(input_ids, params, config):
    return _llama(input_ids, params, config, theta=10000.0)


@bug("llama_forward", "post-norm")
def llama_forward_post_norm(input_ids, params, config):
    return _llama(input_ids, params, config, post_norm=True)


@bug("llama_forward", "no causal mask")
def llama_forward_not_causal(input_ids, params, config):
    return _llama(input_ids, params, config, causal=False)


IMPLS = [
    right("rms_norm", rms_norm, "reference"),
    right("rms_norm", rms_norm_fused),
    right("rms_norm", rms_norm_float64_div),
    rms_norm_layer_norm,
    rms_norm_eps_outside,
    rms_norm_sum,
    rms_norm_weight_before_cast,
    rms_norm_no_upcast,
    rms_norm_no_cast_back,
    rms_norm_gemma,
    rms_norm_default_eps,
    right("rope_cos_sin", rope_cos_sin, "reference"),
    right("rope_cos_sin", rope_cos_sin_negative_power),
    right("rope_cos_sin", rope_cos_sin_float64),
    rope_cos_sin_interleaved,
    rope_cos_sin_arange_d,
    rope_cos_sin_not_duplicated,
    rope_cos_sin_swapped,
    rope_cos_sin_half_exponent,
    rope_cos_sin_from_zero,
    rope_cos_sin_not_inverted,
    right("apply_rope", apply_rope, "reference"),
    right("apply_rope", apply_rope_pairs),
    right("apply_rope", apply_rope_complex),
    apply_rope_sign,
    apply_rope_minus,
    apply_rope_interleaved,
    apply_rope_swapped,
    apply_rope_no_minus,
    apply_rope_chunk_batch,
    right("swiglu_mlp", swiglu_mlp, "reference"),
    right("swiglu_mlp", swiglu_mlp_linear),
    right("swiglu_mlp", swiglu_mlp_fused),
    swiglu_mlp_silu_on_up,
    swiglu_mlp_gelu,
    swiglu_mlp_sigmoid,
    swiglu_mlp_down_untransposed,
    swiglu_mlp_no_transposes,
    swiglu_mlp_silu_after,
    swiglu_mlp_no_up,
    right("repeat_kv", repeat_kv, "reference"),
    right("repeat_kv", repeat_kv_interleave),
    right("repeat_kv", repeat_kv_loop),
    repeat_kv_tile,
    repeat_kv_cat,
    repeat_kv_time,
    repeat_kv_batch,
    repeat_kv_unflattened,
    repeat_kv_channels,
    right("llama_forward", llama_forward, "reference"),
    right("llama_forward", llama_forward_hf_modules),
    right("llama_forward", llama_forward_float64_loop),
    llama_forward_no_rope,
    llama_forward_tiled_heads,
    llama_forward_no_repeat,
    llama_forward_always_tied,
    llama_forward_never_tied,
    llama_forward_default_eps,
    llama_forward_no_final_norm,
    llama_forward_default_theta,
    llama_forward_post_norm,
    llama_forward_not_causal,
]
