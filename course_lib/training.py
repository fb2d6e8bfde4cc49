"""Training a causal language model: batches, AdamW, the learning-rate schedule, clipping, the loop.

Everything here works for any model that takes ``model(input_ids=x)`` and returns an object
with ``.logits`` of shape (B, T, V): our :class:`course_lib.gpt.GPT` and
:class:`course_lib.llama.Llama` as well as Hugging Face causal LMs. The loss is always
``F.cross_entropy(logits.flatten(0, 1), y.flatten())`` with ``y`` the input shifted by one.

The pieces, in the order the loop uses them:

- :func:`get_batch` samples ``B`` random windows of ``T + 1`` tokens: inputs and targets;
- :func:`lr_at` is linear warmup then cosine decay;
- :func:`clip_grad_norm` rescales all gradients together when their norm is too large;
- :func:`adamw_update` is one AdamW update of one tensor, as a pure function;
- :class:`AdamW` is Adam with decoupled weight decay, written out by hand;
- :func:`train` ties them together with an evaluation loop and a tqdm progress bar;
- :func:`save_checkpoint` / :func:`load_checkpoint` make a run resumable, bit for bit;
- :func:`init_distributed` lets :func:`train` run as several processes under ``torchrun``
  (DistributedDataParallel: gloo on CPU, nccl on GPU), equal to one process with the same batch;
- :func:`train_flops`, :func:`mfu` and :func:`training_days` turn a run into compute numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

EVAL_SEED = 1234  # every evaluation draws the same batches: evals are comparable across steps


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def get_batch(
    data: Tensor,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample ``batch_size`` random windows of the token stream ``data``.

    Each window starts at a uniformly random offset ``i`` in ``[0, N - block_size)``;
    ``x = data[i : i + T]`` and ``y = data[i + 1 : i + T + 1]``, so ``y[b, t]`` is the token
    that follows ``x[b, t]``.

    Args:
        data: (N,) integer token ids, N > block_size.
        batch_size: B, number of windows.
        block_size: T, tokens per window.
        generator: the random source for the offsets (the global one when None).
        device: where to put x and y (``data``'s device when None).

    Returns:
        (x, y), both (B, T) int64.

    Example:
        >>> x, y = get_batch(torch.arange(10), 2, 3, torch.Generator().manual_seed(0))
        >>> bool((y == x + 1).all())
        True
    """
    if not isinstance(data, Tensor):
        raise TypeError(
            f"data must be a torch.Tensor of token ids, got {type(data).__name__}: "
            "wrap it with torch.tensor(ids, dtype=torch.long)"
        )
    if data.dim() != 1 or data.dtype.is_floating_point or data.dtype == torch.bool:
        raise ValueError(
            f"data must be a 1-D integer tensor, got shape {tuple(data.shape)} and "
            f"dtype {data.dtype}: flatten it and use an integer dtype (torch.long)"
        )
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("block_size", block_size)
    if len(data) <= block_size:
        raise ValueError(
            f"data has {len(data)} tokens, need more than block_size={block_size}: "
            "use a smaller block_size or more data"
        )
    starts = torch.randint(
        0,
        len(data) - block_size,
        (batch_size,),
        generator=generator,
        device=generator.device if generator is not None else "cpu",
    )
    # (B, T): row b holds the positions starts[b] .. starts[b] + block_size - 1
    offsets = starts.to(data.device)[:, None] + torch.arange(block_size, device=data.device)
    x = data[offsets].long()
    y = data[offsets + 1].long()
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y


# --------------------------------------------------------------------------------------------
# Learning-rate schedule and gradient clipping
# --------------------------------------------------------------------------------------------


