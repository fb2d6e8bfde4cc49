"""Learner-style bigram model functions (notebook 01): right and wrong."""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from grading_impl import bug, right

# ------------------------------------------------------------------------------------------------
# bigram_counts
# ------------------------------------------------------------------------------------------------


def bigram_counts(ids, vocab_size):
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.long)
    for a, b in zip(ids, ids[1:]):
        counts[a, b] += 1
    return counts


def bigram_counts_index_put(ids, vocab_size):
    t = torch.tensor(ids, dtype=torch.long)
    counts = torch.zeros(vocab_size, vocab_size)  # float32 counts are fine
    return counts.index_put_((t[:-1], t[1:]), torch.ones(len(ids) - 1), accumulate=True)


@bug("bigram_counts", "counts transposed")
def bigram_counts_transposed(ids, vocab_size):
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.long)
    for a, b in zip(ids, ids[1:]):
        counts[b, a] += 1
    return counts


@bug("bigram_counts", "repeated pairs are counted once")
def bigram_counts_fancy_index(ids, vocab_size):
    t = torch.tensor(ids)
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.long)
    counts[t[:-1], t[1:]] += 1  # duplicates are written once, not added up
    return counts


@bug("bigram_counts", "you missed the last pair")
def bigram_counts_off_by_one(ids, vocab_size):
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.long)
    for i in range(len(ids) - 2):
        counts[ids[i], ids[i + 1]] += 1
    return counts


@bug("bigram_counts", "size the table by vocab_size")
def bigram_counts_sized_by_max(ids, vocab_size):
    V = max(ids) + 1
    counts = torch.zeros(V, V, dtype=torch.long)
    for a, b in zip(ids, ids[1:]):
        counts[a, b] += 1
    return counts


@bug("bigram_counts", "back to the first")
def bigram_counts_wraps_around(ids, vocab_size):
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.long)
    for i in range(len(ids)):
        counts[ids[i], ids[(i + 1) % len(ids)]] += 1
    return counts


@bug("bigram_counts", "changed its input `ids` in place")
def bigram_counts_pops(ids, vocab_size):
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.long)
    prev = ids.pop(0)
    while ids:
        cur = ids.pop(0)
        counts[prev, cur] += 1
        prev = cur
    return counts


@bug("bigram_counts", "not a torch.Tensor")
def bigram_counts_nested_list(ids, vocab_size):
    counts = [[0] * vocab_size for _ in range(vocab_size)]
    for a, b in zip(ids, ids[1:]):
        counts[a][b] += 1
    return counts


# ------------------------------------------------------------------------------------------------
# bigram_probs
# ------------------------------------------------------------------------------------------------


def bigram_probs(counts, alpha=1.0):
    c = counts.float() + alpha
    return c / c.sum(dim=1, keepdim=True)


def bigram_probs_float64_normalize(counts, alpha=1.0):
    return F.normalize(counts.double() + alpha, p=1, dim=1)


@bug("bigram_probs", "your columns sum to 1")
def bigram_probs_columns(counts, alpha=1.0):
    c = counts.float() + alpha
    return c / c.sum(dim=0, keepdim=True)


@bug("bigram_probs", "broadcast along the wrong axis")
def bigram_probs_no_keepdim(counts, alpha=1.0):
    c = counts.float() + alpha
    return c / c.sum(dim=1)


@bug("bigram_probs", "smoothing is missing")
def bigram_probs_no_smoothing(counts, alpha=1.0):
    c = counts.float()
    return c / c.sum(dim=1, keepdim=True)


@bug("bigram_probs", "add alpha to the denominator too")
def bigram_probs_alpha_on_top_only(counts, alpha=1.0):
    c = counts.float()
    return (c + alpha) / c.sum(dim=1, keepdim=True)


@bug("bigram_probs", "changed its input `counts` in place")
def bigram_probs_in_place(counts, alpha=1.0):
    c = counts.float()  # the same tensor when counts is already float
    c += alpha
    return c / c.sum(dim=1, keepdim=True)


@bug("bigram_probs", "the default of alpha must be 1.0, not 0.0")
def bigram_probs_default_zero(counts, alpha=0.0):
    c = counts.float() + alpha
    return c / c.sum(dim=1, keepdim=True)


# ------------------------------------------------------------------------------------------------
# nll and perplexity
# ------------------------------------------------------------------------------------------------


def nll(probs, ids):
    t = torch.tensor(ids)
    return -torch.log(probs[t[:-1], t[1:]]).mean().item()


def nll_python(probs, ids):
    return -sum(math.log(probs[a, b]) for a, b in zip(ids, ids[1:])) / (len(ids) - 1)


def nll_tensor(probs, ids):  # a 0-dim tensor is accepted as "a float"
    t = torch.tensor(ids)
    return -probs.double()[t[:-1], t[1:]].log().mean()


@bug("nll", "nll summed instead of averaged")
def nll_summed(probs, ids):
    t = torch.tensor(ids)
    return -torch.log(probs[t[:-1], t[1:]]).sum().item()


@bug("nll", "there are len(ids) - 1 transitions")
def nll_divides_by_len(probs, ids):
    t = torch.tensor(ids)
    return -torch.log(probs[t[:-1], t[1:]]).sum().item() / len(ids)


@bug("nll", "MINUS the mean log-probability")
def nll_no_minus(probs, ids):
    t = torch.tensor(ids)
    return torch.log(probs[t[:-1], t[1:]]).mean().item()


