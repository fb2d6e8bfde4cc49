"""The course GPT: a small GPT-2 trained on the Shakespeare corpus, shipped with the course.

``course train-course-gpt`` re-creates the checkpoint in ``course_lib.pretrained.COURSE_GPT_DIR``:

1. train a byte-level BPE vocabulary on the train split (``course_lib.bpe.train_vocab``), with
   one special token, ``<|endoftext|>``, that also separates the plays;
2. encode both splits (with the Hugging Face wrapper of that vocabulary, which is faster and is
   checked against ``course_lib.bpe.Tokenizer`` on a sample);
3. train a :class:`course_lib.gpt.GPT` with :func:`course_lib.training.train`;
4. measure the validation loss on the whole val split, next to a bigram model's
   (``course_lib.ngram``) on the same tokens;
5. export with ``GPT.to_hf()`` and ``course_lib.bpe.to_hf_tokenizer`` and save: ``config.json``,
   ``model.safetensors``, the tokenizer files and ``training_report.json``.

Later notebooks load the result with ``course_lib.pretrained.load_course_gpt()``, so they never
depend on a learner having finished training.

The default recipe trains 1.3 M parameters on 4.1 M tokens: about 4 minutes on 2 idle CPU
cores (2000 steps at about 115 ms, see BENCHMARKS.md), longer on a busy machine. The shipped
weights were trained when ``lr_at`` still gave step 0 the rate ``max_lr / warmup_steps``; it now
starts the warmup at 0 (as transformers does), so a re-run reaches the same quality with other bits.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from course_lib.data import PLAY_SEPARATOR
from course_lib.pretrained import COURSE_GPT_DIR

EOT = "<|endoftext|>"
SAMPLE_PROMPTS = ("ROMEO\n", "HAMLET\nTo be", "First Citizen\n")


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the shipped checkpoint (the defaults are what ships)."""

    vocab_size: int = 2048  # 256 bytes + <|endoftext|> + 1791 merges
    n_embd: int = 192  # wide and shallow learned faster than 128 x 4 layers at this budget
    n_layer: int = 2
    n_head: int = 4
    block_size: int = 128  # context length = n_positions
    batch_size: int = 16  # small batches, more steps: better for a short run
    steps: int = 2000  # 4.1 M tokens, about 2.5 passes over the train split
    max_lr: float = 3e-3  # small models tolerate (and need) a large rate
    min_lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_iters: int = 10
    seed: int = 0
    corpus_chars: int | None = None  # use only the first N characters of each split (tests)

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "n_embd",
            "n_layer",
            "n_head",
            "block_size",
            "batch_size",
            "steps",
            "eval_every",
            "eval_iters",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab_size < 258:
            raise ValueError(
                f"vocab_size must be >= 258 (256 bytes, {EOT}, one merge), got {self.vocab_size}"
            )
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head={self.n_head} must divide n_embd={self.n_embd}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} must be between 0 and "
                f"steps={self.steps}: pass a smaller --warmup-steps"
            )
        if not 0 <= self.min_lr <= self.max_lr:
            raise ValueError(f"need 0 <= min_lr <= max_lr, got {self.min_lr} and {self.max_lr}")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def encode_corpus(tokenizer, text: str, eot_id: int) -> torch.Tensor:
    """Token ids of ``text``, with ``<|endoftext|>`` between plays, as an int64 tensor (N,)."""
    plays = [p for p in text.split(PLAY_SEPARATOR) if p]
    ids: list[int] = []
    for i, encoded in enumerate(tokenizer(plays, add_special_tokens=False).input_ids):
        if i:
            ids.append(eot_id)
        ids.extend(encoded)
    return torch.tensor(ids, dtype=torch.long)


