"""Tests for course_lib.training: each piece against torch's own, and the loop end to end."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
from torch import nn

from course_lib import training
from course_lib.training import (
    AdamW,
    adamw_update,
    clip_grad_norm,
    configure_optimizer,
    estimate_loss,
    get_batch,
    load_checkpoint,
    lr_at,
    mfu,
    save_checkpoint,
    train,
    train_flops,
)


def tiny_gpt2(seed: int = 0, vocab_size: int = 32):
    """A tiny random Hugging Face GPT-2 (no download): the loop must work for HF models."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=32,
        n_embd=16,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def toy_tokens(n: int = 2000, vocab_size: int = 32) -> torch.Tensor:
    """A learnable stream: mostly counts up by one modulo V, with some noise."""
    g = torch.Generator().manual_seed(0)
    ids = torch.arange(n) % vocab_size
    noise = torch.rand(n, generator=g) < 0.1
    return torch.where(noise, torch.randint(0, vocab_size, (n,), generator=g), ids)


# --- get_batch --------------------------------------------------------------------------------


def test_get_batch_shapes_and_shift():
    data = torch.arange(100, 200)
    x, y = get_batch(data, 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert x.dtype == torch.long
    assert torch.equal(y, x + 1)  # consecutive in a counting stream: y is x shifted by one
    assert torch.equal(x[:, 1:], x[:, :-1] + 1)  # each row is a contiguous window
    assert x.min() >= 100 and y.max() <= 199


def test_get_batch_covers_every_start_and_is_seeded():
    data = torch.arange(6)
    x, _ = get_batch(data, 400, 2, torch.Generator().manual_seed(0))
    assert set(x[:, 0].tolist()) == {0, 1, 2, 3}  # every valid start, never past the end
    a = get_batch(toy_tokens(), 3, 5, torch.Generator().manual_seed(7))
    b = get_batch(toy_tokens(), 3, 5, torch.Generator().manual_seed(7))
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_get_batch_keeps_small_int_storage():
    x, y = get_batch(torch.arange(50, dtype=torch.int16), 2, 4, torch.Generator().manual_seed(0))
    assert x.dtype == y.dtype == torch.long


@pytest.mark.parametrize(
    "data, kwargs, match",
    [
        ([1, 2, 3], {}, "torch.Tensor"),
        (torch.rand(10), {}, "integer"),
        (torch.zeros(2, 5, dtype=torch.long), {}, "1-D"),
        (torch.arange(4), {"block_size": 4}, "more than block_size"),
        (torch.arange(4), {"block_size": 5}, "more than block_size"),
        (torch.arange(10), {"block_size": 0}, "block_size"),
        (torch.arange(10), {"batch_size": 0}, "batch_size"),
    ],
)
def test_get_batch_rejects_bad_input(data, kwargs, match):
    args = {"batch_size": 2, "block_size": 3} | kwargs
    with pytest.raises((TypeError, ValueError), match=match):
        get_batch(data, **args)


# --- lr_at ------------------------------------------------------------------------------------


def test_lr_schedule_shape():
    max_lr, min_lr, warmup, total = 1e-3, 1e-4, 10, 110
    lrs = [lr_at(s, max_lr, min_lr, warmup, total) for s in range(130)]
    assert lrs[0] == 0.0  # warmup starts at 0 (as Hugging Face's schedules)
    assert all(b > a for a, b in pairwise(lrs[: warmup + 1]))  # linear warmup, increasing
    assert lrs[4] - lrs[3] == pytest.approx(max_lr / warmup)  # linear
    assert lrs[warmup - 1] == pytest.approx(max_lr * (warmup - 1) / warmup)
    assert lrs[warmup] == max_lr  # the peak, where the cosine starts
    assert max(lrs) == pytest.approx(max_lr)
    assert lrs[60] == pytest.approx((max_lr + min_lr) / 2)  # cosine midpoint
    assert lrs[35] > (max_lr + min_lr) / 2 + 1e-5  # cosine, not linear: above the chord ...
    assert lrs[35] == pytest.approx(min_lr + 0.5 * (1 + math.cos(math.pi / 4)) * (max_lr - min_lr))
    assert all(b <= a for a, b in pairwise(lrs[warmup:]))  # then never increasing
    assert lrs[total] == pytest.approx(min_lr)
    assert lrs[total:] == [min_lr] * (130 - total)  # flat after the end


def test_lr_schedule_edge_cases():
    assert lr_at(0, 1.0, 0.1, 0, 10) == 1.0  # no warmup: start at the peak
    assert lr_at(9, 1.0, 0.1, 9, 10) == 1.0  # the longest warmup: one cosine step
    assert lr_at(10, 1.0, 0.1, 9, 10) == pytest.approx(0.1)
    assert lr_at(3, 2.0, 2.0, 0, 10) == 2.0  # constant


@pytest.mark.parametrize(
    "warmup, total, min_lr",
    [(10, 110, 1e-4), (0, 50, 0.0), (1, 2, 3e-4), (37, 200, 6e-4), (99, 100, 1e-5)],
)
def test_lr_at_equals_transformers_schedule(warmup, total, min_lr):
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    max_lr = 1e-3
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)
    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, total, min_lr=min_lr)
    theirs = []
    for _ in range(total + 1):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [lr_at(s, max_lr, min_lr, warmup, total) for s in range(total + 1)]
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)
    # past the end HF climbs back up the cosine; ours stays at min_lr
    assert (
        opt.param_groups[0]["lr"] > min_lr
        and lr_at(total + 1, max_lr, min_lr, warmup, total) == min_lr
    )


