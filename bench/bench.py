"""Benchmarks: our GPT, Llama and generate against Hugging Face, measured in the same run.

Every row times two (or three) variants with the same weights and inputs. The variants are
run alternately, repeat after repeat, and the table reports each one's median, so that a
machine shared with other work slows both alike. A ratio is ours / theirs in time (< 1: ours
is faster) or in tokens per second (> 1: ours is faster), as the column says.

    python bench/bench.py                      # all rows, default device, 7 repeats
    python bench/bench.py --device cpu --repeats 15 --threads 2
    python bench/bench.py --quick              # fewer repeats and tokens (a smoke test)
    python bench/bench.py --markdown out.md    # also write the table as Markdown

Rows:
  train step   forward + loss + backward + AdamW, course-GPT shape, batch 16 x 128
  inference    forward in eval mode without gradients, batch 16 x 128
  AdamW        our hand-written AdamW vs torch.optim.AdamW on the course GPT's parameters
  generate     greedy tokens/s with a KV cache, batch 1: course GPT and SmolLM2
  KV cache     our generate with vs without the cache (course GPT)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from course_lib.generation import generate
from course_lib.gpt import GPT
from course_lib.training import AdamW


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def time_alternately(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                     warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn (A, B, A, B, ...)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]  # no variant always runs first
        for name in order:
            sync(device)
            start = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def train_step(model, optimizer, x):
    def step():
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def forward(model, x):
    @torch.no_grad()
    def run():
        model(input_ids=x)
    return run


def hf_generate(model, ids, n):
    def run():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                       min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)
    return run


def our_generate(model, ids, n, use_cache=True):
    def run():
        generate(model, ids, n, use_cache=use_cache)
    return run


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                   if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    import os

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads){gpu}, Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: course_lib.device())")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, fewer tokens")
    parser.add_argument("--no-smollm2", action="store_true", help="skip the SmolLM2 rows")
    parser.add_argument("--only-smollm2", action="store_true", help="only the SmolLM2 rows")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)

    from course_lib import device as preferred_device
    from course_lib.pretrained import load_course_gpt

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else preferred_device()
    repeats = 3 if args.quick else args.repeats
    gen_tokens = 20 if args.quick else 100
    torch.manual_seed(0)
    rows: list[tuple[str, str, str, str, str]] = []  # (row, ours, hf, ratio, goal)

    def report(row: str, ours: str, theirs: str, ratio: float, kind: str, goal: str) -> None:
        rows.append((row, ours, theirs, f"{ratio:.2f} ({kind})", goal))
        print(f"{row:<44} ours {ours:>16}  hf {theirs:>16}  ratio {ratio:5.2f} ({kind})", flush=True)

    print(f"machine: {machine()}\ndevice: {device}, repeats: {repeats}\n", flush=True)

    if not args.only_smollm2:
        # --- course GPT: training step, inference, AdamW ------------------------------------
        hf_gpt, tokenizer = load_course_gpt()
        hf_gpt.to(device)
        ours_gpt = GPT.from_hf(hf_gpt).to(device)
        V, T = hf_gpt.config.vocab_size, hf_gpt.config.n_positions
        x = torch.randint(0, V, (16, T), device=device)

        hf_gpt.train(), ours_gpt.train()
        opt_hf = torch.optim.AdamW(hf_gpt.parameters(), lr=1e-4)
        opt_ours = torch.optim.AdamW(ours_gpt.parameters(), lr=1e-4)
        t = time_alternately({"ours": train_step(ours_gpt, opt_ours, x),
                              "hf": train_step(hf_gpt, opt_hf, x)}, repeats, device)
        report("train step (fwd+bwd+AdamW), B=16 T=128", f"{t['ours'] * 1e3:.1f} ms",
               f"{t['hf'] * 1e3:.1f} ms", t["ours"] / t["hf"], "time", "<= 1.0")

        hf_gpt.eval(), ours_gpt.eval()
        t = time_alternately({"ours": forward(ours_gpt, x), "hf": forward(hf_gpt, x)}, repeats, device)
        report("inference forward, B=16 T=128", f"{t['ours'] * 1e3:.1f} ms", f"{t['hf'] * 1e3:.1f} ms",
               t["ours"] / t["hf"], "time", "<= 1.0")

        params_ours = [p.detach().clone().requires_grad_() for p in ours_gpt.parameters()]
        params_torch = [p.detach().clone().requires_grad_() for p in ours_gpt.parameters()]
        for a, b in zip(params_ours, params_torch):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        ours_opt, torch_opt = AdamW(params_ours, lr=1e-4), torch.optim.AdamW(params_torch, lr=1e-4)
        t = time_alternately({"ours": ours_opt.step, "hf": torch_opt.step}, repeats, device)
        report("AdamW step only (ours vs torch.optim)", f"{t['ours'] * 1e3:.2f} ms",
               f"{t['hf'] * 1e3:.2f} ms", t["ours"] / t["hf"], "time", "info")

        # --- generation --------------------------------------------------------------------
        prompt = torch.tensor([tokenizer("ROMEO\nBut soft, what light through yonder").input_ids],
                              device=device)
        n = min(gen_tokens, T - prompt.shape[1])
        t = time_alternately({"ours": our_generate(ours_gpt, prompt, n),
                              "ours_on_hf": our_generate(hf_gpt, prompt, n),
                              "hf": hf_generate(hf_gpt, prompt, n)}, repeats, device)
        tps = {k: n / v for k, v in t.items()}
        report(f"generate course GPT, greedy, {n} tokens", f"{tps['ours']:.0f} tok/s",
               f"{tps['hf']:.0f} tok/s", tps["ours"] / tps["hf"], "tok/s", ">= 1.0")
        report("  same, our generate on the HF model", f"{tps['ours_on_hf']:.0f} tok/s",
               f"{tps['hf']:.0f} tok/s", tps["ours_on_hf"] / tps["hf"], "tok/s", ">= 1.0")

        t = time_alternately({"cache": our_generate(ours_gpt, prompt, n, True),
                              "no_cache": our_generate(ours_gpt, prompt, n, False)}, repeats, device)
        report(f"our generate, KV cache vs none, {n} tokens", f"{n / t['cache']:.0f} tok/s cached",
               f"(ours) {n / t['no_cache']:.0f} tok/s uncached", t["no_cache"] / t["cache"],
               "speed-up", "> 1")

    if not args.no_smollm2:
        from course_lib.pretrained import load_smollm2

        smol, smol_tok = load_smollm2()
        smol.to(device).eval()
        chat = smol_tok.apply_chat_template([{"role": "user", "content": "Tell me about Paris."}],
                                            tokenize=False, add_generation_prompt=True)
        prompt = smol_tok(chat, return_tensors="pt").input_ids.to(device)
        n = 10 if args.quick else 40
        fns = {"ours_on_hf": our_generate(smol, prompt, n), "hf": hf_generate(smol, prompt, n)}
        try:
            from course_lib.llama import Llama

            fns["ours"] = our_generate(Llama.from_hf(smol).to(device).eval(), prompt, n)
        except ImportError:
            print("course_lib.llama not available: skipping our Llama")
        t = time_alternately(fns, max(3, repeats // 2), device, warmup=1)
        tps = {k: n / v for k, v in t.items()}
        if "ours" in tps:
            report(f"generate SmolLM2-135M, greedy, {n} tokens", f"{tps['ours']:.1f} tok/s",
                   f"{tps['hf']:.1f} tok/s", tps["ours"] / tps["hf"], "tok/s", ">= 1.0")
        report("  same, our generate on the HF model", f"{tps['ours_on_hf']:.1f} tok/s",
               f"{tps['hf']:.1f} tok/s", tps["ours_on_hf"] / tps["hf"], "tok/s", ">= 1.0")

    table = ["| measurement | ours | Hugging Face | ratio | goal |", "|---|---|---|---|---|"]
    table += [f"| {' | '.join(row)} |" for row in rows]
    text = f"Machine: {machine()}; device {device}; median of {repeats} repeats.\n\n" + "\n".join(table)
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
