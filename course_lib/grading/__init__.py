"""Graders for the exercises of notebooks 01-09: ``check_NAME(fn, *, hidden=False)``.

Use them in a notebook's check cell::

    from course_lib.grading import check_softmax
    check_softmax(softmax)

On success a check prints one line (``✓ softmax: all 23 checks passed``). On failure it
raises ``AssertionError`` whose message names the most likely mistake and its fix. With
``hidden=True`` the cases are drawn from the ``COURSE_GRADING_SEED`` environment variable
(set by the course staff at grading time; a fixed default otherwise).

Integrity: the cases, the reference answers and the comparisons live in a separate, clean
Python process (the *referee*, started once per kernel), so patching ``torch`` in the
notebook cannot change a verdict; handing in course_lib's own reference is refused.
"""

from __future__ import annotations

from collections.abc import Callable

from course_lib.grading._catalogue import EXERCISES

__all__ = [f"check_{name}" for name in EXERCISES] + ["check_trained_model"]


def check_trained_model(model, *, hidden: bool = False) -> None:
    """Notebook 06's capstone: pass when your trained GPT reaches the stated validation target.

    Not a catalogue exercise: the model's weights and config are evaluated by the referee
    (see ``course_lib.grading.training``), never in the kernel.

    Args:
        model: your trained ``course_lib.gpt.GPT`` (course BPE tokenizer), or a function without
            arguments that trains and returns one (called once, then remembered).
        hidden: the hidden test cell's flag; the target is public, the evaluation the same.

    Raises:
        AssertionError: the model misses the target; the message gives its loss.
    """
    from course_lib.grading.training import check_trained_model as check

    check(model, hidden=hidden)


def _make_check(name: str) -> Callable[..., None]:
    exercise = EXERCISES[name]

    def check(fn: Callable, *, hidden: bool = False) -> None:
        from course_lib.grading._client import run_check

        verdict = run_check(name, fn, hidden)
        if verdict.get("internal"):
            raise RuntimeError(verdict.get("message", f"the grader of {name} failed"))
        if not verdict.get("passed"):
            raise AssertionError(verdict.get("message", f"{name} is wrong"))
        print(f"✓ {name}: all {verdict.get('checks', 0)} checks passed")

    check.__name__ = check.__qualname__ = f"check_{name}"
    check.__module__ = __name__
    check.__doc__ = f"""Grade your ``{exercise.signature}`` (notebook {exercise.notebook}).

    Args:
        fn: your function ``{name}``.
        hidden: draw the cases from ``COURSE_GRADING_SEED`` instead of the fixed visible ones.

    Raises:
        AssertionError: a check failed; the message names the likely mistake and its fix.
    """
    return check


# One ``check_NAME`` per exercise of the catalogue, written once: the catalogue is the registry.
for _name in EXERCISES:
    globals()[f"check_{_name}"] = _make_check(_name)
del _name
