"""Notebook 07's own solutions of ``generate`` and ``generate_cached`` equal HF ``model.generate``.

The functions are taken from the solution cells of ``solutions/07-generation/07-generation.ipynb``
(what a learner is shown as the answer), executed together with the helper exercises they call,
and compared token for token with Hugging Face on the shipped course GPT and on SmolLM2: greedy,
and sampling with the same seed (HF draws from the global generator; ours with
``generator=None`` does too).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

NOTEBOOK = (
    Path(__file__).resolve().parent.parent / "solutions" / "07-generation" / "07-generation.ipynb"
)


@pytest.fixture(scope="module")
def solutions() -> dict:
    """The notebook's solution functions, by name."""
    namespace = {"torch": torch, "F": F, "math": math}
    for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):
            exec(
                compile(cell.source, f"<07-generation: {cell.metadata.nbgrader.grade_id}>", "exec"),
                namespace,
            )
    assert callable(namespace.get("generate")) and callable(namespace.get("generate_cached"))
    return namespace


def hf_generate(model, input_ids, **kwargs):
    """HF generate with nothing implicit: no EOS stop, no default top-k when sampling."""
    if kwargs.get("do_sample"):
        kwargs.setdefault("top_k", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            eos_token_id=None,
            pad_token_id=0,
            **kwargs,
        )


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' deprecated past_key_values attribute
        return fn(*args, **kwargs)


SAMPLING = [
    dict(),
    dict(temperature=0.7),
    dict(top_k=20),
    dict(top_p=0.85),
    dict(temperature=1.3, top_k=40, top_p=0.9),
]


@pytest.fixture(scope="module")
def course_gpt():
    from course_lib.pretrained import load_course_gpt

    model, tokenizer = load_course_gpt()
    return model.eval(), tokenizer


def test_solutions_greedy_equal_hf_on_the_course_gpt(solutions, course_gpt):
    model, tokenizer = course_gpt
    encoded = [tokenizer(t).input_ids for t in ("ROMEO:\nBut soft, what light", "HAMLET:\nTo be")]
    T = min(len(e) for e in encoded)
    prompts = torch.tensor([e[:T] for e in encoded])
    expected = hf_generate(model, prompts, max_new_tokens=40)
    assert expected.shape == (2, T + 40)
    assert torch.equal(solutions["generate"](model, prompts, 40), expected)
    assert torch.equal(quiet(solutions["generate_cached"], model, prompts, 40), expected)


@pytest.mark.parametrize("kwargs", SAMPLING)
def test_solution_sampling_equals_hf_on_the_course_gpt(solutions, course_gpt, kwargs):
    model, tokenizer = course_gpt
    prompt = tokenizer("JULIET:\n", return_tensors="pt").input_ids.repeat(3, 1)
    torch.manual_seed(11)
    expected = hf_generate(model, prompt, max_new_tokens=40, do_sample=True, **kwargs)
    torch.manual_seed(11)
    ours = solutions["generate"](model, prompt, 40, do_sample=True, **kwargs)
    assert torch.equal(ours, expected)
    assert not torch.equal(expected, hf_generate(model, prompt, max_new_tokens=40))  # it sampled


@pytest.mark.slow
def test_solutions_equal_hf_on_smollm2(solutions):
    from course_lib.pretrained import load_smollm2

    model, tokenizer = load_smollm2()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = tokenizer(text, return_tensors="pt").input_ids
    greedy = hf_generate(model, prompt, max_new_tokens=12)
    assert torch.equal(solutions["generate"](model, prompt, 12), greedy)
    assert torch.equal(quiet(solutions["generate_cached"], model, prompt, 12), greedy)
    assert "Paris" in tokenizer.decode(greedy[0, prompt.shape[1] :])
    for kwargs in (dict(temperature=0.8, top_p=0.9), dict(top_k=30)):
        torch.manual_seed(3)
        expected = hf_generate(model, prompt, max_new_tokens=12, do_sample=True, **kwargs)
        torch.manual_seed(3)
        assert torch.equal(
            solutions["generate"](model, prompt, 12, do_sample=True, **kwargs), expected
        )
