"""The exporter ``course grade`` renders feedback pages with.

nbgrader makes a new ``HTMLExporter`` for every submission, and each new exporter compiles
the feedback templates again (a third of a second: most of the CPU a small submission costs
the grading process). ``FeedbackExporter`` is that exporter with one in-memory Jinja bytecode
cache per process: the templates compile once. Jinja checks each cached entry against its
template's source, so an edited template is compiled afresh.
"""

from __future__ import annotations

from typing import Any

from jinja2 import BytecodeCache
from jinja2.bccache import Bucket
from nbconvert.exporters import HTMLExporter


class _MemoryBytecodeCache(BytecodeCache):
    """Compiled templates, kept in this process's memory."""

    def __init__(self) -> None:
        self.compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        if bucket.key in self.compiled:
            bucket.bytecode_from_string(self.compiled[bucket.key])

    def dump_bytecode(self, bucket: Bucket) -> None:
        self.compiled[bucket.key] = bucket.bytecode_to_string()


_CACHE = _MemoryBytecodeCache()


class FeedbackExporter(HTMLExporter):
    """``HTMLExporter`` whose templates compile once per process (configured as
    ``HTMLExporter``: same templates, same output)."""

    def _create_environment(self) -> Any:
        environment = super()._create_environment()
        environment.bytecode_cache = _CACHE
        return environment
