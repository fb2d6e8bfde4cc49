import pytest
import torch

import course_lib


def test_default_is_best_available(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert course_lib.device().type == expected


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
