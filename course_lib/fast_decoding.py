"""Greedy decoding at speed: a static KV cache, a fixed-shape decode step and CUDA graphs.

What changed from :func:`course_lib.generation.generate` (the lesson's loop, which stays the
plain default):

- **Static KV cache.** :class:`StaticKVCache` allocates the keys and values of every position
  up to ``max_len`` once; a step writes its new keys in place instead of ``torch.cat``-ing a
  longer tensor every token.
- **A fixed-shape step.** Every decoding step attends to all ``max_len`` cached positions and
  masks the ones not written yet, reads its RoPE angles (or position embedding) from a table
  with a position *tensor*, and picks the next token on the device. Tensor shapes and
  addresses are then the same at every step, and no number travels back to Python.
- **Fewer, bigger operations.** q, k and v come from one matrix product (so do Llama's gate
  and up projections); grouped-query attention uses ``scaled_dot_product_attention(...,
  enable_gqa=True)`` instead of copying key/value heads with ``repeat_kv``; only the last
  position's logits are computed.
- **CUDA graphs.** Because the step has fixed shapes and never synchronises, on a GPU it can be
  recorded once as a CUDA graph and replayed: one launch per token instead of several hundred
  kernel launches, each a few microseconds of Python and driver work. On a CPU the same step
  runs eagerly (``torch.compile`` can fuse it further: ``compile=True``).

- **int8 weights (opt-in, CPU).** ``StaticDecoder(..., int8=True)`` runs the step's matrix
  products with int8 weights and 8-bit inputs (:func:`quantize_int8`), after moving the
  activations' outlier channels into the weights (:func:`smooth`, calibrated on a text you
  give it); ``down_proj``, whose inputs have the worst outliers, and the output layer get
  float16 weights (:class:`Fp16Linear`). Several times faster per token, and no longer equal
  to the float32 model (SmolLM2: perplexity within 2%, see BENCHMARKS.md).

The step is written over the model's own modules and weights (our ``GPT`` and ``Llama``), so
``tests/test_fast_decoding.py`` can prove that it returns the same tokens as ``generate`` and
the same logits within float32 rounding.

    decoder = StaticDecoder(model, batch_size=1, max_len=prompt_len + 128)
    out = decoder.generate(input_ids, 128)        # == generate(model, input_ids, 128)
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.attention import KVCache, rope_cos_sin

__all__ = [
    "Fp16Linear",
    "Int8Linear",
    "StaticDecoder",
    "StaticKVCache",
    "calibration_ids",
    "fast_generate",
    "quantize_int8",
    "smooth",
]


# --------------------------------------------------------------------------------------------
# The static cache
# --------------------------------------------------------------------------------------------


class StaticKVCache(KVCache):
    """A :class:`~course_lib.attention.KVCache` whose memory is allocated once, for ``max_len``
    positions of every layer.

    Two ways to fill it:

    - ``update(layer_idx, k, v)``, as ``KVCache``: append after what the layer holds and get back
      (a view of) everything so far; our ``GPT`` and ``Llama`` accept it as ``past_key_values``.
    - ``write(layer_idx, positions, k, v)``: put keys at the given positions (a tensor, so the
      call needs no number from Python) and get back the *whole* buffers, ``max_len`` long; the
      caller masks the positions not written yet. This is what the fixed-shape step uses.

    Example:
        >>> cache = StaticKVCache(n_layers=1, batch_size=1, n_kv_heads=2, max_len=8, head_dim=4)
        >>> k, v = cache.update(0, torch.ones(1, 2, 5, 4), torch.ones(1, 2, 5, 4))
        >>> k.shape, cache.get_seq_length(), cache.keys.shape
        (torch.Size([1, 2, 5, 4]), 5, torch.Size([1, 1, 2, 8, 4]))
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        sizes = {
            "n_layers": n_layers,
            "batch_size": batch_size,
            "n_kv_heads": n_kv_heads,
            "max_len": max_len,
            "head_dim": head_dim,
        }
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, H_kv, max_len, D)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.lengths = [0] * n_layers  # positions filled by update(), per layer

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, H_kv, T_new, D) after the layer's cached positions; return (B, H_kv,
        T_past + T_new, D) views of its keys and values (no copy, no new memory)."""
        start = self.lengths[layer_idx]
        end = start + k.shape[-2]
        if end > self.max_len:
            raise ValueError(
                f"the cache holds {self.max_len} positions, {end} needed: "
                "build the StaticKVCache with a larger max_len"
            )
        self.keys[layer_idx, :, :, start:end] = k
        self.values[layer_idx, :, :, start:end] = v
        self.lengths[layer_idx] = end
        return self.keys[layer_idx, :, :, :end], self.values[layer_idx, :, :, :end]

    def write(
        self, layer_idx: int, positions: Tensor, k: Tensor, v: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Write k, v (B, H_kv, T, D) at ``positions`` (T,) and return the layer's whole buffers
        (B, H_kv, max_len, D). Fixed shapes, no host synchronisation: safe in a CUDA graph."""
        self.keys[layer_idx].index_copy_(2, positions, k)
        self.values[layer_idx].index_copy_(2, positions, v)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions filled by ``update`` in ``layer_idx`` (``write`` leaves the count alone)."""
        return self.lengths[layer_idx] if layer_idx < len(self.lengths) else 0

    def reorder(self, beam_idx: Tensor) -> None:
        """Keep batch rows ``beam_idx`` (B,) in every layer, in place (for beam search)."""
        if beam_idx.dim() != 1 or beam_idx.numel() != self.keys.shape[1]:
            raise ValueError(
                f"beam_idx must hold one row per batch row ({self.keys.shape[1]}), "
                f"got shape {tuple(beam_idx.shape)}"
            )
        idx = beam_idx.to(self.keys.device)
        self.keys.copy_(self.keys.index_select(1, idx))
        self.values.copy_(self.values.index_select(1, idx))

    def __len__(self) -> int:
        return len(self.lengths)

    def __repr__(self) -> str:
        return f"StaticKVCache(keys={tuple(self.keys.shape)}, lengths[0]={self.lengths[0]})"


# --------------------------------------------------------------------------------------------
# The fixed-shape step, one per architecture
# --------------------------------------------------------------------------------------------


def _visible(positions: Tensor, max_len: int) -> Tensor:
    """(T, max_len) bool: query at ``positions[i]`` may see cached position j iff j <= it."""
    return torch.arange(max_len, device=positions.device)[None, :] <= positions[:, None]


def _heads(x: Tensor, n_heads: int) -> Tensor:
    B, T, _ = x.shape
    return x.view(B, T, n_heads, -1).transpose(1, 2)  # (B, H, T, D)


def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``course_lib.attention.apply_rope`` without its argument checks (they cost time per call)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """``course_lib.llama.RMSNorm`` in one call: it normalises in float32, and for float32
    inputs the fused ``F.rms_norm(x, ..., weight)`` gives the same bits as its two steps."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def _linear(weight: Tensor) -> nn.Linear:
    """A bias-free ``nn.Linear`` whose weight is ``weight`` (out, in), not a copy of it."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    layer.weight = nn.Parameter(weight, requires_grad=False)
    return layer


class _StreamedLinear(nn.Module):
    """``x @ weight.T`` for matrix-vector products that wait on memory, on the CPU.

    A decoding step multiplies one vector by each weight matrix, so its time is the time to
    read the weights. Two changes read them faster (measured on a 2-core AMD EPYC VM,
    SmolLM2's matrices, float32, weights not in cache):

    - the weight is stored transposed, (in, out) and contiguous, so the product streams it
      row after row: 1.2x (layers) to 1.7x (output layer) faster than ``F.linear``;
    - its columns are cut into ``parts`` blocks (one per thread), stored as one (parts, in,
      out / parts) tensor, and ``torch.bmm`` multiplies the blocks on all threads at once: a
      single product read about 16 GB/s, on 1 thread as on 2, the blocks about 22.

    The same product up to rounding (the kernel may add the terms in another order), from a
    copy of the weight. Used on the CPU only: a GPU keeps the model's own layers.
    """

    def __init__(self, weight: Tensor, parts: int | None = None):
        super().__init__()
        out_features, in_features = weight.shape
        parts = parts or torch.get_num_threads()
        parts = max(p for p in range(1, parts + 1) if out_features % p == 0)
        blocks = weight.detach().t().reshape(in_features, parts, out_features // parts)
        self.weight_t = nn.Parameter(blocks.permute(1, 0, 2).contiguous(), requires_grad=False)
        self.in_features, self.out_features, self.parts = in_features, out_features, parts

    def forward(self, x: Tensor) -> Tensor:
        if self.parts == 1:
            return x @ self.weight_t[0]
        rows = x.reshape(1, -1, self.in_features).expand(self.parts, -1, -1)
        y = torch.bmm(rows, self.weight_t)  # (parts, rows, out / parts)
        return y.transpose(0, 1).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, {self.parts} blocks"


def _quantized(fn, *args, **kwargs):
    with warnings.catch_warnings():
        # torch's quantized tensors are deprecated (torch 2.13) in favour of the torchao
        # package, which the course does not install; its fbgemm kernels still work.
        warnings.filterwarnings("ignore", message=r".*(deprecated|quantiz)", category=Warning)
        return fn(*args, **kwargs)


def _int8_sums_saturate() -> bool:
    """Does this CPU's int8 kernel add pairs of products in 16 bits (fbgemm on CPUs without
    VNNI instructions)? Then 8-bit inputs can overflow: 255 * 127 * 2 > 32767. Checked once
    with a product that would: 63 inputs of 1 (quantized to 255) times weights of 1 (127)."""
    layer = Int8Linear(torch.ones(1, 64), reduce_range=False)
    x = torch.ones(1, 64)
    x[0, 0] = 0.0  # the input range is [0, 1]: 1 becomes 255
    return abs(layer(x).item() - 63.0) > 0.5


class Int8Linear(nn.Module):
    """``x @ weight.T + bias`` with int8 weights, on the CPU (fbgemm kernels).

    Each weight row (output channel) is stored as int8 with its own float scale, its largest
    absolute value / 127.5. At run time each call quantizes its input to 8 bits with one scale
    and zero point (from the input's min and max), multiplies in integers and scales the result
    back to float32. A matrix-vector product then reads a quarter of the bytes, which is what a
    decoding step waits for.

    ``reduce_range=True`` quantizes the input to 7 bits instead (what ``torch.ao``'s
    ``quantize_dynamic`` always does, so that CPUs without VNNI cannot overflow): about 6% more
    SmolLM2 perplexity by itself, so :func:`quantize_int8` uses it only where it must.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None = None, reduce_range: bool = False):
        super().__init__()
        if weight.device.type != "cpu":
            raise ValueError("int8 weights run on the CPU (fbgemm kernels): move the model there")
        w = weight.detach().float()
        scale = (w.abs().amax(1) / 127.5).clamp_min(1e-12).double()  # (out,)
        zero = torch.zeros(len(scale), dtype=torch.long)
        q = _quantized(torch.quantize_per_channel, w, scale, zero, 0, torch.qint8)
        b = None if bias is None else bias.detach().float()
        self.packed = _quantized(torch.ops.quantized.linear_prepack, q, b)
        self.in_features, self.out_features = w.shape[1], w.shape[0]
        self.reduce_range = reduce_range

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.quantized.linear_dynamic(x, self.packed, reduce_range=self.reduce_range)

    def extra_repr(self) -> str:
        bits = 7 if self.reduce_range else 8
        return f"in={self.in_features}, out={self.out_features}, {bits}-bit inputs"