def check_tokenizer_agrees(vocab, merges, hf_tokenizer, text: str) -> None:
    """Fail loudly if the HF tokenizer does not encode ``text`` like ``course_lib.bpe.Tokenizer``."""
    from course_lib.bpe import Tokenizer

    ours = Tokenizer(vocab, merges, [EOT]).encode(text)
    theirs = hf_tokenizer(text, add_special_tokens=False).input_ids
    if ours != theirs:
        raise RuntimeError(
            "the Hugging Face tokenizer encodes differently from course_lib.bpe."
            "Tokenizer: check course_lib.bpe.to_hf_tokenizer"
        )


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def split_loss(
    model: torch.nn.Module, ids: torch.Tensor, block_size: int, batch_size: int = 64
) -> float:
    """Mean next-token loss over a whole token stream, in non-overlapping windows of block_size.

    Every token but the first of each window is predicted once (from the tokens before it in
    its window), so the number is deterministic, unlike a random-batch estimate.

    Args:
        model: a causal LM.
        ids: (N,) token ids.
        block_size: T, the window length (at most the model's context).

    Returns:
        The mean loss in nats per predicted token.
    """
    device = next(model.parameters()).device
    n = (len(ids) - 1) // block_size
    if n < 1:
        raise ValueError(f"need more than block_size={block_size} tokens, got {len(ids)}")
    windows = ids[: n * block_size + 1]
    x = windows[:-1].view(n, block_size)
    y = windows[1:].view(n, block_size)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, n, batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            logits = model(input_ids=xb).logits
            total += torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), yb.flatten(), reduction="sum"
            ).item()
            count += yb.numel()
    finally:
        model.train(was_training)
    return total / count


def bigram_baseline(
    train_ids: torch.Tensor,
    val_ids: torch.Tensor,
    vocab_size: int,
    alphas: tuple[float, ...] = (1.0, 0.1, 0.01),
) -> tuple[float, float]:
    """Val NLL of the best add-alpha bigram model counted on the train tokens: (nll, alpha)."""
    from course_lib.ngram import bigram_counts, bigram_probs, nll

    counts = bigram_counts(train_ids, vocab_size)
    results = [(nll(bigram_probs(counts, alpha), val_ids), alpha) for alpha in alphas]
    return min(results)


# --------------------------------------------------------------------------------------------
# The whole recipe
# --------------------------------------------------------------------------------------------


