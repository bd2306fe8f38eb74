# neurocast: `make demo` runs live decoding of the embedded simulator, `make test` the test suite.
# Both create .venv (Python 3.11) and install what they need.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned in the `train` extra; an explicit first install keeps pip on the CPU wheel
TORCH := torch==2.13.0

.PHONY: demo test lint bench-quick models clean help

help:
	@echo "make demo    live decoding of the embedded simulator (browser, or printed when headless)"
	@echo "make test    install with dev+train extras and run the whole test suite"
	@echo "make lint    ruff and mypy"
	@echo "make models  rebuild the shipped demo models (trained on the simulator)"
	@echo "make bench-quick  every benchmark in --quick mode"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "neurocast needs Python 3.11, got " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# serving extras only: the demo needs no torch
$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[train,dev]'
	@touch $@ $(VENV)/.serve

demo: $(VENV)/.serve
	$(BIN)/neurocast demo $(if $(DISPLAY),,--headless) $(DEMO_ARGS)

test: $(VENV)/.dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check streaming models server clients bench tests
	$(BIN)/mypy streaming models server clients bench

models: $(VENV)/.dev
	$(BIN)/neurocast train demo

$(VENV)/.bench: pyproject.toml $(VENV)/.dev
	$(BIN)/pip install -q -e '.[train,dev,bench]'
	@touch $@

bench-quick: $(VENV)/.bench
	@for f in bench/[!_]*.py; do echo "== $$f"; $(BIN)/python $$f --quick | tail -n 1 || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
