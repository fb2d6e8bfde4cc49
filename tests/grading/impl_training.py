"""Learner-style get_batch, lr_at, clip_grad_norm and adamw_update (notebook 06): right and wrong."""

from __future__ import annotations

import math
import random

import torch
from grading_impl import bug, right

# ------------------------------------------------------------------------------------------------
# get_batch
# ------------------------------------------------------------------------------------------------


def get_batch(data, batch_size, block_size, generator):
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[i : i + block_size] for i in ix])
    y = torch.stack([data[i + 1 : i + 1 + block_size] for i in ix])
    return x, y


def get_batch_gather(data, batch_size, block_size, generator):
    ix = torch.randint(0, len(data) - block_size, (batch_size,), generator=generator)
    offsets = ix[:, None] + torch.arange(block_size)
    return data[offsets].long(), data[offsets + 1].long()


def get_batch_unfold(data, batch_size, block_size, generator):
    windows = data.unfold(0, block_size + 1, 1)  # (N - T, T + 1): every window of T + 1 tokens
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    chosen = windows[ix]
    return chosen[:, :-1].clone(), chosen[:, 1:].clone()


@bug("get_batch", "your y equals x")
def get_batch_not_shifted(data, batch_size, block_size, generator):
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[i : i + block_size] for i in ix])
    return x, x.clone()


@bug("get_batch", "randint upper bound is off by one")
def get_batch_high_minus_one(data, batch_size, block_size, generator):
    ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
    x = torch.stack([data[i : i + block_size] for i in ix])
    y = torch.stack([data[i + 1 : i + 1 + block_size] for i in ix])
    return x, y


@bug("get_batch", "A window ran past the end of data")
def get_batch_high_plus_one(data, batch_size, block_size, generator):
    ix = torch.randint(len(data) - block_size + 1, (batch_size,), generator=generator)
    x = torch.stack([data[i : i + block_size] for i in ix])
    y = torch.stack([data[i + 1 : i + 1 + block_size] for i in ix])
    return x, y


@bug("get_batch", "you drew the offsets twice")
def get_batch_two_draws(data, batch_size, block_size, generator):
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[i : i + block_size] for i in ix])
    iy = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    y = torch.stack([data[i + 1 : i + 1 + block_size] for i in iy])
    return x, y


@bug("get_batch", "your x and y are swapped")
def get_batch_swapped(data, batch_size, block_size, generator):
    x, y = get_batch(data, batch_size, block_size, generator)
    return y, x


@bug("get_batch", "pass generator=generator to torch.randint")
def get_batch_global_rng(data, batch_size, block_size, generator):
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([data[i : i + block_size] for i in ix])
    y = torch.stack([data[i + 1 : i + 1 + block_size] for i in ix])
    return x, y


@bug("get_batch", "pass generator=generator to torch.randint")
def get_batch_python_random(data, batch_size, block_size, generator):
    ix = [random.randrange(len(data) - block_size) for _ in range(batch_size)]
    x = torch.stack([data[i : i + block_size] for i in ix])
    y = torch.stack([data[i + 1 : i + 1 + block_size] for i in ix])
    return x, y


@bug("get_batch", "token ids must be int64")
def get_batch_float(data, batch_size, block_size, generator):
    x, y = get_batch(data, batch_size, block_size, generator)
    return x.float(), y.float()


@bug("get_batch", "expected (batch_size, block_size)")
def get_batch_long_windows(data, batch_size, block_size, generator):
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[i : i + block_size + 1] for i in ix])
    return x[:, :-1], x


# ------------------------------------------------------------------------------------------------
# lr_at
# ------------------------------------------------------------------------------------------------


