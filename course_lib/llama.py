"""Llama (the architecture of SmolLM2), as a variant of ``course_lib.gpt`` (notebook 08).

What changed from GPT-2:

- **RMSNorm** instead of LayerNorm: no mean subtracted, no bias.
- **RoPE** instead of learned position embeddings: queries and keys are rotated by an angle that
  grows with the position, so attention scores depend on the distance between tokens.
- **SwiGLU MLP**: ``down(silu(gate(x)) * up(x))`` instead of ``c_proj(gelu(c_fc(x)))``.
- **Grouped-query attention**: fewer key/value heads than query heads, shared through
  ``repeat_kv`` (SmolLM2-135M: 9 query heads, 3 key/value heads).
- No biases anywhere; separate q, k, v projections.

Parameter names follow Hugging Face's ``LlamaForCausalLM`` exactly and every projection is an
``nn.Linear`` on both sides, so ``from_hf`` copies tensors one to one (nothing is transposed).
The call interface is ``course_lib.gpt.GPT``'s: ``model(input_ids, labels=None,
past_key_values=None, use_cache=False) -> CausalLMOutput``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.attention import KVCache, apply_rope, causal_attention, repeat_kv, rope_cos_sin
from course_lib.functional import rms_norm, silu
from course_lib.lm import CausalLM, copy_weights

__all__ = [
    "Llama",
    "LlamaConfig",
    "compare_with_hf",
    "forward_config",
    "llama_forward",
    "swiglu_mlp",
]


@dataclass(frozen=True)
class LlamaConfig:
    """Shape of a Llama model; field names as in Hugging Face's ``LlamaConfig``.

    The defaults are SmolLM2-135M's (134.5 M parameters).
    """

    vocab_size: int = 49152
    hidden_size: int = 576
    intermediate_size: int = 1536  # width of the SwiGLU MLP
    num_hidden_layers: int = 30
    num_attention_heads: int = 9
    num_key_value_heads: int = 3  # < num_attention_heads: grouped-query attention
    # None: hidden_size // num_attention_heads, filled in at creation (so dataclasses.replace
    # keeps the old value: pass head_dim=None again when you change hidden_size or the heads)
    head_dim: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 100000.0  # base of the rotary frequencies
    max_position_embeddings: int = 8192  # RoPE has no table; this only bounds the input length
    tie_word_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        names = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "max_position_embeddings")  # fmt: skip
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LlamaConfig.{name} must be a positive int, got {value!r}")
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"num_attention_heads={self.num_attention_heads} must divide hidden_size={self.hidden_size}, "
                    "or set head_dim explicitly"
                )
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if (
            isinstance(self.head_dim, bool)
            or not isinstance(self.head_dim, int)
            or self.head_dim < 2
        ):
            raise ValueError(f"head_dim must be an int >= 2, got {self.head_dim!r}")
        if self.head_dim % 2:
            raise ValueError(
                f"head_dim={self.head_dim} must be even: RoPE rotates pairs of channels"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_key_value_heads={self.num_key_value_heads} must divide num_attention_heads="
                f"{self.num_attention_heads}: each key/value head serves the same number of query heads"
            )
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            raise ValueError(
                f"rms_norm_eps and rope_theta must be positive, got {self.rms_norm_eps}, {self.rope_theta}"
            )

    @property
    def n_positions(self) -> int:
        """GPT-2's name for the longest input; ``course_lib.generation.generate`` checks it."""
        return self.max_position_embeddings


# ------------------------------------------------------------------------------------------------
# The pieces
# ------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight``, normalised in float32 as HF does.

    ``F.rms_norm`` is the fused form of ``course_lib.functional.rms_norm`` (tests prove them equal).
    """

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        h = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)
        return self.weight * h


class LlamaAttention(nn.Module):
    """Causal self-attention with RoPE on queries and keys, and grouped-query key/value heads."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx  # which slot of the KV cache is ours
        self.n_head, self.n_kv_head, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim
        )  # fmt: skip
        C, D = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(C, self.n_head * D, bias=False)
        self.k_proj = nn.Linear(C, self.n_kv_head * D, bias=False)
        self.v_proj = nn.Linear(C, self.n_kv_head * D, bias=False)
        self.o_proj = nn.Linear(self.n_head * D, C, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None = None) -> Tensor:
        B, T, _ = x.shape
        H, H_kv, D = self.n_head, self.n_kv_head, self.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, H_kv, D).transpose(1, 2)  # (B, H_kv, T, D)
        v = self.v_proj(x).view(B, T, H_kv, D).transpose(1, 2)  # (B, H_kv, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # positions enter here only
        if cache is not None:
            # the cache keeps rotated keys: (B, H_kv, T_all, D)
            k, v = cache.update(self.layer_idx, k, v)
        n_rep = self.n_head // self.n_kv_head
        y = causal_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep))  # (B, H, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class SwiGLU(nn.Module):
    """Gated MLP: ``down_proj(silu(gate_proj(x)) * up_proj(x))``."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    """Pre-norm block, like GPT-2's, with RMSNorm and SwiGLU (HF calls it a decoder layer)."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LlamaAttention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None = None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


