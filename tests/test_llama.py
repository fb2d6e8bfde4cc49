"""course_lib.llama: our Llama equals Hugging Face's LlamaForCausalLM, tiny random ones and SmolLM2."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from course_lib import functional
from course_lib.attention import KVCache, rope_cos_sin
from course_lib.llama import (
    Llama,
    LlamaConfig,
    RMSNorm,
    compare_with_hf,
    forward_config,
    llama_forward,
    swiglu_mlp,
)
from course_lib.lm import CausalLMOutput

# (vocab, hidden, intermediate, layers, heads, kv_heads, head_dim, tied, rope_theta)
CONFIGS = [
    pytest.param((97, 32, 48, 2, 4, 2, None, True, 10000.0), id="gqa-tied"),
    pytest.param((61, 24, 40, 3, 6, 6, None, False, 500.0), id="mha-untied"),
    pytest.param((50, 32, 64, 1, 4, 1, 12, True, 100000.0), id="mqa-explicit-head-dim"),
    pytest.param((128, 48, 80, 2, 6, 3, None, False, 10000.0), id="gqa-untied"),
]


def tiny_hf(spec, seed: int = 0, attn_implementation: str = "sdpa") -> LlamaForCausalLM:
    vocab, hidden, inter, layers, heads, kv, head_dim, tied, theta = spec
    config = HFLlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        tie_word_embeddings=tied,
        rope_theta=theta,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        attn_implementation=attn_implementation,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger weights than HF's init, and non-trivial norms: logits of order 1
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.15)
    return model


def ids(vocab: int, B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("spec", CONFIGS)
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_from_hf_logits_and_loss_equal_hf(spec, attn_implementation):
    hf = tiny_hf(spec, attn_implementation=attn_implementation)
    model = Llama.from_hf(hf)
    assert not model.training
    x = ids(spec[0], 3, 40)
    labels = x.clone()
    labels[1, 10:20] = -100
    with torch.no_grad():
        expected = hf(x, labels=labels)
        out = model(x, labels=labels)
    assert isinstance(out, CausalLMOutput) and out.logits.shape == (3, 40, spec[0])
    assert expected.logits.abs().max() > 1.0  # a comparison at atol 1e-5 that means something
    torch.testing.assert_close(out.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, expected.loss, atol=1e-6, rtol=1e-6)


def test_config_from_hf():
    hf = tiny_hf(CONFIGS[2].values[0])
    c = Llama.from_hf(hf).config
    assert (c.head_dim, c.num_key_value_heads, c.rope_theta, c.tie_word_embeddings) == (
        12,
        1,
        100000.0,
        True,
    )
    assert c.n_positions == c.max_position_embeddings == 64  # generate's length check reads it
    assert LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2).head_dim == 16


@pytest.mark.parametrize("spec", [CONFIGS[0], CONFIGS[1]])
def test_cached_decoding_equals_uncached(spec):
    hf = tiny_hf(spec)
    model = Llama.from_hf(hf)
    x = ids(spec[0], 2, 14)
    with torch.no_grad():
        full = model(x).logits
        out = model(x[:, :6], use_cache=True)
        cache = out.past_key_values
        assert isinstance(cache, KVCache) and len(cache) == spec[3]
        # grouped-query attention caches only the key/value heads
        assert cache.keys[0].shape == (2, spec[5], 6, spec[6] or spec[1] // spec[4])
        pieces = [out.logits]
        for t in range(6, 10):
            pieces.append(model(x[:, t : t + 1], past_key_values=cache).logits)
        pieces.append(model(x[:, 10:], cache=cache).logits)  # a chunk of 4
        hf_prefix = hf(x[:, :13], use_cache=True)
        hf_last = hf(x[:, 13:], cache=hf_prefix.cache).logits
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hf_last, full[:, 13:], atol=1e-5, rtol=1e-5)


def test_causality():
    model = Llama.from_hf(tiny_hf(CONFIGS[0].values[0]))
    x = ids(97, 1, 16)
    x2 = x.clone()
    x2[0, 9] = (x[0, 9] + 1) % 97
    with torch.no_grad():
        a, b = model(x).logits, model(x2).logits
    assert torch.equal(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_rmsnorm_equals_hf_and_teaching_version():
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0)) * 3
    ours, hf = RMSNorm(16, eps=1e-5), LlamaRMSNorm(16, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        hf.weight.copy_(ours.weight)
        torch.testing.assert_close(ours(x), hf(x), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(
            ours(x), functional.rms_norm(x, ours.weight, eps=1e-5), atol=1e-6, rtol=1e-6
        )
        torch.testing.assert_close(ours(x.half()), hf(x.half()), atol=1e-3, rtol=1e-3)


def test_tied_and_untied_parameters():
    tied = Llama.from_hf(tiny_hf(CONFIGS[0].values[0]))
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    untied_hf = tiny_hf(CONFIGS[1].values[0])
    untied = Llama.from_hf(untied_hf)
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight
    assert torch.equal(untied.lm_head.weight, untied_hf.lm_head.weight)
    for model, hf in [(tied, tiny_hf(CONFIGS[0].values[0])), (untied, untied_hf)]:
        assert model.num_parameters() == hf.num_parameters()


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=31, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)  # fmt: skip
    model = Llama(config)
    x = ids(31, 4, 16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"num_key_value_heads": 3}, "divide num_attention_heads"),
        ({"hidden_size": 30}, "divide hidden_size"),
        ({"head_dim": 7}, "even"),
        ({"num_hidden_layers": 0}, "positive"),
        ({"rope_theta": 0.0}, "positive"),
    ],
)
def test_bad_config_raises(changes, match):
    with pytest.raises(ValueError, match=match):
        LlamaConfig(
            **{"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2, **changes}
        )


def test_bad_inputs_and_unsupported_models():
    model = Llama(LlamaConfig(vocab_size=20, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                              num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8))  # fmt: skip
    with pytest.raises(ValueError, match=r"input_ids\[None\]"):
        model(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="last 8 tokens"):
        model(torch.zeros(1, 9, dtype=torch.long))
    hf = tiny_hf(CONFIGS[0].values[0])
    hf.config.rope_parameters = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0}
    with pytest.raises(ValueError, match="llama3"):
        Llama.from_hf(hf)
    hf.config.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
    hf.config.attention_bias = True
    with pytest.raises(ValueError, match="attention_bias"):
        Llama.from_hf(hf)
    with pytest.raises(TypeError, match="LlamaForCausalLM"):
        Llama.from_hf(hf.model)


# --- the real model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    from course_lib.pretrained import load_smollm2

    hf, tokenizer = load_smollm2()
    return hf, Llama.from_hf(hf), tokenizer


@pytest.mark.slow
def test_smollm2_logits_equal_hf(smollm2):
    hf, model, tokenizer = smollm2
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (
        576,
        30,
        9,
        3,
    )
    assert (c.head_dim, c.rope_theta, c.tie_word_embeddings) == (64, 100000.0, True)
    assert 134_000_000 < model.num_parameters() < 135_000_000
    text = "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer"
    x = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = hf(x, labels=x)
        out = model(x, labels=x)
    torch.testing.assert_close(out.logits, expected.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.loss, expected.loss, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_smollm2_greedy_chat_answer_with_cache(smollm2):
    """Greedy decoding with our Llama and our KV cache answers like the real model, and the
    cached logits equal a full recomputation."""
    _hf, model, tokenizer = smollm2
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    x = prompt["input_ids"]
    with torch.no_grad():
        out = model(x, use_cache=True)
        new, step_logits = [], []
        for _ in range(8):
            next_id = out.logits[:, -1].argmax(-1, keepdim=True)
            new.append(next_id)
            step_logits.append(out.logits[:, -1])
            out = model(next_id, past_key_values=out.past_key_values)
        full = model(torch.cat([x, *new], dim=1)).logits
    answer = tokenizer.decode(torch.cat(new, dim=1)[0], skip_special_tokens=True)
    assert answer.startswith("The capital of France is Paris")
    torch.testing.assert_close(
        torch.stack(step_logits, 1), full[:, x.shape[1] - 1 : -1], atol=1e-4, rtol=1e-4
    )


# ------------------------------------------------------------------------------------------------
# The functional forms of notebook 08: swiglu_mlp and llama_forward on a state dict
# ------------------------------------------------------------------------------------------------


def test_swiglu_mlp_equals_hf_mlp():
    hf = tiny_hf(CONFIGS[0].values[0])
    mlp = hf.model.layers[0].mlp
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = swiglu_mlp(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
        torch.testing.assert_close(ours, mlp(x), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="must be \\(C, F\\)"):
        swiglu_mlp(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.up_proj.weight)


def _state_dict(hf: LlamaForCausalLM) -> dict[str, torch.Tensor]:
    """Plain tensors, as a learner gets them; a tied model's copy of lm_head.weight left out."""
    params = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    if hf.config.tie_word_embeddings:
        assert torch.equal(params.pop("lm_head.weight"), params["model.embed_tokens.weight"])
    return params


