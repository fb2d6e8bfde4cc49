"""Graders of notebook 07 (07-generation): next-token choice, processors, generate, KV cache.

Runs in the referee; the answer key is ``course_lib.generation``. Token ids are compared
exactly. The model-taking exercises get a small seeded course GPT (``_harness.model_arg``):
the kernel builds it, runs the learner's loop on it and records what every forward pass
received; the referee builds the same model to compute the expected ids. The classic wrong
loops are written out in ``_decode`` (one switch per mistake).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib import generation as ref
from course_lib.grading._harness import (
    Mistake,
    Outcome,
    Session,
    TensorOut,
    generator_arg,
    mistake_maker,
    model_arg,
    reference_answer,
    verify,
)
from course_lib.grading._models import build_model

INF = float("inf")


class IdsOut(TensorOut):
    """Token ids: an integer tensor of a given shape, compared exactly."""

    def __init__(self, shape: tuple[int, ...], what: str = "ids") -> None:
        super().__init__(shape, "any", exact=True, what=what)

    def check_type(self, value: Any) -> str | None:
        message = TensorOut(None, "any", what=self.what).check_type(value)
        if message:
            return message
        if value.is_floating_point() or value.dtype == torch.bool:
            return (
                f"your {self.what} have dtype {value.dtype}; token ids are integers (argmax and "
                "torch.multinomial return int64: keep that dtype)"
            )
        if tuple(value.shape) != tuple(self.shape):
            return f"your {self.what} have shape {tuple(value.shape)}, expected {tuple(self.shape)}"
        return None


def _fill_property(expected: Tensor, what: str = "filtered logits"):
    """Removed tokens must be exactly -inf (not 0, not a large negative number)."""

    def check(value: Tensor) -> str | None:
        if value.shape != expected.shape:
            return None
        finite = value[expected == -INF]
        if (finite == 0).any():
            return (
                f"your {what} put 0 where a token is removed: a logit of 0 is still a likely "
                "token. Fill with float('-inf') (softmax turns it into probability exactly 0)"
            )
        big = finite.isfinite() & (finite < -1e3)
        if big.any():
            return (
                f"your {what} fill removed tokens with a large negative number "
                f"({finite[big][0].item():.3g}); use float('-inf') as Hugging Face does, so their "
                "probability is exactly 0 and later filters see them as removed"
            )
        return None

    return check


# ------------------------------------------------------------------------------------------------
# greedy_next_token
# ------------------------------------------------------------------------------------------------


def _greedy_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "you took the argmax over the batch (dim 0); take it over the vocabulary: "
            "logits.argmax(dim=-1)",
            lambda x: x.argmax(0),
        ),
        Mistake(
            "on ties you returned the last most likely index; torch.argmax returns the first "
            "one (and so does Hugging Face): use logits.argmax(dim=-1)",
            lambda x: x.shape[-1] - 1 - x.flip(-1).argmax(-1),
        ),
        Mistake(
            "you returned the least likely token (argmin); the greedy choice is the argmax",
            lambda x: x.argmin(-1),
        ),
        Mistake(
            "you returned shape (B, 1); return (B,): drop keepdim=True (or squeeze(-1))",
            lambda x: x.argmax(-1, keepdim=True),
        ),
        Mistake(
            "you returned the largest logits themselves; return their indices: "
            "logits.argmax(dim=-1) (or torch.max(...).indices)",
            lambda x: x.max(-1).values,
        ),
    ]


def grade_greedy_next_token(s: Session) -> None:
    r = s.rng
    cases = []
    if not s.hidden:  # ties: the first index wins
        cases.append(torch.tensor([[1.0, 3.0, 3.0, 0.0], [5.0, -INF, 5.0, 2.0]]))
    B, V = r.randint(2, 5), r.randint(20, 60)
    cases += [
        s.randn(B, V, scale=3.0),
        s.randint(-3, 3, B + 1, V).float(),  # many ties, at the top too
        s.randn(1, V),
    ]
    for logits in cases:
        out = s.call(logits)
        expected = ref.greedy_next_token(logits)
        verify(
            s, out, IdsOut((logits.shape[0],), "next ids"), expected, mistakes=_greedy_mistakes()
        )


# ------------------------------------------------------------------------------------------------
# apply_temperature
# ------------------------------------------------------------------------------------------------


def _temperature_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "you multiplied by the temperature; divide: logits / temperature (a low temperature "
            "must sharpen the distribution)",
            lambda x, t: x * t,
        ),
        Mistake(
            "return the scaled logits, not probabilities: the softmax comes later, when sampling",
            lambda x, t: torch.softmax(x / t, -1),
        ),
        Mistake(
            "return the scaled logits, not log-probabilities: just logits / temperature",
            lambda x, t: torch.log_softmax(x / t, -1),
        ),
        Mistake(
            "you used floor division (//); use true division: logits / temperature",
            lambda x, t: torch.div(x, t, rounding_mode="floor"),
        ),
        Mistake("the temperature divides the logits, it is not subtracted", lambda x, t: x - t),
        Mistake(
            "you raised to the power 1/temperature; divide the logits by the temperature "
            "(that is a power of the probabilities, not of the logits)",
            lambda x, t: x ** (1 / t),
        ),
    ]


def grade_apply_temperature(s: Session) -> None:
    s.inplace_hint = (
        "Do not scale the logits in place (logits /= ...); return logits / temperature."
    )
    r = s.rng
    cases: list[tuple[Tensor, float]] = []
    if not s.hidden:
        cases.append((torch.tensor([[2.0, 1.0, -1.0]]), 0.5))
    B, V = r.randint(2, 4), r.randint(10, 40)
    with_inf = s.randn(B, V, scale=2.0)
    with_inf[0, : V // 3] = -INF  # removed tokens stay removed
    cases += [
        (s.randn(B, V, scale=2.0), r.choice([0.3, 0.6, 0.8])),
        (with_inf, r.choice([1.5, 2.0, 3.0])),
        (s.randn(1, V).abs() + 0.5, r.choice([0.7, 1.7])),
    ]
    for logits, t in cases:
        out = s.call(logits, t)
        kind, expected = reference_answer(
            TensorOut(tuple(logits.shape), "float", rtol=1e-5, atol=1e-6, what="logits"),
            lambda x, t=t: ref.apply_temperature(x, t),
            logits,
        )
        verify(s, out, kind, expected, mistakes=_temperature_mistakes())


# ------------------------------------------------------------------------------------------------
# top_k_filter
# ------------------------------------------------------------------------------------------------


def _top_k_by_index(x: Tensor, k: int, fill: float = -INF) -> Tensor:
    idx = torch.topk(x, min(k, x.shape[-1]), dim=-1).indices
    keep = torch.zeros_like(x, dtype=torch.bool).scatter(-1, idx, True)
    return x.masked_fill(~keep, fill)


def _kth(x: Tensor, k: int) -> Tensor:
    return torch.topk(x, min(k, x.shape[-1]), dim=-1).values[..., -1:]


def _top_k_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "you kept k - 1 tokens: the k-th largest logit itself stays (you used logits <= kth?); "
            "remove only the logits strictly below it (logits < kth)",
            lambda x, k: x.masked_fill(x <= _kth(x, k), -INF),
        ),
        Mistake(
            "you kept k - 1 tokens: the threshold is the k-th largest value, "
            "torch.topk(logits, k).values[..., -1:]",
            lambda x, k: x.masked_fill(x < _kth(x, k - 1), -INF) if k > 1 else x,
        ),
        Mistake(
            "you kept k + 1 tokens: the threshold is the k-th largest value, "
            "torch.topk(logits, k).values[..., -1:] (index -1 of the top k, not index k)",
            lambda x, k: x.masked_fill(x < _kth(x, k + 1), -INF),
        ),
        Mistake(
            "ties with the k-th largest logit must all be kept (as Hugging Face's "
            "TopKLogitsWarper does): remove the logits strictly below the k-th largest value "
            "instead of keeping exactly the k indices topk returns",
            _top_k_by_index,
        ),
        Mistake(
            "removed tokens must be -inf, not 0: fill with float('-inf')",
            lambda x, k: x.masked_fill(x < _kth(x, k), 0.0),
        ),
        Mistake(
            "you kept the k smallest logits; keep the k largest (torch.topk's default, largest=True)",
            lambda x, k: x.masked_fill(x > -_kth(-x, k), -INF),
        ),
        Mistake(
            "you took the top k over the batch (dim 0); take it over the vocabulary (dim=-1)",
            lambda x, k: x.masked_fill(x < torch.topk(x, k, dim=0).values[-1:], -INF),
        ),
    ]


def _force_tie(x: Tensor, k: int) -> Tensor:
    """Make row 0's (k+1)-th largest value equal to its k-th: a tie at the boundary."""
    x = x.clone()
    order = x[0].argsort(descending=True)
    x[0, order[k]] = x[0, order[k - 1]]
    return x