_BLOCK_KEYS = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
)  # fmt: skip


def _hf_keys(config: LlamaConfig) -> list[str]:
    """Every parameter name; identical in HF's LlamaForCausalLM and here, nothing transposed."""
    keys = ["model.embed_tokens.weight"]
    for i in range(config.num_hidden_layers):
        keys += [f"model.layers.{i}.{name}" for name in _BLOCK_KEYS]
    keys.append("model.norm.weight")
    if not config.tie_word_embeddings:  # tied: lm_head.weight *is* embed_tokens.weight
        keys.append("lm_head.weight")
    return keys


def _rope_theta(hf_config: object) -> float:
    """RoPE base of an HF Llama config; refuses the scaled variants this model does not implement."""
    params = getattr(hf_config, "rope_parameters", None) or {}
    scaling = getattr(hf_config, "rope_scaling", None) or {}
    rope_type = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if rope_type != "default":
        raise ValueError(
            f"the model uses RoPE scaling rope_type={rope_type!r}; this Llama implements plain RoPE "
            "(rope_type='default') only"
        )
    theta = params.get("rope_theta", getattr(hf_config, "rope_theta", None))
    if theta is None:
        raise ValueError("the HF config names no rope_theta")
    return float(theta)


# ------------------------------------------------------------------------------------------------
# The same model as plain functions of a state dict (notebook 08's exercises)
# ------------------------------------------------------------------------------------------------


