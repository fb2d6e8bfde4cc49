"""GPT-2, written out: config, attention, MLP, block, then the model (notebook 05).

Parameter names follow Hugging Face's ``GPT2LMHeadModel`` (``transformer.h.0.attn.c_attn.weight``,
...), so loading its weights is a short, explicit key map; the one difference is that our
projections are ``nn.Linear`` (weights ``(d_out, d_in)``) where GPT-2 uses ``Conv1D``
(``(d_in, d_out)``).

For speed the modules call torch's fused ops (``F.layer_norm``, ``F.gelu(approximate="tanh")``,
``F.scaled_dot_product_attention``); ``tests/test_gpt.py`` proves them equal to the teaching
versions in ``course_lib.functional`` and ``course_lib.attention``.

The model behaves like a Hugging Face causal LM (``course_lib.lm`` holds that shared contract:
the output, the loss, the cache argument and the input checks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import functional
from course_lib.attention import KVCache, causal_attention, multi_head_self_attention
from course_lib.lm import CausalLM, copy_weights

__all__ = [
    "GPT",
    "GPTConfig",
    "count_parameters",
    "gpt2_forward",
    "mlp",
    "params_from_hf",
    "transformer_block",
]


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT-2 model; field names as in Hugging Face's ``GPT2Config``.

    The defaults are GPT-2 small (124 M parameters).
    """

    vocab_size: int = 50257
    n_positions: int = 1024  # longest sequence: the position embedding table has this many rows
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True  # the output layer reuses the token embedding matrix
    # one dropout rate for embeddings, attention weights and residuals (GPT-2 used 0.1)
    dropout: float = 0.0
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_head={self.n_head} must divide n_embd={self.n_embd}: each head gets n_embd // n_head channels"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.layer_norm_epsilon <= 0:
            raise ValueError(f"layer_norm_epsilon must be positive, got {self.layer_norm_epsilon}")


# ------------------------------------------------------------------------------------------------
# The pieces
# ------------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: ``multi_head_self_attention`` from notebook 04, as a module."""

    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.layer_idx = layer_idx  # which slot of the KV cache is ours
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        H = self.n_head
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, H, T_past + T, D)
        p = self.dropout if self.training else 0.0
        y = causal_attention(q, k, v, dropout_p=p)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: expand 4x, GELU (tanh form, GPT-2's ``gelu_new``), project back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


# Hugging Face's GPT-2 stores these four projections as Conv1D, whose weight is (d_in, d_out)
# because it computes x @ W + b. nn.Linear stores (d_out, d_in) and computes x @ W.T + b, so the
# same numbers must be transposed on the way in and out.
_CONV1D_WEIGHTS = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)
BLOCK_KEYS = (  # a block's parameters, in order, as GPT-2 names them
    "ln_1.weight", "ln_1.bias",
    "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
    "ln_2.weight", "ln_2.bias",
    "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
)  # fmt: skip


# GPTConfig's fields that GPT2Config spells the same way (dropout is three rates there, one here).
_SHARED_CONFIG_FIELDS = (
    "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon",
    "bos_token_id", "eos_token_id",
)  # fmt: skip


def _hf_key_map(config: GPTConfig) -> list[tuple[str, bool]]:
    """Every parameter name (identical in both models) with whether it is transposed in HF."""
    keys = [("transformer.wte.weight", False), ("transformer.wpe.weight", False)]
    for i in range(config.n_layer):
        keys += [(f"transformer.h.{i}.{name}", name in _CONV1D_WEIGHTS) for name in BLOCK_KEYS]
    keys += [("transformer.ln_f.weight", False), ("transformer.ln_f.bias", False)]
    if not config.tie_word_embeddings:  # tied: lm_head.weight *is* wte.weight
        keys.append(("lm_head.weight", False))
    return keys


# ------------------------------------------------------------------------------------------------
# The same model as plain functions of a params dict (the exercises of notebook 05)
# ------------------------------------------------------------------------------------------------


def mlp(x: Tensor, w_fc: Tensor, b_fc: Tensor, w_proj: Tensor, b_proj: Tensor) -> Tensor:
    """GPT-2's feed-forward layer: ``gelu(x @ w_fc.T + b_fc) @ w_proj.T + b_proj``.

    Args:
        x: (..., C).
        w_fc: (4C, C) and b_fc: (4C,): the expansion (any hidden size works).
        w_proj: (C, 4C) and b_proj: (C,): the projection back.

    Returns:
        (..., C).
    """
    return functional.gelu(x @ w_fc.T + b_fc) @ w_proj.T + b_proj