@pytest.mark.parametrize("spec", CONFIGS)
def test_llama_forward_equals_hf(spec):
    hf = tiny_hf(spec)
    params = _state_dict(hf)
    tied = spec[7]
    assert ("lm_head.weight" in params) == (not tied)
    x = ids(spec[0], 2, 9)
    with torch.no_grad():
        expected = hf(x).logits
    logits = llama_forward(x, params, forward_config(hf.config))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_llama_forward_float64_and_causal():
    spec = CONFIGS[3].values[0]
    hf = tiny_hf(spec)
    params = _state_dict(hf)
    config = forward_config(hf.config)
    x = ids(spec[0], 1, 8)
    x2 = x.clone()
    x2[0, -1] = (x[0, -1] + 1) % spec[0]
    a, b = llama_forward(x, params, config), llama_forward(x2, params, config)
    assert torch.equal(a[:, :-1], b[:, :-1]) and not torch.allclose(a[:, -1], b[:, -1])
    exact = llama_forward(x, {k: v.double() for k, v in params.items()}, config)
    assert exact.dtype == torch.float64
    torch.testing.assert_close(exact.float(), a, atol=1e-5, rtol=1e-5)


def test_llama_forward_rejects_an_incomplete_config():
    hf = tiny_hf(CONFIGS[0].values[0])
    with pytest.raises(ValueError, match="forward_config"):
        llama_forward(ids(97, 1, 3), _state_dict(hf), {"num_attention_heads": 4})


