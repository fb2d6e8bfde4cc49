"""Benchmarks: our GPT, Llama and generate against Hugging Face, measured in the same run.

Every row times two (or three) variants with the same weights and inputs. The variants are
run alternately, repeat after repeat, and the table reports each one's median, so that a
machine shared with other work slows both alike. A ratio is ours / theirs in time (< 1: ours
is faster) or in tokens per second (> 1: ours is faster), as the column says.

    python bench/bench.py                      # all rows, default device, 7 repeats
    python bench/bench.py --device cpu --repeats 15 --threads 2
    python bench/bench.py --quick              # fewer repeats and tokens (a smoke test)
    python bench/bench.py --markdown out.md    # also write the table as Markdown
    python bench/bench.py --update BENCHMARKS.md   # replace this device's tables there
    python bench/bench.py --device cuda        # adds the GPT-2 124M-shape bf16 training rows

Rows:
  train step   as course_lib.training.train runs it: lm_loss, backward, fused AdamW;
               course-GPT shape, batch 16 x 128 (--compile: also ours under torch.compile);
               with the step's matrix products alone, the floor under both models' steps
  GPT-2 shape  (CUDA, or --gpt2-rows) the same step at GPT-2 small's shape, batch 16 x 1024,
               bf16 autocast: ours eager, ours under torch.compile, HF eager; ms and MFU
  inference    forward in eval mode without gradients, batch 16 x 128
  AdamW        the lesson's hand-written AdamW vs torch.optim.AdamW(fused=True) (train's)
  generate     greedy tokens/s with a KV cache, batch 1: course GPT and SmolLM2
  KV cache     our generate with vs without the cache (course GPT)
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
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
from course_lib.gpt import GPT, GPTConfig
from course_lib.training import AdamW, configure_optimizer, lm_loss


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def time_alternately(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: int = 2
) -> dict[str, float]:
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


def train_step(model, optimizer, x, y, loss_fn=lm_loss, autocast=None):
    """One step as ``course_lib.training.train`` runs it: ``lm_loss``, backward, optimizer.

    ``loss_fn`` may be a compiled ``lm_loss``; ``autocast`` a dtype for ``torch.autocast``.
    """

    def step():
        with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
            loss = loss_fn(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def matrix_products(model, batch_tokens):
    """The matrix products of one training step of ``model``, and nothing else.

    For every ``nn.Linear`` (the tied output layer included) with weight W (out, in): the
    forward ``a @ W.T`` and the two backward products, ``g @ W`` (the input's gradient) and
    ``g.T @ a`` (the weight's), on random activations ``a`` (N, in) and gradients ``g``
    (N, out) for N = ``batch_tokens``. Hugging Face's GPT-2 multiplies the same shapes (its
    ``Conv1D`` stores W transposed), so this time is a floor under both models' steps: what is
    left of a step once the products are done is what a faster implementation can save.
    """
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    pairs = [
        (
            torch.randn(batch_tokens, w.shape[1], device=w.device, dtype=w.dtype),
            torch.randn(batch_tokens, w.shape[0], device=w.device, dtype=w.dtype),
        )
        for w in weights
    ]

    @torch.no_grad()
    def run():
        for w, (a, g) in zip(weights, pairs):
            a @ w.T, g @ w, g.T @ a

    return run


def forward(model, x):
    @torch.no_grad()
    def run():
        model(input_ids=x)

    return run


def hf_generate(model, ids, n, **kwargs):
    def run():
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
            **kwargs,
        )

    return run


def our_generate(model, ids, n, use_cache=True):
    def run():
        generate(model, ids, n, use_cache=use_cache)

    return run


# --- GPT-2 124M shape: ms and MFU -----------------------------------------------------------

# Dense bf16 tensor-core peaks from the vendors' data sheets (no sparsity), in FLOP/s; matched
# against torch.cuda.get_device_name(). Pass --peak-tflops for any other device.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "A10G": 70e12,
}


def peak_flops(device: torch.device, peak_tflops: float | None) -> float | None:
    """The device's bf16 peak in FLOP/s: the flag if given, else the table above, else None."""
    if peak_tflops is not None:
        return peak_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    return None


def train_step_flops(config: GPTConfig, batch_size: int, seq_len: int) -> int:
    """FLOPs of one training step of our GPT, counted from its matrix products.

    Per token, the forward pass multiplies by every weight matrix once (2 FLOPs per weight:
    12 C^2 per block, and the V x C output layer; embedding lookups and LayerNorm gains are
    not products) and, per layer, computes T attention scores and a T-term weighted sum of
    C-channel vectors (2 * 2 * T * C, counted over all T keys as is usual for MFU). Backward
    costs twice the forward. For GPT-2 small at T = 1024 this is 854.4 MFLOP per token, the
    ``6 N + 12 L C T`` of the PaLM paper's appendix and nanoGPT's ``estimate_mfu``.
    """
    C, L, V, T = config.n_embd, config.n_layer, config.vocab_size, seq_len
    forward_per_token = 2 * (L * 12 * C * C + V * C) + L * 2 * 2 * T * C
    return 3 * forward_per_token * batch_size * seq_len


def gpt2_shape_rows(
    device: torch.device,
    config: GPTConfig,
    batch_size: int,
    seq_len: int,
    repeats: int,
    peak: float | None,
    compile_backend: str | None = "inductor",
    dtype: torch.dtype = torch.bfloat16,
) -> list[tuple[str, float, float | None]]:
    """Time one training step at ``config``'s shape: ours eager, ours compiled, HF eager.

    All three run ``train_step`` (``lm_loss`` under ``torch.autocast(dtype)``, backward, fused
    AdamW) on the same random weights and batch. The compiled variant is
    ``torch.compile(lm_loss)`` around the very ``GPT`` the lessons use, so the loss is inside
    the compiled graph. Returns (variant, seconds, MFU or None) for each.
    """
    torch.manual_seed(0)
    ours = GPT(config).to(device).train()
    hf = ours.to_hf().train()  # transformers picks its SDPA attention by default
    compiled = GPT(config).to(device).train()
    compiled.load_state_dict(ours.state_dict())
    x = torch.randint(0, config.vocab_size, (batch_size, seq_len), device=device)
    y = torch.randint(0, config.vocab_size, (batch_size, seq_len), device=device)
    fns = {
        "ours eager": train_step(ours, configure_optimizer(ours, fast=True), x, y, autocast=dtype),
        "HF eager": train_step(hf, configure_optimizer(hf, fast=True), x, y, autocast=dtype),
    }
    if compile_backend is not None:
        loss_fn = torch.compile(lm_loss, backend=compile_backend)
        fns["ours compiled"] = train_step(
            compiled,
            configure_optimizer(compiled, fast=True),
            x,
            y,
            loss_fn=loss_fn,
            autocast=dtype,
        )
    t = time_alternately(fns, repeats, device, warmup=3)  # the first calls compile
    flops = train_step_flops(config, batch_size, seq_len)
    return [(name, t[name], flops / t[name] / peak if peak else None) for name in fns]


def update_markdown(path: Path, key: str, text: str) -> None:
    """Replace the text between ``<!-- bench:KEY -->`` and ``<!-- /bench:KEY -->`` in ``path``."""
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    doc = path.read_text()
    if start not in doc or end not in doc:
        raise SystemExit(
            f"{path} has no {start} ... {end} block: add the two lines where the "
            f"{key} table belongs"
        )
    head, rest = doc.split(start, 1)
    path.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")


def fast_decode_rows(hf_model, prompts, n, repeats, device, report, calibration=None) -> None:
    """Our StaticDecoder (static KV cache; a CUDA graph per token on a GPU) against HF generate.

    SmolLM2, greedy, batch 1, timed on ``prompts[0]``. float32 everywhere (its tokens are
    checked against our eager ``generate`` on every prompt); on CUDA bfloat16 too, whose tokens
    are compared with the float32 eager ones (near-ties may flip them), and HF's own fast path
    (``cache_implementation="static"``, which compiles its decoding step). On the CPU also the
    decoder with int8 weights (``int8=True``, smoothed with the ``calibration`` ids when given),
    whose tokens are compared with the float32 ones up to their first difference (its
    perplexity: :func:`int8_perplexity_rows`).
    """
    from course_lib.fast_decoding import StaticDecoder
    from course_lib.llama import Llama

    reference = {}  # prompt index -> float32 eager tokens
    for dtype in [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else []):
        hf = hf_model if dtype == torch.float32 else copy.deepcopy(hf_model).to(dtype)
        ours = Llama.from_hf(hf).eval()
        if dtype == torch.float32:
            ours32 = ours
        decoder = StaticDecoder(ours, 1, max(p.shape[1] for p in prompts) + n)
        same = 0
        for i, p in enumerate(prompts):
            fast = decoder.generate(p, n)
            if dtype == torch.float32:
                reference[i] = generate(ours, p, n)
            same += bool(torch.equal(fast, reference[i]))
        name = str(dtype).removeprefix("torch.")
        check = f"tokens = fp32 eager on {same}/{len(prompts)} prompts"
        fns = {
            "fast": functools.partial(decoder.generate, prompts[0], n),
            "hf": hf_generate(hf, prompts[0], n),
        }
        if device.type == "cuda":
            fns["hf_static"] = hf_generate(hf, prompts[0], n, cache_implementation="static")
        try:
            t = time_alternately(fns, repeats, device, warmup=3)
        except Exception as err:  # HF's compiled static path is version-sensitive: say so
            print(f"HF static-cache path failed ({type(err).__name__}: {err}); timing without it")
            fns.pop("hf_static", None)
            t = time_alternately(fns, repeats, device, warmup=2)
        tps = {k: n / v for k, v in t.items()}
        goal = ">= 10" if device.type == "cuda" else (">= 1.5" if dtype == torch.float32 else "")
        report(
            f"fast decode SmolLM2 {name}, {n} tokens ({check})",
            f"{tps['fast']:.1f} tok/s",
            f"{tps['hf']:.1f} tok/s",
            tps["fast"] / tps["hf"],
            "tok/s",
            goal,
        )
        if "hf_static" in tps:
            report(
                "  same, vs HF cache_implementation='static'",
                f"{tps['fast']:.1f} tok/s",
                f"{tps['hf_static']:.1f} tok/s",
                tps["fast"] / tps["hf_static"],
                "tok/s",
                ">= 5",
            )
        if device.type == "cuda":  # the same step compiled (fused kernels), inside the graph
            try:
                compiled = StaticDecoder(ours, 1, decoder.max_len, compile=True)
                same = sum(
                    bool(torch.equal(compiled.generate(p, n), reference[i]))
                    for i, p in enumerate(prompts)
                )
                t = time_alternately(
                    {
                        "fast": functools.partial(compiled.generate, prompts[0], n),
                        "hf": hf_generate(hf, prompts[0], n),
                    },
                    repeats,
                    device,
                )
                report(
                    f"  same, step compiled (tokens = fp32 eager on {same}/{len(prompts)})",
                    f"{n / t['fast']:.1f} tok/s",
                    f"{n / t['hf']:.1f} tok/s",
                    t["hf"] / t["fast"],
                    "tok/s",
                    ">= 10",
                )
            except Exception as err:  # compiling is optional: report, go on
                print(f"compiled StaticDecoder failed: {type(err).__name__}: {err}")
    if device.type == "cpu":  # int8 weights: faster, not equal; how long do the tokens agree?
        int8 = StaticDecoder(ours32, 1, decoder.max_len, int8=True, calibration=calibration)
        agree = []  # per prompt: new tokens equal to float32's before the first difference
        for i, p in enumerate(prompts):
            same = (int8.generate(p, n) == reference[i])[0, p.shape[1] :].long()
            agree.append(int(same.cumprod(0).sum()))
        t = time_alternately(
            {
                "fast": functools.partial(int8.generate, prompts[0], n),
                "hf": hf_generate(hf_model, prompts[0], n),
            },
            repeats,
            device,
        )
        report(
            f"  same, int8 weights (first {'/'.join(map(str, agree))} of {n} tokens = fp32)",
            f"{n / t['fast']:.1f} tok/s",
            f"{n / t['hf']:.1f} tok/s",
            t["hf"] / t["fast"],
            "tok/s",
            ">= 2.5",
        )


def perplexity(decoder, ids: torch.Tensor, window: int) -> float:
    """exp(mean nats per predicted token) of ``decoder``'s step on the 1-D ``ids``, cut into
    non-overlapping windows of ``window`` tokens (each token but a window's first predicted)."""
    n = len(ids) // window
    if n < 1:
        raise ValueError(f"need at least {window} ids, got {len(ids)}")
    total = 0.0
    for x in ids[: n * window].view(n, 1, window):
        logits = decoder.logits(x)[0, :-1].double()  # (window - 1, V)
        total += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
    return math.exp(total / (n * (window - 1)))


def int8_perplexity_rows(ours, tokenizer, report, n_chars: int = 6_000, window: int = 512) -> None:
    """Perplexity of our Llama with int8 weights (smoothed, calibrated on the training split's
    start: ``calibration_ids``) against float32, on the first ``n_chars`` characters of the
    Shakespeare validation split (``course_lib.data.load_corpus("val")``)."""
    from course_lib.data import load_corpus
    from course_lib.fast_decoding import StaticDecoder, calibration_ids

    ids = torch.tensor(tokenizer(load_corpus("val")[:n_chars]).input_ids)
    calibration = calibration_ids(tokenizer)
    ppl = {
        int8: perplexity(
            StaticDecoder(ours, 1, window, int8=int8, calibration=calibration if int8 else None),
            ids,
            window,
        )
        for int8 in (False, True)
    }
    tokens = (len(ids) // window) * (window - 1)
    report(
        f"  SmolLM2 perplexity, val text ({tokens} tokens), int8 vs fp32",
        f"{ppl[True]:.3f}",
        f"(ours fp32) {ppl[False]:.3f}",
        ppl[True] / ppl[False] - 1,
        "change",
        "<= +2%",
    )


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in lscpu.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    import os

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads){gpu}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or mps (default: course_lib.device())"
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--quick", action="store_true", help="3 repeats, fewer tokens")
    parser.add_argument("--no-smollm2", action="store_true", help="skip the SmolLM2 rows")
    parser.add_argument("--only-smollm2", action="store_true", help="only the SmolLM2 rows")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    parser.add_argument(
        "--update",
        type=Path,
        default=None,
        help="replace this device's tables in this Markdown file (BENCHMARKS.md)",
    )
    parser.add_argument(
        "--gpt2-rows",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="GPT-2 124M-shape bf16 training rows (default: on for cuda only)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense bf16 peak in TFLOP/s, for MFU (default: looked "
        "up from the GPU's name)",
    )
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="skip the torch.compile row of the GPT-2-shape table",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="add a course-GPT train row with torch.compile(lm_loss) (slow to "
        "compile; on the CPU it needs a C++ compiler)",
    )
    args = parser.parse_args(argv)

    from course_lib import device as preferred_device
    from course_lib.fast_decoding import calibration_ids
    from course_lib.pretrained import load_course_gpt

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else preferred_device()
    repeats = 3 if args.quick else args.repeats
    gen_tokens = 20 if args.quick else 100
    torch.manual_seed(0)
    rows: list[tuple[str, str, str, str, str]] = []  # (row, ours, hf, ratio, goal)

    def report(row: str, ours: str, theirs: str, ratio: float, kind: str, goal: str) -> None:
        # a relative change in percent (0.021 is +2.10%, over a 2% goal), the rest as x.xx
        shown = f"{ratio:+.2%}" if kind == "change" else f"{ratio:.2f}"
        rows.append((row, ours, theirs, f"{shown} ({kind})", goal))
        print(f"{row:<44} ours {ours:>16}  hf {theirs:>16}  ratio {shown} ({kind})", flush=True)

    print(f"machine: {machine()}\ndevice: {device}, repeats: {repeats}\n", flush=True)

    if not args.only_smollm2:
        # --- course GPT: training step, inference, AdamW ------------------------------------
        hf_gpt, tokenizer = load_course_gpt()
        hf_gpt.to(device)
        ours_gpt = GPT.from_hf(hf_gpt).to(device)
        V, T = hf_gpt.config.vocab_size, hf_gpt.config.n_positions
        x = torch.randint(0, V, (16, T), device=device)
        y = torch.randint(0, V, (16, T), device=device)

        hf_gpt.train(), ours_gpt.train()
        opt_hf = configure_optimizer(hf_gpt, lr=1e-4, fast=True)  # what training.train uses
        opt_ours = configure_optimizer(ours_gpt, lr=1e-4, fast=True)
        t = time_alternately(
            {
                "ours": train_step(ours_gpt, opt_ours, x, y),
                "hf": train_step(hf_gpt, opt_hf, x, y),
                "products": matrix_products(ours_gpt, x.numel()),
            },
            repeats,
            device,
        )
        report(
            "train step (fwd+loss+bwd+fused AdamW), B=16 T=128",
            f"{t['ours'] * 1e3:.1f} ms",
            f"{t['hf'] * 1e3:.1f} ms",
            t["ours"] / t["hf"],
            "time",
            "<= 0.70",
        )
        report(
            "  its matrix products alone (a floor for both)",
            f"{t['products'] * 1e3:.1f} ms",
            f"{t['hf'] * 1e3:.1f} ms",
            t["products"] / t["hf"],
            "time",
            "info",
        )
        if args.compile:  # opt-in: inductor needs a C++ compiler on the CPU and compiles slowly
            compiled_gpt = GPT.from_hf(hf_gpt).to(device).train()
            opt_compiled = configure_optimizer(compiled_gpt, lr=1e-4, fast=True)
            t = time_alternately(
                {
                    "ours": train_step(
                        compiled_gpt, opt_compiled, x, y, loss_fn=torch.compile(lm_loss)
                    ),
                    "hf": train_step(hf_gpt, opt_hf, x, y),
                },
                repeats,
                device,
                warmup=3,
            )
            report(
                "  same, ours under torch.compile(lm_loss)",
                f"{t['ours'] * 1e3:.1f} ms",
                f"{t['hf'] * 1e3:.1f} ms",
                t["ours"] / t["hf"],
                "time",
                "info",
            )

        hf_gpt.eval(), ours_gpt.eval()
        t = time_alternately(
            {"ours": forward(ours_gpt, x), "hf": forward(hf_gpt, x)}, repeats, device
        )
        report(
            "inference forward, B=16 T=128",
            f"{t['ours'] * 1e3:.1f} ms",
            f"{t['hf'] * 1e3:.1f} ms",
            t["ours"] / t["hf"],
            "time",
            "<= 1.0",
        )

        params_ours = [p.detach().clone().requires_grad_() for p in ours_gpt.parameters()]
        params_torch = [p.detach().clone().requires_grad_() for p in ours_gpt.parameters()]
        for a, b in zip(params_ours, params_torch):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        # the lesson's per-tensor loop against the fused kernel that training.train uses
        ours_opt = AdamW(params_ours, lr=1e-4)
        torch_opt = torch.optim.AdamW(params_torch, lr=1e-4, fused=True)
        t = time_alternately({"ours": ours_opt.step, "hf": torch_opt.step}, repeats, device)
        report(
            "AdamW step only (lesson's vs torch fused)",
            f"{t['ours'] * 1e3:.2f} ms",
            f"{t['hf'] * 1e3:.2f} ms",
            t["ours"] / t["hf"],
            "time",
            "info",
        )

        # --- generation --------------------------------------------------------------------
        prompt = torch.tensor(
            [tokenizer("ROMEO\nBut soft, what light through yonder").input_ids], device=device
        )
        n = min(gen_tokens, T - prompt.shape[1])
        t = time_alternately(
            {
                "ours": our_generate(ours_gpt, prompt, n),
                "ours_on_hf": our_generate(hf_gpt, prompt, n),
                "hf": hf_generate(hf_gpt, prompt, n),
            },
            repeats,
            device,
        )
        tps = {k: n / v for k, v in t.items()}
        report(
            f"generate course GPT, greedy, {n} tokens",
            f"{tps['ours']:.0f} tok/s",
            f"{tps['hf']:.0f} tok/s",
            tps["ours"] / tps["hf"],
            "tok/s",
            ">= 1.0",
        )
        report(
            "  same, our generate on the HF model",
            f"{tps['ours_on_hf']:.0f} tok/s",
            f"{tps['hf']:.0f} tok/s",
            tps["ours_on_hf"] / tps["hf"],
            "tok/s",
            ">= 1.0",
        )

        t = time_alternately(
            {
                "cache": our_generate(ours_gpt, prompt, n, True),
                "no_cache": our_generate(ours_gpt, prompt, n, False),
            },
            repeats,
            device,
        )
        report(
            f"our generate, KV cache vs none, {n} tokens",
            f"{n / t['cache']:.0f} tok/s cached",
            f"(ours) {n / t['no_cache']:.0f} tok/s uncached",
            t["no_cache"] / t["cache"],
            "speed-up",
            "> 1",
        )

    if not args.no_smollm2:
        from course_lib.pretrained import load_smollm2

        smol, smol_tok = load_smollm2()
        smol.to(device).eval()
        chat = smol_tok.apply_chat_template(
            [{"role": "user", "content": "Tell me about Paris."}],
            tokenize=False,
            add_generation_prompt=True,
        )
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
            report(
                f"generate SmolLM2-135M, greedy, {n} tokens",
                f"{tps['ours']:.1f} tok/s",
                f"{tps['hf']:.1f} tok/s",
                tps["ours"] / tps["hf"],
                "tok/s",
                ">= 1.0",
            )
        report(
            "  same, our generate on the HF model",
            f"{tps['ours_on_hf']:.1f} tok/s",
            f"{tps['hf']:.1f} tok/s",
            tps["ours_on_hf"] / tps["hf"],
            "tok/s",
            ">= 1.0",
        )

        questions = [
            "Tell me about Paris.",
            "What is the capital of France?",
            "Give me one tip for learning to play the guitar.",
            "Why is the sky blue?",
        ]
        prompts = [
            smol_tok(
                smol_tok.apply_chat_template(
                    [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
                ),
                return_tensors="pt",
            ).input_ids.to(device)
            for q in questions
        ]
        fast_n = 128 if device.type == "cuda" else n
        fast_decode_rows(
            smol,
            prompts if not args.quick else prompts[:1],
            fast_n,
            repeats,  # the rows with goals: as many repeats as the rest (their noise is large)
            device,
            report,
            calibration=calibration_ids(smol_tok) if device.type == "cpu" else None,
        )
        if device.type == "cpu":
            int8_perplexity_rows(
                Llama.from_hf(smol).eval(),
                smol_tok,
                report,
                n_chars=3_000 if args.quick else 12_000,
            )

    tables = {}  # --update key -> Markdown
    if rows:
        table = ["| measurement | ours | Hugging Face | ratio | goal |", "|---|---|---|---|---|"]
        table += [f"| {' | '.join(row)} |" for row in rows]
        tables[device.type] = (
            f"Machine: {machine()}; device {device}; median of {repeats} "
            "repeats.\n\n" + "\n".join(table)
        )

    if args.gpt2_rows if args.gpt2_rows is not None else device.type == "cuda":
        B, T = (2, 128) if args.quick else (16, 1024)
        peak = peak_flops(device, args.peak_tflops)
        results = gpt2_shape_rows(
            device,
            GPTConfig(),
            B,
            T,
            repeats,
            peak,
            compile_backend=None if args.no_compile else "inductor",
        )
        hf_time = dict((name, sec) for name, sec, _ in results)["HF eager"]
        goals = {"ours compiled": ">= 45% MFU and >= 2.6x HF eager"}
        table = [
            f"| GPT-2 124M shape, train step, B={B} T={T}, bf16 autocast, fused AdamW "
            "| ms | MFU | speed vs HF eager | goal |",
            "|---|---|---|---|---|",
        ]
        for name, sec, util in results:
            mfu_text = f"{util:.0%}" if util is not None else "n/a (pass --peak-tflops)"
            table.append(
                f"| {name} | {sec * 1e3:.1f} | {mfu_text} | {hf_time / sec:.2f}x "
                f"| {goals.get(name, '')} |"
            )
            print(f"GPT-2 shape {name:<14} {sec * 1e3:8.1f} ms  MFU {mfu_text}", flush=True)
        flops = train_step_flops(GPTConfig(), B, T)
        peak_text = f"{peak / 1e12:.0f} TFLOP/s" if peak else "unknown"
        tables[f"{device.type}-gpt2"] = (
            f"Machine: {machine()}; device {device}; median of {repeats} repeats; "
            f"{flops / 1e12:.2f} TFLOP per step (train_step_flops), bf16 peak {peak_text}.\n\n"
            + "\n".join(table)
        )

    text = "\n\n".join(tables.values())
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.update:
        for key, table_text in tables.items():
            update_markdown(args.update, key, table_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
