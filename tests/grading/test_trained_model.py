"""check_trained_model (notebook 06's capstone): judged outside the kernel, on real weights."""

from __future__ import annotations

import pytest
import torch

from course_lib.gpt import GPT, GPTConfig
from course_lib.grading import check_trained_model, training
from course_lib.grading.training import TARGET_NATS_PER_CHAR
from course_lib.pretrained import load_course_gpt


@pytest.fixture(scope="module")
def course_gpt():
    hf_model, _ = load_course_gpt()
    return hf_model


def untrained_like(model: GPT) -> GPT:
    torch.manual_seed(0)
    return GPT(model.config)


def test_a_trained_model_passes(course_gpt, monkeypatch):
    """The shipped course GPT is a trained model (1.50 nats/char); judged as if trained here."""
    monkeypatch.setattr(training, "shipped_similarity", lambda model: 0.0)
    for model in (GPT.from_hf(course_gpt), course_gpt):  # ours, or a Hugging Face GPT-2
        verdict = training.evaluate_submission(training._payload(model))
        assert verdict["passed"], verdict["message"]
        result = verdict["result"]
        assert 1.3 < result["nats_per_char"] < 1.6  # 3.985 nats/token at ~2.65 chars per token
        assert 2.5 < result["chars_per_token"] < 2.8
        assert result["nats_per_char"] == pytest.approx(
            result["nats_per_token"] / result["chars_per_token"]
        )
        assert f"<= {TARGET_NATS_PER_CHAR}" in verdict["message"]


def test_handing_in_the_shipped_course_gpt_is_refused(course_gpt):
    with pytest.raises(AssertionError, match="shipped course GPT"):
        check_trained_model(GPT.from_hf(course_gpt))


def test_an_untrained_model_fails_with_its_loss(course_gpt):
    model = untrained_like(GPT.from_hf(course_gpt))
    with pytest.raises(AssertionError, match=r"the target is <= 1.75 nats/char") as info:
        check_trained_model(model)
    nats = float(str(info.value).split("reaches ")[1].split(" nats/char")[0])
    assert nats > 2.5  # ln(2048) / 2.6: a uniform guess over the vocabulary


def test_a_patched_forward_cannot_fool_it(course_gpt):
    trained = GPT.from_hf(course_gpt)
    cheat = untrained_like(trained)
    # the kernel's model answers with the trained model's logits, and the loss is patched too:
    # neither leaves the kernel, only the (untrained) weights do
    cheat.forward = trained.forward
    original_ce = torch.nn.functional.cross_entropy
    torch.nn.functional.cross_entropy = lambda *a, **k: original_ce(*a, **k) * 0
    try:
        with pytest.raises(AssertionError, match="the target is"):
            check_trained_model(cheat)
    finally:
        torch.nn.functional.cross_entropy = original_ce


def test_a_model_for_another_tokenizer_is_refused_by_name():
    model = GPT(GPTConfig(vocab_size=65, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(AssertionError, match="vocab_size=65.*course BPE tokenizer"):
        check_trained_model(model)


def test_not_a_model_is_a_type_error():
    with pytest.raises(TypeError, match="course_lib.gpt.GPT"):
        check_trained_model({"wte": torch.zeros(3)})


def test_a_training_function_is_called_once_and_remembered(course_gpt):
    calls = []

    def trained_model():
        calls.append(1)
        return untrained_like(GPT.from_hf(course_gpt))

    for hidden in (False, True):
        with pytest.raises(AssertionError, match="the target is"):
            check_trained_model(trained_model, hidden=hidden)
    assert len(calls) == 1


def test_an_unwritten_training_function_says_so():
    def trained_model():
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="trained_model is not implemented yet"):
        check_trained_model(trained_model)