def grade_top_k_filter(s: Session) -> None:
    s.inplace_hint = "Build a new tensor (logits.masked_fill(...)), not logits[...] = ... in place."
    s.error_hints = [
        (
            "selected index k out of range",
            "k may be larger than the vocabulary (then every token stays): use "
            "min(k, logits.size(-1)) in torch.topk",
        ),
    ]
    r = s.rng
    cases: list[tuple[Tensor, int]] = []
    if not s.hidden:
        cases.append((torch.tensor([[1.0, 3.0, 2.0, 3.0, 0.0]]), 2))
    B, V = r.randint(2, 4), r.randint(12, 30)
    k = r.randint(2, V // 2)
    with_inf = s.randn(B, V, scale=2.0)
    with_inf[-1, :3] = -INF
    cases += [
        (_force_tie(s.randn(B, V, scale=2.0), k), k),
        (s.randint(-4, 4, B, V).float(), r.randint(2, 5)),  # many ties
        (with_inf, 1),
        (s.randn(B, V), V + r.randint(0, 5)),  # k >= V keeps everything
    ]
    for logits, k in cases:
        out = s.call(logits, k)
        expected = ref.top_k_filter(logits, k)
        verify(
            s,
            out,
            TensorOut(tuple(logits.shape), "float", exact=True, what="filtered logits"),
            expected,
            mistakes=_top_k_mistakes(),
            properties=[_fill_property(expected)],
        )


# ------------------------------------------------------------------------------------------------
# top_p_filter
# ------------------------------------------------------------------------------------------------


def _nucleus(
    x: Tensor,
    p: float,
    *,
    cross: bool = True,
    descending: bool = True,
    probs: bool = True,
    unsort: bool = True,
    fill: float = -INF,
) -> Tensor:
    """Top-p with switches for the classic mistakes (all defaults: the right answer)."""
    scores = torch.softmax(x, -1) if probs else x
    sorted_scores, order = torch.sort(scores, dim=-1, descending=descending)
    cum = sorted_scores.cumsum(-1)
    keep_sorted = (cum - sorted_scores < p) if cross else (cum <= p)
    if cross:
        keep_sorted[..., 0] = True
    if unsort:
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    else:
        keep = keep_sorted
    return x.masked_fill(~keep, fill)


def _top_p_mistakes() -> list[Mistake]:
    m = mistake_maker(_nucleus)

    return [
        m(
            "you removed the token whose probability makes the running sum reach p; the nucleus "
            "is the smallest set whose mass is >= p, so that token stays (keep a token when the "
            "mass *before* it is < p)",
            cross=False,
        ),
        m(
            "sort the probabilities in descending order (most likely first) before the "
            "cumulative sum: torch.sort(probs, descending=True)",
            descending=False,
        ),
        m(
            "the cumulative sum must run over probabilities (softmax of the logits), not over "
            "the logits themselves",
            probs=False,
        ),
        m(
            "your mask is in sorted order: map it back to the vocabulary order with the sort "
            "indices (mask.scatter(-1, sorted_indices, sorted_mask))",
            unsort=False,
        ),
        m("removed tokens must be -inf, not 0: fill with float('-inf')", fill=0.0),
        Mistake(
            "you kept the unlikely tail and removed the nucleus; keep the most likely tokens, "
            "up to and including the one whose probability makes the sum reach p",
            lambda x, p: x.masked_fill(_nucleus(x, p) != -INF, -INF),
        ),
    ]


def _p_is_safe(x: Tensor, p: float, margin: float = 0.01) -> bool:
    """No running sum (from the top) within ``margin`` of p: summing from the top or from the
    tail, and float rounding, all keep the same tokens."""
    probs = torch.softmax(x.double(), -1).sort(-1, descending=True).values
    return bool(((probs.cumsum(-1) - p).abs() > margin).all())


def _top_p_case(s: Session, B: int, V: int, scale: float) -> tuple[Tensor, float]:
    for _ in range(100):
        x = s.randn(B, V, scale=scale)
        p = s.rng.choice([0.3, 0.5, 0.7, 0.8, 0.9, 0.95])
        if _p_is_safe(x, p):
            return x, p
    raise RuntimeError("no safe top-p case found")  # never seen: the grader itself is broken


def grade_top_p_filter(s: Session) -> None:
    s.inplace_hint = "Build a new tensor (logits.masked_fill(...)), not logits[...] = ... in place."
    r = s.rng
    B, V = r.randint(2, 4), r.randint(12, 30)
    cases = [_top_p_case(s, B, V, 2.0), _top_p_case(s, B, V, 1.0), _top_p_case(s, 1, V, 4.0)]
    x, p = _top_p_case(s, B, V, 2.0)
    x[0, : V // 4] = -INF  # already removed tokens stay removed
    if _p_is_safe(x, p):
        cases.append((x, p))
    if not s.hidden:  # probabilities 0.5, 0.3, 0.2 and p = 0.7: the first two stay
        cases.append((torch.tensor([[0.5, 0.3, 0.2]]).log(), 0.7))
    for logits, p in cases:
        out = s.call(logits, p)
        expected = ref.top_p_filter(logits, p)

        def keeps_one(value: Tensor, expected: Tensor = expected) -> str | None:
            if value.shape == expected.shape and (value == -INF).all(-1).any():
                return (
                    "a row of your output has every token removed: the nucleus always keeps at "
                    "least the most likely token (the one that crosses p)"
                )
            return None

        verify(
            s,
            out,
            TensorOut(tuple(logits.shape), "float", exact=True, what="filtered logits"),
            expected,
            mistakes=_top_p_mistakes(),
            properties=[_fill_property(expected), keeps_one],
        )


# ------------------------------------------------------------------------------------------------
# apply_repetition_penalty
# ------------------------------------------------------------------------------------------------


def _seen(ids: Tensor, V: int) -> Tensor:
    return torch.zeros(ids.shape[0], V, dtype=torch.bool).scatter(1, ids, True)


def _penalty_mistakes() -> list[Mistake]:
    def always_divide(ids: Tensor, x: Tensor, p: float) -> Tensor:
        return torch.where(_seen(ids, x.shape[-1]), x / p, x)

    def inverted(ids: Tensor, x: Tensor, p: float) -> Tensor:
        return torch.where(_seen(ids, x.shape[-1]), torch.where(x < 0, x / p, x * p), x)

    def per_occurrence(ids: Tensor, x: Tensor, p: float) -> Tensor:
        x = x.clone()
        for b in range(ids.shape[0]):
            for t in ids[b].tolist():
                x[b, t] = x[b, t] * p if x[b, t] < 0 else x[b, t] / p
        return x

    def unseen(ids: Tensor, x: Tensor, p: float) -> Tensor:
        return torch.where(~_seen(ids, x.shape[-1]), torch.where(x < 0, x * p, x / p), x)

    def first_row(ids: Tensor, x: Tensor, p: float) -> Tensor:
        return ref.apply_repetition_penalty(ids[:1].expand_as(ids), x, p)

    def subtract(ids: Tensor, x: Tensor, p: float) -> Tensor:
        return torch.where(_seen(ids, x.shape[-1]), x - p, x)

    def everything(ids: Tensor, x: Tensor, p: float) -> Tensor:
        return torch.where(x < 0, x * p, x / p)

    return [
        Mistake(
            "you divided every seen logit by the penalty: dividing a negative logit makes it "
            "larger (more likely). Divide positive logits, multiply negative ones by the penalty",
            always_divide,
        ),
        Mistake(
            "you multiplied positive logits and divided negative ones: the other way round "
            "(positive / penalty, negative * penalty), so a penalty > 1 always lowers them",
            inverted,
        ),
        Mistake(
            "you penalised a token once per occurrence; penalise each seen token once, however "
            "often it appears (gather the logits of the ids, penalise, scatter them back)",
            per_occurrence,
        ),
        Mistake(
            "you penalised the tokens that do NOT appear in input_ids; penalise the ones that do",
            unseen,
        ),
        Mistake(
            "every row of input_ids has its own tokens: penalise row b's logits with the ids of "
            "row b only (torch.gather / scatter along dim 1)",
            first_row,
        ),
        Mistake(
            "the penalty divides (positive) or multiplies (negative) the logit; it is not "
            "subtracted",
            subtract,
        ),
        Mistake(
            "you penalised every token; only tokens that appear in input_ids are penalised",
            everything,
        ),
    ]


def grade_apply_repetition_penalty(s: Session) -> None:
    s.inplace_hint = "Work on a copy (logits.clone()) or build a new tensor with torch.where."
    r = s.rng
    cases: list[tuple[Tensor, Tensor, float]] = []
    if not s.hidden:
        cases.append((torch.tensor([[0, 1, 1]]), torch.tensor([[2.0, -2.0, 2.0]]), 2.0))
    B, V = r.randint(2, 4), r.randint(10, 25)
    T = r.randint(5, 9)
    cases += [
        (s.randint(0, V, B, T), s.randn(B, V, scale=2.0), r.choice([1.2, 1.5, 2.0])),
        (s.randint(0, V // 2, B, T + 4), s.randn(B, V, scale=2.0), r.choice([1.3, 3.0])),
        (s.randint(0, V, B, T), s.randn(B, V, scale=2.0), r.choice([0.5, 0.8])),  # encourages
    ]
    for ids, logits, penalty in cases:
        out = s.call(ids, logits, penalty)
        kind, expected = reference_answer(
            TensorOut(tuple(logits.shape), "float", rtol=1e-5, atol=1e-6, what="logits"),
            lambda i, x, p=penalty: ref.apply_repetition_penalty(i, x, p),
            ids,
            logits,
        )
        verify(s, out, kind, expected, mistakes=_penalty_mistakes())


# ------------------------------------------------------------------------------------------------
# sample_next_token
# ------------------------------------------------------------------------------------------------


def _gen(spec: dict) -> torch.Generator:
    return torch.Generator().manual_seed(int(spec["seed"]))


def _sample_mistakes() -> list[Mistake]:
    def draw(probs: Tensor, spec: dict) -> Tensor:
        return torch.multinomial(probs, 1, generator=_gen(spec))[:, 0]

    return [
        Mistake(
            "you took the most likely token (argmax); sample it: "
            "torch.multinomial(softmax(logits, -1), 1, generator=generator)",
            lambda x, spec: x.argmax(-1),
        ),
        Mistake(
            "you returned shape (B, 1); return (B,): torch.multinomial(...)[:, 0] (or squeeze(1))",
            lambda x, spec: torch.multinomial(torch.softmax(x, -1), 1, generator=_gen(spec)),
        ),
        Mistake(
            "softmax over the batch (dim 0); the distribution is over the vocabulary: dim=-1",
            lambda x, spec: draw(torch.softmax(x, 0), spec),
        ),
        Mistake(
            "you sampled from softmax(logits) with the temperature or a filter applied again; "
            "sample from softmax(logits) exactly",
            lambda x, spec: draw(torch.softmax(x / 2, -1), spec),
        ),
    ]


def grade_sample_next_token(s: Session) -> None:
    s.inplace_hint = "Read logits only; do not modify them."
    s.error_hints = [
        (
            "invalid multinomial distribution",
            "torch.multinomial needs probabilities (>= 0): take softmax(logits, dim=-1) first",
        ),
        (
            "element < 0",
            "torch.multinomial needs probabilities (>= 0): take softmax(logits, dim=-1) first",
        ),
        (
            "prob_dist must be 1 or 2 dim",
            "give torch.multinomial the (B, V) probabilities, one row per sequence",
        ),
    ]
    r = s.rng
    B, V = r.randint(3, 6), r.randint(8, 30)
    removed = s.randn(B, V, scale=2.0)
    removed[:, : V // 2] = -INF  # filtered tokens must never come out
    cases = [s.randn(B, V, scale=1.5), removed, s.randn(B + 2, V, scale=0.5)]
    for i, logits in enumerate(cases):
        seed = r.randrange(2**31)
        args = (logits, generator_arg(seed))
        out = s.call(*args)
        if i == 0:
            s.expect_repeatable(out, args)

        def possible(value: Tensor, logits: Tensor = logits) -> str | None:
            if value.shape != (logits.shape[0],):
                return None
            if ((value < 0) | (value >= logits.shape[-1])).any():
                return f"an id of yours is outside [0, {logits.shape[-1]})"
            picked = logits.gather(1, value.long()[:, None].clamp(0, logits.shape[-1] - 1))
            if (picked == -INF).any():
                return (
                    "you drew a token whose logit is -inf (probability 0): sample from "
                    "softmax(logits, dim=-1), which gives those tokens probability exactly 0"
                )
            return None

        expected = ref.sample_next_token(logits, torch.Generator().manual_seed(seed))
        verify(
            s,
            out,
            IdsOut((logits.shape[0],), "sampled ids"),
            expected,
            mistakes=_sample_mistakes(),
            properties=[possible],
        )


# ------------------------------------------------------------------------------------------------
# generate and generate_cached: a small seeded GPT on both sides
# ------------------------------------------------------------------------------------------------


_MODELS: dict[tuple, Any] = {}


def _model(spec: dict):
    """The referee's copy of the model of ``spec`` (built once per recipe; weights never change)."""
    key = (repr(sorted(spec["config"].items())), spec["seed"], spec["scale"])
    if key not in _MODELS:
        if len(_MODELS) > 16:
            _MODELS.clear()
        _MODELS[key] = build_model(spec)
    return _MODELS[key]


def _model_spec(s: Session) -> dict:
    config = {
        "vocab_size": s.rng.randint(40, 64),
        "n_positions": 128,
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "tie_word_embeddings": False,
    }
    return model_arg(config, s.rng.randrange(2**31), scale=20.0)


def _processed(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    order: str = "tkp",
    t_multiplies: bool = False,
) -> Tensor:
    for step in order:
        if step == "t" and temperature != 1.0:
            logits = logits * temperature if t_multiplies else logits / temperature
        elif step == "k" and top_k is not None:
            logits = ref.top_k_filter(logits, top_k)
        elif step == "p" and top_p is not None:
            logits = ref.top_p_filter(logits, top_p)
    return logits


@torch.no_grad()
def _decode(
    model,
    ids: Tensor,
    n: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: dict | None = None,
    *,
    position: int = -1,
    append: bool = True,
    order: str = "tkp",
    t_multiplies: bool = False,
    sample: bool | None = None,
    new_only: bool = False,
    window: int | None = None,
) -> Tensor:
    """A decoding loop with switches for the classic mistakes (defaults: the right answer)."""
    gen = _gen(generator) if generator is not None else None
    seq = ids
    new = []
    for _ in range(n):
        inp = seq if append else ids
        if window is not None:
            inp = inp[:, -window:]
        logits = model(inp).logits[:, position, :].float()
        draw = do_sample if sample is None else sample
        if do_sample:
            logits = _processed(logits, temperature, top_k, top_p, order, t_multiplies)
        if draw:
            token = torch.multinomial(F.softmax(logits, -1), 1, generator=gen)[:, 0]
        else:
            token = logits.argmax(-1)
        new.append(token)
        seq = torch.cat([seq, token[:, None]], dim=1)
    out = torch.stack(new, 1) if new else ids[:, :0]
    return out if new_only else torch.cat([ids, out], dim=1)


def _generate_mistakes() -> list[Mistake]:
    def m(message: str, **flags: Any) -> Mistake:
        def compute(model_spec, ids, n, *rest):
            return _decode(_model(model_spec), ids, n, *rest, **flags)

        return Mistake(message, compute)

    return [
        m(
            "you used the logits of the first position; the next token is predicted by the "
            "last one: out.logits[:, -1, :]",
            position=0,
        ),
        m(
            "you never feed the new tokens back: each step must run the model on the sequence "
            "so far, with the tokens generated so far appended (torch.cat([ids, next[:, None]], "
            "dim=1))",
            append=False,
        ),
        m(
            "apply the processors in Hugging Face's order: temperature first, then top-k, then "
            "top-p (top-p on the temperature-scaled distribution)",
            order="kpt",
        ),
        m(
            "apply the processors in Hugging Face's order: temperature, then top-k, then top-p "
            "(you applied top-p before top-k)",
            order="tpk",
        ),
        m(
            "apply the processors in Hugging Face's order: temperature first, then top-k, then "
            "top-p",
            order="ptk",
        ),
        m("divide the logits by the temperature, do not multiply", t_multiplies=True),
        m(
            "with do_sample=True draw the token with torch.multinomial(softmax(logits), 1, "
            "generator=generator); you took the argmax",
            sample=False,
        ),
        m(
            "return the prompt followed by the new tokens: (B, T + max_new_tokens), "
            "torch.cat([input_ids, new_tokens], dim=1)",
            new_only=True,
        ),
    ]


def _safe_margins(
    model,
    ids: Tensor,
    n: int,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int | None,
) -> bool:
    """Whether float rounding (another CPU, thread count or summation order) cannot change the
    reference's choices on this case: clear argmax gaps, no top-k boundary within 1e-4, no
    top-p running sum within 1e-4 of p (float32 drift is about 1e-6)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    seq = ids
    with torch.no_grad():
        for _ in range(n):
            logits = model(seq).logits[:, -1, :].float()
            if do_sample:
                scaled = logits / temperature
                if top_k is not None and top_k < scaled.shape[-1]:
                    top = scaled.topk(top_k + 1, -1).values
                    if ((top[:, -2] - top[:, -1]).abs() < 1e-4).any():  # a near tie at k
                        return False
                    scaled = ref.top_k_filter(scaled, top_k)
                if top_p is not None and not _p_is_safe(scaled, top_p, 1e-4):
                    return False
                processed = _processed(logits, temperature, top_k, top_p)
                token = torch.multinomial(F.softmax(processed, -1), 1, generator=gen)[:, 0]
            else:
                top = logits.topk(2, -1).values
                if ((top[:, 0] - top[:, 1]) < 1e-4).any():
                    return False
                token = logits.argmax(-1)
            seq = torch.cat([seq, token[:, None]], dim=1)
    return True


def _generate_cases(s: Session, settings: list[dict]) -> list[tuple]:
    """(model_spec, ids, n, do_sample, temperature, top_k, top_p, generator spec) per setting."""
    cases = []
    for setting in settings:
        for _ in range(50):
            spec = _model_spec(s)
            V = spec["config"]["vocab_size"]
            B, T = setting.get("B", s.rng.randint(1, 3)), s.rng.randint(2, 6)
            n = setting.get("n", s.rng.randint(4, 7))
            ids = s.randint(0, V, B, T)
            do_sample = setting.get("do_sample", False)
            seed = s.rng.randrange(2**31) if do_sample else None
            t, k, p = setting.get("temperature", 1.0), setting.get("top_k"), setting.get("top_p")
            if _safe_margins(_model(spec), ids, n, do_sample, t, k, p, seed):
                break
        else:  # pragma: no cover - never seen
            raise RuntimeError("no case with safe margins found")
        gen = generator_arg(seed) if seed is not None else None
        cases.append((spec, ids, n, do_sample, t, k, p, gen))
    return cases


def _calls(out: Outcome) -> list[dict]:
    after = out.args_after[0] if out.args_after else None
    return list(after.get("calls", [])) if isinstance(after, dict) else []


def _expected_ids(spec: dict, ids: Tensor, n: int, do_sample: bool, t: float, k, p, gen) -> Tensor:
    model = _model(spec)
    if not do_sample:
        return ref.generate(model, ids, n, use_cache=False)
    return ref.generate(
        model,
        ids,
        n,
        do_sample=True,
        temperature=t,
        top_k=k,
        top_p=p,
        use_cache=False,
        generator=_gen(gen),
    )


def grade_generate(s: Session) -> None:
    s.inplace_hint = (
        "Build the sequence with torch.cat into a new tensor; leave input_ids as it is."
    )
    r = s.rng
    settings = [
        {"n": 6},  # greedy
        {"do_sample": True, "B": 2},
        {"do_sample": True, "temperature": r.choice([0.6, 0.8]), "top_k": r.randint(5, 12)},
        {"do_sample": True, "temperature": r.choice([1.3, 1.6]), "top_p": r.choice([0.7, 0.8])},
        {
            "do_sample": True,
            "temperature": 1.5,
            "top_k": r.randint(5, 8),
            "top_p": r.choice([0.5, 0.6]),
        },
    ]
    if s.hidden:
        settings = [settings[0], settings[3], settings[4]]
    for i, case in enumerate(_generate_cases(s, settings)):
        spec, ids, n, do_sample, t, k, p, gen = case
        out = s.call(*case)
        if do_sample and i == 1:
            s.expect_repeatable(out, case)
        calls = _calls(out)

        def feeds_growing(
            value: Tensor, calls: list = calls, T: int = ids.shape[1], n: int = n
        ) -> str | None:
            if n > 1 and calls and all(c["length"] == T and c["past"] == 0 for c in calls):
                return (
                    "every forward pass of your loop received the prompt alone: append each new "
                    "token to the sequence and run the model on the sequence so far"
                )
            return None

        expected = _expected_ids(*case)
        verify(
            s,
            out,
            IdsOut((ids.shape[0], ids.shape[1] + n), "generated ids"),
            expected,
            mistakes=_generate_mistakes(),
            properties=[feeds_growing, _keeps_prompt(ids)],
        )


def _keeps_prompt(ids: Tensor):
    def check(value: Tensor) -> str | None:
        T = ids.shape[1]
        if (
            value.shape[0] == ids.shape[0]
            and value.shape[1] >= T
            and not torch.equal(value[:, :T].long(), ids)
        ):
            return "your output must start with the prompt: return torch.cat([input_ids, new], 1)"
        return None

    return check


def _cache_use(calls: list[dict], T: int, n: int) -> str | None:
    """What is wrong with the forwards of a KV-cache loop, or None."""
    if not calls:
        return "your generate_cached never called the model"
    first = calls[0]
    if first["length"] != T:
        return (
            f"your first forward received {first['length']} tokens; feed the whole prompt "
            f"({T} tokens) once, with use_cache=True, and keep out.past_key_values"
        )
    for i, c in enumerate(calls[1:], start=1):
        if c["past"] == 0 and c["length"] > 1:
            return (
                "you recompute the whole sequence at every step: after the prompt, feed only the "
                "newest token, input_ids=next_token[:, None], with past_key_values="
                "out.past_key_values (the cache holds the keys and values of everything before)"
            )
        if c["past"] == 0:
            return (
                f"forward {i + 1} received one token but no cache: pass past_key_values="
                "out.past_key_values from the previous forward (and use_cache=True on the prompt)"
            )
        if c["length"] != 1:
            return (
                f"forward {i + 1} received {c['length']} tokens with a cache of {c['past']}: the "
                "cache already holds those positions, so feed only the newest token "
                "(next_token[:, None])"
            )
        if c["past"] != T + i - 1:
            return (
                f"forward {i + 1} was given a cache of {c['past']} positions, expected {T + i - 1}:"
                " pass the cache returned by the previous forward (out.past_key_values)"
            )
    if len(calls) > n + 1:
        return (
            f"your loop ran the model {len(calls)} times for max_new_tokens={n}; one forward "
            "per new token is enough"
        )
    return None


@torch.no_grad()
def _decode_cached_first_position(spec: dict, ids: Tensor, n: int) -> Tensor:
    """A KV-cache loop that reads position 0: wrong for the prompt's forward only."""
    model = _model(spec)
    out = model(ids, use_cache=True)
    seq = ids
    for _ in range(n):
        token = out.logits[:, 0, :].argmax(-1, keepdim=True)
        seq = torch.cat([seq, token], dim=1)
        out = model(token, past_key_values=out.past_key_values, use_cache=True)
    return seq


def _cached_mistakes() -> list[Mistake]:
    def m(message: str, **flags: Any) -> Mistake:
        return Mistake(message, lambda spec, ids, n: _decode(_model(spec), ids, n, **flags))

    return [
        Mistake(
            "you used the logits of the first position; the next token comes from the last one: "
            "out.logits[:, -1, :]",
            _decode_cached_first_position,
        ),
        m(
            "return the prompt followed by the new tokens: (B, T + max_new_tokens)",
            new_only=True,
        ),
        Mistake(
            "you generated one token too few: the prompt's forward already gives the first "
            "new token, then max_new_tokens - 1 more forwards",
            lambda spec, ids, n: _decode(_model(spec), ids, n - 1) if n > 1 else ids,
        ),
    ]


def grade_generate_cached(s: Session) -> None:
    s.inplace_hint = (
        "Build the sequence with torch.cat into a new tensor; leave input_ids as it is."
    )
    settings = [{"n": 7}, {"B": 2}, {"B": 1, "n": 9}]
    if s.hidden:
        settings = settings[1:]
    for case in _generate_cases(s, settings):
        spec, ids, n = case[:3]
        out = s.call(spec, ids, n)
        calls = _calls(out)
        T = ids.shape[1]

        def cache_use(value: Tensor, calls: list = calls, T: int = T, n: int = n) -> str | None:
            return _cache_use(calls, T, n)

        expected = ref.generate(_model(spec), ids, n)
        verify(
            s,
            out,
            IdsOut((ids.shape[0], T + n), "generated ids"),
            expected,
            mistakes=_cached_mistakes(),
            properties=[_keeps_prompt(ids), cache_use],
        )
