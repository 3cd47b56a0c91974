# soilsource: the two commands a newcomer needs are `make demo` and `make test`.
# Everything is installed into .venv from PyPI with the exact versions in
# constraints.txt (see DEVELOPERS.md for why torch 2.14.1 + torchvision 0.29.1).

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pip warns once per package about this machine's optional local wheel folders; hide only that.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }
DEMO_OUT ?= demo-out
PIP_PIN := pip==25.3
# Pythons that `make test-pythons` tries (each one found gets its own fresh .venvs/py3.X).
PYTHONS ?= 3.11 3.12 3.13

.PHONY: venv demo test test-fast test-pythons lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "$(PIP_PIN)" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]" 2>&1 | $(QUIET_PIP)
	touch $(STAMP)

demo: venv
	$(BIN)/soilsource demo --out $(DEMO_OUT) --force

test: venv
	$(BIN)/python -m pytest -q

# The suite without the end-to-end tests marked `slow` (whole pipeline runs, kill-and-resume,
# Dask clusters, the browser).
test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

# The built wheel in a fresh environment per Python in $(PYTHONS): fast tests against the
# installed package and `soilsource demo --quick`, whose metrics.json must agree (.ci/test-pythons).
test-pythons:
	PYTHONS="$(PYTHONS)" PIP_PIN="$(PIP_PIN)" .ci/test-pythons

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .venvs $(DEMO_OUT) .pytest_cache .ruff_cache build
