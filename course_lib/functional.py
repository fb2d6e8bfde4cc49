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
import numbers
from collections.abc import Iterable

import torch
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


def _check_float_tensor(x: object, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(x).__name__}: wrap it with torch.tensor(...)"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got {x.dtype}: convert it with {name}.float()"
        )


def _check_dim(x: Tensor, dim: int) -> None:
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if x.dim() == 0:
        raise ValueError(
            "softmax needs at least one dimension: got a 0-dim tensor; use x.reshape(1)"
        )
    if not -x.dim() <= dim < x.dim():
        raise ValueError(
            f"dim={dim} is out of range for a tensor with {x.dim()} dims; use dim=-1 for the last one"
        )


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
    _check_float_tensor(x, "x")
    _check_dim(x, dim)
    # The max is a constant shift: detaching it changes no value or gradient, only saves work.
    shifted = x - x.amax(dim=dim, keepdim=True).detach()
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
    _check_float_tensor(x, "x")
    _check_dim(x, dim)
    shifted = x - x.amax(dim=dim, keepdim=True).detach()
    return shifted - shifted.exp().sum(dim=dim, keepdim=True).log()


def cross_entropy(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """Mean negative log-likelihood of ``targets`` under ``softmax(logits)``.

    Args:
        logits: float (N, V) scores, one row per prediction (a (B, T, V) tensor is flattened).
        targets: int (N,) correct class of each row, in [0, V) (or (B, T) with (B, T, V) logits).
        ignore_index: rows whose target equals it are left out of the mean (HF uses -100
            for padding and for the positions that have no next token).

    Returns:
        0-dim tensor: the mean over the rows that are not ignored, natural log, supports
        ``backward()``. NaN when every row is ignored (0 / 0), as in PyTorch.

    Example:
        >>> cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3]))  # uniform: log(4)
        tensor(1.3863)
    """
    _check_float_tensor(logits, "logits")
    if not isinstance(targets, Tensor):
        raise TypeError(
            f"targets must be a torch.Tensor of class ids, got {type(targets).__name__}"
        )
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise TypeError(
            f"targets must hold integer class ids, got {targets.dtype}: use targets.long()"
        )
    if logits.dim() < 2 or logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} do not match: "
            "expected logits (N, V) with targets (N,) (one class id per row of logits)"
        )
    V = logits.shape[-1]
    logits, targets = logits.reshape(-1, V), targets.reshape(-1).long()  # (N, V), (N,)
    keep = targets != ignore_index  # (N,)
    if ((targets[keep] < 0) | (targets[keep] >= V)).any():
        bad = targets[keep][(targets[keep] < 0) | (targets[keep] >= V)][0].item()
        raise ValueError(
            f"target {bad} is not a class id in [0, {V}); ignored rows use ignore_index={ignore_index}"
        )
    logp = log_softmax(logits, dim=-1)  # (N, V)
    picked = logp.gather(1, targets.clamp(0, V - 1).unsqueeze(1)).squeeze(1)  # (N,)
    # where, not a product: an ignored row may pick a -inf log-prob, and -inf * 0 is NaN.
    return -torch.where(keep, picked, 0.0).sum() / keep.sum()


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
    _check_float_tensor(logits, "logits")
    if logits.dim() != 2 or not isinstance(targets, Tensor) or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (N, V) and targets (N,), got {tuple(logits.shape)} and "
            f"{tuple(getattr(targets, 'shape', ()))}"
        )
    N, V = logits.shape
    onehot = torch.zeros_like(logits)  # (N, V)
    onehot[torch.arange(N), targets.long()] = 1.0
    return (softmax(logits, dim=-1) - onehot) / N


def gelu(x: Tensor) -> Tensor:
    """GELU, tanh approximation (GPT-2's ``gelu_new``).

    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``: close to ReLU for large ``|x|`` but
    smooth around 0, and slightly negative for small negative inputs.

    Args:
        x: float tensor of any shape, e.g. (B, T, 4C) MLP activations.

    Returns:
        Tensor of the same shape and dtype.
    """
    _check_float_tensor(x, "x")
    return (
        0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    )


def relu(x: Tensor) -> Tensor:
    """ReLU, ``max(x, 0)`` elementwise: the toy exercise that notebook 00 uses to show the checks.

    Example:
        >>> relu(torch.tensor([-1.0, 0.0, 2.0]))
        tensor([0., 0., 2.])
    """
    _check_float_tensor(x, "x")
    return torch.where(x > 0, x, torch.zeros_like(x))


def silu(x: Tensor) -> Tensor:
    """SiLU (also called swish): ``x * sigmoid(x)``, the gate of Llama's SwiGLU MLP.

    Args:
        x: float tensor of any shape.

    Returns:
        Tensor of the same shape and dtype.
    """
    _check_float_tensor(x, "x")
    return x * torch.sigmoid(x)


def _check_norm_weight(w: Tensor | None, name: str, C: int) -> None:
    if w is None:
        return
    _check_float_tensor(w, name)
    if w.shape != (C,):
        raise ValueError(
            f"{name} has shape {tuple(w.shape)} but must be ({C},): one value per channel of the last dim of x"
        )


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last dim: ``(x - mean) / sqrt(var + eps) * weight + bias``.

    The variance is the biased one (divide by C, not C - 1), as in ``torch.nn.LayerNorm``,
    and ``eps`` sits inside the square root.

    Args:
        x: float (..., C), e.g. (B, T, C).
        weight: (C,) scale (gamma), or None for 1.
        bias: (C,) shift (beta), or None for 0.
        eps: small constant that keeps the division finite for constant rows.

    Returns:
        Tensor (..., C) of the same dtype: each row has mean ``bias`` and scale ``weight``.
    """
    _check_float_tensor(x, "x")
    if x.dim() == 0:
        raise ValueError("layer_norm needs x of shape (..., C); got a 0-dim tensor")
    C = x.shape[-1]
    _check_norm_weight(weight, "weight", C)
    _check_norm_weight(bias, "bias", C)
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # (..., 1), biased
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


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
    _check_float_tensor(x, "x")
    if x.dim() == 0:
        raise ValueError("rms_norm needs x of shape (..., C); got a 0-dim tensor")
    _check_norm_weight(weight, "weight", x.shape[-1])
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    in_dtype = x.dtype
    h = x.to(torch.promote_types(in_dtype, torch.float32))
    h = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)
    h = h.to(in_dtype)
    return h if weight is None else weight * h


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
    if isinstance(params, Tensor):
        raise TypeError(
            "params must be a list of tensors, got a single Tensor: call sgd_step([W], lr)"
        )
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"params[{i}] is a {type(p).__name__}, not a torch.Tensor")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
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
    if not isinstance(ids, Tensor) or ids.dim() != 1 or ids.numel() < 2:
        raise ValueError("ids must be a 1-D tensor of at least 2 token ids")
    ids = ids.long()
    W = torch.zeros(vocab_size, vocab_size, device=ids.device, requires_grad=True)
    for _ in range(steps):
        t = torch.randint(len(ids) - 1, (batch_size,), generator=generator).to(ids.device)
        loss = cross_entropy(W[ids[t]], ids[t + 1])
        loss.backward()
        sgd_step([W], lr)
    return W.detach()
