"""The small functions every language model is made of, written from tensor primitives.

These are the reference answers of the course's exercises (softmax, cross-entropy and SGD in
notebook 03; LayerNorm and GELU in 05; RMSNorm in 08). They use only elementwise ops and
reductions (``exp``, ``log``, ``amax``, ``sum``, ``mean``, ``tanh``, ``rsqrt``), never the
``torch.nn.functional`` function of the same name, and the tests check that they agree with
PyTorch and Hugging Face to float32 precision, gradients included.

Numerical stability comes from one identity: softmax is unchanged when a constant is
subtracted from every logit, so we subtract the row maximum before ``exp``:

    softmax([1000., 1001.]) == softmax([-1., 0.]) == [0.2689, 0.7311]   (no overflow)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "cross_entropy",
    "cross_entropy_grad",
    "gelu",
    "layer_norm",
    "log_softmax",
    "relu",
    "rms_norm",
    "sgd_step",
    "silu",
    "softmax",
    "train_bigram",
]


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Softmax along ``dim``: ``exp(x) / sum(exp(x))``, computed without overflow.

    Args:
        x: float tensor of any shape, e.g. logits (B, T, V).
        dim: the dimension that sums to 1 (default: the last).

    Returns:
        Tensor of the same shape and dtype, non-negative, summing to 1 along ``dim``.
        Entries at ``-inf`` get exactly 0 (used for masking); a row that is all ``-inf``
        has no valid softmax and gives NaN, as in PyTorch.

    Example:
        >>> softmax(torch.tensor([1000.0, 1001.0]))
        tensor([0.2689, 0.7311])
    """
    shifted = x - x.amax(dim=dim, keepdim=True)  # largest entry becomes 0: exp cannot overflow
    e = shifted.exp()
    return e / e.sum(dim=dim, keepdim=True)


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Log of the softmax along ``dim``, stable for huge and tiny logits.

    ``log softmax(x)_i = (x_i - m) - log(sum_j exp(x_j - m))`` with ``m = max(x)``: no ``exp``
    overflows and no probability underflows to ``log(0) = -inf``.

    Args:
        x: float tensor of any shape, e.g. logits (N, V).
        dim: the dimension normalised over (default: the last).

    Returns:
        Tensor of the same shape and dtype, with ``exp`` summing to 1 along ``dim``.

    Example:
        >>> log_softmax(torch.tensor([0.0, -1e4]))
        tensor([     0., -10000.])
    """
    shifted = x - x.amax(dim=dim, keepdim=True)
    return shifted - shifted.exp().sum(dim=dim, keepdim=True).log()


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-likelihood of ``targets`` under ``softmax(logits)``, computed stably.

    ``log softmax(z)_i = z_i - logsumexp(z)`` and ``logsumexp(z) = m + log sum_j exp(z_j - m)``
    with ``m = max(z)``: no ``exp`` overflows, however large the logits.

    Args:
        logits: float (N, V) scores, one row per prediction.
        targets: int (N,) correct class of each row, in [0, V).

    Returns:
        0-dim tensor: the mean over the N rows, natural log, supports ``backward()``.

    Example:
        >>> cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3]))  # uniform: log(4)
        tensor(1.3863)
    """
    m = logits.amax(dim=-1, keepdim=True)  # (N, 1)
    log_sum_exp = m + (logits - m).exp().sum(dim=-1, keepdim=True).log()  # (N, 1)
    log_probs = logits - log_sum_exp  # (N, V), log softmax
    picked = log_probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)  # (N,)
    return -picked.mean()


def cross_entropy_grad(logits: Tensor, targets: Tensor) -> Tensor:
    """The gradient of ``cross_entropy(logits, targets)`` w.r.t. ``logits``, in closed form.

    Each row gets ``softmax(logits[n]) - onehot(targets[n])``, divided by N because the loss is
    a mean over the N rows. No autograd: this is what ``loss.backward()`` computes.

    Args:
        logits: float (N, V) scores.
        targets: int (N,) class ids in [0, V).

    Returns:
        float (N, V), the same dtype as logits; each row sums to 0.

    Example:
        >>> cross_entropy_grad(torch.zeros(1, 4), torch.tensor([2]))
        tensor([[ 0.2500,  0.2500, -0.7500,  0.2500]])
    """
    N, V = logits.shape
    probs = softmax(logits, dim=-1)  # (N, V)
    onehot = F.one_hot(targets.long(), num_classes=V).to(logits.dtype)  # (N, V)
    return (probs - onehot) / N


