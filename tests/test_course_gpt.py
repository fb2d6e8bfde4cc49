"""The course GPT: the command that makes it, and the checkpoint that ships."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

from course_lib import course_gpt
from course_lib.course import main
from course_lib.data import PLAY_SEPARATOR
from course_lib.pretrained import COURSE_GPT_DIR, load_course_gpt

QUICK = [
    "--steps",
    "4",
    "--vocab-size",
    "300",
    "--corpus-chars",
    "20000",
    "--n-layer",
    "1",
    "--n-embd",
    "32",
    "--n-head",
    "2",
    "--block-size",
    "32",
    "--batch-size",
    "4",
    "--eval-every",
    "2",
    "--eval-iters",
    "1",
    "--warmup-steps",
    "1",
    "--no-progress",
    "--device",
    "cpu",
]


def test_command_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "gpt"
    assert main(["train-course-gpt", "--out", str(out), *QUICK]) == 0
    assert "5/5 saving" in capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training_report.json"):
        assert (out / name).is_file(), name

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert isinstance(model, GPT2LMHeadModel)
    assert model.config.vocab_size == 300 == len(tokenizer)
    assert model.config.n_positions == 32 and model.config.n_layer == 1
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert eot == 256 == model.config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer("ROMEO<|endoftext|>").input_ids[-1] == eot  # one special id, not bytes
    text = "HAMLET\nTo be, or not to be"
    assert tokenizer.decode(tokenizer(text).input_ids) == text

    report = json.loads((out / "training_report.json").read_text())
    assert report["steps"] == 4 and report["recipe"]["vocab_size"] == 300
    assert report["history"]["step"] == [0, 2, 4]
    assert report["val_loss"] > 0 and report["bigram_val_loss"] > 0
    assert len(report["samples"]) == len(course_gpt.SAMPLE_PROMPTS)
    assert report["samples"][0].startswith("ROMEO\n")


def test_command_rejects_a_bad_recipe(tmp_path):
    with pytest.raises(ValueError, match="--warmup-steps"):
        main(["train-course-gpt", "--out", str(tmp_path), "--steps", "5", "--warmup-steps", "10"])
    with pytest.raises(ValueError, match="n_head"):
        course_gpt.Recipe(n_embd=30, n_head=4)


def test_encode_corpus_separates_plays_with_eot():
    from course_lib.bpe import to_hf_tokenizer, train_vocab

    vocab, merges = train_vocab("to be or not to be", 260, ["<|endoftext|>"])
    tokenizer = to_hf_tokenizer(vocab, merges, ["<|endoftext|>"])
    ids = course_gpt.encode_corpus(tokenizer, "to be" + PLAY_SEPARATOR + "or not", 256)
    assert ids.dtype == torch.long
    assert ids.tolist().count(256) == 1
    assert tokenizer.decode(ids) == "to be<|endoftext|>or not"


def test_split_loss_is_the_mean_over_all_windows():
    from transformers import GPT2Config

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=20, n_positions=8, n_embd=16, n_layer=1, n_head=2)
    )
    model.train()  # split_loss must switch dropout off itself, and restore the mode
    ids = torch.randint(0, 20, (8 * 5 + 3,))
    x, y = ids[:40].view(5, 8), ids[1:41].view(5, 8)
    loss = course_gpt.split_loss(model, ids, 8, batch_size=2)
    assert model.training
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(
            model.eval()(x).logits.flatten(0, 1), y.flatten()
        )
    assert loss == pytest.approx(expected.item(), rel=1e-5)


# --- the shipped checkpoint ------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    model, tokenizer = load_course_gpt()
    report = json.loads((COURSE_GPT_DIR / "training_report.json").read_text())
    return model, tokenizer, report


def test_shipped_checkpoint_is_small_and_loads_as_gpt2(shipped):
    model, tokenizer, report = shipped
    size = (COURSE_GPT_DIR / "model.safetensors").stat().st_size
    assert size <= 10 * 1024 * 1024, f"model.safetensors is {size / 2**20:.1f} MiB > 10 MiB"
    assert isinstance(model, GPT2LMHeadModel) and not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.vocab_size == len(tokenizer) == report["recipe"]["vocab_size"]
    assert model.config.eos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert report["n_params"] == sum(p.numel() for p in model.parameters())


def test_shipped_checkpoint_beats_the_bigram_baseline(shipped):
    model, tokenizer, report = shipped
    from course_lib.data import load_corpus

    assert report["val_loss"] < report["bigram_val_loss"] - 0.3
    T = model.config.n_positions
    ids = course_gpt.encode_corpus(tokenizer, load_corpus("val")[:30_000], tokenizer.eos_token_id)
    loss = course_gpt.split_loss(model, ids, T)
    assert loss < report["bigram_val_loss"] - 0.2  # on a slice of the val split, measured here
    assert abs(loss - report["val_loss"]) < 0.4  # and consistent with the report


def test_shipped_checkpoint_writes_shakespeare_like_text(shipped):
    model, tokenizer, _ = shipped
    from course_lib.generation import generate

    prompt = torch.tensor([tokenizer("KING HENRY\n").input_ids])
    text = tokenizer.decode(generate(model, prompt, 80)[0])
    lines = text.split("\n")
    assert len(lines) >= 3  # verse comes in short lines
    words = [w.strip(".,;:!?'").lower() for w in text.split()]
    common = {
        "the",
        "and",
        "i",
        "to",
        "of",
        "my",
        "a",
        "you",
        "that",
        "is",
        "in",
        "me",
        "not",
        "it",
        "with",
        "your",
        "be",
        "his",
        "thou",
        "this",
        "so",
        "thee",
        "for",
        "but",
        "he",
    }
    assert sum(w in common for w in words) >= 5, text