@bug("nll", "not log10")
def nll_log10(probs, ids):
    return -sum(math.log10(probs[a, b]) for a, b in zip(ids, ids[1:])) / (len(ids) - 1)


@bug("nll", "you indexed probs[next, current]")
def nll_transposed(probs, ids):
    t = torch.tensor(ids)
    return -torch.log(probs[t[1:], t[:-1]]).mean().item()


@bug("nll", "add up the logs")
def nll_product(probs, ids):
    t = torch.tensor(ids)
    return -torch.log(probs[t[:-1], t[1:]].prod()).item() / (len(ids) - 1)


def perplexity(probs, ids):
    return math.exp(nll(probs, ids))


def perplexity_torch(probs, ids):
    t = torch.tensor(ids)
    return torch.exp(-probs[t[:-1], t[1:]].log().mean())


@bug("perplexity", "not 2 ** nll")
def perplexity_base_2(probs, ids):
    return 2 ** nll(probs, ids)


@bug("perplexity", "you returned the nll")
def perplexity_is_nll(probs, ids):
    return nll(probs, ids)


@bug("perplexity", "MEAN nll per transition")
def perplexity_of_sum(probs, ids):
    t = torch.tensor(ids)
    return math.exp(-torch.log(probs[t[:-1], t[1:]]).sum().item())


@bug("perplexity", "exp(+nll)")
def perplexity_negated(probs, ids):
    return math.exp(-nll(probs, ids))


# ------------------------------------------------------------------------------------------------
# sample_bigram
# ------------------------------------------------------------------------------------------------


def sample_bigram(probs, start_id, n, generator):
    out, current = [], start_id
    for _ in range(n):
        current = torch.multinomial(probs[current], 1, generator=generator).item()
        out.append(current)
    return out


def sample_bigram_2d_replacement(probs, start_id, n, generator):
    out, current = [], start_id
    for _ in range(n):
        row = probs[current].unsqueeze(0).double()
        current = int(
            torch.multinomial(row, num_samples=1, replacement=True, generator=generator)[0, 0]
        )
        out.append(current)
    return out


@bug("sample_bigram", "without start_id")
def sample_bigram_includes_start(probs, start_id, n, generator):
    out = [start_id]
    for _ in range(n):
        out.append(torch.multinomial(probs[out[-1]], 1, generator=generator).item())
    return out


@bug("sample_bigram", "from probs[start_id]")
def sample_bigram_never_moves(probs, start_id, n, generator):
    return [torch.multinomial(probs[start_id], 1, generator=generator).item() for _ in range(n)]


@bug("sample_bigram", "(argmax)")
def sample_bigram_greedy(probs, start_id, n, generator):
    out, current = [], start_id
    for _ in range(n):
        current = probs[current].argmax().item()
        out.append(current)
    return out


@bug("sample_bigram", "pass generator=generator")
def sample_bigram_global_rng(probs, start_id, n, generator):
    out, current = [], start_id
    for _ in range(n):
        current = torch.multinomial(probs[current], 1).item()
        out.append(current)
    return out


@bug("sample_bigram", "the column probs[:, current]")
def sample_bigram_column(probs, start_id, n, generator):
    out, current = [], start_id
    for _ in range(n):
        current = torch.multinomial(probs[:, current], 1, generator=generator).item()
        out.append(current)
    return out


@bug("sample_bigram", "holds tensors")
def sample_bigram_tensor_items(probs, start_id, n, generator):
    out, current = [], start_id
    for _ in range(n):
        current = torch.multinomial(probs[current], 1, generator=generator)[0]
        out.append(current)
    return out


@bug("sample_bigram", "pass generator=generator")
def sample_bigram_python_random(probs, start_id, n, generator):
    out, current = [], start_id
    for _ in range(n):
        current = random.choices(range(probs.shape[0]), weights=probs[current].tolist())[0]
        out.append(current)
    return out


IMPLS = [
    right("bigram_counts", bigram_counts, "reference"),
    right("bigram_counts", bigram_counts_index_put),
    bigram_counts_transposed,
    bigram_counts_fancy_index,
    bigram_counts_off_by_one,
    bigram_counts_sized_by_max,
    bigram_counts_wraps_around,
    bigram_counts_pops,
    bigram_counts_nested_list,
    right("bigram_probs", bigram_probs, "reference"),
    right("bigram_probs", bigram_probs_float64_normalize),
    bigram_probs_columns,
    bigram_probs_no_keepdim,
    bigram_probs_no_smoothing,
    bigram_probs_alpha_on_top_only,
    bigram_probs_in_place,
    bigram_probs_default_zero,
    right("nll", nll, "reference"),
    right("nll", nll_python),
    right("nll", nll_tensor),
    nll_summed,
    nll_divides_by_len,
    nll_no_minus,
    nll_log10,
    nll_transposed,
    nll_product,
    right("perplexity", perplexity, "reference"),
    right("perplexity", perplexity_torch),
    perplexity_base_2,
    perplexity_is_nll,
    perplexity_of_sum,
    perplexity_negated,
    right("sample_bigram", sample_bigram, "reference"),
    right("sample_bigram", sample_bigram_2d_replacement),
    sample_bigram_includes_start,
    sample_bigram_never_moves,
    sample_bigram_greedy,
    sample_bigram_global_rng,
    sample_bigram_column,
    sample_bigram_tensor_items,
    sample_bigram_python_random,
]
