"""course_lib.ngram: the counting bigram model of notebook 01."""

import math

import pytest
import torch

from course_lib.ngram import bigram_counts, bigram_probs, nll, perplexity, sample_bigram


def test_bigram_counts_hand_computed():
    counts = bigram_counts([0, 1, 0, 1, 1, 2], 3)
    expected = torch.tensor([[0, 2, 0], [1, 1, 1], [0, 0, 0]])
    assert counts.dtype == torch.int64
    assert torch.equal(counts, expected)


def test_bigram_counts_direction_and_total():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (500,), generator=g).tolist()
    counts = bigram_counts(ids, 7)
    assert counts.sum().item() == len(ids) - 1
    # rows are the current token, columns the next one
    assert torch.equal(counts.sum(1), torch.bincount(torch.tensor(ids[:-1]), minlength=7))
    assert torch.equal(counts.sum(0), torch.bincount(torch.tensor(ids[1:]), minlength=7))
    assert torch.equal(bigram_counts(torch.tensor(ids), 7), counts)  # a tensor works too


def test_bigram_counts_short_inputs():
    assert torch.equal(bigram_counts([], 2), torch.zeros(2, 2, dtype=torch.int64))
    assert torch.equal(bigram_counts([1], 2), torch.zeros(2, 2, dtype=torch.int64))


def test_bigram_probs_hand_computed():
    counts = torch.tensor([[0, 2, 0], [1, 1, 1], [0, 0, 0]])
    probs = bigram_probs(counts, alpha=1.0)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs[0], torch.tensor([1 / 5, 3 / 5, 1 / 5]))
    torch.testing.assert_close(probs[1], torch.full((3,), 1 / 3))
    torch.testing.assert_close(probs[2], torch.full((3,), 1 / 3))  # unseen row: uniform
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    half = bigram_probs(counts, alpha=0.5)
    torch.testing.assert_close(half[0], torch.tensor([0.5 / 3.5, 2.5 / 3.5, 0.5 / 3.5]))


def test_bigram_probs_alpha_zero():
    counts = torch.tensor([[1, 3], [2, 0]])
    torch.testing.assert_close(
        bigram_probs(counts, alpha=0), torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    )
    # a token never followed by anything has no distribution without smoothing: 0 / 0
    assert bigram_probs(torch.tensor([[1, 3], [0, 0]]), alpha=0.0)[1].isnan().all()


def test_nll_and_perplexity_hand_computed():
    probs = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    ids = [0, 1, 1, 0]  # transitions 0->1, 1->1, 1->0
    expected = -(math.log(0.75) + math.log(0.5) + math.log(0.5)) / 3
    assert isinstance(nll(probs, ids), float)
    assert nll(probs, ids) == pytest.approx(expected, rel=1e-6)
    assert perplexity(probs, ids) == pytest.approx(math.exp(expected), rel=1e-6)


@pytest.mark.parametrize("V", [2, 27, 256])
def test_uniform_model_has_perplexity_v(V):
    probs = bigram_probs(torch.zeros(V, V, dtype=torch.int64), alpha=1.0)
    ids = torch.randint(0, V, (300,), generator=torch.Generator().manual_seed(V)).tolist()
    assert perplexity(probs, ids) == pytest.approx(V, rel=1e-5)


def test_counting_model_beats_uniform_on_its_own_text():
    text = "the cat sat on the mat. the cat ate the rat. " * 20
    ids = list(text.encode())
    probs = bigram_probs(bigram_counts(ids, 256), alpha=0.1)
    assert perplexity(probs, ids) < 4.0  # a uniform byte model would score 256


def test_zero_probability_transition_gives_inf():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert nll(probs, [0, 1]) == math.inf
    assert perplexity(probs, [0, 1]) == math.inf


def test_sample_bigram_follows_the_multinomial_contract():
    probs = bigram_probs(bigram_counts(list(b"abracadabra"), 256), alpha=0.01)
    ids = sample_bigram(probs, ord("a"), 40, torch.Generator().manual_seed(123))
    assert len(ids) == 40 and all(isinstance(i, int) for i in ids)
    # replay: exactly one multinomial(probs[current], 1) per step with the same generator
    g = torch.Generator().manual_seed(123)
    current, replay = ord("a"), []
    for _ in range(40):
        current = torch.multinomial(probs[current], 1, generator=g).item()
        replay.append(current)
    assert ids == replay
    assert sample_bigram(probs, ord("a"), 40, torch.Generator().manual_seed(123)) == ids
    assert sample_bigram(probs, ord("a"), 40, torch.Generator().manual_seed(124)) != ids
    assert sample_bigram(probs, 0, 0, torch.Generator().manual_seed(0)) == []


def test_sample_bigram_deterministic_chain():
    probs = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert sample_bigram(probs, 0, 5, torch.Generator().manual_seed(0)) == [1, 2, 0, 1, 2]


def test_sample_bigram_frequencies_match_probs():
    probs = torch.tensor([[0.2, 0.8], [0.2, 0.8]])
    ids = sample_bigram(probs, 0, 4000, torch.Generator().manual_seed(0))
    assert sum(ids) / len(ids) == pytest.approx(0.8, abs=0.03)


def test_bad_inputs_fail_loudly_in_torch():
    """The teaching functions read like the notebook's solutions, with one check where a mistake
    would be silent (an id >= V would count the wrong cell); elsewhere torch raises by itself."""
    with pytest.raises(ValueError, match=r"in \[0, 3\).*vocab_size too small"):
        bigram_counts([0, 3], 3)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        bigram_counts([-1, 0], 3)
    probs = torch.full((3, 3), 1 / 3)
    with pytest.raises(IndexError):
        perplexity(probs, [0, 5])
    g = torch.Generator().manual_seed(0)
    with pytest.raises(IndexError):
        sample_bigram(probs, 3, 2, g)
    with pytest.raises(RuntimeError):
        sample_bigram(-probs, 0, 2, g)


def test_docstring_examples_run():
    import doctest

    import course_lib.ngram as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
