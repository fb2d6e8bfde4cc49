"""Tests for course_lib.generation: every processor and every decoding mode against Hugging Face."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from course_lib.generation import (
    apply_repetition_penalty,
    apply_temperature,
    beam_search,
    build_processors,
    generate,
    greedy_next_token,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)

# --- processors vs Hugging Face -------------------------------------------------------------


def random_logits(seed: int, ties: bool, B: int = 6, V: int = 50) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if ties:  # few distinct values: many ties, also at the top-k / top-p boundary
        logits = torch.randint(-3, 3, (B, V), generator=g).float()
    else:
        logits = 3 * torch.randn(B, V, generator=g)
    logits[0, :5] = float("-inf")  # already-filtered tokens stay filtered
    return logits


def random_ids(seed: int, B: int = 6, T: int = 12, V: int = 50) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed + 100))


CASES = [(seed, ties) for seed in range(4) for ties in (False, True)]


@pytest.mark.parametrize("seed, ties", CASES)
@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_temperature_equals_hf(seed, ties, temperature):
    logits = random_logits(seed, ties)
    expected = TemperatureLogitsWarper(temperature)(random_ids(seed), logits.clone())
    assert torch.equal(apply_temperature(logits, temperature), expected)


@pytest.mark.parametrize("seed, ties", CASES)
@pytest.mark.parametrize("k, keep", [(1, 1), (3, 1), (10, 1), (50, 1), (80, 1), (1, 2), (3, 5)])
def test_top_k_equals_hf(seed, ties, k, keep):
    logits = random_logits(seed, ties)
    expected = TopKLogitsWarper(k, min_tokens_to_keep=keep)(random_ids(seed), logits.clone())
    assert torch.equal(top_k_filter(logits, k, min_tokens_to_keep=keep), expected)


@pytest.mark.parametrize("seed, ties", CASES)
@pytest.mark.parametrize(
    "p, keep", [(0.01, 1), (0.3, 1), (0.9, 1), (0.999, 1), (1.0, 1), (0.01, 2), (0.5, 4)]
)
def test_top_p_equals_hf(seed, ties, p, keep):
    logits = random_logits(seed, ties)
    expected = TopPLogitsWarper(p, min_tokens_to_keep=keep)(random_ids(seed), logits.clone())
    assert torch.equal(top_p_filter(logits, p, min_tokens_to_keep=keep), expected)


@pytest.mark.parametrize("seed, ties", CASES)
@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.3, 3.0])
def test_repetition_penalty_equals_hf(seed, ties, penalty):
    logits, ids = random_logits(seed, ties), random_ids(seed)
    expected = RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
    assert torch.equal(apply_repetition_penalty(ids, logits, penalty), expected)


def test_processors_hand_examples():
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0, 0.0]])
    inf = float("-inf")
    assert top_k_filter(logits, 2).tolist() == [[inf, 3.0, inf, 3.0, inf]]  # ties both kept
    assert top_k_filter(logits, 1, min_tokens_to_keep=3).tolist() == [[inf, 3.0, 2.0, 3.0, inf]]
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    assert torch.isinf(top_p_filter(probs.log(), 0.7)).tolist() == [[False, False, True]]
    assert torch.isinf(top_p_filter(probs.log(), 0.4)).tolist() == [[False, True, True]]
    assert torch.isinf(top_p_filter(probs.log(), 0.01, 2)).tolist() == [[False, False, True]]
    uniform = torch.zeros(1, 4)  # probabilities exactly 1/4: the boundary case is exact
    assert (top_p_filter(uniform, 0.5) == 0).sum() == 2  # mass 1/2 reached with 2 tokens
    assert (top_p_filter(uniform, 0.75) == 0).sum() == 3
    for p in (0.5, 0.75):
        assert torch.equal(top_p_filter(uniform, p), TopPLogitsWarper(p)(None, uniform.clone()))
    penalised = apply_repetition_penalty(
        torch.tensor([[0, 1, 1, 7]]), torch.tensor([[2.0, -2.0, 2.0]]), 2.0
    )
    assert penalised.tolist() == [[1.0, -4.0, 2.0]]  # once per token; id 7 >= V ignored


def test_processors_do_not_modify_their_input():
    logits, ids = random_logits(0, False), random_ids(0)
    before = logits.clone()
    for processor in build_processors(
        do_sample=True, temperature=0.7, top_k=5, top_p=0.8, repetition_penalty=1.5
    ):
        processor(ids, logits)
    assert torch.equal(logits, before)


def test_next_token_choices():
    logits = torch.tensor([[0.0, 5.0, 1.0], [9.0, 0.0, float("-inf")]])
    assert greedy_next_token(logits).tolist() == [1, 0]
    draws = torch.stack(
        [sample_next_token(logits, torch.Generator().manual_seed(s)) for s in range(200)]
    )
    assert (draws[:, 1] != 2).all()  # -inf is never drawn
    assert 0 < (draws[:, 0] == 2).sum() < 60  # p(2) in row 0 is about 0.018 * ... small, not 0


@pytest.mark.parametrize(
    "fn, args, match",
    [
        (apply_temperature, (torch.zeros(1, 3), 0.0), "do_sample=False"),
        (apply_temperature, (torch.zeros(1, 3), -1.0), "temperature"),
        (top_k_filter, (torch.zeros(1, 3), 0), "top_k=None"),
        (top_k_filter, (torch.zeros(1, 3), 2.5), "top_k"),
        (top_p_filter, (torch.zeros(1, 3), 0.0), "top_p=None"),
        (top_p_filter, (torch.zeros(1, 3), 1.5), "top_p"),
        (
            apply_repetition_penalty,
            (torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 3), 0.0),
            "penalty",
        ),
        (
            apply_repetition_penalty,
            (torch.zeros(2, 2, dtype=torch.long), torch.zeros(1, 3), 1.2),
            "same B",
        ),
    ],
)
def test_processors_reject_bad_arguments(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


# --- generate vs Hugging Face on a tiny random GPT-2 (fast) ----------------------------------


@pytest.fixture(scope="module")
def tiny_ours(tiny_peaked_gpt2):
    from course_lib.gpt import GPT

    return GPT.from_hf(tiny_peaked_gpt2).eval()


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(15)
    return model


@pytest.fixture(scope="module")
def tiny_llama_ours(tiny_llama):
    from course_lib.llama import Llama

    return Llama.from_hf(tiny_llama).eval()


PROMPTS = torch.tensor([[5, 6, 7, 8], [9, 3, 3, 1], [20, 21, 2, 30]])


def hf_generate(model, input_ids, eos_token_id=None, **kwargs):
    """HF generate with our conventions made explicit: no EOS unless given, no default top-k."""
    config = dict(kwargs)
    if config.get("do_sample") and "top_k" not in config:
        config["top_k"] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            eos_token_id=eos_token_id,
            pad_token_id=eos_token_id or 0,
            **config,
        )


DETERMINISTIC = [
    dict(max_new_tokens=15),
    dict(max_new_tokens=15, repetition_penalty=1.4),
    dict(max_new_tokens=15, num_beams=2),
    dict(max_new_tokens=15, num_beams=4),
    dict(max_new_tokens=12, num_beams=3, repetition_penalty=1.2),
]


@pytest.mark.parametrize("kwargs", DETERMINISTIC)
@pytest.mark.parametrize("which", ["hf", "ours", "llama_hf", "llama_ours"])
def test_greedy_and_beam_equal_hf(
    kwargs, which, tiny_peaked_gpt2, tiny_ours, tiny_llama, tiny_llama_ours
):
    reference = tiny_llama if which.startswith("llama") else tiny_peaked_gpt2
    model = {
        "hf": tiny_peaked_gpt2,
        "ours": tiny_ours,
        "llama_hf": tiny_llama,
        "llama_ours": tiny_llama_ours,
    }[which]
    expected = hf_generate(reference, PROMPTS, **kwargs)
    out = generate(model, PROMPTS, **kwargs)
    assert out.shape == expected.shape
    assert torch.equal(out, expected)


def test_beam_search_differs_from_greedy(tiny_peaked_gpt2):
    # otherwise the beam tests above would prove nothing
    greedy = generate(tiny_peaked_gpt2, PROMPTS, 15)
    assert any(
        not torch.equal(greedy, generate(tiny_peaked_gpt2, PROMPTS, 15, num_beams=k))
        for k in (2, 4)
    )


SAMPLING = [
    dict(),
    dict(temperature=0.6),
    dict(top_k=5),
    dict(top_p=0.8),
    dict(temperature=1.7, top_k=10, top_p=0.9),
    dict(temperature=0.9, top_p=0.5, repetition_penalty=1.3),
]


@pytest.mark.parametrize("kwargs", SAMPLING)
def test_sampling_equals_hf_with_the_same_seed(kwargs, tiny_peaked_gpt2, tiny_ours):
    torch.manual_seed(1234)
    expected = hf_generate(tiny_peaked_gpt2, PROMPTS, max_new_tokens=25, do_sample=True, **kwargs)
    for model in (tiny_peaked_gpt2, tiny_ours):
        torch.manual_seed(1234)
        assert torch.equal(generate(model, PROMPTS, 25, do_sample=True, **kwargs), expected)
    greedy = generate(tiny_peaked_gpt2, PROMPTS, 25)
    assert not torch.equal(expected, greedy)  # it really sampled


def test_sampling_with_a_generator_is_reproducible(tiny_ours):
    a = generate(tiny_ours, PROMPTS, 20, do_sample=True, generator=torch.Generator().manual_seed(3))
    b = generate(tiny_ours, PROMPTS, 20, do_sample=True, generator=torch.Generator().manual_seed(3))
    c = generate(tiny_ours, PROMPTS, 20, do_sample=True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_beam_sampling_equals_hf(tiny_peaked_gpt2):
    torch.manual_seed(7)
    expected = hf_generate(
        tiny_peaked_gpt2, PROMPTS, max_new_tokens=10, do_sample=True, num_beams=2, top_k=20
    )
    torch.manual_seed(7)
    assert torch.equal(
        generate(tiny_peaked_gpt2, PROMPTS, 10, do_sample=True, num_beams=2, top_k=20), expected
    )


@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=3), dict(do_sample=True, top_k=8)])
@pytest.mark.parametrize("which", ["hf", "ours", "llama_ours"])
def test_cached_equals_uncached(kwargs, which, tiny_peaked_gpt2, tiny_ours, tiny_llama_ours):
    model = {"hf": tiny_peaked_gpt2, "ours": tiny_ours, "llama_ours": tiny_llama_ours}[which]
    runs = []
    for use_cache in (True, False):
        torch.manual_seed(5)
        runs.append(generate(model, PROMPTS, 20, use_cache=use_cache, **kwargs))
    assert torch.equal(*runs)


def _eos_that_appears(model, prompts, **kwargs):
    """The 2nd token row 0 emits without EOS: with it as EOS, row 0 must stop early."""
    free = generate(model, prompts, 15, **kwargs)
    return free[0, prompts.shape[1] + 1].item()


@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=3), dict(repetition_penalty=1.2)])
@pytest.mark.parametrize("which", ["hf", "ours"])
def test_eos_stops_a_sequence_like_hf(kwargs, which, tiny_peaked_gpt2, tiny_ours):
    model = tiny_peaked_gpt2 if which == "hf" else tiny_ours
    prompts = PROMPTS[:2]
    eos = _eos_that_appears(tiny_peaked_gpt2, prompts, **kwargs)
    expected = hf_generate(tiny_peaked_gpt2, prompts, eos_token_id=eos, max_new_tokens=15, **kwargs)
    out = generate(model, prompts, 15, eos_token_id=eos, **kwargs)
    assert torch.equal(out, expected)
    if not kwargs.get("num_beams"):
        row = out[0, prompts.shape[1] :].tolist()
        first = row.index(eos)
        assert row[first:] == [eos] * (len(row) - first)  # after EOS: only padding


def test_eos_ends_generation_when_every_sequence_is_done(tiny_peaked_gpt2):
    prompt = PROMPTS[:1]
    free = generate(tiny_peaked_gpt2, prompt, 15)
    eos = free[0, 6].item()  # the 3rd generated token
    out = generate(tiny_peaked_gpt2, prompt, 15, eos_token_id=eos)
    first = free[0, 4:].tolist().index(eos)
    assert out.shape == (1, 4 + first + 1)  # stopped right after the first EOS
    assert torch.equal(out, free[:, : 4 + first + 1])
    beams = generate(tiny_peaked_gpt2, prompt, 15, num_beams=2, eos_token_id=eos)
    assert torch.equal(
        beams,
        hf_generate(tiny_peaked_gpt2, prompt, eos_token_id=eos, max_new_tokens=15, num_beams=2),
    )


def test_beam_search_function_keeps_batch_and_prompt(tiny_ours):
    out = beam_search(tiny_ours, PROMPTS, 6, num_beams=3)
    assert out.shape == (3, 10) and torch.equal(out[:, :4], PROMPTS)
    assert torch.equal(beam_search(tiny_ours, PROMPTS, 0, num_beams=3), PROMPTS)
    assert torch.equal(
        beam_search(tiny_ours, PROMPTS, 6, num_beams=1), generate(tiny_ours, PROMPTS, 6)
    )


def test_generate_edge_cases(tiny_ours):
    assert torch.equal(generate(tiny_ours, PROMPTS, 0), PROMPTS)
    one = generate(tiny_ours, PROMPTS[:1], 5)
    assert torch.equal(one, generate(tiny_ours, PROMPTS, 5)[:1])  # batching changes nothing
    assert one.dtype == torch.long


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(do_sample=True, temperature=0.0), ValueError, "do_sample=False"),
        (dict(do_sample=True, top_p=0.0), ValueError, "top_p"),
        (dict(do_sample=True, top_p=1.01), ValueError, "top_p"),
        (dict(do_sample=True, top_k=0), ValueError, "top_k=None"),
        (dict(num_beams=0), ValueError, "num_beams"),
        (dict(repetition_penalty=0.0), ValueError, "repetition_penalty"),
        (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
        (dict(max_new_tokens=100), ValueError, "n_positions"),
        (dict(eos_token_id=[1, 2]), TypeError, "single int"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs, error, match, tiny_ours):
    args = dict(max_new_tokens=5) | kwargs
    with pytest.raises(error, match=match):
        generate(tiny_ours, PROMPTS, **args)


def test_generate_rejects_bad_input_ids(tiny_ours):
    with pytest.raises(ValueError, match=r"input_ids\[None\]"):
        generate(tiny_ours, PROMPTS[0], 3)
    with pytest.raises(TypeError, match="integer"):
        generate(tiny_ours, PROMPTS.float(), 3)


def test_sampling_options_without_do_sample_warn(tiny_ours):
    with pytest.warns(UserWarning, match="do_sample=True"):
        generate(tiny_ours, PROMPTS, 2, temperature=0.5)


# --- the shipped course GPT: HF format and our GPT ------------------------------------------


@pytest.fixture(scope="module")
def course_gpt():
    from course_lib.pretrained import load_course_gpt

    return load_course_gpt()


@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=4), dict(repetition_penalty=1.3)])
def test_course_gpt_generate_equals_hf(kwargs, course_gpt):
    from course_lib.gpt import GPT

    hf_model, tokenizer = course_gpt
    ours = GPT.from_hf(hf_model).eval()
    encoded = [
        tokenizer(text).input_ids
        for text in (
            "ROMEO:\nBut soft, what light through",
            "KING HENRY:\nOnce more unto the breach",
        )
    ]
    T = min(len(ids) for ids in encoded)
    prompts = torch.tensor([ids[:T] for ids in encoded])  # same length: no padding needed
    expected = hf_generate(hf_model, prompts, max_new_tokens=30, **kwargs)
    assert torch.equal(generate(hf_model, prompts, 30, **kwargs), expected)
    assert torch.equal(generate(ours, prompts, 30, **kwargs), expected)
    assert torch.equal(generate(ours, prompts, 30, use_cache=False, **kwargs), expected)


def test_course_gpt_sampling_equals_hf(course_gpt):
    from course_lib.gpt import GPT

    hf_model, tokenizer = course_gpt
    ours = GPT.from_hf(hf_model).eval()
    prompt = tokenizer("HAMLET:\n", return_tensors="pt").input_ids
    for kwargs in (dict(top_k=40, temperature=0.8), dict(top_p=0.9)):
        torch.manual_seed(0)
        expected = hf_generate(hf_model, prompt, max_new_tokens=40, do_sample=True, **kwargs)
        torch.manual_seed(0)
        assert torch.equal(generate(ours, prompt, 40, do_sample=True, **kwargs), expected)


# --- SmolLM2 (a real 135M Llama): slow -------------------------------------------------------


@pytest.mark.slow
def test_smollm2_generate_equals_hf():
    from course_lib.pretrained import load_smollm2

    model, tokenizer = load_smollm2()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = tokenizer(text, return_tensors="pt").input_ids
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    greedy = generate(model, prompt, 20, eos_token_id=eos)
    assert torch.equal(greedy, hf_generate(model, prompt, eos_token_id=eos, max_new_tokens=20))
    assert "Paris" in tokenizer.decode(greedy[0, prompt.shape[1] :])
    beams = generate(model, prompt, 12, num_beams=3, eos_token_id=eos)
    assert torch.equal(
        beams, hf_generate(model, prompt, eos_token_id=eos, max_new_tokens=12, num_beams=3)
    )
    try:
        from course_lib.llama import Llama
    except ImportError:  # pragma: no cover - the module is part of the course
        pytest.fail("course_lib.llama.Llama is missing")
    ours = Llama.from_hf(model).eval()
    assert torch.equal(generate(ours, prompt, 20, eos_token_id=eos), greedy)
    assert torch.equal(generate(ours, prompt, 12, num_beams=3, eos_token_id=eos), beams)


# --- generate_cached: the KV-cache loop of notebook 07, written out ---------------------------


@pytest.mark.parametrize("which", ["hf", "ours", "llama_ours"])
def test_generate_cached_equals_greedy(which, tiny_peaked_gpt2, tiny_ours, tiny_llama_ours):
    from course_lib.generation import generate_cached

    model = {"hf": tiny_peaked_gpt2, "ours": tiny_ours, "llama_ours": tiny_llama_ours}[which]
    assert torch.equal(generate_cached(model, PROMPTS, 15), generate(model, PROMPTS, 15))
    assert torch.equal(generate_cached(model, PROMPTS, 0), PROMPTS)


def test_generate_cached_feeds_the_prompt_once_then_one_token_per_forward():
    from course_lib.generation import generate_cached
    from course_lib.grading._models import build_model

    config = dict(
        vocab_size=40, n_positions=64, n_embd=32, n_layer=2, n_head=4, tie_word_embeddings=False
    )
    model = build_model({"config": config, "seed": 0, "scale": 20.0})
    out = generate_cached(model, PROMPTS, 5)
    assert [(c["length"], c["past"]) for c in model.calls] == [
        (4, 0),
        (1, 4),
        (1, 5),
        (1, 6),
        (1, 7),
    ]
    model.calls.clear()
    assert torch.equal(generate(model, PROMPTS, 5, use_cache=False), out)
    assert [c["length"] for c in model.calls] == [4, 5, 6, 7, 8]  # no cache: the whole sequence
