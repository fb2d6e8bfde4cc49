"""Notebook 06's training target, measured: validation nats/char and seconds on this machine.

Two runs on the course corpus and split, both evaluated the way ``check_trained_model`` does
(the first 60,000 characters of the validation split, non-overlapping windows, nats per
character):

- ``course BPE``: notebook 06's recipe (the course tokenizer, the course GPT's shape: 2 layers,
  192 channels, 4 heads, context 128; batch 16, 800 steps, AdamW, warmup 80 + cosine from 3e-3
  to 3e-4, clipping at 1.0), trained with ``course_lib.training.train``, the same loop as the
  notebook's solution;
- ``nanoGPT char``: the nanoGPT CPU recipe for Shakespeare characters (4 layers, 128 channels,
  4 heads, context 64, batch 12, 2000 iterations, lr 1e-3 -> 1e-4, warmup 100, betas
  (0.9, 0.99), no dropout), on the characters of the same corpus.

    python bench/train_target.py                 # both runs, 2 threads
    python bench/train_target.py --only bpe      # just the notebook's recipe
    python bench/train_target.py --threads 2 --markdown out.md

The target of notebook 06 is <= 1.75 nats/char within 150 s of training on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from course_lib.course_gpt import EOT, encode_corpus
from course_lib.data import load_corpus
from course_lib.gpt import GPT, GPTConfig
from course_lib.grading.training import (
    EVAL_BLOCK,
    EVAL_CHARS,
    TARGET_NATS_PER_CHAR,
    validation_nats_per_char,
)
from course_lib.training import AdamW, train

BPE_RECIPE = dict(
    n_embd=192,
    n_layer=2,
    n_head=4,
    block_size=128,
    batch_size=16,
    steps=800,
    max_lr=3e-3,
    min_lr=3e-4,
    warmup_steps=80,
    betas=(0.9, 0.95),
    weight_decay=0.1,
    grad_clip=1.0,
    eval_every=100,
    eval_iters=8,
    seed=0,
)
CHAR_RECIPE = dict(
    n_embd=128,
    n_layer=4,
    n_head=4,
    block_size=64,
    batch_size=12,
    steps=2000,
    max_lr=1e-3,
    min_lr=1e-4,
    warmup_steps=100,
    betas=(0.9, 0.99),
    weight_decay=0.1,
    grad_clip=1.0,
    eval_every=250,
    eval_iters=20,
    seed=0,
)


def optimizer_for(model: torch.nn.Module, recipe: dict) -> AdamW:
    """AdamW with decay on matrices only (as notebook 06's AdamWOptimizer and nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": recipe["weight_decay"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return AdamW(groups, lr=recipe["max_lr"], betas=recipe["betas"])


def run(
    model: GPT, train_ids: torch.Tensor, val_ids: torch.Tensor, recipe: dict
) -> tuple[dict, float]:
    """Train with ``course_lib.training.train``; return (history, seconds of training)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    history = train(
        model,
        train_ids,
        val_ids,
        steps=recipe["steps"],
        batch_size=recipe["batch_size"],
        block_size=recipe["block_size"],
        max_lr=recipe["max_lr"],
        min_lr=recipe["min_lr"],
        warmup_steps=recipe["warmup_steps"],
        weight_decay=recipe["weight_decay"],
        grad_clip=recipe["grad_clip"],
        eval_every=recipe["eval_every"],
        eval_iters=recipe["eval_iters"],
        generator=torch.Generator().manual_seed(recipe["seed"]),
        progress=False,
        optimizer=optimizer_for(model, recipe),
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    history["cpu_seconds"] = cpu  # load-independent: on an idle machine wall ~ cpu / threads
    return history, seconds


def bpe_run() -> dict:
    from course_lib.pretrained import load_course_gpt

    _, tokenizer = load_course_gpt()
    eot = tokenizer.convert_tokens_to_ids(EOT)
    ids = {s: encode_corpus(tokenizer, load_corpus(s), eot) for s in ("train", "val")}
    r = BPE_RECIPE
    torch.manual_seed(r["seed"])
    model = GPT(
        GPTConfig(
            vocab_size=len(tokenizer),
            n_positions=r["block_size"],
            n_embd=r["n_embd"],
            n_layer=r["n_layer"],
            n_head=r["n_head"],
        )
    )
    history, seconds = run(model, ids["train"], ids["val"], r)
    result = validation_nats_per_char(model, min(EVAL_BLOCK, r["block_size"]))
    return {
        "run": "course BPE (notebook 06)",
        "seconds": seconds,
        "cpu_seconds": history["cpu_seconds"],
        **result,
        "params": model.num_parameters(),
        "steps": r["steps"],
        "val_curve": [round(v, 3) for v in history["val_loss"]],
    }


@torch.no_grad()
def char_slice_loss(model: GPT, stoi: dict[str, int], block: int) -> float:
    """nats/char of a character-level model on the same slice (every char but window starts)."""
    text = load_corpus("val")[:EVAL_CHARS]
    ids = torch.tensor([stoi[c] for c in text])
    n = (len(ids) - 1) // block
    x, y = ids[: n * block].view(n, block), ids[1 : n * block + 1].view(n, block)
    model.eval()
    total = sum(
        torch.nn.functional.cross_entropy(
            model(input_ids=x[i : i + 64]).logits.flatten(0, 1).double(),
            y[i : i + 64].flatten(),
            reduction="sum",
        ).item()
        for i in range(0, n, 64)
    )
    return total / y.numel()


def char_run() -> dict:
    texts = {s: load_corpus(s) for s in ("train", "val")}
    chars = sorted(set(texts["train"]) | set(texts["val"]))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = {s: torch.tensor([stoi[c] for c in t], dtype=torch.long) for s, t in texts.items()}
    r = CHAR_RECIPE
    torch.manual_seed(r["seed"])
    model = GPT(
        GPTConfig(
            vocab_size=len(chars),
            n_positions=r["block_size"],
            n_embd=r["n_embd"],
            n_layer=r["n_layer"],
            n_head=r["n_head"],
        )
    )
    history, seconds = run(model, ids["train"], ids["val"], r)
    nats = char_slice_loss(model, stoi, r["block_size"])
    return {
        "run": "nanoGPT char recipe",
        "seconds": seconds,
        "cpu_seconds": history["cpu_seconds"],
        "nats_per_char": nats,
        "nats_per_token": nats,
        "chars_per_token": 1.0,
        "params": model.num_parameters(),
        "steps": r["steps"],
        "val_curve": [round(v, 3) for v in history["val_loss"]],
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}; torch {torch.__version__} with {torch.get_num_threads()} threads; Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["bpe", "char"], default=None)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    if args.only in (None, "bpe"):
        results.append(bpe_run())
        print(json.dumps(results[-1]), flush=True)
    if args.only in (None, "char"):
        results.append(char_run())
        print(json.dumps(results[-1]), flush=True)
    lines = [
        f"Machine: {machine()}.",
        "",
        "| run | parameters | steps | training time (CPU time / threads) | val nats/token | chars/token | val nats/char | target <= 1.75 in <= 150 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ok = r["nats_per_char"] <= TARGET_NATS_PER_CHAR and r["seconds"] <= 150
        lines.append(
            f"| {r['run']} | {r['params']:,} | {r['steps']} | {r['seconds']:.0f} s "
            f"({r['cpu_seconds'] / torch.get_num_threads():.0f} s) | "
            f"{r['nats_per_token']:.3f} | {r['chars_per_token']:.3f} | "
            f"{r['nats_per_char']:.3f} | {'yes' if ok else 'no'} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
