"""Learner-style softmax, cross_entropy, cross_entropy_grad, sgd_step and train_bigram (notebook
03), and notebook 00's toy relu: right and wrong."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from grading_impl import bug, right

# ------------------------------------------------------------------------------------------------
# softmax
# ------------------------------------------------------------------------------------------------


def softmax(x, dim=-1):
    e = torch.exp(x - x.max(dim=dim, keepdim=True).values)
    return e / e.sum(dim=dim, keepdim=True)


def softmax_torch(x, dim=-1):
    return torch.softmax(x, dim=dim)


def softmax_logsumexp_float64(x, dim=-1):
    x = x.double()
    # float64 out, even for float32 in
    return torch.exp(x - torch.logsumexp(x, dim=dim, keepdim=True))


@bug("softmax", "overflows at +1000")
def softmax_no_max(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


@bug("softmax", "changed its input `x` in place")
def softmax_in_place(x, dim=-1):
    x -= x.max(dim=dim, keepdim=True).values
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


@bug("softmax", "keepdim=True")
def softmax_no_keepdim(x, dim=-1):
    e = torch.exp(x - x.max(dim=dim, keepdim=True).values)
    return e / e.sum(dim=dim)


@bug("softmax", "you ignored the dim argument")
def softmax_last_dim_only(x, dim=-1):
    e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


@bug("softmax", "you subtracted the max of the whole tensor")
def softmax_global_max(x, dim=-1):
    e = torch.exp(x - x.max())
    return e / e.sum(dim=dim, keepdim=True)


@bug("softmax", "you returned log-probabilities")
def softmax_returns_log(x, dim=-1):
    return x - torch.logsumexp(x, dim=dim, keepdim=True)


@bug("softmax", "the default of dim must be -1, not 0")
def softmax_default_dim_0(x, dim=0):
    e = torch.exp(x - x.max(dim=dim, keepdim=True).values)
    return e / e.sum(dim=dim, keepdim=True)


@bug("softmax", "you forgot to normalise")
def softmax_unnormalised(x, dim=-1):
    return torch.exp(x - x.max(dim=dim, keepdim=True).values)


@bug("softmax", "not a torch.Tensor: stay in torch")
def softmax_numpy(x, dim=-1):
    import numpy as np

    e = np.exp(x.numpy() - x.numpy().max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


# ------------------------------------------------------------------------------------------------
# cross_entropy
# ------------------------------------------------------------------------------------------------


def cross_entropy(logits, targets):
    shifted = logits - logits.max(dim=-1, keepdim=True).values
    logp = shifted - shifted.exp().sum(dim=-1, keepdim=True).log()
    return -logp[torch.arange(logits.shape[0]), targets].mean()


def cross_entropy_torch(logits, targets):
    return F.cross_entropy(logits, targets)


def cross_entropy_logsumexp(logits, targets):
    picked = logits.gather(1, targets[:, None]).squeeze(1)
    return (torch.logsumexp(logits, dim=1) - picked).mean()


@bug("cross_entropy", "you summed over the rows")
def cross_entropy_summed(logits, targets):
    logp = torch.log_softmax(logits, dim=-1)
    return -logp[torch.arange(len(targets)), targets].sum()


@bug("cross_entropy", "MINUS the mean log-probability")
def cross_entropy_no_minus(logits, targets):
    logp = torch.log_softmax(logits, dim=-1)
    return logp[torch.arange(len(targets)), targets].mean()


@bug("cross_entropy", "underflows to log(0)")
def cross_entropy_log_of_softmax(logits, targets):
    probs = torch.softmax(logits, dim=-1)
    return -torch.log(probs[torch.arange(len(targets)), targets]).mean()


@bug("cross_entropy", "return a 0-dim tensor (keep it a tensor")
def cross_entropy_item(logits, targets):
    return F.cross_entropy(logits, targets).item()


@bug("cross_entropy", "not connected to logits")
def cross_entropy_rewrapped(logits, targets):
    return torch.tensor(F.cross_entropy(logits, targets).item())


@bug("cross_entropy", "an (N, N) block")
def cross_entropy_wrong_index(logits, targets):
    return -torch.log_softmax(logits, dim=-1)[:, targets].mean()


@bug("cross_entropy", "averaged over the vocabulary too")
def cross_entropy_mean_over_vocab(logits, targets):
    onehot = F.one_hot(targets, logits.shape[-1])
    return -(onehot * torch.log_softmax(logits, dim=-1)).mean()


# ------------------------------------------------------------------------------------------------
# sgd_step
# ------------------------------------------------------------------------------------------------


def sgd_step(params, lr):
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad
            p.grad = None


def sgd_step_data_zero(params, lr):
    for p in params:
        p.data.add_(p.grad, alpha=-lr)
        p.grad.zero_()


def sgd_step_torch_optim(params, lr):
    opt = torch.optim.SGD(params, lr=lr)
    opt.step()
    opt.zero_grad()


@bug("sgd_step", "torch.no_grad()")
def sgd_step_tracked(params, lr):
    for p in params:
        p -= lr * p.grad
        p.grad = None


@bug("sgd_step", "your parameters did not change")
def sgd_step_rebinds(params, lr):
    with torch.no_grad():
        for p in params:
            p = p - lr * p.grad
            p.grad = None


@bug("sgd_step", "clear the gradients after the step")
def sgd_step_keeps_grads(params, lr):
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad


@bug("sgd_step", "you moved up the gradient")
def sgd_step_ascent(params, lr):
    with torch.no_grad():
        for p in params:
            p += lr * p.grad
            p.grad = None


@bug("sgd_step", "you forgot the learning rate")
def sgd_step_no_lr(params, lr):
    with torch.no_grad():
        for p in params:
            p -= p.grad
            p.grad = None


@bug("sgd_step", "you replaced the tensors in params")
def sgd_step_replaces(params, lr):
    for i, p in enumerate(params):
        params[i] = (p - lr * p.grad).detach().requires_grad_()


@bug("sgd_step", "did you clear the gradients before using them")
def sgd_step_clears_first(params, lr):
    with torch.no_grad():
        for p in params:
            p.grad = None
            p -= lr * p.grad


# ------------------------------------------------------------------------------------------------
# relu (notebook 00's toy)
# ------------------------------------------------------------------------------------------------


def relu(x):
    return torch.where(x > 0, x, torch.zeros_like(x))


def relu_clamp(x):
    return torch.clamp(x, min=0)


def relu_mask_product(x):
    return x * (x > 0)


@bug("relu", "not their absolute value")
def relu_abs(x):
    return x.abs()


@bug("relu", "you kept the negative part")
def relu_min(x):
    return torch.clamp(x, max=0)


@bug("relu", "changed its input `x` in place")
def relu_in_place(x):
    return x.clamp_(min=0)


@bug("relu", "compare elementwise")
def relu_python_if(x):
    return x if x > 0 else 0 * x


@bug("relu", "leaky ReLU")
def relu_leaky(x):
    return F.leaky_relu(x, 0.01)


@bug("relu", "you returned the mask x > 0")
def relu_mask(x):
    return (x > 0).float()


# ------------------------------------------------------------------------------------------------
# cross_entropy_grad
# ------------------------------------------------------------------------------------------------


def cross_entropy_grad(logits, targets):
    N = logits.shape[0]
    p = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
    p = p / p.sum(dim=-1, keepdim=True)
    p[torch.arange(N), targets] -= 1
    return p / N


def cross_entropy_grad_autograd(logits, targets):
    z = logits.detach().clone().requires_grad_()
    F.cross_entropy(z, targets).backward()
    return z.grad


def cross_entropy_grad_one_hot(logits, targets):
    onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    return (torch.softmax(logits, dim=1) - onehot) / len(targets)


@bug("cross_entropy_grad", "you forgot to divide by N")
def cross_entropy_grad_no_mean(logits, targets):
    return torch.softmax(logits, -1) - F.one_hot(targets, logits.shape[1]).to(logits.dtype)


@bug("cross_entropy_grad", "the sign is flipped")
def cross_entropy_grad_flipped(logits, targets):
    onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    return (onehot - torch.softmax(logits, -1)) / len(targets)


@bug("cross_entropy_grad", "you forgot the one-hot term")
def cross_entropy_grad_no_onehot(logits, targets):
    return torch.softmax(logits, -1) / len(targets)


@bug("cross_entropy_grad", "overflows for huge logits")
def cross_entropy_grad_naive_softmax(logits, targets):
    e = logits.exp()
    onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    return (e / e.sum(-1, keepdim=True) - onehot) / len(targets)


@bug("cross_entropy_grad", "not by V (the vocabulary size)")
def cross_entropy_grad_over_v(logits, targets):
    onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    return (torch.softmax(logits, -1) - onehot) / logits.shape[1]


@bug("cross_entropy_grad", "one 1 per row")
def cross_entropy_grad_block_onehot(logits, targets):
    onehot = torch.zeros_like(logits)
    onehot[:, targets] = 1.0
    return (torch.softmax(logits, -1) - onehot) / len(targets)


@bug("cross_entropy_grad", "changed its input `logits` in place")
def cross_entropy_grad_in_place(logits, targets):
    logits -= logits.max(dim=-1, keepdim=True).values
    p = logits.exp() / logits.exp().sum(-1, keepdim=True)
    return (p - F.one_hot(targets, logits.shape[1]).to(logits.dtype)) / len(targets)


@bug("cross_entropy_grad", "you used log-probabilities")
def cross_entropy_grad_log_softmax(logits, targets):
    onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    return (torch.log_softmax(logits, -1) - onehot) / len(targets)


# ------------------------------------------------------------------------------------------------
# train_bigram: a whole SGD loop
# ------------------------------------------------------------------------------------------------


def train_bigram(ids, vocab_size, steps, batch_size, lr, generator):
    W = torch.zeros(vocab_size, vocab_size, requires_grad=True)
    for _ in range(steps):
        t = torch.randint(len(ids) - 1, (batch_size,), generator=generator)
        loss = cross_entropy(W[ids[t]], ids[t + 1])
        loss.backward()
        sgd_step([W], lr)
    return W.detach()


def train_bigram_torch_optim(ids, vocab_size, steps, batch_size, lr, generator):
    W = torch.nn.Parameter(torch.zeros(vocab_size, vocab_size))
    opt = torch.optim.SGD([W], lr=lr)
    for _ in range(steps):
        t = torch.randint(0, len(ids) - 1, (batch_size,), generator=generator)
        opt.zero_grad()
        F.cross_entropy(W[ids[t]], ids[t + 1]).backward()
        opt.step()
    return W  # still a Parameter that requires grad: fine


def train_bigram_one_hot_float64(ids, vocab_size, steps, batch_size, lr, generator):
    W = torch.zeros(vocab_size, vocab_size, dtype=torch.float64, requires_grad=True)
    for _ in range(steps):
        t = torch.randint(len(ids) - 1, (batch_size,), generator=generator)
        x = F.one_hot(ids[t], vocab_size).double()
        loss = F.cross_entropy(x @ W, ids[t + 1])
        (grad,) = torch.autograd.grad(loss, W)
        with torch.no_grad():
            W -= lr * grad
    return W.detach()


def train_bigram_other_sampler(ids, vocab_size, steps, batch_size, lr, generator):
    # Another valid sampling scheme: shuffled positions, taken batch by batch.
    W = torch.zeros(vocab_size, vocab_size, requires_grad=True)
    order = torch.randperm(len(ids) - 1, generator=generator)
    for step in range(steps):
        start = (step * batch_size) % (len(order) - batch_size)
        t = order[start : start + batch_size]
        F.cross_entropy(W[ids[t]], ids[t + 1]).backward()
        with torch.no_grad():
            W -= lr * W.grad
            W.grad.zero_()
    return W.detach()


@bug("train_bigram", "the target of position t is the NEXT id")
def train_bigram_no_shift(ids, vocab_size, steps, batch_size, lr, generator):
    W = torch.zeros(vocab_size, vocab_size, requires_grad=True)
    for _ in range(steps):
        t = torch.randint(len(ids) - 1, (batch_size,), generator=generator)
        F.cross_entropy(W[ids[t]], ids[t]).backward()
        sgd_step([W], lr)
    return W.detach()


@bug("train_bigram", "you predict the previous token")
def train_bigram_reversed(ids, vocab_size, steps, batch_size, lr, generator):
    W = torch.zeros(vocab_size, vocab_size, requires_grad=True)
    for _ in range(steps):
        t = torch.randint(len(ids) - 1, (batch_size,), generator=generator)
        F.cross_entropy(W[ids[t + 1]], ids[t]).backward()
        sgd_step([W], lr)
    return W.detach()


@bug("train_bigram", "your gradients pile up")
def train_bigram_never_cleared(ids, vocab_size, steps, batch_size, lr, generator):
    W = torch.zeros(vocab_size, vocab_size, requires_grad=True)
    for _ in range(steps):
        t = torch.randint(len(ids) - 1, (batch_size,), generator=generator)
        F.cross_entropy(W[ids[t]], ids[t + 1]).backward()
        with torch.no_grad():
            W -= lr * W.grad
    return W.detach()


@bug("train_bigram", "you moved up the gradient")
def train_bigram_ascent(ids, vocab_size, steps, batch_size, lr, generator):
    W = torch.zeros(vocab_size, vocab_size, requires_grad=True)
    for _ in range(steps):
        t = torch.randint(len(ids) - 1, (batch_size,), generator=generator)
        F.cross_entropy(W[ids[t]], ids[t + 1]).backward()
        with torch.no_grad():
            W += lr * W.grad
            W.grad = None
    return W.detach()


@bug("train_bigram", "W never changed")
def train_bigram_rebinds(ids, vocab_size, steps, batch_size, lr, generator):
    W = torch.zeros(vocab_size, vocab_size, requires_grad=True)
    for _ in range(steps):
        t = torch.randint(len(ids) - 1, (batch_size,), generator=generator)
        loss = F.cross_entropy(W[ids[t]], ids[t + 1])
        (grad,) = torch.autograd.grad(loss, W)
        new_W = W - lr * grad  # noqa: F841 - computed, then thrown away
    return W.detach()


@bug("train_bigram", "above the counting model")
def train_bigram_few_steps(ids, vocab_size, steps, batch_size, lr, generator):
    W = torch.zeros(vocab_size, vocab_size, requires_grad=True)
    for _ in range(5):  # ignores `steps`
        t = torch.randint(len(ids) - 1, (batch_size,), generator=generator)
        F.cross_entropy(W[ids[t]], ids[t + 1]).backward()
        sgd_step([W], lr)
    return W.detach()


@bug("train_bigram", "draw t with torch.randint(len(ids) - 1")
def train_bigram_off_by_one(ids, vocab_size, steps, batch_size, lr, generator):
    W = torch.zeros(vocab_size, vocab_size, requires_grad=True)
    for _ in range(steps):
        t = torch.randint(len(ids), (batch_size,), generator=generator)
        F.cross_entropy(W[ids[t]], ids[t + 1]).backward()
        sgd_step([W], lr)
    return W.detach()


@bug("train_bigram", "a sum over the batch multiplies the step size by batch_size")
def train_bigram_summed_loss(ids, vocab_size, steps, batch_size, lr, generator):
    W = torch.zeros(vocab_size, vocab_size, requires_grad=True)
    for _ in range(steps):
        t = torch.randint(len(ids) - 1, (batch_size,), generator=generator)
        F.cross_entropy(W[ids[t]], ids[t + 1], reduction="sum").backward()
        sgd_step([W], lr)
    return W.detach()


IMPLS = [
    right("softmax", softmax, "reference"),
    right("softmax", softmax_torch),
    right("softmax", softmax_logsumexp_float64),
    softmax_no_max,
    softmax_in_place,
    softmax_no_keepdim,
    softmax_last_dim_only,
    softmax_global_max,
    softmax_returns_log,
    softmax_default_dim_0,
    softmax_unnormalised,
    softmax_numpy,
    right("cross_entropy", cross_entropy, "reference"),
    right("cross_entropy", cross_entropy_torch),
    right("cross_entropy", cross_entropy_logsumexp),
    cross_entropy_summed,
    cross_entropy_no_minus,
    cross_entropy_log_of_softmax,
    cross_entropy_item,
    cross_entropy_rewrapped,
    cross_entropy_wrong_index,
    cross_entropy_mean_over_vocab,
    right("sgd_step", sgd_step, "reference"),
    right("sgd_step", sgd_step_data_zero),
    right("sgd_step", sgd_step_torch_optim),
    sgd_step_tracked,
    sgd_step_rebinds,
    sgd_step_keeps_grads,
    sgd_step_ascent,
    sgd_step_no_lr,
    sgd_step_replaces,
    sgd_step_clears_first,
    right("relu", relu, "reference"),
    right("relu", relu_clamp),
    right("relu", relu_mask_product),
    relu_abs,
    relu_min,
    relu_in_place,
    relu_python_if,
    relu_leaky,
    relu_mask,
    right("cross_entropy_grad", cross_entropy_grad, "reference"),
    right("cross_entropy_grad", cross_entropy_grad_autograd),
    right("cross_entropy_grad", cross_entropy_grad_one_hot),
    cross_entropy_grad_no_mean,
    cross_entropy_grad_flipped,
    cross_entropy_grad_no_onehot,
    cross_entropy_grad_naive_softmax,
    cross_entropy_grad_over_v,
    cross_entropy_grad_block_onehot,
    cross_entropy_grad_in_place,
    cross_entropy_grad_log_softmax,
    right("train_bigram", train_bigram, "reference"),
    right("train_bigram", train_bigram_torch_optim),
    right("train_bigram", train_bigram_one_hot_float64),
    right("train_bigram", train_bigram_other_sampler),
    train_bigram_no_shift,
    train_bigram_reversed,
    train_bigram_never_cleared,
    train_bigram_ascent,
    train_bigram_rebinds,
    train_bigram_few_steps,
    train_bigram_off_by_one,
    train_bigram_summed_loss,
]
