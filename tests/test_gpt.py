"""course_lib.gpt: our GPT equals Hugging Face's GPT2LMHeadModel, both ways, with and without a cache."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from course_lib import functional
from course_lib.attention import KVCache, multi_head_self_attention
from course_lib.gpt import GPT, GPTConfig
from course_lib.lm import CausalLMOutput

# (vocab_size, n_positions, n_embd, n_layer, n_head, tie_word_embeddings)
CONFIGS = [
    pytest.param((101, 32, 24, 3, 2, True), id="tied-odd-vocab"),
    pytest.param((67, 16, 16, 1, 4, False), id="untied-one-layer"),
    pytest.param((257, 40, 32, 2, 8, True), id="many-heads"),
    pytest.param((50, 24, 12, 4, 3, False), id="untied-deep"),
]


def tiny_hf(spec, seed: int = 0, attn_implementation: str = "sdpa") -> GPT2LMHeadModel:
    vocab, n_pos, n_embd, n_layer, n_head, tied = spec
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=n_pos,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        tie_word_embeddings=tied,
        bos_token_id=0,
        eos_token_id=vocab - 1,
        attn_implementation=attn_implementation,
    )
    model = GPT2LMHeadModel(config).eval()
    with (
        torch.no_grad()
    ):  # larger weights than HF's init, random biases and LayerNorms: logits of order 1
        for name, p in model.named_parameters():
            if ".ln_" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
            else:
                p.normal_(0.0, 0.3)
    return model


def ids(vocab: int, B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("spec", CONFIGS)
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_from_hf_logits_and_loss_equal_hf(spec, attn_implementation):
    hf = tiny_hf(spec, attn_implementation=attn_implementation)
    model = GPT.from_hf(hf)
    assert not model.training  # mirrors HF's eval mode
    x = ids(spec[0], 3, spec[1])  # the full context length
    labels = x.clone()
    labels[0, :5] = -100  # ignored positions count in neither loss
    with torch.no_grad():
        expected = hf(x, labels=labels)
        out = model(x, labels=labels)
    assert isinstance(out, CausalLMOutput) and out.past_key_values is None
    assert out.logits.shape == (3, spec[1], spec[0])
    assert expected.logits.abs().max() > 1.0  # a comparison at atol 1e-5 that means something
    torch.testing.assert_close(out.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, expected.loss, atol=1e-6, rtol=1e-6)
    assert out.loss.dim() == 0


@pytest.mark.parametrize("spec", CONFIGS)
def test_to_hf_equals_ours_and_round_trips(spec):
    vocab, n_pos, n_embd, n_layer, n_head, tied = spec
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab, n_pos, n_embd, n_layer, n_head, tie_word_embeddings=tied)).eval()
    hf = model.to_hf()
    assert isinstance(hf, GPT2LMHeadModel) and not hf.training
    assert (hf.lm_head.weight is hf.transformer.wte.weight) == tied
    x = ids(vocab, 2, 11)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, hf(x).logits, atol=1e-5, rtol=1e-5)
    back = GPT.from_hf(hf)
    assert back.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name


def test_conv1d_weights_are_transposed():
    hf = tiny_hf(CONFIGS[0].values[0])
    model = GPT.from_hf(hf)
    w_hf = hf.transformer.h[1].attn.c_attn.weight  # Conv1D: (d_in, d_out) = (C, 3C)
    w = model.transformer.h[1].attn.c_attn.weight  # nn.Linear: (d_out, d_in) = (3C, C)
    assert w_hf.shape == (24, 72) and w.shape == (72, 24)
    assert torch.equal(w, w_hf.T)


def test_to_hf_saves_and_reloads(tmp_path):
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=61, n_positions=16, n_embd=16, n_layer=2, n_head=2, eos_token_id=60)
    ).eval()
    model.to_hf().save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    x = ids(61, 2, 16)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).logits, model(x).logits, atol=1e-5, rtol=1e-5)
    assert reloaded.config.eos_token_id == 60


@pytest.mark.parametrize("spec", [CONFIGS[0], CONFIGS[1]])
def test_cached_decoding_equals_uncached(spec):
    hf = tiny_hf(spec)
    model = GPT.from_hf(hf)
    x = ids(spec[0], 2, 12)
    with torch.no_grad():
        full = model(x).logits
        out = model(x[:, :5], use_cache=True)  # a prompt
        cache = out.past_key_values
        assert isinstance(cache, KVCache) and len(cache) == spec[3] and cache.get_seq_length() == 5
        pieces = [out.logits]
        for t in range(5, 8):  # one token at a time
            out = model(x[:, t : t + 1], past_key_values=cache)
            assert out.past_key_values is cache
            pieces.append(out.logits)
        pieces.append(model(x[:, 8:], past_key_values=cache).logits)  # a chunk of 4
        hf_out = hf(x[:, :11], use_cache=True)
        hf_next = hf(x[:, 11:], cache=hf_out.cache).logits
    assert cache.get_seq_length() == 12
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hf_next, full[:, 11:], atol=1e-5, rtol=1e-5)


def test_cache_keyword_alias():
    model = GPT(GPTConfig(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2)).eval()
    x = ids(20, 1, 6)
    out = model(x[:, :4], use_cache=True)
    assert out.cache is out.past_key_values
    nxt = model(x[:, 4:], cache=out.cache)
    torch.testing.assert_close(nxt.logits, model(x).logits[:, 4:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        model(x[:, :1], past_key_values=KVCache(), cache=KVCache())


def test_causality():
    model = GPT.from_hf(tiny_hf(CONFIGS[2].values[0]))
    x = ids(257, 1, 20)
    x2 = x.clone()
    x2[0, 12] = (x[0, 12] + 1) % 257  # change a future token
    with torch.no_grad():
        a, b = model(x).logits, model(x2).logits
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_fused_modules_equal_teaching_versions():
    """The fast modules (F.layer_norm, F.gelu, F.scaled_dot_product_attention) compute exactly
    what course_lib.functional and course_lib.attention teach."""
    model = GPT.from_hf(tiny_hf(CONFIGS[0].values[0]))
    block, C, H = model.transformer.h[1], 24, 2
    x = torch.randn(2, 9, C, generator=torch.Generator().manual_seed(5))

    def teaching_block(x: torch.Tensor) -> torch.Tensor:
        a = block.attn
        h = functional.layer_norm(x, block.ln_1.weight, block.ln_1.bias, eps=1e-5)
        x = x + multi_head_self_attention(
            h, a.c_attn.weight, a.c_attn.bias, a.c_proj.weight, a.c_proj.bias, H
        )
        h = functional.layer_norm(x, block.ln_2.weight, block.ln_2.bias, eps=1e-5)
        m = block.mlp
        return (
            x
            + functional.gelu(h @ m.c_fc.weight.T + m.c_fc.bias) @ m.c_proj.weight.T
            + m.c_proj.bias
        )

    with torch.no_grad():
        torch.testing.assert_close(block(x), teaching_block(x), atol=1e-5, rtol=1e-5)


def test_num_parameters_equals_hf():
    for spec in CONFIGS:
        hf = tiny_hf(spec.values[0])
        model = GPT.from_hf(hf)
        assert model.num_parameters() == hf.num_parameters()
        assert model.num_parameters(exclude_embeddings=True) == hf.num_parameters(
            exclude_embeddings=True
        )


def _count(c: GPTConfig) -> int:
    """Parameters of a tied GPT by hand: embeddings, per block (2 LayerNorms, attention, MLP), ln_f."""
    C = c.n_embd
    per_block = 2 * 2 * C + (C + 1) * 3 * C + (C + 1) * C + (C + 1) * 4 * C + (4 * C + 1) * C
    return (c.vocab_size + c.n_positions) * C + c.n_layer * per_block + 2 * C


def test_num_parameters_by_hand():
    c = GPTConfig(vocab_size=50, n_positions=12, n_embd=16, n_layer=3, n_head=2)
    assert GPT(c).num_parameters() == _count(c)
    assert _count(GPTConfig()) == 124_439_808  # GPT-2 small


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=30, n_positions=8, n_embd=16, n_layer=2, n_head=2, dropout=0.5)
    )
    x = ids(30, 2, 8)
    model.train()
    assert not torch.equal(model(x).logits, model(x).logits)
    model.eval()
    assert torch.equal(model(x).logits, model(x).logits)
    assert model.to_hf().config.attn_pdrop == 0.5


def test_training_step_reduces_loss_and_tied_grads_flow():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=23, n_positions=16, n_embd=16, n_layer=2, n_head=2))
    x = ids(23, 4, 16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    assert model.lm_head.weight is model.transformer.wte.weight


def test_from_hf_keeps_dtype():
    hf = tiny_hf(CONFIGS[1].values[0]).double()
    model = GPT.from_hf(hf)
    assert model.transformer.wte.weight.dtype == torch.float64
    x = ids(67, 1, 7)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, hf(x).logits, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("n_head", 3, "divide"),
        ("n_layer", 0, "positive"),
        ("vocab_size", 10.0, "positive int"),
        ("dropout", 1.0, "dropout"),
        ("layer_norm_epsilon", 0.0, "epsilon"),
    ],
)
def test_bad_config_raises(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(GPTConfig(n_embd=20, n_head=4), **{field: value})


def test_bad_inputs_name_the_fix():
    model = GPT(GPTConfig(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match=r"input_ids\[None\]"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="tokenizer"):
        model(torch.tensor([[1, 20]]))
    with pytest.raises(TypeError, match=r"\.long\(\)"):
        model(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="last 8 tokens"):
        model(torch.zeros(1, 9, dtype=torch.long))
    cache = model(torch.zeros(1, 6, dtype=torch.long), use_cache=True).past_key_values
    with pytest.raises(ValueError, match="exceed"):
        model(torch.zeros(1, 3, dtype=torch.long), past_key_values=cache)
    with pytest.raises(ValueError, match="labels"):
        model(torch.zeros(1, 4, dtype=torch.long), labels=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="KVCache"):
        model(torch.zeros(1, 4, dtype=torch.long), past_key_values=[])
    with pytest.raises(TypeError, match="GPTConfig"):
        GPT({"vocab_size": 20})


def test_training_step_compiles_as_one_graph_and_matches_eager():
    """``torch.compile`` traces the training loss (forward, input checks, loss) as one graph: no
    check reads a tensor's value back to the host (a graph break, and a GPU sync in eager mode).
    Compiled with autograd traced ahead of time (``aot_eager``), loss and gradients equal eager."""
    import torch._dynamo

    from course_lib.training import lm_loss

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2))
    x = ids(50, 2, 16)
    losses = {
        "lm_loss": lambda a: lm_loss(model, a[:, :-1], a[:, 1:]),
        "labels": lambda a: model(a, labels=a).loss,
    }
    for name, fn in losses.items():
        explanation = torch._dynamo.explain(fn)(x)
        assert explanation.graph_break_count == 0, (name, explanation.break_reasons)
        torch._dynamo.reset()
        eager = fn(x)
        grads = torch.autograd.grad(eager, list(model.parameters()))
        compiled = torch.compile(fn, backend="aot_eager")(x)
        compiled_grads = torch.autograd.grad(compiled, list(model.parameters()))
        torch.testing.assert_close(compiled, eager)
        for a, b in zip(compiled_grads, grads):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="tokenizer"):  # eager on the CPU still checks the range
        model(torch.tensor([[-1, 3]]))


def test_from_hf_rejects_what_it_cannot_copy():
    hf = tiny_hf(CONFIGS[1].values[0])
    hf.config.activation_function = "relu"
    with pytest.raises(ValueError, match="activation_function"):
        GPT.from_hf(hf)
    with pytest.raises(TypeError, match="GPT2LMHeadModel"):
        GPT.from_hf(hf.transformer)


@pytest.mark.parametrize("spec", [CONFIGS[0], CONFIGS[2]])
def test_gpt2_forward_equals_hf_logits(spec):
    from course_lib.gpt import gpt2_forward, params_from_hf

    hf = tiny_hf(spec)
    params = params_from_hf(hf)
    assert "lm_head.weight" not in params and "wte.weight" in params
    C = spec[2]
    assert params["h.0.attn.c_attn.weight"].shape == (3 * C, C)  # nn.Linear layout
    x = ids(spec[0], 2, spec[1])
    with torch.no_grad():
        expected = hf(x).logits
    assert expected.abs().max() > 1.0
    torch.testing.assert_close(gpt2_forward(x, params, spec[4]), expected, atol=1e-5, rtol=1e-5)


def test_gpt2_forward_equals_the_shipped_course_gpt():
    from course_lib.gpt import gpt2_forward, params_from_hf
    from course_lib.pretrained import load_course_gpt

    hf, tokenizer = load_course_gpt()
    x = torch.tensor([tokenizer.encode("ROMEO:\nBut soft, what light through yonder window")])
    with torch.no_grad():
        expected = hf(x).logits
        logits = gpt2_forward(x, params_from_hf(hf), hf.config.n_head)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)


def test_transformer_block_and_mlp_equal_our_modules():
    from course_lib.gpt import mlp, transformer_block

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, n_positions=16, n_embd=24, n_layer=1, n_head=3)).eval()
    block = model.transformer.h[0]
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.3)
        params = dict(block.named_parameters())
        x = torch.randn(2, 9, 24)
        torch.testing.assert_close(transformer_block(x, params, 3), block(x), atol=1e-5, rtol=1e-5)
        m = block.mlp
        torch.testing.assert_close(
            mlp(x, m.c_fc.weight, m.c_fc.bias, m.c_proj.weight, m.c_proj.bias), m(x)
        )


def test_count_parameters_equals_hf_and_gpt2_small():
    from course_lib.gpt import count_parameters

    assert count_parameters(50257, 1024, 768, 12) == 124_439_808
    for spec in (CONFIGS[0].values[0], CONFIGS[2].values[0]):
        vocab, n_pos, n_embd, n_layer, _, _ = spec
        hf = tiny_hf(spec)
        assert count_parameters(vocab, n_pos, n_embd, n_layer) == hf.num_parameters()


def test_params_from_hf_refuses_what_gpt2_forward_cannot_run():
    from course_lib.gpt import params_from_hf

    with pytest.raises(ValueError, match="untied"):
        params_from_hf(tiny_hf(CONFIGS[1].values[0]))
    with pytest.raises(TypeError, match="GPT2LMHeadModel"):
        params_from_hf(torch.nn.Linear(2, 2))
