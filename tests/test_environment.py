"""environment.yml (conda) and pyproject.toml (pip) must list the same dependencies."""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in reqs}


def _conda_pip_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    reqs = [r for r in pip_section if not r.startswith("-")]
    return {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in reqs}


def test_environment_yml_matches_pyproject():
    assert _conda_pip_requirements() == _pyproject_requirements()


def test_environment_yml_pins_python_and_installs_the_package():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_section


def test_torch_range_admits_the_local_wheel_and_nothing_newer():
    spec = Requirement(
        next(
            r
            for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
            if r.startswith("torch")
        )
    ).specifier
    assert spec.contains("2.13.0")
    assert not spec.contains("2.14.1")