@pytest.mark.parametrize(
    "args, match",
    [
        ((-1, 1.0, 0.0, 1, 10), "step"),
        ((1.5, 1.0, 0.0, 1, 10), "step"),
        ((0, 1.0, 2.0, 1, 10), "min_lr"),
        ((0, 1.0, 0.0, 11, 10), "warmup_steps < total_steps"),
        ((0, 1.0, 0.0, 10, 10), "warmup_steps < total_steps"),
        ((0, 1.0, 0.0, -1, 10), "warmup_steps"),
        ((0, 1.0, -0.1, 1, 10), "min_lr"),
    ],
)
def test_lr_at_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        lr_at(*args)


# --- clip_grad_norm ---------------------------------------------------------------------------


def _params_with_grads(seed: int, scale: float):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g, requires_grad=True) for s in [(3, 4), (5,), (2, 2, 2)]]
    for p in params[:2]:  # the last one has no gradient
        p.grad = scale * torch.randn(p.shape, generator=g)
    return params


@pytest.mark.parametrize("scale, max_norm", [(10.0, 1.0), (0.01, 1.0), (1.0, 0.5), (3.0, 100.0)])
def test_clip_grad_norm_equals_torch(scale, max_norm):
    ours, theirs = _params_with_grads(0, scale), _params_with_grads(0, scale)
    norm = clip_grad_norm(ours, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert isinstance(norm, float)
    assert norm == pytest.approx(expected.item(), rel=1e-6)
    for a, b in zip(ours, theirs):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7)
    after = math.sqrt(sum(p.grad.pow(2).sum().item() for p in ours if p.grad is not None))
    assert after <= max_norm * (1 + 1e-5)


def test_clip_grad_norm_handles_generators_and_no_grads():
    params = _params_with_grads(1, 5.0)
    norm = clip_grad_norm((p for p in params), 1.0)  # a one-shot generator works
    assert norm > 1.0
    assert clip_grad_norm([torch.zeros(3, requires_grad=True)], 1.0) == 0.0
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(params, 0.0)


# --- AdamW ------------------------------------------------------------------------------------


