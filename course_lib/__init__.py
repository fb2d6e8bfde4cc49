"""course_lib: the reference implementations, graders and tools of "LLMs from the ground up".

Modules (one concept each): data, pretrained, ngram, bpe, functional, attention, gpt, llama,
training, generation, grading, autograde, course (the CLI). ``course_lib.device()`` picks the
torch device.
"""

from course_lib.devices import device

__all__ = ["device"]
__version__ = "0.1.0"
