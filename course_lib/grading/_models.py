"""The small seeded models that the generation checks hand to a learner's function.

A model cannot travel on the wire (only plain data does), so the referee sends a recipe, a
``GPTConfig`` as a dict, a seed and a logit scale (see ``_harness.model_arg``), and both sides
build the same :class:`RecordingGPT` from it: the kernel to run the learner's ``generate``, the
referee to compute the expected token ids. The kernel's copy records what each forward pass
received (batch, new tokens, cached positions) and sends that record back with the result, so
a grader can tell a KV-cache loop from one that recomputes the whole sequence.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from course_lib.attention import KVCache
from course_lib.gpt import GPT, GPTConfig
from course_lib.lm import CausalLMOutput

_FORWARD = inspect.signature(GPT.forward)


class RecordingGPT(GPT):
    """A course GPT that remembers, for every forward pass, what it was given.

    ``calls`` holds one dict per forward: ``batch`` and ``length`` (the shape of ``input_ids``)
    and ``past`` (how many positions the cache passed in already held; 0 without a cache).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.calls: list[dict[str, int]] = []

    def forward(self, input_ids: Tensor, *args: Any, **kwargs: Any) -> CausalLMOutput:
        given = _FORWARD.bind(self, input_ids, *args, **kwargs).arguments
        cache = given.get("past_key_values")
        cache = given.get("cache") if cache is None else cache
        past = cache.get_seq_length() if isinstance(cache, KVCache) else 0
        if isinstance(input_ids, Tensor) and input_ids.dim() == 2:
            self.calls.append(
                {"batch": int(input_ids.shape[0]), "length": int(input_ids.shape[1]), "past": past}
            )
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny tensors: threads only cost (and 1 thread = the referee's)
        try:
            return super().forward(input_ids, *args, **kwargs)
        finally:
            torch.set_num_threads(threads)


def build_model(spec: dict[str, Any]) -> RecordingGPT:
    """The model of a ``model_arg`` recipe, in eval mode, float32, built the same everywhere.

    The global random state is left as it was (the weights come from a private seed).
    """
    config = GPTConfig(**dict(spec["config"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec["seed"]))
        model = RecordingGPT(config)
    model = model.float().eval()
    scale = float(spec.get("scale", 1.0))
    with torch.no_grad():
        # GPT-2's init gives nearly uniform next-token distributions; a larger output layer
        # makes them peaked enough that greedy choices are clear and samplers differ.
        model.lm_head.weight.mul_(scale)
    for p in model.parameters():
        p.requires_grad_(False)
    return model