def transformer_block(
    x: Tensor, params: dict[str, Tensor], n_heads: int, eps: float = 1e-5
) -> Tensor:
    """One pre-LN GPT-2 block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``, causal.

    Args:
        x: (B, T, C).
        params: the block's tensors under GPT-2's names, nn.Linear layout: ``ln_1.weight``,
            ``ln_1.bias``, ``attn.c_attn.weight`` (3C, C), ``attn.c_attn.bias``,
            ``attn.c_proj.weight`` (C, C), ``attn.c_proj.bias``, ``ln_2.weight``, ``ln_2.bias``,
            ``mlp.c_fc.weight`` (4C, C), ``mlp.c_fc.bias``, ``mlp.c_proj.weight`` (C, 4C),
            ``mlp.c_proj.bias``.
        n_heads: number of attention heads H, dividing C.
        eps: LayerNorm epsilon (GPT-2: 1e-5).

    Returns:
        (B, T, C).
    """
    p = params
    h = functional.layer_norm(x, p["ln_1.weight"], p["ln_1.bias"], eps)
    x = x + multi_head_self_attention(
        h,
        p["attn.c_attn.weight"],
        p["attn.c_attn.bias"],
        p["attn.c_proj.weight"],
        p["attn.c_proj.bias"],
        n_heads,
    )
    h = functional.layer_norm(x, p["ln_2.weight"], p["ln_2.bias"], eps)
    return x + mlp(
        h, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"], p["mlp.c_proj.weight"], p["mlp.c_proj.bias"]
    )


def _n_layers(params: dict[str, Tensor]) -> int:
    """L, read from the ``h.{i}.`` keys (they must run 0..L-1 without a gap)."""
    layers = {int(k.split(".")[1]) for k in params if k.startswith("h.")}
    if layers != set(range(len(layers))):
        raise ValueError(f"the block keys must be h.0. ... h.{{L-1}}., got layers {sorted(layers)}")
    return len(layers)


def gpt2_forward(input_ids: Tensor, params: dict[str, Tensor], n_heads: int) -> Tensor:
    """GPT-2's logits from a params dict: embeddings, L blocks, ``ln_f``, output tied to ``wte``.

    Args:
        input_ids: (B, T) int64, T at most the number of positions P.
        params: ``wte.weight`` (V, C), ``wpe.weight`` (P, C), ``h.{i}.<block key>`` for
            i = 0..L-1 (see ``transformer_block``), ``ln_f.weight``, ``ln_f.bias``; nn.Linear
            layout (``params_from_hf`` makes it from a ``GPT2LMHeadModel``).
        n_heads: number of attention heads.

    Returns:
        Logits (B, T, V), equal to ``GPT2LMHeadModel``'s.
    """
    T = input_ids.shape[1]
    wte = params["wte.weight"]  # (V, C)
    pos = torch.arange(T, device=input_ids.device)
    x = wte[input_ids] + params["wpe.weight"][pos]  # (B, T, C)
    for i in range(_n_layers(params)):
        prefix = f"h.{i}."
        block = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
        x = transformer_block(x, block, n_heads)
    x = functional.layer_norm(x, params["ln_f.weight"], params["ln_f.bias"])
    return x @ wte.T  # (B, T, V): the output layer is the token embedding (tied)


def count_parameters(vocab_size: int, n_positions: int, n_embd: int, n_layer: int) -> int:
    """Parameters of GPT-2 with a tied output layer: ``V*C + P*C + L*(12*C*C + 13*C) + 2*C``.

    Per block: two LayerNorms (2C each), c_attn (3C*C + 3C), attention c_proj (C*C + C),
    mlp c_fc (4C*C + 4C), mlp c_proj (4C*C + C). Then the final LayerNorm (2C).

    Example:
        >>> count_parameters(50257, 1024, 768, 12)  # GPT-2 small
        124439808
    """
    V, P, C, L = vocab_size, n_positions, n_embd, n_layer
    return V * C + P * C + L * (12 * C * C + 13 * C) + 2 * C


def params_from_hf(hf_model: nn.Module) -> dict[str, Tensor]:
    """A ``GPT2LMHeadModel``'s weights as the params dict of ``gpt2_forward`` (detached copies).

    Drops the ``transformer.`` prefix and ``lm_head.weight`` (tied to ``wte.weight``), and
    transposes the four Conv1D weights of each block from HF's (d_in, d_out) to nn.Linear's
    (d_out, d_in).
    """
    from transformers import GPT2LMHeadModel

    if not isinstance(hf_model, GPT2LMHeadModel):
        raise TypeError(f"params_from_hf expects a GPT2LMHeadModel, got {type(hf_model).__name__}")
    if not hf_model.config.tie_word_embeddings:
        raise ValueError("gpt2_forward ties the output layer to wte: this model is untied")
    source = hf_model.state_dict()
    params = {}
    hf = hf_model.config
    config = GPTConfig(hf.vocab_size, hf.n_positions, hf.n_embd, hf.n_layer, hf.n_head)
    for key, transposed in _hf_key_map(config):
        t = source[key].detach()
        params[key.removeprefix("transformer.")] = (t.t() if transposed else t).clone()
    return params


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


