"""The graded exercises of notebooks 01-09 (and 00's ungraded toy): name, notebook, module, signature.

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
        module: the grader module under ``course_lib.grading``.
        params: the parameter names of the catalogue signature, in order.
        defaults: (name, value) of the trailing parameters that have defaults.
        reference: the ``course_lib`` module that holds the reference answer of the same name
            (default: the grader module's name, e.g. ``course_lib.attention``).
    """

    name: str
    notebook: str
    module: str
    params: tuple[str, ...]
    defaults: tuple[tuple[str, object], ...] = ()
    reference: str = ""

    @property
    def reference_module(self) -> str:
        """The dotted name of the module that holds the reference, e.g. ``course_lib.gpt``."""
        return f"course_lib.{self.reference or self.module}"

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
_NB05, _NB06, _NB07 = "05-transformer", "06-training", "07-generation"
_NB08, _NB09 = "08-modern-llms", "09-challenges"

EXERCISES: dict[str, Exercise] = {
    e.name: e
    for e in [
        # 00: an ungraded toy that shows how check cells work (no points)
        Exercise("relu", "00-welcome", "functional", ("x",)),
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
        Exercise("cross_entropy_grad", _NB03, "functional", ("logits", "targets")),
        Exercise("sgd_step", _NB03, "functional", ("params", "lr")),
        # train_bigram(ids, vocab_size, steps, batch_size, lr, generator) -> W (V, V): the
        # learner's whole SGD loop from W = 0; the referee scores the returned W itself (its NLL
        # on the case's text must be within 0.02 nats of the counting model's).
        Exercise(
            "train_bigram",
            _NB03,
            "functional",
            ("ids", "vocab_size", "steps", "batch_size", "lr", "generator"),
        ),
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
        # 05: grader module "transformer"
        Exercise(
            "layer_norm",
            _NB05,
            "transformer",
            ("x", "weight", "bias", "eps"),
            (("eps", 1e-5),),
            reference="functional",
        ),
        Exercise("gelu", _NB05, "transformer", ("x",), reference="functional"),
        Exercise(
            "mlp", _NB05, "transformer", ("x", "w_fc", "b_fc", "w_proj", "b_proj"), reference="gpt"
        ),
        Exercise(
            "transformer_block",
            _NB05,
            "transformer",
            ("x", "params", "n_heads"),
            reference="gpt",
        ),
        Exercise(
            "gpt2_forward",
            _NB05,
            "transformer",
            ("input_ids", "params", "n_heads"),
            reference="gpt",
        ),
        Exercise(
            "count_parameters",
            _NB05,
            "transformer",
            ("vocab_size", "n_positions", "n_embd", "n_layer"),
            reference="gpt",
        ),
        # 06: grader module "training"
        Exercise("get_batch", _NB06, "training", ("data", "batch_size", "block_size", "generator")),
        Exercise(
            "lr_at",
            _NB06,
            "training",
            ("step", "max_lr", "min_lr", "warmup_steps", "total_steps"),
        ),
        Exercise("clip_grad_norm", _NB06, "training", ("params", "max_norm")),
        Exercise(
            "adamw_update",
            _NB06,
            "training",
            ("param", "grad", "m", "v", "step", "lr", "betas", "eps", "weight_decay"),
            (("betas", (0.9, 0.999)), ("eps", 1e-8), ("weight_decay", 0.01)),
        ),
        # 07: grader module "generation"
        Exercise("greedy_next_token", _NB07, "generation", ("logits",)),
        Exercise("apply_temperature", _NB07, "generation", ("logits", "temperature")),
        Exercise("top_k_filter", _NB07, "generation", ("logits", "k")),
        Exercise("top_p_filter", _NB07, "generation", ("logits", "p")),
        Exercise(
            "apply_repetition_penalty",
            _NB07,
            "generation",
            ("input_ids", "logits", "penalty"),
        ),
        Exercise("sample_next_token", _NB07, "generation", ("logits", "generator")),
        Exercise(
            "generate",
            _NB07,
            "generation",
            (
                "model",
                "input_ids",
                "max_new_tokens",
                "do_sample",
                "temperature",
                "top_k",
                "top_p",
                "generator",
            ),
            (
                ("do_sample", False),
                ("temperature", 1.0),
                ("top_k", None),
                ("top_p", None),
                ("generator", None),
            ),
        ),
        Exercise("generate_cached", _NB07, "generation", ("model", "input_ids", "max_new_tokens")),
        # 08: grader module "llama"
        Exercise(
            "rms_norm",
            _NB08,
            "llama",
            ("x", "weight", "eps"),
            (("eps", 1e-6),),
            reference="functional",
        ),
        Exercise(
            "rope_cos_sin",
            _NB08,
            "llama",
            ("positions", "head_dim", "theta"),
            (("theta", 10000.0),),
            reference="attention",
        ),
        Exercise("apply_rope", _NB08, "llama", ("x", "cos", "sin"), reference="attention"),
        Exercise("swiglu_mlp", _NB08, "llama", ("x", "w_gate", "w_up", "w_down")),
        Exercise("repeat_kv", _NB08, "llama", ("x", "n_rep"), reference="attention"),
        Exercise("llama_forward", _NB08, "llama", ("input_ids", "params", "config")),
        # 09: grader module "challenges"
        Exercise(
            "train_flops", _NB09, "challenges", ("n_params", "n_tokens"), reference="training"
        ),
        Exercise(
            "training_days",
            _NB09,
            "challenges",
            ("n_params", "n_tokens", "n_gpus", "peak_flops", "mfu"),
            reference="training",
        ),
        Exercise(
            "kv_cache_bytes",
            _NB09,
            "challenges",
            ("n_layers", "n_kv_heads", "head_dim", "seq_len", "batch_size", "bytes_per_value"),
            (("bytes_per_value", 2),),
            reference="attention",
        ),
        Exercise(
            "attention_entropy", _NB09, "challenges", ("weights",), reference="interpretability"
        ),
        Exercise(
            "logit_lens",
            _NB09,
            "challenges",
            ("hidden", "norm_weight", "unembed", "eps"),
            (("eps", 1e-5),),
            reference="interpretability",
        ),
    ]
}
