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

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==25.3" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]" 2>&1 | $(QUIET_PIP)
	touch $(STAMP)

demo: venv
	$(BIN)/soilsource demo --out $(DEMO_OUT) --force

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache build