def gelu(x: Tensor) -> Tensor:
    """GELU, tanh approximation (GPT-2's ``gelu_new``).

    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``: close to ReLU for large ``|x|`` but
    smooth around 0, and slightly negative for small negative inputs.

    Args:
        x: float tensor of any shape, e.g. (B, T, 4C) MLP activations.

    Returns:
        Tensor of the same shape and dtype.
    """
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def relu(x: Tensor) -> Tensor:
    """ReLU, ``max(x, 0)`` elementwise: the toy exercise that notebook 00 uses to show the checks.

    Example:
        >>> relu(torch.tensor([-1.0, 0.0, 2.0]))
        tensor([0., 0., 2.])
    """
    return torch.where(x > 0, x, torch.zeros_like(x))


def silu(x: Tensor) -> Tensor:
    """SiLU (also called swish): ``x * sigmoid(x)``, the gate of Llama's SwiGLU MLP.

    Args:
        x: float tensor of any shape.

    Returns:
        Tensor of the same shape and dtype.
    """
    return x * torch.sigmoid(x)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last dim: ``(x - mean) / sqrt(var + eps) * weight + bias``.

    The variance is the biased one (divide by C, not C - 1), as in ``torch.nn.LayerNorm``,
    and ``eps`` sits inside the square root.

    Args:
        x: float (..., C), e.g. (B, T, C).
        weight: (C,) scale (gamma).
        bias: (C,) shift (beta).
        eps: small constant that keeps the division finite for constant rows.

    Returns:
        Tensor (..., C) of the same dtype: each row has mean ``bias`` and scale ``weight``.
    """
    mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # (..., 1), biased
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def rms_norm(x: Tensor, weight: Tensor | None, eps: float = 1e-6) -> Tensor:
    """RMSNorm over the last dim (Llama): ``x / sqrt(mean(x^2) + eps) * weight``.

    No mean is subtracted and there is no bias. Like HF's ``LlamaRMSNorm``, half-precision
    inputs are normalised in float32 and cast back to their dtype before the weight is
    applied (HF also rounds float64 through float32; we keep float64 exact).

    Args:
        x: float (..., C), e.g. (B, T, C).
        weight: (C,) scale, or None for 1.
        eps: added to the mean square inside the square root.

    Returns:
        Tensor (..., C) with dtype ``promote(x.dtype, weight.dtype)``.
    """
    in_dtype = x.dtype
    h = x.to(torch.promote_types(in_dtype, torch.float32))
    h = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)
    h = h.to(in_dtype)
    return h if weight is None else weight * h


def _check_not_one_tensor(params: object) -> None:
    # Iterating over one tensor walks its rows, views without gradients: nothing would change.
    if isinstance(params, Tensor):
        raise TypeError("params must be a list of tensors, got one Tensor: call sgd_step([W], lr)")


def sgd_step(params: Iterable[Tensor], lr: float) -> None:
    """One step of plain gradient descent, in place: ``p -= lr * p.grad``, then clear grads.

    The update runs under ``torch.no_grad()`` (it is not part of the model's computation),
    parameters without a gradient are skipped, and every gradient is set to None afterwards so
    the next ``backward()`` starts from zero instead of adding to it.

    Args:
        params: the tensors to update (e.g. ``[W]`` or ``model.parameters()``), each a leaf
            with ``requires_grad=True``.
        lr: learning rate, a finite number >= 0.

    Returns:
        None; the tensors are modified in place.
    """
    _check_not_one_tensor(params)
    with torch.no_grad():
        for p in params:
            if p.grad is None:
                continue
            p -= lr * p.grad
            p.grad = None


def train_bigram(
    ids: Tensor, vocab_size: int, steps: int, batch_size: int, lr: float, generator: torch.Generator
) -> Tensor:
    """Train a neural bigram (a (V, V) logit table) by minibatch SGD; return the trained table.

    ``W`` starts at zeros. Each of the ``steps`` steps draws exactly one
    ``torch.randint(len(ids) - 1, (batch_size,), generator=generator)`` of positions ``t``,
    takes the logits ``W[ids[t]]`` and the targets ``ids[t + 1]``, and makes one
    ``sgd_step`` on the mean cross-entropy at the constant learning rate ``lr``.

    Args:
        ids: int (N,) token ids, N >= 2.
        vocab_size: V; every id is in [0, V).
        steps, batch_size: the number of SGD steps and of positions per step.
        lr: learning rate.
        generator: the source of the minibatch positions.

    Returns:
        float32 (V, V) logits, detached: ``softmax(W[i])`` is P(next | current = i).
    """
    W = torch.zeros(vocab_size, vocab_size, requires_grad=True)
    for _ in range(steps):
        t = torch.randint(len(ids) - 1, (batch_size,), generator=generator)  # (B,)
        loss = cross_entropy(W[ids[t]], ids[t + 1])  # logits (B, V), targets (B,)
        loss.backward()
        sgd_step([W], lr)
    return W.detach()
