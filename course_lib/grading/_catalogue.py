"""The graded exercises of notebooks 01-04: name, notebook, grader module and signature.

Imported by both sides: the learner's kernel builds ``check_NAME`` from it, and the referee
finds each grader (``course_lib.grading.<module>.grade_<name>``) and the signature it checks.
It imports nothing heavy, so ``import course_lib.grading`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Exercise:
    """One graded function.

    Args:
        name: the function's name, e.g. "softmax" (the checker is ``check_softmax``).
        notebook: the assignment folder, e.g. "03-neural-lm".
        module: the grader module under ``course_lib.grading`` (it also names the reference's
            concept: ``course_lib.<module>`` holds the reference answer).
        params: the parameter names of the catalogue signature, in order.
        defaults: (name, value) of the trailing parameters that have defaults.
    """

    name: str
    notebook: str
    module: str
    params: tuple[str, ...]
    defaults: tuple[tuple[str, object], ...] = ()

    @property
    def optional(self) -> int:
        """How many trailing parameters have defaults."""
        return len(self.defaults)

    @property
    def signature(self) -> str:
        """The catalogue signature as text, e.g. ``softmax(x, dim=-1)``."""
        defaults = dict(self.defaults)
        parts = [f"{p}={defaults[p]!r}" if p in defaults else p for p in self.params]
        return f"{self.name}({', '.join(parts)})"


_NB01, _NB02, _NB03, _NB04 = "01-language-models", "02-tokenization", "03-neural-lm", "04-attention"

EXERCISES: dict[str, Exercise] = {
    e.name: e
    for e in [
        Exercise("bigram_counts", _NB01, "ngram", ("ids", "vocab_size")),
        Exercise("bigram_probs", _NB01, "ngram", ("counts", "alpha"), (("alpha", 1.0),)),
        Exercise("nll", _NB01, "ngram", ("probs", "ids")),
        Exercise("perplexity", _NB01, "ngram", ("probs", "ids")),
        Exercise("sample_bigram", _NB01, "ngram", ("probs", "start_id", "n", "generator")),
        Exercise("get_pair_counts", _NB02, "bpe", ("ids",)),
        Exercise("merge_pair", _NB02, "bpe", ("ids", "pair", "new_id")),
        Exercise("train_bpe", _NB02, "bpe", ("text", "vocab_size")),
        Exercise("encode", _NB02, "bpe", ("text", "merges")),
        Exercise("decode", _NB02, "bpe", ("ids", "merges")),
        Exercise("softmax", _NB03, "functional", ("x", "dim"), (("dim", -1),)),
        Exercise("cross_entropy", _NB03, "functional", ("logits", "targets")),
        Exercise("sgd_step", _NB03, "functional", ("params", "lr")),
        Exercise("attention_scores", _NB04, "attention", ("q", "k")),
        Exercise("causal_mask", _NB04, "attention", ("T",)),
        Exercise(
            "scaled_dot_product_attention",
            _NB04,
            "attention",
            ("q", "k", "v", "mask"),
            (("mask", None),),
        ),
        Exercise("split_heads", _NB04, "attention", ("x", "n_heads")),
        Exercise("merge_heads", _NB04, "attention", ("x",)),
        Exercise(
            "multi_head_self_attention",
            _NB04,
            "attention",
            ("x", "w_qkv", "b_qkv", "w_out", "b_out", "n_heads"),
        ),
    ]
}
