"""Which torch device the course runs on: CUDA, then Apple MPS, then CPU.

Set ``COURSE_DEVICE=cpu|cuda|mps`` to override (for example to compare speeds, or to keep a
shared GPU free).
"""

from __future__ import annotations

import os

import torch

_CHOICES = ("cpu", "cuda", "mps")


def _available(name: str) -> bool:
    if name == "cuda":
        return torch.cuda.is_available()
    if name == "mps":
        return (
            getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        )
    return True


def device() -> torch.device:
    """The preferred device: ``$COURSE_DEVICE`` if set, else CUDA, else MPS, else CPU.

    Raises:
        ValueError: ``COURSE_DEVICE`` names something other than cpu, cuda or mps, or a device
            this machine does not have.
    """
    wanted = os.environ.get("COURSE_DEVICE", "").strip().lower()
    if wanted:
        if wanted not in _CHOICES:
            raise ValueError(
                f"COURSE_DEVICE={wanted!r}: use one of {', '.join(_CHOICES)} (or unset it)"
            )
        if not _available(wanted):
            raise ValueError(
                f"COURSE_DEVICE={wanted!r} but this machine has no {wanted} device: "
                "unset COURSE_DEVICE or set it to cpu"
            )
        return torch.device(wanted)
    for name in ("cuda", "mps"):
        if _available(name):
            return torch.device(name)
    return torch.device("cpu")