class GPT(CausalLM):
    """GPT-2: token + position embeddings, ``n_layer`` pre-LN blocks, final LayerNorm, output layer.

    Example:
        >>> model = GPT(GPTConfig(vocab_size=100, n_positions=16, n_embd=32, n_layer=2, n_head=4))
        >>> model(torch.tensor([[1, 2, 3]])).logits.shape
        torch.Size([1, 3, 100])
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
                "wpe": nn.Embedding(config.n_positions, config.n_embd),  # learned positions
                "drop": nn.Dropout(config.dropout),
                "h": nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                "ln_f": nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
            }
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                # GPT-2: residual projections start smaller, 1/sqrt(2 n_layer), so the residual
                # stream's variance does not grow with depth (two additions per block)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # one matrix, two uses

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of parameters, a tied matrix counted once.

        Args:
            exclude_embeddings: leave out the token and position embedding tables (as HF's
                ``num_parameters(exclude_embeddings=True)``; with tied weights the output layer
                goes too, since it is the token table).
        """
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def logits(self, input_ids: Tensor, past: int, cache: KVCache | None) -> Tensor:
        """(B, T, V) logits of tokens at positions ``past .. past + T - 1`` (``forward``, inherited
        from ``course_lib.lm.CausalLM``, checks the inputs and adds the loss)."""
        T = input_ids.shape[1]
        # The positions past .. past + T - 1 are consecutive rows of the position table: a slice
        # is wpe(torch.arange(past, past + T)) without the lookup (and its scatter in backward).
        pos_emb = self.transformer.wpe.weight[past : past + T]  # (T, C)
        x = self.transformer.drop(self.transformer.wte(input_ids) + pos_emb)  # (B, T, C)
        for block in self.transformer.h:
            x = block(x, cache)
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, V)

    # --- Hugging Face conversion ----------------------------------------------------------------

    @classmethod
    def from_hf(cls, hf_model: nn.Module) -> GPT:
        """Copy a Hugging Face ``GPT2LMHeadModel`` into a ``GPT`` (same device, dtype and train/eval mode).

        Args:
            hf_model: a ``transformers.GPT2LMHeadModel``, e.g. ``load_course_gpt()[0]``.

        Returns:
            A ``GPT`` whose logits equal ``hf_model``'s.
        """
        from transformers import GPT2LMHeadModel

        if not isinstance(hf_model, GPT2LMHeadModel):
            raise TypeError(
                f"from_hf expects a transformers.GPT2LMHeadModel, got {type(hf_model).__name__} "
                "(for a Llama model use course_lib.llama.Llama.from_hf)"
            )
        hf = hf_model.config
        unsupported = {
            "activation_function": (hf.activation_function, ("gelu_new", "gelu_pytorch_tanh")),
            "n_inner": (hf.n_inner, (None, 4 * hf.n_embd)),
            "scale_attn_weights": (hf.scale_attn_weights, (True,)),
            "scale_attn_by_inverse_layer_idx": (hf.scale_attn_by_inverse_layer_idx, (False,)),
            "add_cross_attention": (hf.add_cross_attention, (False,)),
        }
        for name, (value, allowed) in unsupported.items():
            if value not in allowed:
                raise ValueError(
                    f"config.{name}={value!r} is not plain GPT-2; this GPT supports {allowed}"
                )
        config = GPTConfig(
            **{name: getattr(hf, name) for name in _SHARED_CONFIG_FIELDS},
            tie_word_embeddings=bool(hf.tie_word_embeddings),
            dropout=hf.resid_pdrop,
        )
        ref = next(hf_model.parameters())
        model = cls(config).to(device=ref.device, dtype=ref.dtype)
        copy_weights(hf_model, model, _hf_key_map(config), names=("HF", "ours"))
        return model.train(hf_model.training)

    def to_hf(self) -> nn.Module:
        """Export to a Hugging Face ``GPT2LMHeadModel`` (same weights, device, dtype and mode).

        Save it with ``.save_pretrained(folder)``; load it anywhere with
        ``AutoModelForCausalLM.from_pretrained(folder)``.
        """
        from transformers import GPT2Config, GPT2LMHeadModel

        c = self.config
        hf_config = GPT2Config(
            **{name: getattr(c, name) for name in _SHARED_CONFIG_FIELDS},
            tie_word_embeddings=c.tie_word_embeddings,
            activation_function="gelu_new",
            resid_pdrop=c.dropout,
            embd_pdrop=c.dropout,
            attn_pdrop=c.dropout,
        )
        ref = self.transformer.wte.weight
        hf_model = GPT2LMHeadModel(hf_config).to(device=ref.device, dtype=ref.dtype)
        copy_weights(self, hf_model, _hf_key_map(c), names=("our", "HF"))
        return hf_model.train(self.training)