def _run_optimizer(opt_class, kwargs, steps=100):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    opt = opt_class(model.parameters(), **kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 5, generator=g)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"lr": 1e-2, "weight_decay": 0.0},
        {"lr": 3e-3, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1},
        {"lr": 1e-1, "betas": (0.0, 0.5), "weight_decay": 0.5},
    ],
)
def test_adamw_equals_torch(kwargs):
    ours = _run_optimizer(AdamW, kwargs)
    theirs = _run_optimizer(torch.optim.AdamW, kwargs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"lr": 1e-2, "weight_decay": 0.0},
        {"lr": 3e-3, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1},
        {"lr": 1e-1, "betas": (0.0, 0.5), "eps": 1e-3, "weight_decay": 0.5},
    ],
)
def test_adamw_update_equals_one_torch_step_each_time(kwargs):
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    theirs = torch.nn.Parameter(p0.clone())
    opt = torch.optim.AdamW([theirs], **kwargs)
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for step in range(1, 8):  # several steps: the moments and bias corrections carry over
        grad = torch.randn(4, 3, generator=g, dtype=torch.float64) * 10.0 ** -(step % 4)
        theirs.grad = grad.clone()
        opt.step()
        inputs = [t.clone() for t in (p, grad, m, v)]
        p, m, v = adamw_update(p, grad, m, v, step, **{"lr": 1e-3} | kwargs)
        assert all(torch.equal(a, b) for a, b in zip(inputs, (inputs[0], grad, *inputs[2:])))
        state = opt.state[theirs]
        torch.testing.assert_close(p, theirs.detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(m, state["exp_avg"], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(v, state["exp_avg_sq"], rtol=1e-12, atol=1e-14)


EPS32 = torch.finfo(torch.float32).eps


def test_fast_optimizer_equals_the_lesson_adamw():
    """``configure_optimizer(fast=True)`` (torch's fused AdamW, what ``train`` uses) makes the
    same updates as the lesson's per-tensor ``AdamW``, step after step.

    Both get the same gradients every step. Each step changes a weight by at most about lr
    (|m_hat / sqrt(v_hat)| <= 1 for these betas) plus the decay, each computed with a few float32
    roundings, so after k steps the two may differ by k * 8 * eps32 * (lr + |w|).
    """
    from course_lib.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    lesson = GPT(GPTConfig(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4))
    fast = GPT(lesson.config)
    fast.load_state_dict(lesson.state_dict())
    start = [p.detach().clone() for p in lesson.parameters()]
    lr, steps = 3e-3, 6
    opt_lesson = configure_optimizer(lesson, lr=lr, weight_decay=0.1)
    opt_fast = configure_optimizer(fast, lr=lr, weight_decay=0.1, fast=True)
    assert type(opt_lesson) is AdamW and type(opt_fast) is torch.optim.AdamW
    assert opt_fast.defaults["fused"]  # the CPU has the fused kernel
    assert [g["weight_decay"] for g in opt_fast.param_groups] == [0.1, 0.0]
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for a, b in zip(lesson.parameters(), fast.parameters()):
            scale = 10.0 ** torch.randint(-3, 1, (), generator=g)  # gradients of every size
            a.grad = torch.randn(a.shape, generator=g) * scale
            b.grad = a.grad.clone()
        opt_lesson.step()
        opt_fast.step()
    for (name, a), b, a0 in zip(lesson.named_parameters(), fast.parameters(), start):
        tol = steps * 8 * EPS32 * (lr + a.detach().abs())
        diff = (a - b).detach().abs()
        assert bool((diff <= tol).all()), f"{name}: {diff.max():.3g} > tolerance"
        assert (a - a0).abs().max() > 100 * tol.max()  # both really moved, far beyond the tolerance


def test_fast_optimizer_falls_back_to_foreach():
    assert training._fast_adamw_kwargs([torch.zeros(2, device="meta")]) == {"foreach": True}
    assert training._fast_adamw_kwargs([torch.zeros(2)]) == {"fused": True}


def test_adamw_update_is_pure():
    tensors = [torch.randn(5, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    tensors[3] = tensors[3].abs()
    copies = [t.clone() for t in tensors]
    out = adamw_update(*tensors, 3, 0.1)
    assert all(torch.equal(a, b) for a, b in zip(tensors, copies))
    assert all(o is not t for o, t in zip(out, tensors))


@pytest.mark.parametrize(
    "step, kwargs, match",
    [
        (0, {}, "step must be an int >= 1"),
        (2.0, {}, "step"),
        (1, {"betas": (0.9, 1.0)}, "betas"),
        (1, {"lr": -1.0}, ">= 0"),
    ],
)
def test_adamw_update_rejects_bad_input(step, kwargs, match):
    t = torch.ones(3)
    with pytest.raises(ValueError, match=match):
        adamw_update(t, t, t, t, step, **{"lr": 0.1} | kwargs)
    with pytest.raises(ValueError, match="same shape"):
        adamw_update(t, torch.ones(2), t, t, 1, 0.1)


def test_adamw_weight_decay_is_decoupled():
    # zero gradient: Adam's update is 0, so only the decay acts: p <- p * (1 - lr * wd)
    p = torch.nn.Parameter(torch.ones(3))
    opt = AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.zeros(3)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((3,), 0.95))


def test_adamw_param_groups_and_state_dict_roundtrip():
    torch.manual_seed(0)
    model = tiny_gpt2()
    opt = configure_optimizer(model, lr=1e-3, weight_decay=0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert all(p.dim() >= 2 for p in opt.param_groups[0]["params"])
    assert all(p.dim() < 2 for p in opt.param_groups[1]["params"])
    n = sum(len(g["params"]) for g in opt.param_groups)
    assert n == len(list(model.parameters()))  # tied weights counted once, none forgotten


@pytest.mark.parametrize(
    "kwargs", [{"lr": -1.0}, {"betas": (0.9, 1.0)}, {"eps": -1e-8}, {"weight_decay": -0.1}]
)
def test_adamw_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        AdamW([torch.nn.Parameter(torch.ones(2))], **kwargs)


# --- train, estimate_loss, checkpoints -----------------------------------------------------


TRAIN_KW = dict(
    batch_size=8,
    block_size=16,
    max_lr=1e-2,
    min_lr=1e-3,
    warmup_steps=5,
    weight_decay=0.1,
    grad_clip=1.0,
    eval_every=10,
    eval_iters=2,
    progress=False,
)


def test_train_decreases_loss_on_a_tiny_model():
    data = toy_tokens()
    model = tiny_gpt2()
    history = train(
        model,
        data[:1600],
        data[1600:],
        steps=60,
        generator=torch.Generator().manual_seed(0),
        **TRAIN_KW,
    )
    assert history["step"] == [0, 10, 20, 30, 40, 50, 60]
    assert len(history["train_loss"]) == len(history["val_loss"]) == len(history["lr"]) == 7
    assert len(history["batch_loss"]) == 60
    assert history["val_loss"][0] == pytest.approx(math.log(32), abs=0.3)  # random init: ~ln V
    assert history["val_loss"][-1] < history["val_loss"][0] - 1.0  # it learned the pattern
    assert history["train_loss"][-1] < history["train_loss"][0] - 1.0
    assert history["lr"][0] == 0.0 and history["lr"][-1] == 1e-3
    assert model.training  # the eval passes restore train mode


def test_train_equals_a_reference_loop_step_by_step():
    """``train`` against the textbook loop built from torch's own parts: torch.optim.AdamW,
    torch.nn.utils.clip_grad_norm_ and a LambdaLR schedule, on the same batches.

    Only the optimizer kernels (fused vs per-tensor) and the clipping code differ, each by a few
    float32 roundings per step: weights agree to steps * 16 * eps32 * (max_lr + |w|), and each
    batch loss (a mean of log-probabilities of size ~ln V) to a few eps32 of ln V per step.
    """
    from course_lib.gpt import GPT, GPTConfig

    V, steps = 40, 8
    data = toy_tokens(3000, V)
    kw = dict(
        steps=steps,
        batch_size=4,
        block_size=16,
        max_lr=1e-2,
        min_lr=1e-3,
        warmup_steps=3,
        weight_decay=0.1,
        grad_clip=0.5,
        eval_every=100,
        eval_iters=1,
        progress=False,
    )
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, n_positions=16, n_embd=32, n_layer=2, n_head=4))
    ref = GPT(model.config)
    ref.load_state_dict(model.state_dict())
    history = train(
        model, data[:2500], data[2500:], generator=torch.Generator().manual_seed(7), **kw
    )

    decay = [p for p in ref.parameters() if p.dim() >= 2]
    no_decay = [p for p in ref.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=kw["max_lr"],
        betas=(0.9, 0.95),
        foreach=False,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: lr_at(s, kw["max_lr"], kw["min_lr"], kw["warmup_steps"], steps) / kw["max_lr"],
    )
    g = torch.Generator().manual_seed(7)
    losses, norms = [], []
    for _ in range(steps):
        x, y = get_batch(data[:2500], kw["batch_size"], kw["block_size"], g)
        loss = torch.nn.functional.cross_entropy(ref(x).logits.flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(ref.parameters(), kw["grad_clip"]).item())
        opt.step()
        schedule.step()
        losses.append(loss.item())

    assert max(norms) > kw["grad_clip"]  # clipping really acted, so it is compared too
    assert len(history["batch_loss"]) == steps
    for step, (ours, theirs) in enumerate(zip(history["batch_loss"], losses)):
        assert ours == pytest.approx(theirs, rel=(step + 1) * 16 * EPS32), step
    C = model.config.n_embd
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        a, b = a.detach(), b.detach()
        if name.endswith("c_attn.bias"):
            # Skip the key bias (channels C:2C): adding one vector to every key shifts all scores
            # of a query equally, so its exact gradient is 0 and what backward returns is rounding
            # noise, which Adam normalises into steps of size ~lr in arbitrary directions.
            a, b = torch.cat([a[:C], a[2 * C :]]), torch.cat([b[:C], b[2 * C :]])
        tol = steps * 16 * EPS32 * (kw["max_lr"] + b.abs())
        assert bool(((a - b).abs() <= tol).all()), f"{name}: {(a - b).abs().max():.3g}"
    assert not all(
        torch.equal(a, b) for a, b in zip(model.parameters(), GPT(model.config).parameters())
    )


@pytest.mark.parametrize("make", ["gpt", "hf"])
def test_lm_loss_equals_the_models_own_label_loss(make):
    """``lm_loss(model, x[:, :-1], x[:, 1:])`` is ``model(x, labels=x).loss``: the model shifts
    labels by one itself, and causality makes the first T - 1 positions' logits the same."""
    from course_lib.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    if make == "gpt":
        model = GPT(GPTConfig(vocab_size=32, n_positions=32, n_embd=16, n_layer=2, n_head=2))
    else:
        model = tiny_gpt2()
    model = model.double().eval()  # float64 weights: the only rounding is the losses' float32
    x = torch.randint(0, 32, (3, 12), generator=torch.Generator().manual_seed(1))
    ours = training.lm_loss(model, x[:, :-1], x[:, 1:])
    theirs = model(x, labels=x).loss
    assert ours.dtype == theirs.dtype == torch.float32
    assert ours.item() == pytest.approx(theirs.item(), rel=8 * EPS32)
    shuffled = training.lm_loss(model, x[:, :-1], x[:, 1:].flip(1))
    assert abs(shuffled.item() - theirs.item()) > 1e-3  # the comparison can tell targets apart


def test_estimate_loss_is_deterministic_and_restores_mode():
    data, model = toy_tokens(), tiny_gpt2()
    model.eval()
    kwargs = dict(batch_size=4, block_size=8, eval_iters=3)
    a, b = estimate_loss(model, data, **kwargs), estimate_loss(model, data, **kwargs)
    assert a == b and not model.training
    x, y = get_batch(data, 4, 8, torch.Generator().manual_seed(training.EVAL_SEED))
    logits = model(x).logits
    first = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
    one = estimate_loss(model, data, batch_size=4, block_size=8, eval_iters=1)
    assert one == pytest.approx(first)  # it is the plain mean next-token cross-entropy


def test_resumed_run_equals_uninterrupted(tmp_path):
    data = toy_tokens()
    kw = dict(TRAIN_KW, steps=30)
    torch.manual_seed(123)
    model_a = tiny_gpt2(seed=5)
    gen_a = torch.Generator().manual_seed(3)
    hist_a = train(model_a, data[:1600], data[1600:], generator=gen_a, **kw)

    # first half, save, then throw everything away
    model_b = tiny_gpt2(seed=5)
    gen_b = torch.Generator().manual_seed(3)
    opt_b = configure_optimizer(model_b, weight_decay=kw["weight_decay"], fast=True)  # train's
    hist_b1 = train(
        model_b, data[:1600], data[1600:], generator=gen_b, optimizer=opt_b, end_step=13, **kw
    )
    save_checkpoint(tmp_path / "ckpt" / "state.pt", model_b, opt_b, 13, generator=gen_b)
    torch.manual_seed(999)  # disturb the global RNG: the checkpoint must restore it
    del model_b, opt_b, gen_b

    model_c = tiny_gpt2(seed=77)  # different weights: all must come from the checkpoint
    opt_c = configure_optimizer(model_c, weight_decay=kw["weight_decay"], fast=True)
    gen_c = torch.Generator().manual_seed(0)
    step = load_checkpoint(tmp_path / "ckpt" / "state.pt", model_c, opt_c, generator=gen_c)
    assert step == 13
    hist_c = train(
        model_c, data[:1600], data[1600:], generator=gen_c, optimizer=opt_c, start_step=step, **kw
    )

    for pa, pc in zip(model_a.parameters(), model_c.parameters()):
        assert torch.equal(pa, pc)
    for key in hist_a:
        assert hist_a[key] == hist_b1[key] + hist_c[key], key


def test_load_checkpoint_without_saved_generator_says_so(tmp_path):
    model = tiny_gpt2()
    opt = configure_optimizer(model)
    save_checkpoint(tmp_path / "c.pt", model, opt, 0)
    with pytest.raises(ValueError, match="generator"):
        load_checkpoint(tmp_path / "c.pt", model, opt, generator=torch.Generator())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"warmup_steps": 50}, "warmup_steps"),
        ({"start_step": 5, "end_step": 3}, "start_step"),
        ({"eval_every": 0}, "eval_every"),
    ],
)
def test_train_rejects_bad_input(kwargs, match):
    data = toy_tokens(200)
    args = dict(TRAIN_KW, steps=10) | kwargs
    with pytest.raises(ValueError, match=match):
        train(tiny_gpt2(), data, data, **args)