def swiglu_mlp(x: Tensor, w_gate: Tensor, w_up: Tensor, w_down: Tensor) -> Tensor:
    """Llama's gated MLP: ``(silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T``.

    Args:
        x: (..., C).
        w_gate, w_up: (F, C), ``nn.Linear`` layout; F is the MLP width (``intermediate_size``).
        w_down: (C, F).

    Returns:
        (..., C).
    """
    for name, w in (("w_gate", w_gate), ("w_up", w_up), ("w_down", w_down)):
        if not isinstance(w, Tensor) or w.dim() != 2:
            raise ValueError(f"{name} must be a 2-D tensor in the nn.Linear layout (d_out, d_in)")
    if w_gate.shape != w_up.shape or w_down.shape != w_gate.shape[::-1]:
        raise ValueError(
            f"shapes do not fit: w_gate {tuple(w_gate.shape)} and w_up {tuple(w_up.shape)} must "
            f"both be (F, C) and w_down {tuple(w_down.shape)} must be (C, F)"
        )
    return (silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def _n_layers(params: dict) -> int:
    """How many blocks a Llama state dict holds, read from its ``model.layers.{i}.`` keys."""
    layers = {int(k.split(".")[2]) for k in params if k.startswith("model.layers.")}
    if layers != set(range(len(layers))):
        raise ValueError(f"the layers in params are not numbered 0..L-1: {sorted(layers)}")
    return len(layers)


def forward_config(hf_config: object) -> dict:
    """The four numbers ``llama_forward`` needs from an HF ``LlamaConfig``, as a plain dict.

    Example (SmolLM2-135M): ``{"num_attention_heads": 9, "num_key_value_heads": 3,
    "rms_norm_eps": 1e-05, "rope_theta": 100000.0}``.
    """
    return {
        "num_attention_heads": int(hf_config.num_attention_heads),
        "num_key_value_heads": int(hf_config.num_key_value_heads or hf_config.num_attention_heads),
        "rms_norm_eps": float(hf_config.rms_norm_eps),
        "rope_theta": _rope_theta(hf_config),
    }


def llama_forward(input_ids: Tensor, params: dict[str, Tensor], config: dict) -> Tensor:
    """The logits of a Llama (e.g. SmolLM2) computed from its state dict, function by function.

    Args:
        input_ids: int64 (B, T).
        params: a ``LlamaForCausalLM`` state dict (HF names: ``model.embed_tokens.weight``,
            ``model.layers.{i}.input_layernorm.weight``, ..., ``model.norm.weight``, and
            ``lm_head.weight`` unless the output layer is tied to the embeddings).
        config: ``num_attention_heads``, ``num_key_value_heads``, ``rms_norm_eps``,
            ``rope_theta`` (see ``forward_config``). The head size is read off ``q_proj``.

    Returns:
        Logits (B, T, V) in the parameters' dtype, equal to ``LlamaForCausalLM``'s.
    """
    missing = [k for k in ("num_attention_heads", "rms_norm_eps", "rope_theta") if k not in config]
    if missing:
        raise ValueError(
            f"config lacks {missing}: build it with course_lib.llama.forward_config(hf_model.config)"
        )
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        raise ValueError("input_ids must be an int64 tensor of shape (B, T)")
    H = int(config["num_attention_heads"])
    H_kv = int(config.get("num_key_value_heads") or H)
    eps, theta = float(config["rms_norm_eps"]), float(config["rope_theta"])
    emb = params["model.embed_tokens.weight"]  # (V, C)
    D = params["model.layers.0.self_attn.q_proj.weight"].shape[0] // H  # usually C // H
    B, T = input_ids.shape
    positions = torch.arange(T, device=input_ids.device)
    cos, sin = rope_cos_sin(positions, D, theta, dtype=emb.dtype)  # (T, D) each
    x = emb[input_ids]  # (B, T, C): no position embedding, RoPE brings the positions
    for i in range(_n_layers(params)):
        p = {
            k[len(f"model.layers.{i}.") :]: v
            for k, v in params.items()
            if k.startswith(f"model.layers.{i}.")
        }
        h = rms_norm(x, p["input_layernorm.weight"], eps)
        q = (h @ p["self_attn.q_proj.weight"].T).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        # k and v: (B, H_kv, T, D), fewer heads than q
        k = (h @ p["self_attn.k_proj.weight"].T).view(B, T, H_kv, D).transpose(1, 2)
        v = (h @ p["self_attn.v_proj.weight"].T).view(B, T, H_kv, D).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = repeat_kv(k, H // H_kv), repeat_kv(v, H // H_kv)  # (B, H, T, D)
        y = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, H * D)
        x = x + y @ p["self_attn.o_proj.weight"].T
        h = rms_norm(x, p["post_attention_layernorm.weight"], eps)
        x = x + swiglu_mlp(
            h, p["mlp.gate_proj.weight"], p["mlp.up_proj.weight"], p["mlp.down_proj.weight"]
        )
    x = rms_norm(x, params["model.norm.weight"], eps)
    return x @ params.get("lm_head.weight", emb).T  # tied: the embedding matrix is the output layer


def compare_with_hf(forward: Callable, hf_model: nn.Module, input_ids: Tensor) -> dict | None:
    """Run ``forward(input_ids, state_dict, forward_config(config))`` against the HF model's logits.

    For notebook 08's capstone: it prints the largest logit difference and both next tokens, and
    does not fail when ``forward`` is still an unimplemented stub (it says so and returns None).

    Args:
        forward: a function with ``llama_forward``'s signature, e.g. the learner's.
        hf_model: a ``transformers.LlamaForCausalLM`` (e.g. SmolLM2).
        input_ids: int64 (B, T).

    Returns:
        ``{"max_abs_diff", "same_next_token", "next_token", "hf_next_token"}``, or None for a stub.
    """
    device = next(hf_model.parameters()).device
    input_ids = input_ids.to(device)
    params = {k: v.detach() for k, v in hf_model.state_dict().items()}
    with torch.no_grad():
        expected = hf_model(input_ids).logits
        try:
            logits = forward(input_ids, params, forward_config(hf_model.config))
        except NotImplementedError:
            print(
                f"{getattr(forward, '__name__', 'forward')} is not implemented yet: nothing to compare"
            )
            return None
    if not isinstance(logits, Tensor) or logits.shape != expected.shape:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"expected logits of shape {tuple(expected.shape)}, got {shape}")
    result = {
        "max_abs_diff": (logits.double() - expected.double()).abs().max().item(),
        "next_token": logits[:, -1].argmax(-1).tolist(),
        "hf_next_token": expected[:, -1].argmax(-1).tolist(),
    }
    result["same_next_token"] = result["next_token"] == result["hf_next_token"]
    print(
        f"max |logits - HF logits| = {result['max_abs_diff']:.2e} (logits of size up to "
        f"{expected.abs().max().item():.1f})"
    )
    print(
        f"next token: yours {result['next_token']}, HF {result['hf_next_token']}, same: "
        f"{result['same_next_token']}"
    )
    return result


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