def lr_at(step: int, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate at ``step``: linear warmup from 0, cosine decay to ``min_lr``, then flat.

    During warmup (``step < warmup_steps``) the rate is ``max_lr * step / warmup_steps``: step
    0 gets 0 and the peak comes at ``warmup_steps``. From ``warmup_steps`` to ``total_steps``
    it follows half a cosine from ``max_lr`` down to ``min_lr``; after ``total_steps`` it stays
    at ``min_lr`` (Hugging Face's schedule would climb the cosine back up; ours does not).
    On ``0..total_steps`` it equals transformers'
    ``get_cosine_with_min_lr_schedule_with_warmup(opt, warmup_steps, total_steps, min_lr=min_lr)``.

    Args:
        step: optimizer step, 0-based.
        max_lr: peak rate, reached at the end of warmup.
        min_lr: final rate, 0 <= min_lr <= max_lr.
        warmup_steps: number of warmup steps (0 for none), < total_steps.
        total_steps: step at which the cosine reaches ``min_lr``.

    Example:
        >>> [round(lr_at(s, 1.0, 0.0, 2, 6), 3) for s in range(8)]
        [0.0, 0.5, 1.0, 0.854, 0.5, 0.146, 0.0, 0.0]
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    if not 0 <= min_lr <= max_lr:
        raise ValueError(f"need 0 <= min_lr <= max_lr, got min_lr={min_lr}, max_lr={max_lr}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps < total_steps, got warmup_steps={warmup_steps}, "
            f"total_steps={total_steps}: use fewer warmup steps (or more steps)"
        )
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def clip_grad_norm(params: Iterable[Tensor], max_norm: float) -> float:
    """Scale all gradients in place so that their joint L2 norm is at most ``max_norm``.

    The joint norm is the norm of all gradients concatenated into one vector. Parameters
    without a gradient are skipped. Like ``torch.nn.utils.clip_grad_norm_``, the scale is
    ``min(1, max_norm / (norm + 1e-6))``.

    Args:
        params: the parameters (e.g. ``model.parameters()``).
        max_norm: the largest norm allowed, > 0.

    Returns:
        The joint norm before clipping, as a float.
    """
    if isinstance(params, Tensor):
        params = [params]
    if not max_norm > 0:
        raise ValueError(
            f"max_norm must be > 0, got {max_norm}: to disable clipping, do not call "
            "clip_grad_norm (or pass grad_clip=None to train)"
        )
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norms = torch.stack([torch.linalg.vector_norm(g.detach()).to(grads[0].device) for g in grads])
    total = torch.linalg.vector_norm(norms)
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    with torch.no_grad():
        for g in grads:
            g.mul_(scale.to(g.device))
    return total.item()


# --------------------------------------------------------------------------------------------
# AdamW
# --------------------------------------------------------------------------------------------


def adamw_update(
    param: Tensor,
    grad: Tensor,
    m: Tensor,
    v: Tensor,
    step: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
) -> tuple[Tensor, Tensor, Tensor]:
    """One AdamW update of one tensor, as a pure function (the inputs are left untouched).

    At step ``t`` (1-based), with gradient ``g``::

        m' = beta1 * m + (1 - beta1) * g                    # first moment
        v' = beta2 * v + (1 - beta2) * g * g                # second moment
        m_hat = m' / (1 - beta1 ** t);  v_hat = v' / (1 - beta2 ** t)
        param' = param * (1 - lr * weight_decay) - lr * m_hat / (sqrt(v_hat) + eps)

    The decay multiplies the old parameter (decoupled: it never enters m or v). One call
    equals one ``torch.optim.AdamW`` step on that tensor (``tests/test_training.py``).

    Args:
        param, grad, m, v: tensors of the same shape; m and v start at zeros.
        step: t, the number of this update, 1 for the first.
        lr: learning rate.
        betas: decay rates of m and v.
        eps: added to sqrt(v_hat).
        weight_decay: decoupled decay rate.

    Returns:
        (new_param, new_m, new_v).

    Example:
        >>> p, m, v = adamw_update(torch.ones(1), torch.full((1,), 2.0), torch.zeros(1),
        ...                        torch.zeros(1), 1, 0.1, weight_decay=0.0)
        >>> round(p.item(), 4)   # the first step moves by lr * sign(g)
        0.9
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be an int >= 1 (the first update is step 1), got {step!r}")
    shapes = {tuple(t.shape) for t in (param, grad, m, v)}
    if len(shapes) != 1:
        raise ValueError(
            f"param, grad, m and v must have the same shape, got "
            f"{[tuple(t.shape) for t in (param, grad, m, v)]}"
        )
    beta1, beta2 = betas
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
    if lr < 0 or eps < 0 or weight_decay < 0:
        raise ValueError(f"lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}")
    new_m = beta1 * m + (1 - beta1) * grad
    new_v = beta2 * v + (1 - beta2) * grad * grad
    m_hat = new_m / (1 - beta1**step)
    v_hat = new_v / (1 - beta2**step)
    new_param = param * (1 - lr * weight_decay) - lr * m_hat / (v_hat.sqrt() + eps)
    return new_param, new_m, new_v


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), written out step by step.

    For each parameter ``p`` with gradient ``g``, at step ``t = 1, 2, ...``::

        p  <- p * (1 - lr * weight_decay)            # decay, decoupled from the gradient
        m  <- beta1 * m + (1 - beta1) * g            # first moment (momentum)
        v  <- beta2 * v + (1 - beta2) * g * g        # second moment
        m_hat = m / (1 - beta1 ** t)                 # bias correction: m, v start at 0
        v_hat = v / (1 - beta2 ** t)
        p  <- p - lr * m_hat / (sqrt(v_hat) + eps)

    It equals ``torch.optim.AdamW`` with the same arguments (up to float rounding).

    Args:
        params: parameters or parameter groups (dicts with "params" and any option below).
        lr: learning rate.
        betas: decay rates of the two moment estimates.
        eps: added to the denominator for stability.
        weight_decay: decoupled decay rate (0 turns AdamW into Adam).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """Apply one update to every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise TypeError("AdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]

                p.mul_(1 - lr * wd)
                m.lerp_(g, 1 - beta1)  # m + (1 - beta1) * (g - m)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                bias1 = 1 - beta1**t
                bias2 = 1 - beta2**t
                denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
                p.addcdiv_(m, denom, value=-lr / bias1)
        return loss


def configure_optimizer(
    model: nn.Module,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    fast: bool = False,
) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (weights of Linear and Embedding layers).

    Biases and normalisation gains (1-D tensors) are not decayed: shrinking them towards 0
    does not regularise anything useful. Tied weights appear once.

    Args:
        model: the model to optimise.
        lr: initial learning rate (``train`` overwrites it every step with :func:`lr_at`).
        weight_decay: decay rate of the matrices.
        betas: Adam's moment decay rates (0.95 for beta2 is the usual choice for LMs).
        fast: return ``torch.optim.AdamW`` with its fused kernel (one kernel updates every
            tensor; about 10x faster than the per-tensor loop on the course GPT) instead of the
            lesson's :class:`AdamW`. Same update: ``tests/test_training.py`` proves them equal.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if fast:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **_fast_adamw_kwargs(params))
    return AdamW(groups, lr=lr, betas=betas)


_FUSED_ADAMW_DEVICES = ("cpu", "cuda", "mps", "xpu")  # where torch.optim.AdamW(fused=True) runs


def _fast_adamw_kwargs(params: list[Tensor]) -> dict[str, bool]:
    """``fused=True`` where torch has the fused kernel (floating-point tensors on a device
    above), else ``foreach=True`` (one call per operation for all tensors together)."""
    if params and all(
        p.device.type in _FUSED_ADAMW_DEVICES and p.is_floating_point() for p in params
    ):
        return {"fused": True}
    return {"foreach": True}


# --------------------------------------------------------------------------------------------
# Loss, evaluation and the training loop
# --------------------------------------------------------------------------------------------


def lm_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean next-token cross-entropy of ``model`` on inputs x (B, T) and targets y (B, T)."""
    logits = model(input_ids=x).logits  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


@torch.no_grad()
def estimate_loss(
    model: nn.Module,
    data: Tensor,
    *,
    batch_size: int,
    block_size: int,
    eval_iters: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> float:
    """Mean loss of ``model`` over ``eval_iters`` random batches of ``data``, in eval mode.

    Args:
        model: the model; its train/eval mode is restored afterwards.
        data: (N,) token ids.
        batch_size, block_size: B and T of each batch.
        eval_iters: number of batches to average.
        generator: random source for the batches; None means a fresh generator seeded with
            ``EVAL_SEED``, so that every call sees the same batches.
        device: where to run (the model's device when None).

    Returns:
        The mean loss (a float, in nats per token).
    """
    _check_positive_int("eval_iters", eval_iters)
    if generator is None:
        generator = torch.Generator().manual_seed(EVAL_SEED)
    device = device if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    try:
        losses = [
            lm_loss(model, *get_batch(data, batch_size, block_size, generator, device)).item()
            for _ in range(eval_iters)
        ]
    finally:
        model.train(was_training)
    return sum(losses) / len(losses)


def train(
    model: nn.Module,
    train_data: Tensor,
    val_data: Tensor,
    *,
    steps: int,
    batch_size: int,
    block_size: int,
    max_lr: float,
    min_lr: float,
    warmup_steps: int,
    weight_decay: float,
    grad_clip: float | None,
    eval_every: int,
    eval_iters: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
    start_step: int = 0,
    end_step: int | None = None,
) -> dict[str, list[float]]:
    """Train a causal LM on a token stream with AdamW, warmup + cosine and gradient clipping.

    Each step: draw a batch with :func:`get_batch`, set the rate to :func:`lr_at`, compute the
    loss, backpropagate, clip, update. Every ``eval_every`` steps (from step 0) and after the
    last step, the mean loss over ``eval_iters`` fixed batches of each split is recorded.

    To train in pieces (e.g. to checkpoint), keep ``steps`` as the length of the whole schedule
    and run ``[start_step, end_step)``; pass the optimizer (and generator) along, or restore
    them with :func:`load_checkpoint`. The pieces together equal one uninterrupted run.

    Several processes (``torchrun``, after :func:`init_distributed`): every rank calls ``train``
    with the same arguments and the same ``generator`` seed. ``batch_size`` is then the *global*
    batch: each step every rank draws the same ``batch_size`` windows and trains on its own
    ``batch_size // world_size`` of them, and DistributedDataParallel averages the gradients,
    so the run equals one process with ``batch_size`` (up to float rounding; dropout aside,
    which draws from each rank's own random state). ``batch_loss`` is the mean over all ranks;
    evaluations run on every rank and agree; only rank 0 shows a progress bar.

    Args:
        model: a causal LM, ``model(input_ids=x).logits`` of shape (B, T, V); trained in place.
        train_data, val_data: (N,) token ids.
        steps: total optimizer steps of the schedule.
        batch_size, block_size: B (the global batch when distributed) and T.
        max_lr, min_lr, warmup_steps: the schedule, see :func:`lr_at` (total_steps = steps).
        weight_decay: AdamW decay for matrices (see :func:`configure_optimizer`).
        grad_clip: max gradient norm, or None for no clipping.
        eval_every: evaluate every this many steps.
        eval_iters: batches per evaluation and split.
        generator: random source of the training batches (the global one when None; required,
            with the same seed on every rank, when distributed).
        device: where to train; the model is moved there (its current device when None).
        progress: show a tqdm bar with the loss and rate.
        optimizer: an optimizer to continue with (when None, a new
            ``configure_optimizer(model, fast=True)``: torch's fused AdamW, the same update
            as the lesson's :class:`AdamW`, faster).
        start_step: first step to run (to resume).
        end_step: stop before this step (``steps`` when None).

    Returns:
        History, a dict of equal-length lists, one entry per evaluation: ``step``,
        ``train_loss``, ``val_loss``, ``lr``; plus ``batch_loss``, the loss of every training
        batch run (``end_step - start_step`` entries).
    """
    from tqdm.auto import tqdm

    for name, value in [("steps", steps), ("eval_every", eval_every), ("eval_iters", eval_iters)]:
        _check_positive_int(name, value)
    end_step = steps if end_step is None else end_step
    if not 0 <= start_step <= end_step <= steps:
        raise ValueError(
            f"need 0 <= start_step <= end_step <= steps, got start_step={start_step}, "
            f"end_step={end_step}, steps={steps}"
        )
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0 or None (no clipping), got {grad_clip}")
    lr_at(0, max_lr, min_lr, warmup_steps, steps)  # validates the schedule up front
    if isinstance(model, DistributedDataParallel):
        model = model.module  # train wraps it itself
    device = torch.device(device) if device is not None else _model_device(model)
    model.to(device)
    if optimizer is None:
        optimizer = configure_optimizer(model, lr=max_lr, weight_decay=weight_decay, fast=True)
    rank, world_size = _rank_and_world_size()
    local_batch = slice(None)  # this rank's rows of each global batch
    forward = model
    if world_size > 1:
        if batch_size % world_size:
            raise ValueError(
                f"batch_size={batch_size} is the global batch and must be divisible "
                f"by the {world_size} processes: use a multiple of {world_size}"
            )
        if generator is None:
            raise ValueError(
                "with several processes every rank must draw the same global batch: "
                "pass generator=torch.Generator().manual_seed(SEED), same SEED on all"
            )
        per_rank = batch_size // world_size
        local_batch = slice(rank * per_rank, (rank + 1) * per_rank)
        forward = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    history: dict[str, list[float]] = {
        "step": [],
        "train_loss": [],
        "val_loss": [],
        "lr": [],
        "batch_loss": [],
    }

    def evaluate(step: int) -> None:
        kwargs = dict(
            batch_size=batch_size, block_size=block_size, eval_iters=eval_iters, device=device
        )
        history["step"].append(step)
        history["train_loss"].append(estimate_loss(model, train_data, **kwargs))
        history["val_loss"].append(estimate_loss(model, val_data, **kwargs))
        history["lr"].append(lr_at(step, max_lr, min_lr, warmup_steps, steps))

    model.train()
    bar = tqdm(
        range(start_step, end_step), disable=not progress or rank != 0, desc="train", unit="step"
    )
    for step in bar:
        if step % eval_every == 0:
            evaluate(step)
        lr = lr_at(step, max_lr, min_lr, warmup_steps, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_data, batch_size, block_size, generator, device)
        x, y = x[local_batch], y[local_batch]
        loss = lm_loss(forward, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # with several processes, DDP averages the gradients across ranks here
        if grad_clip is not None:
            clip_grad_norm(model.parameters(), grad_clip)
        optimizer.step()
        history["batch_loss"].append(_mean_over_ranks(loss.detach(), world_size))
        bar.set_postfix(
            loss=f"{history['batch_loss'][-1]:.3f}",
            lr=f"{lr:.2e}",
            val_loss=f"{history['val_loss'][-1]:.3f}" if history["val_loss"] else "-",
            refresh=False,
        )
    if end_step == steps:
        evaluate(steps)
    bar.close()
    return history


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    generator: torch.Generator | None = None,
) -> None:
    """Save everything needed to resume training exactly at ``step``.

    That is the model and optimizer state, the step, the global torch random state (CPU and,
    if present, CUDA: dropout draws from it) and the state of ``generator`` (the batch sampler).

    With several processes, call it on every rank: only rank 0 writes (the ranks hold the same
    weights), and every rank returns once the file is complete.

    Args:
        path: file to write (a ``.pt`` file; parent folders are created).
        model, optimizer: what to save (a DistributedDataParallel wrapper is saved unwrapped).
        step: the next step to run when resuming.
        generator: the batch generator passed to :func:`train`, if any.
    """
    rank, world_size = _rank_and_world_size()
    if rank == 0:
        _write_checkpoint(Path(path), model, optimizer, step, generator)
    if world_size > 1:
        torch.distributed.barrier()


def _write_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    generator: torch.Generator | None,
) -> None:
    if isinstance(model, DistributedDataParallel):
        model = model.module  # plain parameter names, loadable without DDP
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        rng["generator"] = generator.get_state()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": int(step),
            "rng": rng,
        },
        path,
    )


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    generator: torch.Generator | None = None,
) -> int:
    """Restore a checkpoint written by :func:`save_checkpoint` in place; return its step.

    The global torch random state is restored too, so that a resumed run continues exactly
    as the uninterrupted one would have.

    Args:
        path: the checkpoint file.
        model: a model with the same architecture (its device is kept).
        optimizer: an optimizer over ``model``'s parameters, built the same way (or None to
            load only the weights).
        generator: the batch generator to restore (must have been saved).

    Returns:
        The saved step: pass it as ``start_step`` to :func:`train`.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["model"])
    if optimizer is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    rng = checkpoint["rng"]
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if generator is not None:
        if "generator" not in rng:
            raise ValueError(f"{path} holds no generator state: pass generator= to save_checkpoint")
        generator.set_state(rng["generator"])
    return checkpoint["step"]


# --------------------------------------------------------------------------------------------
# Several processes (torchrun + DistributedDataParallel)
# --------------------------------------------------------------------------------------------


def init_distributed(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group that ``torchrun`` describes; return ``(rank, world_size, device)``.

    ``torchrun --nproc_per_node N script.py`` starts N copies of the script with ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. Each copy calls
    this, then :func:`train` with the same arguments. Backend: ``nccl`` (one GPU per process,
    ``cuda:LOCAL_RANK``) when CUDA is available, else ``gloo`` on the CPU. Started without
    torchrun (no ``WORLD_SIZE``), it initialises nothing and returns ``(0, 1, device)``.

    Args:
        backend: force ``"gloo"`` or ``"nccl"`` (None: chosen as above).

    Returns:
        (rank, world_size, device): pass ``device`` to :func:`train`; rank 0 is the one that
        prints and writes.

    Example (two CPU processes)::

        torchrun --standalone --nproc_per_node 2 train_script.py
    """
    from course_lib.devices import device as preferred_device

    if "WORLD_SIZE" not in os.environ:
        return 0, 1, preferred_device()
    if torch.distributed.is_initialized():
        rank, world_size = _rank_and_world_size()
    else:
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"backend must be 'gloo' (CPU) or 'nccl' (GPU), got {backend!r}")
        if backend == "nccl" and not torch.cuda.is_available():
            raise ValueError("backend='nccl' needs CUDA GPUs: use backend='gloo' on the CPU")
        torch.distributed.init_process_group(backend)
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if torch.distributed.get_backend() == "nccl":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return rank, world_size, torch.device("cuda", local_rank)
    return rank, world_size, torch.device("cpu")


def _rank_and_world_size() -> tuple[int, int]:
    """(rank, world_size) of the initialised process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _mean_over_ranks(value: Tensor, world_size: int) -> float:
    """The mean of a scalar over all ranks (the value itself with one process)."""
    if world_size > 1:
        value = value.clone()
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.SUM)
        value /= world_size
    return value.item()


# --------------------------------------------------------------------------------------------
# Compute
# --------------------------------------------------------------------------------------------


def train_flops(n_params: int, n_tokens: int) -> int:
    """Training compute estimate ``6 * N * D`` in FLOPs (floating-point operations).

    Per token and parameter, the forward pass costs 2 FLOPs (a multiply and an add) and the
    backward pass about 4 (gradients for activations and weights). Attention's own FLOPs,
    which grow with the context length, are left out.

    Args:
        n_params: N, the number of parameters.
        n_tokens: D, the number of training tokens.

    Example:
        >>> f"{train_flops(175_000_000_000, 300_000_000_000):.2e}"   # GPT-3
        '3.15e+23'
    """
    for name, value in [("n_params", n_params), ("n_tokens", n_tokens)]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return 6 * n_params * n_tokens


def mfu(n_params: int, tokens_per_second: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s (``6 * N`` per token) over the peak.

    Args:
        n_params: N, the number of parameters.
        tokens_per_second: measured training throughput.
        peak_flops: the hardware's peak FLOP/s for the dtype used (e.g. 989e12 for an H100's
            bf16 dense tensor cores).

    Returns:
        A fraction in [0, 1] for a plausible measurement (0.3 to 0.5 is good on GPUs).
    """
    if not peak_flops > 0:
        raise ValueError(f"peak_flops must be > 0, got {peak_flops}")
    if tokens_per_second < 0 or n_params < 0:
        raise ValueError("n_params and tokens_per_second must be >= 0")
    return 6 * n_params * tokens_per_second / peak_flops


def training_days(
    n_params: float, n_tokens: float, n_gpus: int, peak_flops: float, mfu: float
) -> float:
    """Wall-clock days to train ``n_params`` parameters on ``n_tokens`` tokens.

    ``6 N D`` FLOPs (:func:`train_flops`) at ``n_gpus * peak_flops * mfu`` FLOP/s, in days of
    86,400 s. Sizes may be ints or floats (``175e9``); Python's int / float division is
    correctly rounded, so GPT-3-scale ints (``6 N D`` about 3e23) neither overflow nor lose
    precision.

    Args:
        n_params: N, the number of parameters.
        n_tokens: D, the number of training tokens.
        n_gpus: how many accelerators work together.
        peak_flops: one accelerator's peak FLOP/s in the training dtype.
        mfu: the fraction of the peak actually achieved (model FLOPs utilisation, 0 < mfu <= 1).

    Example:
        >>> round(training_days(175_000_000_000, 300_000_000_000, 1024, 312e12, 0.4), 1)
        28.5
    """
    for name, value in [("n_params", n_params), ("n_tokens", n_tokens)]:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    for name, value in [("n_gpus", n_gpus), ("peak_flops", peak_flops), ("mfu", mfu)]:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if mfu > 1:
        raise ValueError(f"mfu is a fraction of the peak (0 < mfu <= 1), got {mfu}: 40% is 0.4")
    return 6 * n_params * n_tokens / (n_gpus * peak_flops * mfu) / 86_400


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")
