"""course_lib: the reference implementations, graders and tools of "LLMs from the ground up".

Modules (one concept each): data, pretrained, ngram, bpe, functional, attention, gpt, llama,
training, generation, grading, autograde, course (the CLI). ``course_lib.device()`` picks the
torch device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def device() -> torch.device:
    """The preferred torch device: ``$COURSE_DEVICE``, else CUDA, else MPS, else CPU.

    A thin wrapper around ``course_lib.devices.device`` that imports torch only when called,
    so ``import course_lib`` (and the CLI, and ``course_lib.grading``) start without torch.
    """
    from course_lib.devices import device as preferred

    return preferred()


__all__ = ["device"]
__version__ = "0.1.0"
