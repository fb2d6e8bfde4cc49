"""Every grader accepts the right implementations and names the mistake of each buggy one.

The implementations are in ``impl_*.py`` (written for these tests, never imported from
course_lib; every such module is collected by ``grading_impl.ALL``). One referee process serves the whole test session.
"""

from __future__ import annotations

import importlib
import re

import pytest
from grading_impl import ALL
from grading_results import CATCH_TABLE, run_impl

import course_lib.grading as grading
from course_lib.grading._catalogue import EXERCISES

RIGHT = [i for i in ALL if i.kind != "bug"]
BUGS = [i for i in ALL if i.kind == "bug"]


def test_every_exercise_has_a_checker_and_implementations():
    checks = {f"check_{n}" for n in EXERCISES} | {"check_trained_model"}  # + 06's capstone
    assert {n for n in dir(grading) if n.startswith("check_")} == checks
    assert set(grading.__all__) == checks
    for name in EXERCISES:
        kinds = [i.kind for i in ALL if i.exercise == name]
        assert kinds.count("reference") == 1, name
        assert kinds.count("alternative") >= 1, name
        assert kinds.count("bug") >= 3, name


@pytest.mark.parametrize("impl", RIGHT, ids=lambda i: i.id)
def test_right_implementations_pass(impl, capsys):
    result = run_impl(impl, cached=False)
    assert result.passed, f"{impl.id} was rejected:\n{result.message}"
    out = capsys.readouterr().out
    assert f"✓ {impl.exercise}: all " in out and " checks passed" in out


@pytest.mark.parametrize("impl", BUGS, ids=lambda i: i.id)
def test_buggy_implementations_fail_with_their_message(impl):
    result = run_impl(impl)
    assert not result.passed, f"{impl.id} passed but should fail with {impl.expect!r}"
    assert impl.expect in result.message, (
        f"{impl.id}: expected {impl.expect!r} in:\n{result.message}"
    )


@pytest.mark.parametrize("name", list(EXERCISES))
def test_an_untouched_stub_is_not_implemented_yet(name):
    def stub(*args):
        # YOUR CODE HERE
        raise NotImplementedError()

    with pytest.raises(
        AssertionError, match=f"^{name} is not implemented yet: replace `raise NotImplementedError"
    ):
        getattr(grading, f"check_{name}")(stub)


@pytest.mark.parametrize("name", list(EXERCISES))
def test_handing_in_course_libs_reference_fails(name):
    reference = getattr(importlib.import_module(EXERCISES[name].reference_module), name)
    with pytest.raises(AssertionError, match="you handed in course_lib's reference"):
        getattr(grading, f"check_{name}")(reference)


@pytest.mark.parametrize("name", list(EXERCISES))
def test_hidden_checks_accept_the_reference_equivalent(name, monkeypatch, capsys):
    impl = next(i for i in RIGHT if i.exercise == name and i.kind == "reference")
    for seed in ["1", "987654321"]:
        monkeypatch.setenv("COURSE_GRADING_SEED", seed)
        getattr(grading, f"check_{name}")(impl.fn, hidden=True)
    assert capsys.readouterr().out.count("✓") == 2


@pytest.mark.parametrize(
    "name", ["softmax", "scaled_dot_product_attention", "train_bpe", "sample_bigram"]
)
def test_hidden_checks_catch_a_bug_too(name, monkeypatch):
    impl = next(i for i in BUGS if i.exercise == name)
    monkeypatch.setenv("COURSE_GRADING_SEED", "31337")
    with pytest.raises(AssertionError, match=re.escape(impl.expect)):
        getattr(grading, f"check_{name}")(impl.fn, hidden=True)


def test_catch_table(request):
    """Per exercise: how many buggy implementations the grader rejects with the intended message."""
    rows = []
    for name in EXERCISES:
        bugs = [i for i in BUGS if i.exercise == name]
        caught = [i for i in bugs if not run_impl(i).passed and i.expect in run_impl(i).message]
        rows.append((EXERCISES[name].notebook[:2], name, len(caught), len(bugs)))
    table = [f"{'nb':<3} {'exercise':<30} {'caught':>6} / {'bugs':<4}"]
    table += [f"{nb:<3} {name:<30} {c:>6} / {n:<4}" for nb, name, c, n in rows]
    table.append(
        f"{'':<3} {'total':<30} {sum(r[2] for r in rows):>6} / {sum(r[3] for r in rows):<4}"
    )
    CATCH_TABLE[:] = table
    if getattr(request.config, "cache", None) is not None:
        request.config.cache.set("grading/catch_table", table)
    print("\n".join(table))
    missed = [name for _, name, c, n in rows if c < n]
    assert not missed, f"buggy implementations not caught with their message: {missed}"
    assert all(c >= 3 for _, _, c, _ in rows)
