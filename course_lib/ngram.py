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
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["bigram_counts", "bigram_probs", "nll", "perplexity", "sample_bigram"]


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _ids_tensor(ids: Sequence[int] | Tensor, V: int) -> Tensor:
    """``ids`` as a 1-D int64 CPU tensor, after checking every id is in [0, V)."""
    if isinstance(ids, Tensor):
        if ids.dim() != 1 or ids.is_floating_point() or ids.dtype == torch.bool:
            raise ValueError(
                f"ids must be a flat list of ints, got a {ids.dtype} tensor of shape {tuple(ids.shape)}"
            )
        t = ids.detach().to("cpu", torch.int64)
    else:
        if isinstance(ids, (str, bytes)):
            raise TypeError("ids must be a list of token ids, not text: encode the text first")
        ids = list(ids)
        try:
            t = torch.tensor(ids) if ids else torch.zeros(0, dtype=torch.int64)
        except (TypeError, ValueError, OverflowError, RuntimeError) as err:
            raise TypeError(f"ids must be a flat list of ints: {err}") from None
        if t.dim() != 1 or t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
            raise TypeError(
                f"ids must be a flat list of ints, got {t.dtype} values of shape {tuple(t.shape)}"
            )
        t = t.to(torch.int64)
    if t.numel() and (t.min() < 0 or t.max() >= V):
        bad = t[(t < 0) | (t >= V)][0].item()
        raise ValueError(
            f"token id {bad} is outside [0, {V}): is vocab_size too small, or the ids from another vocabulary?"
        )
    return t


def _check_probs(probs: object) -> int:
    """Validate a (V, V) transition table and return V."""
    if not isinstance(probs, Tensor):
        raise TypeError(f"probs must be a (V, V) torch.Tensor, got {type(probs).__name__}")
    if probs.dim() != 2 or probs.shape[0] != probs.shape[1]:
        raise ValueError(f"probs must be a square (V, V) table, got shape {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise TypeError(
            f"probs must be floating point, got {probs.dtype}: did you pass the counts? use bigram_probs(counts)"
        )
    return probs.shape[0]


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
    if not _is_int(vocab_size) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    V = int(vocab_size)
    t = _ids_tensor(ids, V)
    # Transition (i, j) gets the flat index i * V + j; one bincount counts them all.
    flat = t[:-1] * V + t[1:]
    return torch.bincount(flat, minlength=V * V).view(V, V)


def bigram_probs(counts: Tensor, alpha: float = 1.0) -> Tensor:
    """Turn counts into next-token distributions with add-alpha smoothing.

    ``probs[i, j] = (counts[i, j] + alpha) / (sum_k counts[i, k] + alpha * V)``.
    ``alpha = 1`` is Laplace smoothing; ``alpha = 0`` is the raw maximum-likelihood estimate,
    which leaves a token never seen before another one without a distribution.

    Args:
        counts: (V, V) non-negative counts, e.g. from ``bigram_counts``.
        alpha: pseudo-count added to every cell, >= 0.

    Returns:
        (V, V) float32 tensor, each row summing to 1.
    """
    if not isinstance(counts, Tensor):
        raise TypeError(f"counts must be a (V, V) torch.Tensor, got {type(counts).__name__}")
    if counts.dim() != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"counts must be a square (V, V) table, got shape {tuple(counts.shape)}")
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, numbers.Real)
        or not math.isfinite(alpha)
        or alpha < 0
    ):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    c = counts.to(torch.float32)
    if (c < 0).any():
        raise ValueError("counts must be non-negative")
    c = c + alpha
    totals = c.sum(dim=1, keepdim=True)  # (V, 1)
    if (totals == 0).any():
        row = int((totals.squeeze(1) == 0).nonzero()[0].item())
        raise ValueError(
            f"row {row} of counts is all zero (that token is never followed by anything), so with "
            f"alpha={alpha} it has no distribution: use alpha > 0 (e.g. alpha=1.0) to smooth it"
        )
    return c / totals


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
    V = _check_probs(probs)
    t = _ids_tensor(ids, V)
    if t.numel() < 2:
        raise ValueError(f"nll needs at least 2 ids (one transition), got {t.numel()}")
    p = probs.detach().cpu()[t[:-1], t[1:]].to(torch.float64)  # (T - 1,)
    return float(-p.log().mean())


def perplexity(probs: Tensor, ids: Sequence[int]) -> float:
    """``exp(nll)``: the size of a uniform choice that is as surprised as the model.

    A model that assigns every token probability 1/V has perplexity exactly V.

    Args:
        probs: (V, V) transition table, rows summing to 1.
        ids: at least two token ids in [0, V).

    Returns:
        Perplexity, a Python float >= 1 for a normalised model.
    """
    value = nll(probs, ids)
    return math.exp(value) if value < 709.0 else math.inf


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
    V = _check_probs(probs)
    if not _is_int(start_id) or not 0 <= start_id < V:
        raise ValueError(f"start_id must be an int in [0, {V}), got {start_id!r}")
    if not _is_int(n) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, got {type(generator).__name__}: "
            "pass torch.Generator().manual_seed(0)"
        )
    if (probs < 0).any():
        raise ValueError(
            "probs has negative entries: pass probabilities, e.g. bigram_probs(counts)"
        )
    out: list[int] = []
    current = int(start_id)
    for _ in range(n):
        current = int(torch.multinomial(probs[current], 1, generator=generator).item())
        out.append(current)
    return out
