"""Learner-style LayerNorm, GELU, MLP, block, GPT-2 forward and parameter count (notebook 05)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from grading_impl import bug, right

# ------------------------------------------------------------------------------------------------
# layer_norm
# ------------------------------------------------------------------------------------------------


def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def layer_norm_torch(x, weight, bias, eps=1e-5):
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def layer_norm_var_rsqrt_float64(x, weight, bias, eps=1e-5):
    x64 = x.double()
    var, mean = torch.var_mean(x64, dim=-1, keepdim=True, correction=0)
    return ((x64 - mean) * torch.rsqrt(var + eps) * weight.double() + bias.double()).to(x.dtype)


@bug("layer_norm", "unbiased variance")
def layer_norm_unbiased(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


@bug("layer_norm", "eps must go inside the square root")
def layer_norm_eps_outside(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    std = x.var(dim=-1, keepdim=True, unbiased=False).sqrt()
    return (x - mean) / (std + eps) * weight + bias


@bug("layer_norm", "torch.std is the unbiased std")
def layer_norm_torch_std(x, weight, bias, eps=1e-5):
    return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + eps) * weight + bias


@bug("layer_norm", "you ignored the eps argument")
def layer_norm_fixed_eps(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * weight + bias


@bug("layer_norm", "you forgot to subtract the mean")
def layer_norm_rms(x, weight, bias, eps=1e-5):
    return x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * weight + bias


@bug("layer_norm", "normalise over the last dim")
def layer_norm_dim0(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=0, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=0, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


@bug("layer_norm", "forgot the learned scale and shift")
def layer_norm_no_affine(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


@bug("layer_norm", "weight and bias swapped")
def layer_norm_swapped(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * bias + weight


@bug("layer_norm", "changed its input `x` in place")
def layer_norm_in_place(x, weight, bias, eps=1e-5):
    x -= x.mean(dim=-1, keepdim=True)
    return x / torch.sqrt((x**2).mean(dim=-1, keepdim=True) + eps) * weight + bias


# ------------------------------------------------------------------------------------------------
# gelu
# ------------------------------------------------------------------------------------------------


def gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def gelu_torch(x):
    return F.gelu(x, approximate="tanh")


def gelu_sigmoid_identity(x):  # 0.5 (1 + tanh(z)) = sigmoid(2 z)
    return x * torch.sigmoid(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x.pow(3)))


@bug("gelu", "exact (erf) GELU")
def gelu_erf(x):
    return F.gelu(x)


@bug("gelu", "this is ReLU")
def gelu_relu(x):
    return torch.relu(x)


@bug("gelu", "left out the factor 0.5")
def gelu_no_half(x):
    return x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


@bug("gelu", "not sqrt(2 * pi)")
def gelu_sqrt_2pi(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 * math.pi) * (x + 0.044715 * x**3)))


@bug("gelu", "left out the cubic term")
def gelu_no_cubic(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * x))


@bug("gelu", "(cubed), not x**2")
def gelu_squared(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**2)))


@bug("gelu", "sigmoid approximation")
def gelu_quick(x):
    return x * torch.sigmoid(1.702 * x)


@bug("gelu", "changed its input `x` in place")
def gelu_in_place(x):
    inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    return x.mul_(0.5 * (1 + torch.tanh(inner)))


# ------------------------------------------------------------------------------------------------
# mlp
# ------------------------------------------------------------------------------------------------


def mlp(x, w_fc, b_fc, w_proj, b_proj):
    return gelu(x @ w_fc.T + b_fc) @ w_proj.T + b_proj


def mlp_linear(x, w_fc, b_fc, w_proj, b_proj):
    return F.linear(F.gelu(F.linear(x, w_fc, b_fc), approximate="tanh"), w_proj, b_proj)


def mlp_einsum(x, w_fc, b_fc, w_proj, b_proj):
    h = torch.einsum("btc,hc->bth", x, w_fc) + b_fc
    return torch.einsum("bth,ch->btc", gelu_sigmoid_identity(h), w_proj) + b_proj


@bug("mlp", "exact (erf) GELU")
def mlp_erf(x, w_fc, b_fc, w_proj, b_proj):
    return F.gelu(x @ w_fc.T + b_fc) @ w_proj.T + b_proj


@bug("mlp", "this uses ReLU")
def mlp_relu(x, w_fc, b_fc, w_proj, b_proj):
    return torch.relu(x @ w_fc.T + b_fc) @ w_proj.T + b_proj


@bug("mlp", "you left out the GELU")
def mlp_linear_only(x, w_fc, b_fc, w_proj, b_proj):
    return (x @ w_fc.T + b_fc) @ w_proj.T + b_proj


@bug("mlp", "not after the output projection")
def mlp_gelu_twice(x, w_fc, b_fc, w_proj, b_proj):
    return gelu(gelu(x @ w_fc.T + b_fc) @ w_proj.T + b_proj)


@bug("mlp", "add b_fc before the GELU")
def mlp_bias_after(x, w_fc, b_fc, w_proj, b_proj):
    return (gelu(x @ w_fc.T) + b_fc) @ w_proj.T + b_proj


@bug("mlp", "left out the bias b_proj")
def mlp_no_proj_bias(x, w_fc, b_fc, w_proj, b_proj):
    return gelu(x @ w_fc.T + b_fc) @ w_proj.T


@bug("mlp", "nn.Linear layout (d_out, d_in)")
def mlp_conv1d_layout(x, w_fc, b_fc, w_proj, b_proj):
    return gelu(x @ w_fc + b_fc) @ w_proj + b_proj


# ------------------------------------------------------------------------------------------------
# transformer_block (and the attention it needs, written out as a learner would)
# ------------------------------------------------------------------------------------------------


def _attention(x, p, n_heads, causal=True, scale_by_c=False):
    B, T, C = x.shape
    D = C // n_heads
    q, k, v = (x @ p["attn.c_attn.weight"].T + p["attn.c_attn.bias"]).split(C, dim=-1)
    q, k, v = (t.view(B, T, n_heads, D).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(C if scale_by_c else D)
    if causal:
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    y = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
    return y @ p["attn.c_proj.weight"].T + p["attn.c_proj.bias"]


def _mlp_of(x, p, act=gelu):
    return (
        act(x @ p["mlp.c_fc.weight"].T + p["mlp.c_fc.bias"]) @ p["mlp.c_proj.weight"].T
        + p["mlp.c_proj.bias"]
    )


def _ln(x, p, name):
    return layer_norm(x, p[f"{name}.weight"], p[f"{name}.bias"])


def transformer_block(x, params, n_heads):
    x = x + _attention(_ln(x, params, "ln_1"), params, n_heads)
    return x + _mlp_of(_ln(x, params, "ln_2"), params)


def block_torch_fused(x, params, n_heads):
    p = params
    B, T, C = x.shape
    h = F.layer_norm(x, (C,), p["ln_1.weight"], p["ln_1.bias"], 1e-5)
    q, k, v = F.linear(h, p["attn.c_attn.weight"], p["attn.c_attn.bias"]).chunk(3, dim=-1)
    q, k, v = (t.unflatten(-1, (n_heads, C // n_heads)).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(2)
    x = x + F.linear(y, p["attn.c_proj.weight"], p["attn.c_proj.bias"])
    h = F.layer_norm(x, (C,), p["ln_2.weight"], p["ln_2.bias"], 1e-5)
    h = F.gelu(F.linear(h, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"]), approximate="tanh")
    return x + F.linear(h, p["mlp.c_proj.weight"], p["mlp.c_proj.bias"])


def block_head_loop(x, params, n_heads):
    p = params
    T, C = x.shape[1], x.shape[2]
    D = C // n_heads
    h = layer_norm_torch(x, p["ln_1.weight"], p["ln_1.bias"])
    qkv = h @ p["attn.c_attn.weight"].T + p["attn.c_attn.bias"]
    heads = []
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for i in range(n_heads):
        q, k, v = (qkv[..., j * C + i * D : j * C + (i + 1) * D] for j in range(3))
        w = (q @ k.transpose(-2, -1) / math.sqrt(D)).masked_fill(future, -1e9).softmax(-1)
        heads.append(w @ v)
    x = x + torch.cat(heads, dim=-1) @ p["attn.c_proj.weight"].T + p["attn.c_proj.bias"]
    return x + _mlp_of(layer_norm_torch(x, p["ln_2.weight"], p["ln_2.bias"]), p, gelu_torch)


@bug("transformer_block", "this is a post-LN block")
def block_post_ln(x, params, n_heads):
    x = _ln(x + _attention(x, params, n_heads), params, "ln_1")
    return _ln(x + _mlp_of(x, params), params, "ln_2")


@bug("transformer_block", "residual connection around attention")
def block_no_attn_residual(x, params, n_heads):
    x = _attention(_ln(x, params, "ln_1"), params, n_heads)
    return x + _mlp_of(_ln(x, params, "ln_2"), params)


@bug("transformer_block", "residual connection around the MLP")
def block_no_mlp_residual(x, params, n_heads):
    x = x + _attention(_ln(x, params, "ln_1"), params, n_heads)
    return _mlp_of(_ln(x, params, "ln_2"), params)


@bug("transformer_block", "the residual must carry the un-normalised x")
def block_residual_from_norm(x, params, n_heads):
    x = _ln(x, params, "ln_1")
    x = x + _attention(x, params, n_heads)
    x = _ln(x, params, "ln_2")
    return x + _mlp_of(x, params)


@bug("transformer_block", "the MLP must read the stream after attention")
def block_parallel(x, params, n_heads):
    a = _attention(_ln(x, params, "ln_1"), params, n_heads)
    return x + a + _mlp_of(_ln(x, params, "ln_2"), params)


@bug("transformer_block", "ln_1 and ln_2 swapped")
def block_swapped_norms(x, params, n_heads):
    x = x + _attention(_ln(x, params, "ln_2"), params, n_heads)
    return x + _mlp_of(_ln(x, params, "ln_1"), params)


@bug("transformer_block", "no causal mask")
def block_not_causal(x, params, n_heads):
    x = x + _attention(_ln(x, params, "ln_1"), params, n_heads, causal=False)
    return x + _mlp_of(_ln(x, params, "ln_2"), params)


@bug("transformer_block", "exact (erf) GELU")
def block_erf_gelu(x, params, n_heads):
    x = x + _attention(_ln(x, params, "ln_1"), params, n_heads)
    return x + _mlp_of(_ln(x, params, "ln_2"), params, F.gelu)


@bug("transformer_block", "x @ W.T + b")
def block_conv1d_layout(x, params, n_heads):
    p = {k: (v.T if v.dim() == 2 else v) for k, v in params.items()}  # as if it were HF Conv1D
    x = x + _attention(_ln(x, p, "ln_1"), p, n_heads)
    return x + _mlp_of(_ln(x, p, "ln_2"), p)


@bug("transformer_block", "changed `params` in place")
def block_transposes_in_place(x, params, n_heads):  # Conv1D habits: transpose once, then x @ W
    for key in ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"):
        params[key] = params[key].t()
    linear = {k: (v.t() if v.dim() == 2 else v) for k, v in params.items()}
    return transformer_block(x, linear, n_heads)


# ------------------------------------------------------------------------------------------------
# gpt2_forward
# ------------------------------------------------------------------------------------------------


def _layers(params):
    return 1 + max(int(k.split(".")[1]) for k in params if k.startswith("h."))


def _block_params(params, i):
    prefix = f"h.{i}."
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


def gpt2_forward(input_ids, params, n_heads):
    T = input_ids.shape[1]
    x = params["wte.weight"][input_ids] + params["wpe.weight"][torch.arange(T)]
    for i in range(_layers(params)):
        x = transformer_block(x, _block_params(params, i), n_heads)
    x = layer_norm(x, params["ln_f.weight"], params["ln_f.bias"])
    return x @ params["wte.weight"].T


def gpt2_forward_functional(input_ids, params, n_heads):
    T = input_ids.shape[1]
    pos = torch.arange(T, device=input_ids.device)
    x = F.embedding(input_ids, params["wte.weight"]) + F.embedding(pos, params["wpe.weight"])
    n_layer = len({k.split(".")[1] for k in params if k.startswith("h.")})
    for i in range(n_layer):
        x = block_torch_fused(x, _block_params(params, i), n_heads)
    C = x.shape[-1]
    x = F.layer_norm(x, (C,), params["ln_f.weight"], params["ln_f.bias"], 1e-5)
    return F.linear(x, params["wte.weight"])


def gpt2_forward_nn_modules(input_ids, params, n_heads):
    """Copies the weights into torch modules, as a learner fond of nn.Module might."""
    V, C = params["wte.weight"].shape
    wte = torch.nn.Embedding(V, C)
    ln_f = torch.nn.LayerNorm(C)
    with torch.no_grad():
        wte.weight.copy_(params["wte.weight"])
        ln_f.weight.copy_(params["ln_f.weight"])
        ln_f.bias.copy_(params["ln_f.bias"])
        x = wte(input_ids) + params["wpe.weight"][: input_ids.shape[1]]
        for i in range(_layers(params)):
            x = block_head_loop(x, _block_params(params, i), n_heads)
        return ln_f(x) @ wte.weight.T


@bug("gpt2_forward", "left out the position embeddings")
def gpt2_no_positions(input_ids, params, n_heads):
    x = params["wte.weight"][input_ids]
    for i in range(_layers(params)):
        x = transformer_block(x, _block_params(params, i), n_heads)
    return layer_norm(x, params["ln_f.weight"], params["ln_f.bias"]) @ params["wte.weight"].T


@bug("gpt2_forward", "looked up by position")
def gpt2_positions_by_id(input_ids, params, n_heads):
    x = params["wte.weight"][input_ids] + params["wpe.weight"][input_ids]
    for i in range(_layers(params)):
        x = transformer_block(x, _block_params(params, i), n_heads)
    return layer_norm(x, params["ln_f.weight"], params["ln_f.bias"]) @ params["wte.weight"].T


@bug("gpt2_forward", "forgot the final LayerNorm")
def gpt2_no_ln_f(input_ids, params, n_heads):
    T = input_ids.shape[1]
    x = params["wte.weight"][input_ids] + params["wpe.weight"][torch.arange(T)]
    for i in range(_layers(params)):
        x = transformer_block(x, _block_params(params, i), n_heads)
    return x @ params["wte.weight"].T


@bug("gpt2_forward", "There is no 'lm_head.weight'")
def gpt2_untied_head(input_ids, params, n_heads):
    T = input_ids.shape[1]
    x = params["wte.weight"][input_ids] + params["wpe.weight"][torch.arange(T)]
    for i in range(_layers(params)):
        x = transformer_block(x, _block_params(params, i), n_heads)
    x = layer_norm(x, params["ln_f.weight"], params["ln_f.bias"])
    return x @ params["lm_head.weight"].T


@bug("gpt2_forward", "x @ params['wte.weight'].T")
def gpt2_wte_not_transposed(input_ids, params, n_heads):
    T = input_ids.shape[1]
    x = params["wte.weight"][input_ids] + params["wpe.weight"][torch.arange(T)]
    for i in range(_layers(params)):
        x = transformer_block(x, _block_params(params, i), n_heads)
    return layer_norm(x, params["ln_f.weight"], params["ln_f.bias"]) @ params["wte.weight"]


@bug("gpt2_forward", "you skipped the last block")
def gpt2_off_by_one_layers(input_ids, params, n_heads):
    T = input_ids.shape[1]
    x = params["wte.weight"][input_ids] + params["wpe.weight"][torch.arange(T)]
    for i in range(_layers(params) - 1):
        x = transformer_block(x, _block_params(params, i), n_heads)
    return layer_norm(x, params["ln_f.weight"], params["ln_f.bias"]) @ params["wte.weight"].T


@bug("gpt2_forward", "does not scale the token embeddings by sqrt(C)")
def gpt2_scaled_embeddings(input_ids, params, n_heads):
    T, C = input_ids.shape[1], params["wte.weight"].shape[1]
    x = params["wte.weight"][input_ids] * math.sqrt(C) + params["wpe.weight"][torch.arange(T)]
    for i in range(_layers(params)):
        x = transformer_block(x, _block_params(params, i), n_heads)
    return layer_norm(x, params["ln_f.weight"], params["ln_f.bias"]) @ params["wte.weight"].T


@bug("gpt2_forward", "return the logits, not probabilities")
def gpt2_softmax(input_ids, params, n_heads):
    return torch.softmax(gpt2_forward(input_ids, params, n_heads), dim=-1)


@bug("gpt2_forward", "your blocks are post-LN")
def gpt2_post_ln(input_ids, params, n_heads):
    T = input_ids.shape[1]
    x = params["wte.weight"][input_ids] + params["wpe.weight"][torch.arange(T)]
    for i in range(_layers(params)):
        x = block_post_ln.fn(x, _block_params(params, i), n_heads)
    return layer_norm(x, params["ln_f.weight"], params["ln_f.bias"]) @ params["wte.weight"].T


@bug("gpt2_forward", "no causal mask")
def gpt2_not_causal(input_ids, params, n_heads):
    T = input_ids.shape[1]
    x = params["wte.weight"][input_ids] + params["wpe.weight"][torch.arange(T)]
    for i in range(_layers(params)):
        x = block_not_causal.fn(x, _block_params(params, i), n_heads)
    return layer_norm(x, params["ln_f.weight"], params["ln_f.bias"]) @ params["wte.weight"].T


@bug("gpt2_forward", "no 'transformer.' prefix")
def gpt2_hf_prefix(input_ids, params, n_heads):
    T = input_ids.shape[1]
    x = params["transformer.wte.weight"][input_ids] + params["transformer.wpe.weight"][:T]
    return x


@bug("gpt2_forward", "last token changed the logits at earlier positions")
def gpt2_mean_pooled(input_ids, params, n_heads):  # mixes the future in outside attention
    logits = gpt2_forward(input_ids, params, n_heads)
    return logits + 0.1 * logits.mean(dim=1, keepdim=True)


# ------------------------------------------------------------------------------------------------
# count_parameters
# ------------------------------------------------------------------------------------------------


def count_parameters(vocab_size, n_positions, n_embd, n_layer):
    C = n_embd
    return vocab_size * C + n_positions * C + n_layer * (12 * C * C + 13 * C) + 2 * C


def count_parameters_by_tensor(vocab_size, n_positions, n_embd, n_layer):
    C = n_embd
    block = [(C,), (C,), (C, 3 * C), (3 * C,), (C, C), (C,), (C,), (C,)]
    block += [(C, 4 * C), (4 * C,), (4 * C, C), (C,)]
    shapes = [(vocab_size, C), (n_positions, C)] + block * n_layer + [(C,), (C,)]
    return sum(math.prod(s) for s in shapes)


def count_parameters_by_part(vocab_size, n_positions, n_embd, n_layer):
    C = n_embd
    parts = {
        "embeddings": (vocab_size + n_positions) * C,
        "layer norms": n_layer * 2 * 2 * C + 2 * C,
        "attention": n_layer * (C * 3 * C + 3 * C + C * C + C),
        "mlp": n_layer * (C * 4 * C + 4 * C + 4 * C * C + C),
    }
    return int(sum(parts.values()))


@bug("count_parameters", "counted the output layer separately")
def count_untied(vocab_size, n_positions, n_embd, n_layer):
    return count_parameters(vocab_size, n_positions, n_embd, n_layer) + vocab_size * n_embd


@bug("count_parameters", "forgot the position embeddings")
def count_no_wpe(vocab_size, n_positions, n_embd, n_layer):
    C = n_embd
    return vocab_size * C + n_layer * (12 * C * C + 13 * C) + 2 * C


@bug("count_parameters", "forgot the final LayerNorm")
def count_no_ln_f(vocab_size, n_positions, n_embd, n_layer):
    C = n_embd
    return vocab_size * C + n_positions * C + n_layer * (12 * C * C + 13 * C)


@bug("count_parameters", "forgot the biases of the four projections")
def count_no_biases(vocab_size, n_positions, n_embd, n_layer):
    C = n_embd
    return vocab_size * C + n_positions * C + n_layer * (12 * C * C + 4 * C) + 2 * C


@bug("count_parameters", "not 4*C")
def count_wrong_proj_bias(vocab_size, n_positions, n_embd, n_layer):
    C = n_embd
    per_block = (
        4 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + 4 * C)
    )
    return vocab_size * C + n_positions * C + n_layer * per_block + 2 * C


@bug("count_parameters", "one block too few")
def count_off_by_one(vocab_size, n_positions, n_embd, n_layer):
    C = n_embd
    return vocab_size * C + n_positions * C + (n_layer - 1) * (12 * C * C + 13 * C) + 2 * C


@bug("count_parameters", "return an int")
def count_float(vocab_size, n_positions, n_embd, n_layer):
    return float(count_parameters(vocab_size, n_positions, n_embd, n_layer))


@bug("count_parameters", "forgot the attention output projection")
def count_no_attn_proj(vocab_size, n_positions, n_embd, n_layer):
    C = n_embd
    return vocab_size * C + n_positions * C + n_layer * (11 * C * C + 12 * C) + 2 * C


IMPLS = [
    right("layer_norm", layer_norm, "reference"),
    right("layer_norm", layer_norm_torch),
    right("layer_norm", layer_norm_var_rsqrt_float64),
    layer_norm_unbiased,
    layer_norm_eps_outside,
    layer_norm_torch_std,
    layer_norm_fixed_eps,
    layer_norm_rms,
    layer_norm_dim0,
    layer_norm_no_affine,
    layer_norm_swapped,
    layer_norm_in_place,
    right("gelu", gelu, "reference"),
    right("gelu", gelu_torch),
    right("gelu", gelu_sigmoid_identity),
    gelu_erf,
    gelu_relu,
    gelu_no_half,
    gelu_sqrt_2pi,
    gelu_no_cubic,
    gelu_squared,
    gelu_quick,
    gelu_in_place,
    right("mlp", mlp, "reference"),
    right("mlp", mlp_linear),
    right("mlp", mlp_einsum),
    mlp_erf,
    mlp_relu,
    mlp_linear_only,
    mlp_gelu_twice,
    mlp_bias_after,
    mlp_no_proj_bias,
    mlp_conv1d_layout,
    right("transformer_block", transformer_block, "reference"),
    right("transformer_block", block_torch_fused),
    right("transformer_block", block_head_loop),
    block_post_ln,
    block_no_attn_residual,
    block_no_mlp_residual,
    block_residual_from_norm,
    block_parallel,
    block_swapped_norms,
    block_not_causal,
    block_erf_gelu,
    block_conv1d_layout,
    block_transposes_in_place,
    right("gpt2_forward", gpt2_forward, "reference"),
    right("gpt2_forward", gpt2_forward_functional),
    right("gpt2_forward", gpt2_forward_nn_modules),
    gpt2_no_positions,
    gpt2_positions_by_id,
    gpt2_no_ln_f,
    gpt2_untied_head,
    gpt2_wte_not_transposed,
    gpt2_off_by_one_layers,
    gpt2_scaled_embeddings,
    gpt2_softmax,
    gpt2_post_ln,
    gpt2_not_causal,
    gpt2_hf_prefix,
    gpt2_mean_pooled,
    right("count_parameters", count_parameters, "reference"),
    right("count_parameters", count_parameters_by_tensor),
    right("count_parameters", count_parameters_by_part),
    count_untied,
    count_no_wpe,
    count_no_ln_f,
    count_no_biases,
    count_wrong_proj_bias,
    count_off_by_one,
    count_float,
    count_no_attn_proj,
]
