"""Learner-style generation functions (notebook 07): right and wrong."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from grading_impl import bug, right

INF = float("inf")

# ------------------------------------------------------------------------------------------------
# greedy_next_token
# ------------------------------------------------------------------------------------------------


def greedy_next_token(logits):
    return logits.argmax(dim=-1)


def greedy_softmax_then_max(logits):
    return torch.max(F.softmax(logits, dim=-1), dim=-1).indices


def greedy_loop(logits):
    return torch.tensor(
        [max(range(len(row)), key=lambda i: (row[i], -i)) for row in logits.tolist()]
    )


@bug("greedy_next_token", "over the batch (dim 0)")
def greedy_dim0(logits):
    return logits.argmax(dim=0)


@bug("greedy_next_token", "the last most likely index")
def greedy_last_tie(logits):
    V = logits.shape[-1]
    return V - 1 - logits.flip(-1).argmax(dim=-1)


@bug("greedy_next_token", "argmin")
def greedy_argmin(logits):
    return logits.argmin(dim=-1)


@bug("greedy_next_token", "drop keepdim=True")
def greedy_keepdim(logits):
    return logits.argmax(dim=-1, keepdim=True)


@bug("greedy_next_token", "return their indices")
def greedy_values(logits):
    return logits.max(dim=-1).values


@bug("greedy_next_token", "not a torch.Tensor")
def greedy_list(logits):
    return logits.argmax(dim=-1).tolist()


# ------------------------------------------------------------------------------------------------
# apply_temperature
# ------------------------------------------------------------------------------------------------


def apply_temperature(logits, temperature):
    return logits / temperature


def apply_temperature_mul(logits, temperature):
    return logits * (1.0 / temperature)


def apply_temperature_div(logits, temperature):
    return torch.div(logits, torch.tensor(temperature, dtype=logits.dtype))


@bug("apply_temperature", "you multiplied by the temperature")
def temperature_multiplies(logits, temperature):
    return logits * temperature


@bug("apply_temperature", "not probabilities")
def temperature_softmax(logits, temperature):
    return F.softmax(logits / temperature, dim=-1)


@bug("apply_temperature", "not log-probabilities")
def temperature_log_softmax(logits, temperature):
    return F.log_softmax(logits / temperature, dim=-1)


@bug("apply_temperature", "changed its input `logits` in place")
def temperature_in_place(logits, temperature):
    logits /= temperature
    return logits


@bug("apply_temperature", "not subtracted")
def temperature_subtracts(logits, temperature):
    return logits - temperature


@bug("apply_temperature", "floor division")
def temperature_floor(logits, temperature):
    return logits // temperature


# ------------------------------------------------------------------------------------------------
# top_k_filter
# ------------------------------------------------------------------------------------------------


def top_k_filter(logits, k):
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1, None]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_sort(logits, k):
    k = min(k, logits.shape[-1])
    kth = logits.sort(dim=-1, descending=True).values[:, k - 1 : k]
    return torch.where(logits >= kth, logits, torch.full_like(logits, -INF))


def top_k_kthvalue(logits, k):
    V = logits.shape[-1]
    if k >= V:
        return logits.clone()
    kth = torch.kthvalue(logits, V - k + 1, dim=-1, keepdim=True).values
    out = logits.clone()
    out[out < kth] = -INF
    return out


@bug("top_k_filter", "strictly below it")
def top_k_le(logits, k):
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[..., -1, None]
    return logits.masked_fill(logits <= kth, float("-inf"))


@bug("top_k_filter", "you kept k - 1 tokens")
def top_k_minus_one(logits, k):
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -2 if k > 1 else -1, None]
    return logits.masked_fill(logits < kth, float("-inf"))


@bug("top_k_filter", "ties with the k-th largest logit must all be kept")
def top_k_indices(logits, k):
    idx = torch.topk(logits, min(k, logits.size(-1)), dim=-1).indices
    out = torch.full_like(logits, -INF)
    return out.scatter(-1, idx, logits.gather(-1, idx))


@bug("top_k_filter", "not 0")
def top_k_zero_fill(logits, k):
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[..., -1, None]
    return logits.masked_fill(logits < kth, 0.0)


@bug("top_k_filter", "large negative number")
def top_k_big_negative(logits, k):
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[..., -1, None]
    return logits.masked_fill(logits < kth, -1e9)


@bug("top_k_filter", "min(k, logits.size(-1))")
def top_k_no_clamp(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1, None]
    return logits.masked_fill(logits < kth, float("-inf"))


@bug("top_k_filter", "k smallest")
def top_k_smallest(logits, k):
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1, largest=False).values[..., -1, None]
    return logits.masked_fill(logits > kth, float("-inf"))


# ------------------------------------------------------------------------------------------------
# top_p_filter
# ------------------------------------------------------------------------------------------------


def top_p_filter(logits, p):
    probs, order = torch.sort(F.softmax(logits, dim=-1), dim=-1, descending=True)
    before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
    keep_sorted = before < p
    keep_sorted[:, 0] = True
    keep = keep_sorted.scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, -INF)


def top_p_from_tail(logits, p):  # Hugging Face's way: drop the tail whose mass is <= 1 - p
    sorted_logits, order = torch.sort(logits, descending=False)
    tail = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = tail <= 1 - p
    drop[..., -1:] = False
    return logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))


def top_p_shift(logits, p):
    probs, idx = F.softmax(logits, -1).sort(-1, descending=True)
    remove = probs.cumsum(-1) > p
    remove[:, 1:] = remove[:, :-1].clone()  # shift right: the token crossing p stays
    remove[:, 0] = False
    out = logits.clone()
    for b in range(logits.shape[0]):
        out[b, idx[b][remove[b]]] = -INF
    return out


@bug("top_p_filter", "makes the running sum reach p")
def top_p_excludes_crossing(logits, p):
    probs, order = torch.sort(F.softmax(logits, dim=-1), dim=-1, descending=True)
    keep_sorted = probs.cumsum(dim=-1) <= p
    keep = keep_sorted.scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, -INF)


@bug("top_p_filter", "descending order")
def top_p_ascending(logits, p):
    probs, order = torch.sort(F.softmax(logits, dim=-1), dim=-1)
    keep_sorted = probs.cumsum(dim=-1) - probs < p
    keep_sorted[:, 0] = True
    return logits.masked_fill(~keep_sorted.scatter(-1, order, keep_sorted), -INF)


@bug("top_p_filter", "not over the logits")
def top_p_on_logits(logits, p):
    vals, order = torch.sort(logits, dim=-1, descending=True)
    keep_sorted = vals.cumsum(dim=-1) - vals < p
    keep_sorted[:, 0] = True
    return logits.masked_fill(~keep_sorted.scatter(-1, order, keep_sorted), -INF)


@bug("top_p_filter", "your mask is in sorted order")
def top_p_no_unsort(logits, p):
    probs, _ = torch.sort(F.softmax(logits, dim=-1), dim=-1, descending=True)
    keep = probs.cumsum(dim=-1) - probs < p
    keep[:, 0] = True
    return logits.masked_fill(~keep, -INF)


@bug("top_p_filter", "not 0")
def top_p_zero_fill(logits, p):
    probs, order = torch.sort(F.softmax(logits, dim=-1), dim=-1, descending=True)
    keep_sorted = probs.cumsum(dim=-1) - probs < p
    keep_sorted[:, 0] = True
    return logits.masked_fill(~keep_sorted.scatter(-1, order, keep_sorted), 0.0)


@bug("top_p_filter", "large negative number")
def top_p_finfo_min(logits, p):
    probs, order = torch.sort(F.softmax(logits, dim=-1), dim=-1, descending=True)
    keep_sorted = probs.cumsum(dim=-1) - probs < p
    keep_sorted[:, 0] = True
    fill = torch.finfo(logits.dtype).min
    return logits.masked_fill(~keep_sorted.scatter(-1, order, keep_sorted), fill)


# ------------------------------------------------------------------------------------------------
# apply_repetition_penalty
# ------------------------------------------------------------------------------------------------


def apply_repetition_penalty(input_ids, logits, penalty):
    seen = logits.gather(1, input_ids)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(1, input_ids, seen)


def repetition_penalty_loop(input_ids, logits, penalty):
    out = logits.clone()
    for b in range(input_ids.shape[0]):
        for t in set(input_ids[b].tolist()):
            x = logits[b, t]
            out[b, t] = x * penalty if x < 0 else x / penalty
    return out


def repetition_penalty_mask(input_ids, logits, penalty):
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[torch.arange(input_ids.shape[0])[:, None], input_ids] = True
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(mask, penalised, logits)


@bug("apply_repetition_penalty", "divided every seen logit by the penalty")
def penalty_always_divides(input_ids, logits, penalty):
    seen = logits.gather(1, input_ids) / penalty
    return logits.scatter(1, input_ids, seen)


@bug("apply_repetition_penalty", "the other way round")
def penalty_inverted(input_ids, logits, penalty):
    seen = logits.gather(1, input_ids)
    seen = torch.where(seen < 0, seen / penalty, seen * penalty)
    return logits.scatter(1, input_ids, seen)


@bug("apply_repetition_penalty", "once per occurrence")
def penalty_per_occurrence(input_ids, logits, penalty):
    out = logits.clone()
    for b in range(input_ids.shape[0]):
        for t in input_ids[b].tolist():
            out[b, t] = out[b, t] * penalty if out[b, t] < 0 else out[b, t] / penalty
    return out


@bug("apply_repetition_penalty", "row b only")
def penalty_first_row(input_ids, logits, penalty):
    out = logits.clone()
    for t in set(input_ids[0].tolist()):
        col = logits[:, t]
        out[:, t] = torch.where(col < 0, col * penalty, col / penalty)
    return out


@bug("apply_repetition_penalty", "not subtracted")
def penalty_subtracts(input_ids, logits, penalty):
    seen = logits.gather(1, input_ids) - penalty
    return logits.scatter(1, input_ids, seen)


@bug("apply_repetition_penalty", "changed its input `logits` in place")
def penalty_in_place(input_ids, logits, penalty):
    seen = logits.gather(1, input_ids)
    logits.scatter_(1, input_ids, torch.where(seen < 0, seen * penalty, seen / penalty))
    return logits


@bug("apply_repetition_penalty", "you penalised every token")
def penalty_everything(input_ids, logits, penalty):
    return torch.where(logits < 0, logits * penalty, logits / penalty)


# ------------------------------------------------------------------------------------------------
# sample_next_token
# ------------------------------------------------------------------------------------------------


def sample_next_token(logits, generator):
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def sample_per_row(logits, generator):
    probs = torch.softmax(logits.float(), -1)
    return torch.stack([torch.multinomial(row, 1, generator=generator)[0] for row in probs])


def sample_exp_normalised(logits, generator):
    e = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
    return torch.multinomial(e / e.sum(-1, keepdim=True), 1, generator=generator)[:, 0]


@bug("sample_next_token", "you took the most likely token")
def sample_argmax(logits, generator):
    return logits.argmax(-1)


@bug("sample_next_token", "identically seeded generators")
def sample_no_generator(logits, generator):
    return torch.multinomial(F.softmax(logits, dim=-1), 1).squeeze(1)


@bug("sample_next_token", "return (B,)")
def sample_keepdim(logits, generator):
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)


@bug("sample_next_token", "needs probabilities")
def sample_on_logits(logits, generator):
    return torch.multinomial(logits, 1, generator=generator)[:, 0]


@bug("sample_next_token", "over the batch (dim 0)")
def sample_softmax_dim0(logits, generator):
    return torch.multinomial(F.softmax(logits, dim=0), 1, generator=generator)[:, 0]


@bug("sample_next_token", "not a torch.Tensor")
def sample_list(logits, generator):
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0].tolist()


# ------------------------------------------------------------------------------------------------
# generate
# ------------------------------------------------------------------------------------------------


def _filter(logits, temperature, top_k, top_p):
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


@torch.no_grad()
def generate(
    model,
    input_ids,
    max_new_tokens,
    do_sample=False,
    temperature=1.0,
    top_k=None,
    top_p=None,
    generator=None,
):
    ids = input_ids
    for _ in range(max_new_tokens):
        logits = model(ids).logits[:, -1, :]
        if do_sample:
            logits = _filter(logits, temperature, top_k, top_p)
            probs = F.softmax(logits, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator)[:, 0]
        else:
            token = logits.argmax(dim=-1)
        ids = torch.cat([ids, token[:, None]], dim=1)
    return ids


def generate_prealloc(
    model,
    input_ids,
    max_new_tokens,
    do_sample=False,
    temperature=1.0,
    top_k=None,
    top_p=None,
    generator=None,
):
    B, T = input_ids.shape
    out = torch.zeros(B, T + max_new_tokens, dtype=torch.long)
    out[:, :T] = input_ids
    with torch.no_grad():
        for t in range(T, T + max_new_tokens):
            logits = model(input_ids=out[:, :t]).logits[:, -1].float()
            if do_sample:
                logits = _filter(logits, temperature, top_k, top_p)
                out[:, t] = sample_next_token(logits, generator)
            else:
                out[:, t] = greedy_next_token(logits)
    return out


def generate_with_cache(
    model,
    input_ids,
    max_new_tokens,
    do_sample=False,
    temperature=1.0,
    top_k=None,
    top_p=None,
    generator=None,
):
    """A KV cache inside generate: the same tokens, faster (accepted)."""
    ids, out = input_ids, model(input_ids, use_cache=True)
    for step in range(max_new_tokens):
        logits = out.logits[:, -1, :].detach()
        if do_sample:
            probs = F.softmax(_filter(logits, temperature, top_k, top_p), -1)
            token = torch.multinomial(probs, 1, generator=generator)[:, 0]
        else:
            token = logits.argmax(-1)
        ids = torch.cat([ids, token[:, None]], dim=1)
        if step + 1 < max_new_tokens:
            out = model(token[:, None], past_key_values=out.past_key_values, use_cache=True)
    return ids


def _loop(
    model,
    input_ids,
    n,
    do_sample,
    temperature,
    top_k,
    top_p,
    generator,
    *,
    position=-1,
    append=True,
    order="tkp",
    multiply=False,
    sample=True,
    new_only=False,
):
    ids, new = input_ids, []
    with torch.no_grad():
        for _ in range(n):
            logits = model(ids if append else input_ids).logits[:, position, :]
            if do_sample:
                for step in order:
                    if step == "t":
                        logits = logits * temperature if multiply else logits / temperature
                    if step == "k" and top_k is not None:
                        logits = top_k_filter(logits, top_k)
                    if step == "p" and top_p is not None:
                        logits = top_p_filter(logits, top_p)
            if do_sample and sample:
                token = torch.multinomial(F.softmax(logits, -1), 1, generator=generator)[:, 0]
            else:
                token = logits.argmax(-1)
            new.append(token)
            ids = torch.cat([ids, token[:, None]], dim=1)
    return torch.stack(new, 1) if new_only else ids


@bug("generate", "first position")
def generate_first_position(
    model,
    input_ids,
    max_new_tokens,
    do_sample=False,
    temperature=1.0,
    top_k=None,
    top_p=None,
    generator=None,
):
    return _loop(
        model,
        input_ids,
        max_new_tokens,
        do_sample,
        temperature,
        top_k,
        top_p,
        generator,
        position=0,
    )


@bug("generate", "never feed the new tokens back")
def generate_not_appending(
    model,
    input_ids,
    max_new_tokens,
    do_sample=False,
    temperature=1.0,
    top_k=None,
    top_p=None,
    generator=None,
):
    return _loop(
        model,
        input_ids,
        max_new_tokens,
        do_sample,
        temperature,
        top_k,
        top_p,
        generator,
        append=False,
    )


@bug("generate", "Hugging Face's order")
def generate_temperature_last(
    model,
    input_ids,
    max_new_tokens,
    do_sample=False,
    temperature=1.0,
    top_k=None,
    top_p=None,
    generator=None,
):
    return _loop(
        model,
        input_ids,
        max_new_tokens,
        do_sample,
        temperature,
        top_k,
        top_p,
        generator,
        order="kpt",
    )


@bug("generate", "you applied top-p before top-k")
def generate_p_before_k(
    model,
    input_ids,
    max_new_tokens,
    do_sample=False,
    temperature=1.0,
    top_k=None,
    top_p=None,
    generator=None,
):
    return _loop(
        model,
        input_ids,
        max_new_tokens,
        do_sample,
        temperature,
        top_k,
        top_p,
        generator,
        order="tpk",
    )


@bug("generate", "do not multiply")
def generate_temperature_multiplies(
    model,
    input_ids,
    max_new_tokens,
    do_sample=False,
    temperature=1.0,
    top_k=None,
    top_p=None,
    generator=None,
):
    return _loop(
        model,
        input_ids,
        max_new_tokens,
        do_sample,
        temperature,
        top_k,
        top_p,
        generator,
        multiply=True,
    )


@bug("generate", "you took the argmax")
def generate_never_samples(
    model,
    input_ids,
    max_new_tokens,
    do_sample=False,
    temperature=1.0,
    top_k=None,
    top_p=None,
    generator=None,
):
    return _loop(
        model,
        input_ids,
        max_new_tokens,
        do_sample,
        temperature,
        top_k,
        top_p,
        generator,
        sample=False,
    )


@bug("generate", "identically seeded generators")
def generate_global_rng(
    model,
    input_ids,
    max_new_tokens,
    do_sample=False,
    temperature=1.0,
    top_k=None,
    top_p=None,
    generator=None,
):
    return _loop(model, input_ids, max_new_tokens, do_sample, temperature, top_k, top_p, None)


@bug("generate", "return the prompt followed by the new tokens")
def generate_new_only(
    model,
    input_ids,
    max_new_tokens,
    do_sample=False,
    temperature=1.0,
    top_k=None,
    top_p=None,
    generator=None,
):
    return _loop(
        model,
        input_ids,
        max_new_tokens,
        do_sample,
        temperature,
        top_k,
        top_p,
        generator,
        new_only=True,
    )


# ------------------------------------------------------------------------------------------------
# generate_cached
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate_cached(model, input_ids, max_new_tokens):
    out = model(input_ids, use_cache=True)
    ids = input_ids
    for step in range(max_new_tokens):
        token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (B, 1)
        ids = torch.cat([ids, token], dim=1)
        if step < max_new_tokens - 1:
            out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
    return ids


@torch.no_grad()
def generate_cached_extra_forward(model, input_ids, max_new_tokens):
    """One forward per step, including a last one whose logits go unused (accepted)."""
    ids, cache, new = input_ids, None, input_ids
    for _ in range(max_new_tokens):
        out = model(new, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        new = out.logits[:, -1].argmax(-1)[:, None]
        ids = torch.cat([ids, new], dim=1)
    return ids


@torch.no_grad()
def generate_cached_prealloc(model, input_ids, max_new_tokens):
    B, T = input_ids.shape
    result = torch.empty(B, T + max_new_tokens, dtype=torch.long)
    result[:, :T] = input_ids
    out = model(input_ids=input_ids, use_cache=True)
    for t in range(T, T + max_new_tokens):
        result[:, t] = greedy_next_token(out.logits[:, -1, :])
        out = model(input_ids=result[:, t : t + 1], past_key_values=out.past_key_values)
    return result


@bug("generate_cached", "you recompute the whole sequence at every step")
def generate_cached_no_cache(model, input_ids, max_new_tokens):
    return generate(model, input_ids, max_new_tokens)


@bug("generate_cached", "feed only the newest token")
def generate_cached_whole_sequence(model, input_ids, max_new_tokens):
    ids = input_ids
    out = model(ids, use_cache=True)
    for _ in range(max_new_tokens):
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, token], dim=1)
        out = model(ids, past_key_values=out.past_key_values, use_cache=True)
    return ids


@bug("generate_cached", "but no cache")
def generate_cached_forgets_cache(model, input_ids, max_new_tokens):
    ids = input_ids
    out = model(ids)
    for _ in range(max_new_tokens):
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, token], dim=1)
        out = model(token, past_key_values=out.past_key_values)
    return ids


@bug("generate_cached", "feed the whole prompt")
def generate_cached_prompt_token_by_token(model, input_ids, max_new_tokens):
    cache, out = None, None
    for t in range(input_ids.shape[1]):
        out = model(input_ids[:, t : t + 1], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
    ids = input_ids
    for _ in range(max_new_tokens):
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, token], dim=1)
        out = model(token, past_key_values=cache, use_cache=True)
    return ids


@bug("generate_cached", "first position")
def generate_cached_first_position(model, input_ids, max_new_tokens):
    out = model(input_ids, use_cache=True)
    ids = input_ids
    for _ in range(max_new_tokens):
        token = out.logits[:, 0, :].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, token], dim=1)
        out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
    return ids


@bug("generate_cached", "one token too few")
def generate_cached_one_short(model, input_ids, max_new_tokens):
    out = model(input_ids, use_cache=True)
    ids = input_ids
    for _ in range(max_new_tokens - 1):
        token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, token], dim=1)
        out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
    return ids


@bug("generate_cached", "return the prompt followed by the new tokens")
def generate_cached_new_only(model, input_ids, max_new_tokens):
    return generate_cached(model, input_ids, max_new_tokens)[:, input_ids.shape[1] :]


IMPLS = [
    right("greedy_next_token", greedy_next_token, "reference"),
    right("greedy_next_token", greedy_softmax_then_max),
    right("greedy_next_token", greedy_loop),
    greedy_dim0,
    greedy_last_tie,
    greedy_argmin,
    greedy_keepdim,
    greedy_values,
    greedy_list,
    right("apply_temperature", apply_temperature, "reference"),
    right("apply_temperature", apply_temperature_mul),
    right("apply_temperature", apply_temperature_div),
    temperature_multiplies,
    temperature_softmax,
    temperature_log_softmax,
    temperature_in_place,
    temperature_subtracts,
    temperature_floor,
    right("top_k_filter", top_k_filter, "reference"),
    right("top_k_filter", top_k_sort),
    right("top_k_filter", top_k_kthvalue),
    top_k_le,
    top_k_minus_one,
    top_k_indices,
    top_k_zero_fill,
    top_k_big_negative,
    top_k_no_clamp,
    top_k_smallest,
    right("top_p_filter", top_p_filter, "reference"),
    right("top_p_filter", top_p_from_tail),
    right("top_p_filter", top_p_shift),
    top_p_excludes_crossing,
    top_p_ascending,
    top_p_on_logits,
    top_p_no_unsort,
    top_p_zero_fill,
    top_p_finfo_min,
    right("apply_repetition_penalty", apply_repetition_penalty, "reference"),
    right("apply_repetition_penalty", repetition_penalty_loop),
    right("apply_repetition_penalty", repetition_penalty_mask),
    penalty_always_divides,
    penalty_inverted,
    penalty_per_occurrence,
    penalty_first_row,
    penalty_subtracts,
    penalty_in_place,
    penalty_everything,
    right("sample_next_token", sample_next_token, "reference"),
    right("sample_next_token", sample_per_row),
    right("sample_next_token", sample_exp_normalised),
    sample_argmax,
    sample_no_generator,
    sample_keepdim,
    sample_on_logits,
    sample_softmax_dim0,
    sample_list,
    right("generate", generate, "reference"),
    right("generate", generate_prealloc),
    right("generate", generate_with_cache),
    generate_first_position,
    generate_not_appending,
    generate_temperature_last,
    generate_p_before_k,
    generate_temperature_multiplies,
    generate_never_samples,
    generate_global_rng,
    generate_new_only,
    right("generate_cached", generate_cached, "reference"),
    right("generate_cached", generate_cached_extra_forward),
    right("generate_cached", generate_cached_prealloc),
    generate_cached_no_cache,
    generate_cached_whole_sequence,
    generate_cached_forgets_cache,
    generate_cached_prompt_token_by_token,
    generate_cached_first_position,
    generate_cached_one_short,
    generate_cached_new_only,
]
