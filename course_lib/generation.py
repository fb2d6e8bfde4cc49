"""Generating text with a causal LM: logits processors, greedy, sampling, beam search, KV cache.

Decoding is a loop: run the model, take the logits of the last position, pass them through a
pipeline of *processors* (pure functions ``(input_ids, logits) -> logits``, applied in a
fixed order), pick the next token, append it, repeat. The processors and their order are
those of Hugging Face ``generate``, so :func:`generate` equals ``model.generate`` token for
token:

1. repetition penalty (:func:`apply_repetition_penalty`), always;
2. then, only when sampling: temperature, top-k, top-p.

:func:`generate` works for any model called as ``model(input_ids=..., past_key_values=...,
use_cache=...)`` that returns ``.logits`` (B, T, V) and ``.past_key_values``: our
:class:`course_lib.gpt.GPT` and :class:`course_lib.llama.Llama` (whose cache is a
:class:`course_lib.attention.KVCache`) and Hugging Face causal LMs (a ``DynamicCache``).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Processor = Callable[[Tensor, Tensor], Tensor]
"""A logits processor: ``(input_ids (B, T), logits (B, V)) -> logits (B, V)``."""

NEG = -1.0e9  # "impossible" score in beam search: finite, so sums and divisions stay finite


# --------------------------------------------------------------------------------------------
# Processors: (input_ids, logits) -> logits
# --------------------------------------------------------------------------------------------


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Divide the logits by ``temperature``: < 1 sharpens the distribution, > 1 flattens it.

    Args:
        logits: (B, V) scores.
        temperature: > 0.

    Returns:
        (B, V) scaled logits.

    Example:
        >>> apply_temperature(torch.tensor([[2.0, 1.0]]), 0.5)
        tensor([[4., 2.]])
    """
    _check_temperature(temperature)
    return logits / temperature