def test_compare_with_hf_reports_the_difference_and_tolerates_a_stub(capsys):
    hf = tiny_hf(CONFIGS[0].values[0])
    result = compare_with_hf(llama_forward, hf, ids(97, 1, 6))
    assert result["max_abs_diff"] < 1e-5 and result["same_next_token"]
    assert "max |logits - HF logits|" in capsys.readouterr().out

    def stub(input_ids, params, config):
        raise NotImplementedError()

    assert compare_with_hf(stub, hf, ids(97, 1, 6)) is None
    assert "stub is not implemented yet" in capsys.readouterr().out

    def wrong(input_ids, params, config):
        return llama_forward(input_ids, params, {**config, "rope_theta": 10.0})

    assert compare_with_hf(wrong, hf, ids(97, 1, 6))["max_abs_diff"] > 1e-3


def test_rope_cos_sin_float64():
    positions = torch.tensor([0, 5, 2047])
    cos32, sin32 = rope_cos_sin(positions, 16, 10000.0)
    cos64, sin64 = rope_cos_sin(positions, 16, 10000.0, dtype=torch.float64)
    assert cos64.dtype == torch.float64 and cos32.dtype == torch.float32
    angle = 2047.0 * 10000.0 ** (-2 / 16)  # pair 1 at position 2047, exactly
    assert abs(cos64[2, 1].item() - math.cos(angle)) < 1e-12
    torch.testing.assert_close(cos32.double(), cos64, atol=1e-3, rtol=0)
    torch.testing.assert_close(sin32.double(), sin64, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="floating dtype"):
        rope_cos_sin(positions, 16, dtype=torch.int64)


@pytest.mark.slow
def test_llama_forward_on_smollm2_state_dict(smollm2):
    hf, _model, tokenizer = smollm2
    config = forward_config(hf.config)
    assert config == {
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "rms_norm_eps": pytest.approx(1e-5),
        "rope_theta": 100000.0,
    }
    x = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = hf(x).logits
        logits = llama_forward(x, hf.state_dict(), config)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert tokenizer.decode(logits[0, -1].argmax()) == " Paris"
