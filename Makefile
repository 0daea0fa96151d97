# Every install step lives here. `make run` sets up, runs the suite on the defaults if nothing
# is stored yet, then serves the scheduler and the dashboard until Ctrl-C;
# `make test` runs the whole test suite (real vLLM included).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: setup run test lint typecheck bench clean

$(BIN)/parity: pyproject.toml
	$(PYTHON) -m pip install --quiet --upgrade "uv>=0.9"
	$(PYTHON) -m uv venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(PYTHON) -m uv pip install --quiet --python $(BIN)/python -e ".[dev]"
	touch $(BIN)/parity

setup: $(BIN)/parity

run: setup
	$(BIN)/parity serve --first-run

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: setup
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/suite_cost.py

clean:
	rm -rf $(VENV)
