"""The package, the CLI and the graders' front door import without torch (fast start-up)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["course_lib", "course_lib.grading", "course_lib.course"])
def test_module_imports_without_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"importing {module} pulled in torch"


def test_grading_processes_skip_the_slow_optional_iri_checker():
    # jsonschema's optional rfc3987_syntax compiles a grammar on import (1.5 s per process);
    # the grading command blocks it, and notebooks still validate without it.
    code = (
        "import sys, course_lib.autograde, nbformat\n"
        "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('1')])\n"
        "nbformat.validate(nb)\n"
        "bad = nbformat.from_dict({'cells': [{'cell_type': 'nope'}], 'metadata': {}, "
        "'nbformat': 4, 'nbformat_minor': 5})\n"
        "try:\n    nbformat.validate(bad)\nexcept nbformat.ValidationError:\n    print('refused')\n"
        "print(sys.modules.get('rfc3987_syntax', 'absent'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["refused", "None"]
