"""course_lib.functional against torch.nn.functional and Hugging Face, values and gradients."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from course_lib import functional as cf

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-6}, torch.float64: {"rtol": 1e-10, "atol": 1e-12}}


def randn(*shape, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


# --------------------------------------------------------------------------- softmax family


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_and_log_softmax_match_torch(dtype, dim):
    x = randn(3, 5, 7, dtype=dtype, scale=3.0)
    torch.testing.assert_close(cf.softmax(x, dim), F.softmax(x, dim), **TOL[dtype])
    torch.testing.assert_close(cf.log_softmax(x, dim), F.log_softmax(x, dim), **TOL[dtype])


def test_softmax_hand_computed():
    out = cf.softmax(torch.tensor([0.0, math.log(3.0)]))
    torch.testing.assert_close(out, torch.tensor([0.25, 0.75]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_is_stable_at_extremes(dtype):
    x = torch.tensor(
        [[1e4, 1e4 - 1.0, -1e4], [-1e4, -1e4 - 2.0, -1e4], [1000.0, 0.0, -1000.0]], dtype=dtype
    )
    p, logp = cf.softmax(x), cf.log_softmax(x)
    assert torch.isfinite(p).all() and torch.isfinite(logp).all()
    torch.testing.assert_close(p, F.softmax(x, -1), **TOL[dtype])
    torch.testing.assert_close(logp, F.log_softmax(x, -1), **TOL[dtype])
    # exp(-2e4) underflows to 0 but its log must stay finite and exact.
    assert logp[0, 2].item() == pytest.approx(-2e4 - math.log1p(math.exp(-1.0)), rel=1e-6)


def test_softmax_masked_entries_are_exactly_zero():
    x = torch.tensor([1.0, float("-inf"), 2.0])
    p = cf.softmax(x)
    assert p[1].item() == 0.0
    assert p.sum().item() == pytest.approx(1.0)


def test_softmax_gradients_match():
    x = randn(4, 6, dtype=torch.float64).requires_grad_()
    w = randn(4, 6, dtype=torch.float64, seed=1)
    for ours, ref in [(cf.softmax, F.softmax), (cf.log_softmax, F.log_softmax)]:
        (g_ours,) = torch.autograd.grad((ours(x, -1) * w).sum(), x)
        (g_ref,) = torch.autograd.grad((ref(x, -1) * w).sum(), x)
        torch.testing.assert_close(g_ours, g_ref)
    assert torch.autograd.gradcheck(lambda t: cf.log_softmax(t, 0), (x,))


# --------------------------------------------------------------------------- cross_entropy


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_matches_torch_values_and_grads(dtype):
    logits = randn(10, 13, dtype=dtype, scale=4.0).requires_grad_()
    targets = torch.randint(0, 13, (10,), generator=torch.Generator().manual_seed(1))
    ours = cf.cross_entropy(logits, targets)
    ref = F.cross_entropy(logits, targets)
    assert ours.dim() == 0 and ours.dtype == dtype
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_ours, g_ref, **TOL[dtype])


def test_cross_entropy_uniform_is_log_v():
    assert cf.cross_entropy(torch.zeros(3, 7), torch.tensor([0, 3, 6])).item() == pytest.approx(
        math.log(7)
    )


def test_cross_entropy_huge_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4 - 3.0]], requires_grad=True)
    targets = torch.tensor([1, 2])
    ours = cf.cross_entropy(logits, targets)
    torch.testing.assert_close(ours, F.cross_entropy(logits, targets))
    assert ours.item() == pytest.approx((2e4 + 3.0 + math.log1p(math.exp(-3.0))) / 2, rel=1e-6)
    ours.backward()
    assert torch.isfinite(logits.grad).all()


# --------------------------------------------------------------------------- activations


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_matches_hf_gelu_new(dtype):
    x = torch.cat(
        [
            randn(1000, dtype=dtype, scale=4.0),
            torch.tensor([0.0, -1e4, 1e4, -30.0, 30.0], dtype=dtype),
        ]
    )
    x.requires_grad_()
    ours, ref = cf.gelu(x), ACT2FN["gelu_new"](x)
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    torch.testing.assert_close(
        *(torch.autograd.grad(y.sum(), x)[0] for y in (ours, ref)), **TOL[dtype]
    )
    # the tanh form differs from the exact erf GELU by up to ~1e-3: make sure we are not that one
    exact = F.gelu(x.detach())
    assert (ours.detach() - exact).abs().max() > 1e-4


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_matches_torch(dtype):
    x = torch.cat(
        [randn(1000, dtype=dtype, scale=4.0), torch.tensor([-1e4, 1e4, 0.0], dtype=dtype)]
    )
    x.requires_grad_()
    ours, ref = cf.silu(x), F.silu(x)
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    g_ours, g_ref = (torch.autograd.grad(y.sum(), x)[0] for y in (ours, ref))
    torch.testing.assert_close(g_ours, g_ref, **TOL[dtype])
    assert torch.isfinite(g_ours).all()


# --------------------------------------------------------------------------- norms


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_matches_torch(dtype):
    x = randn(2, 3, 8, dtype=dtype, scale=5.0) + 3.0
    w, b = randn(8, dtype=dtype, seed=1), randn(8, dtype=dtype, seed=2)
    for t in (x, w, b):
        t.requires_grad_()
    ours = cf.layer_norm(x, w, b, eps=1e-5)
    ref = F.layer_norm(x, (8,), w, b, eps=1e-5)
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    grads = [torch.autograd.grad((y * y.detach().sin()).sum(), (x, w, b)) for y in (ours, ref)]
    for g_ours, g_ref in zip(*grads):
        torch.testing.assert_close(g_ours, g_ref, **TOL[dtype])


def test_layer_norm_uses_biased_variance_and_eps_inside_sqrt():
    x = torch.tensor([[1.0, 3.0]])  # mean 2, biased variance 1 (unbiased would be 2)
    one, zero = torch.ones(2), torch.zeros(2)
    out = cf.layer_norm(x, one, zero, eps=0.0)
    torch.testing.assert_close(out, torch.tensor([[-1.0, 1.0]]))
    out = cf.layer_norm(x, torch.ones(2), torch.zeros(2), eps=3.0)  # sqrt(1 + 3) = 2
    torch.testing.assert_close(out, torch.tensor([[-0.5, 0.5]]))
    # a constant row stays finite thanks to eps
    assert torch.isfinite(cf.layer_norm(torch.full((1, 2), 7.0), one, zero)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_rms_norm_matches_hf_llama(dtype):
    C = 16
    hf = LlamaRMSNorm(C, eps=1e-6)
    with torch.no_grad():
        hf.weight.copy_(randn(C, seed=3) + 1.0)
    # HF keeps its weight in the model dtype
    hf = hf.to(torch.float32 if dtype == torch.float64 else dtype)
    x = randn(2, 5, C, dtype=dtype, scale=3.0)
    x[0, 0] = 1e4  # extreme row: its mean square overflows float16, so the norm must be in float32
    ours = cf.rms_norm(x, hf.weight, eps=1e-6)
    ref = hf(x)
    assert ours.dtype == ref.dtype
    tol = {
        torch.bfloat16: {"rtol": 1e-2, "atol": 1e-2},
        torch.float16: {"rtol": 1e-3, "atol": 1e-3},
    }
    torch.testing.assert_close(ours, ref, **tol.get(dtype, TOL[torch.float32]))
    assert torch.isfinite(ours).all()
    if dtype in (torch.bfloat16, torch.float16):  # same float32 path as HF: bit for bit
        assert torch.equal(ours, ref)


def test_rms_norm_gradients_and_hand_computed():
    x = torch.tensor([[3.0, 4.0]])  # mean square 12.5
    torch.testing.assert_close(cf.rms_norm(x, None, eps=0.0), x / math.sqrt(12.5))
    x = randn(3, 6, dtype=torch.float64).requires_grad_()
    w = randn(6, dtype=torch.float64, seed=4).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: cf.rms_norm(a, b, eps=1e-6), (x, w))


# --------------------------------------------------------------------------- sgd_step


def test_sgd_step_updates_in_place_and_clears_grads():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor([5.0], requires_grad=True)  # no grad: must be skipped
    (w * torch.tensor([3.0, -1.0])).sum().backward()
    storage = w.data_ptr()
    cf.sgd_step([w, b], lr=0.5)
    torch.testing.assert_close(w.detach(), torch.tensor([-0.5, 2.5]))
    assert w.data_ptr() == storage and w.is_leaf and w.requires_grad
    assert w.grad is None and b.grad is None
    assert b.item() == 5.0


def test_sgd_step_matches_torch_optim_sgd():
    model = torch.nn.Linear(4, 3)
    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    x = randn(8, 4)
    for _ in range(3):
        model(x).pow(2).mean().backward()
        cf.sgd_step(model.parameters(), lr=0.1)  # a generator works too
        opt.zero_grad()
        twin(x).pow(2).mean().backward()
        opt.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q)


def test_sgd_step_rejects_one_tensor():
    # iterating over one tensor would walk its rows (views without .grad) and silently do nothing
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match=r"sgd_step\(\[W\], lr\)"):
        cf.sgd_step(w, 0.1)


def test_docstring_examples_run():
    import doctest

    import course_lib.functional as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- notebook 03 extras


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_grad_equals_autograd(dtype):
    logits = randn(6, 9, dtype=dtype, scale=3.0).requires_grad_()
    targets = torch.tensor([0, 8, 3, 3, 1, 5])
    F.cross_entropy(logits, targets).backward()
    torch.testing.assert_close(cf.cross_entropy_grad(logits.detach(), targets), logits.grad)
    huge = cf.cross_entropy_grad(randn(3, 4, dtype=dtype, scale=1e4), torch.tensor([0, 1, 2]))
    assert huge.isfinite().all() and torch.allclose(huge.sum(-1), torch.zeros(3, dtype=dtype))


def test_cross_entropy_grad_hand_example():
    expected = torch.tensor([[0.25, 0.25, -0.75, 0.25]])
    torch.testing.assert_close(
        cf.cross_entropy_grad(torch.zeros(1, 4), torch.tensor([2])), expected
    )


def test_relu_matches_torch():
    x = randn(4, 5, scale=2.0)
    torch.testing.assert_close(cf.relu(x), torch.relu(x))
    assert cf.relu(torch.tensor([-0.0, 0.0, -1.0])).eq(0).all()


def test_train_bigram_reaches_the_counting_model():
    # A deterministic 3-cycle: the counting model predicts it with certainty (NLL 0).
    ids = torch.tensor([0, 1, 2] * 40)
    W = cf.train_bigram(ids, 3, 100, 16, 5.0, torch.Generator().manual_seed(0))
    assert W.shape == (3, 3) and not W.requires_grad
    assert cf.cross_entropy(W[ids[:-1]], ids[1:]).item() < 0.01
    torch.testing.assert_close(W.sum(dim=1), torch.zeros(3), atol=1e-5, rtol=0)  # rows keep sum 0