def top_k_filter(logits: Tensor, k: int, min_tokens_to_keep: int = 1) -> Tensor:
    """Keep the ``k`` largest logits of each row, set the rest to ``-inf``.

    Ties with the k-th largest value are all kept (so a row may keep more than k tokens).

    Args:
        logits: (B, V) scores.
        k: number of tokens to keep, >= 1 (larger than V keeps everything).
        min_tokens_to_keep: keep at least this many (beam sampling needs 2).

    Returns:
        (B, V) logits with all but the top k at ``-inf``.

    Example:
        >>> top_k_filter(torch.tensor([[1.0, 3.0, 2.0, 3.0]]), 2)
        tensor([[-inf, 3., -inf, 3.]])
    """
    _check_top_k(k)
    k = min(max(k, min_tokens_to_keep), logits.size(-1))
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: Tensor, p: float, min_tokens_to_keep: int = 1) -> Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability is >= p.

    Sort the tokens from least to most likely and drop the longest run of unlikely tokens
    whose total probability is at most ``1 - p``; the rest (the "nucleus") is kept.

    Args:
        logits: (B, V) scores.
        p: probability mass to keep, in (0, 1].
        min_tokens_to_keep: keep at least this many of the most likely tokens.

    Returns:
        (B, V) logits with the tokens outside the nucleus at ``-inf``.

    Example: probabilities (0.5, 0.3, 0.2) and p = 0.7 keep the first two (0.5 < 0.7 <= 0.8).
    """
    _check_top_p(p)
    sorted_logits, order = torch.sort(logits, dim=-1)  # ascending: least likely first
    tail_mass = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # mass of this token and all below
    drop_sorted = tail_mass <= 1 - p
    drop_sorted[..., -min_tokens_to_keep:] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def apply_repetition_penalty(input_ids: Tensor, logits: Tensor, penalty: float) -> Tensor:
    """Make every token that already appears in ``input_ids`` less likely (CTRL's penalty).

    A seen token's logit is divided by ``penalty`` when positive and multiplied by it when
    negative, so with ``penalty > 1`` it always moves down. Each token is penalised once,
    however often it appeared. Ids outside the logits' vocabulary are ignored.

    Args:
        input_ids: (B, T) the tokens so far (prompt included).
        logits: (B, V) scores for the next token.
        penalty: > 0; 1 does nothing, > 1 discourages repeats, < 1 encourages them.

    Returns:
        (B, V) penalised logits.

    Example:
        >>> apply_repetition_penalty(torch.tensor([[0, 1, 1]]), torch.tensor([[2.0, -2.0, 2.0]]), 2.0)
        tensor([[ 1., -4.,  2.]])
    """
    _check_positive_float("repetition_penalty", penalty)
    if input_ids.dim() != 2 or logits.dim() != 2 or input_ids.size(0) != logits.size(0):
        raise ValueError(
            f"need input_ids (B, T) and logits (B, V) with the same B, got "
            f"{tuple(input_ids.shape)} and {tuple(logits.shape)}"
        )
    V = logits.size(-1)
    seen = torch.zeros(logits.size(0), V + 1, dtype=torch.bool, device=logits.device)
    seen.scatter_(1, input_ids.clamp(min=0, max=V), True)  # id >= V lands in the extra column
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen[:, :V], penalised, logits)


def build_processors(
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    min_tokens_to_keep: int = 1,
) -> list[Processor]:
    """The processor pipeline for these settings, in Hugging Face's order.

    Processors that would do nothing (penalty 1, temperature 1, top_p 1) are left out.

    Returns:
        A list of ``(input_ids, logits) -> logits`` functions, to apply in order.
    """
    processors: list[Processor] = []
    if repetition_penalty != 1.0:
        processors.append(
            lambda ids, logits: apply_repetition_penalty(ids, logits, repetition_penalty)
        )
    if do_sample:
        if temperature != 1.0:
            processors.append(lambda ids, logits: apply_temperature(logits, temperature))
        if top_k is not None:
            processors.append(lambda ids, logits: top_k_filter(logits, top_k, min_tokens_to_keep))
        if top_p is not None and top_p < 1.0:
            processors.append(lambda ids, logits: top_p_filter(logits, top_p, min_tokens_to_keep))
    return processors


def process(processors: Sequence[Processor], input_ids: Tensor, logits: Tensor) -> Tensor:
    """Apply ``processors`` to ``logits`` (B, V) one after the other."""
    for processor in processors:
        logits = processor(input_ids, logits)
    return logits


# --------------------------------------------------------------------------------------------
# Choosing the next token
# --------------------------------------------------------------------------------------------


def greedy_next_token(logits: Tensor) -> Tensor:
    """The most likely next token of each row: logits (B, V) -> ids (B,)."""
    return logits.argmax(dim=-1)


def sample_next_token(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw one token per row from ``softmax(logits)``: logits (B, V) -> ids (B,).

    Uses exactly one ``torch.multinomial`` call, like Hugging Face, so with the same seed both
    draw the same tokens. ``-inf`` logits have probability 0 and are never drawn.
    """
    probs = F.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


# --------------------------------------------------------------------------------------------
# Running the model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallStyle:
    """How to call a model while generating; see :func:`call_style`."""

    cache_arg: str = "past_key_values"  # the keyword (and output attribute) of the KV cache
    logits_to_keep: bool = False  # the model can compute the logits of the last position only


def call_style(model: nn.Module) -> CallStyle:
    """Read from ``model.forward``'s signature how to pass the cache and trim the logits.

    Our models follow the classic Hugging Face name ``past_key_values``; transformers >= 5.2x
    renamed it ``cache`` (the old name still works there, with a deprecation warning). Hugging
    Face models also take ``logits_to_keep=1``: on the prompt, only the last position's logits
    are needed, which saves a (T, C) x (C, V) product (a sizeable one for a 49k vocabulary).
    """
    try:
        parameters = inspect.signature(getattr(model, "forward", model)).parameters
    except (TypeError, ValueError):
        return CallStyle()
    return CallStyle(
        cache_arg="cache" if "cache" in parameters else "past_key_values",
        logits_to_keep="logits_to_keep" in parameters,
    )


def next_token_logits(
    model: nn.Module, input_ids: Tensor, cache, use_cache: bool, style: CallStyle = CallStyle()
):
    """Logits of the last position (B, V) in float32, and the updated cache.

    With a cache, only the tokens the cache has not seen yet are fed to the model (the whole
    prompt on the first call, then one token per step). Without, the whole sequence is
    recomputed every time.

    Args:
        model: the causal LM.
        input_ids: (B, t) the whole sequence so far.
        cache: the cache returned by the previous call, or None.
        use_cache: whether to use (and return) a cache.
        style: how to call the model, see :func:`call_style`.
    """
    kwargs = {"logits_to_keep": 1} if style.logits_to_keep else {}
    if use_cache:
        new = input_ids if cache is None else input_ids[:, cache.get_seq_length() :]
        out = model(input_ids=new, use_cache=True, **{style.cache_arg: cache}, **kwargs)
        cache = getattr(out, style.cache_arg)
    else:
        out = model(input_ids=input_ids, use_cache=False, **kwargs)
    return out.logits[:, -1, :].float(), cache


def reorder_cache(cache, beam_idx: Tensor) -> None:
    """Keep, in place, the cache rows ``beam_idx`` (B*K,): row i becomes old row beam_idx[i].

    Works for our KVCache (``reorder``) and Hugging Face caches (``reorder_cache``).
    """
    if hasattr(cache, "reorder"):
        cache.reorder(beam_idx)
    elif hasattr(cache, "reorder_cache"):
        cache.reorder_cache(beam_idx)
    else:
        raise TypeError(
            f"cannot reorder a {type(cache).__name__} for beam search: pass use_cache=False"
        )


# --------------------------------------------------------------------------------------------
# Decoding strategies
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def greedy_or_sample(
    model: nn.Module,
    input_ids: Tensor,
    max_new_tokens: int,
    processors: Sequence[Processor],
    *,
    do_sample: bool = False,
    eos_token_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Decode one token at a time: the argmax (greedy) or a draw (sampling) of the processed logits.

    A sequence that has emitted ``eos_token_id`` is finished: it is padded with that id while
    the others go on; decoding stops when all are finished.

    Args: as :func:`generate`, with the processors already built.

    Returns:
        (B, T + n) ids, n <= max_new_tokens.
    """
    B, T = input_ids.shape
    out = torch.empty(B, T + max_new_tokens, dtype=torch.long, device=input_ids.device)
    out[:, :T] = input_ids
    finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    cache, style = None, call_style(model)
    for t in range(T, T + max_new_tokens):
        ids = out[:, :t]
        logits, cache = next_token_logits(model, ids, cache, use_cache, style)
        logits = process(processors, ids, logits)
        token = sample_next_token(logits, generator) if do_sample else greedy_next_token(logits)
        if eos_token_id is not None:
            token = token.masked_fill(finished, eos_token_id)  # finished rows only pad
            finished |= token == eos_token_id
        out[:, t] = token
        if eos_token_id is not None and bool(finished.all()):
            return out[:, : t + 1]
    return out


@torch.no_grad()
def beam_search_simple(
    model: nn.Module,
    prompt_ids: list[int],
    num_beams: int,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    length_penalty: float = 1.0,
) -> list[int]:
    """Beam search for one prompt, with plain lists: the algorithm of :func:`beam_search`.

    No batch, no KV cache, no processors: each beam is re-run through the model every step.
    It keeps the same rules as :func:`beam_search` (and Hugging Face), so it returns the same
    tokens (``tests/test_beam_search_simple.py``):

    - the running beams propose their next tokens; the ``2 * num_beams`` best (beam + token)
      candidates by summed log-probability are kept, best first;
    - a candidate ending in EOS (or at the last step) is finished when it ranks among the first
      ``num_beams``; its score is ``sum_logprob / new_tokens ** length_penalty``;
    - the best ``num_beams`` unfinished candidates are the next running beams;
    - stop once ``num_beams`` sequences are finished and the best running beam, scored at its
      current length, cannot beat the worst of them.

    Returns:
        The best finished sequence, prompt included.
    """
    device = next(model.parameters()).device
    beams = [(0.0, list(prompt_ids))]  # (sum of log-probs, ids); one beam until there are more
    finished: list[tuple[float, list[int]]] = []  # (length-normalised score, ids)
    for step in range(1, max_new_tokens + 1):
        candidates = []
        for score, ids in beams:
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1]
            logprobs = F.log_softmax(logits.float(), dim=-1)
            top = torch.topk(logprobs, 2 * num_beams)  # no other token can make the top 2K
            for logprob, token in zip(top.values.tolist(), top.indices.tolist()):
                candidates.append((score + logprob, ids + [token]))
        candidates = sorted(candidates, key=lambda c: c[0], reverse=True)[: 2 * num_beams]
        beams = []
        for rank, (score, ids) in enumerate(candidates):
            if ids[-1] == eos_token_id or step == max_new_tokens:
                if rank < num_beams:
                    finished.append((score / step**length_penalty, ids))
            elif len(beams) < num_beams:
                beams.append((score, ids))
        finished = sorted(finished, key=lambda f: f[0], reverse=True)[:num_beams]
        if not beams:  # the last step finishes every candidate
            break
        if len(finished) == num_beams and beams[0][0] / step**length_penalty <= finished[-1][0]:
            break
    return finished[0][1] if finished else list(prompt_ids)


@torch.no_grad()
def beam_search(
    model: nn.Module,
    input_ids: Tensor,
    max_new_tokens: int,
    num_beams: int,
    processors: Sequence[Processor] = (),
    *,
    eos_token_id: int | None = None,
    length_penalty: float = 1.0,
    do_sample: bool = False,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Beam search: keep the ``num_beams`` best partial sequences by total log-probability.

    Follows Hugging Face's algorithm (``early_stopping=False``) so that the result is the same:

    - every step, each of the K running beams proposes all V next tokens; the 2K best
      (beam, token) candidates by summed log-probability are kept;
    - a candidate that ends in EOS, or reaches the length limit, is *finished*: if it is among
      the first K candidates it competes for the K finished slots, with score
      ``sum_logprob / generated_length ** length_penalty``;
    - the best K unfinished candidates become the next running beams;
    - a prompt is done once its K finished slots are full and the best running beam, scored
      at its current length, cannot beat the worst finished one.

    Args:
        model, input_ids, max_new_tokens, eos_token_id, use_cache, generator: as :func:`generate`.
        num_beams: K, beams per prompt.
        processors: applied to the log-probabilities (B*K, V) every step.
        length_penalty: exponent of the length normalisation of finished scores.
        do_sample: draw the 2K candidates from softmax(total scores) instead of the top 2K.

    Returns:
        (B, T + n) the best finished sequence of each prompt; shorter ones padded with
        ``eos_token_id``.
    """
    _check_input_ids(input_ids)
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an int >= 1, got {num_beams!r}")
    if max_new_tokens <= 0:
        return input_ids.clone()
    B, T = input_ids.shape
    K = num_beams
    n_cand = 2 * K
    max_len = T + max_new_tokens
    device = input_ids.device
    rows = torch.arange(B, device=device)[:, None]  # (B, 1), for indexing (B, *) tensors
    pad = eos_token_id if eos_token_id is not None else 0

    running = input_ids.repeat_interleave(K, dim=0).view(B, K, T)  # (B, K, t)
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = NEG  # all beams start equal: let only the first one propose
    done_seqs = torch.full((B, K, max_len), pad, dtype=torch.long, device=device)
    done_lens = torch.full((B, K), T, dtype=torch.long, device=device)
    done_scores = torch.full((B, K), NEG, device=device)
    done_filled = torch.zeros(B, K, dtype=torch.bool, device=device)
    can_improve = torch.ones(B, 1, dtype=torch.bool, device=device)
    cache, style = None, call_style(model)

    for t in range(T, max_len):
        flat = running.reshape(B * K, t)
        logits, cache = next_token_logits(model, flat, cache, use_cache, style)
        logprobs = process(processors, flat, F.log_softmax(logits, dim=-1))  # (B*K, V)
        V = logprobs.size(-1)
        total = (logprobs.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)

        # 1. the 2K best (beam, token) candidates of each prompt, best first
        if do_sample:
            picks = torch.multinomial(F.softmax(total, dim=-1), n_cand, generator=generator)
            cand_scores, order = total.gather(1, picks).sort(dim=-1, descending=True)
            picks = picks.gather(1, order)
        else:
            cand_scores, picks = torch.topk(total, n_cand, dim=-1)  # (B, 2K)
        cand_beam, cand_token = picks // V, picks % V
        cand_seqs = torch.cat([running[rows, cand_beam], cand_token[..., None]], dim=-1)
        ends = (
            cand_token == eos_token_id
            if eos_token_id is not None
            else torch.zeros_like(cand_token, dtype=torch.bool)
        )
        ends |= t + 1 >= max_len

        # 2. the best K candidates that go on become the running beams
        open_scores = cand_scores + ends.float() * NEG
        keep = torch.topk(open_scores, K, dim=-1).indices  # (B, K)
        running = cand_seqs[rows, keep]
        running_scores = open_scores[rows, keep]
        source_beam = cand_beam[rows, keep]

        # 3. finished candidates among the first K compete for the K finished slots
        new_done = ends & (torch.arange(n_cand, device=device) < K)
        done_cand_scores = cand_scores / (t + 1 - T) ** length_penalty
        done_cand_scores = done_cand_scores + (~can_improve).float() * NEG
        done_cand_scores = done_cand_scores + (~new_done) * NEG
        all_scores = torch.cat([done_scores, done_cand_scores], dim=1)  # (B, 3K)
        best = torch.topk(all_scores, K, dim=-1).indices
        padded = F.pad(cand_seqs, (0, max_len - t - 1), value=pad)
        done_seqs = torch.cat([done_seqs, padded], dim=1)[rows, best]
        done_lens = torch.cat([done_lens, torch.full_like(cand_token, t + 1)], dim=1)[rows, best]
        done_filled = torch.cat([done_filled, new_done], dim=1)[rows, best]
        done_scores = all_scores[rows, best]

        # 4. the cache must follow the beams: row (b, k) now continues row (b, source_beam)
        if cache is not None:
            reorder_cache(cache, (rows * K + source_beam).flatten())

        # 5. stop when no prompt can improve, or nothing can continue
        best_running = running_scores[:, :1] / (t + 1 - T) ** length_penalty
        worst_done = torch.where(done_filled, done_scores.min(dim=1, keepdim=True).values, NEG)
        can_improve &= (best_running > worst_done).any(dim=-1, keepdim=True)
        if not bool(can_improve.any()) or bool(ends.all()):
            break

    length = int(done_lens[:, 0].max())
    return done_seqs[:, 0, :length]


# --------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------


def generate(
    model: nn.Module,
    input_ids: Tensor,
    max_new_tokens: int,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    num_beams: int = 1,
    eos_token_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    Greedy (default), sampling (``do_sample=True``), beam search (``num_beams > 1``) or beam
    sampling (both). Equal to Hugging Face ``model.generate`` with the same arguments, except
    two defaults: ``top_k=None`` means no top-k (HF samples with top_k=50 unless told
    ``top_k=0``), and ``eos_token_id=None`` means never stop early (HF reads the model's
    generation config; pass ``model.config.eos_token_id`` to stop at the end of text).

    Args:
        model: a causal LM (our GPT / Llama, or a Hugging Face model), in eval mode.
        input_ids: (B, T) prompt ids, all of the same length (no padding).
        max_new_tokens: the most tokens to add.
        do_sample: sample from the processed distribution instead of taking the argmax.
        temperature: > 0, divides the logits (sampling only).
        top_k: keep only the k most likely tokens (sampling only), >= 1, or None.
        top_p: keep the nucleus of mass p (sampling only), in (0, 1], or None.
        repetition_penalty: > 0; > 1 discourages tokens already in the sequence.
        num_beams: 1 for greedy/sampling, more for beam search.
        eos_token_id: a finished sequence is padded with it; generation stops when all are.
        use_cache: keep the keys and values of past positions (a KV cache) and feed one new
            token per step, instead of recomputing the whole sequence.
        generator: random source for sampling (the global one, like HF, when None).

    Returns:
        (B, T + n) ids, prompt included; n = max_new_tokens unless every sequence hit EOS.

    Example:
        >>> out = generate(model, tok("To be", return_tensors="pt").input_ids, 20)  # doctest: +SKIP
    """
    _check_input_ids(input_ids)
    _check_max_new_tokens(max_new_tokens)
    _check_temperature(temperature)
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)
    _check_positive_float("repetition_penalty", repetition_penalty)
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an int >= 1 (1 = no beam search), got {num_beams!r}")
    if eos_token_id is not None and (
        isinstance(eos_token_id, bool) or not isinstance(eos_token_id, int)
    ):
        raise TypeError(f"eos_token_id must be a single int or None, got {eos_token_id!r}")
    if not do_sample and (temperature != 1.0 or top_k is not None or top_p is not None):
        warnings.warn(
            "temperature, top_k and top_p only act when sampling: pass do_sample=True",
            UserWarning,
            stacklevel=2,
        )
    n_positions = getattr(getattr(model, "config", None), "n_positions", None)
    if n_positions is not None and input_ids.size(1) + max_new_tokens > n_positions:
        raise ValueError(
            f"prompt ({input_ids.size(1)} tokens) + max_new_tokens ({max_new_tokens}) "
            f"exceeds the model's context of n_positions={n_positions}: "
            "shorten the prompt or ask for fewer tokens"
        )
    if max_new_tokens == 0:
        return input_ids.clone()

    processors = build_processors(
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        min_tokens_to_keep=2 if num_beams > 1 else 1,  # a beam must be able to avoid EOS
    )
    if num_beams > 1:
        return beam_search(
            model,
            input_ids,
            max_new_tokens,
            num_beams,
            processors,
            eos_token_id=eos_token_id,
            do_sample=do_sample,
            use_cache=use_cache,
            generator=generator,
        )
    return greedy_or_sample(
        model,
        input_ids,
        max_new_tokens,
        processors,
        do_sample=do_sample,
        eos_token_id=eos_token_id,
        use_cache=use_cache,
        generator=generator,
    )


@torch.no_grad()
def generate_cached(model: nn.Module, input_ids: Tensor, max_new_tokens: int) -> Tensor:
    """Greedy decoding with a KV cache, written out (notebook 07's last exercise).

    The prompt goes through the model once (``use_cache=True``); after that every forward pass
    receives only the newest token and the cache of everything before it. Equal to
    ``generate(model, input_ids, max_new_tokens)`` (greedy), with ``max_new_tokens`` forwards.

    Args:
        model: a causal LM (our GPT / Llama, or a Hugging Face model), in eval mode.
        input_ids: (B, T) prompt ids.
        max_new_tokens: how many tokens to add, >= 0.

    Returns:
        (B, T + max_new_tokens) ids, prompt included.
    """
    _check_input_ids(input_ids)
    _check_max_new_tokens(max_new_tokens)
    ids, cache, style = input_ids, None, call_style(model)
    for _ in range(max_new_tokens):
        logits, cache = next_token_logits(model, ids, cache, True, style)  # only unseen tokens
        ids = torch.cat([ids, greedy_next_token(logits)[:, None]], dim=1)
    return ids


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_max_new_tokens(max_new_tokens: object) -> None:
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")


def _check_input_ids(input_ids: object) -> None:
    if not isinstance(input_ids, Tensor) or input_ids.dtype.is_floating_point:
        raise TypeError(
            "input_ids must be an integer torch.Tensor of shape (B, T), e.g. "
            "tokenizer(text, return_tensors='pt').input_ids"
        )
    if input_ids.dim() != 2 or input_ids.size(1) == 0:
        raise ValueError(
            f"input_ids must have shape (B, T) with T >= 1, got {tuple(input_ids.shape)}"
            ": add a batch dimension with input_ids[None]"
        )


def _check_temperature(temperature: float) -> None:
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not temperature > 0
    ):
        raise ValueError(
            f"temperature must be > 0, got {temperature!r}: for the most likely "
            "token use greedy decoding (do_sample=False)"
        )


def _check_top_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {k!r}: to disable top-k, pass top_k=None")


def _check_top_p(p: float) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p!r}: to disable top-p, pass top_p=None")


def _check_positive_float(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be > 0 (1.0 = no effect), got {value!r}")
