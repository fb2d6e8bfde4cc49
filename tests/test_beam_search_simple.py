"""course_lib.generation.beam_search_simple (one prompt, lists) returns what beam_search returns."""

from __future__ import annotations

import pytest
import torch

from course_lib.generation import beam_search, beam_search_simple, generate
from course_lib.pretrained import load_course_gpt


@pytest.fixture(scope="module")
def course_gpt():
    model, tokenizer = load_course_gpt()
    return model.eval(), tokenizer("HAMLET\nTo be").input_ids


def batched(model, prompt: list[int], num_beams: int, n: int, eos: int | None) -> list[int]:
    out = beam_search(model, torch.tensor([prompt]), n, num_beams, eos_token_id=eos)
    return out[0].tolist()


@pytest.mark.parametrize("num_beams", [2, 4])
@pytest.mark.parametrize("prompt", [[5, 6, 7, 8], [9, 3, 3, 1]])
def test_simple_equals_batched_on_a_tiny_gpt(tiny_peaked_gpt2, prompt, num_beams):
    expected = batched(tiny_peaked_gpt2, prompt, num_beams, 12, None)
    assert len(expected) == len(prompt) + 12
    assert beam_search_simple(tiny_peaked_gpt2, prompt, num_beams, 12) == expected


@pytest.mark.parametrize("num_beams", [2, 4])
def test_beams_differ_from_greedy_here(tiny_peaked_gpt2, num_beams):
    # otherwise the equality above could hold for a search that only follows the argmax
    prompt = [9, 3, 3, 1]
    greedy = generate(tiny_peaked_gpt2, torch.tensor([prompt]), 12)[0].tolist()
    assert beam_search_simple(tiny_peaked_gpt2, prompt, num_beams, 12) != greedy


@pytest.mark.parametrize("num_beams", [2, 4])
def test_simple_equals_batched_with_eos(tiny_peaked_gpt2, num_beams):
    prompt = [9, 3, 3, 1]
    free = batched(tiny_peaked_gpt2, prompt, num_beams, 12, None)
    for eos in sorted(set(free[4:]))[:3]:  # tokens the beams do produce: EOS really happens
        expected = batched(tiny_peaked_gpt2, prompt, num_beams, 12, eos)
        assert (
            beam_search_simple(tiny_peaked_gpt2, prompt, num_beams, 12, eos_token_id=eos)
            == expected
        )


@pytest.mark.parametrize("num_beams", [2, 4])
def test_simple_equals_batched_on_the_course_gpt(course_gpt, num_beams):
    model, prompt = course_gpt
    expected = batched(model, prompt, num_beams, 10, None)
    assert beam_search_simple(model, prompt, num_beams, 10) == expected
    for eos in expected[len(prompt) : len(prompt) + 2]:  # tokens the beams do produce
        with_eos = batched(model, prompt, num_beams, 10, eos)
        assert with_eos != expected  # EOS changes the search
        assert beam_search_simple(model, prompt, num_beams, 10, eos_token_id=eos) == with_eos


def test_simple_keeps_the_prompt_and_stops_at_zero_tokens(tiny_peaked_gpt2):
    assert beam_search_simple(tiny_peaked_gpt2, [1, 2, 3], 2, 0) == [1, 2, 3]
    assert beam_search_simple(tiny_peaked_gpt2, [1, 2, 3], 2, 5)[:3] == [1, 2, 3]
