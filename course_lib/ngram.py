"""The bigram language model: count which token follows which, normalise, sample, score.

A bigram model predicts the next token from the current one only:
``P(x_1..x_T) ~= P(x_1) * prod_t P(x_{t+1} | x_t)``. Its parameters are one (V, V) table whose
row ``i`` is the distribution of the token after ``i``; counting transitions in a corpus and
normalising each row is the maximum-likelihood estimate, and add-alpha smoothing keeps unseen
transitions from getting probability 0.

    ids = [0, 1, 0, 1, 1]  ->  counts[0, 1] == 2, counts[1, 0] == 1, counts[1, 1] == 1

These are the reference answers of notebook 01 (the counting model) and the baseline that the
neural bigram of notebook 03 must match.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["bigram_counts", "bigram_probs", "nll", "perplexity", "sample_bigram"]


def _check_ids_in_vocab(x: Tensor, vocab_size: int) -> None:
    # An id >= vocab_size would not fail below: i * V + j would just count the wrong cell.
    if x.numel() and not 0 <= x.min() <= x.max() < vocab_size:
        raise ValueError(
            f"token ids must be in [0, {vocab_size}), got {x.min().item()}..{x.max().item()}: "
            "is vocab_size too small, or are the ids from another vocabulary?"
        )


def bigram_counts(ids: Sequence[int], vocab_size: int) -> Tensor:
    """Count the transitions of a token sequence.

    Args:
        ids: token ids, each in [0, vocab_size) (a list, or a 1-D integer tensor).
        vocab_size: V, the number of distinct tokens.

    Returns:
        (V, V) int64 tensor whose ``[i, j]`` is how many times ``j`` directly follows ``i``;
        it sums to ``len(ids) - 1``.

    Example:
        >>> bigram_counts([0, 1, 0, 1, 1], 2)
        tensor([[0, 2],
                [1, 1]])
    """
    x = torch.as_tensor(ids, dtype=torch.long)
    _check_ids_in_vocab(x, vocab_size)
    pair = x[:-1] * vocab_size + x[1:]  # (n - 1,): one number per adjacent pair
    counts = torch.bincount(pair, minlength=vocab_size * vocab_size)
    return counts.view(vocab_size, vocab_size)


def bigram_probs(counts: Tensor, alpha: float = 1.0) -> Tensor:
    """Turn counts into next-token distributions with add-alpha smoothing.

    ``probs[i, j] = (counts[i, j] + alpha) / (sum_k counts[i, k] + alpha * V)``.
    ``alpha = 1`` is Laplace smoothing; ``alpha = 0`` is the raw maximum-likelihood estimate,
    which leaves a token never seen before another one without a distribution.

    Args:
        counts: (V, V) non-negative counts, e.g. from ``bigram_counts``.
        alpha: pseudo-count added to every cell, >= 0.

    Returns:
        (V, V) float32 tensor, each row summing to 1 (computed in float64, then rounded). With
        ``alpha = 0``, a row of zero counts has no distribution and becomes NaN (0 / 0).
    """
    smoothed = counts.double() + alpha
    return (smoothed / smoothed.sum(dim=1, keepdim=True)).float()


def nll(probs: Tensor, ids: Sequence[int]) -> float:
    """Average negative log-likelihood of a sequence under a bigram model.

    ``-(1 / (T - 1)) * sum_t log probs[ids[t], ids[t + 1]]`` with natural logs, over the
    ``T - 1`` transitions (the first token is given, not predicted).

    Args:
        probs: (V, V) transition table, rows summing to 1.
        ids: at least two token ids in [0, V).

    Returns:
        The mean NLL in nats per token, a Python float (``inf`` if a transition has
        probability 0).
    """
    x = torch.as_tensor(ids, dtype=torch.long)
    p = probs[x[:-1], x[1:]].double()  # (n - 1,): probability of each actual transition
    return -torch.log(p).mean().item()


def perplexity(probs: Tensor, ids: Sequence[int]) -> float:
    """``exp(nll)``: the size of a uniform choice that is as surprised as the model.

    A model that assigns every token probability 1/V has perplexity exactly V.

    Args:
        probs: (V, V) transition table, rows summing to 1.
        ids: at least two token ids in [0, V).

    Returns:
        Perplexity, a Python float >= 1 for a normalised model.
    """
    return math.exp(nll(probs, ids))


def sample_bigram(probs: Tensor, start_id: int, n: int, generator: torch.Generator) -> list[int]:
    """Sample ``n`` tokens from a bigram model, starting after ``start_id``.

    Each step draws exactly one ``torch.multinomial(probs[current], 1, generator=generator)``,
    so the same generator state gives the same ids (and a grader can replay it).

    Args:
        probs: (V, V) transition table, non-negative rows (need not be normalised).
        start_id: the token to continue from, in [0, V); not included in the output.
        n: how many new tokens to draw, >= 0.
        generator: a seeded ``torch.Generator`` on the device of ``probs``.

    Returns:
        A list of ``n`` ints in [0, V).

    Example:
        >>> sample_bigram(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 0, 3, torch.Generator().manual_seed(0))
        [1, 0, 1]
    """
    out = []
    current = start_id
    for _ in range(n):
        current = torch.multinomial(probs[current], 1, generator=generator).item()
        out.append(current)
    return out
