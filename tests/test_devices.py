import pytest
import torch

import course_lib


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_default_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert course_lib.device() == torch.device(expected)


def test_default_device_holds_a_tensor(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    x = torch.ones(3, device=course_lib.device())
    assert float(x.sum()) == 3.0


def test_env_override(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "CPU")
    assert course_lib.device() == torch.device("cpu")


def test_bad_override_names_the_choices(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "tpu")
    with pytest.raises(ValueError, match="cpu, cuda, mps"):
        course_lib.device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_override_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    with pytest.raises(ValueError, match="unset COURSE_DEVICE"):
        course_lib.device()