def train_course_gpt(
    out: str | Path = COURSE_GPT_DIR,
    recipe: Recipe = Recipe(),
    *,
    device: torch.device | str | None = None,
    progress: bool = True,
    log=print,
) -> dict:
    """Train the course GPT and save it, in Hugging Face format, into ``out``.

    Args:
        out: the folder to write (created; files of the same name are replaced).
        recipe: tokenizer, model and training settings.
        device: where to train (``course_lib.device()`` when None).
        progress: show tqdm bars.
        log: where progress lines go.

    Returns:
        The training report (also saved as ``training_report.json``).
    """
    from course_lib import device as preferred_device
    from course_lib.bpe import to_hf_tokenizer, train_vocab
    from course_lib.data import load_corpus
    from course_lib.generation import generate
    from course_lib.gpt import GPT, GPTConfig
    from course_lib.training import train

    start = time.perf_counter()
    device = torch.device(device) if device is not None else preferred_device()
    texts = {split: load_corpus(split) for split in ("train", "val")}
    if recipe.corpus_chars is not None:
        texts = {split: text[: recipe.corpus_chars] for split, text in texts.items()}

    log(
        f"1/5 training a {recipe.vocab_size}-token byte-level BPE on {len(texts['train']):,} characters"
    )
    vocab, merges = train_vocab(texts["train"], recipe.vocab_size, [EOT])
    tokenizer = to_hf_tokenizer(vocab, merges, [EOT])
    eot_id = tokenizer.convert_tokens_to_ids(EOT)
    check_tokenizer_agrees(vocab, merges, tokenizer, texts["val"][:5000])

    log("2/5 encoding the corpus")
    ids = {split: encode_corpus(tokenizer, text, eot_id) for split, text in texts.items()}
    chars_per_token = len(texts["train"]) / len(ids["train"])
    log(
        f"    train {len(ids['train']):,} tokens, val {len(ids['val']):,} tokens "
        f"({chars_per_token:.2f} characters per token)"
    )

    config = GPTConfig(
        vocab_size=len(vocab),
        n_positions=recipe.block_size,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
    )
    torch.manual_seed(recipe.seed)
    model = GPT(config)
    n_params = model.num_parameters()
    log(f"3/5 training a {n_params / 1e6:.2f} M-parameter GPT for {recipe.steps} steps on {device}")
    train_start = time.perf_counter()
    history = train(
        model,
        ids["train"],
        ids["val"],
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        block_size=recipe.block_size,
        max_lr=recipe.max_lr,
        min_lr=recipe.min_lr,
        warmup_steps=recipe.warmup_steps,
        weight_decay=recipe.weight_decay,
        grad_clip=recipe.grad_clip,
        eval_every=recipe.eval_every,
        eval_iters=recipe.eval_iters,
        generator=torch.Generator().manual_seed(recipe.seed),
        device=device,
        progress=progress,
    )
    train_seconds = time.perf_counter() - train_start
    model.eval()

    log("4/5 evaluating on the whole val split, and the bigram baseline")
    val_loss = split_loss(model, ids["val"], recipe.block_size)
    bigram_loss, bigram_alpha = bigram_baseline(ids["train"], ids["val"], len(vocab))
    log(
        f"    val loss {val_loss:.3f} (perplexity {math.exp(val_loss):.1f}); bigram "
        f"{bigram_loss:.3f} (alpha={bigram_alpha})"
    )

    samples = []
    for i, prompt in enumerate(SAMPLE_PROMPTS):
        prompt_ids = torch.tensor([tokenizer(prompt).input_ids], device=device)
        new = min(100, recipe.block_size - prompt_ids.shape[1])
        out_ids = generate(
            model,
            prompt_ids,
            new,
            do_sample=True,
            top_k=50,
            temperature=0.8,
            generator=torch.Generator(device=device).manual_seed(i),
        )
        samples.append(tokenizer.decode(out_ids[0]))

    log(f"5/5 saving to {out}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.to_hf().to("cpu").save_pretrained(out)
    tokenizer.model_max_length = recipe.block_size
    tokenizer.save_pretrained(out)
    report = {
        "val_loss": round(val_loss, 4),
        "bigram_val_loss": round(bigram_loss, 4),
        "bigram_alpha": bigram_alpha,
        "val_loss_note": "mean next-token NLL (nats) over the whole val split, in windows of "
        "block_size; the bigram's is over every transition of the same tokens",
        "history": {
            key: values if key == "step" else [float(f"{v:.4g}") for v in values]
            for key, values in history.items()
            if key != "batch_loss"
        },
        "steps": recipe.steps,
        "tokens_seen": recipe.steps * recipe.batch_size * recipe.block_size,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        "tokens_per_second": round(
            recipe.steps * recipe.batch_size * recipe.block_size / train_seconds
        ),
        "n_params": n_params,
        "train_tokens": len(ids["train"]),
        "val_tokens": len(ids["val"]),
        "chars_per_token": round(chars_per_token, 3),
        "recipe": asdict(recipe),
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "samples": samples,
    }
    (out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "model.safetensors").chmod(0o644)  # transformers writes it 0600: let everyone read it
    log(f"done in {report['total_seconds']:.0f} s. A sample:\n{samples[0]}")
    return report


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


_HELP = {
    "vocab_size": "BPE vocabulary size (256 bytes + <|endoftext|> + merges)",
    "block_size": "context length in tokens",
    "steps": "optimizer steps",
    "corpus_chars": "use only the first N characters of each split (quick runs)",
}


def register(subparsers) -> None:
    """Add ``course train-course-gpt`` to the course CLI."""
    defaults = Recipe()
    p = subparsers.add_parser(
        "train-course-gpt",
        help="re-create the shipped course GPT (tokenizer + model, a few minutes)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=COURSE_GPT_DIR, help="folder to write")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: course_lib.device())")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        kind = int if name == "corpus_chars" else type(value)
        help_text = _HELP.get(name, name.replace("_", " "))
        p.add_argument(flag, type=kind, default=value, help=help_text)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    names = Recipe.__dataclass_fields__
    recipe = Recipe(**{name: getattr(args, name) for name in names})
    train_course_gpt(args.out, recipe, device=args.device, progress=not args.no_progress)
    return 0