class Fp16Linear(nn.Module):
    """``x @ weight.T + bias`` with float16 weights and float32 inputs and sums (fbgemm, CPU):
    half the bytes of float32, and a relative error of about 1e-4 (float16's rounding), where
    8-bit inputs would cost too much accuracy (``down_proj``, see :class:`StaticDecoder`)."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None):
        super().__init__()
        if weight.device.type != "cpu":
            raise ValueError(
                "float16 weights run on the CPU (fbgemm kernels): move the model there"
            )
        b = None if bias is None else bias.detach().float()
        self.packed = _quantized(
            torch.ops.quantized.linear_prepack_fp16, weight.detach().float(), b
        )
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, float16 weights"


def quantize_int8(module: nn.Module) -> nn.Module:
    """Swap, in place, every ``nn.Linear`` inside ``module`` for an :class:`Int8Linear`; return
    ``module``. The rest (embeddings, norms) stays float32. Inputs are quantized to 8 bits, or
    to 7 (with a warning) on a CPU whose int8 kernel could overflow with 8."""
    reduce_range = _int8_sums_saturate()
    if reduce_range:
        warnings.warn(
            "this CPU's int8 kernel adds products in 16 bits (no VNNI): inputs are quantized to "
            "7 bits, which costs accuracy (SmolLM2, measured on an AVX2 CPU: +1% perplexity "
            "with calibration, +8% without)",
            stacklevel=2,
        )
    for parent in module.modules():  # the check and the warning once, not once per submodule
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child.weight, child.bias, reduce_range))
    return module


@torch.no_grad()
def smooth(
    norm: nn.Module, linear: nn.Linear, max_input: Tensor, alpha: float = 0.5
) -> tuple[nn.Module, nn.Linear]:
    """SmoothQuant (Xiao et al., 2023) for a ``linear`` fed by an RMSNorm ``norm``: the same
    product, with the input's outlier channels made smaller and the weight's columns larger.

    A few input channels of a Llama are much larger than the rest, and an 8-bit input shares one
    scale across all of them: the small channels are rounded to a few levels. With
    ``s_j = max|x_j| ** alpha / max|W[:, j]| ** (1 - alpha)`` (``max_input``: max|x_j| over a
    calibration text), ``W x = (W diag(s)) (x / s)``; ``x / s`` costs nothing, it is folded into
    the norm's weight. Returns copies (``norm`` and ``linear`` are left alone).
    """
    weight = linear.weight.detach()
    s = max_input.clamp_min(1e-5) ** alpha / weight.abs().amax(0).clamp_min(1e-5) ** (1 - alpha)
    norm = copy.deepcopy(norm)
    norm.weight.div_(s)
    return norm, _linear(weight * s)


def calibration_ids(tokenizer, n_tokens: int = 512) -> Tensor:
    """(1, n_tokens) token ids of the start of the Shakespeare *training* split
    (``course_lib.data.load_corpus("train")``): the course's calibration text for
    ``StaticDecoder(..., int8=True, calibration=...)``, disjoint from the validation text its
    perplexity is measured on."""
    from course_lib.data import load_corpus

    ids = tokenizer(load_corpus("train")[: 20 * n_tokens], return_tensors="pt").input_ids
    if ids.shape[1] < n_tokens:
        raise ValueError(f"the training split gave {ids.shape[1]} tokens, {n_tokens} asked")
    return ids[:, :n_tokens]


def _max_inputs(model: nn.Module, norms: list[nn.Module], calibration: Tensor) -> list[Tensor]:
    """max |output_j| of each of ``norms`` (channel by channel) over ``model(calibration)``."""
    if calibration.dim() != 2 or calibration.is_floating_point():
        raise ValueError(f"calibration must be (B, T) token ids, got {tuple(calibration.shape)}")
    found: dict[nn.Module, Tensor] = {}

    def record(norm: nn.Module, inputs: tuple, out: Tensor) -> None:
        found[norm] = out.detach().abs().flatten(0, -2).amax(0)

    hooks = [norm.register_forward_hook(record) for norm in norms]
    try:
        with torch.no_grad():
            model(calibration.to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return [found[norm] for norm in norms]


# the int8 step's products that keep float16 weights: down_proj's inputs have the worst
# outliers, and the output layer's error goes straight into the logits (SmolLM2 on an AVX2 CPU,
# 7-bit inputs: int8 there +2.10% perplexity, float16 +1.24%, for about 3 ms per token)
_FP16_WEIGHTS = ("down", "head")


class _LlamaStep:
    """``Llama.forward`` for tokens at given positions, on a static cache; logits of the last
    position. Its matrix products are five lists of ``nn.Linear`` (q/k/v fused, o, gate/up
    fused, down, and the output layer), and the RMSNorms feeding three of them are lists too, so
    that ``int8=True`` can smooth those three (:func:`smooth`, when given ``calibration`` ids),
    give ``down`` and the output layer float16 weights and the other three int8 ones
    (:func:`quantize_int8`)."""

    def __init__(
        self,
        model: nn.Module,
        cache: StaticKVCache,
        int8: bool = False,
        calibration: Tensor | None = None,
    ) -> None:
        c = model.config
        self.model, self.cache, self.config = model, cache, c
        blocks = model.model.layers
        with torch.no_grad():
            linears = nn.ModuleDict(
                {
                    "qkv": nn.ModuleList(
                        _linear(
                            torch.cat(
                                [
                                    b.self_attn.q_proj.weight,
                                    b.self_attn.k_proj.weight,
                                    b.self_attn.v_proj.weight,
                                ]
                            )
                        )
                        for b in blocks
                    ),
                    "o": nn.ModuleList(b.self_attn.o_proj for b in blocks),
                    "gate_up": nn.ModuleList(
                        _linear(torch.cat([b.mlp.gate_proj.weight, b.mlp.up_proj.weight]))
                        for b in blocks
                    ),
                    "down": nn.ModuleList(b.mlp.down_proj for b in blocks),
                    "head": model.lm_head,
                }
            )
        norms = nn.ModuleDict(
            {
                "qkv": nn.ModuleList(b.input_layernorm for b in blocks),
                "gate_up": nn.ModuleList(b.post_attention_layernorm for b in blocks),
                "head": nn.ModuleList([model.model.norm]),
            }
        )
        linears["head"] = nn.ModuleList([linears["head"]])
        if int8 and calibration is not None:  # the products that follow a norm
            pairs = [(n, key, i) for key in norms for i, n in enumerate(norms[key])]
            found = _max_inputs(model, [n for n, _, _ in pairs], calibration)
            for (norm, key, i), max_input in zip(pairs, found):
                norms[key][i], linears[key][i] = smooth(norm, linears[key][i], max_input)
        weight = model.model.embed_tokens.weight
        if int8:
            for key in _FP16_WEIGHTS:
                linears[key] = nn.ModuleList(Fp16Linear(d.weight) for d in linears[key])
            quantize_int8(linears)
        elif weight.device.type == "cpu":  # a step there waits on reading the weights
            for key, layers in linears.items():
                linears[key] = nn.ModuleList(_StreamedLinear(m.weight) for m in layers)
        self.norms, self.linears = norms, linears
        cos, sin = rope_cos_sin(cache.max_len, c.head_dim, c.rope_theta, device=weight.device)
        self.cos, self.sin = cos.to(weight.dtype), sin.to(weight.dtype)  # (max_len, D)
        self.eps = c.rms_norm_eps
        # each layer's weights and products, looked up once: a step runs 30 layers, and a
        # module call or a dictionary lookup costs microseconds against a 30 us norm
        lin = self.linears
        self.layers = [
            (
                norms["qkv"][i].weight,
                lin["qkv"][i].forward,
                lin["o"][i].forward,
                norms["gate_up"][i].weight,
                lin["gate_up"][i].forward,
                lin["down"][i].forward,
            )
            for i in range(c.num_hidden_layers)
        ]
        self.head = (norms["head"][0].weight, lin["head"][0].forward)

    def __call__(self, input_ids: Tensor, positions: Tensor) -> Tensor:
        c, eps = self.config, self.eps
        H, H_kv, D = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        cos, sin = self.cos[positions], self.sin[positions]  # (T, D)
        # one additive mask for every layer (-inf where a position is not visible)
        visible = _visible(positions, self.cache.max_len)
        mask = torch.zeros(visible.shape, dtype=cos.dtype, device=cos.device)
        mask.masked_fill_(~visible, float("-inf"))
        x = self.model.model.embed_tokens(input_ids)  # (B, T, C)
        B, T, _ = x.shape
        for i, (norm1, qkv, o, norm2, gate_up, down) in enumerate(self.layers):
            h = qkv(_rms_norm(x, norm1, eps))  # (B, T, (H + 2 H_kv) D)
            # RoPE on the H query heads and H_kv key heads at once: they sit side by side
            qk = _rope(h[..., : (H + H_kv) * D].view(B, T, H + H_kv, D).transpose(1, 2), cos, sin)
            v = h[..., (H + H_kv) * D :].view(B, T, H_kv, D).transpose(1, 2)
            k, v = self.cache.write(i, positions, qk[:, H:], v)
            y = F.scaled_dot_product_attention(qk[:, :H], k, v, attn_mask=mask, enable_gqa=True)
            x = x + o(y.transpose(1, 2).flatten(2))
            gate, up = gate_up(_rms_norm(x, norm2, eps)).chunk(2, dim=-1)
            x = x + down(F.silu(gate) * up)
        norm, head = self.head
        return head(_rms_norm(x[:, -1], norm, eps))  # (B, V): the last position only

    def prefill(self, input_ids: Tensor) -> Tensor:
        """The prompt (B, T) at positions 0..T-1 through the float32 model's own ``logits``, in
        one pass, its keys and values written to the cache; the logits of its last position (B, V).

        The int8 decoder starts this way: T prompt positions cost one matrix-matrix pass (the
        weights read once) instead of T int8 steps, and the prompt's keys and values are the
        float32 model's. (The output layer on the other T - 1 positions is wasted: about 25 ms
        for SmolLM2 and a 35-token prompt, not worth a second copy of ``Llama.logits``.)"""
        self.cache.lengths = [0] * len(self.cache.lengths)  # update() writes from position 0
        return self.model.logits(input_ids, 0, self.cache)[:, -1]


class _GPTStep:
    """``GPT.forward`` (eval mode) for tokens at given positions, on a static cache."""

    def __init__(self, model: nn.Module, cache: StaticKVCache) -> None:
        self.model, self.cache, self.n_head = model, cache, model.config.n_head

    def __call__(self, input_ids: Tensor, positions: Tensor) -> Tensor:
        t = self.model.transformer
        mask = _visible(positions, self.cache.max_len)
        x = t.wte(input_ids) + t.wpe(positions)  # (B, T, C)
        for i, block in enumerate(t.h):
            q, k, v = block.attn.c_attn(block.ln_1(x)).chunk(3, dim=-1)
            q, k, v = (_heads(z, self.n_head) for z in (q, k, v))  # (B, H, T, D)
            k, v = self.cache.write(i, positions, k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + block.attn.c_proj(y.transpose(1, 2).flatten(2))
            x = x + block.mlp(block.ln_2(x))
        return self.model.lm_head(t.ln_f(x[:, -1]))


def _step_for(
    model: nn.Module,
    batch_size: int,
    max_len: int,
    int8: bool = False,
    calibration: Tensor | None = None,
):
    from course_lib.gpt import GPT
    from course_lib.llama import Llama

    c = getattr(model, "config", None)
    if isinstance(model, Llama):
        shape, limit, kind = (
            (c.num_hidden_layers, c.num_key_value_heads, c.head_dim),
            c.max_position_embeddings,
            _LlamaStep,
        )
    elif isinstance(model, GPT):
        shape, limit, kind = (c.n_layer, c.n_head, c.n_embd // c.n_head), c.n_positions, _GPTStep
    else:
        raise TypeError(
            f"StaticDecoder runs course_lib's GPT and Llama, got {type(model).__name__}"
            ": convert a Hugging Face model with GPT.from_hf / Llama.from_hf"
        )
    if isinstance(max_len, bool) or not isinstance(max_len, int) or not 1 <= max_len <= limit:
        raise ValueError(
            f"max_len must be an int in [1, {limit}] (the model's context), got {max_len!r}"
        )
    n_layers, n_kv_heads, head_dim = shape
    weight = next(model.parameters())
    cache = StaticKVCache(
        n_layers,
        batch_size,
        n_kv_heads,
        max_len,
        head_dim,
        device=weight.device,
        dtype=weight.dtype,
    )
    if int8 and kind is not _LlamaStep:
        raise ValueError("int8=True is written for our Llama; run the GPT with int8=False")
    return (kind(model, cache, int8, calibration) if int8 else kind(model, cache)), cache


# --------------------------------------------------------------------------------------------
# The decoder
# --------------------------------------------------------------------------------------------


class StaticDecoder:
    """Greedy decoding of one model for batches of ``batch_size`` prompts, up to ``max_len``
    positions (prompt included), on a static cache; one CUDA graph per token on a GPU.

    Build it once and call :meth:`generate` as often as you like: the cache and the graph are
    reused (a prompt simply overwrites the positions it needs).

    Args:
        model: our ``GPT`` or ``Llama``, in eval mode.
        batch_size: B, the prompts per call.
        max_len: longest prompt + new tokens (the cache's length).
        cuda_graph: record the decoding step as a CUDA graph; None means "when on CUDA".
        compile: ``torch.compile`` the step (fuses elementwise work; compiling takes a while).
        int8: run the step's matrix products with int8 weights and 8-bit inputs, see
            :func:`quantize_int8`, except ``down_proj`` and the output layer: float16 weights
            (SmolLM2's perplexity: +1.6% from 8-bit ``down_proj`` inputs alone; with 7-bit
            inputs, an int8 output layer costs +0.9%, measured).
            CPU and ``Llama`` only. Faster, and no longer equal to the float32 model:
            :meth:`logits` gives its logits, to measure how far it is. :meth:`generate` reads
            the prompt with the float32 model (one pass; its keys and values are exact) and
            decodes every new token after the first with the int8 step.
        calibration: with ``int8``, (B, T) token ids of a text *other* than the one you will
            measure on (a few hundred tokens): the float32 model's activations on it set the
            :func:`smooth` scales of the products that follow a norm (q/k/v, gate/up, output
            layer). Deterministic: the same ids give the same int8 weights. Without it, no
            smoothing, and more perplexity (see BENCHMARKS.md). The course uses
            :func:`calibration_ids` (the start of the Shakespeare training split).
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size: int,
        max_len: int,
        *,
        cuda_graph: bool | None = None,
        compile: bool = False,
        int8: bool = False,
        calibration: Tensor | None = None,
    ) -> None:
        if model.training:
            raise ValueError("StaticDecoder needs the model in eval mode: call model.eval() first")
        if calibration is not None and not int8:
            raise ValueError("calibration sets the int8 weights: pass int8=True with it")
        self.step, self.cache = _step_for(model, batch_size, max_len, int8, calibration)
        self.batch_size, self.max_len, self.int8 = batch_size, max_len, int8
        device = self.cache.keys.device
        if cuda_graph is None:
            cuda_graph = device.type == "cuda"
        if cuda_graph and device.type != "cuda":
            raise ValueError(
                f"CUDA graphs need a CUDA model, this one is on {device}: "
                "pass cuda_graph=False (or None)"
            )
        self.decode = torch.compile(self.step, dynamic=False) if compile else self.step
        # the step's fixed inputs: the newest token of each row and its position
        self.token = torch.zeros(batch_size, 1, dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.graph = self._record() if cuda_graph else None

    @torch.no_grad()
    def advance(self) -> None:
        """One decoding step on the fixed buffers: the token at ``position`` goes in, the next
        greedy token replaces it, ``position`` moves on by one. No host synchronisation."""
        logits = self.decode(self.token, self.position)  # (B, V)
        self.token.copy_(logits.argmax(dim=-1, keepdim=True))
        self.position.add_(1)

    def _record(self) -> torch.cuda.CUDAGraph:
        """Record ``advance`` as a CUDA graph (after warm-up runs on a side stream, as the
        ``torch.cuda.graph`` documentation asks). The warm-up writes junk at positions 0-2 of
        the cache; every prompt overwrites them before they are read."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.advance()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.advance()
        return graph

    @torch.no_grad()
    def logits(self, input_ids: Tensor) -> Tensor:
        """(B, T, V) logits of every position of ``input_ids`` (B, T <= ``max_len``), computed
        by this decoder's step one position at a time, exactly as decoding computes them (with
        int8 weights each call quantizes its inputs with one scale: one token per call, as in
        decoding, not a whole text whose rare outlier tokens would set it). For perplexity.
        """
        if input_ids.dim() != 2 or input_ids.shape[1] > self.max_len:
            raise ValueError(f"input_ids must be (B, T) with T <= max_len={self.max_len}")
        ids = input_ids.to(self.token.device)
        positions = torch.arange(ids.shape[1], device=ids.device)
        return torch.stack(
            [self.step(ids[:, t : t + 1], positions[t : t + 1]) for t in range(ids.shape[1])],
            dim=1,
        )

    @torch.no_grad()
    def generate(self, input_ids: Tensor, max_new_tokens: int) -> Tensor:
        """Greedy continuation: equals ``generate(model, input_ids, max_new_tokens)``.

        Args:
            input_ids: (B, T) prompt ids, B = ``batch_size``, T + max_new_tokens <= ``max_len``.
            max_new_tokens: how many tokens to add, >= 0.

        Returns:
            (B, T + max_new_tokens) ids, prompt included.
        """
        if (
            not isinstance(input_ids, Tensor)
            or input_ids.dim() != 2
            or input_ids.is_floating_point()
        ):
            raise TypeError("input_ids must be an integer tensor of shape (B, T)")
        B, T = input_ids.shape
        if B != self.batch_size:
            raise ValueError(
                f"this decoder was built for batch_size={self.batch_size}, got {B} "
                "prompts: build another StaticDecoder"
            )
        if (
            isinstance(max_new_tokens, bool)
            or not isinstance(max_new_tokens, int)
            or max_new_tokens < 0
        ):
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        if T + max_new_tokens > self.max_len:
            raise ValueError(
                f"prompt ({T}) + max_new_tokens ({max_new_tokens}) exceeds "
                f"max_len={self.max_len}: build the decoder with a larger max_len"
            )
        out = torch.empty(B, T + max_new_tokens, dtype=torch.long, device=self.token.device)
        out[:, :T] = input_ids
        if max_new_tokens == 0:
            return out
        positions = torch.arange(T, device=self.token.device)
        if self.int8:  # the prompt in float32, in one pass: see _LlamaStep.prefill
            logits = self.step.prefill(input_ids.to(self.token.device))
        else:
            logits = self.step(input_ids.to(self.token.device), positions)  # the prompt, once
        self.token.copy_(logits.argmax(dim=-1, keepdim=True))
        self.position.fill_(T)
        out[:, T] = self.token[:, 0]
        for t in range(T + 1, T + max_new_tokens):
            if self.graph is not None:
                self.graph.replay()
            else:
                self.advance()
            out[:, t] = self.token[:, 0]
        return out


def fast_generate(
    model: nn.Module,
    input_ids: Tensor,
    max_new_tokens: int,
    *,
    cuda_graph: bool | None = None,
    compile: bool = False,
) -> Tensor:
    """Greedy decoding through a :class:`StaticDecoder` built for this one call.

    Same tokens as ``course_lib.generation.generate(model, input_ids, max_new_tokens)``. For
    repeated calls, build the ``StaticDecoder`` once (recording the graph, or compiling, costs
    more than a short generation).
    """
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        raise TypeError("input_ids must be an integer tensor of shape (B, T)")
    decoder = StaticDecoder(
        model,
        input_ids.shape[0],
        input_ids.shape[1] + max_new_tokens,
        cuda_graph=cuda_graph,
        compile=compile,
    )
    return decoder.generate(input_ids, max_new_tokens)
