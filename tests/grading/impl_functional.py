"""Learner-style softmax, cross_entropy and sgd_step (notebook 03): right and wrong."""

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
    return torch.exp(
        x - torch.logsumexp(x, dim=dim, keepdim=True)
    )  # float64 out, even for float32 in


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
]
