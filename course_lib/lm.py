"""What every causal language model here shares: the output, the loss, the cache argument, the
input checks, and the copy of weights to and from Hugging Face.

``course_lib.gpt.GPT`` and ``course_lib.llama.Llama`` both behave like a Hugging Face causal LM::

    out = model(input_ids, labels=input_ids)          # out.logits (B, T, V), out.loss
    out = model(prompt, use_cache=True)               # out.past_key_values: a KVCache
    out = model(next_ids, past_key_values=out.past_key_values)  # continues at the cached position

This module is that contract, written once; the models' own files hold only their architecture.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.attention import KVCache

__all__ = [
    "CausalLM",
    "CausalLMOutput",
    "causal_lm_loss",
    "check_inputs",
    "copy_weights",
    "resolve_cache",
]


@dataclass
class CausalLMOutput:
    """What a forward pass returns (the fields of HF's ``CausalLMOutputWithPast`` we use).

    Attributes:
        logits: (B, T, V) next-token scores at every position.
        loss: mean cross-entropy over the predicted positions (0-dim), when labels were given.
        past_key_values: the KV cache, when one was used.
    """

    logits: Tensor
    loss: Tensor | None = None
    past_key_values: KVCache | None = None

    @property
    def cache(self) -> KVCache | None:
        """The same cache under the name transformers 5 prefers for its own outputs."""
        return self.past_key_values


def causal_lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy as HF computes it: position t predicts ``labels[:, t + 1]``.

    Args:
        logits: (B, T, V).
        labels: (B, T) token ids; -100 marks positions to ignore.

    Returns:
        0-dim mean over the non-ignored predicted positions (computed in float32).
    """
    # Shift the labels, not the logits: logits[:, :-1] would copy the (B, T-1, V) tensor, the
    # largest in the model. The last position gets the ignored label -100 (nothing follows it).
    targets = F.pad(labels[:, 1:], (0, 1), value=-100)  # (B, T)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


def resolve_cache(
    past_key_values: KVCache | None, cache: KVCache | None, use_cache: bool
) -> KVCache | None:
    """The cache a forward pass should use: the one given (under either name), a fresh one when
    ``use_cache`` asks for it, or None."""
    if past_key_values is not None and cache is not None and past_key_values is not cache:
        raise ValueError("pass the KV cache once, as past_key_values= or as cache=, not both")
    cache = past_key_values if past_key_values is not None else cache
    if cache is None:
        return KVCache() if use_cache else None
    if not isinstance(cache, KVCache):
        raise TypeError(
            f"past_key_values must be a course_lib.attention.KVCache, got {type(cache).__name__}: "
            "a Hugging Face cache only works with Hugging Face models"
        )
    return cache


def check_inputs(
    input_ids: Tensor, labels: Tensor | None, vocab_size: int, past: int, max_positions: int
) -> None:
    """Validate a causal LM's forward arguments (shared by ``GPT`` and ``course_lib.llama.Llama``)."""
    if not isinstance(input_ids, Tensor):
        raise TypeError(f"input_ids must be a LongTensor (B, T), got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}: add a batch dim with input_ids[None]"
        )
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(
            f"input_ids must hold integer token ids, got {input_ids.dtype}: use input_ids.long()"
        )
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: give at least one token per row")
    # The id range is read on the CPU only. On a GPU, min() and max() would travel back to the
    # host and stall the queue of kernels on every call, and under torch.compile the branch
    # would split the graph; there an id out of range fails inside the embedding lookup instead.
    if input_ids.numel() and input_ids.device.type == "cpu" and not torch.compiler.is_compiling():
        low, high = input_ids.aminmax()
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"token ids must lie in [0, {vocab_size}), got min {low.item()} and max "
                f"{high.item()}: was the text encoded with this model's tokenizer?"
            )
    if past + input_ids.shape[1] > max_positions:
        raise ValueError(
            f"{past} cached + {input_ids.shape[1]} new tokens exceed the model's {max_positions} "
            f"positions: keep only the last {max_positions} tokens (input_ids[:, -{max_positions}:])"
        )
    if labels is not None and (not isinstance(labels, Tensor) or labels.shape != input_ids.shape):
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(
            f"labels must have input_ids' shape {tuple(input_ids.shape)}, got {shape}: pass labels=input_ids "
            "(the model shifts them by one itself)"
        )


class CausalLM(nn.Module):
    """A causal LM's ``forward``, written once: pick the cache, check the inputs, compute the
    logits (the model's own ``logits`` method: its architecture), add the loss.

    A subclass sets ``self.config`` (with ``vocab_size`` and ``n_positions``) and defines
    ``logits(input_ids, past, cache)``.
    """

    config: Any

    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        *,
        cache: KVCache | None = None,
    ) -> CausalLMOutput:
        """Next-token logits for every position (and the loss when ``labels`` are given).

        Args:
            input_ids: LongTensor (B, T).
            labels: optional (B, T), usually ``input_ids`` itself; shifted inside (position t
                predicts ``labels[:, t + 1]``), -100 is ignored.
            past_key_values: a ``KVCache`` from an earlier call; ``input_ids`` then continue at
                position ``past_key_values.get_seq_length()``. It is updated in place.
            use_cache: start a fresh ``KVCache`` when none is given.
            cache: another name for ``past_key_values`` (transformers 5 calls it ``cache``).

        Returns:
            ``CausalLMOutput`` with logits (B, T, V), loss (0-dim or None) and the cache (or None).
        """
        cache = resolve_cache(past_key_values, cache, use_cache)
        past = cache.get_seq_length() if cache is not None else 0
        check_inputs(input_ids, labels, self.config.vocab_size, past, self.config.n_positions)
        logits = self.logits(input_ids, past, cache)  # (B, T, V)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutput(logits=logits, loss=loss, past_key_values=cache)

    def logits(self, input_ids: Tensor, past: int, cache: KVCache | None) -> Tensor:
        """(B, T, V) logits of tokens at positions ``past .. past + T - 1`` (the architecture)."""
        raise NotImplementedError


def copy_weights(
    source: nn.Module,
    target: nn.Module,
    keys: Iterable[tuple[str, bool]],
    names: tuple[str, str] = ("HF", "ours"),
) -> None:
    """Copy ``source``'s parameters into ``target``'s, key by key, transposing where asked.

    Args:
        source, target: two models whose state dicts share the names in ``keys``.
        keys: (name, transposed) pairs; ``transposed`` for a weight that one side stores as
            (d_in, d_out) and the other as (d_out, d_in) (GPT-2's ``Conv1D`` vs ``nn.Linear``).
        names: what to call the source and the target in an error message.

    Raises:
        ValueError: a tensor's shape differs, naming the key (the configs disagree).
    """
    src_state, dst_state = source.state_dict(), target.state_dict()
    with torch.no_grad():
        for key, transposed in keys:
            src = src_state[key].t() if transposed else src_state[key]
            if src.shape != dst_state[key].shape:
                raise ValueError(
                    f"{key}: {names[0]} tensor {tuple(src.shape)} != "
                    f"{names[1]} {tuple(dst_state[key].shape)}"
                )
            dst_state[key].copy_(src)
