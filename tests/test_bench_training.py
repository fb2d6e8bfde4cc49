"""bench/bench.py's training rows: the FLOP count behind MFU, the GPT-2-shape step on any device,
and the Markdown update that ``make bench`` relies on. (The timings themselves are not tested.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from course_lib.gpt import GPT, GPTConfig
from course_lib.training import lm_loss

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("course_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_step_flops_equals_torchs_flop_counter(bench):
    """Our formula equals torch's own count of every matrix product in forward + backward.

    The math attention kernel runs as plain batched products, which the counter sees (it does
    not know the CPU's fused attention kernel)."""
    config = GPTConfig(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    model = GPT(config)
    x = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        lm_loss(model, x, x).backward()
    assert bench.train_step_flops(config, 3, 16) == counter.get_total_flops()


def test_matrix_products_are_the_steps_products_without_attention(bench):
    """The floor row runs each weight matrix's three products once: the step's FLOPs less the
    attention scores and sums (2 * 2 * T * C per token and layer, three times for backward)."""
    config = GPTConfig(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    B, T = 3, 16
    run = bench.matrix_products(GPT(config), B * T)
    with FlopCounterMode(display=False) as counter:
        run()
    attention = 3 * config.n_layer * 2 * 2 * T * config.n_embd * B * T
    assert counter.get_total_flops() == bench.train_step_flops(config, B, T) - attention


def test_train_step_flops_of_gpt2_small(bench):
    # 6 N + 12 L C T per token, N = the 123,532,032 weights of the matrix products (by hand)
    per_token = 6 * (12 * 12 * 768**2 + 50257 * 768) + 12 * 12 * 768 * 1024
    assert per_token == 854_438_400
    assert bench.train_step_flops(GPTConfig(), 16, 1024) == 16 * 1024 * per_token


def test_gpt2_shape_rows_run_on_the_cpu(bench):
    """The GPU rows' code runs unchanged on a tiny config on the CPU (bf16 autocast, fused
    AdamW, the compiled loss; ``eager`` backend here to keep the test quick)."""
    config = GPTConfig(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    rows = bench.gpt2_shape_rows(
        torch.device("cpu"), config, 2, 16, repeats=1, peak=1e12, compile_backend="eager"
    )
    assert [name for name, _, _ in rows] == ["ours eager", "HF eager", "ours compiled"]
    flops = bench.train_step_flops(config, 2, 16)
    for _, seconds, util in rows:
        assert seconds > 0 and util == pytest.approx(flops / seconds / 1e12)


def test_peak_flops_from_the_flag_or_unknown(bench):
    assert bench.peak_flops(torch.device("cpu"), 100.0) == 100e12
    assert bench.peak_flops(torch.device("cpu"), None) is None


def test_update_markdown_replaces_only_its_block(bench, tmp_path):
    doc = tmp_path / "B.md"
    doc.write_text("intro\n<!-- bench:cpu -->\nold\n<!-- /bench:cpu -->\nafter\n")
    bench.update_markdown(doc, "cpu", "| new |")
    assert doc.read_text() == "intro\n<!-- bench:cpu -->\n| new |\n<!-- /bench:cpu -->\nafter\n"
    with pytest.raises(SystemExit, match="bench:cuda"):
        bench.update_markdown(doc, "cuda", "x")


def test_benchmarks_md_has_the_blocks_make_bench_updates(bench):
    text = (BENCH.parent.parent / "BENCHMARKS.md").read_text()
    for key in ("cpu", "cuda", "cuda-gpt2"):
        assert f"<!-- bench:{key} -->" in text and f"<!-- /bench:{key} -->" in text, key
