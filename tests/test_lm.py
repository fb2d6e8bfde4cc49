"""course_lib.lm: the contract GPT and Llama share (loss, cache argument, input checks, weight copy)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.attention import KVCache
from course_lib.gpt import GPT, GPTConfig
from course_lib.lm import causal_lm_loss, check_inputs, copy_weights, resolve_cache


def test_copy_weights_transposes_where_asked_and_names_a_mismatched_key():
    src, dst = nn.Linear(3, 5), nn.Linear(5, 3)  # dst stores src's weight transposed
    copy_weights(src, dst, [("weight", True)])
    assert torch.equal(dst.weight, src.weight.t())
    assert not torch.equal(dst.bias[:3], src.bias[:3])  # only the listed keys are copied
    with pytest.raises(ValueError, match=r"bias: HF tensor \(5,\) != ours \(3,\)"):
        copy_weights(src, dst, [("bias", False)])


def test_causal_lm_loss_predicts_the_next_label_and_ignores_minus_100():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 4, 7), torch.randint(0, 7, (2, 4))
    expected = nn.functional.cross_entropy(logits[:, :3].reshape(-1, 7), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(causal_lm_loss(logits, labels), expected)
    labels[:, 1] = -100
    kept = nn.functional.cross_entropy(logits[:, 1:3].reshape(-1, 7), labels[:, 2:].reshape(-1))
    torch.testing.assert_close(causal_lm_loss(logits, labels), kept)


def test_resolve_cache_takes_either_name_once():
    cache = KVCache()
    assert resolve_cache(cache, None, False) is cache and resolve_cache(None, cache, False) is cache
    assert resolve_cache(None, None, False) is None
    assert isinstance(resolve_cache(None, None, True), KVCache)
    with pytest.raises(ValueError, match="not both"):
        resolve_cache(cache, KVCache(), False)
    with pytest.raises(TypeError, match="Hugging Face cache"):
        resolve_cache(object(), None, False)


@pytest.mark.parametrize(
    ("ids", "past", "error", "match"),
    [
        (torch.tensor([1, 2]), 0, ValueError, r"input_ids\[None\]"),
        (torch.tensor([[1.0, 2.0]]), 0, TypeError, r"input_ids.long\(\)"),
        (torch.tensor([[1, 10]]), 0, ValueError, "tokenizer"),
        (torch.tensor([[1, 2, 3]]), 6, ValueError, r"input_ids\[:, -8:\]"),
    ],
)
def test_check_inputs_names_the_fix(ids, past, error, match):
    with pytest.raises(error, match=match):
        check_inputs(ids, None, vocab_size=10, past=past, max_positions=8)


def test_gpt_round_trips_through_hugging_face():
    model = GPT(GPTConfig(vocab_size=11, n_positions=8, n_embd=12, n_layer=2, n_head=3))
    x = torch.randint(0, 11, (2, 8))
    again = GPT.from_hf(model.to_hf())
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    torch.testing.assert_close(model.to_hf()(x).logits, model(x).logits, rtol=1e-5, atol=1e-5)
