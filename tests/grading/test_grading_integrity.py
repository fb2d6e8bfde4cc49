"""The graders cannot be fooled from the learner's kernel, and they fail clearly.

Covers: torch patched in the calling process, a learner ``torch.py`` in the working directory,
inputs mutated by the learner, hidden cases drawn from COURSE_GRADING_SEED, a referee that
dies, wrong return types, crashes, wrong signatures, and course_lib's reference handed in.
"""

from __future__ import annotations

import functools
import io
import os
import signal

import pytest
import torch
from impl_attention import (
    scaled_dot_product_attention,
    sdpa_large_negative_and_where,
    sdpa_no_softmax,
)
from impl_bpe import merge_pair, train_bpe
from impl_functional import softmax, softmax_no_max, softmax_unnormalised

import course_lib.functional as F_ref
from course_lib.functional import softmax as ref_softmax
from course_lib.grading import (
    _client,
    check_cross_entropy,
    check_merge_pair,
    check_multi_head_self_attention,
    check_scaled_dot_product_attention,
    check_softmax,
    check_train_bpe,
)
from course_lib.grading._wire import read_frame, write_frame

# ------------------------------------------------------------------------------------------------
# Patching torch in the kernel changes no verdict
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def patched_torch(monkeypatch):
    """The tricks a solution cell could play; monkeypatch puts everything back afterwards."""
    monkeypatch.setattr(torch, "allclose", lambda *args, **kwargs: True)
    monkeypatch.setattr(
        torch, "isclose", lambda a, b, *args, **kwargs: torch.ones_like(a, dtype=torch.bool)
    )
    monkeypatch.setattr(torch, "equal", lambda *args, **kwargs: True)
    monkeypatch.setattr(
        torch.Tensor, "__eq__", lambda self, other: torch.ones_like(self, dtype=torch.bool)
    )
    monkeypatch.setattr(torch, "softmax", lambda x, dim=-1, **kwargs: torch.full_like(x, 0.5))
    yield
    # (monkeypatch restores the originals after this fixture)


def test_patched_torch_does_not_pass_a_wrong_softmax(patched_torch):
    assert torch.allclose(torch.zeros(1), torch.ones(1))  # the patch is active here
    with pytest.raises(AssertionError, match="overflows at"):
        check_softmax(softmax_no_max.fn)
    with pytest.raises(AssertionError, match="forgot to normalise"):
        check_softmax(softmax_unnormalised.fn)


def test_patched_torch_does_not_fail_a_right_softmax(patched_torch, capsys):
    check_softmax(softmax)  # hand-written: it does not use the patched torch.softmax
    assert "✓ softmax" in capsys.readouterr().out


def test_patched_torch_does_not_pass_wrong_attention(patched_torch, capsys):
    with pytest.raises(AssertionError, match="without softmax"):
        check_scaled_dot_product_attention(sdpa_no_softmax.fn)
    with pytest.raises(AssertionError):  # it calls the patched torch.softmax: its output is garbage
        check_scaled_dot_product_attention(scaled_dot_product_attention)
    check_scaled_dot_product_attention(sdpa_large_negative_and_where)
    assert "✓ scaled_dot_product_attention" in capsys.readouterr().out


def test_patches_are_gone_afterwards():
    assert not torch.allclose(torch.zeros(1), torch.ones(1))
    assert not torch.equal(torch.zeros(1), torch.ones(1))
    assert torch.softmax(torch.zeros(2), dim=-1).tolist() == [0.5, 0.5]


