"""Graders of notebook 01 (01-language-models): the bigram model.

Runs in the referee; the answer key is ``course_lib.ngram``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from course_lib import ngram as ref
from course_lib.grading._harness import (
    FloatOut,
    IntListOut,
    Mistake,
    Session,
    TensorOut,
    generator_arg,
    reference_answer,
    verify,
)

# ------------------------------------------------------------------------------------------------
# bigram_counts
# ------------------------------------------------------------------------------------------------


def _counts(pairs: list[tuple[int, int]], V: int) -> Tensor:
    counts = torch.zeros(V, V, dtype=torch.int64)
    for a, b in pairs:
        counts[a, b] += 1
    return counts


def _count_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "counts transposed: [i, j] must count how often j follows i (row = current token, "
            "column = next token)",
            lambda ids, V: _counts(list(zip(ids, ids[1:])), V).T,
        ),
        Mistake(
            "repeated pairs are counted once: `counts[a, b] += 1` with index tensors does not add "
            "up duplicates; loop over zip(ids, ids[1:]) in Python, or use index_put_(..., "
            "accumulate=True)",
            lambda ids, V: (_counts(list(zip(ids, ids[1:])), V) > 0).long(),
        ),
        Mistake(
            "you missed the last pair: a sequence of n ids has n - 1 pairs, zip(ids, ids[1:])",
            lambda ids, V: _counts(list(zip(ids[:-1], ids[1:-1])), V),
        ),
        Mistake(
            "you counted a pair from the last token back to the first: only zip(ids, ids[1:])",
            lambda ids, V: _counts(list(zip(ids, ids[1:] + ids[:1])), V),
        ),
        Mistake(
            "size the table by vocab_size (V, V), not by the largest id you saw",
            lambda ids, V: _counts(list(zip(ids, ids[1:])), max(ids) + 1),
        ),
    ]


def grade_bigram_counts(s: Session) -> None:
    s.inplace_hint = "Do not sort, pop or append to ids; read it only."
    r = s.rng
    cases: list[tuple[list[int], int]] = []
    if not s.hidden:
        cases.append(([0, 1, 2, 1, 2, 0], 3))
    V = r.randint(5, 8)
    cases += [
        ([r.randrange(V - 2) for _ in range(r.randint(30, 60))], V),  # the two last ids never occur
        ([r.choice([1, 2]) for _ in range(r.randint(20, 30))] + [0], 4),  # many repeated pairs
        ([r.randrange(V)], V),  # one id: no pair at all
    ]
    for ids, V in cases:
        out = s.call(ids, V)

        def total(c: Tensor, n: int = len(ids)) -> str | None:
            if c.sum().item() != n - 1:
                return (
                    f"your counts add up to {c.sum().item()}, but {n} ids have {n - 1} adjacent "
                    "pairs: count every pair of zip(ids, ids[1:]) once"
                )
            return None

        verify(
            s,
            out,
            TensorOut((V, V), "count", what="counts"),
            ref.bigram_counts(ids, V),
            mistakes=_count_mistakes(),
            properties=[total],
        )


# ------------------------------------------------------------------------------------------------
# bigram_probs
# ------------------------------------------------------------------------------------------------


def _rows(c: Tensor) -> Tensor:
    return c / c.sum(1, keepdim=True)


def _probs_mistakes() -> list[Mistake]:
    def alpha_of(rest: tuple) -> float:
        return float(rest[0]) if rest else 1.0

    return [
        Mistake(
            "your columns sum to 1, not your rows: normalise each row with .sum(dim=1, "
            "keepdim=True)",
            lambda c, *rest: (
                (c.double() + alpha_of(rest)) / (c.double() + alpha_of(rest)).sum(0, keepdim=True)
            ),
        ),
        Mistake(
            "you divided by the row sums broadcast along the wrong axis: use .sum(dim=1, "
            "keepdim=True)",
            lambda c, *rest: (c.double() + alpha_of(rest)) / (c.double() + alpha_of(rest)).sum(1),
        ),
        Mistake(
            "smoothing is missing: add alpha to every count before normalising",
            lambda c, *rest: _rows(c.double()),
        ),
        Mistake(
            "add alpha to the denominator too: each row's total grows by alpha * V (alpha in each "
            "of the V cells)",
            lambda c, *rest: (c.double() + alpha_of(rest)) / c.double().sum(1, keepdim=True),
        ),
        Mistake(
            "each row's total grows by alpha * V (alpha in each of the V cells), not by alpha",
            lambda c, *rest: (
                (c.double() + alpha_of(rest)) / (c.double().sum(1, keepdim=True) + alpha_of(rest))
            ),
        ),
    ]


def grade_bigram_probs(s: Session) -> None:
    s.inplace_hint = (
        "Write counts + alpha (a new tensor), not counts += alpha, which changes the caller's "
        "counts."
    )
    s.error_hints = [
        (
            "can't be cast to the desired output type",
            "counts may be an integer tensor: compute counts + alpha (a new float tensor) instead "
            "of adding in place.",
        )
    ]
    r = s.rng
    V = r.randint(4, 7)
    zero_row = s.randint(0, 6, V, V)
    zero_row[r.randrange(V)] = 0
    cases: list[tuple] = []
    if not s.hidden:
        cases.append((torch.tensor([[0, 2], [1, 1]]),))  # default alpha: [[1/4, 3/4], [2/4, 2/4]]
    cases += [
        (s.randint(0, 9, V, V), r.choice([0.5, 0.1, 2.0])),
        # float counts: `counts += alpha` would go unnoticed
        (s.randint(0, 9, V + 1, V + 1).float(), 1.0),
        (zero_row,),  # a token never followed by anything: smoothing gives it a uniform row
        (s.randint(1, 9, V, V), 0.0),  # alpha = 0: the raw maximum-likelihood estimate
        (s.randint(0, 4, V, V).float(), r.choice([0.25, 3.0])),
    ]
    for args in cases:
        counts = args[0]
        alpha = args[1] if len(args) > 1 else 1.0
        n = counts.shape[0]
        out = s.call(*args)

        def finite(p: Tensor) -> str | None:
            if not p.isfinite().all():
                return (
                    "your probabilities contain NaN/inf: a row of zero counts gives 0 / 0; add "
                    "alpha first"
                )
            return None

        def rows_sum_to_one(p: Tensor) -> str | None:
            if (p.double().sum(1) - 1).abs().max() > 1e-5:
                return (
                    "your rows do not sum to 1: normalise each row, (counts + alpha) / (counts + "
                    "alpha).sum(dim=1, keepdim=True)"
                )
            return None

        kind, expected = reference_answer(
            TensorOut((n, n), "float", rtol=1e-5, atol=1e-7, what="probabilities"),
            ref.bigram_probs,
            counts.double(),
            alpha,
        )
        verify(
            s,
            out,
            kind,
            expected,
            mistakes=_probs_mistakes(),
            properties=[finite, rows_sum_to_one],
        )


# ------------------------------------------------------------------------------------------------
# nll and perplexity
# ------------------------------------------------------------------------------------------------


def _logp(probs: Tensor, ids: list[int], log: Any = torch.log) -> Tensor:
    t = torch.tensor(ids)
    return log(probs.double()[t[:-1], t[1:]])


def _underflow(p: Tensor, ids: list[int]) -> float:
    prod = _logp(p.float(), ids, lambda x: x).float().prod().item()
    return math.inf if prod == 0 else -math.log(prod) / (len(ids) - 1)


def _nll_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "nll summed instead of averaged: divide by the number of transitions, len(ids) - 1",
            lambda p, ids: -_logp(p, ids).sum().item(),
        ),
        Mistake(
            "you averaged over len(ids); there are len(ids) - 1 transitions (the first token is "
            "given, not predicted)",
            lambda p, ids: -_logp(p, ids).sum().item() / len(ids),
        ),
        Mistake(
            "your nll is negative: it is MINUS the mean log-probability",
            lambda p, ids: _logp(p, ids).mean().item(),
        ),
        Mistake(
            "use the natural log (torch.log or math.log), not log10",
            lambda p, ids: -_logp(p, ids, torch.log10).mean().item(),
        ),
        Mistake(
            "use the natural log (torch.log or math.log), not log2",
            lambda p, ids: -_logp(p, ids, torch.log2).mean().item(),
        ),
        Mistake(
            "you indexed probs[next, current]: the probability of ids[t + 1] after ids[t] is "
            "probs[ids[t], ids[t + 1]]",
            lambda p, ids: -_logp(p.T, ids).mean().item(),
        ),
        Mistake(
            "you averaged the probabilities themselves: take -log of each probability, then the "
            "mean",
            lambda p, ids: -_logp(p, ids, lambda x: x).mean().item(),
        ),
        Mistake(
            "you returned exp(nll), the perplexity; nll is the mean of -log p",
            lambda p, ids: math.exp(-_logp(p, ids).mean().item()),
        ),
        Mistake(
            "multiplying many probabilities underflows to 0 (log(0) = -inf): add up the logs "
            "instead of taking the log of the product",
            _underflow,
        ),
    ]


def _nll_cases(s: Session) -> list[tuple[Tensor, list[int]]]:
    r = s.rng
    V = r.randint(5, 9)
    smooth = ref.bigram_probs(ref.bigram_counts([r.randrange(V) for _ in range(200)], V), 1.0)
    cases = []
    if not s.hidden:
        cases.append((torch.full((4, 4), 0.25), [0, 1, 2, 3, 0]))  # uniform over 4: nll = log 4
    cases += [
        (
            torch.softmax(s.randn(V, V, scale=2.0), -1),
            [r.randrange(V) for _ in range(r.randint(15, 30))],
        ),
        (smooth, [r.randrange(V), r.randrange(V)]),  # one transition
        (smooth, [r.randrange(V) for _ in range(r.randint(40, 60))]),
        # a long text: the product of its probabilities underflows float32
        (torch.softmax(s.randn(V, V, scale=3.0), -1), [r.randrange(V) for _ in range(300)]),
    ]
    return cases


def _float_properties(what: str) -> list:
    def finite(x: float) -> str | None:
        if math.isnan(x) or math.isinf(x):
            return (
                f"your {what} is {x} although every transition has a probability > 0: add up the "
                "logs (do not multiply the probabilities, the product underflows to 0)"
            )
        return None

    return [finite]


def grade_nll(s: Session) -> None:
    s.inplace_hint = "Read probs and ids only; do not modify them."
    for probs, ids in _nll_cases(s):
        out = s.call(probs, ids)
        kind, expected = reference_answer(
            FloatOut(rtol=2e-5, atol=1e-6, what="nll"), ref.nll, probs, ids
        )
        verify(
            s,
            out,
            kind,
            expected,
            mistakes=_nll_mistakes(),
            properties=_float_properties("nll"),
        )


def grade_perplexity(s: Session) -> None:
    s.inplace_hint = "Read probs and ids only; do not modify them."

    def mean_nll(p: Tensor, ids: list[int], n: int | None = None) -> float:
        return -_logp(p, ids).sum().item() / (len(ids) - 1 if n is None else n)

    mistakes = [
        Mistake(
            "use exp(nll), not 2 ** nll: the nll is in nats (natural log)",
            lambda p, ids: 2.0 ** mean_nll(p, ids),
        ),
        Mistake("you returned the nll; perplexity = exp(nll)", lambda p, ids: mean_nll(p, ids)),
        Mistake(
            "perplexity is exp of the MEAN nll per transition, not of the sum",
            lambda p, ids: math.exp(min(mean_nll(p, ids, 1), 709.0)),
        ),
        Mistake(
            "perplexity is exp(+nll), not exp(-nll)", lambda p, ids: math.exp(-mean_nll(p, ids))
        ),
        Mistake(
            "average the nll over the len(ids) - 1 transitions, not over len(ids)",
            lambda p, ids: math.exp(mean_nll(p, ids, len(ids))),
        ),
    ]

    def at_least_one(x: float) -> str | None:
        if x < 1 - 1e-6:
            return f"your perplexity is {x:.4g} < 1; for a normalised model it is exp(nll) >= 1"
        return None

    for probs, ids in _nll_cases(s):
        out = s.call(probs, ids)
        kind, expected = reference_answer(
            FloatOut(rtol=2e-5, atol=1e-6, what="perplexity"), ref.perplexity, probs, ids
        )
        verify(
            s,
            out,
            kind,
            expected,
            mistakes=mistakes,
            properties=_float_properties("perplexity") + [at_least_one],
        )


# ------------------------------------------------------------------------------------------------
# sample_bigram
# ------------------------------------------------------------------------------------------------


def _gen(spec: dict) -> torch.Generator:
    return torch.Generator().manual_seed(int(spec["seed"]))


def _draw(row: Tensor, g: torch.Generator) -> int:
    return int(torch.multinomial(row, 1, generator=g).item())


def _sample_mistakes() -> list[Mistake]:
    def with_start(p: Tensor, start: int, n: int, spec: dict) -> list[int]:
        return [start] + ref.sample_bigram(p, start, n, _gen(spec))

    def with_start_trimmed(p: Tensor, start: int, n: int, spec: dict) -> list[int]:
        return ([start] + ref.sample_bigram(p, start, n, _gen(spec)))[:n]

    def same_row(p: Tensor, start: int, n: int, spec: dict) -> list[int]:
        g = _gen(spec)
        return [_draw(p[start], g) for _ in range(n)]

    def all_at_once(p: Tensor, start: int, n: int, spec: dict) -> list[int]:
        return (
            torch.multinomial(p[start], n, replacement=True, generator=_gen(spec)).tolist()
            if n
            else []
        )

    def argmax(p: Tensor, start: int, n: int, spec: dict) -> list[int]:
        out, cur = [], start
        for _ in range(n):
            cur = int(p[cur].argmax())
            out.append(cur)
        return out

    def column(p: Tensor, start: int, n: int, spec: dict) -> list[int]:
        return ref.sample_bigram(p.T.contiguous(), start, n, _gen(spec))

    return [
        Mistake("return only the n new ids, without start_id", with_start),
        Mistake("return only the n new ids, without start_id", with_start_trimmed),
        Mistake(
            "you sample every token from probs[start_id]: after each draw, set current to the "
            "token you just sampled",
            same_row,
        ),
        Mistake(
            "you sample every token from probs[start_id]: draw one token at a time from "
            "probs[current] and update current",
            all_at_once,
        ),
        Mistake(
            "you took the most likely token (argmax): sample it with "
            "torch.multinomial(probs[current], 1, generator=generator)",
            argmax,
        ),
        Mistake(
            "you sampled from the column probs[:, current]; the next-token distribution is the "
            "row probs[current]",
            column,
        ),
    ]


def grade_sample_bigram(s: Session) -> None:
    s.inplace_hint = "Read probs only; do not modify it."
    r = s.rng
    V = r.randint(5, 8)
    # Sparse rows (zeros show a sample from the wrong row), each with at least two possible
    # tokens and no dominant one, so that different samplers give different sequences.
    sparse = (torch.rand(V, V, generator=s.gen) < 0.6) * (0.5 + torch.rand(V, V, generator=s.gen))
    cols = torch.randperm(V, generator=s.gen)
    sparse[torch.arange(V), cols] += 0.5
    sparse[torch.arange(V), cols.roll(1)] += 0.5
    sparse = sparse / sparse.sum(1, keepdim=True)
    seeds = [r.randrange(2**31) for _ in range(3)]
    cases: list[tuple] = []
    if not s.hidden:  # deterministic: [1, 0, 1, 0]
        cases.append((torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 0, 4, 0))
    cases += [
        (sparse, r.randrange(V), r.randint(20, 30), seeds[0]),
        (torch.softmax(s.randn(V, V), -1), r.randrange(V), r.randint(10, 20), seeds[1]),
        (sparse, r.randrange(V), 0, seeds[2]),
    ]
    for probs, start, n, seed in cases:
        args = (probs, start, n, generator_arg(seed))
        out = s.call(*args)
        if n >= 10:  # with fewer draws two different streams may agree by chance
            s.expect_repeatable(out, args)

        def length(ids: list[int], n: int = n) -> str | None:
            if len(ids) != n:
                return f"you returned {len(ids)} ids; return exactly n = {n} new ids"
            return None

        def in_vocab(ids: list[int], V: int = probs.shape[0]) -> str | None:
            bad = [x for x in ids if not 0 <= x < V]
            return f"id {bad[0]} is not in [0, {V})" if bad else None

        def possible(ids: list[int], probs: Tensor = probs, start: int = start) -> str | None:
            for prev, nxt in zip([start] + ids, ids):
                if probs[prev, nxt] == 0:
                    return (
                        f"you sampled {nxt} after {prev}, but probs[{prev}, {nxt}] = 0: sample "
                        "each token from the row probs[current] of the token before it"
                    )
            return None

        expected = ref.sample_bigram(probs, start, n, torch.Generator().manual_seed(seed))
        verify(
            s,
            out,
            IntListOut(what="sample"),
            expected,
            mistakes=_sample_mistakes(),
            properties=[length, in_vocab, possible],
        )