# --- compute --------------------------------------------------------------------------------


def test_train_flops_and_mfu():
    assert train_flops(10, 7) == 420
    assert train_flops(175_000_000_000, 300_000_000_000) == pytest.approx(3.15e23)
    assert mfu(1_000_000, 1_000.0, 6e10) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        train_flops(-1, 5)
    with pytest.raises(ValueError):
        train_flops(1.5, 5)
    with pytest.raises(ValueError):
        mfu(1, 1.0, 0.0)


def test_training_days_gpt3_scale_in_ints_and_floats():
    from course_lib.training import training_days

    # 6 N D = 3.15e23 FLOPs on 1024 GPUs at 312 TFLOP/s and 40% MFU: by hand, 28.53 days
    by_hand = 3.15e23 / (1024 * 312e12 * 0.4) / 86_400
    ints = training_days(175_000_000_000, 300_000_000_000, 1024, 312e12, 0.4)
    assert ints == pytest.approx(by_hand, rel=1e-12)
    assert training_days(175e9, 300e9, 1024, 312e12, 0.4) == pytest.approx(ints, rel=1e-15)
    assert training_days(10, 7, 1, 420.0, 1.0) == pytest.approx(1 / 86_400)
    bad_args = [(10, 7, 0, 1.0, 0.5), (10, 7, 1, 1.0, 40), (10, 7, 1, -1.0, 0.5), (-1, 7, 1, 1, 1)]
    for bad in bad_args:
        with pytest.raises(ValueError):
            training_days(*bad)