@pytest.mark.slow  # starts a fresh referee (it imports torch: seconds)
def test_the_referee_ignores_a_learners_torch_py(tmp_path, monkeypatch, capsys):
    (tmp_path / "torch.py").write_text("raise RuntimeError('the learner torch.py was imported')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    _client.stop_referee()  # the next check starts a referee here
    check_softmax(softmax)
    assert "✓ softmax" in capsys.readouterr().out


def test_the_referee_never_unpickles_objects():
    class Sneaky:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    buffer = io.BytesIO()
    write_frame(buffer, {"op": "result", "value": Sneaky()})
    buffer.seek(0)
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        read_frame(buffer)


# ------------------------------------------------------------------------------------------------
# The learner cannot corrupt later cases
# ------------------------------------------------------------------------------------------------


def test_mutating_earlier_inputs_does_not_affect_later_cases(capsys):
    seen_tensors, seen_lists = [], []

    def vandal_softmax(x, dim=-1):
        for old in seen_tensors:  # scribble over every tensor handed in before
            old.fill_(123.0)
        seen_tensors.append(x)
        return softmax(x, dim)

    def vandal_merge_pair(ids, pair, new_id):
        for old in seen_lists:
            old.clear()
        seen_lists.append(ids)
        return merge_pair(ids, pair, new_id)

    check_softmax(vandal_softmax)
    check_merge_pair(vandal_merge_pair)
    assert len(seen_tensors) > 5 and len(seen_lists) > 5
    assert capsys.readouterr().out.count("✓") == 2


def test_mutating_the_current_input_is_caught_after_a_right_answer():
    def softmax_then_scribble(x, dim=-1):
        out = softmax(x, dim)
        x.zero_()
        return out

    with pytest.raises(AssertionError, match="changed its input `x` in place"):
        check_softmax(softmax_then_scribble)


# ------------------------------------------------------------------------------------------------
# Hidden cases
# ------------------------------------------------------------------------------------------------


def _recorded_cases(check, fn, monkeypatch, seed: str | None, hidden: bool = True) -> list:
    received = []

    def recorder(*args):
        received.append([a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        return fn(*args)

    if seed is None:
        monkeypatch.delenv("COURSE_GRADING_SEED", raising=False)
    else:
        monkeypatch.setenv("COURSE_GRADING_SEED", seed)
    check(recorder, hidden=hidden)
    return received


def _same_cases(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    for args_a, args_b in zip(a, b):
        for x, y in zip(args_a, args_b):
            if isinstance(x, torch.Tensor):
                if not (
                    isinstance(y, torch.Tensor) and x.shape == y.shape and bool((x == y).all())
                ):
                    return False
            elif x != y:
                return False
    return True


@pytest.mark.parametrize("check, fn", [(check_softmax, softmax), (check_train_bpe, train_bpe)])
def test_hidden_cases_follow_course_grading_seed(check, fn, monkeypatch):
    one = _recorded_cases(check, fn, monkeypatch, "1")
    two = _recorded_cases(check, fn, monkeypatch, "2")
    one_again = _recorded_cases(check, fn, monkeypatch, "1")
    text_seed = _recorded_cases(check, fn, monkeypatch, "fall-2025")
    default = _recorded_cases(check, fn, monkeypatch, None)
    visible = _recorded_cases(check, fn, monkeypatch, "1", hidden=False)
    visible_again = _recorded_cases(check, fn, monkeypatch, "2", hidden=False)
    assert _same_cases(one, one_again)
    assert not _same_cases(one, two)
    assert not _same_cases(one, text_seed)
    assert not _same_cases(default, visible)
    assert _same_cases(visible, visible_again)  # visible checks ignore the seed


# ------------------------------------------------------------------------------------------------
# A referee that dies (slow: each test starts one or two fresh referees, which import torch)
# ------------------------------------------------------------------------------------------------


def _kill_referee() -> None:
    os.kill(_client.referee().pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_referee_killed_mid_check_is_restarted_once(capsys):
    killed = []

    def killer_once(x, dim=-1):
        if not killed:
            killed.append(_client.referee().pid)
            _kill_referee()
        return softmax(x, dim)

    check_softmax(killer_once)
    assert killed and _client.referee().pid != killed[0]
    assert "✓ softmax" in capsys.readouterr().out


@pytest.mark.slow
def test_a_referee_that_keeps_dying_gives_a_clear_error(capsys):
    def killer(x, dim=-1):
        _kill_referee()
        return softmax(x, dim)

    with pytest.raises(RuntimeError, match="referee process stopped twice.*Restart the kernel"):
        check_softmax(killer)
    check_softmax(softmax)  # and the next check starts a fresh referee
    assert "✓ softmax" in capsys.readouterr().out


@pytest.mark.slow
def test_a_referee_killed_between_checks_is_replaced(capsys):
    check_softmax(softmax)
    _kill_referee()
    _client.referee().proc.wait()
    check_softmax(softmax)
    assert capsys.readouterr().out.count("✓ softmax") == 2


@pytest.mark.slow
def test_an_interrupted_check_leaves_a_working_referee(capsys):
    def interrupted(x, dim=-1):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        check_softmax(interrupted)
    check_softmax(softmax)
    assert "✓ softmax" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# Clear messages for what is not a wrong value
# ------------------------------------------------------------------------------------------------


class Thing:
    pass


class Liar(torch.Tensor):
    """A tensor that claims to equal everything."""

    def __eq__(self, other):
        return True

    __hash__ = torch.Tensor.__hash__


@pytest.mark.parametrize(
    "returned, message",
    [
        (lambda x: Thing(), "Thing, not a torch.Tensor"),
        (lambda x: None, "did you forget the `return`?"),
        (lambda x: x.tolist(), "a list, not a torch.Tensor"),
        (lambda x: torch.zeros_like(x).as_subclass(Liar), "does not sum to 1"),
    ],
    ids=["object", "None", "list", "lying-subclass"],
)
def test_wrong_return_types_are_named(returned, message):
    with pytest.raises(
        AssertionError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")
    ):
        check_softmax(lambda x, dim=-1: returned(x))


def test_a_right_tensor_subclass_is_accepted(capsys):
    check_softmax(lambda x, dim=-1: softmax(x, dim).as_subclass(Liar))
    assert "✓ softmax" in capsys.readouterr().out


def test_a_crash_names_the_exception_and_the_learners_line():
    def helper(x):
        return x / 0 if isinstance(x, int) else 1 // 0

    def crashing_softmax(x, dim=-1):
        e = torch.exp(x)
        return helper(e)

    with pytest.raises(AssertionError) as info:
        check_softmax(crashing_softmax)
    message = str(info.value)
    assert "softmax raised ZeroDivisionError: integer division or modulo by zero" in message
    assert "of helper: return x / 0 if isinstance(x, int) else 1 // 0" in message
    assert "(case: softmax(x=" in message


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda x: x, "add the missing parameter(s) dim"),
        (lambda x, dim: x, "give dim a default value"),
        (lambda x, dim=-1, *, eps: x, "keyword-only parameter(s) eps need a default"),
    ],
    ids=["missing", "no-default", "keyword-only"],
)
def test_a_wrong_signature_is_named(fn, message):
    with pytest.raises(AssertionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_softmax(fn)


def test_a_learner_may_name_parameters_freely(capsys):
    check_softmax(lambda logits, axis=-1: softmax(logits, axis))
    check_softmax(lambda *args: softmax(*args))
    assert capsys.readouterr().out.count("✓") == 2


def test_passing_the_result_instead_of_the_function_is_a_type_error():
    with pytest.raises(TypeError, match="without parentheses"):
        check_softmax(softmax(torch.zeros(3)))


@pytest.mark.parametrize(
    "handed_in, message",
    [
        (ref_softmax, "you handed in course_lib's reference course_lib.functional.softmax"),
        (functools.partial(ref_softmax), "you handed in course_lib's reference"),
        (functools.wraps(ref_softmax)(lambda x, dim=-1: x), "you handed in course_lib's reference"),
        (
            lambda x, dim=-1: ref_softmax(x, dim),
            "calls course_lib's reference softmax (through `ref_softmax`)",
        ),
        (
            lambda x, dim=-1: F_ref.softmax(x, dim),
            "calls course_lib's reference softmax (through `F_ref.softmax`)",
        ),
    ],
    ids=["itself", "partial", "wrapped", "alias", "module"],
)
def test_course_libs_reference_is_refused(handed_in, message):
    with pytest.raises(AssertionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_softmax(handed_in)


def test_using_course_lib_for_another_function_is_allowed(capsys):
    def cross_entropy(logits, targets):
        logp = F_ref.log_softmax(logits, dim=-1)  # not an exercise of its own
        return -logp[torch.arange(len(targets)), targets].mean()

    check_cross_entropy(cross_entropy)
    assert "✓ cross_entropy" in capsys.readouterr().out


def test_results_are_converted_to_plain_data_in_the_kernel():
    from collections import Counter, namedtuple

    import numpy as np

    Pair = namedtuple("Pair", "a b")
    plain = _client.to_plain(
        {
            "c": Counter({(1, 2): 3}),
            "f": np.float64(0.5),
            "p": Pair(1, [2.0]),
            "t": torch.ones(2, requires_grad=True).as_subclass(Liar),
        }
    )
    assert plain["c"] == {(1, 2): 3} and type(plain["c"]) is dict
    assert plain["f"] == 0.5 and type(plain["f"]) is float
    assert plain["p"] == (1, [2.0]) and type(plain["p"]) is tuple
    assert type(plain["t"]) is torch.Tensor and not plain["t"].requires_grad
    assert _client.to_plain(np.zeros(2)) == {_client.UNSUPPORTED: "numpy.ndarray", "note": ""}
    meta = _client.to_plain(torch.empty(2, device="meta"))
    assert meta[_client.UNSUPPORTED] == "torch.Tensor" and "cannot be copied" in meta["note"]
    buffer = io.BytesIO()
    write_frame(buffer, plain)
    buffer.seek(0)
    assert read_frame(buffer)["c"] == {(1, 2): 3}  # loads with weights_only=True


def test_a_helper_that_is_still_a_stub_is_named():
    def split_heads(x, n_heads):
        raise NotImplementedError()

    def multi_head_self_attention(x, w_qkv, b_qkv, w_out, b_out, n_heads):
        return split_heads(x, n_heads)

    with pytest.raises(AssertionError, match="calls split_heads, which is not implemented yet"):
        check_multi_head_self_attention(multi_head_self_attention)


# ------------------------------------------------------------------------------------------------
# Grading mode: the referee of `course grade` (started by the grading command, not the kernel)
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow  # starts a grading referee (it imports torch)
def test_the_grading_referee_uses_its_own_seed_and_records_every_verdict(tmp_path, monkeypatch):
    from course_lib.autograde._sandbox import Jail

    local = _recorded_cases(check_softmax, softmax, monkeypatch, "77")  # a kernel's own referee
    monkeypatch.setenv("COURSE_GRADING_SEED", "1")  # what the kernel would send: ignored
    with Jail(tmp_path, "77", unsafe=True) as jail:
        monkeypatch.setenv(_client.GRADING_SOCKET_ENV, str(jail.socket_path))
        _client.stop_referee()
        try:
            graded = _recorded_cases(check_softmax, softmax, monkeypatch, "1")
            assert _client.referee().pid is None  # not a process of this kernel
            with pytest.raises(AssertionError) as info:
                check_softmax(softmax_unnormalised.fn, hidden=True)
            check_softmax(softmax)
        finally:
            _client.stop_referee()
        jail.close()
        verdicts = jail.verdicts()
    assert _same_cases(graded, local)  # the referee's seed (77), not the kernel's (1)
    message = str(info.value)
    assert "softmax failed a hidden case" in message and "expected" not in message
    assert [(v["name"], v["hidden"], v["passed"]) for v in verdicts] == [
        ("softmax", True, True),
        ("softmax", True, False),
        ("softmax", False, True),
    ]
    assert "normalis" in verdicts[1]["message"]  # the full diagnosis stays with the staff
