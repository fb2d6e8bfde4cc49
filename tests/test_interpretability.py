"""Tests for course_lib.interpretability: entropy, head scores, logit lens, and SmolLM2's insides."""

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.interpretability import (
    attention_entropy,
    attention_maps,
    induction_scores,
    logit_lens,
    previous_token_scores,
    residual_stream,
)

# ------------------------------------------------------------------------------------------------
# attention_entropy
# ------------------------------------------------------------------------------------------------


def test_entropy_hand_examples():
    w = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    h = attention_entropy(w)
    assert h.shape == (3,)
    torch.testing.assert_close(h, torch.tensor([0.0, math.log(4), math.log(2)]))


def test_entropy_of_causal_weights_has_no_nan_and_matches_categorical():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    w = scores.masked_fill(~mask, float("-inf")).softmax(-1)  # exact zeros above the diagonal
    h = attention_entropy(w)
    assert h.shape == (2, 3, 6) and not h.isnan().any()
    expected = torch.distributions.Categorical(probs=w).entropy()
    torch.testing.assert_close(h, expected)
    assert (h >= 0).all() and (
        h <= torch.log(torch.arange(1, 7, dtype=torch.float64)) + 1e-12
    ).all()


def test_entropy_rejects_int_input():
    with pytest.raises(TypeError):
        attention_entropy(torch.ones(3, dtype=torch.int64))


# ------------------------------------------------------------------------------------------------
# head scores
# ------------------------------------------------------------------------------------------------


def test_previous_token_and_induction_scores_on_ideal_patterns():
    T, period = 8, 3
    prev = torch.zeros(T, T)
    prev[0, 0] = 1.0
    prev[torch.arange(1, T), torch.arange(0, T - 1)] = 1.0
    ind = torch.eye(T)
    for i in range(period, T):
        ind[i] = 0.0
        ind[i, i - period + 1] = 1.0
    both = torch.stack([prev, ind])  # (2, T, T): two "heads"
    torch.testing.assert_close(previous_token_scores(both), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(induction_scores(both, period), torch.tensor([0.0, 1.0]))
    uniform = torch.ones(T, T).tril() / torch.arange(1, T + 1)[:, None]
    expected = torch.tensor([1.0 / (i + 1) for i in range(period, T)]).mean()
    torch.testing.assert_close(induction_scores(uniform, period), expected)


def test_induction_scores_rejects_bad_period():
    with pytest.raises(ValueError, match="period"):
        induction_scores(torch.ones(4, 4), 4)


# ------------------------------------------------------------------------------------------------
# logit_lens
# ------------------------------------------------------------------------------------------------


def test_logit_lens_equals_rms_norm_then_unembedding():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 5, 16, generator=g) * 0.1
    w = torch.rand(16, generator=g) + 0.5
    unembed = torch.randn(40, 16, generator=g)
    expected = F.rms_norm(h, (16,), w, eps=1e-5) @ unembed.T
    torch.testing.assert_close(logit_lens(h, w, unembed), expected)
    eps_big = F.rms_norm(h, (16,), w, eps=1e-2) @ unembed.T
    torch.testing.assert_close(logit_lens(h, w, unembed, eps=1e-2), eps_big)


def test_logit_lens_names_the_layout_when_unembed_is_transposed():
    with pytest.raises(ValueError, match="nn.Linear"):
        logit_lens(torch.randn(3, 8), torch.ones(8), torch.randn(8, 20))


# ------------------------------------------------------------------------------------------------
# On SmolLM2
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    from course_lib.pretrained import load_smollm2

    model, tokenizer = load_smollm2()
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    return model, ids


@pytest.mark.slow
def test_logit_lens_on_smollm2_last_layer_equals_its_logits(smollm2):
    model, ids = smollm2
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    stream = residual_stream(model, ids)
    L = model.config.num_hidden_layers
    assert stream.shape == (L + 1, *ids.shape, model.config.hidden_size)
    lens = logit_lens(
        stream[-1],
        model.model.norm.weight.detach(),
        model.lm_head.weight.detach(),
        model.config.rms_norm_eps,
    )
    torch.testing.assert_close(lens, logits, rtol=1e-4, atol=1e-3)
    assert torch.equal(lens[0, -1].argmax(), logits[0, -1].argmax())
    # an early layer predicts something else: the lens is not trivially the final answer
    early = logit_lens(stream[1], model.model.norm.weight, model.lm_head.weight, 1e-5)
    assert (early - logits).abs().max() > 1.0


@pytest.mark.slow
def test_attention_maps_of_smollm2_are_causal_and_restore_the_kernel(smollm2):
    model, ids = smollm2
    before = model.config._attn_implementation
    attn = attention_maps(model, ids)
    T = ids.shape[1]
    assert attn.shape == (model.config.num_hidden_layers, 1, model.config.num_attention_heads, T, T)
    torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
    assert (attn.triu(1) == 0).all()
    assert model.config._attn_implementation == before
    h = attention_entropy(attn)
    assert not h.isnan().any() and (h <= math.log(T) + 1e-4).all()


@pytest.mark.slow
def test_smollm2_has_induction_heads_and_copies_a_repeated_random_sequence(smollm2):
    model, _ = smollm2
    n = 24
    block = torch.randint(1000, 10_000, (1, n), generator=torch.Generator().manual_seed(0))
    ids = torch.cat([torch.tensor([[model.config.bos_token_id]]), block, block], dim=1)
    attn = attention_maps(model, ids)[:, 0, :, 1:, 1:]  # (L, H, 2n, 2n) without the first token
    assert induction_scores(attn, n).max() > 0.5  # some head attends to the token after the copy
    assert previous_token_scores(attn).max() > 0.5
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    loss = -torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
    assert loss[n:].mean() < loss[:n].mean() / 2  # the repeat is far easier than the first copy