class Llama(CausalLM):
    """Llama: token embeddings, ``num_hidden_layers`` blocks, final RMSNorm, output layer.

    Example:
        >>> config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
        ...                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        >>> Llama(config)(torch.tensor([[1, 2, 3]])).logits.shape
        torch.Size([1, 3, 100])
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        if not isinstance(config, LlamaConfig):
            raise TypeError(f"config must be a LlamaConfig, got {type(config).__name__}")
        self.config = config
        self.model = nn.ModuleDict(
            {
                "embed_tokens": nn.Embedding(config.vocab_size, config.hidden_size),
                "layers": nn.ModuleList(
                    LlamaBlock(config, i) for i in range(config.num_hidden_layers)
                ),
                "norm": RMSNorm(config.hidden_size, config.rms_norm_eps),
            }
        )
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of parameters, a tied matrix counted once (without the token table if asked)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.model.embed_tokens.weight.numel() if exclude_embeddings else n

    def logits(self, input_ids: Tensor, past: int, cache: KVCache | None) -> Tensor:
        """(B, T, V) logits of tokens at positions ``past .. past + T - 1`` (``forward``, inherited
        from ``course_lib.lm.CausalLM``, checks the inputs and adds the loss)."""
        c = self.config
        positions = torch.arange(past, past + input_ids.shape[1], device=input_ids.device)
        cos, sin = rope_cos_sin(positions, c.head_dim, c.rope_theta)  # (T, D), for every layer
        x = self.model.embed_tokens(input_ids)  # (B, T, C): no position embedding, RoPE does that
        for block in self.model.layers:
            x = block(x, cos, sin, cache)
        return self.lm_head(self.model.norm(x))  # (B, T, V)

    @classmethod
    def from_hf(cls, hf_model: nn.Module) -> Llama:
        """Copy a Hugging Face ``LlamaForCausalLM`` (e.g. SmolLM2) into a ``Llama``.

        Args:
            hf_model: a ``transformers.LlamaForCausalLM``, e.g. ``load_smollm2()[0]``.

        Returns:
            A ``Llama`` on the same device, dtype and train/eval mode, whose logits equal ``hf_model``'s.
        """
        from transformers import LlamaForCausalLM

        if not isinstance(hf_model, LlamaForCausalLM):
            raise TypeError(
                f"from_hf expects a transformers.LlamaForCausalLM, got {type(hf_model).__name__} "
                "(for GPT-2 use course_lib.gpt.GPT.from_hf)"
            )
        hf = hf_model.config
        unsupported = {
            "hidden_act": (hf.hidden_act, ("silu",)),
            "attention_bias": (hf.attention_bias, (False,)),
            "mlp_bias": (hf.mlp_bias, (False,)),
            "pretraining_tp": (getattr(hf, "pretraining_tp", 1), (1, None)),
        }
        for name, (value, allowed) in unsupported.items():
            if value not in allowed:
                raise ValueError(
                    f"config.{name}={value!r} is not supported by this Llama (it needs {allowed})"
                )
        eos = hf.eos_token_id
        config = LlamaConfig(
            vocab_size=hf.vocab_size,
            hidden_size=hf.hidden_size,
            intermediate_size=hf.intermediate_size,
            num_hidden_layers=hf.num_hidden_layers,
            num_attention_heads=hf.num_attention_heads,
            num_key_value_heads=hf.num_key_value_heads or hf.num_attention_heads,
            head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads,
            rms_norm_eps=float(hf.rms_norm_eps),
            rope_theta=_rope_theta(hf),
            max_position_embeddings=hf.max_position_embeddings,
            tie_word_embeddings=bool(hf.tie_word_embeddings),
            bos_token_id=hf.bos_token_id,
            eos_token_id=eos[0] if isinstance(eos, (list, tuple)) else eos,
        )
        ref = hf_model.model.embed_tokens.weight
        model = cls(config).to(device=ref.device, dtype=ref.dtype)
        copy_weights(hf_model, model, ((key, False) for key in _hf_keys(config)))
        return model.train(hf_model.training)
