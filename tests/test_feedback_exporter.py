"""``FeedbackExporter``: nbconvert's HTML with templates compiled once per process."""

from __future__ import annotations

import re

import nbformat
from nbconvert.exporters import HTMLExporter

from course_lib.autograde import exporters

NB = nbformat.v4.new_notebook(
    cells=[nbformat.v4.new_markdown_cell("# Feedback"), nbformat.v4.new_code_cell("1 + 1")]
)


def _page(exporter_class: type) -> str:
    html, _ = exporter_class().from_notebook_node(NB)
    return re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "UUID", html)  # ids the template may draw


def test_same_page_as_html_exporter_and_the_templates_compile_once(monkeypatch):
    monkeypatch.setattr(exporters._CACHE, "compiled", {})
    first = _page(exporters.FeedbackExporter)
    compiled = dict(exporters._CACHE.compiled)
    assert compiled  # the templates went into the cache
    loads = []
    real_load = exporters._CACHE.load_bytecode

    def load(bucket):
        real_load(bucket)
        loads.append(bucket.code is not None)

    monkeypatch.setattr(exporters._CACHE, "load_bytecode", load)
    second = _page(exporters.FeedbackExporter)  # a new exporter, as nbgrader makes per submission
    assert loads and all(loads)  # every template came from the cache
    assert exporters._CACHE.compiled.keys() == compiled.keys()
    assert first == second == _page(HTMLExporter)