def lr_at(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def lr_at_torch(step, max_lr, min_lr, warmup_steps, total_steps):
    step_t = torch.tensor(float(step))
    warm = max_lr * step_t / max(warmup_steps, 1)
    progress = ((step_t - warmup_steps) / (total_steps - warmup_steps)).clamp(0, 1)
    cos = min_lr + 0.5 * (1 + torch.cos(torch.pi * progress)) * (max_lr - min_lr)
    return torch.where(step_t < warmup_steps, warm, cos)  # a 0-dim tensor


def lr_at_ratio(step, max_lr, min_lr, warmup_steps, total_steps):
    """HF-style: a multiplier of max_lr (with min_lr as a fraction of it)."""
    if step < warmup_steps:
        return max_lr * (float(step) / float(max(1, warmup_steps)))
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    rate = min_lr / max_lr
    factor = 0.5 * (1.0 + math.cos(math.pi * 2.0 * 0.5 * progress))
    return max_lr * (factor * (1 - rate) + rate)


@bug("lr_at", "your warmup starts at max_lr / warmup_steps")
def lr_at_warmup_plus_one(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    return lr_at(step, max_lr, min_lr, warmup_steps, total_steps)


@bug("lr_at", "your cosine decays to 0 instead of min_lr")
def lr_at_to_zero(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress)) * max_lr


@bug("lr_at", "not / total_steps")
def lr_at_over_total(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / total_steps
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


@bug("lr_at", "uses step where it needs step - warmup_steps")
def lr_at_step_not_shifted(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = step / (total_steps - warmup_steps)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


@bug("lr_at", "follows the cosine back up")
def lr_at_past_total(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


@bug("lr_at", "your decay is linear")
def lr_at_linear(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    return max_lr - (step - warmup_steps) / (total_steps - warmup_steps) * (max_lr - min_lr)


@bug("lr_at", "division by zero")
def lr_at_divides_by_warmup(step, max_lr, min_lr, warmup_steps, total_steps):
    warm = max_lr * step / warmup_steps
    return warm if step < warmup_steps else lr_at(step, max_lr, min_lr, warmup_steps, total_steps)


@bug("lr_at", "misses pi")
def lr_at_no_pi(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (1 + math.cos(progress)) * (max_lr - min_lr)


# ------------------------------------------------------------------------------------------------
# clip_grad_norm
# ------------------------------------------------------------------------------------------------


def clip_grad_norm(params, max_norm):
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    if norm > max_norm:
        for g in grads:
            g.mul_(max_norm / (norm + 1e-6))
    return norm.item()


def clip_grad_norm_torch(params, max_norm):
    return torch.nn.utils.clip_grad_norm_(list(params), max_norm).item()


def clip_grad_norm_flat(params, max_norm):
    params = [p for p in params if p.grad is not None]
    flat = torch.cat([p.grad.flatten() for p in params]).double()
    norm = flat.norm().item()
    scale = min(1.0, max_norm / (norm + 1e-6))
    with torch.no_grad():
        for p in params:
            p.grad = p.grad * scale  # a new tensor for .grad is fine too
    return norm


@bug("clip_grad_norm", "you clipped each gradient by its own norm")
def clip_grad_norm_per_tensor(params, max_norm):
    total = 0.0
    for p in params:
        if p.grad is None:
            continue
        n = p.grad.norm()
        total += n.item() ** 2
        if n > max_norm:
            p.grad.mul_(max_norm / (n + 1e-6))
    return math.sqrt(total)


@bug("clip_grad_norm", "clip only when norm > max_norm")
def clip_grad_norm_always(params, max_norm):
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    for g in grads:
        g.mul_(max_norm / (norm + 1e-6))
    return norm.item()


@bug("clip_grad_norm", "you returned the norm after clipping")
def clip_grad_norm_post(params, max_norm):
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    if norm > max_norm:
        for g in grads:
            g.mul_(max_norm / (norm + 1e-6))
    return torch.sqrt(sum((g**2).sum() for g in grads)).item()


@bug("clip_grad_norm", "you left out the 1e-6")
def clip_grad_norm_no_eps(params, max_norm):
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    if norm > max_norm:
        for g in grads:
            g.mul_(max_norm / norm)
    return norm.item()


@bug("clip_grad_norm", "sum of the per-tensor norms")
def clip_grad_norm_sum_norms(params, max_norm):
    grads = [p.grad for p in params if p.grad is not None]
    norm = sum(g.norm() for g in grads)
    if norm > max_norm:
        for g in grads:
            g.mul_(max_norm / (norm + 1e-6))
    return norm.item()


@bug("clip_grad_norm", "skip them")
def clip_grad_norm_no_skip(params, max_norm):
    norm = torch.sqrt(sum((p.grad**2).sum() for p in params))
    if norm > max_norm:
        for p in params:
            p.grad.mul_(max_norm / (norm + 1e-6))
    return norm.item()


@bug("clip_grad_norm", "only rebinds a name")
def clip_grad_norm_rebinds(params, max_norm):
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    if norm > max_norm:
        for g in grads:
            g = g * (max_norm / (norm + 1e-6))  # noqa: PLW2901 (the classic mistake)
    return norm.item()


@bug("clip_grad_norm", "changed the parameters themselves")
def clip_grad_norm_scales_params(params, max_norm):
    params = [p for p in params if p.grad is not None]
    norm = torch.sqrt(sum((p.grad**2).sum() for p in params))
    if norm > max_norm:
        with torch.no_grad():
            for p in params:
                p.mul_(max_norm / (norm + 1e-6))
                p.grad.mul_(max_norm / (norm + 1e-6))
    return norm.item()


# ------------------------------------------------------------------------------------------------
# adamw_update
# ------------------------------------------------------------------------------------------------


def adamw_update(param, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    param = param * (1 - lr * weight_decay) - lr * m_hat / (torch.sqrt(v_hat) + eps)
    return param, m, v


def adamw_update_torch_style(
    param, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
):
    """As torch.optim.AdamW writes it: lerp, and the bias corrections folded into the step."""
    beta1, beta2 = betas
    p, m, v = param.clone(), m.clone(), v.clone()
    p.mul_(1 - lr * weight_decay)
    m.lerp_(grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (v.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
    p.addcdiv_(m, denom, value=-lr / (1 - beta1**step))
    return p, m, v


def adamw_update_float64(
    param, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
):
    p, g, m, v = (t.double() for t in (param, grad, m, v))
    out = adamw_update(p, g, m, v, step, lr, betas, eps, weight_decay)
    return tuple(t.float() for t in out)


@bug("adamw_update", "L2 regularisation")
def adamw_update_l2(param, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    grad = grad + weight_decay * param
    return adamw_update(param, grad, m, v, step, lr, betas, eps, 0.0)


@bug("adamw_update", "no bias correction")
def adamw_update_no_bias_correction(
    param, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
):
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    param = param * (1 - lr * weight_decay) - lr * m / (torch.sqrt(v) + eps)
    return param, m, v


@bug("adamw_update", "you decayed after the Adam update")
def adamw_update_decay_after(
    param, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
):
    new, m, v = adamw_update(param, grad, m, v, step, lr, betas, eps, 0.0)
    return new * (1 - lr * weight_decay), m, v


@bug("adamw_update", "uses step + 1")
def adamw_update_zero_based(
    param, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
):
    return adamw_update(param, grad, m, v, step + 1, lr, betas, eps, weight_decay)


@bug("adamw_update", "eps goes outside the square root")
def adamw_update_eps_inside(
    param, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
):
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
    param = param * (1 - lr * weight_decay) - lr * m_hat / torch.sqrt(v_hat + eps)
    return param, m, v


@bug("adamw_update", "changed its input `m` in place")
def adamw_update_in_place(
    param, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
):
    beta1, beta2 = betas
    m.mul_(beta1).add_(grad, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
    param = param * (1 - lr * weight_decay) - lr * m_hat / (torch.sqrt(v_hat) + eps)
    return param, m, v


@bug("adamw_update", "beta and 1 - beta are swapped")
def adamw_update_swapped_betas(
    param, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
):
    beta1, beta2 = betas
    m = (1 - beta1) * m + beta1 * grad
    v = (1 - beta2) * v + beta2 * grad**2
    m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
    param = param * (1 - lr * weight_decay) - lr * m_hat / (torch.sqrt(v_hat) + eps)
    return param, m, v


@bug("adamw_update", "the default of weight_decay must be 0.01")
def adamw_update_default_wd(
    param, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1
):
    return adamw_update(param, grad, m, v, step, lr, betas, eps, weight_decay)


@bug("adamw_update", "you returned the old m and v")
def adamw_update_old_moments(
    param, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
):
    new, _, _ = adamw_update(param, grad, m, v, step, lr, betas, eps, weight_decay)
    return new, m, v


IMPLS = [
    right("get_batch", get_batch, "reference"),
    right("get_batch", get_batch_gather),
    right("get_batch", get_batch_unfold),
    get_batch_not_shifted,
    get_batch_high_minus_one,
    get_batch_high_plus_one,
    get_batch_two_draws,
    get_batch_swapped,
    get_batch_global_rng,
    get_batch_python_random,
    get_batch_float,
    get_batch_long_windows,
    right("lr_at", lr_at, "reference"),
    right("lr_at", lr_at_torch),
    right("lr_at", lr_at_ratio),
    lr_at_warmup_plus_one,
    lr_at_to_zero,
    lr_at_over_total,
    lr_at_step_not_shifted,
    lr_at_past_total,
    lr_at_linear,
    lr_at_divides_by_warmup,
    lr_at_no_pi,
    right("clip_grad_norm", clip_grad_norm, "reference"),
    right("clip_grad_norm", clip_grad_norm_torch),
    right("clip_grad_norm", clip_grad_norm_flat),
    clip_grad_norm_per_tensor,
    clip_grad_norm_always,
    clip_grad_norm_post,
    clip_grad_norm_no_eps,
    clip_grad_norm_sum_norms,
    clip_grad_norm_no_skip,
    clip_grad_norm_rebinds,
    clip_grad_norm_scales_params,
    right("adamw_update", adamw_update, "reference"),
    right("adamw_update", adamw_update_torch_style),
    right("adamw_update", adamw_update_float64),
    adamw_update_l2,
    adamw_update_no_bias_correction,
    adamw_update_decay_after,
    adamw_update_zero_based,
    adamw_update_eps_inside,
    adamw_update_in_place,
    adamw_update_swapped_betas,
    adamw_update_default_wd,
    adamw_update_old_moments,
]
